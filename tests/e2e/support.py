"""Peers for end-to-end tests: demo pods (in-process or as subprocesses), the activator as a
subprocess, a raw HTTP/2 client over a blocking socket (for what curl and nghttp cannot do: half-sent
bodies, resets, small windows), and runners for curl and h2load.

Every wait is bounded: sockets have timeouts and subprocesses run under ``timeout=``.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

if TYPE_CHECKING:
    from activator.demopod import DemoPod, PodBehaviour

LOOPBACK = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, *, timeout: float = 10.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until 127.0.0.1:port accepts a TCP connection (or fail, early if ``process`` exits)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1.0):
                return
        except OSError:
            pass
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"process exited with {process.returncode} before port {port} accepted"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"127.0.0.1:{port} did not accept connections within {timeout}s")
        time.sleep(0.02)


def http_get_json(port: int, path: str, *, timeout: float = 5.0) -> Any:
    """GET a JSON document over plain HTTP/1.1 (no proxy settings consulted)."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path} on port {port}: {response.status} {body[:200]!r}")
        return json.loads(body)
    finally:
        conn.close()


# -- demo pods ---------------------------------------------------------------------------------------


class PodHandle:
    """What tests need of a running pod, whether in-process or a subprocess."""

    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def h2c_upstream(self) -> str:
        """The activator ``--upstream`` URL for this pod over HTTP/2 cleartext."""
        return f"h2c://{LOOPBACK}:{self.port}"

    @property
    def http1_upstream(self) -> str:
        """The activator ``--upstream`` URL for this pod over HTTP/1.1."""
        return f"http://{LOOPBACK}:{self.port}"

    def stats(self) -> dict[str, Any]:
        """The pod's ``/admin/stats`` document."""
        document: dict[str, Any] = http_get_json(self.port, "/admin/stats")
        return document

    def reset_stats(self) -> None:
        http_get_json_or_text(self.port, "/admin/reset-stats")

    def request_goaway(self) -> None:
        """``/admin/goaway``: the pod sends GOAWAY on all its connections."""
        http_get_json_or_text(self.port, "/admin/goaway")


def http_get_json_or_text(port: int, path: str, *, timeout: float = 5.0) -> bytes:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path} on port {port}: {response.status} {body[:200]!r}")
        return body
    finally:
        conn.close()


class PodLoop:
    """An event loop running in a daemon thread, to host in-process pods."""

    def __init__(self) -> None:
        try:
            import uvloop

            self.loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        except ImportError:
            self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="demo-pods", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5.0)
        if not self.thread.is_alive():
            self.loop.close()


class InProcessPod(PodHandle):
    """A :class:`DemoPod` served by the fixture's pod thread."""

    def __init__(self, pod: DemoPod, pod_loop: PodLoop) -> None:
        self.pod = pod
        self.name = pod.behaviour.name
        self.port = pod.port
        self._pod_loop = pod_loop
        self.stopped = False

    @classmethod
    def start(cls, pod_loop: PodLoop, behaviour: PodBehaviour) -> InProcessPod:
        """Start a pod on 127.0.0.1, port 0, in ``pod_loop``."""
        from activator.demopod import DemoPod

        pod = DemoPod(behaviour, host=LOOPBACK, port=0)
        pod_loop.run(pod.start())
        return cls(pod, pod_loop)

    @property
    def behaviour(self) -> PodBehaviour:
        return self.pod.behaviour

    def stop(self) -> None:
        """Close the pod's listener and all its connections."""
        if not self.stopped:
            self.stopped = True
            self._pod_loop.run(self.pod.stop())

    def send_goaway_all(self, last_stream_id: int | None = None) -> None:
        self._pod_loop.run(self.pod.send_goaway_all(last_stream_id))


class SubprocessPod(PodHandle):
    """A pod running as ``python -m activator.demopod`` (can be killed outright)."""

    def __init__(self, behaviour: PodBehaviour) -> None:
        self.name = behaviour.name
        self.port = free_port()
        args = [
            sys.executable,
            "-m",
            "activator.demopod",
            "--listen",
            f"{LOOPBACK}:{self.port}",
            "--name",
            behaviour.name,
            "--delay-ms",
            str(int(behaviour.delay * 1000)),
            "--goaway-every",
            str(behaviour.goaway_every),
            "--refuse-every",
            str(behaviour.refuse_every),
            "--max-concurrent-streams",
            str(behaviour.max_concurrent_streams),
        ]
        self.process = subprocess.Popen(
            args,
            cwd=REPO_ROOT,
            env=subprocess_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.port, process=self.process)
        except BaseException:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL: the pod vanishes without GOAWAY or FIN handshakes of its own making."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


# -- the activator -----------------------------------------------------------------------------------


