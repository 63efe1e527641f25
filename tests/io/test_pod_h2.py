"""PodH2Connection (the activator's client side toward pods) against a real HTTP/2 server.

The peer is python-hyper's ``h2`` in server mode, wired to the client through in-memory byte pumps; the
cases a conforming server cannot produce are fed to the client as hand-built frames. Expected error
codes are RFC 9113's.
"""

from __future__ import annotations

import struct
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import pytest

from activator.io.h2lib import h2 as h2lib
from activator.io.pod_h2 import (
    CANCEL,
    COMPRESSION_ERROR,
    DATA,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    MAX_HEADER_LIST,
    MAX_INBOUND_FRAME,
    NO_ERROR,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    RESET,
    RESPONSE,
    SETTINGS,
    STREAM_CLOSED,
    STREAM_ERROR,
    TRAILERS,
    WINDOW,
    PodConnectionError,
    PodH2Connection,
    PodStreamGone,
)

Event = tuple[Any, ...]
Frame = tuple[int, int, int, bytes]  # type, flags, stream id, payload

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types and flags (RFC 9113 §6).
T_DATA, T_HEADERS, T_PRIORITY, T_RST_STREAM, T_SETTINGS = 0x0, 0x1, 0x2, 0x3, 0x4
T_PUSH_PROMISE, T_PING, T_GOAWAY, T_WINDOW_UPDATE, T_CONTINUATION = 0x5, 0x6, 0x7, 0x8, 0x9
F_END_STREAM = 0x1
F_ACK = 0x1
F_END_HEADERS = 0x4
F_PADDED = 0x8
F_PRIORITY = 0x20

S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE, S_MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6

STREAM_WINDOW = 1 << 20
CONNECTION_WINDOW = 1 << 24

GET: list[tuple[bytes, bytes]] = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":authority", b"pod.example"),
    (b":path", b"/hello"),
    (b"user-agent", b"activator-test"),
]
POST: list[tuple[bytes, bytes]] = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":authority", b"pod.example"),
    (b":path", b"/upload"),
    (b"content-type", b"application/octet-stream"),
]
HEAD: list[tuple[bytes, bytes]] = [(b":method", b"HEAD"), *GET[1:]]


# -- raw frames ------------------------------------------------------------------------------------


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"", *, length: int = -1) -> bytes:
    """One frame on the wire; ``length`` overrides the header's length field."""
    n = len(payload) if length < 0 else length
    return struct.pack(">HBBBL", n >> 8, n & 0xFF, ftype, flags, sid) + payload


def settings_payload(*pairs: tuple[int, int]) -> bytes:
    return b"".join(struct.pack(">HL", key, value) for key, value in pairs)


def parse_frames(data: bytes) -> list[Frame]:
    """Split a byte stream (optionally starting with the client preface) into frames."""
    pos = len(PREFACE) if data.startswith(PREFACE) else 0
    frames: list[Frame] = []
    while pos < len(data):
        hi, lo, ftype, flags, sid = struct.unpack_from(">HBBBL", data, pos)
        n = (hi << 8) | lo
        assert pos + 9 + n <= len(data), "truncated frame in the output"
        frames.append((ftype, flags, sid & 0x7FFFFFFF, data[pos + 9 : pos + 9 + n]))
        pos += 9 + n
    return frames


def output_frames(client: PodH2Connection) -> list[Frame]:
    return parse_frames(b"".join(client.pop_output()))


def kinds(events: list[Event]) -> list[int]:
    return [event[0] for event in events]


# -- an h2 server wired to the client --------------------------------------------------------------


def server_config(*, validate: bool = True) -> h2.config.H2Configuration:
    """An h2 server config; ``validate=False`` lets it send malformed field blocks."""
    return h2.config.H2Configuration(
        client_side=False,
        header_encoding=None,
        validate_outbound_headers=validate,
        normalize_outbound_headers=validate,
    )


class Pair:
    """A PodH2Connection (client) and an h2 server, connected by in-memory pumps."""

    def __init__(
        self,
        *,
        stream_window: int = STREAM_WINDOW,
        connection_window: int = CONNECTION_WINDOW,
        config: h2.config.H2Configuration | None = None,
        server_settings: dict[int, int] | None = None,
        auto_ack: bool = False,
    ) -> None:
        self.client = PodH2Connection(
            stream_window=stream_window, connection_window=connection_window
        )
        self.server = h2.connection.H2Connection(config=config or server_config())
        if server_settings:
            # Replaces the values the server's preface SETTINGS will carry.
            self.server.local_settings = h2.settings.Settings(
                client=False, initial_values=server_settings
            )
        self.auto_ack = auto_ack
        self.server_events: list[h2.events.Event] = []
        self.client_events: list[Event] = []
        self.to_server = bytearray()
        self.to_client = bytearray()

    def connect(self) -> list[Event]:
        self.client.initiate_connection()
        self.server.initiate_connection()
        return self.pump()

    def pump(self) -> list[Event]:
        """Move bytes both ways until both sides are quiet; the client's new events."""
        events: list[Event] = []
        while True:
            up = b"".join(self.client.pop_output())
            if up:
                self.to_server += up
                received = self.server.receive_data(up)
                self.server_events.extend(received)
                if self.auto_ack:
                    for ev in received:
                        if isinstance(ev, h2.events.DataReceived):
                            self.server.acknowledge_received_data(
                                ev.flow_controlled_length, ev.stream_id
                            )
            down = self.server.data_to_send()
            if down:
                self.to_client += down
                events.extend(self.client.receive_data(down))
            if not up and not down:
                break
        self.client_events.extend(events)
        return events

    def request(
        self,
        headers: list[tuple[bytes, bytes]] = GET,
        *,
        end_stream: bool = True,
        head: bool = False,
    ) -> int:
        sid = self.client.get_next_available_stream_id()
        self.client.send_headers(sid, headers, end_stream, head=head)
        assert self.pump() == []
        return sid

    def server_seen(self, kind: type) -> list[Any]:
        return [ev for ev in self.server_events if isinstance(ev, kind)]


def connected(**kwargs: Any) -> Pair:
    pair = Pair(**kwargs)
    pair.connect()
    return pair


# -- a client fed hand-built frames ----------------------------------------------------------------


