"""Departments: creating, renaming and budgeting them, and who is in which.

The API, the dashboard and SCIM (which syncs groups as departments) call these functions.
An employee is in at most one department. Moving people between departments changes what
each department has committed (credits/budgets.py counts by the employees' current
department), so those writes take the org's balance lock first, as every assignment does:
a budget check made under that lock never sees a department's members change under it.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from learncredits import ids
from learncredits.audit import trail as audit
from learncredits.db import store
from learncredits.domain.budgets import clean_budget, clean_year_start
from learncredits.domain.errors import NotFound, ValidationFailed
from learncredits.tenancy.models import Department, Employee, Organization

_NAME_MAX = 200
_EXTERNAL_ID_MAX = 255


def _clean_name(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationFailed("name must not be empty", field="name")
    name = value.strip()
    if len(name) > _NAME_MAX:
        raise ValidationFailed(f"name must be at most {_NAME_MAX} characters", field="name")
    return name


def _clean_external_id(value: object) -> str:
    if not isinstance(value, str) or len(value) > _EXTERNAL_ID_MAX:
        raise ValidationFailed(
            f"external_id must be a string of at most {_EXTERNAL_ID_MAX} characters",
            field="external_id",
        )
    return value.strip()


_CLEANERS = {
    "name": _clean_name,
    "budget_credits": clean_budget,
    "budget_year_start": clean_year_start,
    "external_id": _clean_external_id,
}


def _name_taken() -> ValidationFailed:
    return ValidationFailed("a department with this name already exists", field="name")


def _lock(org: Organization) -> None:
    """The org's balance lock (credits/locking.py takes the same row, first, everywhere)."""
    store.lock_balance(org.pk)


def get_department(
    org: Organization, department_id: int, *, for_update: bool = False
) -> Department:
    """The org's department; another org's id is as unknown as one that does not exist."""
    queryset = Department.objects.filter(org=org, pk=department_id)
    found = (queryset.select_for_update() if for_update else queryset).first()
    if found is None:
        raise NotFound("department not found")
    return found


def create_department(
    org: Organization,
    *,
    name: str,
    budget_credits: int | None = None,
    budget_year_start: str = "01-01",
    external_id: str = "",
    actor: str,
) -> Department:
    """A new department of the org; its name is unique within the org."""
    values: dict[str, Any] = {
        field: _CLEANERS[field](value)
        for field, value in (
            ("name", name),
            ("budget_credits", budget_credits),
            ("budget_year_start", budget_year_start),
            ("external_id", external_id),
        )
    }
    try:
        with transaction.atomic():
            department = Department.objects.create(org=org, **values)
            audit.record(
                actor,
                "department.create",
                org_id=org.pk,
                target=ids.encode("department", department.pk) or "",
                **values,
            )
    except IntegrityError:
        raise _name_taken() from None
    return department


def update_department(
    org: Organization, department_id: int, *, actor: str, **changes: Any
) -> Department:
    """Rename, re-budget or re-key a department: any of ``name``, ``budget_credits`` (None:
    no limit), ``budget_year_start`` and ``external_id``. Every value is checked before
    anything is written. A lower budget takes nothing back: it only refuses what a manager
    assigns next."""
    unknown = sorted(set(changes) - set(_CLEANERS))
    if unknown:
        raise ValidationFailed(f"{', '.join(unknown)} is not a department setting")
    cleaned = {field: _CLEANERS[field](value) for field, value in changes.items()}
    try:
        with transaction.atomic():
            # Under the balance lock: a budget check running now sees the old budget or the
            # new one, never a change halfway through its decision.
            _lock(org)
            department = get_department(org, department_id, for_update=True)
            changed = {f: v for f, v in cleaned.items() if getattr(department, f) != v}
            if changed:
                for field, value in changed.items():
                    setattr(department, field, value)
                department.save(update_fields=list(changed))
                audit.record(
                    actor,
                    "department.update",
                    org_id=org.pk,
                    target=ids.encode("department", department.pk) or "",
                    **changed,
                )
    except IntegrityError:
        raise _name_taken() from None
    return department


def set_employee_department(
    org: Organization, employee_id: int, department_id: int | None, *, actor: str
) -> Employee:
    """Put the employee in the department (out of any other), or in none with None.

    Both must be the org's: another org's employee or department is not found (404). The
    employee's open and consumed assignments count for the new department from now on."""
    with transaction.atomic():
        _lock(org)
        employee = Employee.objects.select_for_update().filter(org=org, pk=employee_id).first()
        if employee is None:
            raise NotFound("employee not found")
        if department_id is not None:
            get_department(org, department_id)
        if employee.department_id != department_id:
            before = employee.department_id
            employee.department_id = department_id
            employee.save(update_fields=["department"])
            audit.record(
                actor,
                "employee.department",
                org_id=org.pk,
                target=ids.encode("employee", employee.pk) or "",
                department_id=ids.encode("department", department_id),
                previous_department_id=ids.encode("department", before),
            )
    return employee


def update_employee(org: Organization, employee_id: int, *, actor: str, **changes: Any) -> Employee:
    """Change an employee's ``name`` and/or ``department_id`` (None: no department), in one
    transaction."""
    unknown = sorted(set(changes) - {"name", "department_id"})
    if unknown:
        raise ValidationFailed(f"{', '.join(unknown)} cannot be changed here")
    name = _clean_name(changes["name"]) if "name" in changes else None
    with transaction.atomic():
        if "department_id" in changes:
            employee = set_employee_department(
                org, employee_id, changes["department_id"], actor=actor
            )
        else:
            found = Employee.objects.select_for_update().filter(org=org, pk=employee_id).first()
            if found is None:
                raise NotFound("employee not found")
            employee = found
        if name is not None and name != employee.name:
            employee.name = name
            employee.save(update_fields=["name"])
            audit.record(
                actor,
                "employee.rename",
                org_id=org.pk,
                target=ids.encode("employee", employee.pk) or "",
                name=name,
            )
    return employee


def delete_department(org: Organization, department_id: int, *, actor: str) -> None:
    """Remove a department: its employees belong to none afterwards, its managers manage
    it no more. Their assignments stay as they are; they simply count for no budget."""
    with transaction.atomic():
        _lock(org)
        department = get_department(org, department_id, for_update=True)
        members = Employee.objects.filter(org=org, department=department).update(department=None)
        department.managers.clear()
        audit.record(
            actor,
            "department.delete",
            org_id=org.pk,
            target=ids.encode("department", department.pk) or "",
            name=department.name,
            employees=members,
        )
        department.delete()


def departments_of(org: Organization) -> list[Department]:
    return list(Department.objects.filter(org=org).order_by("name", "pk"))
