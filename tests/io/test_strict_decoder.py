"""StrictDecoder: hpack.Decoder with a faster loop for one-byte indexed fields. It must accept and
reject exactly what hpack.Decoder does (RFC 7541) and return the same (name, value) bytes pairs, so
every test here decodes with both and compares."""

from __future__ import annotations

from collections.abc import Callable

import hpack
import pytest
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hypothesis import given, settings
from hypothesis import strategies as st

from activator.io import h2lib
from activator.io.h2lib import SizeUpdateKeepingEncoder, StrictDecoder, h2, strict_decoder

Fields = list[tuple[bytes, bytes]]
# (name, value, sensitive): sensitive fields use the never-indexed literal (RFC 7541 §6.2.3).
Field = tuple[bytes, bytes, bool]
# ("ok", fields) | ("rejected", None) | ("oversized", None)
Outcome = tuple[str, Fields | None]

MAX_LIST = 1 << 20  # strict_decoder's max_header_list_size


def reference_decoder() -> hpack.Decoder:
    return hpack.Decoder(max_header_list_size=MAX_LIST)


def pair() -> tuple[hpack.Decoder, hpack.Decoder]:
    """A fresh (reference, strict) decoder pair for a connection with a 4096-byte table setting."""
    strict = strict_decoder(4096)
    assert type(strict) is StrictDecoder
    return reference_decoder(), strict


def decode_reference(decoder: hpack.Decoder, block: bytes) -> Fields:
    return [(bytes(name), bytes(value)) for name, value in decoder.decode(block, raw=True)]


def decode_strict(decoder: hpack.Decoder, block: bytes) -> Fields:
    result = decoder.decode(block, raw=True)
    assert type(result) is list
    for field in result:
        assert len(field) == 2
        assert type(field[0]) is bytes
        assert type(field[1]) is bytes
    return [(field[0], field[1]) for field in result]


def outcome(
    decode: Callable[[hpack.Decoder, bytes], Fields], decoder: hpack.Decoder, block: bytes
) -> Outcome:
    """What the connection makes of a block, as activator/io/h2lib.py's ``_compression_errors`` maps
    it: an oversized list is a DenialOfServiceError, every other failure a COMPRESSION_ERROR."""
    try:
        return ("ok", decode(decoder, block))
    except hpack.OversizedHeaderListError:
        return ("oversized", None)
    except (hpack.HPACKError, IndexError, TypeError, UnicodeDecodeError):
        return ("rejected", None)


def assert_same_tables(reference: hpack.Decoder, strict: hpack.Decoder) -> None:
    assert list(strict.header_table.dynamic_entries) == list(reference.header_table.dynamic_entries)
    assert strict.header_table_size == reference.header_table_size


# == hand-built representations (RFC 7541 §5.1, §6), independent of hpack's encoder =================


