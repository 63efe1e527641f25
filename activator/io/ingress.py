"""The client-facing port: HTTP/2 with prior knowledge, HTTP/1.1 (with ``Upgrade: h2c``), and TLS with
ALPN, all on one listener.

A new connection is sniffed: the HTTP/2 client preface (RFC 9113 §3.4) selects HTTP/2, anything else is
HTTP/1.1; on TLS the ALPN result decides. Each request becomes an :class:`Exchange` placed on its own pod.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Final, NamedTuple, cast

import httptools

from activator.core.client_timer import ClientTimer, TimeoutAction
from activator.core.errors import (
    ActivatorError,
    ClientError,
    HeadersTooLarge,
    RequestTimeout,
    UnknownHost,
)
from activator.core.headers import (
    HeaderList,
    error_response,
    forward_request,
    h2c_settings_problem,
    is_grpc,
    request_head,
    trailers_error,
    without_connection_fields,
)
from activator.core.resets import MIN_STREAMS, PREMATURE_LIFETIME, PrematureResetGuard
from activator.io.exchange import Exchange
from activator.io.h2base import H2Endpoint, ProxyH2Connection, write_queue
from activator.io.h2lib import h2, strict_decoder
from activator.io.h2wire import PREFACE

if TYPE_CHECKING:
    from activator.io.service import ServiceRuntime

log = logging.getLogger("activator.ingress")

_NO_ERROR = h2.errors.ErrorCodes.NO_ERROR
_PROTOCOL_ERROR = h2.errors.ErrorCodes.PROTOCOL_ERROR
_REFUSED_STREAM = h2.errors.ErrorCodes.REFUSED_STREAM
_ENHANCE_YOUR_CALM = h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
_CANCEL = h2.errors.ErrorCodes.CANCEL
# Event classes the read loop compares exact types with.
_REQUEST_RECEIVED: Final = h2.events.RequestReceived
_STREAM_ENDED: Final = h2.events.StreamEnded
_DATA_RECEIVED: Final = h2.events.DataReceived
# Above this a header block is a connection error (ENHANCE_YOUR_CALM); between the configured limit and
# this, the stream alone gets 431.
HARD_HEADER_LIST_LIMIT = 1 << 20


class Router:
    """Maps a request's authority to its service, with a small cache (authorities repeat)."""

    def __init__(self, match: Callable[[str], ServiceRuntime | None]) -> None:
        self._match = match
        self._cache: OrderedDict[bytes, ServiceRuntime | None] = OrderedDict()

    def route(self, authority: bytes) -> ServiceRuntime | None:
        try:
            return self._cache[authority]
        except KeyError:
            pass
        try:
            service = self._match(authority.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            service = None
        self._cache[authority] = service
        if len(self._cache) > 1024:
            self._cache.popitem(last=False)
        return service

    def clear(self) -> None:
        self._cache.clear()


class IngressSettings:
    """Limits applied to every client connection (timeouts in seconds, 0 = none)."""

    __slots__ = (
        "connection_window",
        "header_timeout",
        "idle_timeout",
        "max_concurrent_streams",
        "max_header_bytes",
        "premature_reset_lifetime",
        "premature_reset_streams",
        "stream_window",
    )

    def __init__(
        self,
        *,
        max_concurrent_streams: int = 250,
        max_header_bytes: int = 65536,
        stream_window: int = 65535,
        connection_window: int = 16 << 20,
        idle_timeout: float = 3600.0,
        header_timeout: float = 30.0,
        premature_reset_streams: int = MIN_STREAMS,
        premature_reset_lifetime: float = PREMATURE_LIFETIME,
    ) -> None:
        self.max_concurrent_streams = max_concurrent_streams
        self.max_header_bytes = max_header_bytes
        self.stream_window = stream_window
        self.connection_window = connection_window
        self.idle_timeout = idle_timeout
        self.header_timeout = header_timeout
        self.premature_reset_streams = premature_reset_streams
        self.premature_reset_lifetime = premature_reset_lifetime


# Seconds between two sweeps of the client connections' timeouts (their resolution).
CLIENT_SWEEP_INTERVAL = 1.0
# Why the activator closed a client connection itself (the activator_client_connections_closed
# metric's reason label).
CLOSE_REASONS = ("idle", "header_timeout", "rapid_reset", "protocol_error")


class ClientConnections:
    """The client connections open in this process, and those it closed itself, by reason."""

    __slots__ = ("closed", "open")

    def __init__(self) -> None:
        self.open: set[IngressProtocol] = set()
        self.closed: dict[str, int] = dict.fromkeys(CLOSE_REASONS, 0)


class IngressProtocol(asyncio.Protocol):
    """Accepts one client connection and hands it to the HTTP/2 or HTTP/1.1 handler."""

    def __init__(
        self,
        router: Router,
        settings: IngressSettings,
        loop: asyncio.AbstractEventLoop,
        tls: bool,
        clients: ClientConnections,
    ) -> None:
        self.router = router
        self.settings = settings
        self.loop = loop
        self.writes = write_queue(loop)
        self.tls = tls
        self.scheme = b"https" if tls else b"http"
        self.clients = clients
        self.transport: asyncio.Transport | None = None
        self.handler: H2Ingress | H1Ingress | None = None
        self.client_ip = b""
        self._sniff = b""
        # Timeouts without a clock read or a timer per read: the sweep (tick) compares the read
        # count (HTTP/2: the count of streams opened) with the one it saw last.
        self.reads = 0
        self._activity_seen = 0
        self.timer = ClientTimer(
            settings.idle_timeout, settings.header_timeout, CLIENT_SWEEP_INTERVAL
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self.clients.open.add(self)
        peer = transport.get_extra_info("peername")
        self.client_ip = str(peer[0]).encode() if peer else b"unknown"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            import socket

            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        if self.tls:
            ssl_object = transport.get_extra_info("ssl_object")
            alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
            if alpn == "h2":
                self.handler = H2Ingress(self)
                self.handler.start()
            else:
                self.handler = H1Ingress(self)

    def data_received(self, data: bytes) -> None:
        self.reads += 1
        handler = self.handler
        if handler is not None:
            handler.data_received(data)
            # The requests this read started go to their pods now, not after the loop's other
            # reads: the pods work while the next client is read.
            self.writes.write_now()
            return
        # Sniff the HTTP/2 preface; HTTP/1.1 request lines never start with "PRI * HTTP/2.0".
        buf = self._sniff + data
        if len(buf) < len(PREFACE) and PREFACE.startswith(buf):
            self._sniff = buf
            return
        self._sniff = b""
        if buf.startswith(PREFACE):
            h2_handler = H2Ingress(self)
            self.handler = h2_handler
            h2_handler.start()
            h2_handler.data_received(buf)
        else:
            h1_handler = H1Ingress(self)
            self.handler = h1_handler
            h1_handler.data_received(buf)
        self.writes.write_now()

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        if self.handler is not None:
            self.handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.clients.open.discard(self)
        self.transport = None
        if self.handler is not None:
            self.handler.connection_lost()

    def shutdown(self) -> None:
        """Graceful stop: tell the client no new requests (GOAWAY / Connection: close)."""
        if self.handler is not None:
            self.handler.shutdown()
        elif self.transport is not None:
            self.transport.close()

    @property
    def busy(self) -> bool:
        return self.handler is not None and self.handler.busy

    def tick(self) -> None:
        """The sweep's call, every CLIENT_SWEEP_INTERVAL: the idle and header timeouts
        (:class:`activator.core.client_timer.ClientTimer` decides)."""
        transport = self.transport
        if transport is None:
            return
        handler = self.handler
        reads = self.reads
        # On HTTP/2 only a new stream is activity, as with Envoy's idle timeout: a client that
        # sends nothing but PING, SETTINGS or WINDOW_UPDATE frames does not hold its connection
        # open for ever. Any byte of HTTP/1.1 is part of a request.
        activity = handler.resets.opened if isinstance(handler, H2Ingress) else reads
        active = activity != self._activity_seen
        self._activity_seen = activity
        busy = self.busy
        # A pipelined head behind a request in flight waits for its turn, not for the client:
        # its time counts once the connection has nothing else to do (and a 408 then comes in
        # order, after the response before it).
        in_head = not busy and (handler is None or reads == 0 or handler.awaiting_head)
        action = self.timer.tick(active=active, busy=busy, in_head=in_head)
        if action is TimeoutAction.NONE:
            return
        if action is TimeoutAction.SLOW_HEAD:
            self._close_for_slow_head(transport)
        elif action is TimeoutAction.IDLE:
            self.clients.closed["idle"] += 1
            self.shutdown()  # GOAWAY (HTTP/2) or a plain close (HTTP/1.1, nothing in flight)
        else:  # our 408, GOAWAY or close did not get through: the client does not read
            transport.abort()

    def _close_for_slow_head(self, transport: asyncio.Transport) -> None:
        self.clients.closed["header_timeout"] += 1
        timeout = self.settings.header_timeout
        handler = self.handler
        if isinstance(handler, H1Ingress) and self.reads:
            handler.reject_slow_head(f"request head not received within {timeout:g} s")
        else:
            # Nothing, or not even a whole HTTP/2 preface, in all that time: nobody to answer.
            transport.close()


class H2Ingress(H2Endpoint):
    """A client's HTTP/2 connection: every stream is an independent exchange."""

    conn: ProxyH2Connection

    def __init__(self, owner: IngressProtocol) -> None:
        super().__init__(owner.loop, owner.settings.stream_window)
        self.owner = owner
        self.transport = owner.transport
        settings = owner.settings
        self.settings = settings
        self.conn = ProxyH2Connection.for_clients()
        self.conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: settings.max_concurrent_streams,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: settings.stream_window,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: HARD_HEADER_LIST_LIMIT,
                # The RFC 7541 default: jh2 would offer 64 KiB, a dynamic table per client
                # connection that costs memory on idle connections for little gain.
                h2.settings.SettingCodes.HEADER_TABLE_SIZE: 4096,
            },
        )
        # The Settings above are current at once (not pending an ACK), so h2 never copies this one to
        # its HPACK decoder: set it there, or blocks over h2's default 64 KiB become a connection error.
        self.conn.decoder = strict_decoder(self.conn.local_settings.header_table_size)
        self.conn.decoder.max_header_list_size = HARD_HEADER_LIST_LIMIT
        self.exchanges: dict[int, Exchange] = {}
        self.closing = False
        self.resets = PrematureResetGuard(
            self.settings.premature_reset_streams, self.settings.premature_reset_lifetime
        )

    @property
    def busy(self) -> bool:
        return bool(self.exchanges)

    # A request head is a HEADERS frame, read whole: only the preface can be slow (IngressProtocol
    # counts a connection that sent nothing yet).
    awaiting_head = False

    def start(self, upgrade_settings: bytes | None = None) -> None:
        if upgrade_settings is None:
            self.conn.initiate_connection()
        else:
            self.conn.initiate_upgrade_connection(upgrade_settings)
        extra = self.settings.connection_window - 65535
        if extra > 0:
            self.conn.increment_flow_control_window(extra)
        self.flush()

    # -- reading -----------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 has already queued GOAWAY with the right error code (RFC 9113 §5.4.1).
            log.info("client %s broke HTTP/2: %s", self.owner.client_ip.decode(), exc)
            self.owner.clients.closed["protocol_error"] += 1
            self._abort_and_close()
            return
        exchanges = self.exchanges
        for event in events:
            # Exact types (h2's event classes are not subclassed), most frequent first: a plain
            # request is RequestReceived then StreamEnded.
            if type(event) is _REQUEST_RECEIVED:
                self._on_request(event.stream_id, event.headers, event.stream_ended is not None)
            elif type(event) is _STREAM_ENDED:
                pass  # handled with the frame that carried END_STREAM
            elif type(event) is _DATA_RECEIVED:
                self._connection_credit += event.flow_controlled_length
                ex = exchanges.get(event.stream_id)
                if ex is not None and not ex.done:
                    ex.on_request_data(event.data, event.flow_controlled_length)
                # else: nobody will read it; its stream window does not matter any more.
                if event.stream_ended is not None:
                    self._stream_credit.pop(event.stream_id, None)
                    if ex is not None:
                        ex.on_request_end()
                        self._maybe_forget(ex)
            elif type(event) is h2.events.TrailersReceived:
                ex = exchanges.get(event.stream_id)
                problem = trailers_error(event.headers)
                if problem is not None:
                    log.info(
                        "client %s sent malformed trailers: %s",
                        self.owner.client_ip.decode(),
                        problem,
                    )
                    exchanges.pop(event.stream_id, None)
                    self.reset_stream(event.stream_id, _PROTOCOL_ERROR)
                    if ex is not None:
                        ex.on_client_reset()
                elif ex is not None:
                    ex.on_request_trailers(event.headers)
                    self._maybe_forget(ex)
            elif type(event) is h2.events.WindowUpdated:
                self.unblock(event.stream_id)
            elif type(event) is h2.events.RemoteSettingsChanged:
                if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
                    self.unblock(0)  # every stream's send window moved (RFC 9113 §6.9.2)
            elif type(event) is h2.events.StreamReset:
                ex = exchanges.pop(event.stream_id, None)
                self.drop_blocked(event.stream_id)
                if ex is not None:
                    unfinished = not ex.done
                    ex.on_client_reset()
                    if unfinished and self.resets.stream_reset(self.loop.time() - ex.started_at):
                        self._close_for_rapid_reset()
                        return
            elif type(event) is h2.events.ConnectionTerminated:
                self.closing = True
                if not exchanges and self.transport is not None:
                    self.flush()
                    self.transport.close()
                    return
        if self._connection_credit:
            self.return_connection_credit()
        self.flush()

    def _on_request(self, stream_id: int, headers: HeaderList, ended: bool) -> None:
        owner = self.owner
        self.resets.stream_opened()
        if len(self.exchanges) >= self.settings.max_concurrent_streams:
            # RFC 9113 §5.1.2: over our SETTINGS_MAX_CONCURRENT_STREAMS - refuse this stream only
            # (unprocessed, the client may retry it), not the connection.
            self.reset_stream(stream_id, _REFUSED_STREAM)
            return
        head = request_head(headers)
        if isinstance(head, str):
            # RFC 9113 §8.1.1: a malformed request is a stream error of type PROTOCOL_ERROR.
            log.info("client %s sent a malformed request: %s", owner.client_ip.decode(), head)
            self.reset_stream(stream_id, _PROTOCOL_ERROR)
            return
        headers, method, scheme, authority, grpc, size = head
        now = self.loop.time()
        service = owner.router.route(authority)
        error: ActivatorError | None = None
        if size > self.settings.max_header_bytes:
            error = HeadersTooLarge(
                f"request header block is {size} bytes, over the limit of "
                f"{self.settings.max_header_bytes}"
            )
        elif method == b"CONNECT":
            error = ClientError("CONNECT is not supported: this is not a forward proxy")
        elif service is None:
            error = UnknownHost(
                f"no service is configured for host {authority.decode('latin-1')!r}"
            )
        if error is not None or service is None:
            error = error or UnknownHost("no service")
            self._respond_error_stream(stream_id, error, grpc, ended, method == b"HEAD")
            return
        forwarded = forward_request(
            headers, client_ip=owner.client_ip, scheme=scheme or owner.scheme, authority=authority
        )
        ex = Exchange(self, stream_id, service, forwarded, method, grpc, ended, now, False)
        self.exchanges[stream_id] = ex
        service.dispatch(ex)

    def _respond_error_stream(
        self, stream_id: int, error: ActivatorError, grpc: bool, request_ended: bool, head: bool
    ) -> None:
        headers, body = _error_answer(error, grpc, head)
        conn = self.conn
        try:
            conn.send_headers(stream_id, headers, end_stream=not body)
            if body:
                conn.send_data(stream_id, body, end_stream=True)
            if not request_ended:
                conn.reset_stream(stream_id, _NO_ERROR)
        except h2.exceptions.ProtocolError:  # includes StreamClosedError, FlowControlError
            pass

    def _maybe_forget(self, ex: Exchange) -> None:
        if ex.done and ex.request_ended:
            self.exchanges.pop(ex.client_stream, None)
            self._check_close()

    # -- ClientSide ----------------------------------------------------------------------------------

    def respond_headers(self, ex: Exchange, headers: HeaderList, end_stream: bool) -> None:
        try:
            self.conn.send_headers(ex.client_stream, headers, end_stream=end_stream)
        except h2.exceptions.ProtocolError:  # stream or connection already gone
            self.exchanges.pop(ex.client_stream, None)
            return
        if end_stream:
            self._response_done(ex)
        self.schedule_flush()

    def respond_data(self, ex: Exchange, data: bytes, ack_len: int, end_stream: bool) -> None:
        try:
            self.send_body(ex.client_stream, ex, data, ack_len, end_stream)
        except h2.exceptions.ProtocolError:  # stream or connection already gone
            if ack_len and ex.up is not None:
                ex.up.ack_response(ex, ack_len)
            self.exchanges.pop(ex.client_stream, None)
            return
        if end_stream:
            self._response_done(ex)

    def respond_trailers(self, ex: Exchange, trailers: HeaderList) -> None:
        try:
            self.send_trailer_block(ex.client_stream, ex, trailers)
        except h2.exceptions.ProtocolError:
            self.exchanges.pop(ex.client_stream, None)
            return
        self._response_done(ex)

    def respond_reset(self, ex: Exchange, error_code: int) -> None:
        self.reset_stream(ex.client_stream, error_code)
        self.exchanges.pop(ex.client_stream, None)
        self._check_close()

    def respond_error(self, ex: Exchange, error: ActivatorError) -> None:
        self._respond_error_stream(
            ex.client_stream, error, ex.grpc, ex.request_ended, ex.method == b"HEAD"
        )
        self.exchanges.pop(ex.client_stream, None)
        self.schedule_flush()
        self._check_close()

    def ack_request(self, ex: Exchange, nbytes: int) -> None:
        if not ex.request_ended:  # after END_STREAM no window is owed
            self.consumed(ex.client_stream, nbytes)

    def on_sent(self, ex: Exchange, ack_len: int) -> None:
        if ack_len:
            up = ex.up
            if up is not None:
                up.ack_response(ex, ack_len)

    def _response_done(self, ex: Exchange) -> None:
        if not ex.request_ended:
            # RFC 9113 §8.1: a complete response before the request finished; stop the upload.
            self.reset_stream(ex.client_stream, _NO_ERROR)
        self.exchanges.pop(ex.client_stream, None)
        self._check_close()

    def _check_close(self) -> None:
        if self.closing and not self.exchanges and self.transport is not None:
            self.flush()
            self.transport.close()

    # -- lifecycle ---------------------------------------------------------------------------------

    def _close_for_rapid_reset(self) -> None:
        """GOAWAY(ENHANCE_YOUR_CALM) and close: the client resets its streams as fast as it opens
        them (see :mod:`activator.core.resets`); the rest of what it sent is not read."""
        resets = self.resets
        self.owner.clients.closed["rapid_reset"] += 1
        log.warning(
            "client %s reset %d of its %d streams within %g s of opening them (rapid reset):"
            " closing the connection with ENHANCE_YOUR_CALM",
            self.owner.client_ip.decode(),
            resets.premature,
            resets.opened,
            resets.premature_lifetime,
        )
        self.closing = True
        try:
            self.conn.close_connection(_ENHANCE_YOUR_CALM, b"rapid reset")
        except h2.exceptions.ProtocolError:
            pass
        self._abort_and_close()

    def _abort_and_close(self) -> None:
        """A connection error: every exchange cancelled, the GOAWAY already queued written, closed."""
        self._abort_all()
        self.flush()
        if self.transport is not None:
            self.transport.close()

    def _abort_all(self) -> None:
        exchanges, self.exchanges = self.exchanges, {}
        for ex in exchanges.values():
            ex.on_client_reset()

    def connection_lost(self) -> None:
        self.transport = None
        self._blocked.clear()
        self._abort_all()

    def shutdown(self) -> None:
        if self.closing:
            return
        self.closing = True
        try:
            self.conn.send_goaway(self.conn.highest_inbound_stream_id)
        except h2.exceptions.ProtocolError:
            pass
        self.flush()
        self._check_close()


