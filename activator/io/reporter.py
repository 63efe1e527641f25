"""Concurrency reports for the autoscaler: pushed periodically, poked when requests queue, pulled.

A report says, per service, how much concurrency the activator saw over a window: the
time-weighted average and the maximum of requests in flight (HTTP/2 streams plus HTTP/1.1
connections busy with a request; queued requests count, they are demand), the requests started,
and the queue and pods now. The autoscaler sizes the service from it, much as Knative's
autoscaler does from its activators' stats.

* Push: when ``autoscaler.push_url`` is set, a JSON document is POSTed every ``interval``.
* Poke: a request queued for a service whose queue is longer than the autoscaler last heard
  (above all the first request for a service with no pod) triggers a push at once, at most one per
  ``poke_interval`` per service, so scaling from zero never waits for the next interval.
* Pull: ``GET /v1/concurrency`` (see :mod:`activator.io.admin`) reads the same document over a
  window of its own, without disturbing the push.

Sending happens in a task of its own, off the data path: the data path only sets a flag. Failed
attempts are retried with jittered exponential backoff (tenacity) and bounded timeouts. At most one
report is in flight: when the next one is due first, the stale one is abandoned and its window is
folded into the next report (once: a longer outage loses the oldest data rather than reporting a
misleadingly long average). A report the autoscaler refused (4xx) is not retried but folded the
same way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from activator.config import AutoscalerConfig
from activator.io.metrics import ReportingCounters

if TYPE_CHECKING:
    from activator.core.accounting import WindowReader
    from activator.core.throttle import ServiceThrottle
    from activator.io.service import ServiceRuntime

__all__ = [
    "AutoscalerReporter",
    "ConcurrencyWindow",
    "PokeGate",
    "Report",
    "ServiceWindow",
    "default_activator_id",
]

log = logging.getLogger("activator.reporter")

# Pokes per service are at most this far apart; pushes triggered by pokes likewise.
DEFAULT_POKE_INTERVAL = 0.05
# Longest wait for the autoscaler's answer to one attempt (shortened to the interval if smaller).
DEFAULT_ATTEMPT_TIMEOUT = 2.0


def default_activator_id() -> str:
    """This activator's name in reports: ``ACTIVATOR_ID``, else ``POD_NAME`` (the Kubernetes
    downward API), else ``hostname-pid``."""
    for variable in ("ACTIVATOR_ID", "POD_NAME"):
        value = os.environ.get(variable, "").strip()
        if value:
            return value
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class ServiceWindow:
    """One service's concurrency over one window, and its queue and pods at the window's end.

    Attributes:
        name: The service.
        window_seconds: Length of the window.
        average_concurrency: Time-weighted mean of requests in flight (queued ones included).
        max_concurrency: Most requests in flight at once. Streams and HTTP/1.1 connections are
            tracked apart, so when a service sees both this is the sum of both maxima: an upper
            bound.
        active: Requests in flight at the end of the window (queued ones included).
        queued: Requests waiting for a pod.
        oldest_queued_age_seconds: How long the oldest of them has waited.
        requests: Requests started during the window.
        ready_pods: Pods ready to take requests.
    """

    name: str
    window_seconds: float
    average_concurrency: float
    max_concurrency: int
    active: int
    queued: int
    oldest_queued_age_seconds: float
    requests: int
    ready_pods: int

    def extended_back(self, earlier: ServiceWindow) -> ServiceWindow:
        """This window stretched back over ``earlier`` (which ended where this one starts): the
        averages are weighted by length, the levels stay this window's."""
        window = earlier.window_seconds + self.window_seconds
        if window > 0:
            average = (
                earlier.average_concurrency * earlier.window_seconds
                + self.average_concurrency * self.window_seconds
            ) / window
        else:
            average = self.average_concurrency
        return replace(
            self,
            window_seconds=window,
            average_concurrency=average,
            max_concurrency=max(earlier.max_concurrency, self.max_concurrency),
            requests=earlier.requests + self.requests,
        )

    def document(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "average_concurrency": round(self.average_concurrency, 6),
            "max_concurrency": self.max_concurrency,
            "active": self.active,
            "queued": self.queued,
            "oldest_queued_age_seconds": round(self.oldest_queued_age_seconds, 6),
            "requests": self.requests,
            "ready_pods": self.ready_pods,
        }


