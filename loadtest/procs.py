"""Processes the harness starts, and the CPU they use, read from /proc.

Every process is started through `ProcessRegistry.start`, pinned with `taskset` to one core (or a
set of them), in its own session (so a Ctrl-C in the terminal reaches only the harness, which then
stops its children in order) and, where util-linux's `setpriv` exists, with a parent-death signal,
so that even a harness killed with SIGKILL takes its children with it. Only processes recorded here
are ever signalled, by PID and start time.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

HOST = "127.0.0.1"
CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

Cores: TypeAlias = int | Iterable[int]  # one core, or a set of them


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/PID/stat the harness uses (proc(5))."""

    ppid: int
    cpu_ticks: int  # utime + stime + cutime + cstime: the process and its reaped children
    start_ticks: int  # starttime: with the PID, identifies one process across PID reuse
    rss_pages: int


def parse_proc_stat(text: str) -> ProcStat:
    """Parse one /proc/PID/stat line; the command name (field 2) may contain spaces and ')'."""
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state), so field N of proc(5) is rest[N - 3].
    return ProcStat(
        ppid=int(rest[1]),
        cpu_ticks=int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14]),
        start_ticks=int(rest[19]),
        rss_pages=int(rest[21]),
    )


def read_proc_stat(pid: int) -> ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            return parse_proc_stat(stat_file.read().decode("ascii", "replace"))
    except (OSError, ValueError, IndexError):
        return None


def _all_proc_stats() -> dict[int, ProcStat]:
    stats: dict[int, ProcStat] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = read_proc_stat(int(name))
            if stat is not None:
                stats[int(name)] = stat
    return stats


def process_tree(root: int) -> dict[int, ProcStat]:
    """`root` and all of its live descendants."""
    stats = _all_proc_stats()
    if root not in stats:
        return {}
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        children.setdefault(stat.ppid, []).append(pid)
    tree: dict[int, ProcStat] = {}
    pending = [root]
    while pending:
        pid = pending.pop()
        if pid in stats and pid not in tree:
            tree[pid] = stats[pid]
            pending.extend(children.get(pid, ()))
    return tree


@dataclass(frozen=True)
class TreeUsage:
    cpu_seconds: float  # utime+stime of every process in the trees, plus their reaped children
    schedstat_seconds: float  # sum_exec_runtime of live threads (ns resolution; cross-check)
    rss_bytes: int


def tree_usage(roots: Iterable[int]) -> TreeUsage:
    """CPU time and memory of the process trees under `roots`.

    /proc/PID/stat counts in clock ticks (10 ms); /proc/PID/task/TID/schedstat in ns, but it
    misses threads that exited in between. Both are kept: the first is the reported figure.
    """
    ticks = 0
    rss_pages = 0
    schedstat_ns = 0
    for root in roots:
        for pid, stat in process_tree(root).items():
            ticks += stat.cpu_ticks
            rss_pages += stat.rss_pages
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                try:
                    with open(f"/proc/{pid}/task/{tid}/schedstat") as schedstat:
                        schedstat_ns += int(schedstat.read().split()[0])
                except (OSError, ValueError, IndexError):
                    pass
    return TreeUsage(
        cpu_seconds=ticks / CLOCK_TICKS_PER_SECOND,
        schedstat_seconds=schedstat_ns / 1e9,
        rss_bytes=rss_pages * PAGE_SIZE,
    )


@dataclass(frozen=True)
class CoreTimes:
    """Cumulative ticks of one core from /proc/stat."""

    busy: int  # user + nice + system + irq + softirq
    steal: int
    total: int


def read_core_times() -> dict[int, CoreTimes]:
    cores: dict[int, CoreTimes] = {}
    with open("/proc/stat") as stat_file:
        for line in stat_file:
            if line.startswith("cpu") and line[3].isdigit():
                parts = line.split()
                values = [int(x) for x in parts[1:]] + [0] * 8
                user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
                cores[int(parts[0][3:])] = CoreTimes(
                    busy=user + nice + system + irq + softirq,
                    steal=steal,
                    total=user + nice + system + idle + iowait + irq + softirq + steal,
                )
    return cores


def core_busy_fraction(
    before: dict[int, CoreTimes], after: dict[int, CoreTimes], core: int
) -> float | None:
    first, second = before.get(core), after.get(core)
    if first is None or second is None or second.total == first.total:
        return None
    return (second.busy - first.busy) / (second.total - first.total)


def wait_until_idle(cores: Sequence[int], threshold: float, max_wait_s: float) -> float:
    """Wait, at most `max_wait_s`, until every core is less than `threshold` busy over 0.3 s.

    The machine is shared: starting a measured run while someone else's test suite holds a
    core would measure them, not us. Returns the seconds waited.
    """
    started = time.monotonic()
    while True:
        before = read_core_times()
        time.sleep(0.3)
        after = read_core_times()
        busiest = max((core_busy_fraction(before, after, c) or 0.0) for c in cores)
        waited = time.monotonic() - started
        if busiest < threshold or waited >= max_wait_s:
            return round(waited, 1)


