"""PrematureResetGuard: when a client's stream resets make its connection a rapid-reset attack."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from activator.core.resets import MIN_STREAMS, PREMATURE_LIFETIME, PrematureResetGuard

# One client event: ("open",) or ("reset", seconds since that stream started).
Event = tuple[str, float]
events = st.lists(
    st.one_of(
        st.just(("open", 0.0)),
        st.tuples(st.just("reset"), st.floats(0, 5, allow_nan=False)),
    ),
    max_size=300,
)


@given(events, st.integers(0, 50), st.sampled_from([PREMATURE_LIFETIME, 0.25, 3.0]))
def test_closes_exactly_when_over_half_of_enough_streams_were_reset_early(
    script: list[Event], min_streams: int, premature_lifetime: float
) -> None:
    guard = PrematureResetGuard(min_streams, premature_lifetime)
    opened = premature = 0
    for kind, lifetime in script:
        if kind == "open":
            guard.stream_opened()
            opened += 1
            continue
        premature += lifetime < premature_lifetime
        close = guard.stream_reset(lifetime)
        # min_streams 0: the rule is off.
        assert close == (min_streams > 0 and opened >= min_streams and 2 * premature > opened)
        assert (guard.opened, guard.premature) == (opened, premature)


@given(st.lists(st.floats(PREMATURE_LIFETIME, 1e6, allow_nan=False), max_size=200))
def test_late_resets_never_close(lifetimes: list[float]) -> None:
    guard = PrematureResetGuard(min_streams=1)
    for lifetime in lifetimes:
        guard.stream_opened()
        assert not guard.stream_reset(lifetime)
    assert guard.premature == 0


def test_a_rapid_reset_client_is_stopped_at_the_minimum_stream_count() -> None:
    """Open, reset at once, repeat: the connection is judged once it opened MIN_STREAMS."""
    guard = PrematureResetGuard()
    verdicts = []
    for _ in range(2 * MIN_STREAMS):
        guard.stream_opened()
        verdicts.append(guard.stream_reset(0.0))
    assert verdicts.index(True) == MIN_STREAMS - 1  # the MIN_STREAMS-th stream's reset


def test_cancelling_fewer_than_half_is_never_an_attack() -> None:
    """A gRPC client whose calls hit their deadline now and then: 2 in 5 cancelled at once."""
    guard = PrematureResetGuard()
    verdicts = []
    for stream in range(10 * MIN_STREAMS):
        guard.stream_opened()
        if stream % 5 < 2:
            verdicts.append(guard.stream_reset(0.001))
    assert not any(verdicts)


def test_a_short_connection_that_cancels_everything_is_left_alone() -> None:
    guard = PrematureResetGuard()
    for _ in range(MIN_STREAMS - 1):
        guard.stream_opened()
        assert not guard.stream_reset(0.0)


def test_zero_min_streams_turns_the_rule_off() -> None:
    guard = PrematureResetGuard(min_streams=0)
    for _ in range(10 * MIN_STREAMS):
        guard.stream_opened()
        assert not guard.stream_reset(0.0)
    assert guard.premature == 10 * MIN_STREAMS
