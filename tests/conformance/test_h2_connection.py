"""RFC 9113 §3.4, §4, §5: the connection preface, frame format and size, header compression
boundaries, stream states, stream identifiers, concurrency, priority self-dependency, connection
error handling and extensions (h2spec http2/3.5 to http2/5.5).

h2spec numbers (RFC 7540) map to RFC 9113 unchanged here, except 3.5 (the preface) which is
RFC 9113 §3.4.
"""

from __future__ import annotations

import asyncio
import struct

from cases import Case, CaseList
from frames import (
    END_HEADERS,
    END_STREAM,
    MAX_FRAME_SIZE,
    PREFACE,
    PRIORITY,
    TIMEOUT,
    ConformanceFailure,
    ErrorCode,
    FrameType,
    H2Client,
    Setting,
    data,
    parse_frames,
    priority,
    raw_frame,
    request,
    rst_stream,
    settings_frame,
    window_update,
)
from hyperframe.frame import GoAwayFrame, SettingsFrame
from under_test import ActivatorUnderTest

CASES = CaseList()
P = ErrorCode.PROTOCOL_ERROR

# A response the pod holds back for longer than any test runs: the stream stays half-closed
# (remote) on the activator's side once the request has ended.
PENDING = "/delay/30000"


async def _read_until_closed(reader: asyncio.StreamReader) -> bytes:
    received = bytearray()
    try:
        async with asyncio.timeout(TIMEOUT):
            while chunk := await reader.read(65536):
                received += chunk
                if len(received) > 1 << 20:
                    raise ConformanceFailure("the server keeps sending after an invalid preface")
    except TimeoutError:
        raise ConformanceFailure(
            f"the connection stayed open after an invalid preface; received {bytes(received)!r}"
        ) from None
    except ConnectionResetError:
        pass
    return bytes(received)


# -- §3.4 Connection preface ---------------------------------------------------------------------


async def test_rfc9113_3_4_server_preface_is_a_settings_frame(
    activator: ActivatorUnderTest,
) -> None:
    """h2spec 3.5/1: after the client preface the server's first frame is SETTINGS (RFC 9113
    §3.4), advertising the activator's 250 concurrent streams."""
    client = await activator.raw_client()
    client.send(PREFACE, settings_frame())
    frame = await client.expect_frame(SettingsFrame)
    assert "ACK" not in frame.flags
    assert client.seen[0].startswith("SETTINGS[0]"), client.seen
    assert client.server_settings.get(Setting.MAX_CONCURRENT_STREAMS) == 250


async def test_rfc9113_3_4_invalid_preface_closes_the_connection(
    activator: ActivatorUnderTest,
) -> None:
    """h2spec 3.5/2: an invalid preface is a connection error PROTOCOL_ERROR (RFC 9113 §3.4).

    This port also serves HTTP/1.1, so bytes that are not the HTTP/2 preface are read as an
    HTTP/1.1 request: an HTTP/1.1 400 and a close is as good as a GOAWAY. Never an HTTP/2
    exchange, never an open connection.
    """
    for bad in (b"INVALID CONNECTION PREFACE\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"):
        reader, writer = await activator.tcp()
        writer.write(bad)
        answer = await _read_until_closed(reader)
        if answer.startswith(b"HTTP/1.1 "):
            assert answer.split(b" ", 2)[1] == b"400", answer
        elif answer:
            goaways = [f for f in parse_frames(answer) if isinstance(f, GoAwayFrame)]
            assert [f.error_code for f in goaways] == [P], answer


# -- §4.1 Frame format ---------------------------------------------------------------------------


