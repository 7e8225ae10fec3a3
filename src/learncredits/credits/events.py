"""Emitting events: one row in the causing transaction, nothing sent before it commits.

The outbox sits in credits, below billing and notify, because its busiest writers are the
balance writes here, which must add their events inside their own transaction; billing
emits through it too, and notify's worker side (notify/delivery.py) drains it.

Every event row is written by a function of this module, and each of them checks the event
type first; nothing else inserts into the event table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from django.utils import timezone

from learncredits.credits.models import Event
from learncredits.db import store

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
    # Open assignments the aging service will release in seven days (credits/aging.py);
    # notify emails the org's admins the list.
    "assignment.release_warning",
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


_KNOWN_TYPES = frozenset(WEBHOOK_EVENT_TYPES + INTERNAL_EVENT_TYPES)


class UnknownEventType(ValueError):
    """An event type nobody subscribes to or sends: a programming error, refused before
    the row is written (a typo would otherwise be an event that silently goes nowhere)."""


def _checked(event_type: str) -> str:
    """Every function below writes its rows after this, so no event is written without its
    type checked (a real check, not an ``assert``, which ``python -O`` would drop)."""
    if event_type not in _KNOWN_TYPES:
        raise UnknownEventType(event_type)
    return event_type


def emit(org_id: int, event_type: str, data: dict[str, Any]) -> Event:
    """Record that ``event_type`` happened; call inside the transaction that made it happen."""
    # One prebuilt INSERT (the store's) instead of Model.save(): every start writes an event
    # while it holds the org's balance lock, and the ORM's save path was a good part of that
    # time.
    now = timezone.now()
    pk = store.insert_event(org_id, _checked(event_type), data, now)
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
    store.insert_event_in(batch, org_id, _checked(event_type), data, timezone.now())


def emit_all(
    events: Iterable[tuple[int, str, dict[str, Any]]], *, now: datetime | None = None
) -> None:
    """Many events (``(org_id, event_type, data)``, of any orgs and types) in as few INSERTs
    as the database's parameter limit allows, with one time for all; their ids are not read
    back. For the writes that cause thousands at once (a bulk cancel, a month-end close)."""
    rows = [
        store.NewEvent(org_id, _checked(event_type), data) for org_id, event_type, data in events
    ]
    if rows:
        store.insert_events(rows, now or timezone.now())


def emit_many(org_id: int, event_type: str, items: list[dict[str, Any]]) -> None:
    """One event of ``event_type`` per item, all for one org."""
    emit_all((org_id, event_type, data) for data in items)
