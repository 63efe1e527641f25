"""/proc accounting and process cleanup, with real processes."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from loadtest.procs import (
    ProcessRegistry,
    cpu_list,
    parse_proc_stat,
    pin_threads,
    pinned_argv,
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


def test_pinned_argv_takes_one_core_or_a_set_of_them() -> None:
    argv = ["h2load", "-D", "8", "http://127.0.0.1:1/"]
    assert pinned_argv(argv, 0) == ["taskset", "-c", "0", *argv]
    assert pinned_argv(argv, {1, 0}) == ["taskset", "-c", "0,1", *argv]
    assert pinned_argv(argv, frozenset({3, 1})) == ["taskset", "-c", "1,3", *argv]
    assert pinned_argv(argv, [1, 1]) == ["taskset", "-c", "1", *argv]
    assert pinned_argv(argv, None) == argv
    assert cpu_list(range(4)) == "0,1,2,3"
    with pytest.raises(ValueError, match="no core"):
        cpu_list(set())


both_cores = pytest.mark.skipif(
    not {0, 1}.issubset(os.sched_getaffinity(0)), reason="needs cores 0 and 1"
)


def _wait_for_exec(pid: int, program: str) -> None:
    # Bounded poll for setpriv and taskset to have exec'd the program (not a deadline under test).
    for _ in range(200):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == program.encode():
                return
        except OSError:
            pass
        time.sleep(0.01)


@both_cores
def test_a_process_pinned_to_a_set_of_cores_runs_on_them(tmp_path: Path) -> None:
    registry = ProcessRegistry()
    try:
        both = registry.start("both", ["sleep", "60"], tmp_path / "both.log", core={0, 1})
        one = registry.start("one", ["sleep", "60"], tmp_path / "one.log", core=1)
        assert both.argv == ["taskset", "-c", "0,1", "sleep", "60"]
        assert one.argv == ["taskset", "-c", "1", "sleep", "60"]
        _wait_for_exec(both.pid, "sleep")
        _wait_for_exec(one.pid, "sleep")
        assert os.sched_getaffinity(both.pid) == {0, 1}
        assert os.sched_getaffinity(one.pid) == {1}
    finally:
        registry.stop_all()


def _thread_affinities(pid: int) -> list[set[int]]:
    return [os.sched_getaffinity(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")]


# A process with 3 threads: re-pinning must reach each, not only the main thread.
THREADED = (
    "import threading, time\n"
    "for _ in range(2):\n"
    "    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
    "time.sleep(60)\n"
)


@both_cores
@pytest.mark.parametrize(
    ("argv", "threads"), [(["sleep", "60"], 1), ([sys.executable, "-c", THREADED], 3)]
)
def test_pin_threads_moves_every_thread_of_a_running_process(
    tmp_path: Path, argv: list[str], threads: int
) -> None:
    registry = ProcessRegistry()
    try:
        process = registry.start("pinned", argv, tmp_path / "log", core=None)
        for _ in range(500):  # bounded: the interpreter starts its threads well within this
            if len(os.listdir(f"/proc/{process.pid}/task")) == threads:
                break
            time.sleep(0.01)
        assert len(os.listdir(f"/proc/{process.pid}/task")) == threads
        pin_threads(process.pid, {0})
        assert _thread_affinities(process.pid) == [{0}] * threads
        pin_threads(process.pid, frozenset({0, 1}))
        assert _thread_affinities(process.pid) == [{0, 1}] * threads
        pin_threads(process.pid, [1])
        assert _thread_affinities(process.pid) == [{1}] * threads
    finally:
        registry.stop_all()
