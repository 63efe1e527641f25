"""HTTP/1.1 robustness on the same client port (RFC 9112): request smuggling shapes, malformed
framing, limits, and pipelining.

Requests are written byte for byte on a raw TCP socket; responses are parsed here (status line,
fields, content-length or chunked body). Where RFC 9112 lets a server either reject a message or
repair it, both are accepted, but a smuggled request must never reach the pod, and a rejected
message must not leave the connection open for more.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import pytest
from frames import TIMEOUT
from under_test import ActivatorUnderTest


@dataclass
class H1Response:
    status: int
    fields: list[tuple[bytes, bytes]]
    body: bytes

    def field(self, name: bytes) -> bytes | None:
        for field_name, value in self.fields:
            if field_name == name:
                return value
        return None


async def _read_response(reader: asyncio.StreamReader) -> H1Response | None:
    """One response, or None if the connection closed cleanly before it started."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise AssertionError(
                f"connection closed inside a response head: {exc.partial!r}"
            ) from exc
        return None
    lines = head[:-4].split(b"\r\n")
    version, status, *_ = lines[0].split(b" ", 2)
    assert version == b"HTTP/1.1", lines[0]
    fields = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        fields.append((name.strip().lower(), value.strip()))
    response = H1Response(int(status), fields, b"")
    if response.field(b"transfer-encoding") == b"chunked":
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
            if size == 0:
                await _read_trailers(reader)
                break
            body += await reader.readexactly(size)
            assert await reader.readexactly(2) == b"\r\n"
        response.body = bytes(body)
    elif (length := response.field(b"content-length")) is not None:
        response.body = await reader.readexactly(int(length))
    else:
        response.body = await reader.read()
    return response


async def _read_trailers(reader: asyncio.StreamReader) -> None:
    while await reader.readuntil(b"\r\n") != b"\r\n":
        pass


async def _responses_until_close(reader: asyncio.StreamReader) -> list[H1Response]:
    """Every response until the server closes the connection (which it must, within the bound)."""
    responses = []
    try:
        async with asyncio.timeout(TIMEOUT):
            while (response := await _read_response(reader)) is not None:
                responses.append(response)
    except TimeoutError:
        raise AssertionError(
            f"the connection stayed open after {[r.status for r in responses]}"
        ) from None
    except ConnectionResetError:
        pass
    return responses


async def _exchange(act: ActivatorUnderTest, raw: bytes) -> list[H1Response]:
    reader, writer = await act.tcp()
    writer.write(raw)
    return await _responses_until_close(reader)


async def _pod_saw_only_probe(act: ActivatorUnderTest, *forbidden: str) -> None:
    """After a request on a new connection is answered, the pod's log holds none of ``forbidden``
    paths (anything the activator had forwarded before is ahead of the probe)."""
    reader, writer = await act.tcp()
    writer.write(b"GET /probe HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    responses = await _responses_until_close(reader)
    assert [r.status for r in responses] == [200]
    paths = [record.path for record in act.pod.stats.log]
    assert not set(forbidden) & set(paths), paths


async def _nothing_in_flight(act: ActivatorUnderTest) -> None:
    """Wait until the activator holds no request and no client connection (or fail, saying what)."""
    service = act.activator.services["default"]
    clients = act.activator.clients
    for _ in range(int(TIMEOUT / 0.01)):
        left = (service.throttle.in_flight, service.http1.current, len(clients.open))
        if left == (0, 0, 0):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"in flight, HTTP/1.1 concurrency, open connections: {left}")


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % (5 + len(SMUGGLED)) + SMUGGLED,
            id="rfc9112-6.1-cl-then-te",
        ),
        pytest.param(
            # Read by Content-Length, the body is the chunk-size line alone and /smuggled follows.
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Length: %d\r\n\r\n"
            % len(b"%x\r\n" % len(SMUGGLED))
            + b"%x\r\n" % len(SMUGGLED)
            + SMUGGLED
            + b"\r\n0\r\n\r\n",
            id="rfc9112-6.1-te-then-cl",
        ),
        pytest.param(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n"
            b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n" % (5 + len(SMUGGLED)) + SMUGGLED,
            id="rfc9112-5.1-space-before-colon",
        ),
        pytest.param(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
            b"0\r\n\r\n" + SMUGGLED,
            id="rfc9112-6.3-chunked-not-final",
        ),
    ],
)
async def test_rfc9112_smuggling_shapes_never_reach_the_pod(
    activator: ActivatorUnderTest, request_bytes: bytes
) -> None:
    """Content-Length and Transfer-Encoding together (RFC 9112 §6.1: reject, or use
    Transfer-Encoding alone and close the connection after responding), a field name with space
    before the colon (§5.1: MUST be 400), chunked not the final coding (§6.3: 400 and close): at
    most one response (a 400 or the echo), then close; /smuggled never reaches the pod."""
    responses = await _exchange(activator, request_bytes)
    assert len(responses) <= 1, [r.status for r in responses]
    for response in responses:
        assert response.status in (200, 400), response
    await _pod_saw_only_probe(activator, "/smuggled")


