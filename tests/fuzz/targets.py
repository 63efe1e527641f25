"""The fuzz targets: each takes the fuzzer's bytes, builds an input from them (see ByteSource) and
raises AssertionError when the activator gets it wrong.

- ``ingress_h2`` and ``ingress_h1``: a client conversation (HTTP/2 frames; HTTP/1.1 requests,
  pipelined, with h2c upgrades) sent over a real socket to a live activator. After the client
  leaves, nothing may stay held (connections, in-flight requests, queued bytes, pod streams),
  nothing may be logged as an error or fail in a callback, and what came back must parse: every
  HTTP/2 header block decodes in order, every frame fits the frame size, and HTTP/1.1 responses
  are well framed.
- ``ingress_tls``: the same conversations over TLS, with every ALPN offer (h2, http/1.1, both,
  none, unknown protocols), HTTP/2 bytes where ALPN chose HTTP/1.1 and the reverse, and
  plaintext sent to the TLS port. ALPN must choose h2 or http/1.1 or nothing, and the reply must
  parse as what it chose.
- ``pod_misbehaviour``: well-formed HTTP/2 requests from a client, through a live activator, to a
  pod whose connection plays a script of raw frames (responses, resets, GOAWAY, SETTINGS, garbage,
  a close) and whose later connections behave. Besides the ingress checks: when the script's first
  move that could concern a request is GOAWAY(last_stream_id=0), the pod provably processed
  nothing, so every request must be replayed on a new connection and answered there; when it is
  REFUSED_STREAM on stream 1, the client must never see that refusal.
- ``pod_misbehaviour_h1``: the same with an HTTP/1.1 pod whose first connection plays raw
  response bytes (status lines, conflicting framing, chunked bodies good and bad, 1xx, a 204
  with a body, responses nobody asked for, a close). h2's client is the check on the replies: a
  body before its headers, or one longer than its content-length, fails the input.
- ``pod_h2``: the lean HTTP/2 client toward pods, sans-I/O, given arbitrary frames from a "pod":
  the only error is PodConnectionError, after which nothing more is read; events name only streams
  we opened; and every DATA frame's flow-controlled bytes come back as connection credit, so a
  pod's misbehaviour never shrinks the connection window for good.
- ``hpack_strict``: the client-facing HPACK decoder against python-hyper's reference decoder, block
  after block on one connection: the same fields, or both reject (the strict one may also reject a
  table size update after a field, RFC 7541 §4.2).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import hpack
import httptools

from activator.io import pod_h2 as pods
from activator.io.h2lib import strict_decoder
from activator.io.h2wire import PREFACE
from tests.fuzz.live import Conversation, LiveActivator
from tests.fuzz.scripted_pod import GOOD_BODY, Script, ScriptedPod
from tests.fuzz.source import ByteSource

DEFAULT_FRAME = 16384

# Request fields: mostly valid, with the shapes RFC 9113 §8.2 and RFC 9112 make malformed.
H2_METHODS = [b"GET", b"POST", b"HEAD", b"CONNECT", b"OPTIONS", b"PUT", b"", b"get"]
PATHS = [
    b"/", b"/echo", b"/bytes/10", b"/bytes/70000", b"/delay/5", b"/status/204", b"/status/304",
    b"/reset-after/3", b"/stream/3/1", b"/upload", b"/headers", b"/trailers", b"*", b"", b"x",
    b"/%00", b"//x", b"http://evil.example/",
]  # fmt: skip
H2_NAMES = [
    b":method", b":path", b":scheme", b":authority", b":status", b":protocol", b"host",
    b"content-length", b"te", b"connection", b"transfer-encoding", b"x-a", b"X-Upper", b"cookie",
    b"grpc-timeout", b"content-type", b"", b"a b", b"upgrade", b"keep-alive", b"expect",
]  # fmt: skip
H2_VALUES = [
    b"", b"0", b"1", b"5", b"-1", b"100000", b"trailers", b"gzip", b"application/grpc", b"x\r\ny",
    b" x", b"x ", b"\x00", b"localhost", b"a, b", b"close", b"h2c", b"100-continue", b"1, 1",
    b"99999999999999999999",
]  # fmt: skip
STREAM_IDS = [1, 1, 3, 3, 5, 7, 0, 2, 9, 0x7FFFFFFF]
SETTING_VALUES = [0, 1, 100, 16384, 65535, 1 << 24, 0x7FFFFFFF, 0xFFFFFFFF]

H1_METHODS = [b"GET", b"POST", b"HEAD", b"CONNECT", b"OPTIONS", b"PUT", b"PRI", b"get", b"G T", b""]
H1_VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.2", b"http/1.1", b""]
H1_NAMES = [
    b"Host", b"Content-Length", b"Transfer-Encoding", b"Connection", b"Upgrade", b"HTTP2-Settings",
    b"Expect", b"TE", b"Trailer", b"Keep-Alive", b"X-A", b"Host ", b" Host", b"Content-Length ",
    b"Proxy-Connection", b"Cookie", b"Content-Type", b"",
]  # fmt: skip
H1_VALUES = [
    b"localhost", b"evil.example", b"0", b"5", b"-1", b"10, 10", b"chunked", b"gzip, chunked",
    b"chunked, gzip", b"close", b"keep-alive", b"Upgrade, HTTP2-Settings", b"h2c", b"websocket",
    b"AAMAAABkAARAAAAAAAIAAAAA", b"100-continue", b"trailers", b"", b"x\x00y", b"x\ry", b"\xff",
    b"99999999999999999999", b"application/grpc",
]  # fmt: skip
H1_BODIES = [
    b"", b"hello", b"5\r\nhello\r\n0\r\n\r\n", b"0\r\n\r\n", b"5\r\nhel", b"zz\r\n",
    b"5;x=y\r\nhello\r\n0\r\nX-T: 1\r\n\r\n", PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    b"x" * 70000,
]  # fmt: skip
LINGER = [0.0, 0.01, 0.03]


def frame(ftype: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    n = len(payload)
    return struct.pack(">HBBBL", n >> 8, n & 0xFF, ftype, flags, stream_id) + payload


def _resplit(src: ByteSource, conversation: Conversation) -> Conversation:
    """The same bytes, cut at one arbitrary point instead (a frame or a head split across reads)."""
    blob = b"".join(part for part in conversation if isinstance(part, bytes))
    cut = src.integer(0, len(blob))
    return [blob[:cut], 0.001, blob[cut:]]


# -- HTTP/2 clients --------------------------------------------------------------------------------


def _header_block(src: ByteSource, encoder: hpack.Encoder) -> bytes:
    fields: list[tuple[bytes, bytes]] = []
    if src.integer(0, 3):
        fields = [
            (b":method", src.choice(H2_METHODS)),
            (b":scheme", b"http"),
            (b":authority", b"localhost"),
            (b":path", src.choice(PATHS)),
        ]
        if src.integer(0, 4) == 0:
            fields.pop(src.integer(0, 3))
    for _ in range(src.integer(0, 4)):
        fields.insert(src.integer(0, len(fields)), (src.choice(H2_NAMES), src.choice(H2_VALUES)))
    return bytes(encoder.encode(fields))


def h2_conversation(src: ByteSource) -> tuple[Conversation, float, int]:
    """Frames from an HTTP/2 client; also the largest frame the client allowed us to send."""
    encoder = hpack.Encoder()
    conversation: Conversation = []
    max_frame = DEFAULT_FRAME
    if src.integer(0, 15):
        conversation.append(PREFACE + frame(0x4, 0, 0, b""))
    for _ in range(src.integer(0, 12)):
        kind = src.integer(0, 14)
        sid = src.choice(STREAM_IDS)
        if kind <= 3:  # HEADERS, sometimes padded, with priority, or continued
            flags = src.choice([0x5, 0x4, 0x1, 0x0, 0x25, 0x0C, 0xFF])
            block = _header_block(src, encoder)
            payload = block
            if flags & 0x8:
                payload = b"\x02" + payload + b"\x00\x00"
            if flags & 0x20:
                payload = struct.pack(">LB", src.integer(0, 9), 16) + payload
            if not flags & 0x4 and src.flag() and len(block) > 1:
                tail = len(block) - len(block) // 2
                conversation.append(frame(0x1, flags, sid, payload[: len(payload) - tail]))
                conversation.append(frame(0x9, 0x4, sid, block[-tail:]))
            else:
                conversation.append(frame(0x1, flags, sid, payload))
        elif kind <= 6:  # DATA
            flags = src.choice([0x0, 0x1, 0x8, 0x9])
            body = b"b" * src.choice([0, 1, 10, 1000, 16384, 20000])
            if flags & 0x8:
                body = bytes([src.integer(0, 255)]) + body
            conversation.append(frame(0x0, flags, sid, body))
        elif kind == 7:
            conversation.append(frame(0x3, 0, sid, struct.pack(">L", src.integer(0, 14))))
        elif kind == 8:
            increment = src.choice([0, 1, 65535, 0x7FFFFFFF, 0xFFFFFFFF])
            conversation.append(frame(0x8, 0, src.choice([0, sid]), struct.pack(">L", increment)))
        elif kind == 9:
            pairs = []
            for _ in range(src.integer(0, 3)):
                key, value = src.integer(0, 9), src.choice(SETTING_VALUES)
                if key == 0x5 and DEFAULT_FRAME <= value < 1 << 24:
                    max_frame = max(max_frame, value)
                pairs.append(struct.pack(">HL", key, value))
            conversation.append(
                frame(0x4, src.choice([0, 0, 1]), src.choice([0, 0, 1]), b"".join(pairs))
            )
        elif kind == 10:
            conversation.append(frame(0x6, src.choice([0, 1]), 0, b"12345678"))
        elif kind == 11:
            conversation.append(frame(0x2, 0, sid, src.blob(5)))
        elif kind == 12:
            goaway = struct.pack(">LL", src.integer(0, 9), src.integer(0, 13))
            conversation.append(frame(0x7, 0, 0, goaway))
        elif kind == 13:
            conversation.append(frame(src.integer(0, 20), src.integer(0, 255), sid, src.blob(40)))
        else:
            conversation.append(0.005)
    if src.flag():
        conversation = _resplit(src, conversation)
    return conversation, src.choice(LINGER), max_frame


def check_h2_reply(reply: bytes, max_frame: int) -> None:
    """Every whole frame fits the frame size, and every header block decodes in order."""
    decoder = hpack.Decoder()
    decoder.max_allowed_table_size = 1 << 32  # whatever the client's SETTINGS allowed
    pos = 0
    block = b""
    while len(reply) - pos >= 9:
        hi, lo, ftype, flags, _sid = struct.unpack_from(">HBBBL", reply, pos)
        length = (hi << 8) | lo
        assert length <= max_frame, f"a {length}-byte frame; the client allowed {max_frame}"
        payload = reply[pos + 9 : pos + 9 + length]
        pos += 9 + length
        if len(payload) < length:
            break  # the connection ended inside this frame
        if ftype in (0x1, 0x9):
            if ftype == 0x1 and flags & 0x8:
                payload = payload[1 : len(payload) - payload[0]]
            if ftype == 0x1 and flags & 0x20:
                payload = payload[5:]
            block += payload
            if flags & 0x4:
                try:
                    decoder.decode(block, raw=True)
                except hpack.HPACKError as exc:
                    raise AssertionError(f"a header block the client cannot decode: {exc}") from exc
                block = b""


def ingress_h2(live: LiveActivator, data: bytes) -> None:
    conversation, linger, max_frame = h2_conversation(ByteSource(data))
    reply = live.converse(conversation, linger)
    live.check()
    sent = b"".join(p for p in conversation if isinstance(p, bytes))
    if sent.startswith(PREFACE):
        check_h2_reply(reply, max_frame)
    else:  # not HTTP/2 with prior knowledge: taken as HTTP/1.1
        check_h1_reply(sent, reply)


# -- HTTP/1.1 clients ------------------------------------------------------------------------------


def h1_conversation(src: ByteSource) -> tuple[Conversation, float]:
    conversation: Conversation = []
    for _ in range(src.integer(1, 3)):
        if src.integer(0, 9) == 0:
            conversation.append(src.blob(200))
            continue
        line = b" ".join((src.choice(H1_METHODS), src.choice(PATHS), src.choice(H1_VERSIONS)))
        fields = [b"Host: localhost"] if src.integer(0, 5) else []
        for _ in range(src.integer(0, 5)):
            separator = src.choice([b": ", b":", b" : ", b":\t"])
            fields.append(src.choice(H1_NAMES) + separator + src.choice(H1_VALUES))
        eol = src.choice([b"\r\n", b"\r\n", b"\n"])
        conversation.append(eol.join([line, *fields]) + eol + eol + src.choice(H1_BODIES))
        if src.integer(0, 6) == 0:
            conversation.append(0.005)
    if src.flag():
        conversation = _resplit(src, conversation)
    return conversation, src.choice(LINGER)


class _Responses:
    """httptools callbacks: nothing to keep, the parser's errors are the check."""

    def on_message_complete(self) -> None:
        pass


