"""Prometheus metrics of one activator, in a registry of its own.

Two kinds of series:

* Per-request counters and histograms (requests by code and protocol, request duration, queue
  wait) are plain integers and bucket lists of the service, updated when an exchange finishes:
  a dict lookup, two bisects and a few additions, with no lock (only the event loop's thread
  touches them) and no string formatting. prometheus-client's ``Counter`` and ``Histogram`` take
  a lock per update and walk the buckets in Python: 2.5 µs per request against 0.7 here.
* Everything that is a level (in flight, queue, pods, upstream connections) or already counted by
  the data path (GOAWAYs, replays) is read from the services when Prometheus scrapes.

Both are exported by collectors at scrape time, sample for sample what prometheus-client's own
``Counter`` and ``Histogram`` would export (``_total``, ``_created``, cumulative ``_bucket``,
``_count``, ``_sum``).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, cast

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString

# How prometheus-client writes a bucket's bound in ``le`` (it is untyped).
_le_label = cast(Callable[[float], str], floatToGoString)

if TYPE_CHECKING:
    from activator.io.exchange import Exchange
    from activator.io.ingress import ClientConnections
    from activator.io.service import ServiceRuntime

__all__ = [
    "QUEUE_WAIT_BUCKETS",
    "REQUEST_DURATION_BUCKETS",
    "ActivatorMetrics",
    "ReportingCounters",
    "protocol_label",
    "reporting_families",
]

# Request durations: sub-millisecond proxying up to long cold starts and streaming calls.
REQUEST_DURATION_BUCKETS: Final = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
# Queue wait is 0 for a warm service and seconds for a cold start: fine at both ends.
QUEUE_WAIT_BUCKETS: Final = (
    0.0005,
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
)


def protocol_label(http1: bool, grpc: bool) -> str:
    """The ``protocol`` label of a request: ``grpc``, ``http1`` (HTTP/1.1 client) or ``h2``."""
    if grpc:
        return "grpc"
    return "http1" if http1 else "h2"


@dataclass(slots=True)
class ReportingCounters:
    """Outcome counts of the autoscaler reports, kept by the reporter and exported here.

    Attributes:
        sent: Reports the autoscaler accepted (2xx).
        failed: Attempts that failed (connection error, timeout, non-2xx answer).
        dropped: Reports given up on: retries ran out, or the next report was due first.
        pokes: Immediate reports triggered by queued requests (scale from zero, growing queue).
    """

    sent: int = 0
    failed: int = 0
    dropped: int = 0
    pokes: int = 0


class BucketCounts:
    """One histogram series: observation counts per bucket (not cumulative), their sum, and when
    the series was created (the ``_created`` sample)."""

    __slots__ = ("bounds", "counts", "created", "labels", "total")

    def __init__(self, bounds: tuple[float, ...], created: float) -> None:
        self.bounds = bounds  # upper bounds, ascending, without +Inf
        self.labels = [_le_label(bound) for bound in (*bounds, float("inf"))]
        self.counts = [0] * (len(bounds) + 1)  # the last one is the +Inf bucket
        self.total = 0.0
        self.created = created

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (``le``).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, count)`` pairs, cumulative, the last one ``+Inf``."""
        buckets: list[tuple[str, float]] = []
        running = 0
        for label, count in zip(self.labels, self.counts, strict=True):
            running += count
            buckets.append((label, running))
        return buckets


class _ServiceSeries:
    """One service's per-request series."""

    __slots__ = ("_clock", "_labels", "duration", "name", "queue_wait", "requests")

    def __init__(self, name: str, clock: Callable[[], float]) -> None:
        self.name = name
        self._clock = clock
        now = time.time()
        # (status, http1, grpc) -> its (code, protocol) labels, resolved on first sight.
        self._labels: dict[tuple[int, bool, bool], tuple[str, str]] = {}
        # (code, protocol) -> [requests finished, created]; in order of first sight.
        self.requests: dict[tuple[str, str], list[float]] = {}
        self.duration = BucketCounts(REQUEST_DURATION_BUCKETS, now)
        self.queue_wait = BucketCounts(QUEUE_WAIT_BUCKETS, now)

    def observe(self, ex: Exchange) -> None:
        """Count one finished exchange (installed as the service's ``on_finished`` hook)."""
        key = (ex.status, ex.http1, ex.grpc)
        labels = self._labels.get(key)
        if labels is None:
            labels = self._resolve(key)
        self.requests[labels][0] += 1
        self.duration.observe(self._clock() - ex.started_at)
        placed_at = ex.placed_at
        if placed_at:
            self.queue_wait.observe(placed_at - ex.started_at)

    def _resolve(self, key: tuple[int, bool, bool]) -> tuple[str, str]:
        status, http1, grpc = key
        labels = (str(status), protocol_label(http1, grpc))
        self._labels[key] = labels
        # Two keys can share labels (an HTTP/1.1 and an HTTP/2 gRPC call): one series.
        self.requests.setdefault(labels, [0, time.time()])
        return labels


