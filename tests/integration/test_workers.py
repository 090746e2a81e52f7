"""``python -m rtcs --workers N``: the parent, its workers, and what they share.

The parent's supervision is tested with fake workers (a few lines of Python
that watch the parent pipe like a real worker), so restarts and signals take
milliseconds; the end-to-end tests run real rtcs workers against a real
redis-server. Everything waits on log lines or process states with a
deadline; nothing sleeps to let things settle.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from rtcs.workers import Backoff, InstanceCounter, WorkerParent
from tests.integration.conftest import ENV, TIMEOUT, Client, run_cli, wait_until
from tests.support.children import die_with_parent, stop
from tests.support.redis_server import RedisServer, free_port, shared_server

# A stand-in worker: drains (exits 0) on SIGTERM, like rtcs, and on the
# parent pipe's end-of-file through the real rtcs.workers.watch_parent.
FAKE_WORKER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from rtcs.workers import watch_parent

    async def main():
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        watch_parent(int(sys.argv[1]))
        # One write per line: the workers share the parent's stdout pipe, and
        # print() may write the text and its newline separately.
        os.write(1, f'{{"event": "fake ready", "worker": {sys.argv[2]}}}\\n'.encode())
        await stop.wait()

    asyncio.run(main())
    """
)

# A parent of two fake workers, as the CLI runs it (signals and all).
FAKE_PARENT = textwrap.dedent(
    f"""
    import sys
    from rtcs import logs
    from rtcs.workers import WorkerParent, run_parent

    logs.configure("info", "json", sys.stdout)
    fake = {FAKE_WORKER!r}
    parent = WorkerParent(
        2, lambda i, fd: [sys.executable, "-c", fake, str(fd), str(i)], stop_timeout=5.0
    )
    sys.exit(run_parent(parent))
    """
)


def gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie nobody reaped counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


class Output:
    """The JSON lines a process writes to its stdout, read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.entries: list[dict[str, Any]] = []

    def matching(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in self.entries
            if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
        ]

    async def wait(
        self,
        event: str,
        count: int = 1,
        timeout: float = TIMEOUT * 2,
        where: Callable[[dict[str, Any]], bool] = lambda e: True,
        **fields: Any,
    ) -> list[dict[str, Any]]:
        """Read lines until ``count`` entries match; returns every match so far."""
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while len(found := [e for e in self.matching(event, **fields) if where(e)]) < count:
                    line = await self.proc.stdout.readline()
                    if not line:
                        raise AssertionError(f"output ended waiting for {event!r} {fields}")
                    with contextlib.suppress(ValueError):
                        self.entries.append(json.loads(line))
        except TimeoutError:
            raise AssertionError(
                f"no {count} x {event!r} {fields} in {timeout} s; got {self.entries[-20:]}"
            ) from None
        return found


async def _exited(proc: asyncio.subprocess.Process, timeout: float = TIMEOUT) -> int:
    """``proc``'s exit status, within ``timeout``.

    On Python 3.11, ``Process.wait()`` also waits for the stdout pipe to close,
    and the workers share it: a worker that outlives its parent would block it.
    """
    return await asyncio.wait_for(proc.wait(), timeout)


async def _kill(proc: asyncio.subprocess.Process, output: Output) -> None:
    """SIGKILL the parent, then any worker of it still running; reap the parent."""
    if proc.returncode is None:
        proc.kill()
    for entry in output.matching("worker started"):
        pid = entry["pid"]
        with contextlib.suppress(OSError):
            if not gone(pid) and Path(f"/proc/{pid}/cmdline").read_bytes().find(b"rtcs") >= 0:
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        await _exited(proc)


# -- the memory backend cannot be shared ------------------------------------------------------


def test_memory_backend_refuses_several_workers() -> None:
    result = run_cli("--workers", "2", "--port", "0", env={"RTCS_BACKEND_KIND": "memory"})
    assert result.returncode == 2
    assert "server.workers" in result.stderr and "backend.kind" in result.stderr
    assert "not available yet" not in result.stderr and "Traceback" not in result.stderr


# -- the parent, with fake workers -----------------------------------------------------------


class Recorder:
    """A logger that keeps (event, fields, loop time) for the test to read."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any], float]] = []

    def _log(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields, asyncio.get_running_loop().time()))

    info = warning = error = _log

    def events(self, name: str) -> list[tuple[dict[str, Any], float]]:
        return [(fields, at) for event, fields, at in self.lines if event == name]


