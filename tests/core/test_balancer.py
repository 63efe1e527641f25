"""Tests for PodState and power-of-two-choices pod selection."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from activator.core.balancer import PodState, pick_least_loaded


def ready_pod(address: str, in_flight: int = 0, capacity: int = 0) -> PodState:
    return PodState(address, capacity=capacity, in_flight=in_flight, ready=True)


class TestHasFreeSlot:
    def test_new_pod_is_not_ready(self) -> None:
        assert not PodState("10.0.0.1:80").has_free_slot()

    def test_ready_unlimited_pod_always_has_a_slot(self) -> None:
        assert ready_pod("10.0.0.1:80", in_flight=10_000).has_free_slot()

    def test_limited_pod_below_capacity(self) -> None:
        assert ready_pod("10.0.0.1:80", in_flight=1, capacity=2).has_free_slot()

    def test_limited_pod_at_capacity(self) -> None:
        assert not ready_pod("10.0.0.1:80", in_flight=2, capacity=2).has_free_slot()

    def test_removed_pod_has_no_slot(self) -> None:
        pod = ready_pod("10.0.0.1:80")
        pod.removed = True
        assert not pod.has_free_slot()

    def test_pods_compare_by_identity(self) -> None:
        assert PodState("10.0.0.1:80") != PodState("10.0.0.1:80")


class TestPickLeastLoaded:
    def test_no_candidates(self) -> None:
        assert pick_least_loaded([], random.Random(0)) is None

    def test_no_eligible_candidate(self) -> None:
        full = ready_pod("a:1", in_flight=1, capacity=1)
        unready = PodState("b:1")
        removed = ready_pod("c:1")
        removed.removed = True
        assert pick_least_loaded([full, unready, removed], random.Random(0)) is None

    def test_single_eligible_candidate_is_chosen_even_when_busier(self) -> None:
        busy = ready_pod("a:1", in_flight=50)
        unready_idle = PodState("b:1")
        for seed in range(20):
            assert pick_least_loaded([unready_idle, busy], random.Random(seed)) is busy

    def test_two_eligible_compares_directly(self) -> None:
        light = ready_pod("a:1", in_flight=1)
        heavy = ready_pod("b:1", in_flight=2)
        for seed in range(50):
            assert pick_least_loaded([heavy, light], random.Random(seed)) is light

    def test_ties_are_broken_both_ways(self) -> None:
        first = ready_pod("a:1", in_flight=3)
        second = ready_pod("b:1", in_flight=3)
        chosen = Counter(
            pick_least_loaded([first, second], random.Random(seed)).address  # type: ignore[union-attr]
            for seed in range(200)
        )
        assert set(chosen) == {"a:1", "b:1"}

    def test_ineligible_pods_are_never_chosen(self) -> None:
        pods = [ready_pod(f"p{i}:1", in_flight=i) for i in range(6)]
        pods[0].ready = False
        pods[1].removed = True
        pods[2].capacity = 2  # at capacity
        rng = random.Random(1)
        chosen = {pick_least_loaded(pods, rng) for _ in range(500)}
        assert chosen <= set(pods[3:])
        assert None not in chosen

    def test_unique_most_loaded_is_never_chosen(self) -> None:
        pods = [ready_pod("a:1", 0), ready_pod("b:1", 1), ready_pod("c:1", 9)]
        rng = random.Random(7)
        chosen = Counter(pick_least_loaded(pods, rng) for _ in range(2000))
        assert pods[2] not in chosen
        # The least loaded wins every draw it is part of: 2 of the 3 possible pairs.
        assert chosen[pods[0]] > chosen[pods[1]]

    def test_equal_load_spreads_over_every_pod(self) -> None:
        pods = [ready_pod(f"p{i}:1") for i in range(5)]
        rng = random.Random(3)
        chosen = Counter(pick_least_loaded(pods, rng) for _ in range(1000))
        assert set(chosen) == set(pods)

    def test_balances_when_in_flight_is_counted(self) -> None:
        pods = [ready_pod(f"p{i}:1") for i in range(4)]
        rng = random.Random(11)
        for _ in range(400):
            pod = pick_least_loaded(pods, rng)
            assert pod is not None
            pod.in_flight += 1
        loads = [pod.in_flight for pod in pods]
        # Power of two choices keeps the spread tiny; random choice would not.
        assert max(loads) - min(loads) <= 2

    def test_same_seed_same_choice(self) -> None:
        pods = [ready_pod(f"p{i}:1", in_flight=i % 3) for i in range(8)]
        picks_a = [pick_least_loaded(pods, random.Random(5)) for _ in range(3)]
        picks_b = [pick_least_loaded(pods, random.Random(5)) for _ in range(3)]
        assert picks_a == picks_b

    @given(
        loads=st.lists(
            st.tuples(st.integers(0, 5), st.booleans(), st.booleans(), st.integers(0, 4)),
            max_size=40,
        ),
        seed=st.integers(0, 2**32),
    )
    def test_choice_is_eligible_and_never_the_unique_heaviest(
        self, loads: list[tuple[int, bool, bool, int]], seed: int
    ) -> None:
        pods = [
            PodState(
                f"p{i}:1", capacity=capacity, in_flight=in_flight, ready=ready, removed=removed
            )
            for i, (in_flight, ready, removed, capacity) in enumerate(loads)
        ]
        eligible = [pod for pod in pods if pod.has_free_slot()]
        chosen = pick_least_loaded(pods, random.Random(seed))
        if not eligible:
            assert chosen is None
            return
        assert chosen is not None
        assert chosen.has_free_slot()
        # The chosen pod won a draw against another eligible pod, so it is never strictly
        # heavier than every other eligible pod.
        if len(eligible) >= 2:
            assert any(
                other is not chosen and other.in_flight >= chosen.in_flight for other in eligible
            )
        if len(eligible) <= 2:
            assert chosen.in_flight == min(pod.in_flight for pod in eligible)


@pytest.mark.parametrize("count", [3, 4, 10])
def test_every_pair_is_drawn(count: int) -> None:
    """With distinct loads, every pod but the heaviest must sometimes win its draw."""
    pods = [ready_pod(f"p{i}:1", in_flight=i) for i in range(count)]
    rng = random.Random(count)
    chosen = {pick_least_loaded(pods, rng) for _ in range(3000)}
    assert chosen == set(pods[:-1])


class TestLargePodSets:
    """Above 16 candidates the pick samples before it scans; the rules must not change."""

    def test_single_eligible_among_many(self) -> None:
        pods = [ready_pod(f"p{i}:1", in_flight=1, capacity=1) for i in range(40)]
        pods[17].in_flight = 0
        for seed in range(50):
            assert pick_least_loaded(pods, random.Random(seed)) is pods[17]

    def test_two_eligible_among_many_picks_the_lighter(self) -> None:
        pods = [ready_pod(f"p{i}:1") for i in range(40)]
        for pod in pods:
            pod.ready = False
        pods[3].ready = pods[30].ready = True
        pods[3].in_flight = 5
        pods[30].in_flight = 4
        for seed in range(50):
            assert pick_least_loaded(pods, random.Random(seed)) is pods[30]

    def test_none_eligible_among_many(self) -> None:
        pods = [PodState(f"p{i}:1") for i in range(40)]
        assert pick_least_loaded(pods, random.Random(0)) is None

    def test_ineligible_never_chosen_and_heaviest_never_chosen(self) -> None:
        pods = [ready_pod(f"p{i}:1", in_flight=i % 5, capacity=4) for i in range(60)]
        pods[59].capacity = 0
        pods[59].in_flight = 100  # the unique heaviest eligible pod
        rng = random.Random(2)
        chosen = Counter(pick_least_loaded(pods, rng) for _ in range(5000))
        assert None not in chosen
        assert all(pod is not None and pod.has_free_slot() for pod in chosen)
        assert pods[59] not in chosen
        assert all(pod is not None and pod.in_flight < 4 for pod in chosen)

    def test_equal_load_reaches_every_pod(self) -> None:
        pods = [ready_pod(f"p{i}:1") for i in range(50)]
        rng = random.Random(4)
        chosen = Counter(pick_least_loaded(pods, rng) for _ in range(5000))
        assert set(chosen) == set(pods)

    def test_balances_many_pods(self) -> None:
        pods = [ready_pod(f"p{i}:1") for i in range(32)]
        rng = random.Random(9)
        for _ in range(3200):
            pod = pick_least_loaded(pods, rng)
            assert pod is not None
            pod.in_flight += 1
        loads = [pod.in_flight for pod in pods]
        assert max(loads) - min(loads) <= 4
