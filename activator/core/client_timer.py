"""A client connection's idle and header timeouts, counted in the ticks of a periodic sweep.

No clock is read and no timer is armed per read: a sweep calls :meth:`ClientTimer.tick` every
``interval`` seconds with what it saw since the last tick, and a span is credited as
:func:`activator.core.sweep.seen_for` says: a timeout never fires early, and fires at most one
interval late.
"""

from __future__ import annotations

from enum import Enum

from activator.core.sweep import seen_for

__all__ = ["ClientTimer", "TimeoutAction"]


class TimeoutAction(Enum):
    NONE = "none"
    SLOW_HEAD = "slow_head"  # answer 408 (or close, if nothing came at all), once
    IDLE = "idle"  # close gracefully (GOAWAY first on HTTP/2), once
    ABORT = "abort"  # a timeout passed twice over and the connection is still open: drop it


class ClientTimer:
    """Idle time (no request in flight, none begun) and request-head time of one client
    connection. A limit of 0 turns that timeout off."""

    __slots__ = ("head_ticks", "header_timeout", "idle_ticks", "idle_timeout", "interval")

    def __init__(self, idle_timeout: float, header_timeout: float, interval: float) -> None:
        self.idle_timeout = idle_timeout
        self.header_timeout = header_timeout
        self.interval = interval
        self.idle_ticks = 0
        self.head_ticks = 0

    def head_started(self) -> None:
        """A new request head began: its time is its own, not the previous head's."""
        self.head_ticks = 0

    def tick(self, *, active: bool, busy: bool, in_head: bool) -> TimeoutAction:
        """One sweep: ``active`` since the last tick (a request begun or, on HTTP/1.1, any bytes
        received), a request ``busy`` (in flight), ``in_head`` (a request head, or the
        connection's first bytes, not complete yet)."""
        if in_head and self.header_timeout:
            self.idle_ticks = 0  # a head under way is not idleness
            self.head_ticks += 1
            return self._verdict(self.head_ticks, self.header_timeout, TimeoutAction.SLOW_HEAD)
        self.head_ticks = 0
        if active or busy:
            self.idle_ticks = 0
            return TimeoutAction.NONE
        self.idle_ticks += 1
        if not self.idle_timeout:
            return TimeoutAction.NONE
        return self._verdict(self.idle_ticks, self.idle_timeout, TimeoutAction.IDLE)

    def _verdict(self, ticks: int, limit: float, action: TimeoutAction) -> TimeoutAction:
        past = seen_for(ticks, self.interval)  # at least this long: never early
        if past >= 2 * limit:
            return TimeoutAction.ABORT
        if past >= limit and past - self.interval < limit:  # the first tick past the limit
            return action
        return TimeoutAction.NONE
