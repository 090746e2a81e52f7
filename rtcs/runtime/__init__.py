"""The rtcs actor runtime: an asyncio-driven Thespian base, the asyncio bridge, supervision.

See docs/runtime.md. Everything here runs on the event-loop thread that
drives the actor system; only ``tell_threadsafe`` may be called from others.
"""

from thespian.actors import Actor

from rtcs.runtime.actor_system import RtcsActorSystem, is_top_level, parent_address
from rtcs.runtime.control import (
    Calls,
    ask,
    asyncio_base,
    base_of,
    run_async,
    start_system,
    stop_system,
    tell_threadsafe,
)
from rtcs.runtime.directory import Directory
from rtcs.runtime.introspect import ActorView, SupervisorView, TreeView
from rtcs.runtime.messages import ChildFailed, Continue, Escalated
from rtcs.runtime.scheduler import AsyncioSystemBase
from rtcs.runtime.supervision import (
    ChildSpec,
    ChildState,
    Restart,
    Strategy,
    Supervise,
    Supervisor,
    SupervisorEvent,
    SupervisorPolicy,
    SupervisorState,
)

__all__ = [
    "Actor",
    "ActorView",
    "AsyncioSystemBase",
    "Calls",
    "ChildFailed",
    "ChildSpec",
    "ChildState",
    "Continue",
    "Directory",
    "Escalated",
    "Restart",
    "RtcsActorSystem",
    "Strategy",
    "Supervise",
    "Supervisor",
    "SupervisorEvent",
    "SupervisorPolicy",
    "SupervisorState",
    "SupervisorView",
    "TreeView",
    "ask",
    "asyncio_base",
    "base_of",
    "is_top_level",
    "parent_address",
    "run_async",
    "start_system",
    "stop_system",
    "tell_threadsafe",
]