def check_h1_reply(sent: bytes, reply: bytes) -> None:
    """The responses parse as HTTP/1.1 (a HEAD's answer, or a switch to HTTP/2, cannot be told
    apart without the request, so those replies are not parsed)."""
    if not reply or b"HEAD" in sent or reply.startswith(b"HTTP/1.1 101"):
        return
    try:
        httptools.HttpResponseParser(_Responses()).feed_data(reply)
    except httptools.HttpParserUpgrade:
        pass
    except httptools.HttpParserError as exc:
        raise AssertionError(f"a malformed HTTP/1.1 response ({exc}): {reply[:300]!r}") from exc


def ingress_h1(live: LiveActivator, data: bytes) -> None:
    conversation, linger = h1_conversation(ByteSource(data))
    reply = live.converse(conversation, linger)
    live.check()
    check_h1_reply(b"".join(p for p in conversation if isinstance(p, bytes)), reply)


# -- TLS clients ---------------------------------------------------------------------------------

# What a TLS client may offer by ALPN (None: no ALPN extension at all).
ALPN_OFFERS: list[list[str] | None] = [
    ["h2"], ["http/1.1"], ["h2", "http/1.1"], ["http/1.1", "h2"], None, ["spdy/3.1"], ["h2c"],
]  # fmt: skip


