"""Real redis-server processes for tests: one server, or a 3-master Cluster.

Each server runs from the Debian ``redis-server`` binary on a free port of
127.0.0.1, in a temporary directory, with persistence off (``--save ""
--appendonly no``). Start-up polls ``PING`` (and ``CLUSTER INFO`` for a
cluster) against a deadline; nothing sleeps blindly. Every process is stopped
by its PID: by the fixture that started it, at interpreter exit for the shared
ones, and by the kernel if the test process dies first (``PR_SET_PDEATHSIG``).

- :class:`RedisServer` one process: ``url``, ``pid``, ``freeze()`` (SIGSTOP
  until the ``with`` block ends), ``kill()`` and ``restart()`` on the same port.
- :class:`RedisClusterServers` three masters joined with ``redis-cli --cluster
  create``, every slot covered, ``cluster_state:ok``.
- :func:`shared_server` / :func:`shared_cluster` one of each per test process,
  started on first use (the contract suite's harness factories take no
  fixtures); :func:`flush` empties them between tests.
- :func:`require_binaries` skips a test when ``redis-server`` or ``redis-cli``
  is missing, and fails it instead when the ``CI`` environment variable is
  set, so CI never silently skips the Redis suite.

The ``redis_server`` and ``redis_cluster`` fixtures hand out the shared
instances; a test that kills or restarts a server starts its own
:class:`RedisServer` instead.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.children import die_with_parent, stop

START_TIMEOUT = 10.0  # seconds for a server to answer PING / a cluster to say ok
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL
POLL = 0.02  # seconds between two readiness probes
CLUSTER_NODE_TIMEOUT_MS = 5000  # longer than any freeze a test does: no failover


def require_binaries() -> tuple[str, str]:
    """Paths of ``redis-server`` and ``redis-cli``.

    Raises:
        pytest.skip.Exception: a binary is missing (outside CI).
        pytest.fail.Exception: a binary is missing and ``CI`` is set.
    """
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is not None and cli is not None:
        return server, cli
    reason = "redis-server/redis-cli not installed (apt-get install redis-server)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so the Redis tests must run", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command(port: int, *args: str, timeout: float = 1.0) -> bytes | int | list[object] | None:
    """Send one command to 127.0.0.1:``port`` and return the decoded RESP2 reply.

    Raises:
        OSError: the server cannot be reached or does not answer in ``timeout``.
        RuntimeError: the server answered with an error reply.
    """
    request = b"*%d\r\n" % len(args) + b"".join(
        b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args
    )
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        return _Reply(sock).read()


class _Reply:
    """A minimal blocking RESP2 reader, enough for PING, INFO and FLUSHALL."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = b""

    def _line(self) -> bytes:
        while b"\r\n" not in self._buf:
            self._more()
        line, self._buf = self._buf.split(b"\r\n", 1)
        return line

    def _more(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        self._buf += chunk

    def read(self) -> bytes | int | list[object] | None:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RuntimeError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            while len(self._buf) < size + 2:
                self._more()
            data, self._buf = self._buf[:size], self._buf[size + 2 :]
            return data
        if kind == b"*":
            return [self.read() for _ in range(int(rest))]
        raise RuntimeError(f"unexpected RESP reply {line!r}")


class RedisServer:
    """One redis-server process on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self, *extra_args: str, directory: Path | None = None, cluster_bus: bool = False
    ) -> None:
        self.binary, self.cli = require_binaries()
        # A cluster node also listens on a bus port, by default port + 10000,
        # which may be above 65535 or taken: pick a free one explicitly.
        self.cluster_bus = cluster_bus
        self.bus_port = 0
        self._own_dir = directory is None
        self.dir = Path(tempfile.mkdtemp(prefix="rtcs-redis-")) if directory is None else directory
        self.extra_args = extra_args
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the server is not running")
        return self._proc.pid

    def start(self, port: int | None = None) -> RedisServer:
        """Start on ``port`` (a free one when None) and wait until it answers PING.

        Raises:
            RuntimeError: it did not start within ``START_TIMEOUT``.
        """
        attempts = 1 if port is not None else 3
        last = ""
        for _ in range(attempts):
            self.port = port if port is not None else free_port()
            if self.cluster_bus and (port is None or not self.bus_port):
                self.bus_port = free_port()
            self._spawn()
            try:
                self._wait_ready()
                return self
            except RuntimeError as exc:  # e.g. the free port was taken meanwhile
                last = str(exc)
                self.stop()
        raise RuntimeError(f"redis-server did not start: {last}")

    def _spawn(self) -> None:
        log = self.dir / f"redis-{self.port}.log"
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--daemonize",
            "no",
            "--logfile",
            str(log),
            *self.extra_args,
        ]
        if self.cluster_bus:
            args += ["--cluster-port", str(self.bus_port)]
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent(signal.SIGTERM),  # the tests start servers before any thread
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._proc is None or self._proc.poll() is not None:
                raise RuntimeError(f"exited at start-up; see {self.dir}")
            try:
                if command(self.port, "PING", timeout=0.5) == b"PONG":
                    return
            except (OSError, RuntimeError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"no PONG on port {self.port} after {START_TIMEOUT} s")
            time.sleep(POLL)

    @contextlib.contextmanager
    def freeze(self) -> Iterator[None]:
        """SIGSTOP the server for the ``with`` block; SIGCONT it afterwards, always."""
        os.kill(self.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the server (a crash) and reap it; the port becomes free."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(STOP_TIMEOUT)
            self._proc = None

    def restart(self) -> None:
        """Start again on the same port (after ``kill``)."""
        self.start(self.port)

    def stop(self) -> None:
        """SIGTERM (SIGKILL after ``STOP_TIMEOUT``) and reap; idempotent."""
        proc, self._proc = self._proc, None
        stop(proc, STOP_TIMEOUT, resume=True)  # a frozen server cannot handle SIGTERM

    def cleanup(self) -> None:
        """Stop, and remove the temporary directory this server created."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def flush(self) -> None:
        """Empty every database."""
        command(self.port, "FLUSHALL")


class RedisClusterServers:
    """Three cluster-enabled masters covering all 16384 slots, no replicas."""

    def __init__(self, masters: int = 3) -> None:
        self.binary, self.cli = require_binaries()
        self.dir = Path(tempfile.mkdtemp(prefix="rtcs-redis-cluster-"))
        self.nodes: list[RedisServer] = []
        self._masters = masters

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL naming one seed node."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> RedisClusterServers:
        """Start the masters, create the cluster and wait for ``cluster_state:ok``.

        Raises:
            RuntimeError: a node did not start or the cluster did not form in time.
        """
        for i in range(self._masters):
            node = RedisServer(
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{i}.conf",
                "--cluster-node-timeout",
                str(CLUSTER_NODE_TIMEOUT_MS),
                directory=self.dir / f"node-{i}",
                cluster_bus=True,
            )
            node.dir.mkdir()
            self.nodes.append(node.start())
        created = subprocess.run(
            [
                self.cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-2000:]}")
        deadline = time.monotonic() + START_TIMEOUT
        while not all(self._ok(node.port) for node in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster_state is not ok after {START_TIMEOUT} s")
            time.sleep(POLL)
        return self

    @staticmethod
    def _ok(port: int) -> bool:
        try:
            info = command(port, "CLUSTER", "INFO")
        except (OSError, RuntimeError):
            return False
        return isinstance(info, bytes) and b"cluster_state:ok" in info

    def flush(self) -> None:
        """Empty every master."""
        for node in self.nodes:
            node.flush()

    def cleanup(self) -> None:
        """Stop every node and remove the temporary directory."""
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


_shared: dict[str, RedisServer | RedisClusterServers | Exception] = {}


def _shared_instance(name: str, build: type[RedisServer] | type[RedisClusterServers]) -> object:
    require_binaries()
    found = _shared.get(name)
    if isinstance(found, Exception):
        # Start-up already failed in this process: fail fast, do not retry per test.
        raise RuntimeError(f"shared {name} did not start: {found}")
    if found is None:
        instance = build()
        try:
            instance.start()
        except Exception as exc:
            instance.cleanup()
            _shared[name] = exc
            raise
        _shared[name] = instance
        atexit.register(instance.cleanup)
        found = instance
    return found


def shared_server() -> RedisServer:
    """The test process's single redis-server, started on first use, flushed."""
    server = _shared_instance("server", RedisServer)
    assert isinstance(server, RedisServer)
    server.flush()
    return server


def shared_cluster() -> RedisClusterServers:
    """The test process's 3-master cluster, started on first use, flushed."""
    cluster = _shared_instance("cluster", RedisClusterServers)
    assert isinstance(cluster, RedisClusterServers)
    cluster.flush()
    return cluster


@pytest.fixture
def redis_server() -> RedisServer:
    """The shared single server, empty. Do not kill it: start your own for that."""
    return shared_server()


@pytest.fixture
def redis_cluster() -> RedisClusterServers:
    """The shared cluster, empty. Do not kill its nodes: start your own for that."""
    return shared_cluster()
