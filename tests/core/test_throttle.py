"""Tests for ServiceThrottle: admission, FIFO queueing, grants, expiry and endpoint changes."""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Iterable

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from activator.core.balancer import PodState
from activator.core.throttle import QUEUED, Queued, Rejected, ServiceThrottle


def make_throttle(**kwargs: object) -> ServiceThrottle[str]:
    kwargs.setdefault("rng", random.Random(0))
    return ServiceThrottle(**kwargs)  # type: ignore[arg-type]


def granted_pod(result: PodState | Queued | Rejected) -> PodState:
    assert isinstance(result, PodState), result
    return result


class TestAcquire:
    def test_ready_pod_is_granted_at_once(self) -> None:
        throttle = make_throttle()
        assert throttle.set_endpoints(["a:1"], ready=True, now=0.0) == []
        pod = granted_pod(throttle.acquire("t1", 0, now=0.0))
        assert pod.address == "a:1"
        assert pod.in_flight == 1
        assert throttle.in_flight == 1
        assert throttle.queue_depth == 0

    def test_no_pod_at_all_queues_for_scale_from_zero(self) -> None:
        throttle = make_throttle()
        assert throttle.acquire("t1", 10, now=0.0) is QUEUED
        assert throttle.queue_depth == 1
        assert throttle.queue_bytes == 10

    def test_unready_pods_do_not_take_work(self) -> None:
        throttle = make_throttle()
        throttle.set_endpoints(["a:1"], ready=False, now=0.0)
        assert throttle.acquire("t1", 0, now=0.0) is QUEUED

    def test_capacity_is_respected_and_the_rest_queues(self) -> None:
        throttle = make_throttle(container_concurrency=2)
        throttle.set_endpoints(["a:1"], ready=True, now=0.0)
        granted_pod(throttle.acquire("t1", 0, now=0.0))
        pod = granted_pod(throttle.acquire("t2", 0, now=0.0))
        assert pod.in_flight == 2
        assert throttle.acquire("t3", 0, now=0.0) is QUEUED

    def test_unlimited_concurrency_never_queues_with_a_ready_pod(self) -> None:
        throttle = make_throttle(container_concurrency=0)
        throttle.set_endpoints(["a:1"], ready=True, now=0.0)
        for index in range(500):
            granted_pod(throttle.acquire(f"t{index}", 0, now=0.0))
        assert throttle.pods["a:1"].in_flight == 500

    def test_spreads_over_pods(self) -> None:
        throttle = make_throttle(container_concurrency=0)
        throttle.set_endpoints(["a:1", "b:1", "c:1"], ready=True, now=0.0)
        for index in range(30):
            granted_pod(throttle.acquire(f"t{index}", 0, now=0.0))
        loads = sorted(pod.in_flight for pod in throttle.pods.values())
        assert loads[-1] - loads[0] <= 2

    def test_queue_full_rejects(self) -> None:
        throttle = make_throttle(max_queue_requests=2, queue_timeout=10.0)
        assert throttle.acquire("t1", 0, now=0.0) is QUEUED
        assert throttle.acquire("t2", 0, now=0.0) is QUEUED
        result = throttle.acquire("t3", 0, now=4.0)
        assert result == Rejected("queue_full", retry_after=6.0)
        assert throttle.queue_depth == 2

    def test_queue_bytes_rejects(self) -> None:
        throttle = make_throttle(max_queue_bytes=100)
        assert throttle.acquire("t1", 60, now=0.0) is QUEUED
        assert throttle.acquire("t2", 40, now=0.0) is QUEUED  # exactly at the limit
        result = throttle.acquire("t3", 1, now=0.0)
        assert isinstance(result, Rejected)
        assert result.reason == "queue_bytes"
        assert throttle.queue_bytes == 100

    def test_request_larger_than_byte_limit_is_rejected_even_with_empty_queue(self) -> None:
        throttle = make_throttle(max_queue_bytes=100, queue_timeout=30.0)
        assert throttle.acquire("big", 101, now=0.0) == Rejected("queue_bytes", 30.0)

    def test_large_request_is_not_counted_when_granted_at_once(self) -> None:
        throttle = make_throttle(max_queue_bytes=100)
        throttle.set_endpoints(["a:1"], ready=True, now=0.0)
        granted_pod(throttle.acquire("big", 10_000, now=0.0))
        assert throttle.queue_bytes == 0

    def test_zero_queue_rejects_when_no_slot(self) -> None:
        throttle = make_throttle(max_queue_requests=0)
        result = throttle.acquire("t1", 0, now=0.0)
        assert isinstance(result, Rejected)
        assert result.reason == "queue_full"

    def test_retry_after_is_whole_seconds_at_least_one(self) -> None:
        throttle = make_throttle(max_queue_requests=1, queue_timeout=10.0)
        throttle.acquire("t1", 0, now=0.0)
        assert throttle.acquire("t2", 0, now=8.5) == Rejected("queue_full", 2.0)
        assert throttle.acquire("t3", 0, now=9.9) == Rejected("queue_full", 1.0)

    def test_retry_after_with_unbounded_timeout(self) -> None:
        throttle = make_throttle(max_queue_requests=0, queue_timeout=math.inf)
        assert throttle.acquire("t1", 0, now=0.0) == Rejected("queue_full", 1.0)

    def test_ticket_already_queued_is_an_error(self) -> None:
        throttle = make_throttle()
        throttle.acquire("t1", 0, now=0.0)
        with pytest.raises(ValueError, match="already queued"):
            throttle.acquire("t1", 0, now=0.0)

    def test_new_arrivals_wait_behind_the_queue(self) -> None:
        throttle = make_throttle(container_concurrency=1)
        throttle.set_endpoints(["a:1"], ready=True, now=0.0)
        pod = granted_pod(throttle.acquire("t1", 0, now=0.0))
        assert throttle.acquire("t2", 0, now=0.0) is QUEUED
        assert throttle.acquire("t3", 0, now=0.0) is QUEUED
        assert throttle.release(pod, now=1.0) == [("t2", pod)]
        assert throttle.release(pod, now=1.0) == [("t3", pod)]
        assert throttle.release(pod, now=1.0) == []
        assert throttle.in_flight == 0


