"""Faults: pods dying under load, no pod reachable, oversized header blocks, malformed requests and
broken HTTP/2 framing from a client. A fault must stay local: one stream, one connection or the
streams that were on a dead pod - never the whole proxy.
"""

from __future__ import annotations

import socket
import subprocess
import time
from typing import Any

import pytest
from support import (
    LOOPBACK,
    RawH2Client,
    curl,
    free_port,
    h2load,
    h2load_command,
    http1_connection,
    parse_h2load,
    read_http1_response,
)

from activator.demopod import PodBehaviour

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
LOAD_CONCURRENCY = 4 * 10  # h2load -c 4 -m 10: at most this many streams in flight at once


def _wait_for_requests(pod: Any, count: int, *, timeout: float = 20.0) -> None:
    """Poll the pod's stats until it served ``count`` requests (the load is under way)."""
    deadline = time.monotonic() + timeout
    while int(pod.stats()["requests"]) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"pod {pod.name} served fewer than {count} requests in {timeout}s")
        time.sleep(0.02)


def _load_with_pod_dying(activator: Any, victim: Any, kill: Any) -> tuple[int, str]:
    command = h2load_command(activator.url + "/delay/5", requests=4000, clients=4, streams=10)
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as load:
        try:
            _wait_for_requests(victim, 100)
            kill()
            output, _ = load.communicate(timeout=90)
        finally:
            if load.poll() is None:
                load.kill()
    text = output.decode("utf-8", "replace")
    result = parse_h2load(text)
    return result.failed, text


@pytest.mark.parametrize("how", ["sigkill", "stop"])
def test_pod_dying_under_load_fails_only_its_in_flight_streams(
    demo_pods: Any, demo_pod_procs: Any, activator_proc: Any, how: str
) -> None:
    if how == "sigkill":
        pods = demo_pod_procs(*(PodBehaviour(name=f"pod-{i}") for i in range(3)))
        kill = pods[0].kill
    else:
        pods = demo_pods(*(PodBehaviour(name=f"pod-{i}") for i in range(3)))
        kill = pods[0].stop
    activator = activator_proc(*pods)
    failed, output = _load_with_pod_dying(activator, pods[0], kill)
    # Only streams in flight on the dead pod may fail: at most the load's concurrency, and far
    # fewer in practice (a third of it).
    assert failed <= LOAD_CONCURRENCY, output[-3000:]
    # Afterwards the dead pod gets no work: everything succeeds on the other two.
    after = h2load(activator.url + "/", requests=2000, clients=4, streams=10)
    assert after.failed == 0, after.describe()
    assert after.errored == 0, after.describe()
    assert after.status_2xx == 2000, after.describe()
    (service,) = activator.services()
    dead = next(p for p in service["pods"] if p["address"].endswith(f":{pods[0].port}"))
    assert dead["ready"] is False


@pytest.mark.parametrize("flag", ["--http2-prior-knowledge", "--http1.1"])
def test_no_pod_listening_answers_502_without_hanging(activator_proc: Any, flag: str) -> None:
    # Two pods that refuse connections. curl's --max-time bounds the wait: a hang shows as exit 28.
    activator = activator_proc(f"h2c://{LOOPBACK}:{free_port()}", f"h2c://{LOOPBACK}:{free_port()}")
    for _attempt in range(3):  # the first request and the ones after the pods were marked failed
        result = curl(flag, "-w", "\n%{http_code}", activator.url + "/", timeout=8)
        assert result.returncode == 0, f"curl exit {result.returncode}: {result.stderr!r}"
        body, _, status = result.stdout.decode().rpartition("\n")
        assert status == "502", body
        assert "pod" in body


def test_all_pods_killed_answers_502_without_hanging(
    demo_pod_procs: Any, activator_proc: Any
) -> None:
    pods = demo_pod_procs(*(PodBehaviour(name=f"pod-{i}") for i in range(2)))
    activator = activator_proc(*pods)
    warm = h2load(activator.url + "/", requests=100, clients=2, streams=5)
    assert warm.status_2xx == 100, warm.describe()
    for pod in pods:
        pod.kill()
    for _attempt in range(3):
        result = curl(
            "--http2-prior-knowledge", "-w", "\n%{http_code}", activator.url + "/", timeout=8
        )
        assert result.returncode == 0, f"curl exit {result.returncode}: {result.stderr!r}"
        assert result.stdout.decode().rpartition("\n")[2] == "502"


