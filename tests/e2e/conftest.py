"""Fixtures for end-to-end tests: real demo pods, the real activator as a subprocess, free ports.

``demo_pods(*behaviours)`` starts :class:`activator.demopod.DemoPod` servers on 127.0.0.1 (port 0) in a
background thread with its own event loop, so that both synchronous tests that block on a client
subprocess (curl, h2load) and asyncio tests can use them without starving the pods.
``demo_pod_procs(*behaviours)`` starts pods as ``python -m activator.demopod`` subprocesses instead (for
tests that kill a pod outright).
``activator_proc(*upstreams)`` starts ``python -m activator serve`` on free ports and waits until it
accepts connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    from activator.demopod import DemoPod, PodBehaviour

REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
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
        self.name = pod_name(pod)
        self.port = pod.port
        self._pod_loop = pod_loop
        self.stopped = False

    def stop(self) -> None:
        """Close the pod's listener and all its connections."""
        if not self.stopped:
            self.stopped = True
            self._pod_loop.run(self.pod.stop())

    def send_goaway_all(self, last_stream_id: int | None = None) -> None:
        self._pod_loop.run(self.pod.send_goaway_all(last_stream_id))


def pod_name(pod: DemoPod) -> str:
    behaviour = getattr(pod, "behaviour", None)
    return str(getattr(behaviour, "name", "pod"))


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


@pytest.fixture(name="free_port")
def free_port_fixture() -> Callable[[], int]:
    """``free_port()``: a free TCP port number on 127.0.0.1."""
    return free_port


@pytest.fixture
def demo_pods() -> Iterator[Callable[..., list[InProcessPod]]]:
    """Factory: ``demo_pods(PodBehaviour(name="a"), ...)`` -> started pods (127.0.0.1, port 0).

    ``demo_pods(3)`` starts three default pods named pod-0..pod-2. Pods are stopped at teardown.
    """
    pod_loop = PodLoop()
    started: list[InProcessPod] = []

    def start(*behaviours: PodBehaviour | int) -> list[InProcessPod]:
        from activator.demopod import DemoPod, PodBehaviour

        wanted: list[PodBehaviour] = []
        for item in behaviours:
            if isinstance(item, int):
                first = len(started) + len(wanted)
                wanted.extend(PodBehaviour(name=f"pod-{first + i}") for i in range(item))
            else:
                wanted.append(item)
        handles = []
        for behaviour in wanted:
            pod = DemoPod(behaviour, host=LOOPBACK, port=0)
            pod_loop.run(pod.start())
            handle = InProcessPod(pod, pod_loop)
            started.append(handle)
            handles.append(handle)
        return handles

    try:
        yield start
    finally:
        for handle in started:
            with contextlib.suppress(Exception):
                handle.stop()
        pod_loop.close()


@pytest.fixture
def demo_pod_procs() -> Iterator[Callable[..., list[SubprocessPod]]]:
    """Factory like ``demo_pods`` but each pod is its own ``python -m activator.demopod`` process."""
    started: list[SubprocessPod] = []

    def start(*behaviours: PodBehaviour | int) -> list[SubprocessPod]:
        from activator.demopod import PodBehaviour

        wanted: list[PodBehaviour] = []
        for item in behaviours:
            if isinstance(item, int):
                first = len(started) + len(wanted)
                wanted.extend(PodBehaviour(name=f"pod-{first + i}") for i in range(item))
            else:
                wanted.append(item)
        handles = [SubprocessPod(behaviour) for behaviour in wanted]
        started.extend(handles)
        return handles

    try:
        yield start
    finally:
        for handle in started:
            with contextlib.suppress(Exception):
                handle.kill()


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


def _upstream_url(upstream: str | PodHandle) -> str:
    return upstream if isinstance(upstream, str) else upstream.h2c_upstream


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    # Fixtures read this at teardown to print the activator's stderr when the test failed.
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def activator_proc(request: pytest.FixtureRequest) -> Iterator[Callable[..., ActivatorProcess]]:
    """Factory: ``activator_proc(pod_or_url, ..., extra_args=(), config_path=None)`` -> started activator.

    Pods given as handles are reached over h2c; pass ``pod.http1_upstream`` (or any URL string) for
    other upstream protocols. SIGTERM and wait at teardown; on a failed test its stderr is printed.
    """
    started: list[ActivatorProcess] = []

    def start(*upstreams: str | PodHandle, **kwargs: Any) -> ActivatorProcess:
        proc = ActivatorProcess([_upstream_url(u) for u in upstreams], **kwargs)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        failed = any(
            getattr(getattr(request.node, f"report_{when}", None), "failed", False)
            for when in ("setup", "call")
        )
        for proc in started:
            code = proc.stop()
            if failed:
                print(f"\n--- activator (pid {proc.pid}, exit {code}) stderr ---")
                print(proc.stderr_text()[-20000:])
            proc.close()
