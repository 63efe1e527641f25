"""The upstream pool against real pods over loopback: stream limits, dead-connection detection,
timeouts. The activator runs in-process; pods are DemoPods; clients are httpx."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from activator.config import parse_config
from activator.demopod import DemoPod, PodBehaviour
from activator.io import app as app_module
from activator.io.app import Activator
from activator.io.upstream import PodPool
from tests.fuzz.scripted_pod import GOOD_BODY, Script, ScriptedPod
from tests.io.faultproxy import FaultProxy

Start = Callable[..., Awaitable[Activator]]


@pytest.fixture
async def start_activator() -> AsyncIterator[Start]:
    started: list[Activator] = []

    async def start(endpoints: list[str], extra: str = "", upstream: str = "h2c") -> Activator:
        endpoints_yaml = "[" + ", ".join(f'"{e}"' for e in endpoints) + "]"
        config = parse_config(
            "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nservices:\n"
            f"  - name: web\n    hosts: ['*']\n    upstream: {upstream}\n"
            f"    endpoints: {endpoints_yaml}\n{extra}"
        )
        activator = Activator(config, drain_timeout=1.0)
        await activator.start()
        started.append(activator)
        return activator

    yield start
    for activator in started:
        await activator.stop()


@pytest.fixture
async def pods() -> AsyncIterator[Callable[..., Awaitable[DemoPod]]]:
    running: list[DemoPod] = []

    async def make(**behaviour: object) -> DemoPod:
        pod = DemoPod(PodBehaviour(**behaviour))  # type: ignore[arg-type]
        await pod.start()
        running.append(pod)
        return pod

    yield make
    for pod in running:
        await pod.stop()


def client(activator: Activator) -> httpx.AsyncClient:
    # HTTP/2 with prior knowledge: every request is a stream on one connection.
    return httpx.AsyncClient(
        http1=False, http2=True, base_url=f"http://127.0.0.1:{activator.listen_port}", timeout=20
    )


async def test_pod_max_concurrent_streams_is_respected_with_more_connections(
    start_activator: Start, pods: Callable[..., Awaitable[DemoPod]]
) -> None:
    pod = await pods(name="narrow", max_concurrent_streams=5)
    activator = await start_activator([f"127.0.0.1:{pod.port}"])
    async with client(activator) as c:
        responses = await asyncio.gather(*(c.get("/delay/200") for _ in range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    # 20 concurrent streams, 5 per connection: the pool had to open several connections, and
    # the pod never saw a refused stream (it would refuse the 6th on a connection).
    assert pod.stats.connections_total >= 4
    assert pod.stats.refused == 0
    assert pod.stats.max_in_flight >= 10


async def test_partitioned_pod_connection_is_found_by_ping_and_retired(
    start_activator: Start,
    pods: Callable[..., Awaitable[DemoPod]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pod = await pods(name="far")
    proxy = FaultProxy("127.0.0.1", pod.port)
    await proxy.start()
    original = app_module.upstream_settings
    monkeypatch.setattr(
        app_module,
        "upstream_settings",
        lambda service: dataclasses.replace(original(service), ping_after=1.0),
    )
    activator = await start_activator([f"127.0.0.1:{proxy.port}"])
    try:
        async with client(activator) as c:
            assert (await c.get("/")).status_code == 200
            proxy.frozen = True
            # The request is lost in the partition; only the PING timeout can end it.
            response = await asyncio.wait_for(c.get("/"), timeout=15)
        assert response.status_code == 502
        pool = activator.services["web"].pools[f"127.0.0.1:{proxy.port}"]
        assert pool.h2 == []  # the dead connection was retired
    finally:
        await proxy.stop()


async def test_response_start_timeout_gives_504_and_cancels_the_pod_stream(
    start_activator: Start, pods: Callable[..., Awaitable[DemoPod]]
) -> None:
    pod = await pods(name="slow")
    activator = await start_activator(
        [f"127.0.0.1:{pod.port}"], "    timeouts: {response_start: 1s}\n"
    )
    async with client(activator) as c:
        response = await c.get("/delay/5000")
        assert response.status_code == 504
        assert "did not start a response" in response.text
        # The pod learns through RST_STREAM(CANCEL), not by being left to finish.
        for _ in range(100):
            if any(r.outcome == "reset" for r in pod.stats.log):
                break
            await asyncio.sleep(0.05)
        assert any(r.outcome == "reset" and r.error_code == 8 for r in pod.stats.log)


async def test_idle_timeout_cuts_a_silent_stream_but_not_a_chatty_one(
    start_activator: Start, pods: Callable[..., Awaitable[DemoPod]]
) -> None:
    pod = await pods(name="chatty")
    activator = await start_activator([f"127.0.0.1:{pod.port}"], "    timeouts: {idle: 2s}\n")
    async with client(activator) as c:
        # 6 chunks 500 ms apart: 3 s in all, never 2 s silent.
        chatty = await c.get("/stream/6/500")
        assert chatty.status_code == 200
        assert chatty.text.count("chunk") == 6
        silent = await c.get("/delay/6000")
        assert silent.status_code == 504
        assert "no data" in silent.text


def short_pod_idle_timeout(monkeypatch: pytest.MonkeyPatch, protocol: str = "h2c") -> None:
    """Pod connections idle for 1 s are closed (the default is 60 s); the sweep that counts
    idleness runs once a second."""
    monkeypatch.setattr(
        app_module,
        "upstream_settings",
        lambda service: app_module.UpstreamSettings(protocol=protocol, idle_timeout=1.0),
    )


async def wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


@pytest.fixture
async def idle_h2_pool(
    start_activator: Start,
    pods: Callable[..., Awaitable[DemoPod]],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Activator, DemoPod, PodPool]:
    """An activator in front of one h2c pod whose connections idle out after 1 s, and its pool."""
    short_pod_idle_timeout(monkeypatch)
    pod = await pods(name="idle")
    activator = await start_activator([f"127.0.0.1:{pod.port}"])
    return activator, pod, activator.services["web"].pools[f"127.0.0.1:{pod.port}"]


async def test_an_idle_pod_connection_is_closed_and_the_next_request_opens_another(
    idle_h2_pool: tuple[Activator, DemoPod, PodPool],
) -> None:
    activator, pod, pool = idle_h2_pool
    async with client(activator) as c:
        assert (await c.get("/")).status_code == 200
        assert len(pool.h2) == 1
        # Idle from now: closed after 1 to 2 sweeps past the timeout, never before the timeout.
        await asyncio.sleep(0.8)
        assert len(pool.h2) == 1
        assert await wait_until(lambda: pool.h2 == [], 4.0)
        assert (await c.get("/")).status_code == 200
    assert pod.stats.connections_total == 2


async def seconds_until(condition: Callable[[], bool], limit: float) -> float:
    """How long until ``condition()`` holds, polled every 10 ms (at most ``limit`` seconds)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(int(limit / 0.01)):
        if condition():
            return loop.time() - started
        await asyncio.sleep(0.01)
    raise AssertionError(f"still not so after {limit} s")


