"""``activator serve --workers 2``: a supervisor and two SO_REUSEPORT worker processes, driven with
real clients (h2load, http.client) against real demo pods.

Checked: both workers take connections and the supervisor's status, metrics and concurrency
report add up to what the clients sent; a pod's container_concurrency holds over both workers;
endpoints PUT to the supervisor release requests queued in both workers and reach a worker
restarted later; a killed worker is restarted and serves again; the autoscaler hears of a
queued request from the supervisor alone; SIGTERM drains and exits 0.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import (
    LOOPBACK,
    REPO_ROOT,
    ActivatorProcess,
    PodHandle,
    h2load,
    h2load_command,
    http_get_json,
    parse_h2load,
    require_tool,
    subprocess_env,
)

from activator.io.workers import merge_metrics, merge_reports, merge_service_status

WORKERS = ("--workers", "2")


# -- helpers ---------------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` past ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def status(proc: ActivatorProcess) -> dict[str, Any]:
    document: dict[str, Any] = http_get_json(proc.admin_port, "/v1/services")
    return document


def admin_request(
    proc: ActivatorProcess, method: str, path: str, body: object = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(LOOPBACK, proc.admin_port, timeout=10)
    try:
        payload = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=payload, headers={"content-type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def metric_sum(text: str, sample_name: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == sample_name
    )


def metrics_text(proc: ActivatorProcess, accept: str = "") -> str:
    conn = http.client.HTTPConnection(LOOPBACK, proc.admin_port, timeout=10)
    try:
        conn.request("GET", "/metrics", headers={"Accept": accept} if accept else {})
        response = conn.getresponse()
        assert response.status == 200
        return response.read().decode()
    finally:
        conn.close()


def write_config(
    tmp_path: Path,
    *,
    endpoints: list[str],
    container_concurrency: int = 0,
    queue_timeout: str = "30s",
    push_url: str | None = None,
) -> Path:
    """A one-service configuration (``listen``/``admin`` are overridden by the fixture's flags)."""
    lines = [
        "listen: 127.0.0.1:0",
        "admin: 127.0.0.1:0",
        "services:",
        "  - name: svc",
        '    hosts: ["*"]',
        "    upstream: h2c",
        f"    endpoints: {json.dumps(endpoints)}",
        f"    container_concurrency: {container_concurrency}",
        f"    queue: {{max_requests: 1000, max_bytes: 1MiB, timeout: {queue_timeout}}}",
    ]
    if push_url is not None:
        lines += ["autoscaler:", f"  push_url: {push_url}", "  interval: 30s"]
    path = tmp_path / "activator.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def endpoint(pod: PodHandle) -> str:
    return f"{LOOPBACK}:{pod.port}"


def worker_pids(proc: ActivatorProcess) -> list[int]:
    return [int(worker["pid"]) for worker in status(proc)["workers"]]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- the merges, on their own ----------------------------------------------------------------------------


def test_merged_metrics_add_series_and_keep_pod_levels_and_ages_as_maxima() -> None:
    worker = (
        "# HELP activator_requests_total Requests.\n"
        "# TYPE activator_requests_total counter\n"
        'activator_requests_total{{code="200",service="s"}} {requests}\n'
        "# HELP activator_requests_created Requests.\n"
        "# TYPE activator_requests_created gauge\n"
        'activator_requests_created{{code="200",service="s"}} {created}\n'
        "# HELP activator_queue_wait_seconds Wait.\n"
        "# TYPE activator_queue_wait_seconds histogram\n"
        'activator_queue_wait_seconds_bucket{{le="0.1",service="s"}} {fast}\n'
        'activator_queue_wait_seconds_bucket{{le="+Inf",service="s"}} {requests}\n'
        'activator_queue_wait_seconds_count{{service="s"}} {requests}\n'
        'activator_queue_wait_seconds_sum{{service="s"}} 0.5\n'
        "# HELP activator_ready_pods Ready pods.\n"
        "# TYPE activator_ready_pods gauge\n"
        'activator_ready_pods{{service="s"}} {ready}\n'
        "# HELP activator_queue_oldest_age_seconds Age.\n"
        "# TYPE activator_queue_oldest_age_seconds gauge\n"
        'activator_queue_oldest_age_seconds{{service="s"}} {age}\n'
    )
    texts = [
        worker.format(requests=3, created=200.0, fast=2, ready=2, age=0.5),
        worker.format(requests=4, created=100.0, fast=1, ready=1, age=2.5),
    ]
    values = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in merge_metrics(texts)
        for sample in family.samples
    }
    s = (("service", "s"),)
    assert values[("activator_requests_total", (("code", "200"), *s))] == 7
    assert values[("activator_requests_created", (("code", "200"), *s))] == 100.0
    assert values[("activator_queue_wait_seconds_bucket", (("le", "0.1"), *s))] == 3
    assert values[("activator_queue_wait_seconds_count", s)] == 7
    assert values[("activator_queue_wait_seconds_sum", s)] == 1.0
    assert values[("activator_ready_pods", s)] == 2
    assert values[("activator_queue_oldest_age_seconds", s)] == 2.5


