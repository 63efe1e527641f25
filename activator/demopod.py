"""A backend pod with controllable behaviours, for tests, benchmarks and demos.

One listening port serves HTTP/2 with prior knowledge (h2c, detected by the 24-byte client
preface, RFC 9113 §3.4), HTTP/1.1 (keep-alive, pipelining, chunked bodies and trailers) and,
when given a TLS context, both of those negotiated by ALPN (RFC 9113 §3.2). The `Upgrade: h2c`
mechanism is deprecated (RFC 9113 §3.1) and such requests are simply answered in HTTP/1.1.

The pod can be told to misbehave the ways real pods do: answer slowly, close connections after
N streams with GOAWAY (like nginx's `keepalive_requests`), refuse streams, reset streams in the
middle of a response, flip its readiness. Every stream that ends is recorded in `PodStats.log`,
so a test can prove what reached the pod and how it ended (for instance that a client's cancel
arrived as RST_STREAM(CANCEL) and never as END_STREAM on a truncated body).

Bodies are streamed, never held whole: request bodies are consumed (and flow-control credit
returned to the peer, RFC 9113 §6.9) as the handler reads them, responses are produced in chunks
of at most 16 KiB and only as fast as the peer's flow-control window and the socket allow.

Requests under `/admin/` are the test's control plane: they are exempt from `delay`, from
refusals, and from the counters and log in `PodStats`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http
import json
import logging
import signal
import socket
import ssl
import struct
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Final, Literal, cast
from urllib.parse import parse_qs

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import httptools

from activator.config import parse_hostport

__all__ = [
    "DemoPod",
    "PodBehaviour",
    "PodStats",
    "StreamRecord",
    "main",
    "make_server_ssl_context",
]

_log = logging.getLogger(__name__)

_PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# RFC 9113 §7 error codes used here.
_NO_ERROR: Final = 0x0
_INTERNAL_ERROR: Final = 0x2
_REFUSED_STREAM: Final = 0x7

_CHUNK_SIZE: Final = 16 * 1024
# Generated bodies repeat 0x00..0xff, so byte i of any /bytes/N body is i % 256: a reordered or
# duplicated chunk is detectable by the receiver.
_FILL: Final = bytes(range(256)) * (_CHUNK_SIZE // 256)
# Bytes queued in h2 before it is written out even though the event loop has not turned yet.
_FLUSH_THRESHOLD: Final = 64 * 1024
# Request body bytes an HTTP/1.1 connection buffers for a handler before it stops reading.
_H1_BODY_BUFFER_LIMIT: Final = 64 * 1024
# After the last response on a connection that is closing, how long to keep reading (and
# discarding) before closing: closing with unread input makes the kernel send RST, which can
# destroy responses the client has not read yet.
_LINGER_SECONDS: Final = 2.0
_LOG_LENGTH: Final = 200
_MAX_STREAM_ID: Final = 2**31 - 1
# Request paths with numeric arguments accept at most this many digits.
_MAX_DIGITS: Final = 15

_TEXT: Final = b"text/plain; charset=utf-8"
_JSON: Final = b"application/json"
_OCTETS: Final = b"application/octet-stream"


def _status_line(code: int) -> bytes:
    try:
        phrase = http.HTTPStatus(code).phrase
    except ValueError:
        phrase = "Unknown"
    return f"{code} {phrase}".encode("ascii")


_STATUS_LINES: Final = {code: _status_line(code) for code in range(100, 600)}
_STATUS_BYTES: Final = {code: str(code).encode("ascii") for code in range(100, 600)}
# RFC 9110 §6.4.1: these responses never carry content.
_NO_CONTENT_STATUSES: Final = frozenset({204, 304})


@dataclass
class PodBehaviour:
    """How the pod behaves. Fields are read per request, so a test may change them live."""

    name: str = "pod"
    """Sent as response header `x-pod: <name>` on every response."""
    delay: float = 0.0
    """Seconds added before every response (a slow pod)."""
    goaway_every: int = 0
    """>0: after the Nth stream on a connection, send GOAWAY(last_stream_id=that stream,
    NO_ERROR), ignore later streams (RFC 9113 §6.8), finish the others, then close.
    HTTP/1.1: `Connection: close` on the Nth request. Note that clients built on h2 (httpx)
    fail every open stream on any GOAWAY, even those the pod goes on to answer."""
    refuse_every: int = 0
    """>0: every Nth stream the pod receives (counted across connections) gets
    RST_STREAM(REFUSED_STREAM) unprocessed. HTTP/1.1 has no such signal: it gets a 503."""
    max_concurrent_streams: int = 100
    """SETTINGS_MAX_CONCURRENT_STREAMS advertised; streams beyond it are refused."""
    ready: bool = True
    """/healthz answers 200 when ready, 503 otherwise."""


Outcome = Literal["complete", "reset", "refused", "ignored"]


@dataclass(slots=True)
class StreamRecord:
    """How one stream (or HTTP/1.1 request) ended."""

    path: str
    outcome: Outcome
    """complete: both directions ended normally; reset: RST_STREAM either way (or an HTTP/1.1
    connection that died mid-request); refused: REFUSED_STREAM or a 503 refusal; ignored: a
    stream above a GOAWAY's last_stream_id, never processed."""
    error_code: int | None
    """The RST_STREAM error code for resets and refusals (HTTP/2), else None."""
    body_bytes: int
    """Request body bytes received."""
    stream_id: int | None
    """HTTP/2 stream id; None for HTTP/1.1."""
    reset_by: Literal["peer", "pod"] | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "outcome": self.outcome,
            "error_code": self.error_code,
            "body_bytes": self.body_bytes,
            "stream_id": self.stream_id,
            "reset_by": self.reset_by,
        }


@dataclass
class PodStats:
    """Counters served at /admin/stats."""

    requests: int = 0
    """Requests accepted for processing (refused and ignored streams are not counted)."""
    in_flight: int = 0
    """Requests between receipt of their headers and the end of their response."""
    max_in_flight: int = 0
    connections_total: int = 0
    """Every accepted connection, including ones used only for /admin/ requests."""
    goaways_sent: int = 0
    refused: int = 0
    client_resets: int = 0
    """RST_STREAM frames received from the peer."""
    log: deque[StreamRecord] = field(default_factory=lambda: deque(maxlen=_LOG_LENGTH))
    """The last 200 finished streams, oldest first."""

    def reset(self) -> None:
        """Zero the counters and the log. `in_flight` is a live gauge and is kept."""
        self.requests = 0
        self.max_in_flight = self.in_flight
        self.connections_total = 0
        self.goaways_sent = 0
        self.refused = 0
        self.client_resets = 0
        self.log.clear()

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "connections_total": self.connections_total,
            "goaways_sent": self.goaways_sent,
            "refused": self.refused,
            "client_resets": self.client_resets,
            "log": [record.as_dict() for record in self.log],
        }


