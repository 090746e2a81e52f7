"""Crash storms of temporary children stay local: they never count toward
their supervisor's restart intensity (they are never restarted)."""

from __future__ import annotations

from collections.abc import Callable

from rtcs.runtime import Directory, Supervise, SupervisorEvent, SupervisorPolicy
from tests.unit.runtime.runtime_actors import Crash, EventLog, Get, Harness, HookCalls, Open
from tests.unit.runtime.test_supervision import DynamicSupervisor, UseHooks


async def test_temporary_crashes_past_the_intensity_do_not_escalate(asys: Harness) -> None:
    directory, log, calls = Directory(), EventLog(), HookCalls()
    sup = asys.create(DynamicSupervisor)
    asys.tell(sup, UseHooks(calls))
    # One restart in a minute would escalate; fifty crashes must not.
    asys.tell(
        sup, Supervise("conns", SupervisorPolicy(max_restarts=1, within=60.0), (), directory, log)
    )
    for i in range(50):
        child = await asys.ask(sup, Open(f"c{i}"))
        asys.tell(child, Crash())
        await log.wait_for(_stopped(log, i + 1))
    assert len(calls.crashed) == 50
    assert log.count("escalated") == 0
    # The supervisor still works: a new child starts and answers.
    survivor = await asys.ask(sup, Open("survivor"))
    assert await asys.ask(survivor, Get()) == 0
    assert log.count("stopped", "survivor") == 0


def _stopped(log: EventLog, n: int) -> Callable[[list[SupervisorEvent]], bool]:
    return lambda events: log.count("stopped") == n