def integer(value: int, prefix_bits: int, flags: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([flags | value])
    out = bytearray([flags | limit])
    value -= limit
    while value >= 128:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def string(data: bytes) -> bytes:
    return integer(len(data), 7) + data


def indexed(index: int) -> bytes:
    return integer(index, 7, 0x80)


def literal_incremental(name: bytes, value: bytes) -> bytes:
    return b"\x40" + string(name) + string(value)


def literal_plain(name: bytes, value: bytes) -> bytes:
    return b"\x00" + string(name) + string(value)


def size_update(size: int) -> bytes:
    return integer(size, 5, 0x20)


def test_hand_built_helpers_match_rfc7541_examples() -> None:
    # RFC 7541 §C.1: 10 with a 5-bit prefix, 1337 with a 5-bit prefix, 42 with an 8-bit prefix.
    assert integer(10, 5) == b"\x0a"
    assert integer(1337, 5) == b"\x1f\x9a\x0a"
    assert integer(42, 8) == b"\x2a"
    # §C.2.1: literal with indexing, custom-key: custom-header.
    assert literal_incremental(b"custom-key", b"custom-header") == bytes.fromhex(
        "400a637573746f6d2d6b65790d637573746f6d2d686561646572"
    )


# == valid blocks: differential against hpack's encoder ===========================================

_TCHAR_LOWER = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
_STATIC_NAMES = [
    b":authority",
    b":method",
    b":path",
    b":scheme",
    b":status",
    b"accept-encoding",
    b"content-type",
    b"cookie",
    b"user-agent",
    b"www-authenticate",
]
_names = st.one_of(
    st.sampled_from([*_STATIC_NAMES, b"x-a", b"x-b", b"grpc-timeout"]),
    st.text(alphabet=_TCHAR_LOWER, min_size=1, max_size=30).map(str.encode),
)
_common_values = st.sampled_from(
    [b"", b"GET", b"POST", b"/", b"https", b"gzip, deflate", b"1", b"v" * 100]
)
# Large values (cheap to draw) fill the 4096-byte table fast and force evictions; one larger than
# the whole table empties it (RFC 7541 §4.4).
_large_values = st.builds(
    lambda byte, n: bytes([byte]) * n,
    st.integers(0, 255),
    st.one_of(st.integers(200, 500), st.integers(200, 500), st.integers(200, 500), st.just(4200)),
)
_values = st.one_of(_common_values, st.binary(max_size=60), _common_values, _large_values)
_small_fields = st.lists(
    st.tuples(_names, st.binary(max_size=40), st.sampled_from([False, False, False, True])),
    min_size=1,
    max_size=10,
)
_fields = st.lists(
    st.tuples(_names, _values, st.sampled_from([False, False, False, True])), max_size=12
)
_step = st.fixed_dictionaries(
    {
        "fields": _fields,
        "huffman": st.booleans(),
        "repeat": st.booleans(),
        "table_sizes": st.lists(st.integers(0, 4096), max_size=2),
    }
)


def encode_fields(encoder: hpack.Encoder, fields: list[Field], huffman: bool) -> bytes:
    return encoder.encode(list(fields), huffman=huffman)


@settings(max_examples=80, deadline=None)
@given(steps=st.lists(_step, min_size=1, max_size=6))
def test_encoded_blocks_decode_identically(steps: list[dict[str, object]]) -> None:
    # hpack's own Encoder loses a size update when told the same size twice (see the test below).
    encoder = SizeUpdateKeepingEncoder()
    reference, strict = pair()
    previous: list[Field] = []
    for step in steps:
        fields: list[Field] = step["fields"]  # type: ignore[assignment]
        if step["repeat"] and previous:
            fields = previous + fields
        for size in step["table_sizes"]:  # type: ignore[attr-defined]
            encoder.header_table_size = size
        block = encode_fields(encoder, fields, bool(step["huffman"]))
        expected = decode_reference(reference, block)
        assert expected == [(n, v) for n, v, _ in fields]
        assert decode_strict(strict, block) == expected
        assert_same_tables(reference, strict)
        previous = fields


def test_the_encoder_keeps_a_size_update_when_told_the_same_size_twice() -> None:
    """Hypothesis found it: table size 0, then 39 twice. hpack 4's Encoder forgets the update to
    39 and indexes (:method, "") for a decoder whose table is still 0; ours signals it."""
    fields = [(b":authority", b""), (b":method", b"")]
    encoder = SizeUpdateKeepingEncoder()
    decoder = reference_decoder()
    encoder.header_table_size = 0
    assert decoder.decode(encoder.encode(fields, huffman=False), raw=True) == fields
    encoder.header_table_size = 39
    encoder.header_table_size = 39
    assert encoder.header_table_size == 39
    assert decoder.decode(encoder.encode(fields + fields, huffman=False), raw=True) == fields * 2
    assert decoder.header_table.maxsize == 39


# == arbitrary and damaged blocks: both accept or both reject =====================================


def assert_equivalent(reference: hpack.Decoder, strict: hpack.Decoder, block: bytes) -> bool:
    """Decode ``block`` with both; True when both accepted it (their states must then agree)."""
    want = outcome(decode_reference, reference, block)
    got = outcome(decode_strict, strict, block)
    assert got == want, f"block {block.hex()}"
    if want[0] != "ok":
        return False
    assert_same_tables(reference, strict)
    return True


def warm(
    reference: hpack.Decoder, strict: hpack.Decoder, fields: list[Field], huffman: bool
) -> None:
    block = encode_fields(hpack.Encoder(), fields, huffman)
    assert decode_strict(strict, block) == decode_reference(reference, block)
    assert_same_tables(reference, strict)


@settings(max_examples=200, deadline=None)
@given(block=st.binary(max_size=64))
def test_random_bytes_are_treated_alike_by_fresh_decoders(block: bytes) -> None:
    assert_equivalent(*pair(), block)


@settings(max_examples=200, deadline=None)
@given(
    warmup=st.lists(
        st.tuples(_names, st.binary(max_size=20), st.just(False)), min_size=1, max_size=20
    ),
    huffman=st.booleans(),
    blocks=st.lists(st.binary(min_size=1, max_size=48), min_size=1, max_size=4),
)
def test_random_bytes_after_a_warm_table_are_treated_alike(
    warmup: list[Field], huffman: bool, blocks: list[bytes]
) -> None:
    reference, strict = pair()
    warm(reference, strict, warmup, huffman)
    for block in blocks:
        if not assert_equivalent(reference, strict, block):
            break


@settings(max_examples=200, deadline=None)
@given(fields=_small_fields, huffman=st.booleans(), data=st.data())
def test_damaged_valid_blocks_are_treated_alike(
    fields: list[Field], huffman: bool, data: st.DataObject
) -> None:
    block = encode_fields(hpack.Encoder(), fields, huffman)
    at = data.draw(st.integers(0, len(block) - 1), label="position")
    kind = data.draw(st.sampled_from(["truncate", "replace", "insert", "delete"]), label="damage")
    byte = bytes([data.draw(st.integers(0, 255), label="byte")])
    if kind == "truncate":
        damaged = block[:at]
    elif kind == "replace":
        damaged = block[:at] + byte + block[at + 1 :]
    elif kind == "insert":
        damaged = block[:at] + byte + block[at:]
    else:
        damaged = block[:at] + block[at + 1 :]
    assert_equivalent(*pair(), damaged)


@settings(max_examples=200, deadline=None)
@given(fields=_small_fields, huffman=st.booleans(), limit=st.integers(0, 600))
def test_header_list_limit_is_applied_alike(fields: list[Field], huffman: bool, limit: int) -> None:
    reference, strict = pair()
    reference.max_header_list_size = limit
    strict.max_header_list_size = limit
    block = encode_fields(hpack.Encoder(), fields, huffman)
    result = outcome(decode_strict, strict, block)
    assert result == outcome(decode_reference, reference, block)
    size = sum(len(n) + len(v) + 32 for n, v, _ in fields)
    assert result[0] == ("ok" if size <= limit else "oversized")


# == RFC 7541 cases both must reject ===============================================================

NAME_A = literal_plain(b"a", b"a")  # a valid field, to put things after

REJECTED: list[tuple[str, bytes, type[hpack.HPACKError]]] = [
    # §6.1: "The index value of 0 is not used. It MUST be treated as a decoding error".
    ("index-zero", b"\x80", hpack.InvalidTableIndexError),
    ("index-zero-after-field", b"\x82\x80", hpack.InvalidTableIndexError),
    # §2.3.3: an index past the static and dynamic tables MUST be treated as a decoding error.
    ("index-62-empty-table", indexed(62), hpack.InvalidTableIndexError),
    ("index-126-empty-table", indexed(126), hpack.InvalidTableIndexError),
    ("index-127-multibyte-empty-table", indexed(127), hpack.InvalidTableIndexError),
    ("index-1000", indexed(1000), hpack.InvalidTableIndexError),
    (
        "index-past-one-entry",
        literal_incremental(b"x", b"y") + indexed(63),
        hpack.InvalidTableIndexError,
    ),
    (
        "name-index-past-table-incremental",
        integer(62, 6, 0x40) + string(b"v"),
        hpack.InvalidTableIndexError,
    ),
    (
        "name-index-past-table-plain",
        integer(62, 4, 0x00) + string(b"v"),
        hpack.InvalidTableIndexError,
    ),
    (
        "name-index-past-table-never",
        integer(62, 4, 0x10) + string(b"v"),
        hpack.InvalidTableIndexError,
    ),
    # §4.2: a dynamic table size update MUST come at the beginning of the first block after a change.
    ("size-update-after-field", b"\x82\x3f\xe1\x1f", hpack.HPACKDecodingError),
    ("size-update-after-literal", NAME_A + size_update(0), hpack.HPACKDecodingError),
    # §6.3: the new maximum size MUST be lower than or equal to the protocol limit (4096 here).
    ("size-update-4097", size_update(4097), hpack.InvalidTableSizeError),
    ("size-update-huge", size_update(1 << 30), hpack.InvalidTableSizeError),
    (
        "size-update-ok-then-too-big",
        size_update(0) + size_update(4097),
        hpack.InvalidTableSizeError,
    ),
    # §5.2: padding longer than 7 bits, padding that is not the EOS prefix, or the EOS symbol.
    ("huffman-padding-8-bits", b"\x00\x01a\x82\x1f\xff", hpack.HPACKDecodingError),
    ("huffman-padding-zeros", b"\x00\x01a\x81\x18", hpack.HPACKDecodingError),
    ("huffman-padding-mixed", b"\x00\x01a\x81\x1d", hpack.HPACKDecodingError),
    ("huffman-padding-only-byte", b"\x00\x01a\x81\xff", hpack.HPACKDecodingError),
    ("huffman-eos-symbol", b"\x00\x01a\x84\xff\xff\xff\xfc", hpack.HPACKDecodingError),
    ("huffman-eos-and-padding", b"\x00\x01a\x84\xff\xff\xff\xff", hpack.HPACKDecodingError),
    ("huffman-bad-padding-in-name", b"\x00\x81\x18\x01a", hpack.HPACKDecodingError),
    ("huffman-bad-padding-indexed-name", b"\x44\x81\x18", hpack.HPACKDecodingError),
    # Truncated blocks (§5.1 integers, §5.2 string lengths).
    ("truncated-index", b"\xff", hpack.HPACKDecodingError),
    ("truncated-index-continuation", b"\xff\x80", hpack.HPACKDecodingError),
    ("truncated-index-after-field", b"\x82\xff", hpack.HPACKDecodingError),
    ("truncated-size-update", b"\x3f", hpack.HPACKDecodingError),
    ("truncated-literal-first-byte", b"\x40", hpack.HPACKDecodingError),
    ("truncated-literal-name", b"\x00\x05ab", hpack.HPACKDecodingError),
    ("truncated-literal-no-value", b"\x00\x01a", hpack.HPACKDecodingError),
    ("truncated-literal-value", b"\x00\x01a\x85abc", hpack.HPACKDecodingError),
    ("truncated-indexed-name", b"\x0f", hpack.HPACKDecodingError),
    ("truncated-indexed-name-value", b"\x44\x03/a", hpack.HPACKDecodingError),
    ("truncated-after-valid-field", b"\x82\x00", hpack.HPACKDecodingError),
    # §5.1: integers past the implementation's limit.
    ("overlong-integer", b"\xff\xff\xff\xff\xff\xff\x01", hpack.HPACKDecodingError),
]


@pytest.mark.parametrize(
    ("block", "error"), [(b, e) for _, b, e in REJECTED], ids=[i for i, _, _ in REJECTED]
)
def test_invalid_block_is_rejected_by_both(block: bytes, error: type[hpack.HPACKError]) -> None:
    reference, strict = pair()
    with pytest.raises(error) as want:
        reference.decode(block, raw=True)
    with pytest.raises(error) as got:
        strict.decode(block, raw=True)
    assert not isinstance(want.value, hpack.OversizedHeaderListError)
    assert not isinstance(got.value, hpack.OversizedHeaderListError)


ACCEPTED: list[tuple[str, bytes, Fields]] = [
    ("empty-block", b"", []),
    ("static-index-1", b"\x81", [(b":authority", b"")]),
    ("static-index-61", indexed(61), [(b"www-authenticate", b"")]),
    ("size-update-4096-first", b"\x3f\xe1\x1f\x82", [(b":method", b"GET")]),
    (
        "two-size-updates-first",
        size_update(0) + size_update(4096) + b"\x82",
        [(b":method", b"GET")],
    ),
    ("huffman-padding-3-bits", b"\x00\x01a\x81\x1f", [(b"a", b"a")]),
    ("huffman-empty-string", b"\x00\x01a\x80", [(b"a", b"")]),
    ("huffman-name", b"\x00\x81\x1f\x01b", [(b"a", b"b")]),
    ("never-indexed", b"\x10\x01a\x01b", [(b"a", b"b")]),
    # HPACK has no opinion on field names: an empty one is HTTP/2's business (RFC 9113 §8.2.1).
    ("empty-name-and-value", b"\x00\x00\x00", [(b"", b"")]),
    ("empty-name-indexed", b"\x40\x00\x01a\xbe", [(b"", b"a"), (b"", b"a")]),
    ("never-indexed-name-index", b"\x14\x01/", [(b":path", b"/")]),
    ("incremental-then-indexed", literal_incremental(b"x", b"y") + indexed(62), [(b"x", b"y")] * 2),
    # RFC 7541 §C.4.1: first request, Huffman coded.
    (
        "rfc7541-c41",
        bytes.fromhex("828684418cf1e3c2e5f23a6ba0ab90f4ff"),
        [
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":path", b"/"),
            (b":authority", b"www.example.com"),
        ],
    ),
]


