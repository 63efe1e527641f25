"""TLS on both hops: the activator's ``--tls-listen`` listener (ALPN h2 and http/1.1) with curl, httpx
and grpcio as clients, and ``https://`` upstreams (TLS to the pods, ALPN h2 with a fallback to
HTTP/1.1) with the demo pod, nghttpd, an HTTP/1.1-only server and grpcio as pods: certificates
unverified by default, verified against a CA and a name with ``upstream_tls``. The certificate is
self-signed (its own CA) and made at test time.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_support.pods import (
    BIDI,
    ECHO,
    FAIL,
    FAIL_CODE,
    FAIL_DETAILS,
    FAIL_TRAILERS,
    SERVER_STREAM,
    UNARY,
    GrpcPod,
    start_pods,
)
from grpc_support.tls import (
    SERVER_NAME,
    Certificate,
    Http1TlsPod,
    free_port,
    make_self_signed,
    start_tls_demo_pod,
    start_tls_nghttpd,
    wait_for_port,
)

CALL_TIMEOUT = 10.0
CURL_TIMEOUT = 20.0
GRPC_OPTIONS = [("grpc.enable_retries", 0), ("grpc.enable_http_proxy", 0)]


@dataclass
class TlsActivator:
    """An activator process with both its plaintext and its TLS listener."""

    process: Any
    tls_port: int

    @property
    def url(self) -> str:
        return str(self.process.url)

    @property
    def port(self) -> int:
        return int(self.process.port)

    @property
    def tls_url(self) -> str:
        return f"https://127.0.0.1:{self.tls_port}"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def start_tls_activator(
    activator_proc: Callable[..., Any], certificate: Certificate
) -> Callable[..., TlsActivator]:
    """Factory: the activator in front of the given upstream URLs, with a TLS listener too."""

    def start(*upstreams: str) -> TlsActivator:
        tls_port = free_port()
        process = activator_proc(
            *upstreams,
            extra_args=[
                "--tls-listen",
                f"127.0.0.1:{tls_port}",
                "--tls-cert",
                str(certificate.cert),
                "--tls-key",
                str(certificate.key),
            ],
        )
        wait_for_port(tls_port)
        return TlsActivator(process, tls_port)

    return start


@pytest.fixture
def tls_activator(
    demo_pods: Callable[..., Sequence[Any]], start_tls_activator: Callable[..., TlsActivator]
) -> TlsActivator:
    """Two h2c demo pods behind an activator with a TLS listener."""
    pods = demo_pods(2)
    return start_tls_activator(*(pod.h2c_upstream for pod in pods))


@dataclass
class CurlResult:
    http_version: str
    status: int
    body: bytes


def curl(*args: str, tmp_path: Path) -> CurlResult:
    """Run curl (never through a proxy), the body to a file; fail the test on a transport error."""
    body_file = tmp_path / "curl-body"
    completed = subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--noproxy",
            "*",
            "--max-time",
            str(CURL_TIMEOUT),
            "--output",
            str(body_file),
            "--write-out",
            "%{http_version} %{response_code}",
            *args,
        ],
        capture_output=True,
        timeout=CURL_TIMEOUT + 5,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")
    version, status = completed.stdout.decode().split()
    return CurlResult(version, int(status), body_file.read_bytes())


# -- the TLS listener ------------------------------------------------------------------------------


def test_curl_http2_over_tls_negotiates_h2_by_alpn(
    tls_activator: TlsActivator, tmp_path: Path
) -> None:
    result = curl("--http2", "--insecure", tls_activator.tls_url + "/", tmp_path=tmp_path)

    assert (result.http_version, result.status) == ("2", 200)
    assert result.body.startswith(b"hello from pod-")


def test_curl_http1_1_over_tls_gets_http1_1(tls_activator: TlsActivator, tmp_path: Path) -> None:
    result = curl("--http1.1", "--insecure", tls_activator.tls_url + "/", tmp_path=tmp_path)

    assert (result.http_version, result.status) == ("1.1", 200)
    assert result.body.startswith(b"hello from pod-")


@pytest.mark.parametrize("protocol", ["--http2", "--http1.1"])
def test_one_mebibyte_upload_echoes_back_intact_over_tls(
    tls_activator: TlsActivator, tmp_path: Path, protocol: str
) -> None:
    payload = os.urandom(1 << 20)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(payload)

    result = curl(
        protocol,
        "--insecure",
        "--data-binary",
        f"@{upload}",
        tls_activator.tls_url + "/echo",
        tmp_path=tmp_path,
    )

    assert result.status == 200
    assert result.body == payload


@pytest.mark.parametrize(
    ("http2", "expected_version"), [(True, "HTTP/2"), (False, "HTTP/1.1")], ids=["h2", "http1.1"]
)
def test_httpx_over_tls_sees_https_forwarding_headers(
    tls_activator: TlsActivator, http2: bool, expected_version: str
) -> None:
    """The pod learns the client came over TLS (X-Forwarded-Proto, Forwarded proto=https)."""
    with httpx.Client(http2=http2, verify=False, trust_env=False, timeout=CALL_TIMEOUT) as client:
        response = client.get(tls_activator.tls_url + "/headers")

    assert response.status_code == 200
    assert response.http_version == expected_version
    seen = response.json()
    assert seen["x-forwarded-proto"] == ["https"]
    assert "proto=https" in seen["forwarded"][-1]


def test_plaintext_listener_keeps_serving_next_to_tls(tls_activator: TlsActivator) -> None:
    with httpx.Client(verify=False, trust_env=False, timeout=CALL_TIMEOUT) as client:
        over_tls = client.get(tls_activator.tls_url + "/headers").json()
        plain = client.get(tls_activator.url + "/headers").json()

    assert over_tls["x-forwarded-proto"] == ["https"]
    assert plain["x-forwarded-proto"] == ["http"]


@pytest.mark.parametrize("protocol", ["--http2", "--http1.1"])
def test_twenty_mebibyte_download_over_tls(
    tls_activator: TlsActivator, tmp_path: Path, protocol: str
) -> None:
    """A body much larger than every window and TLS record buffer on the way."""
    size = 20 << 20

    result = curl(
        protocol, "--insecure", f"{tls_activator.tls_url}/bytes/{size}", tmp_path=tmp_path
    )

    assert result.status == 200
    assert len(result.body) == size


def _tls_exchange(port: int, alpn: list[str] | None, request: bytes) -> bytes:
    """One request on a fresh TLS connection (certificate not checked); everything read until the
    server closes (the request asks it to)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=CALL_TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname=SERVER_NAME) as tls,
    ):
        tls.sendall(request)
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
        return answer