class RawPod:
    """A PodH2Connection whose peer is this test: frames are built by hand."""

    def __init__(
        self,
        *,
        stream_window: int = 65535,
        connection_window: int = 65535,
        streams: int = 1,
        end_stream: bool = True,
        head: bool = False,
    ) -> None:
        self.client = PodH2Connection(
            stream_window=stream_window, connection_window=connection_window
        )
        self.client.initiate_connection()
        # The pod's preface: an empty SETTINGS frame.
        assert self.client.receive_data(frame(T_SETTINGS, 0, 0)) == [(SETTINGS, True, None, False)]
        self.encoder = hpack.Encoder()
        self.sids: list[int] = []
        for _ in range(streams):
            sid = self.client.get_next_available_stream_id()
            self.client.send_headers(sid, HEAD if head else GET, end_stream, head=head)
            self.sids.append(sid)
        self.client.pop_output()

    def block(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        """An HPACK block from the pod's encoder (kept in step with the client's decoder)."""
        return bytes(self.encoder.encode(headers))

    def headers(
        self, sid: int, headers: list[tuple[bytes, bytes]], *, end_stream: bool = False
    ) -> bytes:
        flags = F_END_HEADERS | (F_END_STREAM if end_stream else 0)
        return frame(T_HEADERS, flags, sid, self.block(headers))

    def connection_error(self, data: bytes, code: int) -> PodConnectionError:
        """Feed ``data``: it must be a connection error ``code`` with GOAWAY(code) queued."""
        with pytest.raises(PodConnectionError) as info:
            self.client.receive_data(data)
        assert info.value.code == code, str(info.value)
        goaways = [f for f in output_frames(self.client) if f[0] == T_GOAWAY]
        assert goaways == [(T_GOAWAY, 0, 0, struct.pack(">LL", 0, code))]
        assert self.client.goaway_sent
        return info.value


OK_200: list[tuple[bytes, bytes]] = [(b":status", b"200")]


# == handshake =====================================================================================


def test_handshake_settings_both_ways() -> None:
    pair = Pair(
        server_settings={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 7,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 30000,
        }
    )
    events = pair.connect()

    # The client's bytes start with the preface, then SETTINGS, then the connection window grant.
    sent = parse_frames(bytes(pair.to_server))
    assert bytes(pair.to_server).startswith(PREFACE)
    assert sent[0][:3] == (T_SETTINGS, 0, 0)
    assert sent[1] == (T_WINDOW_UPDATE, 0, 0, struct.pack(">L", CONNECTION_WINDOW - 65535))

    # The server's SETTINGS: one event, first, with its MAX_CONCURRENT_STREAMS.
    assert events == [(SETTINGS, True, 7, True)]
    assert pair.client.peer_max_streams == 7

    # h2 saw our settings and the window grant.
    (changed,) = pair.server_seen(h2.events.RemoteSettingsChanged)
    values = {code: c.new_value for code, c in changed.changed_settings.items()}
    assert values[h2.settings.SettingCodes.ENABLE_PUSH] == 0
    assert values[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] == STREAM_WINDOW
    assert values[h2.settings.SettingCodes.MAX_FRAME_SIZE] == MAX_INBOUND_FRAME
    assert values[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE] == MAX_HEADER_LIST
    assert values[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 0
    (grant,) = pair.server_seen(h2.events.WindowUpdated)
    assert (grant.stream_id, grant.delta) == (0, CONNECTION_WINDOW - 65535)
    assert pair.server.outbound_flow_control_window == CONNECTION_WINDOW
    assert pair.server.remote_settings.initial_window_size == STREAM_WINDOW

    # SETTINGS ACKs both ways: h2 got ours; the server acknowledged the client's settings.
    assert len(pair.server_seen(h2.events.SettingsAcknowledged)) == 1
    acks = [f for f in parse_frames(bytes(pair.to_client)) if f[0] == T_SETTINGS and f[1] & F_ACK]
    assert acks == [(T_SETTINGS, F_ACK, 0, b"")]
    acks_sent = [f for f in sent if f[0] == T_SETTINGS and f[1] & F_ACK]
    assert acks_sent == [(T_SETTINGS, F_ACK, 0, b"")]


def test_later_settings_are_not_first() -> None:
    pair = connected()
    pair.server.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 3})
    assert pair.pump() == [(SETTINGS, False, 3, False)]
    assert pair.client.peer_max_streams == 3
    assert (
        pair.server_seen(h2.events.SettingsAcknowledged)[-1]
        .changed_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS]
        .new_value
        == 3
    )


def test_no_connection_window_grant_at_the_default_size() -> None:
    client = PodH2Connection(stream_window=65535, connection_window=65535)
    client.initiate_connection()
    frames = output_frames(client)
    assert [f[0] for f in frames] == [T_SETTINGS]


# == requests and responses ========================================================================


def test_get_with_body_response() -> None:
    pair = connected()
    sid = pair.request(GET)
    assert sid == 1
    (request,) = pair.server_seen(h2.events.RequestReceived)
    assert request.stream_id == sid
    assert request.headers == GET
    assert len(pair.server_seen(h2.events.StreamEnded)) == 1

    pair.server.send_headers(
        sid,
        [
            (b":status", b"200"),
            (b"content-type", b"text/plain"),
            (b"proxy-authenticate", b"Basic"),
            (b"content-length", b"5"),
        ],
    )
    pair.server.send_data(sid, b"hello", end_stream=True)
    events = pair.pump()
    assert events == [
        (
            RESPONSE,
            sid,
            [(b":status", b"200"), (b"content-type", b"text/plain"), (b"content-length", b"5")],
            False,
        ),
        (DATA, sid, b"hello", 5, True),
    ]
    assert pair.client.open_streams == 0
    with pytest.raises(PodStreamGone):
        pair.client.local_flow_control_window(sid)


def test_response_without_body_ends_in_headers() -> None:
    pair = connected()
    sid = pair.request(GET)
    pair.server.send_headers(sid, [(b":status", b"204")], end_stream=True)
    assert pair.pump() == [(RESPONSE, sid, [(b":status", b"204")], True)]
    assert pair.client.open_streams == 0


def test_stream_ids_are_odd_and_increasing() -> None:
    pair = connected()
    sids = [pair.request(GET) for _ in range(3)]
    assert sids == [1, 3, 5]
    assert [ev.stream_id for ev in pair.server_seen(h2.events.RequestReceived)] == sids
    assert pair.client.open_streams == 3
    with pytest.raises(PodStreamGone):
        pair.client.send_headers(9, GET, True)  # not the next id


def test_early_response_keeps_stream_until_request_ends() -> None:
    pair = connected()
    sid = pair.request(POST, end_stream=False)
    pair.server.send_headers(sid, [(b":status", b"413")], end_stream=True)
    assert pair.pump() == [(RESPONSE, sid, [(b":status", b"413")], True)]
    assert pair.client.open_streams == 1  # half-closed (remote): our side is still open
    pair.client.end_stream(sid)
    assert pair.client.open_streams == 0
    with pytest.raises(PodStreamGone):
        pair.client.send_data(sid, b"x")


