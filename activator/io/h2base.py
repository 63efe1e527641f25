"""What both HTTP/2 sides share: one h2 state machine per connection, one coalesced write path, and body
sending that respects the peer's flow-control windows and our own transport's backpressure.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

import hpack

from activator.io.h2lib import SizeUpdateKeepingEncoder, h2
from activator.io.h2wire import DATA, END_STREAM, append_frame, append_header_block

if TYPE_CHECKING:
    from activator.core.headers import HeaderList
    from activator.io.busypoll import BusyPoller
    from activator.io.exchange import Exchange

# One queued piece: (exchange, body bytes or a trailer block, flow-control bytes to acknowledge once
# sent, end_stream).
_Piece = tuple["Exchange", "bytes | HeaderList", int, bool]


# Connection-level credit is returned once this much piled up (the connection window is far larger).
CONNECTION_CREDIT_BATCH = 256 * 1024
# Closed streams linger in h2's stream table for at most this many new streams.
_PRUNE_EVERY = 32


_FrameBufferBase: Any = importlib.import_module(h2.__name__ + ".frame_buffer").FrameBuffer
# jh2 consumes its buffer by moving an offset; h2 deletes the bytes read from the front.
_OFFSET_LAYOUT = "_data_offset" in vars(_FrameBufferBase(server=False))
_stream_module: Any = importlib.import_module(h2.__name__ + ".stream")
_STREAM_INPUTS: Any = _stream_module.StreamInputs
_STREAM_CLOSED: Any = _stream_module.StreamState.CLOSED
_H2Stream: Any = _stream_module.H2Stream
_CONNECTION_SEND_HEADERS = h2.connection.ConnectionInputs.SEND_HEADERS
_CONNECTION_SEND_DATA = h2.connection.ConnectionInputs.SEND_DATA
_CONNECTION_RECV_HEADERS = h2.connection.ConnectionInputs.RECV_HEADERS
# In this state h2's connection machine takes SEND_HEADERS, SEND_DATA and RECV_HEADERS without a
# change or an event, so the short paths skip the call there (any other state still makes it).
_SERVER_OPEN = h2.connection.ConnectionState.SERVER_OPEN
_CLIENT_STREAM_IDS = h2.connection.AllowedStreamIDs.ODD
# jh2's encoder takes (name, value, sensitive) triples; h2's (hpack) takes the fields as they are.
_TRIPLES = bool(getattr(h2.connection, "ALTERNATIVE_HPACK", False))


_RECV_RST_STREAM = _stream_module.StreamClosedBy.RECV_RST_STREAM
_SEND_RST_STREAM = _stream_module.StreamClosedBy.SEND_RST_STREAM


class ClosedStreams:
    """What h2 remembers of pruned streams (``H2Connection._closed_streams``: stream id -> how it
    closed), bounded by what each kind of closure decides later.

    h2 keeps the last 65,536 closures of every connection: about 8 MB on a connection that carried
    that many streams, as every long-lived client connection does, and all of it walked again by each
    full garbage collection (10-40 ms per collection, growing with uptime, in the saturated load test).

    How a stream closed matters later only for a HEADERS frame on it once h2 has pruned it (DATA,
    WINDOW_UPDATE, RST_STREAM and PRIORITY on a closed stream get the same answer whatever is
    recorded). If we reset the stream, the HEADERS is a stream error (RFC 9113 §5.1), ignored but
    answered: the peer may have sent its trailers before our reset reached it, so resets are kept
    longest, the last 2,048 to 4,096 of them. If the stream ended normally, it is a connection error
    either way, STREAM_CLOSED while the closure is recorded and PROTOCOL_ERROR after (as for a stream
    closed implicitly), so those are kept only for the code's sake, the last 64 to 128. Each kind
    fills a dict and, when full, replaces the older one: plain dict operations, nothing evicted one
    by one.
    """

    __slots__ = ("_ends", "_older_ends", "_older_resets", "_resets")

    RESETS_KEPT = 2048
    ENDS_KEPT = 64

    def __init__(self) -> None:
        self._resets: dict[int, Any] = {}
        self._older_resets: dict[int, Any] = {}
        self._ends: dict[int, Any] = {}
        self._older_ends: dict[int, Any] = {}

    def __setitem__(self, stream_id: int, closed_by: Any) -> None:
        if closed_by is _RECV_RST_STREAM or closed_by is _SEND_RST_STREAM:
            if len(self._resets) >= self.RESETS_KEPT:
                self._older_resets = self._resets
                self._resets = {}
            self._resets[stream_id] = closed_by
        else:
            if len(self._ends) >= self.ENDS_KEPT:
                self._older_ends = self._ends
                self._ends = {}
            self._ends[stream_id] = closed_by

    def __contains__(self, stream_id: object) -> bool:
        return (
            stream_id in self._resets
            or stream_id in self._older_resets
            or stream_id in self._ends
            or stream_id in self._older_ends
        )

    def __getitem__(self, stream_id: int) -> Any:
        for record in (self._resets, self._older_resets, self._ends, self._older_ends):
            if stream_id in record:
                return record[stream_id]
        raise KeyError(stream_id)

    def __len__(self) -> int:
        return len(self._resets) + len(self._older_resets) + len(self._ends) + len(self._older_ends)


# A stream state machine input with h2's transitions for it, by state.
_StreamInput = tuple[Any, dict[Any, tuple[Any, Any]]]


def _stream_input(name: str) -> _StreamInput:
    given = getattr(_STREAM_INPUTS, name)
    table = _stream_module._transitions
    return given, {state: entry for (state, input_), entry in table.items() if input_ is given}


_STREAM_SEND_HEADERS = _stream_input("SEND_HEADERS")
_STREAM_SEND_DATA = _stream_input("SEND_DATA")
_STREAM_SEND_END_STREAM = _stream_input("SEND_END_STREAM")
_STREAM_RECV_HEADERS = _stream_input("RECV_HEADERS")
_STREAM_RECV_END_STREAM = _stream_input("RECV_END_STREAM")


def _stream_step(machine: Any, step: _StreamInput) -> list[Any]:
    """h2's ``H2StreamStateMachine.process_input``: the same transition, callback and errors, but
    looked up by state alone in a table made for the input. h2's lookup builds a (state, input)
    key and hashes its input enum in Python (``Enum.__hash__``) at every call, five times per
    request."""
    state = machine.state
    entry = step[1].get(state)
    if entry is None:
        machine.state = _STREAM_CLOSED
        raise h2.exceptions.ProtocolError(f"Invalid input {step[0]} in state {state}")
    func, machine.state = entry
    if func is None:
        return []
    try:
        result: list[Any] = func(machine, state)
    except h2.exceptions.ProtocolError:
        machine.state = _STREAM_CLOSED
        raise
    except AssertionError as exc:
        machine.state = _STREAM_CLOSED
        raise h2.exceptions.ProtocolError(exc) from exc
    return result


_frame_module: Any = sys.modules[_FrameBufferBase.__module__]
_HeadersFrame: Any = _frame_module.HeadersFrame
_DataFrame: Any = importlib.import_module(_HeadersFrame.__module__).DataFrame
_Flags: Any = type(_HeadersFrame(1).flags)
_HEADERS_FLAG_NAMES = frozenset(flag.name for flag in _HeadersFrame.defined_flags)
_DATA_FLAG_NAMES = frozenset(flag.name for flag in _DataFrame.defined_flags)
# Flag bytes of the frames read on the fast path, and the flag sets they stand for.
_FAST_HEADERS_FLAGS = {0x04: ("END_HEADERS",), 0x05: ("END_HEADERS", "END_STREAM")}
_FAST_DATA_FLAGS = {0x00: (), 0x01: ("END_STREAM",)}


def _flags(valid: frozenset[str], names: tuple[str, ...]) -> Any:
    flags = _Flags.__new__(_Flags)
    flags._valid_flags = valid  # only read (by ``add``): one shared set serves every frame
    flags._flags = set(names)
    return flags


class _FrameBuffer(_FrameBufferBase):  # type: ignore[misc]
    """h2's frame reader, with a shorter path for the frames of an ordinary request, and a SETTINGS
    ACK with a payload read as FRAME_SIZE_ERROR (RFC 9113 §6.5), not the generic PROTOCOL_ERROR h2
    reports for every malformed frame body.

    The short path: a whole HEADERS frame with END_HEADERS (END_STREAM or not), or a DATA frame, on
    a stream, neither padded nor with priority fields, within the frame size limit, outside a header
    block. It yields the same frame objects, with the same fields, that hyperframe's parser would;
    it only skips its generic steps (flag tables walked per frame, padding and priority parsing,
    memoryview copies), and consumes the buffer as the library in use does. Every other frame takes
    the library's own path.
    """

    _data: bytearray
    _data_offset: int
    _headers_buffer: list[Any]
    max_frame_size: int

    def __next__(self) -> Any:
        data = self._data
        offset = self._data_offset if _OFFSET_LAYOUT else 0
        if not self._headers_buffer and len(data) - offset >= 9:
            kind = data[offset + 3]
            flag_byte = data[offset + 4]
            names = (
                _FAST_HEADERS_FLAGS.get(flag_byte)
                if kind == 1
                else _FAST_DATA_FLAGS.get(flag_byte)
                if kind == 0
                else None
            )
            if names is not None:
                length = (data[offset] << 16) | (data[offset + 1] << 8) | data[offset + 2]
                stream_id = int.from_bytes(data[offset + 5 : offset + 9], "big") & 0x7FFFFFFF
                end = offset + 9 + length
                if stream_id and length <= self.max_frame_size and end <= len(data):
                    if kind:
                        frame = _HeadersFrame.__new__(_HeadersFrame)
                        frame.flags = _flags(_HEADERS_FLAG_NAMES, names)
                        frame.depends_on = 0
                        frame.stream_weight = 0
                        frame.exclusive = False
                    else:
                        frame = _DataFrame.__new__(_DataFrame)
                        frame.flags = _flags(_DATA_FLAG_NAMES, names)
                    frame.stream_id = stream_id
                    frame.body_len = length
                    frame.pad_length = 0
                    with memoryview(data) as view:
                        frame.data = view[offset + 9 : end].tobytes()
                    if not _OFFSET_LAYOUT:
                        del data[:end]
                    elif end == len(data):
                        self._data = bytearray()
                        self._data_offset = 0
                    else:
                        self._data_offset = end
                    return frame
        try:
            return super().__next__()
        except h2.exceptions.ProtocolError as exc:
            origin = exc.__cause__ or exc.__context__  # jh2 raises without "from"
            cause = str(origin or "").lower()
            if "settings" in cause and "ack" in cause and "payload" in cause:
                raise h2.exceptions.FrameTooLargeError(str(origin)) from exc
            raise


class ProxyH2Connection(h2.connection.H2Connection):
    """h2's connection with the changes a proxy needs.

    Output as a list of buffers: h2 serializes every frame into one growing bytearray and copies it
    again in ``data_to_send``; a proxy moving large bodies pays that per byte. Here a DATA frame
    becomes its 9-byte header plus the payload object itself, and :meth:`pop_output` hands the list
    to ``transport.writelines`` (a vectored write on uvloop): payload bytes are never copied.

    GOAWAY does not close it at once: RFC 9113 §6.8 lets streams up to the GOAWAY's last_stream_id
    complete, in both directions, but h2 moves its state machine to CLOSED on receipt, drops queued
    output, and then rejects the responses (or request bodies) still owed. We keep it open and
    enforce the rest ourselves: a connection that received GOAWAY starts no new stream and closes
    once its streams are done.

    Stream limits are enforced by the activator (see ``_counted_open_streams``), and two RFC 9113
    answers h2 gets wrong are mended: RST_STREAM on an idle stream (§6.4) and a SETTINGS ACK with a
    payload (§6.5, in ``_FrameBuffer``).
    """

    @classmethod
    def for_clients(cls) -> ProxyH2Connection:
        """A connection from a client (the server side of HTTP/2).

        Received field blocks are checked by the ingress itself, in one pass that also reads what
        routing needs (:func:`activator.core.headers.request_head`): h2's checks run as a chain of
        generators per field and cost more than the rest of a request's header handling. What we
        send is built from validated input, so h2's outbound checks would only repeat ours.
        """
        return cls(
            h2.config.H2Configuration(
                client_side=False,
                header_encoding=None,
                validate_inbound_headers=False,
                normalize_inbound_headers=False,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config=config)
        if type(self.encoder) is hpack.Encoder:
            self.encoder = SizeUpdateKeepingEncoder()
        self._out: list[bytes] = []
        self._prune_countdown = _PRUNE_EVERY
        # h2 declares a dict; it only ever stores, tests and reads stream ids in it.
        self._closed_streams = ClosedStreams()  # type: ignore[assignment]
        self.incoming_buffer = _FrameBuffer(server=not config.client_side)
        # Whether received header blocks go to the events as decoded: the server side with h2's
        # inbound processing off (see _receive_headers_frame).
        self._plain_inbound_headers = not (
            config.client_side
            or config.validate_inbound_headers
            or config.normalize_inbound_headers
            or config.header_encoding
        )

    def _begin_new_stream(self, stream_id: int, allowed_ids: Any) -> Any:
        """h2's, less the three debug-log calls it makes for every stream (to a logger that
        discards them, but each call and its arguments still cost). jh2 also keeps the inbound
        frame size limit on the stream; set on h2's stream, it is unused."""
        outbound = stream_id % 2 == int(self.config.client_side)
        highest = self.highest_outbound_stream_id if outbound else self.highest_inbound_stream_id
        if stream_id <= highest:
            raise h2.exceptions.StreamIDTooLowError(stream_id, highest)
        if stream_id % 2 != int(allowed_ids):
            raise h2.exceptions.ProtocolError("Invalid stream ID for peer.")
        stream = _H2Stream(
            stream_id,
            config=self.config,
            inbound_window_size=self.local_settings.initial_window_size,
            outbound_window_size=self.remote_settings.initial_window_size,
        )
        stream.max_inbound_frame_size = self.max_inbound_frame_size
        stream.max_outbound_frame_size = self.max_outbound_frame_size
        self.streams[stream_id] = stream
        if outbound:
            self.highest_outbound_stream_id = stream_id
        else:
            self.highest_inbound_stream_id = stream_id
        return stream

    def _receive_headers_frame(self, frame: Any) -> tuple[list[Any], list[Any]]:
        """h2's handling of a HEADERS frame, shortened for the one every request starts with: a
        client opening a new stream, no priority fields. The same checks and state machine inputs,
        in the same order: the stream limit, decoding, the connection's RECV_HEADERS, the new
        stream, its RECV_HEADERS (and RECV_END_STREAM), its expected content length. What it skips
        is h2's inbound header pipeline, which this configuration turns off
        (:meth:`for_clients`: the ingress checks the fields itself) but still walks: validation
        flags built, generators chained, the list copied. Anything else (trailers, priority, a
        block whose pseudo-headers look like an informational response, a client-side connection)
        takes h2's own path."""
        stream_id = frame.stream_id
        flags = frame.flags._flags
        if self._plain_inbound_headers is False or stream_id in self.streams or "PRIORITY" in flags:
            frames, events = super()._receive_headers_frame(frame)
            return frames, events
        max_open_streams = self.local_settings.max_concurrent_streams
        if self._counted_open_streams() + 1 > max_open_streams:
            raise h2.exceptions.TooManyStreamsError(
                f"Max outbound streams is {max_open_streams}, 0 open"
            )
        headers = h2.connection._decode_headers(self.decoder, frame.data)
        connection = self.state_machine
        events = (
            []
            if connection.state is _SERVER_OPEN  # h2's transition: no change, no event
            else connection.process_input(_CONNECTION_RECV_HEADERS)
        )
        stream = self._begin_new_stream(stream_id, _CLIENT_STREAM_IDS)
        for name, value in headers:  # h2's is_informational_response, on bytes
            if name[:1] != b":":
                break
            if name == b":status":
                if value[:1] == b"1":
                    informational: tuple[list[Any], list[Any]] = stream.receive_headers(
                        headers, "END_STREAM" in flags, None
                    )
                    return informational[0], events + informational[1]
                break
        machine = stream.state_machine
        received = _stream_step(machine, _STREAM_RECV_HEADERS)
        if "END_STREAM" in flags:
            ended = _stream_step(machine, _STREAM_RECV_END_STREAM)
            received[0].stream_ended = ended[0]
            received += ended
        stream._initialize_content_length(headers)
        received[0].headers = headers
        return [], events + received

    def _receive_rst_stream_frame(self, frame: Any) -> tuple[list[Any], list[Any]]:
        # RFC 9113 §6.4: RST_STREAM for an idle stream (never opened) is a connection error; h2
        # ignores it once any stream was used.
        stream_id = frame.stream_id
        if stream_id not in self.streams:
            ours = (stream_id % 2 == 1) == self.config.client_side
            highest = self.highest_outbound_stream_id if ours else self.highest_inbound_stream_id
            if stream_id > (highest or 0):
                raise h2.exceptions.ProtocolError(f"RST_STREAM on idle stream {stream_id}")
        frames, events = super()._receive_rst_stream_frame(frame)
        return frames, events

    # h2 counts open streams by walking every stream it holds, at each new stream, to enforce
    # SETTINGS_MAX_CONCURRENT_STREAMS - and prunes closed ones on the way. The activator enforces
    # both limits itself (ingress refuses the stream with REFUSED_STREAM instead of h2's connection
    # error; the pool never opens more than the pod allows), so the walk runs only every
    # _PRUNE_EVERY streams, to prune.
    def _counted_open_streams(self) -> int:
        self._prune_countdown -= 1
        if self._prune_countdown <= 0:
            self._prune_countdown = _PRUNE_EVERY
            self._open_streams(0)
        return 0

    @property
    def open_inbound_streams(self) -> int:
        return self._counted_open_streams()

    @property
    def open_outbound_streams(self) -> int:
        return self._counted_open_streams()

    def send_headers(  # type: ignore[override]  # the activator sends lists of byte pairs only
        self,
        stream_id: int,
        headers: HeaderList,
        end_stream: bool = False,
        **priority: Any,
    ) -> None:
        """h2's ``send_headers`` for what the activator sends: a final response or trailers on a
        stream the client opened. The same state machine inputs, in the same order (h2's checks and
        state stay whole), but the block goes out as bytes, without HEADERS/CONTINUATION frame
        objects and flag sets: a large share of the CPU of a small response. Anything else (a new
        stream, priority fields, a 1xx response) takes h2's own path."""
        stream = self.streams.get(stream_id)
        first = headers[0] if headers else None
        if (
            stream is None
            or priority
            or first is None
            or (first[0] == b":status" and first[1][:1] == b"1")
        ):
            super().send_headers(stream_id, headers, end_stream=end_stream, **priority)
            return
        if self.state_machine.state is not _SERVER_OPEN:  # else h2's transition changes nothing
            self.state_machine.process_input(_CONNECTION_SEND_HEADERS)
        machine = stream.state_machine
        _stream_step(machine, _STREAM_SEND_HEADERS)
        if _TRIPLES:  # jh2's compiled encoder: (name, value, never indexed)
            block = self.encoder.encode([(f[0], f[1], type(f) is not tuple) for f in headers])
        else:
            block = self.encoder.encode(headers)
        if end_stream:
            _stream_step(machine, _STREAM_SEND_END_STREAM)
        elif machine.trailers_sent:
            raise h2.exceptions.ProtocolError("Trailers must have END_STREAM set.")
        append_header_block(self._out, stream_id, block, end_stream, self.max_outbound_frame_size)

    def send_data(  # type: ignore[override]  # bytes only
        self,
        stream_id: int,
        data: bytes,
        end_stream: bool = False,
        pad_length: Any = None,
    ) -> None:
        """h2's ``send_data`` without padding: the same checks, state machine inputs and window
        accounting, the frame written as a 9-byte header plus the payload object itself."""
        stream = self.streams.get(stream_id)
        if stream is None or pad_length is not None:
            super().send_data(stream_id, data, end_stream=end_stream, pad_length=pad_length)
            return
        size = len(data)
        window = self.outbound_flow_control_window
        if stream.outbound_flow_control_window < window:
            window = stream.outbound_flow_control_window
        if size > window:
            raise h2.exceptions.FlowControlError(
                f"Cannot send {size} bytes, flow control window is {window}."
            )
        if size > self.max_outbound_frame_size:
            raise h2.exceptions.FrameTooLargeError(
                f"Cannot send frame size {size}, max frame size is {self.max_outbound_frame_size}"
            )
        if self.state_machine.state is not _SERVER_OPEN:  # else h2's transition changes nothing
            self.state_machine.process_input(_CONNECTION_SEND_DATA)
        machine = stream.state_machine
        _stream_step(machine, _STREAM_SEND_DATA)
        if end_stream:
            _stream_step(machine, _STREAM_SEND_END_STREAM)
        stream.outbound_flow_control_window -= size
        self.outbound_flow_control_window -= size
        append_frame(self._out, DATA, END_STREAM if end_stream else 0, stream_id, data)

    def _prepare_for_sending(self, frames: list[Any]) -> None:
        # What h2 itself still builds as frame objects: SETTINGS, WINDOW_UPDATE, RST_STREAM, PING,
        # GOAWAY (DATA and HEADERS go through send_data/send_headers above).
        if frames:
            self._out.extend(frame.serialize() for frame in frames)

    def pop_output(self) -> list[bytes]:
        """Everything queued for the peer, in order, as buffers to write."""
        out = self._out
        if self._data_to_send:  # h2 writes the client preface straight into its buffer
            out.insert(0, bytes(self._data_to_send))
            self._data_to_send = bytearray()
        self._out = []
        return out

    def data_to_send(self, amount: int | None = None) -> bytes:
        data = b"".join(self.pop_output())
        if amount is not None and len(data) > amount:
            self._out.append(data[amount:])
            data = data[:amount]
        return data

    def clear_outbound_data_buffer(self) -> None:
        super().clear_outbound_data_buffer()
        self._out = []

    def _receive_goaway_frame(self, frame: Any) -> tuple[list[Any], list[Any]]:
        event = h2.events.ConnectionTerminated()
        try:
            event.error_code = h2.errors.ErrorCodes(frame.error_code)
        except ValueError:
            event.error_code = frame.error_code
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]

    def send_goaway(self, last_stream_id: int, error_code: int = 0) -> None:
        """Queue GOAWAY but keep serving the streams at or below ``last_stream_id`` (RFC 9113 §6.8);
        h2's ``close_connection`` would refuse every later frame, in-flight responses included."""
        state = self.state_machine.state
        self.close_connection(error_code=error_code, last_stream_id=last_stream_id)
        self.state_machine.state = state


