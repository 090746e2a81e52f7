"""The Dockerfile's contract, checked natively (no Docker engine here).

The image runs ``ENTRYPOINT`` with the ``ENV`` it sets, as a non-root
``USER``, and probes ``HEALTHCHECK``; this runs the same command with the same
environment (plus a secret, which a public host requires) and the same probe.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import ENV

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _instruction(name: str) -> str:
    """The last stage's instruction ``name``, continuation lines joined."""
    text = DOCKERFILE.replace("\\\n", " ")
    found: list[str] = re.findall(rf"^{name}\s+(.*)$", text, flags=re.MULTILINE)
    assert found, f"no {name} in the Dockerfile"
    return found[-1].strip()


def _started_port(proc: subprocess.Popen[bytes], deadline: float) -> int:
    """The port from rtcs's "rtcs started" log line; fail at ``deadline`` or exit.

    Reads the raw pipe (no buffered readline that could hide a line from select).
    """
    assert proc.stdout is not None
    fd, pending = proc.stdout.fileno(), b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not selector.select(left):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                pytest.fail(f"rtcs exited before it started: {pending[-500:]!r}")
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if b'"rtcs started"' in line:
                    return int(json.loads(line)["port"])
    pytest.fail("rtcs did not start in time")


def test_runs_as_a_non_root_user() -> None:
    assert _instruction("USER") not in ("root", "0")


def test_entrypoint_and_healthcheck_work(tmp_path: Path) -> None:
    entrypoint = json.loads(_instruction("ENTRYPOINT"))
    assert entrypoint[:3] == ["python", "-m", "rtcs"]
    args = [
        a if a != "/etc/rtcs/rtcs.toml" else str(ROOT / "conf" / "rtcs.toml")
        for a in entrypoint[3:]
    ]
    env = dict(ENV)
    for assignment in shlex.split(_instruction("ENV")):
        key, _, value = assignment.partition("=")
        env[key] = value
    # Port 0, read back from the log: a port picked beforehand can be taken.
    env.update(RTCS_JWT_SECRET="x" * 32, RTCS_SERVER_PORT="0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtcs", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        port = _started_port(proc, deadline=time.monotonic() + 15)
        probe = shlex.split(_instruction("HEALTHCHECK").split("CMD", 1)[1])
        assert probe[0] == "python"
        probe = [sys.executable, *[p.replace("8765", str(port)) for p in probe[1:]]]
        assert subprocess.run(probe, timeout=10).returncode == 0
    finally:
        proc.terminate()
        code = proc.wait(timeout=15)
        assert proc.stdout is not None
        proc.stdout.close()
    assert code == 0
