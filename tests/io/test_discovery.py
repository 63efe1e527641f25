"""Endpoint discovery through real sockets: a small UDP DNS server for DnsDiscovery, an aiohttp
server playing the Kubernetes API server for KubernetesDiscovery, and an in-process Activator whose
services gain and lose pods from them."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from aiohttp import web
from tenacity import wait_fixed

from activator.config import DnsDiscoveryConfig, KubernetesDiscoveryConfig, parse_config
from activator.demopod import DemoPod, PodBehaviour
from activator.io.app import Activator
from activator.io.discovery import (
    DnsDiscovery,
    KubernetesApiError,
    KubernetesDiscovery,
    default_namespace,
    discovery_for,
    in_cluster_api_url,
    slice_endpoints,
)

# Generous bound for a change to show up; every wait ends as soon as it does.
WAIT_LIMIT = 10.0


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_LIMIT
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Recorder:
    """A set_endpoints that remembers every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    def __call__(self, service: str, addresses: list[str]) -> None:
        self.calls.append((service, list(addresses)))


# -- a DNS server --------------------------------------------------------------------------------

TYPE_A, TYPE_SOA, TYPE_AAAA = 1, 6, 28
RCODE_SERVFAIL, RCODE_NXDOMAIN = 2, 3


class DnsServer(asyncio.DatagramProtocol):
    """Answers A and AAAA queries from ``records`` (name -> addresses); a name absent from it is
    NXDOMAIN, and ``rcode`` set to non-zero fails every query with it (RFC 1035 section 4.1)."""

    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}
        self.rcode = 0
        self.queries = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.queries += 1
        query_id, _flags, qdcount = struct.unpack("!HHH", data[:6])
        assert qdcount == 1
        offset, labels = 12, []
        while data[offset]:
            length = data[offset]
            labels.append(data[offset + 1 : offset + 1 + length].decode())
            offset += 1 + length
        qtype, _qclass = struct.unpack("!HH", data[offset + 1 : offset + 5])
        question = data[12 : offset + 5]
        name = ".".join(labels).lower()
        rcode, answers = self.rcode, []
        if not rcode:
            if name not in self.records:
                rcode = RCODE_NXDOMAIN
            else:
                for text in self.records[name]:
                    ip = ipaddress.ip_address(text)
                    if (ip.version == 4) == (qtype == TYPE_A):
                        # Name as a pointer to the question (0xC00C), class IN, TTL 0: no caching.
                        rdata = ip.packed
                        answers.append(
                            struct.pack("!HHHIH", 0xC00C, qtype, 1, 0, len(rdata)) + rdata
                        )
        authority = b""
        if not answers and rcode in (0, RCODE_NXDOMAIN):
            # Negative answers carry an SOA whose TTL and minimum bound their caching (RFC 2308
            # section 3); 0 keeps the resolver from caching them between lookups.
            soa = b"\x00\x00" + struct.pack("!IIIII", 1, 0, 0, 0, 0)
            authority = struct.pack("!HHHIH", 0xC00C, TYPE_SOA, 1, 0, len(soa)) + soa
        flags = 0x8180 | rcode  # response, recursion desired and available
        header = struct.pack("!HHHHHH", query_id, flags, 1, len(answers), 1 if authority else 0, 0)
        assert self.transport is not None
        self.transport.sendto(header + question + b"".join(answers) + authority, addr)


