"""Pooled connections to pods: HTTP/2 (prior knowledge or TLS+ALPN) shared by many streams, and HTTP/1.1
keep-alive connections carrying one request at a time.

A connection's first read/write error fails every stream on it at once and retires it (sticky failure).
A GOAWAY drains a connection: streams at or below its last_stream_id finish, streams above it were not
processed and are replayed elsewhere (RFC 9113 §6.8).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import httptools

from activator.config import parse_hostport
from activator.core.headers import HeaderList, forward_response, without_content_length
from activator.core.pool_policy import ASSUMED_MAX_STREAMS, PoolAction, choose_connection
from activator.core.retry import ReplayReason
from activator.core.sweep import seen_for
from activator.io import pod_h2
from activator.io.h2base import H2Endpoint, write_queue
from activator.io.h2lib import h2
from activator.io.pod_h2 import (
    DATA,
    GOAWAY,
    RESET,
    RESPONSE,
    SETTINGS,
    STREAM_ERROR,
    TRAILERS,
    WINDOW,
    PodH2Connection,
)

if TYPE_CHECKING:
    from activator.io.exchange import Exchange
    from activator.io.service import ServiceRuntime

log = logging.getLogger("activator.upstream")

_REFUSED = pod_h2.REFUSED_STREAM
_CANCEL = pod_h2.CANCEL


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    """How a service talks to its pods."""

    protocol: str = "h2c"  # h2c | http1 | https
    max_connections_per_pod: int = 16
    connect_timeout: float = 5.0
    idle_timeout: float = 60.0
    # Per-stream and per-connection receive windows we grant pods. The connection window is returned
    # as data arrives; a stream window only as its bytes reach the client, so it bounds what a slow
    # client can make us hold, per stream.
    stream_window: int = 256 * 1024
    connection_window: int = 16 << 20
    # A connection silent this long gets a PING; one that then stays silent as long again is dead
    # (a partitioned pod sends no RST, so only a PING finds it).
    ping_after: float = 10.0
    ssl_context: ssl.SSLContext | None = None
    # Name sent as SNI and checked in the pod's certificate; None = the pod's host.
    server_name: str | None = None


class PodPool:
    """Connections to one pod of one service."""

    def __init__(
        self,
        address: str,
        settings: UpstreamSettings,
        service: ServiceRuntime,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.address = address
        self.host, self.port = parse_hostport(address)
        self.settings = settings
        self.service = service
        self.loop = loop
        self.h2: list[H2Upstream] = []
        self.h1_idle: list[H1Upstream] = []
        self.h1_busy: set[H1Upstream] = set()
        self.h1_count = 0
        self.waiting: deque[Exchange] = deque()
        self.retired = False
        # Streams the pod serves per connection before it sends GOAWAY (0 = no limit seen), and the
        # count the last graceful GOAWAY left off at.
        self.streams_per_connection = 0
        self.last_goaway_count = 0
        # None until known; https pods pick by ALPN on their first connection.
        self.http2: bool | None = {"h2c": True, "http1": False}.get(settings.protocol)

    # -- placing streams ---------------------------------------------------------------------------

    def open_stream(self, ex: Exchange) -> None:
        if self.http2 is False:
            self._open_h1(ex)
            return
        choice = choose_connection(self.h2, self.settings.max_connections_per_pod)
        if choice is PoolAction.OPEN:
            conn = H2Upstream(self)
            self.h2.append(conn)
            conn.pending.append(ex)
            self.loop.create_task(self._connect(conn))
        elif choice is PoolAction.WAIT:
            self.waiting.append(ex)
        else:
            choice.start_stream(ex)

    def slot_freed(self) -> None:
        """A stream ended somewhere in this pool: let a waiting one in."""
        while self.waiting:
            ex = self.waiting.popleft()
            if ex.done:
                continue
            self.open_stream(ex)
            return

    def _open_h1(self, ex: Exchange) -> None:
        while self.h1_idle:
            conn = self.h1_idle.pop()
            if conn.usable:
                self.h1_busy.add(conn)
                conn.start(ex)
                return
        conn1 = H1Upstream(self)
        self.h1_count += 1
        self.h1_busy.add(conn1)
        conn1.exchange = ex
        self.loop.create_task(self._connect(conn1))

    async def _connect(self, conn: H2Upstream | H1Upstream) -> None:
        settings = self.settings
        try:
            async with asyncio.timeout(settings.connect_timeout):
                await self.loop.create_connection(
                    lambda: conn,
                    self.host,
                    self.port,
                    ssl=settings.ssl_context,
                    server_hostname=(settings.server_name or self.host)
                    if settings.ssl_context is not None
                    else None,
                )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            conn.connect_failed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    def discard(self, conn: H2Upstream | H1Upstream) -> None:
        if isinstance(conn, H2Upstream):
            if conn in self.h2:
                self.h2.remove(conn)
        else:
            self.h1_count -= 1
            self.h1_busy.discard(conn)
            if conn in self.h1_idle:
                self.h1_idle.remove(conn)
        self.slot_freed()

    def connection_failed(self, reason: str, exchanges: list[Exchange]) -> None:
        self.service.pod_failed(self.address, reason)
        for ex in exchanges:
            if not ex.done:
                self.service.connect_failed(ex, reason)

    def retire(self) -> None:
        """The pod left the endpoint set: finish what runs, start nothing new, close when idle."""
        self.retired = True
        for h2conn in list(self.h2):
            h2conn.drain()
        for h1conn in list(self.h1_idle):
            h1conn.close()
        self.h1_idle.clear()
        while self.waiting:
            ex = self.waiting.popleft()
            if not ex.done:
                self.service.connect_failed(ex, "pod removed")

    @property
    def connection_count(self) -> int:
        return len(self.h2) + self.h1_count

    def exchanges(self) -> list[Exchange]:
        """Exchanges running on this pod's connections (for the timeout sweep)."""
        out: list[Exchange] = list(self.waiting)
        for conn in self.h2:
            out.extend(conn.streams.values())
            out.extend(conn.pending)
        for h1 in self.h1_busy:
            if h1.exchange is not None:
                out.append(h1.exchange)
        return out