def test_merged_status_adds_in_flight_per_pod_and_counters() -> None:
    def worker(in_flight: int, ready: bool, removed: bool, age: float) -> dict[str, Any]:
        return {
            "name": "s",
            "hosts": ["*"],
            "pods": [
                {"address": "a:1", "ready": ready, "in_flight": in_flight, "capacity": 2},
                {
                    "address": "b:2",
                    "ready": True,
                    "in_flight": 1,
                    "capacity": 2,
                    "removed": removed,
                },
            ],
            "queue": {"depth": 1, "bytes": 10, "oldest_age_seconds": age},
            "requests_total": 5,
            "replays_total": {"goaway": 1},
        }

    merged = merge_service_status([worker(1, False, True, 0.5), worker(1, True, False, 1.5)])
    assert merged["hosts"] == ["*"]
    assert merged["pods"][0] == {"address": "a:1", "ready": True, "in_flight": 2, "capacity": 2}
    assert merged["pods"][1]["removed"] is False, "removed only once every worker removed it"
    assert merged["queue"] == {"depth": 2, "bytes": 20, "oldest_age_seconds": 1.5}
    assert merged["requests_total"] == 10
    assert merged["replays_total"] == {"goaway": 2}


def test_merged_reports_add_concurrency_and_keep_the_ready_pods() -> None:
    def worker(active: int, ready_pods: int) -> dict[str, Any]:
        return {
            "window_seconds": 1.0,
            "services": [
                {
                    "name": "s",
                    "average_concurrency": 0.5,
                    "max_concurrency": 2,
                    "active": active,
                    "queued": 1,
                    "oldest_queued_age_seconds": 0.25 * active,
                    "requests": 10,
                    "ready_pods": ready_pods,
                }
            ],
        }

    report = merge_reports([worker(1, 3), worker(2, 2)], ["s", "t"])
    first, second = report.services
    assert (first.active, first.queued, first.requests, first.max_concurrency) == (3, 2, 20, 4)
    assert first.average_concurrency == pytest.approx(1.0)
    assert first.oldest_queued_age_seconds == pytest.approx(0.5)
    assert first.ready_pods == 3
    assert (second.name, second.requests) == ("t", 0)


# -- the processes -------------------------------------------------------------------------------------


def test_zero_workers_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "activator", "serve", "--workers", "0", "--upstream", "h2c://a:1"],
        cwd=REPO_ROOT,
        env=subprocess_env(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert b"at least 1 worker" in result.stderr


def test_a_listen_port_taken_by_another_process_fails_the_start_with_status_1() -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "activator",
                "serve",
                *WORKERS,
                "--listen",
                f"{LOOPBACK}:{port}",
                "--admin",
                f"{LOOPBACK}:0",
                "--upstream",
                "h2c://127.0.0.1:9",
            ],
            cwd=REPO_ROOT,
            env=subprocess_env(),
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert b"cannot listen" in result.stderr
    assert b"exited with 1 at start" in result.stderr


