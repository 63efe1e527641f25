"""ClientTimer: a client connection's idle and header timeouts, decided per sweep tick."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from activator.core.client_timer import ClientTimer, TimeoutAction

# One sweep's observation: (active since the last, a request in flight, a head incomplete).
Seen = tuple[bool, bool, bool]
observations = st.lists(st.tuples(st.booleans(), st.booleans(), st.booleans()), max_size=120)
limits = st.sampled_from([0.0, 0.5, 1.0, 2.0, 2.5, 7.0])


def _spans(timeline: list[Seen], header_timeout: float) -> list[tuple[str, int]]:
    """Per tick: which span it belongs to ("head", "idle" or "") and how many ticks of that span
    (this one included) came in a row."""
    out: list[tuple[str, int]] = []
    kind, run = "", 0
    for active, busy, in_head in timeline:
        now = "head" if in_head and header_timeout else ("idle" if not (active or busy) else "")
        run = run + 1 if now == kind and now else (1 if now else 0)
        kind = now
        out.append((kind, run))
    return out


@given(observations, limits, limits, st.sampled_from([0.5, 1.0]))
def test_timeouts_fire_never_early_once_per_span_then_abort(
    timeline: list[Seen], idle_timeout: float, header_timeout: float, interval: float
) -> None:
    timer = ClientTimer(idle_timeout, header_timeout, interval)
    fired_in_span = False
    for (active, busy, in_head), (kind, run) in zip(
        timeline, _spans(timeline, header_timeout), strict=True
    ):
        if run == 1:
            fired_in_span = False
        action = timer.tick(active=active, busy=busy, in_head=in_head)
        limit = {"head": header_timeout, "idle": idle_timeout}.get(kind, 0.0)
        # At least (run - 1) intervals have passed since the span began.
        past = (run - 1) * interval
        if not limit:
            assert action is TimeoutAction.NONE
            continue
        if past >= 2 * limit:
            assert action is TimeoutAction.ABORT
        elif past >= limit and not fired_in_span:
            assert action is (TimeoutAction.SLOW_HEAD if kind == "head" else TimeoutAction.IDLE)
            fired_in_span = True
        else:
            assert action is TimeoutAction.NONE


def test_a_busy_connection_is_never_idle() -> None:
    timer = ClientTimer(idle_timeout=1.0, header_timeout=1.0, interval=1.0)
    actions = {timer.tick(active=False, busy=True, in_head=False) for _ in range(1000)}
    assert actions == {TimeoutAction.NONE}


def test_a_new_head_starts_its_own_count() -> None:
    """Two pipelined heads, each in progress at two ticks: neither alone took 2 s."""
    timer = ClientTimer(idle_timeout=0.0, header_timeout=2.0, interval=1.0)
    first = [timer.tick(active=True, busy=False, in_head=True) for _ in range(2)]
    timer.head_started()
    second = [timer.tick(active=True, busy=False, in_head=True) for _ in range(2)]
    assert first + second == [TimeoutAction.NONE] * 4
    assert timer.tick(active=True, busy=False, in_head=True) is TimeoutAction.SLOW_HEAD


def test_a_silent_connection_gets_the_header_timeout_not_the_idle_one() -> None:
    timer = ClientTimer(idle_timeout=1.0, header_timeout=3.0, interval=1.0)
    actions = [timer.tick(active=False, busy=False, in_head=True) for _ in range(5)]
    assert actions == [TimeoutAction.NONE] * 3 + [TimeoutAction.SLOW_HEAD, TimeoutAction.NONE]
