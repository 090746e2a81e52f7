"""Actors, messages and helpers shared by the runtime tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from thespian.actors import (
    Actor,
    ActorAddress,
    ActorExitRequest,
    ActorSystem,
    ActorSystemMessage,
    ActorTypeDispatcher,
    ChildActorExited,
    PoisonMessage,
    WakeupMessage,
)

from rtcs.runtime import ChildFailed, SupervisorEvent, ask, run_async
from tests.support import describe, wait_until


class Harness:
    """One interface over both bases: ``await h.ask(...)`` raises TimeoutError on no reply."""

    def __init__(self, kind: str, system: ActorSystem) -> None:
        self.kind = kind
        self.system = system

    def create(self, actor_class: type[Actor], global_name: str | None = None) -> ActorAddress:
        return self.system.createActor(actor_class, globalName=global_name)

    def tell(self, address: ActorAddress, message: Any) -> None:
        self.system.tell(address, message)

    async def ask(self, address: ActorAddress, message: Any, timeout: float = 2.0) -> Any:
        if self.kind == "simple":
            reply = self.system.ask(address, message, timeout)
            if reply is None:
                raise TimeoutError(f"no reply to {message!r}")
            return reply
        return await ask(self.system, address, message, timeout)

    async def is_dead(self, address: ActorAddress) -> bool:
        """Whether the actor is gone from the system, once all that was told
        before has been handled (no reply-time guess: a slow machine cannot
        make a live actor look dead)."""
        await self.ask(self.create(Echo), "barrier")  # everything queued so far ran
        base = self.system._systemBase
        ref = base.actorRegistry.get(address.actorAddressString)
        return ref is None or ref.instance is None


class EventLog:
    """A supervisor ``on_event`` hook that tests can await."""

    def __init__(self) -> None:
        self.events: list[SupervisorEvent] = []

    def __call__(self, event: SupervisorEvent) -> None:
        self.events.append(event)

    def count(self, kind: str, child: str | None = None, supervisor: str | None = None) -> int:
        return sum(
            1
            for e in self.events
            if e.kind == kind
            and (child is None or e.child == child)
            and (supervisor is None or e.supervisor == supervisor)
        )

    async def wait_for(
        self, predicate: Callable[[list[SupervisorEvent]], bool], timeout: float = 2.0
    ) -> None:
        """Return once ``predicate(events)`` holds.

        Raises:
            AssertionError: it does not hold within ``timeout``.
        """
        await wait_until(
            lambda: predicate(self.events),
            timeout,
            message=lambda: f"{describe(predicate)} over the events so far: {self.events!r}",
        )


# ---------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Ping:
    value: Any


@dataclass(frozen=True, slots=True)
class Spawn:
    count: int
    observer: ActorAddress | None = None


@dataclass(frozen=True, slots=True)
class KillChild:
    child: ActorAddress


@dataclass(frozen=True, slots=True)
class Exited:
    child: ActorAddress


@dataclass(frozen=True, slots=True)
class Watch:
    observer: ActorAddress


@dataclass(frozen=True, slots=True)
class WaitFor:
    count: int


@dataclass(frozen=True, slots=True)
class Arm:
    timers: tuple[tuple[float, Any], ...]


@dataclass(frozen=True, slots=True)
class Flaky:
    fail_times: int
    attempts: list[int]


@dataclass(frozen=True, slots=True)
class Forward:
    target: ActorAddress
    message: Any


@dataclass(frozen=True, slots=True)
class CreateNamed:
    name: str


@dataclass(frozen=True, slots=True)
class Record:
    sink: list[Any]
    value: Any


@dataclass(frozen=True, slots=True)
class Cascade:
    remaining: int
    progress: list[int]
    done: asyncio.Future[int]


@dataclass(frozen=True, slots=True)
class ArmOne:
    delay: float
    payload: Any
    sink: list[Any]
    fired: asyncio.Future[Any] | None = None


@dataclass(frozen=True, slots=True)
class WaitExits:
    count: int


@dataclass(frozen=True, slots=True)
class DelayedEcho:
    value: Any
    delay: float


@dataclass(frozen=True, slots=True)
class Fetch:
    work: Awaitable[Any]


@dataclass(frozen=True, slots=True)
class Fetched:
    outcome: Any


@dataclass(frozen=True, slots=True)
class Init:
    start: int


@dataclass(frozen=True, slots=True)
class Incr:
    pass


@dataclass(frozen=True, slots=True)
class Get:
    pass


@dataclass(frozen=True, slots=True)
class Crash:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class Open:
    name: str


@dataclass(frozen=True, slots=True)
class Close:
    name: str


# ------------------------------------------------------------------ actors


class Echo(Actor):
    """Replies with what it gets."""

    def receiveMessage(self, msg: Any, sender: ActorAddress) -> None:
        if isinstance(msg, ActorSystemMessage):
            return
        if msg == "whoami":
            self.send(sender, self.globalName)
            return
        self.send(sender, msg)


class Dispatcher(ActorTypeDispatcher):
    """Answers by the handler that ActorTypeDispatcher picked."""

    def receiveMsg_Ping(self, msg: Ping, sender: ActorAddress) -> None:
        self.send(sender, ("ping", msg.value))

    def receiveMsg_str(self, msg: str, sender: ActorAddress) -> None:
        self.send(sender, ("str", msg))

    def receiveMsg_int(self, msg: int, sender: ActorAddress) -> None:
        self.send(sender, ("int", msg))

    def receiveUnrecognizedMessage(self, msg: Any, sender: ActorAddress) -> None:
        if not isinstance(msg, ActorSystemMessage):
            self.send(sender, ("unrecognized", type(msg).__name__))


class Child(ActorTypeDispatcher):
    """Tells its observer when it is asked to exit."""

    observer: ActorAddress | None = None

    def receiveMsg_Watch(self, msg: Watch, sender: ActorAddress) -> None:
        self.observer = msg.observer

    def receiveMsg_str(self, msg: str, sender: ActorAddress) -> None:
        self.send(sender, msg)

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender: ActorAddress) -> None:
        if self.observer is not None:
            self.send(self.observer, ("exit", self.myAddress.actorAddressString))


class Parent(ActorTypeDispatcher):
    """Creates Child actors and reports their exits to whoever asked."""

    def __init__(self) -> None:
        super().__init__()
        self.waiter: ActorAddress | None = None

    def receiveMsg_Spawn(self, msg: Spawn, sender: ActorAddress) -> None:
        children = []
        for _ in range(msg.count):
            child = self.createActor(Child)
            if msg.observer is not None:
                self.send(child, Watch(msg.observer))
            children.append(child)
        self.send(sender, tuple(children))

    def receiveMsg_KillChild(self, msg: KillChild, sender: ActorAddress) -> None:
        self.waiter = sender
        self.send(msg.child, ActorExitRequest())

    def receiveMsg_ChildActorExited(self, msg: ChildActorExited, sender: ActorAddress) -> None:
        if self.waiter is not None:
            self.send(self.waiter, Exited(msg.childAddress))


class Observer(ActorTypeDispatcher):
    """Collects ("exit", name) notes; answers WaitFor(n) once n have arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []
        self.waiter: tuple[ActorAddress, int] | None = None

    def receiveMsg_tuple(self, msg: tuple[str, str], sender: ActorAddress) -> None:
        self.seen.append(msg[1])
        self._maybe_answer()

    def receiveMsg_WaitFor(self, msg: WaitFor, sender: ActorAddress) -> None:
        self.waiter = (sender, msg.count)
        self._maybe_answer()

    def _maybe_answer(self) -> None:
        if self.waiter is not None and len(self.seen) >= self.waiter[1]:
            self.send(self.waiter[0], sorted(self.seen))
            self.waiter = None


