"""``activator serve --workers N``: a supervisor process and N worker processes.

Each worker runs the whole data path (:class:`activator.io.app.Activator`) on the same listen and
TLS ports: the listeners use ``SO_REUSEPORT``, so the kernel spreads incoming connections over
the workers. A worker's own admin API listens on a private loopback port it reports to the
supervisor, which serves the public admin API and answers for all workers together:

* ``/v1/services``: per service and per pod, the workers' numbers added up (in-flight, queue,
  counters), plus a ``workers`` list (pid, up, restarts, requests, in flight, queued);
* ``/metrics``: the workers' series added up by name and labels (counters, gauges, histogram
  buckets); the few levels every worker sees alike (pods, ready pods) and the oldest queue age
  take the largest value instead, and ``*_created`` timestamps the earliest;
* ``/v1/concurrency`` and the autoscaler push: one report over all workers. The push happens
  once, from the supervisor; each worker keeps a separate window for the supervisor's push and
  for its public pull, so neither shortens the other. A worker's queued request still pokes the
  autoscaler at once: the worker tells the supervisor over its control socket;
* ``PUT /v1/services/{name}/endpoints`` goes to every worker (all must accept), and is kept for
  workers started later;
* ``/readyz`` is 503 while draining or while any worker is down.

A pod's ``container_concurrency`` holds over all workers through a shared slot table
(:mod:`activator.io.shared_slots`): a worker admits a request to a pod only when the table has a
slot free for it, and a worker whose requests wait is woken through its wake-up pipe when another
worker frees a slot.

Workers are started with ``python -m activator.io.workers`` (exec, not fork): the supervisor
already runs an event loop when it restarts a worker, and a forked copy of a running loop is not
safe to use; exec also lets the supervisor pass exactly the descriptors a worker needs (its
control socket and the wake-up pipes). Workers stay in the supervisor's process group. SIGTERM or
SIGINT to the supervisor is forwarded to the workers, which drain with ``--drain-timeout``; the
supervisor exits once they have. A worker that dies unexpectedly is logged and restarted with
backoff, after the slots it held are given back. A worker whose supervisor is gone (its control
socket closed) drains and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import pickle
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from aiohttp import ClientError, ClientSession, ClientTimeout, web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.parser import text_string_to_metric_families

import activator
from activator.config import (
    AutoscalerConfig,
    Config,
    ServiceConfig,
    format_hostport,
    parse_hostport,
)
from activator.io.admin import error_response, listening_port, read_endpoints_body
from activator.io.metrics import reporting_families
from activator.io.reporter import (
    DEFAULT_POKE_INTERVAL,
    AutoscalerReporter,
    PokeGate,
    Report,
    ServiceWindow,
)
from activator.io.shared_slots import SlotLayout, SlotTable, Wakers

if TYPE_CHECKING:
    from activator.core.throttle import SlotGate
    from activator.io.service import ServiceRuntime

__all__ = [
    "Supervisor",
    "WorkerSpec",
    "merge_metrics",
    "merge_reports",
    "merge_service_status",
    "serve_with_workers",
    "worker_main",
]

log = logging.getLogger("activator.workers")

# How long workers have to come up at start before the supervisor gives up.
STARTUP_TIMEOUT: Final = 60.0
# Restart backoff: doubles from the first delay up to the last; reset by a worker that ran a while.
RESTART_FIRST_DELAY: Final = 0.1
RESTART_MAX_DELAY: Final = 5.0
RESTART_RESET_AFTER: Final = 10.0
# Beyond the drain deadline, how long workers get to exit before SIGKILL.
EXIT_GRACE: Final = 10.0
# Each request to a worker's admin API (loopback).
WORKER_REQUEST_TIMEOUT: Final = 5.0
# Window consumers on the workers' admin APIs.
PUSH_CONSUMER: Final = "supervisor-push"
PULL_CONSUMER: Final = "supervisor-pull"


# -- the worker process ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything a worker needs, sent by the supervisor over the control socket.

    Attributes:
        index: The worker's index, 0 to ``workers - 1`` (kept across restarts).
        config: The configuration for this worker: the admin API on a private loopback port,
            no autoscaler push (the supervisor pushes), endpoints as last set.
        endpoints_version: Version of the endpoints in ``config`` (see :class:`Supervisor`).
        drain_timeout: Seconds to drain on SIGTERM/SIGINT.
        log_level: Logging level name.
        layout: The shared slot table.
        wake_fds: Write ends of every worker's wake-up pipe, by index.
        wake_read_fd: Read end of this worker's wake-up pipe.
    """

    index: int
    config: Config
    endpoints_version: int
    drain_timeout: float
    log_level: str
    layout: SlotLayout
    wake_fds: tuple[int, ...]
    wake_read_fd: int


