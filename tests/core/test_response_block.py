"""response_block: a pod's response field block (or trailers) checked against RFC 9113 §8 and shaped
for the client."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from activator.core.headers import HOP_BY_HOP, response_block

Fields = list[tuple[bytes, bytes]]


def ok(fields: Sequence[Sequence[bytes]], *, trailers: bool = False) -> tuple[Fields, int, int]:
    result = response_block(fields, trailers=trailers)
    assert not isinstance(result, str), result
    headers, status, length = result
    return headers, status, length


def bad(fields: Sequence[Sequence[bytes]], *, trailers: bool = False) -> str:
    result = response_block(fields, trailers=trailers)
    assert isinstance(result, str), f"accepted: {result!r}"
    assert result
    return result


# == valid responses ===============================================================================


def test_status_and_fields_pass_through() -> None:
    fields = [(b":status", b"200"), (b"content-type", b"text/plain"), (b"x-a", b"1")]
    assert ok(fields) == (fields, 200, -1)


@pytest.mark.parametrize("status", [b"100", b"103", b"204", b"304", b"404", b"599"])
def test_status_is_parsed(status: bytes) -> None:
    assert ok([(b":status", status)]) == ([(b":status", status)], int(status), -1)


def test_content_length_is_parsed() -> None:
    fields = [(b":status", b"200"), (b"content-length", b"1234")]
    assert ok(fields) == (fields, 200, 1234)


def test_zero_content_length() -> None:
    assert ok([(b":status", b"200"), (b"content-length", b"0")])[2] == 0


def test_repeated_equal_content_length_is_accepted() -> None:
    fields = [(b":status", b"200"), (b"content-length", b"5"), (b"content-length", b"5")]
    assert ok(fields) == (fields, 200, 5)


@pytest.mark.parametrize("value", [b"0", b"2"])
def test_a_204_loses_its_content_length(value: bytes) -> None:
    """RFC 9110 §8.6: a 204 must not have one; passed on, strict clients wait for content."""
    fields = [(b":status", b"204"), (b"content-length", value), (b"x-a", b"1")]
    assert ok(fields) == ([(b":status", b"204"), (b"x-a", b"1")], 204, int(value))


def test_a_304_keeps_its_content_length() -> None:
    """RFC 9110 §8.6: a 304's may describe the content a 200 would have had."""
    fields = [(b":status", b"304"), (b"content-length", b"20")]
    assert ok(fields) == (fields, 304, 20)


@pytest.mark.parametrize("name", [b"proxy-authenticate", b"proxy-authorization", b"http2-settings"])
def test_hop_by_hop_fields_are_dropped(name: bytes) -> None:
    fields = [
        (b":status", b"407"),
        (b"x-before", b"1"),
        (name, b"Basic realm=x"),
        (b"x-after", b"2"),
    ]
    assert ok(fields) == (
        [(b":status", b"407"), (b"x-before", b"1"), (b"x-after", b"2")],
        407,
        -1,
    )


def test_te_trailers_is_dropped() -> None:
    fields = [(b":status", b"200"), (b"te", b"trailers"), (b"content-type", b"application/grpc")]
    assert ok(fields)[0] == [(b":status", b"200"), (b"content-type", b"application/grpc")]


def test_decoded_triples_with_a_sensitive_flag_are_accepted() -> None:
    fields = [(b":status", b"200", False), (b"set-cookie", b"a=b", True)]
    assert ok(fields) == ([(b":status", b"200"), (b"set-cookie", b"a=b")], 200, -1)


def test_value_with_inner_whitespace_and_obs_text_is_accepted() -> None:
    fields = [(b":status", b"200"), (b"x-a", b"a b\tc"), (b"x-b", b"caf\xc3\xa9"), (b"x-c", b"")]
    assert ok(fields)[0] == fields


def test_token_punctuation_in_names_is_accepted() -> None:
    fields = [(b":status", b"200"), (b"x-a_b.c!#$%&'*+^`|~9", b"1")]
    assert ok(fields)[0] == fields


# == trailers ======================================================================================


def test_trailers() -> None:
    fields = [(b"grpc-status", b"0"), (b"grpc-message", b"ok")]
    assert ok(fields, trailers=True) == (fields, 0, -1)


