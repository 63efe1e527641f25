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

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from support import (
    ActivatorProcess,
    InProcessPod,
    PodHandle,
    PodLoop,
    SubprocessPod,
    free_port,
)

if TYPE_CHECKING:
    from activator.demopod import PodBehaviour


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
        from activator.demopod import PodBehaviour

        wanted: list[PodBehaviour] = []
        for item in behaviours:
            if isinstance(item, int):
                first = len(started) + len(wanted)
                wanted.extend(PodBehaviour(name=f"pod-{first + i}") for i in range(item))
            else:
                wanted.append(item)
        handles = []
        for behaviour in wanted:
            handle = InProcessPod.start(pod_loop, behaviour)
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
