"""Time counted by a periodic sweep instead of a clock: the rule every sweep-driven timeout shares.

A sweep that runs every ``interval`` seconds and finds a state (idle, a request head not done) at
``ticks`` consecutive runs knows the state has lasted at least ``ticks - 1`` intervals: it may
have begun just before the first of those runs. Crediting that much never fires a timeout early,
and fires it at most one interval late.
"""

from __future__ import annotations

__all__ = ["seen_for"]


def seen_for(ticks: int, interval: float) -> float:
    """Seconds a state seen by ``ticks`` consecutive sweeps, ``interval`` apart, has lasted at
    least (0 before the second sweep that sees it)."""
    return (ticks - 1) * interval if ticks > 1 else 0.0
