"""Endpoint discovery: follow a service's pods through DNS or Kubernetes EndpointSlices.

Each source is a thin asyncio shell around one task that calls ``set_endpoints(service,
addresses)`` whenever the set of pod addresses changes, and never when it is unchanged, so the
throttle and the readiness prober only see real changes.

- :class:`DnsDiscovery` looks up the A and AAAA records of a name every ``interval``. A failed
  lookup keeps the last good set (a DNS hiccup must not drop every pod); a name that does not
  exist or has no address records means zero pods (scaled to zero).
- :class:`KubernetesDiscovery` lists the EndpointSlices of a Service, then watches them from the
  list's ``resourceVersion``; a ``410 Gone`` (the version was compacted away) makes it list again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import aiodns
import aiodns.error
import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from activator.config import (
    DnsDiscoveryConfig,
    KubernetesDiscoveryConfig,
    ServiceConfig,
    format_hostport,
)

__all__ = [
    "SERVICE_ACCOUNT_DIR",
    "Discovery",
    "DnsDiscovery",
    "KubernetesApiError",
    "KubernetesDiscovery",
    "SetEndpoints",
    "default_namespace",
    "discovery_for",
    "in_cluster_api_url",
    "slice_endpoints",
]

log = logging.getLogger("activator.discovery")

SetEndpoints = Callable[[str, list[str]], None]
"""``set_endpoints(service_name, addresses)``, e.g. :meth:`Activator.set_endpoints`."""

SERVICE_ACCOUNT_DIR: Final = "/var/run/secrets/kubernetes.io/serviceaccount"

# DNS record types (RFC 1035 section 3.2.2; RFC 3596 section 2.1 for AAAA).
_TYPE_A: Final = 1
_TYPE_AAAA: Final = 28

# Retry soon after one failure (a lost UDP datagram, a dropped watch), then back off to spare a
# struggling server; jittered so that many activators do not retry in lockstep.
_RETRY_INITIAL: Final = 0.2
_RETRY_MAX: Final = 30.0

# The API server ends a watch after timeoutSeconds; reconnecting from the last resourceVersion
# is cheap. The read timeout leaves room for bookmarks, which come about once a minute.
_WATCH_SECONDS: Final = 300
_WATCH_READ_TIMEOUT: Final = _WATCH_SECONDS + 60.0


class Discovery(Protocol):
    """A running discovery source."""

    def start(self) -> None: ...

    async def close(self) -> None: ...


def _retry_wait(interval_cap: float) -> wait_base:
    return wait_exponential_jitter(
        multiplier=_RETRY_INITIAL, max=max(interval_cap, _RETRY_MAX), jitter=_RETRY_INITIAL
    )


class _Publisher:
    """Calls ``set_endpoints`` only when the address set differs from the last one given."""

    def __init__(self, service: str, set_endpoints: SetEndpoints) -> None:
        self.service = service
        self._set_endpoints = set_endpoints
        # The service starts with no pods from this source: an empty first result is no change.
        self.current: frozenset[str] = frozenset()

    def publish(self, addresses: Iterable[str]) -> None:
        new = frozenset(addresses)
        if new == self.current:
            return
        added, removed = len(new - self.current), len(self.current - new)
        self.current = new
        log.info("service %s: %d pods discovered (+%d -%d)", self.service, len(new), added, removed)
        self._set_endpoints(self.service, sorted(new))


class _FailureStreak:
    """Logs the first failure of a streak and the recovery, not every retry."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failing = False

    def failed(self, state: RetryCallState) -> None:
        if self.failing:
            return
        self.failing = True
        exc = state.outcome.exception() if state.outcome is not None else None
        log.warning("%s failed, retrying with backoff: %s", self.what, exc)

    def succeeded(self) -> None:
        if self.failing:
            self.failing = False
            log.info("%s works again", self.what)


