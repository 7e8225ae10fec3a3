"""Opaque public ids: a type prefix and the row's key (``asg_42``), the one parser of
whole numbers typed or sent by people (dashboard forms and filters, console forms), and the
one way times are written for them (``iso``).

The prefix tells a human which kind of object an id names and lets us refuse an id of the
wrong kind as unknown. Anything that does not decode is simply an unknown id.

Python's ``int()`` and ``str.isdigit()`` are too generous for request input: ``int('٣')`` is 3,
``int('1_000')`` is 1000, ``'²'.isdigit()`` is true while ``int('²')`` fails, and a number of
thirty digits reaches the database and overflows its 64-bit columns. So every whole number
from a request goes through ``whole_number``: ASCII digits only, bounded to the range asked
for (never wider than a 64-bit column).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

PREFIXES = {
    "org": "org",
    "employee": "emp",
    "content": "cnt",
    "assignment": "asg",
    "purchase": "pur",
    "ledger": "led",
    "api_key": "key",
    "user": "usr",
    "invoice": "inv",
    "alert": "alr",
    "webhook": "whk",
    "department": "dep",
}
BIGINT_MIN = -(2**63)
BIGINT_MAX = 2**63 - 1
_MAX_PK = BIGINT_MAX
_WHOLE = re.compile(r"(-?)([0-9]+)", re.ASCII)
_BLANK = " \t\r\n"


def whole_number(value: object, *, low: int = 1, high: int = BIGINT_MAX) -> int | None:
    """``value`` as a whole number within ``low``..``high``, or None when it is not one.

    Accepted: ASCII digits, with a leading minus only where ``low`` is negative, and
    surrounding ASCII blanks (typed input often has them). Refused: digits of other scripts,
    superscripts, ``1_000``, ``1e3``, ``+5``, ``5.0``, anything out of range. The range is
    clamped to a 64-bit column's, so no accepted number can overflow the database."""
    if not isinstance(value, str):
        return None
    match = _WHOLE.fullmatch(value.strip(_BLANK))
    if match is None:
        return None
    sign, digits = match.groups()
    digits = digits.lstrip("0") or "0"
    if len(digits) > 19:  # beyond any 64-bit number (and int() of long strings is costly)
        return None
    number = -int(digits) if sign else int(digits)
    if not max(low, BIGINT_MIN) <= number <= min(high, BIGINT_MAX):
        return None
    return number


def encode(kind: str, pk: int | None) -> str | None:
    if pk is None:
        return None
    return f"{PREFIXES[kind]}_{pk}"


def decode(kind: str, value: object) -> int | None:
    """The primary key behind a public id, or None when it names nothing of this kind."""
    if not isinstance(value, str):
        return None
    prefix, sep, digits = value.partition("_")
    if sep != "_" or prefix != PREFIXES[kind]:
        return None
    pk = whole_number(digits, low=1, high=_MAX_PK)
    if pk is None or digits != str(pk):  # one spelling per id: no blanks, no leading zeros
        return None
    return pk


def iso(moment: datetime | None) -> str | None:
    """A time as the API, the exports and the webhooks show it: ISO 8601 in UTC, with ``Z``."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
