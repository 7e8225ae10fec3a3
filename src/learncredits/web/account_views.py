"""The account menu's pages: a person's profile (their name, email, role and organization,
and the display name they change) and their password. Every role may use both
(tenancy/access.py); the rules, including what the identity provider keeps, are in
tenancy/profile.py."""

from __future__ import annotations

from typing import Any

from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_cool_off, get_failure_limit
from django.contrib import messages
from django.contrib.auth import update_session_auth_hash
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from learncredits.domain.errors import DomainError, ValidationFailed
from learncredits.domain.errors import http_status as status_for
from learncredits.tenancy import profile
from learncredits.tenancy.models import Membership
from learncredits.web import signin
from learncredits.web.views import org_admin

PASSWORD_FIELDS = ("old_password", "new_password1", "new_password2")
TOO_MANY = "too many wrong passwords for this account or address: wait a few minutes and try again"


def _membership(request: HttpRequest) -> Membership:
    membership: Membership = request.membership  # type: ignore[attr-defined]
    return membership


def _actor(request: HttpRequest) -> str:
    return f"user:usr_{request.user.pk}"


@org_admin
@require_http_methods(["GET", "POST"])
def profile_page(request: HttpRequest) -> HttpResponse:
    membership = _membership(request)
    owned = profile.ownership(membership)
    name = request.user.get_full_name()  # type: ignore[union-attr]
    error, status = "", 200
    if request.method == "POST":
        name = request.POST.get("name", "")
        try:
            profile.rename(membership, name, actor=_actor(request))
        except DomainError as exc:
            error, status = exc.detail, status_for(exc)
        else:
            messages.success(request, "Your name is saved.")
            return redirect("web:profile")
    context: dict[str, Any] = {
        "owned": owned,
        "name": name,
        "error": error,
        "departments": membership.departments.order_by("name")
        if membership.role == Membership.Role.MANAGER
        else [],
        "max_name": profile.MAX_NAME,
        "name_by_scim": profile.NAME_BY_SCIM,
    }
    return render(request, "web/profile.html", context, status=status)


def _claim_password_check(request: HttpRequest, username: str) -> list[signin.Key] | None:
    """Checking the current password draws on the same budget as signing in (web/signin.py):
    a stolen session cannot guess the password faster here than at /login. The claimed
    slots, or None when the account's or the address's budget is spent."""
    AxesProxyHandler.update_request(request)
    keys = signin.throttle_keys(username, getattr(request, "axes_ip_address", None))
    spent = signin.claim(
        keys,
        limit=get_failure_limit(request, {"username": username}),
        cool_off=get_cool_off(request),
    )
    if spent is not None:
        signin.touch([spent])
        return None
    return keys


@org_admin
@require_http_methods(["GET", "POST"])
def password_page(request: HttpRequest) -> HttpResponse:
    user: Any = request.user
    errors: dict[str, list[str]] = {}
    refused, status = "", 200
    if request.method == "POST":
        data = {field: request.POST.get(field, "") for field in PASSWORD_FIELDS}
        # An empty current password is refused by the form without being checked, so it
        # claims nothing of the sign-in budget (and writes nothing).
        claimed = (
            _claim_password_check(request, user.get_username()) if data["old_password"] else []
        )
        try:
            if claimed is None:
                raise ValidationFailed(TOO_MANY, errors={"old_password": [TOO_MANY]})
            profile.change_password(
                user, data, org_id=_membership(request).org_id, actor=_actor(request)
            )
        except ValidationFailed as exc:
            found = exc.extra.get("errors")
            errors = found if isinstance(found, dict) else {"__all__": [exc.detail]}
            status = 429 if claimed is None else status_for(exc)
            if claimed and "old_password" not in errors:
                signin.give_back(claimed)  # the current password was right
        except DomainError as exc:
            refused, status = exc.detail, status_for(exc)
            if claimed:
                signin.give_back(claimed)
        else:
            signin.give_back(claimed or [])
            update_session_auth_hash(request, user)  # this session stays signed in
            messages.success(request, "Your password is changed.")
            return redirect("web:profile")
    context = {
        "has_password": user.has_usable_password(),
        "no_password": profile.NO_PASSWORD,
        "refused": refused,
        "errors": errors,
        "general": errors.get("__all__", []),
    }
    return render(request, "web/password.html", context, status=status)
