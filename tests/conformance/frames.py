"""A raw HTTP/2 client for conformance tests: hand-built frames over a real TCP socket.

Well-formed frames are encoded with ``hyperframe`` and header blocks with ``hpack``; frames that no
library would produce (wrong lengths, reserved stream ids, bad padding) are built byte by byte with
:func:`raw_frame`. Everything the server sends is parsed with ``hyperframe`` and every header block
it sends is decoded, in order, so that the HPACK dynamic table stays in step (RFC 7541 §2.3.2).

The ``expect_*`` methods read until the awaited outcome and fail the test on anything that
contradicts it. Each wait is bounded by :data:`TIMEOUT`; the bound is only reached when the server
does not answer at all, and it is never what a test asserts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal, TypeVar

import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    ExtensionFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

FrameT = TypeVar("FrameT", bound=Frame)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Upper bound on one wait for the server; a conforming server answers in milliseconds.
TIMEOUT = 5.0
# RFC 9113 §4.2: the initial (and minimum) SETTINGS_MAX_FRAME_SIZE.
MAX_FRAME_SIZE = 16_384
MAX_WINDOW = 2**31 - 1
# The :authority of every request; the activator's catch-all service ("*") routes it to the pod.
AUTHORITY = "conformance.test"


class ErrorCode(IntEnum):
    """RFC 9113 §7."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


def code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"0x{code:x}"


class FrameType(IntEnum):
    """RFC 9113 §6."""

    DATA = 0x0
    HEADERS = 0x1
    PRIORITY = 0x2
    RST_STREAM = 0x3
    SETTINGS = 0x4
    PUSH_PROMISE = 0x5
    PING = 0x6
    GOAWAY = 0x7
    WINDOW_UPDATE = 0x8
    CONTINUATION = 0x9


class Setting(IntEnum):
    """RFC 9113 §6.5.2."""

    HEADER_TABLE_SIZE = 0x1
    ENABLE_PUSH = 0x2
    MAX_CONCURRENT_STREAMS = 0x3
    INITIAL_WINDOW_SIZE = 0x4
    MAX_FRAME_SIZE = 0x5
    MAX_HEADER_LIST_SIZE = 0x6


# Flag bits (RFC 9113 §6): END_STREAM and ACK share bit 0x1.
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY = 0x20


def raw_frame(
    frame_type: int, flags: int, stream_id: int, payload: bytes = b"", *, reserved_bit: bool = False
) -> bytes:
    """One frame exactly as given (RFC 9113 §4.1): nothing is checked, so it may be malformed."""
    header = struct.pack(">I", len(payload))[1:] + struct.pack(
        ">BBI", frame_type, flags, (stream_id & MAX_WINDOW) | (0x8000_0000 if reserved_bit else 0)
    )
    return header + payload


def settings_payload(settings: Iterable[tuple[int, int]]) -> bytes:
    """SETTINGS parameters in the order given, repeats kept (RFC 9113 §6.5.1, §6.5.3)."""
    return b"".join(struct.pack(">HI", ident, value) for ident, value in settings)


def settings_frame(settings: Iterable[tuple[int, int]] = ()) -> bytes:
    return raw_frame(FrameType.SETTINGS, 0, 0, settings_payload(settings))


def settings_ack() -> bytes:
    return SettingsFrame(0, flags=["ACK"]).serialize()


def ping(payload: bytes = b"\0" * 8, *, ack: bool = False) -> bytes:
    return PingFrame(0, opaque_data=payload, flags=["ACK"] if ack else []).serialize()


def window_update(stream_id: int, increment: int) -> bytes:
    """A WINDOW_UPDATE with any increment, 0 and over 2^31-1 included (RFC 9113 §6.9)."""
    return raw_frame(FrameType.WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment))


def rst_stream(stream_id: int, code: int = ErrorCode.CANCEL) -> bytes:
    return RstStreamFrame(stream_id, error_code=code).serialize()


