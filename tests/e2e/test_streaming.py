"""Streaming through the activator: cancellation in both directions, trailers, incremental delivery
and bounded memory under a slow reader.

A cancel must reach the other side as a cancel: a pod must never see END_STREAM on a body the client
abandoned, and a client must never see a clean end of a response the pod abandoned.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import pytest
from support import (
    LOOPBACK,
    RawH2Client,
    curl,
    http1_connection,
    read_http1_response,
    stream_outcomes,
)

from activator.demopod import PodBehaviour

CANCEL = 0x8


def _poll(predicate: Any, *, timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate()`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _log_entries(pod: Any, path: str) -> list[dict[str, Any]]:
    return stream_outcomes(pod.stats()["log"], path)


def _in_flight(pod: Any) -> bool:
    return int(pod.stats()["in_flight"]) >= 1


# -- client cancels an upload ----------------------------------------------------------------------


def _cancel_upload_mid_way(activator: Any, pod: Any) -> list[dict[str, Any]]:
    """Send headers and part of a body, then RST_STREAM(CANCEL); the pod's log entries for it."""
    with RawH2Client(activator.port) as client:
        stream = client.request(
            "/upload",
            method="POST",
            headers=[("content-type", "application/octet-stream")],
            end_stream=False,
        )
        client.send_data(stream, os.urandom(20_000))
        _poll(lambda: _in_flight(pod), what="the upload to reach the pod")
        client.reset(stream, CANCEL)
        entries: list[dict[str, Any]] = _poll(
            lambda: _log_entries(pod, "/upload"), what="the pod to log the upload"
        )
        # The connection stays usable after the cancel.
        after = client.request("/bytes/3")
        assert client.response(after).status == 200
    return entries


def test_client_rst_stream_mid_upload_reaches_pod_as_reset(
    demo_pods: Any, activator_proc: Any
) -> None:
    (pod,) = demo_pods(PodBehaviour(name="p"))
    activator = activator_proc(pod.h2c_upstream)
    entries = _cancel_upload_mid_way(activator, pod)
    assert [e["outcome"] for e in entries] == ["reset"], entries
    assert entries[0]["error_code"] == CANCEL  # RST_STREAM(CANCEL), RFC 9113 §8.7
    assert entries[0]["body_bytes"] <= 20_000


def test_client_rst_stream_mid_upload_reaches_http11_pod_as_reset(
    demo_pods: Any, activator_proc: Any
) -> None:
    # HTTP/1.1 has no reset: the activator closes the pod connection, which ends the upload unfinished.
    (pod,) = demo_pods(PodBehaviour(name="p"))
    activator = activator_proc(pod.http1_upstream)
    entries = _cancel_upload_mid_way(activator, pod)
    assert [e["outcome"] for e in entries] == ["reset"], entries
    assert entries[0]["body_bytes"] <= 20_000


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_http11_client_closing_mid_upload_reaches_pod_as_reset(
    demo_pods: Any, activator_proc: Any, framing: str
) -> None:
    (pod,) = demo_pods(PodBehaviour(name="p"))
    activator = activator_proc(pod)
    sock, reader = http1_connection(activator.port)
    with sock, reader:
        if framing == "content-length":
            head = b"POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1000000\r\n\r\n"
            part = os.urandom(50_000)
        else:
            head = b"POST /upload HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            part = b"%x\r\n%b\r\n" % (50_000, os.urandom(50_000))
        sock.sendall(head + part)
        _poll(lambda: _in_flight(pod), what="the upload to reach the pod")
    entries = _poll(lambda: _log_entries(pod, "/upload"), what="the pod to log the upload")
    assert [e["outcome"] for e in entries] == ["reset"], entries
    assert entries[0]["error_code"] == CANCEL
    assert entries[0]["body_bytes"] <= 50_000


def test_client_rst_stream_mid_download_reaches_pod_as_reset(
    demo_pods: Any, activator_proc: Any
) -> None:
    (pod,) = demo_pods(PodBehaviour(name="p"))
    activator = activator_proc(pod)
    with RawH2Client(activator.port, auto_ack=False) as client:
        stream = client.request("/bytes/50000000")
        state = client.streams[stream]
        client.read_until(lambda: len(state.body) > 0)
        client.reset(stream, CANCEL)
    entries = _poll(
        lambda: _log_entries(pod, "/bytes/50000000"), what="the pod to log the download"
    )
    assert [e["outcome"] for e in entries] == ["reset"], entries
    assert entries[0]["error_code"] == CANCEL


# -- pod resets a response ---------------------------------------------------------------------------