@dataclass(frozen=True, slots=True)
class Report:
    """All services over one window.

    Attributes:
        window_seconds: Length of the window.
        services: One entry per service, in configuration order.
        extended: The window was stretched back over an undelivered report (it is not stretched
            again: a long outage loses its oldest data rather than report a misleading average).
    """

    window_seconds: float
    services: tuple[ServiceWindow, ...]
    extended: bool = False

    def extended_back(self, earlier: Report) -> Report:
        """This report stretched back over an undelivered ``earlier`` one."""
        before = {service.name: service for service in earlier.services}
        return Report(
            extended=True,
            window_seconds=earlier.window_seconds + self.window_seconds,
            services=tuple(
                service.extended_back(before[service.name]) if service.name in before else service
                for service in self.services
            ),
        )

    def document(self, activator_id: str, seq: int, timestamp: float) -> dict[str, Any]:
        """The JSON document sent to (or pulled by) the autoscaler."""
        return {
            "activator": activator_id,
            "seq": seq,
            "timestamp": round(timestamp, 6),
            "window_seconds": round(self.window_seconds, 6),
            "services": [service.document() for service in self.services],
        }


class ConcurrencyWindow:
    """One consumer's successive windows over every service (the push has one, the pull another).

    Each :meth:`read` covers the time since the previous read (or since the window was opened).
    ``now`` is on the services' loop clock, the one their trackers are fed with.
    """

    def __init__(self, services: Iterable[ServiceRuntime], now: float) -> None:
        self._started_at = now
        self._readers: list[tuple[ServiceRuntime, WindowReader, WindowReader]] = [
            (runtime, runtime.streams.reader(now), runtime.http1.reader(now))
            for runtime in services
        ]

    def read(self, now: float) -> Report:
        services: list[ServiceWindow] = []
        for runtime, streams_reader, http1_reader in self._readers:
            streams = streams_reader.read(now)
            http1 = http1_reader.read(now)
            throttle = runtime.throttle
            services.append(
                ServiceWindow(
                    name=runtime.name,
                    window_seconds=streams.window_seconds,
                    # Both readers cover the same window, so their averages add up.
                    average_concurrency=streams.average + http1.average,
                    max_concurrency=streams.maximum + http1.maximum,
                    active=streams.current + http1.current,
                    queued=throttle.queue_depth,
                    oldest_queued_age_seconds=throttle.queued_age(now),
                    requests=streams.requests + http1.requests,
                    ready_pods=throttle.ready_pods,
                )
            )
        window = max(0.0, now - self._started_at)
        self._started_at = now
        return Report(window_seconds=window, services=tuple(services))

    def close(self) -> None:
        """Detach from the trackers (they pay a little per request for every open reader)."""
        for _runtime, streams_reader, http1_reader in self._readers:
            streams_reader.close()
            http1_reader.close()
        self._readers = []


class _RetryableStatus(Exception):
    """The autoscaler answered 5xx or 429: worth another attempt."""


class _Rejected(Exception):
    """The autoscaler refused the report (4xx other than 429): retrying would not help."""


class PokeGate:
    """Decides when a service's queued requests poke the autoscaler (sans-I/O: time is passed in).

    A queued request is news when the queue is longer than in the last report, or when it is the
    only one queued and no pod is ready (the service is at zero, whatever the last report said).
    The first news pokes at once, later news at most once per ``interval``: news in between is
    coalesced into one deferred poke at the end of the interval.
    """

    __slots__ = ("deferred", "interval", "next_allowed", "reported_queue")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.next_allowed = float("-inf")
        # Queue depth in the last report built.
        self.reported_queue = 0
        # A deferred poke is scheduled at next_allowed.
        self.deferred = False

    def is_news(self, depth: int, cold: bool) -> bool:
        """Whether a queue of ``depth`` is news; ``cold``: no pod is ready."""
        return depth > self.reported_queue or (cold and depth == 1)

    def is_queue_news(self, throttle: ServiceThrottle[Any]) -> bool:
        """:meth:`is_news` of the throttle's queue now."""
        depth = throttle.queue_depth
        # ready_pods walks the pods: only asked when a lone queued request may mean "at zero".
        return self.is_news(depth, depth == 1 and throttle.ready_pods == 0)

    def queued(self, now: float) -> bool | None:
        """News was queued at ``now``.

        Returns:
            True: poke now. False: schedule :meth:`deferred_due` at :attr:`next_allowed`.
            None: nothing to do (a deferred poke is already scheduled).
        """
        if now >= self.next_allowed:
            self.next_allowed = now + self.interval
            return True
        if self.deferred:
            return None
        self.deferred = True
        return False

    def deferred_due(self, news: bool, now: float) -> bool:
        """The deferred poke's time came; True when it should poke (``news``: the queue is still
        news, see :meth:`is_news`)."""
        self.deferred = False
        if not news:
            return False
        self.next_allowed = now + self.interval
        return True

    def reported(self, depth: int) -> None:
        """A report telling the autoscaler about a queue of ``depth`` was built."""
        self.reported_queue = depth


