"""In-memory presence: live connections per user and room members per user.

A user is present in a room while at least one of their members (session ids)
is in it, so two sessions of one user in one room produce one join event and,
when both have left, one leave event. Every entry remembers the node that
holds it, so a dead node's entries can be dropped at once.
"""

from __future__ import annotations


class MemoryPresenceStore:
    """A ``PresenceStore`` kept in process memory."""

    def __init__(self) -> None:
        # user -> connection id -> node
        self._connections: dict[str, dict[str, str]] = {}
        # connection id -> node (connection ids are unique across nodes)
        self._nodes: dict[str, str] = {}
        # room -> user -> member -> node
        self._rooms: dict[str, dict[str, dict[str, str]]] = {}

    async def add_connection(self, user: str, connection_id: str, node: str) -> int:
        """Record a connection of ``user`` on ``node``; returns the user's count."""
        conns = self._connections.setdefault(user, {})
        conns[connection_id] = node
        self._nodes[connection_id] = node
        return len(conns)

    async def remove_connection(self, user: str, connection_id: str) -> int:
        """Forget a connection; returns the user's remaining count."""
        self._nodes.pop(connection_id, None)
        conns = self._connections.get(user)
        if conns is None:
            return 0
        conns.pop(connection_id, None)
        if not conns:
            del self._connections[user]
        return len(conns)

    async def user_connections(self, user: str) -> int:
        """Number of live connections of ``user``."""
        return len(self._connections.get(user, ()))

    async def user_nodes(self, user: str) -> list[str]:
        """Sorted ids of the nodes holding a connection of ``user``."""
        return sorted(set(self._connections.get(user, {}).values()))

    async def connection_node(self, connection_id: str) -> str | None:
        """The node holding ``connection_id``, or None (a dropped node holds nothing)."""
        return self._nodes.get(connection_id)

    async def join(self, room: str, user: str, member: str, node: str) -> bool:
        """Add ``member`` of ``user`` to ``room``; True when ``user`` was absent."""
        users = self._rooms.setdefault(room, {})
        members = users.get(user)
        if members is None:
            users[user] = {member: node}
            return True
        members[member] = node
        return False

    async def leave(self, room: str, user: str, member: str) -> bool:
        """Remove ``member``; True when that was the last member of ``user``."""
        users = self._rooms.get(room)
        if users is None:
            return False
        members = users.get(user)
        if members is None or members.pop(member, None) is None:
            return False
        if members:
            return False
        del users[user]
        if not users:
            del self._rooms[room]
        return True

    async def members(self, room: str) -> list[str]:
        """Sorted ids of the users present in ``room``."""
        return sorted(self._rooms.get(room, ()))

    async def drop_node(self, node: str) -> None:
        """Forget every connection and room member held by ``node``."""
        for connection_id in [c for c, n in self._nodes.items() if n == node]:
            del self._nodes[connection_id]
        for user in list(self._connections):
            conns = self._connections[user]
            for connection_id in [c for c, n in conns.items() if n == node]:
                del conns[connection_id]
            if not conns:
                del self._connections[user]
        for room in list(self._rooms):
            users = self._rooms[room]
            for user in list(users):
                members = users[user]
                for member in [m for m, n in members.items() if n == node]:
                    del members[member]
                if not members:
                    del users[user]
            if not users:
                del self._rooms[room]

    def healthy(self) -> bool:
        """Always True: memory does not go away."""
        return True