def test_both_workers_take_connections_and_every_total_adds_up(
    demo_pods: Any, activator_proc: Any
) -> None:
    require_tool("h2load")
    (pod,) = demo_pods(1)
    proc = activator_proc(pod, extra_args=WORKERS)
    total = 400
    result = h2load(f"{proc.url}/", requests=total, clients=32, streams=4)
    assert result.status_2xx == total, result.describe()

    document = status(proc)
    (service,) = document["services"]
    assert service["requests_total"] == total
    assert service["pods"][0]["in_flight"] == 0
    workers = document["workers"]
    assert [w["index"] for w in workers] == [0, 1]
    assert all(w["up"] for w in workers)
    assert proc.pid not in {w["pid"] for w in workers}, "the supervisor serves no requests"
    assert all(w["requests_total"] > 0 for w in workers), f"one worker got nothing: {workers}"
    assert sum(w["requests_total"] for w in workers) == total

    text = metrics_text(proc)
    assert metric_sum(text, "activator_requests_total") == total
    assert metric_sum(text, "activator_request_duration_seconds_count") == total
    assert metric_sum(text, "activator_workers_up") == 2
    assert metric_sum(text, "activator_pods") == 1, "pods are not counted once per worker"
    assert metrics_text(proc, "application/openmetrics-text").rstrip().endswith("# EOF")

    report = http_get_json(proc.admin_port, "/v1/concurrency")
    assert report["services"][0]["requests"] == total
    assert report["services"][0]["ready_pods"] == 1
    assert pod.stats()["requests"] == total
    assert http_get_json(proc.admin_port, "/v1/services/default")["requests_total"] == total

    stderr = proc.stderr_text()
    for worker in workers:
        assert f"[worker {worker['index']} pid {worker['pid']}]" in stderr


def test_container_concurrency_holds_over_both_workers(
    demo_pods: Any, activator_proc: Any, tmp_path: Path
) -> None:
    require_tool("h2load")
    (pod,) = demo_pods(1)
    config = write_config(tmp_path, endpoints=[endpoint(pod)], container_concurrency=1)
    proc = activator_proc(config_path=config, extra_args=WORKERS)
    pod.reset_stats()
    requests = 40
    # One request per connection: SO_REUSEPORT spreads the connections over both workers.
    result = h2load(f"{proc.url}/delay/20", requests=requests, clients=requests, streams=1)
    assert result.status_2xx == requests, result.describe()
    stats = pod.stats()
    assert stats["requests"] == requests
    assert stats["max_in_flight"] == 1, "container_concurrency 1 was exceeded across workers"
    workers = status(proc)["workers"]
    assert all(w["requests_total"] > 0 for w in workers), f"one worker got nothing: {workers}"


def test_endpoints_put_to_the_supervisor_release_requests_queued_in_both_workers(
    demo_pods: Any, activator_proc: Any, tmp_path: Path
) -> None:
    require_tool("h2load")
    (pod,) = demo_pods(1)
    proc = activator_proc(config_path=write_config(tmp_path, endpoints=[]), extra_args=WORKERS)
    requests = 16
    client = subprocess.Popen(
        h2load_command(f"{proc.url}/", requests=requests, clients=requests, streams=1),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C"},
    )
    try:

        def queued_in_both() -> bool:
            document = status(proc)
            return document["services"][0]["queue"]["depth"] == requests and all(
                w["queued"] > 0 for w in document["workers"]
            )

        wait_until(queued_in_both, f"{requests} requests queued over both workers")
        code, body = admin_request(
            proc, "PUT", "/v1/services/svc/endpoints", {"endpoints": [endpoint(pod)]}
        )
        assert code == 200, body
        assert [p["address"] for p in json.loads(body)["pods"]] == [endpoint(pod)]
        output, _ = client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(10)
    result = parse_h2load(output.decode("utf-8", "replace"))
    assert result.status_2xx == requests, result.describe()
    assert status(proc)["services"][0]["queue"]["depth"] == 0

    code, body = admin_request(proc, "PUT", "/v1/services/nope/endpoints", {"endpoints": []})
    assert code == 404
    code, body = admin_request(proc, "PUT", "/v1/services/svc/endpoints", {"endpoint": []})
    assert code == 400


