"""The client side's short paths through the HTTP/2 library must be indistinguishable from the
library's own: the frame reader (``_FrameBuffer``) and the handling of a request's HEADERS frame
(``ProxyH2Connection._receive_headers_frame``).

Every test feeds the same bytes to the short path and to the library's own path and compares what
comes out: frames field by field, events, stream states, output bytes, errors. Sans-I/O, no
sockets. This directory also runs on h2 in CI (tests/run.sh), so both libraries' buffer layouts
are covered: jh2 moves an offset, h2 deletes what it read.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activator.io import h2base
from activator.io.h2base import ProxyH2Connection, _FrameBuffer
from activator.io.h2lib import h2

_LibraryFrameBuffer: Any = importlib.import_module(h2.__name__ + ".frame_buffer").FrameBuffer
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_FRAME = 40  # small, so that oversized frames are easy to generate

# Frame types: DATA, HEADERS, PRIORITY, RST_STREAM, PING, WINDOW_UPDATE, CONTINUATION, unknown.
# SETTINGS is left out: _FrameBuffer deliberately maps one of its errors differently.
_TYPES = st.sampled_from([0, 0, 0, 1, 1, 1, 2, 3, 6, 8, 9, 9, 0xFA])
_STREAM_IDS = st.sampled_from([0, 1, 1, 3, 5, 2, 0x80000001])


def raw(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big")
        + bytes([kind, flags])
        + stream_id.to_bytes(4, "big")
        + payload
    )


frames_strategy = st.lists(
    st.builds(
        raw,
        _TYPES,
        st.one_of(st.sampled_from([0, 1, 4, 5, 8, 0x20, 0x25, 0x2D]), st.integers(0, 255)),
        _STREAM_IDS,
        st.binary(max_size=MAX_FRAME + 4),
    ),
    max_size=8,
)


def describe(frame: Any) -> tuple[Any, ...]:
    return (
        type(frame).__name__,
        frame.stream_id,
        sorted(frame.flags),
        frame.body_len,
        getattr(frame, "data", None),
        getattr(frame, "pad_length", None),
        getattr(frame, "depends_on", None),
        getattr(frame, "stream_weight", None),
        getattr(frame, "exclusive", None),
    )


def read_all(buffer: Any, chunks: list[bytes]) -> list[Any]:
    """Feed ``chunks`` one by one, reading every frame after each: frames described, then the
    first error's type, if any."""
    buffer.max_frame_size = MAX_FRAME
    seen: list[Any] = []
    for chunk in chunks:
        buffer.add_data(chunk)
        try:
            for frame in buffer:
                seen.append(describe(frame))
        except Exception as exc:
            seen.append(type(exc).__name__)
            return seen
    return seen


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts})
    pieces = []
    start = 0
    for point in [*points, len(data)]:
        pieces.append(data[start:point])
        start = point
    return pieces


@settings(max_examples=400, deadline=None)
@given(frames_strategy, st.lists(st.integers(0, 400), max_size=6))
def test_frame_reader_yields_what_the_library_parser_yields(
    frames: list[bytes], cuts: list[int]
) -> None:
    chunks = split(b"".join(frames), cuts)
    assert read_all(_FrameBuffer(), chunks) == read_all(_LibraryFrameBuffer(), chunks)


def test_frames_from_the_short_path_keep_their_flag_rules() -> None:
    buffer = _FrameBuffer()
    buffer.max_frame_size = MAX_FRAME
    buffer.add_data(raw(1, 0x05, 1, b"\x82") + raw(0, 0x01, 1, b"body"))
    headers, data = list(buffer)
    assert sorted(headers.flags) == ["END_HEADERS", "END_STREAM"]
    assert sorted(data.flags) == ["END_STREAM"]
    headers.flags.add("PRIORITY")  # a flag HEADERS defines
    assert "PRIORITY" in headers.flags
    assert "PRIORITY" not in data.flags
    with pytest.raises(ValueError, match="Unexpected flag"):
        data.flags.add("PRIORITY")  # DATA defines no such flag
    assert data.flow_controlled_length == 4


# -- HEADERS handling ----------------------------------------------------------------------------

_FIELDS = st.sampled_from(
    [
        (b":method", b"GET"),
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", b"/"),
        (b":authority", b"example.com"),
        (b":status", b"100"),
        (b":status", b"200"),
        (b"content-length", b"3"),
        (b"content-length", b"x"),
        (b"user-agent", b"test"),
        (b"Upper", b"case"),
    ]
)
_REQUEST = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"a")]
PLAIN = {"end_stream": False, "priority": False, "padded": False}