def _run_task(name: str, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(coroutine, name=name)


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


# -- DNS ---------------------------------------------------------------------------------------


class _DnsLookupError(Exception):
    """A lookup that said nothing about the name (timeout, SERVFAIL, refused...)."""


class DnsDiscovery:
    """Pods from the A and AAAA records of ``config.name``, looked up every ``config.interval``.

    Args:
        service: The service whose pods these are.
        config: Name, port and interval.
        set_endpoints: Called with the new ``host:port`` list when the set changes.
        nameservers: ``"ip"`` or ``"ip:port"`` servers; None = the system's (resolv.conf).
        timeout: Seconds one query waits for an answer.
        retry_wait: Backoff between failed lookups (tenacity wait); default: jittered
            exponential from 0.2 s up to 30 s (or the interval, if longer).
    """

    def __init__(
        self,
        service: str,
        config: DnsDiscoveryConfig,
        set_endpoints: SetEndpoints,
        *,
        nameservers: Sequence[str] | None = None,
        timeout: float = 2.0,
        retry_wait: wait_base | None = None,
    ) -> None:
        self.config = config
        self.nameservers = list(nameservers) if nameservers else None
        self.timeout = timeout
        self._publisher = _Publisher(service, set_endpoints)
        self._streak = _FailureStreak(f"service {service}: DNS lookup of {config.name}")
        self._retry_wait = retry_wait or _retry_wait(config.interval)
        self._task: asyncio.Task[None] | None = None

    @property
    def endpoints(self) -> frozenset[str]:
        """The last published address set."""
        return self._publisher.current

    def start(self) -> None:
        self._task = _run_task(f"dns-discovery-{self._publisher.service}", self._run())

    async def close(self) -> None:
        await _cancel(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            retrying = AsyncRetrying(
                wait=self._retry_wait,
                retry=retry_if_exception_type(_DnsLookupError),
                before_sleep=self._streak.failed,
            )
            addresses: set[str] = await retrying(self.lookup)
            self._streak.succeeded()
            self._publisher.publish(addresses)
            await asyncio.sleep(self.config.interval)

    async def lookup(self) -> set[str]:
        """The ``host:port`` addresses the name has now (A and AAAA together).

        Raises:
            _DnsLookupError: The lookup failed without an answer about the name.
        """
        # A fresh resolver per lookup: c-ares would otherwise answer from its cache (negative
        # answers included), and a pod set must be asked of the server every interval.
        # tries=1: tenacity owns retrying, with backoff and jitter.
        resolver = aiodns.DNSResolver(nameservers=self.nameservers, timeout=self.timeout, tries=1)
        try:
            a, aaaa = await asyncio.gather(
                self._query(resolver, "A"), self._query(resolver, "AAAA")
            )
        finally:
            await resolver.close()
        return {format_hostport(host, self.config.port) for host in (*a, *aaaa)}

    async def _query(self, resolver: Any, qtype: Literal["A", "AAAA"]) -> list[str]:
        # Typed loosely: aiodns 4 answers query_dns with pycares DNSResult records; aiodns 3 has
        # only query, answering objects with a .host.
        try:
            if hasattr(resolver, "query_dns"):
                result = await resolver.query_dns(self.config.name, qtype)
                wanted = _TYPE_A if qtype == "A" else _TYPE_AAAA
                # The answer may start with the CNAME chain that led to the addresses.
                return [str(r.data.addr) for r in result.answer if r.type == wanted]
            records = await resolver.query(self.config.name, qtype)
            return [str(record.host) for record in records]
        except aiodns.error.DNSError as exc:
            code = exc.args[0] if exc.args else None
            # NXDOMAIN (RFC 1035 section 4.1.1, RCODE 3) or NODATA (RFC 2308 section 2.2):
            # the name says there are no pods.
            if code in (aiodns.error.ARES_ENOTFOUND, aiodns.error.ARES_ENODATA):
                return []
            raise _DnsLookupError(f"{qtype}: {exc}") from exc


# -- Kubernetes --------------------------------------------------------------------------------


class KubernetesApiError(Exception):
    """The API server answered with an error, or with something that is not a watch event."""


class _Gone(Exception):
    """410 Gone: the resourceVersion is too old to watch from; list again."""


def default_namespace(
    service_account_dir: str | os.PathLike[str] = SERVICE_ACCOUNT_DIR,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The activator's own namespace: the service account's, else ``POD_NAMESPACE``, else
    ``default``."""
    try:
        namespace = Path(service_account_dir, "namespace").read_text(encoding="utf-8").strip()
    except OSError:
        namespace = ""
    if namespace:
        return namespace
    environ = os.environ if environ is None else environ
    return environ.get("POD_NAMESPACE") or "default"


def in_cluster_api_url(environ: Mapping[str, str] | None = None) -> str:
    """The API server's URL from ``KUBERNETES_SERVICE_HOST`` and ``KUBERNETES_SERVICE_PORT``.

    Raises:
        KubernetesApiError: Not running in a cluster (the variables are not set).
    """
    environ = os.environ if environ is None else environ
    host = environ.get("KUBERNETES_SERVICE_HOST")
    port = environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise KubernetesApiError(
            "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set: not in a cluster"
        )
    return f"https://{format_hostport(host, int(port))}"


def slice_endpoints(endpoint_slice: Mapping[str, Any], port: str | int | None) -> list[str]:
    """``host:port`` of the ready endpoints of one EndpointSlice (discovery.k8s.io/v1).

    An endpoint counts unless ``conditions.ready`` is false (an absent ``ready`` means ready).
    The port is the one named ``port``, or the number ``port``, or the slice's only port; a
    slice without such a port contributes nothing.
    """
    number = _slice_port(endpoint_slice.get("ports") or [], port)
    if number is None:
        return []
    addresses: list[str] = []
    for endpoint in endpoint_slice.get("endpoints") or []:
        conditions = endpoint.get("conditions") or {}
        if conditions.get("ready") is False:
            continue
        for address in endpoint.get("addresses") or []:
            addresses.append(format_hostport(str(address), number))
    return addresses


def _slice_port(ports: list[Mapping[str, Any]], wanted: str | int | None) -> int | None:
    if isinstance(wanted, int):
        return wanted
    if wanted is None:
        if len(ports) != 1:
            return None
        number = ports[0].get("port")
    else:
        number = next((p.get("port") for p in ports if p.get("name") == wanted), None)
    return number if isinstance(number, int) else None


class KubernetesDiscovery:
    """Pods from the EndpointSlices of a Kubernetes Service: list, then watch.

    Args:
        service: The activator service whose pods these are.
        config: The Kubernetes Service, namespace and port.
        set_endpoints: Called with the new ``host:port`` list when the set changes.
        api_url: The API server; None = in-cluster (``KUBERNETES_SERVICE_HOST/PORT``).
        service_account_dir: Where ``token``, ``ca.crt`` and ``namespace`` are; the token is read
            again at every connection, since projected tokens are rotated.
        environ: Environment variables (``KUBERNETES_SERVICE_*``, ``POD_NAMESPACE``).
        retry_wait: Backoff between failed connections (tenacity wait).
        watch_seconds: ``timeoutSeconds`` asked of each watch.
    """

    def __init__(
        self,
        service: str,
        config: KubernetesDiscoveryConfig,
        set_endpoints: SetEndpoints,
        *,
        api_url: str | None = None,
        service_account_dir: str | os.PathLike[str] = SERVICE_ACCOUNT_DIR,
        environ: Mapping[str, str] | None = None,
        retry_wait: wait_base | None = None,
        watch_seconds: int = _WATCH_SECONDS,
    ) -> None:
        self.config = config
        self.service_account_dir = Path(service_account_dir)
        self.environ = os.environ if environ is None else environ
        self.api_url = api_url
        self.namespace = config.namespace or default_namespace(service_account_dir, self.environ)
        self.watch_seconds = watch_seconds
        self._publisher = _Publisher(service, set_endpoints)
        self._streak = _FailureStreak(
            f"service {service}: EndpointSlices of {self.namespace}/{config.service}"
        )
        self._retry_wait = retry_wait or _retry_wait(0.0)
        # Slice name -> its ready addresses.
        self._slices: dict[str, list[str]] = {}
        self._resource_version: str | None = None
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def endpoints(self) -> frozenset[str]:
        """The last published address set."""
        return self._publisher.current

    @property
    def path(self) -> str:
        return f"/apis/discovery.k8s.io/v1/namespaces/{self.namespace}/endpointslices"

    def start(self) -> None:
        self._task = _run_task(f"kubernetes-discovery-{self._publisher.service}", self._run())

    async def close(self) -> None:
        await _cancel(self._task)
        self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self) -> None:
        while True:
            retrying = AsyncRetrying(
                wait=self._retry_wait,
                retry=retry_if_exception_type(
                    (httpx.HTTPError, OSError, ssl.SSLError, KubernetesApiError, _Gone)
                ),
                before_sleep=self._before_retry,
            )
            # Returns when the API server ends a watch normally: watch again from where it was.
            await retrying(self._sync)

    def _before_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _Gone):
            log.info("service %s: watch expired (410 Gone), listing again", self._publisher.service)
            return
        self._streak.failed(state)

    async def _sync(self) -> None:
        client = self._client_for_api()
        headers = self._auth_headers()
        selector = f"kubernetes.io/service-name={self.config.service}"
        if self._resource_version is None:
            await self._list(client, headers, selector)
        await self._watch(client, headers, selector)

    async def _list(
        self, client: httpx.AsyncClient, headers: dict[str, str], selector: str
    ) -> None:
        response = await client.get(self.path, params={"labelSelector": selector}, headers=headers)
        if response.status_code != 200:
            raise KubernetesApiError(f"list: HTTP {response.status_code}: {response.text[:200]}")
        body = _json_object(response.content)
        slices: dict[str, list[str]] = {}
        for item in body.get("items") or []:
            slices[_slice_name(item)] = slice_endpoints(item, self.config.port)
        self._slices = slices
        self._resource_version = str((body.get("metadata") or {}).get("resourceVersion") or "")
        self._streak.succeeded()
        self._publish()

    async def _watch(
        self, client: httpx.AsyncClient, headers: dict[str, str], selector: str
    ) -> None:
        params = {
            "labelSelector": selector,
            "watch": "1",
            "allowWatchBookmarks": "true",
            "resourceVersion": self._resource_version or "",
            "timeoutSeconds": str(self.watch_seconds),
        }
        async with client.stream("GET", self.path, params=params, headers=headers) as response:
            if response.status_code == 410:
                self._resource_version = None
                raise _Gone
            if response.status_code != 200:
                text = (await response.aread())[:200].decode("utf-8", "replace")
                raise KubernetesApiError(f"watch: HTTP {response.status_code}: {text}")
            self._streak.succeeded()
            events = 0
            async for line in response.aiter_lines():
                if line.strip():
                    events += 1
                    self._event(_json_object(line.encode()))
        if not events:
            # Bookmarks come about every minute: a stream that ends empty is a server or proxy
            # cutting watches short, and watching again at once would spin.
            raise KubernetesApiError("the watch ended without any event")

    def _event(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            # A watch that outlived its resourceVersion ends with a Status of code 410.
            if obj.get("code") == 410:
                self._resource_version = None
                raise _Gone
            raise KubernetesApiError(f"watch error: {obj.get('message') or obj}")
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED"):
            self._slices[_slice_name(obj)] = slice_endpoints(obj, self.config.port)
        elif kind == "DELETED":
            self._slices.pop(_slice_name(obj), None)
        elif kind != "BOOKMARK":
            raise KubernetesApiError(f"unknown watch event type {kind!r}")
        if version:
            self._resource_version = str(version)
        self._publish()

    def _publish(self) -> None:
        self._publisher.publish(a for addresses in self._slices.values() for a in addresses)

    def _client_for_api(self) -> httpx.AsyncClient:
        if self._client is None:
            base_url = self.api_url or in_cluster_api_url(self.environ)
            ca = self.service_account_dir / "ca.crt"
            verify: ssl.SSLContext | bool = True
            if base_url.startswith("https:") and ca.is_file():
                verify = ssl.create_default_context(cafile=str(ca))
            self._client = httpx.AsyncClient(
                base_url=base_url,
                verify=verify,
                timeout=httpx.Timeout(10.0, read=_WATCH_READ_TIMEOUT),
            )
        return self._client

    def _auth_headers(self) -> dict[str, str]:
        try:
            token = (self.service_account_dir / "token").read_text(encoding="utf-8").strip()
        except OSError:
            return {}
        return {"Authorization": f"Bearer {token}"} if token else {}


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise KubernetesApiError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise KubernetesApiError("expected a JSON object")
    return value


def _slice_name(endpoint_slice: Mapping[str, Any]) -> str:
    return str((endpoint_slice.get("metadata") or {}).get("name") or "")


# -- wiring ------------------------------------------------------------------------------------


def discovery_for(
    service: ServiceConfig,
    set_endpoints: SetEndpoints,
    *,
    nameservers: Sequence[str] | None = None,
    kubernetes_api_url: str | None = None,
    service_account_dir: str | os.PathLike[str] = SERVICE_ACCOUNT_DIR,
    environ: Mapping[str, str] | None = None,
) -> Discovery | None:
    """The discovery source a service's configuration asks for (not started), or None."""
    if service.dns is not None:
        return DnsDiscovery(service.name, service.dns, set_endpoints, nameservers=nameservers)
    if service.kubernetes is not None:
        return KubernetesDiscovery(
            service.name,
            service.kubernetes,
            set_endpoints,
            api_url=kubernetes_api_url,
            service_account_dir=service_account_dir,
            environ=environ,
        )
    return None