class AutoscalerReporter:
    """Reports the services' concurrency to the autoscaler (push and poke) and on demand (pull)."""

    def __init__(
        self,
        services: Iterable[ServiceRuntime],
        config: AutoscalerConfig,
        *,
        loop: asyncio.AbstractEventLoop,
        activator_id: str | None = None,
        poke_interval: float = DEFAULT_POKE_INTERVAL,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.services = list(services)
        self.config = config
        self.loop = loop
        self.activator_id = activator_id or default_activator_id()
        self.interval = config.interval
        self.poke_interval = poke_interval
        self.attempt_timeout = min(attempt_timeout, config.interval)
        self.wall_clock = wall_clock
        self.counters = ReportingCounters()
        now = loop.time()
        self._pull = ConcurrencyWindow(self.services, now)
        self._pull_seq = 0
        # Named consumers' windows (the supervisor of worker processes pulls each worker for its
        # push and for its own pull): window and sequence number of each.
        self._consumers: dict[str, tuple[ConcurrencyWindow, int]] = {}
        self._push: ConcurrencyWindow | None = None
        self._push_seq = 0
        self._pokes = {runtime.name: PokeGate(poke_interval) for runtime in self.services}
        self._poke_timers: dict[str, asyncio.TimerHandle] = {}
        self._poked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sending: asyncio.Task[None] | None = None
        # The report in flight until the autoscaler accepts it (folded into the next if not).
        self._unsent: Report | None = None
        self._client: httpx.AsyncClient | None = None
        self._failing = False

    # -- pull ----------------------------------------------------------------------------------

    def pull(self, consumer: str = "") -> dict[str, Any]:
        """The report since the previous pull (or since start), for ``GET /v1/concurrency``.

        A named ``consumer`` has a window of its own, opened by its first pull (which covers no
        time), so that consumers do not shorten each other's windows.
        """
        now = self.loop.time()
        if not consumer:
            self._pull_seq += 1
            report = self._pull.read(now)
            return report.document(self.activator_id, self._pull_seq, self.wall_clock())
        window, seq = self._consumers.get(consumer) or (ConcurrencyWindow(self.services, now), 0)
        self._consumers[consumer] = (window, seq + 1)
        report = window.read(now)
        return report.document(self.activator_id, seq + 1, self.wall_clock())

    # -- push ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start pushing (when a push URL is configured) and hook the services' queues."""
        if self.config.push_url is None or self._task is not None:
            return
        self._push = ConcurrencyWindow(self.services, self.loop.time())
        # Cluster-internal traffic: ignore proxy settings from the environment.
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.attempt_timeout), trust_env=False
        )
        for runtime in self.services:
            runtime.on_queued = self.on_queued
        self._task = self.loop.create_task(self._run(), name="autoscaler-reporter")

    def on_queued(self, runtime: ServiceRuntime) -> None:
        """A request was queued (data path): ask for an immediate push if the queue is news.

        Never awaits; when the queue is no news it costs a dict lookup and two comparisons.
        """
        gate = self._pokes[runtime.name]
        if not gate.is_queue_news(runtime.throttle):
            return
        action = gate.queued(self.loop.time())
        if action:
            self._poke()
        elif action is False:
            self._poke_timers[runtime.name] = self.loop.call_at(
                gate.next_allowed, self._deferred_poke, runtime
            )

    def _deferred_poke(self, runtime: ServiceRuntime) -> None:
        self._poke_timers.pop(runtime.name, None)
        gate = self._pokes[runtime.name]
        if gate.deferred_due(gate.is_queue_news(runtime.throttle), self.loop.time()):
            self._poke()

    def _poke(self) -> None:
        self.counters.pokes += 1
        self._poked.set()

    async def _run(self) -> None:
        loop = self.loop
        next_due = loop.time() + self.interval
        last_push = float("-inf")
        while True:
            now = loop.time()
            if now < next_due:
                if self._poked.is_set():
                    # Pokes from several services coalesce into one push per poke interval.
                    wait = min(next_due, last_push + self.poke_interval) - now
                    if wait > 0:
                        await asyncio.sleep(wait)
                else:
                    try:
                        async with asyncio.timeout(next_due - now):
                            await self._poked.wait()
                    except TimeoutError:
                        pass
                    continue
            self._poked.clear()
            now = loop.time()
            if now >= next_due:
                next_due += self.interval
                if next_due <= now:  # the loop stalled past whole intervals: do not catch up
                    next_due = now + self.interval
            last_push = now
            try:
                await self._push_now(now)
            except Exception:  # a bug here must not end reporting for the process's lifetime
                log.exception("building the autoscaler report failed")

    async def read_push_report(self, now: float) -> Report:
        """The services' concurrency since the previous push (the supervisor of worker processes
        overrides this with the sum of its workers' reports)."""
        assert self._push is not None
        return self._push.read(now)

    async def _push_now(self, now: float) -> None:
        """Build the next report and send it, abandoning the previous one if still unsent."""
        report = await self.read_push_report(now)
        for service in report.services:
            gate = self._pokes.get(service.name)
            if gate is not None:
                gate.reported(service.queued)
        sending = self._sending
        if sending is not None and not sending.done():
            sending.cancel()
            self.counters.dropped += 1
        unsent = self._unsent
        if unsent is not None and not unsent.extended:
            report = report.extended_back(unsent)
        self._unsent = report
        self._push_seq += 1
        document = report.document(self.activator_id, self._push_seq, self.wall_clock())
        self._sending = self.loop.create_task(self._send(report, document))

    async def _send(self, report: Report, document: dict[str, Any]) -> None:
        assert self._client is not None
        assert self.config.push_url is not None
        client = self._client
        url = self.config.push_url
        body = _encode(document)
        headers = {"content-type": "application/json"}
        retrying = AsyncRetrying(
            # The next report is due after one interval and supersedes this one anyway.
            stop=stop_after_delay(self.interval),
            # Exponential from 50 ms with jitter, so activators do not retry in step.
            wait=wait_exponential(multiplier=0.05, max=min(1.0, self.interval / 4))
            + wait_random(0, 0.05),
            retry=retry_if_exception_type((httpx.TransportError, _RetryableStatus)),
            before_sleep=self._attempt_failed,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    response = await client.post(url, content=body, headers=headers)
                    if response.status_code >= 500 or response.status_code == 429:
                        raise _RetryableStatus(f"HTTP {response.status_code}")
                    if not response.is_success:
                        raise _Rejected(f"HTTP {response.status_code}: {response.text[:200]!r}")
        except (httpx.HTTPError, _RetryableStatus, _Rejected) as exc:
            self.counters.failed += 1
            self.counters.dropped += 1
            self._report_failure(document, exc)
            return
        self.counters.sent += 1
        if self._unsent is report:
            self._unsent = None
        if self._failing:
            self._failing = False
            log.info("autoscaler at %s accepts reports again", url)

    def _attempt_failed(self, state: RetryCallState) -> None:
        self.counters.failed += 1
        if state.attempt_number == 1 and not self._failing:
            outcome = state.outcome
            error = outcome.exception() if outcome is not None else None
            log.warning(
                "report to autoscaler at %s failed (%s); retrying",
                self.config.push_url,
                _describe(error),
            )

    def _report_failure(self, document: dict[str, Any], error: BaseException) -> None:
        if not self._failing:
            self._failing = True
            log.warning(
                "report seq %d to autoscaler at %s dropped: %s",
                document["seq"],
                self.config.push_url,
                _describe(error),
            )

    # -- shutdown ------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop pushing, unhook the services and detach every window."""
        for runtime in self.services:
            if runtime.on_queued == self.on_queued:
                runtime.on_queued = None
        for timer in self._poke_timers.values():
            timer.cancel()
        self._poke_timers.clear()
        tasks = [task for task in (self._task, self._sending) if task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._task = self._sending = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._push is not None:
            self._push.close()
        self._pull.close()
        for window, _seq in self._consumers.values():
            window.close()
        self._consumers.clear()


def _encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def _describe(error: BaseException | None) -> str:
    # Timeouts and some connection errors have an empty message: name the type too.
    if error is None:
        return "unknown error"
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
