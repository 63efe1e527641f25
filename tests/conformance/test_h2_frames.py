"""RFC 9113 §6: frame definitions - DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE,
PING, GOAWAY, WINDOW_UPDATE (with flow control, §6.9.1 and §6.9.2) and CONTINUATION (h2spec
http2/6.1 to http2/6.10; the section numbers are the same in RFC 7540 and RFC 9113).
"""

from __future__ import annotations

import struct

from cases import Case, CaseList
from frames import (
    ACK,
    END_HEADERS,
    END_STREAM,
    MAX_WINDOW,
    PADDED,
    ErrorCode,
    FrameType,
    H2Client,
    Setting,
    data,
    goaway,
    ping,
    raw_frame,
    request,
    settings_frame,
    settings_payload,
    window_update,
)
from hyperframe.frame import DataFrame, PingFrame, SettingsFrame
from under_test import ActivatorUnderTest

CASES = CaseList()
P = ErrorCode.PROTOCOL_ERROR
FRAME_SIZE = ErrorCode.FRAME_SIZE_ERROR
FLOW = ErrorCode.FLOW_CONTROL_ERROR
PENDING = "/delay/30000"


def _open_upload(h2: H2Client, stream_id: int = 1) -> None:
    """Open a stream whose request body is still to come (the pod echoes it)."""
    h2.send(h2.headers(stream_id, request("/echo", "POST"), end_stream=False))


# -- §6.1 DATA -----------------------------------------------------------------------------------


