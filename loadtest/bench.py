"""Measured runs: one scenario against one target, and the interleaved rounds of a whole run."""

from __future__ import annotations

import http.client
import json
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from loadtest import grpc_pod
from loadtest.h2load import (
    H2loadResult,
    LoadSpec,
    RequestLog,
    cdf_points,
    finish_h2load,
    h2load_argv,
    kill_h2load,
    percentile,
    read_request_log,
    run_h2load,
    run_h2load_staggered,
    start_h2load,
)
from loadtest.pods import GRPC_MESSAGE_BYTES, PodKind, Pods, PodSet
from loadtest.procs import (
    CLOCK_TICKS_PER_SECOND,
    HOST,
    CoreTimes,
    ProcessRegistry,
    TreeUsage,
    read_core_times,
    tree_usage,
    wait_until_idle,
)
from loadtest.scenarios import Scenario
from loadtest.targets import Launch, LaunchContext, Target

# Scenarios whose latency distributions are kept for the CDF plots.
CDF_SCENARIOS = ("small", "latency", "latency-spread")
ENDPOINTS_PATH = "/v1/services/default/endpoints"


@dataclass(frozen=True)
class Settings:
    rounds: int = 3
    rotate: bool = True
    run_seconds: float = 3.0
    proxy_core: int = 0
    load_core: int = 1
    idle_threshold: float = 0.5
    idle_wait_s: float = 2.0
    start_timeout_s: float = 30.0
    h2load: str = "h2load"
    grpc_probe_calls: int = 200
    burst_hold_s: float = 1.0