@pytest.fixture
async def dns() -> AsyncIterator[tuple[DnsServer, str]]:
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(DnsServer, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    yield server, f"127.0.0.1:{port}"
    transport.close()


@pytest.fixture
async def pod() -> AsyncIterator[DemoPod]:
    demo = DemoPod(PodBehaviour(name="discovered"))
    await demo.start()
    yield demo
    await demo.stop()


async def start_activator(service_yaml: str, **discovery_options: Any) -> Activator:
    config = parse_config(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nservices:\n"
        "  - name: web\n    hosts: ['*']\n" + service_yaml
    )
    activator = Activator(
        config, drain_timeout=1.0, discovery=functools.partial(discovery_for, **discovery_options)
    )
    await activator.start()
    return activator


async def test_dns_pods_come_and_go_and_a_discovered_pod_serves(
    dns: tuple[DnsServer, str], pod: DemoPod
) -> None:
    server, nameserver = dns
    server.records["web.test"] = ["127.0.0.1"]
    activator = await start_activator(
        f"    dns: {{name: web.test, port: {pod.port}, interval: 20ms}}\n",
        nameservers=[nameserver],
    )
    try:
        throttle = activator.services["web"].throttle
        await wait_for(lambda: set(throttle.pods) == {f"127.0.0.1:{pod.port}"}, "the pod")
        async with httpx.AsyncClient(
            http1=False, http2=True, base_url=f"http://127.0.0.1:{activator.listen_port}"
        ) as client:
            response = await client.get("/", timeout=WAIT_LIMIT)
        assert response.status_code == 200
        assert pod.stats.requests >= 1

        server.records["web.test"] = ["127.0.0.1", "::1"]
        expected = {f"127.0.0.1:{pod.port}", f"[::1]:{pod.port}"}
        await wait_for(lambda: set(throttle.pods) == expected, "an AAAA pod")

        server.records["web.test"] = []  # the name exists but has no addresses
        await wait_for(lambda: not throttle.pods, "scale to zero (no records)")

        server.records["web.test"] = ["127.0.0.1"]
        await wait_for(lambda: len(throttle.pods) == 1, "the pod again")
        del server.records["web.test"]  # NXDOMAIN
        await wait_for(lambda: not throttle.pods, "scale to zero (NXDOMAIN)")
    finally:
        await activator.stop()
    assert isinstance(activator.discoveries["web"], DnsDiscovery)


async def test_dns_failures_keep_the_last_set_log_once_and_unchanged_sets_are_not_published(
    dns: tuple[DnsServer, str], caplog: pytest.LogCaptureFixture
) -> None:
    server, nameserver = dns
    server.records["web.test"] = ["10.1.0.1", "10.1.0.2"]
    recorder = Recorder()
    discovery = DnsDiscovery(
        "web",
        DnsDiscoveryConfig(name="web.test", port=8012, interval=0.01),
        recorder,
        nameservers=[nameserver],
        retry_wait=wait_fixed(0.01),
    )
    caplog.set_level(logging.INFO, logger="activator.discovery")
    discovery.start()
    try:
        await wait_for(lambda: len(recorder.calls) == 1, "the first set")
        assert recorder.calls == [("web", ["10.1.0.1:8012", "10.1.0.2:8012"])]
        # Several more lookups with the same answer: no call.
        seen = server.queries
        await wait_for(lambda: server.queries >= seen + 6, "more lookups")
        assert len(recorder.calls) == 1

        server.rcode = RCODE_SERVFAIL
        seen = server.queries
        await wait_for(lambda: server.queries >= seen + 10, "failing lookups")
        assert len(recorder.calls) == 1
        assert discovery.endpoints == {"10.1.0.1:8012", "10.1.0.2:8012"}
        failures = [r for r in caplog.records if "failed, retrying" in r.getMessage()]
        assert len(failures) == 1

        server.rcode = 0
        server.records["web.test"] = ["10.1.0.2"]
        await wait_for(lambda: len(recorder.calls) == 2, "the changed set")
        assert recorder.calls[1] == ("web", ["10.1.0.2:8012"])
        assert any("works again" in r.getMessage() for r in caplog.records)
    finally:
        await discovery.close()


# -- a Kubernetes API server ----------------------------------------------------------------------

TOKEN = "t0ken"
SLICES = "/apis/discovery.k8s.io/v1/namespaces/apps/endpointslices"


def endpoint_slice(
    name: str,
    endpoints: list[tuple[str, bool | None]],
    ports: list[dict[str, Any]] | None = None,
    version: str = "1",
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "resourceVersion": version,
            "labels": {"kubernetes.io/service-name": "web"},
        },
        "addressType": "IPv6" if ":" in endpoints[0][0] else "IPv4",
        "endpoints": [
            {"addresses": [address], "conditions": {} if ready is None else {"ready": ready}}
            for address, ready in endpoints
        ],
        "ports": ports
        if ports is not None
        else [{"name": "http", "port": 8012}, {"name": "metrics", "port": 9090}],
    }


