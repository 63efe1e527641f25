"""Readiness of pods: probe new endpoints at once, then with jittered backoff until they answer; re-probe
a pod whose connection failed. Only ready pods get traffic.

Without a configured probe path a pod is "ready" when a TCP connection to it opens; with one, when
``GET path`` over the service's own protocol answers 2xx.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

import httpx
from tenacity import AsyncRetrying, retry_if_result, wait_exponential_jitter

from activator.config import ServiceConfig, UpstreamTLSConfig, parse_hostport
from activator.io.service import ServiceRuntime
from activator.io.tls import pod_context

log = logging.getLogger("activator.readiness")

# A few ms up to ~1 s between attempts, jittered so many activators do not probe in lockstep.
_WAIT = wait_exponential_jitter(multiplier=0.005, max=1.0, jitter=0.05)


class ReadinessProber:
    """Owns one probing task per (service, pod) that is not ready yet."""

    def __init__(self, probe_timeout: float = 2.0) -> None:
        self.probe_timeout = probe_timeout
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._clients: dict[tuple[str, UpstreamTLSConfig | None], httpx.AsyncClient] = {}

    def watch(self, service: ServiceRuntime, address: str) -> None:
        """Probe ``address`` until it is ready (no-op if already probing)."""
        key = (service.name, address)
        task = self._tasks.get(key)
        if task is not None and not task.done():
            return
        self._tasks[key] = asyncio.get_running_loop().create_task(
            self._probe_until_ready(service, address)
        )

    def forget(self, service: ServiceRuntime, address: str) -> None:
        task = self._tasks.pop((service.name, address), None)
        if task is not None:
            task.cancel()

    async def _probe_until_ready(self, service: ServiceRuntime, address: str) -> None:
        retrying = AsyncRetrying(wait=_WAIT, retry=retry_if_result(lambda ok: ok is False))
        try:
            ready: bool | None = await retrying(self._probe_if_listed, service, address)
        finally:
            self._tasks.pop((service.name, address), None)
        if ready:
            log.info("service %s: pod %s is ready", service.name, address)
            service.set_ready(address, True)

    async def _probe_if_listed(self, service: ServiceRuntime, address: str) -> bool | None:
        if address not in service.throttle.pods:
            return None  # removed meanwhile: stop probing
        return await self.probe(service, address)

    async def probe(self, service: ServiceRuntime, address: str) -> bool:
        """One readiness check of one pod."""
        config = service.config
        if config.probe is None:
            # Addresses were validated by the same parser when they became pods.
            host, port = parse_hostport(address)
            try:
                async with asyncio.timeout(self.probe_timeout):
                    _reader, writer = await asyncio.open_connection(host, port)
            except (OSError, TimeoutError):
                return False
            writer.close()
            return True
        scheme = "https" if config.upstream == "https" else "http"
        client = self._client(config)
        tls = config.upstream_tls
        # The name the pod's certificate is checked against, as the data path checks it.
        extensions = {"sni_hostname": tls.server_name} if tls and tls.server_name else None
        try:
            response = await client.get(
                f"{scheme}://{address}{config.probe.path}",
                timeout=self.probe_timeout,
                extensions=extensions,
            )
        except (httpx.HTTPError, OSError, ssl.SSLError):
            return False
        return 200 <= response.status_code < 300

    def _client(self, config: ServiceConfig) -> httpx.AsyncClient:
        # One client per way of reaching pods: https services differ in what they verify.
        key = (config.upstream, config.upstream_tls)
        client = self._clients.get(key)
        if client is None:
            if config.upstream == "h2c":
                # httpx speaks HTTP/2 with prior knowledge when HTTP/1.1 is turned off.
                client = httpx.AsyncClient(http1=False, http2=True)
            elif config.upstream == "https":
                context = pod_context(config)  # verifies as the data path does, or not at all
                client = httpx.AsyncClient(http2=True, verify=context or False)
            else:
                client = httpx.AsyncClient()
            self._clients[key] = client
        return client

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
