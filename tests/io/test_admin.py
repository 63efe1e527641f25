"""The admin API of a running activator: health, readiness while draining, the status documents
(also under load) and endpoint updates, with real clients and demo pods."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from activator.config import parse_config
from activator.demopod import DemoPod, PodBehaviour
from activator.io.app import Activator

WAIT = 10.0

# -- helpers -----------------------------------------------------------------------------------


def config_text(endpoints: list[str], *, container_concurrency: int = 0) -> str:
    return f"""
listen: 127.0.0.1:0
admin: 127.0.0.1:0
services:
  - name: hello
    hosts: ["*"]
    endpoints: {json.dumps(endpoints)}
    container_concurrency: {container_concurrency}
    queue: {{timeout: 60s}}
  - name: other
    hosts: [other.example, "*.other.example"]
    upstream: http1
"""


@contextlib.asynccontextmanager
async def running(text: str, drain_timeout: float = 5.0) -> AsyncIterator[Activator]:
    activator = Activator(parse_config(text), drain_timeout=drain_timeout)
    await activator.start()
    try:
        yield activator
    finally:
        await activator.stop()


@contextlib.asynccontextmanager
async def demo_pods(*names: str) -> AsyncIterator[list[DemoPod]]:
    pods = [DemoPod(PodBehaviour(name=name)) for name in names]
    try:
        for pod in pods:
            await pod.start()
        yield pods
    finally:
        for pod in pods:
            await pod.stop()


def addresses(pods: list[DemoPod]) -> list[str]:
    return [f"127.0.0.1:{pod.port}" for pod in pods]


class Admin:
    """A client of one activator's admin API."""

    def __init__(self, client: httpx.AsyncClient, activator: Activator) -> None:
        self.client = client
        self.base = f"http://127.0.0.1:{activator.admin_port}"

    async def get(self, path: str) -> httpx.Response:
        return await self.client.get(self.base + path)

    async def get_until(
        self, path: str, predicate: Callable[[httpx.Response], bool]
    ) -> httpx.Response:
        """GET ``path`` (at most WAIT seconds, every 20 ms) until ``predicate`` holds."""
        async with asyncio.timeout(WAIT):
            while True:
                response = await self.get(path)
                if predicate(response):
                    return response
                await asyncio.sleep(0.02)

    async def service(self, name: str = "hello") -> dict[str, Any]:
        response = await self.get(f"/v1/services/{name}")
        assert response.status_code == 200
        document: dict[str, Any] = response.json()
        return document

    async def put_endpoints(self, name: str, body: bytes | object) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.client.put(
            f"{self.base}/v1/services/{name}/endpoints",
            content=content,
            headers={"content-type": "application/json"},
        )

    async def service_until(
        self, predicate: Callable[[dict[str, Any]], bool], name: str = "hello"
    ) -> dict[str, Any]:
        """Poll the service's status (at most WAIT seconds, every 20 ms) until ``predicate``."""
        async with asyncio.timeout(WAIT):
            while True:
                document = await self.service(name)
                if predicate(document):
                    return document
                await asyncio.sleep(0.02)


# -- health and readiness ----------------------------------------------------------------------


async def test_readiness_turns_503_while_draining_and_liveness_stays_200() -> None:
    async with (
        demo_pods("a") as pods,
        httpx.AsyncClient(timeout=WAIT) as client,
    ):
        activator = Activator(parse_config(config_text(addresses(pods))), drain_timeout=WAIT)
        await activator.start()
        admin = Admin(client, activator)
        stopping: asyncio.Task[None] | None = None
        try:
            assert (await admin.get("/healthz")).status_code == 200
            ready = await admin.get("/readyz")
            assert (ready.status_code, ready.text) == (200, "ready\n")
            # A slow request keeps the drain going while readiness is checked.
            slow = asyncio.create_task(
                client.get(f"http://127.0.0.1:{activator.listen_port}/delay/1500")
            )
            await admin.service_until(lambda s: s["concurrency"]["total"] == 1)
            stopping = asyncio.create_task(activator.stop())
            draining = await admin.get_until("/readyz", lambda r: r.status_code == 503)
            assert draining.text == "draining\n"
            assert not slow.done()
            assert (await admin.get("/healthz")).status_code == 200
            assert (await slow).status_code == 200  # drained, not cut off
            await stopping
        finally:
            if stopping is None:
                await activator.stop()


# -- status documents --------------------------------------------------------------------------


async def test_service_status_documents() -> None:
    async with (
        demo_pods("a", "b") as pods,
        running(config_text(addresses(pods), container_concurrency=3)) as activator,
        httpx.AsyncClient(timeout=WAIT) as client,
    ):
        admin = Admin(client, activator)
        for _ in range(3):
            response = await client.get(f"http://127.0.0.1:{activator.listen_port}/")
            assert response.status_code == 200
        listing = await admin.get("/v1/services")
        assert listing.status_code == 200
        services = listing.json()["services"]
        assert [s["name"] for s in services] == ["hello", "other"]
        hello = services[0]
        assert hello == await admin.service("hello")
        assert hello["hosts"] == ["*"]
        assert sorted(pod["address"] for pod in hello["pods"]) == sorted(addresses(pods))
        for pod in hello["pods"]:
            assert pod["ready"] is True
            assert pod["in_flight"] == 0
            assert pod["capacity"] == 3
        assert hello["concurrency"] == {"streams": 0, "http1_connections": 0, "total": 0}
        assert hello["queue"] == {"depth": 0, "bytes": 0, "oldest_age_seconds": 0.0}
        assert hello["requests_total"] == 3
        assert hello["errors_total"] == 0
        other = services[1]
        assert other["hosts"] == ["other.example", "*.other.example"]
        assert other["pods"] == []
        unknown = await admin.get("/v1/services/nope")
        assert unknown.status_code == 404
        assert "nope" in unknown.json()["error"]