class H2Commands(Protocol):
    """What :class:`H2Endpoint` asks of an HTTP/2 state machine: h2's API, which
    :class:`ProxyH2Connection` (clients) and :class:`~activator.io.pod_h2.PodH2Connection` (pods) share."""

    max_outbound_frame_size: int

    def send_headers(
        self, stream_id: int, headers: HeaderList, end_stream: bool = False
    ) -> None: ...
    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None: ...
    def end_stream(self, stream_id: int) -> None: ...
    def reset_stream(self, stream_id: int, error_code: int) -> None: ...
    def increment_flow_control_window(
        self, increment: int, stream_id: int | None = None
    ) -> None: ...
    def local_flow_control_window(self, stream_id: int) -> int: ...
    def pop_output(self) -> list[bytes]: ...


class WriteQueue:
    """The connections of one event loop with output waiting to be written.

    Output one connection's read produces for others (a request for a pod, a response for a
    client) is written when that read is done: the read's handler calls :meth:`write_now`. So the
    pod starts on a request while the activator still reads the next client's, instead of after
    every read of the loop turn. Anything still waiting (output from timers, or from code that
    does not end a read) is written once per loop turn, one write per connection however many
    frames it queued.
    """

    __slots__ = ("__weakref__", "_loop", "_pending", "_turn_scheduled", "idle_poller", "reads")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weak: the loops' map below holds the queue as long as the loop lives, not longer.
        self._loop = weakref.ref(loop)
        self._pending: list[H2Endpoint] = []
        self._turn_scheduled = False
        # Reads done on this loop, and a busy poller waiting for the next one (see busypoll).
        self.reads = 0
        self.idle_poller: BusyPoller | None = None

    def add(self, endpoint: H2Endpoint) -> None:
        self._pending.append(endpoint)
        if not self._turn_scheduled:
            loop = self._loop()
            if loop is not None:
                self._turn_scheduled = True
                loop.call_soon(self._end_of_turn)

    def write_now(self) -> None:
        """A read is done: write every waiting connection's output (in the order they queued
        it). Every read handler calls this once at its end."""
        self.reads += 1
        poller = self.idle_poller
        if poller is not None:
            self.idle_poller = None
            poller.resume()
        if self._pending:
            self._flush_pending()

    def _end_of_turn(self) -> None:
        self._turn_scheduled = False
        if self._pending:
            self._flush_pending()

    def _flush_pending(self) -> None:
        pending, self._pending = self._pending, []
        for endpoint in pending:
            endpoint.flush()


