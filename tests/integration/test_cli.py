"""``python -m rtcs`` as an operator runs it: a real process, real signals."""

from __future__ import annotations

import asyncio
import json
import signal
import stat
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.integration.conftest import ENV, TIMEOUT, Client
from tests.integration.conftest import run_cli as run
from tests.support.redis_server import free_port

# The token signed with the well-known development secret of earlier versions.
OLD_PUBLIC_SECRET = "rtcs-insecure-development-secret"


def test_token_command_mints_a_verifiable_token(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path)}
    result = run("token", "alice", "--roles", "admin,ops", "--ttl", "60", env=env)
    assert result.returncode == 0, result.stderr
    secret = (tmp_path / "rtcs" / "dev-secret").read_text().strip()
    claims = jwt.decode(result.stdout.strip(), secret, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["roles"] == ["admin", "ops"]
    assert 55 <= claims["exp"] - claims["iat"] <= 61


def test_bad_setting_names_key_and_value() -> None:
    result = run("--port", "0", env={"RTCS_LIMITS_RATE": "fast"})
    assert result.returncode == 2
    assert "RTCS_LIMITS_RATE" in result.stderr and "fast" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_key_in_file_is_refused(tmp_path: Path) -> None:
    conf = tmp_path / "rtcs.toml"
    conf.write_text("[server]\nprot = 1\n")
    result = run("--config", str(conf), "--port", "0")
    assert result.returncode == 2 and "server.prot" in result.stderr


def test_several_workers_need_a_shared_backend() -> None:
    result = run("--workers", "2", "--port", "0")
    assert result.returncode == 2 and "server.workers" in result.stderr


def test_an_unreachable_redis_at_start_is_a_clear_exit_1() -> None:
    port = free_port()  # nothing listens there
    env = {"RTCS_BACKEND_KIND": "redis", "RTCS_BACKEND_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    result = run("--port", "0", env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "backend unavailable at start" in output and "Traceback" not in output


def test_public_host_without_secret_is_refused() -> None:
    result = run("--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2 and "auth.secret" in result.stderr


def test_dev_secret_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "dev-secret"
    path.write_text("x" * 64)
    path.chmod(0o644)
    result = run("token", "alice", env={"RTCS_AUTH_DEV_SECRET_FILE": str(path)})
    assert result.returncode == 2 and "RTCS_AUTH_DEV_SECRET_FILE" in result.stderr
    assert "x" * 64 not in result.stderr + result.stdout


async def _start(env: dict[str, str]) -> tuple[asyncio.subprocess.Process, int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rtcs",
        "--port",
        "0",
        "--log-level",
        "info",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**ENV, "RTCS_SERVER_DRAIN_TIMEOUT": "5", **env},
    )
    port = 0
    async with asyncio.timeout(TIMEOUT * 2):
        while not port:
            line = await proc.stdout.readline()  # type: ignore[union-attr]
            assert line, "rtcs exited before it started"
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == "rtcs started":
                port = entry["port"]
    return proc, port


@pytest.fixture
async def server() -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    proc, port = await _start({})
    yield proc, port
    if proc.returncode is None:
        proc.kill()
        await asyncio.wait_for(proc.wait(), 10)


async def test_quick_start_token_is_accepted_and_the_old_public_secret_is_not(
    tmp_path: Path,
) -> None:
    # The README's quick start, in a state directory of its own: the server
    # and `rtcs token` share the development secret the first of them created.
    env = {"XDG_STATE_HOME": str(tmp_path)}
    proc, port = await _start(env)
    try:
        result = run("token", "alice", "--roles", "user", env=env)
        assert result.returncode == 0, result.stderr
        url = f"ws://127.0.0.1:{port}/ws"
        bearer = {"Authorization": f"Bearer {result.stdout.strip()}"}
        async with connect(url, additional_headers=bearer) as ws:
            await Client(ws).expect("welcome", user="alice")
        forged = jwt.encode(
            {"sub": "mallory", "roles": ["admin"], "exp": int(time.time()) + 60},
            OLD_PUBLIC_SECRET,
            algorithm="HS256",
        )
        with pytest.raises(InvalidStatus) as info:
            await connect(url, additional_headers={"Authorization": f"Bearer {forged}"})
        assert info.value.response.status_code == 401
        assert stat.S_IMODE((tmp_path / "rtcs" / "dev-secret").stat().st_mode) == 0o600
    finally:
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.wait(), 10)


async def test_sigterm_closes_clients_1001_and_exits_0(
    server: tuple[asyncio.subprocess.Process, int],
) -> None:
    proc, port = server
    result = run("token", "alice")
    ws = await connect(
        f"ws://127.0.0.1:{port}/ws",
        additional_headers={"Authorization": f"Bearer {result.stdout.strip()}"},
    )
    client = Client(ws)
    await client.expect("welcome", user="alice")
    proc.send_signal(signal.SIGTERM)
    assert await client.closed() == 1001
    assert await asyncio.wait_for(proc.wait(), TIMEOUT * 2) == 0
    output = (await proc.stdout.read()).decode()  # type: ignore[union-attr]
    assert "rtcs stopped" in output
    assert result.stdout.strip() not in output  # tokens are never logged


# -- check-config ---------------------------------------------------------------------------

EXAMPLE_RULES = Path(__file__).resolve().parents[2] / "conf" / "rules.example.toml"


def test_check_config_summarises_a_good_configuration(tmp_path: Path) -> None:
    conf = tmp_path / "rtcs.toml"
    conf.write_text(f'[rules]\nfile = "{EXAMPLE_RULES}"\n')
    result = run("check-config", "--config", str(conf))
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout
    assert f"from {EXAMPLE_RULES}" in result.stdout and "rules: 0" not in result.stdout


@pytest.mark.parametrize(
    ("rules", "env", "named"),
    [
        ('[[rule]]\nname = "a"\ntopic = "x"\n[[rule]]\nname = "a"\ntopic = "y"\n', {}, "'a'"),
        ('[[rule]]\nname = "b"\ntopic = "x"\nwhen = "data.level >"\n', {}, "when"),
        ('[[rule]]\nname = "c"\ntopic = "x"\naction = "explode"\n', {}, "action"),
        ("", {"RTCS_LIMITS_BYTE_BURST": "10"}, "RTCS_LIMITS_BYTE_BURST"),
    ],
)
def test_check_config_names_what_is_wrong(
    tmp_path: Path, rules: str, env: dict[str, str], named: str
) -> None:
    file = tmp_path / "rules.toml"
    file.write_text(rules)
    result = run("check-config", env={"RTCS_RULES_FILE": str(file), **env})
    assert result.returncode == 2
    assert named in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""
