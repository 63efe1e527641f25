"""A real activator and demo pod in one private event loop, for feeding client conversations to the
ingress over real loopback sockets, and the checks made after each one."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import uvloop

from activator.config import TLSConfig, config_from_upstreams
from activator.demopod import DemoPod, PodBehaviour
from activator.io.app import Activator
from tests.e2e.grpc_support.tls import make_self_signed
from tests.fuzz.scripted_pod import GOOD_BODY, ScriptedPod

# A pause in a conversation: the bytes before it leave in their own TCP segment(s).
Pause = float
Conversation = list[bytes | Pause]

# The loops a live activator can run on: asyncio's, and uvloop's (the activator's own on Linux).
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}

# How long the accounting may take to return to zero once the client has gone (pod resets, the
# pod connection's answer) before it counts as a leak.
SETTLE_SECONDS = 2.0


class Trouble(logging.Handler):
    """Collects log records at ERROR and above: none is expected whatever a client sends."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


class LiveActivator:
    """An activator (default config) in front of one pod - an h2c demo pod unless another is
    given - running in its own loop until ``close``: asyncio's, or the one ``new_loop`` makes
    (uvloop's is the activator's own on Linux; their transports differ, TLS above all). With
    ``tls``, it also listens for TLS (ALPN h2 and http/1.1) with a throwaway self-signed
    certificate."""

    def __init__(
        self,
        pod: DemoPod | ScriptedPod | None = None,
        *,
        tls: bool = False,
        new_loop: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
    ) -> None:
        self.loop = new_loop()
        self._certificates: tempfile.TemporaryDirectory[str] | None = None
        if tls:
            self._certificates = tempfile.TemporaryDirectory(prefix="activator-fuzz-tls-")
        self.loop_errors: list[str] = []
        self.loop.set_exception_handler(self._on_loop_error)
        self.trouble = Trouble()
        logging.getLogger().addHandler(self.trouble)
        self._stack = contextlib.AsyncExitStack()
        self.pod = pod if pod is not None else DemoPod(PodBehaviour(name="a"))
        self.activator = self.loop.run_until_complete(self._start())

    async def _start(self) -> Activator:
        await self.pod.start()
        self._stack.push_async_callback(self.pod.stop)
        scheme = "http" if isinstance(self.pod, ScriptedPod) and self.pod.http1 else "h2c"
        config = config_from_upstreams(
            [f"{scheme}://127.0.0.1:{self.pod.port}"], listen="127.0.0.1:0", admin="127.0.0.1:0"
        )
        if self._certificates is not None:
            certificate = make_self_signed(Path(self._certificates.name))
            tls = TLSConfig("127.0.0.1:0", str(certificate.cert), str(certificate.key))
            config = dataclasses.replace(config, tls=tls)
        activator = Activator(config, drain_timeout=1.0)
        await activator.start()
        self._stack.push_async_callback(activator.stop)
        return activator

    def close(self) -> None:
        self.loop.run_until_complete(self._stack.aclose())
        logging.getLogger().removeHandler(self.trouble)
        self.loop.close()
        if self._certificates is not None:
            self._certificates.cleanup()

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        self.loop_errors.append(f"{context.get('message')}: {context.get('exception')!r}")

    def converse(self, conversation: Conversation, linger: float, *, port: int = 0) -> bytes:
        """Send ``conversation`` on a new connection (to the plaintext listener unless ``port``
        says otherwise), read for ``linger`` seconds more, close, and return what the activator
        sent back."""
        port = port or self.activator.listen_port
        opened = asyncio.open_connection("127.0.0.1", port)
        return self.loop.run_until_complete(self._converse(opened, conversation, linger))[0]

    def converse_tls(
        self, conversation: Conversation, linger: float, alpn: list[str] | None
    ) -> tuple[bytes, str | None]:
        """``converse`` over TLS to the TLS listener, offering ``alpn`` (None: no ALPN at all);
        also returns the protocol ALPN selected. The handshake must succeed whatever is offered:
        an offer without h2 or http/1.1 gets no ALPN answer, not an alert."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the certificate is throwaway and self-signed
        if alpn is not None:
            context.set_alpn_protocols(alpn)
        opened = asyncio.open_connection("127.0.0.1", self.activator.tls_port, ssl=context)
        return self.loop.run_until_complete(self._converse(opened, conversation, linger))

    async def _converse(
        self,
        opened: Coroutine[Any, Any, tuple[asyncio.StreamReader, asyncio.StreamWriter]],
        conversation: Conversation,
        linger: float,
    ) -> tuple[bytes, str | None]:
        reader, writer = await opened
        ssl_object = writer.get_extra_info("ssl_object")
        protocol = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        received = bytearray()

        async def read_all() -> None:
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                while data := await reader.read(65536):
                    received.extend(data)

        reading = asyncio.ensure_future(read_all())
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            for part in conversation:
                if writer.is_closing():
                    break  # the activator closed the connection (uvloop raises on a write)
                if isinstance(part, bytes):
                    writer.write(part)
                    await asyncio.sleep(0)
                else:
                    await asyncio.sleep(part)
            await asyncio.sleep(linger)
        writer.close()
        try:
            await asyncio.wait_for(reading, SETTLE_SECONDS)
        except TimeoutError:
            reading.cancel()
        await self.settle()
        return bytes(received), protocol

    async def settle(self) -> None:
        """Wait (a bounded time) for what the last client held to be released."""
        for _ in range(int(SETTLE_SECONDS / 0.002)):
            if not self.leaks():
                return
            await asyncio.sleep(0.002)

    def leaks(self) -> list[str]:
        """What is still held although no client is connected: each is a leak."""
        found = []
        if self.activator.clients.open:
            found.append(f"{len(self.activator.clients.open)} client connection(s) still open")
        for name, service in self.activator.services.items():
            throttle = service.throttle
            if throttle.in_flight:
                found.append(f"{name}: {throttle.in_flight} request(s) in flight")
            if throttle.queue_depth or service.queued_body_bytes:
                found.append(
                    f"{name}: {throttle.queue_depth} queued, {service.queued_body_bytes} B"
                )
            if service.streams.current or service.http1.current:
                found.append(
                    f"{name}: concurrency {service.streams.current} streams, "
                    f"{service.http1.current} HTTP/1.1 connections"
                )
            for address, pool in service.pools.items():
                for upstream in pool.h2:
                    if upstream.streams or upstream.pending:
                        found.append(
                            f"{address}: {len(upstream.streams)} pod stream(s) open, "
                            f"{len(upstream.pending)} pending"
                        )
                if pool.h1_busy:
                    found.append(f"{address}: {len(pool.h1_busy)} HTTP/1.1 connection(s) busy")
                if pool.waiting:
                    found.append(f"{address}: {len(pool.waiting)} waiting for a connection")
        return found

    def check(self) -> None:
        """Raise if anything leaked, failed in a callback, or was logged as an error."""
        problems = self.leaks() + self.loop_errors + self.trouble.records
        if problems:
            raise AssertionError("; ".join(problems))

    def still_serves(self) -> None:
        """A well-behaved request on a new connection is answered by the pod."""

        async def get() -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.activator.listen_port)
            writer.write(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            async with asyncio.timeout(5):
                data = await reader.read()
            writer.close()
            return data

        answer = self.loop.run_until_complete(get())
        body = GOOD_BODY if isinstance(self.pod, ScriptedPod) else b"hello from a\n"
        if not (answer.startswith(b"HTTP/1.1 200") and answer.endswith(body)):
            raise AssertionError(f"a plain GET after the fuzz input got {answer[:300]!r}")
