"""loadtest/workers_scaling.py: its arguments, medians, ratios and report; no benchmark is run."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

import pytest

from loadtest import workers_scaling
from loadtest.h2load import H2loadResult
from loadtest.procs import ProcessRegistry, TreeUsage
from loadtest.workers_scaling import (
    Facts,
    MeasuredRun,
    RoundResult,
    WorkerMedians,
    build_parser,
    measured_h2load,
    medians,
    per_core_ratio,
    ratio,
    render_report,
    round_result,
    wait_ready,
)

# round, workers, req/s, failed, activator CPU µs/req, activator cores, h2load+pods cores.
# The activator cores are req/s x µs/req, as a real run would give.
RESULTS = [
    RoundResult(1, 1, 10_000.0, 0, 100.0, 1.00, 0.30),
    RoundResult(1, 2, 15_000.0, 0, 100.0, 1.50, 0.45),
    RoundResult(2, 1, 12_000.0, 0, 80.0, 0.96, 0.36),
    RoundResult(2, 2, 21_000.0, 0, 80.0, 1.68, 0.40),
    RoundResult(3, 1, 11_000.0, 0, 90.0, 0.99, 0.33),
    RoundResult(3, 2, 19_000.0, 2, 90.0, 1.71, 0.42),
]
FACTS = Facts(nproc=2, loadavg_before=(0.1, 0.2, 0.3), loadavg_after=(1.5, 0.75, 0.5))


def report_of(results: list[RoundResult], args: Iterable[str] = ()) -> str:
    return render_report(results, FACTS, build_parser().parse_args(list(args)))


def test_defaults_match_the_issue() -> None:
    args = build_parser().parse_args([])
    assert (args.rounds, args.seconds, args.warmup) == (3, 8, 2)
    assert (args.clients, args.streams) == (16, 10)
    assert args.timeout > 0
    assert args.out is None


def test_medians_per_worker_count_and_their_ratio() -> None:
    assert medians(RESULTS) == {
        1: WorkerMedians(
            requests_per_s=11_000.0,
            proxy_cpu_us_per_request=90.0,
            proxy_cores=0.99,
            load_cores=0.33,
        ),
        2: WorkerMedians(
            requests_per_s=19_000.0,
            proxy_cpu_us_per_request=90.0,
            proxy_cores=1.68,
            load_cores=0.42,
        ),
    }
    assert ratio(RESULTS) == pytest.approx(19_000 / 11_000)


def test_ratio_needs_both_worker_counts() -> None:
    assert ratio(RESULTS[:1]) is None
    assert ratio([RoundResult(1, 2, 5.0, 0, 50.0, 1.0, 0.5)]) is None
    assert ratio([]) is None


def test_rounds_without_a_completed_request_are_left_out_of_the_cpu_median() -> None:
    results = [
        RoundResult(1, 1, 0.0, 9, None, 0.0, 0.1),
        RoundResult(2, 1, 10_000.0, 0, 40.0, 0.4, 0.2),
        RoundResult(3, 1, 10_000.0, 0, 60.0, 0.6, 0.3),
        RoundResult(1, 2, 0.0, 9, None, 0.0, 0.1),
    ]
    by_workers = medians(results)
    assert by_workers[1].proxy_cpu_us_per_request == pytest.approx(50.0)
    assert by_workers[2].proxy_cpu_us_per_request is None


def test_a_round_is_derived_from_the_cpu_seconds_of_its_measured_run() -> None:
    # 3 s of activator CPU over 2 s for 40,000 requests: 75 µs each, 1.5 cores;
    # h2load 0.5 s + pods 0.3 s over 2 s: 0.4 cores.
    run = MeasuredRun(
        requests_per_s=20_000.0,
        completed=40_000,
        failed=1,
        wall_s=2.0,
        proxy_cpu_s=3.0,
        pods_cpu_s=0.3,
        h2load_cpu_s=0.5,
    )
    result = round_result(4, 2, run, warmup_failed=2)
    assert (result.round, result.workers, result.requests_per_s) == (4, 2, 20_000.0)
    assert result.failed == 3
    assert result.proxy_cpu_us_per_request == pytest.approx(75.0)
    assert result.proxy_cores == pytest.approx(1.5)
    assert result.load_cores == pytest.approx(0.4)


def test_a_run_without_completed_requests_has_no_cpu_per_request() -> None:
    run = MeasuredRun(0.0, 0, 100, 1.0, 0.2, 0.1, 0.1)
    assert round_result(1, 1, run, warmup_failed=0).proxy_cpu_us_per_request is None


def test_measured_run_takes_each_partys_cpu_from_its_own_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    procs = ProcessRegistry()
    try:
        proxy = procs.start("proxy", ["sleep", "60"], tmp_path / "proxy.log", core=None)
        pods = [
            procs.start(f"pod-{i}", ["sleep", "60"], tmp_path / f"pod-{i}.log", core=None)
            for i in (1, 2)
        ]
        # CPU seconds read before and after the run, per set of roots.
        readings = {(proxy.pid,): [1.0, 4.0], tuple(pod.pid for pod in pods): [10.0, 10.5]}

        def fake_tree_usage(roots: Iterable[int]) -> TreeUsage:
            return TreeUsage(readings[tuple(roots)].pop(0), 0.0, 0)

        def fake_h2load(
            port: int, seconds: int, args: argparse.Namespace, workdir: Path
        ) -> H2loadResult:
            assert seconds == args.seconds
            return H2loadResult(
                argv=["h2load"],
                exit_code=0,
                requests_per_s=20_000.0,
                total=40_000,
                done=40_000,
                status_2xx=39_999,
                client_cpu_s=0.7,
            )

        monkeypatch.setattr(workers_scaling, "tree_usage", fake_tree_usage)
        monkeypatch.setattr(workers_scaling, "h2load", fake_h2load)
        args = build_parser().parse_args(["--seconds", "2"])
        run = measured_h2load(1, args, tmp_path, proxy, pods)
    finally:
        procs.stop_all()
    assert readings == {key: [] for key in readings}
    assert (run.proxy_cpu_s, run.pods_cpu_s, run.h2load_cpu_s) == (3.0, 0.5, 0.7)
    assert (run.requests_per_s, run.completed, run.failed) == (20_000.0, 40_000, 1)
    assert run.wall_s >= 0


def test_report_has_rounds_medians_ratio_and_machine_facts() -> None:
    report = report_of(RESULTS, ["--seconds", "5"])
    assert "| 3 | 2 | 19,000 | 2 | 90.0 | 1.71 | 0.42 |" in report
    assert "| 1 | 11,000 | 90.0 | 0.99 | 0.33 |" in report
    assert "| 2 | 19,000 | 90.0 | 1.68 | 0.42 |" in report
    assert "**median(2) / median(1) = 1.72x**; target >= 1.8x (missed)" in report
    assert "nproc 2; load average 0.10 0.20 0.30 before, 1.50 0.75 0.50 after" in report
    assert "`h2load -D 5 -c 16 -m 10`" in report


def test_report_tables_have_the_cpu_columns() -> None:
    lines = report_of(RESULTS).splitlines()
    assert (
        "| round | workers | req/s | failed | activator CPU µs/req | activator cores"
        " | h2load+pods cores |"
    ) in lines
    assert (
        "| workers | median req/s | median activator CPU µs/req | median activator cores"
        " | median h2load+pods cores |"
    ) in lines
    for line in lines:
        if line.startswith("|"):
            assert line.count("|") in (8, 6), line  # 7 or 5 columns, every row complete


def test_report_gives_the_load_generators_cores_instead_of_a_guess() -> None:
    report = report_of(RESULTS)
    # Median h2load+pods cores with 2 workers: 0.42 (of 0.45, 0.40, 0.42); 2 - 0.42 = 1.58.
    assert (
        "h2load and the pods used 0.42 of the 2 cores at the 2-worker rate,"
        " which leaves about 1.58 for the workers"
    ) in report
    assert "so the load generator takes cycles" not in report


def test_per_core_line_follows_the_verdict() -> None:
    # 1 worker: 18,000 req/s on 1.0 core; 2 workers: 30,600 req/s on 1.8 cores = 17,000 per
    # core; 17,000 / 18,000 = 0.944.
    results = [
        RoundResult(1, 1, 18_000.0, 0, 55.6, 1.0, 0.5),
        RoundResult(1, 2, 30_600.0, 0, 58.8, 1.8, 0.6),
    ]
    lines = report_of(results).splitlines()
    verdict = lines.index("**median(2) / median(1) = 1.70x**; target >= 1.8x (missed)")
    per_core = "per activator core used: 2 workers 17,000 req/s, 1 worker 18,000 req/s = 0.94x"
    assert per_core in lines
    assert lines.index(per_core) > verdict
    assert per_core_ratio(results) == pytest.approx(17_000 / 18_000)


def test_per_core_figures_of_the_sample_rounds() -> None:
    # 19,000 / 1.68 = 11,309.5 and 11,000 / 0.99 = 11,111.1 req/s per core; ratio 1.018.
    assert (
        "per activator core used: 2 workers 11,310 req/s, 1 worker 11,111 req/s = 1.02x"
        in report_of(RESULTS)
    )


def test_zero_activator_cores_show_n_a() -> None:
    results = [
        RoundResult(1, 1, 10_000.0, 0, None, 0.0, 0.3),
        RoundResult(1, 2, 18_000.0, 0, 50.0, 1.5, 0.4),
    ]
    report = report_of(results)
    assert "| 1 | 1 | 10,000 | 0 | n/a | 0.00 | 0.30 |" in report
    assert "| 1 | 10,000 | n/a | 0.00 | 0.30 |" in report
    assert "per activator core used: 2 workers 12,000 req/s, 1 worker n/a = n/a" in report
    assert per_core_ratio(results) is None


def test_a_missing_worker_count_shows_n_a() -> None:
    only_one = [RoundResult(1, 1, 10_000.0, 0, 100.0, 1.0, 0.3)]
    report = report_of(only_one)
    assert "per activator core used: 2 workers n/a, 1 worker 10,000 req/s = n/a" in report
    assert "h2load and the pods' share of the 2 cores at the 2-worker rate: n/a" in report
    assert "**median(2) / median(1) = n/a**; target >= 1.8x" in report
    only_two = [RoundResult(1, 2, 18_000.0, 0, 50.0, 1.5, 0.4)]
    assert "2 workers 12,000 req/s, 1 worker n/a = n/a" in report_of(only_two)
    assert "per activator core used: 2 workers n/a, 1 worker n/a = n/a" in report_of([])


def test_a_ratio_just_below_the_target_is_not_shown_as_met() -> None:
    results = [
        RoundResult(1, 1, 10_000.0, 0, 50.0, 0.5, 0.3),
        RoundResult(1, 2, 17_999.0, 0, 50.0, 0.9, 0.4),
    ]
    assert "= 1.79x**; target >= 1.8x (missed)" in report_of(results)
    results = [
        RoundResult(1, 1, 10_000.0, 0, 50.0, 0.5, 0.3),
        RoundResult(1, 2, 18_000.0, 0, 50.0, 0.9, 0.4),
    ]
    assert "= 1.80x**; target >= 1.8x (met)" in report_of(results)


def test_processes_are_stopped_and_an_exited_one_is_reported(tmp_path: Path) -> None:
    procs = ProcessRegistry()
    sleeper = procs.start("sleeper", ["sleep", "60"], tmp_path / "sleeper.log", core=None)
    quitter = procs.start("quitter", ["true"], tmp_path / "quitter.log", core=None)
    with pytest.raises(RuntimeError, match="exited with code 0"):
        wait_ready(quitter, port=1)
    procs.stop_all()
    assert sleeper.popen.returncode is not None
    assert not len(procs)
