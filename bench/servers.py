"""The server targets, started as subprocesses and always stopped.

A target is a command line plus environment. :class:`ServerProcess` starts it on
a free 127.0.0.1 port, pinned to one CPU (``rtcs-w2`` is not pinned: its two
workers may use every core), with ``PR_SET_PDEATHSIG`` so it dies with the
runner even if the runner is killed; waits until a benchmark client gets a
``welcome`` and a publish is acknowledged (for ``rtcs-w2``: until both workers
answered and a publish crossed Redis from one to the other); reads RSS and CPU
of its whole process tree from ``/proc``; and stops it by PID (SIGTERM, then
SIGKILL after a timeout, also for each worker it had).

:class:`RedisProcess` is the redis-server that ``rtcs-w2`` shares: started by
the runner on a free loopback port, persistence off, stopped by PID at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from bench.wsclient import BenchConnection, connect

REPO_ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = REPO_ROOT / "bench" / "node"
HOST = "127.0.0.1"
# The HS256 secret of this run: given to every rtcs target (RTCS_JWT_SECRET), so
# the bench never uses, or creates, the user's development secret file.
BENCH_SECRET = secrets.token_urlsafe(48)
PR_SET_PDEATHSIG = 1

# rtcs protects itself per address and per user; a benchmark from one machine
# must lift those limits or it measures the limiter.
RTCS_BENCH_ENV = {
    "RTCS_JWT_SECRET": BENCH_SECRET,
    "RTCS_LIMITS_MAX_CONNECTIONS_PER_ADDRESS": "100000",
    "RTCS_LIMITS_MAX_CONNECTIONS_PER_USER": "100000",
    "RTCS_LIMITS_MAX_CONNECTIONS_PER_NODE": "100000",
    "RTCS_LIMITS_RATE": "100000",
    "RTCS_LIMITS_BURST": "100000",
    "RTCS_LIMITS_BYTE_RATE": "1000000000",
    "RTCS_LIMITS_BYTE_BURST": "1000000000",
}


class ServerError(RuntimeError):
    """A target could not be started or did not become ready."""


def mint_token(sub: str, ttl: float = 3600.0) -> str:
    """An HS256 token for ``sub`` signed with this run's :data:`BENCH_SECRET`."""
    return jwt.encode(
        {"sub": sub, "exp": int(time.time() + ttl), "roles": ["user"]},
        BENCH_SECRET,
        algorithm="HS256",
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """How to start one server target.

    ``pinned``: run on the runner's server CPU (else on every allowed CPU).
    ``nodes``: distinct ``welcome.server`` values (workers) to see before the
    target is ready; more than one also proves a publish crosses between them.
    """

    name: str
    argv: Callable[[int], list[str]]
    env: dict[str, str] = field(default_factory=dict)
    ready_timeout: float = 20.0
    pinned: bool = True
    nodes: int = 1
    stop_timeout: float = 5.0


def raw_target() -> TargetSpec:
    """The raw ``websockets`` baseline (``bench/raw_server.py``)."""
    return TargetSpec(
        "raw", lambda port: [sys.executable, "-m", "bench.raw_server", "--port", str(port)]
    )


def _rtcs_command(port: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rtcs",
        "--host",
        HOST,
        "--port",
        str(port),
        *extra,
        "--log-level",
        "warning",
    ]


def rtcs_target() -> TargetSpec:
    """rtcs itself: one worker, in-memory backend, limits lifted for the benchmark."""
    return TargetSpec(
        "rtcs",
        lambda port: _rtcs_command(port),
        env=dict(RTCS_BENCH_ENV),
        ready_timeout=30.0,
    )


def rtcs_w2_target(redis_url: str) -> TargetSpec:
    """rtcs with ``--workers 2`` sharing the port, Redis backend at ``redis_url``."""
    env = dict(RTCS_BENCH_ENV)
    env.update(
        {
            "RTCS_BACKEND_KIND": "redis",
            "RTCS_BACKEND_REDIS_URL": redis_url,
            "RTCS_SERVER_DRAIN_TIMEOUT": "2",
        }
    )
    return TargetSpec(
        "rtcs-w2",
        lambda port: _rtcs_command(port, "--workers", "2"),
        env=env,
        ready_timeout=45.0,
        pinned=False,
        nodes=2,
        stop_timeout=15.0,
    )


def node_target() -> TargetSpec:
    """The Node.js ``ws`` peer (``bench/node/server.js``)."""
    return TargetSpec("node", lambda port: ["node", str(NODE_DIR / "server.js"), str(port)])


def prepare_node(timeout: float = 180.0) -> str | None:
    """Make the Node peer runnable; return ``None`` or the reason it is not.

    Installs ``ws`` with ``npm install --prefix bench/node`` when
    ``node_modules`` is missing.
    """
    if shutil.which("node") is None:
        return "node is not installed"
    if (NODE_DIR / "node_modules" / "ws").is_dir():
        return None
    if shutil.which("npm") is None:
        return "npm is not installed (needed once to install ws)"
    try:
        proc = subprocess.run(
            ["npm", "install", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"npm install timed out after {timeout:.0f} s"
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return "npm install failed: " + " | ".join(tail)
    return None


def read_status_kb(pid: int, key: str = "VmRSS") -> int:
    """A ``kB`` field of ``/proc/PID/status`` (VmRSS by default).

    Raises:
        ServerError: the process is gone.
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except FileNotFoundError as exc:
        raise ServerError(f"process {pid} is gone") from exc
    raise ServerError(f"no {key} in /proc/{pid}/status")


def read_cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError as exc:
        raise ServerError(f"process {pid} is gone") from exc
    # fields[0] is the state (field 3); utime/stime are fields 14/15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """PIDs of every live descendant of ``pid`` (children, grandchildren, ...)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _child_setup(cpu: int | None) -> Callable[[], None]:
    def setup() -> None:
        # Die with the runner: SIGTERM when the parent goes away for any reason.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    return setup


async def _probe(port: int, timeout: float) -> str:
    """Connect, expect ``welcome``, publish once, expect ``ack``; the welcome's ``server``."""
    frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def on_text(_: BenchConnection, payload: bytes) -> None:
        frames.put_nowait(json.loads(payload))

    conn = await connect(
        HOST, port, f"/ws?token={mint_token('bench-probe')}", on_text, timeout=timeout
    )
    try:
        async with asyncio.timeout(timeout):
            first = await frames.get()
            if first.get("type") != "welcome":
                raise ServerError(f"first frame was not welcome: {first}")
            conn.send(
                json.dumps(
                    {
                        "type": "publish",
                        "id": 1,
                        "topic": "bench.probe",
                        "data": {"t": time.time_ns()},
                    }
                ).encode()
            )
            while True:
                reply = await frames.get()
                if reply.get("id") == 1:
                    break
            if reply.get("type") != "ack":
                raise ServerError(f"publish was not acknowledged: {reply}")
            return str(first.get("server", ""))
    finally:
        conn.abort()


async def _probe_cross(port: int, nodes: int, timeout: float) -> None:
    """Open connections until ``nodes`` workers answered; a publish on one reaches another.

    Raises:
        ServerError: fewer workers answered, or nothing crossed, within ``timeout``.
    """
    by_server: dict[str, tuple[BenchConnection, asyncio.Queue[dict[str, Any]]]] = {}
    spare: list[BenchConnection] = []
    try:
        async with asyncio.timeout(timeout):
            attempts = 0
            while len(by_server) < nodes:
                attempts += 1
                if attempts > 50 * nodes:
                    raise ServerError(f"only {sorted(by_server)} answered in {attempts} connects")
                frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

                def on_text(
                    _: BenchConnection, payload: bytes, q: asyncio.Queue[dict[str, Any]] = frames
                ) -> None:
                    q.put_nowait(json.loads(payload))

                conn = await connect(
                    HOST, port, f"/ws?token={mint_token(f'bench-probe-{attempts}')}", on_text
                )
                first = await frames.get()
                server = str(first.get("server", ""))
                if first.get("type") != "welcome" or server in by_server:
                    spare.append(conn)
                else:
                    by_server[server] = (conn, frames)
            (sub, sub_frames), (pub, _) = list(by_server.values())[:2]
            sub.send(b'{"type":"subscribe","id":1,"topic":"bench.probe.cross"}')
            while (await sub_frames.get()).get("id") != 1:
                pass
            n = 1
            while True:
                # Pub/sub is at-most-once: publish again until one arrives.
                n += 1
                pub.send(b'{"type":"publish","id":%d,"topic":"bench.probe.cross","data":{}}' % n)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        while (await sub_frames.get()).get("type") != "message":
                            pass
                        return
    except TimeoutError as exc:
        raise ServerError(f"no publish crossed between {nodes} workers in {timeout} s") from exc
    finally:
        for conn, _ in by_server.values():
            conn.abort()
        for conn in spare:
            conn.abort()


class ServerProcess:
    """One running server target; a context manager that always stops it.

    Raises (on enter):
        ServerError: the process exited or never answered the probe in time.
    """

    def __init__(
        self,
        spec: TargetSpec,
        cpu: int | None,
        log_dir: Path,
        redis: RedisProcess | None = None,
    ) -> None:
        self.spec = spec
        self.cpu = cpu if spec.pinned else None
        self.log_dir = log_dir
        self.redis = redis
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None
        self.log_path = log_dir / f"{spec.name}.log"
        #: Every worker PID seen (for ``rtcs-w2``), each stopped by :meth:`stop`.
        self.worker_pids: list[int] = []
        self.servers: set[str] = set()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        """Start the process and wait until it serves the benchmark subset."""
        self.port = free_port()
        env = dict(os.environ)  # pass PATH etc. through; the target adds its own keys
        env.update(self.spec.env)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.spec.argv(self.port),
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_child_setup(self.cpu),
            )
        deadline = time.monotonic() + self.spec.ready_timeout
        last_error = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"exited with status {self.proc.returncode}: {self.log_tail()}")
            try:
                self.servers.add(asyncio.run(_probe(self.port, 5.0)))
                if self.spec.nodes > 1:
                    left = max(1.0, deadline - time.monotonic())
                    asyncio.run(_probe_cross(self.port, self.spec.nodes, min(10.0, left)))
                self.worker_pids = descendants(self.pid)
                return
            except (OSError, TimeoutError, ConnectionError, ServerError, ValueError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            if self.proc.poll() is None:
                time.sleep(0.1)  # polling a starting process; nothing to wait on
        raise ServerError(
            f"not ready after {self.spec.ready_timeout:.0f} s ({last_error}); {self.log_tail()}"
        )

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except FileNotFoundError:
            return ""
        return " | ".join(text[-lines:])

    def tree(self) -> list[int]:
        """The server's PID and its workers' (every process it runs)."""
        return [self.pid, *self.worker_pids]

    def rss_kb(self) -> int:
        """Resident set size now, in KiB, summed over the process tree."""
        return sum(read_status_kb(pid) for pid in self.tree())

    def cpu_seconds(self) -> float:
        """CPU seconds used by the server so far, summed over the process tree."""
        return sum(read_cpu_seconds(pid) for pid in self.tree())

    def redis_cpu_seconds(self) -> float | None:
        """CPU seconds used by the shared redis-server so far; None without one."""
        return None if self.redis is None else self.redis.cpu_seconds()

    def stop(self, timeout: float | None = None) -> int:
        """SIGTERM, wait ``timeout``, then SIGKILL; return the exit status.

        A worker still alive once its parent is gone is stopped by its PID too.
        """
        timeout = self.spec.stop_timeout if timeout is None else timeout
        proc = self.proc
        if proc is None:
            return 0
        if proc.poll() is None:
            self.worker_pids = sorted({*self.worker_pids, *descendants(proc.pid)})
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        deadline = time.monotonic() + 5.0
        for pid in self.worker_pids:
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)  # the worker drains after its parent; polling its exit
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.exit_code = proc.returncode
        return proc.returncode

    def __enter__(self) -> ServerProcess:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


TARGET_NAMES = ("rtcs", "rtcs-w2", "raw", "node")


def targets_by_name(names: Sequence[str], redis_url: str = "") -> list[TargetSpec]:
    """Specs for ``names`` (any of :data:`TARGET_NAMES`), in the order given.

    ``redis_url`` is the shared Redis that ``rtcs-w2`` uses.

    Raises:
        ValueError: an unknown target name, or ``rtcs-w2`` without ``redis_url``.
    """
    out = []
    for name in names:
        if name == "rtcs":
            out.append(rtcs_target())
        elif name == "rtcs-w2":
            if not redis_url:
                raise ValueError("rtcs-w2 needs a redis_url")
            out.append(rtcs_w2_target(redis_url))
        elif name == "raw":
            out.append(raw_target())
        elif name == "node":
            out.append(node_target())
        else:
            raise ValueError(f"unknown target {name!r}; choose from {', '.join(TARGET_NAMES)}")
    return out


class RedisProcess:
    """A redis-server on a free 127.0.0.1 port, persistence off; always stopped by PID.

    Obligations: use as a context manager (or call :meth:`stop`).

    Raises (on :meth:`start`):
        ServerError: ``redis-server`` is not on PATH, or it did not answer PING.
    """

    def __init__(self, log_dir: Path, start_timeout: float = 10.0) -> None:
        self.log_dir = log_dir
        self.start_timeout = start_timeout
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> RedisProcess:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerError(
                "rtcs-w2 needs redis-server on PATH (Debian: apt-get install redis-server)"
            )
        self.port = free_port()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                HOST,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.log_dir),
                "--logfile",
                str(self.log_dir / "redis.log"),
                "--daemonize",
                "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_child_setup(None),
        )
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise ServerError(
                    f"redis-server exited with status {self.proc.returncode}; "
                    f"see {self.log_dir / 'redis.log'}"
                )
            with contextlib.suppress(OSError):
                if self.command(b"PING") == b"+PONG":
                    return self
            if time.monotonic() > deadline:
                raise ServerError(f"redis-server did not answer PING in {self.start_timeout} s")
            time.sleep(0.02)  # polling a starting process; nothing to wait on

    def command(self, *args: bytes) -> bytes:
        """Send one command; return the first line of the reply (RESP)."""
        request = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
        with socket.create_connection((HOST, self.port), timeout=2.0) as sock:
            sock.sendall(request)
            data = b""
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("redis closed the connection")
                data += chunk
        return data.split(b"\r\n", 1)[0]

    def flush(self) -> None:
        """Empty every database (between two server starts)."""
        self.command(b"FLUSHALL")

    def cpu_seconds(self) -> float:
        return read_cpu_seconds(self.pid)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; idempotent."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        self.exit_code = proc.returncode

    def __enter__(self) -> RedisProcess:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
