"""Medians over rounds, the Markdown tables, burst figures and path sanitising."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loadtest.bench import RunRecord, _burst_figures
from loadtest.h2load import RequestLog
from loadtest.report import render_markdown, scenario_table, summarize


def _record(
    target: str,
    round_number: int,
    cpu: float | None,
    rps: float,
    failed: int = 0,
    scenario: str = "small",
    **figures: Any,
) -> RunRecord:
    latencies: dict[str, Any] = {"p50_ms": 1.0 + round_number, "p99_ms": 5.0 + round_number}
    return RunRecord(
        scenario=scenario,
        target=target,
        round=round_number,
        requests=1000,
        requests_per_s=rps,
        ok=1000 - failed,
        failed=failed,
        proxy_cpu_us_per_request=cpu,
        **(latencies | figures),
    )


RECORDS = [
    _record("direct", 1, None, 9000.0),
    _record("direct", 2, None, 11000.0),
    _record("direct", 3, None, 10000.0),
    _record("haproxy", 1, 10.0, 5000.0),
    _record("haproxy", 2, 8.0, 5000.0),
    _record("haproxy", 3, 9.0, 5000.0, failed=3),
    _record("activator", 1, 100.0, 1000.0),
    _record("activator", 2, 90.0, 1000.0),
    RunRecord(scenario="small", target="activator", round=3, error="activator did not start"),
]


def test_medians_ignore_failed_rounds_and_sum_failures() -> None:
    summaries = summarize(RECORDS)
    haproxy = summaries[("small", "haproxy")]
    assert haproxy.rounds == 3
    assert haproxy.cpu_us == 9.0
    assert (haproxy.cpu_us_min, haproxy.cpu_us_max) == (8.0, 10.0)
    assert haproxy.failed_total == 3
    assert haproxy.requests_total == 3000
    activator = summaries[("small", "activator")]
    assert activator.rounds == 2
    assert activator.cpu_us == 95.0
    assert activator.errors == ["round 3: activator did not start"]
    assert summaries[("small", "direct")].requests_per_s == 10000.0


def test_soak_table_reports_rss_growth_per_client_connection_and_the_tail() -> None:
    """16 client connections; RSS 50.0 -> 66.0 MiB (median over rounds) is 1,024 KiB each."""
    records = [
        _record(
            "activator",
            n,
            None,
            1000.0,
            scenario="soak",
            p999_ms=20.0 + n,
            max_ms=40.0 + n,
            proxy_rss_before_mib=50.0,
            proxy_rss_mib=after,
        )
        for n, after in ((1, 60.0), (2, 66.0), (3, 70.0))
    ]
    table = scenario_table("soak", ["activator"], summarize(records))
    row = table[2].split("|")
    assert table[0].count("|") == table[2].count("|")
    assert row[-5:-1] == [" 22.000 ", " 42.000 ", " 50.0 -> 66.0 ", " **1,024** "]
    assert "RSS" not in scenario_table("small", ["activator"], summarize(records))[0]


def test_table_has_ratios_to_haproxy_and_added_latency() -> None:
    table = "\n".join(
        scenario_table("small", ["direct", "haproxy", "activator"], summarize(RECORDS))
    )
    activator_row = next(line for line in table.splitlines() if line.startswith("| activator |"))
    assert "10.56x" in activator_row  # 95 / 9
    assert "**95.0** [90.0-100.0]" in activator_row
    haproxy_row = next(line for line in table.splitlines() if line.startswith("| haproxy |"))
    assert "0.000 / 0.000" in haproxy_row  # same medians as direct in this data
    assert "3 of 3,000 (0.1%)" in haproxy_row
    assert "error in round 3: activator did not start" in table


def test_added_p50_is_paired_with_the_direct_run_of_the_same_round() -> None:
    """Each round's p50 minus that round's direct p50; a round that failed pairs with nothing."""
    records = [
        _record("direct", 1, None, 500.0, scenario="latency", p50_ms=0.10),
        _record("direct", 2, None, 500.0, scenario="latency", p50_ms=0.30),
        _record("direct", 3, None, 500.0, scenario="latency", p50_ms=0.20),
        _record("activator", 1, 150.0, 500.0, scenario="latency", p50_ms=0.70),
        _record("activator", 2, 150.0, 500.0, scenario="latency", p50_ms=0.60),
        _record("activator", 3, 150.0, 500.0, scenario="latency", p50_ms=0.90),
        RunRecord(scenario="latency", target="haproxy", round=1, error="did not start"),
        _record("haproxy", 2, 30.0, 500.0, scenario="latency", p50_ms=0.50),
    ]
    summaries = summarize(records)
    activator = summaries[("latency", "activator")]
    assert sorted(round(v, 3) for v in activator.added_p50_by_round) == [0.3, 0.6, 0.7]
    assert [round(v, 3) for v in summaries[("latency", "haproxy")].added_p50_by_round] == [0.2]
    table = scenario_table("latency", ["direct", "haproxy", "activator"], summaries)
    row = next(line for line in table if line.startswith("| activator |"))
    # medians: 0.70 - 0.20 = 0.50 added; the rounds' pairs range from 0.30 to 0.70
    assert "0.500 / 0.000 [0.300 to 0.700]" in row
    haproxy_row = next(line for line in table if line.startswith("| haproxy |"))
    assert "[" not in haproxy_row.split("|")[8]  # one pair is no range


def test_skipped_target_is_marked_not_applicable() -> None:
    records = [
        RunRecord(
            scenario="burst",
            target="haproxy",
            round=1,
            skipped="HAProxy has no scale-from-zero mode",
        )
    ]
    table = "\n".join(scenario_table("burst", ["haproxy"], summarize(records)))
    assert "| haproxy | n/a: HAProxy has no scale-from-zero mode |" in table


def test_burst_figures_are_measured_from_the_put() -> None:
    # Four requests started at t=0 (us); answered 1.2 s, 1.25 s and 1.3 s later; one failed.
    log = RequestLog(
        start_us=[0, 0, 0, 0],
        status=[200, 200, 200, -1],
        duration_us=[1_200_000, 1_250_000, 1_300_000, 1_400_000],
    )
    figures = _burst_figures(
        log, put_started_us=1_000_000, put_done_us=1_001_000, status=200, body=""
    )
    assert figures["put_to_first_ms"] == 200.0
    assert figures["put_to_p50_ms"] == 250.0
    assert figures["put_to_last_ok_ms"] == 300.0
    assert figures["put_to_all_done_ms"] == 400.0
    assert figures["ok"] == 3
    assert figures["ok_before_put"] == 0
    assert figures["put_took_ms"] == 1.0


def test_markdown_has_machine_versions_commands_and_plots(tmp_path: Path) -> None:
    meta = {
        "started": "2025-01-01 00:00:00 UTC",
        "finished": "2025-01-01 00:05:00 UTC",
        "duration_s": 300.0,
        "command": "python3 loadtest/run.py",
        "machine": {
            "nproc": 2,
            "cpu_model": "Test CPU",
            "kernel": "6.1",
            "loadavg_start": "0 0 0",
            "loadavg_end": "1 1 1",
        },
        "settings": {
            "rounds": 3,
            "rotate": True,
            "run_seconds": 3.0,
            "proxy_core": 0,
            "load_core": 1,
        },
        "pods_per_set": 2,
        "versions": {"h2load": "h2load nghttp2/1.52.0", "haproxy": "HAProxy version 2.6.12"},
        "scenarios": [{"name": "small", "summary": "100 B", "measures": "overhead"}],
        "pod_commands": {
            "static-h2c": ["taskset -c 1 nghttpd --no-tls -a 127.0.0.1 -d $WORKDIR/www 1"]
        },
        "configs": {"haproxy.cfg (h2c clients)": "global\n    nbthread 1\n"},
    }
    records = [*RECORDS]
    records[3].proxy_command = "taskset -c 0 haproxy -db -f $WORKDIR/haproxy-1.cfg"
    text = render_markdown(meta, records, ["cpu-per-request.png"])
    for expected in (
        "2 CPUs (Test CPU), Linux 6.1",
        "- h2load: h2load nghttp2/1.52.0",
        "| small | 9.0 | 95.0 | 10.56x |",
        "![cpu-per-request.png](cpu-per-request.png)",
        "proxy: `taskset -c 0 haproxy -db -f $WORKDIR/haproxy-1.cfg`",
        "`haproxy.cfg (h2c clients)`:",
    ):
        assert expected in text, expected


def test_cpu_of_runs_with_many_failures_is_flagged() -> None:
    records = [
        _record("haproxy", 1, 30.0, 5000.0, failed=250),
        _record("activator", 1, 40.0, 5000.0, failed=10),
    ]
    table = "\n".join(scenario_table("small", ["haproxy", "activator"], summarize(records)))
    haproxy_row = next(line for line in table.splitlines() if line.startswith("| haproxy |"))
    activator_row = next(line for line in table.splitlines() if line.startswith("| activator |"))
    assert "(F)" in haproxy_row  # 25% failed
    assert "(F)" not in activator_row  # 1% failed
    assert "more than 5% of the requests failed" in table
