"""Autoscaler reporting: report windows and poke gating with injected time, then push, poke and pull
against a real activator, real demo pods and a real aiohttp server standing in for the autoscaler."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from aiohttp import web

from activator.config import AutoscalerConfig, ServiceConfig, parse_config
from activator.demopod import DemoPod, PodBehaviour
from activator.io.app import Activator
from activator.io.reporter import (
    AutoscalerReporter,
    ConcurrencyWindow,
    PokeGate,
    Report,
    ServiceWindow,
    default_activator_id,
)
from activator.io.service import ServiceRuntime
from activator.io.upstream import UpstreamSettings

# Upper bound for anything awaited in these tests; far below the 30 s push interval used to prove
# that a poke does not wait for the interval.
WAIT = 10.0

# -- helpers -----------------------------------------------------------------------------------


def make_runtime(name: str = "svc") -> ServiceRuntime:
    return ServiceRuntime(
        ServiceConfig(name=name, hosts=("*",)),
        UpstreamSettings(),
        replay_limit=0,
        max_replays=0,
        loop=asyncio.get_running_loop(),
    )


def service_window(**overrides: Any) -> ServiceWindow:
    fields: dict[str, Any] = {
        "name": "svc",
        "window_seconds": 1.0,
        "average_concurrency": 0.0,
        "max_concurrency": 0,
        "active": 0,
        "queued": 0,
        "oldest_queued_age_seconds": 0.0,
        "requests": 0,
        "ready_pods": 0,
    }
    fields.update(overrides)
    return ServiceWindow(**fields)


async def wait_until(predicate: Callable[[], bool], changed: asyncio.Event) -> None:
    """Wait (at most WAIT seconds) until ``predicate`` holds, re-checking whenever ``changed`` is
    set and at least every 50 ms."""
    async with asyncio.timeout(WAIT):
        while not predicate():
            changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await changed.wait()


class FakeAutoscaler:
    """A real HTTP server receiving the reports; ``answer`` decides the status of each POST."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()
        self.answer: Callable[[dict[str, Any]], Awaitable[int]] = self._ok
        self.port = 0
        self._runner: web.AppRunner | None = None

    @staticmethod
    async def _ok(report: dict[str, Any]) -> int:
        return 200

    async def _handle(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/json"
        report = json.loads(await request.read())
        self.reports.append(report)
        self.arrived.set()
        return web.Response(status=await self.answer(report))

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/stats", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/stats"

    async def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool]) -> None:
        await wait_until(lambda: predicate(self.reports), self.arrived)


@pytest.fixture
async def autoscaler() -> AsyncIterator[FakeAutoscaler]:
    server = FakeAutoscaler()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def pod() -> AsyncIterator[DemoPod]:
    demo = DemoPod(PodBehaviour(name="a"))
    await demo.start()
    yield demo
    await demo.stop()


def config_text(push_url: str | None, interval: str, endpoints: list[str]) -> str:
    autoscaler = f"{{push_url: {json.dumps(push_url)}, interval: {interval}}}" if push_url else ""
    return f"""
listen: 127.0.0.1:0
admin: 127.0.0.1:0
services:
  - name: hello
    hosts: ["*"]
    endpoints: {json.dumps(endpoints)}
    queue: {{timeout: 60s}}
autoscaler: {autoscaler or "{}"}
"""


@contextlib.asynccontextmanager
async def running(text: str) -> AsyncIterator[Activator]:
    activator = Activator(parse_config(text), drain_timeout=5.0)
    await activator.start()
    try:
        yield activator
    finally:
        await activator.stop()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def get_many(client: httpx.AsyncClient, url: str, count: int) -> list[httpx.Response]:
    return list(await asyncio.gather(*(client.get(url) for _ in range(count))))


# -- report windows (time injected) ------------------------------------------------------------


async def test_window_combines_streams_and_http1_time_weighted() -> None:
    runtime = make_runtime()
    window = ConcurrencyWindow([runtime], now=100.0)
    runtime.streams.start(100.0)
    runtime.streams.start(101.0)
    runtime.http1.start(102.0)
    runtime.streams.finish(103.0)
    report = window.read(104.0)
    (service,) = report.services
    # Streams: 1 for 1 s, 2 for 2 s, 1 for 1 s = 6; HTTP/1.1: 1 for 2 s = 2; over 4 s.
    assert report.window_seconds == pytest.approx(4.0)
    assert service.window_seconds == pytest.approx(4.0)
    assert service.average_concurrency == pytest.approx(2.0)
    assert service.max_concurrency == 3
    assert service.active == 2
    assert service.requests == 3
    window.close()


