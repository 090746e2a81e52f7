"""Plugins in a real node: the example heartbeat plugin, bad targets, crashes."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from actors.context import CONNECTIONS, ROUTE_BROADCAST, ROUTE_DIRECT, ROUTE_ROOM, ROUTE_TOPIC
from rtcs import config
from rtcs.app import App
from rtcs.errors import ConfigError
from tests.integration.conftest import Client, Node, metric

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plugins"
TARGET = "echo_plugin:HeartbeatPlugin"
TOPIC = "system.heartbeat"
CORE = (CONNECTIONS, ROUTE_TOPIC, ROUTE_DIRECT, ROUTE_ROOM, ROUTE_BROADCAST)


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The example plugin module, importable as ``echo_plugin``, beating every 50 ms."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    module = importlib.import_module("echo_plugin")
    monkeypatch.setattr(module.HeartbeatPlugin, "interval", 0.05)
    return module


async def heartbeat(client: Client) -> dict[str, Any]:
    """The next heartbeat message the client receives."""
    return await client.expect("message", topic=TOPIC)


async def test_clients_receive_the_plugin_heartbeat(node_factory: Any, plugin: ModuleType) -> None:
    node: Node = await node_factory(plugins={"heartbeat": TARGET})
    assert node.app.directory.lookup("heartbeat") is not None
    alice, bob = await node.client("alice"), await node.client("bob")
    await alice.subscribe(TOPIC)
    await bob.subscribe("system.>")

    first, second = await heartbeat(alice), await heartbeat(alice)
    assert first["data"]["node"] == node.app.node_id
    assert first["data"]["connections"] == 2
    assert second["data"]["beat"] == first["data"]["beat"] + 1
    assert second["seq"] == first["seq"] + 1
    assert "from" not in first
    assert (await heartbeat(bob))["data"]["node"] == node.app.node_id
    # Clients cannot fake it: the default policy keeps system.> for admins.
    denied = await alice.request({"type": "publish", "topic": TOPIC, "data": 0}, "error")
    assert denied["code"] == "forbidden"


async def test_plugin_configured_in_the_file(tmp_path: Path, plugin: ModuleType) -> None:
    path = tmp_path / "rtcs.toml"
    path.write_text(
        f'[server]\nport = 0\n\n[log]\nlevel = "warning"\n\n[plugins]\nheartbeat = "{TARGET}"\n'
    )
    app = App(config.load(path))
    await app.start()
    try:
        client = await Node(app).client("alice")
        await client.subscribe(TOPIC)
        assert (await heartbeat(client))["data"]["node"] == app.node_id
        await client.ws.close()
    finally:
        await app.stop()


@pytest.mark.parametrize(
    "target, reason",
    [
        ("no_such_module_for_rtcs:Actor", "cannot import"),
        ("echo_plugin:Missing", "not a thespian.actors.Actor subclass"),
        ("echo_plugin:TOPIC", "not a thespian.actors.Actor subclass"),
    ],
)
async def test_a_bad_target_fails_start_up_naming_the_plugin(
    tmp_path: Path, plugin: ModuleType, target: str, reason: str
) -> None:
    path = tmp_path / "rtcs.toml"
    path.write_text(f'[server]\nport = 0\n\n[plugins]\nbroken = "{target}"\n')
    app = App(config.load(path))
    try:
        with pytest.raises(ConfigError) as caught:
            await app.start()
    finally:
        # start() fails after the actor system and broker were started.
        await app.stop()
    assert caught.value.key == "plugins.broken"
    assert reason in caught.value.reason
    assert app.gateway is None


@pytest.mark.parametrize(
    "plugins, key",
    [
        ({"broken": "echo_plugin.HeartbeatPlugin"}, "plugins.broken"),
        ({"router": TARGET}, "plugins.router"),
        ({"route.mine": TARGET}, "plugins.route.mine"),
    ],
)
async def test_a_malformed_or_reserved_plugin_fails_start_up(
    plugin: ModuleType, plugins: dict[str, str], key: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        app = App(config.load(None, {}, {"server.port": 0, "plugins": plugins}))
        try:
            await app.start()
        finally:
            await app.stop()
    assert caught.value.key == key


@pytest.mark.parametrize("strategy", ["one_for_one", "rest_for_one"])
async def test_a_crashing_plugin_is_restarted_without_touching_connections(
    node_factory: Any, plugin: ModuleType, monkeypatch: pytest.MonkeyPatch, strategy: str
) -> None:
    node: Node = await node_factory(
        plugins={"heartbeat": TARGET}, **{"supervision.plugins.strategy": strategy}
    )
    directory = node.app.directory
    alice, bob = await node.client("alice"), await node.client("bob")
    await alice.subscribe(TOPIC)
    await bob.subscribe("chat")
    before = await heartbeat(alice)
    core = {name: directory.require(name) for name in CORE}
    old_plugin = directory.require("heartbeat")

    original = plugin.HeartbeatPlugin.beat
    armed = {"crash": True}

    def crash_once(self: Any) -> None:
        if armed.pop("crash", False):
            raise RuntimeError("simulated plugin bug")
        original(self)

    monkeypatch.setattr(plugin.HeartbeatPlugin, "beat", crash_once)

    # The replacement counts its beats from 1 again: it was restarted and
    # configured anew.
    frame = await heartbeat(alice)
    while frame["data"]["beat"] != 1:
        frame = await heartbeat(alice)
    assert not armed
    assert frame["seq"] > before["seq"]
    assert directory.require("heartbeat") != old_plugin
    assert {name: directory.require(name) for name in CORE} == core
    labels = {"supervisor": "plugins", "strategy": strategy}
    assert metric(node, "rtcs_actor_restarts_total", **labels) == 1
    # Connections did not notice: same sockets, same sessions, routing works.
    await alice.publish("chat", "after the crash")
    await bob.expect("message", topic="chat", data="after the crash")
    await bob.request({"type": "ping"}, "pong")
    assert alice.ws.close_code is None and bob.ws.close_code is None
