"""HTTP/1.1 absolute-form request targets (RFC 9112 §3.2.2) through a real socket."""

from __future__ import annotations

import asyncio
import json

from activator.config import parse_config
from activator.demopod import DemoPod, PodBehaviour
from activator.io.app import Activator


async def raw_request(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    response = await reader.read()  # Connection: close
    writer.close()
    return response


async def test_absolute_form_authority_routes_and_the_pod_gets_origin_form() -> None:
    pod = DemoPod(PodBehaviour(name="alpha"))
    await pod.start()
    config = parse_config(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nservices:\n"
        f"  - name: alpha\n    hosts: [alpha.test]\n    endpoints: ['127.0.0.1:{pod.port}']\n"
    )
    activator = Activator(config, drain_timeout=1.0)
    await activator.start()
    try:
        # The URI's authority wins over Host (RFC 9112 §3.2.2), so this reaches alpha ...
        routed = await raw_request(
            activator.listen_port,
            b"GET http://alpha.test/headers?x=1 HTTP/1.1\r\nHost: beta.test\r\n"
            b"Connection: close\r\n\r\n",
        )
        head, _, body = routed.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        seen = json.loads(body.split(b"\r\n")[1] if b"transfer-encoding" in head else body)
        assert seen[":path"] == ["/headers?x=1"]
        assert seen[":authority"] == ["alpha.test"]
        # ... and this, with a configured Host but a foreign URI authority, reaches no pod.
        refused = await raw_request(
            activator.listen_port,
            b"GET http://beta.test/ HTTP/1.1\r\nHost: alpha.test\r\nConnection: close\r\n\r\n",
        )
        assert refused.startswith(b"HTTP/1.1 404"), refused[:60]
        assert [r.path for r in pod.stats.log] == ["/headers"]
    finally:
        await activator.stop()
        await pod.stop()