_WRITE_QUEUES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, WriteQueue] = (
    weakref.WeakKeyDictionary()
)


def write_queue(loop: asyncio.AbstractEventLoop) -> WriteQueue:
    """The loop's write queue (one per loop: connections of one loop share it)."""
    queue = _WRITE_QUEUES.get(loop)
    if queue is None:
        queue = _WRITE_QUEUES[loop] = WriteQueue(loop)
    return queue


class H2Endpoint:
    """Base for an HTTP/2 connection of ours (to a client or to a pod)."""

    conn: H2Commands
    transport: asyncio.Transport | None

    def __init__(self, loop: asyncio.AbstractEventLoop, stream_window: int) -> None:
        self.loop = loop
        self.transport = None
        self.writes = write_queue(loop)
        self._flush_scheduled = False
        self._write_paused = False
        # Flow control credit we owe the peer (RFC 9113 §6.9). The connection's is returned as data
        # arrives, so one stream whose reader stalls never stops the others sharing the connection;
        # a stream's is returned only once its bytes moved on, so a slow reader slows its own sender
        # and at most one stream window per stream is ever held here.
        self._connection_credit = 0
        self._stream_credit: dict[int, int] = {}
        self._stream_credit_batch = max(1, stream_window // 2)
        # Stream id -> body pieces waiting for window or for the transport to drain (order kept).
        self._blocked: dict[int, deque[_Piece]] = {}

    # -- flow-control credit ----------------------------------------------------------------------

    # Callers add each DATA frame's flow-controlled length to ``_connection_credit`` as it arrives
    # (inline: it runs per frame) and call this at the end of the read.
    def return_connection_credit(self) -> None:
        """End of a read: send one connection WINDOW_UPDATE if enough credit piled up."""
        credit = self._connection_credit
        if credit >= CONNECTION_CREDIT_BATCH:
            self._connection_credit = 0
            try:
                self.conn.increment_flow_control_window(credit)
            except h2.exceptions.ProtocolError:
                pass

    def consumed(self, stream_id: int, nbytes: int) -> None:
        """Body bytes of ``stream_id`` moved on: give the stream window back, half a window at a time."""
        if not nbytes:
            return
        credit = self._stream_credit.get(stream_id, 0) + nbytes
        if credit < self._stream_credit_batch:
            self._stream_credit[stream_id] = credit
            return
        self._stream_credit.pop(stream_id, None)
        try:
            self.conn.increment_flow_control_window(credit, stream_id=stream_id)
        except h2.exceptions.ProtocolError:  # the stream closed meanwhile: nothing owed
            return
        self.schedule_flush()

    # -- writing -----------------------------------------------------------------------------------

    def flush(self) -> None:
        """Write everything h2 has queued, in one vectored write."""
        self._flush_scheduled = False
        chunks = self.conn.pop_output()
        if chunks and self.transport is not None:
            self.transport.writelines(chunks)

    def schedule_flush(self) -> None:
        """Output produced from another connection's callbacks: written when that connection's read
        is done, or at the end of the loop turn, in one write (see :class:`WriteQueue`)."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.writes.add(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self.unblock(0)
        self.schedule_flush()

    # -- bodies ------------------------------------------------------------------------------------

    def on_sent(self, ex: Exchange, ack_len: int) -> None:
        """A body piece for ``ex`` left through h2: acknowledge it to the other side."""
        raise NotImplementedError

    def send_body(
        self, stream_id: int, ex: Exchange, data: bytes, ack_len: int, end_stream: bool
    ) -> None:
        """Send ``data`` on ``stream_id`` as the windows allow; queue the rest in order."""
        queue = self._blocked.get(stream_id)
        if queue is not None:
            queue.append((ex, data, ack_len, end_stream))
            return
        if self._write_paused and data:
            self._blocked[stream_id] = deque(((ex, data, ack_len, end_stream),))
            return
        rest = self._send_some(stream_id, ex, data, ack_len, end_stream)
        if rest is not None:
            self._blocked[stream_id] = deque((rest,))
        self.schedule_flush()

    def send_trailer_block(self, stream_id: int, ex: Exchange, trailers: HeaderList) -> None:
        """Send trailers (END_STREAM) after any body still queued on the stream."""
        queue = self._blocked.get(stream_id)
        if queue is not None:
            queue.append((ex, trailers, 0, True))
            return
        self.conn.send_headers(stream_id, trailers, end_stream=True)
        self.schedule_flush()

    def _send_some(
        self, stream_id: int, ex: Exchange, data: bytes | HeaderList, ack_len: int, end_stream: bool
    ) -> _Piece | None:
        conn = self.conn
        if isinstance(data, list):  # trailers
            conn.send_headers(stream_id, data, end_stream=True)
            return None
        size = len(data)
        if size == 0:
            if end_stream:
                conn.end_stream(stream_id)
            self.on_sent(ex, ack_len)
            return None
        window = conn.local_flow_control_window(stream_id)
        max_frame = conn.max_outbound_frame_size
        if size <= window and size <= max_frame:  # the common case: one frame, window open
            conn.send_data(stream_id, data, end_stream=end_stream)
            self.on_sent(ex, ack_len)
            return None
        offset = 0
        while offset < size and window > 0:
            n = min(window, max_frame, size - offset)
            last = offset + n == size
            conn.send_data(stream_id, data[offset : offset + n], end_stream=end_stream and last)
            offset += n
            window -= n
        if offset == size:
            self.on_sent(ex, ack_len)
            return None
        return (ex, data[offset:], ack_len, end_stream)

    def unblock(self, stream_id: int) -> None:
        """A window opened (``stream_id`` 0: the connection's) or the transport drained."""
        if not self._blocked or self._write_paused:
            return
        ids = list(self._blocked) if stream_id == 0 else [stream_id]
        for sid in ids:
            queue = self._blocked.get(sid)
            if queue is None:
                continue
            while queue:
                ex, data, ack_len, end_stream = queue[0]
                try:
                    rest = self._send_some(sid, ex, data, ack_len, end_stream)
                except h2.exceptions.ProtocolError:  # the stream (or connection) is gone
                    queue.clear()
                    break
                if rest is not None:
                    queue[0] = rest
                    break
                queue.popleft()
            if not queue:
                del self._blocked[sid]
        self.schedule_flush()

    def drop_blocked(self, stream_id: int) -> None:
        self._blocked.pop(stream_id, None)
        self._stream_credit.pop(stream_id, None)

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        self._blocked.pop(stream_id, None)
        self._stream_credit.pop(stream_id, None)
        try:
            self.conn.reset_stream(stream_id, error_code)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        self.schedule_flush()