@pytest.mark.parametrize(
    ("block", "expected"), [(b, e) for _, b, e in ACCEPTED], ids=[i for i, _, _ in ACCEPTED]
)
def test_valid_block_is_accepted_by_both(block: bytes, expected: Fields) -> None:
    reference, strict = pair()
    assert decode_reference(reference, block) == expected
    assert decode_strict(strict, block) == expected
    assert_same_tables(reference, strict)


def test_shrunk_setting_needs_a_size_update() -> None:
    # §4.2: after SETTINGS_HEADER_TABLE_SIZE shrinks, the next block must start with an update.
    reference, strict = pair()
    for decoder in (reference, strict):
        decoder.max_allowed_table_size = 100
    with pytest.raises(hpack.InvalidTableSizeError):
        reference.decode(b"\x82", raw=True)
    with pytest.raises(hpack.InvalidTableSizeError):
        strict.decode(b"\x82", raw=True)
    block = size_update(100) + b"\x82"
    reference, strict = pair()
    for decoder in (reference, strict):
        decoder.max_allowed_table_size = 100
    assert (
        decode_strict(strict, block) == decode_reference(reference, block) == [(b":method", b"GET")]
    )


# == header list size ==============================================================================


def test_many_one_byte_indexed_fields_over_the_limit_are_oversized() -> None:
    # :method GET is 7 + 3 + 32 = 42 bytes a field: 25000 of them are over 1 MiB.
    block = b"\x82" * 25000
    reference, strict = pair()
    with pytest.raises(hpack.OversizedHeaderListError):
        reference.decode(block, raw=True)
    with pytest.raises(hpack.OversizedHeaderListError):
        strict.decode(block, raw=True)


