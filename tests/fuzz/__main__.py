"""Coverage-guided fuzzing of one target with atheris (libFuzzer).

    python3 -m pip install atheris
    python3 -m tests.fuzz ingress_h2 /tmp/corpus-h2 -max_total_time=600

Targets: ingress_h2, ingress_h1, ingress_tls, pod_misbehaviour, pod_misbehaviour_h1, pod_h2,
hpack_strict (see tests/fuzz/targets.py). The live targets run on asyncio's loop, or with
--uvloop (first) on uvloop's, the activator's own on Linux; the suite replays them on both.
Arguments after the target go to libFuzzer (-max_total_time, -runs, -jobs, ...); a first one that
is a directory is the corpus to grow, and is first given the stored corpus
(tests/fuzz/corpus/TARGET.b64). A failing input is written as crash-*; `python3 -m tests.fuzz
TARGET crash-...` replays it. To store a grown corpus (libFuzzer keeps only inputs that reached
new code), with the failing inputs copied in once fixed:

    python3 -m tests.fuzz --pack ingress_h2 /tmp/corpus-h2
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import atheris
import uvloop

with atheris.instrument_imports(include=["activator"]):
    from tests.fuzz.targets import LIVE_TARGETS, PLAIN_TARGETS, live_activator

from tests.fuzz.corpus import pack, unpack


def main() -> None:
    names = sorted([*LIVE_TARGETS, *PLAIN_TARGETS])
    new_loop = asyncio.new_event_loop
    if sys.argv[1:2] == ["--uvloop"]:  # the live targets on uvloop's loop instead of asyncio's
        del sys.argv[1]
        new_loop = uvloop.new_event_loop
    if sys.argv[1:2] == ["--pack"] and len(sys.argv) == 4 and sys.argv[2] in names:
        print(f"stored {pack(sys.argv[2], Path(sys.argv[3]))} inputs")
        return
    if len(sys.argv) < 2 or sys.argv[1] not in names:
        sys.exit(
            f"usage: python3 -m tests.fuzz [--uvloop] {{{','.join(names)}}} [CORPUS_DIR]"
            " [libFuzzer arguments]"
            f"\n       python3 -m tests.fuzz --pack TARGET CORPUS_DIR"
        )
    name = sys.argv[1]
    argv = [sys.argv[0], *sys.argv[2:]]
    if len(argv) > 1 and not argv[1].startswith("-") and not Path(argv[1]).is_file():
        unpack(name, Path(argv[1]))
    if name in PLAIN_TARGETS:
        atheris.Setup(argv, PLAIN_TARGETS[name])
    else:
        live = live_activator(name, new_loop)
        target = LIVE_TARGETS[name]
        runs = 0

        def one(data: bytes) -> None:
            nonlocal runs
            target(live, data)
            runs += 1
            if runs % 200 == 0:
                live.still_serves()

        atheris.Setup(argv, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
