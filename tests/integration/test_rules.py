"""Routing rules applied to publishes: real nodes, real clients (docs/rules.md).

Transforms, target filters, drop, reroute and ``stop`` as clients see them;
the filter crossing nodes in the broker envelope (memory hub, redis-server,
Redis Cluster); metrics; and reload (``App.reload_rules``, what SIGHUP runs)
keeping the old rules on a bad file.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.integration.conftest import SHARED_BACKENDS, Client, Node, metric, start_pair
from tests.integration.test_revocation import post

RULES = """
[[rule]]
name = "alerts-to-moderators"
priority = 10
topic = "ops.*.alert"
when = 'data.level in ["high", "critical"] && !("bot" in sender.roles)'
target = { roles = ["moderator"], exclude_sender = true }
action = "reroute"
reroute = "alerts.moderators"
[rule.transform]
set = { "data.routed" = true }
remove = ["data.secret"]
rename = { "data.msg" = "data.text" }

[[rule]]
name = "drop-debug"
priority = 5
topic = "app.>"
when = 'data.level == "debug"'
action = "drop"
stop = true

[[rule]]
name = "app-stamp"
topic = "app.>"
transform = { set = { "data.stamped" = true } }

[[rule]]
name = "vip-only"
topic = "vip.news"
target = { users = ["alice", "bob"] }
"""


def rules_file(tmp_path: Path, text: str = RULES, name: str = "rules.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


async def settle(*clients: Client) -> None:
    """A round trip each: whatever the server sent them before has arrived."""
    for client in clients:
        await client.request({"type": "ping"}, "pong")


@pytest.fixture
async def ruled(node_factory: Callable[..., Awaitable[Node]], tmp_path: Path) -> Node:
    return await node_factory(**{"rules.file": rules_file(tmp_path)})


async def test_a_transform_applies_and_unmatched_topics_pass_unchanged(ruled: Node) -> None:
    pub, sub = await ruled.client("pub"), await ruled.client("sub")
    await sub.subscribe("app.>")
    await sub.subscribe("other.x")
    await pub.publish("app.log", {"level": "info", "n": 1})
    got = await sub.expect("message", topic="app.log")
    assert got["data"] == {"level": "info", "n": 1, "stamped": True}
    assert got["from"] == "pub"
    await pub.publish("other.x", {"level": "info"})
    got = await sub.expect("message", topic="other.x")
    assert got["data"] == {"level": "info"}


async def test_drop_acks_the_publisher_and_stop_skips_lower_rules(ruled: Node) -> None:
    pub, sub = await ruled.client("pub"), await ruled.client("sub")
    await sub.subscribe("app.>")
    await pub.publish("app.log", {"level": "debug"})  # acked, delivered to nobody
    await pub.publish("app.log", {"level": "info"})
    got = await sub.expect("message", topic="app.log")
    assert got["data"]["level"] == "info" and got["seq"] == 1
    await settle(sub)
    await sub.silent()
    assert metric(ruled, "rtcs_rule_drops_total", rule="drop-debug") == 1
    # the dropped publish never reached app-stamp (stop), the second one did
    assert metric(ruled, "rtcs_rule_matches_total", rule="app-stamp") == 1
    assert metric(ruled, "rtcs_rule_matches_total", rule="drop-debug") == 1


async def test_reroute_with_a_role_filter_and_exclude_sender(ruled: Node) -> None:
    mod = await ruled.client("mod", ("moderator",))
    other = await ruled.client("other")
    publisher = await ruled.client("pub", ("moderator",))
    for client in (mod, other, publisher):
        await client.subscribe("alerts.>")
        await client.subscribe("ops.>")
    alert = {"level": "high", "msg": "disk full", "secret": "s3"}
    await publisher.publish("ops.db.alert", alert)
    got = await mod.expect("message")
    assert got["topic"] == "alerts.moderators"
    assert got["data"] == {"level": "high", "text": "disk full", "routed": True}
    assert got["from"] == "pub"
    # a bot's alert is not rerouted: everybody on ops.> gets it as sent
    bot = await ruled.client("bot", ("bot",))
    await bot.publish("ops.db.alert", alert)
    for client in (mod, other, publisher):
        got = await client.expect("message", topic="ops.db.alert")
        assert got["data"] == alert
    # not a moderator, and the publisher itself, never saw the rerouted one
    await settle(other, publisher)
    assert [f for f in other.pending + publisher.pending if f["type"] == "message"] == []
    assert metric(ruled, "rtcs_rule_reroutes_total", rule="alerts-to-moderators") == 1


async def test_a_user_filter(ruled: Node) -> None:
    alice, carol = await ruled.client("alice"), await ruled.client("carol")
    for client in (alice, carol):
        await client.subscribe("vip.>")
    await carol.publish("vip.news", "hi")
    await alice.expect("message", topic="vip.news", data="hi")
    await settle(carol)
    await carol.silent()


async def test_a_condition_that_fails_counts_as_an_error_not_a_crash(
    node_factory: Callable[..., Awaitable[Node]], tmp_path: Path
) -> None:
    text = '[[rule]]\nname = "typed"\ntopic = "t.>"\nwhen = \'data.n + 1 > 2\'\naction = "drop"\n'
    node = await node_factory(**{"rules.file": rules_file(tmp_path, text)})
    client = await node.client("u")
    await client.subscribe("t.>")
    await client.publish("t.a", {"n": "three"})  # a string: CEL error, rule not applied
    await client.expect("message", topic="t.a")
    await client.publish("t.a", {"m": 1})  # a missing field: false, not an error
    await client.expect("message", topic="t.a")
    await client.publish("t.a", {"n": 5})  # dropped
    await settle(client)
    await client.silent()
    assert metric(node, "rtcs_rule_errors_total", rule="typed") == 1
    assert metric(node, "rtcs_rule_drops_total", rule="typed") == 1


async def test_route_cache_metrics(ruled: Node) -> None:
    client = await ruled.client("u")
    for _ in range(3):
        await client.publish("app.x", {"level": "info"})
    body = ruled.app.metrics.render()[0].decode()
    assert "rtcs_route_cache_misses_total 1.0" in body
    assert "rtcs_route_cache_hits_total 2.0" in body
    assert "rtcs_route_cache_topics 1.0" in body
    assert metric(ruled, "rtcs_rules_loaded") == 4


async def test_reload_swaps_the_rules_and_a_bad_file_keeps_the_old_ones(
    node_factory: Callable[..., Awaitable[Node]], tmp_path: Path
) -> None:
    path = rules_file(tmp_path, '[[rule]]\nname = "a"\ntopic = "t.>"\naction = "drop"\n')
    node = await node_factory(**{"rules.file": path})
    client = await node.client("u")
    await client.subscribe("t.>")
    await client.publish("t.x", 1)
    await settle(client)
    await client.silent()
    version = node.app.ctx.rules.version if node.app.ctx and node.app.ctx.rules else ""

    rules_file(
        tmp_path, '[[rule]]\nname = "b"\ntopic = "t.>"\ntransform = { set = { "data.b" = 1 } }\n'
    )
    assert (await node.app.reload_rules()).ok
    await client.publish("t.x", {})
    got = await client.expect("message", topic="t.x")
    assert got["data"] == {"b": 1}
    assert node.app.ctx is not None and node.app.ctx.rules is not None
    assert node.app.ctx.rules.version != version
    assert metric(node, "rtcs_rules_reloads_total", result="ok") == 1
    # the rule "a" is gone from the metrics, "b" is there
    assert (
        node.app.metrics.registry.get_sample_value("rtcs_rule_matches_total", {"rule": "a"}) is None
    )
    assert metric(node, "rtcs_rule_matches_total", rule="b") == 1

    rules_file(tmp_path, '[[rule]]\nname = "c"\ntopic = "t.>"\naction = "reroute"\n')
    with capture_logs() as logs:
        assert not (await node.app.reload_rules()).ok
    [failed] = [e for e in logs if e["event"] == "rules reload failed; the old rules stay"]
    assert "rule 'c'" in failed["error"] and "reroute" in failed["error"]
    assert failed["file"] == path
    assert metric(node, "rtcs_rules_reloads_total", result="error") == 1
    await client.publish("t.x", {})
    got = await client.expect("message", topic="t.x")
    assert got["data"] == {"b": 1}  # still rule "b"


@pytest.fixture(params=SHARED_BACKENDS)
async def ruled_pair(
    request: pytest.FixtureRequest,
    node_factory: Callable[..., Awaitable[Node]],
    tmp_path: Path,
) -> tuple[Node, Node]:
    return await start_pair(request.param, node_factory, **{"rules.file": rules_file(tmp_path)})


async def test_filters_and_reroutes_cross_nodes(ruled_pair: tuple[Node, Node]) -> None:
    a, b = ruled_pair
    publisher = await a.client("pub", ("moderator",))
    mod_b = await b.client("mod", ("moderator",))
    other_b = await b.client("other")
    self_b = await b.client("pub", ("moderator",))  # the publisher's other session
    for client in (mod_b, other_b, self_b):
        await client.subscribe("alerts.>")
        await client.subscribe("vip.>")
    await publisher.publish("ops.db.alert", {"level": "critical", "msg": "down"})
    got = await mod_b.expect("message", topic="alerts.moderators")
    assert got["data"] == {"level": "critical", "text": "down", "routed": True}
    # users filter: alice and bob only; "other" and "pub" are neither
    alice_b = await b.client("alice")
    await alice_b.subscribe("vip.>")
    await publisher.publish("vip.news", "n1")
    await alice_b.expect("message", topic="vip.news", data="n1")
    # a later unfiltered message reaches everybody: nothing filtered came before it
    await publisher.publish("alerts.all", "sentinel")
    for client in (other_b, self_b):
        got = await client.expect("message")
        assert got["data"] == "sentinel", got


async def test_the_admin_call_reloads_the_rules(
    node_factory: Callable[..., Awaitable[Node]], tmp_path: Path
) -> None:
    path = rules_file(tmp_path, '[[rule]]\nname = "a"\ntopic = "t.>"\naction = "drop"\n')
    node = await node_factory(**{"rules.file": path})
    admin = {"Authorization": f"Bearer {node.token('ops', ('admin',))}"}
    user = {"Authorization": f"Bearer {node.token('u', ('user',))}"}
    assert await post(node, "/admin/rules/reload", b"", {}) == (401, {"code": "unauthorized"})
    assert await post(node, "/admin/rules/reload", b"", user) == (403, {"code": "forbidden"})
    before = node.app.ctx.rules.version if node.app.ctx and node.app.ctx.rules else ""

    rules_file(
        tmp_path, '[[rule]]\nname = "b"\ntopic = "t.>"\ntransform = { set = { "data.b" = 1 } }\n'
    )
    status, body = await post(node, "/admin/rules/reload", b"", admin)
    assert status == 200
    assert body["reloaded"] is True and body["rules"] == 1
    assert (body["previous"], body["version"] != before) == (before, True)
    client = await node.client("u")
    await client.subscribe("t.>")
    await client.publish("t.x", {})
    assert (await client.expect("message", topic="t.x"))["data"] == {"b": 1}

    rules_file(tmp_path, '[[rule]]\nname = "c"\ntopic = "t.>"\naction = "reroute"\n')
    status, body = await post(node, "/admin/rules/reload", b"", admin)
    assert (status, body["code"], body["reloaded"]) == (422, "bad_rules", False)
    assert "rule 'c'" in body["message"] and body["version"] == body["previous"]


async def test_the_admin_reload_without_a_rules_file_is_409(node: Node) -> None:
    admin = {"Authorization": f"Bearer {node.token('ops', ('admin',))}"}
    status, body = await post(node, "/admin/rules/reload", b"", admin)
    assert (status, body["code"]) == (409, "no_rules_file")
