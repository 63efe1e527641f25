"""gRPC through the activator: grpcio servers as pods, a grpcio client pointed at the activator.

Every call crosses a real ``python -m activator serve`` process over h2c on loopback, so these tests
check what gRPC needs from an HTTP/2 proxy: streaming in both directions without buffering whole
messages, trailers (grpc-status, grpc-message, trailing metadata) carried end to end, ``grpc-timeout``
forwarded, client cancellation reaching the pod as RST_STREAM, per-stream balancing of one channel
over several pods, and a well-formed UNAVAILABLE when no pod can be reached.
"""

from __future__ import annotations

import hashlib
import os
import queue
import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_support.pods import (
    BIDI,
    BLOB_STREAM,
    CLIENT_STREAM,
    DIGEST,
    ECHO,
    ENDLESS_STREAM,
    FAIL,
    FAIL_CODE,
    FAIL_DETAILS,
    FAIL_TRAILERS,
    HOLD,
    SERVER_STREAM,
    UNARY,
    WAIT,
    GrpcPod,
    Observation,
    blob,
    start_pods,
)

# Generous bounds for calls that should finish in milliseconds: a broken proxy fails the test with
# DEADLINE_EXCEEDED instead of hanging the suite.
CALL_TIMEOUT = 10.0
# The client deadline in the deadline test: long enough for the call to reach a pod on a busy machine.
DEADLINE = 2.0
# How long a pod may take to notice a cancellation that the activator forwarded.
CANCEL_NOTICE = 5.0

# No transparent retries: the client must see what the activator answered, not a retried call.
CHANNEL_OPTIONS = [("grpc.enable_retries", 0), ("grpc.enable_http_proxy", 0)]


@pytest.fixture
def grpc_pods() -> Iterator[list[GrpcPod]]:
    pods = start_pods(2)
    yield pods
    for pod in pods:
        pod.stop()


def grpc_target(activator: Any) -> str:
    """The activator's plaintext listener as a gRPC target (h2c with prior knowledge)."""
    return f"127.0.0.1:{activator.port}"


@pytest.fixture
def activator_for(activator_proc: Callable[..., Any]) -> Callable[[Sequence[GrpcPod]], Any]:
    """Factory: the activator with the given gRPC pods as its h2c upstreams."""

    def start(pods: Sequence[GrpcPod]) -> Any:
        return activator_proc(*(f"h2c://{pod.address}" for pod in pods))

    return start


@pytest.fixture
def channel(
    grpc_pods: list[GrpcPod], activator_for: Callable[[Sequence[GrpcPod]], Any]
) -> Iterator[grpc.Channel]:
    activator = activator_for(grpc_pods)
    with grpc.insecure_channel(grpc_target(activator), options=CHANNEL_OPTIONS) as channel:
        yield channel


def test_unary_call_reaches_a_pod_and_returns(channel: grpc.Channel) -> None:
    unary = channel.unary_unary(UNARY)

    response, call = unary.with_call(b"hello", timeout=CALL_TIMEOUT)

    assert response in (b"pod-0:hello", b"pod-1:hello")
    assert call.code() is grpc.StatusCode.OK


def test_request_metadata_reaches_the_pod_and_trailing_metadata_comes_back(
    channel: grpc.Channel, grpc_pods: list[GrpcPod]
) -> None:
    echo = channel.unary_unary(ECHO)

    response, call = echo.with_call(
        b"abc",
        timeout=CALL_TIMEOUT,
        metadata=(("x-tenant", "blue"), ("x-trace-bin", b"\x00\xfe"), ("x-big", "v" * 6000)),
    )

    assert response == b"cba"
    assert ("x-request-bytes", "3") in [(m.key, m.value) for m in call.trailing_metadata()]
    (seen,) = [metadata for pod in grpc_pods for metadata in pod.echo_metadata]
    assert ("x-tenant", "blue") in seen
    assert ("x-trace-bin", b"\x00\xfe") in seen
    assert ("x-big", "v" * 6000) in seen
    # The activator's forwarding headers reach a gRPC pod as metadata too.
    assert ("x-forwarded-proto", "http") in seen
    assert ("x-forwarded-for", "127.0.0.1") in seen


def test_server_streaming_delivers_100_messages_in_order(channel: grpc.Channel) -> None:
    stream = channel.unary_stream(SERVER_STREAM)

    call = stream(b"100", timeout=CALL_TIMEOUT)
    messages = list(call)

    assert messages == [str(i).encode() for i in range(100)]
    assert call.code() is grpc.StatusCode.OK