def test_empty_trailers() -> None:
    assert ok([], trailers=True) == ([], 0, -1)


def test_trailers_drop_hop_by_hop_fields() -> None:
    fields = [(b"grpc-status", b"0"), (b"proxy-authenticate", b"x")]
    assert ok(fields, trailers=True)[0] == [(b"grpc-status", b"0")]


@pytest.mark.parametrize("name", [b":status", b":path", b":method", b":x"])
def test_trailers_reject_pseudo_headers(name: bytes) -> None:
    bad([(name, b"200")], trailers=True)
    bad([(b"grpc-status", b"0"), (name, b"200")], trailers=True)


@pytest.mark.parametrize(
    "field",
    [(b"x-a", b"a\r\nb"), (b"X-A", b"1"), (b"connection", b"close"), (b"te", b"gzip")],
)
def test_trailers_reject_malformed_fields(field: tuple[bytes, bytes]) -> None:
    bad([(b"grpc-status", b"0"), field], trailers=True)


# == malformed responses ===========================================================================

MALFORMED: dict[str, Fields] = {
    "missing-status": [(b"content-type", b"text/plain")],
    "empty": [],
    "second-status": [(b":status", b"200"), (b":status", b"200")],
    "status-after-field": [(b"x-a", b"1"), (b":status", b"200")],
    "request-pseudo": [(b":status", b"200"), (b":path", b"/")],
    "unknown-pseudo": [(b":status", b"200"), (b":x", b"1")],
    "lone-colon": [(b":status", b"200"), (b":", b"1")],
    "status-two-digits": [(b":status", b"20")],
    "status-four-digits": [(b":status", b"2000")],
    "status-not-digits": [(b":status", b"2x0")],
    "status-sign": [(b":status", b"+20")],
    "status-space": [(b":status", b" 200")],
    "status-empty": [(b":status", b"")],
    "status-000": [(b":status", b"000")],
    "cr-in-value": [(b":status", b"200"), (b"x-a", b"a\rb")],
    "lf-in-value": [(b":status", b"200"), (b"x-a", b"a\nb")],
    "crlf-injection": [(b":status", b"200"), (b"x-a", b"a\r\nset-cookie: evil=1")],
    "nul-in-value": [(b":status", b"200"), (b"x-a", b"a\x00b")],
    "leading-space": [(b":status", b"200"), (b"x-a", b" a")],
    "trailing-space": [(b":status", b"200"), (b"x-a", b"a ")],
    "leading-tab": [(b":status", b"200"), (b"x-a", b"\ta")],
    "trailing-tab": [(b":status", b"200"), (b"x-a", b"a\t")],
    "only-space": [(b":status", b"200"), (b"x-a", b" ")],
    "uppercase-name": [(b":status", b"200"), (b"X-Upper", b"1")],
    "space-in-name": [(b":status", b"200"), (b"x a", b"1")],
    "colon-in-name": [(b":status", b"200"), (b"x:a", b"1")],
    "nul-in-name": [(b":status", b"200"), (b"x\x00a", b"1")],
    "del-in-name": [(b":status", b"200"), (b"x\x7fa", b"1")],
    "non-ascii-name": [(b":status", b"200"), (b"caf\xc3\xa9", b"1")],
    "empty-name": [(b":status", b"200"), (b"", b"1")],
    "connection": [(b":status", b"200"), (b"connection", b"close")],
    "keep-alive": [(b":status", b"200"), (b"keep-alive", b"timeout=5")],
    "proxy-connection": [(b":status", b"200"), (b"proxy-connection", b"keep-alive")],
    "transfer-encoding": [(b":status", b"200"), (b"transfer-encoding", b"chunked")],
    "upgrade": [(b":status", b"200"), (b"upgrade", b"h2c")],
    "te-not-trailers": [(b":status", b"200"), (b"te", b"gzip")],
    "content-length-negative": [(b":status", b"200"), (b"content-length", b"-1")],
    "content-length-not-digits": [(b":status", b"200"), (b"content-length", b"12a")],
    "content-length-empty": [(b":status", b"200"), (b"content-length", b"")],
    "content-length-list": [(b":status", b"200"), (b"content-length", b"5, 5")],
    "content-length-conflict": [
        (b":status", b"200"),
        (b"content-length", b"5"),
        (b"content-length", b"6"),
    ],
    # RFC 9113 §8.3: every pseudo-header field comes before every regular field line, including
    # lines a proxy would drop.
    "status-after-dropped-hop-by-hop": [(b"proxy-authenticate", b"Basic"), (b":status", b"200")],
    "status-after-te-trailers": [(b"te", b"trailers"), (b":status", b"200")],
}