def make_server_ssl_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A server TLS context offering h2 and http/1.1 by ALPN (RFC 9113 §3.2, §9.2)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


def _goaway_frame(last_stream_id: int, error_code: int) -> bytes:
    """A GOAWAY frame (RFC 9113 §4.1, §6.8) on stream 0 with no debug data."""
    length_and_type = (8 << 8) | 0x7  # 24-bit payload length 8, frame type GOAWAY
    return struct.pack("!IBIII", length_and_type, 0, 0, last_stream_id & _MAX_STREAM_ID, error_code)


def _parse_count(text: str) -> int | None:
    if 0 < len(text) <= _MAX_DIGITS and text.isascii() and text.isdigit():
        return int(text)
    return None


class _StreamGone(Exception):
    """The stream was reset or its connection went away: stop producing the response."""


@dataclass(slots=True)
class _Reply:
    """A complete small response, produced synchronously."""

    status: int
    body: bytes
    content_type: bytes = _TEXT
    after: Callable[[], None] | None = None
    """Run once the response has been handed to the connection."""


_ReplyFn = Callable[["_Exchange"], _Reply]


class _StreamHandler:
    """A route that produces its response over time (marks the handler as asynchronous)."""

    __slots__ = ("run",)

    def __init__(self, run: Callable[[_Exchange], Awaitable[None]]) -> None:
        self.run = run