_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        line = b"HTTP/1.1 %d %s\r\n" % (status, phrase.encode())
        if len(_STATUS_LINES) < 512:
            _STATUS_LINES[status] = line
    return line


def _error_answer(error: ActivatorError, grpc: bool, head: bool) -> tuple[HeaderList, bytes]:
    """The fields and body the activator answers ``error`` with, on either protocol."""
    return error_response(
        error.status,
        error.message,
        grpc_status=error.grpc_status if grpc else None,
        retry_after=error.retry_after,
        head=head,
    )


class _Pipelined(NamedTuple):
    """A pipelined HTTP/1.1 request waiting for the responses before it."""

    exchange: Exchange
    keep_alive: bool
    te_trailers: bool


class _Refused(NamedTuple):
    """An HTTP/1.1 request refused with an error instead, answered in its turn."""

    error: ActivatorError
    grpc: bool
    keep_alive: bool
    head: bool  # a HEAD request: the error's fields without its body


class H1Ingress:
    """A client's HTTP/1.1 connection: requests one at a time, pipelined ones held until their turn."""

    # Unacknowledged upload bytes above which we stop reading the client (HTTP/1.1 flow control).
    READ_HIGH_WATER = 256 * 1024

    def __init__(self, owner: IngressProtocol) -> None:
        self.owner = owner
        self.loop = owner.loop
        self.transport = owner.transport
        self.parser = httptools.HttpRequestParser(self)
        self.current: Exchange | None = None
        # Pipelined requests parsed while another is in flight, answered in order (RFC 9112 §9.3.2):
        # each an exchange to begin, or the error a refused one gets instead.
        self.waiting: deque[_Pipelined | _Refused] = deque()
        # A request that asked for an Upgrade we decline but carries a body: llhttp stops at its
        # headers, so the body is read by a fresh parser given this framing (see _on_upgrade).
        self._declined_body: bytes | None = None
        self._body_only = False
        self._pending_error: _Refused | None = None
        # A request refused (see _reject): what it is answered. Once one was, or once we closed the
        # connection, nothing more the client sends is read.
        self._refusal: ClientError | None = None
        self._reading_done = False
        self.closing = False
        self._url = b""
        self._headers: HeaderList = []
        self._header_bytes = 0
        self._too_large = False
        self._building: Exchange | None = None
        self._upgrade: tuple[HeaderList, bytes] | None = None
        self._reading_paused = False
        self._write_paused = False
        self._unacked = 0
        # Per current response: chunked framing, keep-alive, client asked for trailers.
        self._chunked = False
        self._keep_alive = True
        self._te_trailers = False
        self._head = False
        self._blocked: deque[tuple[bytes, int, bool]] = deque()
        self.awaiting_head = False  # between a request's first byte and the end of its head

    @property
    def busy(self) -> bool:
        return self.current is not None

    def reject_slow_head(self, message: str) -> None:
        """408 for a request whose head did not arrive in time (nothing was dispatched)."""
        self._reject(RequestTimeout(message))

    # -- parsing (httptools callbacks) -------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._reading_done:
            return  # after a request we refused, or our close
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = upgrade.args[0] if upgrade.args else len(data)
            self._on_upgrade(data[offset:])
        except httptools.HttpParserError as exc:
            self.owner.clients.closed["protocol_error"] += 1
            error = self._refusal
            if error is None and self._too_large:
                error = HeadersTooLarge("request header block is over the limit")
            elif error is None:
                error = ClientError(f"malformed HTTP/1.1 request: {exc}")
            self._reject(error)

    def on_message_begin(self) -> None:
        self.awaiting_head = True
        self.owner.timer.head_started()
        self._url = b""
        self._headers = []
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))
        self._count(len(name) + len(value) + 32)

    def _count(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self.owner.settings.max_header_bytes and not self._too_large:
            self._too_large = True
            raise httptools.HttpParserError("header block too large")

    def on_headers_complete(self) -> None:
        self.awaiting_head = False
        if self._body_only:
            return  # the synthetic head that carries a declined upgrade's body
        owner = self.owner
        parser = self.parser
        method = parser.get_method()
        headers = self._headers
        keep_alive = parser.should_keep_alive()
        authority = b""
        grpc = False
        expect = False
        upgrade_h2c = False
        http2_settings = b""
        settings_fields = 0
        te_trailers = False
        body = False
        framing = b""
        for name, value in headers:
            if name == b"host":
                authority = value
            elif name == b"content-type":
                grpc = is_grpc(value)
            elif name == b"expect":
                expect = value.lower() == b"100-continue"
            elif name == b"upgrade":
                upgrade_h2c = b"h2c" in [t.strip().lower() for t in value.split(b",")]
            elif name == b"http2-settings":
                # RFC 7540 §3.2.1: with more than one, the server MUST NOT upgrade.
                http2_settings = b"" if settings_fields else value
                settings_fields += 1
            elif name == b"te":
                te_trailers = b"trailers" in value.lower()
            elif name == b"content-length":
                body = value.strip() not in (b"", b"0")
                framing = b"content-length: " + value.strip()
            elif name == b"transfer-encoding":
                body = True
                framing = b"transfer-encoding: chunked"
        path = self._url
        if path[:1] != b"/" and path != b"*":
            # RFC 9112 §3.2.2: absolute-form - its authority replaces Host (routing follows it), and
            # the pod gets origin-form, the only form an HTTP/2 :path may take (RFC 9113 §8.3.1).
            scheme_end = path.find(b"://")
            if scheme_end > 0:
                rest = path[scheme_end + 3 :]
                slash = rest.find(b"/")
                authority = rest if slash < 0 else rest[:slash]
                path = b"/" if slash < 0 else rest[slash:]
        pseudo: HeaderList = [
            (b":method", method),
            (b":scheme", owner.scheme),
            (b":authority", authority),
            (b":path", path),
        ]
        # Hop-by-hop fields, and those the Connection header names, are dropped by forward_request.
        pseudo.extend((n, v) for n, v in headers if n != b"expect" and n != b"host")
        if upgrade_h2c and http2_settings and not owner.tls and not body and self.current is None:
            problem = h2c_settings_problem(http2_settings)
            if problem is not None:
                self._refusal = ClientError(f"invalid HTTP2-Settings header: {problem}")
                raise httptools.HttpParserError("invalid HTTP2-Settings")
            # RFC 7540 §3.2: answer 101 and continue as HTTP/2, this request being stream 1.
            self._upgrade = (pseudo, http2_settings)
            return
        if body and parser.should_upgrade():
            self._declined_body = framing
        if not authority:
            self._refusal = ClientError("HTTP/1.1 request without a Host header")
            raise httptools.HttpParserError("no host")
        service = owner.router.route(authority)
        forwarded = forward_request(
            pseudo, client_ip=owner.client_ip, scheme=owner.scheme, authority=authority
        )
        ex = (
            Exchange(self, 1, service, forwarded, method, grpc, False, self.loop.time(), True)
            if service is not None
            else None
        )
        error: ActivatorError | None = None
        if method == b"CONNECT":
            error = ClientError("CONNECT is not supported: this is not a forward proxy")
        elif service is None:
            error = UnknownHost(
                f"no service is configured for host {authority.decode('latin-1')!r}"
            )
        if ex is None or error is not None:
            # Answer in order once earlier pipelined requests are done; keep reading the body.
            self._building = None
            head = method == b"HEAD"
            self._pending_error = _Refused(
                error or UnknownHost("no service"), grpc, keep_alive, head
            )
            return
        self._pending_error = None
        self._building = ex
        if expect:
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self.current is None:
            self._begin(ex, keep_alive, te_trailers)
        else:
            self.waiting.append(_Pipelined(ex, keep_alive, te_trailers))
            self._pause_reading()

    def on_body(self, body: bytes) -> None:
        ex = self._building
        if ex is not None:
            self._unacked += len(body)
            if self._unacked > self.READ_HIGH_WATER:
                self._pause_reading()
            ex.on_request_data(body, len(body))

    def on_message_complete(self) -> None:
        if self._upgrade is not None:
            return
        if self._body_only:
            self._body_only = False
        elif self._declined_body is not None:
            return  # llhttp ends the message at the headers; its body follows (see _on_upgrade)
        ex = self._building
        self._building = None
        if ex is not None:
            ex.on_request_end()
            return
        pending = self._pending_error
        if pending is not None:
            self._pending_error = None
            if self.current is None and not self.waiting:
                self._write_refusal(pending)
            else:
                self.waiting.append(pending)
                self._pause_reading()

    # -- responses ---------------------------------------------------------------------------------

    def _begin(self, ex: Exchange, keep_alive: bool, te_trailers: bool) -> None:
        self.current = ex
        self._keep_alive = keep_alive and not self.closing
        self._te_trailers = te_trailers
        self._head = ex.method == b"HEAD"
        self._chunked = False
        ex.service.dispatch(ex)

    def respond_headers(self, ex: Exchange, headers: HeaderList, end_stream: bool) -> None:
        if ex is not self.current:
            return
        status = 200
        lines = []
        content_length = False
        for name, value in headers:
            if name == b":status":
                status = int(value)
            elif name[:1] != b":":
                if name == b"content-length":
                    content_length = True
                lines.append(name + b": " + value + b"\r\n")
        no_body = self._head or status in (204, 304) or 100 <= status < 200
        if end_stream:
            if not content_length and not no_body:
                lines.append(b"content-length: 0\r\n")
        elif not content_length and not no_body:
            self._chunked = True
            lines.append(b"transfer-encoding: chunked\r\n")
        if not self._keep_alive:
            lines.append(b"connection: close\r\n")
        self._write(_status_line(status) + b"".join(lines) + b"\r\n")
        if end_stream:
            self._response_done(ex)

    def respond_data(self, ex: Exchange, data: bytes, ack_len: int, end_stream: bool) -> None:
        if ex is not self.current:
            return
        if self._blocked or (self._write_paused and data):
            self._blocked.append((data, ack_len, end_stream))
            return
        self._write_body(ex, data, ack_len, end_stream)

    def _write_body(self, ex: Exchange, data: bytes, ack_len: int, end_stream: bool) -> None:
        if self._chunked:
            out = b"%x\r\n%b\r\n" % (len(data), data) if data else b""
            if end_stream:
                out += b"0\r\n\r\n"
        else:
            out = data
        if out:
            self._write(out)
        if ack_len and ex.up is not None:
            ex.up.ack_response(ex, ack_len)
        if end_stream:
            self._response_done(ex)

    def respond_trailers(self, ex: Exchange, trailers: HeaderList) -> None:
        if ex is not self.current:
            return
        if self._chunked:
            fields = b""
            if self._te_trailers:
                fields = b"".join(n + b": " + v + b"\r\n" for n, v in trailers)
            self._write(b"0\r\n" + fields + b"\r\n")
        self._response_done(ex)

    def respond_reset(self, ex: Exchange, error_code: int) -> None:
        # HTTP/1.1 cannot reset a response: a closed connection is the only honest signal that the
        # body is incomplete (never a chunked terminator or full content-length).
        if ex is self.current and self.owner.transport is not None:
            self.current = None
            self.owner.transport.abort()

    def respond_error(self, ex: Exchange, error: ActivatorError) -> None:
        if ex is not self.current:
            return
        self._write_error(error, ex.grpc, self._keep_alive, ex, head=self._head)

    def ack_request(self, ex: Exchange, nbytes: int) -> None:
        self._unacked -= nbytes
        if self._reading_paused and self._unacked < self.READ_HIGH_WATER // 2 and not self.waiting:
            self._resume_reading()

    def _write_refusal(self, refused: _Refused) -> None:
        self._write_error(refused.error, refused.grpc, refused.keep_alive, head=refused.head)

    def _write_error(
        self,
        error: ActivatorError,
        grpc: bool,
        keep_alive: bool,
        ex: Exchange | None = None,
        *,
        head: bool = False,
    ) -> None:
        headers, body = _error_answer(error, grpc, head)
        if grpc:
            # A gRPC client on HTTP/1.1 cannot decode trailers-only; still send the status headers.
            headers.append((b"content-length", b"0"))
        keep = keep_alive and not self.closing
        out = [_status_line(int(headers[0][1]))]
        out.extend(n + b": " + v + b"\r\n" for n, v in headers[1:])
        if not keep:
            out.append(b"connection: close\r\n")
        out.append(b"\r\n")
        out.append(body)
        self._write(b"".join(out))
        if ex is not None:
            self._keep_alive = keep
            self._response_done(ex)
        elif not keep:
            self._close()

    def _response_done(self, ex: Exchange) -> None:
        if ex is not self.current:
            return
        self.current = None
        self._chunked = False
        if not ex.request_ended or not self._keep_alive:
            # The rest of the request body (if any) is unread: the connection cannot be reused.
            self._close()
            return
        while self.waiting and not self.closing:
            nxt = self.waiting.popleft()
            if isinstance(nxt, _Refused):
                self._write_refusal(nxt)
            elif not nxt.exchange.done:
                self._begin(nxt.exchange, nxt.keep_alive, nxt.te_trailers)
                # Its body may still be on the wire (only its head was read): read on, unless more
                # requests wait or its upload is ahead of the pod (ack_request resumes then).
                if self._unacked >= self.READ_HIGH_WATER // 2 or self.waiting:
                    return
                break
        if self._reading_paused:
            self._resume_reading()

    def _reject(self, error: ClientError) -> None:
        """Refuse a request we cannot parse or will not take, then close: nothing after it is read.

        Responses still owed to earlier pipelined requests go first (RFC 9112 §9.3.2), never
        interleaved with this one. If the bad bytes were the body of the request in flight, that
        request cannot complete: it is cancelled, and this answer replaces its response, or, once
        that response has begun, the connection is cut (HTTP/1.1 has no other way to say so).
        """
        self._reading_done = True
        self._pending_error = None
        ex = self._building
        self._building = None
        if ex is not None and ex is self.current:
            self.current = None
            ex.on_client_reset()
            if ex.response_started:  # its head is written: only a cut says the rest is lost
                self._blocked.clear()
                if self.owner.transport is not None:
                    self.owner.transport.abort()
                return
        elif ex is not None:
            ex.done = True  # a pipelined request never dispatched: it is dropped from the queue
        if self.current is None and not self.waiting:
            self._write_error(error, False, False)
        else:
            self.waiting.append(_Refused(error, grpc=False, keep_alive=False, head=False))
            self._pause_reading()

    # -- h2c upgrade -------------------------------------------------------------------------------

    def _on_upgrade(self, rest: bytes) -> None:
        upgrade = self._upgrade
        if upgrade is None:
            # An Upgrade we decline (a body, TLS, a protocol we do not speak): the request goes on as
            # plain HTTP/1.1. llhttp stopped at its headers, so a fresh parser reads what follows:
            # first the request's own body (behind a head that only carries its framing), then any
            # pipelined requests.
            self.parser = httptools.HttpRequestParser(self)
            framing = self._declined_body
            self._declined_body = None
            if framing is not None:
                self._body_only = True
                rest = b"POST / HTTP/1.1\r\n" + framing + b"\r\n\r\n" + rest
            if rest:
                self.data_received(rest)
            return
        pseudo, settings = upgrade
        self._upgrade = None
        owner = self.owner
        self._write(
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n"
        )
        h2_handler = H2Ingress(owner)
        owner.handler = h2_handler
        try:
            h2_handler.start(upgrade_settings=settings)
        except h2.exceptions.ProtocolError:
            self._close()
            return
        # The upgraded request is stream 1, half-closed from the client (RFC 7540 §3.2).
        h2_handler._on_request(1, without_connection_fields(pseudo), True)
        h2_handler.flush()
        if rest:
            h2_handler.data_received(rest)

    # -- transport ---------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        transport = self.owner.transport
        if transport is not None:
            transport.write(data)

    def _close(self) -> None:
        self.closing = True
        self._reading_done = True
        transport = self.owner.transport
        if transport is not None:
            # A TLS transport that read the client's close while we paused reading waits to hand
            # us what it holds before its own closing handshake; asyncio's SSL layer (not
            # uvloop's) does not take close() as leave to skip that, and would wait forever.
            # Resumed, it finishes (what it hands us is ignored) and the connection ends.
            self._resume_reading()
            transport.close()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.owner.transport is not None:
            self._reading_paused = True
            self.owner.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.owner.transport is not None:
            self._reading_paused = False
            self.owner.transport.resume_reading()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        ex = self.current
        while self._blocked and not self._write_paused and ex is not None:
            data, ack_len, end_stream = self._blocked.popleft()
            self._write_body(ex, data, ack_len, end_stream)
            if ex is not self.current:
                break
        if ex is not self.current:
            self._blocked.clear()

    def connection_lost(self) -> None:
        self._blocked.clear()
        ex = self.current
        self.current = None
        if ex is not None:
            ex.on_client_reset()
        self._building = None
        while self.waiting:
            # Never dispatched: nothing to cancel and no accounting to undo.
            item = self.waiting.popleft()
            if isinstance(item, _Pipelined):
                item.exchange.done = True

    def shutdown(self) -> None:
        self.closing = True
        self._keep_alive = False
        if self.current is None:
            self._close()