@pytest.mark.parametrize("fields", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_response(fields: Fields) -> None:
    bad(fields)


def test_reason_names_the_offending_field() -> None:
    assert "x-a" in bad([(b":status", b"200"), (b"x-a", b"a\r\nb")])
    assert "X-Upper" in bad([(b":status", b"200"), (b"X-Upper", b"1")])
    assert "connection" in bad([(b":status", b"200"), (b"connection", b"close")])
    assert ":status" in bad([(b"x-a", b"1")])


# == property: valid blocks keep their order ======================================================

_TCHAR = "abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~"
# Names whose values response_block checks or rejects: left to the example tests above.
_SPECIAL = {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
_SPECIAL |= {b"te", b"content-length"}

_names = st.text(alphabet=_TCHAR, min_size=1, max_size=24).map(str.encode)
_values = st.from_regex(r"\A(?:[!-~](?:[ -~]{0,30}[!-~])?)?\Z").map(str.encode)
_regular = st.tuples(_names.filter(lambda n: n not in _SPECIAL), _values)
_dropped = st.one_of(
    st.tuples(st.sampled_from(sorted(HOP_BY_HOP - _SPECIAL)), _values),
    st.just((b"te", b"trailers")),
)
_fields = st.lists(st.one_of(_regular, _regular, _dropped), max_size=20)
_statuses = st.integers(min_value=100, max_value=599).map(lambda s: str(s).encode())


@given(status=_statuses, fields=_fields)
def test_valid_blocks_keep_the_order_of_forwarded_fields(status: bytes, fields: Fields) -> None:
    result = response_block([(b":status", status), *fields], trailers=False)
    assert isinstance(result, tuple), result
    headers, parsed, length = result
    kept = [(n, v) for n, v in fields if n not in HOP_BY_HOP and n != b"te"]
    assert headers == [(b":status", status), *kept]
    assert parsed == int(status)
    assert length == -1


@given(fields=_fields)
def test_valid_trailers_keep_the_order_of_forwarded_fields(fields: Fields) -> None:
    result = response_block(fields, trailers=True)
    assert isinstance(result, tuple), result
    kept = [(n, v) for n, v in fields if n not in HOP_BY_HOP and n != b"te"]
    assert result == (kept, 0, -1)


@given(status=_statuses, fields=_fields, length=st.integers(min_value=0, max_value=1 << 62))
def test_content_length_anywhere_is_parsed(status: bytes, fields: Fields, length: int) -> None:
    value = str(length).encode()
    for at in {0, len(fields) // 2, len(fields)}:
        block = [(b":status", status), *fields[:at], (b"content-length", value), *fields[at:]]
        result = response_block(block, trailers=False)
        assert isinstance(result, tuple), result
        assert result[2] == length
        # Forwarded, except on a 204, which must not have one (RFC 9110 §8.6).
        assert ((b"content-length", value) in result[0]) == (status != b"204")


@given(
    status=_statuses,
    fields=_fields,
    bad_byte=st.sampled_from([b"\r", b"\n", b"\x00"]),
    data=st.data(),
)
def test_any_cr_lf_nul_in_a_value_is_rejected(
    status: bytes, fields: Fields, bad_byte: bytes, data: st.DataObject
) -> None:
    name = data.draw(_names.filter(lambda n: n not in _SPECIAL))
    value = data.draw(_values)
    cut = data.draw(st.integers(min_value=0, max_value=len(value)))
    at = data.draw(st.integers(min_value=0, max_value=len(fields)))
    poisoned = (name, value[:cut] + bad_byte + value[cut:])
    block = [(b":status", status), *fields[:at], poisoned, *fields[at:]]
    assert isinstance(response_block(block, trailers=False), str)
