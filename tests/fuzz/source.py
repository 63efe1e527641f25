"""Choices read from a fuzzer's bytes.

The fuzz targets build their inputs (frames, request heads, HPACK blocks) from choices, not from raw
bytes, so a mutation of one byte changes one decision and the fuzzer finds structure quickly. This
reader is ours rather than atheris' FuzzedDataProvider so that the stored corpus means the same
thing without atheris installed (the suite replays it) and across atheris versions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


class ByteSource:
    """Reads choices front to back; once the bytes run out, every choice is its smallest."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def integer(self, low: int, high: int) -> int:
        """An integer in [low, high], from as few bytes as the range needs."""
        span = high - low
        if span <= 0:
            return low
        value = 0
        nbytes = (span.bit_length() + 7) // 8
        for _ in range(nbytes):
            value = (value << 8) | self._byte()
        return low + value % (span + 1)

    def flag(self) -> bool:
        return bool(self._byte() & 1)

    def choice(self, options: Sequence[T]) -> T:
        return options[self.integer(0, len(options) - 1)]

    def blob(self, max_len: int) -> bytes:
        """Up to ``max_len`` raw bytes (fewer if the input ends)."""
        n = self.integer(0, max_len)
        out = self._data[self._pos : self._pos + n]
        self._pos += len(out)
        return out

    def _byte(self) -> int:
        if self._pos >= len(self._data):
            return 0
        value = self._data[self._pos]
        self._pos += 1
        return value