async def test_rfc9112_6_3_duplicate_content_length_is_400(activator: ActivatorUnderTest) -> None:
    """Two different Content-Length values (RFC 9112 §6.3 item 5: an unrecoverable framing error):
    400 and close; the pod never sees the request."""
    raw = (
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
    )
    responses = await _exchange(activator, raw)
    assert [r.status for r in responses] == [400]
    await _pod_saw_only_probe(activator, "/upload")


async def test_rfc9112_5_2_obs_fold_is_rejected_or_unfolded(activator: ActivatorUnderTest) -> None:
    """A folded field value (obs-fold, RFC 9112 §5.2): either 400, or the fold replaced by spaces
    before forwarding - the pod must never see a CR or LF in a value."""
    raw = (
        b"GET /headers HTTP/1.1\r\nHost: a\r\nX-Folded: first\r\n second\r\n"
        b"Connection: close\r\n\r\n"
    )
    responses = await _exchange(activator, raw)
    assert len(responses) == 1
    response = responses[0]
    if response.status == 400:
        await _pod_saw_only_probe(activator, "/headers")
        return
    assert response.status == 200, response
    seen = json.loads(response.body)["x-folded"]
    assert len(seen) == 1
    value = seen[0]
    assert "\r" not in value, value
    assert "\n" not in value, value
    assert value.split() == ["first", "second"], value


async def test_rfc9112_7_1_bad_chunk_size_is_400(activator: ActivatorUnderTest) -> None:
    """A chunk size that is not hexadecimal: 400 and close, and the pod never gets a complete
    body (RFC 9112 §7.1)."""
    raw = b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
    responses = await _exchange(activator, raw)
    assert [r.status for r in responses] == [400]
    reader, writer = await activator.tcp()
    writer.write(b"GET /probe HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert [r.status for r in await _responses_until_close(reader)] == [200]
    outcomes = [(r.path, r.outcome) for r in activator.pod.stats.log]
    assert ("/upload", "complete") not in outcomes, outcomes


async def test_rfc6585_5_oversized_header_block_is_431(activator: ActivatorUnderTest) -> None:
    """A header block over the 64 KiB limit: 431 (RFC 6585 §5) and close; the pod never sees it."""
    fields = b"".join(b"X-Big-%d: %s\r\n" % (i, b"v" * 1000) for i in range(100))
    raw = b"GET /big HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n"
    responses = await _exchange(activator, raw)
    assert [r.status for r in responses] == [431]
    await _pod_saw_only_probe(activator, "/big")


async def test_rfc9112_3_2_missing_host_is_400(activator: ActivatorUnderTest) -> None:
    """An HTTP/1.1 request without Host (RFC 9112 §3.2: MUST be 400)."""
    responses = await _exchange(activator, b"GET /nohost HTTP/1.1\r\n\r\n")
    assert [r.status for r in responses] == [400]
    await _pod_saw_only_probe(activator, "/nohost")


def _h2c_upgrade(path: bytes, *settings: bytes) -> bytes:
    fields = b"".join(b"HTTP2-Settings: " + value + b"\r\n" for value in settings)
    return (
        b"GET " + path + b" HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings, close\r\n"
        b"Upgrade: h2c\r\n" + fields + b"\r\n"
    )


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param(b"ASwD9Gc", id="not-whole-settings"),
        pytest.param(b"AAMAAABk!AQAoAAAAAIAAAAA", id="not-base64url"),
        pytest.param(b"AAIAAAAC", id="enable-push-2"),
        pytest.param(b"AAUAAEAA" + b"AAUAAD__", id="max-frame-size-under-16384"),
    ],
)
async def test_rfc7540_3_2_1_bad_http2_settings_is_400_before_any_upgrade(
    activator: ActivatorUnderTest, settings: bytes
) -> None:
    """An h2c Upgrade whose HTTP2-Settings is not a valid SETTINGS payload in base64url (RFC 7540
    §3.2.1, RFC 9113 §6.5.2): 400 that says so, and close - not 101 followed by a dropped
    connection; the pod never sees the request."""
    responses = await _exchange(activator, _h2c_upgrade(b"/bad-settings", settings))
    assert [r.status for r in responses] == [400]
    assert b"HTTP2-Settings" in responses[0].body, responses[0].body
    await _pod_saw_only_probe(activator, "/bad-settings")


async def test_rfc7540_3_2_1_two_http2_settings_fields_are_not_upgraded(
    activator: ActivatorUnderTest,
) -> None:
    """Two HTTP2-Settings fields: the server MUST NOT upgrade (RFC 7540 §3.2.1), so the request is
    answered over HTTP/1.1."""
    valid = b"AAMAAABkAAQAoAAAAAIAAAAA"
    responses = await _exchange(activator, _h2c_upgrade(b"/h2c-twice", valid, valid))
    assert [r.status for r in responses] == [200]
    assert "/h2c-twice" in [record.path for record in activator.pod.stats.log]