def test_one_huge_literal_is_oversized() -> None:
    block = literal_plain(b"a", b"v" * MAX_LIST)
    reference, strict = pair()
    with pytest.raises(hpack.OversizedHeaderListError):
        reference.decode(block, raw=True)
    with pytest.raises(hpack.OversizedHeaderListError):
        strict.decode(block, raw=True)


@pytest.mark.parametrize(("limit", "accepted"), [(42, True), (41, False)])
def test_header_list_limit_is_inclusive(limit: int, accepted: bool) -> None:
    reference, strict = pair()
    reference.max_header_list_size = limit
    strict.max_header_list_size = limit
    want = outcome(decode_reference, reference, b"\x82")
    got = outcome(decode_strict, strict, b"\x82")
    assert got == want == (("ok", [(b":method", b"GET")]) if accepted else ("oversized", None))


def test_just_under_the_default_limit_is_accepted() -> None:
    # 24966 * 42 = 1048572 <= 1 MiB; one more field is over.
    reference, strict = pair()
    block = b"\x82" * 24966
    assert decode_strict(strict, block) == decode_reference(reference, block)
    with pytest.raises(hpack.OversizedHeaderListError):
        strict.decode(block + b"\x82", raw=True)


# == the dynamic table through one-byte indexed fields =============================================


