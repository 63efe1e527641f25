"""A gRPC pod for the `grpc` scenario, and the pieces the harness shares with it.

Run as a script it serves one unary method, `/loadtest.Echo/Unary`, that answers every request
with a fixed-size reply, using grpcio's own server (HTTP/2 cleartext):

    python3 loadtest/grpc_pod.py --listen 127.0.0.1:50051 --reply-bytes 100

The method is registered with a generic handler and no (de)serialisers, so requests and replies
are raw bytes: no generated code and no .proto file are needed, and h2load can POST a
pre-encoded message (see `encode_grpc_frame`).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any

SERVICE = "loadtest.Echo"
METHOD = "Unary"
METHOD_PATH = f"/{SERVICE}/{METHOD}"
GRPC_OK = 0


def encode_grpc_frame(message: bytes) -> bytes:
    """One gRPC Length-Prefixed-Message: compressed flag 0, 4-byte big-endian length, bytes.

    (gRPC over HTTP/2 protocol description, "Length-Prefixed-Message".)
    """
    return b"\x00" + len(message).to_bytes(4, "big") + message


def request_payload(size: int) -> bytes:
    """A deterministic request body of `size` bytes."""
    pattern = b"loadtest-grpc-request-"
    return (pattern * (size // len(pattern) + 1))[:size]


def probe(target: str, calls: int, payload_bytes: int, timeout_s: float) -> dict[str, Any]:
    """Make `calls` unary calls with grpcio's client through `target` (host:port).

    Returns the number of calls that ended with grpc-status 0 and a count per status code
    name. h2load only sees HTTP status codes, not the grpc-status trailer, so this probe is
    what checks that trailers survive the proxy.
    """
    # Imported here: the harness must start without grpcio for the other scenarios.
    import grpc  # type: ignore[import-untyped]

    payload = request_payload(payload_bytes)
    statuses: dict[str, int] = {}
    ok = 0
    with grpc.insecure_channel(target) as channel:
        unary = channel.unary_unary(METHOD_PATH)
        for _ in range(calls):
            try:
                unary(payload, timeout=timeout_s)
            except grpc.RpcError as err:
                code = err.code() if hasattr(err, "code") else None
                name = code.name if code is not None else "UNKNOWN"
                statuses[name] = statuses.get(name, 0) + 1
            else:
                ok += 1
                statuses["OK"] = statuses.get("OK", 0) + 1
    return {"calls": calls, "ok": ok, "statuses": statuses}


def _make_handler(reply: bytes) -> Callable[[bytes, Any], bytes]:
    def unary(request: bytes, context: Any) -> bytes:
        return reply

    return unary


def serve(listen: str, reply_bytes: int, workers: int) -> None:
    import grpc

    reply = (b"r" * reply_bytes)[:reply_bytes]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers),
        # One pod is one process: no SO_REUSEPORT sharing of the port with anything else.
        options=[("grpc.so_reuseport", 0)],
    )
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {METHOD: grpc.unary_unary_rpc_method_handler(_make_handler(reply))}
    )
    server.add_generic_rpc_handlers((handler,))
    if server.add_insecure_port(listen) == 0:
        sys.exit(f"grpc_pod: cannot listen on {listen}")
    server.start()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    stop.wait()
    server.stop(grace=1.0).wait(timeout=5.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--reply-bytes", type=int, default=100)
    parser.add_argument("--workers", type=int, default=8, help="server thread pool size")
    args = parser.parse_args(argv)
    serve(args.listen, args.reply_bytes, args.workers)


if __name__ == "__main__":
    main()
