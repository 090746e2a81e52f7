"""A by-name registry of actor addresses shared inside one process.

Addresses change every time a supervisor restarts a child, so actors that
depend on a sibling look it up by name when they need it instead of keeping
the address they were first given. Supervisors keep the entries current.
Only the event-loop thread uses it, so it takes no lock.
"""

from __future__ import annotations

from thespian.actors import ActorAddress


class Directory:
    """Maps a name to the current address of the actor registered under it."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[str, ActorAddress] = {}

    def register(self, name: str, address: ActorAddress) -> None:
        """Register ``address`` under ``name``, replacing any previous address."""
        self._entries[name] = address

    def unregister(self, name: str, address: ActorAddress | None = None) -> bool:
        """Remove ``name``; with ``address``, only if ``name`` still maps to it.

        The guard lets a stopping actor remove its own entry without removing
        the entry of the replacement a restart has already registered.
        Returns whether an entry was removed.
        """
        current = self._entries.get(name)
        if current is None or (address is not None and current != address):
            return False
        del self._entries[name]
        return True

    def lookup(self, name: str) -> ActorAddress | None:
        """Return the address registered under ``name``, or ``None``."""
        return self._entries.get(name)

    def require(self, name: str) -> ActorAddress:
        """Return the address registered under ``name``.

        Raises:
            LookupError: nothing is registered under ``name``.
        """
        address = self._entries.get(name)
        if address is None:
            raise LookupError(f"no actor registered as {name!r}")
        return address

    def names(self) -> list[str]:
        """Return the registered names, in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)
