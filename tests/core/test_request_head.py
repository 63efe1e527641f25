"""request_head, trailers_error, without_connection_fields: the HTTP/2 ingress's request-smuggling
guard (RFC 9113 §8.2.1 characters, §8.2.2 connection-specific fields, §8.3.1 request pseudo-headers,
Host against :authority, §8.2.3 cookie joining) and the HTTP/1.1 to HTTP/2 field mapping."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activator.core.headers import (
    HOP_BY_HOP,
    RequestHead,
    request_head,
    trailers_error,
    without_connection_fields,
)

Fields = list[tuple[bytes, bytes]]

GET: Fields = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"hello.example.com"),
    (b":path", b"/x?y=1"),
]
POST: Fields = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":authority", b"svc.ns:8080"),
    (b":path", b"/pkg.Service/Method"),
]


def ok(fields: Fields) -> RequestHead:
    result = request_head(fields)
    assert isinstance(result, RequestHead), f"rejected: {result!r}"
    return result


def bad(fields: Fields) -> str:
    result = request_head(fields)
    assert isinstance(result, str), f"accepted: {result!r}"
    assert result
    return result


def size_of(fields: Fields) -> int:
    return sum(len(n) + len(v) + 32 for n, v in fields)


# == valid requests ================================================================================


def test_get_request_fields() -> None:
    fields = [*GET, (b"user-agent", b"curl/8"), (b"accept", b"*/*")]
    head = ok(fields)
    assert head.headers == fields
    assert head.method == b"GET"
    assert head.scheme == b"https"
    assert head.authority == b"hello.example.com"
    assert head.grpc is False
    assert head.size == size_of(fields)


def test_post_request_fields() -> None:
    fields = [*POST, (b"content-type", b"application/json"), (b"content-length", b"12")]
    head = ok(fields)
    assert head == RequestHead(fields, b"POST", b"http", b"svc.ns:8080", False, size_of(fields))


@pytest.mark.parametrize(
    "content_type", [b"application/grpc", b"application/grpc+proto", b"application/grpc+json"]
)
def test_grpc_content_type_sets_grpc(content_type: bytes) -> None:
    fields = [*POST, (b"content-type", content_type), (b"te", b"trailers")]
    head = ok(fields)
    assert head.grpc is True
    assert head.headers == fields
    assert head.size == size_of(fields)


def test_size_counts_every_field_including_pseudo_headers() -> None:
    fields = [*GET, (b"x-a", b"1" * 100)]
    # 4 pseudo-headers + one field, each with the 32-byte overhead of RFC 9113 §6.5.2.
    expected = sum(len(n) + len(v) for n, v in fields) + 32 * 5
    assert ok(fields).size == expected


def test_authority_falls_back_to_host() -> None:
    fields = [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", b"/"),
        (b"host", b"fallback.example.com"),
    ]
    head = ok(fields)
    assert head.authority == b"fallback.example.com"
    assert head.headers == fields


def test_host_equal_to_authority_is_accepted() -> None:
    fields = [*GET, (b"host", b"hello.example.com")]
    head = ok(fields)
    assert head.authority == b"hello.example.com"
    assert head.headers == fields


def test_te_trailers_is_accepted() -> None:
    fields = [*POST, (b"te", b"trailers")]
    assert ok(fields).headers == fields


def test_cookies_are_joined_in_place_of_the_first() -> None:
    fields = [
        *GET,
        (b"x-before", b"1"),
        (b"cookie", b"a=1"),
        (b"x-middle", b"2"),
        (b"cookie", b"b=2"),
        (b"cookie", b"c=3"),
        (b"x-after", b"3"),
    ]
    head = ok(fields)
    assert head.headers == [
        *GET,
        (b"x-before", b"1"),
        (b"cookie", b"a=1; b=2; c=3"),
        (b"x-middle", b"2"),
        (b"x-after", b"3"),
    ]
    # The size is what the client sent (SETTINGS_MAX_HEADER_LIST_SIZE counts each field).
    assert head.size == size_of(fields)


def test_single_cookie_is_untouched() -> None:
    fields = [*GET, (b"cookie", b"a=1; b=2"), (b"x-a", b"1")]
    assert ok(fields).headers == fields


def test_connect_with_method_and_authority_only() -> None:
    fields = [(b":method", b"CONNECT"), (b":authority", b"proxy.example.com:443")]
    head = ok(fields)
    assert head.method == b"CONNECT"
    assert head.authority == b"proxy.example.com:443"
    assert head.scheme == b""
    assert head.headers == fields


def test_pseudo_headers_in_any_order_are_accepted() -> None:
    fields = [GET[3], GET[1], GET[0], GET[2], (b"x-a", b"1")]
    head = ok(fields)
    assert (head.method, head.scheme, head.authority) == (b"GET", b"https", b"hello.example.com")
    assert head.headers == fields


# == malformed requests ============================================================================


def replace(fields: Fields, name: bytes, value: bytes | None) -> Fields:
    """``fields`` with ``name``'s value replaced, or the field removed when ``value`` is None."""
    return [(n, value if n == name else v) for n, v in fields if n != name or value is not None]


