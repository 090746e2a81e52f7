"""The same actor tests on Thespian's stock simple base and on the asyncio base."""

from __future__ import annotations

from thespian.actors import ActorExitRequest, PoisonMessage

from tests.unit.runtime.runtime_actors import (
    Arm,
    CreateNamed,
    Creator,
    Dispatcher,
    Echo,
    Exited,
    Failer,
    Forward,
    Harness,
    KillChild,
    Observer,
    Parent,
    Ping,
    Proxy,
    Sleeper,
    Spawn,
    WaitFor,
)


async def test_create_send_reply(harness: Harness) -> None:
    echo = harness.create(Echo)
    assert await harness.ask(echo, "hello") == "hello"
    assert await harness.ask(echo, Ping(3)) == Ping(3)


async def test_type_dispatcher_picks_handler_by_message_class(harness: Harness) -> None:
    actor = harness.create(Dispatcher)
    assert await harness.ask(actor, Ping(1)) == ("ping", 1)
    assert await harness.ask(actor, "text") == ("str", "text")
    # bool has no handler: the dispatcher walks the MRO to int.
    assert await harness.ask(actor, True) == ("int", True)
    assert await harness.ask(actor, 2.5) == ("unrecognized", "float")


async def test_children_and_child_actor_exited(harness: Harness) -> None:
    parent = harness.create(Parent)
    (first, second) = await harness.ask(parent, Spawn(2))
    assert first != second
    assert await harness.ask(first, "alive") == "alive"

    assert await harness.ask(parent, KillChild(first)) == Exited(first)

    assert await harness.is_dead(first)
    assert not await harness.is_dead(second)
    assert await harness.ask(second, "alive") == "alive"


async def test_actor_exit_request_cascades_to_children(harness: Harness) -> None:
    observer = harness.create(Observer)
    parent = harness.create(Parent)
    children = await harness.ask(parent, Spawn(2, observer))

    harness.tell(parent, ActorExitRequest())

    exited = await harness.ask(observer, WaitFor(2))
    assert exited == sorted(c.actorAddressString for c in children)
    for address in (parent, *children):
        assert await harness.is_dead(address)


async def test_wakeups_arrive_in_delay_order_with_their_payloads(harness: Harness) -> None:
    sleeper = harness.create(Sleeper)
    timers = ((0.03, "third"), (0.01, "first"), (0.02, {"second": 2}))
    reply = await harness.ask(sleeper, Arm(timers))
    assert reply == ("first", {"second": 2}, "third")


async def test_failed_message_returns_poison_to_sender(harness: Harness) -> None:
    failer = harness.create(Failer)
    reply = await harness.ask(failer, "boom")
    assert isinstance(reply, PoisonMessage)
    assert reply.poisonMessage == "boom"
    assert "RuntimeError: boom" in reply.details
    # The actor survives its failure.
    assert await harness.ask(failer, "fine") == "fine"


async def test_poison_reaches_an_actor_sender(harness: Harness) -> None:
    failer = harness.create(Failer)
    proxy = harness.create(Proxy)
    reply = await harness.ask(proxy, Forward(failer, "boom"))
    assert isinstance(reply, PoisonMessage)
    assert reply.poisonMessage == "boom"


async def test_global_name_returns_the_same_actor(harness: Harness) -> None:
    first = harness.create(Echo, global_name="echo")
    again = harness.create(Echo, global_name="echo")
    other = harness.create(Echo)
    assert first == again
    assert first != other
    assert await harness.ask(first, "whoami") == "echo"

    creator = harness.create(Creator)
    assert await harness.ask(creator, CreateNamed("echo")) == first
