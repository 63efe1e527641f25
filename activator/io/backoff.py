"""Backoff schedules, taken from tenacity so every retry in the activator shares one well-tested policy."""

from __future__ import annotations

from tenacity import RetryCallState, wait_exponential_jitter

# Connect retries to another pod: quick first retry (a pod that just died is usually one of several).
_CONNECT = wait_exponential_jitter(multiplier=0.01, max=0.5, jitter=0.01)


def connect_wait(attempt: int) -> float:
    """Seconds to wait before connect attempt ``attempt + 1`` (``attempt`` >= 1)."""
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt
    return float(_CONNECT(state))
