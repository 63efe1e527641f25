"""Typed configuration, loaded from YAML or built from command-line upstream URLs.

Every error names the file, the line and the dotted key path of the offending value, e.g.::

    config.yaml:7: services[0].queue.timeout: expected a duration like "30s", got "soon"

Unknown keys are errors (they are usually typos) and come with a "did you mean" suggestion when a
known key is close. Sizes accept a number of bytes or a string such as ``"64KiB"``, ``"64MiB"``,
``"1GiB"`` or ``"10MB"``; durations accept a number of seconds or a string such as ``"300ms"``,
``"30s"``, ``"5m"``, ``"1h"`` or ``"1m30s"``. Where noted, a duration of ``0s`` disables a limit.
An optional key left empty (null) takes its default.

Example::

    listen: 127.0.0.1:8080
    admin: 127.0.0.1:9090
    tls: {listen: 127.0.0.1:8443, cert: cert.pem, key: key.pem}   # optional
    limits: {max_header_bytes: 64KiB, max_concurrent_streams: 250, replay_buffer: 64KiB,
             max_replays: 3, client_idle_timeout: 1h, client_header_timeout: 30s,
             premature_reset_streams: 500, premature_reset_lifetime: 1s}
    services:
      - name: hello
        hosts: [hello.example.com, "*.hello.example.com"]
        upstream: h2c                 # h2c | http1 | https
        # upstream_tls: {ca: pods-ca.pem, server_name: hello.default.svc}   # https: verify pods
        endpoints: []                 # may be empty: the service starts at zero
        container_concurrency: 0      # 0 = unlimited
        queue: {max_requests: 1000, max_bytes: 64MiB, timeout: 30s}
        probe: {path: /healthz}       # optional; absent = endpoints are ready at once
        timeouts: {response_start: 300s, idle: 0s, max_duration: 0s}   # 0s = no limit
      - name: world
        hosts: [world.example.com]
        # Instead of endpoints, a service may follow its pods through DNS (A and AAAA records)...
        dns: {name: world.default.svc.cluster.local, port: 8012, interval: 5s}
      - name: moon
        hosts: [moon.example.com]
        # ...or through the Kubernetes EndpointSlices of a Service (port: name or number).
        kubernetes: {service: moon, namespace: default, port: http}
    autoscaler:
      push_url: http://127.0.0.1:9999/v1/stats   # optional
      interval: 1s
    busy_poll: 0s   # keep polling this long after the last read instead of sleeping; 0s: off
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NoReturn, TypeVar, cast
from urllib.parse import urlsplit

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from activator.core.resets import MIN_STREAMS, PREMATURE_LIFETIME
from activator.core.routing import HostRouter, normalize_host_pattern

__all__ = [
    "AutoscalerConfig",
    "Config",
    "ConfigError",
    "DnsDiscoveryConfig",
    "KubernetesDiscoveryConfig",
    "LimitsConfig",
    "ProbeConfig",
    "QueueConfig",
    "ServiceConfig",
    "TLSConfig",
    "TimeoutsConfig",
    "UpstreamProtocol",
    "UpstreamTLSConfig",
    "config_from_upstreams",
    "dump_config",
    "format_hostport",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_hostport",
    "parse_size",
]

UpstreamProtocol = Literal["h2c", "http1", "https"]
UPSTREAM_PROTOCOLS: Final[tuple[UpstreamProtocol, ...]] = ("h2c", "http1", "https")

# Common ways of naming a protocol, mapped to the spelling the configuration uses.
_UPSTREAM_HINTS: Final[dict[str, str]] = {
    "http": "http1",
    "http/1.1": "http1",
    "http1.1": "http1",
    "h1": "http1",
    "h2": "h2c",
    "http2": "h2c",
    "grpc": "h2c",
    "tls": "https",
}

_KIB: Final = 1024
_MIB: Final = 1024 * 1024

# SETTINGS_MAX_CONCURRENT_STREAMS is a 32-bit value (RFC 9113 section 6.5.1); stay within the
# signed range that every peer handles.
_MAX_STREAMS: Final = 2**31 - 1

# Seconds between DNS lookups of a service's pods.
_DNS_INTERVAL: Final = 5.0


# -- the configuration model ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """Bounds of a service's queue of requests waiting for a pod.

    Attributes:
        max_requests: Most requests waiting at once; 0 disables queueing.
        max_bytes: Most buffered request body bytes waiting at once.
        timeout: Seconds a request may wait for a pod (> 0).
    """

    max_requests: int = 1000
    max_bytes: int = 64 * _MIB
    timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    """Readiness probe: a pod is ready once ``GET path`` answers 2xx.

    Attributes:
        path: Request path, starting with ``/``.
    """

    path: str = "/healthz"


@dataclass(frozen=True, slots=True)
class TimeoutsConfig:
    """Per-request time limits toward the upstream; 0 means no limit.

    Attributes:
        response_start: Seconds from sending the request until the response headers arrive.
        idle: Seconds without any data in either direction.
        max_duration: Seconds for the whole exchange.
    """

    response_start: float = 300.0
    idle: float = 0.0
    max_duration: float = 0.0


@dataclass(frozen=True, slots=True)
class DnsDiscoveryConfig:
    """Pods from the A and AAAA records of a DNS name, looked up every ``interval``.

    Attributes:
        name: The name to look up, e.g. a headless Service's ``svc.default.svc.cluster.local``.
        port: The pods' port (1-65535); DNS A/AAAA records carry no port.
        interval: Seconds between lookups (> 0).
    """

    name: str
    port: int
    interval: float = _DNS_INTERVAL


@dataclass(frozen=True, slots=True)
class KubernetesDiscoveryConfig:
    """Pods from the EndpointSlices of a Kubernetes Service, listed then watched.

    Attributes:
        service: The Service's name (label ``kubernetes.io/service-name`` of its slices).
        namespace: The Service's namespace; None = the activator's own namespace.
        port: The port's name or number in the slices; None = the slices' only port.
    """

    service: str
    namespace: str | None = None
    port: str | int | None = None


@dataclass(frozen=True, slots=True)
class UpstreamTLSConfig:
    """How an ``https`` service verifies its pods' certificates.

    Without it, TLS to the pods encrypts but does not authenticate them (as Envoy does without a
    validation context).

    Attributes:
        ca: CA certificates (PEM file) the pods' chains must lead to; None = the system's store.
        server_name: Name the certificate must carry, also sent as SNI; None = the pod's address
            (an IP address is then matched against the certificate's IP SANs).
    """

    ca: str | None = None
    server_name: str | None = None


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """One service: the hosts it answers for and the pods that serve it.

    Attributes:
        name: Unique name, a DNS label (``[a-z0-9]([-a-z0-9]*[a-z0-9])?``, at most 63 chars).
        hosts: Host patterns (exact, ``*.suffix`` or ``*``), as written.
        upstream: Protocol toward the pods: ``h2c`` (HTTP/2 cleartext), ``http1`` or ``https``.
        upstream_tls: Verification of the pods' certificates (``https`` only); None = none.
        endpoints: Pod addresses as ``"host:port"``; empty when scaled to zero.
        container_concurrency: Most in-flight requests per pod; 0 = unlimited.
        queue: Queue bounds.
        probe: Readiness probe; None = endpoints are ready at once.
        timeouts: Per-request time limits.
        dns: Pods discovered through DNS instead of ``endpoints``.
        kubernetes: Pods discovered through Kubernetes EndpointSlices instead of ``endpoints``.
    """

    name: str
    hosts: tuple[str, ...]
    upstream: UpstreamProtocol = "h2c"
    upstream_tls: UpstreamTLSConfig | None = None
    endpoints: tuple[str, ...] = ()
    container_concurrency: int = 0
    queue: QueueConfig = field(default_factory=QueueConfig)
    probe: ProbeConfig | None = None
    timeouts: TimeoutsConfig = field(default_factory=TimeoutsConfig)
    dns: DnsDiscoveryConfig | None = None
    kubernetes: KubernetesDiscoveryConfig | None = None


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Protocol and buffering limits of the front end.

    Attributes:
        max_header_bytes: Largest request header block accepted, in bytes (> 0).
        max_concurrent_streams: HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS offered to clients (> 0).
        replay_buffer: Request body bytes kept to replay a request on another pod (0 = none).
        max_replays: Most times a request is replayed (0 = never).
        client_idle_timeout: Seconds a client connection may stay open with no request in flight
            and no new one (HTTP/2: no stream opened; PING and other control frames do not
            count) before it is closed (GOAWAY first on HTTP/2); 0 = no limit.
        client_header_timeout: Seconds a client may take over a request head (HTTP/1.1: from its
            first byte; a new connection: from accept until its first bytes; the TLS handshake)
            before a 408 or a close; 0 = no limit.
        premature_reset_streams: Rapid reset (CVE-2023-44487): once an HTTP/2 client connection
            has opened this many streams and reset over half of them prematurely, it gets
            GOAWAY(ENHANCE_YOUR_CALM); 0 = never closed for that (see activator.core.resets).
        premature_reset_lifetime: Seconds after its start within which a client's reset of an
            unanswered stream counts as premature (> 0).
    """

    max_header_bytes: int = 64 * _KIB
    max_concurrent_streams: int = 250
    replay_buffer: int = 64 * _KIB
    max_replays: int = 3
    client_idle_timeout: float = 3600.0
    client_header_timeout: float = 30.0
    premature_reset_streams: int = MIN_STREAMS
    premature_reset_lifetime: float = PREMATURE_LIFETIME


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """TLS listener.

    Attributes:
        listen: ``"host:port"`` to listen on.
        cert: Certificate chain file (PEM), relative to the working directory unless absolute.
        key: Private key file (PEM), likewise.
    """

    listen: str
    cert: str
    key: str


@dataclass(frozen=True, slots=True)
class AutoscalerConfig:
    """Reporting of concurrency statistics to the autoscaler.

    Attributes:
        push_url: ``http(s)`` URL statistics are POSTed to; None = pull only.
        interval: Seconds between pushes (> 0).
    """

    push_url: str | None = None
    interval: float = 1.0


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration.

    Attributes:
        listen: ``"host:port"`` of the plain-text (h2c and HTTP/1.1) listener.
        admin: ``"host:port"`` of the admin listener (metrics, health, stats).
        tls: Optional TLS listener.
        limits: Protocol and buffering limits.
        services: The services, in file order.
        autoscaler: Autoscaler reporting.
        busy_poll: Seconds the event loop keeps polling (instead of sleeping) after the last
            read; 0 turns it off. It spends CPU to keep the core's caches warm for the next
            request, as HAProxy's ``busy-polling``: see :mod:`activator.io.busypoll`.
        lines: Line of every key parsed from a file, by dotted key path (empty for a
            configuration from flags): checks made after parsing, such as loading the files a
            key names, report the line too. Not part of equality.
    """

    listen: str = "127.0.0.1:8080"
    admin: str = "127.0.0.1:9090"
    tls: TLSConfig | None = None
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    services: tuple[ServiceConfig, ...] = ()
    autoscaler: AutoscalerConfig = field(default_factory=AutoscalerConfig)
    busy_poll: float = 0.0
    # A plain dict (read through Mapping): the configuration is pickled to --workers processes.
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)


class ConfigError(ValueError):
    """An invalid configuration.

    ``str()`` gives the full ``"file:line: key.path: message"``; parts that are unknown (no line
    for command-line errors, no path for whole-file errors) are left out.

    Attributes:
        message: What is wrong.
        source: The file name as given, or the command-line flag.
        line: 1-based line number, when known.
        path: Dotted key path such as ``services[0].queue.timeout``; empty for the whole file.
    """

    def __init__(
        self, message: str, *, source: str = "<config>", line: int | None = None, path: str = ""
    ) -> None:
        self.message = message
        self.source = source
        self.line = line
        self.path = path
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        if self.path:
            return f"{where}: {self.path}: {self.message}"
        return f"{where}: {self.message}"


# -- scalar syntaxes -----------------------------------------------------------------------

_SIZE_UNITS: Final[dict[str, int]] = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_RE: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)")
_DURATION_UNITS: Final[dict[str, float]] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_RE: Final = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h))+")
_DURATION_PART_RE: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_NUMBER_RE: Final = re.compile(r"\d+(?:\.\d+)?")
# Service, namespace and port names. A Service port name is a DNS label too; EndpointSlice ports
# may be unnamed (""), which "port: null" (the only port) covers.
_DNS_LABEL_RE: Final = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?")
_HOST_LABEL_RE: Final = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?")


def parse_size(value: int | float | str) -> int:
    """Bytes from an integer or a string like ``"64KiB"``, ``"10MB"``, ``"1.5GiB"`` or ``"512"``.

    Units (case-insensitive): B; KB, MB, GB, TB (powers of 1000); KiB, MiB, GiB, TiB (powers of
    1024).

    Raises:
        ValueError: Not a size, negative, or not a whole number of bytes.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if isinstance(value, float):
        if not value.is_integer() or value < 0:
            raise ValueError(f"expected a whole, non-negative number of bytes, got {value!r}")
        return int(value)
    match = _SIZE_RE.fullmatch(value.strip())
    if match is None or match.group(2).lower() not in {*_SIZE_UNITS, ""}:
        raise ValueError(f'expected a size like "64KiB" or a number of bytes, got "{value}"')
    number: str = match.group(1)
    unit: str = match.group(2)
    scale = _SIZE_UNITS[unit.lower()] if unit else 1
    if "." in number:
        whole, fraction = number.split(".")
        # Exact arithmetic: floats would turn "1.1KB" into 1100.0000000000002.
        numerator = int(whole + fraction) * scale
        denominator = int("1" + "0" * len(fraction))
        if numerator % denominator:
            raise ValueError(f'"{value}" is not a whole number of bytes')
        return numerator // denominator
    return int(number) * scale


def parse_duration(value: int | float | str) -> float:
    """Seconds from a number or a string like ``"300ms"``, ``"30s"``, ``"5m"``, ``"1h"``,
    ``"1m30s"`` or ``"2.5"``.

    Raises:
        ValueError: Not a duration, negative, or not finite.
    """
    if isinstance(value, bool):
        raise ValueError(f'expected a duration like "30s", got {value!r}')
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"must be finite, got {value!r}")
        if value < 0:
            raise ValueError("must not be negative")
        return float(value)
    text = value.strip()
    if _NUMBER_RE.fullmatch(text):
        return float(text)
    if not _DURATION_RE.fullmatch(text):
        raise ValueError(f'expected a duration like "30s", got "{value}"')
    return sum(
        float(number) * _DURATION_UNITS[unit] for number, unit in _DURATION_PART_RE.findall(text)
    )


