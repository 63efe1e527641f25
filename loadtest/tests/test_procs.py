"""/proc accounting and process cleanup, with real processes."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from loadtest.procs import (
    ProcessRegistry,
    parse_proc_stat,
    process_tree,
    read_proc_stat,
    tree_usage,
    wait_for_port,
)

# /proc/PID/stat of a process whose name contains spaces and parentheses (fields 1-24 of 52).
STAT_LINE = (
    "4242 (we (ird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 "
    "250 50 7 3 20 0 1 0 123456 10000000 321 18446744073709551615"
)


def test_stat_line_with_parentheses_in_the_name() -> None:
    stat = parse_proc_stat(STAT_LINE)
    assert stat.ppid == 1
    assert stat.cpu_ticks == 250 + 50 + 7 + 3
    assert stat.start_ticks == 123456
    assert stat.rss_pages == 321


def _wait_for_children(pid: int, count: int) -> dict[int, object]:
    # Bounded poll for the shell to have forked its children (not a deadline under test).
    for _ in range(200):
        tree = process_tree(pid)
        if len(tree) >= count + 1:
            return dict(tree)
        time.sleep(0.01)
    return dict(process_tree(pid))


def test_stop_kills_the_whole_tree_even_when_sigterm_is_ignored(tmp_path: Path) -> None:
    registry = ProcessRegistry()
    # The shell ignores SIGTERM and so do its children: only the SIGKILL path ends them.
    script = "trap '' TERM; sleep 60 & sleep 60 & wait"
    process = registry.start("stubborn", ["sh", "-c", script], tmp_path / "log", core=0)
    tree = _wait_for_children(process.pid, 2)
    assert len(tree) == 3
    starts = {pid: read_proc_stat(pid) for pid in tree}
    process.stop(grace_s=0.2)
    registry.stop_all()
    for pid, stat in starts.items():
        now = read_proc_stat(pid)
        assert now is None or stat is None or now.start_ticks != stat.start_ticks, pid


def test_registry_stops_everything_it_started(tmp_path: Path) -> None:
    registry = ProcessRegistry()
    processes = [
        registry.start(f"sleeper-{i}", ["sleep", "60"], tmp_path / f"{i}.log", core=0)
        for i in range(3)
    ]
    assert len(registry) == 3
    registry.stop_all()
    assert len(registry) == 0
    assert all(not p.running() for p in processes)


def test_tree_usage_counts_cpu_of_grandchildren(tmp_path: Path) -> None:
    registry = ProcessRegistry()
    try:
        # A grandchild burns a bounded amount of CPU, then sleeps so that it is still alive
        # (and not yet reaped) when the tree is read.
        burn = "import time; sum(range(3 * 10**7)); time.sleep(60)"
        script = f"{sys.executable} -c '{burn}' & wait"
        process = registry.start("burner", ["sh", "-c", script], tmp_path / "log", core=0)
        usage = tree_usage([process.pid])
        for _ in range(600):  # bounded: the burn takes well under a second of CPU
            usage = tree_usage([process.pid])
            if usage.cpu_seconds >= 0.1:
                break
            time.sleep(0.05)
        assert usage.cpu_seconds >= 0.1
        assert usage.schedstat_seconds > 0
        assert usage.rss_bytes > 0
    finally:
        registry.stop_all()


def test_wait_for_port_reports_an_exited_process(tmp_path: Path) -> None:
    registry = ProcessRegistry()
    process = registry.start("false", ["false"], tmp_path / "log", core=0)
    try:
        problem = wait_for_port(1, process, timeout_s=30.0)
    finally:
        registry.stop_all()
    assert problem is not None
    assert "exited with code 1" in problem