CONNECT: Fields = [(b":method", b"CONNECT"), (b":authority", b"proxy.example.com:443")]

MALFORMED: list[tuple[str, Fields]] = [
    # RFC 9113 §8.2.1: field names.
    ("uppercase-name", [*GET, (b"X-Foo", b"1")]),
    ("uppercase-letter-inside-name", [*GET, (b"x-fOo", b"1")]),
    ("empty-name", [*GET, (b"", b"1")]),
    ("name-with-space", [*GET, (b"x foo", b"1")]),
    ("name-with-trailing-space", [*GET, (b"x-foo ", b"1")]),
    ("name-with-colon", [*GET, (b"x:foo", b"1")]),
    ("name-with-tab", [*GET, (b"x\tfoo", b"1")]),
    ("name-with-del", [*GET, (b"x\x7ffoo", b"1")]),
    ("name-with-non-ascii", [*GET, (b"x-f\xc3\xa9", b"1")]),
    ("name-with-high-byte", [*GET, (b"x-\xff", b"1")]),
    ("name-with-nul", [*GET, (b"x\x00", b"1")]),
    ("name-with-cr", [*GET, (b"x\rfoo", b"1")]),
    # RFC 9113 §8.2.1: field values.
    ("value-with-cr", [*GET, (b"x-foo", b"a\rb")]),
    ("value-with-lf", [*GET, (b"x-foo", b"a\nb")]),
    ("value-with-crlf-injection", [*GET, (b"x-foo", b"a\r\nx-injected: 1")]),
    ("value-with-nul", [*GET, (b"x-foo", b"a\x00b")]),
    ("value-leading-space", [*GET, (b"x-foo", b" a")]),
    ("value-trailing-space", [*GET, (b"x-foo", b"a ")]),
    ("value-leading-tab", [*GET, (b"x-foo", b"\ta")]),
    ("value-trailing-tab", [*GET, (b"x-foo", b"a\t")]),
    ("value-only-space", [*GET, (b"x-foo", b" ")]),
    ("pseudo-value-with-lf", replace(GET, b":path", b"/x\nGET /admin")),
    ("pseudo-value-with-cr", replace(GET, b":authority", b"a.example\r")),
    ("pseudo-value-with-nul", replace(GET, b":method", b"GET\x00")),
    ("pseudo-value-trailing-space", replace(GET, b":path", b"/x ")),
    # RFC 9113 §8.3: pseudo-headers.
    ("pseudo-status", [*GET[:3], (b":status", b"200"), GET[3]]),
    ("pseudo-protocol", [*GET, (b":protocol", b"websocket")]),
    ("pseudo-foo", [(b":foo", b"bar"), *GET]),
    ("pseudo-colon-only", [*GET, (b":", b"x")]),
    ("pseudo-uppercase", [*GET, (b":Path", b"/y")]),
    ("duplicate-path", [*GET, (b":path", b"/y")]),
    ("duplicate-path-same-value", [*GET, (b":path", b"/x?y=1")]),
    ("duplicate-method", [(b":method", b"POST"), *GET]),
    ("duplicate-authority", [*GET, (b":authority", b"other.example.com")]),
    ("pseudo-after-regular-field", [*GET[:3], (b"x-foo", b"1"), GET[3]]),
    ("pseudo-after-cookie", [*GET[:3], (b"cookie", b"a=1"), GET[3]]),
    ("missing-method", replace(GET, b":method", None)),
    ("empty-method", replace(GET, b":method", b"")),
    ("missing-scheme", replace(GET, b":scheme", None)),
    ("missing-path", replace(GET, b":path", None)),
    ("empty-path", replace(GET, b":path", b"")),
    ("no-fields", []),
    # RFC 9113 §8.5: CONNECT.
    ("connect-with-path", [*CONNECT, (b":path", b"/")]),
    ("connect-with-scheme", [*CONNECT, (b":scheme", b"https")]),
    ("connect-with-scheme-and-path", [*CONNECT, (b":scheme", b"https"), (b":path", b"/")]),
    ("connect-without-authority", [(b":method", b"CONNECT")]),
    ("connect-with-host-only", [(b":method", b"CONNECT"), (b"host", b"proxy.example.com:443")]),
    # The pseudo-header must be omitted, so present-but-empty is malformed too.
    ("connect-with-empty-path", [*CONNECT, (b":path", b"")]),
    ("connect-with-empty-scheme", [*CONNECT, (b":scheme", b"")]),
    # RFC 9113 §8.2.2: connection-specific fields.
    ("connection", [*GET, (b"connection", b"close")]),
    ("connection-keep-alive", [*GET, (b"connection", b"keep-alive")]),
    ("keep-alive", [*GET, (b"keep-alive", b"timeout=5")]),
    ("proxy-connection", [*GET, (b"proxy-connection", b"keep-alive")]),
    ("transfer-encoding", [*POST, (b"transfer-encoding", b"chunked")]),
    ("transfer-encoding-identity", [*POST, (b"transfer-encoding", b"identity")]),
    ("upgrade", [*GET, (b"upgrade", b"websocket")]),
    ("te-gzip", [*GET, (b"te", b"gzip")]),
    ("te-trailers-and-gzip", [*GET, (b"te", b"trailers, gzip")]),
    ("te-empty", [*GET, (b"te", b"")]),
    # Host against :authority (request smuggling: route on one, forward the other).
    ("host-differs-from-authority", [*GET, (b"host", b"evil.example.com")]),
    ("host-differs-by-port", [*GET, (b"host", b"hello.example.com:8080")]),
    ("host-differs-from-authority-before-host", [(b"host", b"evil.example.com"), *GET]),
    # §8.3.1: "If both fields are present, they MUST contain the same value" - every Host field.
    (
        "second-host-differs",
        [*GET, (b"host", b"hello.example.com"), (b"host", b"evil.example.com")],
    ),
    (
        "first-host-differs",
        [*GET, (b"host", b"evil.example.com"), (b"host", b"hello.example.com")],
    ),
]


