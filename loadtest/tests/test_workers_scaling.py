"""loadtest/workers_scaling.py: its arguments, medians, ratio and report; no benchmark is run."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.procs import ProcessRegistry
from loadtest.workers_scaling import (
    Facts,
    RoundResult,
    build_parser,
    medians,
    ratio,
    render_report,
    wait_ready,
)

RESULTS = [
    RoundResult(1, 1, 10_000.0, 0),
    RoundResult(1, 2, 15_000.0, 0),
    RoundResult(2, 1, 12_000.0, 0),
    RoundResult(2, 2, 21_000.0, 0),
    RoundResult(3, 1, 11_000.0, 0),
    RoundResult(3, 2, 19_000.0, 2),
]
FACTS = Facts(nproc=2, loadavg_before=(0.1, 0.2, 0.3), loadavg_after=(1.5, 0.75, 0.5))


def test_defaults_match_the_issue() -> None:
    args = build_parser().parse_args([])
    assert (args.rounds, args.requests, args.warmup) == (3, 200_000, 20_000)
    assert (args.clients, args.streams) == (16, 10)
    assert args.timeout > 0
    assert args.out is None


def test_medians_per_worker_count_and_their_ratio() -> None:
    assert medians(RESULTS) == {1: 11_000.0, 2: 19_000.0}
    assert ratio(RESULTS) == pytest.approx(19_000 / 11_000)


def test_ratio_needs_both_worker_counts() -> None:
    assert ratio(RESULTS[:1]) is None
    assert ratio([RoundResult(1, 2, 5.0, 0)]) is None
    assert ratio([]) is None


def test_report_has_rounds_medians_ratio_and_machine_facts() -> None:
    report = render_report(RESULTS, FACTS, build_parser().parse_args(["--requests", "1000"]))
    assert "| 3 | 2 | 19,000 | 2 |" in report
    assert "| 1 | 11,000 |" in report
    assert "| 2 | 19,000 |" in report
    assert "**median(2) / median(1) = 1.72x**; target >= 1.8x (missed)" in report
    assert "nproc 2; load average 0.10 0.20 0.30 before, 1.50 0.75 0.50 after" in report
    assert "`h2load -n 1000 -c 16 -m 10`" in report


def test_a_ratio_just_below_the_target_is_not_shown_as_met() -> None:
    results = [RoundResult(1, 1, 10_000.0, 0), RoundResult(1, 2, 17_999.0, 0)]
    report = render_report(results, FACTS, build_parser().parse_args([]))
    assert "= 1.79x**; target >= 1.8x (missed)" in report
    results = [RoundResult(1, 1, 10_000.0, 0), RoundResult(1, 2, 18_000.0, 0)]
    report = render_report(results, FACTS, build_parser().parse_args([]))
    assert "= 1.80x**; target >= 1.8x (met)" in report


def test_processes_are_stopped_and_an_exited_one_is_reported(tmp_path: Path) -> None:
    procs = ProcessRegistry()
    sleeper = procs.start("sleeper", ["sleep", "60"], tmp_path / "sleeper.log", core=None)
    quitter = procs.start("quitter", ["true"], tmp_path / "quitter.log", core=None)
    with pytest.raises(RuntimeError, match="exited with code 0"):
        wait_ready(quitter, port=1)
    procs.stop_all()
    assert sleeper.popen.returncode is not None
    assert not len(procs)