def parse_hostport(text: str) -> tuple[str, int]:
    """Split ``"host:port"`` into host and port.

    Accepts ``"127.0.0.1:80"``, ``"[::1]:80"`` (the host is returned without brackets) and
    ``"localhost:80"``. Port 0 is accepted (an ephemeral port when listening).

    Raises:
        ValueError: Missing or invalid host or port, or an IPv6 address without brackets.
    """
    if text.startswith("["):
        end = text.find("]")
        if end == -1 or text[end + 1 : end + 2] != ":":
            raise ValueError(f'expected "[ipv6]:port", got "{text}"')
        host = text[1:end]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f'"{host}" is not an IPv6 address') from None
        port_text = text[end + 2 :]
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon or not host:
            raise ValueError(f'expected "host:port", got "{text}"')
        if ":" in host:
            raise ValueError(f'IPv6 addresses need brackets, as in "[::1]:80", got "{text}"')
        if not _is_host_name_or_ipv4(host):
            raise ValueError(f'"{host}" is not a valid host name or IPv4 address')
    if not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f'expected a port number after ":", got "{text}"')
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} is out of range (0-65535)")
    return host, port


def format_hostport(host: str, port: int) -> str:
    """Join host and port, bracketing IPv6 addresses (RFC 3986 section 3.2.2)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_host_name_or_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        pass
    else:
        return True
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > 253 or not name.isascii():
        return False
    labels = name.split(".")
    # An all-numeric last label is a mistyped IPv4 address, not a name (RFC 3696 section 2).
    if labels[-1].isdigit():
        return False
    return all(len(label) <= 63 and _HOST_LABEL_RE.fullmatch(label) for label in labels)


# -- YAML walking --------------------------------------------------------------------------

_Value = TypeVar("_Value")

_TAG_PREFIX: Final = "tag:yaml.org,2002:"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _line(node: Node) -> int:
    return cast(int, node.start_mark.line) + 1


class _Parser:
    """Walks the composed YAML node tree, keeping the line of every value for errors."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._constructor = SafeConstructor()
        self.lines: dict[str, int] = {}  # dotted key path -> line of the key

    def fail(self, node: Node, path: str, message: str) -> NoReturn:
        raise ConfigError(message, source=self.source, line=_line(node), path=path)

    # Generic node handling.

    def scalar(self, node: Node, path: str) -> object:
        """The Python value of a scalar node; anything but a scalar is an error."""
        if not isinstance(node, ScalarNode):
            self.fail(node, path, f"expected a single value, got {self.show(node)}")
        try:
            return cast(object, self._constructor.construct_object(node))
        except yaml.YAMLError as exc:
            self.fail(node, path, f"invalid value: {exc}")

    def is_null(self, node: Node) -> bool:
        return isinstance(node, ScalarNode) and node.tag == _TAG_PREFIX + "null"

    def show(self, node: Node) -> str:
        """Describe a node for an error message: the value as written, or its kind."""
        if isinstance(node, MappingNode):
            return "a mapping"
        if isinstance(node, SequenceNode):
            return "a list"
        if self.is_null(node):
            return "nothing (null)"
        if node.tag == _TAG_PREFIX + "str":
            return json.dumps(node.value, ensure_ascii=False)
        return str(node.value)

    def mapping(
        self, node: Node, path: str, known: Sequence[str], required: Sequence[str] = ()
    ) -> dict[str, tuple[Node, Node]]:
        """Keys of a mapping node, with their key and value nodes.

        Rejects duplicate and unknown keys (suggesting a close known key) and missing required
        keys.
        """
        if not isinstance(node, MappingNode):
            self.fail(node, path, f"expected a mapping, got {self.show(node)}")
        entries: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            key = self.scalar(key_node, path)
            if not isinstance(key, str):
                self.fail(key_node, path, f"keys must be strings, got {self.show(key_node)}")
            key_path = _join(path, key)
            if key in entries:
                first_line = _line(entries[key][0])
                self.fail(key_node, key_path, f"duplicate key (first set on line {first_line})")
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                if close:
                    hint = f'did you mean "{close[0]}"?'
                else:
                    hint = "expected one of: " + ", ".join(known)
                self.fail(key_node, key_path, f"unknown key; {hint}")
            entries[key] = (key_node, value_node)
            self.lines[key_path] = _line(key_node)
        for key in required:
            if key not in entries:
                self.fail(node, path, f'missing required key "{key}"')
        return entries

    def sequence(self, node: Node, path: str) -> list[Node]:
        if not isinstance(node, SequenceNode):
            self.fail(node, path, f"expected a list, got {self.show(node)}")
        return list(node.value)

    def section(
        self,
        entries: dict[str, tuple[Node, Node]],
        key: str,
        path: str,
        parse: Callable[[Node, str], _Value],
        default: _Value,
    ) -> _Value:
        """Parse an optional key; absent or null gives ``default``."""
        if key not in entries:
            return default
        node = entries[key][1]
        if self.is_null(node):
            return default
        return parse(node, _join(path, key))

    # Typed values.

    def string(self, node: Node, path: str) -> str:
        value = self.scalar(node, path)
        if not isinstance(value, str):
            self.fail(node, path, f"expected a string, got {self.show(node)}")
        if not value:
            self.fail(node, path, "must not be empty")
        return value

    def integer(self, node: Node, path: str, minimum: int, maximum: int | None = None) -> int:
        value = self.scalar(node, path)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(node, path, f"expected a whole number, got {self.show(node)}")
        self.check_range(node, path, value, minimum, maximum)
        return value

    def size(self, node: Node, path: str, minimum: int) -> int:
        value = self.scalar(node, path)
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            self.fail(
                node,
                path,
                f'expected a size like "64KiB" or a number of bytes, got {self.show(node)}',
            )
        try:
            size = parse_size(value)
        except ValueError as exc:
            self.fail(node, path, str(exc))
        self.check_range(node, path, size, minimum, None)
        return size

    def duration(self, node: Node, path: str, *, positive: bool) -> float:
        value = self.scalar(node, path)
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            self.fail(node, path, f'expected a duration like "30s", got {self.show(node)}')
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.fail(node, path, str(exc))
        if positive and seconds <= 0:
            self.fail(node, path, f"must be greater than 0, got {self.show(node)}")
        return seconds

    def check_range(
        self, node: Node, path: str, value: int, minimum: int, maximum: int | None
    ) -> None:
        if value < minimum:
            relation = "greater than 0" if minimum == 1 else f"at least {minimum}"
            self.fail(node, path, f"must be {relation}, got {self.show(node)}")
        if maximum is not None and value > maximum:
            self.fail(node, path, f"must be at most {maximum}, got {self.show(node)}")

    def hostport(self, node: Node, path: str, *, allow_port_zero: bool) -> str:
        value = self.scalar(node, path)
        if not isinstance(value, str):
            self.fail(
                node, path, f'expected "host:port" like "127.0.0.1:8080", got {self.show(node)}'
            )
        try:
            _, port = parse_hostport(value)
        except ValueError as exc:
            self.fail(node, path, str(exc))
        if port == 0 and not allow_port_zero:
            self.fail(node, path, f'port 0 is not a valid destination in "{value}"')
        return value

    def choice(
        self,
        node: Node,
        path: str,
        choices: Sequence[str],
        hints: dict[str, str] | None = None,
    ) -> str:
        """One of ``choices``; on error, suggest the intended one from ``hints`` or spelling."""
        value = self.scalar(node, path)
        if isinstance(value, str) and value in choices:
            return value
        expected = ", ".join(f'"{choice}"' for choice in choices)
        message = f"expected one of {expected}, got {self.show(node)}"
        if isinstance(value, str):
            suggestion = (hints or {}).get(value.lower())
            if suggestion is None:
                close = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
                suggestion = close[0] if close else None
            if suggestion is not None:
                message += f'; did you mean "{suggestion}"?'
        self.fail(node, path, message)

    # Sections.

    def config(self, root: Node | None) -> Config:
        if root is None:
            return Config()
        entries = self.mapping(
            root, "", ("listen", "admin", "tls", "limits", "services", "autoscaler", "busy_poll")
        )
        defaults = Config()
        listen = self.section(entries, "listen", "", self.listen_address, defaults.listen)
        admin = self.section(entries, "admin", "", self.listen_address, defaults.admin)
        tls = self.section(entries, "tls", "", self.tls, None)
        limits = self.section(entries, "limits", "", self.limits, defaults.limits)
        services = self.section(entries, "services", "", self.services, defaults.services)
        autoscaler = self.section(entries, "autoscaler", "", self.autoscaler, defaults.autoscaler)
        busy_poll = self.section(entries, "busy_poll", "", self.optional_limit, defaults.busy_poll)
        # Two listeners on one address would fail at bind time; say which keys clash instead.
        listeners = [("listen", listen), ("admin", admin)]
        if tls is not None:
            listeners.append(("tls.listen", tls.listen))
        seen: dict[tuple[str, int], str] = {}
        for key, address in listeners:
            host, port = parse_hostport(address)
            if port == 0:  # ephemeral ports never clash
                continue
            other = seen.setdefault((host.lower(), port), key)
            if other != key:
                self.fail(self.node_at(root, key), key, f'"{address}" is also the {other} address')
        return Config(
            listen=listen,
            admin=admin,
            tls=tls,
            limits=limits,
            services=services,
            autoscaler=autoscaler,
            busy_poll=busy_poll,
            lines=self.lines,
        )

    def node_at(self, node: Node, dotted: str) -> Node:
        """The value node at a dotted path of mapping keys (already validated to exist)."""
        for key in dotted.split("."):
            assert isinstance(node, MappingNode)
            node = next(value for key_node, value in node.value if key_node.value == key)
        return node

    def listen_address(self, node: Node, path: str) -> str:
        return self.hostport(node, path, allow_port_zero=True)

    def tls(self, node: Node, path: str) -> TLSConfig:
        keys = ("listen", "cert", "key")
        entries = self.mapping(node, path, keys, required=keys)
        return TLSConfig(
            listen=self.listen_address(entries["listen"][1], _join(path, "listen")),
            cert=self.string(entries["cert"][1], _join(path, "cert")),
            key=self.string(entries["key"][1], _join(path, "key")),
        )

    def limits(self, node: Node, path: str) -> LimitsConfig:
        entries = self.mapping(
            node,
            path,
            (
                "max_header_bytes",
                "max_concurrent_streams",
                "replay_buffer",
                "max_replays",
                "client_idle_timeout",
                "client_header_timeout",
                "premature_reset_streams",
                "premature_reset_lifetime",
            ),
        )
        defaults = LimitsConfig()

        def positive_size(node: Node, path: str) -> int:
            return self.size(node, path, minimum=1)

        def streams(node: Node, path: str) -> int:
            return self.integer(node, path, minimum=1, maximum=_MAX_STREAMS)

        return LimitsConfig(
            max_header_bytes=self.section(
                entries, "max_header_bytes", path, positive_size, defaults.max_header_bytes
            ),
            max_concurrent_streams=self.section(
                entries, "max_concurrent_streams", path, streams, defaults.max_concurrent_streams
            ),
            replay_buffer=self.section(
                entries, "replay_buffer", path, self.any_size, defaults.replay_buffer
            ),
            max_replays=self.section(
                entries, "max_replays", path, self.count, defaults.max_replays
            ),
            client_idle_timeout=self.section(
                entries,
                "client_idle_timeout",
                path,
                self.optional_limit,
                defaults.client_idle_timeout,
            ),
            client_header_timeout=self.section(
                entries,
                "client_header_timeout",
                path,
                self.optional_limit,
                defaults.client_header_timeout,
            ),
            premature_reset_streams=self.section(
                entries,
                "premature_reset_streams",
                path,
                self.count,
                defaults.premature_reset_streams,
            ),
            premature_reset_lifetime=self.section(
                entries,
                "premature_reset_lifetime",
                path,
                self.positive_duration,
                defaults.premature_reset_lifetime,
            ),
        )

    def autoscaler(self, node: Node, path: str) -> AutoscalerConfig:
        entries = self.mapping(node, path, ("push_url", "interval"))
        defaults = AutoscalerConfig()
        return AutoscalerConfig(
            push_url=self.section(entries, "push_url", path, self.push_url, None),
            interval=self.section(
                entries, "interval", path, self.positive_duration, defaults.interval
            ),
        )

    def push_url(self, node: Node, path: str) -> str:
        url = self.string(node, path)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            self.fail(node, path, f'invalid URL "{url}": {exc}')
        if parts.scheme not in ("http", "https"):
            self.fail(node, path, f'expected an http:// or https:// URL, got "{url}"')
        if not parts.hostname:
            self.fail(node, path, f'URL "{url}" has no host')
        if port == 0:
            self.fail(node, path, f'URL "{url}" has port 0')
        return url

    def count(self, node: Node, path: str) -> int:
        return self.integer(node, path, minimum=0)

    def any_size(self, node: Node, path: str) -> int:
        return self.size(node, path, minimum=0)

    def positive_duration(self, node: Node, path: str) -> float:
        return self.duration(node, path, positive=True)

    def optional_limit(self, node: Node, path: str) -> float:
        return self.duration(node, path, positive=False)

    def services(self, node: Node, path: str) -> tuple[ServiceConfig, ...]:
        path = path or "services"
        items = self.sequence(node, path)
        services: list[ServiceConfig] = []
        names: dict[str, tuple[int, int]] = {}  # name -> (index, line)
        # Normalized host pattern -> (service name, item path, line) of its first claim.
        claimed: dict[str, tuple[str, str, int]] = {}
        for index, item in enumerate(items):
            item_path = f"{path}[{index}]"
            service = self.service(item, item_path)
            # Already validated by service(): read again only for the lines of name and hosts.
            entries = self.mapping(item, item_path, _SERVICE_KEYS)
            name_node = entries["name"][1]
            if service.name in names:
                first_index, first_line = names[service.name]
                self.fail(
                    name_node,
                    f"{item_path}.name",
                    f'duplicate service name "{service.name}" '
                    f"(also {path}[{first_index}] on line {first_line})",
                )
            names[service.name] = (index, _line(name_node))
            self.claim_hosts(entries["hosts"][1], item_path, service.name, claimed)
            services.append(service)
        # Same normalization as HostRouter; building one confirms the routes are consistent.
        try:
            HostRouter([(service.hosts, service.name) for service in services])
        except ValueError as exc:
            self.fail(node, path, str(exc))
        return tuple(services)

    def claim_hosts(
        self,
        hosts_node: Node,
        item_path: str,
        name: str,
        claimed: dict[str, tuple[str, str, int]],
    ) -> None:
        for index, host_node in enumerate(self.sequence(hosts_node, f"{item_path}.hosts")):
            host_path = f"{item_path}.hosts[{index}]"
            pattern = self.string(host_node, host_path)
            key = normalize_host_pattern(pattern)
            previous = claimed.get(key)
            if previous is not None:
                owner, owner_path, owner_line = previous
                if owner == name:
                    message = f'duplicate host "{pattern}" (also {owner_path} on line {owner_line})'
                else:
                    message = (
                        f'host "{pattern}" is already claimed by service "{owner}" '
                        f"({owner_path} on line {owner_line})"
                    )
                self.fail(host_node, host_path, message)
            claimed[key] = (name, host_path, _line(host_node))

    def service(self, node: Node, path: str) -> ServiceConfig:
        entries = self.mapping(node, path, _SERVICE_KEYS, required=("name", "hosts"))
        name = self.service_name(entries["name"][1], _join(path, "name"))
        hosts = self.hosts(entries["hosts"][1], _join(path, "hosts"))
        upstream = cast(
            UpstreamProtocol,
            self.section(
                entries,
                "upstream",
                path,
                lambda node, path: self.choice(node, path, UPSTREAM_PROTOCOLS, _UPSTREAM_HINTS),
                "h2c",
            ),
        )
        upstream_tls = self.section(entries, "upstream_tls", path, self.upstream_tls, None)
        if upstream_tls is not None and upstream != "https":
            self.fail(
                entries["upstream_tls"][0],
                _join(path, "upstream_tls"),
                f'verifies TLS to the pods, so it needs "upstream: https" (this service uses '
                f'"{upstream}")',
            )
        no_endpoints: tuple[str, ...] = ()
        endpoints = self.section(entries, "endpoints", path, self.endpoints, no_endpoints)
        container_concurrency = self.section(entries, "container_concurrency", path, self.count, 0)
        queue = self.section(entries, "queue", path, self.queue, QueueConfig())
        probe = self.section(entries, "probe", path, self.probe, None)
        timeouts = self.section(entries, "timeouts", path, self.timeouts, TimeoutsConfig())
        dns = self.section(entries, "dns", path, self.dns_discovery, None)
        kubernetes = self.section(entries, "kubernetes", path, self.kubernetes_discovery, None)
        self.one_pod_source(entries, path, bool(endpoints), dns is not None, kubernetes is not None)
        return ServiceConfig(
            name=name,
            hosts=hosts,
            upstream=upstream,
            upstream_tls=upstream_tls,
            endpoints=endpoints,
            container_concurrency=container_concurrency,
            queue=queue,
            probe=probe,
            timeouts=timeouts,
            dns=dns,
            kubernetes=kubernetes,
        )

    def one_pod_source(
        self,
        entries: dict[str, tuple[Node, Node]],
        path: str,
        *given: bool,
    ) -> None:
        """At most one of a non-empty ``endpoints``, ``dns`` and ``kubernetes``: two sources
        would overwrite each other's pod sets."""
        keys = [key for key, present in zip(_POD_SOURCES, given, strict=True) if present]
        if len(keys) < 2:
            return
        first, second = keys[0], keys[1]
        first_line = _line(entries[first][0])
        self.fail(
            entries[second][0],
            _join(path, second),
            f'a service takes its pods from one of "endpoints", "dns" or "kubernetes"; '
            f'"{first}" is also given (line {first_line})',
        )

    def upstream_tls(self, node: Node, path: str) -> UpstreamTLSConfig:
        entries = self.mapping(node, path, ("ca", "server_name"))
        ca = self.section(entries, "ca", path, self.string, None)
        server_name = self.section(entries, "server_name", path, self.host_name, None)
        return UpstreamTLSConfig(ca=ca, server_name=server_name)

    def host_name(self, node: Node, path: str) -> str:
        """A DNS name or an IPv4 address (a TLS server name, a name to resolve)."""
        name = self.string(node, path)
        if not _is_host_name_or_ipv4(name):
            self.fail(node, path, f'"{name}" is not a valid DNS name or IPv4 address')
        return name

    def dns_discovery(self, node: Node, path: str) -> DnsDiscoveryConfig:
        entries = self.mapping(node, path, ("name", "port", "interval"), required=("name", "port"))
        name = self.host_name(entries["name"][1], _join(path, "name"))
        port = self.integer(entries["port"][1], _join(path, "port"), minimum=1, maximum=65535)
        interval = self.section(entries, "interval", path, self.positive_duration, _DNS_INTERVAL)
        return DnsDiscoveryConfig(name=name, port=port, interval=interval)

    def kubernetes_discovery(self, node: Node, path: str) -> KubernetesDiscoveryConfig:
        entries = self.mapping(node, path, ("service", "namespace", "port"), required=("service",))
        service_path = _join(path, "service")
        service = self.kubernetes_name(entries["service"][1], service_path)
        namespace = self.section(entries, "namespace", path, self.kubernetes_name, None)
        port = self.section(entries, "port", path, self.kubernetes_port, None)
        return KubernetesDiscoveryConfig(service=service, namespace=namespace, port=port)

    def kubernetes_name(self, node: Node, path: str) -> str:
        """A Service or namespace name."""
        return self.dns_label(node, path, "name")

    def dns_label(self, node: Node, path: str, what: str) -> str:
        """A lowercase DNS label (RFC 1123 section 2.1, as Kubernetes names use)."""
        name = self.string(node, path)
        if len(name) > 63 or not _DNS_LABEL_RE.fullmatch(name):
            self.fail(
                node,
                path,
                f'invalid {what} "{name}": use lowercase letters, digits and "-", '
                "starting and ending with a letter or digit, at most 63 characters",
            )
        return name

    def kubernetes_port(self, node: Node, path: str) -> str | int:
        """A port number, or a port name as Services and EndpointSlices spell it."""
        value = self.scalar(node, path)
        if isinstance(value, int) and not isinstance(value, bool):
            return self.integer(node, path, minimum=1, maximum=65535)
        if isinstance(value, str) and _DNS_LABEL_RE.fullmatch(value):
            return value
        self.fail(
            node,
            path,
            f'expected a port name like "http" or a number (1-65535), got {self.show(node)}',
        )

    def service_name(self, node: Node, path: str) -> str:
        return self.dns_label(node, path, "service name")

    def hosts(self, node: Node, path: str) -> tuple[str, ...]:
        items = self.sequence(node, path)
        if not items:
            self.fail(node, path, "must list at least one host")
        hosts: list[str] = []
        for index, item in enumerate(items):
            item_path = f"{path}[{index}]"
            pattern = self.string(item, item_path)
            try:
                normalize_host_pattern(pattern)
            except ValueError as exc:
                self.fail(item, item_path, str(exc))
            hosts.append(pattern)
        return tuple(hosts)

    def endpoints(self, node: Node, path: str) -> tuple[str, ...]:
        endpoints: list[str] = []
        first_seen: dict[tuple[str, int], tuple[int, int]] = {}
        for index, item in enumerate(self.sequence(node, path)):
            item_path = f"{path}[{index}]"
            endpoint = self.hostport(item, item_path, allow_port_zero=False)
            host, port = parse_hostport(endpoint)
            key = (host.lower(), port)
            if key in first_seen:
                first_index, first_line = first_seen[key]
                self.fail(
                    item,
                    item_path,
                    f'duplicate endpoint "{endpoint}" (also {path}[{first_index}] '
                    f"on line {first_line})",
                )
            first_seen[key] = (index, _line(item))
            endpoints.append(endpoint)
        return tuple(endpoints)

    def queue(self, node: Node, path: str) -> QueueConfig:
        entries = self.mapping(node, path, ("max_requests", "max_bytes", "timeout"))
        defaults = QueueConfig()
        return QueueConfig(
            max_requests=self.section(
                entries, "max_requests", path, self.count, defaults.max_requests
            ),
            max_bytes=self.section(entries, "max_bytes", path, self.any_size, defaults.max_bytes),
            timeout=self.section(
                entries, "timeout", path, self.positive_duration, defaults.timeout
            ),
        )

    def probe(self, node: Node, path: str) -> ProbeConfig:
        entries = self.mapping(node, path, ("path",))
        if "path" not in entries:
            return ProbeConfig()
        value_node = entries["path"][1]
        probe_path = self.string(value_node, _join(path, "path"))
        if not probe_path.startswith("/") or any(c.isspace() for c in probe_path):
            self.fail(
                value_node,
                _join(path, "path"),
                f'expected an absolute path like "/healthz", got "{probe_path}"',
            )
        return ProbeConfig(path=probe_path)

    def timeouts(self, node: Node, path: str) -> TimeoutsConfig:
        entries = self.mapping(node, path, ("response_start", "idle", "max_duration"))
        defaults = TimeoutsConfig()
        return TimeoutsConfig(
            response_start=self.section(
                entries, "response_start", path, self.optional_limit, defaults.response_start
            ),
            idle=self.section(entries, "idle", path, self.optional_limit, defaults.idle),
            max_duration=self.section(
                entries, "max_duration", path, self.optional_limit, defaults.max_duration
            ),
        )