class ActivatorProcess:
    """``python -m activator serve`` running as a subprocess on free loopback ports."""

    def __init__(
        self,
        upstreams: Sequence[str],
        *,
        extra_args: Sequence[str] = (),
        config_path: str | Path | None = None,
        drain_timeout: float = 2.0,
        log_level: str = "info",
    ) -> None:
        self.port = free_port()
        self.admin_port = free_port()
        args = [
            sys.executable,
            "-m",
            "activator",
            "serve",
            "--listen",
            f"{LOOPBACK}:{self.port}",
            "--admin",
            f"{LOOPBACK}:{self.admin_port}",
            "--drain-timeout",
            str(drain_timeout),
            "--log-level",
            log_level,
        ]
        if config_path is not None:
            args += ["--config", str(config_path)]
        for upstream in upstreams:
            args += ["--upstream", upstream]
        args += list(extra_args)
        self.args = args
        # A file, not a pipe: nobody reads stderr while the test runs, and a full pipe would stall it.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self.process = subprocess.Popen(
            args,
            cwd=REPO_ROOT,
            env=subprocess_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )
        try:
            wait_for_port(self.port, process=self.process)
            wait_for_port(self.admin_port, process=self.process)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{LOOPBACK}:{self.admin_port}"

    def stderr_text(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def services(self) -> list[dict[str, Any]]:
        """The admin API's ``/v1/services`` list."""
        document = http_get_json(self.admin_port, "/v1/services")
        services: list[dict[str, Any]] = document["services"]
        return services

    def rss_kib(self) -> int:
        """Resident set size of the activator process, from /proc/PID/status."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS line")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait for a graceful exit (SIGKILL past ``timeout``); the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return int(self.process.returncode)

    def close(self) -> None:
        self._stderr.close()


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        import pytest

        pytest.skip(f"{name} is not installed")
    return path


# -- raw HTTP/2 ---------------------------------------------------------------------------------------


@dataclass
class StreamState:
    """Everything one stream received."""

    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    data_frames: int = 0
    trailers: list[tuple[bytes, bytes]] | None = None
    ended: bool = False
    reset_code: int | None = None

    @property
    def closed(self) -> bool:
        return self.ended or self.reset_code is not None

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass
class GoAway:
    error_code: int
    last_stream_id: int


class GoawayTolerantConnection(h2.connection.H2Connection):
    """h2 moves its connection state machine to CLOSED on receiving GOAWAY and then rejects every
    later frame; RFC 9113 §6.8 lets streams up to last_stream_id complete, and a test client must see
    them do so. Keep the state as it was; the client opens no new streams after a GOAWAY anyway."""

    def _receive_goaway_frame(self, frame: Any) -> Any:
        state = self.state_machine.state
        result = super()._receive_goaway_frame(frame)
        self.state_machine.state = state
        return result


class RawH2Client:
    """An HTTP/2 (prior knowledge) client driven step by step from a test.

    ``auto_ack`` returns flow-control credit as soon as DATA arrives; with it off, the test decides
    when to call :meth:`ack` (a slow reader).
    """

    def __init__(
        self,
        port: int,
        *,
        stream_window: int = 65535,
        connection_window: int = 65535,
        auto_ack: bool = True,
        timeout: float = 10.0,
        send_preface: bool = True,
    ) -> None:
        self.sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.auto_ack = auto_ack
        self.conn = GoawayTolerantConnection(
            config=h2.config.H2Configuration(
                client_side=True,
                header_encoding=None,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        self.streams: dict[int, StreamState] = {}
        self.goaway: GoAway | None = None
        self.eof = False
        self.settings_acked = False
        self.remote_settings_seen = False
        self.unacked: dict[int, int] = {}
        if send_preface:
            self.conn.local_settings = h2.settings.Settings(
                client=True,
                initial_values={
                    h2.settings.SettingCodes.ENABLE_PUSH: 0,
                    h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: stream_window,
                },
            )
            self.conn.initiate_connection()
            if connection_window > 65535:
                self.conn.increment_flow_control_window(connection_window - 65535)
            self.flush()

    # -- sending ---------------------------------------------------------------------------------

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(
        self,
        path: str,
        *,
        method: str = "GET",
        authority: str = "example.test",
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | None = None,
        end_stream: bool = True,
    ) -> int:
        """Open a stream; with ``end_stream`` false the body may continue with :meth:`send_data`."""
        stream_id = self.conn.get_next_available_stream_id()
        block = [
            (b":method", method.encode()),
            (b":scheme", b"http"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
        ]
        block += [(k.encode(), v.encode()) for k, v in headers]
        self.streams[stream_id] = StreamState()
        self.conn.send_headers(stream_id, block, end_stream=end_stream and not body)
        self.flush()
        if body:
            self.send_data(stream_id, body, end_stream=end_stream)
        return stream_id

    def send_data(self, stream_id: int, data: bytes, *, end_stream: bool = False) -> bool:
        """Send body bytes, waiting for flow-control window as needed. False if the peer closed the
        stream (reset, or a complete response) before all of it was sent."""
        state = self.streams[stream_id]
        view = memoryview(data)
        try:
            while view:
                if state.reset_code is not None or self.eof:
                    return False
                window = min(
                    self.conn.local_flow_control_window(stream_id),
                    self.conn.max_outbound_frame_size,
                )
                if window <= 0:
                    self._read_once()
                    continue
                chunk = view[:window]
                view = view[window:]
                self.conn.send_data(stream_id, bytes(chunk), end_stream=end_stream and not view)
                self.flush()
            if not data and end_stream:
                self.conn.end_stream(stream_id)
                self.flush()
        except h2.exceptions.StreamClosedError:
            return False
        return True

    def send_trailers(self, stream_id: int, trailers: Sequence[tuple[str, str]]) -> None:
        block = [(k.encode(), v.encode()) for k, v in trailers]
        self.conn.send_headers(stream_id, block, end_stream=True)
        self.flush()

    def reset(self, stream_id: int, error_code: int = 0x8) -> None:
        self.conn.reset_stream(stream_id, error_code)
        self.flush()

    def ack(self, stream_id: int, nbytes: int | None = None) -> int:
        """Return flow-control credit for received bytes (all unacknowledged ones by default)."""
        pending = self.unacked.get(stream_id, 0)
        n = pending if nbytes is None else min(nbytes, pending)
        if n:
            self.unacked[stream_id] = pending - n
            try:
                self.conn.acknowledge_received_data(n, stream_id)
            except h2.exceptions.StreamClosedError:
                self.conn.increment_flow_control_window(n)
            self.flush()
        return n

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    # -- receiving -------------------------------------------------------------------------------

    def _read_once(self, timeout: float | None = None) -> bool:
        """Read and process one chunk; False on EOF."""
        if self.eof:
            return False
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            data = self.sock.recv(262144)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self._handle(self.conn.receive_data(data))
        self.flush()
        return True

    def _handle(self, events: Iterable[h2.events.Event]) -> None:
        for event in events:
            if isinstance(event, h2.events.ResponseReceived):
                state = self.streams.setdefault(event.stream_id, StreamState())
                state.headers = list(event.headers)
                for key, value in state.headers:
                    if key == b":status":
                        state.status = int(value)
            elif isinstance(event, h2.events.DataReceived):
                state = self.streams.setdefault(event.stream_id, StreamState())
                state.body += event.data
                state.data_frames += 1
                if self.auto_ack:
                    if event.flow_controlled_length:
                        try:
                            self.conn.acknowledge_received_data(
                                event.flow_controlled_length, event.stream_id
                            )
                        except h2.exceptions.StreamClosedError:
                            pass
                else:
                    self.unacked[event.stream_id] = (
                        self.unacked.get(event.stream_id, 0) + event.flow_controlled_length
                    )
            elif isinstance(event, h2.events.TrailersReceived):
                self.streams.setdefault(event.stream_id, StreamState()).trailers = list(
                    event.headers
                )
            elif isinstance(event, h2.events.StreamEnded):
                self.streams.setdefault(event.stream_id, StreamState()).ended = True
            elif isinstance(event, h2.events.StreamReset):
                self.streams.setdefault(event.stream_id, StreamState()).reset_code = int(
                    event.error_code
                )
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = GoAway(int(event.error_code or 0), int(event.last_stream_id or 0))
            elif isinstance(event, h2.events.SettingsAcknowledged):
                self.settings_acked = True
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                self.remote_settings_seen = True

    def read_until(self, predicate: Any, *, timeout: float | None = None) -> bool:
        """Read until ``predicate()`` holds (True), EOF or the deadline (False)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                if not self._read_once(timeout=remaining):
                    return bool(predicate())
            except TimeoutError:
                return bool(predicate())
        return True

    def response(self, stream_id: int, *, timeout: float | None = None) -> StreamState:
        """Wait until the stream ended or was reset, then its state."""
        state = self.streams[stream_id]
        self.read_until(lambda: state.closed, timeout=timeout)
        return state

    def wait_settings(self, *, timeout: float | None = None) -> bool:
        """Read until the peer's SETTINGS arrived and ours were acknowledged (RFC 9113 §6.5.3)."""
        return self.read_until(
            lambda: self.settings_acked and self.remote_settings_seen, timeout=timeout
        )

    def wait_goaway(self, *, timeout: float | None = None) -> GoAway | None:
        self.read_until(lambda: self.goaway is not None, timeout=timeout)
        return self.goaway

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> RawH2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- command-line clients -------------------------------------------------------------------------------


def run(
    args: Sequence[str], *, timeout: float = 60.0, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run a client to completion (bounded by ``timeout``), capturing its output."""
    return subprocess.run(
        list(args),
        input=input,
        capture_output=True,
        timeout=timeout,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C"},
        check=False,
    )


def curl(
    *args: str, timeout: float = 30.0, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return run(
        [require_tool("curl"), "-sS", "--noproxy", "*", "--max-time", str(int(timeout)), *args],
        timeout=timeout + 5,
        input=input,
    )


@dataclass
class H2LoadResult:
    total: int
    started: int
    done: int
    succeeded: int
    failed: int
    errored: int
    timeout: int
    status_2xx: int
    status_3xx: int
    status_4xx: int
    status_5xx: int
    output: str

    def describe(self) -> str:
        return self.output[-3000:]


_REQUESTS_LINE = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
_STATUS_LINE = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


def h2load_command(
    url: str, *, requests: int, clients: int, streams: int, extra: Sequence[str] = ()
) -> list[str]:
    """The h2load command line (prior-knowledge h2c for http:// URLs).

    ``-N``: a connection with no activity for 15 s is closed and its requests count as failed, so a
    request the proxy never answers fails the run instead of hanging it.
    """
    return [
        require_tool("h2load"),
        "-N",
        "15s",
        "-n",
        str(requests),
        "-c",
        str(clients),
        "-m",
        str(streams),
        *extra,
        url,
    ]


def parse_h2load(output: str) -> H2LoadResult:
    """h2load's summary lines as numbers."""
    req = _REQUESTS_LINE.search(output)
    status = _STATUS_LINE.search(output)
    if req is None or status is None:
        raise AssertionError(f"h2load printed no summary:\n{output[-3000:]}")
    numbers = [int(x) for x in req.groups()] + [int(x) for x in status.groups()]
    return H2LoadResult(*numbers, output=output)


def h2load(
    url: str,
    *,
    requests: int,
    clients: int,
    streams: int,
    extra: Sequence[str] = (),
    timeout: float = 120.0,
) -> H2LoadResult:
    """Run h2load to completion and parse its summary."""
    result = run(
        h2load_command(url, requests=requests, clients=clients, streams=streams, extra=extra),
        timeout=timeout,
    )
    output = result.stdout.decode("utf-8", "replace") + result.stderr.decode("utf-8", "replace")
    return parse_h2load(output)


def json_body(data: bytes | bytearray) -> Any:
    return json.loads(bytes(data))


def stream_outcomes(log: Iterable[dict[str, Any]], path: str) -> list[dict[str, Any]]:
    """A pod stats log's entries for ``path``."""
    return [entry for entry in log if entry.get("path") == path]


# -- raw HTTP/1.1 ---------------------------------------------------------------------------------------


@dataclass
class Http1Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    trailers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name.lower():
                return value
        return None


def read_http1_response(reader: Any, *, method: str = "GET") -> Http1Response:
    """Read exactly one HTTP/1.1 response from a buffered binary reader (``sock.makefile("rb")``),
    framing the body as RFC 9112 §6.3 says, so that what follows stays in the reader."""
    status_line = reader.readline(65536)
    if not status_line:
        raise EOFError("connection closed before a status line")
    parts = status_line.decode("latin-1").split(" ", 2)
    if not parts[0].startswith("HTTP/1."):
        raise AssertionError(f"not an HTTP/1.1 status line: {status_line!r}")
    status = int(parts[1])
    headers = _read_fields(reader)
    names = {k for k, _ in headers}
    body = b""
    trailers: list[tuple[str, str]] = []
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        pass
    elif "transfer-encoding" in names:
        chunks = []
        while True:
            size_line = reader.readline(65536)
            if not size_line:
                raise EOFError("connection closed inside a chunked body")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                trailers = _read_fields(reader)
                break
            chunks.append(reader.read(size))
            if reader.read(2) != b"\r\n":
                raise AssertionError("chunk not followed by CRLF")
        body = b"".join(chunks)
    elif "content-length" in names:
        length = int(next(v for k, v in headers if k == "content-length"))
        body = reader.read(length)
        if len(body) != length:
            raise EOFError(f"body ended after {len(body)} of {length} bytes")
    else:
        body = reader.read()
    return Http1Response(status, headers, body, trailers)


def _read_fields(reader: Any) -> list[tuple[str, str]]:
    fields = []
    while True:
        line = reader.readline(65536)
        if not line:
            raise EOFError("connection closed inside a header block")
        if line in (b"\r\n", b"\n"):
            return fields
        name, _, value = line.decode("latin-1").partition(":")
        fields.append((name.strip().lower(), value.strip()))


def http1_connection(port: int, *, timeout: float = 10.0) -> tuple[socket.socket, Any]:
    """A raw TCP connection and a buffered reader on it."""
    sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
    return sock, sock.makefile("rb")
