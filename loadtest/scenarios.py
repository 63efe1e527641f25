"""The scenarios: what load, against which pods, and how each is sized."""

from __future__ import annotations

from dataclasses import dataclass, replace

from loadtest.h2load import LoadSpec
from loadtest.pods import GOAWAY_EVERY, PodKind

GRPC_PATH = "/loadtest.Echo/Unary"
GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")
LATENCY_TOTAL_RPS = 500
LATENCY_CLIENTS = 5
# latency-spread: its h2load processes start this far apart (10 ms tick / 5 processes).
LATENCY_SPREAD_S = 0.002
SOAK = "soak"
SOAK_REQUESTS = 1_000_000


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str  # one line, for tables
    measures: str  # what it tells, for RESULTS.md and the README
    pods: PodKind
    load: LoadSpec
    max_requests: int  # measured run: at most this many requests
    warmup_requests: int
    # Closed-loop scenarios size the measured run from the warm-up's rate so that it lasts
    # about --run-seconds; fixed ones always send max_requests.
    sized_by_time: bool = True
    direct_pods: PodKind | None = None  # pods for the `direct` target, if not `pods`
    grpc: bool = False
    burst: bool = False
    only_targets: tuple[str, ...] = ()  # empty: every target
    # Why a target outside only_targets is not run, by target name.
    not_applicable: tuple[tuple[str, str], ...] = ()

    @property
    def fixed_rate(self) -> int:
        return self.load.rate_per_client * self.load.clients * self.load.processes