async def test_next_window_starts_where_the_last_ended() -> None:
    runtime = make_runtime()
    window = ConcurrencyWindow([runtime], now=0.0)
    runtime.streams.start(1.0)
    window.read(2.0)
    runtime.streams.finish(3.0)
    (service,) = window.read(6.0).services
    assert service.window_seconds == pytest.approx(4.0)
    assert service.average_concurrency == pytest.approx(0.25)
    assert service.max_concurrency == 1  # in flight when the window opened
    assert service.requests == 0
    assert service.active == 0
    window.close()


async def test_push_and_pull_windows_are_independent() -> None:
    runtime = make_runtime()
    push = ConcurrencyWindow([runtime], now=0.0)
    pull = ConcurrencyWindow([runtime], now=0.0)
    runtime.streams.start(0.0)
    runtime.streams.finish(1.0)
    assert push.read(2.0).services[0].requests == 1
    runtime.streams.start(3.0)
    (pulled,) = pull.read(4.0).services
    assert pulled.requests == 2
    assert pulled.window_seconds == pytest.approx(4.0)
    assert pulled.average_concurrency == pytest.approx(0.5)
    (pushed,) = push.read(4.0).services
    assert pushed.requests == 1
    assert pushed.average_concurrency == pytest.approx(0.5)
    push.close()
    pull.close()


async def test_window_reports_queue_and_ready_pods() -> None:
    runtime = make_runtime()
    window = ConcurrencyWindow([runtime], now=10.0)
    ticket = object()
    runtime.throttle.acquire(ticket, 100, 11.0)  # no pod: the request waits
    (service,) = window.read(13.5).services
    assert service.queued == 1
    assert service.oldest_queued_age_seconds == pytest.approx(2.5)
    assert service.ready_pods == 0
    grants = runtime.throttle.set_endpoints(["127.0.0.1:9"], ready=True, now=14.0)
    assert [granted for granted, _pod in grants] == [ticket]
    (service,) = window.read(15.0).services
    assert (service.queued, service.oldest_queued_age_seconds, service.ready_pods) == (0, 0.0, 1)
    window.close()


async def test_close_detaches_readers_from_the_trackers() -> None:
    runtime = make_runtime()
    window = ConcurrencyWindow([runtime], now=0.0)
    assert (runtime.streams.reader_count, runtime.http1.reader_count) == (1, 1)
    window.close()
    window.close()
    assert (runtime.streams.reader_count, runtime.http1.reader_count) == (0, 0)


def test_extended_window_weights_averages_by_length() -> None:
    earlier = service_window(
        window_seconds=1.0, average_concurrency=4.0, max_concurrency=6, requests=10, queued=3
    )
    later = service_window(
        window_seconds=3.0, average_concurrency=2.0, max_concurrency=2, requests=5, queued=1
    )
    merged = later.extended_back(earlier)
    assert merged.window_seconds == pytest.approx(4.0)
    assert merged.average_concurrency == pytest.approx(2.5)
    assert merged.max_concurrency == 6
    assert merged.requests == 15
    assert merged.queued == 1  # levels are the newest


def test_extended_report_matches_services_by_name() -> None:
    earlier = Report(1.0, (service_window(name="a", requests=2),))
    later = Report(
        1.0, (service_window(name="a", requests=3), service_window(name="b", requests=7))
    )
    merged = later.extended_back(earlier)
    assert merged.window_seconds == pytest.approx(2.0)
    assert [(s.name, s.requests) for s in merged.services] == [("a", 5), ("b", 7)]


def test_report_document_has_the_documented_fields() -> None:
    report = Report(0.5, (service_window(average_concurrency=1 / 3, active=2),))
    document = report.document("act-1", 7, 1700000000.25)
    assert document == {
        "activator": "act-1",
        "seq": 7,
        "timestamp": 1700000000.25,
        "window_seconds": 0.5,
        "services": [
            {
                "name": "svc",
                "average_concurrency": 0.333333,
                "max_concurrency": 0,
                "active": 2,
                "queued": 0,
                "oldest_queued_age_seconds": 0.0,
                "requests": 0,
                "ready_pods": 0,
            }
        ],
    }
    json.dumps(document)