def test_client_streaming_sums_100_messages(channel: grpc.Channel) -> None:
    client_stream = channel.stream_unary(CLIENT_STREAM)

    response = client_stream(iter([str(i).encode() for i in range(100)]), timeout=CALL_TIMEOUT)

    assert response == f"{sum(range(100))}/100".encode()


def test_bidi_stream_echoes_in_lockstep(channel: grpc.Channel) -> None:
    """Each message is answered before the next is sent: a proxy that held request DATA until the
    end of the stream (or response DATA until the trailers) would deadlock this call."""
    outbox: queue.Queue[bytes | None] = queue.Queue()

    def requests() -> Iterator[bytes]:
        while (item := outbox.get(timeout=CALL_TIMEOUT)) is not None:
            yield item

    call = channel.stream_stream(BIDI)(requests(), timeout=CALL_TIMEOUT * 2)
    for i in range(50):
        outbox.put(b"message %d" % i)
        assert next(call) == b"echo:message %d" % i
    outbox.put(None)

    assert list(call) == []
    assert call.code() is grpc.StatusCode.OK


def test_server_streaming_of_large_messages(channel: grpc.Channel) -> None:
    """100 messages of 64 KiB: the stream outruns every flow-control window on the way."""
    call = channel.unary_stream(BLOB_STREAM)(b"100,65536", timeout=CALL_TIMEOUT * 2)

    received = list(call)

    assert len(received) == 100
    assert all(message == blob(i, 65536) for i, message in enumerate(received))


def test_client_streaming_of_large_messages(channel: grpc.Channel) -> None:
    """6.4 MiB uploaded as 100 messages: far past the activator's replay buffer."""
    messages = [os.urandom(65536) for _ in range(100)]
    expected = hashlib.sha256(b"".join(messages)).hexdigest()

    response = channel.stream_unary(DIGEST)(iter(messages), timeout=CALL_TIMEOUT * 2)

    assert response == f"100:{100 * 65536}:{expected}".encode()


def test_many_concurrent_bidi_streams_stay_separate(channel: grpc.Channel) -> None:
    """Twenty lockstep bidi calls at once on one client connection, spread over two pods."""

    def converse(caller: int) -> list[bytes]:
        outbox: queue.Queue[bytes | None] = queue.Queue()

        def requests() -> Iterator[bytes]:
            while (item := outbox.get(timeout=CALL_TIMEOUT)) is not None:
                yield item

        call = channel.stream_stream(BIDI)(requests(), timeout=CALL_TIMEOUT * 3)
        answers = []
        for i in range(20):
            outbox.put(b"%d/%d" % (caller, i))
            answers.append(next(call))
        outbox.put(None)
        assert list(call) == []
        return answers

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(converse, range(20)))

    for caller, answers in enumerate(results):
        assert answers == [b"echo:%d/%d" % (caller, i) for i in range(20)]


def test_error_status_details_and_trailing_metadata_arrive_intact(
    channel: grpc.Channel,
) -> None:
    fail = channel.unary_unary(FAIL)

    with pytest.raises(grpc.RpcError) as raised:
        fail(b"", timeout=CALL_TIMEOUT)

    error = raised.value
    assert isinstance(error, grpc.Call)
    assert error.code() is FAIL_CODE
    assert error.details() == FAIL_DETAILS
    trailing = [(m.key, m.value) for m in error.trailing_metadata()]
    for item in FAIL_TRAILERS:
        assert item in trailing


@pytest.mark.parametrize("compression", [grpc.Compression.NoCompression, grpc.Compression.Gzip])
def test_one_mebibyte_request_and_response(
    channel: grpc.Channel, compression: grpc.Compression
) -> None:
    """1 MiB each way: many DATA frames and several window updates on both hops."""
    payload = os.urandom(1 << 20)
    echo = channel.unary_unary(ECHO)

    response, call = echo.with_call(payload, timeout=CALL_TIMEOUT, compression=compression)

    assert response == payload[::-1]
    assert ("x-request-bytes", str(1 << 20)) in [(m.key, m.value) for m in call.trailing_metadata()]


def test_concurrent_large_messages_on_one_channel_stay_separate(channel: grpc.Channel) -> None:
    """Eight 1 MiB calls interleaved on one client connection, spread over two pods."""
    payloads = [os.urandom(1 << 20) for _ in range(8)]
    echo = channel.unary_unary(ECHO)

    calls = [echo.future(payload, timeout=CALL_TIMEOUT * 2) for payload in payloads]

    for payload, call in zip(payloads, calls, strict=True):
        assert call.result() == payload[::-1]


