"""``run_async``: backend coroutines run as real tasks, their outcomes come
back as messages, and shutdown leaves nothing behind."""

from __future__ import annotations

import asyncio
import logging

import pytest
from thespian.actors import ActorExitRequest, ActorTypeDispatcher

from rtcs.runtime import start_system, stop_system
from rtcs.runtime.control import asyncio_base, run_async
from tests.unit.runtime.runtime_actors import AsyncUser, Fetch, Harness


async def test_backend_code_runs_inside_a_task(asys: Harness) -> None:
    """Backend coroutines may use what needs a task (asyncio.timeout), from
    their very first step."""

    async def work() -> bool:
        async with asyncio.timeout(1):
            return asyncio.current_task() is not None

    user = asys.create(AsyncUser)
    assert await asys.ask(user, Fetch(work())) is True


async def test_results_and_errors_cross_every_wait(asys: Harness) -> None:
    loop = asyncio.get_running_loop()
    first: asyncio.Future[int] = loop.create_future()
    second: asyncio.Future[int] = loop.create_future()
    reached = [loop.create_future(), loop.create_future()]

    async def work() -> int:
        reached[0].set_result(None)
        a = await first
        reached[1].set_result(None)
        try:
            await second
        except KeyError as exc:
            return a + len(str(exc))
        raise AssertionError("the error was not thrown in")

    user = asys.create(AsyncUser)
    reply = asyncio.ensure_future(asys.ask(user, Fetch(work())))
    await asyncio.wait_for(reached[0], 1)  # suspended on ``first``
    first.set_result(40)
    await asyncio.wait_for(reached[1], 1)  # suspended on ``second``
    second.set_exception(KeyError("x"))
    assert await reply == 43  # 40 + len("'x'")


async def test_an_error_after_a_wait_reaches_the_actor(asys: Harness) -> None:
    async def work() -> int:
        await asyncio.sleep(0)
        raise ValueError("late failure")

    user = asys.create(AsyncUser)
    outcome = await asys.ask(user, Fetch(work()))
    assert isinstance(outcome, ValueError) and str(outcome) == "late failure"


async def test_shutdown_cancels_a_waiting_coroutine_cleanly(asys: Harness) -> None:
    loop = asyncio.get_running_loop()
    never: asyncio.Future[int] = loop.create_future()
    cleaned: list[str] = []

    async def work() -> int:
        try:
            return await never
        finally:
            cleaned.append("finally ran")

    user = asys.create(AsyncUser)
    asys.tell(user, Fetch(work()))
    assert await asys.ask(asys.create(AsyncUser), Fetch(_now())) == "now"
    (task,) = asyncio_base(asys.system)._tasks
    stop_system(asys.system)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["finally ran"]


async def _now() -> str:
    return "now"


class _ReleasesOnExit(ActorTypeDispatcher):
    """Starts backend work from its exit handler, as connection actors do."""

    started: list[str] = []

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender: object) -> None:
        async def release() -> None:
            self.started.append("ran")

        run_async(self, release(), lambda _result: None)


async def test_work_started_while_shutting_down_is_dropped_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    system = start_system()
    system.createActor(_ReleasesOnExit)
    with caplog.at_level(logging.WARNING):
        stop_system(system)
    assert _ReleasesOnExit.started == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_ask_refuses_what_would_hang_or_misroute(asys: Harness) -> None:
    from rtcs.errors import ConfigError
    from rtcs.runtime.control import ask
    from tests.unit.runtime.runtime_actors import Echo

    echo = asys.create(Echo)
    for timeout in (None, 0, -1, "5"):
        with pytest.raises(ConfigError, match="timeout"):
            await ask(asys.system, echo, "x", timeout)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await ask(asys.system, "not-an-address", "x", 1)