def test_activator_id_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTIVATOR_ID", "act-7")
    monkeypatch.setenv("POD_NAME", "activator-5d9c")
    assert default_activator_id() == "act-7"
    monkeypatch.delenv("ACTIVATOR_ID")
    assert default_activator_id() == "activator-5d9c"
    monkeypatch.delenv("POD_NAME")
    assert default_activator_id() == f"{socket.gethostname()}-{os.getpid()}"


# -- poke gating (time injected) ---------------------------------------------------------------


def test_first_queued_request_pokes_at_once_then_pokes_coalesce() -> None:
    gate = PokeGate(0.05)
    assert gate.is_news(1, cold=True)
    assert gate.queued(10.0) is True
    assert gate.queued(10.01) is False  # within the interval: one deferred poke...
    assert gate.queued(10.02) is None  # ...covers every later one
    assert gate.next_allowed == pytest.approx(10.05)
    assert gate.deferred_due(news=True, now=10.05) is True
    assert gate.next_allowed == pytest.approx(10.10)
    assert gate.queued(10.2) is True


def test_deferred_poke_is_skipped_when_a_report_already_told() -> None:
    gate = PokeGate(0.05)
    assert gate.queued(0.0) is True
    assert gate.queued(0.01) is False
    gate.reported(4)
    assert not gate.is_news(4, cold=False)
    assert gate.deferred_due(news=gate.is_news(4, cold=False), now=0.05) is False
    # Not rate limited by a poke that did not happen.
    assert gate.queued(0.051) is True


def test_news_is_a_longer_queue_or_a_lone_request_at_zero() -> None:
    gate = PokeGate(0.05)
    gate.reported(3)
    assert not gate.is_news(3, cold=False)
    assert gate.is_news(4, cold=False)
    assert not gate.is_news(1, cold=False)
    assert gate.is_news(1, cold=True)  # the pods went away since the last report
    assert not gate.is_news(2, cold=True)


# -- push, poke and pull against a real autoscaler ----------------------------------------------


async def test_poke_reaches_the_autoscaler_long_before_the_interval(
    autoscaler: FakeAutoscaler, pod: DemoPod
) -> None:
    async with (
        running(config_text(autoscaler.url, "30s", [])) as activator,
        httpx.AsyncClient(timeout=WAIT) as client,
    ):
        request = asyncio.create_task(client.get(f"http://127.0.0.1:{activator.listen_port}/"))
        # The interval is 30 s and WAIT is 10 s: only a poke can deliver this report.
        await autoscaler.wait_for(lambda reports: len(reports) >= 1)
        first = autoscaler.reports[0]
        assert first["seq"] == 1
        (service,) = first["services"]
        assert service["name"] == "hello"
        assert service["queued"] == 1
        assert service["ready_pods"] == 0
        assert service["active"] == 1
        assert not request.done()
        assert activator.reporter.counters.pokes >= 1
        put = await client.put(
            f"http://127.0.0.1:{activator.admin_port}/v1/services/hello/endpoints",
            json={"endpoints": [f"127.0.0.1:{pod.port}"]},
        )
        assert put.status_code == 200
        response = await request
        assert response.status_code == 200
        assert response.headers["x-pod"] == "a"


async def test_growing_queue_pokes_until_the_autoscaler_knows_all_of_it(
    autoscaler: FakeAutoscaler, pod: DemoPod
) -> None:
    async with (
        running(config_text(autoscaler.url, "30s", [])) as activator,
        httpx.AsyncClient(timeout=WAIT) as client,
    ):
        url = f"http://127.0.0.1:{activator.listen_port}/"
        requests = asyncio.create_task(get_many(client, url, 20))
        # Pokes are rate limited and coalesced, yet the last one reports the whole queue.
        await autoscaler.wait_for(
            lambda reports: any(r["services"][0]["queued"] == 20 for r in reports)
        )
        assert len(autoscaler.reports) <= activator.reporter.counters.pokes
        assert [r["seq"] for r in autoscaler.reports] == list(range(1, len(autoscaler.reports) + 1))
        activator.set_endpoints("hello", [f"127.0.0.1:{pod.port}"])
        assert [r.status_code for r in await requests] == [200] * 20