def test_tls_client_without_alpn_is_served_http1_1(tls_activator: TlsActivator) -> None:
    answer = _tls_exchange(
        tls_activator.tls_port, None, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body.startswith(b"hello from pod-")


def test_h2c_upgrade_is_not_performed_over_tls(tls_activator: TlsActivator) -> None:
    """h2c is HTTP/2 over cleartext only (RFC 9113 §3.1): over TLS the Upgrade is ignored and the
    request is answered in HTTP/1.1."""
    request = (
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings, close\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n"
    )

    answer = _tls_exchange(tls_activator.tls_port, ["http/1.1"], request)

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body.startswith(b"hello from pod-")


@pytest.fixture
def grpc_pods() -> Iterator[list[GrpcPod]]:
    pods = start_pods(2)
    yield pods
    for pod in pods:
        pod.stop()


def secure_channel(activator: TlsActivator, certificate: Certificate) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(root_certificates=certificate.pem)
    return grpc.secure_channel(
        f"127.0.0.1:{activator.tls_port}",
        credentials,
        # The certificate names localhost; the channel dials 127.0.0.1.
        options=[("grpc.ssl_target_name_override", SERVER_NAME), *GRPC_OPTIONS],
    )


def test_grpc_over_tls_listener(
    grpc_pods: list[GrpcPod],
    start_tls_activator: Callable[..., TlsActivator],
    certificate: Certificate,
) -> None:
    activator = start_tls_activator(*(f"h2c://{pod.address}" for pod in grpc_pods))

    with secure_channel(activator, certificate) as channel:
        unary = channel.unary_unary(UNARY)(b"tls", timeout=CALL_TIMEOUT)
        streamed = list(channel.unary_stream(SERVER_STREAM)(b"100", timeout=CALL_TIMEOUT))
        payload = os.urandom(1 << 20)
        echoed = channel.unary_unary(ECHO)(payload, timeout=CALL_TIMEOUT)
        with pytest.raises(grpc.RpcError) as raised:
            channel.unary_unary(FAIL)(b"", timeout=CALL_TIMEOUT)

    assert unary in (b"pod-0:tls", b"pod-1:tls")
    assert streamed == [str(i).encode() for i in range(100)]
    assert echoed == payload[::-1]
    error = raised.value
    assert isinstance(error, grpc.Call)
    assert (error.code(), error.details()) == (FAIL_CODE, FAIL_DETAILS)
    trailing = [(m.key, m.value) for m in error.trailing_metadata()]
    assert all(item in trailing for item in FAIL_TRAILERS)


def test_grpc_client_that_does_not_trust_the_certificate_is_refused(
    grpc_pods: list[GrpcPod], start_tls_activator: Callable[..., TlsActivator]
) -> None:
    """The listener really is TLS with our certificate: default roots cannot verify it."""
    activator = start_tls_activator(*(f"h2c://{pod.address}" for pod in grpc_pods))

    with (
        grpc.secure_channel(
            f"127.0.0.1:{activator.tls_port}",
            grpc.ssl_channel_credentials(),
            options=[("grpc.ssl_target_name_override", SERVER_NAME), *GRPC_OPTIONS],
        ) as channel,
        pytest.raises(grpc.RpcError) as raised,
    ):
        channel.unary_unary(UNARY)(b"x", timeout=CALL_TIMEOUT)

    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
    assert sum(pod.calls["Unary"] for pod in grpc_pods) == 0


# -- https:// upstreams ----------------------------------------------------------------------------


def test_https_upstream_demo_pod_is_reached_over_h2(
    activator_proc: Callable[..., Any], certificate: Certificate, tmp_path: Path
) -> None:
    pod = start_tls_demo_pod("tls-pod", certificate)
    try:
        activator = activator_proc(f"https://{pod.address}")
        result = curl("--http2-prior-knowledge", activator.url + "/headers", tmp_path=tmp_path)
        hello = curl("--http2-prior-knowledge", activator.url + "/", tmp_path=tmp_path)
    finally:
        pod.stop()

    assert result.status == 200
    seen = json.loads(result.body)
    # Over HTTP/2 the pod gets :authority and no Host header; over HTTP/1.1 it would get Host.
    assert "host" not in seen
    assert seen[":authority"] == [f"127.0.0.1:{activator.port}"]
    assert hello.body == b"hello from tls-pod\n"
    # Without upstream_tls the pod is not authenticated, and the activator says so.
    assert "service default: pods' TLS certificates are not verified" in activator.stderr_text()


def test_the_unverified_pods_warning_comes_once_with_workers(
    activator_proc: Callable[..., Any], certificate: Certificate, tmp_path: Path
) -> None:
    pod = start_tls_demo_pod("tls-pod", certificate)
    try:
        activator = activator_proc(f"https://{pod.address}", extra_args=("--workers", "2"))
        hello = curl("--http2-prior-knowledge", activator.url + "/", tmp_path=tmp_path)
    finally:
        pod.stop()
    assert hello.body == b"hello from tls-pod\n"
    stderr = activator.stderr_text()
    # Both workers ran.
    assert "[worker 1 " in stderr, stderr
    assert "with 2 workers" in stderr, stderr
    assert stderr.count("pods' TLS certificates are not verified") == 1, stderr


def test_https_upstream_many_concurrent_streams(
    activator_proc: Callable[..., Any], certificate: Certificate
) -> None:
    """Fifty concurrent requests from one HTTP/2 client connection, over TLS to the pod."""
    pod = start_tls_demo_pod("tls-pod", certificate)
    try:
        activator = activator_proc(f"https://{pod.address}")

        async def fetch_all() -> list[httpx.Response]:
            async with httpx.AsyncClient(
                http1=False, http2=True, trust_env=False, timeout=CALL_TIMEOUT
            ) as client:
                return await asyncio.gather(
                    *(client.get(f"{activator.url}/bytes/{10_000 + i}") for i in range(50))
                )

        responses = asyncio.run(fetch_all())
    finally:
        pod.stop()

    assert [r.status_code for r in responses] == [200] * 50
    assert [len(r.content) for r in responses] == [10_000 + i for i in range(50)]


def test_https_upstream_nghttpd(
    activator_proc: Callable[..., Any], certificate: Certificate, tmp_path: Path
) -> None:
    """nghttp2's own server as the pod: it accepts only h2 over ALPN."""
    docroot = tmp_path / "docroot"
    docroot.mkdir()
    content = os.urandom(300_000)
    (docroot / "blob.bin").write_bytes(content)
    pod = start_tls_nghttpd(docroot, certificate)
    try:
        activator = activator_proc(f"https://{pod.address}")
        over_h2 = curl("--http2-prior-knowledge", activator.url + "/blob.bin", tmp_path=tmp_path)
        over_h1 = curl("--http1.1", activator.url + "/blob.bin", tmp_path=tmp_path)
    finally:
        pod.stop()

    assert (over_h2.status, over_h2.body == content) == (200, True)
    assert (over_h1.status, over_h1.body == content) == (200, True)


def test_https_upstream_without_h2_falls_back_to_http1_1(
    activator_proc: Callable[..., Any], certificate: Certificate, tmp_path: Path
) -> None:
    pod = Http1TlsPod(certificate)
    try:
        activator = activator_proc(f"https://{pod.address}")
        gets = [
            curl("--http2-prior-knowledge", f"{activator.url}/get/{i}", tmp_path=tmp_path)
            for i in range(5)
        ]
        post = curl(
            "--http2-prior-knowledge",
            "--data-binary",
            "x" * 5000,
            activator.url + "/post",
            tmp_path=tmp_path,
        )
    finally:
        pod.stop()

    assert [g.body for g in gets] == [b"http1 pod: GET /get/%d HTTP/1.1 0\n" % i for i in range(5)]
    assert post.body == b"http1 pod: POST /post HTTP/1.1 5000\n"
    assert pod.hosts == [f"127.0.0.1:{activator.port}"] * 6


def test_https_upstream_to_a_plaintext_pod_is_a_prompt_502(
    activator_proc: Callable[..., Any], demo_pods: Callable[..., Sequence[Any]], tmp_path: Path
) -> None:
    """A misconfigured ``https://`` upstream (the pod speaks cleartext): the TLS handshake fails, and
    the client gets a 502 naming the reason rather than waiting for a pod that will never answer."""
    (pod,) = demo_pods(1)
    activator = activator_proc(pod.h2c_upstream.replace("h2c://", "https://"))

    result = curl("--http2-prior-knowledge", activator.url + "/", tmp_path=tmp_path)

    assert result.status == 502
    assert b"SSL" in result.body


# -- pods' certificates verified (upstream_tls) --------------------------------------------------


def verified_service(
    tmp_path: Path, pod_address: str, upstream_tls: str, probe: bool, name: str = "verified.yaml"
) -> Path:
    """A config file: one https service for every host, its pod, and the given upstream_tls."""
    config = tmp_path / name
    config.write_text(
        "services:\n"
        "  - name: secure\n"
        '    hosts: ["*"]\n'
        "    upstream: https\n"
        f"    upstream_tls: {upstream_tls}\n"
        f'    endpoints: ["{pod_address}"]\n'
        + ("    probe: {path: /healthz}\n    queue: {timeout: 2s}\n" if probe else "")
    )
    return config


@pytest.mark.parametrize(
    "server_name",
    [
        pytest.param("localhost", id="by-name"),
        pytest.param(None, id="by-ip-san"),  # the pod's address, 127.0.0.1, is in the certificate
    ],
)
def test_https_upstream_verified_against_its_ca(
    activator_proc: Callable[..., Any],
    certificate: Certificate,
    tmp_path: Path,
    server_name: str | None,
) -> None:
    pod = start_tls_demo_pod("verified-pod", certificate)
    named = f", server_name: {server_name}" if server_name else ""
    config = verified_service(tmp_path, pod.address, f"{{ca: {certificate.cert}{named}}}", True)
    try:
        activator = activator_proc(config_path=config)
        result = curl("--http2-prior-knowledge", activator.url + "/", tmp_path=tmp_path)
    finally:
        pod.stop()

    assert (result.status, result.body) == (200, b"hello from verified-pod\n")
    assert "not verified" not in activator.stderr_text()


@pytest.mark.parametrize(
    "mismatch", ["name", "ca"], ids=["certificate-for-another-name", "another-ca"]
)
def test_https_upstream_that_fails_verification_gets_no_request(
    activator_proc: Callable[..., Any],
    certificate: Certificate,
    tmp_path: Path,
    mismatch: str,
) -> None:
    """A pod whose certificate does not verify is never sent the request: 502 with the reason."""
    if mismatch == "name":
        upstream_tls = f"{{ca: {certificate.cert}, server_name: pods.example.com}}"
    else:
        other = make_self_signed(tmp_path)  # same names, another key: not this pod's issuer
        upstream_tls = f"{{ca: {other.cert}}}"
    pod = Http1TlsPod(certificate)
    config = verified_service(tmp_path, pod.address, upstream_tls, False)
    try:
        activator = activator_proc(config_path=config)
        result = curl("--http2-prior-knowledge", activator.url + "/", tmp_path=tmp_path)
    finally:
        pod.stop()

    assert result.status == 502
    assert b"CERTIFICATE_VERIFY_FAILED" in result.body
    assert pod.hosts == []  # no request reached the pod


def test_readiness_probe_verifies_as_the_data_path_does(
    activator_proc: Callable[..., Any], certificate: Certificate, tmp_path: Path
) -> None:
    """A probe that skipped verification would call a pod ready that no request can reach; the
    pod stays not ready and requests wait for a ready pod, then time out (504)."""
    pod = start_tls_demo_pod("unverified-pod", certificate)
    upstream_tls = f"{{ca: {certificate.cert}, server_name: pods.example.com}}"
    config = verified_service(tmp_path, pod.address, upstream_tls, True)
    try:
        activator = activator_proc(config_path=config)
        result = curl("--http2-prior-knowledge", activator.url + "/", tmp_path=tmp_path)
        services = activator.services()
    finally:
        pod.stop()

    assert result.status == 504
    (service,) = services
    assert [p["ready"] for p in service["pods"]] == [False]


def refused_config(command: str, config: Path, *flags: str) -> str:
    """``activator serve --config FILE`` or ``check-config FILE`` that must stop with exit 2
    before serving: its stderr."""
    argv = [sys.executable, "-m", "activator", command]
    argv += ["--config", str(config)] if command == "serve" else [str(config)]
    done = subprocess.run([*argv, *flags], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2, done.stderr
    return done.stderr


def test_a_ca_file_that_does_not_load_stops_the_start(tmp_path: Path) -> None:
    config = verified_service(tmp_path, "127.0.0.1:1", f"{{ca: {tmp_path / 'missing.pem'}}}", False)
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    config_bad = verified_service(tmp_path, "127.0.0.1:1", f"{{ca: {not_pem}}}", False, "bad.yaml")
    cases = ((config, "No such file or directory"), (config_bad, "NO_CERTIFICATE_OR_CRL_FOUND"))
    for path, reason in cases:
        for command in ("serve", "check-config"):
            stderr = refused_config(command, path)
            # upstream_tls is on line 5 of the file verified_service writes.
            expected = f"activator: {path}:5: services[0].upstream_tls.ca: cannot load the CA"
            assert stderr.startswith(expected), stderr
            assert reason in stderr


def test_a_listener_certificate_that_does_not_load_names_the_line(tmp_path: Path) -> None:
    config = tmp_path / "listener.yaml"
    missing = tmp_path / "missing.pem"
    config.write_text(
        "listen: 127.0.0.1:0\n"
        "admin: 127.0.0.1:0\n"
        f"tls: {{listen: 127.0.0.1:0, cert: {missing}, key: {missing}}}\n"
    )
    for command in ("serve", "check-config"):
        stderr = refused_config(command, config)
        expected = f"activator: {config}:3: tls: cannot load the certificate or key: "
        assert stderr.startswith(expected), stderr
        assert "No such file or directory" in stderr
    # The same listener from flags, over the file's: the error is the flags', with no line.
    flags = ["--tls-listen", "127.0.0.1:0", "--tls-cert", str(missing), "--tls-key", str(missing)]
    stderr = refused_config("serve", config, *flags)
    assert stderr.startswith("activator: --tls-cert: tls: cannot load"), stderr


def test_grpc_with_tls_on_both_hops(
    start_tls_activator: Callable[..., TlsActivator], certificate: Certificate
) -> None:
    """grpcio pods serving TLS behind ``https://`` upstreams, a grpcio client on the TLS listener."""
    key_and_cert = [(certificate.key.read_bytes(), certificate.pem)]
    pods = start_pods(2, grpc.ssl_server_credentials(key_and_cert))
    try:
        activator = start_tls_activator(*(f"https://{pod.address}" for pod in pods))
        with secure_channel(activator, certificate) as channel:
            unary = channel.unary_unary(UNARY)
            served = [unary(b"%d" % i, timeout=CALL_TIMEOUT) for i in range(10)]
            bidi = channel.stream_stream(BIDI)
            echoed = list(bidi(iter([b"a", b"b", b"c"]), timeout=CALL_TIMEOUT))
    finally:
        for pod in pods:
            pod.stop()

    assert [s.split(b":", 1)[1] for s in served] == [b"%d" % i for i in range(10)]
    assert {s.split(b":", 1)[0] for s in served} <= {b"pod-0", b"pod-1"}
    assert echoed == [b"echo:a", b"echo:b", b"echo:c"]


def test_a_tls_handshake_that_never_comes_is_cut_at_the_header_timeout(
    activator_proc: Callable[..., Any],
    demo_pods: Callable[..., Sequence[Any]],
    certificate: Certificate,
    tmp_path: Path,
) -> None:
    """A client that opens the TLS port and sends nothing never reaches the ingress (the
    handshake comes first), so the handshake itself is held to client_header_timeout."""
    (pod,) = demo_pods(1)
    config = tmp_path / "handshake.yaml"
    config.write_text(
        "limits: {client_header_timeout: 2s}\n"
        f'services:\n  - {{name: demo, hosts: ["*"], endpoints: ["127.0.0.1:{pod.port}"]}}\n'
    )
    tls_port = free_port()
    activator_proc(
        config_path=config,
        extra_args=[
            *("--tls-listen", f"127.0.0.1:{tls_port}"),
            *("--tls-cert", str(certificate.cert), "--tls-key", str(certificate.key)),
        ],
    )
    wait_for_port(tls_port)
    with socket.create_connection(("127.0.0.1", tls_port)) as sock:
        sock.settimeout(30)
        started = time.monotonic()
        try:
            received = sock.recv(100)
        except ConnectionResetError:
            received = b""
        waited = time.monotonic() - started
    assert received == b""
    assert 1.5 <= waited <= 6, waited
