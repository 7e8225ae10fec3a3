"""The v1 HTTP API (docs/api.md). Views only parse, authorize, call one service function and shape
the answer; every rule lives in the services and the domain."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from ninja import NinjaAPI, Query, Status
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from pydantic import Field

from learncredits import ids
from learncredits.api import schemas as s
from learncredits.api.auth import (
    BearerAuth,
    RateLimited,
    caller,
    decode_or_404,
    department_filter,
    manager_of,
    org_for,
    record_denial,
    require_operator,
)
from learncredits.api.common import ListParams, content, paginate, responses
from learncredits.api.problems import from_domain_error, problem, validation_problem
from learncredits.billing import purchases
from learncredits.billing import tax as billing_tax
from learncredits.catalog.models import Content
from learncredits.catalog.services import create_content, current_price_book, set_price_book
from learncredits.credits import accounts, actions, aging, ledger_export
from learncredits.credits.models import Assignment, Purchase
from learncredits.credits.queries import BalanceView, balance_view
from learncredits.domain import pricing
from learncredits.domain.errors import (
    DomainError,
    Forbidden,
    NotFound,
    Unauthenticated,
    ValidationFailed,
)
from learncredits.tenancy import scim_tokens
from learncredits.tenancy import services as tenancy
from learncredits.tenancy.models import ApiKey, Employee, Organization

logger = logging.getLogger(__name__)

api = NinjaAPI(
    title="learncredits",
    version="1",
    description="Credits and billing for training marketplaces. See docs/api.md.",
    auth=BearerAuth(),
    docs_url="/docs",
    openapi_url="/openapi.json",
    urls_namespace="api-v1",
)

# --- errors --------------------------------------------------------------------------------


@api.exception_handler(DomainError)
def _domain_error(request: HttpRequest, exc: DomainError) -> HttpResponse:
    if isinstance(exc, Unauthenticated | Forbidden):
        record_denial(request, exc.code)
    response = from_domain_error(exc)
    if response.status_code == 401 and request.path.startswith("/api/v1/xapi/"):
        response["WWW-Authenticate"] = 'Basic realm="learncredits xAPI"'
    return response


@api.exception_handler(NinjaValidationError)
def _validation_error(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    problems = [
        {
            "loc": _clean_loc(err.get("loc", ())),
            "msg": str(err.get("msg", "")),
            "type": str(err.get("type", "")),
        }
        for err in exc.errors
    ]
    summary = "; ".join(f"{'.'.join(p['loc'])}: {p['msg']}" for p in problems[:5])
    return validation_problem(summary or "invalid request", problems)


def _clean_loc(loc: Any) -> list[str]:
    """ninja nests a body parameter under its own name ("body", "body", "quantity")."""
    parts = [str(p) for p in loc]
    if parts[:2] == ["body", "body"] or parts[:2] == ["query", "params"]:
        parts = parts[:1] + parts[2:]
    return parts


@api.exception_handler(AuthenticationError)
def _auth_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    record_denial(request, "unauthenticated")
    return problem(401, "unauthenticated", "Unauthenticated", "a valid bearer token is required")


@api.exception_handler(RateLimited)
def _rate_limited(request: HttpRequest, exc: RateLimited) -> HttpResponse:
    response = problem(429, "rate_limited", "Too many requests", exc.detail)
    response["Retry-After"] = str(exc.retry_after)
    return response


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if exc.status_code == 401:
        return _auth_error(request, AuthenticationError())
    return validation_problem(str(exc), status=exc.status_code)


@api.exception_handler(Exception)
def _unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
    if isinstance(exc, RequestDataTooBig):
        return validation_problem("the request body is too large", status=413)
    if isinstance(exc, OperationalError | InterfaceError):
        # The database is unreachable (restarting, failing over): temporary, and nothing was
        # committed, so the client should retry (with the same Idempotency-Key).
        logger.warning("database unavailable on %s %s: %s", request.method, request.path, exc)
        response = problem(
            503, "unavailable", "Service unavailable", "the database is unavailable; retry shortly"
        )
        response["Retry-After"] = "1"
        return response
    logger.exception("unhandled error on %s %s", request.method, request.path)
    return problem(500, "internal_error", "Internal error", "an unexpected error occurred")


# --- organizations (operator) --------------------------------------------------------------


@api.post("/orgs", response=responses(201, s.OrgOut), tags=["operator"])
def create_org(request: HttpRequest, body: s.OrgIn) -> Status[Any]:
    require_operator(request)
    org = accounts.create_org(
        name=body.name,
        billing_email=body.billing_email,
        timezone_name=body.timezone,
        alert_threshold=body.alert_threshold,
        actor=caller(request).label,
    )
    return Status(201, org)


@api.get("/orgs", response=responses(200, s.OrgPage), tags=["operator"])
def list_orgs(request: HttpRequest, params: Query[ListParams]) -> s.Page:
    require_operator(request)
    return paginate(Organization.objects.all(), params)


@api.patch("/orgs/{org_id}", response=responses(200, s.OrgOut), tags=["operator"])
def patch_org(request: HttpRequest, org_id: str, body: s.OrgPatch) -> Organization:
    require_operator(request)
    org = org_for(request, org_id)
    changes = body.model_dump(exclude_unset=True)
    # A null tax removes the profile, a null release_unstarted_after_days turns aging
    # off, a null alert_threshold_percent goes back to credits and null alert_recipients
    # back to the defaults; no other setting can be removed.
    removable = (
        "tax",
        "release_unstarted_after_days",
        "alert_threshold_percent",
        "alert_recipients",
    )
    nulls = [field for field, value in changes.items() if value is None and field not in removable]
    if nulls:
        raise ValidationFailed(f"{', '.join(nulls)} must not be null")
    chosen = changes.get("alert_recipients")
    if chosen is not None:
        changes["alert_recipients"] = {**chosen, "user_ids": _user_pks(chosen.get("user_ids", []))}
    return accounts.update_org_settings(org, changes, actor=caller(request).label)


@api.post("/orgs/{org_id}/api-keys", response=responses(201, s.ApiKeyOut), tags=["operator"])
def create_api_key(request: HttpRequest, org_id: str, body: s.ApiKeyIn) -> Status[Any]:
    require_operator(request)
    org = org_for(request, org_id)
    created = tenancy.create_api_key(
        org,
        name=body.name,
        actor=caller(request).label,
        role=body.role,
        department_ids=_department_pks(body.department_ids),
    )
    return Status(201, created)


def _user_pks(values: list[str]) -> list[int]:
    """User ids from a body; one that names no user: 404, as for any id."""
    decoded = [ids.decode("user", value) for value in values]
    if None in decoded:
        raise NotFound("user not found")
    return [pk for pk in decoded if pk is not None]


def _department_pks(values: list[str] | None) -> list[int]:
    """Department ids from a body; one that names no department: 404, as for any id."""
    decoded = [ids.decode("department", value) for value in values or ()]
    if None in decoded:
        raise NotFound("department not found")
    return [pk for pk in decoded if pk is not None]


@api.get("/orgs/{org_id}/api-keys", response=responses(200, s.ApiKeyPage), tags=["operator"])
def list_api_keys(request: HttpRequest, org_id: str, params: Query[ListParams]) -> s.Page:
    require_operator(request)
    org = org_for(request, org_id)
    return paginate(ApiKey.objects.filter(org=org), params)


@api.delete(
    "/orgs/{org_id}/api-keys/{key_id}", response=responses(200, s.ApiKeyInfoOut), tags=["operator"]
)
def revoke_api_key(request: HttpRequest, org_id: str, key_id: str) -> ApiKey:
    """Revoke a key: it stops working at once and stays listed with ``revoked_at``."""
    principal = require_operator(request)
    org = org_for(request, org_id)
    pk = decode_or_404("api_key", key_id, "API key")
    return tenancy.revoke_api_key(org, pk, actor=principal.label)


@api.post("/orgs/{org_id}/scim-tokens", response=responses(201, s.ScimTokenOut), tags=["scim"])
def create_scim_token(request: HttpRequest, org_id: str, body: s.ScimTokenIn) -> Status[Any]:
    """A token for the org's identity provider to provision through /scim/v2/; the token
    is answered once and only its hash is kept."""
    org = org_for(request, org_id)
    created = scim_tokens.create_scim_token(org, name=body.name, actor=caller(request).label)
    return Status(201, created)


@api.delete("/orgs/{org_id}/scim-tokens/{token_id}", response=responses(204, None), tags=["scim"])
def revoke_scim_token(request: HttpRequest, org_id: str, token_id: str) -> HttpResponse:
    """The token stops working at once; revoking it again answers 204 as well."""
    org = org_for(request, org_id)
    pk = decode_or_404("scim_token", token_id, "SCIM token")
    scim_tokens.revoke_scim_token(org, pk, actor=caller(request).label)
    return HttpResponse(status=204)


@api.post("/orgs/{org_id}/users", response=responses(201, s.UserOut), tags=["users"])
def create_user(request: HttpRequest, org_id: str, body: s.UserIn) -> Status[Any]:
    """A sign-in account with a role; for the operator and admin keys (docs/identity.md).
    Only the operator may make an owner through the API: a key is never an owner."""
    principal = caller(request)
    org = org_for(request, org_id)
    membership = tenancy.create_user(
        org,
        email=body.email,
        name=body.name,
        role=body.role,
        password=body.password,
        actor=principal.label,
        department_ids=_department_pks(body.department_ids),
        by_role=principal.role,
    )
    return Status(201, membership)


@api.post(
    "/orgs/{org_id}/adjustments", response=responses(201, s.LedgerEntryOut), tags=["operator"]
)
def create_adjustment(request: HttpRequest, org_id: str, body: s.AdjustmentIn) -> Status[Any]:
    principal = require_operator(request)
    org = org_for(request, org_id)
    entry = actions.adjust_credits(org, body.credits, reason=body.reason, actor=principal.label)
    return Status(201, entry)


# --- catalog and pricing -------------------------------------------------------------------


@api.post("/content", response=responses(201, s.ContentOut), tags=["operator"])
def post_content(request: HttpRequest, body: s.ContentIn) -> Status[Any]:
    require_operator(request)
    item = create_content(
        title=body.title,
        premium=body.premium,
        credit_cost=body.credit_cost,
        xapi_activity_id=body.xapi_activity_id,
        actor=caller(request).label,
    )
    return Status(201, item)


@api.get("/content", response=responses(200, s.ContentPage), tags=["catalog"])
def list_content(request: HttpRequest, params: Query[ListParams]) -> s.Page:
    return paginate(Content.objects.all(), params)


@api.put("/pricing", response=responses(200, s.PriceBookOut), tags=["operator"])
def put_pricing(request: HttpRequest, body: s.PriceBookIn) -> pricing.PriceBook:
    principal = require_operator(request)
    book = set_price_book(
        body.retail_unit_price_cents,
        [pricing.Tier(t.min_quantity, t.unit_price_cents) for t in body.tiers],
        actor=principal.label,
    )
    return book


@api.get("/pricing", response=responses(200, s.PriceBookOut), tags=["catalog"])
def get_pricing(request: HttpRequest) -> pricing.PriceBook:
    return current_price_book()


class QuoteParams(s.Schema):
    quantity: int = Field(..., ge=1, le=pricing.MAX_PURCHASE_QUANTITY)


@api.get("/pricing/quote", response=responses(200, s.QuoteOut), tags=["catalog"])
def get_quote(request: HttpRequest, params: Query[QuoteParams]) -> s.QuoteOut:
    """A quote; for an org with a tax profile, with the tax it would pay today."""
    quote = pricing.quote(current_price_book(), params.quantity)
    org = caller(request).org
    taxed = billing_tax.quote_tax(org, quote) if org is not None else None
    return s.QuoteOut.with_tax(quote, taxed)


# --- one organization ----------------------------------------------------------------------


@api.get("/orgs/{org_id}", response=responses(200, s.OrgOut), tags=["orgs"])
def get_org(request: HttpRequest, org_id: str) -> Organization:
    return org_for(request, org_id)


@api.get("/orgs/{org_id}/balance", response=responses(200, s.BalanceOut), tags=["orgs"])
def get_balance(request: HttpRequest, org_id: str) -> BalanceView:
    return balance_view(org_for(request, org_id))


@api.post("/orgs/{org_id}/employees", response=responses(201, s.EmployeeOut), tags=["employees"])
def post_employee(request: HttpRequest, org_id: str, body: s.EmployeeIn) -> Status[Any]:
    org = org_for(request, org_id)
    employee = tenancy.create_employee(
        org, name=body.name, email=body.email, actor=caller(request).label
    )
    return Status(201, employee)


@api.get("/orgs/{org_id}/employees", response=responses(200, s.EmployeePage), tags=["employees"])
def list_employees(request: HttpRequest, org_id: str, params: Query[ListParams]) -> s.Page:
    org = org_for(request, org_id)
    return paginate(Employee.objects.filter(org=org), params)


@api.post(
    "/orgs/{org_id}/employees/{employee_id}/deactivate",
    response=responses(200, s.EmployeeOut),
    tags=["employees"],
)
def deactivate_employee(request: HttpRequest, org_id: str, employee_id: str) -> Employee:
    org = org_for(request, org_id)
    pk = decode_or_404("employee", employee_id, "employee")
    return actions.deactivate_employee(org, pk, actor=caller(request).label)


@api.post(
    "/orgs/{org_id}/employees/{employee_id}/reactivate",
    response=responses(200, s.EmployeeOut),
    tags=["employees"],
)
def reactivate_employee(request: HttpRequest, org_id: str, employee_id: str) -> Employee:
    """Active again; the assignments released at deactivation are not brought back.
    Reactivating an active employee answers 200 with the employee, unchanged."""
    org = org_for(request, org_id)
    pk = decode_or_404("employee", employee_id, "employee")
    return actions.reactivate_employee(org, pk, actor=caller(request).label)


@api.post(
    "/orgs/{org_id}/purchases", response=responses(201, s.PurchaseOut, 402), tags=["purchases"]
)
def post_purchase(
    request: HttpRequest, response: HttpResponse, org_id: str, body: s.PurchaseIn
) -> Status[Any]:
    org = org_for(request, org_id)
    opened = purchases.purchase_credits(
        org,
        body.quantity,
        actor=caller(request).label,
        idempotency_key=request.headers.get("Idempotency-Key"),
    )
    if opened.existing:  # the same Idempotency-Key as before: this purchase, carried on
        response["Idempotent-Replayed"] = "true"
    return Status(201, opened.purchase)


@api.get("/orgs/{org_id}/purchases", response=responses(200, s.PurchasePage), tags=["purchases"])
def list_purchases(request: HttpRequest, org_id: str, params: Query[ListParams]) -> s.Page:
    org = org_for(request, org_id)
    return paginate(Purchase.objects.filter(org=org).prefetch_related("receipts"), params)


@api.get(
    "/orgs/{org_id}/purchases/{purchase_id}",
    response=responses(200, s.PurchaseOut),
    tags=["purchases"],
)
def get_purchase(request: HttpRequest, org_id: str, purchase_id: str) -> Purchase:
    org = org_for(request, org_id)
    pk = decode_or_404("purchase", purchase_id, "purchase")
    found = Purchase.objects.filter(org=org, pk=pk).first()
    if found is None:
        raise NotFound("purchase not found")
    return found


# --- assignments ---------------------------------------------------------------------------


def _decode_all(kind: str, values: list[str], what: str) -> list[int]:
    decoded = [(value, ids.decode(kind, value)) for value in values]
    unknown = [value for value, pk in decoded if pk is None]
    if unknown:
        raise NotFound(f"{len(unknown)} {what}(s) not found", missing_employee_ids=unknown)
    return [pk for _, pk in decoded if pk is not None]


@api.post(
    "/orgs/{org_id}/assignments", response=responses(201, s.BulkAssignOut), tags=["assignments"]
)
def post_assignments(request: HttpRequest, org_id: str, body: s.AssignIn) -> Status[Any]:
    org = org_for(request, org_id)
    content_pk = decode_or_404("content", body.content_id, "content")
    employee_pks = _decode_all("employee", body.employee_ids, "employee")
    result = actions.assign_bulk(
        org,
        content_id=content_pk,
        employee_ids=employee_pks,
        actor=caller(request).label,
        manager_of=manager_of(request),
    )
    return Status(201, result)


class AssignmentFilter(ListParams):
    status: Literal["assigned", "started", "completed", "cancelled"] | None = None
    employee_id: str | None = Field(None, max_length=40)
    content_id: str | None = Field(None, max_length=40)
    # The aging report: only assignments made at least this many days ago, oldest first.
    older_than_days: int | None = Field(None, ge=0, le=aging.MAX_OLDER_THAN_DAYS)
    department_id: str | None = Field(None, max_length=40)


@api.get(
    "/orgs/{org_id}/assignments", response=responses(200, s.AssignmentPage), tags=["assignments"]
)
def list_assignments(request: HttpRequest, org_id: str, params: Query[AssignmentFilter]) -> s.Page:
    org = org_for(request, org_id)
    queryset = Assignment.objects.filter(org=org)
    scope = manager_of(request)
    if scope is not None:
        queryset = queryset.filter(employee__department_id__in=scope)
    department_pk = department_filter(request, org, params.department_id)
    if department_pk is not None:
        queryset = queryset.filter(employee__department_id=department_pk)
    if params.older_than_days is not None:
        queryset = aging.older_than(queryset, params.older_than_days)
    if params.status:
        queryset = queryset.filter(status=params.status)
    if params.employee_id is not None:
        employee_pk = decode_or_404("employee", params.employee_id, "employee")
        if not Employee.objects.filter(org=org, pk=employee_pk).exists():
            raise NotFound("employee not found")
        queryset = queryset.filter(employee_id=employee_pk)
    if params.content_id is not None:
        content_pk = decode_or_404("content", params.content_id, "content")
        queryset = queryset.filter(content_id=content_pk)
    # The aging report reads oldest first (ids follow the time assignments were made).
    return paginate(queryset, params, oldest_first=params.older_than_days is not None)


def _assignment_pk(assignment_id: str) -> int:
    return decode_or_404("assignment", assignment_id, "assignment")


@api.get(
    "/orgs/{org_id}/assignments/{assignment_id}",
    response=responses(200, s.AssignmentOut),
    tags=["assignments"],
)
def get_assignment(request: HttpRequest, org_id: str, assignment_id: str) -> Assignment:
    org = org_for(request, org_id)
    found = Assignment.objects.filter(org=org, pk=_assignment_pk(assignment_id)).first()
    if found is None:
        raise NotFound("assignment not found")
    return found


def _lifecycle_route(verb: str, action: Callable[..., Assignment], *, scoped: bool = False) -> None:
    def view(request: HttpRequest, org_id: str, assignment_id: str) -> Assignment:
        org = org_for(request, org_id)
        scope = {"manager_of": manager_of(request)} if scoped else {}
        return action(org, _assignment_pk(assignment_id), actor=caller(request).label, **scope)

    view.__name__ = f"{verb}_assignment"
    api.post(
        f"/orgs/{{org_id}}/assignments/{{assignment_id}}/{verb}",
        response=responses(200, s.AssignmentOut),
        tags=["assignments"],
        operation_id=f"{verb}_assignment",
    )(view)


_lifecycle_route("start", actions.start_assignment)
_lifecycle_route("complete", actions.complete_assignment)
_lifecycle_route("cancel", actions.cancel_assignment, scoped=True)


@api.post(
    "/orgs/{org_id}/assignments/{assignment_id}/reassign",
    response=responses(200, s.ReassignOut),
    tags=["assignments"],
)
def reassign(
    request: HttpRequest, org_id: str, assignment_id: str, body: s.ReassignIn
) -> actions.ReassignResult:
    org = org_for(request, org_id)
    employee_pk = decode_or_404("employee", body.employee_id, "employee")
    return actions.reassign(
        org,
        _assignment_pk(assignment_id),
        employee_id=employee_pk,
        actor=caller(request).label,
        manager_of=manager_of(request),
    )


# --- ledger --------------------------------------------------------------------------------


class LedgerParams(ListParams):
    format: Literal["json", "csv"] = "json"
    department_id: str | None = Field(None, max_length=40)


@api.get(
    "/orgs/{org_id}/ledger",
    response=responses(200, s.LedgerPage),
    tags=["ledger"],
    openapi_extra=content("text/csv"),
)
def get_ledger(request: HttpRequest, org_id: str, params: Query[LedgerParams]) -> Any:
    """The org's ledger, newest first; ``format=csv`` downloads all of it, oldest first."""
    org = org_for(request, org_id)
    department_pk = department_filter(request, org, params.department_id)
    if params.format == "csv":
        response = StreamingHttpResponse(
            ledger_export.ledger_csv(org, department_id=department_pk), content_type="text/csv"
        )
        response["Content-Disposition"] = (
            f'attachment; filename="{ledger_export.ledger_csv_filename(org, department_pk)}"'
        )
        return response
    return paginate(ledger_export.ledger_entries(org, department_id=department_pk), params)


def _register_routers() -> None:
    from learncredits.api.billing_routes import router as billing_router
    from learncredits.api.notify_routes import router as notify_router
    from learncredits.api.xapi_routes import router as xapi_router

    api.add_router("", billing_router)
    api.add_router("", notify_router)
    api.add_router("", xapi_router)
    api.add_router("", "learncredits.api.refund_routes.router")
    api.add_router("", "learncredits.api.payment_routes.router")
    api.add_router("", "learncredits.api.tax_routes.router")
    api.add_router("", "learncredits.api.sso_routes.router")
    api.add_router("", "learncredits.api.department_routes.router")


_register_routers()
