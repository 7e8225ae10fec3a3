"""Opening an organization: its row (tenancy) and its empty balance row (credits), together."""

from __future__ import annotations

from django.db import transaction

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
