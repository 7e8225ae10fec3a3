"""Opening an organization and changing its settings: the writes that touch both the org's
row (tenancy) and its balance (credits), each in one transaction."""

from __future__ import annotations

from collections.abc import Mapping

from django.db import transaction

from learncredits.credits.actions import reevaluate_at_risk
from learncredits.credits.locking import lock_balance
from learncredits.credits.models import Balance
from learncredits.tenancy import services as tenancy
from learncredits.tenancy.models import Organization


def create_org(
    *,
    name: str,
    billing_email: str,
    timezone_name: str = "UTC",
    alert_threshold: int = 0,
    actor: str = "system",
) -> Organization:
    """A new organization with its (empty) balance row, in one transaction.

    Every action locks the balance row first, so an org must never exist without one; the
    org's fields are checked (and the creation audited) by tenancy."""
    with transaction.atomic():
        org = tenancy.create_org_record(
            name=name,
            billing_email=billing_email,
            timezone_name=timezone_name,
            alert_threshold=alert_threshold,
            actor=actor,
        )
        Balance.objects.create(org=org)
    return org


def update_org_settings(
    org: Organization, changes: Mapping[str, object], *, actor: str
) -> Organization:
    """Change an org's settings: the one write path for them (API, pages, console).

    Every value is checked first (``tenancy.clean_org_settings``), so nothing is written when
    one is refused. The write, its audit row and, when the alert threshold is among the
    changes, the at-risk re-evaluation are one transaction: a threshold is never saved with
    an at-risk flag (and alert) that still follows the old one. The balance row is locked
    before the org row is written, the order every balance write takes, so this cannot
    deadlock with them."""
    cleaned = tenancy.clean_org_settings(changes, org)
    if not cleaned:
        return org
    threshold_changed = bool({"alert_threshold", "alert_threshold_percent"} & set(cleaned))
    with transaction.atomic():
        if threshold_changed:
            lock_balance(org.pk)
        tenancy.save_org_settings(org, cleaned, actor=actor)
        if threshold_changed:
            reevaluate_at_risk(org)
    return org