async def test_news_within_the_poke_interval_is_pushed_when_the_interval_ends(
    autoscaler: FakeAutoscaler,
) -> None:
    runtime = make_runtime("hello")
    loop = asyncio.get_running_loop()
    reporter = AutoscalerReporter(
        [runtime],
        AutoscalerConfig(push_url=autoscaler.url, interval=30.0),
        loop=loop,
        activator_id="act",
        poke_interval=0.5,
    )
    reporter.start()
    try:
        runtime.throttle.acquire(object(), 0, loop.time())
        reporter.on_queued(runtime)  # the first news pokes at once
        await autoscaler.wait_for(lambda reports: len(reports) == 1)
        assert autoscaler.reports[0]["services"][0]["queued"] == 1
        runtime.throttle.acquire(object(), 0, loop.time())
        reporter.on_queued(runtime)  # within the poke interval: deferred to its end
        runtime.throttle.acquire(object(), 0, loop.time())
        reporter.on_queued(runtime)  # coalesced with the deferred poke
        await autoscaler.wait_for(lambda reports: len(reports) == 2)
        assert autoscaler.reports[1]["seq"] == 2
        assert autoscaler.reports[1]["services"][0]["queued"] == 3
        assert reporter.counters.pokes == 2
    finally:
        await reporter.close()


