from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from rtcs.runtime import start_system, stop_system
from tests.unit.actors.actor_bed import ActorBed, make_context


@pytest.fixture(params=["simple", "asyncio"])
async def bed(request: pytest.FixtureRequest) -> AsyncIterator[ActorBed]:
    """A node context and an actor system on each base, stopped after the test."""
    system = start_system(base=request.param)
    try:
        yield ActorBed(request.param, system, make_context())
    finally:
        stop_system(system)
