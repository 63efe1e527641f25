"""A TLS client that leaves while its HTTP/1.1 connection has reading paused: the connection ends.

Found by the ``ingress_tls`` fuzz target. A request is in flight and the next bytes are refused,
so the ingress pauses reading; then the client closes. asyncio's SSL layer reads the client's
close while the application is paused and waits to hand it over before its own closing
handshake; when the ingress later closed the connection, nothing resumed it, and the client
connection stayed open for good. Both loops are run: asyncio's (where this happened) and uvloop's
(the default on Linux). Real sockets, a real demo pod, a throwaway self-signed certificate.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fuzz.live import LOOPS, LiveActivator

# An HTTP/1.0 request the demo pod answers slowly (three chunks, a second apart), then bytes the
# ingress refuses, all sent at once before the client closes.
CONVERSATION: list[bytes | float] = [
    b"PUT /stream/3/1 HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\nzz\r\n"
]


@pytest.fixture(params=sorted(LOOPS))
def live(request: pytest.FixtureRequest) -> Iterator[LiveActivator]:
    activator = LiveActivator(tls=True, new_loop=LOOPS[request.param])
    yield activator
    activator.close()


def test_client_leaving_while_reading_is_paused_closes_the_connection(
    live: LiveActivator,
) -> None:
    # converse_tls waits (a bounded time) for the connection to be released; check raises if not.
    _, protocol = live.converse_tls(CONVERSATION, 0.0, ["http/1.1"])
    assert protocol == "http/1.1"
    assert live.leaks() == []
    live.check()
    live.still_serves()
