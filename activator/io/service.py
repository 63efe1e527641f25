"""A configured service at run time: its throttle (pods, capacity, queue), its connection pools and its
counters. It places each exchange on a pod and reacts to pods coming and going.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from activator.config import ServiceConfig
from activator.core.accounting import ConcurrencyTracker
from activator.core.balancer import PodState
from activator.core.errors import (
    ActivatorError,
    QueueTimeout,
    ResponseTimeout,
    Unavailable,
    UpstreamError,
)
from activator.core.retry import ReplayReason
from activator.core.throttle import Rejected, ServiceThrottle, SlotGate
from activator.io.backoff import connect_wait
from activator.io.upstream import PodPool, UpstreamSettings

if TYPE_CHECKING:
    from activator.io.exchange import Exchange

log = logging.getLogger("activator.service")

# Connect failures a request survives (each retried on another pod after a jittered backoff).
MAX_CONNECT_ATTEMPTS = 3
# Resolution of the response-start, idle and max-duration timeouts: one sweep over in-flight exchanges
# per second costs nothing per request, unlike a timer per stream.
SWEEP_INTERVAL = 1.0


class ServiceRuntime:
    """Everything the data path needs to serve one service."""

    def __init__(
        self,
        config: ServiceConfig,
        upstream: UpstreamSettings,
        *,
        replay_limit: int,
        max_replays: int,
        loop: asyncio.AbstractEventLoop,
        rng: random.Random | None = None,
        gate: SlotGate | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.loop = loop
        self.upstream = upstream
        self.replay_limit = replay_limit
        self.max_replays = max_replays
        now = loop.time()
        self.throttle: ServiceThrottle[Exchange] = ServiceThrottle(
            container_concurrency=config.container_concurrency,
            max_queue_requests=config.queue.max_requests,
            max_queue_bytes=config.queue.max_bytes,
            queue_timeout=config.queue.timeout,
            rng=rng,
            gate=gate,
        )
        self.pools: dict[str, PodPool] = {}
        # Request body bytes buffered by queued requests (bounded by queue.max_bytes; each request's
        # share by the replay buffer plus its flow-control window).
        self.queued_body_bytes = 0
        # Pods marked not ready because connecting to them failed (until a probe succeeds).
        self.failed: set[str] = set()
        self.streams = ConcurrencyTracker(now)
        self.http1 = ConcurrencyTracker(now)
        self.requests_total = 0
        self.errors_total = 0
        self.replays_total: dict[str, int] = {}
        self.replay_failures: dict[str, int] = {}
        self.goaways_total = 0
        self._expiry: asyncio.TimerHandle | None = None
        # Called with (pod address) when a pod's connection fails: readiness re-probes it.
        self.on_pod_failed: Callable[[str], None] | None = None
        # Called when a request is queued (scale from zero: poke the autoscaler).
        self.on_queued: Callable[[ServiceRuntime], None] | None = None
        # Called when an exchange finishes, with its status class for metrics (set by the app).
        self.on_finished: Callable[[Exchange], None] | None = None
        # The sweep also PINGs silent upstream connections, so it always runs.
        self._sweep_timer: asyncio.TimerHandle | None = loop.call_later(SWEEP_INTERVAL, self._sweep)

    # -- pods --------------------------------------------------------------------------------------

    def set_endpoints(self, addresses: Iterable[str], *, ready: bool) -> None:
        addresses = list(dict.fromkeys(addresses))
        grants = self.throttle.set_endpoints(addresses, ready=ready, now=self.loop.time())
        for address in addresses:
            if address not in self.pools:
                self.pools[address] = PodPool(address, self.upstream, self, self.loop)
        for address, pool in list(self.pools.items()):
            if address not in addresses:
                pool.retire()
                del self.pools[address]
                self.failed.discard(address)
        self._place_grants(grants)

    def set_ready(self, address: str, ready: bool) -> None:
        if address not in self.throttle.pods:
            return
        if ready:
            self.failed.discard(address)
        self._place_grants(self.throttle.set_ready(address, ready, self.loop.time()))

    def retry_grants(self) -> None:
        """Another worker gave back a slot of this service's pods: hand it to a waiting request."""
        self._place_grants(self.throttle.retry_grants(self.loop.time()))

    def pod_failed(self, address: str, reason: str) -> None:
        """A connection to the pod could not be opened or broke: stop sending it work until it is
        ready again (the readiness prober brings it back)."""
        pod = self.throttle.pods.get(address)
        if pod is None or not pod.ready:
            return
        log.warning("service %s: pod %s failed (%s); marked not ready", self.name, address, reason)
        self.failed.add(address)
        self.set_ready(address, False)
        if self.on_pod_failed is not None:
            self.on_pod_failed(address)

    # -- placing exchanges -------------------------------------------------------------------------

    def dispatch(self, ex: Exchange) -> None:
        """Place a new exchange: on a pod at once, in the queue, or rejected."""
        now = self.loop.time()
        if ex.http1:
            self.http1.start(now)
        else:
            self.streams.start(now)
        self.requests_total += 1
        self._acquire(ex, now)

    def _all_pods_failing(self) -> bool:
        """True when the service has pods and every one of them failed to connect: there is nothing
        to wait for (unlike scale from zero, where pods are coming), so requests fail at once."""
        if not self.failed or self.throttle.ready_pods:
            return False
        return all(
            pod.address in self.failed for pod in self.throttle.pods.values() if not pod.removed
        )

    def _acquire(self, ex: Exchange, now: float) -> None:
        if self.failed and self._all_pods_failing():
            ex.fail(UpstreamError(f"service {self.name}: no pod is reachable"))
            return
        max_bytes = self.config.queue.max_bytes
        if self.throttle.queue_depth and self.queued_body_bytes + ex.replay_bytes > max_bytes:
            # FIFO: with a queue this request would wait too, and the bodies already buffered by
            # waiting requests are at the bound.
            ex.fail(
                Unavailable(
                    f"service {self.name} is at capacity and its queue is full (queue_bytes)",
                    retry_after=max(
                        1.0, min(self.config.queue.timeout, self.throttle.queued_age(now))
                    ),
                )
            )
            return
        # Body bytes are bounded here, as they grow while a request waits (see queued_body_bytes).
        result = self.throttle.acquire(ex, 0, now)
        if isinstance(result, PodState):
            self._place(ex, result)
        elif isinstance(result, Rejected):
            ex.fail(
                Unavailable(
                    f"service {self.name} is at capacity and its queue is full ({result.reason})",
                    retry_after=result.retry_after,
                )
            )
        else:
            ex.queued = True
            ex.queue_bytes = ex.replay_bytes
            self.queued_body_bytes += ex.replay_bytes
            if self._expiry is None:
                self._schedule_expiry()
            if self.on_queued is not None:
                self.on_queued(self)

    def _place(self, ex: Exchange, pod: PodState) -> None:
        ex.pod = pod
        if not ex.placed_at:
            ex.placed_at = self.loop.time()
        pool = self.pools.get(pod.address)
        if pool is None:  # cannot happen while the throttle and pools agree; fail safe
            ex.fail(UpstreamError(f"pod {pod.address} has no connection pool"))
            return
        pool.open_stream(ex)

    def _place_grants(self, grants: list[tuple[Exchange, PodState]]) -> None:
        for ex, pod in grants:
            self.left_queue(ex)
            self._place(ex, pod)

    def cancel_queued(self, ex: Exchange) -> None:
        self.left_queue(ex)
        self.throttle.cancel(ex)

    def left_queue(self, ex: Exchange) -> None:
        ex.queued = False
        self.queued_body_bytes -= ex.queue_bytes
        ex.queue_bytes = 0

    def _schedule_expiry(self) -> None:
        deadline = self.throttle.next_deadline()
        self._expiry = None if deadline is None else self.loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        for ex in self.throttle.expire(self.loop.time()):
            self.left_queue(ex)
            ex.fail(
                QueueTimeout(
                    f"service {self.name} had no pod free for {self.config.queue.timeout:g}s "
                    "(queue timeout)"
                )
            )
        self._schedule_expiry()

    def replay(self, ex: Exchange, reason: ReplayReason) -> None:
        """Send an unprocessed exchange again: same pod (on another connection) if it is still ready,
        else through the balancer."""
        key = reason.value
        self.replays_total[key] = self.replays_total.get(key, 0) + 1
        pod = ex.pod
        if reason is ReplayReason.GOAWAY and pod is not None and pod.ready and not pod.removed:
            # The pod is fine, only that connection is going: keep the slot, use a new connection.
            self._place(ex, pod)
            return
        # REFUSED_STREAM ("not now") or a pod that is gone: let the balancer choose again.
        self._reacquire(ex)

    def connect_failed(self, ex: Exchange, reason: str) -> None:
        """The exchange's pod could not be reached: try another pod after a short backoff."""
        ex.up = None
        ex.connect_failures += 1
        if ex.connect_failures >= MAX_CONNECT_ATTEMPTS:
            ex.fail(UpstreamError(f"service {self.name}: no pod reachable ({reason})"))
            return
        delay = connect_wait(ex.connect_failures)  # jittered: 10 ms, 20 ms, ... up to 500 ms
        self.loop.call_later(delay, self._retry_connect, ex)

    def _retry_connect(self, ex: Exchange) -> None:
        if not ex.done:
            self._reacquire(ex)

    def _reacquire(self, ex: Exchange) -> None:
        pod = ex.pod
        ex.pod = None
        if pod is not None:
            self._place_grants(self.throttle.release(pod, self.loop.time()))
        self._acquire(ex, self.loop.time())

    # -- timeouts ----------------------------------------------------------------------------------

    def _sweep(self) -> None:
        self._sweep_timer = self.loop.call_later(SWEEP_INTERVAL, self._sweep)
        now = self.loop.time()
        timeouts = self.config.timeouts
        for pool in list(self.pools.values()):
            for conn in list(pool.h2):
                conn.tick(SWEEP_INTERVAL)
            for h1conn in list(pool.h1_idle):
                h1conn.idle_tick(SWEEP_INTERVAL)
            for ex in pool.exchanges():
                if ex.done:
                    continue
                if ex.activity != ex.activity_seen:
                    ex.activity_seen = ex.activity
                    ex.idle_ticks = 0
                else:
                    ex.idle_ticks += 1
                error = None
                if timeouts.max_duration > 0 and now - ex.started_at >= timeouts.max_duration:
                    error = f"exceeded the maximum duration of {timeouts.max_duration:g}s"
                elif (
                    timeouts.response_start > 0
                    and not ex.response_started
                    and ex.placed_at
                    and now - ex.placed_at >= timeouts.response_start
                ):
                    error = f"pod did not start a response within {timeouts.response_start:g}s"
                elif timeouts.idle > 0 and ex.idle_ticks * SWEEP_INTERVAL >= timeouts.idle:
                    error = f"no data either way for {timeouts.idle:g}s"
                if error is not None:
                    ex.fail(ResponseTimeout(f"service {self.name}: {error}"))

    # -- ending ------------------------------------------------------------------------------------

    def finished(self, ex: Exchange) -> None:
        now = self.loop.time()
        if ex.http1:
            self.http1.finish(now)
        else:
            self.streams.finish(now)
        pod = ex.pod
        if pod is not None:
            ex.pod = None
            grants = self.throttle.release(pod, now)
            if grants:
                self._place_grants(grants)
        if self.on_finished is not None:
            self.on_finished(ex)

    def count_error(self, error: ActivatorError) -> None:
        self.errors_total += 1

    def count_replay_failure(self, reason: ReplayReason) -> None:
        key = reason.value
        self.replay_failures[key] = self.replay_failures.get(key, 0) + 1

    def close(self) -> None:
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        for ex in self.throttle.drain_queue():
            self.left_queue(ex)
            ex.fail(Unavailable(f"service {self.name} is shutting down"))
        for pool in self.pools.values():
            pool.retire()
