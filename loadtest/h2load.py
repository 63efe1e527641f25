"""Running nghttp2's h2load and reading what it reports."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from loadtest.procs import HOST

_UNIT_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


@dataclass(frozen=True)
class LoadSpec:
    """One h2load invocation, minus the request count."""

    path: str
    clients: int  # -c
    streams: int  # -m: concurrent streams per connection (pipelining depth with --h1)
    rate_per_client: int = 0  # --rps, 0 = closed loop
    http1: bool = False  # --h1
    data_file: Path | None = None  # -d: POST this body
    headers: tuple[str, ...] = ()  # -H
    # Separate h2load processes, each with `clients` clients and an equal share of the requests,
    # started `stagger_s` apart. With --rps a process sends what its clients owe every 10 ms, all
    # at once; processes started apart tick at different moments, which spreads the arrivals.
    processes: int = 1
    stagger_s: float = 0.0


def h2load_argv(
    binary: str,
    core: int,
    port: int,
    spec: LoadSpec,
    requests: int,
    log_file: Path | None = None,
) -> list[str]:
    argv = ["taskset", "-c", str(core), binary]
    argv += ["-n", str(requests), "-c", str(spec.clients), "-m", str(spec.streams)]
    # A stalled connection fails its requests after 30 s instead of hanging the run.
    argv += ["-N", "30s"]
    if spec.rate_per_client:
        argv += ["--rps", str(spec.rate_per_client)]
    if spec.http1:
        argv.append("--h1")
    if spec.data_file is not None:
        argv += ["-d", str(spec.data_file)]
    for header in spec.headers:
        argv += ["-H", header]
    if log_file is not None:
        argv += ["--log-file", str(log_file)]
    argv.append(f"http://{HOST}:{port}{spec.path}")
    return argv


@dataclass
class H2loadResult:
    argv: list[str]
    exit_code: int | None = None
    wall_s: float | None = None
    requests_per_s: float | None = None
    total: int = 0
    started: int = 0
    done: int = 0
    succeeded: int = 0
    failed: int = 0
    errored: int = 0
    timeout: int = 0
    status_2xx: int = 0
    status_3xx: int = 0
    status_4xx: int = 0
    status_5xx: int = 0
    client_cpu_s: float | None = None  # h2load's own CPU time (rusage)
    error: str | None = None
    output: str = field(default="", repr=False)
    processes: int = 1  # > 1: merged from that many h2load processes (argv: the first's)
    stagger_s: float = 0.0

    @property
    def ok(self) -> int:
        """Requests answered with a 2xx or 3xx status: what counts as success."""
        return self.status_2xx + self.status_3xx

    @property
    def not_ok(self) -> int:
        return max(0, self.total - self.ok)

    @property
    def command(self) -> str:
        if self.processes > 1:
            return (
                f"{self.processes} processes started {self.stagger_s * 1000:g} ms apart, "
                f"each: {shlex.join(self.argv)}"
            )
        return shlex.join(self.argv)


def merge_h2load_results(results: Sequence[H2loadResult], stagger_s: float) -> H2loadResult:
    """One result for h2load processes that ran side by side: counts and rates add up."""
    merged = H2loadResult(argv=list(results[0].argv), processes=len(results), stagger_s=stagger_s)
    for name in (
        "total",
        "started",
        "done",
        "succeeded",
        "failed",
        "errored",
        "timeout",
        "status_2xx",
        "status_3xx",
        "status_4xx",
        "status_5xx",
    ):
        setattr(merged, name, sum(getattr(result, name) for result in results))
    rates = [result.requests_per_s for result in results]
    merged.requests_per_s = None if None in rates else sum(r for r in rates if r is not None)
    walls = [result.wall_s for result in results]
    merged.wall_s = None if None in walls else max(w for w in walls if w is not None)
    cpus = [result.client_cpu_s for result in results]
    merged.client_cpu_s = None if None in cpus else sum(c for c in cpus if c is not None)
    merged.exit_code = next((r.exit_code for r in results if r.exit_code), results[0].exit_code)
    merged.error = next((r.error for r in results if r.error is not None), None)
    merged.output = "\n".join(result.output for result in results)
    return merged


def run_h2load_staggered(
    argvs: Sequence[Sequence[str]],
    output_paths: Sequence[Path],
    timeout_s: float,
    stagger_s: float,
) -> H2loadResult:
    """Run h2load processes side by side, each started `stagger_s` after the previous one."""
    running: list[tuple[subprocess.Popen[bytes], IO[bytes], Sequence[str], Path]] = []
    try:
        for argv, output_path in zip(argvs, output_paths, strict=True):
            if running:
                time.sleep(stagger_s)
            process, output = start_h2load(argv, output_path)
            running.append((process, output, argv, output_path))
        results = [
            finish_h2load(process, output, argv, output_path, timeout_s)
            for process, output, argv, output_path in running
        ]
    except BaseException:
        for process, output, _, _ in running:
            kill_h2load(process)
            output.close()
        raise
    return merge_h2load_results(results, stagger_s)


def parse_h2load_output(text: str, result: H2loadResult) -> None:
    """Fill `result` from h2load's summary text (nghttp2 1.4x-1.5x format)."""
    finished = re.search(r"finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s", text)
    if finished:
        result.wall_s = float(finished.group(1)) * _UNIT_SECONDS[finished.group(2)]
        result.requests_per_s = float(finished.group(3))
    counts = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored, (\d+) timeout",
        text,
    )
    if counts:
        (
            result.total,
            result.started,
            result.done,
            result.succeeded,
            result.failed,
            result.errored,
            result.timeout,
        ) = (int(x) for x in counts.groups())
    statuses = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if statuses:
        (
            result.status_2xx,
            result.status_3xx,
            result.status_4xx,
            result.status_5xx,
        ) = (int(x) for x in statuses.groups())