class _Exchange:
    """One request and its response, on either protocol.

    The request body is either kept for the handler to read (`keep_body`, /echo only) or
    discarded as it arrives, counting its bytes. The response is produced with `respond` (small,
    complete) or `send_headers` / `write` / `finish`.
    """

    __slots__ = (
        "_waiter",
        "body_bytes",
        "chunks",
        "dispatched",
        "done",
        "gone",
        "head",
        "headers",
        "in_flight",
        "keep_body",
        "method",
        "path",
        "pod",
        "query",
        "refused",
        "request_ended",
        "request_trailers",
        "response_ended",
        "response_started",
        "stream_id",
        "task",
        "tracked",
    )

    def __init__(
        self,
        pod: DemoPod,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        stream_id: int | None,
    ) -> None:
        self.pod = pod
        self.method = method.decode("latin-1")
        path, _, query = target.decode("latin-1").partition("?")
        self.path = path
        self.query = query
        self.headers = headers
        self.stream_id = stream_id
        self.head = method == b"HEAD"
        self.tracked = not path.startswith("/admin/")
        self.keep_body = path == "/echo"
        self.body_bytes = 0
        # (data, flow-control credit to return once the handler has consumed it)
        self.chunks: deque[tuple[bytes, int]] = deque()
        self.request_trailers: list[tuple[bytes, bytes]] = []
        self.request_ended = False
        self.response_started = False
        self.response_ended = False
        self.done = False
        self.gone = False
        self.refused = False
        self.in_flight = False
        self.dispatched = False
        self.task: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None

    # -- protocol specific ------------------------------------------------------------------

    def respond(self, status: int, content_type: bytes, body: bytes) -> None:
        raise NotImplementedError

    def send_headers(
        self, status: int, headers: list[tuple[bytes, bytes]], content_length: int | None
    ) -> None:
        raise NotImplementedError

    async def write(self, data: bytes) -> None:
        raise NotImplementedError

    def finish(self, trailers: list[tuple[bytes, bytes]] | None = None) -> None:
        raise NotImplementedError

    async def abort(self) -> None:
        """Break the response off: RST_STREAM(INTERNAL_ERROR) or an aborted socket."""
        raise NotImplementedError

    def fail(self) -> None:
        """The handler crashed: answer 500 if nothing was sent yet, else break the response off."""
        raise NotImplementedError

    def request_headers(self) -> list[tuple[bytes, bytes]]:
        """Header fields as received, pseudo-header fields (or HTTP/1.1 equivalents) first."""
        raise NotImplementedError

    def _return_credit(self, credit: int) -> None:
        """The handler consumed `credit` bytes of buffered body: let the peer send more."""
        raise NotImplementedError

    def _release(self) -> None:
        """The exchange is over: the connection forgets it."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------

    def header(self, name: bytes) -> bytes | None:
        for field_name, value in self.headers:
            if field_name == name:
                return value
        return None

    async def _wait(self) -> None:
        """Sleep until something happens to this exchange (data, end, window, drain, reset)."""
        future = self.pod._loop.create_future()
        self._waiter = future
        try:
            await future
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read(self) -> bytes:
        """The next chunk of request body, or b"" at its end."""
        while True:
            if self.gone:
                raise _StreamGone
            if self.chunks:
                data, credit = self.chunks.popleft()
                self._return_credit(credit)
                return data
            if self.request_ended:
                return b""
            await self._wait()

    async def wait_request_end(self) -> None:
        while not self.request_ended:
            if self.gone:
                raise _StreamGone
            await self._wait()

    def _on_body(self, data: bytes, credit: int) -> None:
        self.body_bytes += len(data)
        if self.keep_body or not self.dispatched:
            self.chunks.append((data, credit))
            self._wake()
        else:
            self._return_credit(credit)

    def _discard_buffered(self) -> None:
        self.keep_body = False
        credit = 0
        while self.chunks:
            credit += self.chunks.popleft()[1]
        if credit:
            self._return_credit(credit)

    def _on_request_end(self) -> None:
        if self.request_ended:
            return
        self.request_ended = True
        self._wake()
        self._maybe_done()

    def _on_response_end(self) -> None:
        self.response_ended = True
        self.pod._leave(self)
        if not self.request_ended:
            # Nobody will read the rest of the body any more.
            self._discard_buffered()
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.response_ended and self.request_ended and not self.done:
            self.done = True
            self.pod._finish(self, "refused" if self.refused else "complete", None, None)
            self._release()

    def _end_abnormally(
        self, outcome: Outcome, error_code: int | None, reset_by: Literal["peer", "pod"] | None
    ) -> None:
        """Reset, aborted or abandoned: stop the handler and record how the stream ended."""
        if self.done:
            return
        self.done = True
        self.gone = True
        self.pod._finish(self, outcome, error_code, reset_by)
        self._discard_buffered()
        task = self.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self._wake()
        self._release()


# ---------------------------------------------------------------------------------------------
# Connections


class _Connection(asyncio.Protocol):
    """Plumbing shared by both protocols: write backpressure, lingering close, registration."""

    def __init__(self, pod: DemoPod, transport: asyncio.Transport) -> None:
        self.pod = pod
        self.transport = transport
        self.paused = False
        self.closing = False
        self.lost = False
        self.peer_eof = False
        self._linger: asyncio.TimerHandle | None = None

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake_all()

    def _wake_all(self) -> None:
        raise NotImplementedError

    def _flush(self) -> None:
        """Hand anything queued to the transport."""

    def go_away(self, last_stream_id: int | None) -> None:
        raise NotImplementedError

    def close_gracefully(self) -> None:
        """Send what is queued, half-close, and keep discarding input for a while before closing."""
        if self.closing or self.lost:
            return
        self._flush()
        # From here on nothing more is written: the output side is being shut.
        self.closing = True
        transport = self.transport
        if transport.can_write_eof() and not self.peer_eof:
            transport.write_eof()
            self._linger = self.pod._loop.call_later(_LINGER_SECONDS, transport.close)
        else:
            transport.close()

    def abort(self) -> None:
        self.transport.abort()

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.closing = True
        if self._linger is not None:
            self._linger.cancel()
        self.pod._connections.discard(self)
        self._teardown()

    def _teardown(self) -> None:
        raise NotImplementedError


class _Sniffer(_Connection):
    """Reads until it can tell an HTTP/2 client preface from an HTTP/1.1 request line."""

    def __init__(self, pod: DemoPod) -> None:
        # The rest of the state needs the transport: see connection_made.
        self.pod = pod
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().__init__(self.pod, cast(asyncio.Transport, transport))
        self.pod._connections.add(self)
        self.pod.stats.connections_total += 1

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return  # told to go away before the client said which protocol: nothing more is served
        buffer = self._buffer + data
        seen = min(len(buffer), len(_PREFACE))
        connection: _Connection
        if buffer[:seen] != _PREFACE[:seen]:
            connection = _H1Connection(self.pod, self.transport)
        elif seen == len(_PREFACE):
            connection = _H2Connection(self.pod, self.transport)
        else:
            self._buffer = buffer
            return
        self._buffer = b""
        self.pod._connections.discard(self)
        self.pod._connections.add(connection)
        self.transport.set_protocol(connection)
        connection.data_received(buffer)

    def _wake_all(self) -> None:
        pass

    def go_away(self, last_stream_id: int | None) -> None:
        self.close_gracefully()

    def _teardown(self) -> None:
        pass


class _H2Exchange(_Exchange):
    __slots__ = ("conn",)

    def __init__(
        self,
        conn: _H2Connection,
        stream_id: int,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        super().__init__(conn.pod, method, target, headers, stream_id)
        self.conn = conn

    def _sid(self) -> int:
        return cast(int, self.stream_id)

    def request_headers(self) -> list[tuple[bytes, bytes]]:
        return self.headers

    def _return_credit(self, credit: int) -> None:
        conn = self.conn
        if credit and not conn.lost:
            conn.h2.acknowledge_received_data(credit, self._sid())
            conn.schedule_flush()

    def _response_headers(
        self, status: int, headers: list[tuple[bytes, bytes]], content_length: int | None
    ) -> list[tuple[bytes, bytes]]:
        fields = [(b":status", _STATUS_BYTES[status]), (b"x-pod", self.pod._name), *headers]
        if content_length is not None:
            fields.append((b"content-length", str(content_length).encode("ascii")))
        return fields

    def respond(self, status: int, content_type: bytes, body: bytes) -> None:
        if self.gone:
            raise _StreamGone
        conn = self.conn
        h2c = conn.h2
        sid = self._sid()
        no_content = status in _NO_CONTENT_STATUSES
        fields = self._response_headers(
            status, [(b"content-type", content_type)], None if no_content else len(body)
        )
        self.response_started = True
        try:
            if self.head or no_content or not body:
                h2c.send_headers(sid, fields, end_stream=True)
            elif len(body) <= min(h2c.local_flow_control_window(sid), h2c.max_outbound_frame_size):
                h2c.send_headers(sid, fields)
                h2c.send_data(sid, body, end_stream=True)
            else:
                h2c.send_headers(sid, fields)
                conn.schedule_flush()
                self.pod._spawn(self, self._finish_body(body))
                return
        except h2.exceptions.ProtocolError as exc:
            # The peer reset the stream in the batch being processed (the event comes later).
            raise _StreamGone from exc
        conn.schedule_flush()
        self._on_response_end()

    async def _finish_body(self, body: bytes) -> None:
        with contextlib.suppress(_StreamGone):
            await self.write(body)
            self.finish()

    def send_headers(
        self, status: int, headers: list[tuple[bytes, bytes]], content_length: int | None
    ) -> None:
        if self.gone:
            raise _StreamGone
        fields = self._response_headers(status, headers, content_length)
        try:
            self.conn.h2.send_headers(self._sid(), fields, end_stream=self.head)
        except h2.exceptions.ProtocolError as exc:
            raise _StreamGone from exc
        self.response_started = True
        self.conn.schedule_flush()
        if self.head:
            self._on_response_end()

    async def write(self, data: bytes) -> None:
        if self.head or not data:
            return
        conn = self.conn
        h2c = conn.h2
        sid = self._sid()
        view = memoryview(data)
        sent = 0
        total = len(data)
        while sent < total:
            if self.gone:
                raise _StreamGone
            try:
                # RFC 9113 §6.9: never more than the peer's stream and connection windows allow.
                size = min(
                    h2c.local_flow_control_window(sid), h2c.max_outbound_frame_size, total - sent
                )
                if size <= 0:
                    await self._wait()
                    continue
                h2c.send_data(sid, view[sent : sent + size])
            except h2.exceptions.ProtocolError as exc:
                raise _StreamGone from exc
            sent += size
            if conn.queued(size):
                # Let other streams and the reader run between big bursts.
                await asyncio.sleep(0)
        while conn.paused:
            if self.gone:
                raise _StreamGone
            await self._wait()

    def finish(self, trailers: list[tuple[bytes, bytes]] | None = None) -> None:
        if self.gone:
            raise _StreamGone
        if not self.head:
            try:
                if trailers:
                    # RFC 9113 §8.1: trailers are a HEADERS frame that ends the stream.
                    self.conn.h2.send_headers(self._sid(), trailers, end_stream=True)
                else:
                    self.conn.h2.end_stream(self._sid())
            except h2.exceptions.ProtocolError as exc:
                raise _StreamGone from exc
            self.conn.schedule_flush()
        self._on_response_end()

    async def abort(self) -> None:
        if self.gone:
            raise _StreamGone
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.conn.h2.reset_stream(self._sid(), _INTERNAL_ERROR)
        self.conn.schedule_flush()
        self._end_abnormally("reset", _INTERNAL_ERROR, "pod")

    def fail(self) -> None:
        if self.gone:
            return
        if not self.response_started:
            with contextlib.suppress(_StreamGone):
                self.respond(500, _TEXT, b"internal error\n")
                return
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.conn.h2.reset_stream(self._sid(), _INTERNAL_ERROR)
        self.conn.schedule_flush()
        self._end_abnormally("reset", _INTERNAL_ERROR, "pod")

    def _release(self) -> None:
        self.conn.forget(self)


class _H2Connection(_Connection):
    """HTTP/2 on top of h2's state machine, with GOAWAY and stream limits handled here."""

    def __init__(self, pod: DemoPod, transport: asyncio.Transport) -> None:
        super().__init__(pod, transport)
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_inbound_headers=True,
            # Outbound fields are built here and are already valid and lower-case.
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            split_outbound_cookies=False,
        )
        self.h2 = h2.connection.H2Connection(config=config)
        self.max_streams = pod.behaviour.max_concurrent_streams
        header_list_size = h2.connection.H2Connection.DEFAULT_MAX_HEADER_LIST_SIZE
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: header_list_size,
            },
        )
        self.h2.initiate_connection()
        # h2 treats a stream beyond SETTINGS_MAX_CONCURRENT_STREAMS as a connection error, but
        # RFC 9113 §5.1.2 makes it a stream error, and a client may legitimately open more
        # streams before our SETTINGS reach it. So h2 gets no limit once the advertised value
        # is out, and the limit is enforced per stream in `_on_request` with REFUSED_STREAM.
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: _MAX_STREAM_ID,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: header_list_size,
            },
        )
        self.streams: dict[int, _H2Exchange] = {}
        self.ignored: set[int] = set()
        self.stream_count = 0
        self.highest_accepted = 0
        self.goaway_last: int | None = None
        self._in_receive = False
        self._flush_scheduled = False
        self._unflushed = 0
        transport.write(self.h2.data_to_send())

    # -- output -------------------------------------------------------------------------------

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._unflushed = 0
        data = self.h2.data_to_send()
        if data and not self.closing:
            self.transport.write(data)

    def schedule_flush(self) -> None:
        """Write h2's output once this turn of the event loop is over (or the batch handled)."""
        if self._in_receive or self._flush_scheduled:
            return
        self._flush_scheduled = True
        self.pod._loop.call_soon(self._flush)

    def queued(self, size: int) -> bool:
        """`size` body bytes were queued in h2; True if they were flushed right away."""
        self._unflushed += size
        if self._unflushed >= _FLUSH_THRESHOLD and not self._in_receive:
            self._flush()
            return True
        self.schedule_flush()
        return False

    def _wake_all(self) -> None:
        for exchange in self.streams.values():
            exchange._wake()

    # -- input --------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self._in_receive = True
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            # h2 has queued a GOAWAY with the error (RFC 9113 §5.4.1).
            self._in_receive = False
            self._flush()
            self.closing = True
            self.transport.close()
            return
        try:
            for event in events:
                self._on_event(event)
        finally:
            self._in_receive = False
        self._flush()

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._on_request(event)
        elif isinstance(event, h2.events.DataReceived):
            exchange = self.streams.get(event.stream_id)
            if exchange is not None:
                exchange._on_body(event.data, event.flow_controlled_length)
            else:
                # Ignored or finished stream: the bytes still count against the connection
                # window (RFC 9113 §6.9), so hand the credit back.
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            exchange = self.streams.get(event.stream_id)
            if exchange is not None:
                exchange._on_request_end()
        elif isinstance(event, h2.events.WindowUpdated):
            if event.stream_id == 0:
                self._wake_all()
            else:
                exchange = self.streams.get(event.stream_id)
                if exchange is not None:
                    exchange._wake()
        elif isinstance(event, h2.events.StreamReset):
            self._on_reset(event)
        elif isinstance(event, h2.events.TrailersReceived):
            exchange = self.streams.get(event.stream_id)
            if exchange is not None:
                exchange.request_trailers = event.headers
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            # SETTINGS_INITIAL_WINDOW_SIZE may have opened every stream's window.
            self._wake_all()
        elif isinstance(event, h2.events.ConnectionTerminated):
            # h2 sends nothing after a GOAWAY from the peer, so there is nothing left to do.
            self.closing = True
            self.transport.close()

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        sid = event.stream_id
        headers = event.headers
        method = target = b""
        for name, value in headers:
            if not name.startswith(b":"):
                break  # h2 has checked that pseudo-header fields come first (RFC 9113 §8.3)
            if name == b":method":
                method = value
            elif name == b":path":
                target = value
        pod = self.pod
        exchange = _H2Exchange(self, sid, method, target, headers)
        if self.goaway_last is not None and sid > self.goaway_last:
            # RFC 9113 §6.8: streams above last_stream_id are not processed.
            self.ignored.add(sid)
            exchange.done = True
            pod._finish(exchange, "ignored", None, None)
            return
        self.stream_count += 1
        if event.stream_ended is not None:
            exchange.request_ended = True
        # RFC 9113 §5.1.2: a stream beyond the advertised limit is refused, not processed.
        if len(self.streams) >= self.max_streams or (exchange.tracked and pod._take_refusal()):
            self._refuse(exchange)
        else:
            self.streams[sid] = exchange
            self.highest_accepted = max(self.highest_accepted, sid)
            pod._admit(exchange)
            pod._dispatch(exchange)
        every = pod.behaviour.goaway_every
        if every > 0 and self.stream_count == every:
            self.go_away(sid)

    def _refuse(self, exchange: _H2Exchange) -> None:
        # RFC 9113 §8.7: REFUSED_STREAM promises the request was not processed.
        self.h2.reset_stream(exchange._sid(), _REFUSED_STREAM)
        exchange.done = True
        exchange.refused = True
        self.pod._finish(exchange, "refused", _REFUSED_STREAM, "pod")

    def _on_reset(self, event: h2.events.StreamReset) -> None:
        sid = event.stream_id
        error_code = int(event.error_code)
        exchange = self.streams.get(sid)
        if exchange is not None:
            if exchange.tracked and event.remote_reset:
                self.pod.stats.client_resets += 1
            exchange._end_abnormally("reset", error_code, "peer" if event.remote_reset else "pod")
        elif sid in self.ignored:
            self.ignored.discard(sid)
            if event.remote_reset:
                self.pod.stats.client_resets += 1

    # -- lifecycle ----------------------------------------------------------------------------

    def forget(self, exchange: _H2Exchange) -> None:
        self.streams.pop(exchange._sid(), None)
        if self.goaway_last is not None and not self.streams:
            self.close_gracefully()

    def go_away(self, last_stream_id: int | None) -> None:
        """GOAWAY(NO_ERROR): finish streams <= last_stream_id, ignore later ones, then close."""
        if self.closing:
            return
        last = self.highest_accepted if last_stream_id is None else last_stream_id
        if self.goaway_last is not None:
            last = min(last, self.goaway_last)  # RFC 9113 §6.8: it MUST NOT increase
        self.goaway_last = last
        # h2's close_connection() would move its state machine to CLOSED and refuse to send
        # the rest of the responses for streams <= last, so the frame is written here, after
        # everything h2 has queued so far.
        self._flush()
        self.transport.write(_goaway_frame(last, _NO_ERROR))
        self.pod.stats.goaways_sent += 1
        for sid, exchange in list(self.streams.items()):
            if sid > last:
                self.ignored.add(sid)
                exchange._end_abnormally("ignored", None, None)
        if not self.streams:
            self.close_gracefully()

    def _teardown(self) -> None:
        for exchange in list(self.streams.values()):
            exchange._end_abnormally("reset", None, None)
        self.streams.clear()