def test_post_body_respects_flow_control() -> None:
    # The server grants 1000 bytes per stream and the default 65535 on the connection, so a
    # 70000-byte body needs WINDOW_UPDATEs on both.
    pair = Pair(server_settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000}, auto_ack=True)
    pair.connect()
    sid = pair.request(POST, end_stream=False)
    assert pair.client.local_flow_control_window(sid) == 1000
    with pytest.raises(h2lib.exceptions.FlowControlError):
        pair.client.send_data(sid, b"x" * 1001)

    body = bytes(i % 251 for i in range(70000))
    sent = 0
    chunks: list[int] = []
    for _ in range(10000):
        if sent == len(body):
            break
        window = pair.client.local_flow_control_window(sid)
        n = min(window, len(body) - sent, pair.client.max_outbound_frame_size)
        if n > 0:
            pair.client.send_data(sid, body[sent : sent + n], end_stream=sent + n == len(body))
            sent += n
            chunks.append(n)
        pair.pump()
    assert sent == len(body)
    assert max(chunks) <= 1000

    received = b"".join(ev.data for ev in pair.server_seen(h2.events.DataReceived))
    assert received == body
    assert [ev.stream_id for ev in pair.server_seen(h2.events.StreamEnded)] == [sid]
    assert (WINDOW, sid) in pair.client_events
    assert (WINDOW, 0) in pair.client_events
    assert all(ev[0] in (WINDOW, SETTINGS) for ev in pair.client_events)

    pair.server.send_headers(sid, [(b":status", b"201")], end_stream=True)
    assert pair.pump() == [(RESPONSE, sid, [(b":status", b"201")], True)]
    assert pair.client.open_streams == 0


def test_client_window_updates_reach_the_server() -> None:
    pair = connected()
    sid = pair.request(GET)
    before = pair.server.local_flow_control_window(sid)
    pair.client.increment_flow_control_window(1000)
    pair.client.increment_flow_control_window(500, stream_id=sid)
    pair.pump()
    updates = [(ev.stream_id, ev.delta) for ev in pair.server_seen(h2.events.WindowUpdated)]
    assert updates[-2:] == [(0, 1000), (sid, 500)]
    assert pair.server.local_flow_control_window(sid) == min(
        STREAM_WINDOW + 500, CONNECTION_WINDOW + 1000
    )
    assert before == STREAM_WINDOW


def test_trailers_grpc_style() -> None:
    pair = connected()
    request = [*POST[:4], (b"content-type", b"application/grpc"), (b"te", b"trailers")]
    sid = pair.request(request, end_stream=False)
    pair.client.send_data(sid, b"\x00\x00\x00\x00\x02hi", end_stream=True)
    pair.pump()
    assert pair.server_seen(h2.events.RequestReceived)[0].headers == request
    assert b"".join(ev.data for ev in pair.server_seen(h2.events.DataReceived)) == (
        b"\x00\x00\x00\x00\x02hi"
    )

    pair.server.send_headers(sid, [(b":status", b"200"), (b"content-type", b"application/grpc")])
    pair.server.send_data(sid, b"\x00\x00\x00\x00\x01!")
    pair.server.send_headers(
        sid, [(b"grpc-status", b"0"), (b"grpc-message", b"ok")], end_stream=True
    )
    assert pair.pump() == [
        (RESPONSE, sid, [(b":status", b"200"), (b"content-type", b"application/grpc")], False),
        (DATA, sid, b"\x00\x00\x00\x00\x01!", 6, False),
        (TRAILERS, sid, [(b"grpc-status", b"0"), (b"grpc-message", b"ok")]),
    ]
    assert pair.client.open_streams == 0


def test_request_trailers_reach_the_server() -> None:
    pair = connected()
    sid = pair.request(POST, end_stream=False)
    pair.client.send_data(sid, b"abc")
    pair.client.send_headers(sid, [(b"x-checksum", b"123")], end_stream=True)
    pair.pump()
    (trailers,) = pair.server_seen(h2.events.TrailersReceived)
    assert (trailers.stream_id, trailers.headers) == (sid, [(b"x-checksum", b"123")])
    with pytest.raises(PodStreamGone):
        pair.client.send_headers(sid, [(b"x-more", b"1")], end_stream=True)


