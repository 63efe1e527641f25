"""The admin API (aiohttp): liveness, readiness, status of services, endpoint updates, metrics."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from activator.config import parse_hostport

if TYPE_CHECKING:
    from activator.io.app import Activator
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
            "bytes": throttle.queue_bytes,
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
            ]
        )
        self._runner: web.AppRunner | None = None

    async def start(self, address: str) -> int:
        host, port = parse_hostport(address)
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_port=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _now(self) -> float:
        import asyncio

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
            return _error(404, f"no service named {request.match_info['name']!r}")
        return web.json_response(service_status(runtime, self._now()))

    async def put_endpoints(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.activator.services:
            return _error(404, f"no service named {name!r}")
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(400, f"body is not JSON: {exc}")
        endpoints = body.get("endpoints") if isinstance(body, dict) else None
        if not isinstance(endpoints, list) or not all(isinstance(e, str) for e in endpoints):
            return _error(400, 'body must be {"endpoints": ["host:port", ...]}')
        for endpoint in endpoints:
            try:
                parse_hostport(endpoint)
            except ValueError as exc:
                return _error(400, f"endpoint {endpoint!r}: {exc}")
        self.activator.set_endpoints(name, endpoints)
        return web.json_response(service_status(self.activator.services[name], self._now()))


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