# The timeout is 1 s. The connection is measured idle from when the client got its response,
# a little after the pod's stream ended, so the real idle time is a little longer.
NEVER_EARLY = 1.0 - 0.05


async def test_a_pod_connection_busy_at_a_sweep_is_not_closed_before_its_idle_timeout(
    idle_h2_pool: tuple[Activator, DemoPod, PodPool],
) -> None:
    """A stream open when the sweep runs: idle time starts once it ends, not at that sweep."""
    activator, pod, pool = idle_h2_pool
    async with client(activator) as c:
        # Each response spans a sweep and ends at another point between two sweeps.
        for delay_ms in (1300, 1700):
            assert (await c.get(f"/delay/{delay_ms}")).status_code == 200
            assert len(pool.h2) == 1
            assert await seconds_until(lambda: pool.h2 == [], 4.0) >= NEVER_EARLY
    assert pod.stats.connections_total == 2


async def test_a_pod_connection_in_steady_use_is_not_closed_as_idle(
    idle_h2_pool: tuple[Activator, DemoPod, PodPool],
) -> None:
    activator, pod, pool = idle_h2_pool
    async with client(activator) as c:
        # A short request every 300 ms for 3.3 s: never a stream open at a sweep, never idle.
        for _ in range(11):
            assert (await c.get("/")).status_code == 200
            await asyncio.sleep(0.3)
        assert len(pool.h2) == 1
    assert pod.stats.connections_total == 1


