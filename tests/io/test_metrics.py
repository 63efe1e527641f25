"""Prometheus metrics of a running activator, scraped from the admin port and parsed with
prometheus_client's own parsers, with real clients (httpx, curl, h2load) and demo pods."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from activator.config import parse_config
from activator.demopod import DemoPod, PodBehaviour
from activator.io.app import Activator

WAIT = 10.0

# -- helpers -----------------------------------------------------------------------------------


def config_text(endpoints: list[str], *, limits: str = "") -> str:
    return f"""
listen: 127.0.0.1:0
admin: 127.0.0.1:0
{limits}
services:
  - name: hello
    hosts: ["*"]
    endpoints: {json.dumps(endpoints)}
"""


@contextlib.asynccontextmanager
async def running(text: str) -> AsyncIterator[Activator]:
    activator = Activator(parse_config(text), drain_timeout=5.0)
    await activator.start()
    try:
        yield activator
    finally:
        await activator.stop()


@contextlib.asynccontextmanager
async def demo_pod(**behaviour: Any) -> AsyncIterator[DemoPod]:
    pod = DemoPod(PodBehaviour(name="a", **behaviour))
    await pod.start()
    try:
        yield pod
    finally:
        await pod.stop()


class Scrape:
    """One parsed scrape of ``/metrics``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in self.families.values():
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 when the labelled child does not exist (yet)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def has(self, name: str, **labels: str) -> bool:
        return (name, frozenset(labels.items())) in self.samples


async def scrape(client: httpx.AsyncClient, activator: Activator) -> Scrape:
    response = await client.get(f"http://127.0.0.1:{activator.admin_port}/metrics")
    assert response.status_code == 200
    return Scrape(response.text)


async def scrape_until(
    client: httpx.AsyncClient, activator: Activator, predicate: Callable[[Scrape], bool]
) -> Scrape:
    """Scrape (at most WAIT seconds, every 20 ms) until ``predicate`` holds."""
    async with asyncio.timeout(WAIT):
        while True:
            result = await scrape(client, activator)
            if predicate(result):
                return result
            await asyncio.sleep(0.02)