class _RequestsCollector:
    """Exports the per-request series of every service."""

    def __init__(self, series: Iterable[_ServiceSeries]) -> None:
        self._series = list(series)

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> list[Metric]:
        requests, duration, queue_wait = self._families()
        for series in self._series:
            name = series.name
            for (code, protocol), (count, created) in series.requests.items():
                requests.add_metric([name, code, protocol], count, created=created)
            for family, counts in ((duration, series.duration), (queue_wait, series.queue_wait)):
                family.add_metric([name], counts.cumulative(), counts.total)
                family.add_sample(family.name + "_created", {"service": name}, counts.created)
        return [requests, duration, queue_wait]

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, HistogramMetricFamily, HistogramMetricFamily]:
        return (
            CounterMetricFamily(
                "activator_requests",
                "Requests finished, by service, status code sent to the client (0: none, the "
                "client went away first) and client protocol (h2, http1, grpc).",
                labels=["service", "code", "protocol"],
            ),
            HistogramMetricFamily(
                "activator_request_duration_seconds",
                "Seconds from the request's headers to the end of the exchange, queue wait "
                "included.",
                labels=["service"],
            ),
            HistogramMetricFamily(
                "activator_queue_wait_seconds",
                "Seconds requests waited for a pod before being sent to one (cold starts show "
                "here).",
                labels=["service"],
            ),
        )


class _Families:
    """The scrape-time metric families, fresh for every scrape."""

    def __init__(self) -> None:
        service = ["service"]
        self.in_flight = GaugeMetricFamily(
            "activator_in_flight",
            "Requests in flight through the activator, queued ones included: HTTP/2 streams "
            "(kind=stream) and HTTP/1.1 client connections busy with a request "
            "(kind=http1_connection).",
            labels=["service", "kind"],
        )
        self.queue_depth = GaugeMetricFamily(
            "activator_queue_depth", "Requests waiting for a pod with a free slot.", labels=service
        )
        self.queue_bytes = GaugeMetricFamily(
            "activator_queue_bytes",
            "Request body bytes buffered by requests waiting for a pod.",
            labels=service,
        )
        self.queue_age = GaugeMetricFamily(
            "activator_queue_oldest_age_seconds",
            "How long the oldest waiting request has waited (0 when none waits).",
            labels=service,
        )
        self.ready_pods = GaugeMetricFamily(
            "activator_ready_pods", "Pods that are ready to take requests.", labels=service
        )
        self.pods = GaugeMetricFamily(
            "activator_pods", "Pods in the service's endpoints, ready or not.", labels=service
        )
        self.connections = GaugeMetricFamily(
            "activator_upstream_connections",
            "Connections open (or opening) to the service's pods.",
            labels=service,
        )
        self.goaways = CounterMetricFamily(
            "activator_goaways_received",
            "GOAWAY frames received from pods (RFC 9113 section 6.8).",
            labels=service,
        )
        self.replays = CounterMetricFamily(
            "activator_replays",
            "Requests sent again because a pod provably did not process them, by reason "
            "(goaway, refused_stream, connect_failed).",
            labels=["service", "reason"],
        )
        self.replay_failures = CounterMetricFamily(
            "activator_replay_failures",
            "Unprocessed requests that could not be replayed (body past the replay buffer, or "
            "too many replays) and failed, by reason.",
            labels=["service", "reason"],
        )

    def all(self, reporting: ReportingCounters | None) -> list[Metric]:
        return [
            self.in_flight,
            self.queue_depth,
            self.queue_bytes,
            self.queue_age,
            self.ready_pods,
            self.pods,
            self.connections,
            self.goaways,
            self.replays,
            self.replay_failures,
            *reporting_families(reporting),
        ]


