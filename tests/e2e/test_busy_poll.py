"""`activator serve --busy-poll`: the activator keeps polling while requests come and sleeps once
they stop; a bad value is a clear error. The activator runs as a subprocess; its CPU time is read
from /proc. Bounds are loose: they tell spinning (about a core) from sleeping (about nothing)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
from support import REPO_ROOT, ActivatorProcess, subprocess_env

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def core_share_while_requesting(client: httpx.Client, pid: int) -> float:
    """Share of a core the activator used while a request came every 50 ms for a second."""
    before, started = cpu_seconds(pid), time.monotonic()
    for _ in range(20):
        assert client.get("/").status_code == 200
        time.sleep(0.05)
    return (cpu_seconds(pid) - before) / (time.monotonic() - started)


def test_busy_poll_spins_while_requests_come_and_sleeps_when_they_stop(
    demo_pods: Callable[..., list[Any]], activator_proc: Callable[..., ActivatorProcess]
) -> None:
    (pod,) = demo_pods(1)
    activator = activator_proc(pod, extra_args=["--busy-poll", "200ms"])
    with httpx.Client(http2=True, base_url=activator.url, timeout=10) as client:
        assert client.get("/").status_code == 200
        # Never 200 ms without a read, so it never sleeps.
        busy = core_share_while_requesting(client, activator.pid)
        # No requests: after the 200 ms window it sleeps.
        time.sleep(0.5)
        before, started = cpu_seconds(activator.pid), time.monotonic()
        time.sleep(1.0)
        idle = (cpu_seconds(activator.pid) - before) / (time.monotonic() - started)
        assert busy > 0.3, f"busy polling used {busy:.2f} of a core"
        assert idle < 0.1, f"idle, it still used {idle:.2f} of a core"
        # The next request is served, and polling resumes.
        assert client.get("/").status_code == 200


def test_without_busy_poll_it_sleeps_between_requests(
    demo_pods: Callable[..., list[Any]], activator_proc: Callable[..., ActivatorProcess]
) -> None:
    (pod,) = demo_pods(1)
    activator = activator_proc(pod)
    with httpx.Client(http2=True, base_url=activator.url, timeout=10) as client:
        assert client.get("/").status_code == 200
        used = core_share_while_requesting(client, activator.pid)
    assert used < 0.2, f"20 requests in a second used {used:.2f} of a core"


def test_a_bad_busy_poll_value_is_a_clear_error() -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "activator", "serve"),
            *("--upstream", "h2c://127.0.0.1:1", "--busy-poll", "soon"),
        ],
        cwd=REPO_ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == 'activator: --busy-poll: expected a duration like "30s", got "soon"'
    )
