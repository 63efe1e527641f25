"""gRPC pods for end-to-end tests: real grpcio servers on loopback, no generated code.

The service is declared with grpc's generic handlers and bytes in, bytes out (no serializers), so no
``.proto`` compilation is needed. Messages are small ASCII payloads (a number, a pod name) or raw bytes.
Each pod records what its handlers observed (calls per method, cancellations, the deadline it was
given) so tests can assert on the server side of a call that went through the activator.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc

SERVICE = "activator.e2e.Probe"

UNARY = f"/{SERVICE}/Unary"
ECHO = f"/{SERVICE}/Echo"
SERVER_STREAM = f"/{SERVICE}/ServerStream"
CLIENT_STREAM = f"/{SERVICE}/ClientStream"
BIDI = f"/{SERVICE}/Bidi"
FAIL = f"/{SERVICE}/Fail"
WAIT = f"/{SERVICE}/Wait"
ENDLESS_STREAM = f"/{SERVICE}/EndlessStream"
HOLD = f"/{SERVICE}/Hold"
BLOB_STREAM = f"/{SERVICE}/BlobStream"
DIGEST = f"/{SERVICE}/Digest"

# What the Fail method answers with; the client must see exactly this.
FAIL_CODE = grpc.StatusCode.FAILED_PRECONDITION
FAIL_DETAILS = "bucket is not empty: 3 objects left (non-ASCII: \u00e9\u00e8, percent: 100%)"
FAIL_TRAILERS = (
    ("x-reason", "objects-remaining"),
    ("x-remaining-bin", b"\x00\x01\x02\xff"),
)

# Upper bound on how long a handler waits for a cancellation that should come much sooner; it keeps a
# broken cancellation path from tying up server threads for the rest of the suite.
HANDLER_PATIENCE = 15.0


@dataclass
class Observation:
    """What one Wait / EndlessStream / Hold handler saw.

    ``cancelled`` is set by the call's termination callback; these handlers only return after it is
    set (or after being released), so a termination while they still run is a cancellation: client
    cancel, deadline, or the connection under the call going away.
    """

    time_remaining: float | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    messages_sent: int = 0


class GrpcPod:
    """One threaded grpcio server on 127.0.0.1, port 0.

    ``credentials`` makes it a TLS pod (``grpc.ssl_server_credentials``); it then speaks h2 via ALPN.
    """

    def __init__(self, name: str, credentials: grpc.ServerCredentials | None = None) -> None:
        self.name = name
        self.calls: Counter[str] = Counter()
        # Request metadata of each Echo call, as (key, value) pairs in arrival order.
        self.echo_metadata: list[list[tuple[str, str | bytes]]] = []
        self.observations: list[Observation] = []
        self._lock = threading.Lock()
        self._observed = threading.Condition(self._lock)
        self._credentials = credentials
        self._server: grpc.Server | None = None
        self.port = 0
        # Hold handlers answer once this is set.
        self.release = threading.Event()

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=48, thread_name_prefix=f"grpc-{self.name}"),
            handlers=[self._handler()],
            options=[("grpc.so_reuseport", 0)],
        )
        if self._credentials is None:
            self.port = server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = server.add_secure_port("127.0.0.1:0", self._credentials)
        assert self.port, "grpc server could not bind a loopback port"
        server.start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            # grace=0: in-flight calls are cancelled at once; wait() bounds the shutdown.
            self._server.stop(grace=0).wait(timeout=5)
            self._server = None

    def begin_graceful_stop(self, grace: float) -> threading.Event:
        """Start a graceful shutdown (GOAWAY, in-flight calls may finish within ``grace``); returns
        the event set once the server has stopped."""
        assert self._server is not None
        stopped: threading.Event = self._server.stop(grace=grace)
        self._server = None
        return stopped

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- observations ------------------------------------------------------------------------------

    def _record_call(self, method: str) -> None:
        with self._lock:
            self.calls[method] += 1

    def _new_observation(self) -> Observation:
        observation = Observation()
        with self._observed:
            self.observations.append(observation)
            self._observed.notify_all()
        return observation

    def wait_for_observation(self, timeout: float) -> Observation | None:
        """The first Wait/EndlessStream handler's record, once one has started."""
        with self._observed:
            self._observed.wait_for(lambda: bool(self.observations), timeout=timeout)
            return self.observations[0] if self.observations else None

    # -- handlers ----------------------------------------------------------------------------------

    def _handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Unary": grpc.unary_unary_rpc_method_handler(self._unary),
                "Echo": grpc.unary_unary_rpc_method_handler(self._echo),
                "ServerStream": grpc.unary_stream_rpc_method_handler(self._server_stream),
                "ClientStream": grpc.stream_unary_rpc_method_handler(self._client_stream),
                "Bidi": grpc.stream_stream_rpc_method_handler(self._bidi),
                "Fail": grpc.unary_unary_rpc_method_handler(self._fail),
                "Wait": grpc.unary_unary_rpc_method_handler(self._wait),
                "EndlessStream": grpc.unary_stream_rpc_method_handler(self._endless_stream),
                "Hold": grpc.unary_unary_rpc_method_handler(self._hold),
                "BlobStream": grpc.unary_stream_rpc_method_handler(self._blob_stream),
                "Digest": grpc.stream_unary_rpc_method_handler(self._digest),
            },
        )

    def _unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        """Answers ``<pod name>:<request>`` so the client learns which pod served it."""
        self._record_call("Unary")
        return self.name.encode() + b":" + request

    def _echo(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        """The request bytes reversed: a proxy that mixed up or truncated buffers cannot fake it."""
        self._record_call("Echo")
        with self._lock:
            self.echo_metadata.append([(m.key, m.value) for m in context.invocation_metadata()])
        context.set_trailing_metadata((("x-request-bytes", str(len(request))),))
        return request[::-1]

    def _server_stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        """``request`` is a count N: yields b"0" .. b"N-1"."""
        self._record_call("ServerStream")
        for i in range(int(request)):
            yield str(i).encode()

    def _client_stream(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        """Sums the integers sent and appends how many there were: b"<sum>/<count>"."""
        self._record_call("ClientStream")
        total = 0
        count = 0
        for message in requests:
            total += int(message)
            count += 1
        return f"{total}/{count}".encode()

    def _bidi(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        """Answers every message at once with ``echo:<message>``."""
        self._record_call("Bidi")
        for message in requests:
            yield b"echo:" + message

    def _blob_stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        """``request`` is b"COUNT,SIZE": yields COUNT messages of SIZE bytes (see :func:`blob`)."""
        self._record_call("BlobStream")
        count, size = (int(part) for part in request.split(b","))
        for i in range(count):
            yield blob(i, size)

    def _digest(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        """b"<messages>:<bytes>:<sha256 hex of everything, in order>"."""
        self._record_call("Digest")
        digest = hashlib.sha256()
        messages = 0
        total = 0
        for message in requests:
            digest.update(message)
            messages += 1
            total += len(message)
        return f"{messages}:{total}:{digest.hexdigest()}".encode()

    def _fail(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._record_call("Fail")
        context.set_trailing_metadata(FAIL_TRAILERS)
        context.abort(FAIL_CODE, FAIL_DETAILS)
        raise AssertionError("context.abort returns only by raising")

    def _wait(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        """Waits until the call is cancelled (client gone or deadline passed), recording when."""
        self._record_call("Wait")
        observation = self._new_observation()
        observation.time_remaining = context.time_remaining()
        context.add_callback(observation.cancelled.set)
        try:
            observation.cancelled.wait(HANDLER_PATIENCE)
            return b"waited"
        finally:
            observation.finished.set()

    def _hold(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        """Answers once the test sets ``release``; records its call like Wait does."""
        self._record_call("Hold")
        observation = self._new_observation()
        context.add_callback(observation.cancelled.set)
        try:
            if not self.release.wait(HANDLER_PATIENCE):
                context.abort(grpc.StatusCode.ABORTED, "never released")
            return b"released by " + self.name.encode()
        finally:
            observation.finished.set()

    def _endless_stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        """Streams a message every few milliseconds until the call stops being active."""
        self._record_call("EndlessStream")
        observation = self._new_observation()
        context.add_callback(observation.cancelled.set)
        deadline = time.monotonic() + HANDLER_PATIENCE
        try:
            while context.is_active() and time.monotonic() < deadline:
                yield b"tick %d" % observation.messages_sent
                observation.messages_sent += 1
                # Pace the stream so flow-control windows never fill: the pod must learn of the
                # cancel from the RST_STREAM, not from a blocked write.
                observation.cancelled.wait(0.005)
        finally:
            observation.finished.set()


def blob(index: int, size: int) -> bytes:
    """Message ``index`` of a BlobStream: distinct per index, so reordering or loss shows."""
    seed = hashlib.sha256(b"%d" % index).digest()
    return (seed * (size // len(seed) + 1))[:size]


def start_pods(count: int, credentials: grpc.ServerCredentials | None = None) -> list[GrpcPod]:
    pods = [GrpcPod(f"pod-{i}", credentials) for i in range(count)]
    for pod in pods:
        pod.start()
    return pods