def test_a_killed_worker_is_restarted_with_the_current_endpoints_and_serves_again(
    demo_pods: Any, activator_proc: Any, tmp_path: Path
) -> None:
    require_tool("h2load")
    (pod,) = demo_pods(1)
    # At zero, with a short queue timeout: a worker restarted without the endpoints PUT since
    # would answer 504s rather than hang.
    config = write_config(tmp_path, endpoints=[], queue_timeout="2s")
    proc = activator_proc(config_path=config, extra_args=WORKERS)
    code, body = admin_request(
        proc, "PUT", "/v1/services/svc/endpoints", {"endpoints": [endpoint(pod)]}
    )
    assert code == 200, body
    victim = worker_pids(proc)[0]
    os.kill(victim, signal.SIGKILL)

    def restarted() -> bool:
        worker = status(proc)["workers"][0]
        return bool(worker["up"]) and worker["pid"] != victim and worker["restarts"] == 1

    wait_until(restarted, "worker 0 to be restarted")
    assert admin_request(proc, "GET", "/readyz")[0] == 200
    assert not pid_alive(victim)
    result = h2load(f"{proc.url}/", requests=200, clients=32, streams=1)
    assert result.status_2xx == 200, result.describe()
    workers = status(proc)["workers"]
    assert workers[0]["requests_total"] > 0, "the restarted worker serves"
    stderr = proc.stderr_text()
    assert f"worker 0 (pid {victim}) exited unexpectedly" in stderr
    assert metric_sum(metrics_text(proc), "activator_worker_restarts_total") == 1


class _Autoscaler:
    """A fake autoscaler recording the reports POSTed to it."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []
        reports = self.reports

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                reports.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server.server_address[1]}/v1/stats"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def autoscaler() -> Iterator[_Autoscaler]:
    fake = _Autoscaler()
    try:
        yield fake
    finally:
        fake.close()


def test_a_queued_request_pokes_the_autoscaler_once_from_the_supervisor(
    demo_pods: Any, activator_proc: Any, tmp_path: Path, autoscaler: _Autoscaler
) -> None:
    (pod,) = demo_pods(1)
    # The push interval (30 s) is longer than this test: a report can only come from a poke.
    config = write_config(tmp_path, endpoints=[], push_url=autoscaler.url)
    proc = activator_proc(config_path=config, extra_args=WORKERS)
    answers: list[int] = []

    def request() -> None:
        conn = http.client.HTTPConnection(LOOPBACK, proc.port, timeout=20)
        try:
            conn.request("GET", "/")
            answers.append(conn.getresponse().status)
        finally:
            conn.close()

    client = threading.Thread(target=request)
    client.start()
    try:
        wait_until(
            lambda: any(r["services"][0]["queued"] >= 1 for r in autoscaler.reports),
            "a report telling of the queued request",
        )
    finally:
        admin_request(proc, "PUT", "/v1/services/svc/endpoints", {"endpoints": [endpoint(pod)]})
        client.join(20)
    assert answers == [200]
    assert len({report["activator"] for report in autoscaler.reports}) == 1
    if not (os.environ.get("ACTIVATOR_ID") or os.environ.get("POD_NAME")):
        assert autoscaler.reports[0]["activator"].endswith(f"-{proc.pid}"), "sent by the supervisor"
    assert metric_sum(metrics_text(proc), "activator_autoscaler_pokes_total") >= 1


def test_sigterm_drains_the_workers_and_exits_zero(demo_pods: Any, activator_proc: Any) -> None:
    (pod,) = demo_pods(1)
    proc = activator_proc(pod, extra_args=WORKERS, drain_timeout=5.0)
    pids = worker_pids(proc)
    answers: list[tuple[int, bytes]] = []

    def request() -> None:
        conn = http.client.HTTPConnection(LOOPBACK, proc.port, timeout=20)
        try:
            conn.request("GET", "/delay/700")
            response = conn.getresponse()
            answers.append((response.status, response.read()))
        finally:
            conn.close()

    client = threading.Thread(target=request)
    client.start()
    try:
        wait_until(
            lambda: status(proc)["services"][0]["pods"][0]["in_flight"] == 1,
            "the slow request to be in flight",
        )
        proc.process.send_signal(signal.SIGTERM)
        assert proc.process.wait(20) == 0
    finally:
        client.join(20)
    assert [code for code, _body in answers] == [200], "the request in flight was drained"
    assert not any(pid_alive(pid) for pid in pids), "every worker exited with the supervisor"
    assert "signal received: draining the workers" in proc.stderr_text()
