"""RFC 7541 §7.1.3 across the proxy: a field that arrives as "literal never indexed" leaves as one too.

An intermediary must not re-encode such a field in a form that would let it enter a compression
context. Both directions are checked on the wire, over real sockets, with the activator as a
subprocess between a raw HTTP/2 client and an HTTP/2 pod written here (python-hyper's ``h2``):

- client -> pod: the client sends ``x-token`` (and ``authorization``) never-indexed; the pod must
  receive them with the 0001xxxx representation (RFC 7541 §6.2.3), the ordinary field must not be.
- pod -> client: the pod answers with ``x-secret`` never-indexed; the client must receive it so.

What each side received is read from the raw bytes, not from h2's events: the frames are split and
HEADERS + CONTINUATION fragments joined here, each field's representation is classified from its first
byte, and an ``hpack.Decoder`` kept in lockstep with the connection names the fields and shows its
dynamic table. The request is sent twice on one connection: a never-indexed field never enters a
dynamic table, so the second exchange must carry it as a never-indexed literal again.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import hpack
import pytest
from support import LOOPBACK, ActivatorProcess, PodLoop, RawH2Client, StreamState

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADERS = 0x1
FRAME_CONTINUATION = 0x9
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20

INDEXED = "indexed"  # 1xxxxxxx, RFC 7541 §6.1
INCREMENTAL = "incremental-indexing"  # 01xxxxxx, §6.2.1
WITHOUT_INDEXING = "without-indexing"  # 0000xxxx, §6.2.2
NEVER_INDEXED = "never-indexed"  # 0001xxxx, §6.2.3

SECRET_REQUEST_FIELDS = {b"x-token": b"abc", b"authorization": b"Bearer t0ps3cr3t"}
ORDINARY_REQUEST_FIELD = (b"x-ordinary", b"plain-value")
SECRET_RESPONSE_FIELD = (b"x-secret", b"s3cr3t")
ORDINARY_RESPONSE_FIELD = (b"x-plain", b"visible")


# -- reading field blocks off the wire -----------------------------------------------------------------


def _hpack_integer(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    """An HPACK integer (RFC 7541 §5.1) whose prefix starts at ``data[pos]``; (value, next pos)."""
    mask = (1 << prefix_bits) - 1
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _skip_string(data: bytes, pos: int) -> int:
    """Past an HPACK string literal (RFC 7541 §5.2), Huffman-coded or not."""
    length, pos = _hpack_integer(data, pos, 7)
    return pos + length


def representations(block: bytes) -> list[tuple[str, int]]:
    """Each field's representation in a field block, with its first byte, in order. Dynamic table
    size updates (001xxxxx) are skipped: they carry no field."""
    out: list[tuple[str, int]] = []
    pos = 0
    while pos < len(block):
        first = block[pos]
        if first & 0x80:
            kind, prefix = INDEXED, 7
        elif first & 0x40:
            kind, prefix = INCREMENTAL, 6
        elif first & 0x20:
            _, pos = _hpack_integer(block, pos, 5)
            continue
        elif first & 0x10:
            kind, prefix = NEVER_INDEXED, 4
        else:
            kind, prefix = WITHOUT_INDEXING, 4
        index, pos = _hpack_integer(block, pos, prefix)
        if kind != INDEXED:
            if index == 0:  # a literal name follows
                pos = _skip_string(block, pos)
            pos = _skip_string(block, pos)
        out.append((kind, first))
    if pos != len(block):
        raise AssertionError(f"field block overran its end: {block.hex()}")
    return out


class HeaderBlockTap:
    """The field blocks in one direction of an HTTP/2 connection, from its raw bytes: frames are
    split here and a HEADERS fragment joined with its CONTINUATIONs (RFC 9113 §4.3, §6.2, §6.10)."""

    def __init__(self, *, preface: bool) -> None:
        self._buffer = bytearray()
        self._preface_left = len(PREFACE) if preface else 0
        self._partial: tuple[int, bytearray] | None = None
        self.blocks: list[tuple[int, bytes]] = []

    def feed(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if self._preface_left:
            if len(buffer) < self._preface_left:
                return
            if bytes(buffer[: self._preface_left]) != PREFACE:
                raise AssertionError(f"no HTTP/2 preface: {bytes(buffer[:24])!r}")
            del buffer[: self._preface_left]
            self._preface_left = 0
        while len(buffer) >= 9:
            length = int.from_bytes(buffer[0:3], "big")
            if len(buffer) < 9 + length:
                return
            kind, flags = buffer[3], buffer[4]
            stream_id = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
            payload = bytes(buffer[9 : 9 + length])
            del buffer[: 9 + length]
            if kind == FRAME_HEADERS:
                start, padding = 0, 0
                if flags & FLAG_PADDED:
                    padding = payload[0]
                    start = 1
                if flags & FLAG_PRIORITY:
                    start += 5
                self._partial = (stream_id, bytearray(payload[start : len(payload) - padding]))
            elif kind == FRAME_CONTINUATION:
                if self._partial is None or self._partial[0] != stream_id:
                    raise AssertionError(f"CONTINUATION on stream {stream_id} without HEADERS")
                self._partial[1].extend(payload)
            else:
                continue
            if flags & FLAG_END_HEADERS:
                assert self._partial is not None
                self.blocks.append((self._partial[0], bytes(self._partial[1])))
                self._partial = None


@dataclass(frozen=True)
class WireField:
    name: bytes
    value: bytes
    representation: str
    first_byte: int


class BlockReader:
    """One direction's HPACK context, kept in lockstep by decoding every field block of it in order."""

    def __init__(self, tap: HeaderBlockTap) -> None:
        self.tap = tap
        self.decoder = hpack.Decoder()
        self._done = 0
        self.by_stream: dict[int, list[list[WireField]]] = {}

    def catch_up(self) -> None:
        """Decode the blocks the tap collected since the last call."""
        for stream_id, block in self.tap.blocks[self._done :]:
            kinds = representations(block)
            decoded = list(self.decoder.decode(block, raw=True))
            if len(kinds) != len(decoded):
                raise AssertionError(f"{len(kinds)} representations, {len(decoded)} fields")
            fields = []
            for (kind, first), item in zip(kinds, decoded, strict=True):
                # hpack's own reading of the same bytes must agree with the first-byte one.
                assert isinstance(item, hpack.NeverIndexedHeaderTuple) == (kind == NEVER_INDEXED)
                fields.append(WireField(bytes(item[0]), bytes(item[1]), kind, first))
            self.by_stream.setdefault(stream_id, []).append(fields)
        self._done = len(self.tap.blocks)

    def dynamic_table(self) -> list[tuple[bytes, bytes]]:
        return [(bytes(n), bytes(v)) for n, v in self.decoder.header_table.dynamic_entries]


