#!/usr/bin/env python3
"""Side-by-side load test: no proxy, the activator and HAProxy, on one machine, in one run.

Every scenario runs `--rounds` rounds; in each round every target runs once, in an order rotated
by one per round (A B C, B C A, C A B). A run is: start the proxy pinned alone to core 0, wait
for its port, a warm-up h2load run, the measured h2load run (h2load pinned to core 1 with the
pods), stop the proxy. Measured: req/s, failed requests, latency p50/p99 (h2load --log-file)
and proxy CPU microseconds per request (utime+stime of the proxy's process tree, before and
after, over successful requests). Writes RESULTS.md, results.json and PNG plots.

Scenarios: small, large, latency, latency-spread, h1, grpc, goaway, goaway-demo, burst (see --list).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):
    # Run as `python3 loadtest/run.py`: make the `loadtest` package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest import plots
from loadtest.bench import Bench, RunRecord, Settings
from loadtest.pods import REPO_ROOT, Pods, PodTools, write_static_files
from loadtest.procs import PortAllocator, ProcessRegistry
from loadtest.report import render_markdown, summarize
from loadtest.scenarios import (
    ALL_SCENARIOS,
    DEFAULT_SCENARIOS,
    SCENARIOS_BY_NAME,
    Scenario,
    quick_variant,
)
from loadtest.targets import (
    ACTIVATOR_TEMPLATE_FIELDS,
    DEFAULT_ACTIVATOR_EMPTY_TEMPLATE,
    DEFAULT_ACTIVATOR_TEMPLATE,
    Activator,
    Direct,
    HAProxy,
    LaunchContext,
    Target,
)

LOADTEST_DIR = Path(__file__).resolve().parent
QUICK_OUT_DIR = Path(tempfile.gettempdir()) / "activator-loadtest-quick"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loadtest/run.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(DEFAULT_SCENARIOS),
        help="comma-separated scenarios to run [%(default)s]",
    )
    parser.add_argument(
        "--targets",
        default="direct,haproxy,activator",
        help="comma-separated targets: direct, haproxy, activator [%(default)s]",
    )
    parser.add_argument("--rounds", type=int, help="rounds per scenario [3; 1 with --quick]")
    parser.add_argument(
        "--run-seconds",
        type=float,
        help="closed-loop runs are sized from the warm-up rate to last about this long "
        "[3; 1 with --quick]",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke-test size (about a minute): 1 round, 1 s runs, smaller fixed counts; "
        f"writes to {QUICK_OUT_DIR} unless --out is given",
    )
    parser.add_argument("--no-rotate", action="store_true", help="same target order every round")
    parser.add_argument("--pods", type=int, default=2, help="pods per pod set [%(default)s]")
    parser.add_argument(
        "--activator-cmd",
        default=DEFAULT_ACTIVATOR_TEMPLATE,
        help="command template for the activator [%(default)s]; fields: "
        + ACTIVATOR_TEMPLATE_FIELDS,
    )
    parser.add_argument(
        "--activator-burst-cmd",
        default=DEFAULT_ACTIVATOR_EMPTY_TEMPLATE,
        help="command template for the activator in the burst scenario, started with a "
        "service that has no endpoints [%(default)s]",
    )
    parser.add_argument(
        "--activator-workers", type=int, help="append --workers N to the activator commands"
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=ARGS",
        help="also run the activator with ARGS appended to its commands, as target "
        "activator+LABEL in the same rounds (repeatable), e.g. busy-poll='--busy-poll 20ms'",
    )
    parser.add_argument("--haproxy", default="haproxy", help="HAProxy binary [%(default)s]")
    parser.add_argument("--h2load", default="h2load", help="h2load binary [%(default)s]")
    parser.add_argument("--nghttpd", default="nghttpd", help="nghttpd binary [%(default)s]")
    parser.add_argument("--nginx", default="nginx", help="nginx binary [%(default)s]")
    parser.add_argument("--proxy-core", type=int, default=0, help="core of the proxy [0]")
    parser.add_argument(
        "--load-core", type=int, default=1, help="core of h2load, the pods and the harness [1]"
    )
    parser.add_argument(
        "--idle-wait",
        type=float,
        default=1.0,
        help="before a run, wait up to this many seconds for both cores to be less than "
        "--idle-threshold busy with other work (0: do not wait) [%(default)s]",
    )
    parser.add_argument("--idle-threshold", type=float, default=0.5, help="[%(default)s]")
    parser.add_argument(
        "--start-timeout", type=float, default=30.0, help="seconds for a proxy to start [30]"
    )
    parser.add_argument(
        "--grpc-probe-calls",
        type=int,
        default=200,
        help="grpcio calls per grpc run that check grpc-status (0: none) [%(default)s]",
    )
    parser.add_argument(
        "--burst-hold",
        type=float,
        default=1.0,
        help="burst: seconds between firing the requests and setting the endpoints [1.0]",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help=f"where RESULTS.md, results.json and the PNGs go [{LOADTEST_DIR.name}/]",
    )
    parser.add_argument("--keep-workdir", action="store_true", help="keep configs and logs")
    parser.add_argument(
        "--report-from",
        type=Path,
        metavar="RESULTS_JSON",
        help="run nothing: rewrite RESULTS.md and the plots from a results.json",
    )
    parser.add_argument("--list", action="store_true", help="describe the scenarios and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        for scenario in ALL_SCENARIOS:
            print(f"{scenario.name:12} {scenario.summary}\n{'':12} {scenario.measures}\n")
        return 0
    out_dir: Path = args.out or (QUICK_OUT_DIR if args.quick else LOADTEST_DIR)
    if args.report_from is not None:
        data = json.loads(args.report_from.read_text())
        records = [_record_from_json(r) for r in data["records"]]
        write_outputs(data["meta"], records, out_dir)
        return 0

    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS_BY_NAME]
    if unknown:
        build_parser().error(f"unknown scenario(s) {', '.join(unknown)}; see --list")
    scenarios = [SCENARIOS_BY_NAME[n] for n in names]
    if args.quick:
        scenarios = [quick_variant(s) for s in scenarios]
    target_names = [n.strip() for n in args.targets.split(",") if n.strip()]
    bad_targets = set(target_names) - {"direct", "haproxy", "activator"}
    if bad_targets:
        build_parser().error(f"unknown target(s) {', '.join(sorted(bad_targets))}")
    try:
        variants = [parse_variant(text) for text in args.variant]
    except ValueError as err:
        build_parser().error(str(err))
    if len({label for label, _ in variants}) < len(variants):
        build_parser().error("--variant labels must differ")
    for tool, package in ((args.h2load, "nghttp2-client"), ("taskset", "util-linux")):
        if shutil.which(tool) is None:
            print(f"loadtest: {tool} not found (Debian package {package})", file=sys.stderr)
            return 2
    settings = Settings(
        rounds=args.rounds or (1 if args.quick else 3),
        rotate=not args.no_rotate,
        run_seconds=args.run_seconds or (1.0 if args.quick else 3.0),
        proxy_core=args.proxy_core,
        load_core=args.load_core,
        idle_threshold=args.idle_threshold,
        idle_wait_s=args.idle_wait,
        start_timeout_s=args.start_timeout,
        h2load=args.h2load,
        grpc_probe_calls=args.grpc_probe_calls,
        burst_hold_s=args.burst_hold,
    )
    targets: list[Target] = []
    for name in target_names:
        if name == "direct":
            targets.append(Direct())
        elif name == "haproxy":
            targets.append(HAProxy(args.haproxy))
        else:
            targets.append(
                Activator(args.activator_cmd, args.activator_burst_cmd, args.activator_workers)
            )
    targets += [
        Activator(args.activator_cmd, args.activator_burst_cmd, args.activator_workers, variant)
        for variant in variants
    ]
    return run(args, settings, scenarios, targets, out_dir)


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``LABEL=ARGS`` of ``--variant``: the label and the arguments, split as a shell would."""
    label, sep, args = text.partition("=")
    if not sep or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", label):
        raise ValueError(
            f"--variant {text!r}: expected LABEL=ARGS with a label of a-z, 0-9 and -, "
            "e.g. busy-poll='--busy-poll 20ms'"
        )
    argv = shlex.split(args)
    if not argv:
        raise ValueError(f"--variant {text!r}: no arguments after '='")
    return label, argv