def _big_value(size: int) -> bytes:
    # Printable, poorly compressible by Huffman coding.
    return bytes(33 + (i * 7919 + i // 3) % 94 for i in range(size))


def test_large_response_block_in_continuation_frames() -> None:
    pair = connected()
    pair.server.max_outbound_frame_size = 16384  # new streams split header blocks at 16 KiB
    sid = pair.request(GET)
    value = _big_value(40 * 1024)
    pair.server.send_headers(sid, [(b":status", b"200"), (b"x-big", value)], end_stream=True)
    mark = len(pair.to_client)
    events = pair.pump()
    frames = parse_frames(bytes(pair.to_client[mark:]))
    types = [f[0] for f in frames]
    assert types == [T_HEADERS] + [T_CONTINUATION] * (len(types) - 1)
    assert len(types) >= 3
    assert [f[1] & F_END_HEADERS for f in frames][-2:] == [0, F_END_HEADERS]
    assert events == [(RESPONSE, sid, [(b":status", b"200"), (b"x-big", value)], True)]
    assert pair.client.open_streams == 0


def test_large_request_block_in_continuation_frames() -> None:
    pair = connected()
    pair.client.max_outbound_frame_size = 16384
    value = _big_value(40 * 1024)
    mark = len(pair.to_server)
    sid = pair.request([*GET, (b"x-big", value)])
    frames = parse_frames(bytes(pair.to_server[mark:]))
    assert [f[0] for f in frames] == [T_HEADERS, T_CONTINUATION, T_CONTINUATION]
    assert [f[1] & F_END_HEADERS for f in frames] == [0, 0, F_END_HEADERS]
    assert all(len(f[3]) <= 16384 for f in frames)
    (request,) = pair.server_seen(h2.events.RequestReceived)
    assert request.stream_id == sid
    assert request.headers == [*GET, (b"x-big", value)]


def test_padded_data_is_unpadded_but_counted() -> None:
    pair = connected()
    sid = pair.request(GET)
    pair.server.send_headers(sid, OK_200)
    pair.server.send_data(sid, b"abc", pad_length=10)
    pair.server.send_data(sid, b"de", end_stream=True, pad_length=0)
    assert pair.pump() == [
        (RESPONSE, sid, OK_200, False),
        (DATA, sid, b"abc", 3 + 10 + 1, False),
        (DATA, sid, b"de", 2 + 0 + 1, True),
    ]


@pytest.mark.parametrize("code", [REFUSED_STREAM, CANCEL, 0x2])
def test_server_reset_is_reported_with_its_code(code: int) -> None:
    pair = connected()
    sid = pair.request(POST, end_stream=False)
    other = pair.request(GET)
    pair.server.reset_stream(sid, code)
    assert pair.pump() == [(RESET, sid, code)]
    assert pair.client.open_streams == 1
    with pytest.raises(PodStreamGone):
        pair.client.send_data(sid, b"x")
    # The other stream carries on.
    pair.server.send_headers(other, OK_200, end_stream=True)
    assert pair.pump() == [(RESPONSE, other, OK_200, True)]


@pytest.mark.parametrize(("code", "last"), [(NO_ERROR, 3), (0xB, 1), (0x2, 0)])
def test_server_goaway(code: int, last: int) -> None:
    pair = connected()
    pair.request(GET)
    pair.request(GET)
    pair.server.close_connection(error_code=code, last_stream_id=last, additional_data=b"bye")
    assert pair.pump() == [(GOAWAY, last, code)]


def test_server_ping_is_acknowledged() -> None:
    pair = connected()
    pair.server.ping(b"12345678")
    assert pair.pump() == []
    (ack,) = pair.server_seen(h2.events.PingAckReceived)
    assert ack.ping_data == b"12345678"
    assert (T_PING, F_ACK, 0, b"12345678") in parse_frames(bytes(pair.to_server))


def test_client_ping_is_answered() -> None:
    pair = connected()
    pair.client.ping(b"abcdefgh")
    mark = len(pair.to_client)
    assert pair.pump() == []
    (ping,) = pair.server_seen(h2.events.PingReceived)
    assert ping.ping_data == b"abcdefgh"
    assert parse_frames(bytes(pair.to_client[mark:])) == [(T_PING, F_ACK, 0, b"abcdefgh")]
    assert pair.client.pop_output() == []  # an ACK is not answered


# == content-length ================================================================================


def test_body_shorter_than_content_length() -> None:
    pair = connected(config=server_config(validate=False))
    sid = pair.request(GET)
    pair.server.send_headers(sid, [(b":status", b"200"), (b"content-length", b"10")])
    pair.server.send_data(sid, b"12345", end_stream=True)
    events = pair.pump()
    assert events[0] == (RESPONSE, sid, [(b":status", b"200"), (b"content-length", b"10")], False)
    assert events[1] == (DATA, sid, b"", 5, False)  # connection credit still reported
    assert events[2][:3] == (STREAM_ERROR, sid, PROTOCOL_ERROR)
    assert len(events) == 3
    resets = [f for f in parse_frames(bytes(pair.to_server)) if f[0] == T_RST_STREAM]
    assert resets == [(T_RST_STREAM, 0, sid, struct.pack(">L", PROTOCOL_ERROR))]
    assert pair.client.open_streams == 0


def test_body_longer_than_content_length() -> None:
    pair = connected(config=server_config(validate=False))
    sid = pair.request(GET)
    pair.server.send_headers(sid, [(b":status", b"200"), (b"content-length", b"3")])
    pair.server.send_data(sid, b"12")
    pair.server.send_data(sid, b"34", end_stream=True)
    events = pair.pump()
    assert events[:2] == [
        (RESPONSE, sid, [(b":status", b"200"), (b"content-length", b"3")], False),
        (DATA, sid, b"12", 2, False),
    ]
    assert events[2] == (DATA, sid, b"", 2, False)
    assert events[3][:3] == (STREAM_ERROR, sid, PROTOCOL_ERROR)
    assert len(events) == 4


def test_content_length_without_body() -> None:
    pair = connected(config=server_config(validate=False))
    sid = pair.request(GET)
    pair.server.send_headers(
        sid, [(b":status", b"200"), (b"content-length", b"10")], end_stream=True
    )
    events = pair.pump()
    assert [e[:3] for e in events] == [(STREAM_ERROR, sid, PROTOCOL_ERROR)]


def test_trailers_before_content_length_is_met() -> None:
    pair = connected(config=server_config(validate=False))
    sid = pair.request(GET)
    pair.server.send_headers(sid, [(b":status", b"200"), (b"content-length", b"10")])
    pair.server.send_data(sid, b"12345")
    pair.server.send_headers(sid, [(b"grpc-status", b"0")], end_stream=True)
    events = pair.pump()
    assert kinds(events) == [RESPONSE, DATA, STREAM_ERROR]
    assert events[2][:3] == (STREAM_ERROR, sid, PROTOCOL_ERROR)


def test_exact_content_length_across_frames() -> None:
    pair = connected()
    sid = pair.request(GET)
    pair.server.send_headers(sid, [(b":status", b"200"), (b"content-length", b"6")])
    pair.server.send_data(sid, b"abc")
    pair.server.send_data(sid, b"def", end_stream=True)
    assert kinds(pair.pump()) == [RESPONSE, DATA, DATA]
    assert pair.client_events[-1] == (DATA, sid, b"def", 3, True)


def test_head_response_with_content_length_and_no_body() -> None:
    pair = connected()
    sid = pair.request(HEAD, head=True)
    assert pair.server_seen(h2.events.RequestReceived)[0].headers == HEAD
    pair.server.send_headers(
        sid, [(b":status", b"200"), (b"content-length", b"10")], end_stream=True
    )
    assert pair.pump() == [
        (RESPONSE, sid, [(b":status", b"200"), (b"content-length", b"10")], True)
    ]
    assert pair.client.open_streams == 0


def test_304_with_content_length_and_no_body() -> None:
    pair = connected()
    sid = pair.request(GET)
    headers = [(b":status", b"304"), (b"content-length", b"10")]
    pair.server.send_headers(sid, headers, end_stream=True)
    assert pair.pump() == [(RESPONSE, sid, headers, True)]


@pytest.mark.parametrize(
    ("request_headers", "status"), [(GET, b"204"), (GET, b"304"), (HEAD, b"200")]
)
def test_content_in_a_response_that_has_none_is_a_stream_error(
    request_headers: list[tuple[bytes, bytes]], status: bytes
) -> None:
    """A HEAD response, a 204 or a 304 has no content (RFC 9110 §6.4.1), whatever its
    content-length: a DATA payload after it is malformed. Forwarded, it would reach an HTTP/1.1
    client as the start of another response."""
    raw = RawPod(end_stream=True, head=request_headers is HEAD)
    headers = [(b":status", status), (b"content-length", b"0")]
    forwarded = headers[:1] if status == b"204" else headers  # a 204 loses it (RFC 9110 §8.6)
    assert raw.client.receive_data(raw.headers(1, headers, end_stream=False)) == [
        (RESPONSE, 1, forwarded, False)
    ]
    events = raw.client.receive_data(frame(T_DATA, F_END_STREAM, 1, b"smuggled"))
    assert [e[0] for e in events] == [DATA, STREAM_ERROR]
    assert events[0][2:] == (b"", 8, False)  # no payload forwarded; the credit is returned
    assert events[1][2] == PROTOCOL_ERROR
    assert output_frames(raw.client)[-1] == (T_RST_STREAM, 0, 1, struct.pack(">L", PROTOCOL_ERROR))


def test_a_response_without_content_may_still_end_with_an_empty_data_frame() -> None:
    raw = RawPod(end_stream=True)
    headers = [(b":status", b"204")]
    raw.client.receive_data(raw.headers(1, headers, end_stream=False))
    assert raw.client.receive_data(frame(T_DATA, F_END_STREAM, 1, b"")) == [(DATA, 1, b"", 0, True)]


# == malformed responses ===========================================================================

MALFORMED: dict[str, list[tuple[bytes, bytes]]] = {
    "crlf-in-value": [(b":status", b"200"), (b"x-a", b"a\r\nb")],
    "lf-in-value": [(b":status", b"200"), (b"x-a", b"a\nset-cookie: x")],
    "nul-in-value": [(b":status", b"200"), (b"x-a", b"a\x00b")],
    "leading-space": [(b":status", b"200"), (b"x-a", b" a")],
    "uppercase-name": [(b":status", b"200"), (b"X-Upper", b"1")],
    "space-in-name": [(b":status", b"200"), (b"x a", b"1")],
    "connection-close": [(b":status", b"200"), (b"connection", b"close")],
    "transfer-encoding": [(b":status", b"200"), (b"transfer-encoding", b"chunked")],
    "te-gzip": [(b":status", b"200"), (b"te", b"gzip")],
    "second-status": [(b":status", b"200"), (b":status", b"204")],
    "missing-status": [(b"content-type", b"text/plain")],
    "request-pseudo": [(b":status", b"200"), (b":path", b"/")],
    "pseudo-after-regular": [(b"x-a", b"1"), (b":status", b"200")],
    "bad-status": [(b":status", b"2x0")],
    "bad-content-length": [(b":status", b"200"), (b"content-length", b"-1")],
    "101": [(b":status", b"101")],
    # RFC 9113 §8.3: pseudo-header fields come before all regular field lines.
    "status-after-dropped-field": [(b"proxy-authenticate", b"Basic"), (b":status", b"200")],
}


@pytest.mark.parametrize("headers", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_response_is_a_stream_error(headers: list[tuple[bytes, bytes]]) -> None:
    pair = connected(config=server_config(validate=False))
    bad = pair.request(GET)
    good = pair.request(GET)
    pair.server.send_headers(bad, headers)
    pair.server.send_data(bad, b"body")
    pair.server.send_headers(good, [(b":status", b"200"), (b"x-ok", b"1")])
    pair.server.send_data(good, b"fine", end_stream=True)
    events = pair.pump()

    errors = [e for e in events if e[0] == STREAM_ERROR]
    assert len(errors) == 1
    assert errors[0][:3] == (STREAM_ERROR, bad, PROTOCOL_ERROR)
    assert isinstance(errors[0][3], str)
    assert errors[0][3]
    # The body that followed is only reported for its connection credit.
    assert (DATA, bad, b"", 4, False) in events
    assert not [e for e in events if e[0] in (RESPONSE, TRAILERS) and e[1] == bad]
    # The other stream is untouched.
    assert [e for e in events if e[1] == good] == [
        (RESPONSE, good, [(b":status", b"200"), (b"x-ok", b"1")], False),
        (DATA, good, b"fine", 4, True),
    ]
    resets = [f for f in parse_frames(bytes(pair.to_server)) if f[0] == T_RST_STREAM]
    assert resets == [(T_RST_STREAM, 0, bad, struct.pack(">L", PROTOCOL_ERROR))]
    (reset,) = pair.server_seen(h2.events.StreamReset)
    assert (reset.stream_id, reset.error_code) == (bad, PROTOCOL_ERROR)
    assert pair.client.open_streams == 0


def test_malformed_trailers_are_a_stream_error() -> None:
    pair = connected(config=server_config(validate=False))
    sid = pair.request(GET)
    pair.server.send_headers(sid, OK_200)
    pair.server.send_headers(sid, [(b":status", b"200")], end_stream=True)
    events = pair.pump()
    assert events[0] == (RESPONSE, sid, OK_200, False)
    assert events[1][:3] == (STREAM_ERROR, sid, PROTOCOL_ERROR)
    assert len(events) == 2


def test_informational_response_is_skipped() -> None:
    pair = connected()
    sid = pair.request(GET)
    pair.server.send_headers(sid, [(b":status", b"103"), (b"link", b"</style.css>; rel=preload")])
    pair.server.send_headers(sid, [(b":status", b"100")])
    pair.server.send_headers(sid, [(b":status", b"200"), (b"content-length", b"2")])
    pair.server.send_data(sid, b"ok", end_stream=True)
    assert pair.pump() == [
        (RESPONSE, sid, [(b":status", b"200"), (b"content-length", b"2")], False),
        (DATA, sid, b"ok", 2, True),
    ]


def test_informational_response_with_end_stream_is_a_stream_error() -> None:
    raw = RawPod()
    events = raw.client.receive_data(raw.headers(1, [(b":status", b"103")], end_stream=True))
    assert [e[:3] for e in events] == [(STREAM_ERROR, 1, PROTOCOL_ERROR)]
    assert output_frames(raw.client) == [(T_RST_STREAM, 0, 1, struct.pack(">L", PROTOCOL_ERROR))]


# == connection errors =============================================================================


def _hpack_ok(raw: RawPod) -> bytes:
    return raw.block(OK_200)


CONNECTION_ERRORS: dict[str, tuple[Any, int]] = {
    "data-on-stream-0": (lambda r: frame(T_DATA, 0, 0, b"x"), PROTOCOL_ERROR),
    "frame-over-max": (
        lambda r: frame(T_DATA, 0, 1, length=MAX_INBOUND_FRAME + 1),
        FRAME_SIZE_ERROR,
    ),
    "push-promise": (
        lambda r: frame(T_PUSH_PROMISE, F_END_HEADERS, 1, struct.pack(">L", 2) + _hpack_ok(r)),
        PROTOCOL_ERROR,
    ),
    "headers-on-even-stream": (
        lambda r: frame(T_HEADERS, F_END_HEADERS, 2, _hpack_ok(r)),
        PROTOCOL_ERROR,
    ),
    "headers-on-idle-stream": (
        lambda r: frame(T_HEADERS, F_END_HEADERS, 5, _hpack_ok(r)),
        PROTOCOL_ERROR,
    ),
    "headers-on-stream-0": (
        lambda r: frame(T_HEADERS, F_END_HEADERS, 0, _hpack_ok(r)),
        PROTOCOL_ERROR,
    ),
    "data-on-idle-stream": (lambda r: frame(T_DATA, 0, 3, b"x"), PROTOCOL_ERROR),
    "continuation-without-headers": (
        lambda r: frame(T_CONTINUATION, F_END_HEADERS, 1, _hpack_ok(r)),
        PROTOCOL_ERROR,
    ),
    "data-inside-header-block": (
        lambda r: frame(T_HEADERS, 0, 1, b"\x88") + frame(T_DATA, 0, 1, b"x"),
        PROTOCOL_ERROR,
    ),
    "ping-inside-header-block": (
        lambda r: frame(T_HEADERS, 0, 1, b"\x88") + frame(T_PING, 0, 0, b"12345678"),
        PROTOCOL_ERROR,
    ),
    "unknown-frame-inside-header-block": (
        lambda r: frame(T_HEADERS, 0, 1, b"\x88") + frame(0xFA, 0, 0, b"x"),
        PROTOCOL_ERROR,
    ),
    "continuation-on-another-stream": (
        lambda r: frame(T_HEADERS, 0, 1, b"\x88") + frame(T_CONTINUATION, F_END_HEADERS, 3, b""),
        PROTOCOL_ERROR,
    ),
    "settings-length-not-multiple-of-6": (
        lambda r: frame(T_SETTINGS, 0, 0, b"\x00\x03\x00\x00\x00"),
        FRAME_SIZE_ERROR,
    ),
    "settings-ack-with-payload": (
        lambda r: frame(T_SETTINGS, F_ACK, 0, settings_payload((S_MAX_CONCURRENT_STREAMS, 1))),
        FRAME_SIZE_ERROR,
    ),
    "settings-on-a-stream": (lambda r: frame(T_SETTINGS, 0, 1), PROTOCOL_ERROR),
    "window-update-0-on-connection": (
        lambda r: frame(T_WINDOW_UPDATE, 0, 0, struct.pack(">L", 0)),
        PROTOCOL_ERROR,
    ),
    "window-update-bad-length": (
        lambda r: frame(T_WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"),
        FRAME_SIZE_ERROR,
    ),
    "connection-window-overflow": (
        lambda r: frame(T_WINDOW_UPDATE, 0, 0, struct.pack(">L", (1 << 31) - 1)),
        FLOW_CONTROL_ERROR,
    ),
    "initial-window-size-too-large": (
        lambda r: frame(T_SETTINGS, 0, 0, settings_payload((S_INITIAL_WINDOW_SIZE, 1 << 31))),
        FLOW_CONTROL_ERROR,
    ),
    "max-frame-size-too-small": (
        lambda r: frame(T_SETTINGS, 0, 0, settings_payload((S_MAX_FRAME_SIZE, 16383))),
        PROTOCOL_ERROR,
    ),
    "max-frame-size-too-large": (
        lambda r: frame(T_SETTINGS, 0, 0, settings_payload((S_MAX_FRAME_SIZE, 1 << 24))),
        PROTOCOL_ERROR,
    ),
    "enable-push-2": (
        lambda r: frame(T_SETTINGS, 0, 0, settings_payload((S_ENABLE_PUSH, 2))),
        PROTOCOL_ERROR,
    ),
    # RFC 9113 §6.5.2: "A client MUST treat receipt of a SETTINGS frame with SETTINGS_ENABLE_PUSH
    # set to 1 as a connection error (Section 5.4.1) of type PROTOCOL_ERROR."
    "enable-push-1-from-server": (
        lambda r: frame(T_SETTINGS, 0, 0, settings_payload((S_ENABLE_PUSH, 1))),
        PROTOCOL_ERROR,
    ),
    "ping-bad-length": (lambda r: frame(T_PING, 0, 0, b"1234567"), FRAME_SIZE_ERROR),
    "ping-on-a-stream": (lambda r: frame(T_PING, 0, 1, b"12345678"), PROTOCOL_ERROR),
    "goaway-on-a-stream": (
        lambda r: frame(T_GOAWAY, 0, 1, struct.pack(">LL", 0, 0)),
        PROTOCOL_ERROR,
    ),
    "goaway-too-short": (lambda r: frame(T_GOAWAY, 0, 0, b"\x00\x00\x00"), FRAME_SIZE_ERROR),
    "rst-stream-bad-length": (
        lambda r: frame(T_RST_STREAM, 0, 1, b"\x00\x00\x08"),
        FRAME_SIZE_ERROR,
    ),
    "rst-stream-on-idle-stream": (
        lambda r: frame(T_RST_STREAM, 0, 7, struct.pack(">L", CANCEL)),
        PROTOCOL_ERROR,
    ),
    "priority-on-stream-0": (lambda r: frame(T_PRIORITY, 0, 0, b"\x00" * 5), PROTOCOL_ERROR),
    "padding-longer-than-frame": (
        lambda r: frame(T_DATA, F_PADDED, 1, b"\x05abc"),
        PROTOCOL_ERROR,
    ),
    "hpack-garbage": (
        lambda r: frame(T_HEADERS, F_END_HEADERS, 1, b"\xff\xff\xff\xff"),
        COMPRESSION_ERROR,
    ),
    "hpack-index-beyond-tables": (
        # Indexed field 70: past the 61 static entries, and the dynamic table is empty.
        lambda r: frame(T_HEADERS, F_END_HEADERS, 1, bytes([0x80 | 70])),
        COMPRESSION_ERROR,
    ),
    "hpack-index-0": (lambda r: frame(T_HEADERS, F_END_HEADERS, 1, b"\x80"), COMPRESSION_ERROR),
    "hpack-truncated-literal": (
        lambda r: frame(T_HEADERS, F_END_HEADERS, 1, b"\x00\x05ab"),
        COMPRESSION_ERROR,
    ),
}


@pytest.mark.parametrize(
    ("build", "code"), list(CONNECTION_ERRORS.values()), ids=list(CONNECTION_ERRORS)
)
def test_connection_errors(build: Any, code: int) -> None:
    raw = RawPod(end_stream=False)
    raw.connection_error(build(raw), code)


def test_data_beyond_connection_window_is_a_connection_error() -> None:
    raw = RawPod(stream_window=1 << 20, connection_window=65535)
    assert raw.client.receive_data(raw.headers(1, OK_200)) == [(RESPONSE, 1, OK_200, False)]
    chunk = b"x" * 16384
    events = raw.client.receive_data(b"".join(frame(T_DATA, 0, 1, chunk) for _ in range(3)))
    assert [e[3] for e in events] == [16384] * 3
    raw.connection_error(frame(T_DATA, 0, 1, chunk), FLOW_CONTROL_ERROR)


def test_connection_error_in_a_later_frame_of_the_same_read() -> None:
    raw = RawPod()
    with pytest.raises(PodConnectionError) as info:
        raw.client.receive_data(raw.headers(1, OK_200) + frame(T_DATA, 0, 0, b"x"))
    assert info.value.code == PROTOCOL_ERROR
    assert [f[0] for f in output_frames(raw.client)] == [T_GOAWAY]
    # The response before the fault happened: the error carries it for the caller to deliver.
    assert [e[:2] for e in info.value.events] == [(RESPONSE, 1)]


def test_nothing_is_read_after_a_connection_error() -> None:
    """Bytes that arrive between the error and the transport's close are not parsed: they would
    start mid-frame and queue a second GOAWAY."""
    raw = RawPod()
    with pytest.raises(PodConnectionError):
        raw.client.receive_data(frame(T_DATA, 0, 0, b"x"))
    output_frames(raw.client)  # the GOAWAY
    assert raw.client.receive_data(b"\x00\x00\x01garbage" + raw.headers(1, OK_200)) == []
    assert output_frames(raw.client) == []


# == byte-at-a-time reads ==========================================================================


def _scripted_exchange(pair: Pair) -> list[Event]:
    """A connection with several frame kinds from the server; the client's events."""
    events = pair.connect()
    pair.server.max_outbound_frame_size = 16384
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_headers(sid, GET, True)
    events += pair.pump()
    pair.server.send_headers(sid, [(b":status", b"200"), (b"x-big", _big_value(20000))])
    pair.server.send_data(sid, b"padded", pad_length=7)
    pair.server.ping(b"pingpong")
    pair.server.send_data(sid, b"more")
    pair.server.send_headers(sid, [(b"grpc-status", b"0")], end_stream=True)
    pair.server.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 9})
    events += pair.pump()
    # GOAWAY by hand: h2 refuses the client's ACKs once it has closed the connection.
    goaway = frame(T_GOAWAY, 0, 0, struct.pack(">LL", sid, 0) + b"bye")
    pair.to_client += goaway
    events += pair.client.receive_data(goaway)
    return events


def test_frames_split_across_reads_give_the_same_events() -> None:
    pair = Pair()
    whole = _scripted_exchange(pair)
    assert kinds(whole) == [SETTINGS, RESPONSE, DATA, DATA, TRAILERS, SETTINGS, GOAWAY]
    assert whole[2] == (DATA, 1, b"padded", 6 + 7 + 1, False)

    # Replay the server's bytes to a client issuing the same commands, one byte per read.
    client = PodH2Connection(stream_window=STREAM_WINDOW, connection_window=CONNECTION_WINDOW)
    client.initiate_connection()
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, GET, True)
    stream = bytes(pair.to_client)
    split: list[Event] = []
    for i in range(len(stream)):
        split += client.receive_data(stream[i : i + 1])
    assert split == whole
    # Its answers (SETTINGS ACK, PING ACK) are the same as the client that read in bulk.
    answers = [f for f in output_frames(client) if f[0] in (T_SETTINGS, T_PING) and f[1] & F_ACK]
    assert answers == [
        f
        for f in parse_frames(bytes(pair.to_server))
        if f[0] in (T_SETTINGS, T_PING) and f[1] & F_ACK
    ]


def test_partial_frame_header_waits_for_more() -> None:
    raw = RawPod()
    data = raw.headers(1, OK_200, end_stream=True)
    assert raw.client.receive_data(data[:5]) == []
    assert raw.client.receive_data(data[5:-1]) == []
    assert raw.client.receive_data(data[-1:]) == [(RESPONSE, 1, OK_200, True)]


# == flow control ==================================================================================


def test_initial_window_size_change_moves_open_stream_windows() -> None:
    pair = connected()
    sid = pair.request(POST, end_stream=False)
    assert pair.client.local_flow_control_window(sid) == 65535

    pair.server.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    assert pair.pump() == [(SETTINGS, False, None, True)]
    assert pair.client.local_flow_control_window(sid) == 1000

    pair.client.send_data(sid, b"x" * 600)
    pair.pump()
    assert pair.client.local_flow_control_window(sid) == 400

    # Shrinking below what is in flight makes the window negative (RFC 9113 §6.9.2).
    pair.server.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100})
    assert pair.pump() == [(SETTINGS, False, None, True)]
    assert pair.client.local_flow_control_window(sid) == -500
    with pytest.raises(h2lib.exceptions.FlowControlError):
        pair.client.send_data(sid, b"x")

    # Growing it past the connection window: the connection window limits.
    pair.server.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100000})
    assert pair.pump() == [(SETTINGS, False, None, True)]
    assert pair.client.local_flow_control_window(sid) == 65535 - 600

    # A stream opened now starts at the new initial window (bounded by the connection's).
    pair.server.increment_flow_control_window(200000)
    assert pair.pump() == [(WINDOW, 0)]
    new = pair.request(POST, end_stream=False)
    assert pair.client.local_flow_control_window(new) == 100000
    assert pair.client.local_flow_control_window(sid) == 100000 - 600


