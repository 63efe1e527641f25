"""h2load: building its command line, reading its output, and a real run against nghttpd."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.h2load import (
    H2loadResult,
    LoadSpec,
    cdf_points,
    h2load_argv,
    merge_h2load_results,
    parse_h2load_output,
    percentile,
    read_request_log,
    run_h2load,
    run_h2load_staggered,
)
from loadtest.pods import PodSet

from .conftest import LOAD_CORE, require

# Summary lines of h2load (nghttp2 1.52) for a run with failures.
H2LOAD_SUMMARY = """\
finished in 1.86ms, 21516.94 req/s, 4.89MB/s
requests: 20000 total, 112 started, 80 done, 40 succeeded, 19960 failed, 19960 errored, 0 timeout
status codes: 40 2xx, 0 3xx, 0 4xx, 2 5xx
traffic: 12.69KB (12994) total, 1.12KB (1146) headers (space savings 92.61%), 9.77KB (10000) data
"""


def test_summary_is_parsed_into_counts_and_rate() -> None:
    result = H2loadResult(argv=["h2load"])
    parse_h2load_output(H2LOAD_SUMMARY, result)
    assert result.wall_s is not None
    assert abs(result.wall_s - 0.00186) < 1e-9
    assert result.requests_per_s == 21516.94
    assert (result.total, result.succeeded, result.failed, result.errored) == (
        20000,
        40,
        19960,
        19960,
    )
    assert (result.status_2xx, result.status_5xx) == (40, 2)
    assert result.ok == 40
    assert result.not_ok == 19960


def test_argv_carries_every_option_of_the_spec(tmp_path: Path) -> None:
    body = tmp_path / "body.bin"
    spec = LoadSpec(
        path="/x",
        clients=3,
        streams=7,
        rate_per_client=100,
        http1=True,
        data_file=body,
        headers=("te: trailers",),
    )
    argv = h2load_argv("h2load", 1, 8080, spec, 500, tmp_path / "log")
    assert argv[:4] == ["taskset", "-c", "1", "h2load"]
    joined = " ".join(argv)
    for part in ("-n 500", "-c 3", "-m 7", "--rps 100", "--h1", f"-d {body}", "-H te: trailers"):
        assert part in joined
    assert argv[-1] == "http://127.0.0.1:8080/x"


def test_nearest_rank_percentile() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def test_cdf_points_are_monotonic_and_end_at_the_maximum() -> None:
    values = sorted(float(v % 997) for v in range(10_000))
    points = cdf_points(values)
    fractions = [q for q, _ in points]
    latencies = [v for _, v in points]
    assert fractions == sorted(fractions)
    assert latencies == sorted(latencies)
    assert points[0] == (0.0, values[0])
    assert points[-1] == (1.0, values[-1])


def test_request_log_rows_and_failed_streams(tmp_path: Path) -> None:
    log = tmp_path / "requests.log"
    log.write_text("1000\t200\t50\n1010\t-1\t70\n1020\t0\t30\n1030\t503\t20\nbroken line\n")
    rows = read_request_log(log)
    assert rows.status == [200, -1, 0, 503]
    assert rows.ok_latencies_ms() == [0.05]
    assert rows.ok_completions_us() == [1050]
    assert rows.without_status() == 1


def test_real_h2load_against_nghttpd(nghttpd_pods: PodSet, tmp_path: Path) -> None:
    require("h2load")
    log = tmp_path / "requests.log"
    spec = LoadSpec(path="/100b", clients=2, streams=4)
    argv = h2load_argv("h2load", LOAD_CORE, nghttpd_pods.ports[0], spec, 200, log)
    result = run_h2load(argv, tmp_path / "out.txt", timeout_s=60.0)
    assert result.error is None, result.output
    assert result.exit_code == 0
    assert result.total == 200
    assert result.ok == 200
    assert result.client_cpu_s is not None
    rows = read_request_log(log)
    assert len(rows.status) == 200
    assert set(rows.status) == {200}
    assert len(rows.ok_latencies_ms()) == 200


def test_missing_server_is_an_error_not_a_crash(tmp_path: Path) -> None:
    require("h2load")
    from loadtest.procs import PortAllocator

    closed_port = PortAllocator().take()  # nothing listens there
    spec = LoadSpec(path="/", clients=1, streams=1)
    result = run_h2load(
        h2load_argv("h2load", LOAD_CORE, closed_port, spec, 10), tmp_path / "o.txt", 30.0
    )
    assert result.ok == 0


def test_merged_results_add_counts_rates_and_cpu() -> None:
    first = H2loadResult(argv=["h2load", "-n", "10"], exit_code=0, requests_per_s=100.0)
    second = H2loadResult(argv=["h2load", "-n", "10"], exit_code=0, requests_per_s=98.5)
    for result, (total, ok, failed, wall, cpu) in (
        (first, (10, 9, 1, 0.10, 0.02)),
        (second, (10, 10, 0, 0.12, 0.03)),
    ):
        result.total, result.status_2xx, result.failed = total, ok, failed
        result.wall_s, result.client_cpu_s = wall, cpu
    merged = merge_h2load_results([first, second], stagger_s=0.002)
    assert (merged.total, merged.ok, merged.not_ok, merged.failed) == (20, 19, 1, 1)
    assert merged.requests_per_s == 198.5  # side by side: the rates add up
    assert merged.wall_s == 0.12
    assert merged.client_cpu_s == pytest.approx(0.05)
    assert merged.error is None
    assert merged.command == "2 processes started 2 ms apart, each: h2load -n 10"


def test_merged_results_keep_the_first_error_and_unknowns() -> None:
    good = H2loadResult(argv=["h2load"], exit_code=0, requests_per_s=10.0, client_cpu_s=0.1)
    bad = H2loadResult(argv=["h2load"], exit_code=1, error="no h2load summary")
    merged = merge_h2load_results([good, bad], stagger_s=0.0)
    assert merged.exit_code == 1
    assert merged.error == "no h2load summary"
    assert merged.requests_per_s is None
    assert merged.client_cpu_s is None


def test_staggered_processes_against_nghttpd(nghttpd_pods: PodSet, tmp_path: Path) -> None:
    require("h2load")
    spec = LoadSpec(path="/100b", clients=1, streams=4, rate_per_client=100, processes=3)
    logs = [tmp_path / f"requests-{i}.log" for i in range(3)]
    argvs = [h2load_argv("h2load", LOAD_CORE, nghttpd_pods.ports[0], spec, 20, log) for log in logs]
    outputs = [tmp_path / f"out-{i}.txt" for i in range(3)]
    result = run_h2load_staggered(argvs, outputs, timeout_s=60.0, stagger_s=0.002)
    assert result.error is None, result.output
    assert (result.total, result.ok, result.processes) == (60, 60, 3)
    assert result.requests_per_s is not None
    assert result.requests_per_s > 0
    # Every process logged its own requests.
    assert [len(read_request_log(log).start_us) for log in logs] == [20, 20, 20]


def test_a_spread_scenario_counts_every_process_in_its_rate() -> None:
    from loadtest.scenarios import SCENARIOS_BY_NAME, quick_variant

    spread = SCENARIOS_BY_NAME["latency-spread"]
    assert spread.fixed_rate == SCENARIOS_BY_NAME["latency"].fixed_rate == 500
    assert (spread.load.processes, spread.load.clients) == (5, 1)
    assert quick_variant(spread).max_requests == 1000
