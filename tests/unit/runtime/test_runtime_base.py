"""What the asyncio base does differently from Thespian's stock simple base."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest
from thespian.actors import ActorAddress, ActorExitRequest, PoisonMessage

from rtcs.errors import ConfigError
from rtcs.runtime import ChildFailed, asyncio_base, start_system, stop_system
from tests.unit.runtime.runtime_actors import (
    ArmOne,
    AsyncUser,
    Cascade,
    Countdown,
    DelayedEcho,
    DelayedEchoer,
    Echo,
    Failer,
    FailureWatcher,
    Fetch,
    Flaky,
    Harness,
    Record,
    Recorder,
    Spawn,
    Spawner,
    Timed,
    WaitExits,
)


async def test_tell_never_runs_actor_code(asys: Harness) -> None:
    recorder = asys.create(Recorder)
    sink: list[str] = []
    asys.tell(recorder, Record(sink, "told"))
    assert sink == []
    assert await asys.ask(recorder, Record(sink, "asked")) == "asked"
    assert sink == ["told", "asked"]


async def test_drain_yields_to_the_loop_between_batches(asys: Harness) -> None:
    loop = asyncio.get_running_loop()
    countdown = asys.create(Countdown)
    progress: list[int] = []
    done: asyncio.Future[int] = loop.create_future()
    seen: list[tuple[int, bool]] = []

    asys.tell(countdown, Cascade(10_000, progress, done))
    loop.call_soon(lambda: seen.append((len(progress), done.done())))

    assert await asyncio.wait_for(done, 5) == 10_001
    (delivered, finished), *_ = seen
    assert not finished
    assert delivered == 256  # exactly one batch ran before the loop got a turn


async def test_batch_size_is_configurable() -> None:
    loop = asyncio.get_running_loop()
    system = start_system(batch_size=10)
    try:
        countdown = system.createActor(Countdown)
        progress: list[int] = []
        done: asyncio.Future[int] = loop.create_future()
        seen: list[int] = []
        system.tell(countdown, Cascade(100, progress, done))
        loop.call_soon(lambda: seen.append(len(progress)))
        await asyncio.wait_for(done, 5)
        assert seen == [10]
    finally:
        stop_system(system)


async def test_timers_are_cancelled_when_the_actor_exits(asys: Harness) -> None:
    loop = asyncio.get_running_loop()
    base = asyncio_base(asys.system)
    doomed, witness = asys.create(Timed), asys.create(Timed)
    fired: list[Any] = []
    assert await asys.ask(doomed, ArmOne(0.02, "doomed", fired)) == "armed"
    handles = list(base.actorRegistry[doomed.actorAddressString].timers.values())
    assert len(handles) == 1

    asys.tell(doomed, ActorExitRequest())
    witness_fired: asyncio.Future[Any] = loop.create_future()
    assert await asys.ask(witness, ArmOne(0.05, "witness", fired, witness_fired)) == "armed"

    assert handles[0].cancelled()
    assert await asyncio.wait_for(witness_fired, 2) == "witness"
    assert fired == ["witness"]


async def test_registry_does_not_grow(asys: Harness) -> None:
    base = asyncio_base(asys.system)
    spawner = asys.create(Spawner)
    before = len(base.actorRegistry)

    top_level = [asys.create(Echo) for _ in range(500)]
    children = await asys.ask(spawner, Spawn(500))
    assert len(base.actorRegistry) == before + 1000
    for address in (*top_level, *children):
        asys.tell(address, ActorExitRequest())
    assert await asys.ask(spawner, WaitExits(500)) == 500

    assert len(base.actorRegistry) == before
    assert base.actorRegistry[spawner.actorAddressString]._yung == {}


async def test_replies_to_tell_are_routed_not_accumulated() -> None:
    received: list[Any] = []
    system = start_system(on_external_message=lambda msg, sender: received.append(msg))
    try:
        echo = system.createActor(Echo)
        for i in range(100):
            system.tell(echo, i)
        assert await asyncio.wait_for(_ask(system, echo, "barrier"), 2) == "barrier"
        assert received == list(range(100))
    finally:
        stop_system(system)


async def _ask(system: Any, address: ActorAddress, message: Any) -> Any:
    return await Harness("asyncio", system).ask(address, message)


async def test_ask_timeout_raises_and_cleans_up(asys: Harness) -> None:
    base = asyncio_base(asys.system)
    silent = asys.create(Timed)  # ignores strings
    before = len(base.actorRegistry)
    with pytest.raises(asyncio.TimeoutError):
        await asys.ask(silent, "anyone?", timeout=0.02)
    assert len(base.actorRegistry) == before


async def test_concurrent_asks_get_their_own_replies(asys: Harness) -> None:
    echoer = asys.create(DelayedEchoer)
    # Later asks are answered first.
    asks = [asys.ask(echoer, DelayedEcho(i, 0.05 - i * 0.01)) for i in range(5)]
    assert await asyncio.gather(*asks) == [0, 1, 2, 3, 4]


async def test_blocking_ask_is_refused(asys: Harness) -> None:
    echo = asys.create(Echo)
    with pytest.raises(RuntimeError, match="await"):
        asys.system.ask(echo, "x", 1)


async def test_child_failed_reaches_the_parent(asys: Harness) -> None:
    watcher = asys.create(FailureWatcher)
    child, poison, failed = await asys.ask(watcher, "go")
    assert isinstance(poison, PoisonMessage)
    assert poison.poisonMessage == "boom"
    assert isinstance(failed, ChildFailed)
    assert failed.child == child
    assert failed.message == "boom"
    assert failed.reason == "RuntimeError: boom"
    assert failed.details == poison.details


async def test_top_level_failure_reaches_the_outside() -> None:
    received: list[Any] = []
    system = start_system(on_external_message=lambda msg, sender: received.append(msg))
    try:
        failer = system.createActor(Failer)
        system.tell(failer, "boom")
        assert await _ask(system, failer, "barrier") == "barrier"
        kinds = [type(m).__name__ for m in received]
        assert sorted(kinds) == ["ChildFailed", "PoisonMessage"]
    finally:
        stop_system(system)


async def test_failure_is_logged_once_with_the_address(
    asys: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    failer = asys.create(Failer)
    with caplog.at_level(logging.ERROR, logger="rtcs.runtime"):
        await asys.ask(failer, "boom")
    records = [r for r in caplog.records if r.name == "rtcs.runtime"]
    assert len(records) == 1
    assert failer.actorAddressString in records[0].getMessage()


async def test_default_is_a_single_delivery(asys: Harness) -> None:
    failer = asys.create(Failer)
    attempts: list[int] = []
    reply = await asys.ask(failer, Flaky(1, attempts))
    assert isinstance(reply, PoisonMessage)
    assert len(attempts) == 1


async def test_delivery_attempts_retries_a_failing_message() -> None:
    system = start_system(delivery_attempts=3)
    try:
        failer = system.createActor(Failer)
        attempts: list[int] = []
        assert await _ask(system, failer, Flaky(2, attempts)) == "ok"
        assert len(attempts) == 3

        attempts = []
        reply = await _ask(system, failer, Flaky(3, attempts))
        assert isinstance(reply, PoisonMessage)
        assert len(attempts) == 3
    finally:
        stop_system(system)


async def test_run_async_delivers_the_result(asys: Harness) -> None:
    async def work() -> int:
        await asyncio.sleep(0)
        return 42

    user = asys.create(AsyncUser)
    assert await asys.ask(user, Fetch(work())) == 42


async def test_run_async_delivers_the_exception(asys: Harness) -> None:
    async def work() -> int:
        raise ValueError("backend down")

    user = asys.create(AsyncUser)
    outcome = await asys.ask(user, Fetch(work()))
    assert isinstance(outcome, ValueError)
    assert str(outcome) == "backend down"


async def test_run_async_drops_the_outcome_after_exit(asys: Harness) -> None:
    loop = asyncio.get_running_loop()
    base = asyncio_base(asys.system)
    gate: asyncio.Future[int] = loop.create_future()

    async def work() -> int:
        return await gate

    user = asys.create(AsyncUser)
    asys.tell(user, Fetch(work()))
    asys.tell(user, ActorExitRequest())
    assert await asys.ask(asys.create(Echo), "barrier") == "barrier"
    assert len(base._tasks) == 1

    (task,) = base._tasks
    gate.set_result(1)
    await task  # its done callback runs before this coroutine resumes
    assert base._tasks == set()
    assert not base._pendingSends  # no Fetched message was queued for the dead actor


async def test_run_async_needs_the_asyncio_base() -> None:
    system = start_system(base="simple")
    try:
        user = system.createActor(AsyncUser)

        async def work() -> int:
            return 1

        reply = system.ask(user, Fetch(work()), 1)
        assert isinstance(reply, PoisonMessage)
        assert "run_async needs an actor system on the asyncio base" in reply.details
        with pytest.raises(RuntimeError):
            await _ask(system, user, "x")
    finally:
        stop_system(system)


async def test_tell_threadsafe_hops_to_the_loop(asys: Harness) -> None:
    base = asyncio_base(asys.system)
    recorder = asys.create(Recorder)
    sink: list[str] = []
    threads: list[int] = []

    def from_thread() -> None:
        threads.append(threading.get_ident())
        base.tell_threadsafe(recorder, Record(sink, "from thread"))

    await asyncio.get_running_loop().run_in_executor(None, from_thread)
    assert await asys.ask(recorder, Record(sink, "after")) == "after"
    assert sink == ["from thread", "after"]
    assert threads[0] != threading.get_ident()


async def test_stop_system_stops_everything() -> None:
    loop = asyncio.get_running_loop()
    system = start_system()
    base = asyncio_base(system)
    timed = system.createActor(Timed)
    fired: list[Any] = []
    assert await _ask(system, timed, ArmOne(5, "never", fired)) == "armed"
    handle = next(iter(base.actorRegistry[timed.actorAddressString].timers.values()))
    gate: asyncio.Future[int] = loop.create_future()
    user = system.createActor(AsyncUser)
    system.tell(user, Fetch(gate))
    system.tell(system.createActor(Echo), "queued")
    pending_ask = asyncio.ensure_future(_ask(system, system.createActor(Timed), "no reply"))
    # The pending ask started before this barrier ask, so its request is queued.
    assert await _ask(system, system.createActor(Echo), "barrier") == "barrier"

    stop_system(system)

    assert handle.cancelled()
    assert base._drain_handle is None
    assert not base._pendingSends
    assert base.top_level_actors() == []
    assert base._tasks == set()
    assert gate.cancelled()  # the backend call in flight was cancelled, not abandoned
    with pytest.raises(RuntimeError):
        await pending_ask
    stop_system(system)  # idempotent


def test_start_system_validates_its_arguments() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        start_system(batch_size=0)
    with pytest.raises(ConfigError, match="delivery_attempts"):
        start_system(base="simple", delivery_attempts=2)
    with pytest.raises(ConfigError, match="base"):
        start_system(base="multiprocTCPBase")  # type: ignore[arg-type]
    for bad in (2.5, True, "8"):
        with pytest.raises(ConfigError, match="batch_size"):
            start_system(batch_size=bad)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        start_system()  # no running loop
