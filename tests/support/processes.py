"""Real ``python -m rtcs`` and HAProxy processes for the scale-out tests.

- :func:`require_binary` skips a test when a system binary (haproxy, nginx) is
  missing, and fails it instead when ``CI`` is set, like the Redis tests.
- :func:`render_haproxy` / :func:`render_nginx` turn the shipped
  ``conf/haproxy.cfg`` and ``conf/nginx.conf`` into configs for 127.0.0.1: the
  listen address and each server's address change, nothing else does.
- :class:`RtcsProcess` runs ``python -m rtcs --port 0`` with settings from the
  environment and reads its port from the "rtcs started" log line.
- :class:`HaproxyProcess` runs HAProxy in the foreground on a free port (retried
  once when taken) and reads server states from its stats socket.

Every process writes its output to a file (never a pipe that could fill up
and block it), dies with the test process (``PR_SET_PDEATHSIG``), and is
stopped by its own pid. Waits poll with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.support.children import die_with_parent, stop
from tests.support.redis_server import free_port
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
HAPROXY_CFG = ROOT / "conf" / "haproxy.cfg"
NGINX_CONF = ROOT / "conf" / "nginx.conf"
START_TIMEOUT = 15.0  # seconds for a process to be up
STOP_TIMEOUT = 5.0

# A server line of conf/haproxy.cfg: "    server NAME ADDRESS[ options]".
HAPROXY_SERVER = re.compile(r"^(\s*server\s+)(\S+)\s+(\S+)(.*)$", re.MULTILINE)
HAPROXY_BIND = re.compile(r"^(\s*bind\s+)(\S+)(.*)$", re.MULTILINE)
NGINX_SERVER = re.compile(r"^(\s*server\s+)([\w.-]+:\d+)(.*;)$", re.MULTILINE)
NGINX_LISTEN = re.compile(r"^(\s*listen\s+)(\S+?)(\s*;)$", re.MULTILINE)


def require_binary(name: str, package: str) -> str:
    """The path of ``name``.

    Raises:
        pytest.skip.Exception: it is missing (outside CI).
        pytest.fail.Exception: it is missing and ``CI`` is set.
    """
    found = shutil.which(name)
    if found is not None:
        return found
    reason = f"{name} not installed (apt-get install {package})"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so this test must run", pytrace=False)
    pytest.skip(reason)


def haproxy_servers(text: str) -> dict[str, str]:
    """The ``server`` lines of a HAProxy config: name -> address."""
    return {m.group(2): m.group(3) for m in HAPROXY_SERVER.finditer(text)}


def nginx_servers(text: str) -> list[str]:
    """The ``server HOST:PORT`` addresses of an nginx config's upstreams."""
    return [m.group(2) for m in NGINX_SERVER.finditer(text)]


def render_haproxy(
    text: str, bind: str, servers: Mapping[str, str], stats_socket: Path | None = None
) -> str:
    """``text`` with its ``bind`` address and the named servers' addresses replaced.

    Docker's resolvers are dropped from the servers (there is no 127.0.0.11
    here); ``stats_socket`` adds an admin socket to ``global``.

    Raises:
        AssertionError: ``servers`` names a server the config does not have.
    """
    missing = set(servers) - set(haproxy_servers(text))
    assert not missing, f"no server {missing} in the HAProxy config"

    def server(m: re.Match[str]) -> str:
        return f"{m.group(1)}{m.group(2)} {servers.get(m.group(2), m.group(3))}{m.group(4)}"

    out = HAPROXY_SERVER.sub(server, text)
    out = HAPROXY_BIND.sub(lambda m: f"{m.group(1)}{bind}{m.group(3)}", out)
    out = out.replace(" resolvers docker", "")
    if stats_socket is not None:
        out = out.replace("\nglobal\n", f"\nglobal\n    stats socket {stats_socket} level admin\n")
    return out


def render_nginx(text: str, listen: str, servers: Mapping[str, str]) -> str:
    """``text`` with its ``listen`` address and upstream addresses replaced (old -> new)."""
    out = NGINX_SERVER.sub(lambda m: f"{m.group(1)}{servers[m.group(2)]}{m.group(3)}", text)
    return NGINX_LISTEN.sub(lambda m: f"{m.group(1)}{listen}{m.group(3)}", out)


