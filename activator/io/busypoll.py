"""Busy polling: the event loop keeps polling for a while after the last read instead of sleeping.

At a low request rate the core sleeps between requests, and on a virtual machine its caches and
branch predictors are largely gone when the next request wakes it (the host runs other work
there): one small request's HTTP/2 work measured 24-28 µs back to back and 145-196 µs after the
core slept 10 ms (``loadtest/cold_core.py``). An interpreter touches far more code and data per
request than a C proxy does, so it pays that many times over. Polling with a zero timeout keeps
the core busy with us instead, for a core's worth of CPU while traffic flows.

HAProxy's ``busy-polling`` does this for as long as the process runs. Here it lasts ``window``
seconds after the last read and then stops, so an idle activator (a service scaled to zero)
sleeps as before; the first read after that resumes it.
"""

from __future__ import annotations

import asyncio

from activator.io.h2base import WriteQueue


class BusyPoller:
    """Keeps one loop polling for ``window`` seconds after the last read.

    While it runs, one callback of its own is always ready, so the loop polls its sockets with a
    zero timeout and never blocks. Reads are counted by the loop's :class:`WriteQueue` (every read
    handler ends with ``write_now``), which also resumes a poller that went idle.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, writes: WriteQueue, window: float) -> None:
        self._loop = loop
        self._writes = writes
        self._window = window
        self._seen = 0
        self._last_read = 0.0
        self._handle: asyncio.Handle | None = None
        self.running = False
        self.stopped = False

    def start(self) -> None:
        self.stopped = False
        self.resume()

    def resume(self) -> None:
        """Poll again (the first read after an idle spell)."""
        if self.stopped or self.running:
            return
        self.running = True
        self._seen = self._writes.reads
        self._last_read = self._loop.time()
        self._handle = self._loop.call_soon(self._poll)

    def stop(self) -> None:
        self.stopped = True
        self.running = False
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._writes.idle_poller is self:
            self._writes.idle_poller = None

    def _poll(self) -> None:
        reads = self._writes.reads
        now = self._loop.time()
        if reads != self._seen:
            self._seen = reads
            self._last_read = now
        elif now - self._last_read >= self._window:
            # Idle: let the loop sleep; the next read resumes polling.
            self.running = False
            self._handle = None
            self._writes.idle_poller = self
            return
        self._handle = self._loop.call_soon(self._poll)
