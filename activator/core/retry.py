"""What may be replayed after a pod declined a stream, decided without I/O.

Only work the pod provably did not process is replayed (RFC 9113 §8.7): streams above a GOAWAY's
last_stream_id, streams reset with REFUSED_STREAM, and requests whose connection never opened. Everything
else fails to the client, because a replay could run a non-idempotent request twice.
"""

from __future__ import annotations

import enum


class ReplayReason(enum.Enum):
    """Why a pod did not process a stream."""

    GOAWAY = "goaway"  # stream id above the GOAWAY's last_stream_id
    REFUSED = "refused_stream"  # RST_STREAM(REFUSED_STREAM)
    CONNECT = "connect_failed"  # the connection to the pod never opened


class ReplayVerdict(enum.Enum):
    REPLAY = "replay"
    BODY_TOO_LARGE = "body_too_large"  # part of the body is gone from the replay buffer
    TOO_MANY = "too_many_replays"


# Replays a request may get in all, charged or not: a pod that serves some streams and turns away
# the rest can keep a request moving for a while, but not forever.
MOVES_PER_REPLAY = 10


def decide_replay(
    *, replays: int, moves: int, max_replays: int, body_overflowed: bool, charge: bool
) -> ReplayVerdict:
    """Whether an unprocessed request can be sent again.

    ``replays`` counts the charged replays already made for this request and ``moves`` all of them.
    A replay is charged unless the pod that declined the stream was making progress (it completed
    other streams, or its GOAWAY covered some): then declining is load shedding, not a broken pod,
    and only the overall bound ``max_replays * MOVES_PER_REPLAY`` applies. ``body_overflowed`` is
    true once the request body streamed past the replay buffer, so the pod would see a truncated
    body.
    """
    if body_overflowed:
        return ReplayVerdict.BODY_TOO_LARGE
    if moves >= max_replays * MOVES_PER_REPLAY or (charge and replays >= max_replays):
        return ReplayVerdict.TOO_MANY
    return ReplayVerdict.REPLAY