@pytest.mark.parametrize("fields", [f for _, f in MALFORMED], ids=[i for i, _ in MALFORMED])
def test_malformed_request_is_rejected(fields: Fields) -> None:
    bad(fields)


# RFC 9113 §8.3.1: for "http" and "https" the request MUST contain :authority or Host, and "if these
# fields are present, they MUST NOT be empty".
NO_AUTHORITY: list[tuple[str, Fields]] = [
    ("neither-authority-nor-host", replace(GET, b":authority", None)),
    ("empty-authority", replace(GET, b":authority", b"")),
    ("empty-authority-with-host", [*replace(GET, b":authority", b""), (b"host", b"a.example")]),
    ("empty-host-without-authority", [*replace(GET, b":authority", None), (b"host", b"")]),
]


@pytest.mark.parametrize("fields", [f for _, f in NO_AUTHORITY], ids=[i for i, _ in NO_AUTHORITY])
def test_http_request_needs_a_non_empty_authority(fields: Fields) -> None:
    bad(fields)


def test_rejection_reason_names_the_field() -> None:
    assert "x-foo" in bad([*GET, (b"x-foo", b"a\r\nb")])
    assert "transfer-encoding" in bad([*POST, (b"transfer-encoding", b"chunked")])


# == trailers ======================================================================================


