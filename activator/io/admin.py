"""The admin API (aiohttp): liveness, readiness, status of services, endpoint updates, metrics and
the pull form of the autoscaler report.

* ``GET /healthz``: 200 while the process serves the admin API at all (liveness).
* ``GET /readyz``: 200 while serving, 503 once draining (readiness: take it out of the Service).
* ``GET /metrics``: Prometheus metrics (:mod:`activator.io.metrics`).
* ``GET /v1/services``, ``GET /v1/services/{name}``: status of the services as JSON.
* ``PUT /v1/services/{name}/endpoints``: replace a service's pods with
  ``{"endpoints": ["host:port", ...]}``; an empty list scales it to zero.
* ``GET /v1/concurrency``: the autoscaler report (:mod:`activator.io.reporter`) over the window
  since the previous pull; ``?consumer=NAME`` reads a window of that consumer's own.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from activator.config import parse_hostport

if TYPE_CHECKING:
    from activator.io.app import Activator
    from activator.io.metrics import ActivatorMetrics
    from activator.io.reporter import AutoscalerReporter
    from activator.io.service import ServiceRuntime


def service_status(runtime: ServiceRuntime, now: float) -> dict[str, Any]:
    """The JSON document of one service."""
    throttle = runtime.throttle
    streams = runtime.streams.current
    http1 = runtime.http1.current
    return {
        "name": runtime.name,
        "hosts": list(runtime.config.hosts),
        "upstream": runtime.config.upstream,
        "pods": [
            {
                "address": pod.address,
                "ready": pod.ready,
                "in_flight": pod.in_flight,
                "capacity": pod.capacity,
                "removed": pod.removed,
            }
            for pod in throttle.pods.values()
        ],
        "concurrency": {"streams": streams, "http1_connections": http1, "total": streams + http1},
        "queue": {
            "depth": throttle.queue_depth,
            "bytes": runtime.queued_body_bytes,
            "oldest_age_seconds": round(throttle.queued_age(now), 6),
        },
        "requests_total": runtime.requests_total,
        "errors_total": runtime.errors_total,
        "goaways_total": runtime.goaways_total,
        "replays_total": dict(runtime.replays_total),
    }


class AdminServer:
    """Serves the admin API for one :class:`Activator`."""

    def __init__(self, activator: Activator) -> None:
        self.activator = activator
        self.app = web.Application()
        self.app.add_routes(
            [
                web.get("/healthz", self.healthz),
                web.get("/readyz", self.readyz),
                web.get("/v1/services", self.list_services),
                web.get("/v1/services/{name}", self.get_service),
                web.put("/v1/services/{name}/endpoints", self.put_endpoints),
                web.get("/metrics", self.metrics_text),
                web.get("/v1/concurrency", self.concurrency),
            ]
        )
        self._runner: web.AppRunner | None = None
        self.metrics: ActivatorMetrics | None = None
        self.reporter: AutoscalerReporter | None = None

    def attach(self, metrics: ActivatorMetrics, reporter: AutoscalerReporter) -> None:
        """Serve ``/metrics`` from ``metrics`` and ``/v1/concurrency`` from ``reporter``."""
        self.metrics = metrics
        self.reporter = reporter

    async def start(self, address: str) -> int:
        host, port = parse_hostport(address)
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_port=True)
        await site.start()
        return listening_port(self._runner, port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        if self.activator.draining:
            return web.Response(status=503, text="draining\n")
        return web.Response(text="ready\n")

    async def list_services(self, request: web.Request) -> web.Response:
        now = self._now()
        body = {"services": [service_status(s, now) for s in self.activator.services.values()]}
        return web.json_response(body)

    async def get_service(self, request: web.Request) -> web.Response:
        runtime = self.activator.services.get(request.match_info["name"])
        if runtime is None:
            return error_response(404, f"no service named {request.match_info['name']!r}")
        return web.json_response(service_status(runtime, self._now()))

    async def put_endpoints(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.activator.services:
            return error_response(404, f"no service named {name!r}")
        endpoints, problem = await read_endpoints_body(request)
        if problem:
            return error_response(400, problem)
        self.activator.set_endpoints(name, endpoints)
        return web.json_response(service_status(self.activator.services[name], self._now()))

    async def metrics_text(self, request: web.Request) -> web.Response:
        if self.metrics is None:
            return error_response(503, "metrics are not set up yet")
        body, content_type = self.metrics.exposition(request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def concurrency(self, request: web.Request) -> web.Response:
        if self.reporter is None:
            return error_response(503, "reporting is not set up yet")
        return web.json_response(self.reporter.pull(request.query.get("consumer", "")))


async def read_endpoints_body(request: web.Request) -> tuple[list[str], str]:
    """The endpoints of a ``PUT .../endpoints`` request, or the reason the body is refused."""
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError) as exc:
        return [], f"body is not JSON: {exc}"
    return parse_endpoints_body(body)


def parse_endpoints_body(body: object) -> tuple[list[str], str]:
    """The endpoints of a ``PUT .../endpoints`` body, or an empty list and what is wrong with it."""
    usage = 'body must be {"endpoints": ["host:port", ...]}'
    if not isinstance(body, dict):
        return [], f"{usage}, got a JSON {_json_kind(body)}"
    unknown = sorted(set(body) - {"endpoints"})
    if unknown:
        return [], f"{usage}; unknown key {unknown[0]!r}"
    if "endpoints" not in body:
        return [], f'{usage}; "endpoints" is missing'
    endpoints = body["endpoints"]
    if not isinstance(endpoints, list):
        return [], f'{usage}; "endpoints" is a JSON {_json_kind(endpoints)}'
    for index, endpoint in enumerate(endpoints):
        if not isinstance(endpoint, str):
            return [], f'endpoints[{index}]: expected a "host:port" string, got {endpoint!r}'
        try:
            _host, port = parse_hostport(endpoint)
        except ValueError as exc:
            return [], f"endpoints[{index}]: {exc}"
        if port == 0:
            return [], f"endpoints[{index}]: port 0 is not a valid destination"
    return list(endpoints), ""


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def listening_port(runner: web.AppRunner, port: int) -> int:
    """The port a started runner's site listens on: the one the kernel chose if ``port`` is 0."""
    addresses = runner.addresses
    return int(addresses[0][1]) if addresses else port


def error_response(status: int, message: str) -> web.Response:
    """A JSON ``{"error": message}`` answer."""
    return web.json_response({"error": message}, status=status)
