"""Map a request's authority (HTTP/2 ``:authority`` or HTTP/1.1 ``Host``) to a service.

Host patterns:

* exact: ``"a.example.com"``;
* wildcard: ``"*.example.com"`` matches any name below ``example.com`` at any depth
  (``a.example.com``, ``b.a.example.com``) but not the apex ``example.com`` itself;
* catch-all: ``"*"`` matches everything.

Matching order: exact, then the longest wildcard suffix, then the catch-all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar

__all__ = ["CATCH_ALL", "HostRouter", "normalize_authority", "normalize_host_pattern"]

S = TypeVar("S")

CATCH_ALL = "*"


def normalize_authority(authority: str) -> str:
    """Reduce an authority to the host name used for matching.

    Strips the port (``"host:8080"``, ``"[::1]:8080"``), the brackets of an IPv6 literal and one
    trailing dot (``"example.com."`` is the same name, RFC 1034 section 3.1), and lowercases
    (host names are case-insensitive, RFC 3986 section 3.2.2). An authority with several
    colons and no brackets is taken as a bare IPv6 address.
    """
    host = authority
    if host.startswith("["):
        end = host.find("]")
        host = host[1:end] if end != -1 else host[1:]
    else:
        colon = host.find(":")
        if colon != -1 and host.find(":", colon + 1) == -1:
            host = host[:colon]
    if host.endswith("."):
        host = host[:-1]
    return host.lower()


def normalize_host_pattern(pattern: str) -> str:
    """Validate a host pattern and put it in the form :meth:`HostRouter.match` compares.

    Lowercases, strips one trailing dot, and removes the brackets of an IPv6 literal.

    Raises:
        ValueError: The pattern is empty, contains a port, whitespace or an empty label, or uses
            ``*`` anywhere but as the whole first label.
    """
    if pattern == CATCH_ALL:
        return CATCH_ALL
    text = pattern.strip()
    if text != pattern or not text:
        raise ValueError(f"invalid host pattern {pattern!r}: empty or surrounded by whitespace")
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1]
        if not inner or ":" not in inner or "[" in inner or "]" in inner:
            raise ValueError(f"invalid host pattern {pattern!r}: bad IPv6 literal")
        return inner.lower()
    if text.count(":") >= 2:
        # A bare IPv6 address.
        if any(c.isspace() or c in "[]*/" for c in text):
            raise ValueError(f"invalid host pattern {pattern!r}")
        return text.lower()
    if ":" in text:
        raise ValueError(f"invalid host pattern {pattern!r}: must not include a port")
    if text.endswith("."):
        text = text[:-1]
    labels = text.split(".")
    for index, label in enumerate(labels):
        if not label:
            raise ValueError(f"invalid host pattern {pattern!r}: empty label")
        if "*" in label and not (index == 0 and label == "*" and len(labels) > 1):
            raise ValueError(
                f"invalid host pattern {pattern!r}: '*' may only be the whole first label, "
                'as in "*.example.com"'
            )
        if any(c.isspace() or c in "/@?#[]" for c in label):
            raise ValueError(f"invalid host pattern {pattern!r}: bad character")
    return text.lower()


def _describe(service: object) -> str:
    name = getattr(service, "name", None)
    return name if isinstance(name, str) else repr(service)


def _same(first: object, second: object) -> bool:
    return first is second or first == second


class HostRouter(Generic[S]):
    """Route authorities to services by host pattern.

    Lookups cost one dict probe for exact names plus one per label for wildcard suffixes.
    Services must not be None (None means "no route").
    """

    __slots__ = ("_catch_all", "_exact", "_wildcard")

    def __init__(
        self,
        routes: Iterable[tuple[Sequence[str], S]],
        *,
        describe: Callable[[S], str] = _describe,
    ) -> None:
        """Build the routing table.

        Args:
            routes: For each service, its host patterns and the service.
            describe: Names a service in error messages; by default its ``name`` attribute
                when it has a string one, else its ``repr``.

        Raises:
            ValueError: A pattern is invalid, or two services claim the same pattern (exact,
                wildcard or catch-all); the message names both services. A pattern repeated
                within one service is accepted.
        """
        self._exact: dict[str, S] = {}
        # Wildcards keyed by the suffix after "*.", e.g. "example.com" for "*.example.com".
        self._wildcard: dict[str, S] = {}
        catch_all: tuple[S] | None = None
        for patterns, service in routes:
            for pattern in patterns:
                key = normalize_host_pattern(pattern)
                if key == CATCH_ALL:
                    if catch_all is not None and not _same(catch_all[0], service):
                        raise ValueError(self._conflict(pattern, catch_all[0], service, describe))
                    catch_all = (service,)
                    continue
                table = self._exact
                if key.startswith("*."):
                    table = self._wildcard
                    key = key[2:]
                existing = table.get(key, service)
                if not _same(existing, service):
                    raise ValueError(self._conflict(pattern, existing, service, describe))
                table[key] = service
        self._catch_all: S | None = catch_all[0] if catch_all is not None else None

    @staticmethod
    def _conflict(pattern: str, first: S, second: S, describe: Callable[[S], str]) -> str:
        return (
            f"host {pattern!r} is claimed by both service {describe(first)!r} "
            f"and service {describe(second)!r}"
        )

    def match(self, authority: str) -> S | None:
        """The service for a request's authority, or None (the caller answers 404).

        The authority is normalized by :func:`normalize_authority`; then an exact pattern wins,
        then the wildcard with the longest suffix, then the catch-all.
        """
        host = normalize_authority(authority)
        service = self._exact.get(host)
        if service is not None:
            return service
        wildcard = self._wildcard
        if wildcard:
            dot = host.find(".")
            while dot != -1:
                service = wildcard.get(host[dot + 1 :])
                if service is not None:
                    return service
                dot = host.find(".", dot + 1)
        return self._catch_all