def field_named(fields: list[WireField], name: bytes) -> WireField:
    found = [f for f in fields if f.name == name]
    assert len(found) == 1, (name, fields)
    return found[0]


# -- the pod -----------------------------------------------------------------------------------------------


@dataclass
class PodRequest:
    connection: int
    stream_id: int
    fields: list[WireField]


@dataclass
class CapturingPod:
    """An h2c server that records each request's field block as it came off the wire and answers
    200 with ``x-secret`` sent never-indexed and ``x-plain`` sent as an ordinary field."""

    port: int = 0
    requests: list[PodRequest] = field(default_factory=list)
    readers: list[BlockReader] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def h2c_upstream(self) -> str:
        return f"h2c://{LOOPBACK}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, LOOPBACK, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        wire = BlockReader(HeaderBlockTap(preface=True))
        index = len(self.readers)
        self.readers.append(wire)
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        try:
            while data := await reader.read(65536):
                wire.tap.feed(data)
                events = conn.receive_data(data)
                wire.catch_up()
                for event in events:
                    if isinstance(event, h2.events.RequestReceived):
                        assert event.stream_id is not None
                        fields = wire.by_stream[event.stream_id][0]
                        self.requests.append(PodRequest(index, event.stream_id, fields))
                        self._answer(conn, event.stream_id)
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    @staticmethod
    def _answer(conn: h2.connection.H2Connection, stream_id: int) -> None:
        body = b"ok\n"
        conn.send_headers(
            stream_id,
            [
                (b":status", b"200"),
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
                hpack.NeverIndexedHeaderTuple(*SECRET_RESPONSE_FIELD),
                ORDINARY_RESPONSE_FIELD,
            ],
        )
        conn.send_data(stream_id, body, end_stream=True)


@pytest.fixture
def capturing_pod() -> Iterator[CapturingPod]:
    pod_loop = PodLoop()
    pod = CapturingPod()
    try:
        pod_loop.run(pod.start())
        yield pod
    finally:
        with contextlib.suppress(Exception):
            pod_loop.run(pod.stop())
        pod_loop.close()


# -- the client --------------------------------------------------------------------------------------------