def test_end_stream_needs_no_window_even_a_negative_one() -> None:
    """A pod shrank INITIAL_WINDOW_SIZE below what is in flight (RFC 9113 §6.9.2): no body byte may
    go, but the upload can still end - an empty DATA frame with END_STREAM is not flow-controlled
    (§6.9.1), and a client that ends its body with one must not break the connection."""
    pair = connected()
    sid = pair.request(POST, end_stream=False)
    pair.client.send_data(sid, b"x" * 600)
    pair.server.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100})
    assert pair.pump() == [(SETTINGS, False, None, True)]
    assert pair.client.local_flow_control_window(sid) == -500
    with pytest.raises(h2lib.exceptions.FlowControlError):
        pair.client.send_data(sid, b"x")  # a body byte still needs window
    pair.client.end_stream(sid)
    assert output_frames(pair.client)[-1:] == [(T_DATA, F_END_STREAM, sid, b"")]


def test_unchanged_initial_window_size_is_not_a_window_change() -> None:
    raw = RawPod(end_stream=False)
    same = frame(T_SETTINGS, 0, 0, settings_payload((S_INITIAL_WINDOW_SIZE, 65535)))
    assert raw.client.receive_data(same) == [(SETTINGS, False, None, False)]
    assert output_frames(raw.client) == [(T_SETTINGS, F_ACK, 0, b"")]


