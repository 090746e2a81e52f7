"""SIGHUP (or ``POST /admin/rules/reload``) reloads the rules file of a real
``python -m rtcs``, and of every worker."""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from rtcs import config
from rtcs.auth.tokens import mint
from tests.integration.conftest import ENV, Client
from tests.support import http
from tests.support.processes import RtcsProcess, temporary_directory
from tests.support.redis_server import shared_server
from tests.support.waiting import wait_until

SECRET = "rules-reload-test-secret-of-32-bytes"
AUTH = config.load(None, {"RTCS_JWT_SECRET": SECRET}).auth
STAMP = '[[rule]]\nname = "stamp"\ntopic = "t.>"\ntransform = {{ set = {{ "data.v" = {v} }} }}\n'


@pytest.fixture
def directory() -> Iterator[Path]:
    path = temporary_directory("rtcs-rules-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def start(directory: Path, **env: str) -> tuple[RtcsProcess, Path]:
    rules = directory / "rules.toml"
    rules.write_text(STAMP.format(v=1))
    settings = {"RTCS_JWT_SECRET": SECRET, "RTCS_RULES_FILE": str(rules), **env}
    node = RtcsProcess("rtcs", {**ENV, **settings}, directory)
    return await node.start(), rules


async def stamped(node: RtcsProcess) -> object:
    """Publish on t.x and return the ``v`` the rules stamped on it."""
    headers = {"Authorization": f"Bearer {mint(AUTH, 'alice')}"}
    async with connect(node.url, additional_headers=headers) as ws:
        client = Client(ws)
        await client.expect("welcome")
        await client.subscribe("t.>")
        await client.publish("t.x", {})
        return (await client.expect("message", topic="t.x"))["data"].get("v")


async def reloads(node: RtcsProcess, event: str, count: int) -> list[dict[str, object]]:
    await wait_until(lambda: len(node.entries(event)) >= count, message=f"{count} x {event!r}")
    return node.entries(event)


async def test_sighup_reloads_and_a_bad_file_keeps_the_old_rules(directory: Path) -> None:
    node, rules = await start(directory)
    try:
        assert await stamped(node) == 1
        rules.write_text(STAMP.format(v=2))
        assert node.proc is not None
        node.proc.send_signal(signal.SIGHUP)
        [reloaded] = await reloads(node, "rules reloaded", 1)
        assert reloaded["rules"] == 1 and reloaded["version"] != reloaded["previous"]
        assert await stamped(node) == 2

        rules.write_text('[[rule]]\nname = "broken"\ntopic = "t.>"\nstop = "yes"\n')
        node.proc.send_signal(signal.SIGHUP)
        [failed] = await reloads(node, "rules reload failed; the old rules stay", 1)
        assert "rule 'broken'" in str(failed["error"]) and "stop" in str(failed["error"])
        assert failed["level"] == "error"
        assert node.proc.poll() is None
        assert await stamped(node) == 2
        assert "Traceback" not in node.log.read_text()
    finally:
        node.stop()
    assert node.proc.returncode == 0


@pytest.mark.redis
async def test_the_parent_passes_sighup_to_every_worker(directory: Path) -> None:
    redis = {"RTCS_BACKEND_KIND": "redis", "RTCS_BACKEND_REDIS_URL": shared_server().url}
    node, rules = await start(directory, RTCS_SERVER_WORKERS="2", **redis)
    try:
        await reloads(node, "rtcs started", 2)
        rules.write_text(STAMP.format(v=3))
        assert node.proc is not None
        node.proc.send_signal(signal.SIGHUP)
        done = await reloads(node, "rules reloaded", 2)
        assert len({json.dumps(entry["node"]) for entry in done}) == 2  # each worker
        for _ in range(4):  # whichever worker the kernel hands the connection to
            assert await stamped(node) == 3
    finally:
        node.stop()


async def post_reload(node: RtcsProcess) -> tuple[int, dict[str, object]]:
    """``POST /admin/rules/reload`` with an admin token: the status and the JSON body."""
    token = mint(AUTH, "ops", roles=("admin",))
    answer = await http.request(
        node.port,
        "POST",
        "/admin/rules/reload",
        b"",
        {"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    return answer.status, answer.body


@pytest.mark.redis
async def test_the_admin_call_on_one_worker_reloads_every_worker(directory: Path) -> None:
    redis = {"RTCS_BACKEND_KIND": "redis", "RTCS_BACKEND_REDIS_URL": shared_server().url}
    node, rules = await start(directory, RTCS_SERVER_WORKERS="2", **redis)
    try:
        await reloads(node, "rtcs started", 2)
        rules.write_text(STAMP.format(v=4))
        assert await post_reload(node) == (202, {"reload": "requested", "workers": 2})
        done = await reloads(node, "rules reloaded", 2)
        assert len({json.dumps(entry["node"]) for entry in done}) == 2  # each worker
        for _ in range(4):
            assert await stamped(node) == 4
    finally:
        node.stop()
