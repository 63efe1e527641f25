"""seen_for: how long a state seen by consecutive sweeps has lasted at least."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from activator.core.sweep import seen_for


@given(
    interval=st.floats(0.01, 10),
    began=st.floats(0, 1, exclude_max=True),  # as a fraction of the interval before the 1st sweep
    ticks=st.integers(1, 10_000),
)
def test_never_more_than_the_truth_and_at_most_one_interval_less(
    interval: float, began: float, ticks: int
) -> None:
    """The state began ``began * interval`` before the first sweep that saw it; sweeps follow
    every ``interval``. After ``ticks`` of them it has lasted ``(ticks - 1 + began) * interval``."""
    lasted = (ticks - 1 + began) * interval
    credited = seen_for(ticks, interval)
    assert credited <= lasted + 1e-9 * lasted
    assert lasted - credited <= interval * (1 + 1e-9)


def test_the_first_sweep_that_sees_a_state_credits_nothing() -> None:
    assert seen_for(0, 1.0) == 0.0
    assert seen_for(1, 1.0) == 0.0
    assert seen_for(2, 1.0) == 1.0
    assert seen_for(61, 1.0) == 60.0
