"""Real HTTP clients (curl, nghttp, httpx, h2load, raw sockets) through the activator to demo pods.

Most tests share one activator in front of three warmed-up pods (module scope: starting a process per
test would dominate the suite's time). Tests that count requests per pod reset the pods' stats first.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import (
    ActivatorProcess,
    InProcessPod,
    PodLoop,
    RawH2Client,
    curl,
    h2load,
    http1_connection,
    read_http1_response,
    require_tool,
    run,
    stream_outcomes,
)

from activator.demopod import PodBehaviour


@dataclass
class Fleet:
    activator: ActivatorProcess
    pods: list[InProcessPod]

    @property
    def url(self) -> str:
        return self.activator.url

    def reset_stats(self) -> None:
        for pod in self.pods:
            pod.reset_stats()

    def requests_per_pod(self) -> dict[str, int]:
        return {pod.name: int(pod.stats()["requests"]) for pod in self.pods}


def warm_up(activator: ActivatorProcess, pod_names: set[str]) -> None:
    """Send requests until every pod answered one, so each has an open upstream connection."""
    seen: set[str] = set()
    with httpx.Client(http1=False, http2=True, trust_env=False, timeout=10) as client:
        for _ in range(300):
            seen.add(client.get(activator.url + "/").headers["x-pod"])
            if seen == pod_names:
                return
    raise AssertionError(f"only pods {seen} answered, expected {pod_names}")


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    pod_loop = PodLoop()
    pods = [InProcessPod.start(pod_loop, PodBehaviour(name=f"pod-{i}")) for i in range(3)]
    activator = ActivatorProcess([pod.h2c_upstream for pod in pods])
    try:
        warm_up(activator, {pod.name for pod in pods})
        yield Fleet(activator, pods)
    finally:
        activator.stop()
        activator.close()
        for pod in pods:
            pod.stop()
        pod_loop.close()


@pytest.fixture
def payload(tmp_path: Path) -> Callable[[int], Path]:
    """Factory: a file of ``n`` random bytes."""

    def make(n: int) -> Path:
        path = tmp_path / f"payload-{n}.bin"
        path.write_bytes(os.urandom(n))
        return path

    return make


# -- curl --------------------------------------------------------------------------------------------


def test_curl_http2_prior_knowledge(fleet: Fleet) -> None:
    result = curl(
        "--http2-prior-knowledge", "-i", "-w", "\nversion=%{http_version}", fleet.url + "/"
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert out.startswith("HTTP/2 200")
    assert "hello from pod-" in out
    assert out.endswith("version=2")


def test_curl_upgrade_h2c_switches_protocols(fleet: Fleet) -> None:
    result = curl("--http2", "-v", "-w", "version=%{http_version}", fleet.url + "/")
    assert result.returncode == 0, result.stderr
    trace = result.stderr.decode()
    assert "Upgrade: h2c" in trace
    assert "< HTTP/1.1 101 Switching Protocols" in trace
    assert "< HTTP/2 200" in trace
    out = result.stdout.decode()
    assert out.startswith("hello from pod-")
    assert out.endswith("version=2")


def test_curl_upgrade_h2c_then_more_streams_on_the_connection(fleet: Fleet) -> None:
    # After the upgrade the connection is plain HTTP/2: curl reuses it for the second URL.
    result = curl("--http2", "-v", fleet.url + "/status/204", fleet.url + "/")
    assert result.returncode == 0, result.stderr
    trace = result.stderr.decode()
    assert trace.count("101 Switching Protocols") == 1
    assert "< HTTP/2 204" in trace
    assert "< HTTP/2 200" in trace
    assert "Re-using existing connection" in trace


def test_curl_http11_chunked_post_echoes_exact_body(
    fleet: Fleet, payload: Callable[[int], Path]
) -> None:
    body = payload(300_000)  # larger than the replay buffer and than any window
    result = curl(
        "--http1.1",
        "-H",
        "Transfer-Encoding: chunked",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        f"@{body}",
        "-w",
        "\n%{http_code} %{http_version}",
        fleet.url + "/echo",
    )
    assert result.returncode == 0, result.stderr
    echoed, _, tail = result.stdout.rpartition(b"\n")
    assert tail == b"200 1.1"
    assert echoed == body.read_bytes()


def test_curl_http11_content_length_post_echoes_exact_body(
    fleet: Fleet, payload: Callable[[int], Path]
) -> None:
    body = payload(150_000)
    result = curl("--http1.1", "--data-binary", f"@{body}", fleet.url + "/echo")
    assert result.returncode == 0, result.stderr
    assert result.stdout == body.read_bytes()


def test_curl_http2_post_echoes_exact_body(fleet: Fleet, payload: Callable[[int], Path]) -> None:
    body = payload(1_000_000)
    result = curl("--http2-prior-knowledge", "--data-binary", f"@{body}", fleet.url + "/echo")
    assert result.returncode == 0, result.stderr
    assert result.stdout == body.read_bytes()


# -- nghttp ------------------------------------------------------------------------------------------


def test_nghttp_get(fleet: Fleet) -> None:
    result = run([require_tool("nghttp"), "-t", "10", fleet.url + "/"], timeout=20)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"hello from pod-")


def test_nghttp_post_data_echoes(fleet: Fleet, payload: Callable[[int], Path]) -> None:
    body = payload(200_000)
    result = run(
        [require_tool("nghttp"), "-t", "10", "-d", str(body), fleet.url + "/echo"], timeout=20
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == body.read_bytes()


def test_nghttp_post_upload_counts_bytes(fleet: Fleet, payload: Callable[[int], Path]) -> None:
    body = payload(70_000)
    result = run(
        [require_tool("nghttp"), "-t", "10", "-d", str(body), fleet.url + "/upload"], timeout=20
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"bytes": 70_000}


# -- httpx -------------------------------------------------------------------------------------------


def test_httpx_http2(fleet: Fleet) -> None:
    body = os.urandom(100_000)
    with httpx.Client(http1=False, http2=True, trust_env=False, timeout=10) as client:
        hello = client.get(fleet.url + "/")
        echoed = client.post(fleet.url + "/echo", content=body)
    assert hello.http_version == "HTTP/2"
    assert hello.status_code == 200
    assert hello.text.startswith("hello from pod-")
    assert echoed.http_version == "HTTP/2"
    assert echoed.content == body


def test_httpx_http11(fleet: Fleet) -> None:
    body = os.urandom(100_000)
    with httpx.Client(trust_env=False, timeout=10) as client:
        hello = client.get(fleet.url + "/")
        echoed = client.post(fleet.url + "/echo", content=body)
        streamed = client.post(fleet.url + "/echo", content=iter([body[:30_000], body[30_000:]]))
    assert hello.http_version == "HTTP/1.1"
    assert hello.text.startswith("hello from pod-")
    assert echoed.content == body
    assert streamed.content == body  # chunked upload: httpx sends an iterator without a length


async def test_httpx_async_http2_concurrent_streams(fleet: Fleet) -> None:
    import asyncio

    async with httpx.AsyncClient(http1=False, http2=True, trust_env=False, timeout=10) as client:
        responses = await asyncio.gather(
            *(client.get(f"{fleet.url}/bytes/{1000 + i}") for i in range(50))
        )
    assert [len(r.content) for r in responses] == [1000 + i for i in range(50)]
    assert {r.http_version for r in responses} == {"HTTP/2"}


# -- h2load ------------------------------------------------------------------------------------------


def test_h2load_2000_requests_none_fail(fleet: Fleet) -> None:
    result = h2load(fleet.url + "/", requests=2000, clients=4, streams=20)
    assert result.failed == 0, result.describe()
    assert result.errored == 0, result.describe()
    assert result.status_2xx == 2000, result.describe()


# -- responses without content ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("HEAD", "/", 200), ("GET", "/status/204", 204), ("GET", "/status/304", 304)],
)
def test_no_body_responses_over_http2(fleet: Fleet, method: str, path: str, status: int) -> None:
    with RawH2Client(fleet.activator.port) as client:
        stream = client.request(path, method=method)
        response = client.response(stream)
    assert response.reset_code is None
    assert response.ended
    assert response.status == status
    assert bytes(response.body) == b""


def test_no_body_responses_over_http11_keep_framing(fleet: Fleet) -> None:
    # Pipelined on one connection: if any no-content response carried a body (even an empty chunked
    # terminator), the next response would be misparsed.
    sock, reader = http1_connection(fleet.activator.port)
    with sock, reader:
        sock.sendall(
            b"HEAD / HTTP/1.1\r\nHost: a.test\r\n\r\n"
            b"GET /status/204 HTTP/1.1\r\nHost: a.test\r\n\r\n"
            b"GET /status/304 HTTP/1.1\r\nHost: a.test\r\n\r\n"
            b"GET /bytes/5 HTTP/1.1\r\nHost: a.test\r\n\r\n"
        )
        head = read_http1_response(reader, method="HEAD")
        no_content = read_http1_response(reader)
        not_modified = read_http1_response(reader)
        last = read_http1_response(reader)
    assert head.status == 200
    assert head.header("transfer-encoding") is None
    assert no_content.status == 204
    assert no_content.header("transfer-encoding") is None
    assert no_content.header("content-length") in (None, "0")
    assert not_modified.status == 304
    assert not_modified.header("transfer-encoding") is None
    assert last.status == 200
    assert len(last.body) == 5


def test_curl_head_has_no_body(fleet: Fleet) -> None:
    for flag in ("--http1.1", "--http2-prior-knowledge"):
        result = curl(flag, "-I", "-w", "%{size_download}", fleet.url + "/")
        assert result.returncode == 0, result.stderr
        assert result.stdout.endswith(b"\r\n\r\n0"), result.stdout


# -- HTTP/1.1 connection handling ------------------------------------------------------------------


def test_http11_pipelining_answers_in_order(fleet: Fleet) -> None:
    # The first request is the slow one: responses must still come back in request order.
    sock, reader = http1_connection(fleet.activator.port)
    with sock, reader:
        sock.sendall(
            b"GET /delay/100 HTTP/1.1\r\nHost: a.test\r\n\r\n"
            b"GET /bytes/3 HTTP/1.1\r\nHost: a.test\r\n\r\n"
        )
        first = read_http1_response(reader)
        second = read_http1_response(reader)
        # Keep-alive: the same connection serves a third request afterwards.
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        third = read_http1_response(reader)
    assert (first.status, first.body) == (200, b"delayed 100 ms\n")
    assert (second.status, len(second.body)) == (200, 3)
    assert third.status == 200
    assert third.body.startswith(b"hello from pod-")


def test_http11_keep_alive_serves_many_requests_on_one_connection(fleet: Fleet) -> None:
    sock, reader = http1_connection(fleet.activator.port)
    with sock, reader:
        for i in range(20):
            sock.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: a.test\r\n\r\n" % (i + 1))
            response = read_http1_response(reader)
            assert response.status == 200
            assert len(response.body) == i + 1
            assert response.header("connection") != "close"


def test_http11_connection_close_is_honoured(fleet: Fleet) -> None:
    sock, reader = http1_connection(fleet.activator.port)
    with sock, reader:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        response = read_http1_response(reader)
        assert response.status == 200
        assert response.header("connection") == "close"
        assert reader.read() == b""  # the activator closed the connection


# -- spreading ---------------------------------------------------------------------------------------


def test_one_connection_with_100_streams_spreads_over_all_pods(fleet: Fleet) -> None:
    fleet.reset_stats()
    # nghttp -m 100: the same URI 100 times, concurrently, on one connection.
    result = run(
        [require_tool("nghttp"), "-n", "-t", "20", "-m", "100", "-s", fleet.url + "/delay/50"],
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(b" 200 ") == 100, result.stdout[-2000:]
    counts = fleet.requests_per_pod()
    assert sum(counts.values()) == 100, counts
    assert all(n > 0 for n in counts.values()), counts
    assert max(counts.values()) < 100, counts
    # Power of two choices on in-flight streams keeps the split near even; allow wide slack.
    assert min(counts.values()) >= 10, counts


def test_slow_pod_gets_less_work(demo_pods: Any, activator_proc: Any) -> None:
    pods = demo_pods(
        PodBehaviour(name="fast-a"),
        PodBehaviour(name="fast-b"),
        PodBehaviour(name="slow", delay=0.05),
    )
    activator = activator_proc(*pods)
    result = h2load(activator.url + "/", requests=1500, clients=4, streams=10)
    assert result.failed == 0, result.describe()
    counts = {pod.name: int(pod.stats()["requests"]) for pod in pods}
    assert sum(counts.values()) == 1500, counts
    # Each slow request holds its stream 50 ms, so the balancer sees it busy and mostly picks the
    # fast pods: the slow pod should get well under half of what a fast pod gets.
    assert counts["slow"] * 2 < min(counts["fast-a"], counts["fast-b"]), counts


# -- forwarding headers ------------------------------------------------------------------------------

HOP_BY_HOP_NAMES = ("connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection")


def test_forwarding_headers_over_http2(fleet: Fleet) -> None:
    with RawH2Client(fleet.activator.port) as client:
        stream = client.request(
            "/headers",
            authority="shop.example.test:8443",
            headers=[("x-forwarded-for", "203.0.113.7"), ("x-custom", "kept")],
        )
        response = client.response(stream)
    assert response.status == 200
    seen = json.loads(bytes(response.body))
    assert seen[":authority"] == ["shop.example.test:8443"]
    assert seen[":path"] == ["/headers"]
    assert seen["x-forwarded-for"] == ["203.0.113.7, 127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["forwarded"] == ['for=127.0.0.1;proto=http;host="shop.example.test:8443"']
    assert seen["x-custom"] == ["kept"]
    for name in HOP_BY_HOP_NAMES:
        assert name not in seen


def test_forwarding_headers_over_http11_drop_hop_by_hop(fleet: Fleet) -> None:
    sock, reader = http1_connection(fleet.activator.port)
    body = b"0123456789"
    with sock, reader:
        sock.sendall(
            b"POST /headers HTTP/1.1\r\n"
            b"Host: api.example.test\r\n"
            b"Connection: keep-alive, X-Hop-Only\r\n"
            b"Keep-Alive: timeout=5\r\n"
            b"X-Hop-Only: secret\r\n"
            b"Proxy-Connection: keep-alive\r\n"
            b"Transfer-Encoding: chunked\r\n"
            b"X-End-To-End: yes\r\n"
            b"\r\n" + b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
        )
        response = read_http1_response(reader)
    assert response.status == 200
    seen = json.loads(response.body)
    assert seen[":authority"] == ["api.example.test"]
    assert seen[":method"] == ["POST"]
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["forwarded"] == ['for=127.0.0.1;proto=http;host="api.example.test"']
    assert seen["x-end-to-end"] == ["yes"]
    for name in (*HOP_BY_HOP_NAMES, "x-hop-only"):
        assert name not in seen, seen
    assert "host" not in seen  # HTTP/2 to the pod: the authority travels as :authority only


def test_forwarding_headers_via_curl_upgrade(fleet: Fleet) -> None:
    # The upgraded request (stream 1) must not carry Upgrade/HTTP2-Settings/Connection to the pod.
    result = curl("--http2", "-H", "Host: up.example.test", fleet.url + "/headers")
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen[":authority"] == ["up.example.test"]
    assert seen["x-forwarded-proto"] == ["http"]
    for name in (*HOP_BY_HOP_NAMES, "http2-settings"):
        assert name not in seen, seen


def test_response_hop_by_hop_headers_not_forwarded_to_http11_client(fleet: Fleet) -> None:
    # Over HTTP/1.1 the activator frames the response itself: exactly one framing header.
    sock, reader = http1_connection(fleet.activator.port)
    with sock, reader:
        sock.sendall(b"GET /stream/3/0 HTTP/1.1\r\nHost: a.test\r\n\r\n")
        response = read_http1_response(reader)
    names = [k for k, _ in response.headers]
    assert response.body == b"chunk 0\nchunk 1\nchunk 2\n"
    assert names.count("transfer-encoding") + names.count("content-length") == 1
    assert "x-pod" in names


# -- first request on a new upstream connection -----------------------------------------------------


@pytest.mark.parametrize("client", ["h2", "http1-chunked", "http1-length"])
def test_large_body_on_a_fresh_upstream_connection_arrives_whole(
    demo_pods: Any, activator_proc: Any, payload: Callable[[int], Path], client: str
) -> None:
    # The activator's first request to a pod arrives while the upstream connection is still being
    # opened, so its body is buffered; past the replay buffer (64 KiB) nothing may be lost.
    (pod,) = demo_pods(PodBehaviour(name="only"))
    activator = activator_proc(pod)
    body = payload(200_000)
    flags = {
        "h2": ["--http2-prior-knowledge"],
        "http1-chunked": ["--http1.1", "-H", "Transfer-Encoding: chunked"],
        "http1-length": ["--http1.1"],
    }[client]
    result = curl(
        *flags, "--data-binary", f"@{body}", "-w", "\n%{http_code}", activator.url + "/echo"
    )
    echoed, _, status = result.stdout.rpartition(b"\n")
    received = [e["body_bytes"] for e in stream_outcomes(pod.stats()["log"], "/echo")]
    assert received == [200_000], f"pod received {received} bytes of 200000; client got {status!r}"
    assert result.returncode == 0, result.stderr
    assert status == b"200"
    assert echoed == body.read_bytes()


# -- routing by host (configuration file) ------------------------------------------------------------


@pytest.fixture
def routed(demo_pods: Any, activator_proc: Any, tmp_path: Path) -> tuple[ActivatorProcess, Any]:
    """An activator with two services by host: alpha.test (h2c pod) and *.beta.test (HTTP/1.1 pod)."""
    alpha, beta = demo_pods(PodBehaviour(name="alpha-pod"), PodBehaviour(name="beta-pod"))
    config = tmp_path / "activator.yaml"
    config.write_text(
        "services:\n"
        "  - name: alpha\n"
        "    hosts: [alpha.test]\n"
        "    upstream: h2c\n"
        f'    endpoints: ["127.0.0.1:{alpha.port}"]\n'
        "  - name: beta\n"
        '    hosts: ["*.beta.test"]\n'
        "    upstream: http1\n"
        f'    endpoints: ["127.0.0.1:{beta.port}"]\n'
    )
    return activator_proc(config_path=config), (alpha, beta)


@pytest.mark.parametrize("flag", ["--http2-prior-knowledge", "--http1.1"])
def test_requests_are_routed_by_host_and_unknown_hosts_get_404(
    routed: tuple[ActivatorProcess, Any], flag: str
) -> None:
    activator, _pods = routed
    expected = {
        "alpha.test": (200, "hello from alpha-pod\n"),
        "Alpha.Test:8080": (200, "hello from alpha-pod\n"),  # case and port do not matter
        "api.beta.test": (200, "hello from beta-pod\n"),
        "beta.test": (404, None),  # "*.beta.test" needs a subdomain
        "unknown.test": (404, None),
    }
    for host, (status, body) in expected.items():
        result = curl(flag, "-H", f"Host: {host}", "-w", "\n%{http_code}", activator.url + "/")
        text, _, code = result.stdout.decode().rpartition("\n")
        assert int(code) == status, (host, text)
        if body is not None:
            assert text == body
        else:
            assert "no service" in text


def test_http11_pipelined_unknown_host_answered_in_order(
    routed: tuple[ActivatorProcess, Any],
) -> None:
    activator, _pods = routed
    sock, reader = http1_connection(activator.port)
    with sock, reader:
        sock.sendall(
            b"GET /delay/200 HTTP/1.1\r\nHost: alpha.test\r\n\r\n"
            b"GET / HTTP/1.1\r\nHost: unknown.test\r\n\r\n"
            b"GET /bytes/3 HTTP/1.1\r\nHost: alpha.test\r\n\r\n"
        )
        responses = []
        for _ in range(3):  # until EOF: the activator may close after the 404
            try:
                responses.append(read_http1_response(reader))
            except EOFError:
                break
    statuses = [r.status for r in responses]
    # RFC 9112 §9.3.2: responses in request order, the in-flight one first.
    assert statuses[:2] == [200, 404], [(r.status, r.body[:60]) for r in responses]
    assert responses[0].body == b"delayed 200 ms\n"
    if responses[1].header("connection") != "close":
        assert statuses == [200, 404, 200]
        assert len(responses[2].body) == 3


def test_http11_head_to_an_unknown_host_gets_a_404_without_a_body(
    routed: tuple[ActivatorProcess, Any],
) -> None:
    """The activator's own error answer to a HEAD has the fields a GET's would, and no body (RFC
    9110 §9.3.2): on a keep-alive connection a body would be read as the next response."""
    activator, _pods = routed
    sock, reader = http1_connection(activator.port)
    with sock, reader:
        sock.sendall(
            b"HEAD / HTTP/1.1\r\nHost: unknown.test\r\n\r\n"
            b"GET / HTTP/1.1\r\nHost: alpha.test\r\n\r\n"
        )
        first = read_http1_response(reader, method="HEAD")
        second = read_http1_response(reader)
    assert (first.status, first.body) == (404, b"")
    assert first.header("content-length") is not None
    assert (second.status, second.body) == (200, b"hello from alpha-pod\n")


def test_h2_head_to_an_unknown_host_gets_a_404_without_a_body(
    routed: tuple[ActivatorProcess, Any],
) -> None:
    """The same over HTTP/2, where DATA on a HEAD's response breaks the client's connection."""
    activator, _pods = routed
    with httpx.Client(http1=False, http2=True, timeout=10) as c:
        head = c.head(f"http://127.0.0.1:{activator.port}/", headers={"host": "unknown.test"})
        get = c.get(f"http://127.0.0.1:{activator.port}/", headers={"host": "alpha.test"})
    assert (head.status_code, head.content) == (404, b"")
    assert (get.status_code, get.content) == (200, b"hello from alpha-pod\n")


def test_http11_client_leaving_with_pipelined_requests_waiting(
    demo_pods: Any, activator_proc: Any
) -> None:
    (pod,) = demo_pods(PodBehaviour(name="p"))
    activator = activator_proc(pod)
    for _ in range(3):
        sock, reader = http1_connection(activator.port)
        with sock, reader:
            sock.sendall(
                b"GET /delay/300 HTTP/1.1\r\nHost: a.test\r\n\r\n"
                b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"
                b"GET /bytes/3 HTTP/1.1\r\nHost: a.test\r\n\r\n"
            )
            # Leave while the first is in flight and the other two wait their turn.
            deadline = time.monotonic() + 10
            while activator.services()[0]["concurrency"]["http1_connections"] < 1:
                assert time.monotonic() < deadline, "the first request never started"
                time.sleep(0.01)
    deadline = time.monotonic() + 10
    while activator.services()[0]["concurrency"]["total"] != 0:
        assert time.monotonic() < deadline, activator.services()[0]["concurrency"]
        time.sleep(0.02)
    assert curl("--http1.1", activator.url + "/").stdout == b"hello from p\n"
    stderr = activator.stderr_text()
    assert "Traceback" not in stderr, stderr[-3000:]


# -- upgrade and expectations ------------------------------------------------------------------------


def test_curl_http2_upgrade_with_a_body_is_served_over_http11(
    fleet: Fleet, payload: Callable[[int], Path]
) -> None:
    # The activator upgrades only requests without a body (RFC 9113 §3.2 leaves the choice to the
    # server); a POST offered the upgrade is answered over HTTP/1.1, body intact.
    body = payload(100_000)
    result = curl(
        "--http2", "-v", "--data-binary", f"@{body}", "-w", "\n%{http_version}", fleet.url + "/echo"
    )
    assert result.returncode == 0, result.stderr
    echoed, _, version = result.stdout.rpartition(b"\n")
    assert echoed == body.read_bytes()
    assert version in (b"1.1", b"2")
    if version == b"2":
        assert "101 Switching Protocols" in result.stderr.decode()


def test_http11_expect_100_continue(fleet: Fleet) -> None:
    sock, reader = http1_connection(fleet.activator.port)
    body = os.urandom(5000)
    with sock, reader:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5000\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        interim = read_http1_response(reader)
        assert interim.status == 100  # RFC 9110 §10.1.1: go ahead before the body is sent
        sock.sendall(body)
        final = read_http1_response(reader)
    assert final.status == 200
    assert final.body == body


# -- pods over HTTP/1.1 ------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--http2-prior-knowledge", "--http1.1"])
def test_http11_upstream_carries_requests_of_both_protocols(
    demo_pods: Any, activator_proc: Any, payload: Callable[[int], Path], flag: str
) -> None:
    pods = demo_pods(PodBehaviour(name="h1-a"), PodBehaviour(name="h1-b"))
    activator = activator_proc(*(pod.http1_upstream for pod in pods))
    body = payload(200_000)
    echoed = curl(flag, "--data-binary", f"@{body}", activator.url + "/echo")
    assert echoed.returncode == 0, echoed.stderr
    assert echoed.stdout == body.read_bytes()
    big = curl(flag, "-w", "\n%{size_download}", activator.url + "/bytes/3000000")
    assert big.returncode == 0, big.stderr
    assert big.stdout.rpartition(b"\n")[2] == b"3000000"
    empty = curl(flag, "-i", activator.url + "/status/204")
    assert empty.returncode == 0, empty.stderr
    assert b" 204" in empty.stdout.split(b"\r\n", 1)[0]
    assert empty.stdout.endswith(b"\r\n\r\n")  # no body after the header block
    # Many requests reuse the pods' keep-alive connections rather than opening one each.
    result = h2load(activator.url + "/", requests=300, clients=2, streams=5)
    assert result.status_2xx == 300, result.describe()
    assert sum(int(pod.stats()["connections_total"]) for pod in pods) < 60