def both(reference: hpack.Decoder, strict: hpack.Decoder, block: bytes) -> Fields:
    want = decode_reference(reference, block)
    assert decode_strict(strict, block) == want
    assert_same_tables(reference, strict)
    return want


def test_one_byte_indices_follow_insertions() -> None:
    reference, strict = pair()
    inserted = [(b"x-%d" % i, b"value-%d" % i) for i in range(10)]
    both(reference, strict, b"".join(literal_incremental(n, v) for n, v in inserted))
    # §2.3.3: index 62 is the newest entry, 71 the oldest.
    block = b"".join(indexed(62 + i) for i in range(10))
    assert both(reference, strict, block) == inserted[::-1]
    assert both(reference, strict, indexed(66)) == [inserted[5]]
    # A new insertion shifts every entry by one.
    both(reference, strict, literal_incremental(b"x-new", b"n"))
    assert both(reference, strict, indexed(62) + indexed(63) + indexed(72)) == [
        (b"x-new", b"n"),
        inserted[9],
        inserted[0],
    ]
    # Static entries are unaffected.
    assert both(reference, strict, b"\x82\x84") == [(b":method", b"GET"), (b":path", b"/")]


def test_one_byte_indices_follow_evictions() -> None:
    reference, strict = pair()
    # Each entry is 32 + 3 + 1000 = 1035 bytes: three fit in 4096, a fourth evicts the oldest.
    entries = [(b"e-%d" % i, bytes([0x61 + i]) * 1000) for i in range(6)]
    for name, value in entries:
        both(reference, strict, literal_incremental(name, value))
    assert len(strict.header_table.dynamic_entries) == 3
    assert both(reference, strict, indexed(62) + indexed(63) + indexed(64)) == [
        entries[5],
        entries[4],
        entries[3],
    ]
    # The evicted ones are gone: index 65 is past the table.
    for decoder in (reference, strict):
        with pytest.raises(hpack.InvalidTableIndexError):
            decoder.decode(indexed(65), raw=True)


