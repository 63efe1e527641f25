#!/usr/bin/env python3
"""`activator serve --workers 2` against `--workers 1`: req/s in three placements on 2 cores.

The issue's target is "2 workers on 2 cores >= 1.8x one worker", its baseline one worker pinned to
one core; but h2load and the 2 nghttpd pods must run on the same 2 cores. So every round runs three
setups, in this order, pinned with taskset (the pods live across rounds: every one of their threads
is re-pinned before each run; the workers inherit the supervisor's affinity):

1. `1 alone`, 1 worker alone on core 0: the activator (supervisor and worker) on core 0, h2load and
   the pods on core 1, as loadtest/run.py places the proxy; the issue's baseline.
2. `1 + load`, 1 worker with its load on core 0: the activator, h2load and the pods all on core 0.
3. `2 + load`, 2 workers with their load on cores 0-1: the activator, h2load and the pods all on
   cores 0 and 1.

2 workers / 1 worker alone is the issue's reading. Its worker has a core to itself while the 2
workers share theirs with h2load and the pods, so it is bounded near 2 minus the cores these take.
2 workers / 1 worker with its load compares the whole system on 2 cores with the same system on 1.
Both are held against the 1.8x target.

Per run: a fresh activator, readiness from its admin /readyz, an h2load warm-up and a measured run
(100 B file, -c 16 -m 10), then SIGTERM (the supervisor stops its workers).

Runs last a fixed time (h2load -D), not a fixed request count (-n). With -n every client sends
its share of the requests, and SO_REUSEPORT spreads 16 connections over 2 workers unevenly (say
10 and 6): the less loaded worker finishes its clients early and then idles while the other ends
the run, so the run's rate measures the busier worker, not the two together (1.64x against 1.97x
with -D, measured on 2 cores). Around the measured run only it reads the wall time and the CPU
time of the activator's process tree (supervisor and workers), of the pods and of h2load.

Prints Markdown: per round and setup req/s, the activator's CPU µs per request, the cores the
activator used and the cores h2load and the pods used (CPU seconds / wall seconds); the medians of
these per setup; both ratios against the 1.8x target; and req/s per activator core used with 2
workers against 1 worker alone (1.0x: the workers cost each other nothing). Exit code 0 also when a
target is missed; 1 on an error: cores 0 and 1 are not both available, a process did not start,
h2load failed, or a request failed (`failed` counts the warm-up's and the measured run's requests
without a 2xx/3xx answer).
"""

from __future__ import annotations

import argparse
import enum
import math
import os
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    # Run as `python3 loadtest/workers_scaling.py`: make the `loadtest` package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.h2load import H2loadResult, run_h2load
from loadtest.pods import write_static_files
from loadtest.procs import (
    HOST,
    PortAllocator,
    Process,
    ProcessRegistry,
    pin_threads,
    pinned_argv,
    port_accepts,
    tree_usage,
)

TARGET_RATIO = 1.8
FILE = "/100b"  # written by loadtest.pods.write_static_files


class Setup(enum.Enum):
    """Where one run's processes go; every round runs the members in this order."""

    # label, title, workers, the activator's cores, h2load's and the pods' cores
    ALONE = ("1 alone", "1 worker, alone on core 0", 1, frozenset({0}), frozenset({1}))
    ONE_WITH_LOAD = (
        "1 + load",
        "1 worker, with its load on core 0",
        1,
        frozenset({0}),
        frozenset({0}),
    )
    TWO_WITH_LOAD = (
        "2 + load",
        "2 workers, with their load on cores 0-1",
        2,
        frozenset({0, 1}),
        frozenset({0, 1}),
    )

    def __init__(
        self,
        label: str,
        title: str,
        workers: int,
        proxy_cores: frozenset[int],
        load_cores: frozenset[int],
    ) -> None:
        self.label = label
        self.title = title
        self.workers = workers
        self.proxy_cores = proxy_cores
        self.load_cores = load_cores


REQUIRED_CORES = frozenset[int]().union(*(s.proxy_cores | s.load_cores for s in Setup))


@dataclass(frozen=True)
class MeasuredRun:
    """One measured h2load run and the CPU seconds each party used while it ran."""

    requests_per_s: float
    completed: int  # requests h2load finished ("done")
    failed: int  # requests without a 2xx/3xx answer
    wall_s: float
    proxy_cpu_s: float  # the activator's supervisor and workers
    pods_cpu_s: float
    h2load_cpu_s: float


