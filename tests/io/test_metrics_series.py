"""The per-request series (plain counts, exported at scrape time) against prometheus-client's own
``Counter`` and ``Histogram`` fed the same observations: the exposition must be the same, sample
for sample, in both the Prometheus text format and OpenMetrics.

Exchanges and services are stand-ins (only the attributes the series read): what is under test is
the counting and the exposition, not the data path, which tests/io/test_metrics.py scrapes live.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from activator.io.metrics import (
    QUEUE_WAIT_BUCKETS,
    REQUEST_DURATION_BUCKETS,
    ActivatorMetrics,
    BucketCounts,
    protocol_label,
)

NOW = 1000.0


class FixedLoop:
    def time(self) -> float:
        return NOW


@dataclass
class StubService:
    name: str
    loop: FixedLoop = field(default_factory=FixedLoop)
    on_finished: Any = None


@dataclass
class StubExchange:
    service: StubService
    status: int
    http1: bool
    grpc: bool
    started_at: float
    placed_at: float


Observation = tuple[str, int, bool, bool, float, float]  # service, status, http1, grpc, ages

bounds_and_neighbours = [
    *REQUEST_DURATION_BUCKETS,
    *QUEUE_WAIT_BUCKETS,
    *(math.nextafter(b, math.inf) for b in REQUEST_DURATION_BUCKETS + QUEUE_WAIT_BUCKETS),
    0.0,
    1e-9,
    1e6,
]
ages = st.one_of(st.sampled_from(bounds_and_neighbours), st.floats(min_value=0.0, max_value=1e4))
observations = st.lists(
    st.tuples(
        st.sampled_from(["alpha", "beta"]),
        st.sampled_from([0, 200, 404, 503]),
        st.booleans(),
        st.booleans(),
        ages,
        st.one_of(st.just(-1.0), ages),  # -1: never placed (answered before reaching a pod)
    ),
    max_size=60,
)


def reference_exposition(obs: list[Observation], openmetrics: bool) -> set[tuple[Any, ...]]:
    """What prometheus-client's Counter and Histogram export for the same observations."""
    registry = CollectorRegistry()
    requests = Counter(
        "activator_requests", "x", ["service", "code", "protocol"], registry=registry
    )
    duration = Histogram(
        "activator_request_duration_seconds",
        "x",
        ["service"],
        buckets=REQUEST_DURATION_BUCKETS,
        registry=registry,
    )
    wait = Histogram(
        "activator_queue_wait_seconds",
        "x",
        ["service"],
        buckets=QUEUE_WAIT_BUCKETS,
        registry=registry,
    )
    for name in ("alpha", "beta"):  # ours export both services' histograms from the start
        duration.labels(name)
        wait.labels(name)
    for name, status, http1, grpc, age, placed in obs:
        requests.labels(name, str(status), protocol_label(http1, grpc)).inc()
        started = NOW - age  # the same arithmetic as the series (clock minus start)
        duration.labels(name).observe(NOW - started)
        if placed >= 0.0:
            wait.labels(name).observe((started + placed) - started)
    return samples(registry, openmetrics)


def our_exposition(obs: list[Observation], openmetrics: bool) -> set[tuple[Any, ...]]:
    services = {name: StubService(name) for name in ("alpha", "beta")}
    metrics = ActivatorMetrics(services.values())  # type: ignore[arg-type]
    for collector in list(metrics.registry._collector_to_names):
        # The levels collector reads live services; the stand-ins have none of that.
        if type(collector).__name__ == "_LevelsCollector":
            metrics.registry.unregister(collector)
    metrics.install()
    for name, status, http1, grpc, age, placed in obs:
        service = services[name]
        started = NOW - age
        placed_at = started + placed if placed >= 0 else 0.0
        ex = StubExchange(service, status, http1, grpc, started, placed_at)
        service.on_finished(ex)
    return samples(metrics.registry, openmetrics)


def samples(registry: CollectorRegistry, openmetrics: bool) -> set[tuple[Any, ...]]:
    if openmetrics:
        from prometheus_client.openmetrics.exposition import generate_latest

        text = generate_latest(registry).decode()
        families = openmetrics_families(text)
    else:
        from prometheus_client.exposition import generate_latest as generate_text

        text = generate_text(registry).decode()
        families = text_string_to_metric_families(text)
    out: set[tuple[Any, ...]] = set()
    for family in families:
        for sample in family.samples:
            # Creation times differ between any two registries; that they are there is compared.
            value = "created" if sample.name.endswith("_created") else sample.value
            out.add((family.type, sample.name, frozenset(sample.labels.items()), value))
    return out


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
@settings(max_examples=150, deadline=None)
@given(obs=observations)
def test_exposition_matches_prometheus_client(obs: list[Observation], openmetrics: bool) -> None:
    assert our_exposition(obs, openmetrics) == reference_exposition(obs, openmetrics)


def test_a_grpc_call_over_http1_and_http2_is_one_series() -> None:
    obs: list[Observation] = [
        ("alpha", 200, True, True, 0.002, -1.0),
        ("alpha", 200, False, True, 0.002, -1.0),
        ("alpha", 200, False, False, 0.002, -1.0),
    ]
    exported = our_exposition(obs, openmetrics=False)
    totals = {
        dict(labels)["protocol"]: value
        for _, name, labels, value in exported
        if name == "activator_requests_total"
    }
    assert totals == {"grpc": 2.0, "h2": 1.0}


@pytest.mark.parametrize(
    ("value", "bucket"),
    [(0.0, 0), (0.001, 0), (math.nextafter(0.001, 1.0), 1), (300.0, 15), (300.5, 16), (1e9, 16)],
)
def test_a_value_on_a_bound_counts_in_that_bound(value: float, bucket: int) -> None:
    counts = BucketCounts(REQUEST_DURATION_BUCKETS, created=0.0)
    counts.observe(value)
    assert counts.counts.index(1) == bucket
    assert counts.total == value
    cumulative = counts.cumulative()
    assert cumulative[-1] == ("+Inf", 1)
    assert [le for le, _ in cumulative[:2]] == ["0.001", "0.005"]
    assert [n for _, n in cumulative] == [0] * bucket + [1] * (len(cumulative) - bucket)