def _setup_logging(level: str, who: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s [{who}] %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def _run(coro: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop where available, as the single-process activator does."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


class WorkerPoker:
    """Tells the supervisor when a queued request is news for the autoscaler.

    The same rule as the single-process reporter (:class:`PokeGate`): the first news pokes at
    once, later news at most once per interval. A request queued into an empty queue is always
    news: the queue was empty a moment ago, whatever this worker last told.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        send: Callable[[str], None],
        interval: float = DEFAULT_POKE_INTERVAL,
    ) -> None:
        self.loop = loop
        self.send = send
        self.interval = interval
        self._gates: dict[str, PokeGate] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def on_queued(self, runtime: ServiceRuntime) -> None:
        gate = self._gates.get(runtime.name)
        if gate is None:
            gate = self._gates[runtime.name] = PokeGate(self.interval)
        if runtime.throttle.queue_depth == 1:
            gate.reported(0)
        if not gate.is_queue_news(runtime.throttle):
            return
        action = gate.queued(self.loop.time())
        if action:
            self._poke(runtime, gate)
        elif action is False:
            self._timers[runtime.name] = self.loop.call_at(
                gate.next_allowed, self._deferred, runtime
            )

    def _deferred(self, runtime: ServiceRuntime) -> None:
        self._timers.pop(runtime.name, None)
        gate = self._gates[runtime.name]
        if gate.deferred_due(gate.is_queue_news(runtime.throttle), self.loop.time()):
            self._poke(runtime, gate)

    def _poke(self, runtime: ServiceRuntime, gate: PokeGate) -> None:
        gate.reported(runtime.throttle.queue_depth)
        self.send(runtime.name)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


def _read_spec(sock: socket.socket) -> WorkerSpec:
    """The spec the supervisor sends first: a 4-byte length, then the pickled spec."""
    header = _recv_exactly(sock, 4)
    (length,) = struct.unpack("!I", header)
    spec = pickle.loads(_recv_exactly(sock, length))
    if not isinstance(spec, WorkerSpec):
        raise TypeError(f"expected a WorkerSpec, got {type(spec).__name__}")
    return spec


def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    chunks: list[bytes] = []
    remaining = count
    while remaining:
        chunk = sock.recv(remaining)
        if not chunk:
            raise EOFError("the supervisor closed the control socket")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


async def _serve_worker(spec: WorkerSpec, control: socket.socket) -> int:
    from activator.io.app import Activator, freeze_startup_objects

    loop = asyncio.get_running_loop()
    table = SlotTable.attach(spec.layout)
    wakers = Wakers(spec.wake_fds)

    def slot_gate(index: int, service: ServiceConfig) -> SlotGate | None:
        if service.container_concurrency == 0:
            return None
        return table.gate(
            worker=spec.index,
            service=index,
            service_name=service.name,
            capacity=service.container_concurrency,
            wakers=wakers,
        )

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reader, writer = await asyncio.open_unix_connection(sock=control)

    def send(message: dict[str, Any]) -> None:
        if not writer.is_closing():
            writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    app = Activator(
        spec.config,
        drain_timeout=spec.drain_timeout,
        slot_gate=slot_gate,
        config_warnings=spec.index == 0,  # one warning per activator, not one per worker
    )
    try:
        await app.start()
    except OSError as exc:
        log.error("cannot listen: %s", exc)
        table.close()
        return 1
    freeze_startup_objects()
    runtimes = list(app.services.values())

    def woken() -> None:
        # Drain the pipe first: a slot freed while the grants run below writes again.
        try:
            while os.read(spec.wake_read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        for runtime in runtimes:
            if runtime.throttle.queue_depth:
                runtime.retry_grants()

    os.set_blocking(spec.wake_read_fd, False)
    for fd in spec.wake_fds:
        os.set_blocking(fd, False)
    loop.add_reader(spec.wake_read_fd, woken)
    poker = WorkerPoker(loop, lambda name: send({"event": "poke", "service": name}))
    for runtime in runtimes:
        runtime.on_queued = poker.on_queued
    send(
        {
            "event": "ready",
            "pid": os.getpid(),
            "admin_port": app.admin_port,
            "listen_port": app.listen_port,
            "endpoints_version": spec.endpoints_version,
        }
    )

    orphaned = False

    async def supervisor_gone() -> None:
        nonlocal orphaned
        # Nothing else comes from the supervisor: end of file means it is gone.
        while await reader.read(4096):
            pass
        if not stop.is_set():
            log.warning("the supervisor is gone: draining")
            orphaned = True
            stop.set()

    watch = loop.create_task(supervisor_gone())
    await stop.wait()
    log.info("draining (up to %.0fs)", spec.drain_timeout)
    await app.stop()
    watch.cancel()
    poker.close()
    loop.remove_reader(spec.wake_read_fd)
    writer.close()
    # The table stays mapped until the process exits: connections aborted by stop() may still
    # release their slots from callbacks that run as the loop shuts down.
    if orphaned:
        # Nobody else will remove the table (the others may still map it: that is fine).
        table.unlink()
    return 0


def worker_main(argv: Sequence[str]) -> int:
    """Entry point of a worker process (``python -m activator.io.workers``)."""
    parser = argparse.ArgumentParser(prog="activator worker")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--control-fd", type=int, required=True)
    args = parser.parse_args(argv)
    _setup_logging("info", f"worker {args.index} pid {os.getpid()}")
    control = socket.socket(fileno=args.control_fd)
    try:
        spec = _read_spec(control)
    except (EOFError, OSError, pickle.UnpicklingError, TypeError) as exc:
        log.error("no start-up message from the supervisor: %s", exc)
        return 2
    _setup_logging(spec.log_level, f"worker {spec.index} pid {os.getpid()}")
    return _run(_serve_worker(spec, control))


# -- merging the workers' documents -----------------------------------------------------------------

# Numbers every worker sees alike or that are ages: the largest, not the sum.
_MAX_STATUS_KEYS: Final = frozenset({"capacity", "oldest_age_seconds"})


def merge_service_status(documents: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One service's status over all workers (each ``documents`` item is one worker's).

    Numbers add up, except capacities and ages (the largest); pods are matched by address (a
    pod is ready if some worker sees it ready, removed if every worker has removed it); other
    values are the first worker's.
    """
    merged = _merge_values(list(documents), "")
    assert isinstance(merged, dict)
    return merged


def _merge_values(values: list[Any], key: str) -> Any:
    first = values[0]
    if isinstance(first, bool):
        if key == "removed":
            return all(bool(value) for value in values)
        return any(bool(value) for value in values)
    if isinstance(first, int | float):
        numbers = [value for value in values if isinstance(value, int | float)]
        if key in _MAX_STATUS_KEYS:
            return max(numbers)
        total = sum(numbers)
        return round(total, 6) if isinstance(total, float) else total
    if isinstance(first, dict):
        keys: dict[str, None] = {}
        for value in values:
            if isinstance(value, dict):
                keys.update(dict.fromkeys(value))
        return {
            name: _merge_values(
                [value[name] for value in values if isinstance(value, dict) and name in value],
                name,
            )
            for name in keys
        }
    if key == "pods" and isinstance(first, list):
        by_address: dict[str, list[dict[str, Any]]] = {}
        for value in values:
            for pod in value:
                by_address.setdefault(pod["address"], []).append(pod)
        return [_merge_values(pods, "pod") for pods in by_address.values()]
    return first


def merge_reports(documents: Sequence[dict[str, Any]], service_names: Iterable[str]) -> Report:
    """One autoscaler report over all workers from their ``/v1/concurrency`` documents.

    Concurrency, requests and queues add up (the workers' windows end within moments of each
    other); the oldest queue age and the ready pods are the largest (every worker sees the same
    pods).
    """
    windows = [float(document.get("window_seconds", 0.0)) for document in documents]
    window = max(windows, default=0.0)
    services: list[ServiceWindow] = []
    for name in service_names:
        parts = [
            entry
            for document in documents
            for entry in document.get("services", [])
            if entry.get("name") == name
        ]
        services.append(
            ServiceWindow(
                name=name,
                window_seconds=window,
                average_concurrency=sum(float(p["average_concurrency"]) for p in parts),
                max_concurrency=sum(int(p["max_concurrency"]) for p in parts),
                active=sum(int(p["active"]) for p in parts),
                queued=sum(int(p["queued"]) for p in parts),
                oldest_queued_age_seconds=max(
                    (float(p["oldest_queued_age_seconds"]) for p in parts), default=0.0
                ),
                requests=sum(int(p["requests"]) for p in parts),
                ready_pods=max((int(p["ready_pods"]) for p in parts), default=0),
            )
        )
    return Report(window_seconds=window, services=tuple(services))


# Series that every worker sees alike (pods) or that are ages: the largest, not the sum.
_MAX_SERIES: Final = frozenset(
    {"activator_pods", "activator_ready_pods", "activator_queue_oldest_age_seconds"}
)


class _Families:
    """A fixed list of metric families, as a registry collector."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def merge_metrics(texts: Sequence[str]) -> list[Metric]:
    """Prometheus text expositions added up, series by series (name and labels).

    Counters, gauges and histogram buckets, sums and counts add up; ``*_created`` timestamps take
    the earliest; pods, ready pods and the oldest queue age the largest. Families and series keep
    the order in which they first appear.
    """
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
                values[family.name] = {}
            series = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                previous = series.get(key)
                if previous is None:
                    series[key] = sample.value
                elif sample.name.endswith("_created"):
                    series[key] = min(previous, sample.value)
                elif family.name in _MAX_SERIES:
                    series[key] = max(previous, sample.value)
                else:
                    series[key] = previous + sample.value
    for name, family in families.items():
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)
    return list(families.values())


# -- the supervisor ------------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class WorkerHandle:
    """The supervisor's view of one worker slot (an index kept across restarts)."""

    index: int
    process: asyncio.subprocess.Process | None = None
    writer: asyncio.StreamWriter | None = None
    pid: int = 0
    admin_port: int = 0
    up: bool = False
    ever_up: bool = False
    restarts: int = 0
    started_at: float = 0.0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class WorkerUnavailable(Exception):
    """A worker's admin API did not answer as expected."""


class SupervisorReporter(AutoscalerReporter):
    """The autoscaler push of the supervisor: one report over all workers, poked by them."""

    def __init__(self, supervisor: Supervisor, config: AutoscalerConfig) -> None:
        super().__init__([], config, loop=asyncio.get_running_loop())
        self.supervisor = supervisor

    async def read_push_report(self, now: float) -> Report:
        documents = await self.supervisor.pull_workers(PUSH_CONSUMER)
        return merge_reports(documents, self.supervisor.service_names)

    def poked(self) -> None:
        """A worker queued a request that is news for the autoscaler: push now (coalesced)."""
        if self._task is not None:
            self._poke()


class Supervisor:
    """Starts, watches and restarts the workers, and serves the public admin API."""

    def __init__(
        self,
        config: Config,
        *,
        workers: int,
        drain_timeout: float = 30.0,
        log_level: str = "info",
    ) -> None:
        if workers < 2:
            raise ValueError("a supervisor runs two workers or more")
        self.config = config
        self.worker_count = workers
        self.drain_timeout = drain_timeout
        self.log_level = log_level
        self.service_names = [service.name for service in config.services]
        self.endpoints: dict[str, tuple[str, ...]] = {
            service.name: tuple(service.endpoints) for service in config.services
        }
        # Bumped by every accepted PUT of endpoints; a worker started with an older version is
        # brought up to date when it reports ready.
        self.endpoints_version = 0
        self.handles = [WorkerHandle(index) for index in range(workers)]
        self.draining = False
        self.admin_port = 0
        self._table: SlotTable | None = None
        self._wake_pipes: list[tuple[int, int]] = []
        self._session: ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._reporter: SupervisorReporter | None = None
        self._fatal = asyncio.Event()
        self._stop = asyncio.Event()
        self._pull_seq = 0

    # -- lifecycle ---------------------------------------------------------------------------------

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT, then drain the workers; the exit status."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        try:
            status = await self._start()
            if status == 0:
                status = await self._wait_for_stop()
            return status
        finally:
            await self._shutdown()

    async def _wait_for_stop(self) -> int:
        stop = asyncio.ensure_future(self._stop.wait())
        fatal = asyncio.ensure_future(self._fatal.wait())
        await asyncio.wait({stop, fatal}, return_when=asyncio.FIRST_COMPLETED)
        for waiter in (stop, fatal):
            waiter.cancel()
        if not self._stop.is_set():
            log.error("a worker cannot be started: stopping")
            return 1
        log.info("signal received: draining the workers (up to %.0fs)", self.drain_timeout)
        return 0

    async def _start(self) -> int:
        config = self.config
        self._table = SlotTable.create(workers=self.worker_count, services=len(config.services))
        self._wake_pipes = [os.pipe() for _ in range(self.worker_count)]
        for read_end, write_end in self._wake_pipes:
            os.set_blocking(read_end, False)
            os.set_blocking(write_end, False)
        self._session = ClientSession(timeout=ClientTimeout(total=WORKER_REQUEST_TIMEOUT))
        for handle in self.handles:
            self._launch(handle)

        async def all_ready() -> bool:
            await asyncio.gather(*(handle.ready.wait() for handle in self.handles))
            return True

        ready = asyncio.ensure_future(all_ready())
        fatal = asyncio.ensure_future(self._fatal.wait())
        stop = asyncio.ensure_future(self._stop.wait())
        done, _ = await asyncio.wait(
            {ready, fatal, stop}, timeout=STARTUP_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        for waiter in (ready, fatal, stop):
            waiter.cancel()
        if ready not in done:
            if stop not in done:
                log.error("the workers did not all start; stopping")
                return 1
            return 0
        try:
            self.admin_port = await self._start_admin()
        except OSError as exc:
            print(f"activator: cannot listen: {exc}", file=sys.stderr)
            return 1
        self._reporter = SupervisorReporter(self, config.autoscaler)
        self._reporter.start()
        log.info(
            "activator listening on %s with %d workers (admin %s), services: %s",
            config.listen,
            self.worker_count,
            config.admin,
            ", ".join(self.service_names) or "none",
        )
        return 0

    async def _shutdown(self) -> None:
        self.draining = True
        loop = asyncio.get_running_loop()
        for handle in self.handles:
            process = handle.process
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGTERM)
        deadline = loop.time() + self.drain_timeout + EXIT_GRACE
        for handle in self.handles:
            process = handle.process
            if process is None:
                continue
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    await process.wait()
            except TimeoutError:
                log.error("worker %d (pid %d) did not exit: killing it", handle.index, handle.pid)
                process.kill()
                await process.wait()
        for handle in self.handles:
            for task in list(handle.tasks):
                task.cancel()
            if handle.tasks:
                await asyncio.gather(*handle.tasks, return_exceptions=True)
            if handle.writer is not None:
                handle.writer.close()
        if self._reporter is not None:
            await self._reporter.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        for read_end, write_end in self._wake_pipes:
            os.close(read_end)
            os.close(write_end)
        self._wake_pipes = []
        if self._table is not None:
            self._table.close()
            self._table.unlink()
            self._table = None

    # -- workers -------------------------------------------------------------------------------------

    def worker_config(self) -> Config:
        """The configuration a worker starts with: a private admin port, no push, and the
        endpoints as last set."""
        services = tuple(
            dataclasses.replace(service, endpoints=self.endpoints[service.name])
            for service in self.config.services
        )
        return dataclasses.replace(
            self.config,
            admin="127.0.0.1:0",
            autoscaler=dataclasses.replace(self.config.autoscaler, push_url=None),
            services=services,
        )

    def _launch(self, handle: WorkerHandle) -> None:
        task = asyncio.get_running_loop().create_task(
            self._supervise(handle), name=f"worker-{handle.index}"
        )
        handle.tasks.add(task)
        task.add_done_callback(handle.tasks.discard)

    async def _supervise(self, handle: WorkerHandle) -> None:
        """Run one worker slot: start the worker, and restart it when it dies, until draining."""
        delay = RESTART_FIRST_DELAY
        loop = asyncio.get_running_loop()
        while not self.draining:
            try:
                process = await self._spawn(handle)
            except OSError as exc:
                log.error("cannot start worker %d: %s", handle.index, exc)
                self._fatal.set()
                return
            code = await process.wait()
            was_up = handle.ever_up
            handle.up = False
            self._forget(handle)
            if self.draining:
                return
            if not was_up:
                log.error(
                    "worker %d (pid %d) exited with %d at start", handle.index, handle.pid, code
                )
                self._fatal.set()
                return
            ran = loop.time() - handle.started_at
            if ran >= RESTART_RESET_AFTER:
                delay = RESTART_FIRST_DELAY
            log.error(
                "worker %d (pid %d) exited unexpectedly with %d after %.1fs; restarting in %.1fs",
                handle.index,
                handle.pid,
                code,
                ran,
                delay,
            )
            try:
                async with asyncio.timeout(delay):
                    await self._stop.wait()
                return
            except TimeoutError:
                pass
            delay = min(delay * 2, RESTART_MAX_DELAY)
            handle.restarts += 1

    def _forget(self, handle: WorkerHandle) -> None:
        """Give back the slots a dead worker held and wake whoever waits for them."""
        if self._table is None:
            return
        wakers = Wakers([write_end for _, write_end in self._wake_pipes])
        for other in self._table.forget_worker(handle.index):
            wakers.wake(other)

    async def _spawn(self, handle: WorkerHandle) -> asyncio.subprocess.Process:
        assert self._table is not None
        loop = asyncio.get_running_loop()
        parent_sock, child_sock = socket.socketpair()
        wake_fds = tuple(write_end for _, write_end in self._wake_pipes)
        wake_read_fd = self._wake_pipes[handle.index][0]
        spec = WorkerSpec(
            index=handle.index,
            config=self.worker_config(),
            endpoints_version=self.endpoints_version,
            drain_timeout=self.drain_timeout,
            log_level=self.log_level,
            layout=self._table.layout,
            wake_fds=wake_fds,
            wake_read_fd=wake_read_fd,
        )
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "activator.io.workers",
                "--index",
                str(handle.index),
                "--control-fd",
                str(child_sock.fileno()),
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(child_sock.fileno(), wake_read_fd, *wake_fds),
                env=_worker_environment(),
            )
        finally:
            child_sock.close()
        handle.process = process
        handle.pid = process.pid
        handle.up = False
        handle.ready.clear()
        handle.started_at = loop.time()
        reader, writer = await asyncio.open_unix_connection(sock=parent_sock)
        if handle.writer is not None:
            handle.writer.close()
        handle.writer = writer
        payload = pickle.dumps(spec)
        writer.write(struct.pack("!I", len(payload)) + payload)
        task = loop.create_task(self._read_control(handle, reader, process))
        handle.tasks.add(task)
        task.add_done_callback(handle.tasks.discard)
        return process

    async def _read_control(
        self,
        handle: WorkerHandle,
        reader: asyncio.StreamReader,
        process: asyncio.subprocess.Process,
    ) -> None:
        """Messages from one worker: ready (with its admin port) and pokes."""
        while True:
            line = await reader.readline()
            if not line:
                return
            try:
                message = json.loads(line)
                kind = message["event"]
            except (ValueError, KeyError, TypeError):
                log.warning("worker %d sent an unreadable message %r", handle.index, line[:200])
                continue
            if kind == "poke":
                if self._reporter is not None:
                    self._reporter.poked()
            elif kind == "ready":
                await self._worker_ready(handle, message, process)

    async def _worker_ready(
        self, handle: WorkerHandle, message: dict[str, Any], process: asyncio.subprocess.Process
    ) -> None:
        if handle.process is not process or process.returncode is not None:
            return
        handle.admin_port = int(message["admin_port"])
        try:
            # Open the worker's windows for the push and the pull now, so that the first report
            # covers everything since the worker started.
            for consumer in (PUSH_CONSUMER, PULL_CONSUMER):
                await self._worker_json(handle, "GET", f"/v1/concurrency?consumer={consumer}")
            # Endpoints set while the worker was starting did not reach it (nor those set while
            # these PUTs run: loop until none came in between, then mark it up without awaiting).
            applied = int(message.get("endpoints_version", -1))
            while applied != self.endpoints_version:
                version = self.endpoints_version
                for name, endpoints in list(self.endpoints.items()):
                    body = {"endpoints": list(endpoints)}
                    await self._worker_json(handle, "PUT", f"/v1/services/{name}/endpoints", body)
                applied = version
        except WorkerUnavailable as exc:
            log.error("worker %d (pid %d) is not usable: %s", handle.index, handle.pid, exc)
            process.kill()
            return
        handle.up = True
        handle.ever_up = True
        handle.ready.set()
        log.info(
            "worker %d (pid %d) ready, admin on 127.0.0.1:%d",
            handle.index,
            handle.pid,
            handle.admin_port,
        )

    # -- talking to workers ----------------------------------------------------------------------------

    def up_workers(self) -> list[WorkerHandle]:
        return [handle for handle in self.handles if handle.up]

    async def _worker_json(
        self, handle: WorkerHandle, method: str, path: str, body: object = None
    ) -> Any:
        """A JSON request to a worker's admin API; the decoded 200 answer."""
        text = await self._worker_request(handle, method, path, body)
        try:
            return json.loads(text)
        except ValueError as exc:
            raise WorkerUnavailable(f"worker {handle.index}: {path}: not JSON") from exc

    async def _worker_request(
        self, handle: WorkerHandle, method: str, path: str, body: object = None
    ) -> str:
        assert self._session is not None
        url = f"http://127.0.0.1:{handle.admin_port}{path}"
        try:
            async with self._session.request(method, url, json=body) as response:
                text = await response.text()
                if response.status != 200:
                    raise WorkerUnavailable(
                        f"worker {handle.index}: {method} {path}: {response.status} {text[:200]}"
                    )
                return text
        except (OSError, TimeoutError, ValueError, ClientError) as exc:
            raise WorkerUnavailable(f"worker {handle.index}: {method} {path}: {exc!r}") from exc

    async def _gather(
        self, method: str, path: str, body: object = None, *, as_json: bool = True
    ) -> list[tuple[WorkerHandle, Any]]:
        """The same request to every worker that is up; answers of those that answered."""
        handles = self.up_workers()
        call = self._worker_json if as_json else self._worker_request
        results = await asyncio.gather(
            *(call(handle, method, path, body) for handle in handles), return_exceptions=True
        )
        answers: list[tuple[WorkerHandle, Any]] = []
        for handle, result in zip(handles, results, strict=True):
            if isinstance(result, WorkerUnavailable):
                log.warning("%s", result)
            elif isinstance(result, BaseException):
                raise result
            else:
                answers.append((handle, result))
        return answers

    async def pull_workers(self, consumer: str) -> list[dict[str, Any]]:
        """Every worker's report since this consumer's previous pull."""
        answers = await self._gather("GET", f"/v1/concurrency?consumer={consumer}")
        return [document for _handle, document in answers]

    # -- the public admin API --------------------------------------------------------------------------

    async def _start_admin(self) -> int:
        app = web.Application()
        app.add_routes(
            [
                web.get("/healthz", self._healthz),
                web.get("/readyz", self._readyz),
                web.get("/v1/services", self._list_services),
                web.get("/v1/services/{name}", self._get_service),
                web.put("/v1/services/{name}/endpoints", self._put_endpoints),
                web.get("/metrics", self._metrics),
                web.get("/v1/concurrency", self._concurrency),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        host, port = parse_hostport(self.config.admin)
        # No SO_REUSEPORT here: a second activator on the same admin port must fail, not share.
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        return listening_port(self._runner, port)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self.draining or self._stop.is_set():
            return web.Response(status=503, text="draining\n")
        down = [str(handle.index) for handle in self.handles if not handle.up]
        if down:
            return web.Response(status=503, text=f"worker {', '.join(down)} down\n")
        return web.Response(text="ready\n")

    def _workers_document(
        self, answers: Sequence[tuple[WorkerHandle, dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        by_index = {handle.index: document for handle, document in answers}
        workers = []
        for handle in self.handles:
            entry: dict[str, Any] = {
                "index": handle.index,
                "pid": handle.pid,
                "up": handle.up,
                "restarts": handle.restarts,
            }
            document = by_index.get(handle.index)
            if document is not None:
                services = document.get("services", [])
                entry["requests_total"] = sum(s.get("requests_total", 0) for s in services)
                entry["in_flight"] = sum(s.get("concurrency", {}).get("total", 0) for s in services)
                entry["queued"] = sum(s.get("queue", {}).get("depth", 0) for s in services)
            workers.append(entry)
        return workers

    async def _list_services(self, request: web.Request) -> web.Response:
        answers = await self._gather("GET", "/v1/services")
        services = []
        for name in self.service_names:
            parts = [
                service
                for _handle, document in answers
                for service in document.get("services", [])
                if service.get("name") == name
            ]
            if parts:
                services.append(merge_service_status(parts))
        return web.json_response({"services": services, "workers": self._workers_document(answers)})

    async def _get_service(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.endpoints:
            return error_response(404, f"no service named {name!r}")
        answers = await self._gather("GET", f"/v1/services/{name}")
        if not answers:
            return error_response(503, "no worker is up")
        return web.json_response(merge_service_status([document for _h, document in answers]))

    async def _put_endpoints(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.endpoints:
            return error_response(404, f"no service named {name!r}")
        endpoints, problem = await read_endpoints_body(request)
        if problem:
            return error_response(400, problem)
        # Kept first: a worker that is starting or restarting gets them when it is ready.
        self.endpoints[name] = tuple(endpoints)
        self.endpoints_version += 1
        handles = self.up_workers()
        path = f"/v1/services/{name}/endpoints"
        results = await asyncio.gather(
            *(self._worker_json(h, "PUT", path, {"endpoints": endpoints}) for h in handles),
            return_exceptions=True,
        )
        failures = [str(result) for result in results if isinstance(result, BaseException)]
        if failures:
            return error_response(
                502, "not every worker took the endpoints: " + "; ".join(failures)
            )
        documents = [result for result in results if isinstance(result, dict)]
        if not documents:
            return error_response(503, "no worker is up; the endpoints apply when one is")
        return web.json_response(merge_service_status(documents))

    async def _metrics(self, request: web.Request) -> web.Response:
        answers = await self._gather("GET", "/metrics", as_json=False)
        texts = [text for _handle, text in answers]
        texts.append(self._own_metrics())
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(merge_metrics(texts)))
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(registry), headers={"Content-Type": content_type})

    def _own_metrics(self) -> str:
        """The supervisor's own series: autoscaler reports, workers up and restarts."""
        counters = self._reporter.counters if self._reporter is not None else None
        up = GaugeMetricFamily("activator_workers_up", "Worker processes serving now.", labels=[])
        up.add_metric([], len(self.up_workers()))
        restarts = CounterMetricFamily(
            "activator_worker_restarts",
            "Worker processes restarted after exiting unexpectedly.",
            labels=[],
        )
        restarts.add_metric([], sum(handle.restarts for handle in self.handles))
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families([*reporting_families(counters), up, restarts]))
        return generate_latest(registry).decode()

    async def _concurrency(self, request: web.Request) -> web.Response:
        documents = await self.pull_workers(PULL_CONSUMER)
        report = merge_reports(documents, self.service_names)
        self._pull_seq += 1
        reporter = self._reporter
        activator_id = reporter.activator_id if reporter is not None else ""
        return web.json_response(report.document(activator_id, self._pull_seq, time.time()))


def _worker_environment() -> dict[str, str]:
    """The supervisor's environment, with this package first on the path so that
    ``python -m activator.io.workers`` runs the same code as the supervisor."""
    env = dict(os.environ)
    package_root = str(Path(activator.__file__).resolve().parents[1])
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = package_root + (os.pathsep + path if path else "")
    return env


def serve_with_workers(
    config: Config, *, workers: int, drain_timeout: float, log_level: str
) -> int:
    """``activator serve --workers N`` (N >= 2): run the supervisor; the exit status."""
    _setup_logging(log_level, f"supervisor pid {os.getpid()}")
    config = _with_fixed_ports(config)

    async def main() -> int:
        supervisor = Supervisor(
            config, workers=workers, drain_timeout=drain_timeout, log_level=log_level
        )
        return await supervisor.run()

    return _run(main())


def _with_fixed_ports(config: Config) -> Config:
    """Port 0 in ``listen`` (or the TLS ``listen``) would give every worker a port of its own:
    choose one port here for all of them."""

    def fixed(address: str) -> str:
        host, port = parse_hostport(address)
        if port != 0:
            return address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            chosen = int(probe.getsockname()[1])
        return format_hostport(host, chosen)

    config = dataclasses.replace(config, listen=fixed(config.listen))
    if config.tls is not None:
        config = dataclasses.replace(
            config, tls=dataclasses.replace(config.tls, listen=fixed(config.tls.listen))
        )
    return config


if __name__ == "__main__":
    # Run the module's importable copy, not this ``__main__`` one: the spec is unpickled as an
    # ``activator.io.workers.WorkerSpec``.
    from activator.io.workers import worker_main as _worker_main

    raise SystemExit(_worker_main(sys.argv[1:]))