_SERVICE_KEYS: Final = (
    "name",
    "hosts",
    "upstream",
    "upstream_tls",
    "endpoints",
    "container_concurrency",
    "queue",
    "probe",
    "timeouts",
    "dns",
    "kubernetes",
)
_POD_SOURCES: Final = ("endpoints", "dns", "kubernetes")


# -- entry points --------------------------------------------------------------------------


def parse_config(text: str, source: str = "<config>") -> Config:
    """Parse and validate a YAML configuration.

    An empty document gives the defaults (no services).

    Args:
        text: The YAML text.
        source: File name used in error messages.

    Raises:
        ConfigError: Invalid YAML or an invalid value; the message names the source, the line
            and the key path.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(part for part in (exc.context, exc.problem) if part)
        raise ConfigError(f"invalid YAML: {problem}", source=source, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", source=source) from None
    return _Parser(source).config(root)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, parse and validate a YAML configuration file.

    Errors name the file as given in ``path``.

    Raises:
        ConfigError: The file cannot be read or is invalid.
    """
    source = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror or exc}", source=source) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc.reason}", source=source) from None
    return parse_config(text, source)


_UPSTREAM_SCHEMES: Final[dict[str, tuple[UpstreamProtocol, int]]] = {
    "h2c": ("h2c", 80),
    "http": ("http1", 80),
    "https": ("https", 443),
}