class TappedSocket:
    """A socket whose bytes in both directions are also fed to header block taps."""

    def __init__(self, sock: socket.socket, sent: HeaderBlockTap, received: HeaderBlockTap) -> None:
        self._sock = sock
        self.sent = sent
        self.received = received

    def sendall(self, data: bytes) -> None:
        self.sent.feed(data)
        self._sock.sendall(data)

    def recv(self, size: int) -> bytes:
        data = self._sock.recv(size)
        self.received.feed(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def tapped_client(port: int) -> tuple[RawH2Client, BlockReader, BlockReader]:
    """A raw HTTP/2 client to ``port`` and the readers of what it sends and receives."""
    client = RawH2Client(port, send_preface=False)
    sent = BlockReader(HeaderBlockTap(preface=True))
    received = BlockReader(HeaderBlockTap(preface=False))
    client.sock = TappedSocket(client.sock, sent.tap, received.tap)  # type: ignore[assignment]
    client.conn.initiate_connection()
    client.flush()
    return client, sent, received


def send_request(client: RawH2Client) -> int:
    """GET with two never-indexed fields and an ordinary one; the stream id."""
    stream_id = client.conn.get_next_available_stream_id()
    block: list[Any] = [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":authority", b"example.test"),
        (b":path", b"/never-indexed"),
        *(hpack.NeverIndexedHeaderTuple(n, v) for n, v in SECRET_REQUEST_FIELDS.items()),
        ORDINARY_REQUEST_FIELD,
    ]
    client.streams[stream_id] = StreamState()
    client.conn.send_headers(stream_id, block, end_stream=True)
    client.flush()
    return stream_id


# -- the test ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("library", ["h2", "jh2"])
def test_never_indexed_fields_stay_never_indexed_both_ways(
    library: str,
    capturing_pod: CapturingPod,
    activator_proc: Callable[..., ActivatorProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The client-facing HTTP/2 library of the activator (its pod side is its own, on jh2's HPACK).
    monkeypatch.setenv("ACTIVATOR_H2", library)
    activator = activator_proc(capturing_pod.h2c_upstream)
    client, sent, received = tapped_client(activator.port)
    with client:
        for round_no in (1, 2):
            stream_id = send_request(client)
            response = client.response(stream_id)
            assert response.status == 200, (round_no, response)
            assert bytes(response.body) == b"ok\n"
            sent.catch_up()
            received.catch_up()

            # Precondition: this client did send the fields as the test means it to.
            request_out = sent.by_stream[stream_id][0]
            for name in SECRET_REQUEST_FIELDS:
                assert field_named(request_out, name).representation == NEVER_INDEXED
            assert field_named(request_out, ORDINARY_REQUEST_FIELD[0]).representation != (
                NEVER_INDEXED
            )

            # client -> pod
            assert len(capturing_pod.requests) == round_no
            at_pod = capturing_pod.requests[-1].fields
            for name, value in SECRET_REQUEST_FIELDS.items():
                seen = field_named(at_pod, name)
                assert seen.value == value
                assert seen.representation == NEVER_INDEXED, (round_no, seen)
                assert seen.first_byte & 0xF0 == 0x10, (round_no, seen)
            ordinary = field_named(at_pod, ORDINARY_REQUEST_FIELD[0])
            assert ordinary.value == ORDINARY_REQUEST_FIELD[1]
            assert ordinary.representation != NEVER_INDEXED, (round_no, ordinary)  # the control

            # pod -> client
            at_client = received.by_stream[stream_id][0]
            secret = field_named(at_client, SECRET_RESPONSE_FIELD[0])
            assert secret.value == SECRET_RESPONSE_FIELD[1]
            assert secret.representation == NEVER_INDEXED, (round_no, secret)
            assert secret.first_byte & 0xF0 == 0x10, (round_no, secret)
            plain = field_named(at_client, ORDINARY_RESPONSE_FIELD[0])
            assert plain.value == ORDINARY_RESPONSE_FIELD[1]
            assert plain.representation != NEVER_INDEXED, (round_no, plain)  # the control
            assert field_named(at_client, b":status").representation != NEVER_INDEXED

    # No never-indexed field is in any dynamic table kept in step with the connections, while the
    # ordinary fields are (so the tables were in use and the check above is not vacuous).
    assert capturing_pod.readers
    for reader in capturing_pod.readers:
        table = reader.dynamic_table()
        for item in SECRET_REQUEST_FIELDS.items():
            assert item not in table, table
    pod_tables = [entry for reader in capturing_pod.readers for entry in reader.dynamic_table()]
    assert ORDINARY_REQUEST_FIELD in pod_tables, pod_tables
    client_table = received.dynamic_table()
    assert SECRET_RESPONSE_FIELD not in client_table, client_table
    assert ORDINARY_RESPONSE_FIELD in client_table, client_table
