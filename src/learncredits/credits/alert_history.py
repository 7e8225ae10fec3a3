"""The org's alerts, active and past, as Settings > Billing lists them (docs/product.md
section 9, "The alert history").

Two sources, both written by the code that raises them:

- ``Alert`` rows, which have a state: the at-risk episodes (opened and resolved by
  credits/alerts.py in the transaction that crosses the line, with the numbers of both
  crossings) and each month's first overage (resolved when the month's invoice is issued);
- the outbox's one-off notices (``Event`` rows emailed to the org): assignments about to be
  released, a declined invoice payment, auto top-up switched off by a declined payment, a
  webhook endpoint switched off. A release warning is active until its release day; the
  others are past once sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from learncredits.credits.models import NOTICE_EVENT_TYPES, Alert, Event
from learncredits.domain.money import format_cents
from learncredits.tenancy.models import Organization

# The notices a page lists, with their label. Every one of them is emailed (notify/emails.py).
NOTICE_TYPES: dict[str, str] = dict(
    zip(
        NOTICE_EVENT_TYPES,
        ("Release warning", "Payment declined", "Auto top-up stopped", "Webhook switched off"),
        strict=True,
    )
)
KIND_LABELS: dict[str, str] = {
    Alert.Kind.AT_RISK: "Balance at risk",
    Alert.Kind.OVERAGE: "Overage incurred",
    **NOTICE_TYPES,
}


@dataclass(frozen=True)
class AlertItem:
    kind: str  # "at_risk", "overage" or a notice's event type
    label: str
    raised_at: datetime
    active: bool
    # When it cleared (resolved, or a release warning's release day); None while active.
    cleared_at: datetime | None
    why: str
    # What the numbers were when it cleared (at_risk only; empty when not kept).
    cleared_why: str = ""


@dataclass(frozen=True)
class AlertHistory:
    active: list[AlertItem]
    past: list[AlertItem]


def _n(value: object) -> int:
    return int(value) if isinstance(value, int | str) and str(value).lstrip("-").isdigit() else 0


def _credits(count: int) -> str:
    return f"{count} credit{'' if count == 1 else 's'}"


def at_risk_why(data: Mapping[str, Any]) -> str:
    """ "120 credits assigned, 100 credits held: -20 available, at or below the threshold of
    0 credits" (with the percentage when the threshold is one)."""
    if "assigned" not in data:
        return ""
    line = _credits(_n(data.get("alert_threshold")))
    percent = data.get("alert_threshold_percent")
    if percent is not None:
        line += f" ({_n(percent)}% of credits held)"
    return (
        f"{_credits(_n(data['assigned']))} assigned, {_credits(_n(data.get('credits')))} held: "
        f"{_n(data.get('available'))} available, at or below the threshold of {line}"
    )


def cleared_why(data: Mapping[str, Any] | None) -> str:
    if not data or "assigned" not in data:
        return ""
    return (
        f"{_n(data.get('available'))} available ({_credits(_n(data['assigned']))} assigned, "
        f"{_credits(_n(data.get('credits')))} held), above the threshold of "
        f"{_credits(_n(data.get('alert_threshold')))}"
    )


def _overage_why(alert: Alert) -> str:
    data = alert.data or {}
    base = f"started beyond the credits held in {alert.period}, billed at the retail rate"
    if "overage_credits" not in data:
        return f"Assignments {base}"
    return f"{_credits(_n(data['overage_credits']))} {base} on the monthly invoice"


def _notice(event: Event, now: datetime) -> AlertItem:
    data: Mapping[str, Any] = event.data if isinstance(event.data, Mapping) else {}
    active, cleared_at = False, event.created_at
    if event.type == "assignment.release_warning":
        listed = [a for a in data.get("assignments") or () if isinstance(a, Mapping)]
        days = sorted({str(a.get("release_on", "")) for a in listed} - {""})
        why = f"{len(listed)} unstarted assignment{'' if len(listed) == 1 else 's'} to be "
        why += f"released on {', '.join(days)}" if days else "released"
        ends = [t for t in (parse_datetime(str(a.get("release_at", ""))) for a in listed) if t]
        cleared_at = max(ends) if ends else event.created_at
        active = cleared_at > now
    elif event.type == "invoice.payment_failed":
        why = (
            f"Invoice {data.get('number', '')} ({format_cents(_n(data.get('total_cents')))}) "
            f"declined: {data.get('reason', '')}"
        )
        if data.get("will_retry"):
            why += "; it will be charged again"
    elif event.type == "auto_top_up.failed":
        why = (
            f"Buying {_credits(_n(data.get('quantity')))} was declined: "
            f"{data.get('reason', '')}; auto top-up is off until it is saved again"
        )
    else:
        why = (
            f"{data.get('url', '')} switched off after "
            f"{_n(data.get('consecutive_failures'))} failed deliveries"
        )
    return AlertItem(
        kind=event.type,
        label=NOTICE_TYPES[event.type],
        raised_at=event.created_at,
        active=active,
        cleared_at=None if active else cleared_at,
        why=why,
    )


def _alert(alert: Alert) -> AlertItem:
    at_risk = alert.kind == Alert.Kind.AT_RISK
    return AlertItem(
        kind=alert.kind,
        label=KIND_LABELS[alert.kind],
        raised_at=alert.created_at,
        active=alert.active,
        cleared_at=alert.resolved_at,
        why=at_risk_why(alert.data or {}) if at_risk else _overage_why(alert),
        cleared_why=cleared_why(alert.resolved_data) if at_risk else "",
    )


def history(org: Organization, *, limit: int = 20) -> AlertHistory:
    """Every active alert, and the newest ``limit`` past ones, newest first."""
    now = timezone.now()
    alerts = [
        *Alert.objects.filter(org=org, active=True).order_by("-pk"),
        *Alert.objects.filter(org=org, active=False).order_by("-pk")[:limit],
    ]
    items = [_alert(alert) for alert in alerts]
    notices = Event.objects.filter(org=org, type__in=NOTICE_EVENT_TYPES).order_by("-pk")[:limit]
    items.extend(_notice(event, now) for event in notices)
    items.sort(key=lambda item: item.raised_at, reverse=True)
    return AlertHistory(
        active=[item for item in items if item.active],
        past=[item for item in items if not item.active][:limit],
    )