class _H1Exchange(_Exchange):
    __slots__ = (
        "accepts_trailers",
        "chunked",
        "close_connection",
        "conn",
        "expect_continue",
        "http11",
        "keep_alive",
        "target",
    )

    def __init__(
        self,
        conn: _H1Connection,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        http11: bool,
        keep_alive: bool,
    ) -> None:
        super().__init__(conn.pod, method, target, headers, None)
        self.conn = conn
        self.target = target
        self.http11 = http11
        self.keep_alive = keep_alive
        self.close_connection = False
        self.chunked = False
        te = self.header(b"te")
        self.accepts_trailers = te is not None and b"trailers" in te.lower()
        expect = self.header(b"expect")
        self.expect_continue = expect is not None and expect.lower() == b"100-continue"

    def request_headers(self) -> list[tuple[bytes, bytes]]:
        host = self.header(b"host") or b""
        scheme = b"https" if self.conn.tls else b"http"
        pseudo = [
            (b":method", self.method.encode("latin-1")),
            (b":path", self.target),
            (b":authority", host),
            (b":scheme", scheme),
        ]
        return pseudo + self.headers

    def _return_credit(self, credit: int) -> None:
        self.conn.consumed(credit)

    def _head(
        self, status: int, headers: list[tuple[bytes, bytes]], content_length: int | None
    ) -> bytes:
        conn = self.conn
        parts = [b"HTTP/1.1 ", _STATUS_LINES[status], b"\r\nx-pod: ", self.pod._name, b"\r\n"]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        if content_length is not None:
            parts += (b"content-length: ", str(content_length).encode("ascii"), b"\r\n")
        elif status not in _NO_CONTENT_STATUSES and not self.head:
            if self.http11:
                parts.append(b"transfer-encoding: chunked\r\n")
                self.chunked = True
            else:
                self.close_connection = True  # HTTP/1.0: the end of the body is the close
        if not self.keep_alive or conn.draining:
            self.close_connection = True
        if self.close_connection:
            parts.append(b"connection: close\r\n")
        elif not self.http11:
            parts.append(b"connection: keep-alive\r\n")
        parts.append(b"\r\n")
        self.response_started = True
        return b"".join(parts)

    def respond(self, status: int, content_type: bytes, body: bytes) -> None:
        if self.gone:
            raise _StreamGone
        no_content = status in _NO_CONTENT_STATUSES
        head = self._head(
            status, [(b"content-type", content_type)], None if no_content else len(body)
        )
        if self.head or no_content:
            self.conn.transport.write(head)
        else:
            self.conn.transport.write(head + body)
        self._on_response_end()

    def send_headers(
        self, status: int, headers: list[tuple[bytes, bytes]], content_length: int | None
    ) -> None:
        if self.gone:
            raise _StreamGone
        self.conn.transport.write(self._head(status, headers, content_length))
        if self.head:
            self._on_response_end()

    async def write(self, data: bytes) -> None:
        if self.gone:
            raise _StreamGone
        if self.head or not data:
            return
        transport = self.conn.transport
        if self.chunked:
            transport.write(b"".join((b"%x\r\n" % len(data), data, b"\r\n")))
        else:
            transport.write(data)
        while self.conn.paused:
            if self.gone:
                raise _StreamGone
            await self._wait()

    def finish(self, trailers: list[tuple[bytes, bytes]] | None = None) -> None:
        if self.gone:
            raise _StreamGone
        if self.chunked and not self.head:
            parts = [b"0\r\n"]
            # RFC 9110 §6.5: trailers only for a client that said it wants them (TE: trailers).
            if trailers and self.accepts_trailers:
                for name, value in trailers:
                    parts += (name, b": ", value, b"\r\n")
            parts.append(b"\r\n")
            self.conn.transport.write(b"".join(parts))
        self._on_response_end()

    async def abort(self) -> None:
        if self.gone:
            raise _StreamGone
        conn = self.conn
        transport = conn.transport
        # Everything written so far must reach the kernel before the reset. With a low-water
        # mark of 0, resume_writing() fires once the buffer is empty. (The buffer size is what
        # is checked: TLS transports report "paused" at a high-water mark of 0 even when empty.)
        transport.set_write_buffer_limits(high=0, low=0)
        while transport.get_write_buffer_size() > 0:
            if self.gone:
                raise _StreamGone
            await self._wait()
        raw_socket = transport.get_extra_info("socket")
        if raw_socket is not None:
            # Linger 0: close() sends RST instead of FIN, the way a crashing process does.
            with contextlib.suppress(OSError):
                raw_socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.closing = True
        self._end_abnormally("reset", None, "pod")
        transport.abort()

    def fail(self) -> None:
        if self.gone:
            return
        if not self.response_started:
            self.close_connection = True
            with contextlib.suppress(_StreamGone):
                self.respond(500, _TEXT, b"internal error\n")
                return
        self.conn.closing = True
        self._end_abnormally("reset", None, "pod")
        self.conn.transport.abort()

    def _release(self) -> None:
        self.conn.exchange_over(self)