@pytest.mark.parametrize("upstream", ["h2c", "http1"])
def test_pod_reset_reaches_http2_client_as_rst_stream(
    demo_pods: Any, activator_proc: Any, upstream: str
) -> None:
    (pod,) = demo_pods(PodBehaviour(name="p"))
    activator = activator_proc(pod.h2c_upstream if upstream == "h2c" else pod.http1_upstream)
    with RawH2Client(activator.port) as client:
        stream = client.request("/reset-after/30000")
        response = client.response(stream)
        # Other streams on the connection are unaffected.
        other = client.request("/bytes/10")
        assert client.response(other).status == 200
    assert response.status == 200
    assert response.reset_code is not None
    assert response.reset_code != 0
    assert not response.ended  # never a clean END_STREAM on a body the pod abandoned
    assert len(response.body) <= 30_000


@pytest.mark.parametrize("upstream", ["h2c", "http1"])
def test_pod_reset_reaches_http11_client_as_closed_connection(
    demo_pods: Any, activator_proc: Any, upstream: str
) -> None:
    (pod,) = demo_pods(PodBehaviour(name="p"))
    activator = activator_proc(pod.h2c_upstream if upstream == "h2c" else pod.http1_upstream)
    result = curl("--http1.1", activator.url + "/reset-after/30000")
    # 18: transfer closed with outstanding read data; 56: failure receiving network data.
    assert result.returncode in (18, 56), (result.returncode, result.stderr)
    assert len(result.stdout) <= 30_000


def test_pod_reset_reaches_curl_http2_as_stream_error(demo_pods: Any, activator_proc: Any) -> None:
    (pod,) = demo_pods(PodBehaviour(name="p"))
    activator = activator_proc(pod)
    result = curl("--http2-prior-knowledge", activator.url + "/reset-after/30000")
    assert result.returncode != 0
    assert len(result.stdout) <= 30_000


# -- trailers ----------------------------------------------------------------------------------------


def test_response_trailers_pass_through_http2(demo_pods: Any, activator_proc: Any) -> None:
    (pod,) = demo_pods(PodBehaviour(name="p"))
    activator = activator_proc(pod)
    with RawH2Client(activator.port) as client:
        stream = client.request("/trailers", headers=[("te", "trailers")])
        response = client.response(stream)
    assert response.status == 200
    assert bytes(response.body) == b"ok"
    assert response.trailers is not None
    assert (b"x-trailer", b"yes") in response.trailers


def test_request_trailers_reach_the_pod_and_come_back(demo_pods: Any, activator_proc: Any) -> None:
    (pod,) = demo_pods(PodBehaviour(name="p"))
    activator = activator_proc(pod)
    body = os.urandom(30_000)
    with RawH2Client(activator.port) as client:
        stream = client.request(
            "/echo", method="POST", headers=[("te", "trailers")], end_stream=False
        )
        client.send_data(stream, body)
        client.send_trailers(stream, [("x-checksum", "abc123")])
        response = client.response(stream)
    assert response.status == 200
    assert bytes(response.body) == body
    assert response.trailers is not None
    trailers = dict(response.trailers)
    assert trailers[b"x-checksum"] == b"abc123"
    assert trailers[b"x-body-bytes"] == b"30000"


def test_trailers_over_http11_with_te_trailers(demo_pods: Any, activator_proc: Any) -> None:
    (pod,) = demo_pods(PodBehaviour(name="p"))
    activator = activator_proc(pod)
    sock, reader = http1_connection(activator.port)
    with sock, reader:
        sock.sendall(b"GET /trailers HTTP/1.1\r\nHost: a.test\r\nTE: trailers\r\n\r\n")
        response = read_http1_response(reader)
    assert response.status == 200
    assert response.header("transfer-encoding") == "chunked"
    assert response.body == b"ok"
    assert ("x-trailer", "yes") in response.trailers


def test_trailers_via_nghttp(demo_pods: Any, activator_proc: Any) -> None:
    from support import require_tool, run

    (pod,) = demo_pods(PodBehaviour(name="p"))
    activator = activator_proc(pod)
    result = run(
        [require_tool("nghttp"), "-v", "-t", "10", activator.url + "/trailers"], timeout=20
    )
    assert result.returncode == 0, result.stderr
    trace = result.stdout.decode()
    assert "x-trailer: yes" in trace
    # The trailer arrives in a HEADERS frame after the body: after the DATA frame carrying "ok".
    assert trace.index("x-trailer: yes") > trace.index("recv DATA frame")


# -- incremental delivery ----------------------------------------------------------------------------


def test_stream_arrives_chunk_by_chunk_over_http2(demo_pods: Any, activator_proc: Any) -> None:
    (pod,) = demo_pods(PodBehaviour(name="p"))
    activator = activator_proc(pod)
    with RawH2Client(activator.port) as client:
        stream = client.request("/stream/5/200")
        state = client.streams[stream]
        assert client.read_until(lambda: b"chunk 0\n" in state.body)
        # The pod writes one chunk every 200 ms: when the first arrives the last cannot have.
        seen_at_first = bytes(state.body)
        response = client.response(stream)
    assert b"chunk 4" not in seen_at_first
    assert bytes(response.body) == b"".join(b"chunk %d\n" % i for i in range(5))
    assert response.data_frames >= 5


