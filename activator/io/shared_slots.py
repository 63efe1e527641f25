"""Pod slots shared by worker processes, so that a pod's ``container_concurrency`` holds over all
of them.

A small file in shared memory (``/dev/shm`` where it exists) holds int32 counters, mapped by every
worker:

* ``total[slot]``: requests in flight on the pod(s) of that slot, over all workers;
* ``held[worker][slot]``: the part of ``total`` each worker holds, so that the supervisor can give
  back the slots of a worker that died;
* ``waiting[worker][service]``: the worker has requests of that service queued.

A slot is ``crc32(service, pod address)`` modulo the table size. Two pods that land on the same
slot share one counter: each sees the other's requests as its own, which can only refuse a
request, never admit one past ``container_concurrency``.

Every update happens under an exclusive ``flock(2)`` on the file. The kernel drops that lock when
its holder dies, so a worker killed in the middle of an update cannot wedge the others (a
semaphore would stay taken).

A worker whose request is refused a slot is marked as waiting in the same locked step; whoever
gives a slot of that service back then writes a byte to the waiting workers' wake-up pipes, which
their event loops watch (no polling).
"""

from __future__ import annotations

import fcntl
import mmap
import os
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["DEFAULT_SLOTS", "SharedSlotGate", "SlotLayout", "SlotTable", "Wakers"]

# With 100 gated pods, some two of them share a slot about one time in four (birthday bound);
# that costs those two some capacity, never correctness. The table stays small: 64 KiB of totals
# plus 64 KiB per worker.
DEFAULT_SLOTS: Final = 16384
_INT32: Final = 4


def _shared_memory_dir() -> str:
    """``/dev/shm`` (a tmpfs on Linux) when writable, else the temporary directory."""
    candidate = "/dev/shm"
    if os.path.isdir(candidate) and os.access(candidate, os.W_OK):
        return candidate
    return tempfile.gettempdir()


@dataclass(frozen=True, slots=True)
class SlotLayout:
    """Where the table is and how it is laid out (what a worker needs to map it).

    Attributes:
        path: The file.
        workers: Worker indexes run from 0 to ``workers - 1``.
        services: Service indexes run from 0 to ``services - 1``.
        slots: Slots per table.
    """

    path: str
    workers: int
    services: int
    slots: int

    @property
    def size(self) -> int:
        """Bytes of the file."""
        ints = self.slots + self.workers * self.slots + self.workers * max(1, self.services)
        return ints * _INT32

    def held_base(self, worker: int) -> int:
        return self.slots + worker * self.slots

    def waiting_index(self, worker: int, service: int) -> int:
        return self.slots + self.workers * self.slots + worker * max(1, self.services) + service


class Wakers:
    """Write ends of the workers' wake-up pipes (non-blocking)."""

    def __init__(self, fds: Sequence[int]) -> None:
        self.fds = list(fds)

    def wake(self, worker: int) -> None:
        """Make ``worker``'s wake-up pipe readable. A full pipe is already readable: fine."""
        try:
            os.write(self.fds[worker], b"\x01")
        except (BlockingIOError, BrokenPipeError):
            pass


