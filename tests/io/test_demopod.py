"""The demo pod against real clients: httpx, curl, nghttp, h2load, raw sockets and a raw h2 client.

Every pod listens on 127.0.0.1 port 0. Nothing here measures time: routes that wait (/delay,
/stream) only make a stream stay in flight, and tests wait for events, never for a clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import httpx
import pytest

from activator.demopod import DemoPod, PodBehaviour, make_server_ssl_context

REPO_ROOT = Path(__file__).resolve().parents[2]
CANCEL = 0x8
INTERNAL_ERROR = 0x2
REFUSED_STREAM = 0x7
# A safety net against hangs, not a deadline under test.
EVENT_TIMEOUT = 10.0

StartPod = Callable[..., Awaitable[DemoPod]]


def expected_fill(size: int) -> bytes:
    """Generated bodies repeat bytes 0x00..0xff."""
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path


@pytest.fixture
async def start_pod() -> AsyncIterator[StartPod]:
    pods: list[DemoPod] = []

    async def start(ssl_context: ssl.SSLContext | None = None, **fields: Any) -> DemoPod:
        pod = DemoPod(PodBehaviour(**fields), ssl=ssl_context)
        await pod.start()
        pods.append(pod)
        return pod

    yield start
    for pod in pods:
        await pod.stop()


async def run_tool(*argv: str, stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(EVENT_TIMEOUT):
            out, err = await process.communicate(stdin)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out, err


# ---------------------------------------------------------------------------------------------
# A raw HTTP/2 client


@dataclass
class StreamState:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    ended: bool = False
    reset_code: int | None = None
    largest_data_frame: int = 0

    @property
    def status(self) -> int | None:
        for name, value in self.headers:
            if name == b":status":
                return int(value)
        return None

    def header(self, name: bytes) -> bytes | None:
        return dict(self.headers).get(name)

    @property
    def got_anything(self) -> bool:
        return bool(self.headers or self.data or self.ended or self.reset_code is not None)


class RawH2:
    """An h2 client over a real socket for frame-level checks.

    GOAWAY frames are taken out of the byte stream before h2 sees them and recorded here: h2
    moves its connection state to CLOSED on a GOAWAY and then rejects every later frame, so it
    could not show the streams at or below last_stream_id finishing, which is what is tested.
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.authority = f"127.0.0.1:{port}".encode()
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.streams: dict[int, StreamState] = {}
        self.goaways: list[tuple[int, int]] = []
        self.eof = False
        self.pings_acked = 0
        self.settings_received = False
        self._buffer = b""

    @classmethod
    async def open(
        cls, port: int, *, initial_window_size: int | None = None, wait_for_settings: bool = True
    ) -> RawH2:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer, port)
        if initial_window_size is not None:
            # Replaced before the preface so that h2 checks inbound DATA against this window
            # from the first frame on.
            client.conn.local_settings = h2.settings.Settings(
                client=True,
                initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: initial_window_size},
            )
        client.conn.initiate_connection()
        await client.flush()
        if wait_for_settings:
            await client.pump(lambda: client.settings_received)
        return client

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)
            await self.writer.drain()

    def request(
        self,
        path: str,
        method: str = "GET",
        *,
        end_stream: bool = True,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        headers = [
            (b":method", method.encode()),
            (b":path", path.encode()),
            (b":scheme", b"http"),
            (b":authority", self.authority),
            *(extra or []),
        ]
        self.conn.send_headers(stream_id, headers, end_stream=end_stream)
        self.streams[stream_id] = StreamState()
        return stream_id

    async def send_body(self, stream_id: int, data: bytes, *, end_stream: bool) -> None:
        """Send within the pod's flow-control windows, reading (and acking) meanwhile."""
        view = memoryview(data)
        while view:
            window = min(
                self.conn.local_flow_control_window(stream_id),
                self.conn.max_outbound_frame_size,
                len(view),
            )
            if window == 0:
                await self.pump(lambda: self.conn.local_flow_control_window(stream_id) > 0)
                continue
            self.conn.send_data(stream_id, view[:window].tobytes())
            view = view[window:]
            await self.flush()
        if end_stream:
            self.conn.end_stream(stream_id)
        await self.flush()

    async def ping(self) -> None:
        """A PING round trip: the pod has handled every frame sent before it."""
        expected = self.pings_acked + 1
        self.conn.ping(b"roundtrp")
        await self.flush()
        await self.pump(lambda: self.pings_acked >= expected)

    async def pump(self, until: Callable[[], bool]) -> None:
        """Read, feed h2 and answer (acks, pings) until `until()` holds."""
        async with asyncio.timeout(EVENT_TIMEOUT):
            while not until():
                assert not self.eof, "the pod closed the connection first"
                try:
                    data = await self.reader.read(65536)
                except ConnectionResetError:
                    data = b""
                if not data:
                    self.eof = True
                    continue
                self._feed(data)
                await self.flush()

    def _feed(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 9:
            length = int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < 9 + length:
                return
            frame, self._buffer = self._buffer[: 9 + length], self._buffer[9 + length :]
            if frame[3] == 0x7:  # GOAWAY, RFC 9113 §6.8
                last = int.from_bytes(frame[9:13], "big") & 0x7FFFFFFF
                self.goaways.append((last, int.from_bytes(frame[13:17], "big")))
                continue
            for event in self.conn.receive_data(frame):
                self._on_event(event)

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            self.streams[event.stream_id].headers = list(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            state = self.streams[event.stream_id]
            state.data += event.data
            state.largest_data_frame = max(state.largest_data_frame, len(event.data))
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.TrailersReceived):
            self.streams[event.stream_id].trailers = list(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            self.streams[event.stream_id].ended = True
        elif isinstance(event, h2.events.StreamReset):
            self.streams[event.stream_id].reset_code = int(event.error_code)
        elif isinstance(event, h2.events.PingAckReceived):
            self.pings_acked += 1
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self.settings_received = True


@pytest.fixture
async def raw_clients() -> AsyncIterator[Callable[..., Awaitable[RawH2]]]:
    clients: list[RawH2] = []

    async def open_client(port: int, **options: Any) -> RawH2:
        client = await RawH2.open(port, **options)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        await client.close()


OpenRaw = Callable[..., Awaitable[RawH2]]


async def raw_http1(port: int, request: bytes) -> bytes:
    """Send raw bytes, read until the pod closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(EVENT_TIMEOUT):
            return await reader.read(-1)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def log_for(stats: dict[str, Any], path: str) -> list[dict[str, Any]]:
    return [record for record in stats["log"] if record["path"] == path]


# ---------------------------------------------------------------------------------------------
# Routes


async def test_hello_over_h2c_and_http11_with_curl(start_pod: StartPod) -> None:
    curl = need("curl")
    pod = await start_pod(name="alpha")
    url = f"http://127.0.0.1:{pod.port}/"
    for flag, version in (("--http2-prior-knowledge", "2"), ("--http1.1", "1.1")):
        code, out, err = await run_tool(curl, "-sS", "-i", flag, "-w", "%{http_version}", url)
        assert code == 0, err
        head, _, rest = out.partition(b"\r\n\r\n")
        assert head.split(b"\r\n")[0].split(b" ")[1] == b"200"
        assert b"x-pod: alpha" in head.lower()
        assert rest == b"hello from alpha\n" + version.encode()
    assert pod.stats.requests == 2
    assert pod.stats.connections_total == 2


async def test_any_method_and_unknown_paths_get_hello(start_pod: StartPod) -> None:
    pod = await start_pod(name="b")
    async with httpx.AsyncClient(http1=False, http2=True) as client:
        response = await client.request(
            "PUT", f"http://127.0.0.1:{pod.port}/no/such/thing", content=b"ignored body"
        )
    assert response.http_version == "HTTP/2"
    assert response.status_code == 200
    assert response.text == "hello from b\n"
    assert pod.stats.log[-1].body_bytes == len(b"ignored body")


async def test_healthz_follows_admin_readiness(start_pod: StartPod) -> None:
    pod = await start_pod()
    base = f"http://127.0.0.1:{pod.port}"
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{base}/healthz")).status_code == 200
        flipped = await client.post(f"{base}/admin/ready?state=0")
        assert flipped.json() == {"ready": False}
        assert (await client.get(f"{base}/healthz")).status_code == 503
        assert (await client.get(f"{base}/admin/ready?state=maybe")).status_code == 400
        await client.post(f"{base}/admin/ready?state=1")
        assert (await client.get(f"{base}/healthz")).status_code == 200
    assert pod.behaviour.ready


async def test_headers_reports_request_fields_over_h2(start_pod: StartPod) -> None:
    pod = await start_pod()
    async with httpx.AsyncClient(http1=False, http2=True) as client:
        response = await client.get(
            f"http://127.0.0.1:{pod.port}/headers?x=1",
            headers=[("X-Forwarded-For", "10.0.0.1"), ("x-forwarded-for", "10.0.0.2")],
        )
    fields = response.json()
    assert response.headers["content-type"] == "application/json"
    assert fields[":method"] == ["GET"]
    assert fields[":path"] == ["/headers?x=1"]
    assert fields[":authority"] == [f"127.0.0.1:{pod.port}"]
    assert fields[":scheme"] == ["http"]
    assert fields["x-forwarded-for"] == ["10.0.0.1", "10.0.0.2"]


async def test_headers_reports_request_fields_over_http11(start_pod: StartPod) -> None:
    curl = need("curl")
    pod = await start_pod()
    code, out, err = await run_tool(
        curl,
        "-sS",
        "--http1.1",
        "-H",
        "Forwarded: for=192.0.2.60",
        "-H",
        "X-Request-Id: abc",
        f"http://127.0.0.1:{pod.port}/headers",
    )
    assert code == 0, err
    fields = json.loads(out)
    assert fields[":method"] == ["GET"]
    assert fields[":path"] == ["/headers"]
    assert fields[":authority"] == [f"127.0.0.1:{pod.port}"]
    assert fields[":scheme"] == ["http"]
    assert fields["forwarded"] == ["for=192.0.2.60"]
    assert fields["x-request-id"] == ["abc"]


@pytest.mark.parametrize("http2", [True, False], ids=["h2", "http1.1"])
async def test_bytes_route_sends_exact_length(start_pod: StartPod, http2: bool) -> None:
    pod = await start_pod()
    size = 100_003
    async with httpx.AsyncClient(http1=not http2, http2=http2) as client:
        response = await client.get(f"http://127.0.0.1:{pod.port}/bytes/{size}")
    assert response.status_code == 200
    assert response.headers["content-length"] == str(size)
    assert response.content == expected_fill(size)


async def test_bytes_route_respects_client_flow_control_window(
    start_pod: StartPod, raw_clients: OpenRaw
) -> None:
    pod = await start_pod()
    # h2 raises FlowControlError if the pod ever sends beyond the 1000-byte window.
    client = await raw_clients(pod.port, initial_window_size=1000)
    stream_id = client.request("/bytes/50000")
    await client.flush()
    await client.pump(lambda: client.streams[stream_id].ended)
    state = client.streams[stream_id]
    assert state.status == 200
    assert bytes(state.data) == expected_fill(50000)
    assert state.largest_data_frame <= 1000


async def test_status_route_and_head(start_pod: StartPod) -> None:
    curl = need("curl")
    pod = await start_pod()
    base = f"http://127.0.0.1:{pod.port}"
    code, out, _ = await run_tool(curl, "-sS", "--http2-prior-knowledge", f"{base}/status/418")
    assert code == 0
    assert out == b"status 418\n"
    code, out, _ = await run_tool(
        curl, "-sS", "--http1.1", "-o", "/dev/null", "-w", "%{http_code}", f"{base}/status/503"
    )
    assert out == b"503"
    code, out, _ = await run_tool(curl, "-sS", "--http1.1", "-i", f"{base}/status/204")
    assert out.startswith(b"HTTP/1.1 204 No Content\r\n")
    assert out.endswith(b"\r\n\r\n")
    code, out, _ = await run_tool(curl, "-sS", "--http1.1", "-I", f"{base}/bytes/20")
    assert b"content-length: 20" in out.lower()
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{base}/status/99")).status_code == 400
        assert (await client.get(f"{base}/bytes/lots")).status_code == 400


async def test_delay_route_answers(start_pod: StartPod) -> None:
    pod = await start_pod()
    async with httpx.AsyncClient(http1=False, http2=True) as client:
        response = await client.get(f"http://127.0.0.1:{pod.port}/delay/5")
    assert response.status_code == 200
    assert response.text == "delayed 5 ms\n"


async def test_pod_delay_applies_to_responses(start_pod: StartPod) -> None:
    pod = await start_pod(delay=0.001)
    async with httpx.AsyncClient(http1=False, http2=True) as client:
        responses = await asyncio.gather(
            *(client.get(f"http://127.0.0.1:{pod.port}/headers") for _ in range(5))
        )
    assert [response.status_code for response in responses] == [200] * 5
    assert pod.stats.requests == 5
    assert pod.stats.in_flight == 0


async def test_stream_route_with_nghttp(start_pod: StartPod) -> None:
    nghttp = need("nghttp")
    pod = await start_pod()
    code, out, err = await run_tool(nghttp, f"http://127.0.0.1:{pod.port}/stream/3/1")
    assert code == 0, err
    assert out == b"chunk 0\nchunk 1\nchunk 2\n"


async def test_trailers_over_h2(start_pod: StartPod, raw_clients: OpenRaw) -> None:
    pod = await start_pod()
    client = await raw_clients(pod.port)
    stream_id = client.request("/trailers")
    await client.flush()
    await client.pump(lambda: client.streams[stream_id].ended)
    state = client.streams[stream_id]
    assert bytes(state.data) == b"ok"
    assert state.trailers == [(b"x-trailer", b"yes")]


async def test_trailers_over_http11_only_when_asked(start_pod: StartPod) -> None:
    pod = await start_pod()
    request = b"GET /trailers HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n"
    with_te = await raw_http1(pod.port, request + b"TE: trailers\r\n\r\n")
    assert with_te.endswith(b"\r\n\r\n2\r\nok\r\n0\r\nx-trailer: yes\r\n\r\n")
    without = await raw_http1(pod.port, request + b"\r\n")
    assert without.endswith(b"\r\n\r\n2\r\nok\r\n0\r\n\r\n")


@pytest.mark.parametrize("http2", [True, False], ids=["h2", "http1.1"])
async def test_echo_streams_one_mebibyte_back(start_pod: StartPod, http2: bool) -> None:
    pod = await start_pod()
    body = os.urandom(1024 * 1024)
    async with httpx.AsyncClient(http1=not http2, http2=http2) as client:
        response = await client.post(f"http://127.0.0.1:{pod.port}/echo", content=body)
    assert response.status_code == 200
    assert response.content == body
    assert pod.stats.log[-1].body_bytes == len(body)
    assert pod.stats.log[-1].outcome == "complete"


async def test_echo_over_h2_copies_trailers_and_counts_bytes(
    start_pod: StartPod, raw_clients: OpenRaw
) -> None:
    pod = await start_pod()
    client = await raw_clients(pod.port)
    body = os.urandom(300_000)  # several times the pod's 64 KiB receive window
    stream_id = client.request("/echo", "POST", end_stream=False)
    await client.send_body(stream_id, body, end_stream=False)
    client.conn.send_headers(stream_id, [(b"x-checksum", b"123")], end_stream=True)
    await client.flush()
    await client.pump(lambda: client.streams[stream_id].ended)
    state = client.streams[stream_id]
    assert bytes(state.data) == body
    assert dict(state.trailers) == {b"x-checksum": b"123", b"x-body-bytes": b"300000"}


async def test_echo_backpressure_bounds_what_the_pod_buffers(
    start_pod: StartPod, raw_clients: OpenRaw
) -> None:
    pod = await start_pod()
    # A client window of 0: the pod cannot send a byte of the echo until the client opens it.
    client = await raw_clients(pod.port, initial_window_size=0)
    stream_id = client.request("/echo", "POST", end_stream=False)
    await client.flush()
    sent = 0
    for _ in range(64):  # bounded: the pod's windows close long before this
        window = min(client.conn.local_flow_control_window(stream_id), 16_384)
        if window == 0:
            # Has the pod handed out more credit meanwhile? Ask after a round trip.
            await client.ping()
            if client.conn.local_flow_control_window(stream_id) == 0:
                break
            continue
        client.conn.send_data(stream_id, b"e" * window)
        sent += window
        await client.flush()
    assert client.conn.local_flow_control_window(stream_id) == 0
    # What the pod holds is bounded by its 64 KiB receive window, not by the body.
    assert sent < 2 * 65_535
    assert not client.streams[stream_id].data
    client.conn.increment_flow_control_window(1 << 20, stream_id=stream_id)
    await client.flush()
    await client.send_body(stream_id, b"f" * 100_000, end_stream=True)
    await client.pump(lambda: client.streams[stream_id].ended)
    assert bytes(client.streams[stream_id].data) == b"e" * sent + b"f" * 100_000


async def test_echo_over_http11_chunked_with_trailers(start_pod: StartPod) -> None:
    pod = await start_pod()
    response = await raw_http1(
        pod.port,
        b"POST /echo HTTP/1.1\r\nHost: pod\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n"
        b"Connection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n",
    )
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding: chunked" in head
    assert body == b"3\r\nabc\r\n2\r\nde\r\n0\r\nx-sum: 5\r\nx-body-bytes: 5\r\n\r\n"


async def test_echo_with_nghttp_upload(start_pod: StartPod, tmp_path: Path) -> None:
    nghttp = need("nghttp")
    pod = await start_pod()
    payload = tmp_path / "payload"
    payload.write_bytes(os.urandom(200_000))
    code, out, err = await run_tool(nghttp, "-d", str(payload), f"http://127.0.0.1:{pod.port}/echo")
    assert code == 0, err
    assert out == payload.read_bytes()


async def test_upload_counts_without_echoing(start_pod: StartPod) -> None:
    pod = await start_pod()
    async with httpx.AsyncClient(http1=False, http2=True) as client:
        response = await client.post(f"http://127.0.0.1:{pod.port}/upload", content=b"z" * 300_000)
    assert response.json() == {"bytes": 300_000}


# ---------------------------------------------------------------------------------------------
# Resets


async def test_reset_after_over_h2(start_pod: StartPod, raw_clients: OpenRaw) -> None:
    pod = await start_pod()
    client = await raw_clients(pod.port)
    stream_id = client.request("/reset-after/5000")
    await client.flush()
    await client.pump(lambda: client.streams[stream_id].reset_code is not None)
    state = client.streams[stream_id]
    assert state.status == 200
    assert bytes(state.data) == expected_fill(5000)
    assert state.reset_code == INTERNAL_ERROR
    assert not state.ended
    record = pod.stats.log[-1]
    assert (record.outcome, record.error_code, record.reset_by) == ("reset", INTERNAL_ERROR, "pod")
    # The connection survives a stream reset.
    again = client.request("/")
    await client.flush()
    await client.pump(lambda: client.streams[again].ended)


async def test_reset_after_over_http11_aborts_the_connection(start_pod: StartPod) -> None:
    curl = need("curl")
    pod = await start_pod()
    code, out, _ = await run_tool(
        curl, "-sS", "--http1.1", f"http://127.0.0.1:{pod.port}/reset-after/5000"
    )
    assert code != 0
    assert out == expected_fill(5000)
    assert pod.stats.log[-1].outcome == "reset"


async def test_client_cancel_is_recorded_as_reset_with_cancel(
    start_pod: StartPod, raw_clients: OpenRaw
) -> None:
    pod = await start_pod()
    client = await raw_clients(pod.port)
    stream_id = client.request("/upload", "POST", end_stream=False)
    await client.send_body(stream_id, b"u" * 3000, end_stream=False)
    client.conn.reset_stream(stream_id, CANCEL)
    await client.flush()
    await client.ping()
    async with httpx.AsyncClient() as http:
        stats = (await http.get(f"http://127.0.0.1:{pod.port}/admin/stats")).json()
    uploads = log_for(stats, "/upload")
    assert len(uploads) == 1
    assert uploads[0]["outcome"] == "reset"
    assert uploads[0]["error_code"] == CANCEL
    assert uploads[0]["body_bytes"] == 3000
    assert uploads[0]["reset_by"] == "peer"
    assert stats["client_resets"] == 1
    assert stats["in_flight"] == 0


async def test_client_cancel_stops_a_response_in_progress(
    start_pod: StartPod, raw_clients: OpenRaw
) -> None:
    pod = await start_pod()
    client = await raw_clients(pod.port)
    stream_id = client.request("/stream/1000/5")
    await client.flush()
    await client.pump(lambda: bool(client.streams[stream_id].data))
    assert pod.stats.in_flight == 1
    client.conn.reset_stream(stream_id, CANCEL)
    await client.flush()
    await client.ping()
    assert pod.stats.in_flight == 0
    record = pod.stats.log[-1]
    assert (record.path, record.outcome, record.error_code) == ("/stream/1000/5", "reset", CANCEL)


# ---------------------------------------------------------------------------------------------
# GOAWAY and refusals


async def test_goaway_every_fifth_stream_ignores_later_ones(
    start_pod: StartPod, raw_clients: OpenRaw
) -> None:
    pod = await start_pod(goaway_every=5)
    client = await raw_clients(pod.port)
    # Stream 1 stays open until the client ends it, so the GOAWAY finds it in flight.
    echo = client.request("/echo", "POST", end_stream=False)
    others = [client.request(f"/?n={index}") for index in range(7)]
    assert others == [3, 5, 7, 9, 11, 13, 15]
    client.conn.send_data(echo, b"first")
    await client.flush()
    await client.pump(lambda: bool(client.goaways) and bytes(client.streams[echo].data) == b"first")
    assert client.goaways == [(9, 0)]
    # Streams at or below last_stream_id still finish, in-flight ones included.
    client.conn.send_data(echo, b"-second", end_stream=True)
    await client.flush()
    await client.pump(lambda: client.eof)
    assert bytes(client.streams[echo].data) == b"first-second"
    assert client.streams[echo].ended
    for stream_id in (3, 5, 7, 9):
        assert client.streams[stream_id].status == 200
        assert client.streams[stream_id].ended
    for stream_id in (11, 13, 15):
        assert not client.streams[stream_id].got_anything
    assert pod.stats.goaways_sent == 1
    assert pod.stats.requests == 5
    ignored = [record.stream_id for record in pod.stats.log if record.outcome == "ignored"]
    assert ignored == [11, 13, 15]


async def test_goaway_that_closes_mid_batch_sends_nothing_after_it(
    start_pod: StartPod, raw_clients: OpenRaw, caplog: pytest.LogCaptureFixture
) -> None:
    pod = await start_pod(goaway_every=2)
    client = await raw_clients(pod.port)
    first, second = client.request("/"), client.request("/")
    # An ignored stream whose body still earns the connection a WINDOW_UPDATE from the pod,
    # produced after the GOAWAY in the same batch, when the pod is already shutting down.
    ignored = client.request("/upload", "POST", end_stream=False)
    for _ in range(3):
        client.conn.send_data(ignored, b"i" * 14_000)
    client.conn.end_stream(ignored)
    await client.flush()
    await client.pump(lambda: client.eof)
    assert client.goaways == [(second, 0)]
    assert client.streams[first].ended
    assert client.streams[second].ended
    assert not client.streams[ignored].got_anything
    assert [record.outcome for record in pod.stats.log] == ["complete", "complete", "ignored"]
    assert not [record for record in caplog.records if record.levelname == "ERROR"]


async def test_http11_requests_pipelined_behind_a_close_are_not_read(start_pod: StartPod) -> None:
    pod = await start_pod()
    response = await raw_http1(
        pod.port,
        b"GET / HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n\r\n"
        b"GET /status/201 HTTP/1.1\r\nHost: pod\r\n\r\n",
    )
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert response.endswith(b"hello from pod\n")
    # RFC 9112 §9.6: nothing after a request with "close" is processed.
    assert [record.path for record in pod.stats.log] == ["/"]


async def test_goaway_every_over_http11_closes_after_nth_request(start_pod: StartPod) -> None:
    pod = await start_pod(goaway_every=2)
    async with httpx.AsyncClient() as client:
        responses = [await client.get(f"http://127.0.0.1:{pod.port}/") for _ in range(3)]
    assert [response.status_code for response in responses] == [200, 200, 200]
    assert "connection" not in responses[0].headers
    assert responses[1].headers["connection"] == "close"
    assert pod.stats.connections_total == 2


async def test_admin_goaway_drains_every_connection(
    start_pod: StartPod, raw_clients: OpenRaw
) -> None:
    pod = await start_pod()
    busy = await raw_clients(pod.port)
    echo = busy.request("/echo", "POST", end_stream=False)
    busy.conn.send_data(echo, b"abc")
    await busy.flush()
    await busy.pump(lambda: bytes(busy.streams[echo].data) == b"abc")

    admin = await raw_clients(pod.port)
    command = admin.request("/admin/goaway")
    await admin.flush()
    await admin.pump(lambda: admin.eof)
    assert admin.streams[command].status == 200
    assert admin.goaways == [(command, 0)]

    await busy.pump(lambda: bool(busy.goaways))
    assert busy.goaways == [(echo, 0)]
    busy.conn.send_data(echo, b"def", end_stream=True)
    await busy.flush()
    await busy.pump(lambda: busy.eof)
    assert bytes(busy.streams[echo].data) == b"abcdef"
    assert dict(busy.streams[echo].trailers)[b"x-body-bytes"] == b"6"
    assert pod.stats.goaways_sent == 2


async def test_goaway_below_in_flight_streams_abandons_them(
    start_pod: StartPod, raw_clients: OpenRaw
) -> None:
    pod = await start_pod()
    client = await raw_clients(pod.port)
    echo = client.request("/echo", "POST", end_stream=False)
    client.conn.send_data(echo, b"x")
    await client.flush()
    await client.pump(lambda: bool(client.streams[echo].data))
    await pod.send_goaway_all(last_stream_id=0)
    await client.pump(lambda: client.eof)
    assert client.goaways == [(0, 0)]
    assert not client.streams[echo].ended
    assert pod.stats.log[-1].outcome == "ignored"
    assert pod.stats.in_flight == 0


async def test_refuse_every_third_stream(start_pod: StartPod, raw_clients: OpenRaw) -> None:
    pod = await start_pod(refuse_every=3)
    client = await raw_clients(pod.port)
    stream_ids = [client.request("/") for _ in range(6)]
    await client.flush()
    await client.pump(
        lambda: all(client.streams[s].ended or client.streams[s].reset_code for s in stream_ids)
    )
    refused = [s for s in stream_ids if client.streams[s].reset_code == REFUSED_STREAM]
    assert refused == [5, 11]
    for stream_id in set(stream_ids) - set(refused):
        assert client.streams[stream_id].status == 200
    assert not client.streams[5].headers
    assert pod.stats.refused == 2
    assert pod.stats.requests == 4
    outcomes = [(record.outcome, record.error_code) for record in pod.stats.log]
    assert outcomes.count(("refused", REFUSED_STREAM)) == 2


async def test_admin_refuse_next(start_pod: StartPod, raw_clients: OpenRaw) -> None:
    pod = await start_pod()
    client = await raw_clients(pod.port)
    command = client.request("/admin/refuse-next?n=2")
    await client.flush()
    await client.pump(lambda: client.streams[command].ended)
    stream_ids = [client.request("/") for _ in range(3)]
    await client.flush()
    await client.pump(lambda: client.streams[stream_ids[-1]].ended)
    codes = [client.streams[s].reset_code for s in stream_ids]
    assert codes == [REFUSED_STREAM, REFUSED_STREAM, None]
    assert client.streams[stream_ids[-1]].status == 200


async def test_refusal_over_http11_is_a_503(start_pod: StartPod) -> None:
    pod = await start_pod(name="p", refuse_every=2)
    async with httpx.AsyncClient() as client:
        first = await client.get(f"http://127.0.0.1:{pod.port}/")
        second = await client.get(f"http://127.0.0.1:{pod.port}/")
    assert first.status_code == 200
    assert second.status_code == 503
    assert second.headers["x-pod"] == "p"
    assert pod.stats.refused == 1
    assert pod.stats.log[-1].outcome == "refused"


async def test_streams_beyond_the_advertised_limit_are_refused(
    start_pod: StartPod, raw_clients: OpenRaw
) -> None:
    pod = await start_pod(max_concurrent_streams=2)
    # The client opens three streams before it has seen the pod's SETTINGS, which it may.
    client = await raw_clients(pod.port, wait_for_settings=False)
    stream_ids = [client.request("/echo", "POST", end_stream=False) for _ in range(3)]
    await client.flush()
    await client.pump(lambda: client.streams[stream_ids[2]].reset_code is not None)
    assert client.conn.remote_settings.max_concurrent_streams == 2
    assert client.streams[stream_ids[2]].reset_code == REFUSED_STREAM
    for stream_id in stream_ids[:2]:
        client.conn.end_stream(stream_id)
    await client.flush()
    await client.pump(lambda: all(client.streams[s].ended for s in stream_ids[:2]))
    assert not client.eof


# ---------------------------------------------------------------------------------------------
# Stats


async def test_in_flight_counts_open_requests(start_pod: StartPod, raw_clients: OpenRaw) -> None:
    pod = await start_pod()
    client = await raw_clients(pod.port)
    stream_ids = [client.request("/echo", "POST", end_stream=False) for _ in range(3)]
    for stream_id in stream_ids:
        client.conn.send_data(stream_id, b"x")
    await client.flush()
    await client.pump(lambda: all(client.streams[s].data for s in stream_ids))
    async with httpx.AsyncClient() as http:
        stats = (await http.get(f"http://127.0.0.1:{pod.port}/admin/stats")).json()
    assert stats["in_flight"] == 3
    assert stats["max_in_flight"] == 3
    for stream_id in stream_ids:
        client.conn.end_stream(stream_id)
    await client.flush()
    await client.pump(lambda: all(client.streams[s].ended for s in stream_ids))
    assert pod.stats.in_flight == 0
    assert pod.stats.max_in_flight == 3


async def test_reset_stats_and_log_length(start_pod: StartPod) -> None:
    pod = await start_pod()
    base = f"http://127.0.0.1:{pod.port}"
    async with httpx.AsyncClient(http1=False, http2=True) as client:
        for _ in range(205):
            await client.get(f"{base}/")
        stats = (await client.get(f"{base}/admin/stats")).json()
        assert stats["requests"] == 205
        assert len(stats["log"]) == 200
        assert (await client.post(f"{base}/admin/reset-stats")).status_code == 200
        stats = (await client.get(f"{base}/admin/stats")).json()
    assert stats["requests"] == 0
    assert stats["log"] == []
    assert stats["connections_total"] == 0


# ---------------------------------------------------------------------------------------------
# HTTP/1.1 specifics


async def test_http11_pipelined_requests_answered_in_order(start_pod: StartPod) -> None:
    pod = await start_pod()
    response = await raw_http1(
        pod.port,
        b"GET /bytes/5 HTTP/1.1\r\nHost: pod\r\n\r\n"
        b"POST /upload HTTP/1.1\r\nHost: pod\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /status/201 HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n\r\n",
    )
    statuses = re.findall(rb"HTTP/1\.1 \d{3} [A-Za-z ]+", response)
    assert statuses == [b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK", b"HTTP/1.1 201 Created"]
    assert b'{"bytes": 3}' in response
    assert response.endswith(b"status 201\n")
    assert pod.stats.connections_total == 1


async def test_http11_expect_continue(start_pod: StartPod) -> None:
    pod = await start_pod()
    reader, writer = await asyncio.open_connection("127.0.0.1", pod.port)
    try:
        writer.write(
            b"POST /upload HTTP/1.1\r\nHost: pod\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        async with asyncio.timeout(EVENT_TIMEOUT):
            interim = await reader.readuntil(b"\r\n\r\n")
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"hello")
            response = await reader.read(-1)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert response.endswith(b'{"bytes": 5}\n')


async def test_http11_garbage_gets_400_and_close(start_pod: StartPod) -> None:
    pod = await start_pod()
    response = await raw_http1(pod.port, b"BLAH\x01 / HTTP/1.1\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400 Bad Request\r\n")


async def test_http11_upgrade_request_is_answered_in_http11(start_pod: StartPod) -> None:
    pod = await start_pod(name="u")
    response = await raw_http1(
        pod.port,
        b"GET / HTTP/1.1\r\nHost: pod\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
        b"GET /status/202 HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n\r\n",
    )
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"hello from u\n" in response
    assert response.endswith(b"status 202\n")


# ---------------------------------------------------------------------------------------------
# TLS, process, load


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = need("openssl")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


async def test_tls_alpn_h2_and_http11(start_pod: StartPod, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    pod = await start_pod(make_server_ssl_context(str(cert), str(key)), name="tls")
    trust = ssl.create_default_context(cafile=str(cert))
    url = f"https://127.0.0.1:{pod.port}/headers"
    async with httpx.AsyncClient(http2=True, verify=trust) as client:
        over_h2 = await client.get(url)
    async with httpx.AsyncClient(verify=trust) as client:
        over_h1 = await client.get(url)
    assert over_h2.http_version == "HTTP/2"
    assert over_h2.json()[":scheme"] == ["https"]
    assert over_h1.http_version == "HTTP/1.1"
    assert over_h1.json()[":scheme"] == ["https"]
    assert over_h1.headers["x-pod"] == "tls"
    curl = need("curl")
    code, out, err = await run_tool(
        curl,
        "-sS",
        "--http2",
        "--cacert",
        str(cert),
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
        url,
    )
    assert code == 0, err
    assert out == b"2"


async def test_reset_after_over_tls_http11(
    start_pod: StartPod, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    pod = await start_pod(make_server_ssl_context(str(cert), str(key)))
    trust = ssl.create_default_context(cafile=str(cert))
    reader, writer = await asyncio.open_connection("127.0.0.1", pod.port, ssl=trust)
    received = b""
    try:
        writer.write(b"GET /reset-after/3000 HTTP/1.1\r\nHost: pod\r\n\r\n")
        async with asyncio.timeout(EVENT_TIMEOUT):
            with contextlib.suppress(ConnectionResetError, ssl.SSLError):
                while chunk := await reader.read(65536):
                    received += chunk
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert not received.endswith(b"0\r\n\r\n")  # the chunked body never ends
    record = pod.stats.log[-1]
    assert (record.path, record.outcome, record.reset_by) == ("/reset-after/3000", "reset", "pod")


async def test_command_line_serves_until_sigterm() -> None:
    curl = need("curl")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "activator.demopod",
        "--listen",
        "127.0.0.1:0",
        "--name",
        "cli",
        "--refuse-every",
        "0",
        "--delay-ms",
        "1",
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(EVENT_TIMEOUT):
            banner = await process.stdout.readline()
        assert banner.startswith(b"demopod cli listening on 127.0.0.1:"), banner
        port = int(banner.split(b"127.0.0.1:")[1].split()[0])
        code, out, err = await run_tool(
            curl, "-sS", "--http2-prior-knowledge", f"http://127.0.0.1:{port}/"
        )
        assert code == 0, err
        assert out == b"hello from cli\n"
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(EVENT_TIMEOUT):
            _, stderr = await process.communicate()
        assert process.returncode == 0, stderr
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_h2load_many_streams_all_succeed(start_pod: StartPod) -> None:
    h2load = need("h2load")
    pod = await start_pod(max_concurrent_streams=50)
    code, out, err = await run_tool(
        h2load, "-n", "600", "-c", "3", "-m", "20", f"http://127.0.0.1:{pod.port}/bytes/2000"
    )
    assert code == 0, err
    assert b"600 succeeded, 0 failed, 0 errored" in out, out
    assert pod.stats.requests == 600
    assert pod.stats.max_in_flight <= 3 * 20
    assert pod.stats.in_flight == 0


async def test_stop_closes_open_connections(start_pod: StartPod, raw_clients: OpenRaw) -> None:
    pod = await start_pod()
    client = await raw_clients(pod.port)
    echo = client.request("/echo", "POST", end_stream=False)
    client.conn.send_data(echo, b"x")
    await client.flush()
    await client.pump(lambda: bool(client.streams[echo].data))
    await pod.stop()
    await client.pump(lambda: client.eof)
    assert pod.stats.log[-1].outcome == "reset"
    assert pod.stats.in_flight == 0
