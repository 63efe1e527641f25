"""Concurrency accounting for the autoscaler.

Tracks how many requests are in flight and lets several independent readers (the periodic push
to the autoscaler, the pull API) each take time-weighted statistics over their own windows
without disturbing one another. Sans-I/O: time is passed in as ``now`` (monotonic seconds).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConcurrencyTracker", "WindowReader", "WindowStats"]


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Concurrency statistics over one window.

    Attributes:
        window_seconds: Length of the window.
        average: Time-weighted mean of the in-flight count over the window (the integral of
            the count over time divided by the window length); the current count when the
            window has zero length.
        maximum: Highest in-flight count during the window, including its value at the start.
        current: In-flight count at the end of the window.
        requests: Requests started during the window.
    """

    window_seconds: float
    average: float
    maximum: int
    current: int
    requests: int


class ConcurrencyTracker:
    """Counts in-flight requests and feeds any number of :class:`WindowReader` windows.

    :meth:`start` and :meth:`finish` cost O(number of open readers), expected to be 1 to 3.

    Attributes:
        current: Requests in flight now.
        requests: Requests ever started.
    """

    __slots__ = ("_readers", "current", "requests")

    def __init__(self, now: float) -> None:
        """Create a tracker with nothing in flight.

        Args:
            now: Current time (kept for symmetry with the rest of the API; readers start their
                own windows).
        """
        self.current = 0
        self.requests = 0
        self._readers: list[WindowReader] = []

    def start(self, now: float) -> None:
        """Count one request starting at ``now``."""
        current = self.current
        for reader in self._readers:
            reader._area += current * (now - reader._changed_at)
            reader._changed_at = now
        current += 1
        self.current = current
        self.requests += 1
        for reader in self._readers:
            if current > reader._maximum:
                reader._maximum = current

    def finish(self, now: float) -> None:
        """Count one request finishing at ``now``.

        Raises:
            ValueError: No request is in flight.
        """
        current = self.current
        if current <= 0:
            raise ValueError("finish() without a matching start()")
        for reader in self._readers:
            reader._area += current * (now - reader._changed_at)
            reader._changed_at = now
        self.current = current - 1

    def reader(self, now: float) -> WindowReader:
        """Open an independent window starting at ``now``.

        The reader stays attached (and costs a little on every start/finish) until
        :meth:`WindowReader.close` is called.
        """
        reader = WindowReader(self, now)
        self._readers.append(reader)
        return reader

    @property
    def reader_count(self) -> int:
        """Number of open readers."""
        return len(self._readers)

    def _detach(self, reader: WindowReader) -> None:
        # Identity, not equality: readers are distinct even when their state matches.
        for index, attached in enumerate(self._readers):
            if attached is reader:
                del self._readers[index]
                return


class WindowReader:
    """One consumer's successive windows over a :class:`ConcurrencyTracker`.

    Each :meth:`read` reports the window since the previous read (or since the reader was
    opened) and starts the next one; other readers are unaffected.
    """

    __slots__ = (
        "_area",
        "_changed_at",
        "_maximum",
        "_requests_at_start",
        "_started_at",
        "_tracker",
    )

    def __init__(self, tracker: ConcurrencyTracker, now: float) -> None:
        """Open a window on ``tracker`` starting at ``now``; prefer :meth:`ConcurrencyTracker.reader`."""
        self._tracker: ConcurrencyTracker | None = tracker
        self._started_at = now
        # Integral of the in-flight count from _started_at up to _changed_at.
        self._area = 0.0
        self._changed_at = now
        self._maximum = tracker.current
        self._requests_at_start = tracker.requests

    def read(self, now: float) -> WindowStats:
        """Statistics since this reader's last read, then start a new window at ``now``.

        Raises:
            ValueError: The reader was closed.
        """
        tracker = self._tracker
        if tracker is None:
            raise ValueError("read() on a closed WindowReader")
        current = tracker.current
        area = self._area + current * (now - self._changed_at)
        window = now - self._started_at
        stats = WindowStats(
            window_seconds=window,
            average=area / window if window > 0 else float(current),
            maximum=self._maximum,
            current=current,
            requests=tracker.requests - self._requests_at_start,
        )
        self._started_at = now
        self._area = 0.0
        self._changed_at = now
        self._maximum = current
        self._requests_at_start = tracker.requests
        return stats

    def close(self) -> None:
        """Detach from the tracker; further reads raise. Closing twice is harmless."""
        if self._tracker is not None:
            self._tracker._detach(self)
            self._tracker = None
