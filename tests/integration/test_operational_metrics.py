"""A running node's ``/metrics``: mailboxes, the process, connection durations,
supervisor escalations (docs/operations.md, "Metrics").

A real node on port 0 and real clients; escalations are provoked as the
crash-storm tests provoke crashes (a handler that raises on a message a
client can send).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rtcs.actors.context import ROUTE_TOPIC
from tests.integration.conftest import Node, http_get, metric, wait_until
from tests.integration.test_admin_status import BOOM, crash_on_boom

NodeFactory = Callable[..., Awaitable[Node]]


async def scrape(node: Node) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """``GET /metrics``: every sample by name, then by its labels."""
    code, body = await http_get(node, "/metrics")
    assert code == 200
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


@dataclass(frozen=True, slots=True)
class Nudge:
    """A message no actor handles (ignored), to fill a mailbox."""


async def test_metrics_show_the_mailboxes_and_the_process(node: Node) -> None:
    samples = await scrape(node)

    kinds = {dict(labels)["kind"] for labels in samples["rtcs_actor_mailbox_messages"]}
    assert {"connection", "connections", "route.topic", "router", "stats", "runtime"} <= kinds
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ):
        assert samples[name][()] > 0, name


async def test_the_mailbox_gauge_reads_the_running_system(node: Node) -> None:
    system, handler = node.app.system, node.app.directory.lookup(ROUTE_TOPIC)
    assert system is not None and handler is not None
    # Queued without yielding to the loop: none handled yet.
    for _ in range(300):
        system.tell(handler, Nudge())

    assert metric(node, "rtcs_actor_mailbox_messages", kind="route.topic") == 300

    await wait_until(lambda: metric(node, "rtcs_actor_mailbox_messages", kind="route.topic") == 0)


async def test_a_closed_connection_is_observed_with_its_duration(node: Node) -> None:
    alice = await node.client("alice")
    await alice.request({"type": "ping"}, "pong")
    await alice.ws.close()

    await wait_until(lambda: metric(node, "rtcs_connection_duration_seconds_count") == 1)

    samples = await scrape(node)
    assert samples["rtcs_connection_duration_seconds_count"][()] == 1
    assert samples["rtcs_connection_duration_seconds_bucket"][(("le", "+Inf"),)] == 1
    assert 0 < samples["rtcs_connection_duration_seconds_sum"][()] < 60


async def test_a_supervisor_that_gives_up_is_counted_and_the_node_serves_on(
    node_factory: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash_on_boom(monkeypatch)
    # The router gives up at its first crash and escalates to the server,
    # which restarts the routing subsystem (and those started after it).
    node = await node_factory(**{"supervision.router.max_restarts": 0})
    alice = await node.client("alice")
    escalations = {"supervisor": "router"}
    assert metric(node, "rtcs_supervisor_escalations_total", **escalations) == 0

    await alice.send({"type": "publish", "topic": BOOM, "data": 1, "id": 999})

    await wait_until(lambda: metric(node, "rtcs_supervisor_escalations_total", **escalations) == 1)
    await wait_until(lambda: node.app.readiness() is None)  # the router is back
    bob = await node.client("bob")
    await bob.subscribe("news")
    await alice.publish("news", "still here")
    await bob.expect("message", topic="news", data="still here")
    assert not node.app.stopped.is_set()
    samples = await scrape(node)
    by_supervisor = {
        dict(labels)["supervisor"]: value
        for labels, value in samples["rtcs_supervisor_escalations_total"].items()
    }
    assert by_supervisor == {
        "system": 0,
        "server": 0,
        "connections": 0,
        "router": 1,
        "metrics": 0,
        "plugins": 0,
        "other": 0,
    }
