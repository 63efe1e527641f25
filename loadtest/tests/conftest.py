"""Shared fixtures: real pods (nghttpd) on free loopback ports, stopped after each test."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.pods import PodKind, Pods, PodSet, PodTools, write_static_files
from loadtest.procs import PortAllocator, ProcessRegistry

LOAD_CORE = 0  # any core works for correctness tests; pinning matters only for benchmarks


def require(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")


@pytest.fixture
def registry() -> Iterator[ProcessRegistry]:
    processes = ProcessRegistry()
    try:
        yield processes
    finally:
        processes.stop_all()


@pytest.fixture
def pods(registry: ProcessRegistry, tmp_path: Path) -> Pods:
    write_static_files(tmp_path / "www")
    return Pods(registry, PortAllocator(), tmp_path, LOAD_CORE, 2, PodTools())


@pytest.fixture
def nghttpd_pods(pods: Pods) -> PodSet:
    require("nghttpd")
    started = pods.get(PodKind.STATIC_H2C)
    assert started.error is None, started.error
    return started
