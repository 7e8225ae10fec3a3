"""The assignment lifecycle (docs/product.md sections 5 and 6) as a transition table.

``decide`` says, for a status and an action, whether the action applies, is a harmless
repeat (starting twice charges once), or is illegal. The write paths in credits/actions.py
ask it before touching anything.
"""

from __future__ import annotations

import enum

from learncredits.domain.errors import InvalidState


class Status(enum.StrEnum):
    ASSIGNED = "assigned"
    STARTED = "started"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class Action(enum.StrEnum):
    START = "start"
    COMPLETE = "complete"
    CANCEL = "cancel"
    REASSIGN = "reassign"


class Outcome(enum.Enum):
    APPLY = "apply"
    NOOP = "noop"
    START_THEN_COMPLETE = "start_then_complete"


OPEN_STATUSES = (Status.ASSIGNED, Status.STARTED)

_TABLE: dict[tuple[Status, Action], Outcome] = {
    (Status.ASSIGNED, Action.START): Outcome.APPLY,
    (Status.STARTED, Action.START): Outcome.NOOP,
    (Status.COMPLETED, Action.START): Outcome.NOOP,
    (Status.ASSIGNED, Action.COMPLETE): Outcome.START_THEN_COMPLETE,
    (Status.STARTED, Action.COMPLETE): Outcome.APPLY,
    (Status.COMPLETED, Action.COMPLETE): Outcome.NOOP,
    (Status.ASSIGNED, Action.CANCEL): Outcome.APPLY,
    (Status.CANCELLED, Action.CANCEL): Outcome.NOOP,
    (Status.ASSIGNED, Action.REASSIGN): Outcome.APPLY,
}


def decide(status: Status | str, action: Action) -> Outcome:
    """The outcome of ``action`` on an assignment in ``status``; raises InvalidState if illegal."""
    outcome = _TABLE.get((Status(status), action))
    if outcome is None:
        raise InvalidState(f"cannot {action.value} an assignment that is {Status(status).value}")
    return outcome