class FakeApiServer:
    """The EndpointSlice list and watch of a kube-apiserver, which cannot run here.

    ``items``/``version`` answer the list; every watch request takes the next reply from
    ``watch_replies``: an HTTP status to answer with, or a queue of events streamed as chunked JSON
    lines until None.
    """

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.version = "1"
        self.watch_replies: asyncio.Queue[int | asyncio.Queue[dict[str, Any] | None]] = (
            asyncio.Queue()
        )
        self.lists: list[dict[str, str]] = []
        self.watches: list[dict[str, str]] = []
        self.unauthorized = 0
        self.open_streams: list[asyncio.Queue[dict[str, Any] | None]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.unauthorized += 1
            return web.json_response({"kind": "Status", "code": 401}, status=401)
        params = dict(request.query)
        if params.get("watch") != "1":
            self.lists.append(params)
            return web.json_response(
                {
                    "kind": "EndpointSliceList",
                    "metadata": {"resourceVersion": self.version},
                    "items": list(self.items.values()),
                }
            )
        self.watches.append(params)
        reply = await self.watch_replies.get()
        if isinstance(reply, int):
            return web.json_response({"kind": "Status", "code": reply}, status=reply)
        self.open_streams.append(reply)
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        response.content_type = "application/json"
        await response.prepare(request)
        try:
            while (event := await reply.get()) is not None:
                await response.write(json.dumps(event).encode() + b"\n")
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away first
        return response

    def stream(self) -> asyncio.Queue[dict[str, Any] | None]:
        events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.watch_replies.put_nowait(events)
        return events


@pytest.fixture
async def api() -> AsyncIterator[tuple[FakeApiServer, str]]:
    fake = FakeApiServer()
    app = web.Application()
    app.router.add_get(SLICES, fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield fake, f"http://127.0.0.1:{port}"
    for events in fake.open_streams:
        events.put_nowait(None)
    for _ in range(3):  # watches still waiting for a reply
        fake.watch_replies.put_nowait(410)
    await runner.cleanup()


@pytest.fixture
def service_account(tmp_path: Path) -> Path:
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "namespace").write_text("apps\n")
    return tmp_path


async def test_kubernetes_pods_follow_the_watch_and_a_410_relists(
    api: tuple[FakeApiServer, str], service_account: Path
) -> None:
    fake, url = api
    fake.items["web-a"] = endpoint_slice("web-a", [("127.0.0.2", True), ("127.0.0.3", False)])
    fake.version = "10"
    events = fake.stream()
    # No namespace: the service account's ("apps"); port by name.
    activator = await start_activator(
        "    kubernetes: {service: web, port: http}\n",
        kubernetes_api_url=url,
        service_account_dir=service_account,
    )
    try:
        throttle = activator.services["web"].throttle

        def pods() -> set[str]:
            return set(throttle.pods)

        await wait_for(lambda: pods() == {"127.0.0.2:8012"}, "the listed pods")
        await wait_for(lambda: len(fake.watches) == 1, "the watch")
        assert fake.lists[0] == {"labelSelector": "kubernetes.io/service-name=web"}
        watch = fake.watches[0]
        assert watch["labelSelector"] == "kubernetes.io/service-name=web"
        assert (watch["watch"], watch["allowWatchBookmarks"]) == ("1", "true")
        assert watch["resourceVersion"] == "10"

        events.put_nowait(
            {"type": "ADDED", "object": endpoint_slice("web-b", [("::1", None)], version="11")}
        )
        await wait_for(lambda: pods() == {"127.0.0.2:8012", "[::1]:8012"}, "an added slice")
        events.put_nowait(
            {
                "type": "MODIFIED",
                "object": endpoint_slice(
                    "web-a", [("127.0.0.2", True), ("127.0.0.3", True)], version="12"
                ),
            }
        )
        await wait_for(lambda: len(pods()) == 3, "a pod turning ready")
        events.put_nowait({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}})
        events.put_nowait(
            {
                "type": "DELETED",
                "object": endpoint_slice("web-a", [("127.0.0.2", True)], version="16"),
            }
        )
        await wait_for(lambda: pods() == {"[::1]:8012"}, "a deleted slice")

        # The stream ends normally: watch again from the last event's version, without a list.
        next_events = fake.stream()
        events.put_nowait(None)
        await wait_for(lambda: len(fake.watches) == 2, "the second watch")
        assert fake.watches[1]["resourceVersion"] == "16"
        assert len(fake.lists) == 1

        # 410 Gone inside the stream: list again, then watch from the new list's version.
        fake.items = {"web-c": endpoint_slice("web-c", [("127.0.0.4", True)])}
        fake.version = "30"
        fake.watch_replies.put_nowait(410)  # and once more as the watch's HTTP status
        last_events = fake.stream()
        next_events.put_nowait({"type": "ERROR", "object": {"kind": "Status", "code": 410}})
        await wait_for(lambda: pods() == {"127.0.0.4:8012"}, "the relisted pods")
        await wait_for(lambda: len(fake.watches) == 4, "the watch after two 410s")
        assert len(fake.lists) == 3
        assert fake.watches[3]["resourceVersion"] == "30"
        last_events.put_nowait(None)
    finally:
        await activator.stop()


