"""BusyPoller on a real event loop: it keeps the loop polling while reads come, goes idle after
its window without one, resumes on the next read, and stops for good on stop().

Reads are simulated by calling the loop's WriteQueue.write_now(), which is what every read
handler does at its end. Waits are bounded and generous; no duration is asserted.
"""

from __future__ import annotations

import asyncio
import time

from activator.io.busypoll import BusyPoller
from activator.io.h2base import write_queue

WINDOW = 0.05


async def wait_for(condition: object, seconds: float = 2.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.005)
    return bool(condition())  # type: ignore[operator]


async def turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def test_polls_while_reads_come_then_goes_idle_and_the_next_read_resumes_it() -> None:
    loop = asyncio.get_running_loop()
    writes = write_queue(loop)
    poller = BusyPoller(loop, writes, WINDOW)
    poller.start()
    try:
        assert poller.running
        # Reads every 10 ms for 0.2 s, four times the window: it never goes idle meanwhile.
        for _ in range(20):
            writes.write_now()
            await asyncio.sleep(0.01)
            assert poller.running
            assert writes.idle_poller is None
        # No more reads: idle after the window, waiting for the next read.
        assert await wait_for(lambda: not poller.running)
        assert writes.idle_poller is poller
        writes.write_now()
        assert poller.running
        assert writes.idle_poller is None
    finally:
        poller.stop()


async def test_while_running_the_loop_turns_with_nothing_else_to_do() -> None:
    loop = asyncio.get_running_loop()
    writes = write_queue(loop)
    poller = BusyPoller(loop, writes, 10.0)
    polls: list[None] = []
    poll = poller._poll

    def counted_poll() -> None:
        polls.append(None)
        poll()

    poller._poll = counted_poll  # type: ignore[method-assign]
    poller.start()
    try:
        # The only other thing pending is this sleep's timer: a loop left alone would block in
        # its poller until then and turn once; polling, it turns over and over meanwhile.
        await asyncio.sleep(0.05)
        assert len(polls) > 50
        assert poller.running
    finally:
        poller.stop()
    settled = len(polls)
    await asyncio.sleep(0.02)
    assert len(polls) == settled  # stopped: no more turns of its own


async def test_stop_ends_polling_and_reads_do_not_restart_it() -> None:
    loop = asyncio.get_running_loop()
    writes = write_queue(loop)
    poller = BusyPoller(loop, writes, WINDOW)
    poller.start()
    assert await wait_for(lambda: writes.idle_poller is poller)
    poller.stop()
    assert writes.idle_poller is None
    writes.write_now()
    await turns(3)
    assert not poller.running
    # Stopped while polling, too.
    poller.start()
    assert poller.running
    poller.stop()
    await turns(3)
    assert not poller.running
    assert writes.idle_poller is None
