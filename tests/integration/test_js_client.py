"""The JavaScript client (``rtcs/static/rtcs.js``) against a real rtcs node.

The cases are JavaScript, in ``tests/js/*.test.mjs``, run by Node's test
runner (``node --test``); this test starts the node they talk to, and a
control endpoint for what only the server side can do, runs them in a
subprocess and fails with Node's output when one fails. ``ws`` (the tests'
WebSocket for Node 20) is installed once into ``tests/js/node_modules``.

Without ``node`` (or when ``npm install`` fails) the test is skipped, and
fails instead when ``CI`` is set, like the Redis tests.

What the JavaScript tests get in their environment:

- ``JS_RTCS_URL``: the node's WebSocket URL; ``JS_RTCS_HTTP``: its HTTP base;
- ``JS_RTCS_SECRET``: the HS256 secret the node verifies tokens with (the
  tests mint their own: long- and short-lived, admin, invalid);
- ``JS_RTCS_CONTROL``: the control endpoint (:class:`Control`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest

from rtcs.backends.base import Backends
from rtcs.backends.memory import MemoryBroker, MemoryPresenceStore, MemorySessionStore
from rtcs.errors import Unavailable
from rtcs.gateway.handle import ConnectionHandle
from tests.integration.conftest import Node
from tests.support.processes import require_binary
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
JS_TESTS = ROOT / "tests" / "js"
#: Seconds the whole ``node --test`` run may take before it is killed.
RUN_TIMEOUT = 120.0
#: Seconds ``npm install`` may take (once: ``tests/js/node_modules`` stays).
INSTALL_TIMEOUT = 180.0
#: The spec reporter's summary lines, e.g. "(info sign) pass 24" and "(info sign) fail 0".
SUMMARY = re.compile(r"^\S+ (pass|fail|skipped|cancelled) (\d+)$", re.MULTILINE)


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail when ``CI`` is set (CI must run the JavaScript tests)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so the JavaScript client tests must run", pytrace=False)
    pytest.skip(reason)


def prepare_node_modules() -> str | None:
    """Install ``tests/js``'s dev dependencies when missing; None, or why not."""
    if (JS_TESTS / "node_modules" / "ws" / "package.json").is_file():
        return None
    npm = shutil.which("npm")
    if npm is None:
        return "npm is not installed (needed once to install ws into tests/js)"
    try:
        proc = subprocess.run(
            [npm, "install", "--prefix", str(JS_TESTS), "--no-audit", "--no-fund"],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"npm install --prefix tests/js timed out after {INSTALL_TIMEOUT:.0f} s"
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return "npm install --prefix tests/js failed: " + " | ".join(tail)
    return None


class FlakyPresence(MemoryPresenceStore):
    """A presence store that can fail like a Redis that went away, or make joins wait."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.open = asyncio.Event()  # joins wait while it is clear
        self.open.set()

    def healthy(self) -> bool:
        return not self.down

    async def members(self, room: str) -> list[str]:
        if self.down:
            raise Unavailable("presence store down")
        return await super().members(room)

    async def join(self, room: str, user: str, member: str, node: str) -> bool:
        await self.open.wait()
        if self.down:
            raise Unavailable("presence store down")
        return await super().join(room, user, member, node)


class FlakySessions(MemorySessionStore):
    """A session store whose probe fails while ``presence`` is down (the breaker stays open)."""

    def __init__(self, presence: FlakyPresence) -> None:
        super().__init__()
        self.presence = presence

    async def count(self) -> int:
        if self.presence.down:
            raise Unavailable("session store down")
        return await super().count()


class Control:
    """A tiny HTTP endpoint on 127.0.0.1 for what the JavaScript tests cannot do
    from the client side. Every request is ``POST /<action>`` with a JSON body;
    the answer is ``200 {"ok": true}``, or ``400``/``404``/``500`` with ``{"error": ...}``.

    - ``/abort`` ``{"connection": C}``: drop connection C without a close frame
      (its transport is aborted); answers once the node has let go of its session.
    - ``/close`` ``{"connection": C, "code": N, "reason": R}``: close C with code N.
    - ``/backend`` ``{"down": bool}``: the presence and session stores fail (the
      breaker opens: degraded mode) or work again.
    - ``/joins`` ``{"wait": bool}``: room joins wait (no reply) until ``false``.
    """

    def __init__(self, node: Node, presence: FlakyPresence) -> None:
        self.node = node
        self.presence = presence
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        self.presence.open.set()  # nothing may wait past the test
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                status, body = await self._answer(reader)
        except Exception as exc:  # told to the JavaScript test, which fails with it
            status, body = 500, {"error": f"{type(exc).__name__}: {exc}"}
        payload = json.dumps(body).encode()
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
            + payload
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        method, path, _ = head[0].split(" ", 2)
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        body = json.loads(await reader.readexactly(length)) if length else {}
        if method != "POST" or not isinstance(body, dict):
            return 400, {"error": "POST a JSON object"}
        return await self._act(path, body)

    def _handle(self, connection: object) -> ConnectionHandle | None:
        gateway = self.node.app.gateway
        assert gateway is not None
        return next((h for h in gateway.handles if h.connection_id == connection), None)

    async def _act(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if path == "/backend":
            self.presence.down = bool(body.get("down"))
            return 200, {"ok": True}
        if path == "/joins":
            if body.get("wait"):
                self.presence.open.clear()
            else:
                self.presence.open.set()
            return 200, {"ok": True}
        if path not in ("/abort", "/close"):
            return 404, {"error": f"no action {path}"}
        handle = self._handle(body.get("connection"))
        if handle is None:
            return 404, {"error": f"no connection {body.get('connection')!r}"}
        if path == "/close":
            handle.close(int(body["code"]), str(body.get("reason", "")))
            return 200, {"ok": True}
        ctx = self.node.app.ctx
        assert ctx is not None
        session = ctx.sessions.by_connection(handle.connection_id)
        handle.abort()
        if session is not None:
            # Detached, or already resumed by the client's next connection.
            await wait_until(
                lambda: session.sink is not handle, message=f"{session.id} left its socket"
            )
        return 200, {"ok": True}


@pytest.fixture
async def js_node(node_factory: Callable[..., Awaitable[Node]]) -> AsyncIterator[dict[str, str]]:
    """A node with a flaky presence store, its control endpoint, and the JS tests' environment."""
    require_binary("node", "nodejs")
    reason = prepare_node_modules()
    if reason is not None:
        unavailable(reason)
    secret = secrets.token_urlsafe(48)
    presence = FlakyPresence()
    backends = Backends(MemoryBroker(), FlakySessions(presence), presence)
    node = await node_factory(
        backends,
        **{"auth.secret": secret, "breaker.failure_threshold": 2, "breaker.timeout": 0.2},
    )
    control = Control(node, presence)
    await control.start()
    try:
        yield {
            "JS_RTCS_URL": node.url,
            "JS_RTCS_HTTP": node.http,
            "JS_RTCS_SECRET": secret,
            "JS_RTCS_CONTROL": control.url,
        }
    finally:
        await control.stop()


async def test_the_javascript_client_passes_its_node_tests(js_node: dict[str, str]) -> None:
    files = sorted(str(p.relative_to(ROOT)) for p in JS_TESTS.glob("*.test.mjs"))
    assert files, "no tests/js/*.test.mjs"
    # Listed one by one: Node 20 takes directories, later versions glob patterns.
    # Its own process group: on a timeout the runner and its per-file children go.
    proc = await asyncio.create_subprocess_exec(
        "node",
        "--test",
        "--test-reporter=spec",
        *files,
        cwd=ROOT,
        env={**os.environ, **js_node, "NO_COLOR": "1"},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    # Read apart from the wait: on a timeout, what was printed so far is kept.
    reading = asyncio.ensure_future(proc.stdout.read())
    try:
        await asyncio.wait_for(proc.wait(), RUN_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        output = (await reading).decode(errors="replace")
        pytest.fail(f"node --test did not finish in {RUN_TIMEOUT:g} s:\n{output}")
    text = (await reading).decode(errors="replace")
    assert proc.returncode == 0, f"node --test failed (exit {proc.returncode}):\n{text}"
    counts = {name: int(n) for name, n in SUMMARY.findall(text)}
    assert counts.get("fail") == 0 and counts.get("pass", 0) > 0, text
    # A run that skipped the node's cases (see tests/js/support.mjs SKIP) passes too.
    assert "JS_RTCS_URL is not set" not in text, text
