#!/usr/bin/env python3
"""`activator serve --workers 2` against `--workers 1`: req/s with nothing pinned.

Starts 2 nghttpd pods; per round (workers 1 2 1 2 ...) a fresh activator, readiness from its admin
/readyz, an h2load warm-up and a measured run (100 B file, -c 16 -m 10), then SIGTERM (the
supervisor stops its workers). Prints Markdown: req/s per round, the median per worker count and
median(2)/median(1) against the 1.8x target. Exit code 0 also when the target is missed; 1 on an
error: a process did not start, h2load failed, or a request failed (`failed` counts the warm-up's
and the measured run's requests without a 2xx/3xx answer).
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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    # Run as `python3 loadtest/workers_scaling.py`: make the `loadtest` package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.h2load import run_h2load
from loadtest.pods import write_static_files
from loadtest.procs import HOST, PortAllocator, Process, ProcessRegistry, port_accepts

WORKER_COUNTS = (1, 2)
TARGET_RATIO = 1.8
FILE = "/100b"  # written by loadtest.pods.write_static_files


@dataclass(frozen=True)
class RoundResult:
    round: int
    workers: int
    requests_per_s: float
    failed: int


@dataclass(frozen=True)
class Facts:
    nproc: int
    loadavg_before: tuple[float, float, float]
    loadavg_after: tuple[float, float, float]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loadtest/workers_scaling.py", description=__doc__)
    for flag, default, text in (
        ("--rounds", 3, "rounds, each runs 1 then 2 workers"),
        ("--requests", 200_000, "measured requests per run"),
        ("--warmup", 20_000, "warm-up requests per run"),
        ("--clients", 16, "h2load -c"),
        ("--streams", 10, "h2load -m"),
    ):
        parser.add_argument(flag, type=int, default=default, help=f"{text} [%(default)s]")
    parser.add_argument(
        "--timeout", type=float, default=180.0, help="seconds per h2load run [%(default)s]"
    )
    parser.add_argument("--out", type=Path, help="also write the Markdown report to this file")
    return parser


def medians(results: Sequence[RoundResult]) -> dict[int, float]:
    by_workers: dict[int, list[float]] = {}
    for result in results:
        by_workers.setdefault(result.workers, []).append(result.requests_per_s)
    return {workers: statistics.median(rates) for workers, rates in sorted(by_workers.items())}


def ratio(results: Sequence[RoundResult]) -> float | None:
    """median req/s with 2 workers / median req/s with 1 (None if either is missing or 0)."""
    by_workers = medians(results)
    one, two = by_workers.get(1), by_workers.get(2)
    return two / one if one and two is not None else None


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
        "- nothing pinned: the activator, its workers, h2load and 2 nghttpd pods share all cores,"
        " so the load generator takes cycles the second worker would need",
        f"- load: `h2load -n {args.requests} -c {args.clients} -m {args.streams}` to `{FILE}` "
        f"(100 B) after a {args.warmup}-request warm-up, fresh activator per run",
        "",
        "| round | workers | req/s | failed |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r.round} | {r.workers} | {r.requests_per_s:,.0f} | {r.failed} |" for r in results
    ]
    lines += ["", "| workers | median req/s |", "|---|---|"]
    lines += [f"| {w} | {rate:,.0f} |" for w, rate in medians(results).items()]
    lines += ["", f"**median(2) / median(1) = {verdict}**; target >= {TARGET_RATIO}x{met}"]
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


def h2load(port: int, requests: int, args: argparse.Namespace, workdir: Path) -> tuple[float, int]:
    argv = ["h2load", "-n", str(requests), "-c", str(args.clients), "-m", str(args.streams)]
    argv += ["-N", "30s", f"http://{HOST}:{port}{FILE}"]
    result = run_h2load(argv, workdir / f"h2load-{port}-{requests}.txt", args.timeout)
    if result.error is not None or result.exit_code != 0 or result.requests_per_s is None:
        raise RuntimeError(f"{result.command}: {result.error or f'exit code {result.exit_code}'}")
    return result.requests_per_s, result.not_ok


def measure(args: argparse.Namespace, workdir: Path, procs: ProcessRegistry) -> list[RoundResult]:
    ports = PortAllocator()
    write_static_files(docroot := workdir / "www")
    upstreams: list[str] = []
    for index in range(2):
        port = ports.take()
        argv = ["nghttpd", "--no-tls", "-a", HOST, "-d", str(docroot), str(port)]
        name = f"nghttpd-{index + 1}"
        wait_ready(procs.start(name, argv, workdir / f"{name}.log", core=None), port)
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
                _, warmup_failed = h2load(listen, args.warmup, args, workdir)
                rate, failed = h2load(listen, args.requests, args, workdir)
            finally:
                procs.stop(proxy)
            results.append(RoundResult(round_number, workers, rate, warmup_failed + failed))
            print(f"round {round_number}, {workers} worker(s): {rate:,.0f} req/s", file=sys.stderr)
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
