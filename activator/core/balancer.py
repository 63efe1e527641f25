"""Per-pod load state and least-loaded pod selection.

Sans-I/O: no clocks, no sockets; randomness comes from an injected ``random.Random`` so that
callers (and tests) control it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["PodState", "pick_least_loaded"]


@dataclass(slots=True, eq=False)
class PodState:
    """Load and health of one pod (one upstream ``host:port``) of a service.

    Compared by identity (``eq=False``): two pods are the same only if they are the same object,
    so a pod that left the endpoint set and came back as a new object is a different pod.

    Attributes:
        address: The pod's ``"host:port"``.
        capacity: Most requests the pod may have in flight at once (Knative's
            ``container_concurrency``); ``0`` means unlimited.
        in_flight: Requests currently assigned to the pod and not yet released.
        ready: Whether the pod passed its readiness check (or needs none).
        removed: The pod is no longer in the endpoint set: it finishes its in-flight work but
            gets nothing new.
    """

    address: str
    capacity: int = 0
    in_flight: int = 0
    ready: bool = False
    removed: bool = False

    def has_free_slot(self) -> bool:
        """Whether the pod may take one more request now.

        True when it is ready, not removed, and either unlimited or below its capacity.
        """
        return (
            self.ready
            and not self.removed
            and (self.capacity == 0 or self.in_flight < self.capacity)
        )


def pick_least_loaded(candidates: Sequence[PodState], rng: random.Random) -> PodState | None:
    """Pick a pod with a free slot, preferring the less loaded one.

    Power of two random choices ("The Power of Two Choices in Randomized Load Balancing",
    Mitzenmacher 2001): draw two distinct pods at random among those with a free slot and keep
    the one with fewer requests in flight; ties are broken at random. This spreads load almost as
    well as a global minimum while avoiding the herd behaviour of always choosing the single
    least-loaded pod, and never chooses the unique most-loaded pod when there are two or more.

    Args:
        candidates: Pods to choose from; those without a free slot are skipped.
        rng: Source of randomness.

    Returns:
        The chosen pod, or ``None`` when no candidate has a free slot. With exactly one eligible
        pod, that pod; with exactly two, the less loaded of them.
    """
    total = len(candidates)
    draw = rng.random
    if total > _SAMPLE_DIRECTLY_ABOVE:
        # Large pod sets: rejection-sample two distinct eligible pods straight from the
        # candidates, which is uniform over the eligible ones and O(1) when most pods have room;
        # fall back to the scan below when free slots are scarce.
        first = _draw_eligible(candidates, total, draw, None)
        if first is not None:
            second = _draw_eligible(candidates, total, draw, first)
            if second is not None:
                return _lighter(first, second, draw)
    # Inlined has_free_slot(): this runs for every request, so avoid a method call per pod.
    eligible = [
        pod
        for pod in candidates
        if pod.ready and not pod.removed and (pod.capacity == 0 or pod.in_flight < pod.capacity)
    ]
    count = len(eligible)
    if count == 0:
        return None
    if count == 1:
        return eligible[0]
    if count == 2:
        return _lighter(eligible[0], eligible[1], draw)
    # Two distinct indices, uniformly: draw the second from the count - 1 others.
    # int(random() * n) rather than randrange(n): the same distribution for pod-set sizes,
    # several times cheaper, and this is the per-request path.
    first_index = int(draw() * count)
    second_index = int(draw() * (count - 1))
    if second_index >= first_index:
        second_index += 1
    return _lighter(eligible[first_index], eligible[second_index], draw)


# Above this many candidates, sample before scanning.
_SAMPLE_DIRECTLY_ABOVE = 16
# Draws per pod before giving up on sampling and scanning instead.
_SAMPLE_ATTEMPTS = 4


def _draw_eligible(
    candidates: Sequence[PodState],
    total: int,
    draw: Callable[[], float],
    other: PodState | None,
) -> PodState | None:
    """A uniformly drawn candidate with a free slot other than ``other``, or None if the few
    allowed draws all missed."""
    for _ in range(_SAMPLE_ATTEMPTS):
        pod = candidates[int(draw() * total)]
        if (
            pod is not other
            and pod.ready
            and not pod.removed
            and (pod.capacity == 0 or pod.in_flight < pod.capacity)
        ):
            return pod
    return None


def _lighter(first: PodState, second: PodState, draw: Callable[[], float]) -> PodState:
    """The pod with fewer requests in flight; a fair coin on a tie."""
    if first.in_flight < second.in_flight:
        return first
    if second.in_flight < first.in_flight:
        return second
    return first if draw() < 0.5 else second
