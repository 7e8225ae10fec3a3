"""Money is integer cents; this is how it is shown to people."""

from __future__ import annotations


def format_cents(cents: int, currency: str = "USD") -> str:
    """``85000`` -> ``$850.00`` (negative amounts as ``-$1.50``)."""
    sign = "-" if cents < 0 else ""
    dollars, rest = divmod(abs(cents), 100)
    symbol = "$" if currency == "USD" else f"{currency} "
    return f"{sign}{symbol}{dollars:,}.{rest:02d}"
