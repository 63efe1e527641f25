"""Client connections' timeouts over real sockets: an idle HTTP/2 or HTTP/1.1 connection is closed
after ``limits.client_idle_timeout`` (GOAWAY first on HTTP/2), a slowloris client that trickles its
request head gets a 408 after ``limits.client_header_timeout``, a connection that sends nothing is
closed, and a connection with a request in flight is never idle, however long the pod takes.

The timeouts are 2 s here; the sweep that enforces them runs once a second, so each is checked to
fire after its limit and within one more sweep (plus scheduling slack).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from support import LOOPBACK, RawH2Client, http1_connection, read_http1_response

LIMIT = 2.0
SLACK = 1.0 + 1.5  # one sweep interval, plus scheduling on a busy test machine


@pytest.fixture
def timed_activator(
    activator_proc: Callable[..., Any], demo_pods: Callable[..., Sequence[Any]], tmp_path: Path
) -> Any:
    """An activator with 2 s client timeouts in front of one demo pod."""
    (pod,) = demo_pods(1)
    config = tmp_path / "timeouts.yaml"
    config.write_text(
        f"limits: {{client_idle_timeout: {LIMIT:g}s, client_header_timeout: {LIMIT:g}s}}\n"
        "services:\n"
        f'  - {{name: demo, hosts: ["*"], endpoints: ["{LOOPBACK}:{pod.port}"]}}\n'
    )
    activator = activator_proc(config_path=config)
    activator.pod = pod
    return activator


def _closed_after(sock: socket.socket, deadline: float) -> tuple[bytes, float]:
    """Everything the activator sends until it closes the connection, and when it closed it."""
    received = b""
    started = time.monotonic()
    sock.settimeout(deadline)
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return received, time.monotonic() - started
        received += chunk


def test_idle_http2_connection_gets_goaway_then_close(timed_activator: Any) -> None:
    with RawH2Client(timed_activator.port) as client:
        stream = client.request("/")
        assert client.response(stream).status == 200
        started = time.monotonic()
        goaway = client.wait_goaway(timeout=LIMIT + SLACK)
        waited = time.monotonic() - started
        assert goaway is not None
        assert goaway.error_code == 0  # NO_ERROR: a graceful close, nothing was lost
        assert goaway.last_stream_id == stream
        assert LIMIT - 0.1 <= waited <= LIMIT + SLACK
        assert client.read_until(lambda: client.eof, timeout=SLACK)


def test_pings_alone_do_not_keep_an_http2_connection_open(timed_activator: Any) -> None:
    """As with Envoy's idle timeout, only streams are activity: a client that sends a PING every
    0.4 s and nothing else still gets GOAWAY once the limit has passed since its last request."""
    with RawH2Client(timed_activator.port) as client:
        stream = client.request("/")
        assert client.response(stream).status == 200
        started = time.monotonic()
        pings = 0
        while client.goaway is None and time.monotonic() - started < LIMIT + SLACK:
            client.conn.ping(pings.to_bytes(8, "big"))
            client.flush()
            pings += 1
            client.read_until(lambda: client.goaway is not None, timeout=0.4)
        waited = time.monotonic() - started
        assert client.goaway is not None, f"no GOAWAY after {pings} PINGs in {waited:.1f} s"
        assert client.goaway.error_code == 0
        assert client.goaway.last_stream_id == stream
        assert pings >= 4  # the connection was never quiet
        assert LIMIT - 0.1 <= waited <= LIMIT + SLACK


def test_a_new_stream_restarts_the_http2_idle_time(timed_activator: Any) -> None:
    """A request every 1.2 s (under the 2 s limit) keeps the connection: streams are activity."""
    with RawH2Client(timed_activator.port) as client:
        started = time.monotonic()
        while time.monotonic() - started < 2 * LIMIT + 1:
            stream = client.request("/")
            assert client.response(stream).status == 200
            assert client.goaway is None
            client.read_until(lambda: client.goaway is not None, timeout=1.2)
        assert client.goaway is None


def test_idle_http1_keep_alive_connection_is_closed(timed_activator: Any) -> None:
    sock, reader = http1_connection(timed_activator.port)
    with sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n")
        response = read_http1_response(reader)
        assert response.status == 200
        rest, waited = _closed_after(sock, LIMIT + SLACK)
        assert rest == b""
        assert LIMIT - 0.1 <= waited <= LIMIT + SLACK


def test_slowloris_request_head_gets_408_and_reaches_no_pod(timed_activator: Any) -> None:
    with socket.create_connection((LOOPBACK, timed_activator.port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: example.test\r\n")
        started = time.monotonic()
        sock.settimeout(0.5)
        received = b""
        # One header byte every 0.4 s: the connection is never quiet, the head never ends.
        while time.monotonic() - started < LIMIT + SLACK and not received:
            try:
                sock.sendall(b"x")
                received = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        waited = time.monotonic() - started
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert b"request head not received within 2 s" in received
    assert LIMIT - 0.1 <= waited <= LIMIT + SLACK
    assert timed_activator.pod.stats()["requests"] == 0


def test_a_connection_that_sends_nothing_is_closed(timed_activator: Any) -> None:
    with socket.create_connection((LOOPBACK, timed_activator.port)) as sock:
        received, waited = _closed_after(sock, LIMIT + SLACK)
    assert received == b""
    assert LIMIT - 0.1 <= waited <= LIMIT + SLACK


def test_a_request_in_flight_is_never_idle(timed_activator: Any) -> None:
    """The pod takes twice the idle timeout to answer, and nothing crosses the connection
    meanwhile: the response still arrives, on HTTP/2 and on HTTP/1.1."""
    delay_ms = int(2 * LIMIT * 1000)
    with RawH2Client(timed_activator.port, timeout=LIMIT * 2 + SLACK) as client:
        stream = client.request(f"/delay/{delay_ms}")
        response = client.response(stream, timeout=LIMIT * 2 + SLACK)
        assert (response.status, bytes(response.body)) == (200, b"delayed %d ms\n" % delay_ms)
        assert client.goaway is None
    sock, reader = http1_connection(timed_activator.port, timeout=LIMIT * 2 + SLACK)
    with sock:
        sock.sendall(f"GET /delay/{delay_ms} HTTP/1.1\r\nHost: example.test\r\n\r\n".encode())
        response1 = read_http1_response(reader)
    assert (response1.status, response1.body) == (200, b"delayed %d ms\n" % delay_ms)


def test_defaults_are_an_hour_idle_and_30_s_for_a_head(
    activator_proc: Callable[..., Any], demo_pods: Callable[..., Sequence[Any]]
) -> None:
    """Without limits in the config nothing is closed early: a connection quiet for 3 s (past
    the tests' 2 s, far below the defaults) still serves its next request."""
    (pod,) = demo_pods(1)
    activator = activator_proc(pod)
    with RawH2Client(activator.port) as client:
        assert client.response(client.request("/")).status == 200
        time.sleep(3)
        assert client.response(client.request("/")).status == 200
        assert client.goaway is None


def test_a_slow_pipelined_head_waits_for_the_response_before_it(timed_activator: Any) -> None:
    """Request 1 takes twice the header timeout at the pod; the head of request 2, pipelined
    behind it, stops half way. Response 1 arrives whole, then the 408 for request 2, in order."""
    delay_ms = int(2 * LIMIT * 1000)
    sock, reader = http1_connection(timed_activator.port, timeout=3 * LIMIT + SLACK)
    with sock:
        sock.sendall(
            f"GET /delay/{delay_ms} HTTP/1.1\r\nHost: example.test\r\n\r\n".encode()
            + b"GET / HTTP/1.1\r\nHost: exa"
        )
        first = read_http1_response(reader)
        started = time.monotonic()
        second = read_http1_response(reader)
        waited = time.monotonic() - started
    assert (first.status, first.body) == (200, b"delayed %d ms\n" % delay_ms)
    assert second.status == 408
    assert LIMIT - 0.1 <= waited <= LIMIT + SLACK