@pytest.fixture
async def idle_h1_pool(
    start_activator: Start,
    pods: Callable[..., Awaitable[DemoPod]],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Activator, DemoPod, PodPool]:
    """An activator in front of one HTTP/1.1 pod whose idle connections close after 1 s."""
    short_pod_idle_timeout(monkeypatch, protocol="http1")
    pod = await pods(name="plain")
    activator = await start_activator([f"127.0.0.1:{pod.port}"], upstream="http1")
    return activator, pod, activator.services["web"].pools[f"127.0.0.1:{pod.port}"]


async def test_an_idle_http1_pod_connection_is_closed(
    idle_h1_pool: tuple[Activator, DemoPod, PodPool],
) -> None:
    activator, pod, pool = idle_h1_pool
    async with client(activator) as c:
        assert (await c.get("/")).status_code == 200
        assert len(pool.h1_idle) == 1
        await asyncio.sleep(0.8)
        assert len(pool.h1_idle) == 1  # kept alive for the next request
        assert await wait_until(lambda: pool.h1_idle == [] and pool.h1_count == 0, 4.0)
        assert (await c.get("/")).status_code == 200
    assert pod.stats.connections_total == 2


async def test_an_http1_pod_connection_is_not_closed_before_its_idle_timeout(
    idle_h1_pool: tuple[Activator, DemoPod, PodPool],
) -> None:
    """Idle time starts when the connection joins the idle list, not at the sweep before."""
    activator, pod, pool = idle_h1_pool
    async with client(activator) as c:
        for pause in (0.3, 0.6):  # requests at two points between sweeps
            await asyncio.sleep(pause)
            assert (await c.get("/")).status_code == 200
            assert len(pool.h1_idle) == 1
            idle = await seconds_until(lambda: pool.h1_idle == [] and pool.h1_count == 0, 4.0)
            assert idle >= NEVER_EARLY
    assert pod.stats.connections_total == 2


async def test_dead_pod_is_marked_not_ready_and_traffic_moves(
    start_activator: Start, pods: Callable[..., Awaitable[DemoPod]]
) -> None:
    alive = await pods(name="alive")
    doomed = await pods(name="doomed")
    activator = await start_activator([f"127.0.0.1:{alive.port}", f"127.0.0.1:{doomed.port}"])
    async with client(activator) as c:
        first = await asyncio.gather(*(c.get("/") for _ in range(20)))
        assert {r.headers["x-pod"] for r in first} == {"alive", "doomed"}
        await doomed.stop()
        # Connect failures are retried on another pod: no client sees the dead one.
        after = await asyncio.gather(*(c.get("/") for _ in range(40)))
    assert all(r.status_code == 200 for r in after)
    assert {r.headers["x-pod"] for r in after[-20:]} == {"alive"}
    pods_state = activator.services["web"].throttle.pods
    assert pods_state[f"127.0.0.1:{doomed.port}"].ready is False


