"""An example rtcs plugin: the node's heartbeat, published on ``system.heartbeat``.

Every ``interval`` seconds the plugin echoes the node's pulse to the clients of
this node subscribed to ``system.heartbeat`` (or to a pattern matching it,
such as ``system.>``)::

    {"type": "message", "seq": 7, "topic": "system.heartbeat",
     "data": {"node": "web-1", "beat": 3, "connections": 42}, "ts": 1700000000000}

Enable it with the directory holding this file on ``sys.path``
(``PYTHONPATH=examples/plugins``) and::

    [plugins]
    heartbeat = "echo_plugin:HeartbeatPlugin"

How it works, and why (docs/plugins.md):

- rtcs starts the plugin under the server supervisor and sends it
  ``actors.messages.Configure(context)`` first, again after every restart;
  all its state is rebuilt from that message.
- It never touches sessions or sockets. It encodes the message once
  (``codec.message_tail``) and hands it to the topic route handler, found by
  name in the directory on every beat (its address changes when it restarts),
  as a ``RemoteEnvelope``: the handler delivers a pre-encoded tail to the
  *local* subscribers through its index, in order with client publishes, in
  chunks for large fan-outs, and never forwards it to the broker. A heartbeat
  describes one node, so node-local delivery is what it wants.
- Clients cannot fake it: the default ``[rbac]`` policy denies publishing to
  ``system.>`` to everyone but admins.
"""

from __future__ import annotations

from typing import Any

from thespian.actors import ActorExitRequest, ActorTypeDispatcher, WakeupMessage

from actors.context import ROUTE_TOPIC, NodeContext
from actors.messages import Configure, RemoteEnvelope, Tick
from rtcs.backends.base import Envelope
from rtcs.protocol import codec

TOPIC = "system.heartbeat"


class HeartbeatPlugin(ActorTypeDispatcher):
    """Publishes ``{"node", "beat", "connections"}`` on ``system.heartbeat`` periodically.

    ``beat`` counts from 1 in each incarnation of the actor, so a client sees it
    start over after the plugin was restarted. Subclass it to change
    ``interval`` (seconds) or ``topic``.
    """

    interval: float = 5.0
    topic: str = TOPIC

    def __init__(self) -> None:
        super().__init__()
        self.ctx: NodeContext | None = None
        self.beats = 0

    def receiveMsg_Configure(self, msg: Configure, sender: Any) -> None:
        """Remember the context; start the timer on the first ``Configure`` only."""
        first = self.ctx is None
        self.ctx = msg.context
        if first:
            self.wakeupAfter(self.interval, Tick("heartbeat"))

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: Any) -> None:
        if not isinstance(msg.payload, Tick) or msg.payload.kind != "heartbeat":
            return
        self.beat()
        # Re-armed after the beat: if the beat raises, the supervisor replaces
        # this actor, and the new one starts its own timer on Configure.
        self.wakeupAfter(self.interval, Tick("heartbeat"))

    def beat(self) -> None:
        """Send one heartbeat to the topic route handler.

        Skipped while the node shuts down, and while the topic handler is being
        restarted (it is not in the directory then): a heartbeat is worth
        nothing late.
        """
        ctx = self.ctx
        if ctx is None or ctx.shutting_down:
            return
        handler = ctx.directory.lookup(ROUTE_TOPIC)
        if handler is None:
            return
        self.beats += 1
        data = {
            "node": ctx.node_id,
            "beat": self.beats,
            "connections": ctx.sessions.attached_count(),
        }
        tail = codec.message_tail(topic=self.topic, data=data, ts=ctx.wall() * 1000)
        self.send(handler, RemoteEnvelope(Envelope(ctx.node_id, "topic", self.topic, tail)))

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender: Any) -> None:
        # Nothing to release: the runtime cancels this actor's timers when it
        # exits. A plugin holding other resources closes them here.
        self.ctx = None
