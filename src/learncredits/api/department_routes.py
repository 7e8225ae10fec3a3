"""Departments and their budgets, and moving employees between them. The rules live in
tenancy/departments.py (the data) and credits/budgets.py (what is committed)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Status

from learncredits.api import schemas as s
from learncredits.api.auth import (
    decode_or_404,
    manager_of,
    org_for,
    require_org_admin,
)
from learncredits.api.common import ListParams, paginate, responses
from learncredits.domain.errors import NotFound, ValidationFailed
from learncredits.tenancy import departments
from learncredits.tenancy.models import Department, Employee

router = Router(tags=["departments"])


def _department_pk(department_id: str) -> int:
    return decode_or_404("department", department_id, "department")


@router.post("/orgs/{org_id}/departments", response=responses(201, s.DepartmentOut))
def post_department(request: HttpRequest, org_id: str, body: s.DepartmentIn) -> Status[Any]:
    principal = require_org_admin(request)
    org = org_for(request, org_id)
    department = departments.create_department(
        org,
        name=body.name,
        budget_credits=body.budget_credits,
        budget_year_start=body.budget_year_start,
        external_id=body.external_id,
        actor=principal.label,
    )
    return Status(201, department)


@router.get("/orgs/{org_id}/departments", response=responses(200, s.DepartmentPage))
def list_departments(request: HttpRequest, org_id: str, params: Query[ListParams]) -> s.Page:
    """The org's departments, each with its budget and what it has committed; a manager
    sees the departments they manage."""
    org = org_for(request, org_id)
    queryset = Department.objects.filter(org=org).select_related("org")
    scope = manager_of(request)
    if scope is not None:
        queryset = queryset.filter(pk__in=scope)
    return paginate(queryset, params)


def _department(request: HttpRequest, org_id: str, department_id: str) -> Department:
    org = org_for(request, org_id)
    pk = _department_pk(department_id)
    scope = manager_of(request)
    if scope is not None and pk not in scope:
        raise NotFound("department not found")
    return departments.get_department(org, pk)


@router.get("/orgs/{org_id}/departments/{department_id}", response=responses(200, s.DepartmentOut))
def get_department(request: HttpRequest, org_id: str, department_id: str) -> Department:
    return _department(request, org_id, department_id)


@router.patch(
    "/orgs/{org_id}/departments/{department_id}", response=responses(200, s.DepartmentOut)
)
def patch_department(
    request: HttpRequest, org_id: str, department_id: str, body: s.DepartmentPatch
) -> Department:
    """Rename, set or remove the budget (null: no limit), move the budget year's start."""
    principal = require_org_admin(request)
    org = org_for(request, org_id)
    changes = body.model_dump(exclude_unset=True)
    nulls = [f for f, v in changes.items() if v is None and f != "budget_credits"]
    if nulls:
        raise ValidationFailed(f"{', '.join(nulls)} must not be null")
    return departments.update_department(
        org, _department_pk(department_id), actor=principal.label, **changes
    )


@router.patch(
    "/orgs/{org_id}/employees/{employee_id}",
    response=responses(200, s.EmployeeOut),
    tags=["employees"],
)
def patch_employee(
    request: HttpRequest, org_id: str, employee_id: str, body: s.EmployeePatch
) -> Employee:
    """Rename an employee, or put them in a department (null: in none)."""
    principal = require_org_admin(request)
    org = org_for(request, org_id)
    pk = decode_or_404("employee", employee_id, "employee")
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    if "name" in changes and changes["name"] is None:
        raise ValidationFailed("name must not be null")
    if changes.get("department_id") is not None:
        changes["department_id"] = _department_pk(changes["department_id"])
    return departments.update_employee(org, pk, actor=principal.label, **changes)