class TestGrants:
    def test_scale_from_zero_grants_fifo(self) -> None:
        throttle = make_throttle()
        for ticket in ("t1", "t2", "t3"):
            assert throttle.acquire(ticket, 5, now=0.0) is QUEUED
        grants = throttle.set_endpoints(["a:1"], ready=True, now=1.0)
        assert [ticket for ticket, _ in grants] == ["t1", "t2", "t3"]
        assert all(pod is throttle.pods["a:1"] for _, pod in grants)
        assert throttle.queue_depth == 0
        assert throttle.queue_bytes == 0
        assert throttle.in_flight == 3

    def test_grants_stop_at_capacity(self) -> None:
        throttle = make_throttle(container_concurrency=2)
        for ticket in ("t1", "t2", "t3"):
            throttle.acquire(ticket, 0, now=0.0)
        grants = throttle.set_endpoints(["a:1"], ready=True, now=1.0)
        assert [ticket for ticket, _ in grants] == ["t1", "t2"]
        assert throttle.queue_depth == 1

    def test_grants_go_to_the_least_loaded_pod(self) -> None:
        throttle = make_throttle(container_concurrency=3)
        throttle.set_endpoints(["a:1"], ready=True, now=0.0)
        pod_a = throttle.pods["a:1"]
        for index in range(3):
            granted_pod(throttle.acquire(f"busy{index}", 0, now=0.0))
        for ticket in ("t1", "t2", "t3", "t4"):
            throttle.acquire(ticket, 0, now=0.0)
        grants = throttle.set_endpoints(["a:1", "b:1"], ready=True, now=1.0)
        assert [ticket for ticket, _ in grants] == ["t1", "t2", "t3"]
        assert all(pod.address == "b:1" for _, pod in grants)
        # Freeing a slot on a now hands the last waiter to a, the only pod with room.
        assert throttle.release(pod_a, now=2.0) == [("t4", pod_a)]

    def test_readiness_grants(self) -> None:
        throttle = make_throttle()
        throttle.set_endpoints(["a:1"], ready=False, now=0.0)
        throttle.acquire("t1", 0, now=0.0)
        grants = throttle.set_ready("a:1", True, now=1.0)
        assert grants == [("t1", throttle.pods["a:1"])]

    def test_set_ready_unknown_address_is_ignored(self) -> None:
        throttle = make_throttle()
        throttle.acquire("t1", 0, now=0.0)
        assert throttle.set_ready("nope:1", True, now=0.0) == []
        assert "nope:1" not in throttle.pods

    def test_unready_pod_keeps_in_flight_work_but_gets_no_more(self) -> None:
        throttle = make_throttle()
        throttle.set_endpoints(["a:1"], ready=True, now=0.0)
        pod = granted_pod(throttle.acquire("t1", 0, now=0.0))
        assert throttle.set_ready("a:1", False, now=1.0) == []
        assert throttle.acquire("t2", 0, now=1.0) is QUEUED
        assert throttle.release(pod, now=2.0) == []
        assert pod.in_flight == 0
        assert throttle.set_ready("a:1", True, now=3.0) == [("t2", pod)]

    def test_release_without_in_flight_is_an_error(self) -> None:
        throttle = make_throttle()
        throttle.set_endpoints(["a:1"], ready=True, now=0.0)
        with pytest.raises(ValueError, match="no request in flight"):
            throttle.release(throttle.pods["a:1"], now=0.0)