# -- header blocks -----------------------------------------------------------------------------------


def test_oversized_header_block_gets_431_on_that_stream_only(
    demo_pods: Any, activator_proc: Any
) -> None:
    (pod,) = demo_pods(PodBehaviour(name="p"))
    activator = activator_proc(pod)
    with RawH2Client(activator.port) as client:
        big = client.request("/", headers=[("x-big", "a" * 70_000)])
        small = client.request("/bytes/7")
        big_response = client.response(big)
        small_response = client.response(small)
        goaway = client.goaway
    assert goaway is None, f"the whole connection was closed: {goaway}"
    assert big_response.status == 431
    assert small_response.status == 200
    assert len(small_response.body) == 7
    assert all(
        e["path"] != "/" for e in pod.stats()["log"]
    )  # the big request never reached the pod


def test_oversized_header_block_after_settings_exchange_gets_431(
    demo_pods: Any, activator_proc: Any
) -> None:
    # Same, with the client waiting until the activator's SETTINGS (MAX_HEADER_LIST_SIZE 1 MiB) are
    # in force before sending the large block.
    (pod,) = demo_pods(PodBehaviour(name="p"))
    activator = activator_proc(pod)
    with RawH2Client(activator.port) as client:
        assert client.wait_settings()
        big = client.request("/", headers=[("x-big", "a" * 70_000)])
        big_response = client.response(big)
        assert client.goaway is None, f"the whole connection was closed: {client.goaway}"
        assert big_response.status == 431
        after = client.request("/bytes/3")
        assert client.response(after).status == 200


def test_header_block_just_under_the_limit_is_forwarded(
    demo_pods: Any, activator_proc: Any
) -> None:
    (pod,) = demo_pods(PodBehaviour(name="p"))
    activator = activator_proc(pod)
    value = "b" * 40_000
    with RawH2Client(activator.port) as client:
        stream = client.request("/headers", headers=[("x-large", value)])
        response = client.response(stream)
    assert response.status == 200
    assert b'"x-large": ["' + value.encode() + b'"]' in bytes(response.body)


def test_oversized_header_block_over_http11_gets_431(demo_pods: Any, activator_proc: Any) -> None:
    (pod,) = demo_pods(PodBehaviour(name="p"))
    activator = activator_proc(pod)
    result = curl(
        "--http1.1", "-H", "x-big: " + "a" * 70_000, "-w", "\n%{http_code}", activator.url + "/"
    )
    assert result.stdout.decode().rpartition("\n")[2] == "431", result
    # The listener is unharmed.
    assert curl("--http1.1", activator.url + "/").stdout == b"hello from p\n"


# -- malformed input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test\r\nno colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # no Host (RFC 9112 §3.2)
    ],
    ids=["not-http", "bad-field", "conflicting-length", "bad-chunk", "no-host"],
)
def test_malformed_http11_request_gets_400(
    demo_pods: Any, activator_proc: Any, request_bytes: bytes
) -> None:
    (pod,) = demo_pods(PodBehaviour(name="p"))
    activator = activator_proc(pod)
    sock, reader = http1_connection(activator.port)
    with sock, reader:
        sock.sendall(request_bytes)
        response = read_http1_response(reader)
        assert response.status == 400
        assert reader.read() == b""  # then the connection is closed
    assert curl("--http1.1", activator.url + "/").stdout == b"hello from p\n"


