"""An asyncio-driven Thespian system base: the production scheduler of rtcs.

:class:`AsyncioSystemBase` subclasses Thespian's in-process
``simpleSystemBase.ActorSystemBase`` and keeps its semantics (``receiveMessage``,
``createActor``, ``send``, ``wakeupAfter``, ``ActorExitRequest``,
``ChildActorExited``, ``PoisonMessage``, global names) while changing only how
work is scheduled (docs/runtime.md):

- sends go to a ``deque`` drained by ``loop.call_soon`` in batches of at most
  ``batch_size``; between batches the loop runs its other callbacks, and
  ``tell()`` only enqueues, so actor code never runs inside the caller;
- ``wakeupAfter`` is a ``loop.call_later`` handle, cancelled when the actor exits;
- children are kept in a dict and dead actors leave the registry;
- replies addressed to the outside are handed to a pending ask, to an
  ``on_external_message`` callback, or dropped; never accumulated;
- a message whose handler keeps failing is retried up to ``delivery_attempts``
  deliveries in total; then the sender gets ``PoisonMessage`` and the actor's
  parent gets :class:`~rtcs.runtime.messages.ChildFailed`, so a supervisor can
  act on it.

Thread rule: everything here runs on the event-loop thread. The only entry
point that is safe from another thread is :meth:`AsyncioSystemBase.tell_threadsafe`.

It relies on simpleSystemBase internals (``ActorRef``, ``PendingSend`` fields,
address generation), which is why rtcs pins ``thespian==4.0.1`` and runs one
conformance suite against both bases.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
import logging
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from thespian.actors import (
    Actor,
    ActorAddress,
    ActorExitRequest,
    ActorSystemMessage,
    ChildActorExited,
    DeadEnvelope,
    InvalidActorAddress,
    PoisonMessage,
    ValidatedSource,
    WakeupMessage,
)
from thespian.system import isInternalActorSystemMessage
from thespian.system.simpleSystemBase import (
    ActorRef,
    ActorSystemBase,
    _newAddress,
    _newChildAddress,
)
from thespian.system.sourceLoader import loadModuleFromHashSource
from thespian.system.timing import toTimeDeltaOrNone
from thespian.system.utilis import actualActorClass

from rtcs.errors import ConfigError
from rtcs.runtime.messages import ChildFailed


def check_counts(**counts: object) -> None:
    """Each value must be a whole number of at least 1 (not a bool, not a float).

    Raises:
        ConfigError: naming the first argument that is not.
    """
    for name, value in counts.items():
        if type(value) is not int or value < 1:
            raise ConfigError(name, value, "must be a whole number of at least 1")


@functools.lru_cache(maxsize=1024)
def _init_args(actor_class: type) -> tuple[str, ...]:
    """Which of Thespian's optional ``__init__`` arguments a class accepts.

    Thespian's ``withPossibleInitArgs`` inspects the signature on every
    creation; one connection actor per socket makes that a hot path, so the
    answer is cached per class (same semantics: pass ``capabilities`` and
    ``requirements`` only when ``__init__`` names them).
    """
    try:
        init = getattr(actor_class, "__init__")  # noqa: B009 (mypy: instance __init__ access)
        names = inspect.signature(init).parameters
    except (ValueError, TypeError):
        return ()
    return tuple(n for n in ("capabilities", "requirements") if n in names)


T = TypeVar("T")

_log = logging.getLogger("rtcs.runtime")

EXTERNAL_REQUESTER = "System:ExternalRequester"
_BAD_ACTOR = "System:BadActor"
_DEAD_LETTER_BOX = "DeadLetterBox"

ExternalCallback = Callable[[Any, ActorAddress], None]


class _State(enum.Enum):
    RUNNING = "running"
    STOPPING = "stopping"  # shutdown() is draining the exit cascade
    STOPPED = "stopped"


class _Send:
    """One queued delivery; same field names as Thespian's ``PendingSend``."""

    __slots__ = ("attempts", "msg", "sender", "toActor")

    def __init__(self, sender: ActorAddress, msg: Any, to_actor: ActorAddress) -> None:
        self.sender = sender
        self.msg = msg
        self.toActor = to_actor
        self.attempts = 0


