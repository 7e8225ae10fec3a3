"""Emitting events: one row in the causing transaction, nothing sent before it commits."""

from __future__ import annotations

from typing import Any

from learncredits.notify.models import Event

# Event types sent to webhooks (API.md). Others are internal: they only cause email.
WEBHOOK_EVENT_TYPES = (
    "purchase.paid",
    "assignment.assigned",
    "assignment.started",
    "assignment.completed",
    "assignment.cancelled",
    "balance.at_risk",
    "balance.recovered",
    "overage.incurred",
    "invoice.issued",
)
INTERNAL_EVENT_TYPES = (
    "invoice.payment_failed",
    "auto_top_up.failed",
    "webhook.endpoint_disabled",
)


def emit(org_id: int, event_type: str, data: dict[str, Any]) -> Event:
    """Record that ``event_type`` happened; call inside the transaction that made it happen."""
    assert event_type in WEBHOOK_EVENT_TYPES or event_type in INTERNAL_EVENT_TYPES, event_type
    return Event.objects.create(org_id=org_id, type=event_type, data=data)


def emit_many(org_id: int, event_type: str, items: list[dict[str, Any]]) -> None:
    Event.objects.bulk_create(
        [Event(org_id=org_id, type=event_type, data=data) for data in items], batch_size=1000
    )