def config_from_upstreams(upstreams: Sequence[str], *, listen: str, admin: str) -> Config:
    """Build the configuration for command-line mode.

    One service named ``default`` answers for every host (``"*"``) and balances over the given
    upstreams, with no readiness probe.

    Args:
        upstreams: URLs ``h2c://host:port``, ``http://host:port`` (HTTP/1.1) or
            ``https://host:port``, all with the same scheme; the port defaults to 80 (443 for
            https).
        listen: ``"host:port"`` of the plain-text listener.
        admin: ``"host:port"`` of the admin listener.

    Raises:
        ConfigError: Naming the flag (``--upstream``, ``--listen`` or ``--admin``) at fault.
    """
    for flag, address in (("--listen", listen), ("--admin", admin)):
        try:
            parse_hostport(address)
        except ValueError as exc:
            raise ConfigError(str(exc), source=flag) from None
    if not upstreams:
        raise ConfigError("at least one upstream URL is required", source="--upstream")
    protocol: UpstreamProtocol | None = None
    first_url = ""
    endpoints: list[str] = []
    for url in upstreams:
        url_protocol, endpoint = _parse_upstream_url(url)
        if protocol is None:
            protocol, first_url = url_protocol, url
        elif url_protocol != protocol:
            raise ConfigError(
                f'all upstreams must use the same scheme, got "{first_url}" and "{url}"',
                source="--upstream",
            )
        if endpoint in endpoints:
            raise ConfigError(f'upstream "{url}" is given twice', source="--upstream")
        endpoints.append(endpoint)
    assert protocol is not None
    service = ServiceConfig(
        name="default", hosts=("*",), upstream=protocol, endpoints=tuple(endpoints)
    )
    return Config(listen=listen, admin=admin, services=(service,))


