"""Composition root: builds the services from the configuration, opens the listeners, runs until a
signal, then stops in order: stop accepting, tell clients to go away, drain in-flight work with a
deadline, close what is left.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable, Iterable

from activator.config import Config, ServiceConfig, parse_hostport
from activator.core.routing import HostRouter
from activator.core.throttle import SlotGate
from activator.io.admin import AdminServer
from activator.io.busypoll import BusyPoller
from activator.io.discovery import Discovery, SetEndpoints, discovery_for
from activator.io.h2base import write_queue
from activator.io.ingress import (
    CLIENT_SWEEP_INTERVAL,
    ClientConnections,
    IngressProtocol,
    IngressSettings,
    Router,
)
from activator.io.metrics import ActivatorMetrics
from activator.io.readiness import ReadinessProber
from activator.io.reporter import AutoscalerReporter
from activator.io.service import ServiceRuntime
from activator.io.tls import listener_context, pod_context
from activator.io.upstream import UpstreamSettings

log = logging.getLogger("activator")


def upstream_settings(service: ServiceConfig) -> UpstreamSettings:
    """How to reach a service's pods."""
    tls = service.upstream_tls
    return UpstreamSettings(
        protocol=service.upstream,
        ssl_context=pod_context(service),
        server_name=tls.server_name if tls is not None else None,
    )


