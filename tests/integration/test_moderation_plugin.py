"""The example route-handler plugin package (examples/rtcs-plugin-moderation) in real nodes.

scripts/test installs the package; the nodes enable it by its entry point's
name, ``moderation``. Its decisions themselves are tested without actors in
the package's own tests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.integration.conftest import SHARED_BACKENDS, Client, Node, metric, start_pair

AUDIT = "audit.moderation"
BANNED = ["darn", "heck"]
ANSWER = {"moderated": True, "reason": "banned_word"}
NodeFactory = Callable[..., Awaitable[Node]]


def moderation(mode: str = "drop", **options: Any) -> dict[str, Any]:
    """The ``plugins`` setting enabling the installed plugin by name."""
    return {"moderation": {"banned": BANNED, "audit_topic": AUDIT, "mode": mode, **options}}


async def clients(node: Node, sub_node: Node | None = None) -> tuple[Client, Client, Client]:
    """A publisher on ``node``; a chat subscriber and an auditor on ``sub_node`` (or ``node``)."""
    where = sub_node or node
    pub, sub, auditor = (
        await node.client("ann"),
        await where.client("bob"),
        await where.client("mod"),
    )
    await sub.subscribe("chat.>")
    await auditor.subscribe(AUDIT)
    return pub, sub, auditor


async def publish_dropped(pub: Client, topic: str, data: Any) -> None:
    """Publish ``data``: the publisher gets the answer alone, without ``from``, then its ack."""
    rid = pub.next_id()
    await pub.send({"type": "publish", "id": rid, "topic": topic, "data": data})
    answer = await pub.recv()
    assert answer["type"] == "message" and answer["topic"] == topic, answer
    assert answer["data"] == ANSWER and "from" not in answer
    ack = await pub.recv()
    assert ack == {"type": "ack", "id": rid}


async def test_clean_messages_pass_and_banned_ones_are_dropped_and_audited(
    node_factory: NodeFactory,
) -> None:
    node = await node_factory(plugins=moderation())
    pub, sub, auditor = await clients(node)

    await pub.publish("chat.lobby", {"text": "hello darned world"})
    got = await sub.expect("message", topic="chat.lobby")
    assert got["data"] == {"text": "hello darned world"} and got["from"] == "ann"

    await publish_dropped(pub, "chat.lobby", {"text": "oh DARN it"})
    audit = await auditor.expect("message", topic=AUDIT)
    assert audit["data"] == {"topic": "chat.lobby", "user": "ann", "action": "dropped"}
    assert audit["from"] == "ann"
    # The dropped message reached nobody: the subscriber's next message is the next publish.
    await pub.publish("chat.lobby", "after")
    assert (await sub.recv())["data"] == "after"
    await sub.request({"type": "ping"}, "pong")
    await sub.silent()
    await auditor.request({"type": "ping"}, "pong")
    await auditor.silent()
    assert (
        metric(node, "rtcs_route_plugin_failures_total", plugin="moderation", reason="crashed") == 0
    )


async def test_a_subscribed_publisher_gets_the_answer_not_its_message(
    node_factory: NodeFactory,
) -> None:
    node = await node_factory(plugins=moderation())
    pub = await node.client("ann")
    await pub.subscribe("chat.>")
    await publish_dropped(pub, "chat.lobby", "heck")
    await pub.request({"type": "ping"}, "pong")
    await pub.silent()


async def test_mask_mode_delivers_the_message_masked(node_factory: NodeFactory) -> None:
    node = await node_factory(plugins=moderation("mask"))
    pub, sub, auditor = await clients(node)

    await pub.publish("chat.lobby", {"text": "Heck, darn.", "n": 1})
    got = await sub.expect("message", topic="chat.lobby")
    assert got["data"] == {"text": "****, ****.", "n": 1} and got["from"] == "ann"
    await pub.publish("chat.lobby", "what the heck")
    assert (await sub.expect("message", topic="chat.lobby"))["data"] == "what the ****"
    first, second = await auditor.expect("message"), await auditor.expect("message")
    assert (
        first["data"]
        == second["data"]
        == {"topic": "chat.lobby", "user": "ann", "action": "masked"}
    )


async def test_topics_outside_the_plugins_are_not_moderated(node_factory: NodeFactory) -> None:
    node = await node_factory(plugins=moderation(topics=["chat.lobby"]))
    pub, sub, auditor = await clients(node)
    await pub.publish("chat.other", "darn")
    assert (await sub.expect("message", topic="chat.other"))["data"] == "darn"
    await publish_dropped(pub, "chat.lobby", "darn")
    await auditor.expect("message", topic=AUDIT)


@pytest.mark.parametrize("kind", SHARED_BACKENDS)
@pytest.mark.parametrize("mode", ["drop", "mask"])
async def test_the_publishing_node_decides_for_every_node(
    node_factory: NodeFactory, mode: str, kind: str
) -> None:
    a, b = await start_pair(kind, node_factory, plugins=moderation(mode))
    pub, sub, auditor = await clients(a, sub_node=b)

    if mode == "drop":
        await publish_dropped(pub, "chat.lobby", {"text": "darn"})
    else:
        await pub.publish("chat.lobby", {"text": "darn"})
        got = await sub.recv()
        assert got["type"] == "message" and got["data"] == {"text": "****"}
        assert got["from"] == "ann"
    action = "dropped" if mode == "drop" else "masked"
    audit = await auditor.expect("message", topic=AUDIT)
    assert audit["data"] == {"topic": "chat.lobby", "user": "ann", "action": action}
    # A clean message crosses unchanged, and is the next one node b's subscriber gets.
    await pub.publish("chat.lobby", {"text": "fine"})
    got = await sub.recv()
    assert got["type"] == "message" and got["data"] == {"text": "fine"}
    await auditor.request({"type": "ping"}, "pong")
    await auditor.silent()
