"""Supervision: strategies, restart types, intensity and escalation.

Crashes surface as ChildFailed, which only the asyncio base emits, so the
crash tests use the ``asys`` fixture; the others run on both bases.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from thespian.actors import ActorAddress, ActorExitRequest

from rtcs.errors import ConfigError
from rtcs.runtime import (
    ChildSpec,
    Directory,
    Restart,
    Strategy,
    Supervise,
    Supervisor,
    SupervisorEvent,
    SupervisorPolicy,
)
from tests.unit.runtime.runtime_actors import (
    Close,
    Crash,
    EventLog,
    Get,
    Harness,
    HookCalls,
    Incr,
    Init,
    Open,
    Quit,
    Worker,
)

INIT = 10
NAMES = ("A", "B", "C")


class Tree:
    """A supervisor over workers A, B, C, each counter bumped once past INIT."""

    def __init__(self, harness: Harness) -> None:
        self.h = harness
        self.directory = Directory()
        self.log = EventLog()
        self.supervisor: ActorAddress | None = None

    async def start(
        self,
        policy: SupervisorPolicy,
        restarts: dict[str, Restart] | None = None,
        name: str = "top",
    ) -> dict[str, ActorAddress]:
        restarts = restarts or {}
        specs = tuple(
            ChildSpec(n, Worker, restarts.get(n, Restart.PERMANENT), Init(INIT)) for n in NAMES
        )
        self.supervisor = self.h.create(Supervisor)
        self.h.tell(self.supervisor, Supervise(name, policy, specs, self.directory, self.log))
        await self.log.wait_for(lambda evs: _count(evs, "started") == len(NAMES))
        for n in NAMES:
            self.h.tell(self.directory.require(n), Incr())
        assert await self.counters() == {n: INIT + 1 for n in NAMES}
        return self.addresses()

    def addresses(self) -> dict[str, ActorAddress]:
        return {n: self.directory.require(n) for n in self.directory.names()}

    async def counters(self) -> dict[str, int]:
        return {n: await self.h.ask(a, Get()) for n, a in self.addresses().items()}

    async def is_dead(self, address: ActorAddress) -> bool:
        return await self.h.is_dead(address)


def _count(events: list[SupervisorEvent], kind: str, child: str | None = None) -> int:
    return sum(1 for e in events if e.kind == kind and (child is None or e.child == child))


@pytest.mark.parametrize(
    ("strategy", "restarted"),
    [
        (Strategy.ONE_FOR_ONE, {"B"}),
        (Strategy.ALL_FOR_ONE, {"A", "B", "C"}),
        (Strategy.REST_FOR_ONE, {"B", "C"}),
    ],
)
async def test_strategy_restarts_exactly_the_right_children(
    asys: Harness, strategy: Strategy, restarted: set[str]
) -> None:
    tree = Tree(asys)
    before = await tree.start(SupervisorPolicy(strategy))

    asys.tell(before["B"], Crash())
    await tree.log.wait_for(lambda evs: _count(evs, "restarted") == len(restarted))

    after = tree.addresses()
    counters = await tree.counters()
    assert set(after) == set(NAMES)
    for n in NAMES:
        if n in restarted:
            assert after[n] != before[n], n
            assert counters[n] == INIT, n
            assert await tree.is_dead(before[n]), n
        else:
            assert after[n] == before[n], n
            assert counters[n] == INIT + 1, n
    restart_events = [e for e in tree.log.events if e.kind == "restarted"]
    # Restarted in start order, reported with the supervisor's name and strategy.
    assert [e.child for e in restart_events] == [n for n in NAMES if n in restarted]
    assert {(e.supervisor, e.strategy) for e in restart_events} == {("top", strategy)}
    assert all("B: RuntimeError: crash requested" in e.reason for e in restart_events)


async def test_transient_child_is_restarted_after_a_crash(asys: Harness) -> None:
    tree = Tree(asys)
    before = await tree.start(SupervisorPolicy(), {"B": Restart.TRANSIENT})
    asys.tell(before["B"], Crash())
    await tree.log.wait_for(lambda evs: _count(evs, "restarted", "B") == 1)
    assert tree.addresses()["B"] != before["B"]


async def test_temporary_child_is_never_restarted(asys: Harness) -> None:
    tree = Tree(asys)
    before = await tree.start(SupervisorPolicy(Strategy.ALL_FOR_ONE), {"B": Restart.TEMPORARY})
    asys.tell(before["B"], Crash())
    await tree.log.wait_for(lambda evs: _count(evs, "stopped", "B") == 1)

    assert _count(tree.log.events, "restarted") == 0
    assert tree.addresses() == {"A": before["A"], "C": before["C"]}
    assert await tree.is_dead(before["B"])  # a crashed child is stopped, not left running


async def test_temporary_sibling_is_dropped_by_all_for_one(asys: Harness) -> None:
    tree = Tree(asys)
    before = await tree.start(SupervisorPolicy(Strategy.ALL_FOR_ONE), {"C": Restart.TEMPORARY})
    asys.tell(before["A"], Crash())
    await tree.log.wait_for(lambda evs: _count(evs, "restarted") == 2)
    assert _count(tree.log.events, "stopped", "C") == 1
    assert set(tree.addresses()) == {"A", "B"}
    assert await tree.is_dead(before["C"])


async def test_permanent_child_is_restarted_after_a_normal_exit(harness: Harness) -> None:
    tree = Tree(harness)
    before = await tree.start(SupervisorPolicy())
    harness.tell(before["A"], Quit())
    await tree.log.wait_for(lambda evs: _count(evs, "restarted", "A") == 1)
    after = tree.addresses()
    assert after["A"] != before["A"]
    assert (after["B"], after["C"]) == (before["B"], before["C"])
    assert await tree.counters() == {"A": INIT, "B": INIT + 1, "C": INIT + 1}


async def test_transient_child_is_not_restarted_after_a_normal_exit(harness: Harness) -> None:
    tree = Tree(harness)
    before = await tree.start(SupervisorPolicy(Strategy.ALL_FOR_ONE), {"A": Restart.TRANSIENT})
    harness.tell(before["A"], Quit())
    await tree.log.wait_for(lambda evs: _count(evs, "stopped", "A") == 1)
    assert _count(tree.log.events, "restarted") == 0
    assert tree.addresses() == {"B": before["B"], "C": before["C"]}


async def test_intensity_exceeded_escalates_to_the_outside(asys: Harness) -> None:
    tree = Tree(asys)
    before = await tree.start(SupervisorPolicy(max_restarts=2, within=60))
    for crash in (1, 2):
        asys.tell(tree.directory.require("A"), Crash())

        def restarted(evs: list[SupervisorEvent], n: int = crash) -> bool:
            return _count(evs, "restarted") == n

        await tree.log.wait_for(restarted)

    asys.tell(tree.directory.require("A"), Crash())
    await tree.log.wait_for(lambda evs: _count(evs, "escalated") == 1)

    (event,) = [e for e in tree.log.events if e.kind == "escalated"]
    assert (event.supervisor, event.child) == ("top", "A")
    assert tree.directory.names() == []
    assert tree.supervisor is not None
    for address in (before["B"], before["C"], tree.supervisor):
        assert await tree.is_dead(address)


async def test_restarts_outside_the_window_do_not_escalate(asys: Harness) -> None:
    tree = Tree(asys)
    # One restart allowed per (tiny) window: each crash finds the previous one expired.
    await tree.start(SupervisorPolicy(max_restarts=1, within=1e-9))
    for crash in (1, 2, 3):
        asys.tell(tree.directory.require("A"), Crash())

        def restarted(evs: list[SupervisorEvent], n: int = crash) -> bool:
            return _count(evs, "restarted") == n

        await tree.log.wait_for(restarted)
    assert _count(tree.log.events, "escalated") == 0


async def test_nested_escalation_restarts_the_subtree(asys: Harness) -> None:
    directory, log = Directory(), EventLog()
    inner = Supervise(
        "inner",
        SupervisorPolicy(max_restarts=0),
        (ChildSpec("X", Worker, init=Init(INIT)), ChildSpec("Y", Worker, init=Init(INIT))),
        directory,
        log,
    )
    top = asys.create(Supervisor)
    children = (ChildSpec("inner", Supervisor, init=inner), ChildSpec("Z", Worker, init=Init(INIT)))
    asys.tell(top, Supervise("top", SupervisorPolicy(), children, directory, log))
    await log.wait_for(lambda evs: len(evs) == 4)  # inner, X, Y, Z started
    before = {n: directory.require(n) for n in ("inner", "X", "Y", "Z")}
    for n in ("X", "Y", "Z"):
        asys.tell(before[n], Incr())

    asys.tell(before["X"], Crash())
    await log.wait_for(lambda evs: log.count("started", supervisor="inner") == 4)

    assert log.count("restarted", "inner", "top") == 1
    assert log.count("escalated") == 0  # handled by "top", not reported outside
    (restart,) = [e for e in log.events if e.kind == "restarted"]
    assert restart.reason.startswith("inner: escalated: X: RuntimeError")
    after = {n: directory.require(n) for n in ("inner", "X", "Y", "Z")}
    for n in ("inner", "X", "Y"):
        assert after[n] != before[n], n
        assert await Tree(asys).is_dead(before[n]), n
    assert after["Z"] == before["Z"]
    assert [await asys.ask(after[n], Get()) for n in ("X", "Y", "Z")] == [INIT, INIT, INIT + 1]


@dataclass(frozen=True, slots=True)
class UseHooks:
    calls: HookCalls


class DynamicSupervisor(Supervisor):
    """Starts temporary children on demand, as a connection supervisor would."""

    calls: HookCalls | None = None

    def receiveMsg_UseHooks(self, msg: UseHooks, sender: ActorAddress) -> None:
        self.calls = msg.calls

    def receiveMsg_Open(self, msg: Open, sender: ActorAddress) -> None:
        spec = ChildSpec(msg.name, Worker, Restart.TEMPORARY, Init(0))
        self.send(sender, self.start_child(spec))

    def receiveMsg_Close(self, msg: Close, sender: ActorAddress) -> None:
        self.stop_child(msg.name)
        self.send(sender, ("closed", self.child_address(msg.name) is None))

    def on_child_started(self, name: str, address: ActorAddress) -> None:
        if self.calls is not None:
            self.calls.started.append(name)

    def on_child_crashed(self, name: str, reason: str) -> None:
        if self.calls is not None:
            self.calls.crashed.append((name, reason))

    def on_child_exited(self, name: str) -> None:
        if self.calls is not None:
            self.calls.exited.append(name)

    def on_started(self) -> None:
        if self.calls is not None:
            self.calls.started.append(f"supervisor {self.context}")


async def test_dynamic_children(harness: Harness) -> None:
    directory, log, calls = Directory(), EventLog(), HookCalls()
    sup = harness.create(DynamicSupervisor)
    harness.tell(sup, UseHooks(calls))
    harness.tell(sup, Supervise("conns", SupervisorPolicy(), (), directory, log, context="ctx"))

    first = await harness.ask(sup, Open("c1"))
    second = await harness.ask(sup, Open("c2"))
    assert directory.names() == ["c1", "c2"]
    assert directory.require("c1") == first
    assert await harness.ask(first, Get()) == 0

    assert await harness.ask(sup, Close("c1")) == ("closed", True)
    assert directory.names() == ["c2"]
    assert await Tree(harness).is_dead(first)
    assert calls.started == ["supervisor ctx", "c1", "c2"]
    assert [(e.child, e.kind) for e in log.events] == [
        ("c1", "started"),
        ("c2", "started"),
        ("c1", "stopped"),
    ]
    assert calls.crashed == []

    harness.tell(second, Quit())  # a temporary child exiting is forgotten
    await log.wait_for(lambda evs: _count(evs, "stopped", "c2") == 1)
    assert calls.exited == ["c2"]
    assert calls.crashed == []
    assert directory.names() == []


async def test_crash_hook_sees_the_failure(asys: Harness) -> None:
    directory, log, calls = Directory(), EventLog(), HookCalls()
    sup = asys.create(DynamicSupervisor)
    asys.tell(sup, UseHooks(calls))
    asys.tell(sup, Supervise("conns", SupervisorPolicy(), (), directory, log))
    child = await asys.ask(sup, Open("c1"))
    asys.tell(child, Crash())
    await log.wait_for(lambda evs: _count(evs, "stopped", "c1") == 1)
    assert calls.crashed == [("c1", "RuntimeError: crash requested")]
    assert calls.exited == []


async def test_shutdown_stops_children_and_unregisters_them(harness: Harness) -> None:
    tree = Tree(harness)
    before = await tree.start(SupervisorPolicy())
    assert tree.supervisor is not None
    harness.tell(tree.supervisor, ActorExitRequest())
    await tree.log.wait_for(lambda evs: _count(evs, "stopped") == 3)
    assert [e.child for e in tree.log.events if e.kind == "stopped"] == ["C", "B", "A"]
    assert tree.directory.names() == []
    for address in before.values():
        assert await tree.is_dead(address)
    assert _count(tree.log.events, "restarted") == 0


def test_specs_are_validated() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Supervise("s", SupervisorPolicy(), (ChildSpec("a", Worker), ChildSpec("a", Worker)))
    with pytest.raises(ConfigError, match="max_restarts"):
        SupervisorPolicy(max_restarts=-1)
    with pytest.raises(ConfigError, match="within"):
        SupervisorPolicy(within=0)


def test_policies_and_specs_take_names_or_members_and_refuse_the_rest() -> None:
    from rtcs.errors import ConfigError
    from rtcs.runtime.supervision import ChildSpec, Restart, Strategy, SupervisorPolicy
    from tests.unit.runtime.runtime_actors import Echo

    assert SupervisorPolicy("rest_for_one").strategy is Strategy.REST_FOR_ONE  # type: ignore[arg-type]
    assert ChildSpec("a", Echo, "temporary").restart is Restart.TEMPORARY  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="strategy"):
        SupervisorPolicy("one_for_all")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="restart"):
        ChildSpec("a", Echo, "sometimes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_restarts"):
        SupervisorPolicy(max_restarts=1.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="within"):
        SupervisorPolicy(within="5")  # type: ignore[arg-type]