ALL_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="small",
        summary="100 B responses, h2c in and out, h2load -c 16 -m 10, closed loop",
        measures=(
            "Per-request overhead: tiny responses, so nearly all proxy work is framing, "
            "header (HPACK) handling, stream bookkeeping and balancing."
        ),
        pods=PodKind.STATIC_H2C,
        load=LoadSpec(path="/100b", clients=16, streams=10),
        max_requests=300_000,
        warmup_requests=2_000,
    ),
    Scenario(
        name=SOAK,
        summary=f"{SOAK_REQUESTS:,} small requests on the same 16 client connections "
        "(h2load -c 16 -m 10), fixed request count",
        measures=(
            "Uptime: a million streams through long-lived client connections, as gRPC channels "
            "and browsers keep them. Reported besides the usual figures: the proxy's RSS growth "
            "per client connection over the run and the latency tail (p99.9, max). Per-stream "
            "state kept after a stream is gone shows up here as growth, and as longer garbage "
            "collection pauses in the tail."
        ),
        pods=PodKind.STATIC_H2C,
        load=LoadSpec(path="/100b", clients=16, streams=10),
        max_requests=SOAK_REQUESTS,
        warmup_requests=2_000,
        sized_by_time=False,
    ),
    Scenario(
        name="large",
        summary="256 KiB responses, h2c in and out, h2load -c 8 -m 2, closed loop",
        measures=(
            "Body throughput: DATA frames, flow-control windows (RFC 9113 section 5.2) and "
            "copying; per-request overhead is small next to 256 KiB of payload."
        ),
        pods=PodKind.STATIC_H2C,
        load=LoadSpec(path="/256k", clients=8, streams=2),
        max_requests=40_000,
        warmup_requests=200,
    ),
    Scenario(
        name="latency",
        summary=f"100 B at a fixed {LATENCY_TOTAL_RPS} req/s total "
        f"({LATENCY_CLIENTS} clients x --rps {LATENCY_TOTAL_RPS // LATENCY_CLIENTS})",
        measures=(
            "Latency a proxy adds when it is not saturated: p50/p99 at a steady, low rate, "
            "reported as the difference to the direct run."
        ),
        pods=PodKind.STATIC_H2C,
        load=LoadSpec(
            path="/100b",
            clients=LATENCY_CLIENTS,
            streams=10,
            rate_per_client=LATENCY_TOTAL_RPS // LATENCY_CLIENTS,
        ),
        max_requests=LATENCY_TOTAL_RPS * 5,
        warmup_requests=250,
        sized_by_time=False,
    ),
    Scenario(
        name="latency-spread",
        summary=f"100 B at a fixed {LATENCY_TOTAL_RPS} req/s total from {LATENCY_CLIENTS} h2load "
        f"processes (1 client x --rps {LATENCY_TOTAL_RPS // LATENCY_CLIENTS} each) started "
        f"{LATENCY_SPREAD_S * 1000:g} ms apart",
        measures=(
            "The rate of `latency`, spread out over time. h2load's --rps sends what a client "
            "owes every 10 ms at once, and the clients of one process tick together, so in "
            "`latency` 5 requests arrive at once every 10 ms and the median one waits while "
            "the proxy reads the others. Here each process ticks at its own moment, one about "
            "every 2 ms, as from independent clients."
        ),
        pods=PodKind.STATIC_H2C,
        load=LoadSpec(
            path="/100b",
            clients=1,
            streams=10,
            rate_per_client=LATENCY_TOTAL_RPS // LATENCY_CLIENTS,
            processes=LATENCY_CLIENTS,
            stagger_s=LATENCY_SPREAD_S,
        ),
        max_requests=LATENCY_TOTAL_RPS * 5,
        warmup_requests=250,
        sized_by_time=False,
    ),
    Scenario(
        name="h1",
        summary="100 B, HTTP/1.1 clients (h2load --h1 -c 32 -m 1), h2c to the pods",
        measures=(
            "HTTP/1.1 clients in front of HTTP/2 pods: request parsing and the translation to "
            "HTTP/2 (RFC 9113 section 8.3). No pipelining (-m 1), as browsers and most "
            "clients do. Direct: nginx serving the same file over HTTP/1.1, since nghttpd "
            "has no HTTP/1.1."
        ),
        pods=PodKind.STATIC_H2C,
        load=LoadSpec(path="/100b", clients=32, streams=1, http1=True),
        max_requests=300_000,
        warmup_requests=2_000,
        direct_pods=PodKind.STATIC_H1,
    ),
    Scenario(
        name="grpc",
        summary="gRPC unary, 100 B messages, grpcio pods, h2load -c 8 -m 10 POST",
        measures=(
            "gRPC unary calls: POST with a request body, response trailers (grpc-status). "
            "h2load counts HTTP 200 as success; a grpcio client then makes 200 calls through "
            "the same target and counts grpc-status 0, which checks that trailers survive."
        ),
        pods=PodKind.GRPC,
        load=LoadSpec(path=GRPC_PATH, clients=8, streams=10, headers=GRPC_HEADERS),
        max_requests=200_000,
        warmup_requests=1_000,
        grpc=True,
    ),
    Scenario(
        name="goaway",
        summary=f"nginx h2c pods send GOAWAY every {GOAWAY_EVERY} requests per connection; "
        "h2load -c 8 -m 10, fixed request count",
        measures=(
            "Upstream connection churn: each pod connection ends with GOAWAY (RFC 9113 "
            "section 6.8) after 5 requests, while up to 10 streams per client are in flight. "
            "A proxy must open new connections and retry the streams the GOAWAY refused "
            "(those above its last-stream-id were never processed, so a retry is safe). "
            "`failed` is the figure to read. Direct: h2load itself does not reconnect or "
            "retry after GOAWAY, so nearly everything fails: the no-proxy baseline."
        ),
        pods=PodKind.GOAWAY_NGINX,
        load=LoadSpec(path="/100b", clients=8, streams=10),
        max_requests=20_000,
        warmup_requests=500,
        sized_by_time=False,
    ),
    Scenario(
        name="goaway-demo",
        summary=f"demo pods with --goaway-every {GOAWAY_EVERY}; h2load -c 8 -m 10, fixed "
        "request count",
        measures=(
            "The same churn as `goaway`, with the project's demo pod "
            f"(`python -m activator.demopod --goaway-every {GOAWAY_EVERY}`) as the pod; 10,000 "
            "requests, as the Python pod is slower than nginx."
        ),
        pods=PodKind.GOAWAY_DEMO,
        load=LoadSpec(path="/bytes/100", clients=8, streams=10),
        max_requests=10_000,
        warmup_requests=500,
        sized_by_time=False,
    ),
    Scenario(
        name="burst",
        summary="scale from zero: 1,000 requests held, then endpoints appear",
        measures=(
            "Activation: the activator starts with a service that has no endpoints, 1,000 "
            "requests arrive (h2load -c 10 -m 100) and are held; then the endpoints are set "
            "with `PUT /v1/services/default/endpoints` on the admin port. Reported: time from "
            "that PUT to the first and to the last response, and failures."
        ),
        pods=PodKind.STATIC_H2C,
        load=LoadSpec(path="/100b", clients=10, streams=100),
        max_requests=1_000,
        warmup_requests=0,
        sized_by_time=False,
        burst=True,
        only_targets=("activator",),
        not_applicable=(
            ("direct", "no proxy: with no pod there is nothing to send the requests to"),
            (
                "haproxy",
                "HAProxy has no scale-from-zero mode: it cannot hold requests until a "
                "backend appears, so there is nothing to compare",
            ),
        ),
    ),
)

SCENARIOS_BY_NAME = {scenario.name: scenario for scenario in ALL_SCENARIOS}
DEFAULT_SCENARIOS = tuple(scenario.name for scenario in ALL_SCENARIOS)


def quick_variant(scenario: Scenario) -> Scenario:
    """The smoke-test size of a scenario (`--quick`)."""
    if scenario.fixed_rate:
        return replace(scenario, max_requests=scenario.fixed_rate * 2, warmup_requests=100)
    if scenario.name.startswith("goaway"):
        return replace(
            scenario, max_requests=min(4_000, scenario.max_requests), warmup_requests=200
        )
    if scenario.burst:
        return scenario
    if scenario.name == SOAK:
        return replace(scenario, max_requests=50_000, warmup_requests=500)
    return replace(scenario, warmup_requests=max(100, scenario.warmup_requests // 4))
