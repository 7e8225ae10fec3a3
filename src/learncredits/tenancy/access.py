"""Who may use which page and which API operation: the one table.

Every dashboard page (by its URL name, ``web:<name>``) and every API operation (``METHOD
/path`` as in docs/api.md) has one line here naming the roles that may use it. The
dashboard's page decorator (``web/views.py``), the API's bearer authentication
(``api/auth.py``) and the xAPI endpoints ask ``may`` and nothing else; a route with no line
is refused to everyone (and ``tests/web/test_roles.py``, generated from the URL configuration,
fails until it is given one).

Roles inside an org are ``Membership.Role``'s values; the API adds ``operator`` (the
service's operator, every org). An API key acts with one of ``KEY_ROLES``. Whether a manager
may act on a given employee (their own departments, within budget) is decided by the
services, not here: this table says only which operations a role may attempt.
"""

from __future__ import annotations

from typing import Final

OWNER: Final = "owner"
ADMIN: Final = "admin"
BILLING: Final = "billing"
MANAGER: Final = "manager"
LEARNER: Final = "learner"
OPERATOR: Final = "operator"

MEMBER_ROLES: Final = (OWNER, ADMIN, BILLING, MANAGER, LEARNER)
KEY_ROLES: Final = (ADMIN, BILLING, MANAGER)
API_ROLES: Final = (OPERATOR, *KEY_ROLES)

# Anyone, signed in or not (sign-in, password reset, the API's own documents).
PUBLIC: Final = frozenset({"*"})

_ORG_STAFF = frozenset({OWNER, ADMIN, BILLING, MANAGER})
_ADMINS = frozenset({OWNER, ADMIN})
_BUYERS = frozenset({OWNER, ADMIN, BILLING})
_ASSIGNERS = frozenset({OWNER, ADMIN, MANAGER})
_MEMBERS = frozenset(MEMBER_ROLES)

# --- dashboard pages: URL name -> roles ------------------------------------------------------
# A signed-in member refused a page gets 403, except a learner, who has one page and is sent
# to it (/learn). A visitor not signed in is sent to sign in.

PAGES: Final[dict[str, frozenset[str]]] = {
    "web:login": PUBLIC,
    "web:sso_start": PUBLIC,  # single sign-on: to the org's provider and back
    "web:sso_callback": PUBLIC,
    "web:logout": PUBLIC,
    "web:password_reset": PUBLIC,
    "web:password_reset_done": PUBLIC,
    "web:password_reset_confirm": PUBLIC,
    "web:password_reset_complete": PUBLIC,
    "web:marketplace": _ORG_STAFF,
    "web:learn": _MEMBERS,  # a learner's assignments; anyone else is sent to the marketplace
    "web:buy": _BUYERS,
    "web:buy_quote": _BUYERS,
    "web:test_authenticate": _BUYERS,
    "web:billing": _BUYERS,
    "web:alert_recipients": _ADMINS,  # who receives the alert emails (on the billing page)
    "web:payment_method": _BUYERS,
    "web:ledger_csv": _BUYERS,
    "web:invoice": _BUYERS,
    "web:invoice_pdf": _BUYERS,
    "web:assign": _ASSIGNERS,
    "web:assign_preview": _ASSIGNERS,
    "web:assignments": _ASSIGNERS,
    "web:assignment_action": _ASSIGNERS,
    "web:employees": _ADMINS,
    "web:employee_deactivate": _ADMINS,
    "web:employee_reactivate": _ADMINS,
    "web:departments": _ASSIGNERS,  # a manager sees their own departments
    "web:department_edit": _ADMINS,
    "web:team": _ADMINS,
    "web:audit": _ADMINS,  # the org's own audit trail
    "web:audit_csv": _ADMINS,
    "web:sso_settings": _ADMINS,
    "web:profile": _MEMBERS,  # everyone's own account: name, email, role, org
    "web:password": _MEMBERS,
}

# --- API operations: "METHOD /path" -> roles (operator and the keys' roles) ------------------

_OP = frozenset({OPERATOR})
_ANY_KEY = frozenset(API_ROLES)
_ADMIN_KEY = frozenset({OPERATOR, ADMIN})
_BUYER_KEY = frozenset({OPERATOR, ADMIN, BILLING})
_ASSIGNER_KEY = frozenset({OPERATOR, ADMIN, MANAGER})

