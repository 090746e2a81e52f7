"""What the client does after each close code and refused handshake (the table of rtcs.client)."""

from __future__ import annotations

import pytest

from rtcs.client import AuthFailed, Rejected
from rtcs.client._closecodes import CLOSE_ACTIONS, Action, after_close, after_refusal, stop_error
from rtcs.errors import CloseCode

RESUME, LATER, STOP = Action.RESUME, Action.LATER, Action.STOP

TABLE = {
    1000: STOP,
    1001: RESUME,
    1003: STOP,
    1006: RESUME,
    1007: STOP,
    1009: STOP,
    1011: RESUME,
    1013: LATER,
    4001: STOP,
    4003: STOP,
    4008: RESUME,
    4029: LATER,
    4031: LATER,
}


@pytest.mark.parametrize("code, action", TABLE.items())
def test_each_close_code_of_the_protocol(code: int, action: Action) -> None:
    for refreshable in (False, True):
        got = after_close(code, "", authenticated=False, refreshable=refreshable)
        assert got is action, (code, refreshable)


def test_every_close_code_rtcs_sends_has_a_decision() -> None:
    # A close code added to the server must be decided here too.
    assert {int(code) for code in CloseCode} == set(CLOSE_ACTIONS) == set(TABLE)


@pytest.mark.parametrize("code", [1002, 1012, 1014, 3000, 4000, 4999])
def test_other_codes_reconnect(code: int) -> None:
    assert after_close(code, "", authenticated=True, refreshable=False) is RESUME


def test_4001_reconnects_once_with_a_fresh_token_from_a_callable() -> None:
    # Authenticated before: the token expired before its refresh got through.
    assert after_close(4001, "token expired", authenticated=True, refreshable=True) is RESUME
    # A fresh token refused (before the welcome), a static token, a revocation: stop.
    assert after_close(4001, "bad signature", authenticated=False, refreshable=True) is STOP
    assert after_close(4001, "token expired", authenticated=True, refreshable=False) is STOP
    assert after_close(4001, "revoked", authenticated=True, refreshable=True) is STOP


@pytest.mark.parametrize(
    "status, action",
    [
        (400, STOP),
        (401, STOP),
        (403, STOP),
        (404, STOP),
        (429, LATER),
        (500, RESUME),
        (502, RESUME),
        (503, LATER),
        (301, RESUME),
    ],
)
def test_refused_handshakes(status: int, action: Action) -> None:
    assert after_refusal(status) is action


def test_stop_errors() -> None:
    error = stop_error(4001, "revoked")
    assert isinstance(error, AuthFailed)
    assert (error.code, error.close_code) == ("auth_failed", 4001)
    assert "revoked" in error.message
    assert isinstance(stop_error(401, "bad token", http=True), AuthFailed)
    assert isinstance(stop_error(403, "", http=True), Rejected)
    # 401 is not an auth close code: a WebSocket close 401 does not exist.
    assert isinstance(stop_error(4003, "blocked"), Rejected)
    rejected = stop_error(1000, "session resumed elsewhere")
    assert isinstance(rejected, Rejected)
    assert rejected.close_code == 1000