def _parse_upstream_url(url: str) -> tuple[UpstreamProtocol, str]:
    """Protocol and ``"host:port"`` of one ``--upstream`` URL."""

    def fail(reason: str) -> NoReturn:
        raise ConfigError(f'invalid upstream "{url}": {reason}', source="--upstream")

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        fail(str(exc))
    scheme = _UPSTREAM_SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        fail("expected an h2c://, http:// or https:// URL")
    protocol, default_port = scheme
    if not parts.hostname:
        fail("no host")
    if parts.username is not None or parts.password is not None:
        fail("user information is not supported")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        fail("only scheme, host and port are allowed")
    if port == 0:
        fail("port 0 is not a valid destination")
    endpoint = format_hostport(parts.hostname, default_port if port is None else port)
    try:
        parse_hostport(endpoint)
    except ValueError as exc:
        fail(str(exc))
    return protocol, endpoint


# -- dumping -------------------------------------------------------------------------------


def dump_config(config: Config) -> str:
    """The configuration as YAML that :func:`parse_config` reads back to an equal ``Config``.

    Sizes are written as bytes and durations as seconds.
    """
    document: dict[str, Any] = {"listen": config.listen, "admin": config.admin}
    if config.tls is not None:
        document["tls"] = {
            "listen": config.tls.listen,
            "cert": config.tls.cert,
            "key": config.tls.key,
        }
    limits = config.limits
    document["limits"] = {
        "max_header_bytes": limits.max_header_bytes,
        "max_concurrent_streams": limits.max_concurrent_streams,
        "replay_buffer": limits.replay_buffer,
        "max_replays": limits.max_replays,
        "client_idle_timeout": limits.client_idle_timeout,
        "client_header_timeout": limits.client_header_timeout,
        "premature_reset_streams": limits.premature_reset_streams,
        "premature_reset_lifetime": limits.premature_reset_lifetime,
    }
    services: list[dict[str, Any]] = []
    for service in config.services:
        entry: dict[str, Any] = {
            "name": service.name,
            "hosts": list(service.hosts),
            "upstream": service.upstream,
            "endpoints": list(service.endpoints),
            "container_concurrency": service.container_concurrency,
            "queue": {
                "max_requests": service.queue.max_requests,
                "max_bytes": service.queue.max_bytes,
                "timeout": service.queue.timeout,
            },
            "timeouts": {
                "response_start": service.timeouts.response_start,
                "idle": service.timeouts.idle,
                "max_duration": service.timeouts.max_duration,
            },
        }
        if service.upstream_tls is not None:
            upstream_tls: dict[str, str] = {}
            if service.upstream_tls.ca is not None:
                upstream_tls["ca"] = service.upstream_tls.ca
            if service.upstream_tls.server_name is not None:
                upstream_tls["server_name"] = service.upstream_tls.server_name
            entry["upstream_tls"] = upstream_tls
        if service.probe is not None:
            entry["probe"] = {"path": service.probe.path}
        if service.dns is not None:
            entry["dns"] = {
                "name": service.dns.name,
                "port": service.dns.port,
                "interval": service.dns.interval,
            }
        if service.kubernetes is not None:
            kubernetes: dict[str, Any] = {"service": service.kubernetes.service}
            if service.kubernetes.namespace is not None:
                kubernetes["namespace"] = service.kubernetes.namespace
            if service.kubernetes.port is not None:
                kubernetes["port"] = service.kubernetes.port
            entry["kubernetes"] = kubernetes
        services.append(entry)
    document["services"] = services
    autoscaler: dict[str, Any] = {"interval": config.autoscaler.interval}
    if config.autoscaler.push_url is not None:
        autoscaler["push_url"] = config.autoscaler.push_url
    document["autoscaler"] = autoscaler
    document["busy_poll"] = config.busy_poll
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
