"""TLS peers for end-to-end tests: a throwaway self-signed certificate and pods that speak TLS.

The certificate is made at test time with the ``openssl`` command line, valid for ``localhost`` and
``127.0.0.1``; nothing secret is committed.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
SERVER_NAME = "localhost"
STARTUP_TIMEOUT = 15.0


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    @property
    def pem(self) -> bytes:
        return self.cert.read_bytes()


def make_self_signed(directory: Path) -> Certificate:
    """A P-256 certificate for localhost / 127.0.0.1 and its key, valid for a day."""
    cert = directory / "cert.pem"
    key = directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={SERVER_NAME}",
            "-addext",
            f"subjectAltName=DNS:{SERVER_NAME},IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return Certificate(cert=cert, key=key)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None = None) -> None:
    """Until 127.0.0.1:port accepts TCP connections; fails early if ``process`` exits."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"127.0.0.1:{port} did not accept connections in {STARTUP_TIMEOUT}s")


def child_env() -> dict[str, str]:
    """The environment for a child process: this checkout importable, no proxy settings."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


class ServerProcess:
    """A server subprocess listening on a known loopback port; SIGTERM, then SIGKILL, on stop."""

    def __init__(self, args: list[str], port: int) -> None:
        self.port = port
        self.process = subprocess.Popen(
            args,
            cwd=REPO_ROOT,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port, self.process)
        except BaseException:
            self.stop()
            raise

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_tls_demo_pod(name: str, certificate: Certificate) -> ServerProcess:
    """``python -m activator.demopod`` with TLS (ALPN h2, http/1.1)."""
    port = free_port()
    args = [sys.executable, "-m", "activator.demopod", "--listen", f"127.0.0.1:{port}"]
    args += ["--name", name, "--tls-cert", str(certificate.cert), "--tls-key", str(certificate.key)]
    return ServerProcess(args, port)


def start_tls_nghttpd(docroot: Path, certificate: Certificate) -> ServerProcess:
    """nghttp2's reference server with TLS: it offers only h2 over ALPN."""
    port = free_port()
    args = ["nghttpd", "-d", str(docroot), str(port), str(certificate.key), str(certificate.cert)]
    return ServerProcess(args, port)


class Http1TlsPod:
    """An HTTP/1.1-only TLS server (no ALPN offered), in a thread of this process.

    Answers every GET/POST with ``http1 pod: <method> <path> <protocol>`` and records the Host header
    it saw, so a test can tell the activator fell back to HTTP/1.1 towards it.
    """

    def __init__(self, certificate: Certificate) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certificate.cert, certificate.key)
        hosts: list[str] = []
        self.hosts = hosts

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                received = self.rfile.read(length) if length else b""
                hosts.append(self.headers.get("host", ""))
                body = (
                    f"http1 pod: {self.command} {self.path} {self.request_version} "
                    f"{len(received)}\n"
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = _answer
            do_POST = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: the test asserts on what it needs

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)