@dataclass(frozen=True)
class RoundResult:
    round: int
    setup: Setup
    requests_per_s: float
    failed: int
    proxy_cpu_us_per_request: float | None  # None: no request completed
    proxy_cores: float  # activator CPU seconds / wall seconds
    load_cores: float  # (h2load + pods) CPU seconds / wall seconds


def round_result(
    round_number: int, setup: Setup, run: MeasuredRun, warmup_failed: int
) -> RoundResult:
    per_request = run.proxy_cpu_s * 1e6 / run.completed if run.completed else None
    return RoundResult(
        round=round_number,
        setup=setup,
        requests_per_s=run.requests_per_s,
        failed=warmup_failed + run.failed,
        proxy_cpu_us_per_request=per_request,
        proxy_cores=run.proxy_cpu_s / run.wall_s,
        load_cores=(run.h2load_cpu_s + run.pods_cpu_s) / run.wall_s,
    )


@dataclass(frozen=True)
class SetupMedians:
    """Medians over the rounds of one setup."""

    requests_per_s: float
    proxy_cpu_us_per_request: float | None  # None: no round completed a request
    proxy_cores: float
    load_cores: float

    @property
    def requests_per_proxy_core(self) -> float | None:
        return self.requests_per_s / self.proxy_cores if self.proxy_cores > 0 else None


@dataclass(frozen=True)
class Facts:
    nproc: int
    loadavg_before: tuple[float, float, float]
    loadavg_after: tuple[float, float, float]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loadtest/workers_scaling.py", description=__doc__)
    for flag, default, text in (
        ("--rounds", 3, f"rounds, each runs the {len(Setup)} setups"),
        ("--seconds", 8, "seconds per measured run (h2load -D)"),
        ("--warmup", 2, "seconds per warm-up run"),
        ("--clients", 16, "h2load -c"),
        ("--streams", 10, "h2load -m"),
    ):
        parser.add_argument(flag, type=int, default=default, help=f"{text} [%(default)s]")
    parser.add_argument(
        "--timeout", type=float, default=180.0, help="seconds per h2load run [%(default)s]"
    )
    parser.add_argument("--out", type=Path, help="also write the Markdown report to this file")
    return parser


def missing_cores(allowed: Iterable[int]) -> str | None:
    """Why the setups cannot be placed on the cores this process may use (None: they can)."""
    usable = set(allowed)
    if REQUIRED_CORES.issubset(usable):
        return None
    may_use = _cores_text(usable) if usable else "no core"
    return (
        f"needs {len(REQUIRED_CORES)} cores ({_cores_text(REQUIRED_CORES)}) to place the"
        f" setups on; this process may use {may_use}"
    )


def medians(results: Sequence[RoundResult]) -> dict[Setup, SetupMedians]:
    """Medians per setup, in the setups' order; a setup without rounds is left out."""
    by_setup: dict[Setup, list[RoundResult]] = {}
    for result in results:
        by_setup.setdefault(result.setup, []).append(result)
    return {
        setup: SetupMedians(
            requests_per_s=statistics.median(r.requests_per_s for r in rounds),
            proxy_cpu_us_per_request=_median_or_none(r.proxy_cpu_us_per_request for r in rounds),
            proxy_cores=statistics.median(r.proxy_cores for r in rounds),
            load_cores=statistics.median(r.load_cores for r in rounds),
        )
        for setup in Setup
        if (rounds := by_setup.get(setup))
    }