def headers_frame(
    stream_id: int, block: bytes, *, end_stream: bool, priority: bool, padded: bool
) -> bytes:
    flags = 0x04 | (0x01 if end_stream else 0) | (0x20 if priority else 0) | (0x08 if padded else 0)
    payload = block
    if priority:
        payload = b"\x00\x00\x00\x00\x10" + payload
    if padded:
        payload = b"\x02" + payload + b"\x00\x00"
    return raw(1, flags, stream_id, payload)


@st.composite
def client_conversation(draw: st.DrawFn) -> list[bytes]:
    """A client's reads: each holds one or two HEADERS frames (requests, trailers, repeats, stale or
    even stream ids, priority, padding), sometimes DATA or RST_STREAM."""
    encoder = hpack.Encoder()
    reads: list[bytes] = []
    for _ in range(draw(st.integers(1, 6))):
        parts = []
        for _ in range(draw(st.integers(1, 2))):
            kind = draw(st.sampled_from(["headers", "headers", "headers", "data", "rst"]))
            stream_id = draw(st.sampled_from([1, 3, 5, 7, 9, 2, 1]))
            if kind == "headers":
                fields = draw(st.one_of(st.just(_REQUEST), st.lists(_FIELDS, max_size=6)))
                block = encoder.encode(fields)
                parts.append(
                    headers_frame(
                        stream_id,
                        block,
                        end_stream=draw(st.booleans()),
                        priority=draw(st.booleans()),
                        padded=draw(st.booleans()),
                    )
                )
            elif kind == "data":
                parts.append(raw(0, draw(st.sampled_from([0, 1])), stream_id, b"abc"))
            else:
                parts.append(raw(3, 0, stream_id, b"\x00\x00\x00\x08"))
        reads.append(b"".join(parts))
    return reads


def describe_event(event: Any) -> tuple[Any, ...]:
    fields = {}
    for key in ("stream_id", "headers", "data", "error_code", "last_stream_id"):
        if hasattr(event, key):
            value = getattr(event, key)
            fields[key] = [tuple(f) for f in value] if key == "headers" and value else value
    for key in ("stream_ended", "priority_updated"):
        if hasattr(event, key):
            fields[key] = getattr(event, key) is not None
    return (type(event).__name__, sorted(fields.items(), key=lambda item: item[0]))


def run(conn: ProxyH2Connection, reads: list[bytes]) -> list[Any]:
    """What the connection makes of the reads: events, stream states, output; then the error."""
    conn.initiate_connection()
    conn.receive_data(PREFACE + raw(4, 0, 0, b""))
    conn.pop_output()
    seen: list[Any] = []
    for data in reads:
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            seen.append((type(exc).__name__, getattr(exc, "error_code", None)))
            seen.append(b"".join(conn.pop_output()))
            return seen
        seen.append([describe_event(event) for event in events])
        seen.append(sorted((sid, s.state_machine.state) for sid, s in conn.streams.items()))
        seen.append(
            (conn.highest_inbound_stream_id, conn.state_machine.state, b"".join(conn.pop_output()))
        )
    return seen


@settings(max_examples=300, deadline=None)
@given(client_conversation())
def test_request_headers_are_handled_as_the_library_handles_them(reads: list[bytes]) -> None:
    short = ProxyH2Connection.for_clients()
    assert short._plain_inbound_headers
    library = ProxyH2Connection.for_clients()
    library._plain_inbound_headers = False  # every HEADERS frame through h2's own handling
    assert run(short, reads) == run(library, reads)


def test_a_request_on_the_short_path_arrives_whole() -> None:
    conn = ProxyH2Connection.for_clients()
    conn.initiate_connection()
    conn.receive_data(PREFACE + raw(4, 0, 0, b""))
    block = hpack.Encoder().encode(_REQUEST)
    events = conn.receive_data(
        headers_frame(1, block, end_stream=True, priority=False, padded=False)
    )
    request, ended = events
    assert isinstance(request, h2.events.RequestReceived)
    assert [tuple(f) for f in request.headers] == _REQUEST
    assert request.stream_ended is ended
    assert isinstance(ended, h2.events.StreamEnded)
    assert conn.streams[1].state_machine.state == h2.stream.StreamState.HALF_CLOSED_REMOTE


def _block(fields: list[tuple[bytes, bytes]]) -> bytes:
    return hpack.Encoder().encode(fields)


