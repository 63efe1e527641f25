#!/usr/bin/env python3
"""What one request's HTTP/2 work costs when the core was idle just before, in-process.

The work is one small request's HTTP/2 through the activator's own connection classes, one HEADERS
frame each way, on each side:

- client side (h2's state machine, as the ingress runs it): parse a HEADERS frame that opens a
  stream, write the response's HEADERS frame;
- pod side (the activator's own lean client, :mod:`activator.io.pod_h2`): write a request's
  HEADERS frame, parse the response's.

Both decode with the same compiled HPACK codec, so the difference between them is what h2's
frame objects, events and stream state machine cost against a parser written for the per-frame
path. Each is timed back to back, and after the core slept (or spun) for a gap, as it does between
requests at a low, steady rate.

On a virtual machine the sleeping core's caches and branch predictors are largely lost by the
time the next request comes (the host runs other work there), and an interpreter touches far
more code and data per request than a C proxy does: that is what the `latency` scenario's
requests pay and the saturated ones do not. Spinning instead of sleeping keeps the core ours;
spinning over 8 MiB of memory evicts the caches without sleeping.

Pin it to an idle core: `taskset -c 0 python3 loadtest/cold_core.py`. Prints Markdown.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as `python3 loadtest/cold_core.py`: make the `activator` package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import h2.config
import h2.connection

from activator.io.h2base import ProxyH2Connection
from activator.io.h2wire import PREFACE
from activator.io.pod_h2 import PodH2Connection

REQUEST = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":authority", b"127.0.0.1:8080"),
    (b":path", b"/100b"),
    (b"user-agent", b"h2load nghttp2/1.52.0"),
]
RESPONSE = [(b":status", b"200"), (b"content-length", b"100")]
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


@dataclass(frozen=True)
class Gap:
    name: str
    seconds: float
    wait: Callable[[float], None] | None  # None: back to back


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


EVICTION_BLOCK = bytearray(8 << 20)  # larger than this machine's L2, and than most L3 slices


def spin_over_memory(seconds: float) -> None:
    """Busy for `seconds`, writing one byte per 4 KiB page of 8 MiB: the caches are evicted."""
    end = time.perf_counter() + seconds
    stride = EVICTION_BLOCK[::4096]
    while time.perf_counter() < end:
        EVICTION_BLOCK[::4096] = stride


def gaps() -> list[Gap]:
    return [
        Gap("back to back", 0.0, None),
        Gap("sleep 0.5 ms", 0.0005, time.sleep),
        Gap("sleep 2 ms", 0.002, time.sleep),
        Gap("sleep 10 ms", 0.010, time.sleep),
        Gap("spin 10 ms", 0.010, spin),
        Gap("spin 10 ms over 8 MiB", 0.010, spin_over_memory),
    ]


def request_frames(count: int) -> list[bytes]:
    """`count` HEADERS frames, each opening the next stream, from a real h2 client."""
    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    client.initiate_connection()
    client.data_to_send()
    frames = []
    for _ in range(count):
        stream_id = client.get_next_available_stream_id()
        client.send_headers(stream_id, REQUEST, end_stream=True)
        frames.append(client.data_to_send())
        client.streams.pop(stream_id, None)  # no response comes back to this client
    return frames


def opened_stream(events: Sequence[Any]) -> int:
    """The stream a request's HEADERS frame opened: h2's first event for it is RequestReceived."""
    stream_id: int = events[0].stream_id
    return stream_id


def response_frames(count: int) -> tuple[bytes, list[bytes]]:
    """A real h2 server's SETTINGS, then `count` response HEADERS frames on streams 1, 3, 5..."""
    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    server = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding=None)
    )
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    settings = server.data_to_send()
    frames = []
    for frame in request_frames(count):
        server.send_headers(opened_stream(server.receive_data(frame)), RESPONSE, end_stream=True)
        frames.append(server.data_to_send())
    return settings, frames


def measure(gap: Gap, requests: int) -> list[float]:
    """Microseconds of client-side work per request (h2), after `gap` before each."""
    server = ProxyH2Connection.for_clients()
    server.initiate_connection()
    server.pop_output()
    server.receive_data(PREFACE + EMPTY_SETTINGS)
    server.pop_output()
    frames = request_frames(requests)
    micros = []
    for frame in frames:
        if gap.wait is not None:
            gap.wait(gap.seconds)
        started = time.perf_counter_ns()
        events = server.receive_data(frame)
        server.send_headers(opened_stream(events), RESPONSE, end_stream=True)
        server.pop_output()
        micros.append((time.perf_counter_ns() - started) / 1000)
    return micros


def measure_pod_side(gap: Gap, requests: int) -> list[float]:
    """Microseconds of pod-side work per request (the lean client), after `gap` before each."""
    pod = PodH2Connection(stream_window=1 << 20, connection_window=1 << 24)
    pod.initiate_connection()
    pod.pop_output()
    settings, frames = response_frames(requests)
    pod.receive_data(settings)
    pod.pop_output()
    micros = []
    for frame in frames:
        if gap.wait is not None:
            gap.wait(gap.seconds)
        started = time.perf_counter_ns()
        pod.send_headers(pod.get_next_available_stream_id(), REQUEST, end_stream=True)
        pod.pop_output()
        events = pod.receive_data(frame)
        micros.append((time.perf_counter_ns() - started) / 1000)
        if not events:
            raise RuntimeError("the pod side parsed nothing from a response HEADERS frame")
    return micros


SIDES: dict[str, Callable[[Gap, int], list[float]]] = {
    "client side, h2 (the ingress)": measure,
    "pod side, the activator's own parser": measure_pod_side,
}


def render(rows: Sequence[tuple[Gap, list[float]]]) -> str:
    base = statistics.median(rows[0][1]) if rows and rows[0][1] else None
    lines = [
        "| before each request | requests | median µs | p90 µs | median vs back to back |",
        "|---|---:|---:|---:|---:|",
    ]
    for gap, micros in rows:
        ordered = sorted(micros)
        median = statistics.median(ordered)
        p90 = ordered[int(len(ordered) * 0.9)]
        ratio = f"{median / base:.1f}x" if base else "n/a"
        lines.append(f"| {gap.name} | {len(ordered)} | {median:.1f} | {p90:.1f} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadtest/cold_core.py", description=__doc__)
    parser.add_argument("--requests", type=int, default=300, help="per gap [%(default)s]")
    args = parser.parse_args(argv)
    for index, (side, work) in enumerate(SIDES.items()):
        rows = [(gap, work(gap, args.requests)) for gap in gaps()]
        print(("\n" if index else "") + f"{side}:\n\n" + render(rows), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
