"""Tests for host-based routing."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from activator.core.routing import HostRouter, normalize_authority, normalize_host_pattern


@pytest.fixture
def router() -> HostRouter[str]:
    return HostRouter(
        [
            (["hello.example.com", "*.hello.example.com"], "hello"),
            (["*.example.com"], "wild"),
            (["api.example.com", "API2.Example.com."], "api"),
            (["[::1]", "127.0.0.1"], "local"),
        ]
    )


@pytest.mark.parametrize(
    ("authority", "service"),
    [
        ("hello.example.com", "hello"),
        ("hello.example.com:8080", "hello"),
        ("HELLO.Example.COM", "hello"),
        ("hello.example.com.", "hello"),
        ("hello.example.com.:443", "hello"),
        ("a.hello.example.com", "hello"),
        ("b.a.hello.example.com", "hello"),  # wildcards match at any depth
        ("other.example.com", "wild"),
        ("x.y.example.com", "wild"),
        ("api.example.com", "api"),  # exact beats a wildcard
        ("api2.example.com", "api"),
        ("[::1]:8080", "local"),
        ("[::1]", "local"),
        ("::1", "local"),
        ("127.0.0.1:80", "local"),
    ],
)
def test_match(router: HostRouter[str], authority: str, service: str) -> None:
    assert router.match(authority) == service


@pytest.mark.parametrize(
    "authority",
    [
        "example.com",  # the apex is not matched by "*.example.com"
        "example.org",
        "",
        "hello.example.com.evil.org",
        "notexample.com",
        "[::2]:80",
        "com",
    ],
)
def test_no_match(router: HostRouter[str], authority: str) -> None:
    assert router.match(authority) is None


def test_catch_all_is_last_resort() -> None:
    router = HostRouter([(["*"], "default"), (["a.example.com"], "a"), (["*.b.com"], "b")])
    assert router.match("a.example.com") == "a"
    assert router.match("x.b.com") == "b"
    assert router.match("b.com") == "default"
    assert router.match("anything:1") == "default"
    assert router.match("") == "default"


def test_longest_wildcard_wins() -> None:
    router = HostRouter([(["*.com"], "com"), (["*.example.com"], "ex"), (["*.a.example.com"], "a")])
    assert router.match("z.a.example.com") == "a"
    assert router.match("a.example.com") == "ex"
    assert router.match("example.com") == "com"


def test_empty_router() -> None:
    router: HostRouter[str] = HostRouter([])
    assert router.match("example.com") is None


@dataclass(frozen=True)
class Service:
    name: str


class TestConflicts:
    def test_duplicate_exact_host_names_both_services(self) -> None:
        with pytest.raises(ValueError, match=r"'A\.example\.com\.'.*'first'.*'second'"):
            HostRouter(
                [
                    (["a.example.com"], Service("first")),
                    (["A.example.com."], Service("second")),
                ]
            )

    def test_duplicate_wildcard(self) -> None:
        with pytest.raises(ValueError, match="claimed by both"):
            HostRouter([(["*.example.com"], "one"), (["*.example.com"], "two")])

    def test_duplicate_catch_all(self) -> None:
        with pytest.raises(ValueError, match=r"'\*'.*'one'.*'two'"):
            HostRouter([(["*"], "one"), (["*"], "two")])

    def test_repeat_within_one_service_is_fine(self) -> None:
        router = HostRouter([(["a.example.com", "a.example.com", "*", "*"], "one")])
        assert router.match("a.example.com") == "one"

    def test_wildcard_and_exact_of_the_same_name_do_not_conflict(self) -> None:
        router = HostRouter([(["example.com"], "apex"), (["*.example.com"], "sub")])
        assert router.match("example.com") == "apex"
        assert router.match("www.example.com") == "sub"

    def test_custom_description(self) -> None:
        with pytest.raises(ValueError, match="service 'svc-1' and service 'svc-2'"):
            HostRouter([(["a"], 1), (["a"], 2)], describe=lambda number: f"svc-{number}")


@pytest.mark.parametrize(
    "pattern",
    [
        "",
        " a.example.com",
        "a..example.com",
        ".example.com",
        "a.*.example.com",
        "*example.com",
        "**.example.com",
        "*.",
        "example.com:8080",
        "a b.com",
        "a/b.com",
        "[]",
        "[example.com]",
    ],
)
def test_invalid_patterns(pattern: str) -> None:
    with pytest.raises(ValueError, match="invalid host pattern"):
        normalize_host_pattern(pattern)
    with pytest.raises(ValueError, match="invalid host pattern"):
        HostRouter([([pattern], "x")])


@pytest.mark.parametrize(
    ("pattern", "normalized"),
    [
        ("Example.COM.", "example.com"),
        ("*.Example.com", "*.example.com"),
        ("*", "*"),
        ("[::1]", "::1"),
        ("fe80::1", "fe80::1"),
        ("10.0.0.1", "10.0.0.1"),
    ],
)
def test_pattern_normalization(pattern: str, normalized: str) -> None:
    assert normalize_host_pattern(pattern) == normalized


@pytest.mark.parametrize(
    ("authority", "host"),
    [
        ("Example.com:80", "example.com"),
        ("example.com.", "example.com"),
        ("[::1]:443", "::1"),
        ("[::1]", "::1"),
        ("[::1", "::1"),
        ("fe80::1", "fe80::1"),
        ("host", "host"),
        ("", ""),
    ],
)
def test_authority_normalization(authority: str, host: str) -> None:
    assert normalize_authority(authority) == host


labels = st.sampled_from(["a", "b", "example", "com", "x-1"])
names = st.lists(labels, min_size=1, max_size=4).map(".".join)


def reference_match(routes: list[tuple[str, str]], host: str) -> str | None:
    """Straightforward reading of the matching rules, for comparison."""
    exact = [service for pattern, service in routes if pattern == host]
    if exact:
        return exact[0]
    best: tuple[int, str] | None = None
    for pattern, service in routes:
        is_wildcard_match = pattern.startswith("*.") and host.endswith(pattern[1:])
        if is_wildcard_match and (best is None or len(pattern) > best[0]):
            best = (len(pattern), service)
    if best is not None:
        return best[1]
    catch_all = [service for pattern, service in routes if pattern == "*"]
    return catch_all[0] if catch_all else None


@given(
    patterns=st.lists(
        st.one_of(names, names.map(lambda name: "*." + name), st.just("*")),
        unique=True,
        max_size=8,
    ),
    host=names,
    port=st.one_of(st.none(), st.integers(1, 65535)),
    upper=st.booleans(),
    trailing_dot=st.booleans(),
)
def test_matches_reference(
    patterns: list[str], host: str, port: int | None, upper: bool, trailing_dot: bool
) -> None:
    routes = [(pattern, f"s{index}") for index, pattern in enumerate(patterns)]
    router = HostRouter([([pattern], service) for pattern, service in routes])
    authority = (host.upper() if upper else host) + ("." if trailing_dot else "")
    if port is not None:
        authority += f":{port}"
    assert router.match(authority) == reference_match(routes, host)
