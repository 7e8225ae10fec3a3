"""The writes SCIM makes, each in one transaction that takes the org's balance lock first
(decision 0001): a change of a User may deactivate the employee, which releases their
reservations under that lock, and the lock must come before any employee row's.

The rules are the services': ``tenancy.services.create_employee``,
``tenancy.provisioning.update_employee``, ``credits.actions.deactivate_employee`` and
``reactivate_employee`` for Users; ``tenancy.departments`` for Groups.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet
from scim2_models import InvalidValueException, NotFoundException, UniquenessException

from learncredits import ids
from learncredits.credits import actions
from learncredits.credits.locking import lock_balance
from learncredits.domain.errors import AlreadyExists
from learncredits.scim.resources import email_of, fallback_name, kept_attributes, name_of
from learncredits.tenancy import departments, provisioning
from learncredits.tenancy import services as tenancy
from learncredits.tenancy.models import Department, Employee, Organization, ScimProfile
from learncredits.tenancy.scim_tokens import ScimCaller

# --- Users ---------------------------------------------------------------------------------


def visible_employees(org: Organization) -> QuerySet[Employee]:
    """The org's employees SCIM shows: all but those the provider deleted."""
    return (
        Employee.objects.filter(org=org)
        .exclude(scim_profile__deleted_at__isnull=False)
        .select_related("department", "scim_profile")
    )


def user_name_matches(user_name: str) -> Q:
    """Employees whose userName is ``user_name`` (userName is not case-sensitive): the one
    the provider sent, or, for an employee it never sent one for, the email."""
    kept = Q(scim_profile__user_name__iexact=user_name)
    unkept = Q(email=user_name.strip().lower()) & (
        Q(scim_profile__isnull=True) | Q(scim_profile__user_name="")
    )
    return kept | unkept


def get_visible_employee(org: Organization, public_id: str) -> Employee:
    pk = ids.decode("employee", public_id)
    employee = visible_employees(org).filter(pk=pk).first() if pk is not None else None
    if employee is None:
        raise NotFoundException(detail="User not found")
    return employee


def profile_of(employee: Employee) -> ScimProfile | None:
    try:
        return employee.scim_profile
    except ScimProfile.DoesNotExist:
        return None


def _clean_user(attributes: dict[str, Any]) -> tuple[str, str, str, str]:
    """userName, email, name and external id of a User; invalidValue when it has no email."""
    user_name = str(attributes.get("userName") or "").strip()
    if not user_name:
        raise InvalidValueException(detail="userName is required")
    email = email_of(attributes)
    if email is None:
        raise InvalidValueException(
            detail="a User needs an email address: as its userName or in emails"
        )
    name = name_of(attributes) or fallback_name(attributes, email)
    return user_name, email, name[:200], str(attributes.get("externalId") or "")


def _check_unique(
    org: Organization, *, user_name: str, email: str, external_id: str, exclude: int | None
) -> Employee | None:
    """409 when another visible employee has this userName or externalId. Returns the
    employee, deleted by the provider, that has this email (it is provisioned again)."""
    others = visible_employees(org).exclude(pk=exclude or 0)
    if others.filter(user_name_matches(user_name)).exists():
        raise UniquenessException(detail="a User with this userName exists")
    if external_id and others.filter(external_id=external_id).exists():
        raise UniquenessException(detail="a User with this externalId exists")
    holder = Employee.objects.filter(org=org, email=email).exclude(pk=exclude or 0).first()
    if holder is None:
        return None
    if visible_employees(org).filter(pk=holder.pk).exists():
        raise UniquenessException(detail="a User with this email exists")
    return holder


def _apply_user(
    caller: ScimCaller,
    employee: Employee,
    attributes: dict[str, Any],
    *,
    user_name: str,
    email: str,
    name: str,
    external_id: str,
) -> Employee:
    org = caller.org
    try:
        provisioning.update_employee(
            org,
            employee.pk,
            actor=caller.actor,
            name=name,
            email=email,
            external_id=external_id,
        )
    except AlreadyExists as exc:
        raise UniquenessException(detail=exc.detail) from None
    provisioning.save_scim_profile(
        employee, user_name=user_name, attributes=kept_attributes(attributes), actor=caller.actor
    )
    active = attributes.get("active")
    if active is False:
        actions.deactivate_employee(org, employee.pk, actor=caller.actor)
    elif active is True:
        actions.reactivate_employee(org, employee.pk, actor=caller.actor)
    return visible_employees(org).get(pk=employee.pk)


def create_user(caller: ScimCaller, attributes: dict[str, Any]) -> Employee:
    """A new employee; or, when the provider had deleted the employee with this email,
    that employee provisioned again (active unless the User says otherwise)."""
    org = caller.org
    user_name, email, name, external_id = _clean_user(attributes)
    with transaction.atomic():
        lock_balance(org.pk)
        revived = _check_unique(
            org, user_name=user_name, email=email, external_id=external_id, exclude=None
        )
        if revived is None:
            employee = tenancy.create_employee(org, name=name, email=email, actor=caller.actor)
        else:
            employee = revived
            if attributes.get("active") is None:
                attributes = {**attributes, "active": True}
        return _apply_user(
            caller,
            employee,
            attributes,
            user_name=user_name,
            email=email,
            name=name,
            external_id=external_id,
        )