def test_initial_window_size_pushing_a_stream_window_over_2_31_is_a_connection_error() -> None:
    raw = RawPod(end_stream=False)
    grow = frame(T_WINDOW_UPDATE, 0, 1, struct.pack(">L", (1 << 31) - 1 - 65535))
    assert raw.client.receive_data(grow) == [(WINDOW, 1)]
    raw.connection_error(
        frame(T_SETTINGS, 0, 0, settings_payload((S_INITIAL_WINDOW_SIZE, 65536))),
        FLOW_CONTROL_ERROR,
    )


def test_stream_window_update_events_and_errors() -> None:
    raw = RawPod(end_stream=False, streams=2)
    assert raw.client.receive_data(frame(T_WINDOW_UPDATE, 0, 1, struct.pack(">L", 10))) == [
        (WINDOW, 1)
    ]
    assert raw.client.local_flow_control_window(1) == 65535  # the connection window limits
    # WINDOW_UPDATE of 0 on a stream: a stream error (RFC 9113 §6.9).
    events = raw.client.receive_data(frame(T_WINDOW_UPDATE, 0, 1, struct.pack(">L", 0)))
    assert [e[:3] for e in events] == [(STREAM_ERROR, 1, PROTOCOL_ERROR)]
    # Overflowing a stream window: a stream error of FLOW_CONTROL_ERROR (RFC 9113 §6.9.1).
    events = raw.client.receive_data(frame(T_WINDOW_UPDATE, 0, 3, struct.pack(">L", (1 << 31) - 1)))
    assert [e[:3] for e in events] == [(STREAM_ERROR, 3, FLOW_CONTROL_ERROR)]
    assert output_frames(raw.client) == [
        (T_RST_STREAM, 0, 1, struct.pack(">L", PROTOCOL_ERROR)),
        (T_RST_STREAM, 0, 3, struct.pack(">L", FLOW_CONTROL_ERROR)),
    ]
    assert raw.client.open_streams == 0


