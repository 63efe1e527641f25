"""Header rewriting: hop-by-hop removal, forwarding headers, error shapes."""

from __future__ import annotations

import base64
import struct

from hypothesis import given
from hypothesis import strategies as st

from activator.core.headers import (
    HOP_BY_HOP,
    error_response,
    forward_request,
    forward_response,
    h2c_settings_problem,
    is_grpc,
)

REQUEST = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":authority", b"hello.example.com"),
    (b":path", b"/x"),
    (b"user-agent", b"t"),
]


def fwd(headers, ip=b"10.1.2.3", scheme=b"http", authority=b"hello.example.com"):
    return forward_request(headers, client_ip=ip, scheme=scheme, authority=authority)


def test_pseudo_headers_come_first_and_authority_is_preserved() -> None:
    out = fwd(REQUEST)
    assert [n for n, _ in out[:4]] == [b":method", b":scheme", b":path", b":authority"]
    assert dict(out)[b":authority"] == b"hello.example.com"
    assert dict(out)[b"user-agent"] == b"t"


def test_forwarding_headers_are_added() -> None:
    out = dict(fwd(REQUEST))
    assert out[b"x-forwarded-for"] == b"10.1.2.3"
    assert out[b"x-forwarded-proto"] == b"http"
    assert out[b"forwarded"] == b'for=10.1.2.3;proto=http;host="hello.example.com"'


def test_existing_forwarding_chain_is_extended_not_replaced() -> None:
    headers = [*REQUEST, (b"x-forwarded-for", b"1.1.1.1"), (b"forwarded", b"for=1.1.1.1")]
    out = dict(fwd(headers))
    assert out[b"x-forwarded-for"] == b"1.1.1.1, 10.1.2.3"
    assert out[b"forwarded"].startswith(b"for=1.1.1.1, for=10.1.2.3")


def test_client_cannot_spoof_forwarded_proto() -> None:
    out = fwd([*REQUEST, (b"x-forwarded-proto", b"https")], scheme=b"http")
    assert [v for n, v in out if n == b"x-forwarded-proto"] == [b"http"]


def test_ipv6_client_is_quoted_in_forwarded() -> None:
    out = dict(fwd(REQUEST, ip=b"::1"))
    assert out[b"forwarded"].startswith(b'for="[::1]";')


def test_hop_by_hop_and_connection_named_fields_are_dropped() -> None:
    headers = [
        *REQUEST,
        (b"connection", b"x-private, keep-alive"),
        (b"x-private", b"secret"),
        (b"keep-alive", b"timeout=5"),
        (b"transfer-encoding", b"chunked"),
        (b"upgrade", b"h2c"),
        (b"te", b"trailers, deflate"),
        (b"host", b"hello.example.com"),
    ]
    names = [n for n, _ in fwd(headers)]
    for name in (b"connection", b"x-private", b"keep-alive", b"transfer-encoding", b"upgrade"):
        assert name not in names
    assert b"host" not in names  # :authority carries it
    assert (b"te", b"trailers") in fwd(headers)


def test_te_other_than_trailers_is_dropped() -> None:
    assert b"te" not in [n for n, _ in fwd([*REQUEST, (b"te", b"gzip")])]


def test_response_hop_by_hop_dropped() -> None:
    out = forward_response(
        [(b":status", b"200"), (b"connection", b"close"), (b"content-type", b"text/plain")]
    )
    assert out == [(b":status", b"200"), (b"content-type", b"text/plain")]


names = st.binary(min_size=1, max_size=12).map(bytes.lower)


@given(st.lists(st.tuples(st.sampled_from(sorted(HOP_BY_HOP)) | names, st.binary(max_size=8))))
def test_no_hop_by_hop_field_ever_survives(extra: list[tuple[bytes, bytes]]) -> None:
    headers = [*REQUEST, *[(n, v) for n, v in extra if not n.startswith(b":")]]
    out = fwd(headers)
    assert not any(n in HOP_BY_HOP for n, _ in out)
    assert sum(1 for n, _ in out if n == b":authority") == 1
    assert out[0][0].startswith(b":")


