"""WriteQueue: output other connections' reads produce is written when the read ends
(``write_now``) or once at the end of the loop turn, one write per connection.

The endpoints are stand-ins that record their flushes: what is under test is when the queue
writes, on a real event loop. The data path that uses it runs in every e2e test.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import cast

import pytest

from activator.io.h2base import H2Endpoint, WriteQueue, write_queue


class RecordingEndpoint:
    """Stands in for an H2Endpoint: ``schedule_flush`` as the real one, ``flush`` recorded."""

    def __init__(self, name: str, writes: WriteQueue, log: list[str]) -> None:
        self.name = name
        self.writes = writes
        self.log = log
        self._flush_scheduled = False

    def schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.writes.add(cast(H2Endpoint, self))

    def flush(self) -> None:
        self._flush_scheduled = False
        self.log.append(self.name)


async def next_turn() -> None:
    # call_soon callbacks queued before this one run first; one sleep(0) is one loop turn.
    await asyncio.sleep(0)


async def test_many_schedules_are_one_write_per_connection_at_the_end_of_the_turn() -> None:
    log: list[str] = []
    queue = write_queue(asyncio.get_running_loop())
    a, b = (RecordingEndpoint(name, queue, log) for name in "ab")
    for _ in range(3):
        a.schedule_flush()
        b.schedule_flush()
    assert log == []  # nothing is written while the callback that produced the output runs
    await next_turn()
    assert log == ["a", "b"]
    await next_turn()
    assert log == ["a", "b"]


async def test_write_now_writes_at_once_and_the_end_of_turn_finds_nothing_left() -> None:
    log: list[str] = []
    queue = write_queue(asyncio.get_running_loop())
    a, b = (RecordingEndpoint(name, queue, log) for name in "ab")
    b.schedule_flush()
    a.schedule_flush()
    queue.write_now()
    assert log == ["b", "a"]  # in the order the output was queued
    await next_turn()
    assert log == ["b", "a"]


async def test_output_queued_after_write_now_still_goes_at_the_end_of_the_turn() -> None:
    log: list[str] = []
    queue = write_queue(asyncio.get_running_loop())
    a = RecordingEndpoint("a", queue, log)
    a.schedule_flush()
    queue.write_now()
    a.schedule_flush()  # e.g. a timer's output after the read ended, in the same turn
    assert log == ["a"]
    await next_turn()
    assert log == ["a", "a"]


async def test_an_endpoint_flushed_directly_is_not_written_twice_by_the_queue() -> None:
    log: list[str] = []
    queue = write_queue(asyncio.get_running_loop())
    a = RecordingEndpoint("a", queue, log)
    a.schedule_flush()
    a.flush()  # its own read ended and wrote everything
    await next_turn()
    # The queue calls flush once more; the real flush then finds no output and writes nothing.
    assert log == ["a", "a"]
    a.schedule_flush()  # and the endpoint can be queued again
    await next_turn()
    assert log == ["a", "a", "a"]


async def test_one_queue_per_loop() -> None:
    loop = asyncio.get_running_loop()
    assert write_queue(loop) is write_queue(loop)
    other = asyncio.new_event_loop()
    try:
        assert write_queue(other) is not write_queue(loop)
    finally:
        other.close()


def test_a_queue_does_not_keep_its_loop_alive() -> None:
    loop = asyncio.new_event_loop()
    queue = write_queue(loop)
    loop_ref = weakref.ref(loop)
    loop.close()
    del loop
    gc.collect()
    assert loop_ref() is None
    # The loop is gone; adding to its queue neither fails nor schedules anything.
    log: list[str] = []
    RecordingEndpoint("a", queue, log).schedule_flush()
    queue.write_now()
    assert log == ["a"]


@pytest.mark.parametrize("count", [1, 50])
async def test_one_loop_callback_per_turn_however_many_connections(count: int) -> None:
    loop = asyncio.get_running_loop()
    calls: list[object] = []
    original = loop.call_soon

    def counting_call_soon(callback: object, *args: object, **kwargs: object) -> object:
        calls.append(callback)
        return original(callback, *args, **kwargs)  # type: ignore[arg-type]

    log: list[str] = []
    queue = write_queue(loop)
    endpoints = [RecordingEndpoint(str(i), queue, log) for i in range(count)]
    loop.call_soon = counting_call_soon  # type: ignore[method-assign]
    try:
        for endpoint in endpoints:
            endpoint.schedule_flush()
    finally:
        loop.call_soon = original  # type: ignore[method-assign]
    assert len(calls) == 1
    await next_turn()
    assert len(log) == count