def replace_user(caller: ScimCaller, employee_id: int, attributes: dict[str, Any]) -> Employee:
    """The User as a whole (PUT, or a PATCH once applied). An absent ``active`` leaves the
    employee as they are."""
    org = caller.org
    user_name, email, name, external_id = _clean_user(attributes)
    with transaction.atomic():
        lock_balance(org.pk)
        employee = visible_employees(org).filter(pk=employee_id).first()
        if employee is None:
            raise NotFoundException(detail="User not found")
        if _check_unique(
            org, user_name=user_name, email=email, external_id=external_id, exclude=employee.pk
        ):
            raise UniquenessException(detail="a User with this email exists")
        return _apply_user(
            caller,
            employee,
            attributes,
            user_name=user_name,
            email=email,
            name=name,
            external_id=external_id,
        )


def delete_user(caller: ScimCaller, employee_id: int) -> None:
    """Deprovisioned: deactivated exactly as on the dashboard (their reservations are
    released), and from then on unknown to SCIM. The employee and their history stay."""
    org = caller.org
    with transaction.atomic():
        lock_balance(org.pk)
        employee = visible_employees(org).filter(pk=employee_id).first()
        if employee is None:
            raise NotFoundException(detail="User not found")
        actions.deactivate_employee(org, employee.pk, actor=caller.actor)
        provisioning.mark_scim_deleted(employee, actor=caller.actor)


# --- Groups --------------------------------------------------------------------------------


def get_department(org: Organization, public_id: str) -> Department:
    pk = ids.decode("department", public_id)
    department = Department.objects.filter(org=org, pk=pk).first() if pk is not None else None
    if department is None:
        raise NotFoundException(detail="Group not found")
    return department


def members_of(department: Department) -> list[Employee]:
    return list(visible_employees(department.org).filter(department=department).order_by("pk"))


def _member_ids(org: Organization, attributes: dict[str, Any]) -> set[int]:
    """The employees a Group lists; a member that is not one of the org's Users is refused."""
    wanted: set[int] = set()
    for member in attributes.get("members") or []:
        value = member.get("value") if isinstance(member, dict) else None
        kind = member.get("type") if isinstance(member, dict) else None
        pk = ids.decode("employee", value)
        if kind not in (None, "User") or pk is None:
            raise InvalidValueException(detail=f"members: {value!r} is not a User")
        wanted.add(pk)
    found = set(visible_employees(org).filter(pk__in=wanted).values_list("pk", flat=True))
    if found != wanted:
        raise InvalidValueException(detail="members: not every member is a User of this org")
    return wanted


def _clean_group(attributes: dict[str, Any]) -> tuple[str, str]:
    name = str(attributes.get("displayName") or "").strip()
    if not name:
        raise InvalidValueException(detail="displayName is required")
    return name, str(attributes.get("externalId") or "")


def _name_unique(org: Organization, name: str, exclude: int | None) -> None:
    others = Department.objects.filter(org=org).exclude(pk=exclude or 0)
    if others.filter(name=name).exists():
        raise UniquenessException(detail="a Group with this displayName exists")


def _set_members(caller: ScimCaller, department: Department, wanted: set[int]) -> None:
    org = caller.org
    current = set(visible_employees(org).filter(department=department).values_list("pk", flat=True))
    for pk in sorted(current - wanted):
        departments.set_employee_department(org, pk, None, actor=caller.actor)
    for pk in sorted(wanted - current):
        departments.set_employee_department(org, pk, department.pk, actor=caller.actor)


def create_group(caller: ScimCaller, attributes: dict[str, Any]) -> Department:
    org = caller.org
    name, external_id = _clean_group(attributes)
    with transaction.atomic():
        lock_balance(org.pk)
        _name_unique(org, name, None)
        wanted = _member_ids(org, attributes)
        department = departments.create_department(
            org, name=name, external_id=external_id, actor=caller.actor
        )
        _set_members(caller, department, wanted)
    return department


def replace_group(caller: ScimCaller, department_id: int, attributes: dict[str, Any]) -> Department:
    org = caller.org
    name, external_id = _clean_group(attributes)
    with transaction.atomic():
        lock_balance(org.pk)
        department = Department.objects.filter(org=org, pk=department_id).first()
        if department is None:
            raise NotFoundException(detail="Group not found")
        _name_unique(org, name, department.pk)
        wanted = _member_ids(org, attributes)
        changes = {
            k: v
            for k, v in (("name", name), ("external_id", external_id))
            if getattr(department, k) != v
        }
        if changes:
            department = departments.update_department(
                org, department.pk, actor=caller.actor, **changes
            )
        _set_members(caller, department, wanted)
    return department


def delete_group(caller: ScimCaller, department_id: int) -> None:
    """The department goes; its employees belong to none afterwards (they stay active)."""
    with transaction.atomic():
        lock_balance(caller.org.pk)
        departments.delete_department(caller.org, department_id, actor=caller.actor)