@dataclass
class RunRecord:
    """Everything measured in one run of one scenario against one target (JSON-able)."""

    scenario: str
    target: str
    round: int
    skipped: str | None = None
    error: str | None = None
    proxy_command: str | None = None
    h2load_command: str | None = None
    startup_s: float | None = None
    idle_wait_s: float | None = None
    warmup_requests_per_s: float | None = None
    requests: int | None = None  # -n of the measured run
    requests_per_s: float | None = None
    ok: int | None = None  # 2xx/3xx responses
    failed: int | None = None  # requests - ok: errored, reset, refused, timed out or 4xx/5xx
    status_5xx: int | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    max_ms: float | None = None
    wall_s: float | None = None
    proxy_cpu_s: float | None = None
    proxy_cpu_us_per_request: float | None = None
    proxy_cpu_us_per_request_schedstat: float | None = None
    proxy_core_busy: float | None = None  # proxy CPU seconds / wall seconds
    proxy_rss_mib: float | None = None  # after the measured run
    proxy_rss_before_mib: float | None = None  # before it (after the warm-up)
    pods_cpu_us_per_request: float | None = None
    client_cpu_us_per_request: float | None = None
    foreign_on_proxy_core: float | None = None  # share of core 0 used by other people's work
    steal_s: float | None = None
    grpc_probe: dict[str, Any] | None = None
    burst: dict[str, Any] | None = None
    latency_cdf: list[tuple[float, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def measured(self) -> bool:
        return self.skipped is None and self.error is None and self.requests_per_s is not None


@dataclass
class _Window:
    """CPU counters at the start of a measured window."""

    proxy: TreeUsage | None
    pods: TreeUsage
    cores: dict[int, CoreTimes]
    started: float


class Bench:
    def __init__(
        self,
        settings: Settings,
        registry: ProcessRegistry,
        launch_context: LaunchContext,
        pods: Pods,
        workdir: Path,
        log: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.launch_context = launch_context
        self.pods = pods
        self.workdir = workdir
        self.log = log
        self.grpc_request_file = workdir / "grpc-request.bin"
        self.grpc_request_file.write_bytes(
            grpc_pod.encode_grpc_frame(grpc_pod.request_payload(GRPC_MESSAGE_BYTES))
        )

    def run_all(
        self,
        scenarios: Sequence[Scenario],
        targets: Sequence[Target],
        on_record: Callable[[RunRecord], None],
    ) -> None:
        """Every scenario; in each, `rounds` rounds of every target, order rotated per round.

        Each record goes to `on_record` as soon as it is complete, so an interrupted run keeps
        what it measured.
        """
        for scenario in scenarios:
            for round_index in range(self.settings.rounds):
                order = list(targets)
                if self.settings.rotate and order:
                    shift = round_index % len(order)
                    order = order[shift:] + order[:shift]
                for target in order:
                    on_record(self.run_one(scenario, target, round_index + 1))

    def run_one(self, scenario: Scenario, target: Target, round_number: int) -> RunRecord:
        record = RunRecord(scenario=scenario.name, target=target.name, round=round_number)
        if scenario.only_targets and target.name not in scenario.only_targets:
            record.skipped = dict(scenario.not_applicable).get(
                target.name, f"{scenario.name} runs only against {', '.join(scenario.only_targets)}"
            )
            return record
        pods = self.pods.get(pods_for(scenario, target))
        if pods.error is not None:
            record.skipped = f"pods unavailable: {pods.error}"
            return record
        if self.settings.idle_wait_s > 0:
            record.idle_wait_s = wait_until_idle(
                [self.settings.proxy_core, self.settings.load_core],
                self.settings.idle_threshold,
                self.settings.idle_wait_s,
            )
        launch = target.launch(
            self.launch_context,
            pods,
            http1_clients=scenario.load.http1,
            started_empty=scenario.burst,
        )
        record.proxy_command = launch.command
        record.startup_s = launch.startup_s
        if launch.error is not None:
            record.error = f"{target.name} {launch.error}"
            return record
        try:
            if scenario.burst:
                self._burst(scenario, launch, pods, record)
            else:
                self._measure(scenario, launch, pods, record)
            if launch.process is not None and not launch.process.running():
                record.error = (
                    f"{target.name} exited during the run (code "
                    f"{launch.process.popen.returncode}): {launch.process.log_tail(6)}"
                )
        finally:
            if launch.process is not None:
                self.registry.stop(launch.process)
        return record

    # -- closed-loop and fixed-rate scenarios ------------------------------------------------

    def _load_spec(self, scenario: Scenario) -> LoadSpec:
        if scenario.grpc:
            return replace(scenario.load, data_file=self.grpc_request_file)
        return scenario.load

    def _measure(self, scenario: Scenario, launch: Launch, pods: PodSet, record: RunRecord) -> None:
        spec = self._load_spec(scenario)
        # Warm-up: connections, caches, allocator; and the rate that sizes the measured run.
        warmup = self._h2load(launch.port, spec, scenario.warmup_requests, None, timeout_s=120.0)
        record.warmup_requests_per_s = warmup.requests_per_s
        if warmup.ok == 0:
            why = warmup.error or _tail(warmup.output)
            if scenario.sized_by_time:
                record.error = f"warm-up: no successful request. {why}"
                return
            # A fixed-count run does not need the warm-up's rate; its failures are the result.
            record.notes.append(f"{record.target}: no request of the warm-up succeeded")
        requests = scenario.max_requests
        if scenario.sized_by_time and warmup.requests_per_s:
            floor = min(requests, 20 * spec.clients * spec.streams)
            wanted = int(warmup.requests_per_s * self.settings.run_seconds)
            requests = min(requests, max(floor, wanted))
            requests -= requests % spec.clients  # the same count for every client
        record.requests = requests
        if scenario.fixed_rate:
            expected_s = requests / scenario.fixed_rate
        else:
            expected_s = requests / max(warmup.requests_per_s or 1.0, 1.0)
        request_log = self.workdir / "requests.log"
        request_log.unlink(missing_ok=True)

        window = self._open_window(launch, pods)
        result = self._h2load(
            launch.port, spec, requests, request_log, timeout_s=max(60.0, 5 * expected_s + 30)
        )
        time.sleep(0.2)  # let the proxy finish closing connections: that work is per request too
        self._close_window(window, launch, pods, result, record)

        record.h2load_command = result.command
        if result.error is not None:
            record.error = result.error
        request_rows = read_request_log(request_log)
        latencies = request_rows.ok_latencies_ms()
        _fill_latency(record, latencies)
        no_status = request_rows.without_status()
        if no_status and spec.http1:
            record.notes.append(
                f"{no_status} HTTP/1.1 responses had no status for h2load. h2load 1.52 does "
                "not count a response whose status line has an empty reason phrase "
                "(`HTTP/1.1 200 `, valid per RFC 9112 section 4), so they show as failed; "
                "sending a reason phrase (`200 OK`) avoids it."
            )
        if scenario.name in CDF_SCENARIOS:
            record.latency_cdf = cdf_points(latencies)
        if scenario.grpc and self.settings.grpc_probe_calls > 0:
            record.grpc_probe = grpc_pod.probe(
                f"{HOST}:{launch.port}",
                self.settings.grpc_probe_calls,
                GRPC_MESSAGE_BYTES,
                timeout_s=10.0,
            )

    def _h2load(
        self, port: int, spec: LoadSpec, requests: int, log_file: Path | None, timeout_s: float
    ) -> H2loadResult:
        binary, core = self.settings.h2load, self.settings.load_core
        if spec.processes == 1:
            argv = h2load_argv(binary, core, port, spec, requests, log_file)
            return run_h2load(argv, self.workdir / "h2load.out", timeout_s)
        # Each process logs to its own file; the logs are joined into `log_file` afterwards.
        logs = [
            None if log_file is None else log_file.with_name(f"{log_file.stem}-{i}.log")
            for i in range(spec.processes)
        ]
        share = requests // spec.processes
        argvs = [h2load_argv(binary, core, port, spec, share, log) for log in logs]
        outputs = [self.workdir / f"h2load-{i}.out" for i in range(spec.processes)]
        result = run_h2load_staggered(argvs, outputs, timeout_s, spec.stagger_s)
        if log_file is not None:
            with open(log_file, "wb") as joined:
                for log in logs:
                    if log is not None and log.exists():
                        joined.write(log.read_bytes())
                        log.unlink()
        return result

    def _open_window(self, launch: Launch, pods: PodSet) -> _Window:
        proxy = tree_usage([launch.process.pid]) if launch.process is not None else None
        return _Window(
            proxy=proxy,
            pods=tree_usage(pods.pids()),
            cores=read_core_times(),
            started=time.monotonic(),
        )

    def _close_window(
        self,
        window: _Window,
        launch: Launch,
        pods: PodSet,
        result: H2loadResult,
        record: RunRecord,
    ) -> None:
        wall = time.monotonic() - window.started
        cores = read_core_times()
        pods_usage = tree_usage(pods.pids())
        ok = result.ok
        record.requests_per_s = result.requests_per_s
        record.ok = ok
        record.failed = max(0, (result.total or record.requests or 0) - ok)
        record.status_5xx = result.status_5xx
        record.wall_s = round(wall, 3)
        pods_cpu = pods_usage.cpu_seconds - window.pods.cpu_seconds
        record.pods_cpu_us_per_request = pods_cpu / ok * 1e6 if ok else None
        if result.client_cpu_s is not None and ok:
            record.client_cpu_us_per_request = result.client_cpu_s / ok * 1e6
        proxy_cpu = 0.0
        if launch.process is not None and window.proxy is not None:
            after = tree_usage([launch.process.pid])
            proxy_cpu = after.cpu_seconds - window.proxy.cpu_seconds
            schedstat = after.schedstat_seconds - window.proxy.schedstat_seconds
            record.proxy_cpu_s = round(proxy_cpu, 3)
            record.proxy_cpu_us_per_request = proxy_cpu / ok * 1e6 if ok else None
            record.proxy_cpu_us_per_request_schedstat = schedstat / ok * 1e6 if ok else None
            record.proxy_core_busy = proxy_cpu / wall if wall > 0 else None
            record.proxy_rss_mib = round(after.rss_bytes / 2**20, 1)
            record.proxy_rss_before_mib = round(window.proxy.rss_bytes / 2**20, 1)
        core = self.settings.proxy_core
        first, last = window.cores.get(core), cores.get(core)
        if first is not None and last is not None and last.total > first.total:
            busy_s = (last.busy - first.busy) / CLOCK_TICKS_PER_SECOND
            total_s = (last.total - first.total) / CLOCK_TICKS_PER_SECOND
            record.foreign_on_proxy_core = round(
                min(1.0, max(0.0, busy_s - proxy_cpu) / total_s), 3
            )
            record.steal_s = round((last.steal - first.steal) / CLOCK_TICKS_PER_SECOND, 3)

    # -- scale from zero ------------------------------------------------------------------------

    def _burst(self, scenario: Scenario, launch: Launch, pods: PodSet, record: RunRecord) -> None:
        """Hold `max_requests` requests on an empty service, then PUT the endpoints."""
        if launch.admin_port is None:
            record.skipped = "no admin port"
            return
        request_log = self.workdir / "requests-burst.log"
        request_log.unlink(missing_ok=True)
        argv = h2load_argv(
            self.settings.h2load,
            self.settings.load_core,
            launch.port,
            scenario.load,
            scenario.max_requests,
            request_log,
        )
        record.h2load_command = shlex.join(argv)
        record.requests = scenario.max_requests
        window = self._open_window(launch, pods)
        output_path = self.workdir / "h2load-burst.out"
        process, output = start_h2load(argv, output_path)
        try:
            time.sleep(self.settings.burst_hold_s)  # the requests arrive and are held
            finished_early = process.poll() is not None
            put_started_us = time.time_ns() // 1000
            # The admin API takes endpoints as "host:port"; the service config has the protocol.
            status, body = _put_endpoints(launch.admin_port, [f"{HOST}:{p}" for p in pods.ports])
            put_done_us = time.time_ns() // 1000
            if status == 404:
                kill_h2load(process)
                record.skipped = (
                    f"admin API answered 404 to PUT {ENDPOINTS_PATH} (not implemented in "
                    "this activator build)"
                )
                return
            result = finish_h2load(process, output, argv, output_path, timeout_s=120.0)
        except BaseException:
            kill_h2load(process)
            raise
        self._close_window(window, launch, pods, result, record)
        requests = read_request_log(request_log)
        record.burst = _burst_figures(requests, put_started_us, put_done_us, status, body)
        record.burst["held_requests_finished_before_put"] = finished_early
        if status is None or not 200 <= status < 300:
            record.error = f"PUT {ENDPOINTS_PATH} answered {status}: {body[:200]}"
        elif finished_early:
            record.notes.append("h2load had finished before the PUT: requests were not held")
        if result.error is not None and record.error is None:
            record.error = result.error
        _fill_latency(record, requests.ok_latencies_ms())


def _fill_latency(record: RunRecord, sorted_latencies_ms: list[float]) -> None:
    record.p50_ms = percentile(sorted_latencies_ms, 50)
    record.p90_ms = percentile(sorted_latencies_ms, 90)
    record.p99_ms = percentile(sorted_latencies_ms, 99)
    record.p999_ms = percentile(sorted_latencies_ms, 99.9)
    record.max_ms = sorted_latencies_ms[-1] if sorted_latencies_ms else None


def _put_endpoints(admin_port: int, endpoints: list[str]) -> tuple[int | None, str]:
    body = json.dumps({"endpoints": endpoints})
    connection = http.client.HTTPConnection(HOST, admin_port, timeout=10.0)
    try:
        connection.request(
            "PUT", ENDPOINTS_PATH, body=body, headers={"content-type": "application/json"}
        )
        response = connection.getresponse()
        return response.status, response.read(2000).decode(errors="replace")
    except OSError as err:
        return None, f"{type(err).__name__}: {err}"
    finally:
        connection.close()


def _burst_figures(
    requests: RequestLog,
    put_started_us: int,
    put_done_us: int,
    status: int | None,
    body: str,
) -> dict[str, Any]:
    """Times from the PUT to the responses, from h2load's per-request log (epoch us)."""
    ends = sorted(s + d for s, d in zip(requests.start_us, requests.duration_us, strict=True))
    ok_ends = requests.ok_completions_us()
    after_put = [(end - put_started_us) / 1000.0 for end in ok_ends]
    return {
        "put_status": status,
        "put_response": body[:200],
        "put_took_ms": round((put_done_us - put_started_us) / 1000.0, 3),
        "responses": len(ends),
        "ok": len(ok_ends),
        "ok_before_put": sum(1 for end in ok_ends if end < put_started_us),
        "put_to_first_ms": round(after_put[0], 3) if after_put else None,
        "put_to_p50_ms": percentile(after_put, 50),
        "put_to_last_ok_ms": round(after_put[-1], 3) if after_put else None,
        "put_to_all_done_ms": round((ends[-1] - put_started_us) / 1000.0, 3) if ends else None,
    }


def _tail(text: str, lines: int = 4) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


def pods_for(scenario: Scenario, target: Target) -> PodKind:
    if scenario.direct_pods is not None and not target.is_proxy:
        return scenario.direct_pods
    return scenario.pods
