"""What a client connection remembers of its closed streams (``ClosedStreams``): every recent reset
long enough to ignore the frames a peer sent before it saw the reset, recent normal closures for the
error code, and nothing without bound. Sans-I/O."""

from __future__ import annotations

import importlib
from typing import Any

import hpack
from hypothesis import given, settings
from hypothesis import strategies as st

from activator.io.h2base import ClosedStreams, ProxyH2Connection
from activator.io.h2lib import h2

CLOSED_BY: Any = importlib.import_module(h2.__name__ + ".stream").StreamClosedBy
RESETS = (CLOSED_BY.RECV_RST_STREAM, CLOSED_BY.SEND_RST_STREAM)
ENDS = (CLOSED_BY.RECV_END_STREAM, CLOSED_BY.SEND_END_STREAM, None)


class SmallClosedStreams(ClosedStreams):
    RESETS_KEPT = 4
    ENDS_KEPT = 3


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([*RESETS, *ENDS]), max_size=60))
def test_recent_closures_of_each_kind_are_kept_and_the_record_is_bounded(
    closures: list[Any],
) -> None:
    record = SmallClosedStreams()
    for index, closed_by in enumerate(closures):
        record[2 * index + 1] = closed_by
        assert len(record) <= 2 * (record.RESETS_KEPT + record.ENDS_KEPT)
    resets = [2 * i + 1 for i, c in enumerate(closures) if c in RESETS]
    ends = [2 * i + 1 for i, c in enumerate(closures) if c not in RESETS]
    must_know = resets[-record.RESETS_KEPT :] + ends[-record.ENDS_KEPT :]
    for stream_id in must_know:
        assert stream_id in record
        assert record[stream_id] is closures[stream_id // 2]
    for index, closed_by in enumerate(closures):
        stream_id = 2 * index + 1
        if stream_id in record:  # what it still knows, it knows right
            assert record[stream_id] is closed_by
    assert 2 * len(closures) + 1 not in record


def test_a_connection_that_carried_thousands_of_streams_keeps_a_bounded_record() -> None:
    """h2's own record grows to 65,536 closures per connection (about 8 MB); ours stays at a few
    hundred at most, and still holds the one stream the client reset at the start."""
    server = ProxyH2Connection.for_clients()
    client: Any = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    server.initiate_connection()
    client.initiate_connection()
    request = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "a")]
    response = [(b":status", b"200")]
    client.send_headers(1, request, end_stream=False)
    client.reset_stream(1)
    server.receive_data(client.data_to_send())
    streams = 3000
    for stream_id in range(3, 2 * streams + 3, 2):
        client.send_headers(stream_id, request, end_stream=True)
        server.receive_data(client.data_to_send())
        server.send_headers(stream_id, response, end_stream=True)
    server.pop_output()
    record = server._closed_streams
    assert isinstance(record, ClosedStreams)
    assert len(record) <= 2 * (record.RESETS_KEPT + record.ENDS_KEPT)
    assert record[1] is CLOSED_BY.RECV_RST_STREAM
    # Trailers the client sent before it reset stream 1, arriving 3,000 streams later: a stream
    # error (RST_STREAM), the connection goes on.
    late = hpack.Encoder().encode([("x-late", "trailer")])  # refers to no table entry
    server.receive_data(len(late).to_bytes(3, "big") + b"\x01\x05\x00\x00\x00\x01" + late)
    assert server.state_machine.state is not h2.connection.ConnectionState.CLOSED
    out = b"".join(server.pop_output())
    assert out[3] == 0x3  # RST_STREAM
    assert int.from_bytes(out[5:9], "big") == 1
