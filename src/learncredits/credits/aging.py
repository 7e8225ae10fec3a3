"""Reservations nobody starts: warned, then released (docs/identity.md, "Reservations nobody
starts").

An org with ``release_unstarted_after_days`` set gives back the credits of assignments still
``assigned`` that many days after they were made. Seven days before, its admins get one
email listing them (one ``assignment.release_warning`` event per org and run; notify turns
it into the email). An assignment is never released unless it was warned at least seven
days before: one warned late (the setting was just turned on, or lowered) is released seven
days after its warning.

The worker runs ``run`` every few minutes and ``learncredits release-unstarted`` runs it by
hand. Each org's warning and each org's release is one transaction that begins with the
org's balance lock and reads, under it, what is due: two runs at once serialize on that lock,
and the second finds the warnings written and the assignments cancelled, so nothing is
warned or released twice. The release itself is ``actions.release_unstarted``, the path a
cancel takes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from learncredits import ids
from learncredits.audit import trail as audit
from learncredits.credits import actions
from learncredits.credits.events import emit
from learncredits.credits.locking import lock_balance
from learncredits.credits.models import Assignment, ReleaseWarning
from learncredits.domain.errors import ValidationFailed
from learncredits.tenancy.models import Organization

ACTOR = "system:aging"
WARN_BEFORE = timedelta(days=7)
# The aging report's bound: a hundred years covers any assignment and keeps the cut-off a
# valid date.
MAX_OLDER_THAN_DAYS = 36500
# Assignments warned or released per org and run; the rest wait for the next run (minutes
# later), so one transaction never holds an org's balance lock for long.
BATCH = 1000


def older_than(
    assignments: QuerySet[Assignment], days: object, now: datetime | None = None
) -> QuerySet[Assignment]:
    """The aging report (the API's ``older_than_days`` and the Assignments page's filter):
    the assignments made at least ``days`` days ago, oldest first. ``days`` is a number or
    the text of one (a page's filter); anything but a whole number from 0 to
    ``MAX_OLDER_THAN_DAYS`` is refused, naming the rule."""
    if isinstance(days, str):
        days = ids.whole_number(days, low=0, high=MAX_OLDER_THAN_DAYS)
    if not isinstance(days, int) or isinstance(days, bool) or not 0 <= days <= MAX_OLDER_THAN_DAYS:
        raise ValidationFailed(
            f"older_than_days must be a whole number from 0 to {MAX_OLDER_THAN_DAYS}"
        )
    cutoff = (now or timezone.now()) - timedelta(days=days)
    return assignments.filter(created_at__lte=cutoff).order_by("created_at", "pk")


@dataclass(frozen=True)
class Due:
    """One assignment a run warns about or releases (what a dry run lists)."""

    org_id: int
    assignment_id: int
    employee: str
    content: str
    credit_cost: int
    release_at: datetime


@dataclass
class AgingRun:
    warned: list[Due] = field(default_factory=list)
    released: list[Due] = field(default_factory=list)


def _open(org_id: int) -> QuerySet[Assignment]:
    return Assignment.objects.filter(org_id=org_id, status=Assignment.Status.ASSIGNED)


def due_for_warning(org_id: int, days: int, now: datetime) -> QuerySet[Assignment]:
    """Open assignments that reach ``days`` of age within seven days, not warned yet."""
    return _open(org_id).filter(
        created_at__lte=now - timedelta(days=days) + WARN_BEFORE,
        release_warnings__isnull=True,
    )


def due_for_release(org_id: int, days: int, now: datetime) -> QuerySet[Assignment]:
    """Open assignments ``days`` old or older whose warning is at least seven days old."""
    return _open(org_id).filter(
        created_at__lte=now - timedelta(days=days),
        release_warnings__warned_at__lte=now - WARN_BEFORE,
    )


def release_at(created_at: datetime, warned_at: datetime, days: int) -> datetime:
    """When an assignment warned at ``warned_at`` is released: at its age limit, but never
    sooner than seven days after the warning."""
    return max(created_at + timedelta(days=days), warned_at + WARN_BEFORE)


def _setting(org_id: int) -> int | None:
    """The org's setting as committed now (read under the balance lock: a change made
    since the run listed the orgs counts)."""
    days: int | None = (
        Organization.objects.filter(pk=org_id)
        .values_list("release_unstarted_after_days", flat=True)
        .first()
    )
    return days


def _due(a: Assignment, at: datetime) -> Due:
    return Due(a.org_id, a.pk, a.employee.name, a.content.title, a.credit_cost, at)


def _warning_data(org: Organization, days: int, due: list[Due]) -> dict[str, Any]:
    tz = ZoneInfo(org.timezone)
    return {
        "release_unstarted_after_days": days,
        "assignments": [
            {
                "id": ids.encode("assignment", d.assignment_id),
                "employee": d.employee,
                "content": d.content,
                "credit_cost": d.credit_cost,
                "release_at": ids.iso(d.release_at),
                # The day in the org's time zone, as the email shows it.
                "release_on": d.release_at.astimezone(tz).date().isoformat(),
            }
            for d in due
        ],
    }


def warn_org(org: Organization, now: datetime, *, dry_run: bool = False) -> list[Due]:
    """Warn the org's admins, once, of the assignments due within seven days."""
    with transaction.atomic():
        if not dry_run:
            lock_balance(org.pk)
        days = _setting(org.pk)
        if days is None:
            return []
        rows = list(
            due_for_warning(org.pk, days, now)
            .select_related("employee", "content")
            .order_by("pk")[:BATCH]
        )
        due = [_due(a, release_at(a.created_at, now, days)) for a in rows]
        if not due or dry_run:
            return due
        ReleaseWarning.objects.bulk_create(
            ReleaseWarning(
                org_id=org.pk, assignment_id=d.assignment_id, warned_at=now, release_at=d.release_at
            )
            for d in due
        )
        emit(org.pk, "assignment.release_warning", _warning_data(org, days, due))
        audit.record(
            ACTOR,
            "assignment.release_warning",
            org_id=org.pk,
            target=f"org_{org.pk}",
            assignments=[ids.encode("assignment", d.assignment_id) for d in due],
        )
    return due