async def curl_h2(url: str, header: str | None = None) -> int:
    """Status code of a GET over HTTP/2 with prior knowledge (curl, one connection per call)."""
    args = ["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}"]
    if header is not None:
        args += ["-H", header]
    process = await asyncio.create_subprocess_exec(
        *args, url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(WAIT):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    return int(stdout)


needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
needs_h2load = pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load is not installed")

# -- tests -------------------------------------------------------------------------------------


@needs_curl
async def test_requests_counted_by_code_and_protocol() -> None:
    async with (
        demo_pod() as pod,
        running(config_text([f"127.0.0.1:{pod.port}"])) as activator,
        httpx.AsyncClient(timeout=WAIT) as client,
    ):
        base = f"http://127.0.0.1:{activator.listen_port}"
        for path in ["/", "/", "/", "/status/404", "/status/404"]:
            await client.get(base + path)
        assert [await curl_h2(base + "/") for _ in range(4)] == [200] * 4
        assert await curl_h2(base + "/", header="content-type: application/grpc") == 200
        result = await scrape(client, activator)
        requests = "activator_requests_total"
        assert result.value(requests, service="hello", code="200", protocol="http1") == 3
        assert result.value(requests, service="hello", code="404", protocol="http1") == 2
        assert result.value(requests, service="hello", code="200", protocol="h2") == 4
        assert result.value(requests, service="hello", code="200", protocol="grpc") == 1
        assert result.value("activator_request_duration_seconds_count", service="hello") == 10
        # Every request was placed on a pod at once: ten queue waits, each tiny.
        assert result.value("activator_queue_wait_seconds_count", service="hello") == 10
        durations = result.value("activator_request_duration_seconds_sum", service="hello")
        assert result.value("activator_queue_wait_seconds_sum", service="hello") <= durations
        for kind in ("stream", "http1_connection"):
            assert result.value("activator_in_flight", service="hello", kind=kind) == 0
        assert result.value("activator_ready_pods", service="hello") == 1
        assert result.value("activator_pods", service="hello") == 1
        assert result.value("activator_upstream_connections", service="hello") >= 1
        assert result.value("activator_queue_depth", service="hello") == 0
        assert result.value("activator_queue_bytes", service="hello") == 0


async def test_rejected_request_has_no_queue_wait() -> None:
    # max_requests 0: no queueing, so a service with no pod answers 503 at once.
    text = config_text([]).replace("endpoints: []", "endpoints: []\n    queue: {max_requests: 0}")
    async with running(text) as activator, httpx.AsyncClient(timeout=WAIT) as client:
        response = await client.get(f"http://127.0.0.1:{activator.listen_port}/")
        assert response.status_code == 503
        result = await scrape(client, activator)
        assert (
            result.value("activator_requests_total", service="hello", code="503", protocol="http1")
            == 1
        )
        assert result.value("activator_request_duration_seconds_count", service="hello") == 1
        assert result.value("activator_queue_wait_seconds_count", service="hello") == 0


async def test_cold_start_shows_in_queue_gauges_and_queue_wait() -> None:
    async with (
        demo_pod() as pod,
        running(config_text([])) as activator,
        httpx.AsyncClient(timeout=WAIT) as client,
    ):
        request = asyncio.create_task(client.get(f"http://127.0.0.1:{activator.listen_port}/"))
        queued = await scrape_until(
            client, activator, lambda s: s.value("activator_queue_depth", service="hello") == 1
        )
        assert queued.value("activator_ready_pods", service="hello") == 0
        assert queued.value("activator_in_flight", service="hello", kind="http1_connection") == 1
        assert queued.value("activator_queue_oldest_age_seconds", service="hello") > 0
        assert queued.value("activator_upstream_connections", service="hello") == 0
        activator.set_endpoints("hello", [f"127.0.0.1:{pod.port}"])
        assert (await request).status_code == 200
        result = await scrape(client, activator)
        assert result.value("activator_queue_wait_seconds_count", service="hello") == 1
        wait = result.value("activator_queue_wait_seconds_sum", service="hello")
        assert 0 < wait <= result.value("activator_request_duration_seconds_sum", service="hello")
        assert result.value("activator_queue_depth", service="hello") == 0
        assert result.value("activator_queue_oldest_age_seconds", service="hello") == 0


async def test_client_gone_before_the_response_counts_code_0() -> None:
    async with (
        demo_pod() as pod,
        running(config_text([f"127.0.0.1:{pod.port}"])) as activator,
        httpx.AsyncClient(timeout=WAIT) as client,
    ):
        _reader, writer = await asyncio.open_connection("127.0.0.1", activator.listen_port)
        writer.write(b"GET /delay/10000 HTTP/1.1\r\nHost: hello\r\n\r\n")
        await writer.drain()
        await scrape_until(
            client,
            activator,
            lambda s: s.value("activator_in_flight", service="hello", kind="http1_connection") == 1,
        )
        writer.close()
        await writer.wait_closed()
        result = await scrape_until(
            client,
            activator,
            lambda s: (
                s.value("activator_requests_total", service="hello", code="0", protocol="http1")
                == 1
            ),
        )
        assert result.value("activator_in_flight", service="hello", kind="http1_connection") == 0


async def test_goaways_received_are_counted() -> None:
    async with (
        demo_pod() as pod,
        running(config_text([f"127.0.0.1:{pod.port}"])) as activator,
        httpx.AsyncClient(timeout=WAIT) as client,
    ):
        base = f"http://127.0.0.1:{activator.listen_port}/"
        for expected in (1, 2):
            assert (await client.get(base)).status_code == 200
            # Between requests: the pod's connection is idle when the GOAWAY arrives.
            await pod.send_goaway_all()
            await scrape_until(
                client,
                activator,
                lambda s, n=expected: (
                    s.value("activator_goaways_received_total", service="hello") == n
                ),
            )
        assert (await client.get(base)).status_code == 200  # on a new connection


async def test_replay_failures_are_counted() -> None:
    async with (
        demo_pod(refuse_every=2) as pod,
        running(
            config_text([f"127.0.0.1:{pod.port}"], limits="limits: {max_replays: 0}")
        ) as activator,
        httpx.AsyncClient(timeout=WAIT) as client,
    ):
        base = f"http://127.0.0.1:{activator.listen_port}/"
        # Every second stream is refused, unprocessed; with replays off, those fail.
        codes = [(await client.get(base)).status_code for _ in range(4)]
        assert codes == [200, 503, 200, 503]
        result = await scrape(client, activator)
        failures = result.value(
            "activator_replay_failures_total", service="hello", reason="refused_stream"
        )
        assert failures == 2
        assert not result.has("activator_replays_total", service="hello", reason="refused_stream")
        assert (
            result.value("activator_requests_total", service="hello", code="503", protocol="http1")
            == 2
        )


async def test_refused_streams_are_replayed_and_counted() -> None:
    async with (
        demo_pod(refuse_every=2) as pod,
        running(config_text([f"127.0.0.1:{pod.port}"])) as activator,
        httpx.AsyncClient(timeout=WAIT) as client,
    ):
        base = f"http://127.0.0.1:{activator.listen_port}/"
        codes = [(await client.get(base)).status_code for _ in range(4)]
        assert codes == [200] * 4
        result = await scrape(client, activator)
        replays = result.value("activator_replays_total", service="hello", reason="refused_stream")
        assert replays >= 1
        assert not result.has(
            "activator_replay_failures_total", service="hello", reason="refused_stream"
        )


@needs_h2load
async def test_metrics_stay_consistent_under_load() -> None:
    clients, streams_per_client, total = 4, 8, 400
    text = config_text([]).replace("endpoints: []", "endpoints: []\n    container_concurrency: 8")
    async with (
        demo_pod() as pod,
        running(text) as activator,
        httpx.AsyncClient(timeout=WAIT) as client,
    ):
        activator.set_endpoints("hello", [f"127.0.0.1:{pod.port}"])
        load = await asyncio.create_subprocess_exec(
            "h2load",
            "-n",
            str(total),
            "-c",
            str(clients),
            "-m",
            str(streams_per_client),
            f"http://127.0.0.1:{activator.listen_port}/delay/20",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        scrapes: list[Scrape] = []
        try:
            async with asyncio.timeout(60):
                communicate = asyncio.ensure_future(load.communicate())
                while not communicate.done() and len(scrapes) < 500:
                    scrapes.append(await scrape(client, activator))
                stdout, _stderr = await communicate
        finally:
            if load.returncode is None:
                load.kill()
                await load.wait()
        assert b"400 succeeded" in stdout, stdout.decode()
        done_before = -1.0
        busy = 0
        for result in scrapes:
            in_flight = result.value("activator_in_flight", service="hello", kind="stream")
            queued = result.value("activator_queue_depth", service="hello")
            done = result.value(
                "activator_requests_total", service="hello", code="200", protocol="h2"
            )
            assert 0 <= in_flight <= clients * streams_per_client
            # Queued requests are in flight too; the pod takes at most container_concurrency.
            assert 0 <= queued <= in_flight
            assert in_flight - queued <= 8
            assert done >= done_before
            done_before = done
            busy += in_flight > 0
        assert busy > 0, "no scrape saw a request in flight"
        final = await scrape(client, activator)
        assert (
            final.value("activator_requests_total", service="hello", code="200", protocol="h2")
            == total
        )
        assert final.value("activator_request_duration_seconds_count", service="hello") == total
        assert final.value("activator_in_flight", service="hello", kind="stream") == 0


async def test_each_activator_has_its_own_registry() -> None:
    async with (
        demo_pod() as pod,
        running(config_text([f"127.0.0.1:{pod.port}"])) as first,
        running(config_text([f"127.0.0.1:{pod.port}"])) as second,
        httpx.AsyncClient(timeout=WAIT) as client,
    ):
        for _ in range(2):
            await client.get(f"http://127.0.0.1:{first.listen_port}/")
        await client.get(f"http://127.0.0.1:{second.listen_port}/")
        labels = {"service": "hello", "code": "200", "protocol": "http1"}
        assert (await scrape(client, first)).value("activator_requests_total", **labels) == 2
        assert (await scrape(client, second)).value("activator_requests_total", **labels) == 1
        assert REGISTRY.get_sample_value("activator_requests_total", labels) is None


async def test_every_family_has_help_text_and_the_conventional_name() -> None:
    async with running(config_text([])) as activator, httpx.AsyncClient(timeout=WAIT) as client:
        result = await scrape(client, activator)
    expected = {
        "activator_requests": "counter",
        "activator_request_duration_seconds": "histogram",
        "activator_queue_wait_seconds": "histogram",
        "activator_in_flight": "gauge",
        "activator_queue_depth": "gauge",
        "activator_queue_bytes": "gauge",
        "activator_queue_oldest_age_seconds": "gauge",
        "activator_ready_pods": "gauge",
        "activator_pods": "gauge",
        "activator_upstream_connections": "gauge",
        "activator_goaways_received": "counter",
        "activator_replays": "counter",
        "activator_replay_failures": "counter",
        "activator_autoscaler_reports": "counter",
        "activator_autoscaler_pokes": "counter",
    }
    for name, kind in expected.items():
        family = result.families[name]
        assert family.type == kind, name
        assert len(family.documentation) > 20, name
    assert "# HELP activator_requests_total " in result.text
    assert result.value("activator_autoscaler_reports_total", result="sent") == 0


async def test_openmetrics_when_asked() -> None:
    async with running(config_text([])) as activator, httpx.AsyncClient(timeout=WAIT) as client:
        url = f"http://127.0.0.1:{activator.admin_port}/metrics"
        plain = await client.get(url)
        assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
        open_metrics = await client.get(
            url, headers={"accept": "application/openmetrics-text; version=1.0.0"}
        )
        assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
        assert open_metrics.text.endswith("# EOF\n")
        names = {family.name for family in openmetrics_families(open_metrics.text)}
        assert {"activator_requests", "activator_in_flight"} <= names


async def test_client_connections_open_and_closed_by_reason() -> None:
    """Three real client connections the activator closes itself, one per reason (1 s limits):
    one sends nothing (header_timeout), one gets its answer and stays quiet (idle), one sends
    garbage (protocol_error). The gauge counts them while open; rapid_reset stays 0."""
    limits = "limits: {client_idle_timeout: 1s, client_header_timeout: 1s}"
    async with (
        demo_pod() as pod,
        running(config_text([f"127.0.0.1:{pod.port}"], limits=limits)) as act,
    ):
        port = act.listen_port
        silent = await asyncio.open_connection("127.0.0.1", port)
        quiet = await asyncio.open_connection("127.0.0.1", port)
        quiet[1].write(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        assert (await quiet[0].readline()).startswith(b"HTTP/1.1 200")
        broken = await asyncio.open_connection("127.0.0.1", port)
        broken[1].write(b"NOT HTTP\r\n\r\n")
        assert (await broken[0].readline()).startswith(b"HTTP/1.1 400")
        async with httpx.AsyncClient() as client:
            first = await scrape(client, act)
            final = await scrape_until(
                client,
                act,
                # Counted when closed; the gauge drops at connection_lost, a loop turn later.
                lambda s: (
                    s.value("activator_client_connections_closed_total", reason="idle") > 0
                    and s.value(
                        "activator_client_connections_closed_total", reason="header_timeout"
                    )
                    > 0
                    and s.value("activator_client_connections") == 0
                ),
            )
        for reader, writer in (silent, quiet, broken):
            async with asyncio.timeout(WAIT):
                await reader.read()  # returns at EOF
            assert reader.at_eof()  # every connection was closed by the server
            writer.close()
    assert first.value("activator_client_connections") == 2  # the garbage one was already gone
    closed = {
        reason: final.value("activator_client_connections_closed_total", reason=reason)
        for reason in ("idle", "header_timeout", "rapid_reset", "protocol_error")
    }
    assert closed == {"idle": 1, "header_timeout": 1, "rapid_reset": 0, "protocol_error": 1}
    assert final.value("activator_client_connections") == 0
