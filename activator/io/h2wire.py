"""HTTP/2 frames as bytes (RFC 9113 §4.1, §6): what the activator writes without frame objects, on
the pod side (:mod:`activator.io.pod_h2`) and for responses to clients (:mod:`activator.io.h2base`).
Output is a list of buffers for ``transport.writelines``: a frame is its 9-byte header plus its
payload object, never copied into one.
"""

from __future__ import annotations

import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# 24-bit length as 16 + 8 bits, type, flags, 31-bit stream id.
FRAME_HEADER = struct.Struct(">HBBBL")

# Frame types.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0x0, 0x1, 0x2, 0x3, 0x4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0x5, 0x6, 0x7, 0x8, 0x9

# Flags.
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20


def append_frame(out: list[bytes], ftype: int, flags: int, stream_id: int, payload: bytes) -> None:
    """One frame, as its header and (when not empty) its payload."""
    n = len(payload)
    out.append(FRAME_HEADER.pack(n >> 8, n & 0xFF, ftype, flags, stream_id))
    if n:
        out.append(payload)


def append_header_block(
    out: list[bytes], stream_id: int, block: bytes, end_stream: bool, max_frame: int
) -> None:
    """An encoded field block: one HEADERS frame, or HEADERS then CONTINUATION frames when it is
    larger than the peer's SETTINGS_MAX_FRAME_SIZE (RFC 9113 §6.10). END_STREAM goes on the HEADERS
    frame, END_HEADERS on the last."""
    flags = END_STREAM if end_stream else 0
    size = len(block)
    if size <= max_frame:
        append_frame(out, HEADERS, flags | END_HEADERS, stream_id, block)
        return
    append_frame(out, HEADERS, flags, stream_id, block[:max_frame])
    for offset in range(max_frame, size, max_frame):
        last = END_HEADERS if offset + max_frame >= size else 0
        append_frame(out, CONTINUATION, last, stream_id, block[offset : offset + max_frame])
