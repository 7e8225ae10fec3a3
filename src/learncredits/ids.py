"""Opaque public ids: a type prefix and the row's key (``asg_42``).

The prefix tells a human which kind of object an id names and lets us refuse an id of the
wrong kind as unknown. Anything that does not decode is simply an unknown id.
"""

from __future__ import annotations

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
}
_MAX_PK = 2**63 - 1


def encode(kind: str, pk: int | None) -> str | None:
    if pk is None:
        return None
    return f"{PREFIXES[kind]}_{pk}"


def decode(kind: str, value: object) -> int | None:
    """The primary key behind a public id, or None when it names nothing of this kind."""
    if not isinstance(value, str):
        return None
    prefix, sep, digits = value.partition("_")
    if sep != "_" or prefix != PREFIXES[kind] or not digits.isascii() or not digits.isdigit():
        return None
    if len(digits) > 19:  # more than any bigint has (and int() of huge strings is costly)
        return None
    pk = int(digits)
    if not 0 < pk <= _MAX_PK or digits != str(pk):
        return None
    return pk