def test_data_beyond_stream_window_is_a_stream_error() -> None:
    raw = RawPod(stream_window=100, connection_window=1 << 20, streams=2)
    assert raw.client.receive_data(raw.headers(1, OK_200)) == [(RESPONSE, 1, OK_200, False)]
    assert raw.client.receive_data(raw.headers(3, OK_200)) == [(RESPONSE, 3, OK_200, False)]
    assert raw.client.receive_data(frame(T_DATA, 0, 1, b"a" * 60)) == [
        (DATA, 1, b"a" * 60, 60, False)
    ]
    events = raw.client.receive_data(frame(T_DATA, 0, 1, b"b" * 41))
    assert events[0] == (DATA, 1, b"", 41, False)  # connection credit still reported
    assert events[1][:3] == (STREAM_ERROR, 1, FLOW_CONTROL_ERROR)
    assert len(events) == 2
    assert output_frames(raw.client) == [
        (T_RST_STREAM, 0, 1, struct.pack(">L", FLOW_CONTROL_ERROR))
    ]
    # The other stream has its own window.
    assert raw.client.receive_data(frame(T_DATA, F_END_STREAM, 3, b"c" * 100)) == [
        (DATA, 3, b"c" * 100, 100, True)
    ]


def test_stream_window_granted_by_the_client_admits_more_data() -> None:
    raw = RawPod(stream_window=100, connection_window=1 << 20)
    raw.client.receive_data(raw.headers(1, OK_200))
    assert kinds(raw.client.receive_data(frame(T_DATA, 0, 1, b"a" * 100))) == [DATA]
    raw.client.increment_flow_control_window(50, stream_id=1)
    assert output_frames(raw.client) == [(T_WINDOW_UPDATE, 0, 1, struct.pack(">L", 50))]
    assert raw.client.receive_data(frame(T_DATA, F_END_STREAM, 1, b"b" * 50)) == [
        (DATA, 1, b"b" * 50, 50, True)
    ]