class SlotTable:
    """The shared counters, mapped in this process."""

    def __init__(self, layout: SlotLayout, fd: int) -> None:
        self.layout = layout
        self._fd = fd
        self._map = mmap.mmap(fd, layout.size)
        self._view: memoryview = memoryview(self._map).cast("i")

    @classmethod
    def create(
        cls,
        *,
        workers: int,
        services: int,
        slots: int = DEFAULT_SLOTS,
        directory: str | None = None,
    ) -> SlotTable:
        """Create a zeroed table in a new file (the supervisor does, before starting workers)."""
        if workers < 1 or services < 0 or slots < 1:
            raise ValueError(f"bad table shape: {workers} workers, {services} services, {slots}")
        fd, path = tempfile.mkstemp(
            prefix="activator-slots-", dir=directory or _shared_memory_dir()
        )
        layout = SlotLayout(path=path, workers=workers, services=services, slots=slots)
        try:
            os.ftruncate(fd, layout.size)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        return cls(layout, fd)

    @classmethod
    def attach(cls, layout: SlotLayout) -> SlotTable:
        """Map an existing table (a worker does). Each process opens the file itself: ``flock``
        locks belong to an open file, so a shared descriptor would not exclude anyone."""
        fd = os.open(layout.path, os.O_RDWR)
        return cls(layout, fd)

    # -- locking -----------------------------------------------------------------------------

    def lock(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def unlock(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    # -- reading -----------------------------------------------------------------------------

    def slot_of(self, service: str, address: str) -> int:
        """The slot of a pod: stable across processes (unlike ``hash()``, which is salted)."""
        return zlib.crc32(f"{service}\x00{address}".encode()) % self.layout.slots

    def in_flight(self, service: str, address: str) -> int:
        """Requests in flight on the pod's slot over all workers."""
        return int(self._view[self.slot_of(service, address)])

    def held(self, worker: int, service: str, address: str) -> int:
        """The part of :meth:`in_flight` that ``worker`` holds."""
        return int(self._view[self.layout.held_base(worker) + self.slot_of(service, address)])

    def is_waiting(self, worker: int, service: int) -> bool:
        return bool(self._view[self.layout.waiting_index(worker, service)])

    # -- gates and clean-up --------------------------------------------------------------------

    def gate(
        self, *, worker: int, service: int, service_name: str, capacity: int, wakers: Wakers
    ) -> SharedSlotGate:
        """The gate of one service in one worker."""
        return SharedSlotGate(self, worker, service, service_name, capacity, wakers)

    def forget_worker(self, worker: int) -> set[int]:
        """Give back every slot ``worker`` held and clear its waiting marks (it died).

        Returns:
            The other workers marked as waiting for some service: they should be woken.
        """
        layout = self.layout
        view = self._view
        base = layout.held_base(worker)
        services = max(1, layout.services)
        self.lock()
        try:
            for slot in range(layout.slots):
                held = view[base + slot]
                if held:
                    view[slot] = max(0, view[slot] - held)
                    view[base + slot] = 0
            for service in range(services):
                view[layout.waiting_index(worker, service)] = 0
            return {
                other
                for other in range(layout.workers)
                for service in range(services)
                if other != worker and view[layout.waiting_index(other, service)]
            }
        finally:
            self.unlock()

    def close(self) -> None:
        self._view.release()
        self._map.close()
        os.close(self._fd)

    def unlink(self) -> None:
        """Remove the file (the supervisor does, once every worker is gone)."""
        try:
            Path(self.layout.path).unlink()
        except FileNotFoundError:
            pass


class SharedSlotGate:
    """:class:`activator.core.throttle.SlotGate` over a :class:`SlotTable`: one service, one
    worker."""

    __slots__ = (
        "_capacity",
        "_fd",
        "_held_base",
        "_service",
        "_slots",
        "_table",
        "_view",
        "_wait_index",
        "_wait_indexes",
        "_wakers",
        "_worker",
    )

    def __init__(
        self,
        table: SlotTable,
        worker: int,
        service: int,
        service_name: str,
        capacity: int,
        wakers: Wakers,
    ) -> None:
        if capacity < 1:
            raise ValueError("a gate needs a capacity of at least 1 (0 is unlimited: no gate)")
        layout = table.layout
        self._table = table
        self._fd = table._fd
        self._view = table._view
        self._worker = worker
        self._service = service_name
        self._capacity = capacity
        self._held_base = layout.held_base(worker)
        self._wait_index = layout.waiting_index(worker, service)
        # Where the other workers' marks for this service are.
        self._wait_indexes = [
            (other, layout.waiting_index(other, service))
            for other in range(layout.workers)
            if other != worker
        ]
        self._wakers = wakers
        self._slots: dict[str, int] = {}

    def _slot(self, pod: str) -> int:
        slot = self._slots.get(pod)
        if slot is None:
            slot = self._slots[pod] = self._table.slot_of(self._service, pod)
        return slot

    def try_take(self, pod: str) -> bool:
        slot = self._slot(pod)
        view = self._view
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            if view[slot] < self._capacity:
                view[slot] += 1
                view[self._held_base + slot] += 1
                return True
            view[self._wait_index] = 1
            return False
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def give_back(self, pod: str) -> bool:
        slot = self._slot(pod)
        view = self._view
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            if view[self._held_base + slot] > 0:
                view[self._held_base + slot] -= 1
                view[slot] -= 1
            waiting = [other for other, index in self._wait_indexes if view[index]]
            self_waiting = bool(view[self._wait_index])
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        if not waiting:
            return False
        wake = self._wakers.wake
        for other in waiting:
            wake(other)
        if self_waiting:
            wake(self._worker)
        return True

    def set_waiting(self, waiting: bool) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            self._view[self._wait_index] = 1 if waiting else 0
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