async def test_goaway_before_a_protocol_error_in_the_same_read_still_replays(
    start_activator: Start,
) -> None:
    """A pod sends GOAWAY(last_stream_id=0), then, in the same TCP read, a frame that breaks
    HTTP/2 (HEADERS on a stream never opened). The GOAWAY declared the request unprocessed, so it is
    replayed on a new connection and answered there; the fault that follows ends the first
    connection but does not turn the request into a 502. (The pod is tests/fuzz's scripted pod:
    its first connection plays the frames, later ones answer 200 "ok".)"""
    pod = ScriptedPod()
    await pod.start()
    try:
        goaway = struct.pack(">HBBBLLL", 0, 8, 0x7, 0, 0, 0, 0)
        headers_on_idle_stream_3 = struct.pack(">HBBBL", 0, 1, 0x1, 0x5, 3) + b"\x88"
        pod.arm(
            Script(
                settings=struct.pack(">HBBBL", 0, 0, 0x4, 0, 0),
                steps=[goaway + headers_on_idle_stream_3],
            )
        )
        activator = await start_activator([f"127.0.0.1:{pod.port}"])
        async with client(activator) as c:
            response = await c.get("/")
        assert (response.status_code, response.content) == (200, GOOD_BODY)
        assert activator.services["web"].replays_total.get("goaway") == 1
    finally:
        await pod.stop()


async def test_content_after_a_204_never_reaches_an_http11_client(start_activator: Start) -> None:
    """A pod answers 204 and then sends DATA anyway, shaped as a second response. A 204 has no
    content (RFC 9110 §6.4.1): written to an HTTP/1.1 keep-alive connection, those bytes would be
    read as the answer to the client's next request. The pod's stream is reset instead, and the
    client's connection ends after the 204."""
    pod = ScriptedPod()
    await pod.start()
    try:
        smuggled = b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled"
        status_204 = struct.pack(">HBBBL", 0, 1, 0x1, 0x4, 1) + b"\x89"
        data = struct.pack(">HBBBL", 0, len(smuggled), 0x0, 0x1, 1) + smuggled
        empty_settings = struct.pack(">HBBBL", 0, 0, 0x4, 0, 0)
        pod.arm(Script(settings=empty_settings, steps=[status_204 + data]))
        activator = await start_activator([f"127.0.0.1:{pod.port}"])
        reader, writer = await asyncio.open_connection("127.0.0.1", activator.listen_port)
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        async with asyncio.timeout(10):
            received = await reader.read(-1)
        writer.close()
        assert received.startswith(b"HTTP/1.1 204 ")
        assert b"smuggled" not in received
    finally:
        await pod.stop()


async def test_a_stream_the_pod_began_to_answer_is_not_replayed_after_its_goaway(
    start_activator: Start,
) -> None:
    """A pod sends a 204's headers on stream 1, then GOAWAY(last_stream_id=0), which says stream 1
    was not processed. It was - its response began - so it is not replayed (the client would get a
    second response's body after the first's headers); it finishes on its connection."""
    pod = ScriptedPod()
    await pod.start()
    try:
        status_204 = struct.pack(">HBBBL", 0, 1, 0x1, 0x4, 1) + b"\x89"
        goaway = struct.pack(">HBBBLLL", 0, 8, 0x7, 0, 0, 0, 0)
        end = struct.pack(">HBBBL", 0, 0, 0x0, 0x1, 1)
        empty_settings = struct.pack(">HBBBL", 0, 0, 0x4, 0, 0)
        pod.arm(Script(settings=empty_settings, steps=[status_204 + goaway, 0.05, end]))
        activator = await start_activator([f"127.0.0.1:{pod.port}"])
        async with client(activator) as c:
            response = await c.get("/")
        assert (response.status_code, response.content) == (204, b"")
        assert activator.services["web"].replays_total == {}
    finally:
        await pod.stop()


Answer = Callable[[bytes, int, int], bytes]


@pytest.fixture
async def raw_http11_pod() -> AsyncIterator[Callable[[Answer], Awaitable[int]]]:
    """Starts an HTTP/1.1 pod written byte by byte: for each request head it writes
    ``answer(head, connection number, request number on that connection)``. Returns its port."""
    servers: list[asyncio.Server] = []
    writers: list[asyncio.StreamWriter] = []

    async def start(answer: Answer) -> int:
        connections = 0

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            connection = connections
            writers.append(writer)
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                for n in itertools.count(1):
                    writer.write(answer(await reader.readuntil(b"\r\n\r\n"), connection, n))

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
    for writer in writers:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    for server in servers:
        await server.wait_closed()