class TestEndpointChanges:
    def test_removed_pod_drains_then_disappears(self) -> None:
        throttle = make_throttle()
        throttle.set_endpoints(["a:1"], ready=True, now=0.0)
        pod = granted_pod(throttle.acquire("t1", 0, now=0.0))
        assert throttle.set_endpoints([], ready=True, now=1.0) == []
        assert pod.removed
        assert throttle.pods == {"a:1": pod}
        assert throttle.acquire("t2", 0, now=1.0) is QUEUED
        assert throttle.release(pod, now=2.0) == []
        assert throttle.pods == {}
        assert throttle.in_flight == 0
        assert throttle.queue_depth == 1

    def test_idle_removed_pod_is_dropped_at_once(self) -> None:
        throttle = make_throttle()
        throttle.set_endpoints(["a:1", "b:1"], ready=True, now=0.0)
        throttle.set_endpoints(["b:1"], ready=True, now=1.0)
        assert list(throttle.pods) == ["b:1"]

    def test_relisted_draining_pod_revives(self) -> None:
        throttle = make_throttle(container_concurrency=1)
        throttle.set_endpoints(["a:1"], ready=True, now=0.0)
        pod = granted_pod(throttle.acquire("t1", 0, now=0.0))
        throttle.set_endpoints([], ready=True, now=1.0)
        throttle.acquire("t2", 0, now=1.0)
        assert throttle.set_endpoints(["a:1"], ready=True, now=2.0) == []  # still full
        assert throttle.pods["a:1"] is pod
        assert not pod.removed
        assert throttle.release(pod, now=3.0) == [("t2", pod)]

    def test_revived_pod_takes_the_new_readiness(self) -> None:
        throttle = make_throttle()
        throttle.set_endpoints(["a:1"], ready=True, now=0.0)
        pod = granted_pod(throttle.acquire("t1", 0, now=0.0))
        throttle.set_endpoints([], ready=False, now=1.0)
        throttle.set_endpoints(["a:1"], ready=False, now=2.0)
        assert throttle.pods["a:1"] is pod
        assert not pod.ready

    def test_relisted_after_drop_is_a_new_pod(self) -> None:
        throttle = make_throttle()
        throttle.set_endpoints(["a:1"], ready=True, now=0.0)
        old = throttle.pods["a:1"]
        throttle.set_endpoints([], ready=True, now=1.0)
        throttle.set_endpoints(["a:1"], ready=True, now=2.0)
        assert throttle.pods["a:1"] is not old

    def test_listed_pods_keep_their_readiness(self) -> None:
        throttle = make_throttle()
        throttle.set_endpoints(["a:1"], ready=False, now=0.0)
        throttle.set_ready("a:1", True, now=1.0)
        throttle.set_endpoints(["a:1", "b:1"], ready=False, now=2.0)
        assert throttle.pods["a:1"].ready
        assert not throttle.pods["b:1"].ready

    def test_new_pods_get_the_container_concurrency(self) -> None:
        throttle = make_throttle(container_concurrency=7)
        throttle.set_endpoints(["a:1"], ready=True, now=0.0)
        assert throttle.pods["a:1"].capacity == 7

    def test_duplicate_addresses_are_one_pod(self) -> None:
        throttle = make_throttle()
        throttle.set_endpoints(["a:1", "a:1"], ready=True, now=0.0)
        assert list(throttle.pods) == ["a:1"]
        assert throttle.ready_pods == 1

    def test_release_of_removed_pod_after_revival_and_removal(self) -> None:
        throttle = make_throttle()
        throttle.set_endpoints(["a:1"], ready=True, now=0.0)
        pod = granted_pod(throttle.acquire("t1", 0, now=0.0))
        throttle.set_endpoints([], ready=True, now=1.0)
        throttle.set_endpoints(["a:1"], ready=True, now=2.0)
        throttle.set_endpoints(["b:1"], ready=True, now=3.0)
        throttle.release(pod, now=4.0)
        assert list(throttle.pods) == ["b:1"]