def test_one_byte_indices_after_a_size_update_evicts() -> None:
    reference, strict = pair()
    entries = [(b"s-%d" % i, b"v" * 60) for i in range(8)]  # 32 + 3 + 60 = 95 bytes each
    both(reference, strict, b"".join(literal_incremental(n, v) for n, v in entries))
    # Shrink to 200 bytes: only the two newest entries stay.
    assert both(reference, strict, size_update(200) + indexed(62) + indexed(63)) == [
        entries[7],
        entries[6],
    ]
    for decoder in (reference, strict):
        with pytest.raises(hpack.InvalidTableIndexError):
            decoder.decode(indexed(64), raw=True)
    # Size 0 empties the table.
    both(reference, strict, size_update(0))
    for decoder in (reference, strict):
        with pytest.raises(hpack.InvalidTableIndexError):
            decoder.decode(indexed(62), raw=True)


def test_an_entry_larger_than_the_table_empties_it() -> None:
    reference, strict = pair()
    both(reference, strict, literal_incremental(b"small", b"1"))
    both(reference, strict, literal_incremental(b"big", b"b" * 5000))
    assert len(strict.header_table.dynamic_entries) == 0
    for decoder in (reference, strict):
        with pytest.raises(hpack.InvalidTableIndexError):
            decoder.decode(indexed(62), raw=True)