async def test_a_worker_that_dies_at_once_is_restarted_with_backoff() -> None:
    log = Recorder()
    counter = InstanceCounter.create(1)
    writer = InstanceCounter.attach(counter.name, 1, 0)
    writer.set(42)  # as if the worker had connections when it died
    parent = WorkerParent(
        1,
        lambda i, fd: [sys.executable, "-c", "raise SystemExit(3)"],
        backoff=Backoff(initial=0.05, maximum=0.2, reset_after=10.0),
        counter=counter,
        log=log,
    )
    run = asyncio.create_task(parent.run())
    try:
        await wait_until(lambda: parent.starts[0] >= 5, timeout=TIMEOUT * 2)
        assert counter.total() == 0  # the dead worker's slot was zeroed
        parent.stop()
        assert await asyncio.wait_for(run, TIMEOUT) == 0
    finally:
        run.cancel()
        writer.close()
        counter.close()
    exits = log.events("worker exited")
    assert [f["status"] for f, _ in exits[:4]] == [3, 3, 3, 3]
    assert [f["restart_in"] for f, _ in exits[:4]] == [0.05, 0.1, 0.2, 0.2]
    starts = [at for _, at in log.events("worker started")]
    for (fields, died), restarted in zip(exits, starts[1:], strict=False):
        assert restarted - died >= fields["restart_in"] * 0.9  # never a hot loop


async def test_a_worker_that_cannot_be_started_is_retried() -> None:
    log = Recorder()
    parent = WorkerParent(
        1, lambda i, fd: ["/nonexistent/rtcs-worker"], backoff=Backoff(0.01, 0.02), log=log
    )
    run = asyncio.create_task(parent.run())
    try:
        await wait_until(lambda: len(log.events("cannot start worker")) >= 3)
        parent.stop()
        assert await asyncio.wait_for(run, TIMEOUT) == 0
    finally:
        run.cancel()
    assert parent.starts == [0]


@pytest.fixture
async def fake_parent() -> AsyncIterator[tuple[asyncio.subprocess.Process, Output]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FAKE_PARENT, stdout=asyncio.subprocess.PIPE, env=ENV
    )
    output = Output(proc)
    try:
        await output.wait("fake ready", count=2)
        yield proc, output
    finally:
        await _kill(proc, output)


async def test_sigterm_to_the_parent_stops_every_worker_and_exits_0(
    fake_parent: tuple[asyncio.subprocess.Process, Output],
) -> None:
    proc, output = fake_parent
    pids = [e["pid"] for e in await output.wait("worker started", count=2)]
    proc.send_signal(signal.SIGTERM)
    assert await _exited(proc) == 0
    stopped = output.matching("worker stopped") + await output.wait("worker stopped", count=2)
    assert {e["status"] for e in stopped} == {0}  # drained, not killed
    assert all(gone(pid) for pid in pids)


async def test_workers_exit_when_the_parent_is_killed(
    fake_parent: tuple[asyncio.subprocess.Process, Output],
) -> None:
    proc, output = fake_parent
    pids = [e["pid"] for e in await output.wait("worker started", count=2)]
    proc.kill()  # SIGKILL: the parent cannot tell anyone
    await _exited(proc)
    await wait_until(lambda: all(gone(pid) for pid in pids), message=f"workers {pids} still run")


async def test_a_killed_worker_is_restarted(
    fake_parent: tuple[asyncio.subprocess.Process, Output],
) -> None:
    _, output = fake_parent
    first = (await output.wait("worker started", worker=1))[0]["pid"]
    os.kill(first, signal.SIGKILL)
    exited = await output.wait("worker exited", worker=1)
    assert exited[0]["status"] == -signal.SIGKILL and exited[0]["restart_in"] == 0.1
    again = await output.wait("worker started", worker=1, where=lambda e: e["pid"] != first)
    assert again[0]["pid"] != first
    await output.wait("fake ready", count=3)


# An orphan whose drain hangs: SIGTERM does nothing, only exit_after ends it.
STUCK_WORKER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from rtcs.workers import watch_parent

    async def main():
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, lambda: None)
        watch_parent(int(sys.argv[1]), exit_after=0.2)
        os.write(1, b'{"event": "fake ready"}\\n')
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


def test_an_orphan_whose_drain_hangs_exits_by_itself() -> None:
    read_fd, write_fd = os.pipe()
    worker = subprocess.Popen(
        [sys.executable, "-c", STUCK_WORKER, str(read_fd)],
        pass_fds=(read_fd,),
        stdout=subprocess.PIPE,
        env=ENV,
        preexec_fn=die_with_parent(signal.SIGKILL),
    )
    try:
        os.close(read_fd)
        assert worker.stdout is not None
        assert b"fake ready" in worker.stdout.readline()
        os.close(write_fd)  # the parent dies
        write_fd = -1
        assert worker.wait(TIMEOUT) == 1
        assert b"parent gone and the drain did not finish" in worker.stdout.read()
    finally:
        if write_fd >= 0:
            os.close(write_fd)
        stop(worker, TIMEOUT)
        if worker.stdout is not None:
            worker.stdout.close()


# -- InstanceCounter across processes -----------------------------------------------------------

COUNTER_CHILD = textwrap.dedent(
    """
    import sys
    from rtcs.workers import InstanceCounter

    counter = InstanceCounter.attach(sys.argv[1], 2, 1)
    counter.set(int(sys.argv[2]))
    print(counter.total(), flush=True)
    counter.close()
    """
)


