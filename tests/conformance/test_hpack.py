"""RFC 7541 (HPACK) as the activator decodes client header blocks (h2spec hpack/2.3.3 to
hpack/6.3, same section numbers).

Every decoding error is a connection error COMPRESSION_ERROR (RFC 9113 §4.3). The blocks are
written byte by byte: a valid request prefix from the static table (RFC 7541 Appendix A), then the
faulty representation. A few well-formed blocks that use what the faulty ones abuse (Huffman
strings, the dynamic table, table size updates) must be answered, so that a server rejecting
everything would not pass.
"""

from __future__ import annotations

from cases import Case, CaseList
from frames import (
    AUTHORITY,
    END_HEADERS,
    END_STREAM,
    ErrorCode,
    FrameType,
    H2Client,
    Setting,
    raw_frame,
    request,
    settings_frame,
)
from under_test import ActivatorUnderTest

CASES = CaseList()
COMPRESSION = ErrorCode.COMPRESSION_ERROR

# :method GET (index 2), :scheme http (6), :path / (4), then :authority (name index 1) as a literal
# without indexing (RFC 7541 §6.2.2).
REQUEST_PREFIX = b"\x82\x86\x84" + b"\x01" + bytes([len(AUTHORITY)]) + AUTHORITY.encode()


def _integer(value: int, prefix_bits: int, first_byte_flags: int) -> bytes:
    """An HPACK integer (RFC 7541 §5.1)."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte_flags | value])
    out = bytearray([first_byte_flags | limit])
    value -= limit
    while value >= 128:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def _block_frame(block: bytes, stream_id: int = 1) -> bytes:
    return raw_frame(FrameType.HEADERS, END_HEADERS | END_STREAM, stream_id, block)


async def _rejected(h2: H2Client, block: bytes) -> None:
    h2.send(_block_frame(block))
    await h2.expect_connection_error(COMPRESSION)


async def _answered(h2: H2Client, block: bytes, stream_id: int = 1) -> None:
    h2.send(_block_frame(block, stream_id))
    response = await h2.expect_response(stream_id)
    assert response.status == 200


# -- §2.3.3 Index address space ------------------------------------------------------------------


@CASES("rfc7541-2.3.3", h2spec="hpack/2.3.3/1")
async def indexed_field_beyond_tables(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """Indexed field 70 with an empty dynamic table (static table ends at 61):
    COMPRESSION_ERROR."""
    await _rejected(h2, REQUEST_PREFIX + _integer(70, 7, 0x80))


@CASES("rfc7541-2.3.3", h2spec="hpack/2.3.3/2")
async def literal_name_index_beyond_tables(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """A literal with incremental indexing whose name index is 70: COMPRESSION_ERROR."""
    await _rejected(h2, REQUEST_PREFIX + _integer(70, 6, 0x40) + b"\x01a")


# -- §4.2 Maximum table size ---------------------------------------------------------------------


@CASES("rfc7541-4.2", h2spec="hpack/4.2/1")
async def table_size_update_at_end_of_block(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """A dynamic table size update after field representations (it must come first in a block):
    COMPRESSION_ERROR."""
    await _rejected(h2, REQUEST_PREFIX + _integer(0, 5, 0x20))


@CASES("rfc7541-4.2", h2spec="-")
async def table_size_update_at_start_accepted(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """Table size updates (to 0, then to 4096) at the start of a block are valid: answered."""
    await _answered(h2, _integer(0, 5, 0x20) + _integer(4096, 5, 0x20) + REQUEST_PREFIX)


# -- §5.2 String literal representation ----------------------------------------------------------


def _huffman_value_field(huffman: bytes) -> bytes:
    """Literal without indexing, new name "x-h", value Huffman-coded as given (RFC 7541 §6.2.2)."""
    return b"\x00\x03x-h" + _integer(len(huffman), 7, 0x80) + huffman


@CASES("rfc7541-5.2", h2spec="hpack/5.2/1")
async def huffman_string_with_eos(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """A Huffman string containing the EOS symbol (30 one-bits): COMPRESSION_ERROR."""
    await _rejected(h2, REQUEST_PREFIX + _huffman_value_field(b"\xff\xff\xff\xff"))


@CASES("rfc7541-5.2", h2spec="hpack/5.2/2")
async def huffman_padding_over_7_bits(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """'a' (00011) followed by 11 one-bits of padding (more than 7): COMPRESSION_ERROR."""
    await _rejected(h2, REQUEST_PREFIX + _huffman_value_field(b"\x1f\xff"))


@CASES("rfc7541-5.2", h2spec="hpack/5.2/3")
async def huffman_padding_not_eos_prefix(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """'a' (00011) followed by zero-bits of padding (padding must be the EOS code's leading
    ones): COMPRESSION_ERROR."""
    await _rejected(h2, REQUEST_PREFIX + _huffman_value_field(b"\x18"))


@CASES("rfc7541-5.2", h2spec="-")
async def huffman_string_accepted(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """The same field with correct padding ('a' + 3 one-bits) is valid: answered."""
    await _answered(h2, REQUEST_PREFIX + _huffman_value_field(b"\x1f"))


# -- §6.1 Indexed header field representation ----------------------------------------------------


@CASES("rfc7541-6.1", h2spec="hpack/6.1/1")
async def indexed_field_zero(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """Indexed field with index 0: COMPRESSION_ERROR."""
    await _rejected(h2, REQUEST_PREFIX + b"\x80")


# -- §6.3 Dynamic table size update --------------------------------------------------------------


@CASES("rfc7541-6.3", h2spec="hpack/6.3/1")
async def table_size_update_over_settings(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """A table size update to 8192, above the SETTINGS_HEADER_TABLE_SIZE the server advertised
    (the default 4096): COMPRESSION_ERROR."""
    await _rejected(h2, _integer(8192, 5, 0x20) + REQUEST_PREFIX)


# -- §2.3.2 / §6.2.1 The dynamic table across blocks ---------------------------------------------


@CASES("rfc7541-6.2.1", h2spec="-")
async def dynamic_table_entries_reused(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """Stream 1 adds ":authority" and "x-tag: blue" to the dynamic table (incremental indexing);
    stream 3 refers to both by index (62 and 63, newest first): both answered."""
    authority = b"\x41" + bytes([len(AUTHORITY)]) + AUTHORITY.encode()
    tag = b"\x40\x05x-tag\x04blue"
    await _answered(h2, b"\x82\x86\x84" + authority + tag, 1)
    await _answered(h2, b"\x82\x86\x84" + _integer(63, 7, 0x80) + _integer(62, 7, 0x80), 3)


@CASES.parametrize()
async def test_hpack(case: Case, h2: H2Client, activator: ActivatorUnderTest) -> None:
    await case.run(h2, activator)


async def test_a_header_table_size_repeated_in_two_settings_keeps_the_size_update(
    activator: ActivatorUnderTest,
) -> None:
    """RFC 7541 §4.2, RFC 9113 §6.5.2: the client takes the activator's encoder table to 0, then to
    64 in two SETTINGS frames that carry the same value. The activator's next block must still
    start with the size update to 64 before it indexes anything: otherwise the client's table stays
    at 0 and a later block refers to an entry the client never had (python-hyper's hpack encoder
    drops a pending update when it is told the same size twice)."""
    client = await activator.client([(Setting.HEADER_TABLE_SIZE, 0)])
    client.send(client.headers(1, request("/")))
    assert (await client.expect_response(1)).status == 200
    assert client.decoder.header_table.maxsize == 0
    client.send(settings_frame([(Setting.HEADER_TABLE_SIZE, 64)]))
    client.send(settings_frame([(Setting.HEADER_TABLE_SIZE, 64)]))
    for stream_id in (3, 5, 7):  # the later responses reuse what the first one indexed
        client.send(client.headers(stream_id, request("/")))
        assert (await client.expect_response(stream_id)).status == 200
    assert client.decoder.header_table.maxsize == 64