class H2Upstream(H2Endpoint, asyncio.Protocol):
    """One HTTP/2 connection to a pod, shared by many streams."""

    conn: PodH2Connection

    def __init__(self, pool: PodPool) -> None:
        super().__init__(pool.loop, pool.settings.stream_window)
        self.pool = pool
        self.conn = PodH2Connection(
            stream_window=pool.settings.stream_window,
            connection_window=pool.settings.connection_window,
        )
        self.pending: list[Exchange] = []
        self.streams: dict[int, Exchange] = {}
        self.connected = False
        self.settings_received = False
        self.started = 0  # streams opened over the connection's life
        self.completed = 0  # responses completed over the connection's life
        self.closed = False
        self.draining = False
        self.peer_max_streams = ASSUMED_MAX_STREAMS
        # Liveness and idleness without a clock read or a timer per request: the sweep compares
        # these counters once a second.
        self.reads = 0
        self._reads_seen = 0
        self._started_seen = 0
        self._idle_ticks = 0  # consecutive sweeps that found no stream (see core.sweep)
        self._silent_for = 0.0
        self._ping_sent = False

    # ConnectionView for the pool policy.
    @property
    def usable(self) -> bool:
        return not (self.closed or self.draining)

    @property
    def active_streams(self) -> int:
        return len(self.streams) + len(self.pending)

    @property
    def max_streams(self) -> int:
        budget = self.pool.streams_per_connection
        if budget:
            # The pod closes connections after `budget` streams (nginx keepalive_requests): never
            # give one more streams than it will take, counting those it already served.
            return min(self.peer_max_streams, budget - self.started + len(self.streams))
        return self.peer_max_streams

    # -- lifecycle ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        settings = self.pool.settings
        if settings.ssl_context is not None:
            ssl_object = transport.get_extra_info("ssl_object")
            alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
            if alpn != "h2":
                # The pod speaks HTTP/1.1 only: hand our streams to HTTP/1.1 connections.
                self.pool.http2 = False
                transport.close()
                self.closed = True
                self.pool.discard(self)
                pending, self.pending = self.pending, []
                for ex in pending:
                    self.pool.open_stream(ex)
                return
            self.pool.http2 = True
        self.transport = transport
        self.connected = True
        sock = transport.get_extra_info("socket")
        if sock is not None:
            _set_nodelay(sock)
        self.conn.initiate_connection()
        # Streams wait for the pod's SETTINGS (RFC 9113 §3.4: its first frame): sending them now
        # would exceed a SETTINGS_MAX_CONCURRENT_STREAMS below our assumption and get them refused.
        self.flush()

    def connect_failed(self, reason: str) -> None:
        self.closed = True
        self.pool.discard(self)
        pending, self.pending = self.pending, []
        self.pool.connection_failed(reason, pending)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self.pool.discard(self)
        streams, self.streams = self.streams, {}
        self._blocked.clear()
        reason = str(exc) if exc else "closed by pod"
        pending, self.pending = self.pending, []
        for ex in pending:
            # Never sent: as safe to retry as a failed connect.
            if not ex.done:
                self.pool.service.connect_failed(ex, reason)
        for ex in streams.values():
            ex.on_upstream_lost(reason)
        if streams and exc is not None:
            self.pool.service.pod_failed(self.pool.address, reason)

    def drain(self) -> None:
        """No new streams; close once the running ones are done."""
        self.draining = True
        if not self.streams and not self.pending:
            self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.conn.send_goaway()
            self.flush()
            self.transport.close()

    # -- streams -----------------------------------------------------------------------------------

    def start_stream(self, ex: Exchange) -> None:
        if not self.settings_received:
            self.pending.append(ex)
            return
        conn = self.conn
        try:
            stream_id = conn.get_next_available_stream_id()
            end = ex.body_in_headers
            conn.send_headers(stream_id, ex.headers, end_stream=end, head=ex.method == b"HEAD")
        except h2.exceptions.ProtocolError as exc:
            # The connection cannot take streams (stream ids exhausted, or broken): retire it;
            # this stream never left, so it goes elsewhere.
            log.info("pod %s: connection retired: %s", self.pool.address, exc)
            self.draining = True
            if not self.streams:
                self.close()
            ex.replay_after(ReplayReason.GOAWAY, charge=False)
            return
        self.streams[stream_id] = ex
        self.started += 1
        ex.attach(self, stream_id, headers_ended=end)
        self.schedule_flush()

    def _start_pending(self) -> None:
        """The pod's SETTINGS arrived: start what fits, hand the rest back to the pool."""
        pending, self.pending = self.pending, []
        overflow = []
        for ex in pending:
            if ex.done:
                continue
            if len(self.streams) < self.max_streams and self.usable:
                self.start_stream(ex)
            else:
                overflow.append(ex)
        for ex in overflow:
            self.pool.open_stream(ex)
        self.pool.slot_freed()

    def send_data(self, ex: Exchange, data: bytes, ack_len: int, end_stream: bool) -> None:
        try:
            self.send_body(ex.up_stream, ex, data, ack_len, end_stream)
        except h2.exceptions.ProtocolError:  # the stream or the connection is gone
            pass

    def send_trailers(self, ex: Exchange, trailers: HeaderList) -> None:
        try:
            self.send_trailer_block(ex.up_stream, ex, trailers)
        except h2.exceptions.ProtocolError:
            pass

    def on_sent(self, ex: Exchange, ack_len: int) -> None:
        if ack_len:
            ex.client.ack_request(ex, ack_len)

    def ack_response(self, ex: Exchange, nbytes: int) -> None:
        if not self.closed and ex.up_stream in self.streams:  # no window owed to an ended stream
            self.consumed(ex.up_stream, nbytes)

    def cancel(self, ex: Exchange) -> None:
        sid = ex.up_stream
        if self.streams.pop(sid, None) is not None:
            self.reset_stream(sid, _CANCEL)
            self._stream_closed()
        elif ex in self.pending:
            self.pending.remove(ex)

    def _stream_closed(self) -> None:
        if not self.streams and not self.pending:
            budget = self.pool.streams_per_connection
            if self.draining or self.pool.retired or (budget and self.started >= budget):
                # Done, or spent the pod's per-connection budget: a new connection serves next.
                self.draining = True
                self.close()
                self.pool.discard(self)  # lets a waiting stream in, too
                return
        self.pool.slot_freed()

    # -- reading -----------------------------------------------------------------------------------

    def tick(self, interval: float) -> None:
        """Called once per ``interval`` seconds: close an idle connection, PING a silent one,
        retire a dead one."""
        if not self.connected or self.closed:
            return
        if self.streams or self.pending or self.started != self._started_seen:
            self._started_seen = self.started
            self._idle_ticks = 0
        else:
            self._idle_ticks += 1
            timeout = self.pool.settings.idle_timeout
            if timeout > 0 and seen_for(self._idle_ticks, interval) >= timeout:
                self.draining = True
                self.close()
                return
        if self.reads != self._reads_seen:
            self._reads_seen = self.reads
            self._silent_for = 0.0
            self._ping_sent = False
            return
        self._silent_for += interval
        ping_after = self.pool.settings.ping_after
        if ping_after <= 0 or self._silent_for < ping_after:
            return
        if not self._ping_sent:
            self._ping_sent = True
            self._silent_for = 0.0
            self.conn.ping(b"activatr")
            self.flush()
        elif self.transport is not None:
            log.warning("pod %s: no answer to PING; closing the connection", self.pool.address)
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.reads += 1
        broken: pod_h2.PodConnectionError | None = None
        try:
            events = self.conn.receive_data(data)
        except pod_h2.PodConnectionError as exc:
            # What the read held before the fault still happened: a GOAWAY's unprocessed streams
            # are replayed, whole responses delivered. Only then is the connection given up.
            broken = exc
            events = exc.events
            self.closed = True  # not usable from now on (a replay must go elsewhere)
        streams = self.streams
        for event in events:
            kind = event[0]
            if kind == DATA:
                _, sid, data, flow_len, end = event
                self._connection_credit += flow_len
                ex = streams.get(sid)
                if ex is not None and (data or end):
                    if end:
                        del streams[sid]
                    ex.on_response_data(data, flow_len, end)
                    if end:
                        self._response_complete(ex)
                elif ex is not None:  # an empty frame, or padding: nothing to forward, window owed
                    self.consumed(sid, flow_len)
            elif kind == RESPONSE:
                _, sid, headers, end = event
                ex = streams.get(sid)
                if ex is not None:
                    if end:
                        del streams[sid]
                    ex.on_response(headers, end)
                    if end:
                        self._response_complete(ex)
            elif kind == TRAILERS:
                ex = streams.pop(event[1], None)
                if ex is not None:
                    ex.on_response_trailers(event[2])
                    self._response_complete(ex)
            elif kind == WINDOW:
                self.unblock(event[1])
            elif kind == RESET:
                self._on_reset(event[1], event[2])
            elif kind == STREAM_ERROR:
                _, sid, code, reason = event
                log.warning(
                    "pod %s broke HTTP/2 on a stream (%s); stream reset", self.pool.address, reason
                )
                self._on_reset(sid, code)
            elif kind == GOAWAY:
                self._on_goaway(event[1], event[2])
            elif kind == SETTINGS:
                _, first, max_streams, window_changed = event
                if window_changed:
                    self.unblock(0)  # every stream's send window moved (RFC 9113 §6.9.2)
                if max_streams is not None:
                    self.peer_max_streams = max_streams
                if first:
                    self.settings_received = True
                    self._start_pending()
                elif max_streams is not None:
                    self.pool.slot_freed()
        if broken is not None:
            # connection_lost fails the streams left on it.
            log.warning("pod %s broke HTTP/2: %s", self.pool.address, broken)
            self.flush()
            if self.transport is not None:
                self.transport.close()
            self.writes.write_now()
            return
        if self._connection_credit:
            self.return_connection_credit()
        self.flush()
        # The responses this read carried go to their clients now (see WriteQueue).
        self.writes.write_now()

    def _response_complete(self, ex: Exchange) -> None:
        self.completed += 1
        sid = ex.up_stream
        self.drop_blocked(sid)
        # RFC 9113 §8.1: the pod answered before reading the whole request: stop sending it. (The
        # stream is closed already when the request had ended; then nothing is sent.)
        self.conn.reset_stream(sid, pod_h2.NO_ERROR)
        self._stream_closed()

    def _on_reset(self, stream_id: int, error_code: int) -> None:
        ex = self.streams.pop(stream_id, None)
        self.drop_blocked(stream_id)
        if ex is None:
            return
        self._stream_closed()
        if error_code == _REFUSED and not ex.response_started:
            # A connection that has answered streams is a live pod shedding load: not charged.
            ex.replay_after(ReplayReason.REFUSED, charge=self.completed == 0)
        else:
            ex.on_upstream_reset(error_code)

    def _on_goaway(self, last_stream_id: int, error_code: int) -> None:
        self.draining = True
        self.pool.service.goaways_total += 1
        processed = (last_stream_id + 1) // 2  # client stream ids are odd: 1, 3, 5, ...
        if error_code == 0 and 0 < processed < self.started:
            # A graceful GOAWAY that cut us short. Twice in a row at the same count, it is the pod's
            # per-connection limit (nginx keepalive_requests): later connections get no more than
            # that, so streams are not sent only to be turned away. Once is a drain or a restart.
            pool = self.pool
            if pool.last_goaway_count == processed:
                pool.streams_per_connection = processed
            pool.last_goaway_count = processed
        # Streams above last_stream_id were not processed (RFC 9113 §6.8): replay them elsewhere.
        # One the pod has begun to answer was processed whatever its GOAWAY says: it stays here.
        unprocessed = [
            sid
            for sid, ex in self.streams.items()
            if sid > last_stream_id and not ex.response_started
        ]
        replay = []
        for sid in unprocessed:
            ex = self.streams.pop(sid)
            self.drop_blocked(sid)
            replay.append(ex)
        pending, self.pending = self.pending, []
        replay.extend(pending)
        if not self.streams:
            self.close()
        self.pool.slot_freed()
        # A pod that processed streams before going away made progress: moving its leftovers to a
        # new connection is routine and costs the request no replay. One that took nothing might do
        # so forever, so that is charged against the request's replay limit.
        charge = processed == 0
        for ex in replay:
            ex.replay_after(ReplayReason.GOAWAY, charge=charge)


