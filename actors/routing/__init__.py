"""Routing: the ``RoutingSupervisor`` (all-for-one by default) and its route handlers.

Each route handler owns one kind of routing and its index:

- ``TopicHandler`` (``topic.py``): subscribe/unsubscribe/publish over a ``TopicIndex``;
- ``DirectHandler`` (``direct.py``): direct messages to a user's connections or one connection;
- ``RoomHandler`` (``room.py``): rooms, room broadcasts and presence;
- ``BroadcastHandler`` (``broadcast.py``): global and filtered broadcasts.

Their shared plumbing (replies, backend calls, chunked fan-out, the broker
hop) is ``RouteHandler`` in ``handler.py``.
"""

from rtcs.actors.context import NodeSupervisor
from rtcs.actors.routing.broadcast import BroadcastHandler
from rtcs.actors.routing.direct import DirectHandler
from rtcs.actors.routing.handler import RouteHandler
from rtcs.actors.routing.room import RoomHandler
from rtcs.actors.routing.topic import TopicHandler


class RoutingSupervisor(NodeSupervisor):
    """Supervises the route handlers; the strategy is ``[supervision.router]``."""


__all__ = [
    "BroadcastHandler",
    "DirectHandler",
    "RoomHandler",
    "RouteHandler",
    "RoutingSupervisor",
    "TopicHandler",
]
