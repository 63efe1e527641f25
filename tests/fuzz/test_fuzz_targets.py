"""The fuzz targets (targets.py) as part of the suite: each replays its stored corpus (inputs the
coverage-guided fuzzer kept for reaching new code, and every input that once failed), then inputs
from a seeded generator, so a run is deterministic. The ingress targets use a live activator and
pod on loopback (a demo pod, or for pod_misbehaviour a scripted one), one per target and loop."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from tests.fuzz.corpus import stored
from tests.fuzz.live import LOOPS, LiveActivator
from tests.fuzz.targets import LIVE_TARGETS, PLAIN_TARGETS, live_activator

# Generated inputs per target on top of the corpus: the live targets cost a few ms each.
LIVE_GENERATED = 150
PLAIN_GENERATED = 3000


def generated(target: str, count: int) -> list[bytes]:
    rng = random.Random(target)
    return [rng.randbytes(rng.randint(0, 120)) for _ in range(count)]


# The live targets run on both LOOPS.
@pytest.fixture
def live(request: pytest.FixtureRequest) -> Iterator[LiveActivator]:
    params = request.node.callspec.params
    activator = live_activator(params["target"], LOOPS[params["loop"]])
    yield activator
    activator.close()


def test_every_target_has_a_stored_corpus() -> None:
    for target in (*LIVE_TARGETS, *PLAIN_TARGETS):
        assert len(stored(target)) >= 20, target


@pytest.mark.parametrize("loop", sorted(LOOPS))
@pytest.mark.parametrize("target", sorted(LIVE_TARGETS))
def test_live_target(live: LiveActivator, target: str, loop: str) -> None:
    run = LIVE_TARGETS[target]
    for data in stored(target) + generated(target, LIVE_GENERATED):
        try:
            run(live, data)
        except AssertionError as exc:
            raise AssertionError(f"{target} failed on input {data!r}: {exc}") from None
    live.still_serves()


@pytest.mark.parametrize("target", sorted(PLAIN_TARGETS))
def test_plain_target(target: str) -> None:
    run = PLAIN_TARGETS[target]
    for data in stored(target) + generated(target, PLAIN_GENERATED):
        try:
            run(data)
        except AssertionError as exc:
            raise AssertionError(f"{target} failed on input {data!r}: {exc}") from None