@pytest.mark.parametrize(
    "fields",
    [
        [],
        [(b"grpc-status", b"0")],
        [(b"grpc-status", b"13"), (b"grpc-message", b"internal%20error")],
        [(b"grpc-status", b"0"), (b"x-checksum", b"abc"), (b"x-checksum", b"def")],
        [(b"server-timing", b"db;dur=53")],
    ],
    ids=["empty", "grpc-status", "grpc-status-and-message", "repeated-field", "server-timing"],
)
def test_ordinary_trailers_are_accepted(fields: Fields) -> None:
    assert trailers_error(fields) is None


BAD_TRAILERS: list[tuple[str, Fields]] = [
    ("pseudo-status", [(b":status", b"200")]),
    ("pseudo-path", [(b"grpc-status", b"0"), (b":path", b"/")]),
    ("pseudo-method", [(b":method", b"GET")]),
    ("connection", [(b"connection", b"close")]),
    ("keep-alive", [(b"keep-alive", b"timeout=5")]),
    ("proxy-connection", [(b"proxy-connection", b"close")]),
    ("transfer-encoding", [(b"transfer-encoding", b"chunked")]),
    ("upgrade", [(b"upgrade", b"h2c")]),
    ("te-trailers", [(b"te", b"trailers")]),
    ("te-gzip", [(b"te", b"gzip")]),
    ("value-with-cr", [(b"grpc-message", b"a\rb")]),
    ("value-with-lf", [(b"grpc-message", b"a\nb")]),
    ("value-with-nul", [(b"grpc-message", b"a\x00b")]),
    ("uppercase-name", [(b"Grpc-Status", b"0")]),
    ("empty-name", [(b"", b"0")]),
    ("name-with-space", [(b"grpc status", b"0")]),
    ("bad-field-after-good-one", [(b"grpc-status", b"0"), (b"X-Bad", b"1")]),
]


@pytest.mark.parametrize("fields", [f for _, f in BAD_TRAILERS], ids=[i for i, _ in BAD_TRAILERS])
def test_malformed_trailers_are_rejected(fields: Fields) -> None:
    reason = trailers_error(fields)
    assert isinstance(reason, str)
    assert reason


# == without_connection_fields =====================================================================


@pytest.mark.parametrize(
    "name",
    [
        b"connection",
        b"keep-alive",
        b"upgrade",
        b"http2-settings",
        b"transfer-encoding",
        b"proxy-connection",
    ],
)
def test_connection_specific_fields_are_dropped(name: bytes) -> None:
    headers = [(b"x-a", b"1"), (name, b"something"), (b"x-b", b"2")]
    assert without_connection_fields(headers) == [(b"x-a", b"1"), (b"x-b", b"2")]


def test_fields_named_by_connection_are_dropped() -> None:
    headers = [
        (b":method", b"GET"),
        (b"x-foo", b"1"),
        (b"connection", b"close, x-foo"),
        (b"x-bar", b"2"),
        (b"x-foo", b"3"),
    ]
    assert without_connection_fields(headers) == [(b":method", b"GET"), (b"x-bar", b"2")]


