"""Beyond h2spec: the activator's own limits and its isolation of one client from another.

A proxy multiplexes every client onto shared pod connections, so one client's misbehaviour - too
many streams, floods of PING or SETTINGS, a window kept at zero, a socket never read, a huge header
block - must cost that client only: another client on its own connection still gets its answers.
"""

from __future__ import annotations

from frames import (
    END_STREAM,
    MAX_FRAME_SIZE,
    MAX_WINDOW,
    ConformanceFailure,
    ErrorCode,
    FrameType,
    H2Client,
    Setting,
    data,
    ping,
    raw_frame,
    request,
    rst_stream,
    settings_frame,
    window_update,
)
from under_test import ActivatorUnderTest, running_activator

from activator.config import LimitsConfig
from activator.core.resets import MIN_STREAMS

CALM = ErrorCode.ENHANCE_YOUR_CALM
MIB = 1 << 20


async def _other_client_is_served(act: ActivatorUnderTest, download: int = MIB) -> None:
    """A new connection gets a small response and a ``download``-byte one, both complete.

    Against a client that holds pod data hostage, a long download matters: it keeps the shared pod
    connection busy until the hostage data has had every chance to use up that connection's window.
    """
    other = await act.client()
    other.send(other.headers(1, request("/")), other.headers(3, request(f"/bytes/{download}")))
    hello = await other.expect_response(1)
    assert bytes(hello.body) == b"hello from a\n"
    body = await other.expect_response(3)
    assert len(body.body) == download
    # /bytes/N repeats 0x00..0xff: a lost, duplicated or reordered chunk would show.
    assert body.body == (bytes(range(256)) * (download // 256 + 1))[:download]


async def test_rfc9113_5_1_2_stream_over_max_concurrent_streams_is_refused(
    activator: ActivatorUnderTest,
) -> None:
    """RFC 9113 §5.1.2: with its 250 streams open, a client's 251st gets RST_STREAM(REFUSED_STREAM)
    (safe to retry, RFC 9113 §8.7), not a connection error that would also kill the 250; those
    still complete, and other clients are unaffected."""
    h2 = await activator.client()
    limit = h2.server_settings[Setting.MAX_CONCURRENT_STREAMS]
    assert limit == 250
    frames = [
        h2.headers(1 + 2 * i, request("/echo", "POST"), end_stream=False) for i in range(limit)
    ]
    h2.send(*frames)
    extra = 1 + 2 * limit
    h2.send(h2.headers(extra, request("/echo", "POST"), end_stream=False))
    await h2.expect_stream_error(extra, ErrorCode.REFUSED_STREAM, connection_error=False)
    h2.send(data(1, b"first", end_stream=True), data(2 * limit - 1, b"last", end_stream=True))
    assert bytes((await h2.expect_response(1)).body) == b"first"
    assert bytes((await h2.expect_response(2 * limit - 1)).body) == b"last"
    # The refused stream id was used up; the next one is accepted now that two streams closed.
    h2.send(h2.headers(extra + 2, request("/")))
    assert (await h2.expect_response(extra + 2)).status == 200
    await _other_client_is_served(activator)


async def test_rfc9113_10_5_ping_flood_does_not_starve_other_clients(
    activator: ActivatorUnderTest,
) -> None:
    """30,000 PINGs in one burst, never read: another client is still served; the flooder either
    still works or was told ENHANCE_YOUR_CALM (RFC 9113 §10.5)."""
    flooder = await activator.client()
    flooder.send(b"".join(ping(i.to_bytes(8, "big")) for i in range(30_000)))
    await _other_client_is_served(activator)
    await flooder.expect_alive(CALM)


async def test_rfc9113_10_5_settings_flood_does_not_starve_other_clients(
    activator: ActivatorUnderTest,
) -> None:
    """20,000 SETTINGS frames (each to be acknowledged) in one burst, never read: another client
    is still served; the flooder either still works or was told ENHANCE_YOUR_CALM."""
    flooder = await activator.client()
    frame = settings_frame([(Setting.INITIAL_WINDOW_SIZE, 65535), (Setting.ENABLE_PUSH, 0)])
    flooder.send(frame * 20_000)
    await _other_client_is_served(activator)
    await flooder.expect_alive(CALM)


async def test_rfc9113_5_2_client_with_zero_window_does_not_block_others(
    activator: ActivatorUnderTest,
) -> None:
    """A client with SETTINGS_INITIAL_WINDOW_SIZE = 0 asks for 20 responses of 4 MiB (80 MiB,
    more than the activator's receive window on its shared pod connection) and never opens its
    window: nothing can be sent to it, and another client's downloads still complete."""
    stuck = await activator.client([(Setting.INITIAL_WINDOW_SIZE, 0)])
    stuck.auto_window = False
    stuck.send(*(stuck.headers(1 + 2 * i, request(f"/bytes/{4 * MIB}")) for i in range(20)))
    await stuck.expect_headers(39)
    await _other_client_is_served(activator, 48 * MIB)
    await stuck.expect_alive()
    assert not any(stuck.stream(1 + 2 * i).body for i in range(20))


async def test_rfc9113_5_2_client_that_never_reads_does_not_block_others(
    activator: ActivatorUnderTest,
) -> None:
    """A client opens its windows wide, asks for 20 responses of 4 MiB (more than the activator's
    receive window on its shared pod connection) and never reads its socket: TCP backpressure stops
    the activator's writes to it, and another client's downloads still complete."""
    stuck = await activator.client([(Setting.INITIAL_WINDOW_SIZE, MAX_WINDOW)])
    stuck.send(window_update(0, MAX_WINDOW - 65535))
    stuck.send(*(stuck.headers(1 + 2 * i, request(f"/bytes/{4 * MIB}")) for i in range(20)))
    # ``stuck`` is never read again: its socket buffers fill and the activator must stop writing.
    await _other_client_is_served(activator, 48 * MIB)


async def test_cve_2023_44487_rapid_reset_is_cut_off_and_spares_other_clients(
    activator: ActivatorUnderTest,
) -> None:
    """Rapid reset: 2,000 streams, each reset right after the HEADERS that opened it, in one
    burst. No stream ever stays open, so the concurrency limit never bites; the activator counts
    the premature resets and ends the connection with GOAWAY(ENHANCE_YOUR_CALM) once MIN_STREAMS
    streams were opened. The pod is sent no more than those; another client is served."""
    flooder = await activator.client()
    frames = []
    for i in range(2_000):
        stream_id = 1 + 2 * i
        frames += [flooder.headers(stream_id, request("/")), rst_stream(stream_id)]
    flooder.send(*frames)
    outcome = await flooder.expect_connection_error(CALM)
    assert outcome.kind == "goaway"
    await _other_client_is_served(activator)
    # The other client's two requests included.
    assert activator.pod.stats.requests <= MIN_STREAMS + 2
    assert activator.activator.clients.closed["rapid_reset"] == 1


def _rapid_reset_flood(flooder: H2Client, streams: int) -> None:
    frames = []
    for i in range(streams):
        stream_id = 1 + 2 * i
        frames += [flooder.headers(stream_id, request("/")), rst_stream(stream_id)]
    flooder.send(*frames)


async def test_premature_reset_streams_sets_where_a_flood_is_cut() -> None:
    """``limits.premature_reset_streams: 40``: a flood of 100 streams, which the default of 500
    would not judge yet, is cut."""
    assert MIN_STREAMS > 100
    async with running_activator(LimitsConfig(premature_reset_streams=40)) as activator:
        flooder = await activator.client()
        _rapid_reset_flood(flooder, 100)
        outcome = await flooder.expect_connection_error(CALM)
        assert outcome.kind == "goaway"
        await _other_client_is_served(activator)
        assert activator.pod.stats.requests <= 40 + 2
        assert activator.activator.clients.closed["rapid_reset"] == 1


async def test_premature_reset_streams_zero_turns_the_rule_off() -> None:
    """``0``: a client that resets everything it opens keeps its connection (and is served)."""
    async with running_activator(LimitsConfig(premature_reset_streams=0)) as activator:
        client = await activator.client()
        _rapid_reset_flood(client, 2 * MIN_STREAMS)
        assert await client.expect_alive()
        stream_id = 1 + 2 * (2 * MIN_STREAMS)
        client.send(client.headers(stream_id, request("/")))
        assert (await client.expect_response(stream_id)).status == 200
        assert activator.activator.clients.closed["rapid_reset"] == 0


async def test_a_client_that_cancels_some_streams_at_once_keeps_its_connection(
    activator: ActivatorUnderTest,
) -> None:
    """Two streams in five cancelled the moment they open, over 2 x MIN_STREAMS streams: a client
    cancelling on deadline is not an attacker; every stream it did not cancel is answered."""
    client = await activator.client()
    kept = []
    for i in range(2 * MIN_STREAMS):
        stream_id = 1 + 2 * i
        if i % 5 < 2:
            client.send(client.headers(stream_id, request("/")), rst_stream(stream_id))
        else:
            client.send(client.headers(stream_id, request("/")))
            kept.append(stream_id)
        if len(kept) % 100 == 0 and kept:  # keep below the 250 concurrent streams
            for answered in kept[-100:]:
                assert (await client.expect_response(answered)).status == 200
    assert await client.expect_alive()


def _big_header_block(h2: H2Client, stream_id: int, total: int) -> list[bytes]:
    """A request whose header block is ``total`` octets, as HEADERS + CONTINUATION frames of
    16 KiB (uncompressed literals so the size is what is sent)."""
    fields = [(f"x-big-{i}", "v" * 8000) for i in range(total // 8000)]
    block = h2.encode(request(extra=fields), huffman=False)
    pieces = [block[i : i + MAX_FRAME_SIZE] for i in range(0, len(block), MAX_FRAME_SIZE)]
    frames = [raw_frame(FrameType.HEADERS, END_STREAM, stream_id, pieces[0])]
    frames += [h2.continuation(stream_id, p, end_headers=False) for p in pieces[1:-1]]
    frames.append(h2.continuation(stream_id, pieces[-1]))
    return frames


async def test_rfc9113_10_5_1_200_kib_header_block_gets_431(activator: ActivatorUnderTest) -> None:
    """A 200 KiB header block (HEADERS + 12 CONTINUATION): 431 on that stream, or a connection
    error (RFC 9113 §10.5.1 allows either); another connection is unaffected, and if only the stream
    was refused, the same connection keeps working."""
    h2 = await activator.client()
    h2.send(*_big_header_block(h2, 1, 200 * 1024))
    refused_stream_only = True
    try:
        response = await h2.expect_response(1)
    except ConformanceFailure:
        # Not a response: then it must be a connection error.
        refused_stream_only = False
        assert h2.goaway is not None or h2.closed, h2.recent()
        if h2.goaway is not None:
            assert h2.goaway.error_code in (CALM, ErrorCode.PROTOCOL_ERROR), h2.recent()
    if refused_stream_only:
        assert response.status == 431, h2.recent()
        await h2.expect_alive()
        h2.send(h2.headers(3, request()))
        assert (await h2.expect_response(3)).status == 200
    await _other_client_is_served(activator)
    # The other client's two requests, stream 3 if the connection survived; never the big one.
    assert activator.pod.stats.requests == 2 + int(refused_stream_only)