def test_grpc_content_types() -> None:
    assert is_grpc(b"application/grpc")
    assert is_grpc(b"application/grpc+proto")
    assert not is_grpc(b"application/json")
    assert not is_grpc(None)


def test_grpc_errors_are_trailers_only_with_encoded_message() -> None:
    headers, body = error_response(503, "no pod: 100% busy", grpc_status=14)
    assert body == b""
    assert dict(headers)[b":status"] == b"200"
    assert dict(headers)[b"grpc-status"] == b"14"
    assert dict(headers)[b"grpc-message"] == b"no pod: 100%25 busy"


def test_http_errors_have_a_body_and_retry_after() -> None:
    headers, body = error_response(503, "queue full", grpc_status=None, retry_after=2.4)
    d = dict(headers)
    assert d[b":status"] == b"503"
    assert d[b"retry-after"] == b"2"
    assert d[b"content-length"] == str(len(body)).encode()
    assert body == b"queue full\n"


def test_an_error_answer_to_head_keeps_the_fields_and_drops_the_body() -> None:
    get = error_response(404, "no service", grpc_status=None)
    head = error_response(404, "no service", grpc_status=None, head=True)
    assert head == (get[0], b"")


# RFC 9113 §6.5.2 bounds the test states independently of the module's table.
_BOUNDS = {0x2: (0, 1), 0x4: (0, 2**31 - 1), 0x5: (16384, 16777215), 0x8: (0, 1)}


def _settings_value(pairs: list[tuple[int, int]]) -> bytes:
    payload = b"".join(struct.pack(">HL", setting, number) for setting, number in pairs)
    return base64.urlsafe_b64encode(payload)


@given(
    st.lists(
        st.tuples(
            st.sampled_from([0x1, 0x2, 0x3, 0x4, 0x5, 0x6, 0x8, 0x9, 0xFFFF]),
            st.one_of(
                st.integers(0, 2**32 - 1),
                st.sampled_from([0, 1, 2, 16383, 16384, 2**24 - 1, 2**24, 2**31 - 1, 2**31]),
            ),
        ),
        max_size=8,
    )
)
def test_h2c_settings_are_checked_against_rfc9113_bounds(pairs: list[tuple[int, int]]) -> None:
    """A valid payload passes; one value out of its RFC 9113 §6.5.2 range is named. Unknown
    settings are ignored (§6.5.2: MUST ignore)."""
    problem = h2c_settings_problem(_settings_value(pairs))
    out_of_range = [
        (s, n) for s, n in pairs if s in _BOUNDS and not _BOUNDS[s][0] <= n <= _BOUNDS[s][1]
    ]
    if out_of_range:
        assert problem is not None
        setting, number = out_of_range[0]
        assert f"0x{setting:x} is {number}" in problem
    else:
        assert problem is None


_BASE64URL_TEXT = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/", max_size=64
).map(str.encode)


@given(st.one_of(st.binary(max_size=64), _BASE64URL_TEXT))
def test_h2c_settings_problem_never_raises_and_rejects_what_is_not_whole_settings(
    value: bytes,
) -> None:
    problem = h2c_settings_problem(value)
    if problem is None:
        assert len(value) % 8 == 0
        assert len(base64.urlsafe_b64decode(value)) % 6 == 0


def test_h2c_settings_problem_names_the_fault() -> None:
    assert h2c_settings_problem(b"AAMAAABkAAQAoAAAAAIAAAAA") is None  # what curl sends
    assert h2c_settings_problem(b"") is None  # no settings: all defaults
    assert h2c_settings_problem(b"AAMAAABk=") == "not base64url"  # padding never fits 6n bytes
    assert h2c_settings_problem(b"AAMAAAB") == "7 characters do not make whole 6-byte settings"
