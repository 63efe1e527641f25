"""Replay decisions and connection choice: pure functions, checked over their whole input space."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from activator.core.pool_policy import PoolAction, choose_connection
from activator.core.retry import MOVES_PER_REPLAY, ReplayVerdict, decide_replay


@given(st.integers(0, 10), st.integers(0, 200), st.integers(0, 10), st.booleans(), st.booleans())
def test_replay_only_whole_bodies_within_the_limits(
    replays: int, moves: int, limit: int, overflow: bool, charge: bool
) -> None:
    verdict = decide_replay(
        replays=replays, moves=moves, max_replays=limit, body_overflowed=overflow, charge=charge
    )
    if overflow:
        assert verdict is ReplayVerdict.BODY_TOO_LARGE
    elif moves >= limit * MOVES_PER_REPLAY or (charge and replays >= limit):
        assert verdict is ReplayVerdict.TOO_MANY
    else:
        assert verdict is ReplayVerdict.REPLAY


def test_uncharged_moves_are_still_bounded() -> None:
    # A pod that serves one stream and refuses the rest cannot bounce a request forever.
    args = {"replays": 0, "max_replays": 3, "body_overflowed": False, "charge": False}
    assert decide_replay(moves=29, **args) is ReplayVerdict.REPLAY
    assert decide_replay(moves=30, **args) is ReplayVerdict.TOO_MANY


def test_replay_disabled_means_never() -> None:
    for charge in (True, False):
        verdict = decide_replay(
            replays=0, moves=0, max_replays=0, body_overflowed=False, charge=charge
        )
        assert verdict is ReplayVerdict.TOO_MANY


@dataclass
class Conn:
    usable: bool
    active_streams: int
    max_streams: int


conns = st.lists(st.builds(Conn, st.booleans(), st.integers(0, 5), st.integers(1, 5)), max_size=6)


@given(conns, st.integers(1, 8))
def test_choose_connection(connections: list[Conn], limit: int) -> None:
    choice = choose_connection(connections, limit)
    free = [c for c in connections if c.usable and c.active_streams < c.max_streams]
    if free:
        # The oldest usable connection with room: load concentrates, extras go idle.
        assert choice is free[0]
    elif sum(c.usable for c in connections) < limit:
        assert choice is PoolAction.OPEN
    else:
        assert choice is PoolAction.WAIT


def test_draining_connection_is_never_chosen() -> None:
    draining = Conn(usable=False, active_streams=0, max_streams=100)
    assert choose_connection([draining], 1) is PoolAction.OPEN