def write_config(tmp_path: Path, pod: GrpcPod, **service: str) -> Path:
    """A one-service configuration file; ``service`` adds YAML keys (values written as given)."""
    lines = ["services:", "  - name: grpc", f"    endpoints: [{pod.address}]"]
    service.setdefault("hosts", '["*"]')
    lines += [f"    {key}: {value}" for key, value in service.items()]
    config = tmp_path / "activator.yaml"
    config.write_text("\n".join(lines) + "\n")
    return config


@pytest.fixture
def single_pod() -> Iterator[GrpcPod]:
    pod = GrpcPod("only")
    pod.start()
    yield pod
    pod.stop()


def test_large_request_queued_for_a_busy_pod_arrives_whole(
    activator_proc: Callable[..., Any], single_pod: GrpcPod, tmp_path: Path
) -> None:
    """With one slot per pod, a second call waits in the activator's queue while its client keeps
    sending: the part of the 1 MiB body received before a pod is free must reach the pod too."""
    pod = single_pod
    activator = activator_proc(config_path=write_config(tmp_path, pod, container_concurrency="1"))
    with grpc.insecure_channel(grpc_target(activator), options=CHANNEL_OPTIONS) as channel:
        holding = channel.unary_unary(HOLD).future(b"", timeout=CALL_TIMEOUT * 2)
        _wait_for_one_observation([pod])
        payload = os.urandom(1 << 20)
        queued = channel.unary_unary(ECHO).future(payload, timeout=CALL_TIMEOUT * 2)

        pod.release.set()

        assert holding.result() == b"released by only"
        assert queued.result() == payload[::-1]


@pytest.mark.parametrize(
    ("authority", "expected"),
    [("grpc.example", grpc.StatusCode.OK), ("other.example", grpc.StatusCode.NOT_FOUND)],
)
def test_calls_are_routed_by_authority(
    activator_proc: Callable[..., Any],
    single_pod: GrpcPod,
    tmp_path: Path,
    authority: str,
    expected: grpc.StatusCode,
) -> None:
    """A host no service claims is a NOT_FOUND status with a message, not an HTTP 404 that a gRPC
    client would turn into UNIMPLEMENTED."""
    activator = activator_proc(
        config_path=write_config(tmp_path, single_pod, hosts='["grpc.example"]')
    )
    options = [("grpc.default_authority", authority), *CHANNEL_OPTIONS]
    with grpc.insecure_channel(grpc_target(activator), options=options) as channel:
        try:
            channel.unary_unary(UNARY)(b"x", timeout=CALL_TIMEOUT)
            code, details = grpc.StatusCode.OK, ""
        except grpc.RpcError as error:
            code, details = error.code(), error.details()

    assert code is expected
    if expected is grpc.StatusCode.NOT_FOUND:
        assert "other.example" in details
        assert single_pod.calls["Unary"] == 0


def test_full_queue_gives_unavailable_with_a_message(
    activator_proc: Callable[..., Any], single_pod: GrpcPod, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path, single_pod, container_concurrency="1", queue="{max_requests: 0}"
    )
    activator = activator_proc(config_path=config)
    with grpc.insecure_channel(grpc_target(activator), options=CHANNEL_OPTIONS) as channel:
        holding = channel.unary_unary(HOLD).future(b"", timeout=CALL_TIMEOUT * 2)
        _wait_for_one_observation([single_pod])
        with pytest.raises(grpc.RpcError) as raised:
            channel.unary_unary(UNARY)(b"x", timeout=CALL_TIMEOUT)
        single_pod.release.set()
        assert holding.result() == b"released by only"

    error = raised.value
    assert isinstance(error, grpc.Call)
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert "capacity" in error.details()
    assert single_pod.calls["Unary"] == 0


