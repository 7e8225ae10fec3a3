"""A signed-in person's own account: the display name they go by and their password.

Every role may change both for themselves (the dashboard's Profile and Password pages), except
what the organization's identity provider keeps:

- a person whose employee record SCIM provisions (an ``external_id`` or a live SCIM profile)
  has the name the provider sends; changing it here would only disagree with the provider,
  so it is refused with ``managed_by_identity_provider``;
- an account made by single sign-on has no usable password (the provider checks who signs
  in), so there is no password to change; it is refused the same way. Such an account may
  still choose a password with "Forgot your password?" (docs/identity.md), after which it
  has one to change.

Single sign-on itself takes the name from the id token once, on the first sign-in, and never
again, so an SSO account's display name stays the person's to change. Email addresses are
the sign-in name and the key SCIM and single sign-on match people by: nobody changes their
own here.

The password rules are Django's: ``PasswordChangeForm`` asks for the current password and
checks the new one with ``AUTH_PASSWORD_VALIDATORS``, so the page enforces exactly what the
sign-up and reset forms do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.forms import PasswordChangeForm
from django.db import transaction

from learncredits.audit import trail as audit
from learncredits.domain.errors import ManagedByIdentityProvider, ValidationFailed
from learncredits.tenancy import services
from learncredits.tenancy.models import Membership, ScimProfile, SsoDomain

# The account's name column (``User.first_name``) holds at most this many characters.
MAX_NAME = 150

NAME_BY_SCIM = (
    "your name comes from your organization's identity provider (SCIM); "
    "change it there and it is updated here"
)
NO_PASSWORD = (
    "your account signs in with single sign-on and has no password here: your "
    "organization's identity provider checks who you are"
)


@dataclass(frozen=True)
class Ownership:
    """What of a person's account their organization's identity provider keeps."""

    name_by_scim: bool  # SCIM provisions their employee record, name included
    email_by_sso: bool  # their address is of a domain that signs in by single sign-on
    has_password: bool  # False: an account made by single sign-on, with no password

    @property
    def identity_provider(self) -> bool:
        return self.name_by_scim or self.email_by_sso or not self.has_password


def ownership(membership: Membership) -> Ownership:
    user: Any = membership.user
    employee = membership.employee
    scim = False
    if employee is not None:
        scim = (
            bool(employee.external_id)
            or ScimProfile.objects.filter(employee=employee, deleted_at__isnull=True).exists()
        )
    domain = user.email.rpartition("@")[2].lower()
    sso = SsoDomain.objects.filter(domain=domain, org_id=membership.org_id).exists()
    return Ownership(name_by_scim=scim, email_by_sso=sso, has_password=user.has_usable_password())


def clean_display_name(name: str) -> str:
    name = services.clean_name(name, "name")
    if len(name) > MAX_NAME:
        raise ValidationFailed(f"name must be at most {MAX_NAME} characters", field="name")
    return name


def rename(membership: Membership, name: str, *, actor: str) -> Any:
    """Set the account's display name (what the header, the team page and emails call the
    person); the org's employee record, which admins or SCIM keep, is not touched."""
    name = clean_display_name(name)
    if ownership(membership).name_by_scim:
        raise ManagedByIdentityProvider(NAME_BY_SCIM, field="name")
    with transaction.atomic():
        user = get_user_model().objects.select_for_update().get(pk=membership.user_id)
        before = user.get_full_name()
        if (user.first_name, user.last_name) == (name, ""):
            return user
        user.first_name, user.last_name = name, ""
        user.save(update_fields=["first_name", "last_name"])
        audit.record(
            actor,
            "user.rename",
            org_id=membership.org_id,
            target=f"usr_{user.pk}",
            before=before,
            after=name,
        )
    return user


def change_password(user: Any, data: dict[str, str], *, org_id: int, actor: str) -> None:
    """Change the account's password: ``data`` holds ``old_password``, ``new_password1``
    and ``new_password2`` as Django's ``PasswordChangeForm`` names them. A wrong current
    password, two different new ones or a new one the validators refuse is a
    ``ValidationFailed`` whose ``errors`` name the field of each message; nothing changes.
    The caller keeps the session signed in (``update_session_auth_hash``)."""
    if not user.has_usable_password():
        raise ManagedByIdentityProvider(NO_PASSWORD)
    form = PasswordChangeForm(user, data)
    if not form.is_valid():
        errors = {field: [str(m) for m in messages] for field, messages in form.errors.items()}
        detail = "; ".join(message for messages in errors.values() for message in messages)
        raise ValidationFailed(detail, errors=errors)
    with transaction.atomic():
        form.save()
        audit.record(actor, "user.password_change", org_id=org_id, target=f"usr_{user.pk}")