async def test_periodic_pushes_are_numbered_and_count_every_request(
    autoscaler: FakeAutoscaler, pod: DemoPod, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACTIVATOR_ID", "activator-test-1")
    async with (
        running(config_text(autoscaler.url, "200ms", [f"127.0.0.1:{pod.port}"])) as activator,
        httpx.AsyncClient(timeout=WAIT) as client,
    ):
        responses = await get_many(client, f"http://127.0.0.1:{activator.listen_port}/", 5)
        assert [r.status_code for r in responses] == [200] * 5

        def counted(reports: list[dict[str, Any]]) -> int:
            return sum(r["services"][0]["requests"] for r in reports)

        await autoscaler.wait_for(lambda reports: len(reports) >= 3 and counted(reports) == 5)
        reports = autoscaler.reports
        assert [r["seq"] for r in reports] == list(range(1, len(reports) + 1))
        assert {r["activator"] for r in reports} == {"activator-test-1"}
        assert all(r["window_seconds"] > 0 for r in reports)
        timestamps = [r["timestamp"] for r in reports]
        assert timestamps == sorted(timestamps)
        assert all(r["services"][0]["ready_pods"] == 1 for r in reports)
        assert any(r["services"][0]["average_concurrency"] > 0 for r in reports)
        counters = activator.reporter.counters
        # The third answer may still be on its way back to the activator.
        await wait_until(lambda: counters.sent >= 3, autoscaler.arrived)


async def test_server_error_is_retried_with_the_same_report(
    autoscaler: FakeAutoscaler,
) -> None:
    answers = iter([503])

    async def first_fails(report: dict[str, Any]) -> int:
        return next(answers, 200)

    autoscaler.answer = first_fails
    async with running(config_text(autoscaler.url, "1s", [])) as activator:
        await autoscaler.wait_for(lambda reports: len(reports) >= 2)
        assert autoscaler.reports[0]["seq"] == autoscaler.reports[1]["seq"] == 1
        assert autoscaler.reports[0] == autoscaler.reports[1]
        counters = activator.reporter.counters
        assert counters.failed == 1
        await wait_until(lambda: counters.sent >= 1, autoscaler.arrived)


async def test_rejected_report_is_not_retried_and_its_window_is_folded_into_the_next(
    autoscaler: FakeAutoscaler, pod: DemoPod
) -> None:
    async def reject_first(report: dict[str, Any]) -> int:
        return 400 if report["seq"] == 1 else 200

    autoscaler.answer = reject_first
    async with (
        running(config_text(autoscaler.url, "300ms", [f"127.0.0.1:{pod.port}"])) as activator,
        httpx.AsyncClient(timeout=WAIT) as client,
    ):
        responses = await get_many(client, f"http://127.0.0.1:{activator.listen_port}/", 4)
        assert [r.status_code for r in responses] == [200] * 4
        await autoscaler.wait_for(lambda reports: len(reports) >= 3)
        first, second, third = autoscaler.reports[:3]
        assert [first["seq"], second["seq"], third["seq"]] == [1, 2, 3]  # no retry of seq 1
        first_service, second_service = first["services"][0], second["services"][0]
        # The rejected report's window and requests are carried by the next report.
        assert second["window_seconds"] > first["window_seconds"]
        assert second_service["requests"] >= first_service["requests"]
        assert second_service["max_concurrency"] >= first_service["max_concurrency"]
        assert third["window_seconds"] < second["window_seconds"]
        assert activator.reporter.counters.dropped >= 1


async def test_autoscaler_down_does_not_hold_up_requests(pod: DemoPod) -> None:
    dead_url = f"http://127.0.0.1:{closed_port()}/v1/stats"
    async with (
        running(config_text(dead_url, "100ms", [])) as activator,
        httpx.AsyncClient(timeout=WAIT) as client,
    ):
        url = f"http://127.0.0.1:{activator.listen_port}/"
        queued = asyncio.create_task(get_many(client, url, 5))  # pokes a dead autoscaler
        counters = activator.reporter.counters
        await wait_until(lambda: counters.failed >= 2, asyncio.Event())
        activator.set_endpoints("hello", [f"127.0.0.1:{pod.port}"])
        assert [r.status_code for r in await queued] == [200] * 5
        responses = await get_many(client, url, 30)
        assert [r.status_code for r in responses] == [200] * 30
        assert counters.sent == 0
        assert counters.pokes >= 1


async def test_hanging_autoscaler_does_not_hold_up_requests(
    autoscaler: FakeAutoscaler, pod: DemoPod
) -> None:
    release = asyncio.Event()

    async def hang(report: dict[str, Any]) -> int:
        await release.wait()
        return 200

    autoscaler.answer = hang
    try:
        async with (
            running(config_text(autoscaler.url, "200ms", [])) as activator,
            httpx.AsyncClient(timeout=WAIT) as client,
        ):
            url = f"http://127.0.0.1:{activator.listen_port}/"
            queued = asyncio.create_task(get_many(client, url, 5))
            await autoscaler.wait_for(lambda reports: len(reports) >= 1)
            activator.set_endpoints("hello", [f"127.0.0.1:{pod.port}"])
            assert [r.status_code for r in await queued] == [200] * 5
            responses = await get_many(client, url, 30)
            assert [r.status_code for r in responses] == [200] * 30
            counters = activator.reporter.counters
            # Each stuck report is given up on when the next is due: one in flight at a time.
            await wait_until(lambda: counters.dropped >= 2, autoscaler.arrived)
            assert counters.sent == 0
    finally:
        release.set()


async def test_pull_has_its_own_window_and_does_not_disturb_the_push(
    autoscaler: FakeAutoscaler, pod: DemoPod
) -> None:
    async with (
        running(config_text(autoscaler.url, "200ms", [f"127.0.0.1:{pod.port}"])) as activator,
        httpx.AsyncClient(timeout=WAIT) as client,
    ):
        admin = f"http://127.0.0.1:{activator.admin_port}/v1/concurrency"
        url = f"http://127.0.0.1:{activator.listen_port}/"
        pulls: list[dict[str, Any]] = []
        for _ in range(3):
            responses = await get_many(client, url, 2)
            assert [r.status_code for r in responses] == [200] * 2
            pulled = await client.get(admin)
            assert pulled.status_code == 200
            pulls.append(pulled.json())
        assert [p["seq"] for p in pulls] == [1, 2, 3]
        assert [p["services"][0]["requests"] for p in pulls] == [2, 2, 2]
        assert all(p["activator"] == activator.reporter.activator_id for p in pulls)

        def pushed(reports: list[dict[str, Any]]) -> int:
            return sum(r["services"][0]["requests"] for r in reports)

        await autoscaler.wait_for(lambda reports: pushed(reports) == 6)
        assert [r["seq"] for r in autoscaler.reports] == list(range(1, len(autoscaler.reports) + 1))


async def test_pull_works_without_a_push_url(pod: DemoPod) -> None:
    async with (
        running(config_text(None, "1s", [f"127.0.0.1:{pod.port}"])) as activator,
        httpx.AsyncClient(timeout=WAIT) as client,
    ):
        runtime = activator.services["hello"]
        assert runtime.on_queued is None  # nothing to poke
        assert runtime.streams.reader_count == 1  # the pull window only
        response = await client.get(f"http://127.0.0.1:{activator.listen_port}/")
        assert response.status_code == 200
        pulled = (
            await client.get(f"http://127.0.0.1:{activator.admin_port}/v1/concurrency")
        ).json()
        assert pulled["seq"] == 1
        assert pulled["services"][0]["requests"] == 1
        assert pulled["services"][0]["ready_pods"] == 1


async def test_stop_unhooks_and_detaches_everything(autoscaler: FakeAutoscaler) -> None:
    async with running(config_text(autoscaler.url, "1s", [])) as activator:
        runtime = activator.services["hello"]
        assert runtime.on_queued is not None
        assert runtime.streams.reader_count == 2  # push and pull
    assert runtime.on_queued is None
    assert (runtime.streams.reader_count, runtime.http1.reader_count) == (0, 0)
