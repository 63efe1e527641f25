"""Which upstream connection to a pod takes the next stream, and when to open another one.

A pod's connections are tried oldest first, so load concentrates on few connections and idle extras
time out. A connection is usable while it is open, not draining (no GOAWAY received) and below the pod's
SETTINGS_MAX_CONCURRENT_STREAMS (RFC 9113 §5.1.2). A connection still connecting counts as capacity
that will arrive, so a burst does not open one connection per stream.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Literal, Protocol, TypeVar

# Until a pod's SETTINGS arrive, assume this many streams fit (RFC 9113 §6.5.2 recommends >= 100).
ASSUMED_MAX_STREAMS = 100


class ConnectionView(Protocol):
    """What the policy reads of a connection."""

    @property
    def usable(self) -> bool: ...  # open (or opening) and not draining

    @property
    def active_streams(self) -> int: ...  # streams open or reserved on it

    @property
    def max_streams(
        self,
    ) -> int: ...  # peer's SETTINGS_MAX_CONCURRENT_STREAMS (assumed until known)


class PoolAction(enum.Enum):
    OPEN = "open"  # open a new connection and put the stream on it
    WAIT = "wait"  # at the connection limit and all full: wait for a stream slot


C = TypeVar("C", bound=ConnectionView)


def choose_connection(
    connections: Sequence[C], max_connections: int
) -> C | Literal[PoolAction.OPEN, PoolAction.WAIT]:
    """Pick a connection for a new stream: the oldest usable one with a free stream slot, else
    ``PoolAction.OPEN`` while under ``max_connections``, else ``PoolAction.WAIT``."""
    open_count = 0
    for conn in connections:
        if conn.usable:
            open_count += 1
            if conn.active_streams < conn.max_streams:
                return conn
    if open_count < max_connections:
        return PoolAction.OPEN
    return PoolAction.WAIT
