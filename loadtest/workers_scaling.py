#!/usr/bin/env python3
"""`activator serve --workers 2` against `--workers 1`: req/s with nothing pinned.

Starts 2 nghttpd pods; per round (workers 1 2 1 2 ...) a fresh activator, readiness from its admin
/readyz, an h2load warm-up and a measured run (100 B file, -c 16 -m 10), then SIGTERM (the
supervisor stops its workers).

Runs last a fixed time (h2load -D), not a fixed request count (-n). With -n every client sends
its share of the requests, and SO_REUSEPORT spreads 16 connections over 2 workers unevenly (say
10 and 6): the less loaded worker finishes its clients early and then idles while the other ends
the run, so the run's rate measures the busier worker, not the two together (1.64x against 1.97x
with -D, measured on 2 cores). Around the measured run only it reads the wall time and the CPU
time of the activator's process tree (supervisor and workers), of the pods and of h2load.

Prints Markdown: per round req/s, the activator's CPU µs per request, the cores the activator used
and the cores h2load and the pods used (CPU seconds / wall seconds); the medians of these per
worker count; median(2)/median(1) against the 1.8x target; req/s per activator core used with 2
workers against 1 (1.0x: the workers cost each other nothing); and how many of the machine's cores
h2load and the pods took at the 2-worker rate, which the workers could not have. Exit code 0 also
when the target is missed; 1 on an error: a process did not start, h2load failed, or a request
failed (`failed` counts the warm-up's and the measured run's requests without a 2xx/3xx answer).
"""

from __future__ import annotations

import argparse
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
from loadtest.procs import HOST, PortAllocator, Process, ProcessRegistry, port_accepts, tree_usage

WORKER_COUNTS = (1, 2)
TARGET_RATIO = 1.8
FILE = "/100b"  # written by loadtest.pods.write_static_files


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
    workers: int
    requests_per_s: float
    failed: int
    proxy_cpu_us_per_request: float | None  # None: no request completed
    proxy_cores: float  # activator CPU seconds / wall seconds
    load_cores: float  # (h2load + pods) CPU seconds / wall seconds


def round_result(
    round_number: int, workers: int, run: MeasuredRun, warmup_failed: int
) -> RoundResult:
    per_request = run.proxy_cpu_s * 1e6 / run.completed if run.completed else None
    return RoundResult(
        round=round_number,
        workers=workers,
        requests_per_s=run.requests_per_s,
        failed=warmup_failed + run.failed,
        proxy_cpu_us_per_request=per_request,
        proxy_cores=run.proxy_cpu_s / run.wall_s,
        load_cores=(run.h2load_cpu_s + run.pods_cpu_s) / run.wall_s,
    )


@dataclass(frozen=True)
class WorkerMedians:
    """Medians over the rounds of one worker count."""

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
        ("--rounds", 3, "rounds, each runs 1 then 2 workers"),
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


def medians(results: Sequence[RoundResult]) -> dict[int, WorkerMedians]:
    by_workers: dict[int, list[RoundResult]] = {}
    for result in results:
        by_workers.setdefault(result.workers, []).append(result)
    return {
        workers: WorkerMedians(
            requests_per_s=statistics.median(r.requests_per_s for r in rounds),
            proxy_cpu_us_per_request=_median_or_none(r.proxy_cpu_us_per_request for r in rounds),
            proxy_cores=statistics.median(r.proxy_cores for r in rounds),
            load_cores=statistics.median(r.load_cores for r in rounds),
        )
        for workers, rounds in sorted(by_workers.items())
    }


