"""Emitting events: one row in the causing transaction, nothing sent before it commits.

The outbox sits in credits, below billing and notify, because its busiest writers are the
balance writes here, which must add their events inside their own transaction; billing
emits through it too, and notify's worker side (notify/delivery.py) drains it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db import connection
from django.utils import timezone

from learncredits.credits.models import Event
from learncredits.db import sql

# Event types sent to webhooks (docs/api.md). Others are internal: they cause email, or a
# reaction of the worker (``react_to``), and are never offered to webhooks.
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
    # Available fell below the org's auto top-up trigger (credits/alerts.py); the worker
    # buys (billing/tasks.py).
    "auto_top_up.due",
)

Reaction = Callable[[Event], None]
_reactions: dict[str, list[Reaction]] = {}


def react_to(event_type: str, reaction: Reaction) -> None:
    """Have the worker call ``reaction`` for every event of this internal type when it
    drains the outbox (notify/delivery.py), inside the transaction that marks the event
    dispatched: work that must follow a commit, and must not be lost, without the outbox
    knowing who does it. Registered at start-up by the app that does it (its
    ``AppConfig.ready``), so the layers above credits plug in and nothing here imports them."""
    if event_type not in INTERNAL_EVENT_TYPES:
        raise ValueError(f"{event_type!r} is not an internal event type")
    if reaction not in _reactions.setdefault(event_type, []):
        _reactions[event_type].append(reaction)


def reactions_to(event_type: str) -> tuple[Reaction, ...]:
    """The reactions registered for ``event_type``, in registration order."""
    return tuple(_reactions.get(event_type, ()))


_EVENT_COLUMNS = ("org_id", "type", "data", "created_at", "dispatched_at")


def _check_type(event_type: str) -> None:
    """Every event written is of a listed type, so none reaches webhooks unlisted."""
    assert event_type in WEBHOOK_EVENT_TYPES or event_type in INTERNAL_EVENT_TYPES, event_type


def _row(org_id: int, event_type: str, data: dict[str, Any]) -> tuple[datetime, list[Any]]:
    _check_type(event_type)
    now = timezone.now()
    return now, sql.adapt(Event, _EVENT_COLUMNS, (org_id, event_type, data, now, None))


def emit(org_id: int, event_type: str, data: dict[str, Any]) -> Event:
    """Record that ``event_type`` happened; call inside the transaction that made it happen."""
    # One prebuilt INSERT instead of Model.save(): every start writes an event while it holds
    # the org's balance lock, and the ORM's save path was a good part of that time.
    now, row = _row(org_id, event_type, data)
    (pk,) = sql.insert(Event, _EVENT_COLUMNS, [row])
    return sql.loaded(
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


def emit_in(batch: sql.Batch, org_id: int, event_type: str, data: dict[str, Any]) -> None:
    """``emit`` as one statement of a batch of writes (the row's id is not needed)."""
    _, row = _row(org_id, event_type, data)
    batch.add(sql.insert_sql(connection.vendor, Event, _EVENT_COLUMNS, 1, False), row)


def emit_many(org_id: int, event_type: str, items: list[dict[str, Any]]) -> None:
    _check_type(event_type)
    Event.objects.bulk_create(
        [Event(org_id=org_id, type=event_type, data=data) for data in items], batch_size=1000
    )
