"""SIGTERM on a real ``python -m rtcs``: not ready first, then closes spread out, exit 0.

The drain as a load balancer and clients see it (docs/operations.md,
"Shutdown"): ``/readyz`` answers 503 for ``server.drain_grace`` before any
client is closed, the clients are then closed with 1001 in batches spread
over most of ``server.drain_timeout``, the process exits 0, and (with Redis)
a session it held is resumable on another node.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from rtcs import config
from rtcs.actors.connection_supervisor import DRAIN_MIN_RATE, DRAIN_SPREAD
from rtcs.auth.tokens import mint
from tests.integration.conftest import ENV, TIMEOUT, Client, Node
from tests.support.processes import RtcsProcess, temporary_directory
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

SECRET = "drain-test-secret-of-at-least-32-bytes"
AUTH = config.load(None, {"RTCS_JWT_SECRET": SECRET}).auth
DRAIN = 2.5  # server.drain_timeout
GRACE = 1.0  # server.drain_grace
# Enough clients that the minimum close rate does not finish them early: the
# closes then take 1.5 s of the 2 s (DRAIN_SPREAD x DRAIN) they may use.
CLIENTS = 150
SETTINGS = {
    "RTCS_JWT_SECRET": SECRET,
    "RTCS_SERVER_DRAIN_TIMEOUT": str(DRAIN),
    "RTCS_SERVER_DRAIN_GRACE": str(GRACE),
}


@pytest.fixture
async def directory() -> AsyncIterator[Path]:
    path = temporary_directory("rtcs-drain-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def client(port: int, sub: str) -> Client:
    ws = await connect(
        f"ws://127.0.0.1:{port}/ws",
        additional_headers={"Authorization": f"Bearer {mint(AUTH, sub)}"},
        open_timeout=TIMEOUT,
    )
    connected = Client(ws)
    connected.welcome = await connected.expect("welcome")
    return connected


async def readyz(port: int) -> int | None:
    """The status of ``GET /readyz``; None once the port no longer accepts."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return None
    try:
        writer.write(b"GET /readyz HTTP/1.1\r\nHost: rtcs\r\n\r\n")
        line = await asyncio.wait_for(reader.readline(), TIMEOUT)
    except OSError:
        return None
    finally:
        writer.close()
    return int(line.split()[1]) if line else None


async def exited(process: RtcsProcess) -> int:
    """The exit status, once the process has exited."""
    proc = process.proc
    assert proc is not None
    await wait_until(lambda: proc.poll() is not None, DRAIN + GRACE + TIMEOUT, interval=0.02)
    return int(proc.returncode)


async def test_sigterm_says_not_ready_then_closes_clients_spread_out(directory: Path) -> None:
    assert CLIENTS > DRAIN_MIN_RATE * DRAIN_SPREAD * DRAIN / 2  # the spread is the window's
    node = await RtcsProcess("drain", {**ENV, **SETTINGS}, directory).start()
    clients: list[Client] = []
    try:
        clients = list(await asyncio.gather(*(client(node.port, f"u{i}") for i in range(CLIENTS))))
        loop = asyncio.get_running_loop()
        closes: list[tuple[float, int | None]] = []

        async def watch(each: Client) -> None:
            code = await each.closed(timeout=DRAIN + GRACE + TIMEOUT)
            closes.append((loop.time(), code))

        watchers = [asyncio.create_task(watch(each)) for each in clients]
        assert await readyz(node.port) == 200
        node.terminate()
        signalled = loop.time()
        not_ready_at = None
        while not_ready_at is None:  # polled: the load balancer's view
            status = await readyz(node.port)
            assert status in (200, 503), status  # the port stays open meanwhile
            if status == 503:
                not_ready_at = loop.time()
            assert loop.time() - signalled < TIMEOUT, "/readyz never answered 503"
        assert not closes, "a client was closed before /readyz answered 503"
        await asyncio.gather(*watchers)
        assert {code for _, code in closes} == {1001}
        times = sorted(at for at, _ in closes)
        assert times[0] - not_ready_at >= GRACE / 2  # the grace held the closes back
        # Spread over the window, not all at once (a loose bound: about 1.45 s here).
        assert times[-1] - times[0] >= 0.4 * DRAIN, (times[0], times[-1])
        assert await exited(node) == 0
    finally:
        for each in clients:
            each.ws.transport.abort()
        node.stop()
    log = node.log.read_text()
    assert "rtcs stopped" in log and "Traceback" not in log


@pytest.fixture
async def own_redis(directory: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(directory=directory).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.redis
async def test_a_session_of_a_drained_node_resumes_on_another(
    directory: Path,
    own_redis: RedisServer,
    node_factory: Callable[..., Awaitable[Node]],
) -> None:
    shared = {"RTCS_BACKEND_KIND": "redis", "RTCS_BACKEND_REDIS_URL": own_redis.url}
    env = {**ENV, **SETTINGS, **shared, "RTCS_SERVER_DRAIN_GRACE": "0"}
    node = await RtcsProcess("drained", env, directory).start()
    try:
        alice = await client(node.port, "alice")
        await alice.subscribe("news")
        for n in (1, 2):
            await alice.publish("news", n)
        first = await alice.expect("message", data=1)
        node.terminate()
        assert await alice.closed(timeout=DRAIN + TIMEOUT) == 1001
        assert await exited(node) == 0
    finally:
        node.stop()
    other = await node_factory(
        **{
            "backend.kind": "redis",
            "backend.redis_url": own_redis.url,
            "auth.secret": SECRET,
            "server.drain_grace": 0,
        }
    )
    session = alice.welcome["session_id"]
    again = await other.resume("alice", session, first["seq"], resumed=True, replayed=1)
    got = await again.expect("message", data=2)
    assert got["seq"] == first["seq"] + 1
    # Its subscription came along too.
    bob = await other.client("bob")
    await bob.publish("news", 3)
    got = await again.expect("message", data=3)
    assert got["seq"] == first["seq"] + 2