class Sleeper(ActorTypeDispatcher):
    """Arms several wakeups and answers with the payloads in arrival order."""

    def __init__(self) -> None:
        super().__init__()
        self.requester: ActorAddress | None = None
        self.expected = 0
        self.got: list[Any] = []

    def receiveMsg_Arm(self, msg: Arm, sender: ActorAddress) -> None:
        self.requester = sender
        self.expected = len(msg.timers)
        for delay, payload in msg.timers:
            self.wakeupAfter(delay, payload)

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: ActorAddress) -> None:
        self.got.append(msg.payload)
        if len(self.got) == self.expected and self.requester is not None:
            self.send(self.requester, tuple(self.got))


class Failer(ActorTypeDispatcher):
    """Raises on "boom"; fails Flaky messages a set number of times."""

    def receiveMsg_str(self, msg: str, sender: ActorAddress) -> None:
        if msg == "boom":
            raise RuntimeError("boom")
        self.send(sender, msg)

    def receiveMsg_Flaky(self, msg: Flaky, sender: ActorAddress) -> None:
        msg.attempts.append(1)
        if len(msg.attempts) <= msg.fail_times:
            raise RuntimeError(f"attempt {len(msg.attempts)}")
        self.send(sender, "ok")


class Proxy(ActorTypeDispatcher):
    """Forwards a message and hands back the PoisonMessage it may get."""

    requester: ActorAddress | None = None

    def receiveMsg_Forward(self, msg: Forward, sender: ActorAddress) -> None:
        self.requester = sender
        self.send(msg.target, msg.message)

    def receiveMsg_PoisonMessage(self, msg: PoisonMessage, sender: ActorAddress) -> None:
        if self.requester is not None:
            self.send(self.requester, msg)


