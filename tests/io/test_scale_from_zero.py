"""Scale from zero and per-pod capacity, through real sockets: the activator in-process, DemoPods as pods,
httpx (HTTP/2 streams on one connection, HTTP/1.1 on many) and gRPC-shaped clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import h2.config
import h2.connection
import h2.errors
import httpx
import pytest

from activator.config import parse_config
from activator.demopod import DemoPod, PodBehaviour
from activator.io.app import Activator

Start = Callable[..., Awaitable[Activator]]


@pytest.fixture
async def start_activator() -> AsyncIterator[Start]:
    started: list[Activator] = []

    async def start(service_yaml: str) -> Activator:
        config = parse_config(
            "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nservices:\n"
            "  - name: web\n    hosts: ['*']\n    upstream: h2c\n" + service_yaml
        )
        activator = Activator(config, drain_timeout=1.0)
        await activator.start()
        started.append(activator)
        return activator

    yield start
    for activator in started:
        await activator.stop()


@pytest.fixture
async def pod() -> AsyncIterator[DemoPod]:
    demo = DemoPod(PodBehaviour(name="p"))
    await demo.start()
    yield demo
    await demo.stop()


async def wait_for(predicate: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def h2_client(activator: Activator) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        http1=False, http2=True, base_url=f"http://127.0.0.1:{activator.listen_port}", timeout=30
    )


async def test_queued_requests_are_released_in_order_when_a_pod_arrives(
    start_activator: Start, pod: DemoPod
) -> None:
    # Container concurrency 1 makes the pod's log the order in which the queue was released.
    activator = await start_activator(
        "    endpoints: []\n    container_concurrency: 1\n"
        "    queue: {max_requests: 1000, timeout: 60s}\n"
    )
    throttle = activator.services["web"].throttle
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    h1 = httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{activator.listen_port}", timeout=30, limits=limits
    )
    # httpx opens at most 100 streams per HTTP/2 connection: two connections carry 75 streams each.
    async with h2_client(activator) as h2a, h2_client(activator) as h2b, h1:
        tasks = []
        for i in range(300):
            # Alternate HTTP/2 streams and HTTP/1.1 connections.
            client = (h2a, h1, h2b, h1)[i % 4]
            tasks.append(asyncio.create_task(client.get(f"/seq/{i}")))
            await wait_for(lambda n=i + 1: throttle.queue_depth == n, f"request {i} queued")
        status = activator.services["web"]
        assert status.streams.current == 150
        assert status.http1.current == 150
        activator.set_endpoints("web", [f"127.0.0.1:{pod.port}"])
        responses = await asyncio.gather(*tasks)
    assert [r.status_code for r in responses] == [200] * 300
    served = [record.path for record in pod.stats.log]
    assert served[-200:] == [f"/seq/{i}" for i in range(100, 300)]  # the log keeps the last 200
    assert pod.stats.max_in_flight == 1


async def test_container_concurrency_1_never_gives_a_pod_two_requests(
    start_activator: Start,
) -> None:
    pods = [DemoPod(PodBehaviour(name=f"p{i}", delay=0.01)) for i in range(2)]
    for p in pods:
        await p.start()
    try:
        endpoints = ", ".join(f'"127.0.0.1:{p.port}"' for p in pods)
        activator = await start_activator(
            f"    endpoints: [{endpoints}]\n    container_concurrency: 1\n"
        )
        limits = httpx.Limits(max_connections=40)
        async with (
            h2_client(activator) as h2,
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{activator.listen_port}", limits=limits, timeout=30
            ) as h1,
        ):
            responses = await asyncio.gather(
                *(h2.get("/") for _ in range(60)), *(h1.get("/") for _ in range(60))
            )
        assert [r.status_code for r in responses] == [200] * 120
        assert [p.stats.max_in_flight for p in pods] == [1, 1]
        assert sum(p.stats.requests for p in pods) == 120
    finally:
        for p in pods:
            await p.stop()


async def test_queue_full_is_503_with_retry_after(start_activator: Start) -> None:
    activator = await start_activator(
        "    endpoints: []\n    queue: {max_requests: 2, timeout: 2s}\n"
    )
    throttle = activator.services["web"].throttle
    async with h2_client(activator) as client:
        waiting = [asyncio.create_task(client.get("/")) for _ in range(2)]
        await wait_for(lambda: throttle.queue_depth == 2, "two queued")
        overflow = await client.get("/")
        assert overflow.status_code == 503
        assert 1 <= int(overflow.headers["retry-after"]) <= 2
        assert "queue is full" in overflow.text
        # The two that got in still wait their turn (and time out: no pod ever came).
        assert [r.status_code for r in await asyncio.gather(*waiting)] == [504, 504]


async def test_queue_timeout_is_504_and_grpc_gets_deadline_exceeded(
    start_activator: Start,
) -> None:
    activator = await start_activator("    endpoints: []\n    queue: {timeout: 300ms}\n")
    async with h2_client(activator) as client:
        plain, grpc = await asyncio.gather(
            client.get("/"),
            client.post(
                "/pkg.Svc/Call",
                content=b"\x00\x00\x00\x00\x00",
                headers={"content-type": "application/grpc", "te": "trailers"},
            ),
        )
    assert plain.status_code == 504
    assert "queue timeout" in plain.text
    # Trailers-only gRPC answer: HTTP 200, status in the header block, no body.
    assert grpc.status_code == 200
    assert grpc.headers["grpc-status"] == "4"
    assert grpc.content == b""


async def test_cancel_while_queued_leaves_the_queue_and_never_reaches_a_pod(
    start_activator: Start, pod: DemoPod
) -> None:
    activator = await start_activator("    endpoints: []\n    queue: {timeout: 30s}\n")
    throttle = activator.services["web"].throttle
    # A raw HTTP/2 client, to send exactly one RST_STREAM(CANCEL) for a queued stream.
    _reader, writer = await asyncio.open_connection("127.0.0.1", activator.listen_port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    request = [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/gone")]
    conn.send_headers(1, request, end_stream=True)
    writer.write(conn.data_to_send())
    await wait_for(lambda: throttle.queue_depth == 1, "queued")
    conn.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
    writer.write(conn.data_to_send())
    await wait_for(lambda: throttle.queue_depth == 0, "left the queue")
    writer.close()
    async with h2_client(activator) as client:
        activator.set_endpoints("web", [f"127.0.0.1:{pod.port}"])
        assert (await client.get("/after")).status_code == 200
    assert [r.path for r in pod.stats.log] == ["/after"]


async def test_probed_pod_gets_traffic_only_once_ready(start_activator: Start) -> None:
    pod = DemoPod(PodBehaviour(name="slow-start", ready=False))
    await pod.start()
    try:
        activator = await start_activator(
            f'    endpoints: ["127.0.0.1:{pod.port}"]\n    probe: {{path: /healthz}}\n'
        )
        state = activator.services["web"].throttle.pods[f"127.0.0.1:{pod.port}"]
        async with h2_client(activator) as client:
            request = asyncio.create_task(client.get("/"))
            await wait_for(lambda: activator.services["web"].throttle.queue_depth == 1, "queued")
            assert state.ready is False
            pod.behaviour.ready = True
            response = await request
        assert response.status_code == 200
        assert state.ready is True
        # Only probes reached the pod before it was ready; the request came after.
        paths = [r.path for r in pod.stats.log]
        assert paths[-1] == "/"
        assert set(paths[:-1]) == {"/healthz"}
    finally:
        await pod.stop()


async def test_admin_put_endpoints_releases_the_queue(start_activator: Start, pod: DemoPod) -> None:
    activator = await start_activator("    endpoints: []\n")
    async with h2_client(activator) as client:
        waiting = [asyncio.create_task(client.get(f"/w/{i}")) for i in range(10)]
        await wait_for(lambda: activator.services["web"].throttle.queue_depth == 10, "queued")
        async with httpx.AsyncClient() as admin:
            put = await admin.put(
                f"http://127.0.0.1:{activator.admin_port}/v1/services/web/endpoints",
                content=json.dumps({"endpoints": [f"127.0.0.1:{pod.port}"]}),
            )
        assert put.status_code == 200
        responses = await asyncio.gather(*waiting)
    assert [r.status_code for r in responses] == [200] * 10


async def test_queue_max_bytes_counts_bodies_buffered_while_waiting(start_activator: Start) -> None:
    activator = await start_activator(
        "    endpoints: []\n    queue: {max_requests: 100, max_bytes: 100KiB, timeout: 2s}\n"
    )
    runtime = activator.services["web"]
    async with h2_client(activator) as client:
        uploads = [
            asyncio.create_task(client.post("/upload", content=b"x" * 65536)) for _ in range(2)
        ]
        # Each waiting upload buffers up to the 64 KiB replay buffer, no more.
        await wait_for(lambda: runtime.queued_body_bytes >= 2 * 65536, "bodies buffered")
        assert runtime.queued_body_bytes <= 2 * (65536 + 65535)
        refused = await client.get("/")
        assert refused.status_code == 503
        assert "queue_bytes" in refused.text
        assert "retry-after" in refused.headers
        assert [r.status_code for r in await asyncio.gather(*uploads)] == [504, 504]
    assert runtime.queued_body_bytes == 0  # released with the requests