def run_h2load(argv: Sequence[str], output_path: Path, timeout_s: float) -> H2loadResult:
    """Run h2load to completion (killed after `timeout_s`) and parse its summary."""
    result = H2loadResult(argv=list(argv))
    with open(output_path, "wb") as output:
        process = subprocess.Popen(
            list(argv), stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        result.exit_code, result.client_cpu_s, timed_out = _wait_with_rusage(process, timeout_s)
    text = output_path.read_text(errors="replace")
    result.output = text
    parse_h2load_output(text, result)
    if timed_out:
        result.error = f"h2load killed after {timeout_s:.0f} s"
    elif result.requests_per_s is None:
        tail = " | ".join(text.strip().splitlines()[-4:])
        result.error = f"no h2load summary (exit code {result.exit_code}): {tail}"
    return result


def start_h2load(
    argv: Sequence[str], output_path: Path
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """Start h2load in the background (for the burst scenario); finish with `finish_h2load`."""
    output = open(output_path, "wb")  # noqa: SIM115 - closed in finish_h2load
    process = subprocess.Popen(
        list(argv), stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    return process, output


def finish_h2load(
    process: subprocess.Popen[bytes],
    output: IO[bytes],
    argv: Sequence[str],
    output_path: Path,
    timeout_s: float,
) -> H2loadResult:
    result = H2loadResult(argv=list(argv))
    try:
        result.exit_code, result.client_cpu_s, timed_out = _wait_with_rusage(process, timeout_s)
    finally:
        output.close()
    text = output_path.read_text(errors="replace")
    result.output = text
    parse_h2load_output(text, result)
    if timed_out:
        result.error = f"h2load killed after {timeout_s:.0f} s"
    elif result.requests_per_s is None:
        result.error = f"no h2load summary (exit code {result.exit_code})"
    return result


def kill_h2load(process: subprocess.Popen[bytes]) -> None:
    """Kill an h2load the harness started (used on interruption)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=5.0)


def _wait_with_rusage(
    process: subprocess.Popen[bytes], timeout_s: float
) -> tuple[int, float | None, bool]:
    """Exit code, CPU seconds (user+system) and whether it was killed for running too long."""
    deadline = time.monotonic() + timeout_s
    timed_out = False
    try:
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                timed_out = True
                os.kill(process.pid, signal.SIGKILL)
                _, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.02)
    except BaseException:
        kill_h2load(process)
        raise
    code = os.waitstatus_to_exitcode(status)
    process.returncode = code  # reaped by wait4: keep Popen from waiting again
    return code, usage.ru_utime + usage.ru_stime, timed_out


@dataclass(frozen=True)
class RequestLog:
    """h2load --log-file rows: start (us since the epoch), HTTP status (-1: failed), duration."""

    start_us: list[int]
    status: list[int]
    duration_us: list[int]

    def without_status(self) -> int:
        """Responses h2load finished but could not read a status code of (logged as 0)."""
        return sum(1 for s in self.status if s == 0)

    def ok_latencies_ms(self) -> list[float]:
        """Sorted latencies of the 2xx/3xx responses, milliseconds."""
        return sorted(
            d / 1000.0 for s, d in zip(self.status, self.duration_us, strict=True) if 200 <= s < 400
        )

    def ok_completions_us(self) -> list[int]:
        """Sorted end-of-response times (us since the epoch) of the 2xx/3xx responses."""
        return sorted(
            st + d
            for st, s, d in zip(self.start_us, self.status, self.duration_us, strict=True)
            if 200 <= s < 400
        )


def read_request_log(path: Path) -> RequestLog:
    starts: list[int] = []
    statuses: list[int] = []
    durations: list[int] = []
    try:
        text = path.read_text()
    except OSError:
        return RequestLog([], [], [])
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        try:
            start, status, duration = int(parts[0]), int(parts[1]), int(parts[2])
        except ValueError:
            continue
        starts.append(start)
        statuses.append(status)
        durations.append(duration)
    return RequestLog(starts, statuses, durations)


def percentile(sorted_values: Sequence[float], percent: float) -> float | None:
    """Nearest-rank percentile of already sorted values (None for no values)."""
    if not sorted_values:
        return None
    rank = -(-percent * len(sorted_values) // 100)  # ceil(p/100 * n)
    index = min(len(sorted_values) - 1, max(0, int(rank) - 1))
    return sorted_values[index]


def cdf_points(sorted_values: Sequence[float], steps: int = 400) -> list[tuple[float, float]]:
    """(fraction, value) pairs enough to draw a CDF: evenly spaced, denser in the tail."""
    n = len(sorted_values)
    if n == 0:
        return []
    fractions = {i / steps for i in range(steps + 1)}
    fractions |= {0.99 + i / 10_000 for i in range(100)}  # p99 .. p99.99 in 0.01 steps
    return [(round(q, 5), sorted_values[min(n - 1, round(q * (n - 1)))]) for q in sorted(fractions)]