def release_org(org: Organization, now: datetime, *, dry_run: bool = False) -> list[Due]:
    """Release the org's warned assignments that are past their age and their notice."""
    with transaction.atomic():
        locked = None if dry_run else lock_balance(org.pk)
        days = _setting(org.pk)
        if days is None:
            return []
        rows = list(
            due_for_release(org.pk, days, now)
            .select_related("employee", "content")
            .order_by("pk")[:BATCH]
        )
        due = [_due(a, now) for a in rows]
        if not rows or locked is None:
            return due
        reason = f"not started within {days} days"
        actions.release_unstarted(locked, org, rows, actor=ACTOR, reason=reason, now=now)
        audit.record(
            ACTOR,
            "assignment.release_unstarted",
            org_id=org.pk,
            target=f"org_{org.pk}",
            assignments=[ids.encode("assignment", d.assignment_id) for d in due],
            credits=sum(d.credit_cost for d in due),
            reason=reason,
        )
    return due


def run(now: datetime | None = None, *, dry_run: bool = False) -> AgingRun:
    """One pass over every org with the setting: warn what is due, release what is due.

    A release needs a warning at least seven days old, so nothing warned in this pass is
    released in it. ``dry_run`` writes nothing and answers what would be done."""
    now = now or timezone.now()
    result = AgingRun()
    orgs = Organization.objects.filter(release_unstarted_after_days__isnull=False).order_by("pk")
    for org in orgs:
        result.released.extend(release_org(org, now, dry_run=dry_run))
        result.warned.extend(warn_org(org, now, dry_run=dry_run))
    return result