class TestCancelExpire:
    def test_cancel_leaves_the_queue(self) -> None:
        throttle = make_throttle()
        throttle.acquire("t1", 10, now=0.0)
        throttle.acquire("t2", 20, now=0.0)
        assert throttle.cancel("t1")
        assert not throttle.cancel("t1")
        assert throttle.queue_depth == 1
        assert throttle.queue_bytes == 20
        grants = throttle.set_endpoints(["a:1"], ready=True, now=1.0)
        assert [ticket for ticket, _ in grants] == ["t2"]

    def test_cancel_of_granted_or_unknown_ticket(self) -> None:
        throttle = make_throttle()
        throttle.set_endpoints(["a:1"], ready=True, now=0.0)
        granted_pod(throttle.acquire("t1", 0, now=0.0))
        assert not throttle.cancel("t1")
        assert not throttle.cancel("never-seen")

    def test_expire_at_the_deadline_in_fifo_order(self) -> None:
        throttle = make_throttle(queue_timeout=10.0)
        throttle.acquire("t1", 1, now=0.0)
        throttle.acquire("t2", 2, now=1.0)
        throttle.acquire("t3", 4, now=5.0)
        assert throttle.next_deadline() == 10.0
        assert throttle.expire(9.999) == []
        assert throttle.expire(11.0) == ["t1", "t2"]
        assert throttle.queue_bytes == 4
        assert throttle.next_deadline() == 15.0
        assert throttle.expire(15.0) == ["t3"]
        assert throttle.next_deadline() is None
        assert throttle.queue_bytes == 0

    def test_expire_skips_cancelled(self) -> None:
        throttle = make_throttle(queue_timeout=1.0)
        throttle.acquire("t1", 0, now=0.0)
        throttle.acquire("t2", 0, now=0.0)
        throttle.cancel("t1")
        assert throttle.expire(5.0) == ["t2"]

    def test_infinite_timeout_never_expires(self) -> None:
        throttle = make_throttle(queue_timeout=math.inf)
        throttle.acquire("t1", 0, now=0.0)
        assert throttle.next_deadline() is None
        assert throttle.expire(1e12) == []

    def test_drain_queue(self) -> None:
        throttle = make_throttle()
        for ticket in ("t1", "t2", "t3"):
            throttle.acquire(ticket, 3, now=0.0)
        throttle.cancel("t2")
        assert throttle.drain_queue() == ["t1", "t3"]
        assert throttle.queue_depth == 0
        assert throttle.queue_bytes == 0
        assert throttle.set_endpoints(["a:1"], ready=True, now=1.0) == []


