"""Starting, asking and stopping an actor system: the runtime API rtcs uses.

``start_system(base="asyncio")`` is the production scheduler
(:class:`~rtcs.runtime.scheduler.AsyncioSystemBase` on the running loop);
``base="simple"`` is Thespian's stock in-process base, for synchronous unit
tests of actor logic. Both are created without a process-wide singleton and
without touching the logging configuration.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from thespian.actors import Actor, ActorAddress, ActorExitRequest, ActorSystem

from rtcs.errors import ConfigError
from rtcs.runtime.actor_system import RtcsActorSystem
from rtcs.runtime.messages import Continue
from rtcs.runtime.scheduler import AsyncioSystemBase, ExternalCallback, check_counts

T = TypeVar("T")

BaseName = Literal["asyncio", "simple"]


def start_system(
    *,
    base: BaseName = "asyncio",
    loop: asyncio.AbstractEventLoop | None = None,
    batch_size: int = 256,
    delivery_attempts: int | None = None,
    on_external_message: ExternalCallback | None = None,
) -> ActorSystem:
    """Start an actor system.

    ``"asyncio"`` drives the system from ``loop`` (default: the running loop)
    and must then be used only from that loop's thread. ``batch_size`` bounds
    the deliveries per loop turn; ``delivery_attempts`` (default 1) is how many
    times a message whose handler raises is delivered before the sender gets
    ``PoisonMessage`` and the parent ``ChildFailed``. ``on_external_message``
    receives what actors send to the outside, which is otherwise dropped.

    ``"simple"`` is Thespian's stock simpleSystemBase: ``tell``/``ask`` run the
    actors synchronously in the caller, a failing message is delivered 3 times
    and parents are never told of failures.

    Raises:
        ConfigError: unknown ``base``, a limit below 1, or an option the chosen
            base does not support.
        RuntimeError: ``"asyncio"`` without ``loop`` outside a running loop.
    """
    if base == "simple":
        if delivery_attempts is not None:
            raise ConfigError(
                "delivery_attempts", delivery_attempts, "the simple base always delivers 3 times"
            )
        if on_external_message is not None:
            raise ConfigError(
                "on_external_message", on_external_message, "only the asyncio base supports it"
            )
        return ActorSystem("simpleSystemBase", logDefs=False, transientUnique=True)
    if base != "asyncio":
        raise ConfigError("base", base, "expected 'asyncio' or 'simple'")
    attempts = 1 if delivery_attempts is None else delivery_attempts
    check_counts(batch_size=batch_size, delivery_attempts=attempts)  # before needing a loop
    the_loop = loop if loop is not None else asyncio.get_running_loop()
    return RtcsActorSystem(
        functools.partial(
            AsyncioSystemBase,
            loop=the_loop,
            batch_size=batch_size,
            delivery_attempts=attempts,
            on_external_message=on_external_message,
        )
    )


def asyncio_base(system: ActorSystem) -> AsyncioSystemBase:
    """Return the :class:`AsyncioSystemBase` driving ``system``.

    Raises:
        RuntimeError: ``system`` runs on another base or is shut down.
    """
    base = getattr(system, "_systemBase", None)
    if not isinstance(base, AsyncioSystemBase):
        raise RuntimeError("this needs a running actor system on the asyncio base")
    return base


def base_of(actor: Actor) -> AsyncioSystemBase:
    """Return the :class:`AsyncioSystemBase` running ``actor`` (call from its own handlers).

    Raises:
        RuntimeError: the actor's system runs on another base.
    """
    base = getattr(actor._myRef._system, "_systemBase", None)
    if not isinstance(base, AsyncioSystemBase):
        raise RuntimeError("this needs an actor system on the asyncio base")
    return base


async def ask(system: ActorSystem, address: ActorAddress, message: Any, timeout: float) -> Any:
    """Send ``message`` to ``address`` and return the first reply sent back.

    Each ask has its own requester address: concurrent asks never get each
    other's replies. A handler failure answers with ``PoisonMessage``, as in
    Thespian. Call it on the loop driving ``system``.

    Raises:
        asyncio.TimeoutError: no reply within ``timeout`` seconds (never ``None``).
        RuntimeError: ``system`` is not on the asyncio base, or is shut down.
        TypeError: ``address`` is not an ``ActorAddress``.
        ConfigError: ``timeout`` is not a positive number (an ask never waits forever).
    """
    if not isinstance(address, ActorAddress):
        raise TypeError(f"ask needs an ActorAddress, got {type(address).__name__}")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ConfigError("timeout", timeout, "must be a positive number of seconds")
    return await asyncio_base(system).ask_async(address, message, timeout)


def tell_threadsafe(system: ActorSystem, address: ActorAddress, message: Any) -> None:
    """``tell`` from any thread: the send is queued on the system's loop thread.

    Raises:
        RuntimeError: ``system`` is not on the asyncio base, or is shut down.
    """
    asyncio_base(system).tell_threadsafe(address, message)


def run_async(
    actor: Actor,
    coro: Awaitable[T],
    on_done: Callable[[T | BaseException], Any],
) -> None:
    """Run ``coro`` as a task; hand its outcome back to ``actor`` as a message.

    When ``coro`` finishes, ``on_done(result)`` (or ``on_done(exception)``) is
    sent to ``actor`` from itself, so the outcome is handled in an ordinary
    actor turn; if the actor has exited by then, or ``on_done`` returns None
    (fire-and-forget), nothing is sent. While the system shuts down, ``coro``
    is closed without running. Call it from the actor's own handler.

    Raises:
        RuntimeError: the actor's system is not on the asyncio base.
    """
    base = getattr(actor._myRef._system, "_systemBase", None)
    if not isinstance(base, AsyncioSystemBase):
        if asyncio.iscoroutine(coro):
            coro.close()  # never started: avoid the "never awaited" warning
        raise RuntimeError("run_async needs an actor system on the asyncio base")
    base.run_task(actor.myAddress, coro, on_done)


class Calls:
    """Mixin for actors that await coroutines (backend calls) without blocking.

    ``self.call(coro, then, failed)`` runs ``coro`` as a task; when it
    finishes, ``then(result)`` or ``failed(exception)`` runs in one of this
    actor's own turns (a :class:`~rtcs.runtime.messages.Continue` message),
    never concurrently with its other handlers. Both callbacks are typed
    against the coroutine's result. If the actor exits before the coroutine
    finishes, neither runs. Needs the asyncio base (see :func:`run_async`).
    """

    def call(
        self,
        coro: Awaitable[T],
        then: Callable[[T], None],
        failed: Callable[[BaseException], None],
    ) -> None:
        """Run ``coro``; continue with ``then(result)`` or ``failed(exception)``.

        Raises:
            RuntimeError: the actor's system is not on the asyncio base.
        """

        def resume(outcome: T | BaseException) -> Continue:
            if isinstance(outcome, BaseException):
                return Continue(functools.partial(failed, outcome))
            return Continue(functools.partial(then, outcome))

        run_async(self, coro, resume)

    def receiveMsg_Continue(self, msg: Continue, sender: ActorAddress) -> None:
        msg.step()


def stop_system(system: ActorSystem) -> None:
    """Stop every actor and shut ``system`` down.

    Every top-level actor gets ``ActorExitRequest`` (which cascades to its
    children) and the resulting messages are delivered before this returns;
    on the asyncio base timers, tasks and pending asks are cancelled too and
    nothing stays scheduled on the loop. Call it outside actor code.
    Idempotent.
    """
    base = getattr(system, "_systemBase", None)
    if base is None:
        return
    if not isinstance(base, AsyncioSystemBase):
        # The stock base's shutdown() leaves actors running: stop them first.
        # tell() runs the whole exit cascade synchronously there.
        system_address = system.systemAddress
        internal = set(base._internalAddresses)
        for key, ref in list(base.actorRegistry.items()):
            if (
                ref is not None
                and key not in internal
                and ref.instance is not None
                and ref.parent == system_address
            ):
                system.tell(ref.address, ActorExitRequest())
    system.shutdown()
