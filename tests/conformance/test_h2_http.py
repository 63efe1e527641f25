"""RFC 9113 §8: HTTP semantics over HTTP/2 - message framing, field validity, connection-specific
fields, pseudo-header fields, content-length (h2spec http2/8.1 to http2/8.1.2.6; server push,
h2spec 8.2, is in test_h2_frames.py under RFC 9113 §6.6).

RFC 7540 §8.1.2.x became RFC 9113 §8.2 (fields), §8.2.2 (connection-specific fields), §8.3
(pseudo-header fields), §8.3.1 (request pseudo-header fields) and §8.1.1 (malformed messages,
content-length). Every malformed request must be a stream error PROTOCOL_ERROR (or, as RFC 9113
§5.4.1 allows, a connection error), and an intermediary MUST NOT forward it (RFC 9113 §8.1.1): the
malformed request follows a complete one on the same connection (so the path to the pod is open),
and after the error a well-formed request on a new connection must be the pod's second and last.
"""

from __future__ import annotations

from cases import Case, CaseList
from frames import (
    ErrorCode,
    H2Client,
    data,
    request,
)
from under_test import ActivatorUnderTest

CASES = CaseList()
P = ErrorCode.PROTOCOL_ERROR
BASE = request()  # :method GET, :scheme http, :path /, :authority


async def _warm_up(h2: H2Client) -> None:
    """Stream 1: a complete exchange, so that the activator's connection to the pod is open and
    whatever it forwards from now on reaches the pod at once."""
    h2.send(h2.headers(1, request("/warm-up")))
    await h2.expect_response(1)


async def _not_forwarded(act: ActivatorUnderTest) -> None:
    """The pod never saw the malformed request: a well-formed one made afterwards on another
    connection (and so behind anything the activator had forwarded) is its second and last."""
    probe = await act.client()
    probe.send(probe.headers(1, request("/probe")))
    await probe.expect_response(1)
    seen = act.pod.stats.requests
    assert seen == 2, f"the pod received {seen} requests, not just the warm-up and the probe"


async def _malformed(h2: H2Client, act: ActivatorUnderTest, headers: list[tuple[str, str]]) -> None:
    """Warm up on stream 1, send ``headers`` as stream 3: stream error PROTOCOL_ERROR (or a
    connection error), and nothing forwarded."""
    await _warm_up(h2)
    h2.send(h2.headers(3, headers))
    await h2.expect_stream_error(3, P)
    await _not_forwarded(act)


async def _not_completed_at_pod(act: ActivatorUnderTest) -> None:
    """The pod never saw the /echo request end normally: after the error, a request on another
    connection is answered, and no /echo stream is in the pod's log as complete (reset, or never
    forwarded at all, are both fine)."""
    probe = await act.client()
    probe.send(probe.headers(1, request("/probe")))
    await probe.expect_response(1)
    outcomes = [(r.path, r.outcome) for r in act.pod.stats.log]
    assert ("/echo", "complete") not in outcomes, outcomes


# -- §8.1 Message framing ------------------------------------------------------------------------


