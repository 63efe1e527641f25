"""request_head and response_block remember the regular fields they found valid and forward as they
are, so that repeated fields are not checked again. The memo must never change an answer: every
test here compares a block's result with the memo as earlier blocks left it against the result
with an empty memo, over sequences of blocks that share fields, valid and not, by name and value."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import hpack
from hypothesis import example, given, settings
from hypothesis import strategies as st

from activator.core import headers
from activator.core.headers import request_head, response_block

_NAMES = [
    b"user-agent",
    b"accept",
    b"host",
    b"content-type",
    b"cookie",
    b"te",
    b"connection",
    b"content-length",
    b"x-forwarded-for",
    b"forwarded",
    b"server",
    b"keep-alive",
    b"Upper",
    b"",
    b"bad name",
]
_VALUES = [
    b"a",
    b"b",
    b"trailers",
    b"application/grpc",
    b"text/plain",
    b"12",
    b"x" * 300,  # longer than a memoized field may be
    b" padded",
    b"line\r\nbreak",
    b"",
]
_PSEUDO = [
    (b":method", b"GET"),
    (b":method", b"CONNECT"),
    (b":scheme", b"https"),
    (b":path", b"/"),
    (b":authority", b"a"),
    (b":authority", b"b"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":path", b" /"),
    (b":authority", b"a\r\n"),
    (b":foo", b"x"),
]

_field = st.tuples(st.sampled_from(_NAMES), st.sampled_from(_VALUES))
_block = st.tuples(
    st.lists(st.sampled_from(_PSEUDO), max_size=4, unique=True),
    st.lists(_field, max_size=6),
    st.lists(st.booleans(), min_size=6, max_size=6),  # never indexed, per regular field
    st.booleans(),  # pseudo-headers after the regular fields (malformed)
)


def in_order(pseudo: list[Any], regular: list[Any], pseudo_last: bool) -> list[Any]:
    return [*regular, *pseudo] if pseudo_last else [*pseudo, *regular]


@contextmanager
def empty_memo() -> Iterator[None]:
    memos: list[Any] = [
        headers._VALID_REQUEST_FIELDS,
        headers._VALID_PSEUDO_FIELDS,
        headers._VALID_RESPONSE_FIELDS,
    ]
    saved = [memo.copy() for memo in memos]
    for memo in memos:
        memo.clear()
    try:
        yield
    finally:
        for memo, contents in zip(memos, saved, strict=True):
            memo.clear()
            memo.update(contents)


def typed(result: Any) -> Any:
    """A result with every field's type spelled out (a never-indexed field must stay one)."""
    if isinstance(result, str):
        return result
    fields, *rest = result
    return ([(type(field).__name__, tuple(field)) for field in fields], *rest)


def same_with_and_without_memo(compute: Callable[[], Any]) -> None:
    with_memo = typed(compute())
    with empty_memo():
        without = typed(compute())
    assert with_memo == without


_UA = (b"user-agent", b"a")
_GET = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b":authority", b"a")]


@settings(max_examples=300, deadline=None)
@given(st.lists(_block, min_size=1, max_size=6))
# A field memoized plain, then sent never-indexed: forwarded never-indexed.
@example(
    [
        (_GET, [_UA], [False] * 6, False),
        (_GET, [_UA], [True] * 6, False),
    ]
)
# A memoized field before the pseudo-headers: still malformed.
@example(
    [
        (_GET, [_UA], [False] * 6, False),
        (_GET, [_UA], [False] * 6, True),
    ]
)
def test_request_head_answers_as_without_the_memo(blocks: list[Any]) -> None:
    with empty_memo():
        for pseudo, regular, sensitive, pseudo_last in blocks:
            fields = in_order(
                pseudo,
                [
                    hpack.NeverIndexedHeaderTuple(*field) if hidden else field
                    for field, hidden in zip(regular, sensitive, strict=False)
                ],
                pseudo_last,
            )
            same_with_and_without_memo(lambda fields=fields: request_head(fields))


def never_indexed(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    return hpack.NeverIndexedHeaderTuple(name, value)  # type: ignore[no-any-return]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_block, st.booleans()), min_size=1, max_size=6))
# A memoized field before :status: still malformed.
@example(
    [
        (([(b":status", b"200")], [(b"server", b"a")], [False] * 6, False), False),
        (([(b":status", b"200")], [(b"server", b"a")], [False] * 6, True), False),
    ]
)
def test_response_block_answers_as_without_the_memo(blocks: list[Any]) -> None:
    with empty_memo():
        for (pseudo, regular, sensitive, pseudo_last), trailers in blocks:
            # As the pod side decodes them: (name, value, sensitive) entries.
            fields = in_order(
                [(*field, False) for field in pseudo],
                [(*field, hidden) for field, hidden in zip(regular, sensitive, strict=False)],
                pseudo_last,
            )
            same_with_and_without_memo(
                lambda fields=fields, trailers=trailers: response_block(
                    fields, trailers=trailers, never_indexed=never_indexed
                )
            )


def test_repeated_fields_are_memoized_and_context_fields_are_not() -> None:
    request = [
        *_GET,
        (b"user-agent", b"curl"),
        (b"host", b"a"),
        (b"content-type", b"application/grpc"),
        (b"cookie", b"x=1"),
    ]
    response = [
        (b":status", b"200", False),
        (b"server", b"pod", False),
        (b"content-length", b"3", False),
    ]
    with empty_memo():
        assert not isinstance(request_head(request), str)
        assert not isinstance(response_block(response, trailers=False), str)
        request_memo = headers._VALID_REQUEST_FIELDS
        response_memo = headers._VALID_RESPONSE_FIELDS
        assert request_memo == {(b"user-agent", b"curl")}
        assert response_memo == {(b"server", b"pod", False): (b"server", b"pod")}
        # A memoized field still makes a request malformed where its place does.
        assert request_head([(b"user-agent", b"curl"), *request[:4]]) == (
            "pseudo-header b':method' after a regular field"
        )


def test_the_memo_stays_bounded() -> None:
    with empty_memo():
        for n in range(headers._MEMO_MAX + 10):
            request_head([*_GET, (b"x-n", str(n).encode())])
        assert 0 < len(headers._VALID_REQUEST_FIELDS) <= headers._MEMO_MAX
        request_head([*_GET, (b"x-big", b"v" * headers._MEMO_FIELD_MAX)])
        assert (b"x-big", b"v" * headers._MEMO_FIELD_MAX) not in headers._VALID_REQUEST_FIELDS
