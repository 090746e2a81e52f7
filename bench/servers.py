"""The three server targets, started as pinned subprocesses and always stopped.

A target is a command line plus environment. :class:`ServerProcess` starts it on
a free 127.0.0.1 port, pinned to one CPU, with ``PR_SET_PDEATHSIG`` so it dies
with the runner even if the runner is killed; waits until a benchmark client
gets a ``welcome`` and a publish is acknowledged; reads its RSS and CPU from
``/proc``; and stops it by PID (SIGTERM, then SIGKILL after a timeout).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
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
DEV_SECRET = "rtcs-insecure-development-secret"
HOST = "127.0.0.1"
PR_SET_PDEATHSIG = 1

# rtcs protects itself per address and per user; a benchmark from one machine
# must lift those limits or it measures the limiter.
RTCS_BENCH_ENV = {
    "RTCS_LIMITS_MAX_CONNECTIONS_PER_ADDRESS": "100000",
    "RTCS_LIMITS_MAX_CONNECTIONS_PER_USER": "100000",
    "RTCS_LIMITS_MAX_CONNECTIONS_PER_NODE": "100000",
    "RTCS_LIMITS_RATE": "100000",
    "RTCS_LIMITS_BURST": "100000",
}


class ServerError(RuntimeError):
    """A target could not be started or did not become ready."""


def mint_token(sub: str, ttl: float = 3600.0) -> str:
    """An HS256 token for ``sub`` signed with rtcs' loopback development secret."""
    return jwt.encode(
        {"sub": sub, "exp": int(time.time() + ttl), "roles": ["user"]},
        DEV_SECRET,
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
    """How to start one server target."""

    name: str
    argv: Callable[[int], list[str]]
    env: dict[str, str] = field(default_factory=dict)
    ready_timeout: float = 20.0


def raw_target() -> TargetSpec:
    """The raw ``websockets`` baseline (``bench/raw_server.py``)."""
    return TargetSpec(
        "raw", lambda port: [sys.executable, "-m", "bench.raw_server", "--port", str(port)]
    )


def rtcs_target() -> TargetSpec:
    """rtcs itself: one worker, in-memory backend, limits lifted for the benchmark."""
    return TargetSpec(
        "rtcs",
        lambda port: [
            sys.executable,
            "-m",
            "rtcs",
            "--host",
            HOST,
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=dict(RTCS_BENCH_ENV),
        ready_timeout=30.0,
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


async def _probe(port: int, timeout: float) -> None:
    """Connect, expect ``welcome``, publish once, expect ``ack``."""
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
    finally:
        conn.abort()


class ServerProcess:
    """One running server target; a context manager that always stops it.

    Raises (on enter):
        ServerError: the process exited or never answered the probe in time.
    """

    def __init__(self, spec: TargetSpec, cpu: int | None, log_dir: Path) -> None:
        self.spec = spec
        self.cpu = cpu
        self.log_dir = log_dir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None
        self.log_path = log_dir / f"{spec.name}.log"

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
                asyncio.run(_probe(self.port, 5.0))
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

    def rss_kb(self) -> int:
        """Resident set size now, in KiB."""
        return read_status_kb(self.pid)

    def cpu_seconds(self) -> float:
        """CPU seconds used by the server so far."""
        return read_cpu_seconds(self.pid)

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, wait ``timeout``, then SIGKILL; return the exit status."""
        proc = self.proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
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


def targets_by_name(names: Sequence[str]) -> list[TargetSpec]:
    """Specs for ``names`` (any of rtcs, raw, node), in the order given.

    Raises:
        ValueError: an unknown target name.
    """
    known = {"rtcs": rtcs_target, "raw": raw_target, "node": node_target}
    out = []
    for name in names:
        if name not in known:
            raise ValueError(f"unknown target {name!r}; choose from {', '.join(known)}")
        out.append(known[name]())
    return out
