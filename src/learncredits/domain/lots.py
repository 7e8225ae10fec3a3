"""First-in-first-out drawing of credit lots, so every consumed credit has a known cost."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Draw:
    lot_id: int
    quantity: int


def draw_fifo(lots: Iterable[tuple[int, int]], quantity: int) -> list[Draw]:
    """Take ``quantity`` credits from ``(lot_id, remaining)`` pairs in the order given.

    The caller passes lots oldest first. Raises ValueError if they hold too little, which
    would mean the balance and the lots disagree: a bug, never a user error.
    """
    draws: list[Draw] = []
    needed = quantity
    for lot_id, remaining in lots:
        if needed == 0:
            break
        take = min(needed, remaining)
        if take > 0:
            draws.append(Draw(lot_id, take))
            needed -= take
    if needed:
        raise ValueError(f"lots hold {quantity - needed} credits, {quantity} needed")
    return draws