def test_queue_timeout_gives_deadline_exceeded_from_the_activator(
    activator_proc: Callable[..., Any], single_pod: GrpcPod, tmp_path: Path
) -> None:
    """The activator's own queue timeout (1 s here) ends the call long before the client's deadline,
    and says so in the status message."""
    config = write_config(tmp_path, single_pod, container_concurrency="1", queue="{timeout: 1s}")
    activator = activator_proc(config_path=config)
    with grpc.insecure_channel(grpc_target(activator), options=CHANNEL_OPTIONS) as channel:
        holding = channel.unary_unary(HOLD).future(b"", timeout=CALL_TIMEOUT * 3)
        _wait_for_one_observation([single_pod])
        with pytest.raises(grpc.RpcError) as raised:
            channel.unary_unary(UNARY)(b"x", timeout=CALL_TIMEOUT * 2)
        single_pod.release.set()
        assert holding.result() == b"released by only"

    error = raised.value
    assert isinstance(error, grpc.Call)
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "queue timeout" in error.details()
    assert single_pod.calls["Unary"] == 0


def test_deadline_is_forwarded_and_expiry_cancels_the_pod_handler(
    channel: grpc.Channel, grpc_pods: list[GrpcPod]
) -> None:
    wait = channel.unary_unary(WAIT)

    with pytest.raises(grpc.RpcError) as raised:
        wait(b"", timeout=DEADLINE)

    assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    observations = [o for pod in grpc_pods for o in pod.observations]
    assert len(observations) == 1, "exactly one pod ran the call"
    observation = observations[0]
    # grpc-timeout crossed the activator: the pod's handler knew its deadline.
    assert observation.time_remaining is not None
    # grpc-core rounds the encoded timeout up and reads its clocks coarsely: on a loaded machine the
    # pod has been seen a few ms over the caller's deadline (2.0086 s of 2.0).
    assert 0 < observation.time_remaining <= DEADLINE + 0.1
    assert observation.cancelled.wait(CANCEL_NOTICE), "the pod never saw the call end"
    assert observation.finished.wait(CANCEL_NOTICE)


def test_client_cancel_mid_stream_reaches_the_pod(
    channel: grpc.Channel, grpc_pods: list[GrpcPod]
) -> None:
    """No deadline is near: only the RST_STREAM the activator forwards can stop the pod's stream."""
    stream = channel.unary_stream(ENDLESS_STREAM)
    call = stream(b"", timeout=60)
    received = [next(call) for _ in range(10)]
    assert received == [b"tick %d" % i for i in range(10)]

    call.cancel()

    with pytest.raises(grpc.RpcError) as raised:
        next(call)
    assert raised.value.code() is grpc.StatusCode.CANCELLED
    observation = _only_observation(grpc_pods)
    assert observation.cancelled.wait(CANCEL_NOTICE), "cancel did not reach the pod"
    assert observation.finished.wait(CANCEL_NOTICE), "the pod kept streaming after the cancel"


def test_client_cancel_of_a_waiting_unary_call_reaches_the_pod(
    channel: grpc.Channel, grpc_pods: list[GrpcPod]
) -> None:
    wait = channel.unary_unary(WAIT)
    future = wait.future(b"", timeout=60)
    observation = _wait_for_one_observation(grpc_pods)

    assert future.cancel()

    assert observation.cancelled.wait(CANCEL_NOTICE), "cancel did not reach the pod"
    assert observation.finished.wait(CANCEL_NOTICE)


def test_concurrent_unary_calls_on_one_channel_spread_across_both_pods(
    channel: grpc.Channel, grpc_pods: list[GrpcPod]
) -> None:
    """One channel is one HTTP/2 connection to the activator; its streams are balanced one by one."""
    unary = channel.unary_unary(UNARY)
    total = 200

    futures = [unary.future(b"%d" % i, timeout=CALL_TIMEOUT * 2) for i in range(total)]
    served_by = Counter(future.result().split(b":", 1)[0].decode() for future in futures)

    assert sum(served_by.values()) == total
    assert {pod.name: pod.calls["Unary"] for pod in grpc_pods} == dict(served_by)
    for pod in grpc_pods:
        # Least-loaded choice between two pods splits concurrent work about evenly; a quarter is a
        # floor that only per-connection (rather than per-stream) balancing would break.
        assert served_by[pod.name] >= total // 4, served_by


def test_calls_keep_working_when_one_of_two_pods_is_gone(
    grpc_pods: list[GrpcPod], activator_for: Callable[[Sequence[GrpcPod]], Any]
) -> None:
    activator = activator_for(grpc_pods)
    grpc_pods[1].stop()

    with grpc.insecure_channel(grpc_target(activator), options=CHANNEL_OPTIONS) as channel:
        unary = channel.unary_unary(UNARY)
        responses = [unary(b"x", timeout=CALL_TIMEOUT) for _ in range(20)]

    assert responses == [b"pod-0:x"] * 20