async def test_rfc9112_9_3_2_pipelined_requests_are_answered_in_order(
    activator: ActivatorUnderTest,
) -> None:
    """Three requests in one write (RFC 9112 §9.3.2): a 100,000-byte response, a small one and an
    echo, answered in the order asked, each complete."""
    reader, writer = await activator.tcp()
    writer.write(
        b"GET /bytes/100000 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nConnection: close\r\n\r\nping"
    )
    responses = await _responses_until_close(reader)
    assert [r.status for r in responses] == [200, 200, 200]
    big, hello, echo = responses
    assert big.body == (bytes(range(256)) * 400)[:100000]
    assert hello.body == b"hello from a\n"
    assert echo.body == b"ping"


async def _get_then_post_head(
    act: ActivatorUnderTest, fields: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A GET and, in the same write, the head of a pipelined POST /echo (with ``fields``) whose
    4-byte body is not sent; returns once the GET is answered."""
    reader, writer = await act.tcp()
    writer.write(
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n" + fields + b"\r\n"
    )
    async with asyncio.timeout(TIMEOUT):
        first = await _read_response(reader)
    assert first is not None
    assert (first.status, first.body) == (200, b"hello from a\n")
    return reader, writer


async def test_rfc9112_9_3_2_pipelined_body_sent_after_its_head_is_read(
    activator: ActivatorUnderTest,
) -> None:
    """A pipelined POST whose head came with the request before it and whose body comes in a later
    write: once its turn comes, its body is read and it is answered (not left waiting for a body
    the activator never reads)."""
    reader, writer = await _get_then_post_head(activator, b"Connection: close\r\n")
    writer.write(b"ping")
    responses = await _responses_until_close(reader)
    assert [(r.status, r.body) for r in responses] == [(200, b"ping")]


async def test_client_leaving_before_a_pipelined_body_leaves_nothing_in_flight(
    activator: ActivatorUnderTest,
) -> None:
    """The client sends a request and the head of a pipelined POST, then leaves without its body:
    the POST, dispatched once the first is answered, is cancelled and the connection closed, so no
    request stays in flight (the autoscaler would count it, and a pod's slot would stay taken)."""
    _reader, writer = await _get_then_post_head(activator)
    writer.close()
    await _nothing_in_flight(activator)


async def _all_responses(seen: bytes, reader: asyncio.StreamReader) -> list[H1Response]:
    """``seen`` plus everything until the server closes, parsed as responses."""
    async with asyncio.timeout(TIMEOUT):
        rest = await reader.read()
    replay = asyncio.StreamReader()
    replay.feed_data(seen + rest)
    replay.feed_eof()
    return await _responses_until_close(replay)


async def test_rfc9112_9_3_2_malformed_pipelined_request_is_answered_after_the_response_before_it(
    activator: ActivatorUnderTest,
) -> None:
    """Garbage pipelined behind a request whose response is still streaming: that response ends
    intact, then the 400 follows, then the connection closes (a 400 written in the middle of the
    chunked body would corrupt both)."""
    reader, writer = await activator.tcp()
    writer.write(b"GET /stream/3/50 HTTP/1.1\r\nHost: a\r\n\r\n")
    async with asyncio.timeout(TIMEOUT):
        seen = await reader.readuntil(b"chunk 0\n")
    writer.write(b"0\r\n\r\n")
    responses = await _all_responses(seen, reader)
    assert [r.status for r in responses] == [200, 400]
    assert responses[0].body == b"chunk 0\nchunk 1\nchunk 2\n"
    assert responses[1].body.startswith(b"malformed HTTP/1.1 request")
    await _nothing_in_flight(activator)


async def test_malformed_body_after_the_response_began_cuts_the_connection(
    activator: ActivatorUnderTest,
) -> None:
    """A chunked upload turns malformed while its echo is already streaming back: the request
    cannot complete and the response has begun, so the connection is cut, with no 400 written
    into the response's body, and the pod's stream is cancelled."""
    reader, writer = await activator.tcp()
    writer.write(
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    )
    async with asyncio.timeout(TIMEOUT):
        seen = await reader.readuntil(b"hello")
    writer.write(b"zz\r\n")
    async with asyncio.timeout(TIMEOUT):
        rest = await reader.read()
    assert b"HTTP/1.1 400" not in rest, rest
    assert seen.startswith(b"HTTP/1.1 200")
    await _nothing_in_flight(activator)


async def test_malformed_body_before_the_response_gets_400_and_cancels_the_request(
    activator: ActivatorUnderTest,
) -> None:
    """A chunked upload turns malformed before the pod answered: the request is cancelled and
    answered 400 instead, then the connection closes."""
    reader, writer = await activator.tcp()
    writer.write(
        b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    )
    await asyncio.sleep(0.05)
    writer.write(b"zz\r\n")
    responses = await _responses_until_close(reader)
    assert [r.status for r in responses] == [400]
    await _nothing_in_flight(activator)