def test_indices_past_126_use_the_multibyte_form() -> None:
    reference, strict = pair()
    # 100 entries of 32 + 4 + 1 = 37 bytes (3700 <= 4096): indices 62..161.
    entries = [(b"n%03d" % i, b"v") for i in range(100)]
    both(reference, strict, b"".join(literal_incremental(n, v) for n, v in entries))
    assert indexed(126) == b"\xfe"
    assert indexed(127) == b"\xff\x00"
    block = indexed(126) + indexed(127) + indexed(128) + indexed(161) + indexed(62)
    assert both(reference, strict, block) == [
        entries[100 - 65],
        entries[100 - 66],
        entries[100 - 67],
        entries[0],
        entries[99],
    ]
    for decoder in (reference, strict):
        with pytest.raises(hpack.InvalidTableIndexError):
            decoder.decode(indexed(162), raw=True)


# == the connection's mapping of decoder failures (activator/io/h2lib.py) ==========================


def test_connection_maps_a_decoding_failure_to_compression_error() -> None:
    decode_headers = h2.connection._decode_headers
    with pytest.raises(h2.exceptions.ProtocolError) as caught:
        decode_headers(strict_decoder(4096), b"\x80")
    assert not isinstance(caught.value, h2.exceptions.DenialOfServiceError)
    assert caught.value.error_code == h2.errors.ErrorCodes.COMPRESSION_ERROR


def test_connection_maps_an_oversized_list_to_denial_of_service() -> None:
    with pytest.raises(h2.exceptions.DenialOfServiceError):
        h2.connection._decode_headers(strict_decoder(4096), b"\x82" * 25000)


def test_connection_decodes_a_valid_block_with_the_strict_decoder() -> None:
    assert h2.connection._decode_headers(strict_decoder(4096), b"\x82\x86\x84") == [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", b"/"),
    ]


# == the cache of literal fields without indexing ===================================================


def _huffman(value: bytes) -> bytes:
    return bytes(HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(value))


def test_repeated_literal_without_indexing_decodes_as_the_reference_does() -> None:
    value = _huffman(b"/cached/path")
    block = bytes([0x82, 0x04, 0x80 | len(value)]) + value  # :method GET, :path literal, no index
    ours = h2lib.strict_decoder(4096)
    reference = hpack.Decoder()
    for _ in range(3):  # the first decodes and stores, the next ones are looked up
        assert ours.decode(block) == [tuple(f) for f in reference.decode(block, raw=True)]
    assert block[1:] in h2lib._LITERALS
    # The dynamic table is untouched by such fields, on both sides.
    assert len(ours.header_table.dynamic_entries) == 0


def test_a_truncated_copy_of_a_stored_literal_is_still_rejected() -> None:
    value = _huffman(b"/stored")
    literal = bytes([0x04, 0x80 | len(value)]) + value
    h2lib.strict_decoder(4096).decode(literal)
    assert literal in h2lib._LITERALS
    with pytest.raises(hpack.HPACKDecodingError):
        h2lib.strict_decoder(4096).decode(literal[:-1])


def test_never_indexed_literals_are_not_stored() -> None:
    value = b"secret-token-value"
    block = bytes([0x14, len(value)]) + value  # never indexed, name :path (static 4)
    decoded = h2lib.strict_decoder(4096).decode(block)
    assert decoded == [(b":path", value)]
    assert type(decoded[0]) is hpack.NeverIndexedHeaderTuple
    assert not any(value in key for key in h2lib._LITERALS)
