"""A TLS client that leaves while its HTTP/1.1 connection has reading paused: the connection ends.

Found by the ``ingress_tls`` fuzz target. A request is in flight and the next bytes are refused,
so the ingress pauses reading; then the client closes. asyncio's SSL layer reads the client's
close while the application is paused and waits to hand it over before its own closing
handshake; when the ingress later closed the connection, nothing resumed it, and the client
connection stayed open for good. Both loops are run: asyncio's (where this happened) and uvloop's
(the default on Linux). Real sockets, a real demo pod, a throwaway self-signed certificate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest
import uvloop

from tests.fuzz.live import LiveActivator

# An HTTP/1.0 request the demo pod answers slowly (three chunks, a second apart), then bytes the
# ingress refuses, all sent at once before the client closes.
CONVERSATION: list[bytes | float] = [
    b"PUT /stream/3/1 HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\nzz\r\n"
]


@pytest.fixture(params=[asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def live(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LiveActivator]:
    new_loop: Callable[[], asyncio.AbstractEventLoop] = request.param
    monkeypatch.setattr(asyncio, "new_event_loop", new_loop)
    activator = LiveActivator(tls=True)
    monkeypatch.undo()
    yield activator
    activator.close()


def test_client_leaving_while_reading_is_paused_closes_the_connection(
    live: LiveActivator,
) -> None:
    _, protocol = live.converse_tls(CONVERSATION, 0.0, ["http/1.1"])
    assert protocol == "http/1.1"
    deadline = time.monotonic() + 10
    while live.leaks() and time.monotonic() < deadline:
        live.loop.run_until_complete(asyncio.sleep(0.05))
    assert live.leaks() == []
    live.check()
    live.still_serves()