@pytest.mark.parametrize(
    "reads",
    [
        # pseudo-headers that read as an informational response: h2 refuses the stream's input
        [headers_frame(1, _block([(b":status", b"103"), *_REQUEST]), **PLAIN)],
        [headers_frame(1, _block([(b":status", b"200"), *_REQUEST]), **PLAIN)],
        # trailers on an open stream, then a stale and an even stream id
        [
            headers_frame(3, _block(_REQUEST), **PLAIN),
            headers_frame(3, _block([(b"x", b"y")]), end_stream=True, priority=False, padded=False),
            headers_frame(1, _block(_REQUEST), **PLAIN),
        ],
        [headers_frame(2, _block(_REQUEST), **PLAIN)],
        # priority fields and padding on a new stream
        [headers_frame(1, _block(_REQUEST), end_stream=True, priority=True, padded=True)],
        # a content-length that is not a number
        [headers_frame(1, _block([*_REQUEST, (b"content-length", b"x")]), **PLAIN)],
    ],
    ids=["informational", "status-200", "trailers-stale-id", "even-id", "priority", "bad-length"],
)
def test_edge_cases_match_the_library(reads: list[bytes]) -> None:
    short = ProxyH2Connection.for_clients()
    library = ProxyH2Connection.for_clients()
    library._plain_inbound_headers = False
    assert run(short, reads) == run(library, reads)


# -- state machine steps ---------------------------------------------------------------------------

_stream_module: Any = importlib.import_module(h2.__name__ + ".stream")
_STEPS = [
    h2base._STREAM_SEND_HEADERS,
    h2base._STREAM_SEND_DATA,
    h2base._STREAM_SEND_END_STREAM,
    h2base._STREAM_RECV_HEADERS,
    h2base._STREAM_RECV_END_STREAM,
]


def _step_outcome(step: Callable[[Any], list[Any]], state: Any, client: bool | None) -> Any:
    machine = _stream_module.H2StreamStateMachine(1)
    machine.state = state
    machine.client = client
    try:
        events = step(machine)
    except h2.exceptions.ProtocolError as exc:
        return ("ProtocolError", str(exc), machine.state)
    flags = (machine.headers_sent, machine.trailers_sent, machine.headers_received)
    kinds = None if events is None else [type(event).__name__ for event in events]
    return (kinds, machine.state, flags)


@pytest.mark.parametrize("step", _STEPS, ids=lambda step: step[0].name)
def test_stream_steps_are_the_library_transitions(step: Any) -> None:
    for state in _stream_module.StreamState:
        for client in (None, True, False):
            ours = _step_outcome(lambda machine: h2base._stream_step(machine, step), state, client)
            theirs = _step_outcome(lambda machine: machine.process_input(step[0]), state, client)
            assert ours == theirs, (state, client)


@pytest.mark.parametrize("name", ["SEND_HEADERS", "SEND_DATA", "RECV_HEADERS"])
def test_the_open_connection_skips_only_transitions_that_change_nothing(name: str) -> None:
    machine = h2.connection.H2ConnectionStateMachine()
    machine.state = h2base._SERVER_OPEN
    assert machine.process_input(getattr(h2.connection.ConnectionInputs, name)) == []
    assert machine.state is h2base._SERVER_OPEN


_library_begin = h2.connection.H2Connection._begin_new_stream
_LIBRARY_KEEPS_INBOUND_FRAME_SIZE = "max_inbound_frame_size" in vars(
    _library_begin(ProxyH2Connection.for_clients(), 1, h2.connection.AllowedStreamIDs.ODD)
)


def _stream_opening(begin: Callable[[Any, int, Any], Any], ids: list[int]) -> list[Any]:
    conn = ProxyH2Connection.for_clients()
    conn.initiate_connection()
    conn.receive_data(PREFACE + raw(4, 0, 0, b""))
    seen: list[Any] = []
    for stream_id in ids:
        try:
            stream = begin(conn, stream_id, h2.connection.AllowedStreamIDs.ODD)
        except h2.exceptions.ProtocolError as exc:
            seen.append((type(exc).__name__, str(exc)))
            continue
        fields = {k: v for k, v in vars(stream).items() if k not in ("state_machine", "config")}
        if not _LIBRARY_KEEPS_INBOUND_FRAME_SIZE:  # h2 does not; the activator sets it for jh2
            fields.pop("max_inbound_frame_size", None)
        windows = vars(fields.pop("_inbound_window_manager"))
        seen.append((fields, windows, stream.state_machine.state, stream.config is conn.config))
        seen.append((conn.highest_inbound_stream_id, sorted(conn.streams)))
    return seen


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 12), max_size=8))
def test_streams_begin_as_the_library_begins_them(ids: list[int]) -> None:
    ours = _stream_opening(ProxyH2Connection._begin_new_stream, ids)
    assert ours == _stream_opening(_library_begin, ids)
