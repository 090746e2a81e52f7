"""``GET /admin/status``: the node's own view, for operators (rtcs.status).

A real node on port 0, real sockets: a raw HTTP/1.1 request on the
WebSocket port; restarts provoked as the crash-storm tests provoke crashes (a
handler that raises on a message a client can send).
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from rtcs import __version__, status
from rtcs.actors.messages import RoutePublish
from rtcs.actors.routing import TopicHandler
from rtcs.runtime import ActorView, Strategy, SupervisorView
from tests.integration.conftest import TIMEOUT, Node, metric, wait_until
from tests.support import http
from tests.support.logs import json_logs as captured_json_logs

NodeFactory = Callable[..., Awaitable[Node]]
BOOM = "boom"
ROUTER_RESTARTS = {"supervisor": "router", "strategy": "all_for_one"}


async def get_status(
    node: Node, token: str | None = None, method: str = "GET", **headers: str
) -> tuple[int, dict[str, str], Any]:
    """One raw request for /admin/status: the status, the headers (lower-case
    names) and the decoded JSON body."""
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    answer = await http.request(node.app.port, method, status.PATH, None, headers, timeout=TIMEOUT)
    return answer.status, answer.headers, answer.body


def crash_on_boom(monkeypatch: pytest.MonkeyPatch) -> None:
    """A publish to topic ``boom`` crashes the topic handler: a bug a client can trigger."""
    publish = TopicHandler._publish

    def crashing(self: TopicHandler, msg: RoutePublish) -> None:
        if msg.topic == BOOM:
            raise RuntimeError("simulated bug")
        publish(self, msg)

    monkeypatch.setattr(TopicHandler, "_publish", crashing)


def find(tree: dict[str, Any], name: str) -> dict[str, Any]:
    """The supervisor ``name`` at or anywhere below ``tree``."""
    found = _search(tree, name)
    assert found is not None, f"no supervisor {name!r} in the tree"
    return found


def _search(tree: dict[str, Any], name: str) -> dict[str, Any] | None:
    if tree["name"] == name:
        return tree
    for child in tree["children"]:
        if isinstance(child, dict) and (found := _search(child, name)) is not None:
            return found
    return None


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nonsense"},
        {"Authorization": "Basic b3BzOng="},
        {"Authorization": "Bearer"},
    ],
    ids=["none", "invalid", "basic", "empty"],
)
async def test_without_a_valid_token_it_is_401(node: Node, headers: dict[str, str]) -> None:
    code, answer, body = await get_status(node, **headers)
    assert (code, body) == (401, {"code": "unauthorized"})
    assert answer["cache-control"] == "no-store"


async def test_a_token_without_the_admin_role_is_403(node: Node) -> None:
    code, _, body = await get_status(node, node.token("alice", ("ops", "moderator")))
    assert (code, body) == (403, {"code": "forbidden"})


@pytest.mark.parametrize("method", ["DELETE", "PUT", "HEAD", "OPTIONS"])
async def test_another_method_is_405_allowing_get(node: Node, method: str) -> None:
    code, answer, body = await get_status(node, node.token("ops", ("admin",)), method)
    assert (code, body) == (405, {"code": "method_not_allowed"})
    assert answer["allow"] == "GET"
    # Whatever the token: the method is checked first.
    assert (await get_status(node, None, method))[0] == 405


async def test_a_post_is_405(node: Node) -> None:
    # A request with a body takes the gateway's other path (the front door).
    code, _, body = await get_status(
        node, node.token("ops", ("admin",)), "POST", **{"Content-Length": "0"}
    )
    assert (code, body) == (405, {"code": "method_not_allowed"})


async def test_the_status_shows_the_tree_a_client_and_a_restart(
    node_factory: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash_on_boom(monkeypatch)
    node = await node_factory(**{"server.node_id": "status-node"})
    admin = node.token("ops", ("admin",))
    alice = await node.client("alice")

    code, _, before = await get_status(node, admin)
    assert code == 200
    router = find(before["actors"], "router")
    assert (router["restarts"], router["intensity"]["budget_left"]) == (0, 5)

    await alice.send({"type": "publish", "topic": BOOM, "data": 1, "id": 999})
    # all-for-one: the four route handlers restart together.
    await wait_until(lambda: metric(node, "rtcs_actor_restarts_total", **ROUTER_RESTARTS) == 4)
    await alice.request({"type": "ping"}, "pong")  # the node serves on

    code, answer, body = await get_status(node, admin)

    assert code == 200
    assert answer["content-type"] == "application/json"
    assert body["node"] == "status-node"
    assert body["version"] == __version__
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", body["started_at"])
    assert body["uptime_seconds"] >= before["uptime_seconds"] >= 0
    assert body["connections"] == 1
    assert body["sessions"] == {"attached": 1, "detached": 0}
    assert (body["breaker"], body["degraded"], body["backend"]) == ("closed", False, "memory")
    assert body["rules"] == {"version": "", "loaded": 0}
    assert body["workers"] == {"count": 1, "connections": 1}

    root = body["actors"]
    assert (root["name"], root["strategy"]) == ("system", "one_for_one")
    server = find(root, "server")
    assert [c["name"] for c in server["children"]] == [
        "connections",
        "router",
        "metrics",
        "plugins",
    ]
    connections = find(root, "connections")
    assert connections["children"] == []
    assert connections["unnamed_children"] == {"connection": 1}
    assert connections["mailboxes"] == {"connection": 0}
    router = find(root, "router")
    assert router["strategy"] == "all_for_one"
    assert router["children"] == ["route.topic", "route.direct", "route.room", "route.broadcast"]
    assert router["restarts"] == 1
    assert router["intensity"] == {"max_restarts": 5, "within_seconds": 10.0, "budget_left": 4}
    assert set(router["mailboxes"]) == {
        "route.topic",
        "route.direct",
        "route.room",
        "route.broadcast",
    }
    assert server["restarts"] == 0


async def test_a_client_gone_is_gone_from_the_counts(node: Node) -> None:
    admin = node.token("ops", ("admin",))
    alice = await node.client("alice")
    _, _, before = await get_status(node, admin)
    assert find(before["actors"], "connections")["unnamed_children"] == {"connection": 1}
    await alice.ws.close()
    await wait_until(lambda: _gone(node))

    _, _, body = await get_status(node, admin)

    assert body["connections"] == 0
    assert body["sessions"] == {"attached": 0, "detached": 1}
    assert find(body["actors"], "connections")["unnamed_children"] == {}


def _gone(node: Node) -> bool:
    """The socket's handler finished and its session is detached."""
    ctx, gateway = node.app.ctx, node.app.gateway
    assert ctx is not None and gateway is not None
    return not gateway.handles and ctx.sessions.detached_count() == 1


