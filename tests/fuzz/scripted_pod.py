"""A pod for fuzzing the activator's upstream side: the first connection after ``arm`` plays a
script of raw bytes (HTTP/2 frames, or HTTP/1.1 responses; some of them rule-breaking) at the
activator; every other connection is a well-behaved server answering each request 200 "ok" (h2's
state machine for HTTP/2)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events

from activator.io.h2wire import PREFACE

GOOD_BODY = b"ok"


@dataclass
class Script:
    """What the scripted connection does: ``settings`` (HTTP/2: its first frame, so the activator
    sends requests at all), then, once the first request arrived (HEADERS, or a request head), each
    step in order: bytes to send, a pause (float seconds), or None to close the connection."""

    settings: bytes
    steps: list[bytes | float | None] = field(default_factory=list)


class _Scripted(asyncio.Protocol):
    def __init__(self, pod: ScriptedPod, script: Script) -> None:
        self.pod = pod
        self.script = script
        self.transport: asyncio.Transport | None = None
        self.received = b""
        self.started = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.pod.transports.add(transport)  # type: ignore[arg-type]
        if not self.pod.http1:
            transport.write(self.script.settings)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.received += data
        if not self.started and self._saw_request():
            self.started = True
            self.pod.tasks.add(asyncio.ensure_future(self._play()))

    def _saw_request(self) -> bool:
        if self.pod.http1:
            return b"\r\n\r\n" in self.received
        pos = len(PREFACE)
        data = self.received
        while len(data) - pos >= 9:
            if data[pos + 3] == 0x1:
                return True
            pos += 9 + int.from_bytes(data[pos : pos + 3], "big")
        return False

    async def _play(self) -> None:
        for step in self.script.steps:
            if self.transport is None or self.transport.is_closing():
                return
            if step is None:
                self.transport.close()
                return
            if isinstance(step, float):
                await asyncio.sleep(step)
            else:
                self.transport.write(step)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pod.transports.discard(self.transport)  # type: ignore[arg-type]
        self.transport = None


class _Good(asyncio.Protocol):
    def __init__(self, pod: ScriptedPod) -> None:
        self.pod = pod
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.pod.transports.add(transport)  # type: ignore[arg-type]
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            if self.transport is not None:
                self.transport.write(self.conn.data_to_send())
                self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                with contextlib.suppress(h2.exceptions.StreamClosedError):
                    self.conn.send_headers(
                        event.stream_id, [(b":status", b"200"), (b"content-length", b"2")]
                    )
                    self.conn.send_data(event.stream_id, GOOD_BODY, end_stream=True)
        if self.transport is not None:
            self.transport.write(self.conn.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        self.pod.transports.discard(self.transport)  # type: ignore[arg-type]
        self.transport = None


class _GoodHttp1(asyncio.Protocol):
    """Answers every request head 200 "ok" (a HEAD without the body), keep-alive (request bodies
    here hold no blank line)."""

    def __init__(self, pod: ScriptedPod) -> None:
        self.pod = pod
        self.transport: asyncio.Transport | None = None
        self.received = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.pod.transports.add(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self.received += data
        while b"\r\n\r\n" in self.received and self.transport is not None:
            head, _, self.received = self.received.partition(b"\r\n\r\n")
            body = b"" if head.startswith(b"HEAD ") else GOOD_BODY
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n" + body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pod.transports.discard(self.transport)  # type: ignore[arg-type]
        self.transport = None


class ScriptedPod:
    """Started and stopped like a DemoPod; ``arm`` sets the next connection's script. ``http1``:
    an HTTP/1.1 pod (the script's ``settings`` are not sent)."""

    def __init__(self, *, http1: bool = False) -> None:
        self.http1 = http1
        self.port = 0
        self.transports: set[asyncio.Transport] = set()
        self.tasks: set[asyncio.Future[None]] = set()
        self._script: Script | None = None
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.disconnect()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def arm(self, script: Script) -> None:
        """Drop every connection; the activator's next one plays ``script``."""
        self.disconnect()
        self._script = script

    def disconnect(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.tasks.clear()
        for transport in list(self.transports):
            transport.abort()

    def _accept(self) -> asyncio.Protocol:
        script, self._script = self._script, None
        if script is not None:
            return _Scripted(self, script)
        return _GoodHttp1(self) if self.http1 else _Good(self)