def test_stream_arrives_chunk_by_chunk_over_http11(demo_pods: Any, activator_proc: Any) -> None:
    (pod,) = demo_pods(PodBehaviour(name="p"))
    activator = activator_proc(pod)
    with socket.create_connection((LOOPBACK, activator.port), timeout=10) as sock:
        sock.sendall(b"GET /stream/5/200 HTTP/1.1\r\nHost: a.test\r\n\r\n")
        received = b""
        while b"chunk 0\n" not in received:
            data = sock.recv(65536)
            assert data, "connection closed early"
            received += data
        seen_at_first = received
        while not received.endswith(b"0\r\n\r\n"):
            data = sock.recv(65536)
            assert data, "connection closed before the chunked terminator"
            received += data
    assert b"chunk 4" not in seen_at_first
    assert b"transfer-encoding: chunked" in received.lower()
    assert all(b"chunk %d\n" % i in received for i in range(5))


def test_curl_no_buffer_streams(demo_pods: Any, activator_proc: Any) -> None:
    (pod,) = demo_pods(PodBehaviour(name="p"))
    activator = activator_proc(pod)
    result = curl("--http2-prior-knowledge", "-N", activator.url + "/stream/20/0")
    assert result.returncode == 0
    assert result.stdout == b"".join(b"chunk %d\n" % i for i in range(20))


# -- slow readers ------------------------------------------------------------------------------------

BIG = 64 * 1024 * 1024
RSS_GROWTH_LIMIT_KIB = 16 * 1024
# The reader takes a pause after every 256 KiB: at most ~17 MB/s, far below what the pod can send, so
# the activator is the one that has to hold back the pod (flow control), not buffer.
PACE_BYTES = 256 * 1024
PACE_PAUSE = 0.015


def _baseline_rss(activator: Any) -> int:
    # Warm the path (connections, buffers, code) so the baseline is not the cold process.
    for _ in range(3):
        assert (
            curl(
                "--http2-prior-knowledge", "-o", "/dev/null", activator.url + "/bytes/1000000"
            ).returncode
            == 0
        )
    return int(activator.rss_kib())


@pytest.mark.slow
def test_slow_http2_reader_keeps_activator_memory_bounded(
    demo_pod_procs: Any, activator_proc: Any
) -> None:
    (pod,) = demo_pod_procs(PodBehaviour(name="p"))
    activator = activator_proc(pod)
    baseline = _baseline_rss(activator)
    peak = baseline
    received = 0
    with RawH2Client(
        activator.port, stream_window=65535, connection_window=65535, auto_ack=False, timeout=20
    ) as client:
        stream = client.request(f"/bytes/{BIG}")
        state = client.streams[stream]
        next_pause = PACE_BYTES
        while not state.closed:
            assert client.read_until(lambda: len(state.body) > 0 or state.closed), "stalled"
            received += len(state.body)
            state.body.clear()  # keep the test's own memory flat
            if received >= next_pause:
                next_pause += PACE_BYTES
                time.sleep(PACE_PAUSE)  # a reader slower than the pod: the proxy must push back
                peak = max(peak, activator.rss_kib())
            client.ack(stream)
        assert state.ended
        assert state.reset_code is None
    assert received == BIG
    growth = peak - baseline
    assert growth < RSS_GROWTH_LIMIT_KIB, (
        f"activator RSS grew by {growth} KiB (from {baseline} KiB)"
    )


@pytest.mark.slow
def test_slow_http11_reader_keeps_activator_memory_bounded(
    demo_pod_procs: Any, activator_proc: Any
) -> None:
    (pod,) = demo_pod_procs(PodBehaviour(name="p"))
    activator = activator_proc(pod)
    baseline = _baseline_rss(activator)
    peak = baseline
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.settimeout(20)
        sock.connect((LOOPBACK, activator.port))
        sock.sendall(f"GET /bytes/{BIG} HTTP/1.1\r\nHost: a.test\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(4096)
            assert data
            head += data
        header_block, _, rest = head.partition(b"\r\n\r\n")
        assert header_block.startswith(b"HTTP/1.1 200")
        assert f"content-length: {BIG}".encode() in header_block.lower()
        received = len(rest)
        next_pause = PACE_BYTES
        while received < BIG:
            data = sock.recv(65536)
            assert data, f"closed after {received} bytes"
            received += len(data)
            if received >= next_pause:
                next_pause += PACE_BYTES
                time.sleep(PACE_PAUSE)
                peak = max(peak, activator.rss_kib())
    assert received == BIG
    growth = peak - baseline
    assert growth < RSS_GROWTH_LIMIT_KIB, (
        f"activator RSS grew by {growth} KiB (from {baseline} KiB)"
    )
