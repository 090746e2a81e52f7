"""Plugins in a real node: the example heartbeat plugin, options, bad targets, crashes."""

from __future__ import annotations

import asyncio
import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from structlog.testing import capture_logs

from rtcs import config
from rtcs.actors.context import (
    CONNECTIONS,
    PLUGINS,
    ROUTE_BROADCAST,
    ROUTE_DIRECT,
    ROUTE_ROOM,
    ROUTE_TOPIC,
)
from rtcs.app import App
from rtcs.backends.memory import MemoryHub, memory_backends
from rtcs.errors import ConfigError
from rtcs.plugins import installed, load_plugins
from tests.integration.conftest import TIMEOUT, Client, Node, metric, run_cli

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plugins"
TARGET = "echo_plugin:HeartbeatPlugin"
# The plugin configured as a table, beating every 50 ms instead of 5 s.
FAST = {"actor": TARGET, "interval": 0.05}
TOPIC = "system.heartbeat"
CORE = (CONNECTIONS, ROUTE_TOPIC, ROUTE_DIRECT, ROUTE_ROOM, ROUTE_BROADCAST)
# Far below the 5 s default interval: a beat within it proves the option applied.
BEAT_TIMEOUT = 1.0


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The example plugin module, importable as ``echo_plugin``, class defaults untouched."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return importlib.import_module("echo_plugin")


async def heartbeat(client: Client, topic: str = TOPIC, timeout: float = TIMEOUT) -> dict[str, Any]:
    """The next heartbeat message the client receives on ``topic``."""
    return await client.expect("message", timeout, topic=topic)


async def first_beat(client: Client) -> dict[str, Any]:
    """The next heartbeat numbered 1 (from a new incarnation), within TIMEOUT."""
    async with asyncio.timeout(TIMEOUT):
        while (frame := await heartbeat(client))["data"]["beat"] != 1:
            pass
    return frame