def _spawn(args: list[str], log: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            preexec_fn=die_with_parent(signal.SIGKILL),
        )


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    stop(proc, STOP_TIMEOUT)


class RtcsProcess:
    """``python -m rtcs --port 0`` with ``env``; its JSON log lines in a file."""

    def __init__(self, name: str, env: Mapping[str, str], directory: Path) -> None:
        self.name = name
        self.env = dict(env)
        self.log = directory / f"{name}.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def entries(self, event: str | None = None) -> list[dict[str, Any]]:
        """The JSON log lines so far (of one ``event`` when given)."""
        found = []
        for line in self.log.read_bytes().splitlines() if self.log.exists() else []:
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and (event is None or entry.get("event") == event):
                    found.append(entry)
        return found

    async def start(self) -> RtcsProcess:
        """Start and wait for "rtcs started" (its port).

        Raises:
            AssertionError: it exited or did not start within ``START_TIMEOUT``.
        """
        args = [sys.executable, "-m", "rtcs", "--port", "0", "--log-level", "info"]
        self.proc = _spawn(args, self.log, self.env)

        def started() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            return bool(self.entries("rtcs started"))

        await wait_until(started, START_TIMEOUT, interval=0.02, message=f"{self.name} start")
        self.port = int(self.entries("rtcs started")[0]["port"])
        return self

    def kill(self) -> None:
        """SIGKILL (a crash) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)

    def terminate(self) -> None:
        """SIGTERM without waiting (it drains); ``stop`` waits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def stop(self) -> None:
        """SIGTERM (it drains), SIGKILL after ``STOP_TIMEOUT``; idempotent."""
        _stop(self.proc)


class HaproxyProcess:
    """HAProxy from ``conf/haproxy.cfg`` in front of rtcs servers on 127.0.0.1."""

    def __init__(self, servers: Mapping[str, int], directory: Path) -> None:
        self.binary = require_binary("haproxy", "haproxy")
        self.servers = {name: f"127.0.0.1:{port}" for name, port in servers.items()}
        self.dir = directory
        self.socket = directory / "haproxy.sock"
        self.log = directory / "haproxy.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def start(self) -> HaproxyProcess:
        """Start on a free port (a second one if the first was taken meanwhile).

        Raises:
            AssertionError: HAProxy did not start, twice.
        """
        failure = ""
        for _ in range(2):
            self.port = free_port()
            cfg = self.dir / "haproxy.cfg"
            cfg.write_text(
                render_haproxy(
                    HAPROXY_CFG.read_text(), f"127.0.0.1:{self.port}", self.servers, self.socket
                )
            )
            self.proc = _spawn([self.binary, "-db", "-f", str(cfg)], self.log, os.environ)
            try:
                await wait_until(self._listening, START_TIMEOUT, interval=0.02)
                return self
            except AssertionError as exc:
                failure = f"{exc}: {self.log.read_text()[-2000:]}"
                _stop(self.proc)
        raise AssertionError(f"haproxy did not start: {failure}")

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError("haproxy exited")
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0 and self.socket.exists()

    def admin(self, line: str) -> str:
        """One command on the stats socket (e.g. ``set server rtcs/rtcs-1 state maint``)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2.0)
            sock.connect(str(self.socket))
            sock.sendall(line.encode() + b"\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return data.decode()

    def states(self) -> dict[str, str]:
        """Each server's status from ``show stat``: ``UP``, ``DOWN``, ``MAINT``, …"""
        lines = self.admin("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {
            row["svname"]: row["status"].split()[0]
            for row in rows
            if row.get("pxname") == "rtcs" and row["svname"] in self.servers
        }

    async def wait_states(self, expected: Mapping[str, str], timeout: float) -> None:
        """Wait until the named servers have the given statuses."""
        await wait_until(
            lambda: all(self.states().get(k) == v for k, v in expected.items()),
            timeout,
            interval=0.05,
            message=lambda: f"haproxy states {self.states()}, want {dict(expected)}",
        )

    def stop(self) -> None:
        """SIGTERM, SIGKILL after ``STOP_TIMEOUT``; idempotent."""
        _stop(self.proc)


def temporary_directory(prefix: str) -> Path:
    """A new directory for logs and rendered configs (the caller removes it)."""
    return Path(tempfile.mkdtemp(prefix=prefix))