async def test_an_unsolicited_http11_response_never_reaches_the_next_request(
    start_activator: Start, raw_http11_pod: Callable[[Answer], Awaitable[int]]
) -> None:
    """An HTTP/1.1 pod answers the first request, then starts a second response nobody asked for
    (its head now, its body later). The connection is closed on it, so the next request - another
    client's, on a keep-alive connection - gets its own response, not the leftover one."""

    def answer(head: bytes, connection: int, n: int) -> bytes:
        if (connection, n) == (1, 1):
            first = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst"
            return first + b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\n"  # and no body yet
        leftover = b"smuggled" if connection == 1 else b""  # for whoever reads on
        return leftover + b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond"

    port = await raw_http11_pod(answer)
    activator = await start_activator([f"127.0.0.1:{port}"], upstream="http1")
    async with client(activator) as c:
        first = await c.get("/")
        await asyncio.sleep(0.1)  # the unsolicited head arrives on the idle connection
        second = await c.get("/")
    assert (first.status_code, first.content) == (200, b"first")
    assert (second.status_code, second.content) == (200, b"second")


@pytest.mark.parametrize("framing", [b"content-length: 2", b"transfer-encoding: chunked"])
async def test_head_through_an_http11_pod_ends_at_the_response_head(
    start_activator: Start, raw_http11_pod: Callable[[Answer], Awaitable[int]], framing: bytes
) -> None:
    """A HEAD response carries the framing a GET's would (content-length, or chunked) and no body
    (RFC 9110 §9.3.2). The activator ends it at its head instead of waiting for a body that never
    comes, and the requests after it are served."""

    def answer(head: bytes, connection: int, n: int) -> bytes:
        if head.startswith(b"HEAD "):
            return b"HTTP/1.1 200 OK\r\n" + framing + b"\r\n\r\n"
        return b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

    port = await raw_http11_pod(answer)
    activator = await start_activator([f"127.0.0.1:{port}"], upstream="http1")
    async with client(activator) as c, asyncio.timeout(5):
        for method in ("HEAD", "GET", "HEAD", "GET"):
            response = await c.request(method, "/")
            body = b"" if method == "HEAD" else b"ok"
            assert (response.status_code, response.content) == (200, body), method


async def test_an_interim_http11_response_does_not_end_the_exchange(
    start_activator: Start, raw_http11_pod: Callable[[Answer], Awaitable[int]]
) -> None:
    """An HTTP/1.1 pod sends 103 Early Hints, then 100 Continue, then its response. Each 1xx is a
    message of its own to the parser; the response is the one after them (RFC 9110 §15.2)."""

    def answer(head: bytes, connection: int, n: int) -> bytes:
        return (
            b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n"
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
        )

    port = await raw_http11_pod(answer)
    activator = await start_activator([f"127.0.0.1:{port}"], upstream="http1")
    async with client(activator) as c, asyncio.timeout(5):
        for _ in range(2):
            response = await c.get("/")
            assert (response.status_code, response.content) == (200, b"ok")


async def test_an_http11_pods_204_loses_its_content_length(
    start_activator: Start, raw_http11_pod: Callable[[Answer], Awaitable[int]]
) -> None:
    """An HTTP/1.1 pod's 204 carries a Content-Length it must not have (RFC 9110 §8.6). It is not
    passed on: an HTTP/2 client would wait for the content and fail the stream."""

    def answer(head: bytes, connection: int, n: int) -> bytes:
        return b"HTTP/1.1 204 No Content\r\ncontent-length: 2\r\n\r\n"

    port = await raw_http11_pod(answer)
    activator = await start_activator([f"127.0.0.1:{port}"], upstream="http1")
    async with client(activator) as c, asyncio.timeout(5):
        response = await c.get("/")
    assert (response.status_code, response.content) == (204, b"")
    assert "content-length" not in response.headers
