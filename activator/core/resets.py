"""Rapid reset (CVE-2023-44487): telling a client that resets its own streams as fast as it opens
them from one that cancels a request now and then.

A stream a client opens and resets at once never counts against SETTINGS_MAX_CONCURRENT_STREAMS
for long, yet each one has made the activator pick a pod and start a request there. A client doing
nothing else costs the pods and the event loop all they have while staying inside every limit.

The rule is Envoy's (``overload.premature_reset_*``): a reset counts as premature when it comes
within :data:`PREMATURE_LIFETIME` of the stream's start, before its response is complete; once a
connection has opened :data:`MIN_STREAMS` streams and more than half of them ended that way, it
is closed with GOAWAY(ENHANCE_YOUR_CALM). A gRPC client that cancels calls on deadline or hedges
its requests stays far below half.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MIN_STREAMS", "PREMATURE_LIFETIME", "PrematureResetGuard"]

# Seconds after its start within which a client's reset of an unfinished stream is premature.
PREMATURE_LIFETIME: Final = 1.0
# Streams a connection must have opened before its resets are judged: a short connection that
# cancels its few requests is not an attack.
MIN_STREAMS: Final = 500


class PrematureResetGuard:
    """Counts one client connection's streams and premature resets; says when to close it."""

    __slots__ = ("min_streams", "opened", "premature", "premature_lifetime")

    def __init__(
        self, min_streams: int = MIN_STREAMS, premature_lifetime: float = PREMATURE_LIFETIME
    ) -> None:
        self.min_streams = min_streams
        self.premature_lifetime = premature_lifetime
        self.opened = 0
        self.premature = 0

    def stream_opened(self) -> None:
        """The client opened a stream (counted here, not read off stream ids: a client may skip
        ids, and would then seem to have opened streams it never did)."""
        self.opened += 1

    def stream_reset(self, lifetime: float) -> bool:
        """The client reset an unfinished stream ``lifetime`` seconds after it started.

        Returns True when the connection should be closed: at least ``min_streams`` opened and
        more than half of them reset prematurely. ``min_streams`` 0 turns the rule off.
        """
        if lifetime < self.premature_lifetime:
            self.premature += 1
        return 0 < self.min_streams <= self.opened and 2 * self.premature > self.opened
