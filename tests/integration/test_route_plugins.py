"""Route-handler plugins (docs/plugins.md, "Route-handler plugins"): real nodes, real clients."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from rtcs import config
from rtcs.errors import ConfigError
from rtcs.plugins import load_plugins
from tests.integration.conftest import Node, metric

UPPER = "tests.support.route_plugins:Upper"
TAG = "tests.support.route_plugins:Tag"


@pytest.fixture
async def routed(node_factory: Callable[..., Awaitable[Node]]) -> Node:
    plugins = {"upper": {"actor": UPPER, "timeout": 0.5}, "tag": TAG}
    return await node_factory(plugins=plugins)


async def test_plugins_transform_in_configuration_order(routed: Node) -> None:
    pub, sub = await routed.client("pub"), await routed.client("sub")
    await sub.subscribe("chat.>")
    await pub.publish("chat.room", {"text": "hi"})
    got = await sub.expect("message", topic="chat.room")
    assert got["data"] == {"text": "HI", "by": "pub", "tagged": "HI"}
    assert got["from"] == "pub"


async def test_drop_with_an_answer_to_the_publisher_alone(routed: Node) -> None:
    pub, sub = await routed.client("pub"), await routed.client("sub")
    await sub.subscribe("chat.>")
    rid = pub.next_id()
    await pub.send({"type": "publish", "id": rid, "topic": "chat.room", "data": {"text": "spam"}})
    answer = await pub.expect("message", topic="chat.room")
    assert answer["data"] == {"refused": "spam"} and "from" not in answer
    await pub.expect("ack", id=rid)
    await sub.request({"type": "ping"}, "pong")
    await sub.silent()


async def test_fan_out_to_another_topic(routed: Node) -> None:
    pub, audit = await routed.client("pub"), await routed.client("auditor")
    await audit.subscribe("audit.>")
    await pub.publish("chat.room", {"text": "fan"})
    got = await audit.expect("message", topic="audit.chat")
    assert got["data"] == {"seen": "fan"} and got["from"] == "pub"


async def test_route_raising_answers_internal_and_the_plugin_goes_on(routed: Node) -> None:
    pub, sub = await routed.client("pub"), await routed.client("sub")
    await sub.subscribe("chat.>")
    directory = routed.app.directory
    before = directory.lookup("upper")
    restarts = metric(
        routed, "rtcs_actor_restarts_total", supervisor="plugins", strategy="one_for_one"
    )
    # A client able to make route() raise cannot restart anything, however often.
    for _ in range(30):
        err = await pub.request(
            {"type": "publish", "topic": "chat.room", "data": {"text": "crash"}}, "error"
        )
        assert err["code"] == "internal"
    assert (
        metric(routed, "rtcs_route_plugin_failures_total", plugin="upper", reason="crashed") == 30
    )
    await pub.publish("chat.room", {"text": "after"})
    got = await sub.expect("message", topic="chat.room")
    assert got["data"]["text"] == "AFTER"
    assert directory.lookup("upper") == before
    assert restarts == metric(
        routed, "rtcs_actor_restarts_total", supervisor="plugins", strategy="one_for_one"
    )


async def test_a_crash_elsewhere_restarts_the_plugin_and_times_out_its_publish(
    routed: Node,
) -> None:
    pub, sub = await routed.client("pub"), await routed.client("sub")
    await sub.subscribe("chat.>")
    directory = routed.app.directory
    before = directory.lookup("upper")
    err = await pub.request(
        {"type": "publish", "topic": "chat.room", "data": {"text": "explode later"}}, "error"
    )
    assert err["code"] == "internal"
    assert metric(routed, "rtcs_route_plugin_failures_total", plugin="upper", reason="timeout") == 1
    assert directory.lookup("upper") not in (None, before)  # restarted by its supervisor
    await pub.publish("chat.room", {"text": "after"})
    got = await sub.expect("message", topic="chat.room")
    assert got["data"]["text"] == "AFTER"


async def test_a_plugin_that_never_answers_times_out_and_order_is_kept(routed: Node) -> None:
    pub, sub = await routed.client("pub"), await routed.client("sub")
    await sub.subscribe("chat.>")
    await sub.subscribe("other.>")
    hang, after = pub.next_id(), pub.next_id()
    await pub.send({"type": "publish", "id": hang, "topic": "chat.room", "data": {"text": "hang"}})
    # a publish on a topic no plugin sees still waits behind the hanging one
    await pub.send({"type": "publish", "id": after, "topic": "other.x", "data": 2})
    first = await pub.recv()
    assert first["type"] == "error" and first["id"] == hang and first["code"] == "internal"
    await pub.expect("ack", id=after)
    got = await sub.expect("message")
    assert got["topic"] == "other.x"
    assert metric(routed, "rtcs_route_plugin_failures_total", plugin="upper", reason="timeout") == 1


async def test_a_bad_decision_answers_internal(routed: Node) -> None:
    pub = await routed.client("pub")
    err = await pub.request(
        {"type": "publish", "topic": "chat.room", "data": {"text": "bad"}}, "error"
    )
    assert err["code"] == "internal"


async def test_data_that_is_not_json_fails_the_whole_publish(routed: Node) -> None:
    pub, audit = await routed.client("pub"), await routed.client("auditor")
    await audit.subscribe("audit.>")
    await pub.subscribe("chat.>")
    err = await pub.request(
        {"type": "publish", "topic": "chat.room", "data": {"text": "not json"}}, "error"
    )
    assert err["code"] == "internal"
    # neither the answer, nor the fan-out, nor the message went anywhere
    await pub.request({"type": "ping"}, "pong")
    await pub.silent()
    await audit.request({"type": "ping"}, "pong")
    await audit.silent()
    assert metric(routed, "rtcs_route_plugin_failures_total", plugin="tag", reason="bad data") == 1


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ({"actor": UPPER, "topics": []}, "plugins.p.topics"),
        ({"actor": UPPER, "topics": ["a..b"]}, "plugins.p.topics"),
        ({"actor": UPPER, "timeout": 0}, "plugins.p.timeout"),
        ({"actor": UPPER, "timeout": 61}, "plugins.p.timeout"),
    ],
)
def test_bad_route_options_refuse_start_up(entry: dict[str, object], key: str) -> None:
    settings = config.load(None, {}, {"plugins": {"p": entry}})
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_plugins(settings, None)