@CASES("rfc9113-8.1", h2spec="8.1/1")
async def second_headers_without_end_stream(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """HEADERS, DATA, then a second HEADERS (trailers) without END_STREAM: stream error
    PROTOCOL_ERROR (a trailer section must end the stream)."""
    h2.send(h2.headers(1, request("/echo", "POST"), end_stream=False), data(1, b"test"))
    h2.send(h2.headers(1, [("x-trailer", "1")], end_stream=False))
    await h2.expect_stream_error(1, P)


@CASES("rfc9113-8.1", h2spec="-")
async def trailers_accepted(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """HEADERS, DATA, then trailers with END_STREAM: a complete request, echoed."""
    h2.send(h2.headers(1, request("/echo", "POST"), end_stream=False), data(1, b"test"))
    h2.send(h2.headers(1, [("x-trailer", "1")]))
    response = await h2.expect_response(1)
    assert bytes(response.body) == b"test"


# -- §8.1.1 Malformed messages: content-length ---------------------------------------------------


@CASES("rfc9113-8.1.1", h2spec="8.1.2.6/1")
async def content_length_over_data(h2: H2Client, act: ActivatorUnderTest) -> None:
    """content-length: 1 with 4 octets of DATA: stream error PROTOCOL_ERROR; the pod's stream is
    reset, never completed with a body that disagrees with its content-length."""
    await _warm_up(h2)
    headers = request("/echo", "POST", extra=[("content-length", "1")])
    h2.send(h2.headers(3, headers, end_stream=False), data(3, b"test", end_stream=True))
    await h2.expect_stream_error(3, P)
    await _not_completed_at_pod(act)


@CASES("rfc9113-8.1.1", h2spec="8.1.2.6/2")
async def content_length_over_several_data(h2: H2Client, act: ActivatorUnderTest) -> None:
    """content-length: 8 with DATA frames of 4, 4 and 4 octets: stream error PROTOCOL_ERROR."""
    await _warm_up(h2)
    headers = request("/echo", "POST", extra=[("content-length", "8")])
    h2.send(h2.headers(3, headers, end_stream=False), data(3, b"test"), data(3, b"test"))
    h2.send(data(3, b"test", end_stream=True))
    await h2.expect_stream_error(3, P)
    await _not_completed_at_pod(act)


@CASES("rfc9113-8.1.1", h2spec="-")
async def content_length_under_data(h2: H2Client, act: ActivatorUnderTest) -> None:
    """content-length: 8 and END_STREAM after 4 octets (a short body): stream error
    PROTOCOL_ERROR, and the pod's stream does not complete."""
    await _warm_up(h2)
    headers = request("/echo", "POST", extra=[("content-length", "8")])
    h2.send(h2.headers(3, headers, end_stream=False), data(3, b"test", end_stream=True))
    await h2.expect_stream_error(3, P)
    await _not_completed_at_pod(act)


# -- §8.2.1 Field validity -----------------------------------------------------------------------


@CASES("rfc9113-8.2.1", h2spec="8.1.2/1")
async def uppercase_field_name(h2: H2Client, act: ActivatorUnderTest) -> None:
    """A field name with uppercase letters (X-TEST): malformed."""
    await _malformed(h2, act, [*BASE, ("X-TEST", "ok")])


@CASES("rfc9113-8.2.1", h2spec="-")
async def field_value_with_crlf(h2: H2Client, act: ActivatorUnderTest) -> None:
    """A field value containing CR LF (a header injection once forwarded as HTTP/1.1):
    malformed."""
    await _malformed(h2, act, [*BASE, ("x-test", "ok\r\nx-injected: 1")])


@CASES("rfc9113-8.2.1", h2spec="-")
async def field_value_with_nul(h2: H2Client, act: ActivatorUnderTest) -> None:
    """A field value containing NUL: malformed."""
    await _malformed(h2, act, [*BASE, ("x-test", "a\x00b")])


@CASES("rfc9113-8.2.1", h2spec="-")
async def field_name_with_space(h2: H2Client, act: ActivatorUnderTest) -> None:
    """A field name containing a space: malformed."""
    await _malformed(h2, act, [*BASE, ("x test", "1")])


@CASES("rfc9113-8.2.1", h2spec="-")
async def field_value_with_surrounding_whitespace(h2: H2Client, act: ActivatorUnderTest) -> None:
    """A field value starting with a space: malformed."""
    await _malformed(h2, act, [*BASE, ("x-test", " padded")])


# -- §8.2.2 Connection-specific fields -----------------------------------------------------------


@CASES("rfc9113-8.2.2", h2spec="8.1.2.2/1")
async def connection_field(h2: H2Client, act: ActivatorUnderTest) -> None:
    """connection: keep-alive: malformed."""
    await _malformed(h2, act, [*BASE, ("connection", "keep-alive")])


@CASES("rfc9113-8.2.2", h2spec="-")
async def transfer_encoding_field(h2: H2Client, act: ActivatorUnderTest) -> None:
    """transfer-encoding: chunked (a request-smuggling vector once downgraded to HTTP/1.1):
    malformed."""
    await _malformed(h2, act, [*request("/echo", "POST"), ("transfer-encoding", "chunked")])


@CASES("rfc9113-8.2.2", h2spec="-")
async def upgrade_field(h2: H2Client, act: ActivatorUnderTest) -> None:
    """upgrade: websocket: malformed."""
    await _malformed(h2, act, [*BASE, ("upgrade", "websocket")])


@CASES("rfc9113-8.2.2", h2spec="8.1.2.2/2")
async def te_other_than_trailers(h2: H2Client, act: ActivatorUnderTest) -> None:
    """te: trailers, deflate: malformed (only "trailers" is allowed)."""
    await _malformed(h2, act, [*BASE, ("te", "trailers, deflate")])


@CASES("rfc9113-8.2.2", h2spec="-")
async def te_trailers_accepted(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """te: trailers is the one allowed value: answered."""
    h2.send(h2.headers(1, [*BASE, ("te", "trailers")]))
    response = await h2.expect_response(1)
    assert response.status == 200


# -- §8.3 Pseudo-header fields -------------------------------------------------------------------


@CASES("rfc9113-8.3", h2spec="8.1.2.1/1")
async def unknown_pseudo_header(h2: H2Client, act: ActivatorUnderTest) -> None:
    """An undefined pseudo-header (:test): malformed."""
    await _malformed(h2, act, [*BASE, (":test", "ok")])


@CASES("rfc9113-8.3", h2spec="8.1.2.1/2")
async def response_pseudo_header_in_request(h2: H2Client, act: ActivatorUnderTest) -> None:
    """:status in a request: malformed."""
    await _malformed(h2, act, [*BASE, (":status", "200")])


@CASES("rfc9113-8.3", h2spec="8.1.2.1/3")
async def pseudo_header_in_trailers(h2: H2Client, _act: ActivatorUnderTest) -> None:
    """A pseudo-header in trailers: malformed, stream error PROTOCOL_ERROR."""
    h2.send(h2.headers(1, request("/echo", "POST"), end_stream=False), data(1, b"test"))
    h2.send(h2.headers(1, [(":method", "POST")]))
    await h2.expect_stream_error(1, P)


@CASES("rfc9113-8.3", h2spec="8.1.2.1/4")
async def pseudo_header_after_regular_field(h2: H2Client, act: ActivatorUnderTest) -> None:
    """:authority after a regular field: malformed (pseudo-headers come first)."""
    base = request()
    await _malformed(h2, act, [*base[:3], ("x-test", "ok"), base[3]])


# -- §8.3.1 Request pseudo-header fields ---------------------------------------------------------


def _without(name: str) -> list[tuple[str, str]]:
    return [(n, v) for n, v in BASE if n != name]


def _twice(name: str) -> list[tuple[str, str]]:
    value = dict(BASE)[name]
    return [*BASE[:3], (name, value), BASE[3]]


@CASES("rfc9113-8.3.1", h2spec="8.1.2.3/1")
async def empty_path(h2: H2Client, act: ActivatorUnderTest) -> None:
    """:path with an empty value: malformed."""
    await _malformed(h2, act, [(n, "" if n == ":path" else v) for n, v in BASE])


@CASES("rfc9113-8.3.1", h2spec="8.1.2.3/2")
async def missing_method(h2: H2Client, act: ActivatorUnderTest) -> None:
    """No :method: malformed."""
    await _malformed(h2, act, _without(":method"))


@CASES("rfc9113-8.3.1", h2spec="8.1.2.3/3")
async def missing_scheme(h2: H2Client, act: ActivatorUnderTest) -> None:
    """No :scheme: malformed."""
    await _malformed(h2, act, _without(":scheme"))


@CASES("rfc9113-8.3.1", h2spec="8.1.2.3/4")
async def missing_path(h2: H2Client, act: ActivatorUnderTest) -> None:
    """No :path: malformed."""
    await _malformed(h2, act, _without(":path"))


@CASES("rfc9113-8.3.1", h2spec="8.1.2.3/5")
async def duplicate_method(h2: H2Client, act: ActivatorUnderTest) -> None:
    """:method twice: malformed."""
    await _malformed(h2, act, _twice(":method"))


@CASES("rfc9113-8.3.1", h2spec="8.1.2.3/6")
async def duplicate_scheme(h2: H2Client, act: ActivatorUnderTest) -> None:
    """:scheme twice: malformed."""
    await _malformed(h2, act, _twice(":scheme"))


@CASES("rfc9113-8.3.1", h2spec="8.1.2.3/7")
async def duplicate_path(h2: H2Client, act: ActivatorUnderTest) -> None:
    """:path twice: malformed."""
    await _malformed(h2, act, _twice(":path"))


@CASES.parametrize()
async def test_http(case: Case, h2: H2Client, activator: ActivatorUnderTest) -> None:
    await case.run(h2, activator)
