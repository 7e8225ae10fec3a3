"""Emitting events: one row in the causing transaction, nothing sent before it commits."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from learncredits.credits import sql
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


_EVENT_COLUMNS = ("org_id", "type", "data", "created_at", "dispatched_at")


def emit(org_id: int, event_type: str, data: dict[str, Any]) -> Event:
    """Record that ``event_type`` happened; call inside the transaction that made it happen."""
    assert event_type in WEBHOOK_EVENT_TYPES or event_type in INTERNAL_EVENT_TYPES, event_type
    # One prebuilt INSERT instead of Model.save(): every start writes an event while it holds
    # the org's balance lock, and the ORM's save path was a good part of that time.
    now = timezone.now()
    values = (org_id, event_type, data, now, None)
    (pk,) = sql.insert(Event, _EVENT_COLUMNS, [sql.adapt(Event, _EVENT_COLUMNS, values)])
    event = Event(
        id=pk, org_id=org_id, type=event_type, data=data, created_at=now, dispatched_at=None
    )
    event._state.adding = False
    event._state.db = "default"
    return event


def emit_many(org_id: int, event_type: str, items: list[dict[str, Any]]) -> None:
    Event.objects.bulk_create(
        [Event(org_id=org_id, type=event_type, data=data) for data in items], batch_size=1000
    )
