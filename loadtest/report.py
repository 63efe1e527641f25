"""Medians over rounds, and RESULTS.md."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from loadtest.bench import RunRecord
from loadtest.scenarios import SCENARIOS_BY_NAME, SOAK

TARGET_ORDER = ("direct", "haproxy", "activator")


@dataclass
class Summary:
    """One scenario x target, over its rounds."""

    scenario: str
    target: str
    rounds: int = 0  # rounds with a measurement
    skipped: str | None = None
    errors: list[str] = field(default_factory=list)
    requests: int | None = None
    requests_per_s: float | None = None
    failed_total: int = 0
    status_5xx_total: int = 0
    requests_total: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    max_ms: float | None = None
    cpu_us: float | None = None
    cpu_us_min: float | None = None
    cpu_us_max: float | None = None
    proxy_core_busy: float | None = None
    foreign_max: float | None = None
    rss_mib: float | None = None
    rss_before_mib: float | None = None
    grpc_ok: int = 0
    grpc_calls: int = 0
    grpc_statuses: dict[str, int] = field(default_factory=dict)
    burst: dict[str, float | None] = field(default_factory=dict)
    # p50 minus the direct run's p50 of the same round: rounds are interleaved, so the pair shares
    # the host's state, and the spread over rounds shows how much of the figure is the host's.
    added_p50_by_round: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(records: Sequence[RunRecord]) -> dict[tuple[str, str], Summary]:
    summaries: dict[tuple[str, str], Summary] = {}
    for record in records:
        key = (record.scenario, record.target)
        summary = summaries.setdefault(key, Summary(record.scenario, record.target))
        if record.skipped is not None:
            summary.skipped = summary.skipped or record.skipped
        if record.error is not None:
            summary.errors.append(f"round {record.round}: {record.error}")
        summary.notes.extend(record.notes)
    direct_p50 = {
        (r.scenario, r.round): r.p50_ms
        for r in records
        if r.target == "direct" and r.error is None and r.p50_ms is not None
    }
    for (scenario, target), summary in summaries.items():
        runs = [
            r
            for r in records
            if r.scenario == scenario and r.target == target and r.requests_per_s is not None
        ]
        runs = [r for r in runs if r.error is None] or runs
        summary.rounds = len(runs)
        if not runs:
            continue
        summary.requests = int(median([r.requests for r in runs]) or 0)
        summary.requests_per_s = median([r.requests_per_s for r in runs])
        summary.failed_total = sum(r.failed or 0 for r in runs)
        summary.status_5xx_total = sum(r.status_5xx or 0 for r in runs)
        summary.requests_total = sum(r.requests or 0 for r in runs)
        summary.p50_ms = median([r.p50_ms for r in runs])
        if target != "direct":
            summary.added_p50_by_round = [
                r.p50_ms - direct_p50[(scenario, r.round)]
                for r in runs
                if r.error is None and r.p50_ms is not None and (scenario, r.round) in direct_p50
            ]
        summary.p99_ms = median([r.p99_ms for r in runs])
        summary.p999_ms = median([r.p999_ms for r in runs])
        summary.max_ms = median([r.max_ms for r in runs])
        cpu = [r.proxy_cpu_us_per_request for r in runs if r.proxy_cpu_us_per_request is not None]
        if cpu:
            summary.cpu_us = statistics.median(cpu)
            summary.cpu_us_min, summary.cpu_us_max = min(cpu), max(cpu)
        summary.proxy_core_busy = median([r.proxy_core_busy for r in runs])
        foreign = [r.foreign_on_proxy_core for r in runs if r.foreign_on_proxy_core is not None]
        summary.foreign_max = max(foreign) if foreign else None
        summary.rss_mib = median([r.proxy_rss_mib for r in runs])
        summary.rss_before_mib = median([r.proxy_rss_before_mib for r in runs])
        for r in runs:
            if r.grpc_probe:
                summary.grpc_ok += int(r.grpc_probe.get("ok", 0))
                summary.grpc_calls += int(r.grpc_probe.get("calls", 0))
                for name, count in r.grpc_probe.get("statuses", {}).items():
                    summary.grpc_statuses[name] = summary.grpc_statuses.get(name, 0) + int(count)
        bursts = [r.burst for r in runs if r.burst]
        for figure in ("put_to_first_ms", "put_to_p50_ms", "put_to_all_done_ms", "ok"):
            summary.burst[figure] = median([b.get(figure) for b in bursts])
    return summaries


# Above this share of failed requests, CPU per *successful* request is skewed by failures.
MANY_FAILED = 0.05


def many_failed(summary: Summary) -> bool:
    return bool(summary.requests_total) and (
        summary.failed_total / summary.requests_total > MANY_FAILED
    )


def fmt(value: float | int | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 1000 and digits <= 1:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def ratio(value: float | None, reference: float | None) -> str:
    if value is None or reference is None or reference == 0:
        return "-"
    return f"{value / reference:.2f}x"


def ordered_targets(names: Sequence[str]) -> list[str]:
    known = [t for t in TARGET_ORDER if t in names]
    return known + sorted(set(names) - set(known))


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def scenario_table(
    scenario: str, targets: Sequence[str], summaries: dict[tuple[str, str], Summary]
) -> list[str]:
    if scenario == "burst":
        return _burst_table(targets, summaries)
    direct = summaries.get((scenario, "direct"))
    haproxy = summaries.get((scenario, "haproxy"))
    grpc = scenario == "grpc"
    soak = scenario == SOAK
    header = (
        "| target | rounds | requests/run | req/s | failed (all rounds) | p50 ms | p99 ms "
        "| +p50 / +p99 vs direct, ms [+p50, each round's pair: min to max] "
        "| proxy CPU us/req [min-max] | CPU vs HAProxy | proxy core busy "
        "| other load on core 0 (max) |"
    )
    if grpc:
        header += " grpc-status 0 (grpcio probe) |"
    if soak:
        header += (
            " p99.9 ms | max ms | proxy RSS after warm-up -> after, MiB "
            "| RSS growth per client connection, KiB |"
        )
    lines = [header, "|---|" + "---:|" * (header.count("|") - 2)]
    columns = header.count("|") - 1
    flagged = False
    for target in targets:
        s = summaries.get((scenario, target))
        if s is None:
            continue
        if s.rounds == 0:
            reason = s.skipped or (s.errors[0] if s.errors else "no successful run")
            label = "n/a" if s.skipped else "ERROR"
            lines.append(f"| {target} | {label}: {_cell(reason[:220])} |" + " |" * (columns - 2))
            continue
        added = "-"
        if target != "direct" and direct is not None and direct.rounds:
            added_p50 = _diff(s.p50_ms, direct.p50_ms)
            added_p99 = _diff(s.p99_ms, direct.p99_ms)
            added = f"{fmt(added_p50, 3)} / {fmt(added_p99, 3)}"
            paired = s.added_p50_by_round
            if len(paired) > 1:
                added += f" [{fmt(min(paired), 3)} to {fmt(max(paired), 3)}]"
        cpu = "-"
        if s.cpu_us is not None:
            cpu = f"**{fmt(s.cpu_us)}** [{fmt(s.cpu_us_min)}-{fmt(s.cpu_us_max)}]"
            if many_failed(s):
                cpu += " (F)"
                flagged = True
        failed = f"{s.failed_total:,} of {s.requests_total:,}"
        if s.requests_total:
            failed += f" ({100 * s.failed_total / s.requests_total:.1f}%"
            failed += f"; {s.status_5xx_total:,} were 5xx)" if s.status_5xx_total else ")"
        busy = "-" if s.proxy_core_busy is None else f"{100 * s.proxy_core_busy:.0f}%"
        foreign = "-" if s.foreign_max is None else f"{100 * s.foreign_max:.0f}%"
        row = (
            f"| {target} | {s.rounds} | {fmt(s.requests)} | {fmt(s.requests_per_s, 0)} "
            f"| {failed} | {fmt(s.p50_ms, 3)} | {fmt(s.p99_ms, 3)} | {added} | {cpu} "
            f"| {ratio(s.cpu_us, haproxy.cpu_us if haproxy else None)} | {busy} | {foreign} |"
        )
        if grpc:
            probe = "-"
            if s.grpc_calls:
                probe = f"{s.grpc_ok} of {s.grpc_calls}"
                others = {k: v for k, v in s.grpc_statuses.items() if k != "OK"}
                if others:
                    probe += " (" + ", ".join(f"{k} {v}" for k, v in sorted(others.items())) + ")"
            row += f" {probe} |"
        if soak:
            row += _soak_cells(s)
        lines.append(row)
        for error in s.errors:
            lines.append(f"| | error in {_cell(error[:300])} |" + " |" * (columns - 2))
    if flagged:
        lines.append("")
        lines.append(FAILED_NOTE)
    return lines


def _soak_cells(s: Summary) -> str:
    rss = growth = "-"
    if s.rss_before_mib is not None and s.rss_mib is not None:
        rss = f"{fmt(s.rss_before_mib, 1)} -> {fmt(s.rss_mib, 1)}"
        clients = SCENARIOS_BY_NAME[SOAK].load.clients
        growth = f"**{fmt((s.rss_mib - s.rss_before_mib) * 1024 / clients, 0)}**"
    return f" {fmt(s.p999_ms, 3)} | {fmt(s.max_ms, 3)} | {rss} | {growth} |"


FAILED_NOTE = (
    f"(F): more than {100 * MANY_FAILED:.0f}% of the requests failed, so CPU per successful "
    "request mostly measures the cost of failing; compare `failed` instead."
)


def _burst_table(targets: Sequence[str], summaries: dict[tuple[str, str], Summary]) -> list[str]:
    header = (
        "| target | rounds | requests | answered OK | failed (all rounds) "
        "| PUT -> first response, ms | PUT -> median response, ms | PUT -> all done, ms "
        "| proxy CPU us/req |"
    )
    lines = [header, "|---|" + "---:|" * (header.count("|") - 2)]
    columns = header.count("|") - 1
    for target in targets:
        s = summaries.get(("burst", target))
        if s is None:
            continue
        if s.rounds == 0:
            reason = s.skipped or (s.errors[0] if s.errors else "no successful run")
            label = "n/a" if s.skipped else "ERROR"
            lines.append(f"| {target} | {label}: {_cell(reason[:220])} |" + " |" * (columns - 2))
            continue
        b = s.burst
        ok = b.get("ok")
        lines.append(
            f"| {target} | {s.rounds} | {fmt(s.requests)} | {fmt(None if ok is None else int(ok))} "
            f"| {s.failed_total:,} | {fmt(b.get('put_to_first_ms'), 1)} "
            f"| {fmt(b.get('put_to_p50_ms'), 1)} | **{fmt(b.get('put_to_all_done_ms'), 1)}** "
            f"| {fmt(s.cpu_us)} |"
        )
        for error in s.errors:
            lines.append(f"| | error in {_cell(error[:300])} |" + " |" * (columns - 2))
    return lines


def _diff(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None:
        return None
    return value - reference


def cpu_summary_table(
    scenarios: Sequence[str], targets: Sequence[str], summaries: dict[tuple[str, str], Summary]
) -> list[str]:
    proxies = [t for t in targets if t != "direct"]
    header = "| scenario | " + " | ".join(f"{t} us/req" for t in proxies)
    header += " | activator / HAProxy |" if {"activator", "haproxy"} <= set(proxies) else " |"
    lines = [header, "|---|" + "---:|" * (header.count("|") - 2)]
    for scenario in scenarios:
        cells = []
        for target in proxies:
            s = summaries.get((scenario, target))
            if s is None or s.rounds == 0:
                cells.append("n/a" if s is not None and s.skipped else "-")
            else:
                cells.append(fmt(s.cpu_us) + (" (F)" if many_failed(s) else ""))
        row = f"| {scenario} | " + " | ".join(cells)
        if {"activator", "haproxy"} <= set(proxies):
            a = summaries.get((scenario, "activator"))
            h = summaries.get((scenario, "haproxy"))
            row += f" | {ratio(a.cpu_us if a else None, h.cpu_us if h else None)}"
        lines.append(row + " |")
    return lines


def throughput_summary_table(
    scenarios: Sequence[str], targets: Sequence[str], summaries: dict[tuple[str, str], Summary]
) -> list[str]:
    header = "| scenario | " + " | ".join(f"{t} req/s (failed)" for t in targets) + " |"
    lines = [header, "|---|" + "---:|" * len(targets)]
    for scenario in scenarios:
        if scenario == "burst":
            continue
        cells = []
        for target in targets:
            s = summaries.get((scenario, target))
            if s is None or s.rounds == 0:
                cells.append("n/a" if s is not None and s.skipped else "-")
            else:
                cells.append(f"{fmt(s.requests_per_s, 0)} ({s.failed_total:,})")
        lines.append(f"| {scenario} | " + " | ".join(cells) + " |")
    return lines


def render_markdown(meta: dict[str, Any], records: Sequence[RunRecord], plots: list[str]) -> str:
    summaries = summarize(records)
    scenarios = [s["name"] for s in meta["scenarios"]]
    targets = ordered_targets(sorted({r.target for r in records}))
    machine = meta["machine"]
    settings = meta["settings"]
    out: list[str] = ["# Load test results", ""]
    out.append(
        f"{meta['started']} to {meta['finished']} ({meta['duration_s']:.0f} s), produced by "
        f"`{meta['command']}`" + (" (smoke-test size: `--quick`)" if meta.get("quick") else "")
    )
    if meta.get("interrupted"):
        out.append("")
        out.append(f"**Interrupted ({meta['interrupted']}): partial results.**")
    out.append("")
    out.append("## Machine and tools")
    out.append("")
    out.append(
        f"- {machine['nproc']} CPUs ({machine['cpu_model']}), Linux {machine['kernel']}, "
        f"load average {machine['loadavg_start']} at the start, {machine['loadavg_end']} at the end"
    )
    out.append(
        f"- proxy under test pinned alone to core {settings['proxy_core']} (`taskset`); h2load, "
        f"the pods and the harness on core {settings['load_core']}"
    )
    out.append(
        f"- rounds per scenario: {settings['rounds']}; targets interleaved"
        + (" and rotated (A B C, B C A, ...)" if settings["rotate"] else "")
        + f"; a warm-up h2load run before every measured run; closed-loop runs sized to about "
        f"{settings['run_seconds']} s; {meta['pods_per_set']} pods per pod set"
    )
    for name, version in meta["versions"].items():
        out.append(f"- {name}: {version or 'unavailable'}")
    out.append("")
    out.append("## Summary")
    out.append("")
    out.append(
        "Proxy CPU per successful request, microseconds (median over rounds; lower is "
        "better). See *How to read the CPU figure* below."
    )
    out.append("")
    out += cpu_summary_table(scenarios, targets, summaries)
    out.append("")
    if any(many_failed(s) for s in summaries.values() if s.target != "direct"):
        out.append(FAILED_NOTE)
        out.append("")
    out.append("Requests per second (median) and failed requests (sum over rounds):")
    out.append("")
    out += throughput_summary_table(scenarios, targets, summaries)
    out.append("")
    for plot in plots:
        out.append(f"![{plot}]({plot})")
        out.append("")
    out.append("## Scenarios")
    for info in meta["scenarios"]:
        out.append("")
        out.append(f"### `{info['name']}`: {info['summary']}")
        out.append("")
        out.append(info["measures"])
        out.append("")
        out += scenario_table(info["name"], targets, summaries)
        notes = sorted({n for t in targets for n in summaries.get((info["name"], t), _EMPTY).notes})
        for note in notes:
            out.append(f"\nNote: {note}")
    out.append("")
    out.append("## How to read the CPU figure")
    out.append("")
    out.append(
        "*Proxy CPU us/req* is the user+system CPU time of the proxy's whole process tree "
        "(`/proc/PID/stat` utime+stime, plus reaped children), read just before and just after "
        "the measured h2load run, divided by the requests that succeeded. It is the cost of one "
        "request to the proxy, and it holds on a shared, noisy machine where req/s does not: "
        "req/s also depends on h2load and the pods sharing core 1, and on anything else running. "
        "HAProxy is the reference: *CPU vs HAProxy* 2.00x means twice HAProxy's CPU per request. "
        "*proxy core busy* is the proxy's CPU seconds over the run's wall time (100% = core 0 "
        "saturated: then req/s is the proxy's limit). *other load on core 0* is core 0's busy "
        "time (`/proc/stat`) not used by the proxy: other people's work; a high value marks a "
        "disturbed round. Latencies come from h2load `--log-file` (successful requests only). "
        "*+p50 / +p99 vs direct* subtracts the direct run's median figures; the bracket gives, "
        "round by round, the target's p50 minus the direct run's p50 of the same round (rounds "
        "are interleaved, so each pair shares the host's state): its spread is how much the "
        "figure moves with the host. "
        "The clock tick is 10 ms, so CPU figures of runs shorter than a second are coarse."
    )
    out.append("")
    out += _commands_section(meta, records)
    return "\n".join(out) + "\n"


_EMPTY = Summary("", "")


def _commands_section(meta: dict[str, Any], records: Sequence[RunRecord]) -> list[str]:
    out = ["## Commands", ""]
    out.append(
        "`$WORKDIR` is the run's temporary directory (files, configs, logs); ports are picked "
        "free at run time, so they differ between runs."
    )
    out.append("")
    out.append("Pods:")
    out.append("")
    for kind, commands in meta["pod_commands"].items():
        for command in commands:
            out.append(f"- {kind}: `{command}`")
    out.append("")
    out.append("Targets (first measured run of each scenario):")
    out.append("")
    seen: set[tuple[str, str]] = set()
    for record in records:
        key = (record.scenario, record.target)
        if key in seen or (record.proxy_command is None and record.h2load_command is None):
            continue
        seen.add(key)
        out.append(f"- `{record.scenario}` / {record.target}:")
        if record.proxy_command:
            out.append(f"  - proxy: `{record.proxy_command}`")
        if record.h2load_command:
            out.append(f"  - load: `{record.h2load_command}`")
    out.append("")
    out.append(
        "Each warm-up run is the same h2load command with the scenario's warm-up count as `-n` "
        "and without `--log-file`."
    )
    for name, config in meta["configs"].items():
        out.append("")
        out.append(f"`{name}`:")
        out.append("")
        out.append("```")
        out.append(config.rstrip())
        out.append("```")
    return out