def ingress_tls(live: LiveActivator, data: bytes) -> None:
    """A conversation of either kind over TLS, whatever ALPN chose (HTTP/2 bytes on a connection
    that settled on HTTP/1.1, and the reverse, included), or one sent in plaintext to the TLS
    port. The reply is checked as the protocol ALPN chose: h2 only if it said h2 (RFC 9113 §3.2)."""
    src = ByteSource(data)
    plaintext = src.integer(0, 7) == 0
    alpn = src.choice(ALPN_OFFERS)
    max_frame = DEFAULT_FRAME
    if src.flag():
        conversation, linger, max_frame = h2_conversation(src)
    else:
        conversation, linger = h1_conversation(src)
    if plaintext:  # no handshake: the TLS layer refuses it, and nothing may be held or logged
        live.converse(conversation, linger, port=live.activator.tls_port)
        live.check()
        return
    reply, protocol = live.converse_tls(conversation, linger, alpn)
    live.check()
    if protocol == "h2":
        check_h2_reply(reply, max_frame)
    else:
        assert protocol in (None, "http/1.1"), f"ALPN chose {protocol!r} from {alpn}"
        check_h1_reply(b"".join(p for p in conversation if isinstance(p, bytes)), reply)


# -- a misbehaving pod ----------------------------------------------------------------------------