@pytest.mark.parametrize("used_before", [False, True], ids=["never-reached", "after-serving"])
def test_all_pods_down_gives_unavailable_with_a_message(
    grpc_pods: list[GrpcPod], activator_for: Callable[[Sequence[GrpcPod]], Any], used_before: bool
) -> None:
    """A gRPC client must get UNAVAILABLE (retryable) with a reason, not wait out its deadline."""
    activator = activator_for(grpc_pods)
    with grpc.insecure_channel(grpc_target(activator), options=CHANNEL_OPTIONS) as channel:
        unary = channel.unary_unary(UNARY)
        if used_before:
            # Pooled upstream connections exist and then break under the activator.
            assert unary(b"warm", timeout=CALL_TIMEOUT).endswith(b":warm")
        for pod in grpc_pods:
            pod.stop()

        for attempt in ("finds the pods dead", "comes after that"):
            with pytest.raises(grpc.RpcError) as raised:
                unary(b"x", timeout=6.0)
            error = raised.value
            assert isinstance(error, grpc.Call)
            assert error.code() is grpc.StatusCode.UNAVAILABLE, attempt
            assert error.details(), attempt


def test_graceful_pod_shutdown_lets_the_in_flight_call_finish(
    channel: grpc.Channel, grpc_pods: list[GrpcPod]
) -> None:
    """grpc servers stop in two steps: GOAWAY(2^31-1) plus a PING, then the final GOAWAY once the PING
    is acknowledged. Frames after a GOAWAY are legal and streams at or below its last_stream_id run to
    completion (RFC 9113 §6.8), so the call already running must succeed."""
    hold = channel.unary_unary(HOLD)
    future = hold.future(b"", timeout=CALL_TIMEOUT * 2)
    observation = _wait_for_one_observation(grpc_pods)
    pod = next(pod for pod in grpc_pods if pod.observations)

    stopped = pod.begin_graceful_stop(grace=CALL_TIMEOUT)
    # The handler has not answered, so any end of the call now is a cancellation. A proxy that drops
    # the pod connection on the GOAWAY/PING exchange does it within milliseconds; waiting a moment
    # before the release gives that failure the chance to show.
    cancelled_early = observation.cancelled.wait(1.0)
    pod.release.set()

    assert not cancelled_early, "the pod's handler was cancelled during its graceful shutdown"
    assert future.result() == b"released by " + pod.name.encode()
    assert stopped.wait(CALL_TIMEOUT)


def test_activator_drain_lets_the_in_flight_call_finish(
    grpc_pods: list[GrpcPod], activator_for: Callable[[Sequence[GrpcPod]], Any]
) -> None:
    """SIGTERM: the activator sends GOAWAY to its clients and drains; a call already running on the
    client connection (at or below the GOAWAY's last_stream_id) must still get its response."""
    activator = activator_for(grpc_pods)
    with grpc.insecure_channel(grpc_target(activator), options=CHANNEL_OPTIONS) as channel:
        future = channel.unary_unary(HOLD).future(b"", timeout=CALL_TIMEOUT * 2)
        observation = _wait_for_one_observation(grpc_pods)
        pod = next(pod for pod in grpc_pods if pod.observations)

        os.kill(activator.pid, signal.SIGTERM)
        _wait_until_draining(activator.admin_url)
        pod.release.set()

        assert future.result() == b"released by " + pod.name.encode()
        assert observation.finished.wait(CANCEL_NOTICE)


def _wait_until_draining(admin_url: str) -> None:
    """Until /readyz answers 503. The activator sets that flag and writes its GOAWAYs in the same
    event-loop step, so from then on the client connection has been told to go away."""
    deadline = time.monotonic() + CALL_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(admin_url + "/readyz", timeout=1.0):
                pass
        except urllib.error.HTTPError as error:
            if error.code == 503:
                return
        time.sleep(0.02)
    pytest.fail("the activator never reported draining")


def _only_observation(pods: Sequence[GrpcPod]) -> Observation:
    observations = [o for pod in pods for o in pod.observations]
    assert len(observations) == 1
    return observations[0]


def _wait_for_one_observation(pods: Sequence[GrpcPod]) -> Observation:
    """The handler record of the one call in flight, once a pod has started running it."""
    deadline = time.monotonic() + CALL_TIMEOUT
    while time.monotonic() < deadline:
        for pod in pods:
            observation = pod.wait_for_observation(0.05)
            if observation is not None:
                return observation
    pytest.fail("no pod started the call")