def test_connection_tokens_are_case_and_space_insensitive() -> None:
    headers = [
        (b"x-foo", b"1"),
        (b"x-bar", b"2"),
        (b"connection", b" X-Foo ,x-BAR"),
        (b"x-baz", b"3"),
    ]
    assert without_connection_fields(headers) == [(b"x-baz", b"3")]


def test_tokens_of_several_connection_fields_are_all_dropped() -> None:
    headers = [
        (b"connection", b"x-one"),
        (b"x-one", b"1"),
        (b"x-two", b"2"),
        (b"connection", b"x-two"),
        (b"x-three", b"3"),
    ]
    assert without_connection_fields(headers) == [(b"x-three", b"3")]


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        (b"trailers", True),
        (b"Trailers", True),
        (b"trailers, deflate", True),
        (b"deflate;q=0.5, trailers", True),
        (b"gzip", False),
        (b"", False),
    ],
)
def test_te_is_kept_only_as_trailers(value: bytes, kept: bool) -> None:
    headers = [(b"x-a", b"1"), (b"te", value), (b"x-b", b"2")]
    expected = (
        [(b"x-a", b"1"), (b"te", b"trailers"), (b"x-b", b"2")]
        if kept
        else [
            (b"x-a", b"1"),
            (b"x-b", b"2"),
        ]
    )
    assert without_connection_fields(headers) == expected


def test_everything_else_keeps_its_order() -> None:
    headers = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":authority", b"a.example"),
        (b":path", b"/"),
        (b"upgrade", b"h2c"),
        (b"x-z", b"1"),
        (b"connection", b"upgrade, http2-settings"),
        (b"content-type", b"application/grpc"),
        (b"http2-settings", b"AAMAAABkAAQAAP__"),
        (b"x-a", b"2"),
        (b"x-z", b"3"),
        (b"cookie", b"a=1"),
    ]
    assert without_connection_fields(headers) == [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":authority", b"a.example"),
        (b":path", b"/"),
        (b"x-z", b"1"),
        (b"content-type", b"application/grpc"),
        (b"x-a", b"2"),
        (b"x-z", b"3"),
        (b"cookie", b"a=1"),
    ]


# == properties ====================================================================================

_TCHAR_LOWER = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
_EXCLUDED_NAMES = HOP_BY_HOP | {b"host", b"cookie", b"te"}
_VISIBLE = "".join(chr(c) for c in range(0x21, 0x7F))

_names = (
    st.text(alphabet=_TCHAR_LOWER, min_size=1, max_size=24)
    .map(str.encode)
    .filter(lambda n: n not in _EXCLUDED_NAMES)
)
# Visible ASCII, with spaces and tabs only inside.
_visible_char = st.text(alphabet=_VISIBLE, min_size=1, max_size=1)
_values = st.one_of(
    st.just(b""),
    _visible_char.map(str.encode),
    st.builds(
        lambda first, middle, last: (first + middle + last).encode(),
        _visible_char,
        st.text(alphabet=_VISIBLE + " \t", max_size=40),
        _visible_char,
    ),
)
_regular_fields = st.lists(st.tuples(_names, _values), max_size=12)


@settings(max_examples=200, deadline=None)
@given(fields=_regular_fields)
def test_valid_regular_fields_pass_through_unchanged(fields: Fields) -> None:
    block = [*GET, *fields]
    head = ok(block)
    assert head.headers == block
    assert head.size == size_of(block)
    assert head.authority == b"hello.example.com"


@settings(max_examples=200, deadline=None)
@given(fields=_regular_fields, data=st.data())
def test_a_control_byte_anywhere_in_a_value_is_rejected(
    fields: Fields, data: st.DataObject
) -> None:
    block = [*GET, *fields]
    index = data.draw(st.integers(0, len(block) - 1), label="field")
    name, value = block[index]
    at = data.draw(st.integers(0, len(value)), label="position")
    byte = data.draw(st.sampled_from([b"\r", b"\n", b"\x00"]), label="byte")
    block[index] = (name, value[:at] + byte + value[at:])
    bad(block)