REFUSED_STREAM = 0x7
# SETTINGS values a pod may send (RFC 9113 §6.5.2), and some it may not.
VALID_SETTINGS = [
    (0x1, 0),
    (0x1, 4096),
    (0x3, 1),
    (0x3, 100),
    (0x4, 0),
    (0x4, 10),
    (0x4, 65535),
    (0x5, 16384),
]
INVALID_SETTINGS = [(0x2, 1), (0x4, 0x80000000), (0x5, 100)]
POD_STATUSES = [b"200", b"204", b"404", b"100", b"503", b"abc"]


def _settings(pairs: list[tuple[int, int]]) -> bytes:
    return frame(0x4, 0, 0, b"".join(struct.pack(">HL", k, v) for k, v in pairs))


def pod_script(src: ByteSource) -> tuple[Script, str]:
    """A script, and what it promises: "all" (GOAWAY(0) first: every request is answered by a
    good connection), "first" (the first request was refused unprocessed) or "" (nothing)."""
    encoder = hpack.Encoder()
    settings = _settings([src.choice(VALID_SETTINGS) for _ in range(src.integer(0, 3))])
    steps: list[bytes | float | None] = []
    expect: str | None = None  # decided by the first step that could concern a request
    for _ in range(src.integer(0, 10)):
        kind = src.integer(0, 12)
        sid = src.choice([1, 1, 3, 5, 2, 0])
        benign = False
        refusal = ""
        if kind <= 2:
            fields = [(b":status", src.choice(POD_STATUSES))]
            if src.flag():
                fields.append((b"content-length", src.choice([b"0", b"2", b"5", b"x"])))
            flags = src.choice([0x5, 0x4, 0x0, 0x1])
            steps.append(frame(0x1, flags, sid, bytes(encoder.encode(fields))))
        elif kind <= 4:
            body = b"d" * src.choice([0, 2, 5, 20000])
            steps.append(frame(0x0, src.choice([0x0, 0x1]), sid, body))
        elif kind == 5:
            code = src.choice([REFUSED_STREAM, REFUSED_STREAM, 0x8, 0x2, 0x0])
            steps.append(frame(0x3, 0, sid, struct.pack(">L", code)))
            refusal = "first" if (sid, code) == (1, REFUSED_STREAM) else ""
        elif kind == 6:
            last = src.choice([0, 0, 1, 3, 0x7FFFFFFF])
            steps.append(frame(0x7, 0, 0, struct.pack(">LL", last, src.choice([0x0, 0x2, 0xB]))))
            refusal = "all" if last == 0 else ""
        elif kind == 7:
            if src.flag():
                steps.append(_settings([src.choice(VALID_SETTINGS)]))
                benign = True
            elif src.flag():
                steps.append(frame(0x4, 0x1, 0, b""))  # ACK
                benign = True
            else:
                steps.append(_settings([src.choice(INVALID_SETTINGS)]))
        elif kind == 8:
            increment = src.choice([1, 65535, 0, 0x7FFFFFFF])
            stream = src.choice([0, 1, 3])
            steps.append(frame(0x8, 0, stream, struct.pack(">L", increment)))
            benign = stream == 0 and increment in (1, 65535)
        elif kind == 9:
            steps.append(frame(0x6, src.choice([0, 1]), 0, b"pingpong"))
            benign = True
        elif kind == 10:
            steps.append(src.blob(30))
        elif kind == 11:
            steps.append(0.005)
            benign = True
        else:
            steps.append(None)
        if expect is None and not benign:
            expect = refusal
    return Script(settings, steps), expect or ""