def _median_or_none(values: Iterable[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


def ratio(results: Sequence[RoundResult], baseline: Setup) -> float | None:
    """Median req/s with 2 workers / median req/s of `baseline` (None if either is missing or 0)."""
    by_setup = medians(results)
    base, two = by_setup.get(baseline), by_setup.get(Setup.TWO_WITH_LOAD)
    if base is None or two is None or not base.requests_per_s:
        return None
    return two.requests_per_s / base.requests_per_s


def per_core_ratio(results: Sequence[RoundResult]) -> float | None:
    """req/s per activator core used, 2 workers / 1 worker alone (None if either is missing/0)."""
    by_setup = medians(results)
    one, two = by_setup.get(Setup.ALONE), by_setup.get(Setup.TWO_WITH_LOAD)
    one_rate = one.requests_per_proxy_core if one is not None else None
    two_rate = two.requests_per_proxy_core if two is not None else None
    return two_rate / one_rate if one_rate and two_rate is not None else None


def _figure(value: float | None, spec: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def _cores_text(cores: Iterable[int]) -> str:
    """'core 0', 'cores 0-1' (a contiguous range) or 'cores 0,2'."""
    listed = sorted(cores)
    if len(listed) == 1:
        return f"core {listed[0]}"
    if listed == list(range(listed[0], listed[-1] + 1)):
        return f"cores {listed[0]}-{listed[-1]}"
    return "cores " + ",".join(str(core) for core in listed)


def placement(setup: Setup) -> str:
    """Where the setup's processes run, in words."""
    if setup.proxy_cores == setup.load_cores:
        return f"the activator, h2load and the pods all on {_cores_text(setup.proxy_cores)}"
    return (
        f"the activator on {_cores_text(setup.proxy_cores)},"
        f" h2load and the pods on {_cores_text(setup.load_cores)}"
    )


def verdict_line(results: Sequence[RoundResult], baseline: Setup, name: str) -> str:
    """`**2 workers / NAME = X.XXx**; target ...`: 2 workers against `baseline`, called `name`."""
    scaling = ratio(results, baseline)
    # Rounded down, so that a ratio shown as 1.80x has met the 1.8x target.
    shown = "n/a" if scaling is None else f"{math.floor(scaling * 100) / 100:.2f}x"
    met = "" if scaling is None else (" (met)" if scaling >= TARGET_RATIO else " (missed)")
    return f"**2 workers / {name} = {shown}**; target >= {TARGET_RATIO}x{met}"


def bound_sentence(results: Sequence[RoundResult]) -> str:
    """What the 2 workers' share of h2load and the pods leaves of the ratio to 1 worker alone."""
    two = medians(results).get(Setup.TWO_WITH_LOAD)
    two_cores, one_cores = len(Setup.TWO_WITH_LOAD.proxy_cores), len(Setup.ALONE.proxy_cores)
    if two is None:
        bound = (
            f"({two_cores} - the cores h2load and the pods use) / {one_cores}:"
            " n/a without a 2-worker run"
        )
    else:
        load, left = two.load_cores, max(0.0, two_cores - two.load_cores)
        bound = (
            f"({two_cores} - {load:.2f}) / {one_cores} = {left / one_cores:.2f}x,"
            f" {load:.2f} being the cores h2load and the pods used at the 2-worker rate"
        )
    return (
        f"This baseline's worker has {_cores_text(Setup.ALONE.proxy_cores)} to itself while the"
        f" 2 workers share {_cores_text(Setup.TWO_WITH_LOAD.proxy_cores)} with h2load and the"
        f" pods, so on {two_cores} cores this ratio is bounded by about {bound}."
    )


def per_core_line(results: Sequence[RoundResult]) -> str:
    by_setup = medians(results)
    two, one = by_setup.get(Setup.TWO_WITH_LOAD), by_setup.get(Setup.ALONE)
    two_rate = two.requests_per_proxy_core if two is not None else None
    one_rate = one.requests_per_proxy_core if one is not None else None
    return (
        f"per activator core used: 2 workers {_figure(two_rate, ',.0f', ' req/s')},"
        f" 1 worker alone {_figure(one_rate, ',.0f', ' req/s')}"
        f" = {_figure(per_core_ratio(results), '.2f', 'x')}"
    )


def _setup_bullets() -> list[str]:
    return [
        f"  - `{setup.label}`: {setup.title}: {placement(setup)}"
        + (
            " (the issue's one worker pinned to one core, placed as loadtest/run.py places the"
            " proxy)"
            if setup is Setup.ALONE
            else ""
        )
        for setup in Setup
    ]


def _tables(results: Sequence[RoundResult]) -> list[str]:
    lines = [
        "| round | setup | workers | req/s | failed | activator CPU µs/req | activator cores"
        " | h2load+pods cores |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.round} | {r.setup.label} | {r.setup.workers} | {r.requests_per_s:,.0f}"
        f" | {r.failed} | {_figure(r.proxy_cpu_us_per_request, '.1f')} | {r.proxy_cores:.2f}"
        f" | {r.load_cores:.2f} |"
        for r in results
    ]
    lines += [
        "",
        "| setup | workers | median req/s | median activator CPU µs/req | median activator cores"
        " | median h2load+pods cores |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {s.label} | {s.workers} | {m.requests_per_s:,.0f}"
        f" | {_figure(m.proxy_cpu_us_per_request, '.1f')} | {m.proxy_cores:.2f}"
        f" | {m.load_cores:.2f} |"
        for s, m in medians(results).items()
    ]
    return lines


def render_report(results: Sequence[RoundResult], facts: Facts, args: argparse.Namespace) -> str:
    def load(values: tuple[float, float, float]) -> str:
        return " ".join(f"{v:.2f}" for v in values)

    lines = [
        "## `--workers 2` against `--workers 1`",
        "",
        f"- machine: nproc {facts.nproc}; load average {load(facts.loadavg_before)} before, "
        f"{load(facts.loadavg_after)} after",
        "- setups, run in this order every round, pinned with `taskset -c` (the pods' threads are"
        " re-pinned before each run; the workers inherit the supervisor's cores):",
        *_setup_bullets(),
        f"- load: `h2load -D {args.seconds} -c {args.clients} -m {args.streams}` to `{FILE}` "
        f"(100 B) after a {args.warmup} s warm-up, fresh activator per run; a fixed time, not a "
        "fixed count, so that every worker has work until the end",
        "- CPU over the measured run: the activator's supervisor and workers, h2load and the pods;"
        " cores = CPU seconds / wall seconds",
        "",
        *_tables(results),
        "",
        f"{verdict_line(results, Setup.ALONE, '1 worker alone')}. {bound_sentence(results)}",
        "",
        f"{verdict_line(results, Setup.ONE_WITH_LOAD, '1 worker with its load')}. The whole system (activator, h2load and"
        " the pods) on 2 cores against the same system on 1 core.",
        "",
        per_core_line(results),
    ]
    return "\n".join(lines) + "\n"


def wait_ready(process: Process, port: int, path: str | None = None) -> None:
    """Until `port` accepts (and GET `path` answers 2xx, if given); raise if it exits or stalls."""
    deadline = time.monotonic() + 30
    while process.running() and time.monotonic() < deadline:
        try:
            if path is None and port_accepts(port):
                return
            if path is not None:
                with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=1):
                    return  # urlopen raises HTTPError (an OSError) for the 503 "not ready"
        except OSError:
            pass
        time.sleep(0.1)
    code = process.popen.poll()
    state = f"exited with code {code}" if code is not None else "timeout"
    raise RuntimeError(f"{process.argv!r}: port {port} not ready ({state})")


def h2load(
    port: int, seconds: int, args: argparse.Namespace, workdir: Path, cores: frozenset[int]
) -> H2loadResult:
    """A finished h2load run of `seconds` on `cores` with a summary; raise if it failed."""
    argv = ["h2load", "-D", str(seconds), "-c", str(args.clients), "-m", str(args.streams)]
    argv += ["-N", "30s", f"http://{HOST}:{port}{FILE}"]
    output = workdir / f"h2load-{port}-{seconds}s.txt"
    result = run_h2load(pinned_argv(argv, cores), output, args.timeout)
    if result.error is not None or result.exit_code != 0 or result.requests_per_s is None:
        raise RuntimeError(f"{result.command}: {result.error or f'exit code {result.exit_code}'}")
    return result


def measured_h2load(
    port: int,
    args: argparse.Namespace,
    workdir: Path,
    proxy: Process,
    pods: Sequence[Process],
    cores: frozenset[int],
) -> MeasuredRun:
    """The measured h2load run, with the CPU the activator, the pods and h2load used during it."""
    pod_pids = [pod.pid for pod in pods]
    # /proc is read outside the timed span, so the scan's own time is not in the wall seconds.
    proxy_before = tree_usage([proxy.pid]).cpu_seconds
    pods_before = tree_usage(pod_pids).cpu_seconds
    started = time.monotonic()
    result = h2load(port, args.seconds, args, workdir, cores)
    wall_s = time.monotonic() - started
    proxy_after = tree_usage([proxy.pid]).cpu_seconds
    pods_after = tree_usage(pod_pids).cpu_seconds
    # run_h2load reaps h2load with wait4 (taskset execs h2load, so it is the same process),
    # whose rusage is h2load's CPU time alone.
    if result.client_cpu_s is None or result.requests_per_s is None:
        raise RuntimeError(f"{result.command}: no CPU time or rate for h2load")
    return MeasuredRun(
        requests_per_s=result.requests_per_s,
        completed=result.done,
        failed=result.not_ok,
        wall_s=wall_s,
        proxy_cpu_s=proxy_after - proxy_before,
        pods_cpu_s=pods_after - pods_before,
        h2load_cpu_s=result.client_cpu_s,
    )


@dataclass(frozen=True)
class Bench:
    """What every run of one invocation shares: options, work directory, ports, pods."""

    args: argparse.Namespace
    workdir: Path
    procs: ProcessRegistry
    ports: PortAllocator
    pods: tuple[Process, ...]
    upstreams: tuple[str, ...]  # the activator's --upstream arguments for the pods


def start_bench(args: argparse.Namespace, workdir: Path, procs: ProcessRegistry) -> Bench:
    """The 2 nghttpd pods, started once and ready (not pinned: each run re-pins them)."""
    ports = PortAllocator()
    write_static_files(docroot := workdir / "www")
    upstreams: list[str] = []
    pods: list[Process] = []
    for index in range(2):
        port = ports.take()
        argv = ["nghttpd", "--no-tls", "-a", HOST, "-d", str(docroot), str(port)]
        name = f"nghttpd-{index + 1}"
        pods.append(pod := procs.start(name, argv, workdir / f"{name}.log", core=None))
        wait_ready(pod, port)
        upstreams += ["--upstream", f"h2c://{HOST}:{port}"]
    return Bench(args, workdir, procs, ports, tuple(pods), tuple(upstreams))


def run_setup(bench: Bench, round_number: int, setup: Setup) -> RoundResult:
    """One run of `setup`: pods re-pinned, a fresh pinned activator, warm-up, measured run."""
    for pod in bench.pods:
        pin_threads(pod.pid, setup.load_cores)
    listen, admin = bench.ports.take(), bench.ports.take()
    argv = ["activator", "serve", "--workers", str(setup.workers), "--listen", f"{HOST}:{listen}"]
    argv += ["--admin", f"{HOST}:{admin}", *bench.upstreams]
    name = f"activator-{listen}"
    # The workers are forked by the supervisor and inherit its cores.
    proxy = bench.procs.start(name, argv, bench.workdir / f"{name}.log", core=setup.proxy_cores)
    try:
        wait_ready(proxy, admin, "/readyz")
        wait_ready(proxy, listen)
        warmup = h2load(listen, bench.args.warmup, bench.args, bench.workdir, setup.load_cores)
        run = measured_h2load(
            listen, bench.args, bench.workdir, proxy, bench.pods, setup.load_cores
        )
    finally:
        bench.procs.stop(proxy)
    return round_result(round_number, setup, run, warmup.not_ok)


def measure(args: argparse.Namespace, workdir: Path, procs: ProcessRegistry) -> list[RoundResult]:
    bench = start_bench(args, workdir, procs)
    results: list[RoundResult] = []
    for round_number in range(1, args.rounds + 1):
        for setup in Setup:
            result = run_setup(bench, round_number, setup)
            results.append(result)
            print(
                f"round {round_number}, {setup.label}: {result.requests_per_s:,.0f} req/s,"
                f" activator {result.proxy_cores:.2f} cores, h2load+pods {result.load_cores:.2f}",
                file=sys.stderr,
            )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = missing_cores(os.sched_getaffinity(0))
    if problem is not None:
        print(f"workers_scaling: {problem}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="activator-workers-") as tmp:
        procs = ProcessRegistry()
        try:
            results = measure(args, Path(tmp), procs)
        except (RuntimeError, OSError) as err:
            print(f"workers_scaling: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("workers_scaling: interrupted", file=sys.stderr)
            return 130
        finally:
            procs.stop_all()
    facts = Facts(len(os.sched_getaffinity(0)), before, os.getloadavg())
    report = render_report(results, facts, args)
    print(report, end="")
    if args.out is not None:
        args.out.write_text(report)
    failed = sum(result.failed for result in results)
    if failed:
        print(f"workers_scaling: {failed} requests failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