class _Ref(ActorRef):
    """Thespian's ActorRef with children in a dict and the actor's timer handles."""

    def __init__(
        self,
        actor_system: Any,
        parent: ActorAddress,
        address: ActorAddress,
        instance: Any,
        source_hash: Any = None,
    ) -> None:
        super().__init__(actor_system, parent, address, instance, mySourceHash=source_hash)
        self._yung: dict[str, ActorAddress] = {}
        self.timers: dict[int, asyncio.TimerHandle] = {}
        self.globalName: str | None = None
        # Endpoints of the outside world (system address, requesters) and
        # BadActor: they receive messages but never exit.
        self.internal = False

    def addChild(self, childAddr: ActorAddress) -> None:
        self._yung[childAddr.actorAddressString] = childAddr
        self._childCounter += 1

    def removeChild(self, childAddr: ActorAddress) -> None:
        self._yung.pop(childAddr.actorAddressString, None)

    def shutdown(self) -> None:
        # The base stops children itself when it removes an actor.
        return None


class _ExternalSink(Actor):
    """Stands for the outside world at the system and requester addresses."""

    def __init__(self, deliver: ExternalCallback) -> None:
        self._deliver = deliver

    def receiveMessage(self, msg: Any, sender: ActorAddress) -> None:
        self._deliver(msg, sender)


class _AskSink(Actor):
    """The fresh requester of one ask: its first reply resolves the future."""

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self._future = future

    def receiveMessage(self, msg: Any, sender: ActorAddress) -> None:
        # Thespian's listen() skips system notifications the same way.
        if isInternalActorSystemMessage(msg) or self._future.done():
            return
        self._future.set_result(msg)