async def test_status_stays_consistent_under_load() -> None:
    total, capacity = 60, 4
    async with (
        demo_pods("a", "b") as pods,
        running(config_text(addresses(pods), container_concurrency=capacity)) as activator,
        httpx.AsyncClient(timeout=WAIT, limits=httpx.Limits(max_connections=100)) as client,
        httpx.AsyncClient(timeout=WAIT) as admin_client,
    ):
        admin = Admin(admin_client, activator)
        url = f"http://127.0.0.1:{activator.listen_port}/delay/30"
        load = asyncio.gather(*(client.get(url) for _ in range(total)))
        documents: list[dict[str, Any]] = []
        async with asyncio.timeout(60):
            while not load.done() and len(documents) < 1000:
                documents.append(await admin.service())
            responses = await load
        assert [r.status_code for r in responses] == [200] * total
        previous_total = 0
        busiest = 0
        for document in documents:
            concurrency, queue = document["concurrency"], document["queue"]
            placed = 0
            for pod in document["pods"]:
                assert 0 <= pod["in_flight"] <= pod["capacity"] == capacity
                placed += pod["in_flight"]
            assert concurrency["total"] == concurrency["streams"] + concurrency["http1_connections"]
            # Every request in flight is either on a pod or in the queue.
            assert placed + queue["depth"] <= concurrency["total"] <= total
            assert queue["depth"] == 0 or queue["oldest_age_seconds"] >= 0
            assert document["requests_total"] >= previous_total
            previous_total = document["requests_total"]
            busiest = max(busiest, placed)
        assert busiest > 0, "no status read saw a request on a pod"
        final = await admin.service()
        assert final["requests_total"] == total
        assert final["concurrency"]["total"] == 0
        assert all(pod["in_flight"] == 0 for pod in final["pods"])


# -- endpoint updates --------------------------------------------------------------------------


async def test_endpoints_release_queued_requests_and_scale_back_to_zero() -> None:
    async with (
        demo_pods("a", "b") as pods,
        running(config_text([])) as activator,
        httpx.AsyncClient(timeout=WAIT) as client,
    ):
        admin = Admin(client, activator)
        url = f"http://127.0.0.1:{activator.listen_port}/"
        queued = asyncio.gather(*(client.get(url) for _ in range(5)))
        waiting = await admin.service_until(lambda s: s["queue"]["depth"] == 5)
        assert waiting["pods"] == []
        assert waiting["concurrency"]["total"] == 5
        assert waiting["queue"]["oldest_age_seconds"] > 0

        put = await admin.put_endpoints("hello", {"endpoints": addresses(pods)})
        assert put.status_code == 200
        assert sorted(p["address"] for p in put.json()["pods"]) == sorted(addresses(pods))
        responses = await queued
        assert [r.status_code for r in responses] == [200] * 5
        assert {r.headers["x-pod"] for r in responses} <= {"a", "b"}
        after = await admin.service()
        assert after["queue"]["depth"] == 0
        assert all(pod["ready"] for pod in after["pods"])

        # Back to zero: the next request waits until a pod comes again.
        put = await admin.put_endpoints("hello", {"endpoints": []})
        assert put.status_code == 200
        assert put.json()["pods"] == []
        again = asyncio.create_task(client.get(url))
        await admin.service_until(lambda s: s["queue"]["depth"] == 1)
        put = await admin.put_endpoints("hello", {"endpoints": addresses(pods[1:])})
        assert put.status_code == 200
        response = await again
        assert (response.status_code, response.headers["x-pod"]) == (200, "b")


async def test_put_endpoints_for_an_unknown_service_is_404() -> None:
    async with running(config_text([])) as activator, httpx.AsyncClient(timeout=WAIT) as client:
        response = await Admin(client, activator).put_endpoints(
            "nope", {"endpoints": ["127.0.0.1:9"]}
        )
        assert response.status_code == 404
        assert "nope" in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (["127.0.0.1:9"], "got a JSON array"),
        ({}, '"endpoints" is missing'),
        ({"endpoints": [], "pods": []}, "unknown key 'pods'"),
        ({"endpoints": "127.0.0.1:9"}, '"endpoints" is a JSON string'),
        ({"endpoints": None}, '"endpoints" is a JSON null'),
        ({"endpoints": ["127.0.0.1:9", 9]}, "endpoints[1]: expected a"),
        ({"endpoints": ["127.0.0.1"]}, 'endpoints[0]: expected "host:port"'),
        ({"endpoints": ["127.0.0.1:99999"]}, "endpoints[0]: port 99999 is out of range"),
        ({"endpoints": ["127.0.0.1:0"]}, "endpoints[0]: port 0 is not a valid destination"),
        ({"endpoints": ["::1:80"]}, "endpoints[0]: IPv6 addresses need brackets"),
        ({"endpoints": ["bad host:80"]}, "endpoints[0]:"),
    ],
)
async def test_put_endpoints_rejects_a_bad_body_with_a_reason(body: object, reason: str) -> None:
    async with (
        running(config_text(["127.0.0.1:9"])) as activator,
        httpx.AsyncClient(timeout=WAIT) as client,
    ):
        admin = Admin(client, activator)
        response = await admin.put_endpoints("hello", body)
        assert response.status_code == 400
        assert reason in response.json()["error"]
        # Nothing changed.
        assert [p["address"] for p in (await admin.service())["pods"]] == ["127.0.0.1:9"]