def test_garbage_after_h2_preface_gets_goaway_other_connections_unaffected(
    demo_pods: Any, activator_proc: Any
) -> None:
    (pod,) = demo_pods(PodBehaviour(name="p"))
    activator = activator_proc(pod)
    with RawH2Client(activator.port) as bystander:
        # A stream in flight on another connection while the bad one breaks.
        slow = bystander.request("/delay/300")
        with socket.create_connection((LOOPBACK, activator.port), timeout=10) as bad:
            bad.sendall(PREFACE + b"\x00\x00\x05\x04\x00\x00\x00\x00\x00" + b"garbage!" * 64)
            received = b""
            while True:  # until the activator closes (bounded by the socket timeout)
                chunk = bad.recv(65536)
                if not chunk:
                    break
                received += chunk
        goaway = _find_goaway(received)
        assert goaway is not None, received
        _last_stream_id, error_code = goaway
        assert error_code != 0  # a connection error (here FRAME_SIZE_ERROR, RFC 9113 §6.5)
        response = bystander.response(slow)
        assert response.status == 200
        assert bytes(response.body) == b"delayed 300 ms\n"
        again = bystander.request("/bytes/4")
        assert bystander.response(again).status == 200
    assert curl("--http2-prior-knowledge", activator.url + "/").stdout == b"hello from p\n"


def test_garbage_instead_of_settings_gets_goaway(demo_pods: Any, activator_proc: Any) -> None:
    (pod,) = demo_pods(PodBehaviour(name="p"))
    activator = activator_proc(pod)
    with socket.create_connection((LOOPBACK, activator.port), timeout=10) as bad:
        # A DATA frame on stream 0 is a connection error of type PROTOCOL_ERROR (RFC 9113 §6.1).
        bad.sendall(
            PREFACE
            + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
            + b"\x00\x00\x03\x00\x00\x00\x00\x00\x00abc"
        )
        received = b""
        while True:
            chunk = bad.recv(65536)
            if not chunk:
                break
            received += chunk
    goaway = _find_goaway(received)
    assert goaway is not None, received
    assert goaway[1] == 0x1  # PROTOCOL_ERROR
    assert curl("--http2-prior-knowledge", activator.url + "/").stdout == b"hello from p\n"


def _find_goaway(data: bytes) -> tuple[int, int] | None:
    """(last_stream_id, error_code) of the first GOAWAY frame in a server's byte stream."""
    offset = 0
    while offset + 9 <= len(data):
        length = int.from_bytes(data[offset : offset + 3], "big")
        frame_type = data[offset + 3]
        payload = data[offset + 9 : offset + 9 + length]
        if frame_type == 0x7 and len(payload) >= 8:
            last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            return last, int.from_bytes(payload[4:8], "big")
        offset += 9 + length
    return None


# -- graceful stop -----------------------------------------------------------------------------------


def test_sigterm_finishes_in_flight_requests_then_exits(
    demo_pods: Any, activator_proc: Any
) -> None:
    import signal

    (pod,) = demo_pods(PodBehaviour(name="p"))
    activator = activator_proc(pod, drain_timeout=10.0)
    with RawH2Client(activator.port) as client:
        stream = client.request("/delay/800")
        sock, reader = http1_connection(activator.port)
        with sock, reader:
            sock.sendall(b"GET /delay/800 HTTP/1.1\r\nHost: a.test\r\n\r\n")
            deadline = time.monotonic() + 10
            while int(pod.stats()["in_flight"]) < 2:
                assert time.monotonic() < deadline, "requests never reached the pod"
                time.sleep(0.01)
            activator.process.send_signal(signal.SIGTERM)
            # HTTP/2: GOAWAY naming the in-flight stream (RFC 9113 §6.8), then its full response.
            goaway = client.wait_goaway()
            assert goaway is not None
            assert goaway.error_code == 0
            assert goaway.last_stream_id >= stream
            response = client.response(stream)
            assert response.status == 200
            assert bytes(response.body) == b"delayed 800 ms\n"
            assert response.reset_code is None
            # HTTP/1.1: the response, marked as the last on the connection.
            h1 = read_http1_response(reader)
            assert (h1.status, h1.body) == (200, b"delayed 800 ms\n")
            assert h1.header("connection") == "close"
    assert activator.process.wait(15) == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((LOOPBACK, activator.port), timeout=2).close()
