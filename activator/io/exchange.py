"""One client request on its way to a pod and back: the glue between an ingress stream and an upstream
stream.

An :class:`Exchange` is driven entirely by callbacks from the two connections it joins; it never awaits.
Flow control is end to end: request body bytes are acknowledged to the client only once they are in the
replay buffer or handed to the pod's connection, and response bytes are acknowledged to the pod only once
they are handed to the client's connection. So a slow reader slows the pod and memory stays bounded.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Protocol

from activator.core.errors import ActivatorError, Unavailable, UpstreamError
from activator.core.headers import HeaderList
from activator.core.retry import ReplayReason, ReplayVerdict, decide_replay

if TYPE_CHECKING:
    from activator.core.balancer import PodState
    from activator.io.service import ServiceRuntime


class ClientSide(Protocol):
    """What an exchange needs from the ingress connection that carries it."""

    def respond_headers(self, ex: Exchange, headers: HeaderList, end_stream: bool) -> None: ...
    def respond_data(self, ex: Exchange, data: bytes, ack_len: int, end_stream: bool) -> None: ...
    def respond_trailers(self, ex: Exchange, trailers: HeaderList) -> None: ...
    def respond_reset(self, ex: Exchange, error_code: int) -> None: ...
    def respond_error(self, ex: Exchange, error: ActivatorError) -> None: ...
    def ack_request(self, ex: Exchange, nbytes: int) -> None: ...


class UpstreamSide(Protocol):
    """What an exchange needs from the pod connection that carries it."""

    def send_data(self, ex: Exchange, data: bytes, ack_len: int, end_stream: bool) -> None: ...
    def send_trailers(self, ex: Exchange, trailers: HeaderList) -> None: ...
    def cancel(self, ex: Exchange) -> None: ...
    def ack_response(self, ex: Exchange, nbytes: int) -> None: ...


# HTTP/2 error code CANCEL (RFC 9113 §7), sent to a pod when the client gave up.
CANCEL = 0x8


class Exchange:
    """State of one proxied request. Created by ingress, placed by :class:`ServiceRuntime`."""

    __slots__ = (
        "activity",
        "activity_seen",
        "client",
        "client_stream",
        "connect_failures",
        "done",
        "grpc",
        "headers",
        "http1",
        "idle_ticks",
        "method",
        "moves",
        "pending",
        "placed_at",
        "pod",
        "queue_bytes",
        "queued",
        "replay",
        "replay_bytes",
        "replays",
        "request_ended",
        "request_trailers",
        "response_started",
        "service",
        "started_at",
        "status",
        "up",
        "up_sent_end",
        "up_stream",
    )

    def __init__(
        self,
        client: ClientSide,
        client_stream: int,
        service: ServiceRuntime,
        headers: HeaderList,
        method: bytes,
        grpc: bool,
        request_ended: bool,
        started_at: float,
        http1: bool,
    ) -> None:
        self.client = client
        self.client_stream = client_stream
        self.service = service
        self.headers = headers
        self.method = method
        self.grpc = grpc
        self.request_ended = request_ended
        self.request_trailers: HeaderList | None = None
        self.started_at = started_at
        self.http1 = http1
        # Body chunks already acknowledged to the client and kept for a replay; None once the body
        # outgrew the replay buffer (the request can then no longer be replayed).
        self.replay: list[bytes] | None = []
        self.replay_bytes = 0
        # Chunks past the replay buffer not yet handed to a pod: (data, flow-control bytes to ack).
        self.pending: deque[tuple[bytes, int]] | None = None
        self.pod: PodState | None = None
        self.up: UpstreamSide | None = None
        self.up_stream = 0
        self.up_sent_end = False
        self.response_started = False
        self.queued = False
        self.queue_bytes = 0  # body bytes counted in the service's queued_body_bytes
        self.done = False
        self.replays = 0  # charged replays (see decide_replay)
        self.moves = 0  # all replays
        self.connect_failures = 0
        # When a pod was first assigned (queue wait = placed_at - started_at); 0.0 until then.
        self.placed_at = 0.0
        # Status the client saw (0 = none yet; a reset after the response started keeps its status).
        self.status = 0
        # Body chunks seen either way; the service's once-a-second sweep compares it with the value it
        # saw last time to find idle exchanges without a clock read per chunk.
        self.activity = 0
        self.activity_seen = 0
        self.idle_ticks = 0

    # -- from the client -------------------------------------------------------------------------

    def on_request_data(self, data: bytes, flow_len: int) -> None:
        """Body bytes from the client; ``flow_len`` is what the client's flow-control window paid."""
        self.activity += 1
        if self.queued:
            self.queue_bytes += len(data)
            self.service.queued_body_bytes += len(data)
        replay = self.replay
        limit = self.service.replay_limit
        if replay is not None and self.replay_bytes + len(data) <= limit:
            replay.append(data)
            self.replay_bytes += len(data)
            # Safe to open the client's window now: the bytes are kept in the bounded replay buffer.
            self.client.ack_request(self, flow_len)
            if self.up is not None:
                self.up.send_data(self, data, 0, False)
            return
        if replay is not None:
            # Part of the body will not be kept: no replay from here on. Chunks buffered but not yet
            # sent (no pod stream yet) move to the send queue; the client was already paid for them.
            self.replay = None
            if self.up is None and replay:
                self.pending = deque((chunk, 0) for chunk in replay)
        if self.up is not None:
            self.up.send_data(self, data, flow_len, False)
        else:
            if self.pending is None:
                self.pending = deque()
            self.pending.append((data, flow_len))

    # While a pod stream is attached, ``pending`` is always None (attach drains it and later chunks
    # go straight up), so ``up`` alone says whether to send now or leave it to ``attach``.

    def on_request_trailers(self, trailers: HeaderList) -> None:
        self.request_trailers = trailers
        self.request_ended = True
        if self.up is not None:
            self.up_sent_end = True
            self.up.send_trailers(self, trailers)

    def on_request_end(self) -> None:
        if self.request_ended:
            return
        self.request_ended = True
        if self.up is not None:
            self.up_sent_end = True
            self.up.send_data(self, b"", 0, True)

    def on_client_reset(self) -> None:
        """The client reset the stream or went away: cancel everything, never finish the upload."""
        if self.done:
            return
        if self.queued:
            self.service.cancel_queued(self)
        up = self.up
        if up is not None:
            self.up = None
            up.cancel(self)
        self._finish()

    # -- placement ---------------------------------------------------------------------------------

    def attach(self, up: UpstreamSide, stream_id: int, *, headers_ended: bool) -> None:
        """Called by an upstream connection once it opened a stream for this exchange (headers sent,
        with END_STREAM when ``headers_ended``: see :attr:`body_in_headers`); sends what the client
        already gave and follows on from there."""
        self.up = up
        self.up_stream = stream_id
        self.up_sent_end = headers_ended
        if headers_ended:
            return
        if self.replay:
            for chunk in self.replay:
                up.send_data(self, chunk, 0, False)
        pending = self.pending
        if pending is not None:
            self.pending = None
            while pending:
                data, flow_len = pending.popleft()
                up.send_data(self, data, flow_len, False)
        if self.request_ended:
            self.up_sent_end = True
            if self.request_trailers is not None:
                up.send_trailers(self, self.request_trailers)
            else:
                up.send_data(self, b"", 0, True)

    @property
    def body_in_headers(self) -> bool:
        """True when the request can be sent as a single HEADERS frame with END_STREAM."""
        return (
            self.request_ended
            and not self.replay
            and self.pending is None
            and (self.request_trailers is None)
        )

    # -- from the pod ----------------------------------------------------------------------------

    def on_response(self, headers: HeaderList, end_stream: bool) -> None:
        self.response_started = True
        # Pods send :status first (RFC 9113 §8.3: pseudo-headers precede regular fields).
        first = headers[0]
        self.status = int(first[1]) if first[0] == b":status" else 0
        self.client.respond_headers(self, headers, end_stream)
        if end_stream:
            self._finish()

    def on_response_data(self, data: bytes, flow_len: int, end_stream: bool) -> None:
        self.activity += 1
        self.client.respond_data(self, data, flow_len, end_stream)
        if end_stream:
            self._finish()

    def on_response_trailers(self, trailers: HeaderList) -> None:
        self.client.respond_trailers(self, trailers)
        self._finish()

    def on_response_end(self) -> None:
        if not self.done:
            self.client.respond_data(self, b"", 0, True)
            self._finish()

    def on_upstream_reset(self, error_code: int) -> None:
        """The pod reset the stream (not REFUSED_STREAM, which goes to :meth:`replay`)."""
        if self.done:
            return
        self.up = None
        if self.response_started:
            self.client.respond_reset(self, error_code)
            self._finish()
        else:
            self.fail(
                UpstreamError(f"pod {self._pod_name()} reset the stream (error {error_code})")
            )

    def on_upstream_lost(self, reason: str) -> None:
        """The pod's connection broke under this stream: it may have been processed, so no replay."""
        if self.done:
            return
        self.up = None
        if self.response_started:
            self.client.respond_reset(self, 0x2)  # INTERNAL_ERROR: never present a truncated body
            self._finish()
        else:
            self.fail(UpstreamError(f"connection to pod {self._pod_name()} lost: {reason}"))

    def replay_after(self, reason: ReplayReason, *, charge: bool = True) -> None:
        """The pod provably did not process this stream (GOAWAY above last_stream_id, REFUSED_STREAM,
        connection never opened): send it again, or fail cleanly if the body is no longer whole.

        ``charge`` is False when the move is routine (the pod's connection made progress before it
        went away) and must not use up the request's replay limit."""
        if self.done:
            return
        self.up = None
        verdict = decide_replay(
            replays=self.replays,
            moves=self.moves,
            max_replays=self.service.max_replays,
            body_overflowed=self.replay is None,
            charge=charge,
        )
        if verdict is not ReplayVerdict.REPLAY:
            self.service.count_replay_failure(reason)
            self.fail(
                Unavailable(
                    f"pod {self._pod_name()} did not process the request ({reason.value}) and it "
                    f"cannot be replayed ({verdict.value})"
                )
            )
            return
        self.moves += 1
        if charge:
            self.replays += 1
        self.service.replay(self, reason)

    # -- ending ------------------------------------------------------------------------------------

    def fail(self, error: ActivatorError) -> None:
        """Answer the client with an error (or reset it if a response already started) and finish."""
        if self.done:
            return
        up = self.up
        if up is not None:
            self.up = None
            up.cancel(self)
        if self.queued:
            self.service.cancel_queued(self)
        if self.response_started:
            self.client.respond_reset(self, 0x2)
        else:
            self.response_started = True
            self.status = error.status
            self.service.count_error(error)
            self.client.respond_error(self, error)
        self._finish()

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        self.replay = None
        self.pending = None
        self.service.finished(self)

    def _pod_name(self) -> str:
        return self.pod.address if self.pod is not None else "?"