# == closed streams ================================================================================


def test_data_on_a_stream_the_client_reset_returns_connection_credit() -> None:
    pair = connected()
    sid = pair.request(GET)
    pair.server.send_headers(sid, [(b":status", b"200"), (b"x-a", b"1")])
    pair.server.send_data(sid, b"already in flight", pad_length=3)
    pair.client.reset_stream(sid, CANCEL)  # crosses the response on the wire
    assert pair.client.open_streams == 0
    events = pair.pump()
    assert events == [(DATA, sid, b"", len(b"already in flight") + 3 + 1, False)]
    (reset,) = pair.server_seen(h2.events.StreamReset)
    assert (reset.stream_id, reset.error_code) == (sid, CANCEL)
    # The HPACK state followed the ignored block: a later response decodes.
    other = pair.request(GET)
    pair.server.send_headers(other, [(b":status", b"200"), (b"x-a", b"1")], end_stream=True)
    assert pair.pump() == [(RESPONSE, other, [(b":status", b"200"), (b"x-a", b"1")], True)]


def test_reset_of_a_closed_stream_sends_nothing() -> None:
    raw = RawPod()
    raw.client.reset_stream(1, CANCEL)
    assert output_frames(raw.client) == [(T_RST_STREAM, 0, 1, struct.pack(">L", CANCEL))]
    raw.client.reset_stream(1, CANCEL)
    assert raw.client.pop_output() == []
    # Late frames on it are ignored; RST_STREAM and WINDOW_UPDATE give no event.
    assert raw.client.receive_data(frame(T_RST_STREAM, 0, 1, struct.pack(">L", 0))) == []
    assert raw.client.receive_data(frame(T_WINDOW_UPDATE, 0, 1, struct.pack(">L", 5))) == []
    assert raw.client.receive_data(raw.headers(1, OK_200)) == []


def test_data_after_end_stream_is_stream_closed() -> None:
    raw = RawPod(end_stream=False)
    assert raw.client.receive_data(raw.headers(1, OK_200, end_stream=True)) == [
        (RESPONSE, 1, OK_200, True)
    ]
    assert raw.client.open_streams == 1  # half-closed (remote)
    events = raw.client.receive_data(frame(T_DATA, 0, 1, b"late"))
    assert events[0] == (DATA, 1, b"", 4, False)
    assert events[1][:3] == (STREAM_ERROR, 1, STREAM_CLOSED)
    assert output_frames(raw.client) == [(T_RST_STREAM, 0, 1, struct.pack(">L", STREAM_CLOSED))]


def test_data_before_response_is_a_stream_error() -> None:
    raw = RawPod()
    events = raw.client.receive_data(frame(T_DATA, 0, 1, b"early"))
    assert events[0] == (DATA, 1, b"", 5, False)
    assert events[1][:3] == (STREAM_ERROR, 1, PROTOCOL_ERROR)


def test_trailers_without_end_stream_are_a_stream_error() -> None:
    raw = RawPod()
    raw.client.receive_data(raw.headers(1, OK_200))
    events = raw.client.receive_data(raw.headers(1, [(b"grpc-status", b"0")]))
    assert [e[:3] for e in events] == [(STREAM_ERROR, 1, PROTOCOL_ERROR)]


def test_headers_with_padding_and_priority() -> None:
    raw = RawPod()
    block = raw.block([(b":status", b"200"), (b"x-p", b"1")])
    payload = bytes([4]) + b"\x00\x00\x00\x00\x10" + block + b"\x00" * 4
    data = frame(T_HEADERS, F_END_HEADERS | F_END_STREAM | F_PADDED | F_PRIORITY, 1, payload)
    assert raw.client.receive_data(data) == [
        (RESPONSE, 1, [(b":status", b"200"), (b"x-p", b"1")], True)
    ]


def test_unknown_frame_types_and_priority_are_ignored() -> None:
    raw = RawPod()
    data = frame(0xFA, 0xFF, 1, b"whatever") + frame(T_PRIORITY, 0, 1, b"\x00\x00\x00\x00\x10")
    assert raw.client.receive_data(data) == []
    assert raw.client.pop_output() == []
    assert raw.client.open_streams == 1


def test_server_header_table_size_is_honoured() -> None:
    pair = connected()
    pair.request(GET)  # a header block between the server's preface and its change
    pair.server.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: 0})
    assert pair.pump() == [(SETTINGS, False, None, False)]
    headers = [*GET, (b"x-custom", b"a value that would be indexed")]
    for _ in range(2):
        pair.request(headers)
    assert [ev.headers for ev in pair.server_seen(h2.events.RequestReceived)][1:] == [headers] * 2
    assert pair.server.decoder.header_table_size == 0


def test_header_table_size_lowered_before_the_first_request() -> None:
    # h2's preface carries HEADER_TABLE_SIZE 4096; the server then lowers it to 0 before any request.
    # The first header block must signal a table size of at most 0 (RFC 7541 §4.2: with several
    # changes between two blocks, the smallest first; §6.3: a size update above the acknowledged
    # SETTINGS_HEADER_TABLE_SIZE is a decoding error).
    pair = connected()
    pair.server.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: 0})
    assert pair.pump() == [(SETTINGS, False, None, False)]
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_headers(sid, GET, True)
    (headers_frame,) = output_frames(pair.client)
    assert headers_frame[0] == T_HEADERS
    decoder = hpack.Decoder()
    decoder.max_allowed_table_size = 0  # what the client acknowledged
    assert decoder.decode(headers_frame[3], raw=True) == GET