def _median_or_none(values: Iterable[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


def ratio(results: Sequence[RoundResult]) -> float | None:
    """median req/s with 2 workers / median req/s with 1 (None if either is missing or 0)."""
    by_workers = medians(results)
    one, two = by_workers.get(1), by_workers.get(2)
    if one is None or two is None or not one.requests_per_s:
        return None
    return two.requests_per_s / one.requests_per_s


def per_core_ratio(results: Sequence[RoundResult]) -> float | None:
    """req/s per activator core used, 2 workers / 1 (None if either is missing or 0)."""
    by_workers = medians(results)
    one, two = by_workers.get(1), by_workers.get(2)
    one_rate = one.requests_per_proxy_core if one is not None else None
    two_rate = two.requests_per_proxy_core if two is not None else None
    return two_rate / one_rate if one_rate and two_rate is not None else None


def _figure(value: float | None, spec: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def load_sentence(results: Sequence[RoundResult], nproc: int) -> str:
    """The cores h2load and the pods took at the 2-worker rate, and what that left the workers."""
    cores = f"{nproc} core{'' if nproc == 1 else 's'}"
    two = medians(results).get(2)
    if two is None:
        return f"h2load and the pods' share of the {cores} at the 2-worker rate: n/a"
    left = max(0.0, nproc - two.load_cores)
    return (
        f"h2load and the pods used {two.load_cores:.2f} of the {cores} at the 2-worker rate,"
        f" which leaves about {left:.2f} for the workers"
    )


def per_core_line(results: Sequence[RoundResult]) -> str:
    by_workers = medians(results)
    two, one = by_workers.get(2), by_workers.get(1)
    two_rate = two.requests_per_proxy_core if two is not None else None
    one_rate = one.requests_per_proxy_core if one is not None else None
    return (
        f"per activator core used: 2 workers {_figure(two_rate, ',.0f', ' req/s')},"
        f" 1 worker {_figure(one_rate, ',.0f', ' req/s')}"
        f" = {_figure(per_core_ratio(results), '.2f', 'x')}"
    )


def render_report(results: Sequence[RoundResult], facts: Facts, args: argparse.Namespace) -> str:
    def load(values: tuple[float, float, float]) -> str:
        return " ".join(f"{v:.2f}" for v in values)

    scaling = ratio(results)
    # Rounded down, so that a ratio shown as 1.80x has met the 1.8x target.
    verdict = "n/a" if scaling is None else f"{math.floor(scaling * 100) / 100:.2f}x"
    met = "" if scaling is None else (" (met)" if scaling >= TARGET_RATIO else " (missed)")
    lines = [
        "## `--workers 2` against `--workers 1`",
        "",
        f"- machine: nproc {facts.nproc}; load average {load(facts.loadavg_before)} before, "
        f"{load(facts.loadavg_after)} after",
        "- nothing pinned: the activator, its workers, h2load and 2 nghttpd pods share all cores;"
        f" {load_sentence(results, facts.nproc)}",
        f"- load: `h2load -D {args.seconds} -c {args.clients} -m {args.streams}` to `{FILE}` "
        f"(100 B) after a {args.warmup} s warm-up, fresh activator per run; a fixed time, not a "
        "fixed count, so that every worker has work until the end",
        "- CPU over the measured run: the activator's supervisor and workers, h2load and the pods;"
        " cores = CPU seconds / wall seconds",
        "",
        "| round | workers | req/s | failed | activator CPU µs/req | activator cores"
        " | h2load+pods cores |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.round} | {r.workers} | {r.requests_per_s:,.0f} | {r.failed}"
        f" | {_figure(r.proxy_cpu_us_per_request, '.1f')} | {r.proxy_cores:.2f}"
        f" | {r.load_cores:.2f} |"
        for r in results
    ]
    lines += [
        "",
        "| workers | median req/s | median activator CPU µs/req | median activator cores"
        " | median h2load+pods cores |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {w} | {m.requests_per_s:,.0f} | {_figure(m.proxy_cpu_us_per_request, '.1f')}"
        f" | {m.proxy_cores:.2f} | {m.load_cores:.2f} |"
        for w, m in medians(results).items()
    ]
    lines += [
        "",
        f"**median(2) / median(1) = {verdict}**; target >= {TARGET_RATIO}x{met}",
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


def h2load(port: int, seconds: int, args: argparse.Namespace, workdir: Path) -> H2loadResult:
    """A finished h2load run of `seconds` with a summary; raise if it failed or timed out."""
    argv = ["h2load", "-D", str(seconds), "-c", str(args.clients), "-m", str(args.streams)]
    argv += ["-N", "30s", f"http://{HOST}:{port}{FILE}"]
    result = run_h2load(argv, workdir / f"h2load-{port}-{seconds}s.txt", args.timeout)
    if result.error is not None or result.exit_code != 0 or result.requests_per_s is None:
        raise RuntimeError(f"{result.command}: {result.error or f'exit code {result.exit_code}'}")
    return result


def measured_h2load(
    port: int, args: argparse.Namespace, workdir: Path, proxy: Process, pods: Sequence[Process]
) -> MeasuredRun:
    """The measured h2load run, with the CPU the activator, the pods and h2load used during it."""
    pod_pids = [pod.pid for pod in pods]
    # /proc is read outside the timed span, so the scan's own time is not in the wall seconds.
    proxy_before = tree_usage([proxy.pid]).cpu_seconds
    pods_before = tree_usage(pod_pids).cpu_seconds
    started = time.monotonic()
    result = h2load(port, args.seconds, args, workdir)
    wall_s = time.monotonic() - started
    proxy_after = tree_usage([proxy.pid]).cpu_seconds
    pods_after = tree_usage(pod_pids).cpu_seconds
    # run_h2load reaps h2load with wait4, whose rusage is h2load's CPU time alone.
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


def measure(args: argparse.Namespace, workdir: Path, procs: ProcessRegistry) -> list[RoundResult]:
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
    results: list[RoundResult] = []
    for round_number in range(1, args.rounds + 1):
        for workers in WORKER_COUNTS:
            listen, admin = ports.take(), ports.take()
            argv = ["activator", "serve", "--workers", str(workers), "--listen", f"{HOST}:{listen}"]
            name = f"activator-{listen}"
            argv += ["--admin", f"{HOST}:{admin}", *upstreams]
            # Not pinned: the point is to use every core (the harness pins the proxy to one).
            proxy = procs.start(name, argv, workdir / f"{name}.log", core=None)
            try:
                wait_ready(proxy, admin, "/readyz")
                wait_ready(proxy, listen)
                warmup_failed = h2load(listen, args.warmup, args, workdir).not_ok
                run = measured_h2load(listen, args, workdir, proxy, pods)
            finally:
                procs.stop(proxy)
            result = round_result(round_number, workers, run, warmup_failed)
            results.append(result)
            print(
                f"round {round_number}, {workers} worker(s): {result.requests_per_s:,.0f} req/s,"
                f" activator {result.proxy_cores:.2f} cores, h2load+pods {result.load_cores:.2f}",
                file=sys.stderr,
            )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