API: Final[dict[str, frozenset[str]]] = {
    # the API's own documents
    "GET /": PUBLIC,
    "GET /docs": PUBLIC,
    "GET /openapi.json": PUBLIC,
    # the operator's
    "POST /orgs": _OP,
    "GET /orgs": _OP,
    "PATCH /orgs/{org_id}": _OP,
    "POST /orgs/{org_id}/api-keys": _OP,
    "GET /orgs/{org_id}/api-keys": _OP,
    "DELETE /orgs/{org_id}/api-keys/{key_id}": _OP,
    "POST /orgs/{org_id}/adjustments": _OP,
    "POST /content": _OP,
    "PUT /pricing": _OP,
    "PUT /seller": _OP,
    "GET /seller": _OP,
    "PUT /tax/rates": _OP,
    "GET /tax/rates": _OP,
    "GET /tax/report": _OP,
    "POST /billing/close-period": _OP,
    "GET /billing/statement": _OP,
    "POST /orgs/{org_id}/purchases/{purchase_id}/refund": _OP,
    "POST /orgs/{org_id}/invoices/{invoice_id}/credit-note": _OP,
    # the catalog and the org itself: every key
    "GET /content": _ANY_KEY,
    "GET /pricing": _ANY_KEY,
    "GET /pricing/quote": _ANY_KEY,
    "GET /orgs/{org_id}": _ANY_KEY,
    "GET /orgs/{org_id}/balance": _ANY_KEY,
    # people
    "POST /orgs/{org_id}/users": _ADMIN_KEY,
    "POST /orgs/{org_id}/employees": _ADMIN_KEY,
    "GET /orgs/{org_id}/employees": _ASSIGNER_KEY,
    "POST /orgs/{org_id}/employees/{employee_id}/deactivate": _ADMIN_KEY,
    "POST /orgs/{org_id}/employees/{employee_id}/reactivate": _ADMIN_KEY,
    "PATCH /orgs/{org_id}/employees/{employee_id}": _ADMIN_KEY,
    # departments (a manager sees their own)
    "POST /orgs/{org_id}/departments": _ADMIN_KEY,
    "GET /orgs/{org_id}/departments": _ASSIGNER_KEY,
    "GET /orgs/{org_id}/departments/{department_id}": _ASSIGNER_KEY,
    "PATCH /orgs/{org_id}/departments/{department_id}": _ADMIN_KEY,
    # the identity provider: SCIM tokens (SCIM itself, at /scim/v2/, takes only those) and
    # single sign-on
    "POST /orgs/{org_id}/scim-tokens": _ADMIN_KEY,
    "DELETE /orgs/{org_id}/scim-tokens/{token_id}": _ADMIN_KEY,
    "PUT /orgs/{org_id}/sso": _ADMIN_KEY,
    "GET /orgs/{org_id}/sso": _ADMIN_KEY,
    "DELETE /orgs/{org_id}/sso": _ADMIN_KEY,
    # buying and paying
    "POST /orgs/{org_id}/purchases": _BUYER_KEY,
    "GET /orgs/{org_id}/purchases": _BUYER_KEY,
    "GET /orgs/{org_id}/purchases/{purchase_id}": _BUYER_KEY,
    "GET /orgs/{org_id}/ledger": _BUYER_KEY,
    "GET /orgs/{org_id}/invoices": _BUYER_KEY,
    "GET /orgs/{org_id}/invoices/{invoice_id}": _BUYER_KEY,
    "GET /orgs/{org_id}/invoices/{invoice_id}/pdf": _BUYER_KEY,
    "GET /orgs/{org_id}/invoices/{invoice_id}/html": _BUYER_KEY,
    "GET /orgs/{org_id}/statement": _BUYER_KEY,
    "GET /orgs/{org_id}/usage": _BUYER_KEY,
    "GET /orgs/{org_id}/forecast": _BUYER_KEY,
    "GET /orgs/{org_id}/alerts": _BUYER_KEY,
    "GET /orgs/{org_id}/auto-top-up": _BUYER_KEY,
    "PUT /orgs/{org_id}/auto-top-up": _BUYER_KEY,
    "PUT /orgs/{org_id}/payment-method": _BUYER_KEY,
    "GET /orgs/{org_id}/payment-method": _BUYER_KEY,
    "DELETE /orgs/{org_id}/payment-method": _BUYER_KEY,
    # assigning (a manager: for employees of their own departments, checked by the service)
    "POST /orgs/{org_id}/assignments": _ASSIGNER_KEY,
    "GET /orgs/{org_id}/assignments": _ASSIGNER_KEY,
    "GET /orgs/{org_id}/assignments/{assignment_id}": _ASSIGNER_KEY,
    "POST /orgs/{org_id}/assignments/{assignment_id}/cancel": _ASSIGNER_KEY,
    "POST /orgs/{org_id}/assignments/{assignment_id}/reassign": _ASSIGNER_KEY,
    # starting and completing stand for the learner's own progress (an LMS integration)
    "POST /orgs/{org_id}/assignments/{assignment_id}/start": _ADMIN_KEY,
    "POST /orgs/{org_id}/assignments/{assignment_id}/complete": _ADMIN_KEY,
    "POST /xapi/statements": _ADMIN_KEY,
    "PUT /xapi/statements": _ADMIN_KEY,
    # webhooks
    "POST /orgs/{org_id}/webhooks": _ADMIN_KEY,
    "GET /orgs/{org_id}/webhooks": _ADMIN_KEY,
    "DELETE /orgs/{org_id}/webhooks/{webhook_id}": _ADMIN_KEY,
    "GET /orgs/{org_id}/webhooks/{webhook_id}/deliveries": _ADMIN_KEY,
}


def is_classified(route: str) -> bool:
    """Whether the table has a line for this page (``web:<name>``) or operation."""
    return route in PAGES or route in API


def may(role: str | None, route: str) -> bool:
    """Whether ``role`` may use the page or operation ``route``.

    ``role`` None is a visitor who is not signed in (public routes only). A route without a
    line is refused to everyone: forgetting to classify a route never opens it."""
    allowed = PAGES.get(route) if route.startswith("web:") else API.get(route)
    if allowed is None:
        return False
    return allowed is PUBLIC or (role is not None and role in allowed)


def roles_for(route: str) -> frozenset[str]:
    """The roles the table names for a route (``PUBLIC`` for anyone); empty if unclassified."""
    return PAGES.get(route) or API.get(route) or frozenset()