class Interrupted(Exception):
    pass


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def run(
    args: argparse.Namespace,
    settings: Settings,
    scenarios: list[Scenario],
    targets: list[Target],
    out_dir: Path,
) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="activator-loadtest-"))
    registry = ProcessRegistry()
    previous = {
        signum: signal.signal(signum, _raise_interrupted)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    os.sched_setaffinity(0, {settings.load_core})
    started = time.time()
    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "command": shlex.join(["python3", "loadtest/run.py", *sys.argv[1:]]),
        "quick": bool(args.quick),
        "machine": machine_info(),
        "settings": dataclasses.asdict(settings),
        "pods_per_set": args.pods,
        "versions": tool_versions(args, targets),
        "scenarios": [
            {"name": s.name, "summary": s.summary, "measures": s.measures} for s in scenarios
        ],
        "targets": {t.name: t.description for t in targets},
    }
    records: list[RunRecord] = []
    interrupted: str | None = None
    pods = Pods(
        registry,
        PortAllocator(),
        workdir,
        settings.load_core,
        args.pods,
        PodTools(nghttpd=args.nghttpd, nginx=args.nginx),
    )
    try:
        write_static_files(pods.docroot)
        context = LaunchContext(
            registry=registry,
            ports=pods.ports,
            workdir=workdir,
            proxy_core=settings.proxy_core,
            start_timeout_s=settings.start_timeout_s,
        )
        bench = Bench(settings, registry, context, pods, workdir, log=_log)
        print(
            f"loadtest: {len(scenarios)} scenario(s) x {len(targets)} target(s) x "
            f"{settings.rounds} round(s); work directory {workdir}",
            file=sys.stderr,
        )

        def on_record(record: RunRecord) -> None:
            records.append(record)
            _log_record(record)

        bench.run_all(scenarios, targets, on_record)
    except (KeyboardInterrupt, Interrupted) as err:
        interrupted = str(err) or "interrupted"
        print(f"loadtest: interrupted ({interrupted}), stopping everything", file=sys.stderr)
    finally:
        registry.stop_all()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    finished = time.time()
    meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(finished))
    meta["duration_s"] = finished - started
    meta["machine"]["loadavg_end"] = _loadavg()
    meta["pod_commands"] = {str(p.kind): p.commands for p in pods.started() if p.commands}
    meta["configs"] = {name: text for p in pods.started() for name, text in p.configs.items()}
    meta["configs"].update(_proxy_configs(workdir))
    if interrupted:
        meta["interrupted"] = interrupted
    meta, records = sanitize(meta, records, workdir, out_dir)
    if records:
        write_outputs(meta, records, out_dir)
    if args.keep_workdir:
        print(f"loadtest: configs and logs kept in {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 130 if interrupted else 0


def write_outputs(meta: dict[str, Any], records: list[RunRecord], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = summarize(records)
    scenario_names = [s["name"] for s in meta["scenarios"]]
    plot_files, plot_problem = plots.write_plots(records, scenario_names, summaries, out_dir)
    if plot_problem:
        print(f"loadtest: {plot_problem}", file=sys.stderr)
    markdown = render_markdown(meta, records, plot_files)
    (out_dir / "RESULTS.md").write_text(markdown)
    # One line per run: the file stays diffable without the CDF points taking thousands of lines.
    rows = ",\n".join(json.dumps(dataclasses.asdict(r)) for r in records)
    (out_dir / "results.json").write_text(
        f'{{"meta": {json.dumps(meta, indent=1)},\n"records": [\n{rows}\n]}}\n'
    )
    summary_end = markdown.index("## Scenarios") if "## Scenarios" in markdown else None
    print(markdown[markdown.index("## Summary") : summary_end])
    print(f"loadtest: wrote {out_dir / 'RESULTS.md'}, results.json and {len(plot_files)} PNG(s)")


def _record_from_json(data: dict[str, Any]) -> RunRecord:
    fields = {f.name for f in dataclasses.fields(RunRecord)}
    record = RunRecord(**{k: v for k, v in data.items() if k in fields})
    record.latency_cdf = [(float(q), float(v)) for q, v in record.latency_cdf]
    return record


def sanitize(
    meta: dict[str, Any], records: list[RunRecord], workdir: Path, out_dir: Path | None = None
) -> tuple[dict[str, Any], list[RunRecord]]:
    """Replace machine-specific paths in everything written out."""
    replacements = [(str(workdir), "$WORKDIR")]
    if out_dir is not None and not out_dir.resolve().is_relative_to(REPO_ROOT):
        replacements.append((str(out_dir), "$OUT"))
        replacements.append((str(out_dir.resolve()), "$OUT"))
    replacements += [(sys.executable, "python3"), (str(REPO_ROOT), ".")]

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            for old, new in replacements:
                value = value.replace(old, new)
            return value
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, tuple):
            return tuple(clean(v) for v in value)
        if isinstance(value, dict):
            return {clean(k): clean(v) for k, v in value.items()}
        return value

    cleaned = [_record_from_json(clean(dataclasses.asdict(r))) for r in records]
    return clean(meta), cleaned


def machine_info() -> dict[str, Any]:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "loadavg_start": _loadavg(),
    }


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _version(argv: list[str], line: int = 0) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [x.strip() for x in (done.stdout + done.stderr).splitlines() if x.strip()]
    return lines[line] if len(lines) > line else None