def priority(stream_id: int, depends_on: int, weight: int = 15, exclusive: bool = False) -> bytes:
    dependency = depends_on | (0x8000_0000 if exclusive else 0)
    return raw_frame(FrameType.PRIORITY, 0, stream_id, struct.pack(">IB", dependency, weight))


def data(stream_id: int, payload: bytes, *, end_stream: bool = False) -> bytes:
    return DataFrame(
        stream_id, data=payload, flags=["END_STREAM"] if end_stream else []
    ).serialize()


def goaway(last_stream_id: int = 0, code: int = ErrorCode.NO_ERROR, stream_id: int = 0) -> bytes:
    return raw_frame(FrameType.GOAWAY, 0, stream_id, struct.pack(">II", last_stream_id, code))


def request(
    path: str = "/",
    method: str = "GET",
    *,
    extra: Sequence[tuple[str, str]] = (),
    authority: str = AUTHORITY,
) -> list[tuple[str, str]]:
    """A valid request header list (RFC 9113 §8.3.1), with ``extra`` fields appended."""
    return [
        (":method", method),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority),
        *extra,
    ]


@dataclass
class StreamState:
    """What the server sent on one stream."""

    header_blocks: list[list[tuple[str, str]]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    data_frames: list[int] = field(default_factory=list)
    """Payload length of each DATA frame, in order."""
    ended: bool = False
    reset_code: int | None = None

    @property
    def status(self) -> int | None:
        for block in self.header_blocks:
            for name, value in block:
                if name == ":status" and not value.startswith("1"):
                    return int(value)
        return None


@dataclass(frozen=True)
class Outcome:
    """How an expected error showed itself: a GOAWAY, an RST_STREAM, or a closed connection."""

    kind: Literal["goaway", "rst_stream", "closed"]
    code: int | None = None
    stream_id: int | None = None
    debug: bytes = b""

    def __str__(self) -> str:
        if self.kind == "closed":
            return "connection closed without GOAWAY"
        where = f" on stream {self.stream_id}" if self.kind == "rst_stream" else ""
        return f"{self.kind.upper()}({code_name(self.code or 0)}){where}"


class ConformanceFailure(AssertionError):
    """The server's answer contradicts the expectation (the message says what was seen)."""


class H2Client:
    """One client connection speaking raw frames; see the module docstring."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.encoder = hpack.Encoder()
        # The table size stays at the default 4096 we advertise: a server encoder that exceeded it
        # would fail decoding here (RFC 7541 §4.2).
        self.decoder = hpack.Decoder(max_header_list_size=1 << 24)
        self.server_settings: dict[int, int] = {}
        self.streams: dict[int, StreamState] = {}
        self.seen: list[str] = []
        """Every frame received, as text, for failure messages."""
        self.goaway: GoAwayFrame | None = None
        self.closed = False
        self.auto_window = True
        """Give back the window of every DATA frame received, so that downloads do not stall."""
        self._block: tuple[int, bytearray] | None = None
        self.pings_acked: list[bytes] = []
        """Payloads of the PING ACKs received."""

    @classmethod
    async def open(cls, port: int) -> H2Client:
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    # -- sending -----------------------------------------------------------------------------------

    def send(self, *chunks: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(b"".join(chunks))

    def encode(self, headers: Sequence[tuple[str, str]], *, huffman: bool = True) -> bytes:
        """A header block; it updates the encoder's dynamic table, so send it (in order)."""
        return bytes(self.encoder.encode(list(headers), huffman=huffman))

    def headers(
        self,
        stream_id: int,
        headers: Sequence[tuple[str, str]] | bytes,
        *,
        end_stream: bool = True,
        end_headers: bool = True,
    ) -> bytes:
        """A HEADERS frame; ``headers`` is a header list or an already encoded block."""
        block = headers if isinstance(headers, bytes) else self.encode(headers)
        flags = []
        if end_stream:
            flags.append("END_STREAM")
        if end_headers:
            flags.append("END_HEADERS")
        return HeadersFrame(stream_id, data=block, flags=flags).serialize()

    def continuation(self, stream_id: int, block: bytes, *, end_headers: bool = True) -> bytes:
        flags = ["END_HEADERS"] if end_headers else []
        return ContinuationFrame(stream_id, data=block, flags=flags).serialize()

    async def handshake(self, settings: Iterable[tuple[int, int]] = ()) -> None:
        """Preface and SETTINGS both ways, ACKs both ways (RFC 9113 §3.4, §6.5.3)."""
        self.send(PREFACE, settings_frame(settings))
        async with asyncio.timeout(TIMEOUT):
            got_settings = got_ack = False
            while not (got_settings and got_ack):
                frame = await self._read_frame()
                if frame is None:
                    raise ConformanceFailure(
                        f"connection closed during the handshake: {self.recent()}"
                    )
                if isinstance(frame, SettingsFrame):
                    if "ACK" in frame.flags:
                        got_ack = True
                    else:
                        got_settings = True
                elif isinstance(frame, GoAwayFrame):
                    raise ConformanceFailure(f"GOAWAY during the handshake: {self.recent()}")

    # -- receiving ---------------------------------------------------------------------------------

    async def _read_frame(self) -> Frame | None:
        """The next frame, handled (header blocks decoded, PING and SETTINGS acknowledged), or None
        once the server has closed the connection."""
        if self.closed:
            return None
        try:
            header = await self.reader.readexactly(9)
            frame, length = Frame.parse_frame_header(memoryview(header))
            body = await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed = True
            self.seen.append("<closed>")
            return None
        frame.parse_body(memoryview(body))
        self.seen.append(_describe(frame))
        self._handle(frame)
        return frame

    def _handle(self, frame: Frame) -> None:
        if isinstance(frame, SettingsFrame):
            if "ACK" not in frame.flags:
                self.server_settings.update(frame.settings)
                self.send(settings_ack())
        elif isinstance(frame, PingFrame):
            if "ACK" in frame.flags:
                self.pings_acked.append(bytes(frame.opaque_data))
            else:
                self.send(ping(bytes(frame.opaque_data), ack=True))
        elif isinstance(frame, GoAwayFrame):
            self.goaway = frame
        elif isinstance(frame, HeadersFrame | PushPromiseFrame):
            self._block = (frame.stream_id, bytearray(frame.data))
            if "END_HEADERS" in frame.flags:
                self._end_block()
            if "END_STREAM" in frame.flags:
                self.stream(frame.stream_id).ended = True
        elif isinstance(frame, ContinuationFrame):
            if self._block is None or self._block[0] != frame.stream_id:
                raise ConformanceFailure(f"server sent a stray CONTINUATION: {self.recent()}")
            self._block[1].extend(frame.data)
            if "END_HEADERS" in frame.flags:
                self._end_block()
        elif isinstance(frame, DataFrame):
            state = self.stream(frame.stream_id)
            state.body.extend(frame.data)
            state.data_frames.append(len(frame.data))
            if "END_STREAM" in frame.flags:
                state.ended = True
            if self.auto_window and frame.flow_controlled_length:
                self.send(window_update(0, frame.flow_controlled_length))
                if not state.ended:
                    self.send(window_update(frame.stream_id, frame.flow_controlled_length))
        elif isinstance(frame, RstStreamFrame):
            self.stream(frame.stream_id).reset_code = frame.error_code

    def _end_block(self) -> None:
        assert self._block is not None
        stream_id, block = self._block
        self._block = None
        try:
            headers = self.decoder.decode(bytes(block), raw=False)
        except hpack.HPACKError as exc:
            raise ConformanceFailure(f"server sent an undecodable header block: {exc}") from exc
        self.stream(stream_id).header_blocks.append([(str(n), str(v)) for n, v in headers])

    def recent(self) -> str:
        """The last frames received, for failure messages."""
        shown = self.seen[-30:]
        skipped = len(self.seen) - len(shown)
        return ("... " if skipped else "") + ", ".join(shown)

    def stream(self, stream_id: int) -> StreamState:
        state = self.streams.get(stream_id)
        if state is None:
            state = self.streams[stream_id] = StreamState()
        return state

    async def _next(self, deadline: float, waiting_for: str) -> Frame | None:
        try:
            async with asyncio.timeout_at(deadline):
                return await self._read_frame()
        except TimeoutError:
            raise ConformanceFailure(
                f"no answer within {TIMEOUT} s while waiting for {waiting_for}; received: "
                f"{self.recent()}"
            ) from None

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + TIMEOUT

    # -- expectations ------------------------------------------------------------------------------

    async def expect_connection_error(self, *codes: int) -> Outcome:
        """A connection error (RFC 9113 §5.4.1): GOAWAY with one of ``codes`` and then the TCP
        connection closed, or the connection closed without GOAWAY."""
        wanted = f"connection error {'/'.join(code_name(c) for c in codes)}"
        deadline = self._deadline()
        while True:
            frame = await self._next(deadline, wanted)
            if frame is None:
                return Outcome("closed")
            if isinstance(frame, GoAwayFrame):
                if frame.error_code not in codes:
                    raise ConformanceFailure(
                        f"expected {wanted}, got GOAWAY({code_name(frame.error_code)}); "
                        f"received: {self.recent()}"
                    )
                outcome = Outcome("goaway", frame.error_code, debug=bytes(frame.additional_data))
                await self._expect_closed_after_goaway(deadline, wanted)
                return outcome
            if isinstance(frame, RstStreamFrame):
                raise ConformanceFailure(
                    f"expected {wanted}, got a stream error instead; received: {self.recent()}"
                )

    async def _expect_closed_after_goaway(self, deadline: float, wanted: str) -> None:
        # RFC 9113 §5.4.1: after the GOAWAY for a connection error the endpoint MUST close the
        # TCP connection.
        while True:
            frame = await self._next(deadline, f"the connection to close after the {wanted}")
            if frame is None:
                return
            if isinstance(frame, GoAwayFrame) and frame.error_code not in (
                ErrorCode.NO_ERROR,
                self.goaway.error_code if self.goaway else -1,
            ):
                raise ConformanceFailure(f"a second, different GOAWAY: {self.recent()}")

    async def expect_stream_error(
        self, stream_id: int, *codes: int, connection_error: bool = True
    ) -> Outcome:
        """A stream error (RFC 9113 §5.4.2): RST_STREAM on ``stream_id`` with one of ``codes``.

        With ``connection_error`` (the default), a connection error with one of ``codes`` is also
        accepted: an endpoint MAY treat a stream error as a connection error (RFC 9113 §5.4.1).
        A response on the stream is never accepted.
        """
        wanted = f"stream error {'/'.join(code_name(c) for c in codes)} on stream {stream_id}"
        deadline = self._deadline()
        while True:
            frame = await self._next(deadline, wanted)
            if frame is None:
                if connection_error:
                    return Outcome("closed")
                raise ConformanceFailure(f"expected {wanted}, connection closed: {self.recent()}")
            if isinstance(frame, RstStreamFrame) and frame.stream_id == stream_id:
                if frame.error_code not in codes:
                    raise ConformanceFailure(
                        f"expected {wanted}, got RST_STREAM({code_name(frame.error_code)}); "
                        f"received: {self.recent()}"
                    )
                return Outcome("rst_stream", frame.error_code, stream_id)
            if isinstance(frame, GoAwayFrame):
                if not connection_error or frame.error_code not in codes:
                    raise ConformanceFailure(
                        f"expected {wanted}, got GOAWAY({code_name(frame.error_code)}); "
                        f"received: {self.recent()}"
                    )
                await self._expect_closed_after_goaway(deadline, wanted)
                return Outcome("goaway", frame.error_code)
            if isinstance(frame, HeadersFrame) and frame.stream_id == stream_id:
                raise ConformanceFailure(
                    f"expected {wanted}, got a response instead; received: {self.recent()}"
                )

    async def expect_response(self, stream_id: int) -> StreamState:
        """The complete response on ``stream_id`` (END_STREAM); an error of any kind fails."""
        deadline = self._deadline()
        state = self.stream(stream_id)
        while not state.ended:
            frame = await self._next(deadline, f"a response on stream {stream_id}")
            if frame is None or (isinstance(frame, GoAwayFrame) and frame.error_code):
                raise ConformanceFailure(
                    f"connection ended before the response on stream {stream_id}: {self.recent()}"
                )
            if state.reset_code is not None:
                raise ConformanceFailure(
                    f"stream {stream_id} reset with {code_name(state.reset_code)} instead of a "
                    f"response: {self.recent()}"
                )
        if state.status is None:
            raise ConformanceFailure(f"stream {stream_id} ended without a :status: {self.recent()}")
        return state

    async def expect_headers(self, stream_id: int) -> StreamState:
        """The response header block on ``stream_id`` (the body may still be coming)."""
        deadline = self._deadline()
        state = self.stream(stream_id)
        while state.status is None:
            frame = await self._next(deadline, f"response headers on stream {stream_id}")
            if frame is None or state.reset_code is not None:
                raise ConformanceFailure(
                    f"no response headers on stream {stream_id}: {self.recent()}"
                )
        return state

    async def expect_alive(self, *calm_codes: int) -> bool:
        """The connection still works: a PING gets its ACK (RFC 9113 §6.7), with no error first.

        With ``calm_codes``, a connection error with one of them (e.g. ENHANCE_YOUR_CALM against a
        flood, RFC 9113 §10.5) is accepted too, and False returned; True means alive.
        """
        payload = os.urandom(8)
        self.send(ping(payload))
        deadline = self._deadline()
        while True:
            frame = await self._next(deadline, "a PING ACK")
            if (
                isinstance(frame, PingFrame)
                and "ACK" in frame.flags
                and bytes(frame.opaque_data) == payload
            ):
                return True
            if frame is None and calm_codes and self.goaway is None:
                return False
            if frame is None or isinstance(frame, GoAwayFrame):
                if self.goaway is not None and self.goaway.error_code in calm_codes:
                    return False
                raise ConformanceFailure(f"connection ended instead of a PING ACK: {self.recent()}")
            if isinstance(frame, RstStreamFrame):
                raise ConformanceFailure(f"unexpected RST_STREAM: {self.recent()}")

    async def expect_frame(self, kind: type[FrameT], stream_id: int | None = None) -> FrameT:
        """The next frame of type ``kind`` (on ``stream_id`` if given); errors in between fail."""
        deadline = self._deadline()
        while True:
            frame = await self._next(deadline, f"a {kind.__name__}")
            if isinstance(frame, kind) and (stream_id is None or frame.stream_id == stream_id):
                return frame
            if frame is None or isinstance(frame, GoAwayFrame | RstStreamFrame):
                raise ConformanceFailure(
                    f"expected a {kind.__name__}, the server ended it: {self.recent()}"
                )

    async def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(TIMEOUT):
                await self.writer.wait_closed()


def parse_frames(received: bytes) -> list[Frame]:
    """Frames in ``received`` (complete ones; a truncated tail is ignored)."""
    frames = []
    view = memoryview(received)
    while len(view) >= 9:
        frame, length = Frame.parse_frame_header(view[:9])
        if len(view) < 9 + length:
            break
        frame.parse_body(view[9 : 9 + length])
        frames.append(frame)
        view = view[9 + length :]
    return frames


def _describe(frame: Frame) -> str:
    name = type(frame).__name__.removesuffix("Frame").upper()
    if isinstance(frame, ExtensionFrame):
        name = f"EXT(0x{frame.type:x})"
    text = f"{name}[{frame.stream_id}]"
    if isinstance(frame, GoAwayFrame):
        debug = bytes(frame.additional_data)[:120]
        text += f"({code_name(frame.error_code)}, last={frame.last_stream_id}, {debug!r})"
    elif isinstance(frame, RstStreamFrame):
        text += f"({code_name(frame.error_code)})"
    elif isinstance(frame, DataFrame):
        text += f"({len(frame.data)} bytes)"
    elif isinstance(frame, WindowUpdateFrame):
        text += f"(+{frame.window_increment})"
    if frame.flags:
        text += "{" + ",".join(sorted(frame.flags)) + "}"
    return text