class FailureWatcher(ActorTypeDispatcher):
    """Makes a Failer child fail and answers (PoisonMessage, ChildFailed)."""

    def __init__(self) -> None:
        super().__init__()
        self.requester: ActorAddress | None = None
        self.child: ActorAddress | None = None
        self.poison: PoisonMessage | None = None
        self.failed: ChildFailed | None = None

    def receiveMsg_str(self, msg: str, sender: ActorAddress) -> None:
        self.requester = sender
        self.child = self.createActor(Failer)
        self.send(self.child, "boom")

    def receiveMsg_PoisonMessage(self, msg: PoisonMessage, sender: ActorAddress) -> None:
        self.poison = msg
        self._maybe_answer()

    def receiveMsg_ChildFailed(self, msg: ChildFailed, sender: ActorAddress) -> None:
        self.failed = msg
        self._maybe_answer()

    def _maybe_answer(self) -> None:
        if self.poison is not None and self.failed is not None and self.requester is not None:
            self.send(self.requester, (self.child, self.poison, self.failed))


class Creator(ActorTypeDispatcher):
    def receiveMsg_CreateNamed(self, msg: CreateNamed, sender: ActorAddress) -> None:
        self.send(sender, self.createActor(Echo, globalName=msg.name))


class Recorder(ActorTypeDispatcher):
    def receiveMsg_Record(self, msg: Record, sender: ActorAddress) -> None:
        msg.sink.append(msg.value)
        self.send(sender, msg.value)


class Countdown(ActorTypeDispatcher):
    """Sends itself ``remaining`` more messages, one per turn."""

    def receiveMsg_Cascade(self, msg: Cascade, sender: ActorAddress) -> None:
        msg.progress.append(msg.remaining)
        if msg.remaining:
            self.send(self.myAddress, Cascade(msg.remaining - 1, msg.progress, msg.done))
        else:
            msg.done.set_result(len(msg.progress))


class Timed(ActorTypeDispatcher):
    def receiveMsg_ArmOne(self, msg: ArmOne, sender: ActorAddress) -> None:
        self.wakeupAfter(msg.delay, msg)
        self.send(sender, "armed")

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: ActorAddress) -> None:
        armed: ArmOne = msg.payload
        armed.sink.append(armed.payload)
        if armed.fired is not None:
            armed.fired.set_result(armed.payload)


class Spawner(ActorTypeDispatcher):
    """Creates Echo children; answers WaitExits(n) once n of them exited."""

    def __init__(self) -> None:
        super().__init__()
        self.exited = 0
        self.waiter: tuple[ActorAddress, int] | None = None

    def receiveMsg_Spawn(self, msg: Spawn, sender: ActorAddress) -> None:
        self.send(sender, tuple(self.createActor(Echo) for _ in range(msg.count)))

    def receiveMsg_WaitExits(self, msg: WaitExits, sender: ActorAddress) -> None:
        self.waiter = (sender, msg.count)
        self._maybe_answer()

    def receiveMsg_ChildActorExited(self, msg: ChildActorExited, sender: ActorAddress) -> None:
        self.exited += 1
        self._maybe_answer()

    def _maybe_answer(self) -> None:
        if self.waiter is not None and self.exited >= self.waiter[1]:
            self.send(self.waiter[0], self.exited)
            self.waiter = None


class DelayedEchoer(ActorTypeDispatcher):
    def receiveMsg_DelayedEcho(self, msg: DelayedEcho, sender: ActorAddress) -> None:
        self.wakeupAfter(msg.delay, (sender, msg.value))

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: ActorAddress) -> None:
        requester, value = msg.payload
        self.send(requester, value)


class AsyncUser(ActorTypeDispatcher):
    """Runs a coroutine through run_async and answers with its outcome."""

    requester: ActorAddress | None = None

    def receiveMsg_Fetch(self, msg: Fetch, sender: ActorAddress) -> None:
        self.requester = sender
        run_async(self, msg.work, Fetched)

    def receiveMsg_Fetched(self, msg: Fetched, sender: ActorAddress) -> None:
        assert sender == self.myAddress  # delivered from the actor itself
        if self.requester is not None:
            self.send(self.requester, msg.outcome)


class Worker(ActorTypeDispatcher):
    """A supervised child with state rebuilt from its Init message."""

    counter: int | None = None

    def receiveMsg_Init(self, msg: Init, sender: ActorAddress) -> None:
        self.counter = msg.start

    def receiveMsg_Incr(self, msg: Incr, sender: ActorAddress) -> None:
        assert self.counter is not None
        self.counter += 1

    def receiveMsg_Get(self, msg: Get, sender: ActorAddress) -> None:
        self.send(sender, self.counter)

    def receiveMsg_Crash(self, msg: Crash, sender: ActorAddress) -> None:
        raise RuntimeError("crash requested")

    def receiveMsg_Quit(self, msg: Quit, sender: ActorAddress) -> None:
        self.send(self.myAddress, ActorExitRequest())


@dataclass
class HookCalls:
    started: list[str] = field(default_factory=list)
    crashed: list[tuple[str, str]] = field(default_factory=list)
    exited: list[str] = field(default_factory=list)
