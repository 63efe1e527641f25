"""PNG plots of a run (matplotlib, headless)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadtest.bench import CDF_SCENARIOS, RunRecord
from loadtest.report import Summary, many_failed, ordered_targets

COLOURS = {"direct": "#7f7f7f", "haproxy": "#1f77b4", "activator": "#d62728"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_cdf(records: Sequence[RunRecord], scenario: str, path: Path) -> bool:
    """One line per target and round: the distribution of per-request latency."""
    runs = [r for r in records if r.scenario == scenario and r.latency_cdf]
    if not runs:
        return False
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=110)
    labelled: set[str] = set()
    for target in ordered_targets(sorted({r.target for r in runs})):
        for record in (r for r in runs if r.target == target):
            fractions = [q for q, _ in record.latency_cdf]
            values = [max(v, 0.001) for _, v in record.latency_cdf]
            axes.plot(
                values,
                fractions,
                color=COLOURS.get(target),
                linewidth=1.4,
                alpha=0.85,
                label=None if target in labelled else target,
            )
            labelled.add(target)
    axes.set_xscale("log")
    axes.set_xlabel("latency, ms (log scale)")
    axes.set_ylabel("fraction of requests")
    axes.set_ylim(0, 1.0)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right")
    axes.set_title(f"Latency CDF, scenario `{scenario}` (one line per round)")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def cpu_per_request(
    scenarios: Sequence[str], summaries: dict[tuple[str, str], Summary], path: Path
) -> bool:
    """Grouped bars: proxy CPU us/request per scenario per proxy (log scale)."""
    proxies = ordered_targets(sorted({t for _, t in summaries if t != "direct"}))
    shown = [
        s
        for s in scenarios
        if any((summaries.get((s, p)) or Summary(s, p)).cpu_us for p in proxies)
    ]
    if not shown or not proxies:
        return False
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(9, 4.5), dpi=110)
    width = 0.8 / len(proxies)
    for index, proxy in enumerate(proxies):
        xs: list[float] = []
        heights: list[float] = []
        flags: list[bool] = []
        for position, scenario in enumerate(shown):
            summary = summaries.get((scenario, proxy))
            if summary is not None and summary.cpu_us:
                xs.append(position + (index - (len(proxies) - 1) / 2) * width)
                heights.append(summary.cpu_us)
                flags.append(many_failed(summary))
        bars = axes.bar(xs, heights, width=width, label=proxy, color=COLOURS.get(proxy))
        for bar, flagged in zip(bars, flags, strict=True):
            if flagged:  # skewed by failures: hatched, and "(F)" as in the tables
                bar.set_hatch("//")
        axes.bar_label(
            bars,
            labels=[
                (f"{h:,.0f}" if h >= 10 else f"{h:.1f}") + (" (F)" if f else "")
                for h, f in zip(heights, flags, strict=True)
            ],
            fontsize=8,
            padding=2,
        )
    axes.set_yscale("log")
    # Bars on a log axis start at the bottom of the axis: pin it to a power of ten below the
    # smallest bar so that bar lengths compare.
    smallest = min(
        (s.cpu_us for s in summaries.values() if s.target != "direct" and s.cpu_us), default=1.0
    )
    axes.set_ylim(bottom=10 ** math.floor(math.log10(max(smallest, 0.01))))
    axes.set_xticks(range(len(shown)), shown)
    axes.set_ylabel("proxy CPU per request, us (log scale)")
    axes.set_title(
        "Proxy CPU per successful request (median of rounds; lower is better)\n"
        "(F), hatched: more than 5% of requests failed",
        fontsize=10,
    )
    axes.grid(True, axis="y", which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def write_plots(
    records: Sequence[RunRecord],
    scenarios: Sequence[str],
    summaries: dict[tuple[str, str], Summary],
    out_dir: Path,
) -> tuple[list[str], str | None]:
    """The PNG file names written into `out_dir`, and why none were, if so."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return [], "matplotlib is not installed (pip install matplotlib): no plots"
    written: list[str] = []
    for scenario in CDF_SCENARIOS:
        name = f"latency-cdf-{scenario}.png"
        if scenario in scenarios and latency_cdf(records, scenario, out_dir / name):
            written.append(name)
    if cpu_per_request(scenarios, summaries, out_dir / "cpu-per-request.png"):
        written.append("cpu-per-request.png")
    return written, None