class AsyncioSystemBase(ActorSystemBase):
    """A Thespian system base scheduled by an asyncio event loop.

    Obligations: construct, use and shut it down on the thread running
    ``loop``; only :meth:`tell_threadsafe` may be called from other threads.
    Build it through :class:`RtcsActorSystem` (or
    :func:`rtcs.runtime.control.start_system`), never through
    ``ActorSystem("...")``.
    """

    # Set by Thespian's ActorSystemBase.__init__; declared for the type checker.
    _sourceNotifications: list[ActorAddress]

    def __init__(
        self,
        system: Any,
        *,
        loop: asyncio.AbstractEventLoop,
        batch_size: int = 256,
        delivery_attempts: int = 1,
        on_external_message: ExternalCallback | None = None,
    ) -> None:
        """Create the base for ``system``.

        ``on_external_message(message, sender)`` receives every message an
        actor sends to the outside (the system address or the requester of a
        ``tell``); without it those messages are dropped.

        Raises:
            ConfigError: ``batch_size`` or ``delivery_attempts`` is not a whole
                number of at least 1.
        """
        check_counts(batch_size=batch_size, delivery_attempts=delivery_attempts)
        self._loop = loop
        self._batch_size = batch_size
        self._delivery_attempts = delivery_attempts
        self._on_external_message = on_external_message
        self._drain_handle: asyncio.Handle | None = None
        self._in_drain = False
        self._state = _State.RUNNING
        self._tasks: set[asyncio.Future[Any]] = set()
        self._asks: dict[str, asyncio.Future[Any]] = {}
        self._timer_seq = 0
        self._ask_seq = 0
        # logDefs=False: rtcs configures logging itself.
        super().__init__(system, logDefs=False)
        self._pendingSends: deque[Any] = deque()
        self.system_address: ActorAddress = system.systemAddress
        for key in (system.systemAddress.actorAddressString, EXTERNAL_REQUESTER):
            self._make_internal(self.actorRegistry[key], _ExternalSink(self._external))
        self.actorRegistry[_BAD_ACTOR].internal = True
        system.capabilities["Thespian ActorSystem Name"] = "rtcsAsyncioSystem"

    # ------------------------------------------------------------------ queue

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop that runs every actor turn."""
        return self._loop

    def _schedule(self) -> None:
        if self._drain_handle is None and self._state is _State.RUNNING:
            self._drain_handle = self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        queue = self._pendingSends
        run = self._runSingleSend
        self._in_drain = True
        try:
            for _ in range(self._batch_size):
                if not queue:
                    break
                run(queue.popleft())
        finally:
            self._in_drain = False
            self._drain_handle = None
            if queue:
                # Yield to the loop (sockets, timers) before the next batch.
                self._schedule()

    def _runSends(self, timeout: Any = None, stop_on_available: Any = False) -> None:
        # Stock helpers (source loading) call this to run sends synchronously;
        # here the loop runs them.
        self._schedule()

    def _realizeWakeups(self) -> None:
        # Wakeups are loop timers; nothing to scan.
        return None

    def actor_send(self, fromActor: ActorAddress, toActor: ActorAddress, msg: Any) -> None:
        """Queue ``msg`` from ``fromActor`` to ``toActor``; never runs actor code."""
        if self._state is _State.STOPPED:
            return
        self._pendingSends.append(_Send(fromActor, msg, toActor))
        if self._drain_handle is None:
            self._schedule()

    def tell(self, anActor: ActorAddress, msg: Any) -> None:
        """Queue ``msg`` to ``anActor`` from the outside; returns before it is handled.

        Raises:
            RuntimeError: the system is shut down.
        """
        if self._state is _State.STOPPED:
            raise RuntimeError("the actor system is shut down")
        self.actor_send(self.actorRegistry[EXTERNAL_REQUESTER].address, anActor, msg)

    def tell_threadsafe(self, address: ActorAddress, msg: Any) -> None:
        """Like :meth:`tell`, callable from any thread: hops to the loop thread first."""
        self._loop.call_soon_threadsafe(self._tell_if_running, address, msg)

    def _tell_if_running(self, address: ActorAddress, msg: Any) -> None:
        if self._state is _State.RUNNING:
            self.tell(address, msg)

    def ask(self, anActor: ActorAddress, msg: Any, timeout: Any) -> Any:
        """Blocking ask is impossible on the loop thread.

        Raises:
            RuntimeError: always; use ``await rtcs.runtime.control.ask(...)``.
        """
        raise RuntimeError("use `await rtcs.runtime.control.ask(...)` with the asyncio base")

    def listen(self, timeout: Any) -> Any:
        """Blocking listen is impossible on the loop thread.

        Raises:
            RuntimeError: always; use ``await rtcs.runtime.control.ask(...)``.
        """
        raise RuntimeError("use `await rtcs.runtime.control.ask(...)` with the asyncio base")

    async def ask_async(self, address: ActorAddress, msg: Any, timeout: float) -> Any:
        """Send ``msg`` to ``address`` from a fresh requester and await the first reply.

        Each call has its own requester address, so concurrent asks never
        receive each other's replies. Replies arriving after the timeout are
        dropped.

        Raises:
            TimeoutError: no reply within ``timeout`` seconds (``asyncio.TimeoutError``).
            RuntimeError: called off the loop, or the system is (being) shut down.
        """
        if asyncio.get_running_loop() is not self._loop:
            raise RuntimeError("ask must run on the loop that drives the actor system")
        if self._state is not _State.RUNNING:
            raise RuntimeError("the actor system is shut down")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._ask_seq += 1
        requester = ActorAddress(f"System:Ask~{self._ask_seq}")
        key = requester.actorAddressString
        ref = _Ref(self.system, self.system_address, requester, None)
        self._make_internal(ref, _AskSink(future))
        self.actorRegistry[key] = ref
        self._asks[key] = future
        try:
            self.actor_send(requester, address, msg)
            return await asyncio.wait_for(future, timeout)
        finally:
            self.actorRegistry.pop(key, None)
            self._asks.pop(key, None)

    # --------------------------------------------------------------- delivery

    def _runSingleSend(self, ps: Any) -> None:
        msg = ps.msg
        tgt = self.actorRegistry.get(ps.toActor.actorAddressString)
        if tgt is None:
            tgt = self.actorRegistry.get(_DEAD_LETTER_BOX)
            if tgt is None or isinstance(msg, DeadEnvelope):
                return  # dead letter and nobody handles dead letters
            msg = DeadEnvelope(ps.toActor.actorAddressString, msg)
        instance = tgt.instance
        if instance is None:
            return
        # Only Thespian's own messages need special handling; user messages
        # pay for this one isinstance check.
        if isinstance(msg, ActorSystemMessage):
            if isinstance(msg, ActorExitRequest) and not tgt.internal:
                self._exit_actor(tgt, ps, msg)
                return
            if isinstance(msg, ChildActorExited):
                tgt.removeChild(msg.childAddress)
            elif isinstance(msg, ValidatedSource) and tgt.address == self.system_address:
                self._loadValidatedActorSource(msg.sourceHash, msg.sourceZip)
                return
        try:
            instance.receiveMessage(msg, ps.sender)
        except Exception:
            self._handler_failed(tgt, ps)

    def _handler_failed(self, tgt: Any, ps: Any) -> None:
        """Retry, or tell the sender (PoisonMessage) and the parent (ChildFailed)."""
        ps.attempts += 1
        if ps.attempts < self._delivery_attempts:
            # As Thespian does: retry after what is already queued.
            self._pendingSends.append(ps)
            return
        details = traceback.format_exc()
        _log.error(
            "actor %s failed handling %s (delivery %d of %d)",
            tgt.address,
            type(ps.msg).__name__,
            ps.attempts,
            self._delivery_attempts,
            exc_info=True,
        )
        if not isinstance(ps.msg, PoisonMessage):  # never poison a poison notice
            self.actor_send(tgt.address, ps.sender, PoisonMessage(ps.msg, details))
        if not tgt.internal:
            self.actor_send(tgt.address, tgt.parent, ChildFailed(tgt.address, ps.msg, details))

    def _exit_actor(self, tgt: Any, ps: Any, msg: Any) -> None:
        """Deliver ActorExitRequest, then remove the actor (Thespian semantics)."""
        try:
            tgt.instance.receiveMessage(msg, ps.sender)
        except Exception:
            # The actor exits anyway; it is not retried nor reported as a crash.
            _log.error("actor %s failed handling ActorExitRequest", tgt.address, exc_info=True)
        self._remove_actor(tgt)

    def _remove_actor(self, tgt: Any) -> None:
        address = tgt.address
        self.actorRegistry.pop(address.actorAddressString, None)
        tgt.instance = None
        for handle in tgt.timers.values():
            handle.cancel()
        tgt.timers.clear()
        name = tgt.globalName
        if name and self._globalNames.get(name) == address:
            del self._globalNames[name]
        if self._sourceNotifications:
            self._sourceNotifications = [a for a in self._sourceNotifications if a != address]
        if self.actorRegistry.get(_DEAD_LETTER_BOX) is tgt:
            del self.actorRegistry[_DEAD_LETTER_BOX]
        for child in tgt._yung.values():
            self.actor_send(self.system_address, child, ActorExitRequest())
        tgt._yung.clear()
        self.actor_send(self.system_address, tgt.parent, ChildActorExited(address))

    def _external(self, msg: Any, sender: ActorAddress) -> None:
        callback = self._on_external_message
        if callback is None:
            return
        try:
            callback(msg, sender)
        except Exception:
            _log.exception("on_external_message callback failed")

    # ---------------------------------------------------------------- timers

    def wakeupAfter(self, fromActor: ActorAddress, timePeriod: Any, payload: Any) -> None:
        """Deliver ``WakeupMessage(timePeriod, payload)`` to ``fromActor`` after the delay."""
        ref = self.actorRegistry.get(fromActor.actorAddressString)
        if ref is None or ref.internal:
            return
        delay = toTimeDeltaOrNone(timePeriod)
        if delay is None:
            raise TypeError("wakeupAfter needs a delay (seconds or a timedelta), got None")
        self._timer_seq += 1
        token = self._timer_seq
        ref.timers[token] = self._loop.call_later(
            max(0.0, delay.total_seconds()), self._fire_wakeup, ref, token, delay, payload
        )

    def _fire_wakeup(self, ref: Any, token: int, delay: Any, payload: Any) -> None:
        ref.timers.pop(token, None)
        if ref.instance is not None:
            self.actor_send(ref.address, ref.address, WakeupMessage(delay, payload))

    # -------------------------------------------------------------- creation

    def _make_internal(self, ref: Any, sink: Any) -> None:
        sink._myRef = ref
        ref.instance = sink
        ref.internal = True

    def _newRefAndActor(
        self,
        actorSystem: Any,
        parentAddr: ActorAddress,
        actorAddr: ActorAddress,
        actorClass: Any,
        sourceHash: Any = None,
        targetActorRequirements: Any = None,
        isTopLevel: bool = False,
    ) -> _Ref:
        # Thespian's creation steps, minus the per-message debug log wrapper.
        try:
            actor_class = actualActorClass(
                actorClass,
                functools.partial(loadModuleFromHashSource, sourceHash, self._sources)
                if sourceHash
                else None,
            )
            check = getattr(actor_class, "actorSystemCapabilityCheck", None)
            if check is not None and not check(
                self.system.capabilities, targetActorRequirements or {}
            ):
                actor = None
            else:
                kwargs = {
                    "capabilities": self.system.capabilities,
                    "requirements": targetActorRequirements,
                }
                actor = actor_class(**{k: kwargs[k] for k in _init_args(actor_class)})
        except ImportError:
            _log.warning("cannot import actor class %s", actorClass, exc_info=True)
            raise
        except Exception:
            _log.warning("cannot create actor %s", actorClass, exc_info=True)
            if isTopLevel:
                raise
            actor = None
        ref = _Ref(actorSystem, parentAddr, actorAddr, actor, sourceHash)
        if actor is not None:
            actor._myRef = ref
        return ref

    def newPrimaryActor(
        self,
        actorClass: Any,
        targetActorRequirements: Any,
        globalName: str | None,
        sourceHash: Any,
    ) -> ActorAddress:
        """Create a top-level actor (parent: the system) and return its address."""
        if globalName and globalName in self._globalNames:
            return self._globalNames[globalName]
        address = _newAddress("/A", self._primaryCount)
        self._primaryCount += 1
        ref = self._newRefAndActor(
            self.system,
            self.system_address,
            address,
            actorClass,
            sourceHash,
            targetActorRequirements=targetActorRequirements,
            isTopLevel=True,
        )
        if ref.instance is None:
            _log.warning("could not create top-level actor %s", actorClass)
            return self.actorRegistry[_BAD_ACTOR].address
        ref.globalName = globalName
        if globalName:
            self._globalNames[globalName] = address
        self.actorRegistry[address.actorAddressString] = ref
        return address

    def newActor(
        self,
        parentAddr: ActorAddress,
        actorClass: Any,
        actorSystem: Any,
        targetActorRequirements: Any,
        globalName: str | None,
        sourceHash: Any,
    ) -> ActorAddress:
        """Create a child of ``parentAddr``; a failed creation sends ChildActorExited.

        Raises:
            InvalidActorAddress: the parent is not alive.
        """
        if globalName and globalName in self._globalNames:
            return self._globalNames[globalName]
        parent = self.actorRegistry.get(parentAddr.actorAddressString)
        if parent is None:
            raise InvalidActorAddress(parentAddr, f"invalid parent address for {actorClass}")
        address = _newChildAddress(parent)
        parent.addChild(address)
        ref = self._newRefAndActor(
            actorSystem,
            parentAddr,
            address,
            actorClass,
            targetActorRequirements=targetActorRequirements,
            sourceHash=sourceHash,
        )
        if ref.instance is None:
            self.actor_send(self.system_address, parentAddr, ChildActorExited(address))
            return address
        ref.globalName = globalName
        if globalName:
            self._globalNames[globalName] = address
        self.actorRegistry[address.actorAddressString] = ref
        return address

    def _handleDeadLetters(self, address: ActorAddress, enable: bool) -> None:
        ref = self.actorRegistry.get(address.actorAddressString)
        if enable and ref is not None:
            self.actorRegistry[_DEAD_LETTER_BOX] = ref
        elif not enable and self.actorRegistry.get(_DEAD_LETTER_BOX) is ref:
            self.actorRegistry.pop(_DEAD_LETTER_BOX, None)

    # ----------------------------------------------------------------- tasks

    def run_task(
        self, address: ActorAddress, coro: Awaitable[T], on_done: Callable[[Any], Any]
    ) -> None:
        """Run ``coro`` on the loop; then send ``on_done(result_or_exception)`` to ``address``.

        The message comes from ``address`` itself and is dropped if the actor
        has exited meanwhile. The task is referenced until it finishes. Once
        the system is shutting down, ``coro`` is closed without running: actors
        releasing resources in their exit handlers must not start new work.
        """
        if self._state is not _State.RUNNING:
            if asyncio.iscoroutine(coro):
                coro.close()
            return
        ref = self.actorRegistry.get(address.actorAddressString)
        # Always a real task, from the first step: backend code may rely on
        # running inside one (asyncio.timeout, context variables).
        task = asyncio.ensure_future(coro, loop=self._loop)
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._task_done, ref, on_done))

    def _task_done(
        self, ref: Any, on_done: Callable[[Any], Any], task: asyncio.Future[Any]
    ) -> None:
        self._tasks.discard(task)
        outcome: Any
        if task.cancelled():
            outcome = asyncio.CancelledError()
        else:
            outcome = task.exception() or task.result()
        self._deliver_outcome(ref, on_done, outcome)

    def _deliver_outcome(self, ref: Any, on_done: Callable[[Any], Any], outcome: Any) -> None:
        if ref is None or ref.instance is None or self._state is not _State.RUNNING:
            return  # the actor exited: nobody is left to handle the outcome
        try:
            message = on_done(outcome)
        except Exception:
            _log.exception("run_async on_done failed for actor %s", ref.address)
            return
        if message is not None:  # None: fire-and-forget, nothing to continue
            self.actor_send(ref.address, ref.address, message)

    # ---------------------------------------------------------- introspection

    @property
    def running(self) -> bool:
        """True until :meth:`shutdown` starts."""
        return self._state is _State.RUNNING

    def queued_by_recipient(self) -> dict[str, int]:
        """How many queued messages wait for each recipient, by ``actorAddressString``.

        One pass over the run queue, made on demand (``rtcs.runtime.introspect``):
        delivery keeps no per-actor count, so the message path pays nothing
        for it. Messages to actors that have exited are still counted here
        (they are dropped when their turn comes).
        """
        counts: dict[str, int] = {}
        for send in self._pendingSends:
            key = send.toActor.actorAddressString
            counts[key] = counts.get(key, 0) + 1
        return counts

    def parent_at(self, key: str) -> ActorAddress | None:
        """The parent of the live actor at the address ``key``; None as for :meth:`instance_at`."""
        ref = self.actorRegistry.get(key)
        if ref is None or ref.internal or ref.instance is None:
            return None
        parent: ActorAddress = ref.parent
        return parent

    def instance_at(self, key: str) -> Any:
        """The live actor at the address whose ``actorAddressString`` is ``key``, else None.

        None as well for the system's own endpoints (the outside world, the
        requesters of asks): they are not actors of the application.
        """
        ref = self.actorRegistry.get(key)
        if ref is None or ref.internal:
            return None
        return ref.instance

    # -------------------------------------------------------------- shutdown

    def top_level_actors(self) -> list[ActorAddress]:
        """Addresses of the live actors whose parent is the system."""
        return [
            ref.address
            for key, ref in self.actorRegistry.items()
            if key != _DEAD_LETTER_BOX
            and not ref.internal
            and ref.instance is not None
            and ref.parent == self.system_address
        ]

    def shutdown(self, max_sends: int = 1_000_000) -> None:
        """Stop every actor, then every timer, task, pending ask and queued send.

        Sends ActorExitRequest to each top-level actor and runs the resulting
        cascade to completion (at most ``max_sends`` deliveries) before
        returning. Idempotent.

        Raises:
            RuntimeError: called from inside an actor turn.
        """
        if self._state is _State.STOPPED:
            return
        if self._in_drain:
            raise RuntimeError("shut the actor system down from outside actor code")
        self._state = _State.STOPPING
        if self._drain_handle is not None:
            self._drain_handle.cancel()
            self._drain_handle = None
        for address in self.top_level_actors():
            self.actor_send(self.system_address, address, ActorExitRequest())
        queue = self._pendingSends
        sent = 0
        while queue and sent < max_sends:
            self._runSingleSend(queue.popleft())
            sent += 1
        if queue:
            _log.warning("actor system stopped with %d undelivered messages", len(queue))
            queue.clear()
        self._state = _State.STOPPED
        for ref in list(self.actorRegistry.values()):
            for handle in ref.timers.values():
                handle.cancel()
            ref.timers.clear()
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()
        for future in self._asks.values():
            if not future.done():
                future.set_exception(RuntimeError("the actor system shut down"))
        super().shutdown()
