"""Tests for time-weighted concurrency accounting with independent readers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from activator.core.accounting import ConcurrencyTracker, WindowStats


def test_idle_window() -> None:
    tracker = ConcurrencyTracker(now=0.0)
    reader = tracker.reader(now=0.0)
    assert reader.read(now=2.0) == WindowStats(
        window_seconds=2.0, average=0.0, maximum=0, current=0, requests=0
    )


def test_time_weighted_average() -> None:
    tracker = ConcurrencyTracker(now=0.0)
    reader = tracker.reader(now=0.0)
    tracker.start(now=0.0)  # 1 in flight for [0, 1)
    tracker.start(now=1.0)  # 2 in flight for [1, 3)
    tracker.finish(now=3.0)  # 1 in flight for [3, 4)
    stats = reader.read(now=4.0)
    # (1*1 + 2*2 + 1*1) / 4
    assert stats.average == pytest.approx(1.5)
    assert stats.maximum == 2
    assert stats.current == 1
    assert stats.requests == 2
    assert stats.window_seconds == 4.0


def test_short_request_inside_window_counts_for_its_duration() -> None:
    tracker = ConcurrencyTracker(now=0.0)
    reader = tracker.reader(now=0.0)
    tracker.start(now=0.25)
    tracker.finish(now=0.75)
    stats = reader.read(now=1.0)
    assert stats.average == pytest.approx(0.5)
    assert stats.maximum == 1
    assert stats.current == 0
    assert stats.requests == 1


def test_read_starts_a_new_window_carrying_the_current_count() -> None:
    tracker = ConcurrencyTracker(now=0.0)
    reader = tracker.reader(now=0.0)
    tracker.start(now=0.0)
    tracker.start(now=0.0)
    tracker.start(now=0.0)
    reader.read(now=1.0)
    tracker.finish(now=1.5)
    stats = reader.read(now=2.0)
    assert stats.average == pytest.approx(2.5)  # 3 for half the window, 2 for the other half
    assert stats.maximum == 3  # the window's starting value counts
    assert stats.current == 2
    assert stats.requests == 0


def test_zero_length_window_reports_current() -> None:
    tracker = ConcurrencyTracker(now=5.0)
    tracker.start(now=5.0)
    tracker.start(now=5.0)
    reader = tracker.reader(now=5.0)
    stats = reader.read(now=5.0)
    assert stats.window_seconds == 0.0
    assert stats.average == 2.0
    assert stats.maximum == 2


def test_burst_within_one_instant_is_seen_in_maximum_only() -> None:
    tracker = ConcurrencyTracker(now=0.0)
    reader = tracker.reader(now=0.0)
    for _ in range(5):
        tracker.start(now=1.0)
    for _ in range(5):
        tracker.finish(now=1.0)
    stats = reader.read(now=2.0)
    assert stats.average == 0.0
    assert stats.maximum == 5
    assert stats.requests == 5


def test_readers_are_independent() -> None:
    tracker = ConcurrencyTracker(now=0.0)
    push = tracker.reader(now=0.0)
    tracker.start(now=0.0)
    pull = tracker.reader(now=1.0)
    tracker.start(now=2.0)
    first_push = push.read(now=3.0)  # 1 for [0,2), 2 for [2,3)
    assert first_push.average == pytest.approx(4 / 3)
    assert first_push.requests == 2
    tracker.finish(now=3.0)
    pull_stats = pull.read(now=4.0)  # 1 for [1,2), 2 for [2,3), 1 for [3,4)
    assert pull_stats.average == pytest.approx(4 / 3)
    assert pull_stats.maximum == 2
    assert pull_stats.requests == 1
    second_push = push.read(now=4.0)  # 2 at the start, 1 for [3,4)
    assert second_push.average == pytest.approx(1.0)
    assert second_push.maximum == 2
    assert second_push.requests == 0


def test_counters() -> None:
    tracker = ConcurrencyTracker(now=0.0)
    tracker.start(now=0.0)
    tracker.start(now=0.0)
    tracker.finish(now=1.0)
    assert tracker.current == 1
    assert tracker.requests == 2


def test_finish_without_start_is_an_error() -> None:
    tracker = ConcurrencyTracker(now=0.0)
    with pytest.raises(ValueError, match="without a matching start"):
        tracker.finish(now=0.0)


def test_closed_reader_is_detached() -> None:
    tracker = ConcurrencyTracker(now=0.0)
    kept = tracker.reader(now=0.0)
    closed = tracker.reader(now=0.0)
    assert tracker.reader_count == 2
    closed.close()
    closed.close()
    assert tracker.reader_count == 1
    with pytest.raises(ValueError, match="closed"):
        closed.read(now=1.0)
    tracker.start(now=0.0)
    assert kept.read(now=1.0).average == pytest.approx(1.0)


def brute_force_stats(
    events: list[tuple[float, int]], start: float, end: float, initial: int
) -> tuple[float, int, int]:
    """Average, maximum and starts over a window by stepping through its events in order."""
    current = initial
    area = 0.0
    maximum = initial
    starts = 0
    last = start
    for at, delta in events:
        area += current * (at - last)
        last = at
        current += delta
        maximum = max(maximum, current)
        starts += delta == 1
    area += current * (end - last)
    average = area / (end - start) if end > start else float(current)
    return average, maximum, starts


@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["start", "finish", "read_a", "read_b"]),
            st.sampled_from([0.0, 0.001, 0.25, 1.0, 3.5]),
        ),
        max_size=60,
    )
)
def test_matches_brute_force_for_two_readers(steps: list[tuple[str, float]]) -> None:
    now = 0.0
    tracker = ConcurrencyTracker(now=now)
    readers = {"read_a": tracker.reader(now), "read_b": tracker.reader(now)}
    # Per reader: its window's start time, in-flight count at the start, and events since.
    window_start = dict.fromkeys(readers, 0.0)
    window_initial = dict.fromkeys(readers, 0)
    pending: dict[str, list[tuple[float, int]]] = {name: [] for name in readers}
    for action, dt in steps:
        now += dt
        if action in ("start", "finish"):
            if action == "finish" and tracker.current == 0:
                continue
            delta = 1 if action == "start" else -1
            if delta == 1:
                tracker.start(now)
            else:
                tracker.finish(now)
            for events in pending.values():
                events.append((now, delta))
            continue
        stats = readers[action].read(now)
        average, maximum, starts = brute_force_stats(
            pending[action], window_start[action], now, window_initial[action]
        )
        assert stats.window_seconds == pytest.approx(now - window_start[action])
        assert stats.average == pytest.approx(average, abs=1e-9)
        assert stats.maximum == maximum
        assert stats.requests == starts
        assert stats.current == tracker.current
        window_start[action] = now
        window_initial[action] = tracker.current
        pending[action] = []