@dataclass
class Reply:
    status: bytes = b""
    body: bytes = b""
    ended: bool = False
    reset: int | None = None


async def _h2_requests(
    port: int, requests: list[tuple[bytes, bytes, bytes]], wait: float
) -> list[Reply]:
    """Send ``requests`` (method, path, body) on one HTTP/2 connection (h2's client); what came
    back for each within ``wait`` seconds."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    conn.initiate_connection()
    replies: dict[int, Reply] = {}
    for method, path, body in requests:
        sid = conn.get_next_available_stream_id()
        head = [
            (b":method", method),
            (b":scheme", b"http"),
            (b":authority", b"a"),
            (b":path", path),
        ]
        conn.send_headers(sid, head, end_stream=not body)
        if body:
            conn.send_data(sid, body, end_stream=True)
        replies[sid] = Reply()
    writer.write(conn.data_to_send())
    try:
        async with asyncio.timeout(wait):
            while not all(r.ended or r.reset is not None for r in replies.values()):
                data = await reader.read(65536)
                if not data:
                    break
                try:
                    events = conn.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    raise AssertionError(f"the reply broke HTTP/2 for the client: {exc!r}") from exc
                for event in events:
                    reply = replies.get(getattr(event, "stream_id", 0) or 0)
                    if isinstance(event, h2.events.ResponseReceived) and reply is not None:
                        reply.status = dict(event.headers)[b":status"]
                    elif isinstance(event, h2.events.DataReceived) and reply is not None:
                        reply.body += event.data
                        conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, h2.events.StreamEnded) and reply is not None:
                        reply.ended = True
                    elif isinstance(event, h2.events.StreamReset) and reply is not None:
                        reply.reset = event.error_code
                writer.write(conn.data_to_send())
    except TimeoutError:
        pass
    finally:
        writer.close()
    return list(replies.values())


def pod_misbehaviour(live: LiveActivator, data: bytes) -> None:
    src = ByteSource(data)
    script, expect = pod_script(src)
    requests = [
        src.choice([(b"GET", b"/", b""), (b"POST", b"/echo", b"p" * src.choice([1, 5000]))])
        for _ in range(src.integer(1, 3))
    ]
    pod = live.pod
    assert isinstance(pod, ScriptedPod)
    pod.arm(script)
    replies = live.loop.run_until_complete(
        _h2_requests(live.activator.listen_port, requests, 3.0 if expect == "all" else 0.05)
    )
    pod.disconnect()
    live.loop.run_until_complete(live.settle())
    live.check()
    if expect == "all":  # GOAWAY(0): that connection is done; a new one is the good kind
        for reply in replies:
            assert (reply.status, reply.body, reply.ended) == (b"200", GOOD_BODY, True), (
                f"a request the pod refused unprocessed (GOAWAY) was not replayed: {reply}"
            )
    elif expect == "first":  # the replay may go to the same connection, which then plays on
        assert replies[0].reset != REFUSED_STREAM, "the pod's REFUSED_STREAM reached the client"


# -- a misbehaving HTTP/1.1 pod ----------------------------------------------------------------------

H1_STATUS_LINES = [
    b"HTTP/1.1 200 OK", b"HTTP/1.1 204 No Content", b"HTTP/1.1 304 Not Modified",
    b"HTTP/1.1 100 Continue", b"HTTP/1.0 200 OK", b"HTTP/1.1 503 Busy", b"HTTP/1.1 99 X",
    b"HTTP/2.0 200 OK", b"garbage",
]  # fmt: skip
H1_POD_FIELDS = [
    b"content-length: 0", b"content-length: 2", b"content-length: 5", b"content-length: x",
    b"content-length: 2, 3", b"transfer-encoding: chunked", b"transfer-encoding: gzip",
    b"connection: close", b"connection: keep-alive", b"x-a: b", b"bad line", b"x-a: \x00",
    b"trailer: x-t", b"set-cookie: a=b",
]  # fmt: skip
H1_POD_BODIES = [
    b"", b"ok", b"hello", b"2\r\nok\r\n0\r\n\r\n", b"2\r\nok\r\n0\r\nx-t: 1\r\n\r\n",
    b"zz\r\n", b"2\r\nok", b"ffffffffffffffffff\r\n", b"d" * 20000,
]  # fmt: skip


def h1_pod_script(src: ByteSource) -> Script:
    steps: list[bytes | float | None] = []
    for _ in range(src.integer(0, 6)):
        kind = src.integer(0, 9)
        if kind <= 5:  # a response (or what passes for one)
            status = src.choice(H1_STATUS_LINES)
            fields = [src.choice(H1_POD_FIELDS) for _ in range(src.integer(0, 3))]
            if b" 304 " in status:
                # RFC 9110 §8.6 lets a 304's content-length describe a 200's content, which h2's
                # client (the check here) holds against the 304 itself: leave it out.
                fields = [f for f in fields if not f.startswith(b"content-length")]
            head = b"\r\n".join([status, *fields]) + b"\r\n\r\n"
            steps.append(head + src.choice(H1_POD_BODIES))
        elif kind == 6:
            steps.append(src.blob(40))
        elif kind == 7:
            steps.append(src.choice([0.005, 0.02]))
        elif kind == 8:
            steps.append(src.choice(H1_POD_BODIES))
        else:
            steps.append(None)
    return Script(b"", steps)


def pod_misbehaviour_h1(live: LiveActivator, data: bytes) -> None:
    src = ByteSource(data)
    script = h1_pod_script(src)
    requests = [
        src.choice([(b"GET", b"/", b""), (b"HEAD", b"/", b""), (b"POST", b"/echo", b"p" * 5)])
        for _ in range(src.integer(1, 3))
    ]
    pod = live.pod
    assert isinstance(pod, ScriptedPod)
    pod.arm(script)
    live.loop.run_until_complete(_h2_requests(live.activator.listen_port, requests, 0.05))
    pod.disconnect()
    live.loop.run_until_complete(live.settle())
    live.check()


# -- the pod side ----------------------------------------------------------------------------------

GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"pod"), (b":path", b"/")]
HEAD = [(b":method", b"HEAD"), *GET[1:]]
POD_NAMES = [
    b":status",
    b"content-length",
    b"grpc-status",
    b"x",
    b"te",
    b"connection",
    b":path",
    b"",
]
POD_VALUES = [b"200", b"100", b"204", b"0", b"5", b"abc", b"-1", b"trailers", b"", b"\x00", b" a"]
POD_STREAM_IDS = [0, 1, 2, 3, 5, 7, 9, 0x7FFFFFFF, 0x80000001]


def pod_h2(data: bytes) -> None:
    src = ByteSource(data)
    conn = pods.PodH2Connection(
        stream_window=src.integer(0, 1 << 20), connection_window=src.integer(65535, 1 << 24)
    )
    conn.initiate_connection()
    window = conn._recv_window
    encoder = hpack.Encoder()
    opened: list[int] = []
    wire: list[bytes] = []
    broken = False
    for _ in range(src.integer(1, 40)):
        op = src.integer(0, 9)
        if op == 0:
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, src.choice([GET, HEAD]), end_stream=src.flag())
            opened.append(sid)
        elif op == 1 and opened:
            sid = src.choice(opened)
            try:
                room = conn.local_flow_control_window(sid)
                size = min(room, src.integer(0, 100), conn.max_outbound_frame_size)
                conn.send_data(sid, b"x" * size, end_stream=src.flag())
            except pods.PodStreamGone:
                pass
        elif op == 2 and opened:
            conn.reset_stream(src.choice(opened), pods.CANCEL)
        elif op == 3:
            ftype = src.integer(0, 10)
            flags = src.integer(0, 255)
            sid = src.choice(POD_STREAM_IDS)
            if ftype in (0x1, 0x9) and src.flag():
                fields = [
                    (src.choice(POD_NAMES), src.choice(POD_VALUES))
                    for _ in range(src.integer(0, 5))
                ]
                payload = bytes(encoder.encode(fields))
            else:
                payload = src.blob(64)
            wire.append(frame(ftype, flags, sid, payload))
        elif op == 4:
            wire.append(src.blob(32))
        else:  # the pod's bytes arrive, in two reads cut anywhere
            blob = b"".join(wire)
            wire.clear()
            cut = src.integer(0, len(blob))
            for part in (blob[:cut], blob[cut:]):
                if broken:
                    assert conn.receive_data(part) == [], "read after a connection error"
                    continue
                try:
                    events = conn.receive_data(part)
                except pods.PodConnectionError:
                    broken = True
                    continue
                for event in events:
                    assert event[0] in range(1, 9), event
                    if event[0] in (pods.RESPONSE, pods.DATA, pods.TRAILERS, pods.RESET):
                        assert event[1] in opened, (event, opened)
                    if event[0] == pods.DATA and event[3]:
                        conn.increment_flow_control_window(event[3])
                assert conn._recv_window == window, "connection credit lost"
        conn.pop_output()


def hpack_strict(data: bytes) -> None:
    src = ByteSource(data)
    table_size = src.choice([0, 64, 4096, 65536])
    strict = strict_decoder(table_size)
    reference = hpack.Decoder(max_header_list_size=1 << 20)
    reference.max_allowed_table_size = table_size
    errors = (hpack.HPACKError, IndexError, TypeError, UnicodeDecodeError)
    for _ in range(src.integer(1, 4)):
        block = src.blob(200)
        ours: list[tuple[bytes, bytes]] | Exception
        theirs: list[tuple[bytes, bytes]] | Exception
        try:
            ours = [(bytes(n), bytes(v)) for n, v in strict.decode(block, raw=True)]
        except errors as exc:
            ours = exc
        try:
            theirs = [(bytes(n), bytes(v)) for n, v in reference.decode(block, raw=True)]
        except errors as exc:
            theirs = exc
        if isinstance(ours, Exception) or isinstance(theirs, Exception):
            if isinstance(theirs, Exception):
                assert isinstance(ours, Exception), f"accepted {block!r}, which hpack rejects"
            else:
                assert "table size update after a header field" in str(ours), (block, ours)
            return  # one side's table may now be out of step: the connection would be over
        assert ours == theirs, (block, ours, theirs)


# Targets by name: those that need a live activator take it first.
LIVE_TARGETS: dict[str, Callable[[LiveActivator, bytes], None]] = {
    "ingress_h2": ingress_h2,
    "ingress_h1": ingress_h1,
    "ingress_tls": ingress_tls,
    "pod_misbehaviour": pod_misbehaviour,
    "pod_misbehaviour_h1": pod_misbehaviour_h1,
}


def live_activator(
    target: str, new_loop: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
) -> LiveActivator:
    """The live activator ``target`` runs against, on the loop ``new_loop`` makes."""
    if target == "pod_misbehaviour":
        return LiveActivator(ScriptedPod(), new_loop=new_loop)
    if target == "pod_misbehaviour_h1":
        return LiveActivator(ScriptedPod(http1=True), new_loop=new_loop)
    return LiveActivator(tls=target == "ingress_tls", new_loop=new_loop)


PLAIN_TARGETS: dict[str, Callable[[bytes], None]] = {"pod_h2": pod_h2, "hpack_strict": hpack_strict}

__all__ = ["LIVE_TARGETS", "PLAIN_TARGETS"]
