"""Tests for ServiceThrottle with a SlotGate: throttles in several worker processes sharing each
pod's container_concurrency.

The state machines run two throttles over one gate: first an in-memory model of the gate, then
the real shared-memory table (:mod:`activator.io.shared_slots`) with real wake-up pipes, both in
this process (the cross-process end-to-end case is in ``tests/e2e/test_workers.py``).
"""

from __future__ import annotations

import os
import random
import select
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from activator.core.balancer import PodState
from activator.core.throttle import QUEUED, Queued, Rejected, ServiceThrottle, SlotGate
from activator.io.shared_slots import SharedSlotGate, SlotTable, Wakers

ADDRESSES = ["a:1", "b:2", "c:3"]
SERVICE = "svc"


class ModelGate:
    """The gate's contract, in memory, for any number of throttles ("workers")."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.total: dict[str, int] = {}
        self.waiting: set[int] = set()
        self.woken: set[int] = set()
        self.calls = 0

    def view(self, worker: int) -> ModelGateView:
        return ModelGateView(self, worker)


class ModelGateView:
    def __init__(self, gate: ModelGate, worker: int) -> None:
        self.gate = gate
        self.worker = worker

    def try_take(self, pod: str) -> bool:
        gate = self.gate
        gate.calls += 1
        if gate.total.get(pod, 0) < gate.capacity:
            gate.total[pod] = gate.total.get(pod, 0) + 1
            return True
        gate.waiting.add(self.worker)
        return False

    def give_back(self, pod: str) -> bool:
        gate = self.gate
        gate.calls += 1
        assert gate.total.get(pod, 0) > 0, "give_back without a matching try_take"
        gate.total[pod] -= 1
        others = gate.waiting - {self.worker}
        if not others:
            return False
        gate.woken |= others
        if self.worker in gate.waiting:
            gate.woken.add(self.worker)
        return True

    def set_waiting(self, waiting: bool) -> None:
        self.gate.calls += 1
        if waiting:
            self.gate.waiting.add(self.worker)
        else:
            self.gate.waiting.discard(self.worker)


class ForbiddenGate:
    """A gate that must never be asked."""

    def try_take(self, pod: str) -> bool:
        raise AssertionError("the gate was asked")

    def give_back(self, pod: str) -> bool:
        raise AssertionError("the gate was asked")

    def set_waiting(self, waiting: bool) -> None:
        raise AssertionError("the gate was asked")


def gated(gate: SlotGate, concurrency: int = 1, **kwargs: object) -> ServiceThrottle[str]:
    kwargs.setdefault("rng", random.Random(0))
    return ServiceThrottle(container_concurrency=concurrency, gate=gate, **kwargs)  # type: ignore[arg-type]


def wake_pipes(count: int) -> list[tuple[int, int]]:
    """Non-blocking (read end, write end) wake-up pipes, as the supervisor makes them."""
    pipes = [os.pipe() for _ in range(count)]
    for read_end, write_end in pipes:
        os.set_blocking(read_end, False)
        os.set_blocking(write_end, False)
    return pipes


def granted_pod(result: PodState | Queued | Rejected) -> PodState:
    assert isinstance(result, PodState), result
    return result


class TestGate:
    def test_a_pod_full_elsewhere_is_passed_over_for_another(self) -> None:
        gate = ModelGate(capacity=1)
        first, second = gated(gate.view(0)), gated(gate.view(1))
        for throttle in (first, second):
            throttle.set_endpoints(["a:1", "b:2"], ready=True, now=0.0)
        taken = granted_pod(first.acquire("x", 0, now=0.0))
        other = granted_pod(second.acquire("y", 0, now=0.0))
        assert {taken.address, other.address} == {"a:1", "b:2"}
        assert gate.total == {"a:1": 1, "b:2": 1}
        assert gate.waiting == set()

    def test_refused_everywhere_queues_and_a_slot_given_back_wakes_the_waiter(self) -> None:
        gate = ModelGate(capacity=1)
        first, second = gated(gate.view(0)), gated(gate.view(1))
        for throttle in (first, second):
            throttle.set_endpoints(["a:1"], ready=True, now=0.0)
        pod = granted_pod(first.acquire("x", 0, now=0.0))
        assert second.acquire("y", 0, now=0.0) is QUEUED
        assert gate.waiting == {1}
        assert first.release(pod, now=1.0) == []
        assert gate.woken == {1}
        grants = second.retry_grants(now=1.0)
        assert [(ticket, p.address) for ticket, p in grants] == [("y", "a:1")]
        assert gate.waiting == set(), "an empty queue is no longer waiting"

    def test_a_release_while_others_wait_hands_the_slot_over_instead_of_keeping_it(self) -> None:
        gate = ModelGate(capacity=1)
        first, second = gated(gate.view(0)), gated(gate.view(1))
        for throttle in (first, second):
            throttle.set_endpoints(["a:1"], ready=True, now=0.0)
        pod = granted_pod(first.acquire("x1", 0, now=0.0))
        assert first.acquire("x2", 0, now=0.0) is QUEUED
        assert second.acquire("y1", 0, now=0.0) is QUEUED
        # The releasing worker does not grant its own queue at once: both are woken.
        assert first.release(pod, now=1.0) == []
        assert gate.woken == {0, 1}
        # Whoever retries first gets the slot; the other finds none and keeps waiting.
        assert [t for t, _ in second.retry_grants(now=1.0)] == ["y1"]
        assert first.retry_grants(now=1.0) == []
        assert first.queue_depth == 1
        assert gate.waiting == {0}

    def test_a_lone_worker_keeps_granting_its_own_queue(self) -> None:
        gate = ModelGate(capacity=1)
        throttle = gated(gate.view(0))
        throttle.set_endpoints(["a:1"], ready=True, now=0.0)
        pod = granted_pod(throttle.acquire("x1", 0, now=0.0))
        assert throttle.acquire("x2", 0, now=0.0) is QUEUED
        assert [t for t, _ in throttle.release(pod, now=1.0)] == ["x2"]
        assert gate.woken == set()

    @pytest.mark.parametrize("how", ["cancel", "expire", "drain"])
    def test_the_waiting_mark_goes_with_the_last_queued_ticket(self, how: str) -> None:
        gate = ModelGate(capacity=1)
        first, second = gated(gate.view(0), queue_timeout=5.0), gated(gate.view(1))
        for throttle in (first, second):
            throttle.set_endpoints(["a:1"], ready=True, now=0.0)
        granted_pod(second.acquire("y", 0, now=0.0))
        assert first.acquire("x1", 0, now=0.0) is QUEUED
        assert first.acquire("x2", 0, now=0.0) is QUEUED
        assert gate.waiting == {0}
        if how == "cancel":
            assert first.cancel("x1")
            assert gate.waiting == {0}
            assert first.cancel("x2")
        elif how == "expire":
            assert first.expire(now=5.0) == ["x1", "x2"]
        else:
            assert first.drain_queue() == ["x1", "x2"]
        assert gate.waiting == set()

    def test_a_rejected_request_leaves_no_waiting_mark(self) -> None:
        gate = ModelGate(capacity=1)
        first, second = gated(gate.view(0), max_queue_bytes=10), gated(gate.view(1))
        for throttle in (first, second):
            throttle.set_endpoints(["a:1"], ready=True, now=0.0)
        granted_pod(second.acquire("y", 0, now=0.0))
        assert isinstance(first.acquire("big", 11, now=0.0), Rejected)
        assert gate.waiting == set()

    def test_unlimited_services_never_ask_the_gate(self) -> None:
        throttle: ServiceThrottle[str] = ServiceThrottle(
            container_concurrency=0, gate=ForbiddenGate(), rng=random.Random(0)
        )
        throttle.set_endpoints(["a:1"], ready=True, now=0.0)
        pods = [granted_pod(throttle.acquire(f"t{i}", 0, now=0.0)) for i in range(5)]
        for pod in pods:
            assert throttle.release(pod, now=1.0) == []
        assert throttle.in_flight == 0

    def test_a_removed_pod_gives_its_slot_back(self) -> None:
        gate = ModelGate(capacity=1)
        first, second = gated(gate.view(0)), gated(gate.view(1))
        first.set_endpoints(["a:1"], ready=True, now=0.0)
        second.set_endpoints(["a:1"], ready=True, now=0.0)
        pod = granted_pod(first.acquire("x", 0, now=0.0))
        assert second.acquire("y", 0, now=0.0) is QUEUED
        first.set_endpoints([], ready=True, now=0.5)
        assert first.release(pod, now=1.0) == []
        assert gate.total == {"a:1": 0}
        assert gate.woken == {1}
        assert [t for t, _ in second.retry_grants(now=1.0)] == ["y"]


class TestSharedTable:
    """The real table: counts, waiting marks, wake-up pipes, and forgetting a dead worker."""

    def test_two_gates_share_one_pod_slot_and_wake_each_other(self, tmp_path: Path) -> None:
        table = SlotTable.create(workers=2, services=1, slots=64, directory=str(tmp_path))
        other = SlotTable.attach(table.layout)
        pipes = wake_pipes(2)
        try:
            wakers = Wakers([write_end for _, write_end in pipes])
            gate0 = table.gate(worker=0, service=0, service_name=SERVICE, capacity=1, wakers=wakers)
            gate1 = other.gate(worker=1, service=0, service_name=SERVICE, capacity=1, wakers=wakers)
            assert gate0.try_take("a:1")
            assert not gate1.try_take("a:1")
            assert table.is_waiting(1, 0)
            assert table.in_flight(SERVICE, "a:1") == 1
            assert gate0.give_back("a:1") is True
            assert os.read(pipes[1][0], 16) == b"\x01"
            with pytest.raises(BlockingIOError):
                os.read(pipes[0][0], 16)
            assert gate1.try_take("a:1")
            gate1.set_waiting(False)
            assert not table.is_waiting(1, 0)
            # Worker 1 dies holding the slot while worker 0 waits: the supervisor gives it back.
            assert not gate0.try_take("a:1")
            assert table.forget_worker(1) == {0}
            assert table.in_flight(SERVICE, "a:1") == 0
            assert table.held(1, SERVICE, "a:1") == 0
            assert gate0.try_take("a:1")
        finally:
            for read_end, write_end in pipes:
                os.close(read_end)
                os.close(write_end)
            other.close()
            table.close()
            table.unlink()
        assert not Path(table.layout.path).exists()

    def test_a_gate_needs_a_limit(self, tmp_path: Path) -> None:
        table = SlotTable.create(workers=1, services=1, slots=8, directory=str(tmp_path))
        try:
            with pytest.raises(ValueError, match="capacity"):
                SharedSlotGate(table, 0, 0, SERVICE, 0, Wakers([]))
        finally:
            table.close()
            table.unlink()


# -- state machines ------------------------------------------------------------------------------

WORKERS = 2


class GatedThrottlesMachine(RuleBasedStateMachine):
    """Two throttles of one service over one gate: random arrive, release, readiness, endpoint
    changes, cancel, expire and wake-up deliveries.

    Checked: the requests in flight on a pod over both throttles never exceed container_concurrency;
    each throttle grants its tickets in FIFO order; a throttle is marked as waiting exactly while
    it has queued tickets; and once every wake-up is delivered, no ticket waits while a pod that
    its throttle sees as ready has a free slot over both throttles.
    """

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.next_ticket = 0
        self.throttles: list[ServiceThrottle[int]] = []
        self.queues: list[list[int]] = [[] for _ in range(WORKERS)]
        self.holders: list[dict[int, PodState]] = [{} for _ in range(WORKERS)]
        self.fate: dict[int, str] = {}
        self.capacity = 1

    # -- the gate under test (overridden by the shared-table machine) -----------------------------

    def make_gates(self, capacity: int) -> list[SlotGate]:
        self.model = ModelGate(capacity)
        return [self.model.view(worker) for worker in range(WORKERS)]

    def pending_wakeups(self) -> set[int]:
        return set(self.model.woken)

    def take_wakeup(self, worker: int) -> bool:
        if worker not in self.model.woken:
            return False
        self.model.woken.discard(worker)
        return True

    def gate_total(self, address: str) -> int:
        return self.model.total.get(address, 0)

    def gate_waiting(self, worker: int) -> bool:
        return worker in self.model.waiting

    # -- set-up ----------------------------------------------------------------------------------

    @initialize(
        capacity=st.integers(1, 2),
        pods=st.integers(1, len(ADDRESSES)),
        max_requests=st.integers(1, 6),
        timeout=st.sampled_from([2.5, 10.0]),
        seed=st.integers(0, 2**16),
    )
    def setup(self, capacity: int, pods: int, max_requests: int, timeout: float, seed: int) -> None:
        self.capacity = capacity
        gates = self.make_gates(capacity)
        self.throttles = [
            ServiceThrottle(
                container_concurrency=capacity,
                max_queue_requests=max_requests,
                queue_timeout=timeout,
                rng=random.Random(seed + worker),
                gate=gates[worker],
            )
            for worker in range(WORKERS)
        ]
        # Start warm, so that most queueing comes from pods being full rather than absent.
        for throttle in self.throttles:
            assert throttle.set_endpoints(ADDRESSES[:pods], ready=True, now=self.now) == []

    # -- bookkeeping -----------------------------------------------------------------------------

    def check_grants(self, worker: int, grants: Iterable[tuple[int, PodState]]) -> None:
        grants = list(grants)
        queue = self.queues[worker]
        assert [ticket for ticket, _ in grants] == queue[: len(grants)], "FIFO per worker"
        for ticket, pod in grants:
            event("granted from the queue")
            self.assign(worker, ticket, pod)
        del queue[: len(grants)]

    def assign(self, worker: int, ticket: int, pod: PodState) -> None:
        assert self.fate.get(ticket) in (None, "queued")
        assert pod.ready
        assert not pod.removed
        assert self.throttles[worker].pods.get(pod.address) is pod
        self.fate[ticket] = "granted"
        self.holders[worker][ticket] = pod

    # -- rules -----------------------------------------------------------------------------------

    @rule(worker=st.integers(0, WORKERS - 1))
    def arrive(self, worker: int) -> None:
        if not self.throttles:
            return
        ticket = self.next_ticket
        self.next_ticket += 1
        result = self.throttles[worker].acquire(ticket, 0, self.now)
        if isinstance(result, PodState):
            assert not self.queues[worker], "a pod is granted at once only to an empty queue"
            self.assign(worker, ticket, result)
        elif isinstance(result, Rejected):
            event("rejected")
            self.fate[ticket] = "rejected"
        else:
            event("queued")
            self.fate[ticket] = "queued"
            self.queues[worker].append(ticket)

    @rule(worker=st.integers(0, WORKERS - 1), data=st.data())
    def release(self, worker: int, data: st.DataObject) -> None:
        holders = self.holders[worker]
        if not holders:
            return
        ticket = data.draw(st.sampled_from(sorted(holders)))
        pod = holders.pop(ticket)
        self.fate[ticket] = "completed"
        self.check_grants(worker, self.throttles[worker].release(pod, self.now))

    @rule(
        worker=st.integers(0, WORKERS - 1),
        address=st.sampled_from(ADDRESSES),
        ready=st.booleans(),
    )
    def set_ready(self, worker: int, address: str, ready: bool) -> None:
        if not self.throttles:
            return
        self.check_grants(worker, self.throttles[worker].set_ready(address, ready, self.now))

    @rule(
        workers=st.sampled_from([[0], [1], [0, 1]]),
        addresses=st.lists(st.sampled_from(ADDRESSES), max_size=3),
        ready=st.booleans(),
    )
    def set_endpoints(self, workers: list[int], addresses: list[str], ready: bool) -> None:
        if not self.throttles:
            return
        for worker in workers:
            grants = self.throttles[worker].set_endpoints(addresses, ready=ready, now=self.now)
            self.check_grants(worker, grants)

    @rule(worker=st.integers(0, WORKERS - 1), data=st.data())
    def cancel(self, worker: int, data: st.DataObject) -> None:
        queue = self.queues[worker]
        if not queue:
            return
        ticket = data.draw(st.sampled_from(queue))
        assert self.throttles[worker].cancel(ticket)
        queue.remove(ticket)
        self.fate[ticket] = "cancelled"

    @rule(dt=st.sampled_from([0.5, 1.0, 3.0]))
    def expire(self, dt: float) -> None:
        if not self.throttles:
            return
        self.now += dt
        for worker, throttle in enumerate(self.throttles):
            expired = throttle.expire(self.now)
            queue = self.queues[worker]
            assert expired == queue[: len(expired)], "expiry follows FIFO order"
            del queue[: len(expired)]
            for ticket in expired:
                event("expired")
                self.fate[ticket] = "expired"

    @rule(worker=st.integers(0, WORKERS - 1))
    def deliver_wakeup(self, worker: int) -> None:
        if not self.throttles or not self.take_wakeup(worker):
            return
        event("woken")
        self.check_grants(worker, self.throttles[worker].retry_grants(self.now))

    @rule(worker=st.integers(0, WORKERS - 1), data=st.data())
    def release_then_deliver_wakeups(self, worker: int, data: st.DataObject) -> None:
        """A request ends, then the woken event loops run, in either order."""
        self.release(worker, data)
        order = data.draw(st.permutations(range(WORKERS)))
        for woken in order:
            self.deliver_wakeup(woken)

    # -- invariants ------------------------------------------------------------------------------

    def in_flight_by_address(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for holders in self.holders:
            for pod in holders.values():
                counts[pod.address] = counts.get(pod.address, 0) + 1
        return counts

    @invariant()
    def never_over_container_concurrency_over_all_workers(self) -> None:
        counts = self.in_flight_by_address()
        for address, count in counts.items():
            assert count <= self.capacity, f"{address}: {count} in flight over all workers"
        for address in ADDRESSES:
            assert self.gate_total(address) == counts.get(address, 0)
        for worker, throttle in enumerate(self.throttles):
            assert throttle.in_flight == len(self.holders[worker])
            assert throttle.queue_depth == len(self.queues[worker])

    @invariant()
    def waiting_mark_follows_the_queue(self) -> None:
        for worker, throttle in enumerate(self.throttles):
            assert self.gate_waiting(worker) == bool(throttle.queue_depth)

    @invariant()
    def nobody_waits_beside_a_free_slot_once_woken(self) -> None:
        if not self.throttles or self.pending_wakeups():
            return
        for throttle in self.throttles:
            if not throttle.queue_depth:
                continue
            for pod in throttle.pods.values():
                if pod.ready and not pod.removed:
                    event("a ticket waits beside a ready pod")
                    assert self.gate_total(pod.address) >= self.capacity, (
                        f"a ticket waits while {pod.address} has a free slot"
                    )

    def teardown(self) -> None:
        """Deliver every wake-up and release everything: every ticket ends exactly once."""
        if self.throttles:
            for _ in range(1000):
                if not any(self.holders):
                    break
                for worker in range(WORKERS):
                    if self.holders[worker]:
                        ticket = min(self.holders[worker])
                        pod = self.holders[worker].pop(ticket)
                        self.fate[ticket] = "completed"
                        self.check_grants(worker, self.throttles[worker].release(pod, self.now))
                    for woken in range(WORKERS):
                        if self.take_wakeup(woken):
                            grants = self.throttles[woken].retry_grants(self.now)
                            self.check_grants(woken, grants)
            assert not any(self.holders)
            self.now += 100.0
            for worker, throttle in enumerate(self.throttles):
                assert throttle.expire(self.now) == self.queues[worker]
                for ticket in self.queues[worker]:
                    self.fate[ticket] = "expired"
                self.queues[worker].clear()
            for address in ADDRESSES:
                assert self.gate_total(address) == 0
            assert sorted(self.fate) == list(range(self.next_ticket))
            assert set(self.fate.values()) <= {"completed", "rejected", "cancelled", "expired"}
        self.close_gates()

    def close_gates(self) -> None:
        pass


GatedThrottlesMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None
)
TestGatedThrottlesWithTheModelGate = GatedThrottlesMachine.TestCase


class SharedTableMachine(GatedThrottlesMachine):
    """The same machine over the real shared-memory table and real wake-up pipes."""

    def make_gates(self, capacity: int) -> list[SlotGate]:
        self.table = SlotTable.create(workers=WORKERS, services=1, slots=4096)
        slots = {self.table.slot_of(SERVICE, address) for address in ADDRESSES}
        assert len(slots) == len(ADDRESSES), "the test's pods must not share a slot"
        self.pipes = wake_pipes(WORKERS)
        wakers = Wakers([write_end for _, write_end in self.pipes])
        # Each worker maps the table on its own, as worker processes do.
        self.tables = [SlotTable.attach(self.table.layout) for _ in range(WORKERS)]
        return [
            self.tables[worker].gate(
                worker=worker, service=0, service_name=SERVICE, capacity=capacity, wakers=wakers
            )
            for worker in range(WORKERS)
        ]

    def pending_wakeups(self) -> set[int]:
        readable, _, _ = select.select([read_end for read_end, _ in self.pipes], [], [], 0)
        return {worker for worker, (read_end, _) in enumerate(self.pipes) if read_end in readable}

    def take_wakeup(self, worker: int) -> bool:
        try:
            return bool(os.read(self.pipes[worker][0], 4096))
        except BlockingIOError:
            return False

    def gate_total(self, address: str) -> int:
        return self.table.in_flight(SERVICE, address)

    def gate_waiting(self, worker: int) -> bool:
        return self.table.is_waiting(worker, 0)

    def close_gates(self) -> None:
        if not hasattr(self, "table"):
            return
        for read_end, write_end in self.pipes:
            os.close(read_end)
            os.close(write_end)
        for table in self.tables:
            table.close()
        self.table.close()
        self.table.unlink()


SharedTableMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=50, deadline=None
)
TestGatedThrottlesWithTheSharedTable = SharedTableMachine.TestCase