def reporting_families(counters: ReportingCounters | None) -> list[Metric]:
    """The autoscaler report counters as metric families (no samples when nothing reports)."""
    reports = CounterMetricFamily(
        "activator_autoscaler_reports",
        "Concurrency reports pushed to the autoscaler, by result: sent, failed (attempts) "
        "and dropped (reports given up on).",
        labels=["result"],
    )
    pokes = CounterMetricFamily(
        "activator_autoscaler_pokes",
        "Immediate reports triggered by queued requests (scale from zero, growing queue).",
        labels=[],
    )
    if counters is not None:
        reports.add_metric(["sent"], counters.sent)
        reports.add_metric(["failed"], counters.failed)
        reports.add_metric(["dropped"], counters.dropped)
        pokes.add_metric([], counters.pokes)
    return [reports, pokes]


class _LevelsCollector:
    """Reads levels and data-path counters from the services at scrape time."""

    def __init__(
        self, services: list[ServiceRuntime], reporting: Callable[[], ReportingCounters | None]
    ) -> None:
        self._services = services
        self._reporting = reporting

    def describe(self) -> list[Metric]:
        # Names only, for the registry's duplicate check; no service is read.
        return _Families().all(None)

    def collect(self) -> list[Metric]:
        families = _Families()
        for runtime in self._services:
            name = runtime.name
            throttle = runtime.throttle
            families.in_flight.add_metric([name, "stream"], runtime.streams.current)
            families.in_flight.add_metric([name, "http1_connection"], runtime.http1.current)
            families.queue_depth.add_metric([name], throttle.queue_depth)
            families.queue_bytes.add_metric([name], runtime.queued_body_bytes)
            families.queue_age.add_metric([name], throttle.queued_age(runtime.loop.time()))
            families.ready_pods.add_metric([name], throttle.ready_pods)
            families.pods.add_metric(
                [name], sum(1 for pod in throttle.pods.values() if not pod.removed)
            )
            families.connections.add_metric(
                [name], sum(len(pool.h2) + pool.h1_count for pool in runtime.pools.values())
            )
            families.goaways.add_metric([name], runtime.goaways_total)
            for reason, count in sorted(runtime.replays_total.items()):
                families.replays.add_metric([name, reason], count)
            for reason, count in sorted(runtime.replay_failures.items()):
                families.replay_failures.add_metric([name, reason], count)
        return families.all(self._reporting())


class _ClientsCollector:
    """Client connections open now, and those the activator closed itself, by reason."""

    def __init__(self, clients: ClientConnections | None) -> None:
        self._clients = clients

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> list[Metric]:
        open_now, closed = self._families()
        clients = self._clients
        if clients is not None:
            open_now.add_metric([], len(clients.open))
            for reason, count in clients.closed.items():
                closed.add_metric([reason], count)
        return [open_now, closed]

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, CounterMetricFamily]:
        return (
            GaugeMetricFamily(
                "activator_client_connections",
                "Client connections open (HTTP/2 and HTTP/1.1, both listeners).",
                labels=[],
            ),
            CounterMetricFamily(
                "activator_client_connections_closed",
                "Client connections the activator closed itself, by reason: idle "
                "(limits.client_idle_timeout), header_timeout (limits.client_header_timeout), "
                "rapid_reset (CVE-2023-44487) and protocol_error (the client broke HTTP/2 or "
                "HTTP/1.1, an HTTP/1.1 head over max_header_bytes included: 400 or 431 and a "
                "close).",
                labels=["reason"],
            ),
        )


class ActivatorMetrics:
    """The metrics of one activator's services, in a private :class:`CollectorRegistry`.

    :meth:`install` hooks every service's ``on_finished``; the rest is read at scrape time.
    """

    def __init__(
        self, services: Iterable[ServiceRuntime], clients: ClientConnections | None = None
    ) -> None:
        self.services = list(services)
        self.registry = CollectorRegistry(auto_describe=True)
        self.reporting: ReportingCounters | None = None
        self._series = {
            runtime.name: _ServiceSeries(runtime.name, runtime.loop.time)
            for runtime in self.services
        }
        self.registry.register(_RequestsCollector(self._series.values()))
        self.registry.register(_LevelsCollector(self.services, lambda: self.reporting))
        self.registry.register(_ClientsCollector(clients))

    def install(self) -> None:
        """Count every exchange the services finish from now on."""
        for runtime in self.services:
            runtime.on_finished = self._series[runtime.name].observe

    def uninstall(self) -> None:
        for runtime in self.services:
            if runtime.on_finished == self._series[runtime.name].observe:
                runtime.on_finished = None

    def observe(self, ex: Exchange) -> None:
        """Count one finished exchange (what the installed hooks do)."""
        self._series[ex.service.name].observe(ex)

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The registry as (body, content type), in the format the ``Accept`` header asks for:
        OpenMetrics or the Prometheus text format (version 0.0.4 unless a later one is asked)."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type