class Activator:
    """The running activator: services, listeners, readiness and admin."""

    def __init__(
        self,
        config: Config,
        *,
        drain_timeout: float = 30.0,
        slot_gate: Callable[[int, ServiceConfig], SlotGate | None] | None = None,
        discovery: Callable[[ServiceConfig, SetEndpoints], Discovery | None] = discovery_for,
        config_warnings: bool = True,
    ) -> None:
        """``slot_gate(index, service)``: in a worker process, the gate through which the
        service's throttle shares pod slots with the other workers (see activator.io.workers).
        ``discovery(service, set_endpoints)``: the source of a service's pods configured with
        ``dns`` or ``kubernetes`` (see activator.io.discovery). ``config_warnings``: log what
        the configuration leaves unsafe (workers other than the first do not repeat it)."""
        self.config = config
        self.config_warnings = config_warnings
        self.drain_timeout = drain_timeout
        self.slot_gate = slot_gate
        self.discovery = discovery
        self.discoveries: dict[str, Discovery] = {}
        self.services: dict[str, ServiceRuntime] = {}
        self.prober = ReadinessProber()
        self.clients = ClientConnections()
        self.draining = False
        self._servers: list[asyncio.base_events.Server] = []
        self._admin: AdminServer | None = None
        self.metrics: ActivatorMetrics | None = None
        self.reporter: AutoscalerReporter | None = None
        self._poller: BusyPoller | None = None
        self._client_sweep: asyncio.TimerHandle | None = None
        self._stopped = asyncio.Event()
        self.listen_port = 0
        self.tls_port = 0
        self.admin_port = 0

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        limits = config.limits
        for index, service_config in enumerate(config.services):
            runtime = ServiceRuntime(
                service_config,
                upstream_settings(service_config),
                replay_limit=limits.replay_buffer,
                max_replays=limits.max_replays,
                loop=loop,
                gate=self.slot_gate(index, service_config) if self.slot_gate else None,
            )
            runtime.on_pod_failed = self._make_pod_failed(runtime)
            unverified = service_config.upstream == "https" and service_config.upstream_tls is None
            if unverified and self.config_warnings:
                log.warning(
                    "service %s: pods' TLS certificates are not verified"
                    " (set upstream_tls to verify them)",
                    service_config.name,
                )
            self.services[service_config.name] = runtime
            self.set_endpoints(runtime.name, service_config.endpoints)
            source = self.discovery(service_config, self.set_endpoints)
            if source is not None:
                self.discoveries[runtime.name] = source
                source.start()
        host_router: HostRouter[ServiceRuntime] = HostRouter(
            (self.services[s.name].config.hosts, self.services[s.name]) for s in config.services
        )
        self.router = Router(host_router.match)
        settings = IngressSettings(
            max_concurrent_streams=limits.max_concurrent_streams,
            max_header_bytes=limits.max_header_bytes,
            idle_timeout=limits.client_idle_timeout,
            header_timeout=limits.client_header_timeout,
            premature_reset_streams=limits.premature_reset_streams,
            premature_reset_lifetime=limits.premature_reset_lifetime,
        )
        host, port = parse_hostport(config.listen)
        server = await loop.create_server(
            lambda: IngressProtocol(self.router, settings, loop, False, self.clients),
            host,
            port,
            backlog=1024,
            reuse_port=True,
        )
        self._servers.append(server)
        self.listen_port = server.sockets[0].getsockname()[1]
        if config.tls is not None:
            ctx = listener_context(config.tls)
            tls_host, tls_port = parse_hostport(config.tls.listen)
            tls_server = await loop.create_server(
                lambda: IngressProtocol(self.router, settings, loop, True, self.clients),
                tls_host,
                tls_port,
                ssl=ctx,
                backlog=1024,
                reuse_port=True,
                # The handshake comes before the connection reaches the ingress and its timers.
                ssl_handshake_timeout=limits.client_header_timeout or None,
            )
            self._servers.append(tls_server)
            self.tls_port = tls_server.sockets[0].getsockname()[1]
        admin = AdminServer(self)
        self._admin = admin
        self.admin_port = await admin.start(config.admin)
        self.metrics = ActivatorMetrics(self.services.values(), self.clients)
        self.reporter = AutoscalerReporter(self.services.values(), config.autoscaler, loop=loop)
        self.metrics.reporting = self.reporter.counters
        self.metrics.install()
        admin.attach(self.metrics, self.reporter)
        self.reporter.start()
        if config.busy_poll > 0:
            self._poller = BusyPoller(loop, write_queue(loop), config.busy_poll)
            self._poller.start()
        if limits.client_idle_timeout or limits.client_header_timeout:
            self._client_sweep = loop.call_later(CLIENT_SWEEP_INTERVAL, self._sweep_clients)
        log.info(
            "activator listening on %s (admin %s), services: %s",
            config.listen,
            config.admin,
            ", ".join(self.services) or "none",
        )

    def _sweep_clients(self) -> None:
        """Client connections' idle and header timeouts, once a second."""
        loop = asyncio.get_running_loop()
        self._client_sweep = loop.call_later(CLIENT_SWEEP_INTERVAL, self._sweep_clients)
        for conn in list(self.clients.open):  # a tick may close a connection
            conn.tick()

    def _make_pod_failed(self, runtime: ServiceRuntime) -> Callable[[str], None]:
        def pod_failed(address: str) -> None:
            self.prober.watch(runtime, address)

        return pod_failed

    def set_endpoints(self, service_name: str, addresses: Iterable[str]) -> None:
        """Replace a service's pod set. With a probe, new pods wait for it; without, they are ready."""
        runtime = self.services[service_name]
        addresses = list(addresses)
        before = set(runtime.throttle.pods)
        probed = runtime.config.probe is not None
        runtime.set_endpoints(addresses, ready=not probed)
        if probed:
            for address in addresses:
                if address not in before:
                    self.prober.watch(runtime, address)
        for address in before - set(addresses):
            self.prober.forget(runtime, address)

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT, then stop gracefully."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        freeze_startup_objects()
        await stop.wait()
        log.info("signal received: draining (up to %.0fs)", self.drain_timeout)
        await self.stop()

    async def stop(self) -> None:
        self.draining = True
        if self._poller is not None:
            self._poller.stop()
        if self._client_sweep is not None:
            self._client_sweep.cancel()
            self._client_sweep = None
        for server in self._servers:
            server.close()
        for conn in list(self.clients.open):
            conn.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_timeout
        # Shutdown only: polling the connections beats a notification hook on the hot path.
        while loop.time() < deadline and any(c.busy for c in self.clients.open):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.gather(*(source.close() for source in self.discoveries.values()))
        for runtime in self.services.values():
            runtime.close()
        for conn in list(self.clients.open):
            if conn.transport is not None:
                conn.transport.abort()
        if self.reporter is not None:
            await self.reporter.close()
        await self.prober.close()
        if self._admin is not None:
            await self._admin.stop()
        self._stopped.set()


def freeze_startup_objects() -> None:
    """Take what startup made (modules, configuration, listeners: some 50,000 objects that live as
    long as the process) out of the garbage collector's view. Otherwise every full collection walks
    them all again, 10-20 ms each as measured in a serving process, several a minute under load.
    Called once the process serves, never in a library or a test's event loop."""
    gc.collect()
    gc.freeze()
