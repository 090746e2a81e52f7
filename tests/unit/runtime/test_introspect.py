"""Read-only views of a running system (rtcs.runtime.introspect): supervisor
state, the tree, the mailboxes; and the ``gave_up`` event escalations are
counted with.

Crashes surface as ChildFailed, which only the asyncio base emits, so these
tests use the ``asys`` fixture.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from thespian.actors import ActorAddress, ActorTypeDispatcher

from rtcs.runtime import (
    ActorView,
    ChildSpec,
    Directory,
    Restart,
    Strategy,
    Supervise,
    Supervisor,
    SupervisorEvent,
    SupervisorPolicy,
    SupervisorView,
    TreeView,
    asyncio_base,
    base_of,
    start_system,
    stop_system,
)
from rtcs.runtime.introspect import RUNTIME
from tests.unit.runtime.runtime_actors import (
    Crash,
    EventLog,
    Get,
    Harness,
    Incr,
    Init,
    Open,
    Worker,
)

INIT = 10


class Unnamed(Supervisor):
    """Starts children that are not in the directory, as the connection supervisor does."""

    def receiveMsg_Open(self, msg: Open, sender: ActorAddress) -> None:
        spec = ChildSpec(msg.name, Worker, Restart.TEMPORARY, Init(0), register=False)
        self.send(sender, self.start_child(spec))


KINDS: dict[type, str] = {Supervisor: "sup", Unnamed: "unnamed-sup", Worker: "worker"}


def kind_of(actor_class: type) -> str:
    return KINDS.get(actor_class, "else")


class Node:
    """top (one-for-one) -> inner (supervisor: X, Y), conns (unnamed children), Z."""

    def __init__(self, asys: Harness, inner: SupervisorPolicy, top: SupervisorPolicy) -> None:
        self.h = asys
        self.directory = Directory()
        self.log = EventLog()
        worker = (Restart.PERMANENT, Init(INIT))
        inner_tree = Supervise(
            "inner",
            inner,
            (ChildSpec("X", Worker, *worker), ChildSpec("Y", Worker, *worker)),
            self.directory,
            self.log,
        )
        conns = Supervise("conns", SupervisorPolicy(), (), self.directory, self.log)
        children = (
            ChildSpec("inner", Supervisor, init=inner_tree),
            ChildSpec("conns", Unnamed, init=conns),
            ChildSpec("Z", Worker, *worker),
        )
        self.top = asys.create(Supervisor)
        asys.tell(self.top, Supervise("top", top, children, self.directory, self.log))
        self.view = TreeView(asyncio_base(asys.system), self.top, kind_of)

    async def started(self) -> None:
        # inner, X, Y, conns, Z
        await self.log.wait_for(lambda evs: self.log.count("started") == 5)

    def address(self, name: str) -> ActorAddress:
        return self.directory.require(name)

    def supervisor(self, name: str) -> Supervisor:
        address = self.top if name == "top" else self.address(name)
        instance = asyncio_base(self.h.system).instance_at(address.actorAddressString)
        assert isinstance(instance, Supervisor)
        return instance


def restarted(n: int) -> Callable[[list[SupervisorEvent]], bool]:
    """``n`` children restarted so far."""
    return lambda events: sum(1 for e in events if e.kind == "restarted") == n


def child(view: SupervisorView, name: str) -> ActorView | SupervisorView:
    (found,) = [c for c in view.children if c.name == name]
    return found


async def test_the_tree_names_its_children_and_counts_the_unnamed_ones(asys: Harness) -> None:
    node = Node(asys, SupervisorPolicy(Strategy.ALL_FOR_ONE, 2, 7.0), SupervisorPolicy())
    await node.started()
    for name in ("c1", "c2", "c3"):
        await asys.ask(node.address("conns"), Open(name))

    tree = node.view.tree()

    assert tree is not None
    assert (tree.name, tree.kind, tree.strategy) == ("top", "sup", Strategy.ONE_FOR_ONE)
    assert [c.name for c in tree.children] == ["inner", "conns", "Z"]
    assert tree.unnamed == {}
    inner = child(tree, "inner")
    assert isinstance(inner, SupervisorView)
    assert (inner.strategy, inner.max_restarts, inner.within) == (Strategy.ALL_FOR_ONE, 2, 7.0)
    assert (inner.restarts, inner.budget_left) == (0, 2)
    assert inner.children == (ActorView("X", "worker", 0), ActorView("Y", "worker", 0))
    conns = child(tree, "conns")
    assert isinstance(conns, SupervisorView)
    assert conns.kind == "unnamed-sup"
    assert conns.children == ()
    assert conns.unnamed == {"worker": 3}
    assert child(tree, "Z") == ActorView("Z", "worker", 0)


async def test_mailboxes_count_what_waits_by_kind(asys: Harness) -> None:
    node = Node(asys, SupervisorPolicy(), SupervisorPolicy())
    await node.started()
    unnamed = await asys.ask(node.address("conns"), Open("c1"))
    await asys.ask(node.address("conns"), Open("c2"))
    assert node.view.mailboxes() == {}
    # Queued, not yet handled: nothing runs before this test awaits.
    for _ in range(5):
        asys.tell(node.address("Z"), Incr())
    for _ in range(2):
        asys.tell(node.address("X"), Incr())
    for _ in range(3):
        asys.tell(unnamed, Incr())
    asys.tell(node.top, Get())  # a supervisor ignores it, but it waits first

    assert node.view.mailboxes() == {"worker": 10, "sup": 1}
    tree = node.view.tree()
    assert tree is not None
    assert tree.mailbox == 1
    assert tree.mailboxes == {"sup": 0, "unnamed-sup": 0, "worker": 5}
    assert child(tree, "Z") == ActorView("Z", "worker", 5)
    inner = child(tree, "inner")
    assert isinstance(inner, SupervisorView)
    assert inner.mailboxes == {"worker": 2}
    conns = child(tree, "conns")
    assert isinstance(conns, SupervisorView)
    assert (conns.unnamed, conns.mailboxes) == ({"worker": 2}, {"worker": 3})

    assert await asys.ask(node.address("Z"), Get()) == INIT + 5  # handled in order
    assert node.view.mailboxes() == {}


async def test_messages_for_an_actor_that_exited_count_as_runtime(asys: Harness) -> None:
    node = Node(asys, SupervisorPolicy(), SupervisorPolicy())
    await node.started()
    before = node.address("Z")
    asys.tell(before, Crash())
    await node.log.wait_for(lambda evs: node.log.count("restarted", "Z") == 1)
    assert await asys.is_dead(before)

    asys.tell(before, Incr())

    assert node.view.mailboxes() == {RUNTIME: 1}


async def test_restarts_and_the_budget_left_in_the_window(asys: Harness) -> None:
    node = Node(asys, SupervisorPolicy(Strategy.ALL_FOR_ONE, 3, 5.0), SupervisorPolicy())
    await node.started()
    for crash in (1, 2):
        asys.tell(node.address("X"), Crash())
        # all-for-one: two children restarted per crash, one restart counted.
        await node.log.wait_for(restarted(2 * crash))

    state = node.supervisor("inner").state()

    assert (state.name, state.policy.max_restarts) == ("inner", 3)
    assert (state.restarts, state.budget_left) == (2, 1)
    assert [(c.name, c.actor_class, c.restart) for c in state.children] == [
        ("X", Worker, Restart.PERMANENT),
        ("Y", Worker, Restart.PERMANENT),
    ]
    assert state.unnamed == {}
    assert all(c.address == node.address(c.name) for c in state.children)
    later = node.supervisor("inner").state(time.monotonic() + 5.1)
    assert (later.restarts, later.budget_left) == (2, 3)  # the window has passed
    tree = node.view.tree()
    assert tree is not None
    inner = child(tree, "inner")
    assert isinstance(inner, SupervisorView)
    assert (inner.restarts, inner.budget_left) == (2, 1)


async def test_temporary_children_never_use_the_budget(asys: Harness) -> None:
    node = Node(asys, SupervisorPolicy(), SupervisorPolicy())
    await node.started()
    worker = await asys.ask(node.address("conns"), Open("c1"))
    asys.tell(worker, Crash())
    await node.log.wait_for(lambda evs: node.log.count("stopped", "c1") == 1)

    await asys.ask(node.address("conns"), Open("c2"))

    state = node.supervisor("conns").state()

    assert (state.restarts, state.budget_left, state.children) == (0, 3, ())
    assert state.unnamed == {Worker: 1}  # c2; c1 crashed and was forgotten


async def test_a_nested_supervisor_that_gives_up_says_so_before_escalating(
    asys: Harness,
) -> None:
    node = Node(asys, SupervisorPolicy(max_restarts=0), SupervisorPolicy())
    await node.started()

    asys.tell(node.address("X"), Crash())
    await node.log.wait_for(lambda evs: node.log.count("restarted", "inner", "top") == 1)

    (gave_up,) = [e for e in node.log.events if e.kind == "gave_up"]
    assert (gave_up.supervisor, gave_up.child) == ("inner", "X")
    assert gave_up.reason.startswith("X: RuntimeError")
    assert node.log.count("escalated") == 0  # handled by "top"
    assert node.supervisor("top").state().restarts == 1


async def test_a_top_level_supervisor_gives_up_then_escalates(asys: Harness) -> None:
    node = Node(asys, SupervisorPolicy(), SupervisorPolicy(max_restarts=0))
    await node.started()

    asys.tell(node.address("Z"), Crash())
    await node.log.wait_for(lambda evs: node.log.count("escalated") == 1)

    last = [(e.kind, e.child) for e in node.log.events if e.supervisor == "top"][-2:]
    assert last == [("gave_up", "Z"), ("escalated", "Z")]


async def test_a_stopped_system_has_no_tree_and_no_mailboxes() -> None:
    system = start_system()
    node = Node(Harness("asyncio", system), SupervisorPolicy(), SupervisorPolicy())
    await node.started()
    system.tell(node.address("Z"), Incr())
    assert node.view.tree() is not None

    stop_system(system)

    assert node.view.tree() is None
    assert node.view.mailboxes() == {}


class WhichBase(ActorTypeDispatcher):
    def receiveMsg_str(self, msg: str, sender: ActorAddress) -> None:
        try:
            self.send(sender, type(base_of(self)).__name__)
        except RuntimeError:
            self.send(sender, "refused")


async def test_base_of_names_the_asyncio_base_only(harness: Harness) -> None:
    answer = await harness.ask(harness.create(WhichBase), "which")

    assert answer == ("AsyncioSystemBase" if harness.kind == "asyncio" else "refused")
