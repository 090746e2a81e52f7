from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from rtcs.runtime import start_system, stop_system
from tests.unit.runtime.runtime_actors import Harness


@pytest.fixture(params=["simple", "asyncio"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """A running actor system on each base, stopped after the test."""
    system = start_system(base=request.param)
    try:
        yield Harness(request.param, system)
    finally:
        stop_system(system)


@pytest.fixture
async def asys() -> AsyncIterator[Harness]:
    """A running actor system on the asyncio base only."""
    system = start_system()
    try:
        yield Harness("asyncio", system)
    finally:
        stop_system(system)
