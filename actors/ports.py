"""The seam between the gateway and the actors: what an actor may do with a socket.

Actors never see a websockets object. The gateway hands each connection actor
a :class:`ClientHandle` (implemented by ``rtcs.gateway.handle.ConnectionHandle``;
tests use a recording one), and the connection supervisor admits or refuses
the connection through it.
"""

from __future__ import annotations

from typing import Protocol

from rtcs.sessions import Sink


class ClientHandle(Sink, Protocol):
    """One accepted WebSocket connection, as the actors use it.

    Obligations of an implementation: only used on the event-loop thread;
    ``push``, ``close``, ``handled``, ``admit`` and ``refuse`` never block and
    never raise.
    """

    connection_id: str
    #: The authenticated user, once known (for presence and logs).
    user: str | None

    @property
    def closing(self) -> bool:
        """True once a close was started (by rtcs or the client)."""
        ...

    @property
    def write_paused(self) -> bool:
        """True while the outbox is too full to take more than what is urgent."""
        ...

    async def drained(self) -> None:
        """Return once the outbox has room again (at once if it has now)."""
        ...

    def handled(self) -> None:
        """One client frame was handled; the gateway may read the socket again."""
        ...

    def admit(self, actor: object) -> None:
        """The connection actor at address ``actor`` runs: client frames go to it."""
        ...

    def refuse(self, code: int) -> None:
        """The connection is not admitted; the gateway closes it with ``code``."""
        ...