class _H1Connection(_Connection):
    """HTTP/1.1 with httptools (llhttp); requests are answered strictly in order."""

    def __init__(self, pod: DemoPod, transport: asyncio.Transport) -> None:
        super().__init__(pod, transport)
        self.tls = transport.get_extra_info("sslcontext") is not None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[_H1Exchange] = deque()
        self.parsing: _H1Exchange | None = None
        self.request_count = 0
        self.buffered = 0
        self.reading_paused = False
        self.draining = False
        self.input_done = False
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []

    # -- httptools callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.parsing is None:
            self._headers.append((name.lower(), value))
        else:
            self.parsing.request_trailers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        exchange = _H1Exchange(
            self,
            parser.get_method(),
            self._url,
            self._headers,
            http11=parser.get_http_version() != "1.0",
            keep_alive=parser.should_keep_alive(),
        )
        pod = self.pod
        self.parsing = exchange
        self.request_count += 1
        every = pod.behaviour.goaway_every
        if every > 0 and self.request_count >= every:
            exchange.close_connection = True
        if exchange.tracked and pod._take_refusal():
            exchange.refused = True
        else:
            pod._admit(exchange)
        self.queue.append(exchange)
        if len(self.queue) == 1:
            self._start(exchange)
        else:
            self._update_reading()

    def on_body(self, body: bytes) -> None:
        exchange = self.parsing
        if exchange is not None:
            # Counted as buffered until the exchange hands the credit back (at once if it
            # discards the body, once read if it keeps it).
            self.buffered += len(body)
            exchange._on_body(body, len(body))
            self._update_reading()

    def on_message_complete(self) -> None:
        exchange = self.parsing
        self.parsing = None
        if exchange is not None:
            exchange._on_request_end()

    # -- flow -----------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closing or self.input_done:
            return
        while data:
            try:
                self.parser.feed_data(data)
                data = b""
            except httptools.HttpParserUpgrade as upgrade:
                # Upgrades are not supported; the request was answered as HTTP/1.1 and the
                # connection carries on with whatever follows it.
                data = data[upgrade.args[0] :]
            except httptools.HttpParserError:
                self._bad_request()
                return

    def _bad_request(self) -> None:
        if not self.queue:
            self.transport.write(
                b"HTTP/1.1 400 Bad Request\r\nx-pod: %s\r\ncontent-length: 12\r\n"
                b"connection: close\r\n\r\nbad request\n" % self.pod._name
            )
            self.close_gracefully()
            return
        # Input after a request that closes the connection (which llhttp rejects), or garbage
        # behind good requests: answer those, read nothing more, then close.
        self.input_done = True
        self.draining = True
        if self.parsing is not None:
            self.parsing._end_abnormally("reset", None, "peer")

    def eof_received(self) -> bool | None:
        self.peer_eof = True
        if self.parsing is not None:
            # The client went away in the middle of a request body: that request was cut off,
            # never complete (an HTTP/1.1 proxy cancels an upload exactly this way).
            self.parsing._end_abnormally("reset", None, "peer")
            self.parsing = None
            return False
        # Keep answering what was asked before the client half-closed (not possible over TLS).
        return bool(self.queue) and not self.tls

    def _start(self, exchange: _H1Exchange) -> None:
        if exchange.expect_continue and not exchange.request_ended:
            # RFC 9110 §10.1.1: tell the client to send the body it is holding back.
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.pod._dispatch(exchange)
        self._update_reading()

    def consumed(self, size: int) -> None:
        self.buffered -= size
        self._update_reading()

    def _update_reading(self) -> None:
        if self.closing:
            return
        # Stop reading while a handler has enough body buffered or requests are queued behind
        # the one being answered: the kernel's buffers and TCP push back on the client.
        want_pause = self.buffered > _H1_BODY_BUFFER_LIMIT or len(self.queue) > 1
        if want_pause and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()
        elif not want_pause and self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()

    def exchange_over(self, exchange: _H1Exchange) -> None:
        if self.queue and self.queue[0] is exchange:
            self.queue.popleft()
        if self.lost or self.closing:
            return
        if exchange.gone:
            # An aborted exchange leaves the connection unusable.
            self.closing = True
            self.transport.abort()
            return
        if exchange.close_connection or self.draining:
            self.close_gracefully()
            # Pipelined requests behind this one are never answered.
            for queued in list(self.queue):
                queued._end_abnormally("ignored", None, None)
        elif self.queue:
            self._start(self.queue[0])
        elif self.peer_eof:
            self.close_gracefully()
        else:
            self._update_reading()

    def _wake_all(self) -> None:
        for exchange in self.queue:
            exchange._wake()

    def go_away(self, last_stream_id: int | None) -> None:
        """No GOAWAY in HTTP/1.1: close when idle, or after the response being produced."""
        self.draining = True
        if not self.queue:
            self.close_gracefully()

    def _teardown(self) -> None:
        for exchange in list(self.queue):
            exchange._end_abnormally("reset", None, None)
        self.queue.clear()


