"""Per-service admission: hand requests to pods with a free slot, queue the rest.

This is the activator's throttler (Knative's "breaker" plus its pod assignment) as a sans-I/O
state machine. The I/O shell owns the clock, the timers and the futures; it calls in with
``now`` (seconds on a monotonic clock) and an opaque ticket per request, and acts on the
returned grants, expiries and rejections.

Every ticket passed to :meth:`ServiceThrottle.acquire` ends exactly once: granted a pod (at once
or later via a returned grant list), rejected at once, cancelled by :meth:`ServiceThrottle.cancel`
(or :meth:`ServiceThrottle.drain_queue`), or expired by :meth:`ServiceThrottle.expire`.

Several throttles of one service (one per worker process) can share each pod's
``container_concurrency`` through a :class:`SlotGate`: a pod is granted only when it has a free
slot in this throttle and the gate agrees that it has one over all throttles.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Final, Generic, Literal, Protocol, TypeVar

from activator.core.balancer import PodState, pick_least_loaded

__all__ = ["QUEUED", "Queued", "Rejected", "ServiceThrottle", "SlotGate"]

T = TypeVar("T")

# Lower bound for Retry-After so that clients do not hammer a full queue.
_MIN_RETRY_AFTER: Final = 1.0


class Queued:
    """The request waits in the queue; its ticket shows up later in a grant list or an expiry.

    A singleton: compare with ``is QUEUED``.
    """

    __slots__ = ()
    _instance: ClassVar[Queued | None] = None

    def __new__(cls) -> Queued:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "QUEUED"

    def __reduce__(self) -> str:
        return "QUEUED"


QUEUED: Final = Queued()


@dataclass(frozen=True, slots=True)
class Rejected:
    """The request was refused at once because the queue is full.

    Attributes:
        reason: ``"queue_full"`` when the queue holds ``max_queue_requests`` tickets,
            ``"queue_bytes"`` when the request's buffered bytes would exceed ``max_queue_bytes``.
        retry_after: Whole seconds a client should wait before retrying (for the
            ``Retry-After`` header, RFC 9110 section 10.2.3); at least 1.
    """

    reason: Literal["queue_full", "queue_bytes"]
    retry_after: float


class SlotGate(Protocol):
    """Pod slots shared with other throttles of the same service (other worker processes).

    The gate counts, per pod address, the requests in flight over all throttles sharing it and
    refuses a slot once that count reaches the service's ``container_concurrency``. A throttle
    with queued tickets is marked as waiting; a slot given back while others wait wakes them (the
    I/O shell then calls :meth:`ServiceThrottle.retry_grants`), so no throttle has to poll.
    """

    def try_take(self, pod: str) -> bool:
        """Take one slot of ``pod`` (an address) if one is free over all throttles.

        On refusal the gate marks this throttle as waiting, in the same atomic step, so that a
        slot given back right after the refusal still wakes it.
        """
        ...

    def give_back(self, pod: str) -> bool:
        """Return one slot of ``pod`` taken by :meth:`try_take`.

        Returns:
            True when other throttles were waiting: the gate woke them, and this throttle too if
            it is marked as waiting, and the freed slot goes to whichever retries first.
        """
        ...

    def set_waiting(self, waiting: bool) -> None:
        """Mark (or unmark) this throttle as having queued tickets."""
        ...


@dataclass(slots=True)
class _Waiting:
    """Book-keeping for one queued ticket."""

    nbytes: int
    enqueued_at: float
    deadline: float


class ServiceThrottle(Generic[T]):
    """Admission and pod assignment for one service.

    A request is given a pod at once when the queue is empty and some pod has a free slot;
    otherwise it waits in a FIFO queue bounded in count and bytes, with a deadline. Slots freed by
    :meth:`release`, pods becoming ready, or new endpoints are handed to waiting tickets in FIFO
    order, each to the least-loaded pod with a free slot (:func:`pick_least_loaded`).

    Having no ready pod at all is not a rejection: requests queue while the service scales from
    zero.

    Time (``now``) must not go backwards between calls: deadlines are kept in queue order.

    Attributes:
        pods: Pods by address, including removed pods that still have requests in flight.
        container_concurrency: Capacity given to each new pod; ``0`` means unlimited.
        max_queue_requests: Most tickets that may wait at once.
        max_queue_bytes: Most buffered request bytes that may wait at once.
        queue_timeout: Seconds a ticket may wait before :meth:`expire` returns it.
    """

    __slots__ = (
        "_flagged",
        "_gate",
        "_in_flight",
        "_pod_list",
        "_queue",
        "_queue_bytes",
        "_rng",
        "container_concurrency",
        "max_queue_bytes",
        "max_queue_requests",
        "pods",
        "queue_timeout",
    )

    def __init__(
        self,
        *,
        container_concurrency: int = 0,
        max_queue_requests: int = 1000,
        max_queue_bytes: int = 64 * 1024 * 1024,
        queue_timeout: float = 30.0,
        rng: random.Random | None = None,
        gate: SlotGate | None = None,
    ) -> None:
        """Create a throttle with no pods and an empty queue.

        Args:
            container_concurrency: Most in-flight requests per pod; ``0`` means unlimited.
            max_queue_requests: Most tickets waiting at once; ``0`` disables queueing.
            max_queue_bytes: Most buffered request bytes waiting at once.
            queue_timeout: Seconds a ticket may wait (``math.inf`` for no limit).
            rng: Randomness for pod choice; a fresh ``random.Random()`` when omitted.
            gate: Slots shared with other throttles of this service; ignored when
                ``container_concurrency`` is 0 (an unlimited pod never needs one).

        Raises:
            ValueError: A limit is negative or the timeout is not positive.
        """
        if container_concurrency < 0:
            raise ValueError(f"container_concurrency must be >= 0, got {container_concurrency}")
        if max_queue_requests < 0:
            raise ValueError(f"max_queue_requests must be >= 0, got {max_queue_requests}")
        if max_queue_bytes < 0:
            raise ValueError(f"max_queue_bytes must be >= 0, got {max_queue_bytes}")
        if not queue_timeout > 0:
            raise ValueError(f"queue_timeout must be > 0, got {queue_timeout}")
        self.container_concurrency = container_concurrency
        self.max_queue_requests = max_queue_requests
        self.max_queue_bytes = max_queue_bytes
        self.queue_timeout = queue_timeout
        self._rng = rng if rng is not None else random.Random()
        self.pods: dict[str, PodState] = {}
        # The same pods as a list, for pick_least_loaded(); rebuilt only on membership changes.
        self._pod_list: list[PodState] = []
        # OrderedDict: FIFO with O(1) removal of any ticket and O(1) pop from the front (a plain
        # dict degrades when its front is popped repeatedly).
        self._queue: OrderedDict[T, _Waiting] = OrderedDict()
        self._queue_bytes = 0
        self._in_flight = 0
        self._gate = gate if container_concurrency > 0 else None
        # This throttle is marked as waiting in the gate (set by a refusal or by queueing).
        self._flagged = False

    # -- endpoint membership and readiness ------------------------------------------------

    def set_endpoints(
        self, addresses: Iterable[str], *, ready: bool, now: float
    ) -> list[tuple[T, PodState]]:
        """Replace the endpoint set.

        New addresses become pods with ``ready=ready`` and ``capacity=container_concurrency``.
        Pods not listed are marked removed: they keep their in-flight requests and are dropped
        from :attr:`pods` once idle. A listed address whose pod was removed but is still draining
        revives that pod with ``ready=ready`` (a readiness probe must confirm it again when
        ``ready`` is false). Listed pods that were never removed keep their readiness.

        Args:
            addresses: ``"host:port"`` of every current endpoint; duplicates are ignored.
            ready: Readiness of new (and revived) pods: true when the service has no probe.
            now: Current time.

        Returns:
            Queued tickets that were assigned a pod, in FIFO order.
        """
        # dict, not set: keeps the caller's order, so pod order (and seeded choices) is stable.
        listed = dict.fromkeys(addresses)
        for address in listed:
            pod = self.pods.get(address)
            if pod is None:
                self.pods[address] = PodState(
                    address, capacity=self.container_concurrency, ready=ready
                )
            elif pod.removed:
                pod.removed = False
                pod.ready = ready
        for address, pod in list(self.pods.items()):
            if address not in listed:
                pod.removed = True
                if pod.in_flight == 0:
                    del self.pods[address]
        self._pod_list = list(self.pods.values())
        return self._grant(now)

    def set_ready(self, address: str, ready: bool, now: float) -> list[tuple[T, PodState]]:
        """Set a pod's readiness (from a readiness probe or an endpoint watch).

        Unknown addresses are ignored. A pod turning unready keeps its in-flight requests.

        Returns:
            Queued tickets that were assigned a pod, in FIFO order.
        """
        pod = self.pods.get(address)
        if pod is None:
            return []
        pod.ready = ready
        if not ready:
            return []
        return self._grant(now)

    # -- the request path ---------------------------------------------------------------

    def acquire(self, ticket: T, nbytes: int, now: float) -> PodState | Queued | Rejected:
        """Admit one request.

        Args:
            ticket: Hashable token for this request; reported back in grants and expiries.
            nbytes: Request bytes the caller buffers while the ticket waits (counted against
                ``max_queue_bytes``).
            now: Current time.

        Returns:
            The pod to send the request to (its ``in_flight`` already counts it) when the queue
            is empty and a pod has a free slot; :data:`QUEUED` when the ticket waits (until
            ``now + queue_timeout``), including when no pod is ready at all; :class:`Rejected`
            when the queue has no room.

        Raises:
            ValueError: The ticket is already queued.
        """
        queue = self._queue
        if not queue:
            if self._gate is None:
                pod = pick_least_loaded(self._pod_list, self._rng)
            else:
                pod = self._pick_gated()
                # Granted after a refusal: unmark. Not when queueing: that would open a window in
                # which a slot given back wakes no one.
                if pod is not None and self._flagged:
                    self._unflag_if_idle()
            if pod is not None:
                pod.in_flight += 1
                self._in_flight += 1
                return pod
        if ticket in queue:
            raise ValueError(f"ticket {ticket!r} is already queued")
        if len(queue) >= self.max_queue_requests:
            return self._reject("queue_full", now)
        if self._queue_bytes + nbytes > self.max_queue_bytes:
            return self._reject("queue_bytes", now)
        queue[ticket] = _Waiting(nbytes, now, now + self.queue_timeout)
        self._queue_bytes += nbytes
        if self._gate is not None and not self._flagged:
            # Queued because this throttle's own slots are full (the gate was not asked): be
            # woken, too, when a slot is given back while other throttles wait.
            self._flagged = True
            self._gate.set_waiting(True)
        return QUEUED

    def _reject(self, reason: Literal["queue_full", "queue_bytes"], now: float) -> Rejected:
        if self._flagged:
            self._unflag_if_idle()
        return Rejected(reason, self._retry_after(now))

    def release(self, pod: PodState, now: float) -> list[tuple[T, PodState]]:
        """Finish one request on ``pod`` and hand freed capacity to waiting tickets.

        A removed pod that becomes idle is dropped from :attr:`pods`.

        Returns:
            Queued tickets that were assigned a pod, in FIFO order.

        Raises:
            ValueError: The pod has no request in flight.
        """
        if pod.in_flight <= 0:
            raise ValueError(f"release of pod {pod.address} with no request in flight")
        pod.in_flight -= 1
        self._in_flight -= 1
        # Other throttles wait for slots: the gate woke them (and this one, if it has queued
        # tickets), and the freed slot goes to whichever retries first. Granting it here at once
        # would let a throttle whose requests keep coming starve the others.
        handed_over = self._gate is not None and self._gate.give_back(pod.address)
        if pod.removed:
            if pod.in_flight == 0 and self.pods.get(pod.address) is pod:
                del self.pods[pod.address]
                self._pod_list.remove(pod)
            # A removed pod's slot is not usable, so nothing new can be granted.
            return []
        if not self._queue or handed_over:
            return []
        return self._grant(now)

    def retry_grants(self, now: float) -> list[tuple[T, PodState]]:
        """Hand slots to waiting tickets again: the gate said another throttle gave one back.

        Returns:
            Queued tickets that were assigned a pod, in FIFO order.
        """
        if not self._queue:
            return []
        return self._grant(now)

    def cancel(self, ticket: T) -> bool:
        """Take a waiting ticket out of the queue (the client went away). O(1).

        Returns:
            True if the ticket was queued; False otherwise (already granted, expired, unknown).
        """
        waiting = self._queue.pop(ticket, None)
        if waiting is None:
            return False
        self._queue_bytes -= waiting.nbytes
        if self._flagged:
            self._unflag_if_idle()
        return True

    def expire(self, now: float) -> list[T]:
        """Remove and return the tickets whose deadline is ``<= now``, in FIFO order."""
        queue = self._queue
        expired: list[T] = []
        # Deadlines are enqueue time + a constant, so they increase along the queue.
        while queue:
            ticket, waiting = next(iter(queue.items()))
            if waiting.deadline > now:
                break
            queue.popitem(last=False)
            self._queue_bytes -= waiting.nbytes
            expired.append(ticket)
        if self._flagged:
            self._unflag_if_idle()
        return expired

    def drain_queue(self) -> list[T]:
        """Remove and return every waiting ticket in FIFO order (for shutdown).

        The returned tickets count as cancelled.
        """
        tickets = list(self._queue)
        self._queue.clear()
        self._queue_bytes = 0
        if self._flagged:
            self._unflag_if_idle()
        return tickets

    def next_deadline(self) -> float | None:
        """The earliest deadline among waiting tickets; None when none waits or it is infinite."""
        if not self._queue:
            return None
        deadline = next(iter(self._queue.values())).deadline
        return deadline if math.isfinite(deadline) else None

    # -- observation ----------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Number of waiting tickets."""
        return len(self._queue)

    @property
    def queue_bytes(self) -> int:
        """Buffered request bytes of the waiting tickets."""
        return self._queue_bytes

    @property
    def oldest_queued_at(self) -> float | None:
        """When the oldest waiting ticket was queued; None when none waits."""
        if not self._queue:
            return None
        return next(iter(self._queue.values())).enqueued_at

    @property
    def in_flight(self) -> int:
        """Requests in flight over all pods, removed ones included."""
        return self._in_flight

    @property
    def ready_pods(self) -> int:
        """Pods that are ready and not removed."""
        return sum(1 for pod in self._pod_list if pod.ready and not pod.removed)

    @property
    def capacity(self) -> int | None:
        """Requests the service can take at once: None when unlimited, else ready pods times
        ``container_concurrency``."""
        if self.container_concurrency == 0:
            return None
        return self.ready_pods * self.container_concurrency

    def queued_age(self, now: float) -> float:
        """Seconds the oldest waiting ticket has waited; 0.0 when none waits."""
        oldest = self.oldest_queued_at
        return 0.0 if oldest is None else max(0.0, now - oldest)

    # -- internals ------------------------------------------------------------------------

    def _grant(self, now: float) -> list[tuple[T, PodState]]:
        """Assign pods to waiting tickets, FIFO, while some pod has a free slot."""
        queue = self._queue
        grants: list[tuple[T, PodState]] = []
        gated = self._gate is not None
        while queue:
            pod = self._pick_gated() if gated else pick_least_loaded(self._pod_list, self._rng)
            if pod is None:
                break
            ticket, waiting = queue.popitem(last=False)
            self._queue_bytes -= waiting.nbytes
            pod.in_flight += 1
            self._in_flight += 1
            grants.append((ticket, pod))
        if self._flagged:
            self._unflag_if_idle()
        return grants

    def _pick_gated(self) -> PodState | None:
        """A pod with a free slot here that the gate grants too; pods the gate refuses (their
        slots are taken by other throttles) are passed over for the other eligible ones."""
        gate = self._gate
        assert gate is not None
        pod = pick_least_loaded(self._pod_list, self._rng)
        if pod is None or gate.try_take(pod.address):
            return pod
        # The refusal marked this throttle as waiting in the gate.
        self._flagged = True
        candidates = [other for other in self._pod_list if other is not pod]
        while True:
            pod = pick_least_loaded(candidates, self._rng)
            if pod is None or gate.try_take(pod.address):
                return pod
            candidates.remove(pod)

    def _unflag_if_idle(self) -> None:
        """Unmark this throttle as waiting in the gate once nothing is queued."""
        if not self._queue and self._gate is not None:
            self._flagged = False
            self._gate.set_waiting(False)

    def _retry_after(self, now: float) -> float:
        """Seconds until a queue place is sure to free up: the oldest ticket's deadline.

        Rounded up to whole seconds (Retry-After is delay-seconds, RFC 9110 section 10.2.3),
        at least 1, and at most the queue timeout.
        """
        deadline = self.next_deadline()
        if deadline is None:
            wait = self.queue_timeout if math.isfinite(self.queue_timeout) else _MIN_RETRY_AFTER
        else:
            wait = deadline - now
        wait = min(wait, self.queue_timeout)
        return float(max(_MIN_RETRY_AFTER, math.ceil(wait)))