def port_accepts(port: int, host: str = HOST, timeout_s: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


class PortAllocator:
    """Free loopback ports chosen at run time, never the same one twice in one run."""

    def __init__(self) -> None:
        self._given: set[int] = set()

    def take(self) -> int:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind((HOST, 0))
                port = int(probe.getsockname()[1])
            if port not in self._given:
                self._given.add(port)
                return port
        raise RuntimeError("no free loopback port found")


def cpu_list(cores: Cores) -> str:
    """taskset -c's list of `cores`: 0 -> "0", {1, 0} -> "0,1"."""
    if isinstance(cores, int):
        return str(cores)
    listed = sorted(set(cores))
    if not listed:
        raise ValueError("no core to pin to")  # taskset would reject "-c ''" only at run time
    return ",".join(str(core) for core in listed)


def pinned_argv(argv: Sequence[str], cores: Cores | None) -> list[str]:
    """`argv` behind `taskset -c LIST` (None: as it is). taskset execs, so the PID stays argv's."""
    return list(argv) if cores is None else ["taskset", "-c", cpu_list(cores), *argv]


def pin_threads(pid: int, cores: Iterable[int]) -> None:
    """Move every thread of a running process to `cores`.

    Affinity is per thread: setting it for the PID alone would move only the main thread, and
    threads started later inherit the affinity of the thread that starts them.
    """
    allowed = set(cores)
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), allowed)
        except ProcessLookupError:
            pass  # the thread exited after the listing


def _death_signal_prefix() -> list[str]:
    # setpriv sets PR_SET_PDEATHSIG and execs: the signal survives the exec of taskset and of the
    # program, and the PID stays the same. (A preexec_fn would do the same but is unsafe once
    # the gRPC probe has started threads in the harness.)
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


class Process:
    """One process started by the harness, pinned to a core or a set of them (None: not pinned)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        core: Cores | None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = pinned_argv(argv, core)
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log.write(f"\n### {shlex.join(self.argv)}\n".encode())
        self._log.flush()
        self.popen = subprocess.Popen(
            [*_death_signal_prefix(), *self.argv],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        stat = read_proc_stat(self.popen.pid)
        self.start_ticks = stat.start_ticks if stat else None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 12) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return b"\n".join(data.splitlines()[-lines:]).decode("utf-8", "replace")

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL for the whole tree if it has not exited after `grace_s`."""
        family = [(pid, stat.start_ticks) for pid, stat in process_tree(self.pid).items()]
        if self.popen.poll() is None:
            _signal_if_same(self.pid, self.start_ticks, signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                family = [
                    (pid, stat.start_ticks) for pid, stat in process_tree(self.pid).items()
                ] or family
                for pid, start in family:
                    _signal_if_same(pid, start, signal.SIGKILL)
                self.popen.wait(timeout=5.0)
        # Descendants re-parented when their parent exited: only those we saw, by PID + start.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and any(
            _alive(pid, start) for pid, start in family if pid != self.pid
        ):
            time.sleep(0.05)
        for pid, start in family:
            if pid != self.pid:
                _signal_if_same(pid, start, signal.SIGKILL)
        if not self._log.closed:
            self._log.close()


def _alive(pid: int, start_ticks: int | None) -> bool:
    stat = read_proc_stat(pid)
    return stat is not None and stat.start_ticks == start_ticks


def _signal_if_same(pid: int, start_ticks: int | None, signum: int) -> None:
    if _alive(pid, start_ticks):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


class ProcessRegistry:
    """Every long-running process of one harness run; `stop_all` is called on every exit path."""

    def __init__(self) -> None:
        self._processes: list[Process] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        core: Cores | None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Process:
        process = Process(name, argv, log_path, core, env=env, cwd=cwd)
        self._processes.append(process)
        return process

    def stop(self, process: Process) -> None:
        process.stop()
        if process in self._processes:
            self._processes.remove(process)

    def stop_all(self) -> None:
        # Newest first: proxies before the pods they talk to.
        while self._processes:
            self._processes.pop().stop()

    def __len__(self) -> int:
        return len(self._processes)


def wait_for_port(port: int, process: Process | None, timeout_s: float) -> str | None:
    """None once `port` accepts connections; otherwise why not (exited, or timed out)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and not process.running():
            return f"exited with code {process.popen.returncode}"
        if port_accepts(port):
            return None
        time.sleep(0.05)
    return f"port {port} did not accept connections within {timeout_s:.0f} s"
