"""Header rewriting between client and pod: pure functions over ``list[tuple[bytes, bytes]]``.

Headers travel as lower-case byte pairs in HTTP/2 order (pseudo-headers first), whichever protocol they
arrived on. HTTP/1.1 requests are mapped to that shape at ingress so one code path forwards everything.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, cast

Header = tuple[bytes, bytes]
HeaderList = list[Header]

# RFC 9110 §7.6.1 connection-specific fields, plus the HTTP/2 ones RFC 9113 §8.2.2 forbids. "te" is handled
# apart: RFC 9113 allows exactly "te: trailers" (gRPC needs it end to end).
HOP_BY_HOP: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"http2-settings",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
_DROP_REQUEST = HOP_BY_HOP | {b"host", b"x-forwarded-proto", b"x-forwarded-host"}
_DROP_RESPONSE = HOP_BY_HOP | {b"te"}

GRPC_CONTENT_TYPE = b"application/grpc"


# RFC 9113 §8.2.1: field names hold no controls, space, uppercase, DEL, non-ASCII or colon (past a
# pseudo-header's leading one); values hold no NUL, CR or LF. A proxy must check these itself: a
# CR/LF let through becomes header (or request) injection on an HTTP/1.1 hop.
_BAD_NAME = re.compile(rb"[\x00-\x20A-Z\x7f-\xff:]")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")


def malformed_field(headers: Iterable[Header]) -> str | None:
    """Why the field block is malformed (RFC 9113 §8.2.1), or None when every field is valid."""
    bad_name = _BAD_NAME.search
    bad_value = _BAD_VALUE.search
    for name, value in headers:
        key = name[1:] if name[:1] == b":" else name
        if not key or bad_name(key) is not None:
            return f"invalid field name {name!r}"
        if bad_value(value) is not None:
            return f"invalid character in the value of {name.decode('latin-1')!r}"
    return None


# RFC 7540 §3.2.1: HTTP2-Settings is a SETTINGS payload in base64url without padding. Six bytes per
# setting make 8 characters, so a whole payload never needs padding.
_BASE64URL = re.compile(rb"[A-Za-z0-9_-]*")
# RFC 9113 §6.5.2 limits, by setting identifier: the values h2 itself would reject.
_SETTING_RANGES: dict[int, tuple[int, int]] = {
    0x2: (0, 1),  # ENABLE_PUSH
    0x4: (0, 2**31 - 1),  # INITIAL_WINDOW_SIZE
    0x5: (2**14, 2**24 - 1),  # MAX_FRAME_SIZE
    0x8: (0, 1),  # ENABLE_CONNECT_PROTOCOL (RFC 8441)
}


def h2c_settings_problem(value: bytes) -> str | None:
    """Why an HTTP2-Settings value (an h2c Upgrade's SETTINGS) cannot be applied, or None.

    Checked before the upgrade is answered: once 101 is sent, a bad value can only end the
    connection, with no word to the client about why.
    """
    if _BASE64URL.fullmatch(value) is None:
        return "not base64url"
    if len(value) % 8:
        return f"{len(value)} characters do not make whole 6-byte settings"
    payload = base64.urlsafe_b64decode(value)
    for offset in range(0, len(payload), 6):
        setting = int.from_bytes(payload[offset : offset + 2], "big")
        number = int.from_bytes(payload[offset + 2 : offset + 6], "big")
        allowed = _SETTING_RANGES.get(setting)
        if allowed is not None and not allowed[0] <= number <= allowed[1]:
            return f"setting 0x{setting:x} is {number}, outside {allowed[0]}-{allowed[1]}"
    return None


# RFC 9113 §8.2.2: fields that make an HTTP/2 message malformed ("te" apart: only "trailers" is allowed).
_CONNECTION_SPECIFIC: frozenset[bytes] = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
_WHITESPACE = (b" ", b"\t")

# Regular fields already found valid and forwarded as they are: the same few come with every request
# (user-agent, accept, ...) and every response (server, cache-control, ...), so each is checked once,
# not per message. A field's verdict depends on nothing else, so the memo is shared by all
# connections of the process. Bounded in count and in field size; cleared when full. Fields the
# checks treat by context (host, content-type, cookie, content-length, dropped ones, never-indexed
# ones on the response side) are never memoized; pseudo-headers only for their value.
_MEMO_MAX = 4096
_MEMO_FIELD_MAX = 256
_VALID_REQUEST_FIELDS: set[Header] = set()
# Request pseudo-headers whose value was found valid (the rules on their place and number still run).
_VALID_PSEUDO_FIELDS: set[Header] = set()
# The decoded entry (name, value, sensitive=False) -> the (name, value) pair forwarded.
_VALID_RESPONSE_FIELDS: dict[Any, Header] = {}

# A pod's response block as forwarded: headers (pseudo-header first), status (0 for trailers) and the
# declared content-length (-1: none).
ResponseBlock = tuple[HeaderList, int, int]


def response_block(
    fields: Iterable[Sequence[Any]],
    *,
    trailers: bool,
    never_indexed: Callable[[bytes, bytes], Header] | None = None,
) -> ResponseBlock | str:
    """Check a pod's response header block (or trailers) and shape it for the client.

    ``fields`` are decoded (name, value[, sensitive]) entries. Returns why the block is malformed
    (RFC 9113 §8.1-8.3), or the fields to forward - hop-by-hop ones dropped - with the status and the
    content-length. A field marked sensitive (sent never-indexed) is made by ``never_indexed``, so the
    next hop's encoder keeps it out of its compression context too (RFC 7541 §7.1.3). One pass,
    because it runs for every response.
    """
    out: HeaderList = []
    status = 0
    length = -1
    bad_name = _BAD_NAME.search
    bad_value = _BAD_VALUE.search
    regular = False
    known = _VALID_RESPONSE_FIELDS.get
    for field in fields:
        plain = known(field)
        if plain is not None:
            regular = True
            out.append(plain)
            continue
        name = field[0]
        value = field[1]
        if name[:1] == b":":
            if trailers or name != b":status" or regular or status:
                return f"unexpected pseudo-header {name!r}"
            if len(value) != 3 or not value.isdigit() or value[:1] == b"0":
                return f"invalid :status {value!r}"
            status = int(value)
            out.append((name, value))
            continue
        regular = True
        if not name or bad_name(name) is not None:
            return f"invalid field name {name!r}"
        if bad_value(value) is not None or value[:1] in _WHITESPACE or value[-1:] in _WHITESPACE:
            return f"invalid value of {name.decode('latin-1')!r}"
        if name in _DROP_RESPONSE:
            if name in _CONNECTION_SPECIFIC or (name == b"te" and value != b"trailers"):
                return f"connection-specific field {name.decode('latin-1')!r}"
            continue
        if name == b"content-length":
            if not value.isdigit() or (length >= 0 and int(value) != length):
                return f"invalid content-length {value!r}"
            length = int(value)
        if len(field) > 2 and field[2] and never_indexed is not None:
            out.append(never_indexed(name, value))
        else:
            plain = (name, value)
            out.append(plain)
            if name != b"content-length" and len(name) + len(value) <= _MEMO_FIELD_MAX:
                if len(_VALID_RESPONSE_FIELDS) >= _MEMO_MAX:
                    _VALID_RESPONSE_FIELDS.clear()
                _VALID_RESPONSE_FIELDS[tuple(field)] = plain
    if not trailers and not status:
        return "no :status"
    if status == 204 and length >= 0:
        out = without_content_length(out)
    # Fields named by a Connection header need no dropping: Connection itself is malformed here.
    return out, status, length


def without_content_length(fields: HeaderList) -> HeaderList:
    """A 204's fields without the Content-Length it must not have (RFC 9110 §8.6): passed on, it
    makes strict clients (h2's among them) wait for content a 204 never has."""
    return [field for field in fields if field[0] != b"content-length"]


_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path"})


class RequestHead(NamedTuple):
    """What the activator reads off a client's HTTP/2 request block, checked in one pass."""

    headers: HeaderList
    method: bytes
    scheme: bytes
    authority: bytes  # :authority, else Host
    grpc: bool
    size: int  # as SETTINGS_MAX_HEADER_LIST_SIZE counts it (RFC 9113 §6.5.2)


def request_head(fields: Iterable[Header]) -> RequestHead | str:
    """Check a client's HTTP/2 request block (RFC 9113 §8.2, §8.3.1) and read what routing needs.

    Returns why the request is malformed (a stream error PROTOCOL_ERROR, §8.1.1) or the
    :class:`RequestHead`. This is the request-smuggling guard of the HTTP/2 ingress: field characters
    (§8.2.1), connection-specific fields (§8.2.2), pseudo-header rules (§8.3), Host against
    :authority. Cookie fields are joined into one (§8.2.3), as an HTTP/1.1 hop requires.
    """
    out: HeaderList = []
    pseudo: set[bytes] = set()
    method = scheme = authority = path = b""
    host: bytes | None = None
    grpc = False
    size = 0
    cookies: list[bytes] | None = None
    bad_name = _BAD_NAME.search
    bad_value = _BAD_VALUE.search
    known = _VALID_REQUEST_FIELDS
    known_pseudo = _VALID_PSEUDO_FIELDS
    for field in fields:
        name, value = field
        size += len(name) + len(value) + 32
        if field in known:
            out.append(field)
            continue
        if field in known_pseudo:
            pass  # its value was found valid before
        elif bad_value(value) is not None or value[:1] in _WHITESPACE or value[-1:] in _WHITESPACE:
            return f"invalid value of {name.decode('latin-1')!r}"
        elif name in _REQUEST_PSEUDO and len(value) <= _MEMO_FIELD_MAX:
            if len(known_pseudo) >= _MEMO_MAX:
                known_pseudo.clear()
            known_pseudo.add(field)
        if name[:1] == b":":
            if name not in _REQUEST_PSEUDO or name in pseudo:
                return f"unexpected pseudo-header {name!r}"
            if len(out) > len(pseudo):
                return f"pseudo-header {name!r} after a regular field"
            pseudo.add(name)
            if name == b":method":
                method = value
            elif name == b":scheme":
                scheme = value
            elif name == b":authority":
                authority = value
            else:
                path = value
            out.append(field)
            continue
        if not name or bad_name(name) is not None:
            return f"invalid field name {name!r}"
        if name in _CONNECTION_SPECIFIC or (name == b"te" and value != b"trailers"):
            return f"connection-specific field {name.decode('latin-1')!r}"
        if name == b"host":
            if host is not None and value != host:
                return "conflicting Host fields"
            host = value
        elif name == b"content-type":
            grpc = is_grpc(value)
        elif name == b"cookie":
            if cookies is None:
                cookies = [value]
            else:
                cookies.append(value)
                continue
        elif len(name) + len(value) <= _MEMO_FIELD_MAX:
            if len(known) >= _MEMO_MAX:
                known.clear()
            known.add(field)
        out.append(field)  # the field itself: a never-indexed one keeps its type (RFC 7541 §7.1.3)
    if not method:
        return "no :method"
    if method == b"CONNECT":  # RFC 9113 §8.5
        if b":scheme" in pseudo or b":path" in pseudo or not authority:
            return "CONNECT needs :authority and neither :scheme nor :path"
    elif not scheme or not path:
        return "no :scheme or :path"
    elif (b":authority" in pseudo and not authority) or (host is not None and not host):
        return "empty :authority or Host"  # http(s) URIs have a non-empty authority (§8.3.1)
    elif host is None and not authority:
        return "no :authority or Host"
    if host is not None and authority and host != authority:
        return "Host differs from :authority"
    if cookies is not None and len(cookies) > 1:
        joined = b"; ".join(cookies)
        out = [_like(f, joined) if f[0] == b"cookie" else f for f in out]
    return RequestHead(out, method, scheme, authority or host or b"", grpc, size)


def _like(field: Header, value: bytes) -> Header:
    """``field`` with another value and the same type (a never-indexed field stays never-indexed;
    hpack's field types take name and value as two arguments)."""
    if type(field) is tuple:
        return (field[0], value)
    kind: Any = type(field)
    return cast(Header, kind(field[0], value))


def trailers_error(fields: HeaderList) -> str | None:
    """Why a client's trailer block is malformed (no pseudo-headers, §8.1), or None."""
    for name, _ in fields:
        if name[:1] == b":":
            return f"pseudo-header {name!r} in trailers"
        if name in _CONNECTION_SPECIFIC or name == b"te":
            return f"connection-specific field {name.decode('latin-1')!r} in trailers"
    return malformed_field(fields)


def is_grpc(content_type: bytes | None) -> bool:
    """True for ``application/grpc`` and its ``+proto``/``+json`` variants."""
    return content_type is not None and content_type.startswith(GRPC_CONTENT_TYPE)


def _connection_tokens(headers: Iterable[Header]) -> frozenset[bytes]:
    # Fields named in Connection are hop-by-hop too (RFC 9110 §7.6.1).
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return frozenset(tokens)


def without_connection_fields(headers: HeaderList) -> HeaderList:
    """An HTTP/1.1 request's fields as an HTTP/2 request may carry them (RFC 9113 §8.2.2):
    connection-specific fields and those its Connection header names dropped, ``te`` kept only as
    ``trailers``."""
    drop = HOP_BY_HOP | _connection_tokens(headers)
    out: HeaderList = []
    for name, value in headers:
        if name == b"te":
            if b"trailers" in value.lower():
                out.append((b"te", b"trailers"))
        elif name not in drop:
            out.append((name, value))
    return out


def forward_request(
    headers: Iterable[Header],
    *,
    client_ip: bytes,
    scheme: bytes,
    authority: bytes,
) -> HeaderList:
    """Headers to send to a pod for a client request.

    Drops hop-by-hop fields (keeping ``te: trailers``), keeps ``:authority``, appends the client to
    ``X-Forwarded-For`` and ``Forwarded`` (RFC 7239) and sets ``X-Forwarded-Proto`` to the client's scheme.
    The result always starts with the four request pseudo-headers in HTTP/2 order.
    """
    out: HeaderList = []
    pseudo: HeaderList = []
    xff: bytes | None = None
    forwarded: bytes | None = None
    extra = _connection_tokens(headers)
    drop = _DROP_REQUEST | extra if extra else _DROP_REQUEST
    for field in headers:
        name, value = field
        if name[:1] == b":":
            if name != b":authority":
                pseudo.append(field)
        elif name in drop:
            continue
        elif name == b"te":
            if b"trailers" in value.lower():
                out.append((b"te", b"trailers"))
        elif name == b"x-forwarded-for":
            xff = value if xff is None else xff + b", " + value
        elif name == b"forwarded":
            forwarded = value if forwarded is None else forwarded + b", " + value
        else:
            out.append(field)  # never-indexed fields stay so (RFC 7541 §7.1.3)
    pseudo.append((b":authority", authority))
    # RFC 7239 §6: an IPv6 node and a host with a port are not tokens, so they are quoted.
    node = b'"[' + client_ip + b']"' if b":" in client_ip else client_ip
    this_hop = b"for=" + node + b";proto=" + scheme + b';host="' + authority + b'"'
    out.append((b"x-forwarded-for", client_ip if xff is None else xff + b", " + client_ip))
    out.append((b"x-forwarded-proto", scheme))
    out.append((b"forwarded", this_hop if forwarded is None else forwarded + b", " + this_hop))
    pseudo.extend(out)
    return pseudo


def forward_response(headers: Iterable[Header]) -> HeaderList:
    """Response headers (or trailers) from a pod, minus hop-by-hop fields."""
    extra = _connection_tokens(headers)
    drop = _DROP_RESPONSE | extra if extra else _DROP_RESPONSE
    return [(n, v) for n, v in headers if n not in drop]


def error_response(
    status: int,
    message: str,
    *,
    grpc_status: int | None,
    retry_after: float | None = None,
    head: bool = False,
) -> tuple[HeaderList, bytes]:
    """Headers and body for an error the activator itself answers.

    gRPC calls get a trailers-only response (HTTP 200 with ``grpc-status``/``grpc-message`` in the
    header block and no body), the shape gRPC clients decode into a status (gRPC over HTTP/2 spec).
    The answer to a HEAD request (``head``) has the fields a GET's would and no body (RFC 9110
    §9.3.2): sent anyway, a body is read as the next response on HTTP/1.1 and breaks an HTTP/2
    client's connection.
    """
    if grpc_status is not None:
        return (
            [
                (b":status", b"200"),
                (b"content-type", GRPC_CONTENT_TYPE),
                (b"grpc-status", str(grpc_status).encode()),
                (b"grpc-message", _grpc_percent_encode(message)),
            ],
            b"",
        )
    body = (message + "\n").encode()
    headers: HeaderList = [
        (b":status", str(status).encode()),
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    if retry_after is not None:
        headers.append((b"retry-after", str(max(1, round(retry_after))).encode()))
    return headers, b"" if head else body


def _grpc_percent_encode(message: str) -> bytes:
    # grpc-message is percent-encoded UTF-8 for bytes outside 0x20-0x7E and "%" (gRPC HTTP/2 protocol doc).
    out = bytearray()
    for b in message.encode():
        if 0x20 <= b <= 0x7E and b != 0x25:
            out.append(b)
        else:
            out += b"%%%02X" % b
    return bytes(out)