class TestObservation:
    def test_empty(self) -> None:
        throttle = make_throttle()
        assert throttle.queue_depth == 0
        assert throttle.queue_bytes == 0
        assert throttle.oldest_queued_at is None
        assert throttle.queued_age(5.0) == 0.0
        assert throttle.in_flight == 0
        assert throttle.ready_pods == 0
        assert throttle.capacity is None

    def test_queue_age(self) -> None:
        throttle = make_throttle()
        throttle.acquire("t1", 0, now=2.0)
        throttle.acquire("t2", 0, now=3.0)
        assert throttle.oldest_queued_at == 2.0
        assert throttle.queued_age(7.5) == 5.5
        throttle.cancel("t1")
        assert throttle.oldest_queued_at == 3.0

    def test_capacity_counts_ready_live_pods(self) -> None:
        throttle = make_throttle(container_concurrency=4)
        assert throttle.capacity == 0
        throttle.set_endpoints(["a:1", "b:1", "c:1"], ready=True, now=0.0)
        throttle.set_ready("c:1", False, now=0.0)
        assert throttle.ready_pods == 2
        assert throttle.capacity == 8
        pod = granted_pod(throttle.acquire("t1", 0, now=0.0))
        throttle.set_endpoints([a for a in ("a:1", "b:1") if a != pod.address], ready=True, now=0)
        assert throttle.ready_pods == 1
        assert throttle.capacity == 4
        assert throttle.in_flight == 1

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"container_concurrency": -1},
            {"max_queue_requests": -1},
            {"max_queue_bytes": -1},
            {"queue_timeout": 0.0},
            {"queue_timeout": -1.0},
            {"queue_timeout": math.nan},
        ],
    )
    def test_invalid_settings(self, kwargs: dict[str, float]) -> None:
        with pytest.raises(ValueError, match="must be"):
            ServiceThrottle(**kwargs)  # type: ignore[arg-type]

    def test_queued_is_a_singleton(self) -> None:
        assert Queued() is QUEUED
        assert repr(QUEUED) == "QUEUED"
        assert pickle.loads(pickle.dumps(QUEUED)) is QUEUED


# -- state machine -----------------------------------------------------------------------

ADDRESSES = ("a:1", "b:1", "c:1", "d:1")


