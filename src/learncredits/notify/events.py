"""Emitting events: one row in the causing transaction, nothing sent before it commits."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone

from learncredits.db import store
from learncredits.notify.models import Event

# Event types sent to webhooks (docs/api.md). Others are internal: they only cause email.
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
    "credit_note.issued",
)
INTERNAL_EVENT_TYPES = (
    "invoice.payment_failed",
    "auto_top_up.failed",
    "webhook.endpoint_disabled",
)


def _checked(event_type: str) -> datetime:
    assert event_type in WEBHOOK_EVENT_TYPES or event_type in INTERNAL_EVENT_TYPES, event_type
    return timezone.now()


def emit(org_id: int, event_type: str, data: dict[str, Any]) -> Event:
    """Record that ``event_type`` happened; call inside the transaction that made it happen."""
    # One prebuilt INSERT (the store's) instead of Model.save(): every start writes an event
    # while it holds the org's balance lock, and the ORM's save path was a good part of that
    # time.
    now = _checked(event_type)
    pk = store.insert_event(org_id, event_type, data, now)
    return store.loaded(
        Event,
        {
            "id": pk,
            "org_id": org_id,
            "type": event_type,
            "data": data,
            "created_at": now,
            "dispatched_at": None,
        },
    )


def emit_in(batch: store.Batch, org_id: int, event_type: str, data: dict[str, Any]) -> None:
    """``emit`` as one statement of a batch of writes (the row's id is not needed)."""
    store.insert_event_in(batch, org_id, event_type, data, _checked(event_type))


def emit_many(org_id: int, event_type: str, items: list[dict[str, Any]]) -> None:
    Event.objects.bulk_create(
        [Event(org_id=org_id, type=event_type, data=data) for data in items], batch_size=1000
    )
