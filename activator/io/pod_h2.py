"""The client side of HTTP/2 toward pods: a lean, sans-I/O connection state machine.

Why not h2 here as on the client-facing side: every frame through h2 builds frame objects, flag sets,
events and runs a per-stream transition table, which cost the activator more CPU per proxied request
than everything else together (loadtest/RESULTS.md). Toward a pod the activator only ever opens streams,
never accepts them, never sends or accepts server push or priorities, so the protocol it needs is
small: this module is that subset, written for the per-frame path. HPACK stays a library's job (jh2's
compiled codec when installed, python-hyper's ``hpack`` otherwise).

Everything RFC 9113 asks of a client is still checked: frame sizes, stream states (idle, open,
half-closed, closed), flow-control windows both ways, SETTINGS values, CONTINUATION sequences, and the
response field block (pseudo-headers, RFC 9113 §8.2.1 characters, connection-specific fields,
content-length against the DATA received). A pod that breaks a rule gets the RFC's answer: a stream
error resets that stream only, a connection error queues GOAWAY and raises :class:`PodConnectionError`.

Shape (as h2's): ``receive_data(bytes) -> list of events``; commands only queue frames; ``pop_output``
drains them as a list of buffers for ``transport.writelines``. Events are plain tuples, kind first,
because they are made per frame:

``(RESPONSE, stream_id, headers, end_stream)``, ``(DATA, stream_id, data, flow_len, end_stream)``,
``(TRAILERS, stream_id, headers)``, ``(RESET, stream_id, error_code)`` (the pod reset it),
``(STREAM_ERROR, stream_id, error_code, reason)`` (the pod broke a rule on it: we reset it), ``(WINDOW, stream_id)`` (0: the connection's), ``(GOAWAY,
last_stream_id, error_code)``, ``(SETTINGS, first, max_concurrent_streams or None, window_changed)``.
DATA events are also produced for streams already closed, with ``stream_id`` still set, so the caller
returns their connection-level credit.
"""

from __future__ import annotations

import struct
from typing import Any

# jh2's compiled HPACK codec (a dependency whichever state machine h2lib picked for clients): about
# 1 µs per header block, against 20-50 µs through a pure Python codec. It takes and gives
# (name, value, sensitive) triples.
from jh2._hazmat import Decoder as _Decoder
from jh2._hazmat import Encoder as _Encoder
from jh2._hazmat import HPACKError as _HPACKError
from jh2._hazmat import OversizedHeaderListError as _OversizedError

from activator.core.headers import HeaderList, response_block
from activator.io.h2lib import h2, never_indexed
from activator.io.h2wire import (
    ACK,
    CONTINUATION,
    END_HEADERS,
    END_STREAM,
    FRAME_HEADER,
    HEADERS,
    PADDED,
    PING,
    PREFACE,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    RST_STREAM,
    WINDOW_UPDATE,
    append_frame,
    append_header_block,
)
from activator.io.h2wire import DATA as DATA_FRAME
from activator.io.h2wire import GOAWAY as GOAWAY_FRAME
from activator.io.h2wire import PRIORITY as PRIORITY_FRAME
from activator.io.h2wire import SETTINGS as SETTINGS_FRAME

# Event kinds.
RESPONSE = 1
DATA = 2
TRAILERS = 3
RESET = 4
WINDOW = 5
GOAWAY = 6
SETTINGS = 7
STREAM_ERROR = 8

# RFC 9113 §7 error codes.
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB

_U32 = struct.Struct(">L")
_U32x2 = struct.Struct(">LL")
_SETTING = struct.Struct(">HL")
_MAX_WINDOW = (1 << 31) - 1
_DEFAULT_WINDOW = 65535
_DEFAULT_FRAME = 16384
_DEFAULT_TABLE = 4096
# Largest frame we accept (SETTINGS_MAX_FRAME_SIZE we advertise): pods may send a large body in fewer,
# larger DATA frames; every frame costs per-frame work here.
MAX_INBOUND_FRAME = 1 << 18
# Largest header list we accept, decoded (SETTINGS_MAX_HEADER_LIST_SIZE we advertise), and the most
# compressed bytes we gather across CONTINUATION frames before giving up on a block.
MAX_HEADER_LIST = 1 << 20
_MAX_BLOCK = 2 * MAX_HEADER_LIST