def test_instance_counter_across_two_processes() -> None:
    parent = InstanceCounter.create(2)
    try:
        mine = InstanceCounter.attach(parent.name, 2, 0)
        mine.set(5)
        child = subprocess.run(
            [sys.executable, "-c", COUNTER_CHILD, parent.name, "37"],
            capture_output=True,
            text=True,
            timeout=30,
            env=ENV,
        )
        assert child.returncode == 0, child.stderr
        assert child.stdout.strip() == "42"  # the child saw my slot
        assert mine.total() == 42 and parent.get(1) == 37  # and I see its slot
        # The child's exit did not remove the memory (it is the parent's to unlink).
        assert InstanceCounter.attach(parent.name, 2, 1).get(1) == 37
        assert "leaked" not in child.stderr
        mine.close()
    finally:
        parent.close()


# -- end to end: python -m rtcs --workers 2 with Redis -------------------------------------------


def _free_port_pair() -> int:
    """A port P of 127.0.0.1 such that P and P + 1 were free a moment ago."""
    for _ in range(50):
        port = free_port()
        if port >= 65535:
            continue
        with contextlib.suppress(OSError), socket.socket() as other:
            other.bind(("127.0.0.1", port + 1))
            return port
    raise RuntimeError("no two consecutive free ports")


class Instance:
    def __init__(self, proc: asyncio.subprocess.Process, output: Output, metrics_port: int):
        self.proc = proc
        self.output = output
        self.metrics_port = metrics_port
        started = output.matching("rtcs started")
        self.port: int = started[0]["port"]
        self.token = run_cli("token", "alice").stdout.strip()

    def worker_pids(self) -> dict[int, int]:
        """The latest pid of each worker index."""
        return {e["worker"]: e["pid"] for e in self.output.matching("worker started")}

    async def client(self) -> Client:
        ws = await connect(
            f"ws://127.0.0.1:{self.port}/ws",
            additional_headers={"Authorization": f"Bearer {self.token}"},
            open_timeout=TIMEOUT,
        )
        client = Client(ws)
        client.welcome = await client.expect("welcome")
        return client


@pytest.fixture
async def instance() -> AsyncIterator[Instance]:
    redis: RedisServer = shared_server()
    metrics_port = _free_port_pair()
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "rtcs", "--workers", "2", "--port", "0"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={
            **ENV,
            "RTCS_BACKEND_KIND": "redis",
            "RTCS_BACKEND_REDIS_URL": redis.url,
            "RTCS_SERVER_DRAIN_TIMEOUT": "3",
            "RTCS_METRICS_WORKER_PORT": str(metrics_port),
        },
    )
    output = Output(proc)
    try:
        await output.wait("rtcs started", count=2, timeout=TIMEOUT * 4)
        await output.wait("worker metrics listening", count=2)
        yield Instance(proc, output, metrics_port)
    finally:
        await _kill(proc, output)


def _build_node(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT) as response:
        text: str = response.read().decode()
    line = next(x for x in text.splitlines() if x.startswith("rtcs_build_info{"))
    return line.split('node="', 1)[1].split('"', 1)[0]


@pytest.mark.redis
async def test_two_workers_share_the_port_restart_and_drain(instance: Instance) -> None:
    clients = [await instance.client() for _ in range(20)]
    servers = {c.welcome["server"] for c in clients}
    assert len(servers) == 2, servers  # the kernel spread them over both workers

    # Each worker's metrics port shows that worker alone.
    loop = asyncio.get_running_loop()
    nodes = [
        await loop.run_in_executor(None, _build_node, instance.metrics_port + i) for i in (0, 1)
    ]
    assert set(nodes) == servers

    # SIGKILL worker 0: the parent restarts it, and the new process answers.
    old = instance.worker_pids()
    os.kill(old[0], signal.SIGKILL)
    new = await instance.output.wait("worker started", worker=0, where=lambda e: e["pid"] != old[0])
    new_node = next(
        e["node"]
        for e in await instance.output.wait(
            "rtcs started", where=lambda e: e["node"].endswith(f"-{new[0]['pid']}")
        )
    )
    survivors = [c for c in clients if c.welcome["server"] == nodes[1]]
    for c in clients:
        if c not in survivors:
            await c.closed()  # dropped with the killed worker
    fresh: list[Client] = []
    async with asyncio.timeout(TIMEOUT * 2):
        while not any(c.welcome["server"] == new_node for c in fresh):
            fresh.append(await instance.client())

    # SIGTERM to the parent: every client is closed with 1001, the parent exits 0.
    instance.proc.send_signal(signal.SIGTERM)
    codes = await asyncio.gather(*(c.closed(TIMEOUT * 2) for c in survivors + fresh))
    assert set(codes) == {1001}
    assert await _exited(instance.proc, TIMEOUT * 2) == 0
    assert all(gone(pid) for pid in instance.worker_pids().values())


@pytest.mark.redis
async def test_real_workers_exit_when_the_parent_is_killed(instance: Instance) -> None:
    pids = list(instance.worker_pids().values())
    instance.proc.kill()
    await _exited(instance.proc, TIMEOUT * 2)
    await wait_until(
        lambda: all(gone(pid) for pid in pids), timeout=TIMEOUT * 2, message=f"{pids} still run"
    )
