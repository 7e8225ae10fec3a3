"""Changing who an employee is (name, email, identity-provider id) and what the identity
provider sent for them (the SCIM profile).

Activation is not here: deactivating releases reservations under the balance lock, so it
and reactivation live in ``credits.actions``. SCIM (``learncredits.scim``) wraps these and
those in one transaction per request.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from learncredits.audit import trail as audit
from learncredits.domain.errors import AlreadyExists, NotFound, ValidationFailed
from learncredits.tenancy import services
from learncredits.tenancy.models import Employee, Organization, ScimProfile

MAX_EXTERNAL_ID = 255


def clean_external_id(value: str | None) -> str:
    value = (value or "").strip()
    if len(value) > MAX_EXTERNAL_ID:
        raise ValidationFailed(f"externalId is longer than {MAX_EXTERNAL_ID} characters")
    return value


def update_employee(
    org: Organization,
    employee_id: int,
    *,
    actor: str,
    name: str | None = None,
    email: str | None = None,
    external_id: str | None = None,
) -> Employee:
    """Change an employee's name, email or identity-provider id (None: unchanged); a value
    another employee of the org holds is refused (409), nothing written."""
    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"] = services.clean_name(name)
    if email is not None:
        changes["email"] = services.clean_email(email)
    if external_id is not None:
        changes["external_id"] = clean_external_id(external_id)
    with transaction.atomic():
        employee = Employee.objects.select_for_update().filter(org=org, pk=employee_id).first()
        if employee is None:
            raise NotFound("employee not found")
        changed = {k: v for k, v in changes.items() if getattr(employee, k) != v}
        if not changed:
            return employee
        others = Employee.objects.filter(org=org).exclude(pk=employee.pk)
        if "email" in changed and others.filter(email=changed["email"]).exists():
            raise AlreadyExists("another employee has this email")
        if (
            changed.get("external_id")
            and others.filter(external_id=changed["external_id"]).exists()
        ):
            raise AlreadyExists("another employee has this externalId")
        for field, value in changed.items():
            setattr(employee, field, value)
        try:
            with transaction.atomic():
                employee.save(update_fields=list(changed))
        except IntegrityError:
            raise AlreadyExists("another employee has this email or externalId") from None
        audit.record(
            actor,
            "employee.update",
            org_id=org.pk,
            target=f"emp_{employee.pk}",
            **{k: v for k, v in changed.items()},
        )
    return employee


def save_scim_profile(
    employee: Employee, *, user_name: str, attributes: dict[str, Any], actor: str
) -> ScimProfile:
    """Keep what the provider sent, in its caller's transaction; audited when it changed."""
    before = ScimProfile.objects.filter(employee=employee).first()
    if (
        before is not None
        and before.deleted_at is None
        and before.user_name == user_name[:254]
        and before.attributes == attributes
    ):
        return before
    audit.record(
        actor,
        "employee.scim_profile",
        org_id=employee.org_id,
        target=f"emp_{employee.pk}",
        user_name=user_name[:254],
    )
    profile, _ = ScimProfile.objects.update_or_create(
        employee=employee,
        defaults={
            "org_id": employee.org_id,
            "user_name": user_name[:254],
            "attributes": attributes,
            "updated_at": timezone.now(),
            "deleted_at": None,
        },
    )
    return profile


def mark_scim_deleted(employee: Employee, *, actor: str) -> None:
    """The provider deleted the user: SCIM no longer shows them (the caller deactivates)."""
    now = timezone.now()
    ScimProfile.objects.update_or_create(
        employee=employee,
        defaults={"org_id": employee.org_id, "deleted_at": now, "updated_at": now},
    )
    audit.record(actor, "employee.scim_delete", org_id=employee.org_id, target=f"emp_{employee.pk}")


def find_employee_by_email(org: Organization, email: str) -> Employee | None:
    return Employee.objects.filter(org=org, email=email.strip().lower()).first()