class H1Upstream(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection to a pod, one request at a time."""

    def __init__(self, pool: PodPool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.writes = write_queue(pool.loop)
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.chunked = False
        self.keep_alive = True
        self._headers: HeaderList = []
        self._paused = False
        self._unacked = 0
        self._close_delimited = False
        self._interim = False  # the message being parsed is a 1xx
        self._idle_ticks = 0  # sweeps since it joined the pool's idle list (see core.sweep)

    @property
    def usable(self) -> bool:
        return not self.closed and self.transport is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            _set_nodelay(sock)
        ex = self.exchange
        self.exchange = None
        if ex is not None and not ex.done:
            self.start(ex)
        elif ex is not None:
            self._idle()

    def connect_failed(self, reason: str) -> None:
        self.closed = True
        ex = self.exchange
        self.exchange = None
        self.pool.discard(self)
        self.pool.connection_failed(reason, [ex] if ex is not None else [])

    def start(self, ex: Exchange) -> None:
        self.exchange = ex
        self._headers = []
        self.keep_alive = True
        method = b"GET"
        path = b"/"
        authority = b""
        content_length = False
        lines = []
        for name, value in ex.headers:
            if name[:1] == b":":
                if name == b":method":
                    method = value
                elif name == b":path":
                    path = value
                elif name == b":authority":
                    authority = value
                continue
            if name == b"content-length":
                content_length = True
            lines.append(name + b": " + value)
        head = [method + b" " + path + b" HTTP/1.1", b"host: " + authority]
        head.extend(lines)
        whole = ex.body_in_headers  # the request is complete and has no body
        if whole:
            self.chunked = False
            if not content_length and method in (b"POST", b"PUT", b"PATCH"):
                head.append(b"content-length: 0")
        elif content_length:
            self.chunked = False
        else:
            self.chunked = True
            head.append(b"transfer-encoding: chunked")
        assert self.transport is not None
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n")
        ex.attach(self, 1, headers_ended=whole)

    def send_data(self, ex: Exchange, data: bytes, ack_len: int, end_stream: bool) -> None:
        transport = self.transport
        if transport is None or self.exchange is not ex:
            return
        if self.chunked:
            out = b"%x\r\n%b\r\n" % (len(data), data) if data else b""
            if end_stream:
                out += b"0\r\n\r\n"
            if out:
                transport.write(out)
        elif data:
            transport.write(data)
        if ack_len:
            # The kernel buffer is our flow control to an HTTP/1.1 pod.
            ex.client.ack_request(ex, ack_len)

    def send_trailers(self, ex: Exchange, trailers: HeaderList) -> None:
        if self.transport is None or self.exchange is not ex:
            return
        if self.chunked:
            fields = b"".join(n + b": " + v + b"\r\n" for n, v in trailers)
            self.transport.write(b"0\r\n" + fields + b"\r\n")

    def ack_response(self, ex: Exchange, nbytes: int) -> None:
        self._unacked -= nbytes
        if self._paused and self._unacked < 65536 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def cancel(self, ex: Exchange) -> None:
        # HTTP/1.1 has no stream reset: closing the connection is how a pod learns the client left.
        if self.exchange is ex:
            self.exchange = None
            self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # -- reading (httptools callbacks) -------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            ex = self.exchange
            self.exchange = None
            self.close()
            if ex is not None:
                ex.on_upstream_lost(f"bad HTTP/1.1 response: {exc}")
        self.writes.write_now()

    def on_message_begin(self) -> None:
        if self.exchange is None:
            # A response nobody asked for: read on, and part of it would be taken for the answer to
            # the next request on this connection. The error closes the connection instead.
            raise httptools.HttpParserError("a response while no request was in flight")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        ex = self.exchange
        status = self.parser.get_status_code()
        if status < 200:
            self._headers = []
            self._interim = True  # its message's end is not the response's
            return
        self.keep_alive = self.parser.should_keep_alive()
        framed = any(n in (b"content-length", b"transfer-encoding") for n, _ in self._headers)
        # (A HEAD's response ends at its head, below: the close never delimits one.)
        self._close_delimited = not framed and status not in (204, 304)
        headers: HeaderList = [(b":status", str(status).encode())]
        fields = forward_response(self._headers)
        headers.extend(without_content_length(fields) if status == 204 else fields)
        self._headers = []
        if ex is not None:
            ex.on_response(headers, False)
            if ex.method == b"HEAD":
                # A HEAD response has no body, whatever its framing fields say (RFC 9110 §9.3.2),
                # but llhttp cannot be told so through httptools and would wait for one: the
                # response ends here, and the connection with it.
                self._finish(ex, reuse=False)

    def on_body(self, body: bytes) -> None:
        ex = self.exchange
        if ex is None:
            return
        self._unacked += len(body)
        if self._unacked > 1 << 20 and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        ex.on_response_data(body, len(body), False)

    def on_message_complete(self) -> None:
        if self._interim:  # a 1xx (100 Continue, 103 Early Hints): the response is still to come
            self._interim = False
            return
        ex = self.exchange
        if ex is not None:
            self._finish(ex, reuse=True)

    def _finish(self, ex: Exchange, *, reuse: bool) -> None:
        """The response to ``ex`` is complete: keep the connection for the next request, or not."""
        self.exchange = None
        ex.on_response_end()
        if not reuse or not ex.up_sent_end or not self.keep_alive or self.pool.retired:
            self.close()
            self.pool.discard(self)
        else:
            self._idle()
        self.pool.slot_freed()

    def _idle(self) -> None:
        self.pool.h1_busy.discard(self)
        self.pool.h1_idle.append(self)
        self._idle_ticks = 0

    def idle_tick(self, interval: float) -> None:
        """Called once per ``interval`` seconds while the connection is in the idle list."""
        self._idle_ticks += 1
        timeout = self.pool.settings.idle_timeout
        if (
            timeout > 0
            and seen_for(self._idle_ticks, interval) >= timeout
            and self.exchange is None
        ):
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self.pool.discard(self)
        ex = self.exchange
        self.exchange = None
        if ex is not None and not ex.done:
            if self._close_delimited and ex.response_started:
                # RFC 9112 §6.3: no Content-Length and not chunked - the close ends the body.
                ex.on_response_end()
            else:
                ex.on_upstream_lost(str(exc) if exc else "closed by pod")


def _set_nodelay(sock: object) -> None:
    import socket

    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[attr-defined]
    except OSError:
        pass