@pytest.fixture
def json_logs(caplog: pytest.LogCaptureFixture) -> Iterator[io.StringIO]:
    """rtcs logging configured at debug into a buffer (as ``python -m rtcs`` does)."""
    with captured_json_logs("debug") as stream:
        caplog.set_level(logging.DEBUG)
        yield stream


async def test_requests_are_logged_without_the_token(
    node_factory: NodeFactory, json_logs: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    node = await node_factory(**{"log.level": "debug"})
    admin, other = node.token("ops", ("admin",)), node.token("eve", ("ops",))
    assert (await get_status(node, admin))[0] == 200
    assert (await get_status(node, other))[0] == 403

    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    requests = [line for line in lines if line["event"] == "admin request"]
    assert [(r["path"], r["status"], r["address"]) for r in requests] == [
        (status.PATH, 200, "127.0.0.1"),
        (status.PATH, 403, "127.0.0.1"),
    ]
    everything = json_logs.getvalue() + caplog.text
    for token in (admin, other):
        assert token.rsplit(".", 1)[-1] not in everything


def test_the_answer_is_built_from_the_snapshots_alone() -> None:
    leaf = ActorView("stats", "stats", 2)
    metrics = SupervisorView(
        "metrics", "metrics", Strategy.ALL_FOR_ONE, 5, 10.0, 1, 4, 0, (leaf,), {}, {"stats": 2}
    )
    conns = SupervisorView(
        "connections",
        "connections",
        Strategy.ONE_FOR_ONE,
        100,
        1.0,
        0,
        100,
        3,
        (),
        {"connection": 7},
        {"connection": 1},
    )
    root = SupervisorView(
        "server", "server", Strategy.REST_FOR_ONE, 3, 5.0, 0, 3, 0, (conns, metrics), {}, {}
    )
    facts = status.NodeFacts(
        node="n1",
        version="9.9",
        started_at=0.5,
        uptime=12.3456,
        connections=7,
        attached=6,
        detached=2,
        breaker="half_open",
        degraded=True,
        rules_version="abc123",
        rules_loaded=3,
        backend="redis",
        workers=2,
        instance_connections=13,
    )

    body = status.build(facts, root)

    assert body["started_at"] == "1970-01-01T00:00:00.500000Z"
    assert body["uptime_seconds"] == 12.346
    assert body["sessions"] == {"attached": 6, "detached": 2}
    assert (body["breaker"], body["degraded"]) == ("half_open", True)
    assert body["rules"] == {"version": "abc123", "loaded": 3}
    assert body["workers"] == {"count": 2, "connections": 13}
    server = body["actors"]
    assert server["children"][0]["unnamed_children"] == {"connection": 7}
    assert server["children"][0]["mailbox"] == 3
    assert server["children"][1] == {
        "name": "metrics",
        "kind": "metrics",
        "strategy": "all_for_one",
        "restarts": 1,
        "intensity": {"max_restarts": 5, "within_seconds": 10.0, "budget_left": 4},
        "children": ["stats"],
        "unnamed_children": {},
        "mailbox": 0,
        "mailboxes": {"stats": 2},
    }
    json.dumps(body)  # plain JSON throughout
    assert status.build(facts, None)["actors"] is None
