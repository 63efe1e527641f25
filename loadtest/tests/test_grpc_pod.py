"""The gRPC pod and the probe, against each other over real sockets."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.grpc_pod import encode_grpc_frame, probe, request_payload
from loadtest.pods import PodKind, Pods


def test_frame_is_length_prefixed() -> None:
    frame = encode_grpc_frame(b"abc")
    assert frame == b"\x00\x00\x00\x00\x03abc"
    assert len(request_payload(100)) == 100


def test_probe_counts_ok_calls_of_a_real_pod(pods: Pods) -> None:
    pytest.importorskip("grpc")
    grpc_pods = pods.get(PodKind.GRPC)
    assert grpc_pods.error is None, grpc_pods.error
    result = probe(f"127.0.0.1:{grpc_pods.ports[0]}", calls=5, payload_bytes=100, timeout_s=10.0)
    assert result == {"calls": 5, "ok": 5, "statuses": {"OK": 5}}


def test_probe_counts_failures_when_nothing_answers(tmp_path: Path) -> None:
    pytest.importorskip("grpc")
    from loadtest.procs import PortAllocator

    port = PortAllocator().take()
    result = probe(f"127.0.0.1:{port}", calls=2, payload_bytes=10, timeout_s=2.0)
    assert result["ok"] == 0
    assert result["statuses"] == {"UNAVAILABLE": 2}