def tool_versions(args: argparse.Namespace, targets: list[Target]) -> dict[str, str | None]:
    versions: dict[str, str | None] = {
        "h2load": _version([args.h2load, "--version"]),
        "nghttpd": _version([args.nghttpd, "--version"]),
        "nginx (pods)": _version([args.nginx, "-v"]),
        "python": sys.version.split()[0],
    }
    try:
        import grpc  # type: ignore[import-untyped]

        versions["grpcio (pods)"] = grpc.__version__
    except ImportError:
        versions["grpcio (pods)"] = None
    for target in targets:
        version = target.version()
        if target.is_proxy:
            versions[target.name] = version
    return versions


def _proxy_configs(workdir: Path) -> dict[str, str]:
    """The first proxy config of each kind written in this run (they differ only in ports)."""
    configs: dict[str, str] = {}
    for path in sorted(workdir.glob("haproxy-*.cfg"), key=lambda p: p.stat().st_mtime):
        text = path.read_text()
        frontend = text.split("frontend", 1)[-1].split("backend", 1)[0]
        kind = "h2c clients" if "proto h2\n" in frontend else "HTTP/1.1 clients"
        configs.setdefault(f"haproxy.cfg ({kind})", text)
    for path in sorted(workdir.glob("activator-*.yaml"), key=lambda p: p.stat().st_mtime):
        text = path.read_text()
        if "endpoints: []" in text:
            configs.setdefault("activator config (burst: `{config}`)", text)
    return configs


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _log_record(record: RunRecord) -> None:
    head = f"[{record.scenario} r{record.round}] {record.target:<10}"
    if record.skipped:
        _log(f"{head} n/a: {record.skipped}")
        return
    if record.error and record.requests_per_s is None:
        _log(f"{head} ERROR: {record.error[:400]}")
        return
    cpu = record.proxy_cpu_us_per_request
    line = (
        f"{head} n={record.requests} {record.requests_per_s or 0:9.0f} req/s "
        f"failed={record.failed} p50={_ms(record.p50_ms)} p99={_ms(record.p99_ms)} "
        f"cpu={'-' if cpu is None else f'{cpu:.1f}'}us/req"
    )
    if record.burst:
        line += f" PUT->all done={_ms(record.burst.get('put_to_all_done_ms'))}"
    if record.grpc_probe:
        line += f" grpc-status 0: {record.grpc_probe['ok']}/{record.grpc_probe['calls']}"
    if record.error:
        line += f" ERROR: {record.error[:200]}"
    _log(line)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}ms"


if __name__ == "__main__":
    sys.exit(main())
