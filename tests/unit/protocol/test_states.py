"""The connection state machine table."""

from __future__ import annotations

import pytest

from rtcs.errors import TransitionError
from rtcs.protocol.states import TRANSITIONS, ConnectionStateMachine, Event, State

EXPECTED = {
    (State.CONNECTING, Event.UPGRADED): State.AUTHENTICATING,
    (State.CONNECTING, Event.CLOSE): State.DISCONNECTED,
    (State.AUTHENTICATING, Event.AUTH_OK): State.ACTIVE,
    (State.AUTHENTICATING, Event.AUTH_FAILED): State.DISCONNECTED,
    (State.AUTHENTICATING, Event.CLOSE): State.DISCONNECTING,
    (State.ACTIVE, Event.IDLE): State.INACTIVE,
    (State.ACTIVE, Event.ACTIVITY): State.ACTIVE,
    (State.ACTIVE, Event.AUTH_OK): State.ACTIVE,
    (State.ACTIVE, Event.CLOSE): State.DISCONNECTING,
    (State.INACTIVE, Event.ACTIVITY): State.ACTIVE,
    (State.INACTIVE, Event.CLOSE): State.DISCONNECTING,
    (State.DISCONNECTING, Event.CLOSED): State.DISCONNECTED,
}


def test_table_is_exactly_the_specified_transitions() -> None:
    assert set(TRANSITIONS) == set(State)
    table = {(s, e): t for s, row in TRANSITIONS.items() for e, t in row.items()}
    assert table == EXPECTED


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("event", list(Event))
def test_fire_follows_the_table(state: State, event: Event) -> None:
    machine = ConnectionStateMachine(state)
    expected = EXPECTED.get((state, event))
    assert machine.can(event) is (expected is not None)
    if expected is None:
        with pytest.raises(TransitionError) as info:
            machine.fire(event)
        assert info.value.state is state and info.value.event is event
        assert machine.state is state
    else:
        assert machine.fire(event) is expected
        assert machine.state is expected


def test_a_whole_life() -> None:
    machine = ConnectionStateMachine()
    assert machine.state is State.CONNECTING
    for event in (
        Event.UPGRADED,
        Event.AUTH_OK,
        Event.ACTIVITY,
        Event.IDLE,
        Event.ACTIVITY,
        Event.AUTH_OK,
        Event.IDLE,
        Event.CLOSE,
        Event.CLOSED,
    ):
        machine.fire(event)
    # Read afresh: mypy still narrows machine.state to the CONNECTING asserted above.
    final: State = machine.state
    assert final is State.DISCONNECTED
    assert not any(machine.can(e) for e in Event)