class ThrottleMachine(RuleBasedStateMachine):
    """Random arrive/release/ready/unready/set_endpoints/cancel/expire sequences against a model.

    The model tracks each ticket's fate and each pod's expected state; every throttle answer is
    checked against it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.next_ticket = 0
        # Ticket fates: "queued", "granted", and the terminal ones.
        self.fate: dict[int, str] = {}
        self.queue: list[int] = []  # model FIFO
        self.nbytes: dict[int, int] = {}
        self.enqueued_at: dict[int, float] = {}
        self.holder: dict[int, PodState] = {}  # granted ticket -> pod
        self.dropped: list[PodState] = []  # pods that left `pods`; must never get work again

    @initialize(
        concurrency=st.integers(0, 3),
        max_requests=st.one_of(st.integers(1, 8), st.just(0)),
        max_bytes=st.one_of(st.integers(10, 40), st.integers(0, 10), st.just(10_000)),
        timeout=st.sampled_from([1.0, 2.5, 10.0]),
        seed=st.integers(0, 2**16),
    )
    def setup(
        self, concurrency: int, max_requests: int, max_bytes: int, timeout: float, seed: int
    ) -> None:
        self.throttle: ServiceThrottle[int] = ServiceThrottle(
            container_concurrency=concurrency,
            max_queue_requests=max_requests,
            max_queue_bytes=max_bytes,
            queue_timeout=timeout,
            rng=random.Random(seed),
        )
        self.known_pods: dict[str, PodState] = {}

    # -- model upkeep ----------------------------------------------------------------------

    def free_slot_exists(self) -> bool:
        return any(pod.has_free_slot() for pod in self.throttle.pods.values())

    def check_grants(self, grants: Iterable[tuple[int, PodState]]) -> None:
        grants = list(grants)
        expected = self.queue[: len(grants)]
        assert [ticket for ticket, _ in grants] == expected, "grants must follow FIFO order"
        for ticket, pod in grants:
            event("granted from the queue")
            self.assign(ticket, pod)
        del self.queue[: len(grants)]

    def assign(self, ticket: int, pod: PodState) -> None:
        assert self.fate.get(ticket) in (None, "queued"), "a ticket ends only once"
        assert not pod.removed, "removed pods never get new work"
        assert pod.ready
        assert self.throttle.pods.get(pod.address) is pod
        assert all(pod is not gone for gone in self.dropped)
        assert pod.capacity == 0 or pod.in_flight <= pod.capacity
        self.fate[ticket] = "granted"
        self.holder[ticket] = pod

    def track_pods(self) -> None:
        """Remember pods that left the table so we can check they never come back."""
        for address, pod in list(self.known_pods.items()):
            if self.throttle.pods.get(address) is not pod:
                self.dropped.append(pod)
                del self.known_pods[address]
        for address, pod in self.throttle.pods.items():
            self.known_pods.setdefault(address, pod)

    # -- rules -----------------------------------------------------------------------------

    @rule(sizes=st.lists(st.one_of(st.just(0), st.integers(1, 15)), min_size=1, max_size=4))
    def arrive(self, sizes: list[int]) -> None:
        for nbytes in sizes:
            self.arrive_one(nbytes)

    def arrive_one(self, nbytes: int) -> None:
        ticket = self.next_ticket
        self.next_ticket += 1
        depth_before = self.throttle.queue_depth
        bytes_before = self.throttle.queue_bytes
        slot_before = self.free_slot_exists()
        result = self.throttle.acquire(ticket, nbytes, self.now)
        if isinstance(result, PodState):
            assert depth_before == 0
            assert slot_before
            self.assign(ticket, result)
        elif result is QUEUED:
            assert depth_before > 0 or not slot_before
            assert depth_before < self.throttle.max_queue_requests
            assert bytes_before + nbytes <= self.throttle.max_queue_bytes
            self.fate[ticket] = "queued"
            self.queue.append(ticket)
            self.nbytes[ticket] = nbytes
            self.enqueued_at[ticket] = self.now
        else:
            assert isinstance(result, Rejected)
            assert depth_before > 0 or not slot_before
            if result.reason == "queue_full":
                assert depth_before >= self.throttle.max_queue_requests
            else:
                assert depth_before < self.throttle.max_queue_requests
                assert bytes_before + nbytes > self.throttle.max_queue_bytes
            assert result.retry_after >= 1.0
            assert result.retry_after == math.ceil(result.retry_after)
            event(f"rejected: {result.reason}")
            self.fate[ticket] = "rejected"

    @precondition(lambda self: self.holder)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        ticket = data.draw(st.sampled_from(sorted(self.holder)))
        pod = self.holder.pop(ticket)
        self.fate[ticket] = "completed"
        in_flight_before = pod.in_flight
        self.check_grants(self.throttle.release(pod, self.now))
        if pod.removed:
            event("released on a removed pod")
            assert pod.in_flight == in_flight_before - 1
            if pod.in_flight == 0:
                assert self.throttle.pods.get(pod.address) is not pod
        self.track_pods()

    @rule(address=st.sampled_from(ADDRESSES), ready=st.booleans())
    def set_ready(self, address: str, ready: bool) -> None:
        pod = self.throttle.pods.get(address)
        grants = self.throttle.set_ready(address, ready, self.now)
        if pod is None:
            assert grants == []
            assert address not in self.throttle.pods
            return
        assert pod.ready is ready
        if not ready:
            assert grants == []
        self.check_grants(grants)

    @rule(addresses=st.lists(st.sampled_from(ADDRESSES), max_size=5), ready=st.booleans())
    def set_endpoints(self, addresses: list[str], ready: bool) -> None:
        before = {
            address: (pod, pod.ready, pod.removed) for address, pod in self.throttle.pods.items()
        }
        grants = self.throttle.set_endpoints(addresses, ready=ready, now=self.now)
        listed = set(addresses)
        for address in listed:
            pod = self.throttle.pods[address]
            assert not pod.removed
            if address in before:
                old_pod, was_ready, was_removed = before[address]
                assert pod is old_pod
                if not was_removed:
                    assert pod.ready is was_ready
                else:
                    assert pod.ready is ready
            else:
                assert pod.ready is ready
                assert pod.capacity == self.throttle.container_concurrency
        for address, (pod, _, _) in before.items():
            if address not in listed:
                assert pod.removed
                assert (address in self.throttle.pods) == (pod.in_flight > 0)
        self.check_grants(grants)
        self.track_pods()

    @rule(addresses=st.lists(st.sampled_from(ADDRESSES), min_size=1, max_size=4))
    def scale_up_ready(self, addresses: list[str]) -> None:
        """Endpoints arriving ready (no probe): the common way queued work gets served."""
        self.set_endpoints(addresses, ready=True)

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        if self.next_ticket == 0:
            return
        ticket = data.draw(st.integers(0, self.next_ticket))
        was_queued = self.fate.get(ticket) == "queued"
        assert self.throttle.cancel(ticket) is was_queued
        if was_queued:
            event("cancelled while queued")
            self.fate[ticket] = "cancelled"
            self.queue.remove(ticket)

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 2.5, 7.0]))
    def advance_and_expire(self, dt: float) -> None:
        self.now += dt
        expected = [
            ticket
            for ticket in self.queue
            if self.enqueued_at[ticket] + self.throttle.queue_timeout <= self.now
        ]
        assert self.throttle.expire(self.now) == expected
        for ticket in expected:
            event("expired")
            assert self.fate[ticket] == "queued"
            self.fate[ticket] = "expired"
            self.queue.remove(ticket)

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def no_pod_over_capacity(self) -> None:
        if not hasattr(self, "throttle"):
            return
        for pod in self.throttle.pods.values():
            assert pod.capacity == 0 or pod.in_flight <= pod.capacity

    @invariant()
    def queue_matches_model_and_bounds(self) -> None:
        if not hasattr(self, "throttle"):
            return
        throttle = self.throttle
        assert throttle.queue_depth == len(self.queue)
        assert throttle.queue_bytes == sum(self.nbytes[ticket] for ticket in self.queue)
        assert throttle.queue_depth <= throttle.max_queue_requests
        assert throttle.queue_bytes <= throttle.max_queue_bytes
        if self.queue:
            assert throttle.oldest_queued_at == self.enqueued_at[self.queue[0]]
            assert (
                throttle.next_deadline() == self.enqueued_at[self.queue[0]] + throttle.queue_timeout
            )
        else:
            assert throttle.next_deadline() is None

    @invariant()
    def nobody_waits_beside_a_free_slot(self) -> None:
        if not hasattr(self, "throttle"):
            return
        if self.throttle.queue_depth:
            assert not self.free_slot_exists()

    @invariant()
    def in_flight_matches_outstanding_grants(self) -> None:
        if not hasattr(self, "throttle"):
            return
        assert self.throttle.in_flight == len(self.holder)
        per_pod: dict[int, int] = {}
        for pod in self.holder.values():
            per_pod[id(pod)] = per_pod.get(id(pod), 0) + 1
        for pod in self.throttle.pods.values():
            assert pod.in_flight == per_pod.get(id(pod), 0)
            # Removed pods stay only while they drain.
            assert not pod.removed or pod.in_flight > 0
        for pod in self.holder.values():
            assert self.throttle.pods.get(pod.address) is pod, "a busy pod must stay in the table"

    @invariant()
    def capacity_property(self) -> None:
        if not hasattr(self, "throttle"):
            return
        throttle = self.throttle
        ready = sum(1 for pod in throttle.pods.values() if pod.ready and not pod.removed)
        assert throttle.ready_pods == ready
        if throttle.container_concurrency == 0:
            assert throttle.capacity is None
        else:
            assert throttle.capacity == ready * throttle.container_concurrency

    def teardown(self) -> None:
        """Finish everything: every ticket must end exactly once."""
        if not hasattr(self, "throttle"):
            return
        for _ in range(1000):
            if not self.holder:
                break
            ticket = min(self.holder)
            pod = self.holder.pop(ticket)
            self.fate[ticket] = "completed"
            self.check_grants(self.throttle.release(pod, self.now))
        assert not self.holder
        self.now += self.throttle.queue_timeout
        expired = self.throttle.expire(self.now)
        assert expired == self.queue
        for ticket in expired:
            self.fate[ticket] = "expired"
        assert self.throttle.queue_depth == 0
        assert self.throttle.in_flight == 0
        assert all(not pod.removed for pod in self.throttle.pods.values())
        assert sorted(self.fate) == list(range(self.next_ticket))
        assert set(self.fate.values()) <= {"completed", "rejected", "cancelled", "expired"}


ThrottleMachine.TestCase.settings = settings(
    max_examples=250, stateful_step_count=40, deadline=None
)
TestThrottleMachine = ThrottleMachine.TestCase
