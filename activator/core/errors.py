"""One exception root for the data path, split by who is at fault.

Each error carries the HTTP status a client sees and the gRPC status code used when the request is a gRPC
call (``content-type: application/grpc``), so every failure maps to a well-formed answer in both worlds.
"""

from __future__ import annotations

# gRPC status codes (grpc/doc/statuscodes.md).
GRPC_DEADLINE_EXCEEDED = 4
GRPC_NOT_FOUND = 5
GRPC_RESOURCE_EXHAUSTED = 8
GRPC_INTERNAL = 13
GRPC_UNAVAILABLE = 14


class ActivatorError(Exception):
    """Root of every error the data path turns into a response."""

    status: int = 500
    grpc_status: int = GRPC_INTERNAL
    retry_after: float | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ClientError(ActivatorError):
    """The client sent something we will not forward (remote misbehaviour, client side)."""

    status = 400
    grpc_status = GRPC_INTERNAL


class UnknownHost(ClientError):
    """No configured service claims the request's Host/:authority (no open proxy)."""

    status = 404
    grpc_status = GRPC_NOT_FOUND


class HeadersTooLarge(ClientError):
    """The request header block is over the configured limit (RFC 6585 §5)."""

    status = 431
    grpc_status = GRPC_RESOURCE_EXHAUSTED


class RequestTimeout(ClientError):
    """An HTTP/1.1 request head that did not arrive within client_header_timeout (RFC 9110 §15.5.9)."""

    status = 408
    grpc_status = GRPC_DEADLINE_EXCEEDED


class UpstreamError(ActivatorError):
    """A pod failed us: unreachable, reset, or gone away with work we cannot replay."""

    status = 502
    grpc_status = GRPC_UNAVAILABLE


class Unavailable(ActivatorError):
    """No capacity now: no ready pod without a queue, queue full, or replay impossible."""

    status = 503
    grpc_status = GRPC_UNAVAILABLE

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueueTimeout(ActivatorError):
    """A request waited in the scale-from-zero queue longer than the service allows."""

    status = 504
    grpc_status = GRPC_DEADLINE_EXCEEDED


class ResponseTimeout(ActivatorError):
    """A pod did not start (or finish) a response within the configured time."""

    status = 504
    grpc_status = GRPC_DEADLINE_EXCEEDED
