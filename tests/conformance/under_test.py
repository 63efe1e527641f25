"""The system under test for the conformance suite: a real activator in front of a real demo pod,
both in the running event loop on 127.0.0.1, and the clients connected to the activator's client
port (closed before the activator stops)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterable

from frames import H2Client

from activator.config import LimitsConfig, config_from_upstreams
from activator.demopod import DemoPod, PodBehaviour
from activator.io.app import Activator

# Long enough for an orderly stop; connections are closed by the test before this matters.
DRAIN_TIMEOUT = 2.0


class ActivatorUnderTest:
    """The activator (``port``: its client-facing port) and the pod behind it."""

    def __init__(self, activator: Activator, pod: DemoPod) -> None:
        self.activator = activator
        self.pod = pod
        self.port = activator.listen_port
        self._clients: list[H2Client] = []
        self._streams: list[asyncio.StreamWriter] = []

    async def client(self, settings: Iterable[tuple[int, int]] = ()) -> H2Client:
        """A new HTTP/2 connection, past the handshake (our SETTINGS are ``settings``)."""
        client = await self.raw_client()
        await client.handshake(settings)
        return client

    async def raw_client(self) -> H2Client:
        """A new TCP connection; nothing sent yet."""
        client = await H2Client.open(self.port)
        self._clients.append(client)
        return client

    async def tcp(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A plain TCP connection (for HTTP/1.1), closed at teardown."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._streams.append(writer)
        return reader, writer

    async def close_clients(self) -> None:
        for client in self._clients:
            await client.close()
        for writer in self._streams:
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(DRAIN_TIMEOUT):
                    await writer.wait_closed()


@contextlib.asynccontextmanager
async def running_activator(
    limits: LimitsConfig | None = None,
) -> AsyncIterator[ActivatorUnderTest]:
    """A demo pod (``GET /`` answers "hello from a") and an activator balancing onto it (with
    ``limits`` when given, the defaults otherwise)."""
    pod = DemoPod(PodBehaviour(name="a"))
    await pod.start()
    try:
        config = config_from_upstreams(
            [f"h2c://127.0.0.1:{pod.port}"], listen="127.0.0.1:0", admin="127.0.0.1:0"
        )
        if limits is not None:
            config = dataclasses.replace(config, limits=limits)
        act = Activator(config, drain_timeout=DRAIN_TIMEOUT)
        await act.start()
        under_test = ActivatorUnderTest(act, pod)
        try:
            yield under_test
        finally:
            await under_test.close_clients()
            await act.stop()
    finally:
        await pod.stop()