async def test_clients_receive_the_plugin_heartbeat(
    node_factory: Any, plugin: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The plain "module:Class" form has no options: the class defaults apply.
    monkeypatch.setattr(plugin.HeartbeatPlugin, "interval", 0.05)
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


async def test_plugin_options_come_from_its_table(node_factory: Any, plugin: ModuleType) -> None:
    node: Node = await node_factory(plugins={"heartbeat": {**FAST, "topic": "node.pulse"}})
    alice = await node.client("alice")
    await alice.subscribe("node.pulse")

    beats = [await heartbeat(alice, "node.pulse", BEAT_TIMEOUT) for _ in range(3)]

    assert [b["data"]["beat"] for b in beats] == [1, 2, 3]
    assert all(b["data"]["node"] == node.app.node_id and "from" not in b for b in beats)


async def test_plugin_configured_in_the_file(tmp_path: Path, plugin: ModuleType) -> None:
    path = tmp_path / "rtcs.toml"
    path.write_text(
        '[server]\nport = 0\n\n[log]\nlevel = "warning"\n\n'
        f'[plugins.heartbeat]\nactor = "{TARGET}"\ninterval = 0.05\n'
    )
    app = App(config.load(path))
    await app.start()
    try:
        client = await Node(app).client("alice")
        await client.subscribe(TOPIC)
        assert (await heartbeat(client, TOPIC, BEAT_TIMEOUT))["data"]["node"] == app.node_id
        await client.ws.close()
    finally:
        await app.stop()


async def test_heartbeats_stay_on_their_own_node(node_factory: Any, plugin: ModuleType) -> None:
    hub = MemoryHub()
    nodes = [
        await node_factory(
            memory_backends(hub), plugins={"heartbeat": FAST}, **{"server.node_id": n}
        )
        for n in ("node-a", "node-b")
    ]
    bob = await nodes[1].client("bob")
    await bob.subscribe(TOPIC)

    # Both nodes beat at the same pace: had node-a's beats gone through the
    # broker, they would be interleaved with node-b's.
    beats = [await heartbeat(bob) for _ in range(6)]

    assert {b["data"]["node"] for b in beats} == {"node-b"}
    numbers = [b["data"]["beat"] for b in beats]
    assert numbers == list(range(numbers[0], numbers[0] + 6))


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
        # start() may fail after parts of the node were started.
        await app.stop()
    assert caught.value.key == "plugins.broken"
    assert reason in caught.value.reason
    assert app.gateway is None


@pytest.mark.parametrize(
    "plugins, key",
    [
        ({"broken": "echo_plugin.HeartbeatPlugin"}, "plugins.broken"),
        ({"broken": {"actor": "echo_plugin.HeartbeatPlugin"}}, "plugins.broken.actor"),
        ({"router": TARGET}, "plugins.router"),
        ({"plugins": TARGET}, "plugins.plugins"),
        ({"route.mine": TARGET}, "plugins.route.mine"),
        ({"broken": 3}, "plugins.broken"),
        ({"broken": {"enabled": "no"}}, "plugins.broken.enabled"),
        ({"router": True}, "plugins.router"),
        ({"router": {"enabled": False}}, "plugins.router"),
        ({"no_such_installed_plugin": True}, "plugins.no_such_installed_plugin"),
    ],
)
async def test_a_malformed_or_reserved_plugin_fails_start_up(
    plugin: ModuleType, plugins: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        app = App(config.load(None, {}, {"server.port": 0, "plugins": plugins}))
        try:
            await app.start()
        finally:
            await app.stop()
    assert caught.value.key == key


@pytest.mark.parametrize(
    "section",
    [
        '[plugins]\nbroken = "rtcs_broken_plugin:Plugin"\n',
        '[plugins.broken]\nactor = "rtcs_broken_plugin:Plugin"\ninterval = 1\n',
    ],
)
def test_the_cli_refuses_a_plugin_that_fails_to_import(tmp_path: Path, section: str) -> None:
    (tmp_path / "rtcs_broken_plugin.py").write_text('raise RuntimeError("bug at import")\n')
    conf = tmp_path / "rtcs.toml"
    conf.write_text(section)
    result = run_cli("--config", str(conf), "--port", "0", pythonpath=str(tmp_path))

    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("rtcs: configuration error:"), result.stderr
    assert "plugins.broken" in result.stderr
    assert "RuntimeError: bug at import" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("strategy", ["one_for_one", "rest_for_one"])
async def test_a_crashing_plugin_is_restarted_without_touching_connections(
    node_factory: Any, plugin: ModuleType, monkeypatch: pytest.MonkeyPatch, strategy: str
) -> None:
    node: Node = await node_factory(
        plugins={"heartbeat": FAST}, **{"supervision.plugins.strategy": strategy}
    )
    directory = node.app.directory
    alice, bob = await node.client("alice"), await node.client("bob")
    await alice.subscribe(TOPIC)
    await bob.subscribe("chat")
    before = await heartbeat(alice)
    core = {name: directory.require(name) for name in (*CORE, PLUGINS)}
    old_plugin = directory.require("heartbeat")

    original = plugin.HeartbeatPlugin.beat
    armed = {"crash": True}

    def crash_once(self: Any) -> None:
        if armed.pop("crash", False):
            raise RuntimeError("simulated plugin bug")
        original(self)

    monkeypatch.setattr(plugin.HeartbeatPlugin, "beat", crash_once)

    # The replacement counts its beats from 1 again: it was restarted and
    # configured anew (with its options: it beats fast again).
    frame = await first_beat(alice)
    assert not armed
    assert frame["seq"] > before["seq"]
    assert directory.require("heartbeat") != old_plugin
    assert {name: directory.require(name) for name in (*CORE, PLUGINS)} == core
    labels = {"supervisor": "plugins", "strategy": strategy}
    assert metric(node, "rtcs_actor_restarts_total", **labels) == 1
    assert (
        metric(node, "rtcs_actor_restarts_total", supervisor="server", strategy="rest_for_one") == 0
    )
    # Connections did not notice: same sockets, same sessions, routing works.
    await alice.publish("chat", "after the crash")
    await bob.expect("message", topic="chat", data="after the crash")
    await bob.request({"type": "ping"}, "pong")
    assert alice.ws.close_code is None and bob.ws.close_code is None


async def test_a_plugin_crashing_past_the_intensity_restarts_only_the_plugins_subtree(
    node_factory: Any, plugin: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    max_restarts = 2
    node: Node = await node_factory(
        plugins={"heartbeat": FAST}, **{"supervision.plugins.max_restarts": max_restarts}
    )
    directory = node.app.directory
    alice, bob = await node.client("alice"), await node.client("bob")
    await alice.subscribe(TOPIC)
    await bob.subscribe("chat")
    before = await heartbeat(alice)
    core = {name: directory.require(name) for name in CORE}
    old_supervisor = directory.require(PLUGINS)

    original = plugin.HeartbeatPlugin.beat
    # One crash more than the plugins supervisor tolerates, then healthy again.
    crashes = {"left": max_restarts + 1}

    def crash_repeatedly(self: Any) -> None:
        if crashes["left"] > 0:
            crashes["left"] -= 1
            raise RuntimeError("simulated plugin bug")
        original(self)

    monkeypatch.setattr(plugin.HeartbeatPlugin, "beat", crash_repeatedly)

    # Crashed incarnations never beat; the first beat numbered 1 comes from
    # the plugin started by the new plugins supervisor.
    frame = await first_beat(alice)
    assert crashes["left"] == 0
    assert frame["seq"] > before["seq"]
    assert directory.require(PLUGINS) != old_supervisor
    plugins = {"supervisor": "plugins", "strategy": "one_for_one"}
    server = {"supervisor": "server", "strategy": "rest_for_one"}
    assert metric(node, "rtcs_actor_restarts_total", **plugins) == max_restarts
    assert metric(node, "rtcs_actor_restarts_total", **server) == 1
    # rest_for_one and plugins last: rtcs's own actors were left alone.
    assert {name: directory.require(name) for name in CORE} == core
    assert node.app.readiness() is None
    await alice.publish("chat", "after the escalation")
    await bob.expect("message", topic="chat", data="after the escalation")
    await alice.request({"type": "ping"}, "pong")
    assert alice.ws.close_code is None and bob.ws.close_code is None
    assert node.app.ctx is not None and len(node.app.ctx.sessions) == 2


@pytest.mark.parametrize(
    "options, named",
    [
        ({"interval": "fast"}, "interval"),
        ({"topic": "system.>"}, "topic"),
        ({"colour": 1}, "colour"),
    ],
)
def test_the_cli_refuses_bad_plugin_options_before_start(
    tmp_path: Path, options: dict[str, Any], named: str
) -> None:
    lines = [f"{key} = {json.dumps(value)}" for key, value in options.items()]
    conf = tmp_path / "rtcs.toml"
    conf.write_text(f'[plugins.heartbeat]\nactor = "{TARGET}"\n' + "\n".join(lines) + "\n")
    result = run_cli("--config", str(conf), "--port", "0", pythonpath=str(EXAMPLES))

    assert result.returncode == 2, result.stderr
    assert "plugins.heartbeat" in result.stderr and named in result.stderr
    assert "Traceback" not in result.stderr


# Installed plugins: packages offering an entry point in the rtcs.plugins group.
# examples/rtcs-plugin-census is installed by scripts/test and offers `census`.
CENSUS = "system.census"


async def census(client: Client, connections: int) -> dict[str, Any]:
    """The first census message counting ``connections`` that the client receives."""
    async with asyncio.timeout(TIMEOUT):
        while (frame := await client.expect("message", topic=CENSUS))["data"][
            "connections"
        ] != connections:
            pass
    return frame


async def test_an_installed_plugin_enabled_by_name_talks_to_real_clients(
    node_factory: Any,
) -> None:
    node: Node = await node_factory(plugins={"census": {"interval": 0.02, "refresh": 0.1}})
    assert node.app.directory.lookup("census") is not None
    alice = await node.client("alice")
    await alice.subscribe(CENSUS)
    frame = await census(alice, 1)
    assert frame["data"]["node"] == node.app.node_id
    assert "from" not in frame

    await node.client("bob")
    await census(alice, 2)


async def test_the_one_line_form_enables_an_installed_plugin(node_factory: Any) -> None:
    node: Node = await node_factory(plugins={"census": True})
    assert node.app.directory.lookup("census") is not None


@pytest.mark.parametrize("plugins", [{}, {"census": False}, {"census": {"enabled": False}}])
async def test_an_installed_plugin_is_not_started_unless_enabled(
    node_factory: Any, plugins: dict[str, Any]
) -> None:
    node: Node = await node_factory(plugins=plugins)
    assert node.app.directory.lookup("census") is None


async def test_enabled_false_switches_off_a_plugin_given_by_class(
    node_factory: Any, plugin: ModuleType
) -> None:
    node: Node = await node_factory(plugins={"heartbeat": {**FAST, "enabled": False}})
    assert node.app.directory.lookup("heartbeat") is None


def fake_distribution(root: Path, entry_points: str, modules: dict[str, str]) -> None:
    """Make ``root`` (put on PYTHONPATH) hold an installed distribution with these
    ``rtcs.plugins`` entry points, and the modules they name."""
    info = root / "rtcs_fake_plugins-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rtcs-fake-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[rtcs.plugins]\n{entry_points}")
    for name, text in modules.items():
        (root / f"{name}.py").write_text(text)


@pytest.mark.parametrize(
    "name, reasons",
    [
        (
            "crashing",
            [
                "entry point crashing = rtcs_fake_crashing:Plugin",
                "rtcs-fake-plugins 0.1",
                "RuntimeError: bug at import",
            ],
        ),
        ("notaclass", ["entry point notaclass = rtcs_fake_value:VALUE", "not a thespian"]),
        ("missing", ["entry point missing = rtcs_fake_value:Missing", "not a thespian"]),
        ("modonly", ["entry point modonly = rtcs_fake_value", "names a module"]),
        ("absent", ["no installed package has an entry point 'absent'", "crashing"]),
    ],
)
@pytest.mark.parametrize("form", ["{name} = true\n", "{name} = {{ interval = 1 }}\n"])
def test_the_cli_refuses_a_broken_entry_point_naming_it(
    tmp_path: Path, name: str, reasons: list[str], form: str
) -> None:
    fake_distribution(
        tmp_path,
        "crashing = rtcs_fake_crashing:Plugin\n"
        "notaclass = rtcs_fake_value:VALUE\n"
        "missing = rtcs_fake_value:Missing\n"
        "modonly = rtcs_fake_value\n",
        {
            "rtcs_fake_crashing": 'raise RuntimeError("bug at import")\n',
            "rtcs_fake_value": "VALUE = 1\n",
        },
    )
    conf = tmp_path / "rtcs.toml"
    conf.write_text("[plugins]\n" + form.format(name=name))
    result = run_cli("--config", str(conf), "--port", "0", pythonpath=str(tmp_path))

    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"rtcs: configuration error: invalid setting plugins.{name}=")
    for reason in reasons:
        assert reason in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("plugins", [{}, {"crashing": False}, {"crashing": {"enabled": False}}])
def test_a_broken_entry_point_not_enabled_is_never_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plugins: dict[str, Any]
) -> None:
    fake_distribution(
        tmp_path,
        "crashing = rtcs_fake_crashing:Plugin\n",
        {"rtcs_fake_crashing": 'raise RuntimeError("bug at import")\n'},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "crashing" in installed()
    assert load_plugins(config.load(None, {}, {"plugins": plugins}), None) == []
    with pytest.raises(ConfigError) as caught:
        load_plugins(config.load(None, {}, {"plugins": {"crashing": True}}), None)
    assert caught.value.key == "plugins.crashing"


async def test_installed_plugins_not_enabled_are_logged_at_start(node_factory: Any) -> None:
    with capture_logs() as logs:
        await node_factory()
    (line,) = [
        e for e in logs if e["event"] == "plugin installed, not enabled" and e["plugin"] == "census"
    ]
    assert "entry point census = rtcs_plugin_census:CensusPlugin" in line["offer"]