@CASES("rfc9113-4.1", h2spec="4.1/1")
async def unknown_frame_type_ignored(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """A frame of an unknown type is ignored; the connection keeps working."""
    h2.send(raw_frame(0x16, 0, 0, b"\x00" * 8))
    await h2.expect_alive()


@CASES("rfc9113-4.1", h2spec="4.1/2")
async def undefined_flags_ignored(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """A PING with undefined flags set (0x16, ACK clear) is answered like any PING."""
    h2.send(raw_frame(FrameType.PING, 0x16, 0, b"flagged!"))
    await h2.expect_alive()
    assert b"flagged!" in h2.pings_acked


@CASES("rfc9113-4.1", h2spec="4.1/3")
async def reserved_bit_ignored(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """HEADERS whose stream identifier has the reserved bit set: the bit is ignored and the
    request is answered."""
    block = h2.encode(request())
    h2.send(raw_frame(FrameType.HEADERS, END_STREAM | END_HEADERS, 1, block, reserved_bit=True))
    response = await h2.expect_response(1)
    assert response.status == 200


# -- §4.2 Frame size -----------------------------------------------------------------------------


@CASES("rfc9113-4.2", h2spec="4.2/1")
async def data_of_max_frame_size_accepted(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """A DATA frame of exactly 2^14 octets (the initial SETTINGS_MAX_FRAME_SIZE) is accepted:
    the pod echoes it whole."""
    h2.send(h2.headers(1, request("/echo", "POST"), end_stream=False))
    h2.send(data(1, b"x" * MAX_FRAME_SIZE, end_stream=True))
    response = await h2.expect_response(1)
    assert response.status == 200
    assert bytes(response.body) == b"x" * MAX_FRAME_SIZE


@CASES("rfc9113-4.2", h2spec="4.2/2")
async def data_over_max_frame_size(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """A DATA frame of 2^14+1 octets: FRAME_SIZE_ERROR (stream or connection error)."""
    h2.send(h2.headers(1, request("/echo", "POST"), end_stream=False))
    h2.send(raw_frame(FrameType.DATA, END_STREAM, 1, b"x" * (MAX_FRAME_SIZE + 1)))
    await h2.expect_stream_error(1, ErrorCode.FRAME_SIZE_ERROR)


@CASES("rfc9113-4.2", h2spec="4.2/3")
async def headers_over_max_frame_size(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """A HEADERS frame over SETTINGS_MAX_FRAME_SIZE can alter connection state (HPACK), so it is a
    connection error FRAME_SIZE_ERROR."""
    block = h2.encode(request(extra=[("x-padding", "y" * MAX_FRAME_SIZE)]), huffman=False)
    assert len(block) > MAX_FRAME_SIZE
    h2.send(raw_frame(FrameType.HEADERS, END_STREAM | END_HEADERS, 1, block))
    await h2.expect_connection_error(ErrorCode.FRAME_SIZE_ERROR)


# -- §4.3 Field section compression and decompression --------------------------------------------


@CASES("rfc9113-4.3", h2spec="4.3/1")
async def invalid_header_block(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """A header block that cannot be decoded (a literal whose name runs past the block) is a
    connection error COMPRESSION_ERROR."""
    h2.send(raw_frame(FrameType.HEADERS, END_STREAM | END_HEADERS, 1, b"\x82\x86\x84\x00\x05ab"))
    await h2.expect_connection_error(ErrorCode.COMPRESSION_ERROR)


@CASES("rfc9113-4.3", h2spec="4.3/2")
async def priority_inside_header_block(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """A header block must be contiguous: a PRIORITY between HEADERS (no END_HEADERS) and its
    CONTINUATION is a connection error PROTOCOL_ERROR."""
    h2.send(h2.headers(1, request(), end_headers=False), priority(1, 0))
    await h2.expect_connection_error(P)


@CASES("rfc9113-4.3", h2spec="4.3/3")
async def headers_for_other_stream_inside_block(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """HEADERS for stream 3 while stream 1's header block is unfinished: connection error
    PROTOCOL_ERROR."""
    h2.send(h2.headers(1, request(), end_headers=False), h2.headers(3, request()))
    await h2.expect_connection_error(P)


# -- §5.1 Stream states --------------------------------------------------------------------------


@CASES("rfc9113-5.1", h2spec="5.1/1")
async def idle_data(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """DATA on an idle stream: connection error PROTOCOL_ERROR."""
    h2.send(data(1, b"test", end_stream=True))
    await h2.expect_connection_error(P)


@CASES("rfc9113-5.1", h2spec="5.1/2")
async def idle_rst_stream(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """RST_STREAM on an idle stream: connection error PROTOCOL_ERROR."""
    h2.send(rst_stream(1))
    await h2.expect_connection_error(P)


@CASES("rfc9113-5.1", h2spec="5.1/3")
async def idle_window_update(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """WINDOW_UPDATE on an idle stream: connection error PROTOCOL_ERROR."""
    h2.send(window_update(1, 100))
    await h2.expect_connection_error(P)


@CASES("rfc9113-5.1", h2spec="5.1/4")
async def idle_continuation(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """CONTINUATION on an idle stream (no header block open): connection error PROTOCOL_ERROR."""
    h2.send(h2.continuation(1, h2.encode(request())))
    await h2.expect_connection_error(P)


@CASES("rfc9113-5.1", h2spec="5.1/5")
async def half_closed_remote_data(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """DATA after the request's END_STREAM (stream half-closed (remote)): stream error
    STREAM_CLOSED."""
    h2.send(h2.headers(1, request(PENDING)), data(1, b"test"))
    await h2.expect_stream_error(1, ErrorCode.STREAM_CLOSED)


@CASES("rfc9113-5.1", h2spec="5.1/6")
async def half_closed_remote_headers(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """HEADERS after the request's END_STREAM: stream error STREAM_CLOSED."""
    h2.send(h2.headers(1, request(PENDING)), h2.headers(1, [("x-late", "1")]))
    await h2.expect_stream_error(1, ErrorCode.STREAM_CLOSED)


@CASES("rfc9113-5.1", h2spec="5.1/7")
async def half_closed_remote_continuation(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """CONTINUATION after a complete header block with END_STREAM: stream error STREAM_CLOSED
    or connection error PROTOCOL_ERROR (no header block is open, RFC 9113 §6.10)."""
    h2.send(h2.headers(1, request(PENDING)), h2.continuation(1, h2.encode([("x-late", "1")])))
    await h2.expect_stream_error(1, ErrorCode.STREAM_CLOSED, P)


async def _reset_by_client(h2: H2Client) -> None:
    # An open request (POST, body pending) that the client then resets.
    h2.send(h2.headers(1, request("/echo", "POST"), end_stream=False), rst_stream(1))
    await h2.expect_alive()


@CASES("rfc9113-5.1", h2spec="5.1/8")
async def closed_data_after_rst(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """DATA on a stream the client reset: stream error STREAM_CLOSED."""
    await _reset_by_client(h2)
    h2.send(data(1, b"test"))
    await h2.expect_stream_error(1, ErrorCode.STREAM_CLOSED)


@CASES("rfc9113-5.1", h2spec="5.1/9")
async def closed_headers_after_rst(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """HEADERS on a stream the client reset: stream error STREAM_CLOSED."""
    await _reset_by_client(h2)
    h2.send(h2.headers(1, request()))
    await h2.expect_stream_error(1, ErrorCode.STREAM_CLOSED)


@CASES("rfc9113-5.1", h2spec="5.1/10")
async def closed_continuation_after_rst(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """CONTINUATION on a stream the client reset: STREAM_CLOSED or PROTOCOL_ERROR."""
    await _reset_by_client(h2)
    h2.send(h2.continuation(1, h2.encode(request())))
    await h2.expect_stream_error(1, ErrorCode.STREAM_CLOSED, P)


@CASES("rfc9113-5.1")
async def closed_trailers_long_after_rst(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """Trailers (HEADERS) on a stream the client reset 300 streams ago, as if sent before the
    reset and arriving late: still a stream error, and the connection goes on. The server forgets
    normal closures after a while, but not resets."""
    await _reset_by_client(h2)
    for batch in range(3):
        first = 3 + 200 * batch
        stream_ids = range(first, first + 200, 2)
        h2.send(*(h2.headers(stream_id, request()) for stream_id in stream_ids))
        for stream_id in stream_ids:
            await h2.expect_response(stream_id)
    h2.send(h2.headers(1, [("x-late", "trailer")]))
    await h2.expect_stream_error(1, ErrorCode.STREAM_CLOSED, connection_error=False)
    await h2.expect_alive()


async def _complete_exchange(h2: H2Client) -> None:
    h2.send(h2.headers(1, request()))
    await h2.expect_response(1)


@CASES("rfc9113-5.1", h2spec="5.1/11")
async def closed_data(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """DATA on a stream closed by END_STREAM both ways: STREAM_CLOSED (a connection error is
    allowed: the server may have forgotten the stream, RFC 9113 §5.1 "closed")."""
    await _complete_exchange(h2)
    h2.send(data(1, b"test"))
    await h2.expect_stream_error(1, ErrorCode.STREAM_CLOSED)


@CASES("rfc9113-5.1", h2spec="5.1/12")
async def closed_headers(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """HEADERS on a closed stream: STREAM_CLOSED (stream or connection error)."""
    await _complete_exchange(h2)
    h2.send(h2.headers(1, request()))
    await h2.expect_stream_error(1, ErrorCode.STREAM_CLOSED)


@CASES("rfc9113-5.1", h2spec="5.1/13")
async def closed_continuation(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """CONTINUATION on a closed stream: STREAM_CLOSED or PROTOCOL_ERROR."""
    await _complete_exchange(h2)
    h2.send(h2.continuation(1, h2.encode(request())))
    await h2.expect_stream_error(1, ErrorCode.STREAM_CLOSED, P)


# -- §5.1.1 Stream identifiers -------------------------------------------------------------------


@CASES("rfc9113-5.1.1", h2spec="5.1.1/1")
async def even_stream_id(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """A client-initiated stream must be odd: HEADERS on stream 2 is a connection error
    PROTOCOL_ERROR."""
    h2.send(h2.headers(2, request()))
    await h2.expect_connection_error(P)


@CASES("rfc9113-5.1.1", h2spec="5.1.1/2")
async def decreasing_stream_id(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """Stream 5 then stream 3: a new stream id must exceed all earlier ones; connection error
    PROTOCOL_ERROR."""
    h2.send(h2.headers(5, request()))
    await h2.expect_response(5)
    h2.send(h2.headers(3, request()))
    await h2.expect_connection_error(P)


# -- §5.1.2 Stream concurrency -------------------------------------------------------------------


@CASES("rfc9113-5.1.2", h2spec="5.1.2/1")
async def over_max_concurrent_streams(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """Open SETTINGS_MAX_CONCURRENT_STREAMS streams, then one more: stream error PROTOCOL_ERROR
    or REFUSED_STREAM for the extra one (a connection error is allowed by h2spec)."""
    limit = h2.server_settings[Setting.MAX_CONCURRENT_STREAMS]
    frames = [
        h2.headers(1 + 2 * i, request("/echo", "POST"), end_stream=False) for i in range(limit)
    ]
    h2.send(*frames)
    extra = 1 + 2 * limit
    h2.send(h2.headers(extra, request("/echo", "POST"), end_stream=False))
    await h2.expect_stream_error(extra, P, ErrorCode.REFUSED_STREAM)


# -- §5.3.1 Stream dependencies ------------------------------------------------------------------


@CASES("rfc9113-5.3.1", h2spec="5.3.1/1")
async def headers_depends_on_itself(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """HEADERS with a priority block naming its own stream: stream error PROTOCOL_ERROR."""
    block = struct.pack(">IB", 1, 15) + h2.encode(request())
    h2.send(raw_frame(FrameType.HEADERS, END_STREAM | END_HEADERS | PRIORITY, 1, block))
    await h2.expect_stream_error(1, P)


@CASES("rfc9113-5.3.1", h2spec="5.3.1/2")
async def priority_depends_on_itself(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """PRIORITY making stream 1 depend on itself: stream error PROTOCOL_ERROR."""
    h2.send(priority(1, 1))
    await h2.expect_stream_error(1, P)


# -- §5.4.1 Connection error handling ------------------------------------------------------------


@CASES("rfc9113-5.4.1", h2spec="5.4.1/1")
async def connection_error_closes(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """A PING on stream 1 (a connection error) ends with the TCP connection closed."""
    h2.send(raw_frame(FrameType.PING, 0, 1, b"\x00" * 8))
    await h2.expect_connection_error(P)
    assert h2.closed


@CASES("rfc9113-5.4.1", h2spec="5.4.1/2")
async def connection_error_sends_goaway(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """After one complete exchange on stream 1, a connection error is announced by GOAWAY whose
    last-stream-id is 1 (the last stream processed, RFC 9113 §6.8)."""
    await _complete_exchange(h2)
    h2.send(raw_frame(FrameType.PING, 0, 1, b"\x00" * 8))
    outcome = await h2.expect_connection_error(P)
    assert outcome.kind == "goaway", h2.seen
    assert isinstance(h2.goaway, GoAwayFrame)
    assert h2.goaway.last_stream_id == 1


# -- §5.5 Extending HTTP/2 -----------------------------------------------------------------------


@CASES("rfc9113-5.5", h2spec="5.5/1")
async def unknown_extension_frame_ignored(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """An extension frame (type 0xff) on a stream, between requests, is ignored; the stream's
    request next is answered."""
    h2.send(raw_frame(0xFF, 0xFF, 1, b"extension payload"))
    h2.send(h2.headers(1, request()))
    response = await h2.expect_response(1)
    assert response.status == 200


@CASES("rfc9113-5.5", h2spec="5.5/2")
async def extension_frame_inside_header_block(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """An extension frame between HEADERS and CONTINUATION breaks the header block: connection
    error PROTOCOL_ERROR (RFC 9113 §6.10: only CONTINUATION may follow)."""
    h2.send(h2.headers(1, request(), end_headers=False), raw_frame(0x16, 0, 0, b"\x00" * 8))
    await h2.expect_connection_error(P)


@CASES.parametrize()
async def test_connection(case: Case, h2: H2Client, activator: ActivatorUnderTest) -> None:
    await case.run(h2, activator)