async def test_kubernetes_bearer_token_is_read_at_every_connection(
    api: tuple[FakeApiServer, str], service_account: Path
) -> None:
    fake, url = api
    fake.items["web-a"] = endpoint_slice("web-a", [("10.0.0.1", True)], ports=[{"port": 80}])
    (service_account / "token").write_text("expired")
    recorder = Recorder()
    discovery = KubernetesDiscovery(
        "web",
        KubernetesDiscoveryConfig(service="web", namespace="apps"),
        recorder,
        api_url=url,
        service_account_dir=service_account,
        retry_wait=wait_fixed(0.01),
    )
    events = fake.stream()
    discovery.start()
    try:
        await wait_for(lambda: fake.unauthorized >= 3, "refused attempts")
        assert recorder.calls == []
        (service_account / "token").write_text(TOKEN)
        await wait_for(lambda: recorder.calls == [("web", ["10.0.0.1:80"])], "the pods")
        # The same set again, even from another slice, is no call.
        one_port = [{"port": 80}]
        events.put_nowait(
            {"type": "MODIFIED", "object": endpoint_slice("web-a", [("10.0.0.1", True)], one_port)}
        )
        events.put_nowait(
            {"type": "ADDED", "object": endpoint_slice("web-b", [("10.0.0.1", True)], one_port)}
        )
        events.put_nowait({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}})
        # A change after them: once it is published, the events before it were handled too.
        events.put_nowait(
            {"type": "ADDED", "object": endpoint_slice("web-c", [("10.0.0.2", True)], one_port)}
        )
        changed = ("web", ["10.0.0.1:80", "10.0.0.2:80"])
        await wait_for(lambda: len(recorder.calls) >= 2, "the changed set")
        assert recorder.calls == [("web", ["10.0.0.1:80"]), changed]
    finally:
        await discovery.close()
        events.put_nowait(None)


# -- pure parts -----------------------------------------------------------------------------------


def test_slice_endpoints_picks_the_port_by_name_number_or_only_port() -> None:
    two_ports = endpoint_slice("s", [("10.0.0.1", True), ("10.0.0.2", None), ("10.0.0.3", False)])
    assert slice_endpoints(two_ports, "http") == ["10.0.0.1:8012", "10.0.0.2:8012"]
    assert slice_endpoints(two_ports, "metrics") == ["10.0.0.1:9090", "10.0.0.2:9090"]
    assert slice_endpoints(two_ports, 7000) == ["10.0.0.1:7000", "10.0.0.2:7000"]
    assert slice_endpoints(two_ports, "grpc") == []
    assert slice_endpoints(two_ports, None) == []  # ambiguous: two ports
    one_port = endpoint_slice("s", [("fd00::1", True)], ports=[{"name": "", "port": 80}])
    assert slice_endpoints(one_port, None) == ["[fd00::1]:80"]
    assert slice_endpoints({"metadata": {"name": "empty"}, "endpoints": None}, 80) == []


def test_namespace_comes_from_the_service_account_then_pod_namespace(tmp_path: Path) -> None:
    assert default_namespace(tmp_path, {}) == "default"
    assert default_namespace(tmp_path, {"POD_NAMESPACE": "team"}) == "team"
    (tmp_path / "namespace").write_text("apps\n")
    assert default_namespace(tmp_path, {"POD_NAMESPACE": "team"}) == "apps"


def test_in_cluster_api_url() -> None:
    environ = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert in_cluster_api_url(environ) == "https://10.96.0.1:443"
    environ["KUBERNETES_SERVICE_HOST"] = "fd00::1"
    assert in_cluster_api_url(environ) == "https://[fd00::1]:443"
    with pytest.raises(KubernetesApiError, match="not in a cluster"):
        in_cluster_api_url({})


def test_services_without_discovery_get_none() -> None:
    config = parse_config("services:\n  - name: web\n    hosts: ['*']\n    endpoints: []\n")
    assert discovery_for(config.services[0], Recorder()) is None


async def test_kubernetes_an_empty_watch_is_retried_from_the_same_version(
    api: tuple[FakeApiServer, str], service_account: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake, url = api
    fake.items["web-a"] = endpoint_slice("web-a", [("10.0.0.1", True)], ports=[{"port": 80}])
    fake.version = "7"
    fake.stream().put_nowait(None)  # ends at once, without a single event
    last = fake.stream()
    recorder = Recorder()
    discovery = KubernetesDiscovery(
        "web",
        KubernetesDiscoveryConfig(service="web", namespace="apps"),
        recorder,
        api_url=url,
        service_account_dir=service_account,
        retry_wait=wait_fixed(0.01),
    )
    discovery.start()
    try:
        await wait_for(lambda: len(fake.watches) == 2, "the second watch")
        assert [w["resourceVersion"] for w in fake.watches] == ["7", "7"]
        assert len(fake.lists) == 1
        assert recorder.calls == [("web", ["10.0.0.1:80"])]
        assert any("without any event" in r.getMessage() for r in caplog.records)
    finally:
        await discovery.close()
        last.put_nowait(None)
