"""Fixtures for the conformance suite: one activator (with its demo pod) per test - it starts in
about a millisecond, and a case that breaks a connection, or the activator, cannot leak into the
next case.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from frames import H2Client
from under_test import ActivatorUnderTest, running_activator


@pytest.fixture
async def activator() -> AsyncIterator[ActivatorUnderTest]:
    async with running_activator() as under_test:
        yield under_test


@pytest.fixture
async def h2(activator: ActivatorUnderTest) -> H2Client:
    """A client connection to the activator, past the HTTP/2 handshake."""
    return await activator.client()
