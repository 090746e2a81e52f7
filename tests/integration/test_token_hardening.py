"""Token typing, lifetime and absurd time claims against a real node.

docs/protocol.md, "Authentication": a token that is not an access token, that
lives longer than ``auth.max_token_lifetime`` or whose time claims are not
ordinary numbers is refused with HTTP 401 at the handshake and with close 4001
as a first ``auth`` frame, on the HMAC fast path and on the PyJWT path alike,
without a traceback in the logs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator

import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.integration.conftest import TIMEOUT, Client, Node
from tests.integration.conftest import run_cli as run

NodeFactory = Callable[..., Awaitable[Node]]
HUGE = "1" + "0" * 309  # 10**309: beyond the float range

# Payloads as written on the wire: {soon} is now + 60 s, {hour} now + 1 h, {far} now + 25 h.
REFUSED = {
    "typ refresh": '{{"sub": "alice", "exp": {soon}, "typ": "refresh"}}',
    "typ number": '{{"sub": "alice", "exp": {soon}, "typ": 1}}',
    "typ capitalised": '{{"sub": "alice", "exp": {soon}, "typ": "Access"}}',
    "lifetime 25 h": '{{"sub": "alice", "exp": {far}}}',
    "exp 10**309": '{{"sub": "alice", "exp": ' + HUGE + "}}",
    "exp 1e308": '{{"sub": "alice", "exp": 1e308}}',
    "exp 1e400": '{{"sub": "alice", "exp": 1e400}}',
    "exp NaN": '{{"sub": "alice", "exp": NaN}}',
    "exp Infinity": '{{"sub": "alice", "exp": Infinity}}',
    "exp true": '{{"sub": "alice", "exp": true}}',
    "exp string": '{{"sub": "alice", "exp": "{soon}"}}',
    "iat -10**309": '{{"sub": "alice", "exp": {soon}, "iat": -' + HUGE + "}}",
    "nbf 10**309": '{{"sub": "alice", "exp": {soon}, "nbf": ' + HUGE + "}}",
    "nbf -Infinity": '{{"sub": "alice", "exp": {soon}, "nbf": -Infinity}}',
}
# No extra header field: the HMAC fast path; "cty": a header only PyJWT decodes.
PATHS: dict[str, dict[str, str] | None] = {"fast": None, "pyjwt": {"cty": "x"}}


def signed(node: Node, template: str, headers: dict[str, str] | None = None) -> str:
    """``template`` filled in and signed with the node's secret, as HS256."""
    now = int(time.time())
    payload = template.format(soon=now + 60, hour=now + 3600, far=now + 90000)
    secret = node.app.settings.auth.secret
    return jwt.api_jws.PyJWS().encode(payload.encode(), secret, algorithm="HS256", headers=headers)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def logs(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> Iterator[pytest.LogCaptureFixture]:
    """Everything the node logs; after the test: no error and no traceback."""
    caplog.set_level(logging.DEBUG)
    yield caplog
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err + caplog.text
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


@pytest.mark.usefixtures("logs")
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", REFUSED)
async def test_refused_at_the_handshake_with_401(node: Node, case: str, path: str) -> None:
    token = signed(node, REFUSED[case], PATHS[path])
    with pytest.raises(InvalidStatus) as info:
        await connect(node.url, additional_headers=bearer(token), open_timeout=TIMEOUT)
    assert info.value.response.status_code == 401


@pytest.mark.usefixtures("logs")
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", REFUSED)
async def test_refused_as_first_frame_with_4001(node: Node, case: str, path: str) -> None:
    client = Client(await connect(node.url, open_timeout=TIMEOUT))
    await client.send({"type": "auth", "token": signed(node, REFUSED[case], PATHS[path])})
    assert await client.closed() == 4001


@pytest.mark.usefixtures("logs")
@pytest.mark.parametrize("path", PATHS)
async def test_access_typ_and_the_longest_lifetime_are_accepted(node: Node, path: str) -> None:
    token = signed(node, '{{"sub": "alice", "exp": {soon}, "typ": "access"}}', PATHS[path])
    ws = await connect(node.url, additional_headers=bearer(token), open_timeout=TIMEOUT)
    await Client(ws).expect("welcome", user="alice")
    longest = node.token("bob", ttl=node.app.settings.auth.max_token_lifetime)
    client = Client(await connect(node.url, open_timeout=TIMEOUT))
    await client.send({"type": "auth", "id": "a", "token": longest})
    await client.expect("welcome", id="a", user="bob")


async def test_the_lifetime_limit_is_configurable(node_factory: NodeFactory) -> None:
    node = await node_factory(**{"auth.max_token_lifetime": 60})
    ws = await connect(node.url, additional_headers=bearer(node.token(ttl=60)))
    await Client(ws).expect("welcome", user="alice")
    too_long = signed(node, '{{"sub": "alice", "exp": {hour}}}')
    with pytest.raises(InvalidStatus) as info:
        await connect(node.url, additional_headers=bearer(too_long), open_timeout=TIMEOUT)
    assert info.value.response.status_code == 401


def test_token_command_refuses_a_ttl_beyond_the_limit() -> None:
    result = run("token", "alice", "--ttl", "90000")
    assert result.returncode == 2
    assert "auth.max_token_lifetime" in result.stderr and "--ttl" in result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    lowered = run("token", "alice", "--ttl", "61", env={"RTCS_AUTH_MAX_TOKEN_LIFETIME": "60"})
    assert lowered.returncode == 2 and "auth.max_token_lifetime" in lowered.stderr
    at_limit = run("token", "alice", "--ttl", "60", env={"RTCS_AUTH_MAX_TOKEN_LIFETIME": "60"})
    assert at_limit.returncode == 0, at_limit.stderr