@CASES("rfc9113-6.1", h2spec="6.1/1")
async def data_on_stream_0(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """DATA on stream 0: connection error PROTOCOL_ERROR."""
    h2.send(raw_frame(FrameType.DATA, 0, 0, b"test"))
    await h2.expect_connection_error(P)


@CASES("rfc9113-6.1", h2spec="6.1/2")
async def data_on_half_closed_stream(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """DATA on a stream that is neither "open" nor "half-closed (local)" (the request ended):
    stream error STREAM_CLOSED."""
    h2.send(h2.headers(1, request(PENDING)), data(1, b"test", end_stream=True))
    await h2.expect_stream_error(1, ErrorCode.STREAM_CLOSED)


@CASES("rfc9113-6.1", h2spec="6.1/3")
async def data_with_invalid_pad_length(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """DATA whose Pad Length (6) is not less than the frame payload (5 octets): connection error
    PROTOCOL_ERROR."""
    _open_upload(h2)
    h2.send(raw_frame(FrameType.DATA, PADDED | END_STREAM, 1, b"\x06test"))
    await h2.expect_connection_error(P)


@CASES("rfc9113-6.1", h2spec="-")
async def padded_data_accepted(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """Padded DATA with a valid Pad Length: the padding is stripped, the content echoed whole."""
    _open_upload(h2)
    h2.send(raw_frame(FrameType.DATA, PADDED | END_STREAM, 1, b"\x04test" + b"\0" * 4))
    response = await h2.expect_response(1)
    assert bytes(response.body) == b"test"


# -- §6.2 HEADERS --------------------------------------------------------------------------------


@CASES("rfc9113-6.2", h2spec="6.2/1")
async def headers_then_priority_before_end_headers(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """HEADERS without END_HEADERS followed by PRIORITY on another stream: connection error
    PROTOCOL_ERROR (only CONTINUATION may follow)."""
    h2.send(
        h2.headers(1, request(), end_headers=False),
        raw_frame(FrameType.PRIORITY, 0, 3, struct.pack(">IB", 0, 15)),
    )
    await h2.expect_connection_error(P)


@CASES("rfc9113-6.2", h2spec="6.2/2")
async def headers_to_other_stream_mid_block(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """HEADERS (no END_HEADERS), CONTINUATION (no END_HEADERS), then HEADERS on stream 3:
    connection error PROTOCOL_ERROR."""
    block = h2.encode(request())
    h2.send(
        raw_frame(FrameType.HEADERS, END_STREAM, 1, block[:3]),
        h2.continuation(1, block[3:], end_headers=False),
        h2.headers(3, request()),
    )
    await h2.expect_connection_error(P)


@CASES("rfc9113-6.2", h2spec="6.2/3")
async def headers_on_stream_0(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """HEADERS on stream 0: connection error PROTOCOL_ERROR."""
    h2.send(raw_frame(FrameType.HEADERS, END_HEADERS | END_STREAM, 0, h2.encode(request())))
    await h2.expect_connection_error(P)


@CASES("rfc9113-6.2", h2spec="6.2/4")
async def headers_with_invalid_pad_length(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """HEADERS whose Pad Length exceeds the rest of the payload: connection error
    PROTOCOL_ERROR."""
    block = h2.encode(request())
    pad_length = len(block) + 1
    payload = bytes([pad_length]) + block
    h2.send(raw_frame(FrameType.HEADERS, PADDED | END_HEADERS | END_STREAM, 1, payload))
    await h2.expect_connection_error(P)


@CASES("rfc9113-6.2", h2spec="-")
async def padded_headers_accepted(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """Padded HEADERS with a valid Pad Length: the request is answered."""
    payload = b"\x08" + h2.encode(request()) + b"\0" * 8
    h2.send(raw_frame(FrameType.HEADERS, PADDED | END_HEADERS | END_STREAM, 1, payload))
    response = await h2.expect_response(1)
    assert response.status == 200


# -- §6.3 PRIORITY -------------------------------------------------------------------------------


@CASES("rfc9113-6.3", h2spec="6.3/1")
async def priority_on_stream_0(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """PRIORITY on stream 0: connection error PROTOCOL_ERROR."""
    h2.send(raw_frame(FrameType.PRIORITY, 0, 0, struct.pack(">IB", 1, 15)))
    await h2.expect_connection_error(P)


@CASES("rfc9113-6.3", h2spec="6.3/2")
async def priority_of_wrong_length(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """PRIORITY of 4 octets instead of 5: stream error FRAME_SIZE_ERROR (connection error
    allowed)."""
    h2.send(raw_frame(FrameType.PRIORITY, 0, 1, struct.pack(">I", 0)))
    await h2.expect_stream_error(1, FRAME_SIZE)


@CASES("rfc9113-6.3", h2spec="-")
async def priority_on_idle_stream_accepted(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """PRIORITY may be sent on an idle stream (RFC 9113 §5.1); that stream can still be opened
    and answered afterwards."""
    h2.send(raw_frame(FrameType.PRIORITY, 0, 3, struct.pack(">IB", 0, 200)))
    await h2.expect_alive()
    h2.send(h2.headers(3, request()))
    response = await h2.expect_response(3)
    assert response.status == 200


# -- §6.4 RST_STREAM -----------------------------------------------------------------------------


@CASES("rfc9113-6.4", h2spec="6.4/1")
async def rst_stream_on_stream_0(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """RST_STREAM on stream 0: connection error PROTOCOL_ERROR."""
    h2.send(raw_frame(FrameType.RST_STREAM, 0, 0, struct.pack(">I", ErrorCode.CANCEL)))
    await h2.expect_connection_error(P)


@CASES("rfc9113-6.4", h2spec="6.4/2")
async def rst_stream_on_idle_stream(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """RST_STREAM on idle stream 3, after stream 1 completed: connection error PROTOCOL_ERROR.

    (h2spec sends it as the first frame, like http2/5.1/2; after a first stream the server's
    connection is no longer idle itself, which is the case this one covers.)"""
    h2.send(h2.headers(1, request()))
    await h2.expect_response(1)
    h2.send(raw_frame(FrameType.RST_STREAM, 0, 3, struct.pack(">I", ErrorCode.CANCEL)))
    await h2.expect_connection_error(P)


@CASES("rfc9113-6.4", h2spec="6.4/3")
async def rst_stream_of_wrong_length(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """RST_STREAM of 3 octets: connection error FRAME_SIZE_ERROR."""
    _open_upload(h2)
    h2.send(raw_frame(FrameType.RST_STREAM, 0, 1, b"\x00\x00\x08"))
    await h2.expect_connection_error(FRAME_SIZE)


# -- §6.5 SETTINGS -------------------------------------------------------------------------------


@CASES("rfc9113-6.5", h2spec="6.5/1")
async def settings_ack_with_payload(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """SETTINGS with ACK and a payload: connection error FRAME_SIZE_ERROR."""
    h2.send(raw_frame(FrameType.SETTINGS, ACK, 0, b"\x00"))
    await h2.expect_connection_error(FRAME_SIZE)


@CASES("rfc9113-6.5", h2spec="6.5/2")
async def settings_on_stream_1(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """SETTINGS on stream 1: connection error PROTOCOL_ERROR."""
    h2.send(raw_frame(FrameType.SETTINGS, 0, 1, settings_payload([(Setting.ENABLE_PUSH, 0)])))
    await h2.expect_connection_error(P)


@CASES("rfc9113-6.5", h2spec="6.5/3")
async def settings_length_not_multiple_of_6(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """SETTINGS of 3 octets: connection error FRAME_SIZE_ERROR."""
    h2.send(raw_frame(FrameType.SETTINGS, 0, 0, b"\x00\x02\x00"))
    await h2.expect_connection_error(FRAME_SIZE)


@CASES("rfc9113-6.5.2", h2spec="6.5.2/1")
async def enable_push_not_0_or_1(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """SETTINGS_ENABLE_PUSH = 2: connection error PROTOCOL_ERROR."""
    h2.send(settings_frame([(Setting.ENABLE_PUSH, 2)]))
    await h2.expect_connection_error(P)


@CASES("rfc9113-6.5.2", h2spec="6.5.2/2")
async def initial_window_size_over_max(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """SETTINGS_INITIAL_WINDOW_SIZE = 2^31: connection error FLOW_CONTROL_ERROR."""
    h2.send(settings_frame([(Setting.INITIAL_WINDOW_SIZE, MAX_WINDOW + 1)]))
    await h2.expect_connection_error(FLOW)


@CASES("rfc9113-6.5.2", h2spec="6.5.2/3")
async def max_frame_size_below_initial(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """SETTINGS_MAX_FRAME_SIZE = 16383: connection error PROTOCOL_ERROR."""
    h2.send(settings_frame([(Setting.MAX_FRAME_SIZE, 16383)]))
    await h2.expect_connection_error(P)


@CASES("rfc9113-6.5.2", h2spec="6.5.2/4")
async def max_frame_size_over_max(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """SETTINGS_MAX_FRAME_SIZE = 2^24: connection error PROTOCOL_ERROR."""
    h2.send(settings_frame([(Setting.MAX_FRAME_SIZE, 1 << 24)]))
    await h2.expect_connection_error(P)


@CASES("rfc9113-6.5.2", h2spec="6.5.2/5")
async def unknown_setting_ignored(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """A SETTINGS parameter with an unknown identifier (0xff) is ignored and acknowledged."""
    h2.send(settings_frame([(0xFF, 1)]))
    frame = await h2.expect_frame(SettingsFrame)
    assert "ACK" in frame.flags
    await h2.expect_alive()


@CASES("rfc9113-6.5.3", h2spec="6.5.3/1")
async def settings_applied_in_order(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """SETTINGS_INITIAL_WINDOW_SIZE = 100 then = 1 in one frame: the last value wins, so the
    response's first DATA frame carries 1 octet."""
    h2.auto_window = False
    h2.send(settings_frame([(Setting.INITIAL_WINDOW_SIZE, 100), (Setting.INITIAL_WINDOW_SIZE, 1)]))
    await h2.expect_frame(SettingsFrame)
    h2.send(h2.headers(1, request("/bytes/100")))
    frame = await h2.expect_frame(DataFrame, 1)
    assert len(frame.data) == 1, h2.seen


@CASES("rfc9113-6.5.3", h2spec="6.5.3/2")
async def settings_acknowledged(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """A SETTINGS frame without ACK is acknowledged by an empty SETTINGS with ACK."""
    h2.send(settings_frame([(Setting.MAX_HEADER_LIST_SIZE, 1 << 16)]))
    frame = await h2.expect_frame(SettingsFrame)
    assert "ACK" in frame.flags
    assert frame.settings == {}


# -- §6.6 PUSH_PROMISE ---------------------------------------------------------------------------


@CASES("rfc9113-6.6", h2spec="8.2/1")
async def push_promise_from_client(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """A client cannot push: PUSH_PROMISE received by a server is a connection error
    PROTOCOL_ERROR (RFC 9113 §6.6, §8.4)."""
    _open_upload(h2)
    payload = struct.pack(">I", 2) + h2.encode(request())
    h2.send(raw_frame(FrameType.PUSH_PROMISE, END_HEADERS, 1, payload))
    await h2.expect_connection_error(P)


# -- §6.7 PING -----------------------------------------------------------------------------------


@CASES("rfc9113-6.7", h2spec="6.7/1")
async def ping_answered_with_same_payload(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """A PING gets a PING with ACK and the same 8 octets."""
    h2.send(ping(b"h2spec!!"))
    frame = await h2.expect_frame(PingFrame)
    assert "ACK" in frame.flags
    assert bytes(frame.opaque_data) == b"h2spec!!"


@CASES("rfc9113-6.7", h2spec="6.7/2")
async def ping_ack_not_answered(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """A PING with ACK must not be answered: after an unsolicited ACK and then a PING, the only
    PING the server sends is the ACK of the second."""
    h2.send(ping(b"unsolic.", ack=True), ping(b"answerme"))
    frame = await h2.expect_frame(PingFrame)
    assert bytes(frame.opaque_data) == b"answerme", h2.seen
    assert h2.pings_acked == [b"answerme"]


@CASES("rfc9113-6.7", h2spec="6.7/3")
async def ping_on_stream_1(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """PING on stream 1: connection error PROTOCOL_ERROR."""
    h2.send(raw_frame(FrameType.PING, 0, 1, b"\x00" * 8))
    await h2.expect_connection_error(P)


@CASES("rfc9113-6.7", h2spec="6.7/4")
async def ping_of_wrong_length(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """PING of 6 octets: connection error FRAME_SIZE_ERROR."""
    h2.send(raw_frame(FrameType.PING, 0, 0, b"\x00" * 6))
    await h2.expect_connection_error(FRAME_SIZE)


# -- §6.8 GOAWAY ---------------------------------------------------------------------------------


@CASES("rfc9113-6.8", h2spec="6.8/1")
async def goaway_on_stream_1(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """GOAWAY on stream 1: connection error PROTOCOL_ERROR."""
    h2.send(goaway(stream_id=1))
    await h2.expect_connection_error(P)


@CASES("rfc9113-6.8", h2spec="-")
async def client_goaway_lets_open_stream_finish(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """A client's GOAWAY(NO_ERROR) does not cut the stream already open: its response still
    arrives complete (RFC 9113 §6.8: streams up to the last stream id are processed)."""
    _open_upload(h2)
    h2.send(goaway(last_stream_id=0, code=ErrorCode.NO_ERROR))
    h2.send(data(1, b"finish me", end_stream=True))
    response = await h2.expect_response(1)
    assert bytes(response.body) == b"finish me"


# -- §6.9 WINDOW_UPDATE --------------------------------------------------------------------------


@CASES("rfc9113-6.9", h2spec="6.9/1")
async def window_update_zero_on_connection(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """WINDOW_UPDATE of 0 on the connection: connection error PROTOCOL_ERROR."""
    h2.send(window_update(0, 0))
    await h2.expect_connection_error(P)


@CASES("rfc9113-6.9", h2spec="6.9/2")
async def window_update_zero_on_stream(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """WINDOW_UPDATE of 0 on an open stream: stream error PROTOCOL_ERROR."""
    _open_upload(h2)
    h2.send(window_update(1, 0))
    await h2.expect_stream_error(1, P)


@CASES("rfc9113-6.9", h2spec="6.9/3")
async def window_update_of_wrong_length(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """WINDOW_UPDATE of 3 octets: connection error FRAME_SIZE_ERROR."""
    h2.send(raw_frame(FrameType.WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"))
    await h2.expect_connection_error(FRAME_SIZE)


@CASES("rfc9113-6.9.1", h2spec="6.9.1/1")
async def initial_window_of_1_octet(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """SETTINGS_INITIAL_WINDOW_SIZE = 1, then a request: the first DATA frame carries exactly
    1 octet."""
    h2.auto_window = False
    h2.send(settings_frame([(Setting.INITIAL_WINDOW_SIZE, 1)]))
    await h2.expect_frame(SettingsFrame)
    h2.send(h2.headers(1, request("/bytes/100")))
    frame = await h2.expect_frame(DataFrame, 1)
    assert len(frame.data) == 1, h2.seen


@CASES("rfc9113-6.9.1", h2spec="6.9.1/2")
async def connection_window_over_max(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """WINDOW_UPDATEs taking the connection window above 2^31-1: connection error
    FLOW_CONTROL_ERROR."""
    h2.send(window_update(0, MAX_WINDOW), window_update(0, MAX_WINDOW))
    await h2.expect_connection_error(FLOW)


@CASES("rfc9113-6.9.1", h2spec="6.9.1/3")
async def stream_window_over_max(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """WINDOW_UPDATEs taking a stream's window above 2^31-1: stream error FLOW_CONTROL_ERROR."""
    _open_upload(h2)
    h2.send(window_update(1, MAX_WINDOW), window_update(1, MAX_WINDOW))
    await h2.expect_stream_error(1, FLOW)


@CASES("rfc9113-6.9.2", h2spec="6.9.2/1")
async def initial_window_change_applies_to_open_streams(
    h2: H2Client, _act: ActivatorUnderTest
) -> None:
    """With SETTINGS_INITIAL_WINDOW_SIZE = 0 a response cannot start its body; raising it to 1
    afterwards opens the window of the stream already open: one DATA frame of 1 octet."""
    h2.auto_window = False
    h2.send(settings_frame([(Setting.INITIAL_WINDOW_SIZE, 0)]))
    await h2.expect_frame(SettingsFrame)
    h2.send(h2.headers(1, request("/bytes/100")))
    await h2.expect_headers(1)
    assert not h2.stream(1).data_frames
    h2.send(settings_frame([(Setting.INITIAL_WINDOW_SIZE, 1)]))
    frame = await h2.expect_frame(DataFrame, 1)
    assert len(frame.data) == 1, h2.seen


@CASES("rfc9113-6.9.2", h2spec="6.9.2/2")
async def negative_window_tracked(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """A window made negative by a smaller SETTINGS_INITIAL_WINDOW_SIZE is tracked: after 3
    octets sent under a window of 3, lowering the initial size to 2 leaves the stream at -1, so
    a WINDOW_UPDATE of 2 allows exactly 1 more octet."""
    h2.auto_window = False
    h2.send(settings_frame([(Setting.INITIAL_WINDOW_SIZE, 3)]))
    await h2.expect_frame(SettingsFrame)
    h2.send(h2.headers(1, request("/bytes/100")))
    first = await h2.expect_frame(DataFrame, 1)
    assert len(first.data) == 3, h2.seen
    h2.send(settings_frame([(Setting.INITIAL_WINDOW_SIZE, 2)]))
    await h2.expect_frame(SettingsFrame)
    h2.send(window_update(1, 2))
    second = await h2.expect_frame(DataFrame, 1)
    assert len(second.data) == 1, h2.seen


@CASES("rfc9113-6.9.2", h2spec="6.9.2/3")
async def initial_window_size_far_over_max(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """SETTINGS_INITIAL_WINDOW_SIZE = 2^32-1: connection error FLOW_CONTROL_ERROR."""
    h2.send(settings_frame([(Setting.INITIAL_WINDOW_SIZE, 2**32 - 1)]))
    await h2.expect_connection_error(FLOW)


# -- §6.10 CONTINUATION --------------------------------------------------------------------------


def _split(block: bytes, parts: int) -> list[bytes]:
    step = max(1, -(-len(block) // parts))
    return [block[i : i + step] for i in range(0, len(block), step)]


@CASES("rfc9113-6.10", h2spec="6.10/1")
async def header_block_over_several_continuations(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """HEADERS followed by several CONTINUATION frames, the last with END_HEADERS: one request,
    answered."""
    pieces = _split(h2.encode(request(extra=[("x-long", "v" * 300)])), 4)
    frames = [raw_frame(FrameType.HEADERS, END_STREAM, 1, pieces[0])]
    frames += [h2.continuation(1, p, end_headers=False) for p in pieces[1:-1]]
    frames.append(h2.continuation(1, pieces[-1]))
    h2.send(*frames)
    response = await h2.expect_response(1)
    assert response.status == 200


@CASES("rfc9113-6.10", h2spec="6.10/2")
async def continuation_followed_by_other_frame(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """HEADERS, CONTINUATION (no END_HEADERS), then DATA: connection error PROTOCOL_ERROR."""
    pieces = _split(h2.encode(request("/echo", "POST")), 2)
    h2.send(
        raw_frame(FrameType.HEADERS, 0, 1, pieces[0]),
        h2.continuation(1, pieces[1], end_headers=False),
        data(1, b"test", end_stream=True),
    )
    await h2.expect_connection_error(P)


@CASES("rfc9113-6.10", h2spec="6.10/3")
async def continuation_on_stream_0(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """CONTINUATION on stream 0 while stream 1's block is open: connection error
    PROTOCOL_ERROR."""
    pieces = _split(h2.encode(request()), 2)
    h2.send(
        raw_frame(FrameType.HEADERS, END_STREAM, 1, pieces[0]),
        raw_frame(FrameType.CONTINUATION, END_HEADERS, 0, pieces[1]),
    )
    await h2.expect_connection_error(P)


@CASES("rfc9113-6.10", h2spec="6.10/4")
async def continuation_after_end_headers(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """CONTINUATION after a HEADERS that had END_HEADERS: connection error PROTOCOL_ERROR."""
    h2.send(h2.headers(1, request(PENDING)), h2.continuation(1, h2.encode([("x-more", "1")])))
    await h2.expect_connection_error(P)


@CASES("rfc9113-6.10", h2spec="6.10/5")
async def continuation_after_continuation_end_headers(
    h2: H2Client, _act: ActivatorUnderTest
) -> None:
    """CONTINUATION after a CONTINUATION that had END_HEADERS: connection error
    PROTOCOL_ERROR."""
    pieces = _split(h2.encode(request(PENDING)), 2)
    h2.send(
        raw_frame(FrameType.HEADERS, END_STREAM, 1, pieces[0]),
        h2.continuation(1, pieces[1]),
        h2.continuation(1, h2.encode([("x-more", "1")])),
    )
    await h2.expect_connection_error(P)


@CASES("rfc9113-6.10", h2spec="6.10/6")
async def continuation_after_data(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """CONTINUATION after a DATA frame: connection error PROTOCOL_ERROR."""
    _open_upload(h2)
    h2.send(data(1, b"test"), h2.continuation(1, h2.encode([("x-more", "1")])))
    await h2.expect_connection_error(P)


@CASES.parametrize()
async def test_frames(case: Case, h2: H2Client, activator: ActivatorUnderTest) -> None:
    await case.run(h2, activator)