# ---------------------------------------------------------------------------------------------
# The pod


class DemoPod:
    """A backend server with controllable behaviours, on one port for h2c, h2 and HTTP/1.1."""

    _loop: asyncio.AbstractEventLoop  # set by start()

    def __init__(
        self,
        behaviour: PodBehaviour,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl: ssl.SSLContext | None = None,
    ) -> None:
        self.behaviour = behaviour
        self.host = host
        self.port = port
        self.ssl = ssl
        self.stats = PodStats()
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._arrivals = 0
        self._refuse_next = 0
        self._name = behaviour.name.encode()
        self._name_source = behaviour.name
        self._stream_handlers = {
            "echo": _StreamHandler(self._echo),
            "trailers": _StreamHandler(self._trailers),
        }

    async def start(self) -> None:
        """Bind and listen; `port` holds the bound port afterwards."""
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(
            lambda: _Sniffer(self),
            self.host,
            self.port,
            ssl=self.ssl,
            backlog=1024,
            reuse_address=True,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Close the listener and every connection; handlers are cancelled."""
        server = self._server
        self._server = None
        if server is not None:
            server.close()
        for connection in list(self._connections):
            connection.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        # An aborted transport closes its socket on a later turn of the loop; let that happen
        # before returning so that callers can close the loop right away.
        for _ in range(10):
            if not self._connections:
                break
            await asyncio.sleep(0)
        if server is not None:
            await server.wait_closed()

    async def send_goaway_all(self, last_stream_id: int | None = None) -> None:
        """GOAWAY on every open HTTP/2 connection (HTTP/1.1 ones close once idle).

        `last_stream_id` defaults to the highest stream each connection has processed.
        """
        self._go_away_all(last_stream_id)

    def _go_away_all(self, last_stream_id: int | None) -> None:
        for connection in list(self._connections):
            connection.go_away(last_stream_id)

    # -- bookkeeping ----------------------------------------------------------------------------

    def _take_refusal(self) -> bool:
        """Called once per arriving (non-admin) stream: should it be refused?"""
        self._arrivals += 1
        if self._refuse_next > 0:
            self._refuse_next -= 1
            return True
        every = self.behaviour.refuse_every
        return every > 0 and self._arrivals % every == 0

    def _admit(self, exchange: _Exchange) -> None:
        if self.behaviour.name is not self._name_source:
            self._name_source = self.behaviour.name
            self._name = self._name_source.encode()
        if exchange.tracked:
            stats = self.stats
            stats.requests += 1
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            exchange.in_flight = True

    def _leave(self, exchange: _Exchange) -> None:
        if exchange.in_flight:
            exchange.in_flight = False
            self.stats.in_flight -= 1

    def _finish(
        self,
        exchange: _Exchange,
        outcome: Outcome,
        error_code: int | None,
        reset_by: Literal["peer", "pod"] | None,
    ) -> None:
        self._leave(exchange)
        if not exchange.tracked:
            return
        if outcome == "refused":
            self.stats.refused += 1
        self.stats.log.append(
            StreamRecord(
                exchange.path,
                outcome,
                error_code,
                exchange.body_bytes,
                exchange.stream_id,
                reset_by,
            )
        )

    def _spawn(self, exchange: _Exchange, coroutine: Coroutine[object, object, None]) -> None:
        task = self._loop.create_task(coroutine)
        exchange.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- dispatch -------------------------------------------------------------------------------

    def _dispatch(self, exchange: _Exchange) -> None:
        exchange.dispatched = True
        if not exchange.keep_body and exchange.chunks:
            exchange._discard_buffered()
        route = self._route(exchange)
        if (
            not isinstance(route, _StreamHandler)
            and exchange.request_ended
            and (self.behaviour.delay <= 0 or not exchange.tracked or exchange.refused)
        ):
            self._reply(exchange, route(exchange))
            return
        self._spawn(exchange, self._serve(exchange, route))

    def _reply(self, exchange: _Exchange, reply: _Reply) -> None:
        try:
            exchange.respond(reply.status, reply.content_type, reply.body)
        except _StreamGone:
            return
        if reply.after is not None:
            reply.after()

    async def _serve(self, exchange: _Exchange, route: _ReplyFn | _StreamHandler) -> None:
        try:
            if not exchange.keep_body:
                await exchange.wait_request_end()
            delay = self.behaviour.delay
            if delay > 0 and exchange.tracked and not exchange.refused:
                await asyncio.sleep(delay)
            if isinstance(route, _StreamHandler):
                await route.run(exchange)
            else:
                self._reply(exchange, route(exchange))
        except _StreamGone:
            pass
        except Exception:
            _log.exception("handler for %s failed", exchange.path)
            exchange.fail()

    def _route(self, exchange: _Exchange) -> _ReplyFn | _StreamHandler:
        if exchange.refused:
            return _reply_refused
        path = exchange.path
        if path == "/":
            return self._hello
        parts = path.split("/")
        first = parts[1] if len(parts) > 1 else ""
        if len(parts) == 2:
            if first == "healthz":
                return self._healthz
            if first == "headers":
                return _reply_headers
            if first == "upload":
                return _reply_upload
            stream_handler = self._stream_handlers.get(first)
            if stream_handler is not None:
                return stream_handler
        elif len(parts) == 3:
            count = _parse_count(parts[2])
            if first == "bytes":
                return _bad_request if count is None else self._bytes_route(count)
            if first == "delay":
                return _bad_request if count is None else _StreamHandler(_delay_handler(count))
            if first == "status":
                if count is None or not 200 <= count <= 599:
                    return _bad_request
                return _status_reply(count)
            if first == "reset-after":
                return _bad_request if count is None else _StreamHandler(_reset_after(count))
            if first == "admin":
                return self._admin_route(parts[2])
        elif len(parts) == 4 and first == "stream":
            count = _parse_count(parts[2])
            interval = _parse_count(parts[3])
            if count is None or interval is None:
                return _bad_request
            return _StreamHandler(_stream_chunks(count, interval))
        return self._hello

    def _hello(self, exchange: _Exchange) -> _Reply:
        return _Reply(200, b"hello from " + self._name + b"\n")

    def _healthz(self, exchange: _Exchange) -> _Reply:
        if self.behaviour.ready:
            return _Reply(200, b"ok\n")
        return _Reply(503, b"not ready\n")

    def _bytes_route(self, count: int) -> _ReplyFn | _StreamHandler:
        if count <= _CHUNK_SIZE:
            body = _FILL[:count]
            return lambda exchange: _Reply(200, body, _OCTETS)
        return _StreamHandler(_bytes_handler(count))

    async def _echo(self, exchange: _Exchange) -> None:
        content_type = exchange.header(b"content-type") or _OCTETS
        headers = [(b"content-type", content_type)]
        if isinstance(exchange, _H1Exchange) and exchange.accepts_trailers:
            headers.append((b"trailer", b"x-body-bytes"))
        exchange.send_headers(200, headers, None)
        while True:
            chunk = await exchange.read()
            if not chunk:
                break
            await exchange.write(chunk)
        trailers = [
            *exchange.request_trailers,
            (b"x-body-bytes", str(exchange.body_bytes).encode("ascii")),
        ]
        exchange.finish(trailers)

    async def _trailers(self, exchange: _Exchange) -> None:
        headers = [(b"content-type", _TEXT)]
        if isinstance(exchange, _H1Exchange) and exchange.accepts_trailers:
            headers.append((b"trailer", b"x-trailer"))
        exchange.send_headers(200, headers, None)
        await exchange.write(b"ok")
        exchange.finish([(b"x-trailer", b"yes")])

    def _admin_route(self, action: str) -> _ReplyFn:
        if action == "stats":
            return lambda exchange: _json_reply(self.stats.as_dict())
        if action == "reset-stats":
            return self._admin_reset_stats
        if action == "ready":
            return self._admin_ready
        if action == "goaway":
            return lambda exchange: _Reply(200, b"goaway\n", after=lambda: self._go_away_all(None))
        if action == "refuse-next":
            return self._admin_refuse_next
        return self._hello

    def _admin_reset_stats(self, exchange: _Exchange) -> _Reply:
        self.stats.reset()
        self._arrivals = 0
        return _Reply(200, b"reset\n")

    def _admin_ready(self, exchange: _Exchange) -> _Reply:
        state = parse_qs(exchange.query).get("state", [""])[0]
        if state not in ("0", "1"):
            return _Reply(400, b"state must be 0 or 1\n")
        self.behaviour.ready = state == "1"
        return _json_reply({"ready": self.behaviour.ready})

    def _admin_refuse_next(self, exchange: _Exchange) -> _Reply:
        count = _parse_count(parse_qs(exchange.query).get("n", [""])[0])
        if count is None:
            return _Reply(400, b"n must be a non-negative integer\n")
        self._refuse_next = count
        return _json_reply({"refuse_next": count})


def _json_reply(value: object, status: int = 200) -> _Reply:
    return _Reply(status, json.dumps(value).encode() + b"\n", _JSON)


def _bad_request(exchange: _Exchange) -> _Reply:
    return _Reply(400, b"bad request\n")


def _reply_refused(exchange: _Exchange) -> _Reply:
    return _Reply(503, b"refused\n")


def _reply_upload(exchange: _Exchange) -> _Reply:
    return _json_reply({"bytes": exchange.body_bytes})


def _reply_headers(exchange: _Exchange) -> _Reply:
    fields: dict[str, list[str]] = {}
    for name, value in exchange.request_headers():
        fields.setdefault(name.decode("latin-1"), []).append(value.decode("latin-1"))
    return _json_reply(fields)


def _status_reply(status: int) -> _ReplyFn:
    body = b"status %d\n" % status
    return lambda exchange: _Reply(status, body)


def _delay_handler(milliseconds: int) -> Callable[[_Exchange], Awaitable[None]]:
    async def run(exchange: _Exchange) -> None:
        await asyncio.sleep(milliseconds / 1000)
        exchange.respond(200, _TEXT, b"delayed %d ms\n" % milliseconds)

    return run


async def _write_fill(exchange: _Exchange, count: int) -> None:
    """Write ``count`` bytes of the repeating 0x00..0xff pattern, one chunk at a time."""
    remaining = count
    while remaining > 0:
        size = min(remaining, _CHUNK_SIZE)
        await exchange.write(_FILL[:size])
        remaining -= size


def _bytes_handler(count: int) -> Callable[[_Exchange], Awaitable[None]]:
    async def run(exchange: _Exchange) -> None:
        exchange.send_headers(200, [(b"content-type", _OCTETS)], count)
        await _write_fill(exchange, count)
        exchange.finish()

    return run


def _stream_chunks(count: int, interval_ms: int) -> Callable[[_Exchange], Awaitable[None]]:
    async def run(exchange: _Exchange) -> None:
        exchange.send_headers(200, [(b"content-type", _TEXT)], None)
        for index in range(count):
            if index and interval_ms:
                await asyncio.sleep(interval_ms / 1000)
            await exchange.write(b"chunk %d\n" % index)
        exchange.finish()

    return run


def _reset_after(count: int) -> Callable[[_Exchange], Awaitable[None]]:
    async def run(exchange: _Exchange) -> None:
        exchange.send_headers(200, [(b"content-type", _OCTETS)], None)
        await _write_fill(exchange, count)
        await exchange.abort()

    return run


# ---------------------------------------------------------------------------------------------
# Command line


def _parse_listen(value: str) -> tuple[str, int]:
    try:
        return parse_hostport(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m activator.demopod",
        description="A backend pod with controllable behaviours (h2c, h2, HTTP/1.1).",
    )
    parser.add_argument("--listen", type=_parse_listen, default=("127.0.0.1", 9001))
    parser.add_argument("--name", default="pod")
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--goaway-every", type=int, default=0)
    parser.add_argument("--refuse-every", type=int, default=0)
    parser.add_argument("--max-concurrent-streams", type=int, default=100)
    parser.add_argument("--not-ready", action="store_true", help="start with /healthz at 503")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    return parser


async def _serve_until_signalled(pod: DemoPod) -> None:
    await pod.start()
    print(
        f"demopod {pod.behaviour.name} listening on {pod.host}:{pod.port}"
        f" ({'h2, http/1.1 over TLS' if pod.ssl else 'h2c, http/1.1'})",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await pod.stop()


def main(argv: list[str] | None = None) -> int:
    """Run a pod until SIGINT or SIGTERM."""
    args = _argument_parser().parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        print("--tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    host, port = args.listen
    behaviour = PodBehaviour(
        name=args.name,
        delay=args.delay_ms / 1000,
        goaway_every=args.goaway_every,
        refuse_every=args.refuse_every,
        max_concurrent_streams=args.max_concurrent_streams,
        ready=not args.not_ready,
    )
    context = make_server_ssl_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    pod = DemoPod(behaviour, host, port, ssl=context)
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve_until_signalled(pod))
    return 0


if __name__ == "__main__":
    sys.exit(main())
