"""The connection state machine, written as a table.

Rules (docs/protocol.md "Authentication", "Sessions, resume and replay", "Limits"):

- CONNECTING: the HTTP upgrade is in progress. UPGRADED -> AUTHENTICATING;
  CLOSE (upgrade refused) -> DISCONNECTED, there is no socket to close.
- AUTHENTICATING: waiting for a token (first-frame auth, at most the auth
  timeout). AUTH_OK -> ACTIVE; AUTH_FAILED -> DISCONNECTED (closed 4001 at
  once); CLOSE -> DISCONNECTING.
- ACTIVE: authenticated and serving frames. ACTIVITY stays ACTIVE; AUTH_OK
  (token refresh) stays ACTIVE; IDLE (no traffic within the heartbeat
  interval) -> INACTIVE; CLOSE -> DISCONNECTING.
- INACTIVE: a heartbeat is outstanding. ACTIVITY -> ACTIVE; CLOSE (heartbeat
  timeout) -> DISCONNECTING.
- DISCONNECTING: the close handshake is in progress. CLOSED -> DISCONNECTED.
- DISCONNECTED: terminal; every event is illegal.

Any event not in the table for the current state raises ``TransitionError``
naming the state and the event: an illegal transition is a bug in the
caller, not a client fault.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum

from rtcs.errors import TransitionError

__all__ = ["TRANSITIONS", "ConnectionStateMachine", "Event", "State"]


class State(enum.Enum):
    """Where a connection is in its life."""

    CONNECTING = "connecting"
    AUTHENTICATING = "authenticating"
    ACTIVE = "active"
    INACTIVE = "inactive"
    DISCONNECTING = "disconnecting"
    DISCONNECTED = "disconnected"


class Event(enum.Enum):
    """What can happen to a connection."""

    UPGRADED = "upgraded"
    AUTH_OK = "auth_ok"
    AUTH_FAILED = "auth_failed"
    IDLE = "idle"
    ACTIVITY = "activity"
    CLOSE = "close"
    CLOSED = "closed"


TRANSITIONS: dict[State, dict[Event, State]] = {
    State.CONNECTING: {
        Event.UPGRADED: State.AUTHENTICATING,
        Event.CLOSE: State.DISCONNECTED,
    },
    State.AUTHENTICATING: {
        Event.AUTH_OK: State.ACTIVE,
        Event.AUTH_FAILED: State.DISCONNECTED,
        Event.CLOSE: State.DISCONNECTING,
    },
    State.ACTIVE: {
        Event.ACTIVITY: State.ACTIVE,
        Event.AUTH_OK: State.ACTIVE,
        Event.IDLE: State.INACTIVE,
        Event.CLOSE: State.DISCONNECTING,
    },
    State.INACTIVE: {
        Event.ACTIVITY: State.ACTIVE,
        Event.CLOSE: State.DISCONNECTING,
    },
    State.DISCONNECTING: {
        Event.CLOSED: State.DISCONNECTED,
    },
    State.DISCONNECTED: {},
}


class ConnectionStateMachine:
    """One connection's state, advanced only through ``TRANSITIONS``."""

    __slots__ = ("state",)

    def __init__(self, state: State = State.CONNECTING) -> None:
        self.state = state

    def can(self, event: Event) -> bool:
        """True if ``event`` is legal in the current state."""
        return event in TRANSITIONS[self.state]

    def fire(self, event: Event) -> State:
        """Apply ``event`` and return the new state.

        Raises:
            TransitionError: ``event`` is not legal in the current state; the
                state is left unchanged.
        """
        try:
            self.state = TRANSITIONS[self.state][event]
        except KeyError:
            raise TransitionError(self.state, event) from None
        return self.state

    def __repr__(self) -> str:
        return f"ConnectionStateMachine({self.state})"
