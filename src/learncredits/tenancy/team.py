"""An organization's team: who has which role, changing a role, removing someone.

The rules every caller (the team page, the API, the console) shares: only an owner (or the
operator) makes or unmakes owners; an organization that has an owner keeps at least one, so
the last owner can be neither removed nor demoted (409 ``invalid_state``); a manager manages
departments of their own org only. Each change is one transaction, audited with the actor.

The last-owner check locks the org's owner memberships (before the member changed, always
in the same order) and counts them under that lock, so two owners demoting each other at
the same moment cannot both succeed, nor wait on each other forever.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from learncredits.audit import trail as audit
from learncredits.domain.errors import Forbidden, InvalidState, NotFound, ValidationFailed
from learncredits.tenancy import access
from learncredits.tenancy.models import Department, Employee, Membership, Organization

ROLES = tuple(Membership.Role.values)
LAST_OWNER = (
    "an organization keeps at least one owner: make someone else owner first, "
    "then change or remove this one"
)


def clean_role(role: str) -> str:
    if role not in ROLES:
        raise ValidationFailed(f"role must be one of {', '.join(ROLES)}", field="role")
    return role


def check_may_grant(by_role: str, role: str, *, current: str | None = None) -> None:
    """Only an owner (or the operator) gives the owner role or takes it away."""
    touches_owner = role == Membership.Role.OWNER or current == Membership.Role.OWNER
    if touches_owner and by_role not in (access.OWNER, access.OPERATOR):
        raise Forbidden("only an owner may make or unmake owners")


def clean_departments(
    org: Organization, role: str, department_ids: Iterable[int] | None
) -> list[Department]:
    """A manager's departments (this org's only); every other role manages none."""
    wanted = list(dict.fromkeys(department_ids or ()))
    if not wanted:
        return []
    # Another org's department is answered as an unknown one, whatever the role.
    found = {d.pk: d for d in Department.objects.filter(org=org, pk__in=wanted)}
    missing = [pk for pk in wanted if pk not in found]
    if missing:
        raise NotFound(f"{len(missing)} department(s) not found in this organization")
    if role != Membership.Role.MANAGER:
        raise ValidationFailed("only a manager has departments", field="department_ids")
    return [found[pk] for pk in wanted]


def members(org: Organization) -> list[Membership]:
    """The org's sign-in accounts with their roles, owners first."""
    order = {role: n for n, role in enumerate(ROLES)}
    rows = list(
        Membership.objects.filter(org=org)
        .select_related("user")
        .prefetch_related("departments")
        .order_by("user__email")
    )
    return sorted(rows, key=lambda m: order.get(m.role, len(order)))


def _locked_member(org: Organization, user_id: int) -> tuple[Membership, list[int]]:
    """The member, locked, and the org's owners (membership ids), locked first and in one
    order: every change locks the owners before its target, so two changes never wait on
    each other in opposite orders, and the owners counted cannot change meanwhile."""
    owners = list(
        Membership.objects.select_for_update()
        .filter(org=org, role=Membership.Role.OWNER)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    found = (
        Membership.objects.select_for_update()
        .select_related("user")
        .filter(org=org, user_id=user_id)
        .first()
    )
    if found is None:
        raise NotFound("user not found")
    return found, owners


def _keep_an_owner(leaving: Membership, owners: list[int]) -> None:
    if leaving.role == Membership.Role.OWNER and [pk for pk in owners if pk != leaving.pk] == []:
        raise InvalidState(LAST_OWNER)


def change_role(
    org: Organization,
    user_id: int,
    *,
    role: str,
    department_ids: Iterable[int] | None = None,
    by_role: str,
    actor: str,
) -> Membership:
    """Give a member another role (and a manager their departments)."""
    role = clean_role(role)
    with transaction.atomic():
        membership, owners = _locked_member(org, user_id)
        check_may_grant(by_role, role, current=membership.role)
        departments = clean_departments(org, role, department_ids)
        if membership.role != role:
            _keep_an_owner(membership, owners)
        before = membership.role
        if role == Membership.Role.LEARNER and membership.employee_id is None:
            user = membership.user
            membership.employee, _ = Employee.objects.get_or_create(
                org=org, email=user.email, defaults={"name": user.first_name or user.email}
            )
        membership.role = role
        membership.save(update_fields=["role", "employee"])
        membership.departments.set(departments)
        audit.record(
            actor,
            "user.role_change",
            org_id=org.pk,
            target=f"usr_{user_id}",
            role=role,
            previous_role=before,
            department_ids=[d.pk for d in departments],
        )
    return membership


def remove_member(org: Organization, user_id: int, *, by_role: str, actor: str) -> None:
    """Remove a member: their sign-in account is deleted, so they can no longer sign in
    (their employee record, assignments and every audit row stay)."""
    with transaction.atomic():
        membership, owners = _locked_member(org, user_id)
        check_may_grant(by_role, membership.role, current=membership.role)
        _keep_an_owner(membership, owners)
        email, role = membership.user.email, membership.role
        membership.user.delete()  # the membership goes with it
        audit.record(
            actor, "user.remove", org_id=org.pk, target=f"usr_{user_id}", email=email, role=role
        )