class PodConnectionError(h2.exceptions.ProtocolError):
    """The pod broke HTTP/2 at the connection level; GOAWAY with ``code`` is queued.

    ``events`` are those of the frames before the faulty one in the same read: they happened (a
    GOAWAY that declared streams unprocessed, a whole response) and still count.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.events: list[tuple[Any, ...]] = []


class PodStreamGone(h2.exceptions.StreamClosedError):
    """A command named a stream that is closed (or was never opened)."""

    def __init__(self, stream_id: int) -> None:
        super().__init__(stream_id)


class _Stream:
    """What the connection tracks per open stream."""

    __slots__ = (
        "head",
        "local_ended",
        "recv_window",
        "remaining",
        "remote_ended",
        "response_started",
        "send_window",
    )

    def __init__(self, send_window: int, recv_window: int, head: bool, local_ended: bool) -> None:
        self.send_window = send_window
        self.recv_window = recv_window
        # A HEAD request: content-length does not describe a body (RFC 9110 §9.3.2).
        self.head = head
        self.local_ended = local_ended
        self.remote_ended = False
        self.response_started = False
        # Body bytes the response's content-length still owes (0 for a response that has no
        # content: HEAD, 204, 304); -1 when it declared none.
        self.remaining = -1


class PodH2Connection:
    """One HTTP/2 connection to a pod, seen from the activator (the client)."""

    def __init__(self, *, stream_window: int, connection_window: int) -> None:
        self._encoder = _Encoder()
        self._decoder = _Decoder(max_header_list_size=MAX_HEADER_LIST)
        self._out: list[bytes] = []
        self._buf = b""
        self._streams: dict[int, _Stream] = {}
        self._next_stream_id = 1
        # Our receive side (what we advertised).
        self._stream_window = stream_window
        self._connection_window = connection_window
        self._recv_window = _DEFAULT_WINDOW
        # The pod's settings and our send windows.
        self._peer_initial_window = _DEFAULT_WINDOW
        self._send_window = _DEFAULT_WINDOW
        self.max_outbound_frame_size = _DEFAULT_FRAME
        self.peer_max_streams: int | None = None
        self._settings_seen = False
        # A header block in progress: (stream id, END_STREAM flag, fragments, size so far).
        self._block_sid = 0
        self._block_end = False
        self._block: list[bytes] = []
        self._block_size = 0
        self.goaway_sent = False
        self._broken = False  # a connection error was raised: nothing more is read
        # Our encoder's dynamic table: its size now, and the lowest and the last size the pod's
        # SETTINGS_HEADER_TABLE_SIZE allowed since the last block (never above the default 4096).
        self._table_size = _DEFAULT_TABLE
        self._table_low = _DEFAULT_TABLE
        self._table_final = _DEFAULT_TABLE

    # -- commands ----------------------------------------------------------------------------------

    def initiate_connection(self) -> None:
        """Queue the connection preface: our SETTINGS and the connection window we grant."""
        settings = b"".join(
            (
                _SETTING.pack(0x2, 0),  # ENABLE_PUSH: no server push
                _SETTING.pack(0x3, 0),  # MAX_CONCURRENT_STREAMS: pods open none toward us
                _SETTING.pack(0x4, self._stream_window),  # INITIAL_WINDOW_SIZE
                _SETTING.pack(0x5, MAX_INBOUND_FRAME),  # MAX_FRAME_SIZE
                _SETTING.pack(0x6, MAX_HEADER_LIST),  # MAX_HEADER_LIST_SIZE
            )
        )
        self._out.append(PREFACE)
        self._frame(SETTINGS_FRAME, 0, 0, settings)
        grant = self._connection_window - _DEFAULT_WINDOW
        if grant > 0:
            self._recv_window += grant
            self._frame(WINDOW_UPDATE, 0, 0, _U32.pack(grant))

    def get_next_available_stream_id(self) -> int:
        sid = self._next_stream_id
        if sid > _MAX_WINDOW:
            raise h2.exceptions.NoAvailableStreamIDError("stream ids exhausted")
        return sid

    def send_headers(
        self, stream_id: int, headers: HeaderList, end_stream: bool = False, *, head: bool = False
    ) -> None:
        """Open ``stream_id`` with a request's field block, or send trailers on an open stream."""
        stream = self._streams.get(stream_id)
        if stream is None:
            if stream_id != self._next_stream_id:
                raise PodStreamGone(stream_id)
            self._next_stream_id = stream_id + 2
            stream = _Stream(self._peer_initial_window, self._stream_window, head, end_stream)
            self._streams[stream_id] = stream
        elif stream.local_ended:
            raise PodStreamGone(stream_id)
        else:
            stream.local_ended = end_stream
        if self._table_final != self._table_size or self._table_low != self._table_size:
            self._resize_table()
        # A field the client sent never-indexed arrives as hpack's NeverIndexedHeaderTuple; every
        # other one is a plain tuple (RFC 7541 §7.1.3: it stays never-indexed on this hop too).
        block = self._encoder.encode([(f[0], f[1], type(f) is not tuple) for f in headers])
        append_header_block(self._out, stream_id, block, end_stream, self.max_outbound_frame_size)
        if end_stream:
            self._maybe_close(stream_id, stream)

    def local_flow_control_window(self, stream_id: int) -> int:
        """How many body bytes may be sent on ``stream_id`` now."""
        stream = self._streams.get(stream_id)
        if stream is None:
            raise PodStreamGone(stream_id)
        window = stream.send_window
        return window if window < self._send_window else self._send_window

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """Queue one DATA frame; the caller keeps to the window and the frame size."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.local_ended:
            raise PodStreamGone(stream_id)
        n = len(data)
        # An empty frame (END_STREAM alone) needs no window, even one a SETTINGS made negative.
        if n and (
            n > stream.send_window or n > self._send_window or n > self.max_outbound_frame_size
        ):
            raise h2.exceptions.FlowControlError(f"{n} bytes exceed the window or frame size")
        stream.send_window -= n
        self._send_window -= n
        append_frame(self._out, DATA_FRAME, END_STREAM if end_stream else 0, stream_id, data)
        if end_stream:
            stream.local_ended = True
            self._maybe_close(stream_id, stream)

    def end_stream(self, stream_id: int) -> None:
        self.send_data(stream_id, b"", end_stream=True)

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        """Reset an open stream (a closed one needs no reset: nothing is sent)."""
        if self._streams.pop(stream_id, None) is not None:
            self._frame(RST_STREAM, 0, stream_id, _U32.pack(error_code))

    def increment_flow_control_window(self, increment: int, stream_id: int | None = None) -> None:
        """Give the pod ``increment`` more bytes of window on the connection or on a stream."""
        if stream_id:
            stream = self._streams.get(stream_id)
            if stream is None:
                raise PodStreamGone(stream_id)
            stream.recv_window += increment
        else:
            stream_id = 0
            self._recv_window += increment
        self._frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(increment))

    def ping(self, opaque: bytes) -> None:
        self._frame(PING, 0, 0, opaque)

    def send_goaway(self, last_stream_id: int = 0, error_code: int = NO_ERROR) -> None:
        """Tell the pod we are done (pods open no streams, so ``last_stream_id`` is 0)."""
        self.goaway_sent = True
        self._frame(GOAWAY_FRAME, 0, 0, _U32x2.pack(last_stream_id, error_code))

    def pop_output(self) -> list[bytes]:
        out = self._out
        self._out = []
        return out

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    # -- receiving ---------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[tuple[Any, ...]]:
        """Parse every whole frame in ``data`` (plus what an earlier read left) into events."""
        if self._broken:  # bytes that arrived before the transport closed
            return []
        buf = self._buf + data if self._buf else data
        size = len(buf)
        pos = 0
        events: list[tuple[Any, ...]] = []
        unpack = FRAME_HEADER.unpack_from
        try:
            while size - pos >= 9:
                hi, lo, ftype, flags, sid = unpack(buf, pos)
                length = (hi << 8) | lo
                if length > MAX_INBOUND_FRAME:
                    raise PodConnectionError(
                        FRAME_SIZE_ERROR, f"{length}-byte frame over our maximum"
                    )
                end = pos + 9 + length
                if end > size:
                    break
                payload = buf[pos + 9 : end]
                pos = end
                sid &= _MAX_WINDOW
                if self._block_sid and ftype != CONTINUATION:
                    raise PodConnectionError(
                        PROTOCOL_ERROR, "header block interrupted (RFC 9113 §6.10)"
                    )
                if ftype == DATA_FRAME:
                    self._on_data(sid, flags, payload, events)
                elif ftype == HEADERS:
                    self._on_headers(sid, flags, payload, events)
                elif ftype == CONTINUATION:
                    self._on_continuation(sid, flags, payload, events)
                elif ftype == WINDOW_UPDATE:
                    self._on_window_update(sid, payload, events)
                elif ftype == RST_STREAM:
                    self._on_rst_stream(sid, payload, events)
                elif ftype == SETTINGS_FRAME:
                    self._on_settings(sid, flags, payload, events)
                elif ftype == PING:
                    if sid:
                        raise PodConnectionError(PROTOCOL_ERROR, "PING on a stream")
                    if length != 8:
                        raise PodConnectionError(FRAME_SIZE_ERROR, "PING payload is not 8 bytes")
                    if not flags & ACK:
                        self._frame(PING, ACK, 0, payload)
                elif ftype == GOAWAY_FRAME:
                    if sid:
                        raise PodConnectionError(PROTOCOL_ERROR, "GOAWAY on a stream")
                    if length < 8:
                        raise PodConnectionError(FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
                    last, code = _U32x2.unpack_from(payload)
                    events.append((GOAWAY, last & _MAX_WINDOW, code))
                elif ftype == PRIORITY_FRAME:
                    if not sid:
                        raise PodConnectionError(PROTOCOL_ERROR, "PRIORITY on stream 0")
                    if length != 5 and sid in self._streams:
                        reason = "PRIORITY payload is not 5 bytes"
                        self._stream_error(sid, FRAME_SIZE_ERROR, reason, events)
                elif ftype == PUSH_PROMISE:
                    raise PodConnectionError(PROTOCOL_ERROR, "PUSH_PROMISE, but push is disabled")
                # Unknown frame types are ignored (RFC 9113 §4.1).
        except PodConnectionError as exc:
            self._buf = b""
            self._broken = True
            self.send_goaway(0, exc.code)  # last_stream_id: pods open no streams
            exc.events = events
            raise
        self._buf = buf[pos:] if pos < size else b""
        return events

    def _known(self, sid: int, what: str) -> _Stream | None:
        """The open stream ``sid``, or None if it is closed; idle and pod-initiated ids are a
        connection error (RFC 9113 §5.1)."""
        stream = self._streams.get(sid)
        if stream is not None:
            return stream
        if not sid:
            raise PodConnectionError(PROTOCOL_ERROR, f"{what} on stream 0")
        if not sid & 1 or sid >= self._next_stream_id:
            raise PodConnectionError(PROTOCOL_ERROR, f"{what} on idle stream {sid}")
        return None

    def _on_data(self, sid: int, flags: int, payload: bytes, events: list[tuple[Any, ...]]) -> None:
        flow_len = len(payload)
        stream = self._known(sid, "DATA")
        self._recv_window -= flow_len
        if self._recv_window < 0:
            raise PodConnectionError(FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        if flags & PADDED:
            payload = _unpad(payload)
        end = bool(flags & END_STREAM)
        if stream is None:  # closed: only the connection credit matters
            events.append((DATA, sid, b"", flow_len, False))
            return
        if stream.remote_ended:
            self._stream_error(sid, STREAM_CLOSED, "DATA after END_STREAM", events, flow_len)
            return
        stream.recv_window -= flow_len
        if stream.recv_window < 0:
            self._stream_error(
                sid, FLOW_CONTROL_ERROR, "DATA beyond the stream window", events, flow_len
            )
            return
        if not stream.response_started:
            self._stream_error(sid, PROTOCOL_ERROR, "DATA before the response", events, flow_len)
            return
        if stream.remaining >= 0:
            stream.remaining -= len(payload)
            if stream.remaining < 0 or (end and stream.remaining):
                reason = (
                    "body longer or shorter than its content-length, or in a response with none"
                )
                self._stream_error(sid, PROTOCOL_ERROR, reason, events, flow_len)
                return
        if end:
            self._remote_ended(sid, stream)
        events.append((DATA, sid, payload, flow_len, end))

    def _on_headers(
        self, sid: int, flags: int, payload: bytes, events: list[tuple[Any, ...]]
    ) -> None:
        self._known(sid, "HEADERS")
        if flags & PADDED:
            payload = _unpad(payload)
        if flags & PRIORITY_FLAG:
            if len(payload) < 5:
                raise PodConnectionError(
                    FRAME_SIZE_ERROR, "HEADERS too short for its priority fields"
                )
            payload = payload[5:]
        end = bool(flags & END_STREAM)
        if flags & END_HEADERS:
            self._on_block(sid, end, payload, events)
        else:
            self._block_sid = sid
            self._block_end = end
            self._block = [payload]
            self._block_size = len(payload)

    def _on_continuation(
        self, sid: int, flags: int, payload: bytes, events: list[tuple[Any, ...]]
    ) -> None:
        if not self._block_sid or sid != self._block_sid:
            raise PodConnectionError(
                PROTOCOL_ERROR, "CONTINUATION without a header block to continue"
            )
        self._block.append(payload)
        self._block_size += len(payload)
        if self._block_size > _MAX_BLOCK:
            raise PodConnectionError(ENHANCE_YOUR_CALM, "header block too large")
        if flags & END_HEADERS:
            block = b"".join(self._block)
            self._block_sid = 0
            self._block = []
            self._on_block(sid, self._block_end, block, events)

    def _on_block(self, sid: int, end: bool, block: bytes, events: list[tuple[Any, ...]]) -> None:
        # Decode even for a closed stream: the HPACK dynamic table must follow every block.
        try:
            fields = self._decoder.decode(block, raw=True)
        except _OversizedError as exc:
            raise PodConnectionError(ENHANCE_YOUR_CALM, f"header list too large: {exc}") from None
        except (_HPACKError, ValueError, IndexError, TypeError) as exc:
            raise PodConnectionError(COMPRESSION_ERROR, f"undecodable field block: {exc}") from None
        except BaseException as exc:  # the compiled decoder panics on some truncated input
            if isinstance(exc, (KeyboardInterrupt, SystemExit, MemoryError)):
                raise
            raise PodConnectionError(
                COMPRESSION_ERROR, f"undecodable field block: {exc!r}"
            ) from None
        stream = self._streams.get(sid)
        if stream is None:
            return
        if stream.remote_ended:
            self._stream_error(sid, STREAM_CLOSED, "HEADERS after END_STREAM", events)
            return
        trailers = stream.response_started
        parsed = response_block(fields, trailers=trailers, never_indexed=never_indexed)
        if isinstance(parsed, str):
            self._stream_error(sid, PROTOCOL_ERROR, parsed, events)
            return
        headers, status, length = parsed
        if trailers:
            if not end:  # RFC 9113 §8.1: trailers end the stream
                self._stream_error(sid, PROTOCOL_ERROR, "trailers without END_STREAM", events)
                return
            if stream.remaining > 0:
                reason = "body shorter than its content-length"
                self._stream_error(sid, PROTOCOL_ERROR, reason, events)
                return
            self._remote_ended(sid, stream)
            events.append((TRAILERS, sid, headers))
            return
        if status < 200:  # 1xx: informational, more headers follow (101 is not allowed in HTTP/2)
            if end or status == 101:
                self._stream_error(sid, PROTOCOL_ERROR, f"bad {status} response", events)
            return
        stream.response_started = True
        if stream.head or status == 204 or status == 304:
            # No content, whatever content-length says (RFC 9110 §6.4.1): a DATA payload would
            # reach an HTTP/1.1 client as the start of a next response.
            stream.remaining = 0
        elif length >= 0:
            if end and length:
                reason = "content-length without a body"
                self._stream_error(sid, PROTOCOL_ERROR, reason, events)
                return
            stream.remaining = length
        if end:
            self._remote_ended(sid, stream)
        events.append((RESPONSE, sid, headers, end))

    def _on_window_update(self, sid: int, payload: bytes, events: list[tuple[Any, ...]]) -> None:
        if len(payload) != 4:
            raise PodConnectionError(FRAME_SIZE_ERROR, "WINDOW_UPDATE payload is not 4 bytes")
        increment = _U32.unpack(payload)[0] & _MAX_WINDOW
        if not sid:
            if not increment:
                raise PodConnectionError(PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection")
            self._send_window += increment
            if self._send_window > _MAX_WINDOW:
                raise PodConnectionError(FLOW_CONTROL_ERROR, "connection window above 2^31-1")
            events.append((WINDOW, 0))
            return
        stream = self._known(sid, "WINDOW_UPDATE")
        if stream is None:
            return
        if not increment:
            self._stream_error(sid, PROTOCOL_ERROR, "WINDOW_UPDATE of 0", events)
            return
        stream.send_window += increment
        if stream.send_window > _MAX_WINDOW:
            self._stream_error(sid, FLOW_CONTROL_ERROR, "stream window above 2^31-1", events)
            return
        events.append((WINDOW, sid))

    def _on_rst_stream(self, sid: int, payload: bytes, events: list[tuple[Any, ...]]) -> None:
        if len(payload) != 4:
            raise PodConnectionError(FRAME_SIZE_ERROR, "RST_STREAM payload is not 4 bytes")
        if self._known(sid, "RST_STREAM") is None:
            return
        del self._streams[sid]
        events.append((RESET, sid, _U32.unpack(payload)[0]))

    def _on_settings(
        self, sid: int, flags: int, payload: bytes, events: list[tuple[Any, ...]]
    ) -> None:
        if sid:
            raise PodConnectionError(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise PodConnectionError(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise PodConnectionError(FRAME_SIZE_ERROR, "SETTINGS payload not a multiple of 6 bytes")
        max_streams: int | None = None
        window_changed = False
        for offset in range(0, len(payload), 6):
            key, value = _SETTING.unpack_from(payload, offset)
            if key == 0x1:  # HEADER_TABLE_SIZE: how large our encoder's table may be
                size = min(value, _DEFAULT_TABLE)
                self._table_final = size
                self._table_low = min(self._table_low, size)
            elif key == 0x2:
                if value:  # RFC 9113 §6.5.2: a server never enables push
                    raise PodConnectionError(
                        PROTOCOL_ERROR, f"ENABLE_PUSH of {value} from a server"
                    )
            elif key == 0x3:
                max_streams = value
            elif key == 0x4:
                if value > _MAX_WINDOW:
                    raise PodConnectionError(FLOW_CONTROL_ERROR, f"INITIAL_WINDOW_SIZE of {value}")
                delta = value - self._peer_initial_window
                self._peer_initial_window = value
                if delta:  # RFC 9113 §6.9.2: every open stream's window moves by the difference
                    window_changed = True
                    for stream in self._streams.values():
                        stream.send_window += delta
                        if stream.send_window > _MAX_WINDOW:
                            raise PodConnectionError(
                                FLOW_CONTROL_ERROR, "a stream window above 2^31-1"
                            )
            elif key == 0x5:
                if not _DEFAULT_FRAME <= value <= (1 << 24) - 1:
                    raise PodConnectionError(PROTOCOL_ERROR, f"MAX_FRAME_SIZE of {value}")
                self.max_outbound_frame_size = value
            # MAX_HEADER_LIST_SIZE is advisory; unknown settings are ignored (RFC 9113 §6.5.2).
        if max_streams is not None:
            self.peer_max_streams = max_streams
        self._frame(SETTINGS_FRAME, ACK, 0, b"")
        first = not self._settings_seen
        self._settings_seen = True
        events.append((SETTINGS, first, max_streams, window_changed))

    # -- helpers -----------------------------------------------------------------------------------

    def _stream_error(
        self, sid: int, code: int, reason: str, events: list[tuple[Any, ...]], flow_len: int = 0
    ) -> None:
        """RFC 9113 §5.4.2: reset this stream only, and say why."""
        self._streams.pop(sid, None)
        self._frame(RST_STREAM, 0, sid, _U32.pack(code))
        if flow_len:  # the DATA that caused it still used connection window: return it
            events.append((DATA, sid, b"", flow_len, False))
        events.append((STREAM_ERROR, sid, code, reason))

    def _remote_ended(self, sid: int, stream: _Stream) -> None:
        # Closed once both sides ended; half-closed (remote) until the caller ends or resets its side.
        if stream.local_ended:
            del self._streams[sid]
        else:
            stream.remote_ended = True

    def _maybe_close(self, sid: int, stream: _Stream) -> None:
        if stream.remote_ended:
            del self._streams[sid]

    def _resize_table(self) -> None:
        # RFC 7541 §4.2: the next block starts with the smallest size the pod allowed since the last
        # block, then the final one (each assignment makes the encoder emit one update).
        if self._table_low < self._table_size:
            self._encoder.header_table_size = self._table_low
            self._table_size = self._table_low
        if self._table_final != self._table_size:
            self._encoder.header_table_size = self._table_final
            self._table_size = self._table_final
        self._table_low = self._table_final

    def _frame(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        append_frame(self._out, ftype, flags, sid, payload)


def _unpad(payload: bytes) -> bytes:
    if not payload:
        raise PodConnectionError(PROTOCOL_ERROR, "padded frame without a pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise PodConnectionError(PROTOCOL_ERROR, "padding longer than the frame (RFC 9113 §6.1)")
    return payload[1 : len(payload) - pad]
