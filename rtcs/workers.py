"""Worker processes: a small parent runs N single-node workers on one port.

``python -m rtcs --workers N`` (N > 1) runs :func:`run_parent`. The parent
does no rtcs work itself:

- It reserves the port: a socket bound with ``SO_REUSEPORT`` and never
  listening, held for the parent's lifetime. Port 0 becomes a concrete port
  every worker shares, and no other program takes the port while a worker
  restarts. A bound, non-listening socket receives no connections.
- It starts N workers, ``python -m rtcs <same arguments> --port P
  --worker-index I --instance-counter NAME --parent-fd FD`` (the last three
  flags are internal). Each worker runs the ordinary single-node
  ``rtcs.app.serve``, listening on P with ``SO_REUSEPORT``; the kernel
  spreads new connections over the workers.
- It restarts a worker that dies, after :meth:`Backoff.next` seconds
  (0.1 s doubling to 5 s, back to 0.1 s once a worker stayed up 10 s): a
  worker that keeps dying is retried for ever, but never in a hot loop. The
  dead worker's slot of the :class:`InstanceCounter` is zeroed first.
- On SIGHUP it sends SIGHUP to every worker (each reloads its rules file).
- On SIGTERM or SIGINT it sends the same signal to every worker (each drains:
  closes its clients with 1001 within ``server.drain_grace`` +
  ``server.drain_timeout``), waits for all of them, and exits 0. A worker
  still running ``drain_grace`` + ``drain_timeout`` + 6 s later is killed,
  and the parent exits 1.

No orphans: every worker gets the read end of a pipe whose only write end the
parent holds (``--parent-fd``). When the parent dies, even by SIGKILL, the
kernel closes that end; the worker sees end-of-file (:func:`watch_parent`) and
drains as if it got SIGTERM; if that drain hangs, it exits by itself
``drain_grace`` + ``drain_timeout`` + 5 s later. The shared memory the parent created is removed
by Python's resource tracker then.

The instance counter: :class:`InstanceCounter` is one integer slot per worker
in shared memory; a worker writes its own count of authenticated
connections with ``set`` (``rtcs.actors.admission``) and reads the instance's
with ``total``, so the per-node limit counts the whole instance.
:class:`LocalCounter` is the single-process implementation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory
from typing import Any, Protocol

from rtcs import logs

__all__ = [
    "Backoff",
    "ConnectionCounter",
    "InstanceCounter",
    "LocalCounter",
    "WorkerParent",
    "reserve_port",
    "run_parent",
    "watch_parent",
]

_SLOT = struct.Struct("=q")  # one signed 64-bit count per worker, native byte order
#: Seconds a stopping parent waits beyond ``server.drain_grace`` +
#: ``server.drain_timeout`` before SIGKILL:
#: a worker's own bound on its stop (rtcs.app.STOP_GRACE) plus one second.
STOP_GRACE = 6.0


# -- the instance-wide connection count ---------------------------------------------


class ConnectionCounter(Protocol):
    """Open connections of the whole instance: this process's count and the sum."""

    def set(self, count: int) -> None:
        """Record this process's number of open connections."""

    def total(self) -> int:
        """The number of open connections of every process of the instance."""


class LocalCounter:
    """The :class:`ConnectionCounter` of a single-process instance."""

    def __init__(self) -> None:
        self._count = 0

    def set(self, count: int) -> None:
        self._count = count

    def total(self) -> int:
        return self._count


class InstanceCounter:
    """N integer slots in shared memory, one per worker.

    The parent builds it with :meth:`create` (and ``unlink``s it when it
    stops); worker I attaches with :meth:`attach` and writes slot I only. A
    slot is one aligned 8-byte word, written and read whole: ``total`` may be
    a moment stale, never torn.
    """

    def __init__(self, shm: SharedMemory, slots: int, index: int | None, owner: bool) -> None:
        if shm.size < slots * _SLOT.size:
            raise ValueError(f"shared memory {shm.name!r} is too small for {slots} slots")
        self._shm = shm
        self.slots = slots
        self.index = index
        self._owner = owner

    @property
    def _buf(self) -> memoryview:
        buf = self._shm.buf
        if buf is None:
            raise RuntimeError("the instance counter is closed")
        return buf

    @property
    def name(self) -> str:
        """The shared memory's name, for ``--instance-counter``."""
        return self._shm.name

    @classmethod
    def create(cls, slots: int) -> InstanceCounter:
        """New zeroed shared memory for ``slots`` workers (in the parent)."""
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        shm = SharedMemory(create=True, size=slots * _SLOT.size)
        counter = cls(shm, slots, None, owner=True)
        counter._buf[: slots * _SLOT.size] = bytes(slots * _SLOT.size)
        return counter

    @classmethod
    def attach(cls, name: str, slots: int, index: int) -> InstanceCounter:
        """Attach to the parent's memory as worker ``index`` of ``slots``.

        Raises:
            FileNotFoundError: no shared memory of that name.
            ValueError: ``index`` is out of range, or the memory is too small.
        """
        if not 0 <= index < slots:
            raise ValueError(f"worker index {index} is not in 0..{slots - 1}")
        return cls(_attach(name), slots, index, owner=False)

    def set(self, count: int) -> None:
        """Write this worker's slot.

        Raises:
            RuntimeError: called on the parent's (unattached) counter.
        """
        if self.index is None:
            raise RuntimeError("only a worker's counter has a slot of its own")
        _SLOT.pack_into(self._buf, self.index * _SLOT.size, count)

    def get(self, index: int) -> int:
        """One worker's slot."""
        return int(_SLOT.unpack_from(self._buf, index * _SLOT.size)[0])

    def total(self) -> int:
        """The sum of every worker's slot."""
        return sum(self.get(i) for i in range(self.slots))

    def clear(self, index: int) -> None:
        """Zero a (dead) worker's slot, before it is restarted."""
        _SLOT.pack_into(self._buf, index * _SLOT.size, 0)

    def close(self) -> None:
        """Detach; the parent also removes the memory (``unlink``)."""
        self._shm.close()
        if self._owner:
            with contextlib.suppress(FileNotFoundError):
                self._shm.unlink()


def _attach(name: str) -> SharedMemory:
    # Before Python 3.13 attaching registers the memory with this process's
    # resource tracker, which unlinks it when this worker exits, under the
    # parent's feet (python/cpython#82300). Only the creator (the parent)
    # tracks it; 3.13 says so with track=False.
    if sys.version_info >= (3, 13):
        return SharedMemory(name, track=False)
    register = resource_tracker.register
    resource_tracker.register = lambda *args, **kwargs: None
    try:
        return SharedMemory(name)
    finally:
        resource_tracker.register = register


# -- restart policy -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before restarting a worker that died.

    ``next(previous, uptime)`` is pure: the first restart, and a restart after
    a worker stayed up ``reset_after`` seconds or more, wait ``initial``; each
    further quick death doubles the wait, up to ``maximum``.
    """

    initial: float = 0.1
    maximum: float = 5.0
    reset_after: float = 10.0

    def next(self, previous: float, uptime: float) -> float:
        """The delay before the next start.

        Args:
            previous: the delay before the worker's last start (0: there was none).
            uptime: seconds the worker ran before it died.
        """
        if previous <= 0 or uptime >= self.reset_after:
            return self.initial
        return min(self.maximum, previous * 2)


# -- the parent -------------------------------------------------------------------------

#: Builds worker ``index``'s command line, given the parent pipe's read end.
WorkerCommand = Callable[[int, int], Sequence[str]]


class WorkerParent:
    """Keeps ``workers`` processes running until :meth:`stop` (see the module docstring).

    Obligations: :meth:`run` once, on an event loop; :meth:`stop` on that loop
    (a signal handler installed with ``loop.add_signal_handler`` is fine).
    """

    def __init__(
        self,
        workers: int,
        command: WorkerCommand,
        *,
        backoff: Backoff = Backoff(),
        counter: InstanceCounter | None = None,
        stop_timeout: float = 10.0 + STOP_GRACE,
        log: Any = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.command = command
        self.backoff = backoff
        self.counter = counter
        self.stop_timeout = stop_timeout
        self.log = log if log is not None else logs.get_logger("rtcs.workers")
        #: The live process of each worker (None while it is down).
        self.procs: list[asyncio.subprocess.Process | None] = [None] * workers
        #: How many times each worker was started.
        self.starts = [0] * workers
        self._stopping = asyncio.Event()
        self._signal: int = signal.SIGTERM

    async def run(self) -> int:
        """Run the workers until :meth:`stop`; returns the parent's exit status.

        0 when every worker exited within ``stop_timeout`` of the stop; 1 when
        some had to be killed.
        """
        read_fd, write_fd = os.pipe()  # both ends are non-inheritable
        tasks = [asyncio.create_task(self._keep(i, read_fd)) for i in range(self.workers)]
        try:
            await self._stopping.wait()
            self.log.info("stopping workers", signal=signal.Signals(self._signal).name)
            _, pending = await asyncio.wait(tasks, timeout=self.stop_timeout)
            status = 0
            if pending:
                status = 1
                for i, proc in enumerate(self.procs):
                    if proc is not None and proc.returncode is None:
                        self.log.error("worker did not stop; killing it", worker=i, pid=proc.pid)
                        with contextlib.suppress(ProcessLookupError):
                            proc.kill()
                await asyncio.wait(pending)
            self.log.info("workers stopped", status=status)
            return status
        finally:
            for task in tasks:
                task.cancel()
            for proc in self.procs:
                if proc is not None and proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            os.close(write_fd)  # the workers' parent pipe: end-of-file
            os.close(read_fd)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop restarting and send ``sig`` to every live worker (idempotent)."""
        if not self._stopping.is_set():
            self._signal = sig
            self._stopping.set()
        for proc in self.procs:
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    def forward(self, sig: int) -> None:
        """Send ``sig`` to every live worker (SIGHUP: each reloads its rules file)."""
        for proc in self.procs:
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    async def _keep(self, index: int, read_fd: int) -> None:
        loop = asyncio.get_running_loop()
        delay = 0.0
        while not self._stopping.is_set():
            started = loop.time()
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self.command(index, read_fd),
                    stdin=asyncio.subprocess.DEVNULL,
                    pass_fds=(read_fd,),
                )
            except OSError as exc:
                self.log.error("cannot start worker", worker=index, error=str(exc))
                status: int | None = None
            else:
                self.procs[index] = proc
                self.starts[index] += 1
                self.log.info("worker started", worker=index, pid=proc.pid)
                if self._stopping.is_set():  # stop() ran while it was being spawned
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(self._signal)
                status = await proc.wait()
                self.procs[index] = None
            if self.counter is not None:
                self.counter.clear(index)
            if self._stopping.is_set():
                self.log.info("worker stopped", worker=index, status=status)
                return
            delay = self.backoff.next(delay, loop.time() - started)
            self.log.warning("worker exited", worker=index, status=status, restart_in=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (never listen) a ``SO_REUSEPORT`` socket on ``host:port``; port 0 picks one.

    Workers bind the same port with ``SO_REUSEPORT``; while this socket is
    open no other program can take it. Close it when the workers stopped.

    Raises:
        OSError: the address cannot be bound (e.g. the port is in use).
    """
    family, type_, proto, _, address = socket.getaddrinfo(
        host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def run_parent(parent: WorkerParent) -> int:
    """Run ``parent`` in a new event loop, SIGTERM/SIGINT/SIGHUP forwarded; its exit status."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, parent.stop, sig)
        loop.add_signal_handler(signal.SIGHUP, parent.forward, signal.SIGHUP)
        return await parent.run()

    return asyncio.run(main())


# -- in a worker --------------------------------------------------------------------------


def watch_parent(fd: int, exit_after: float | None = None) -> None:
    """On end-of-file on ``fd`` (the parent died), send this process SIGTERM.

    The parent never writes to the pipe, so readable means closed. SIGTERM
    makes the worker drain as on an ordinary stop. Nobody is left to SIGKILL
    an orphan whose drain hangs, so with ``exit_after`` the process exits
    (status 1) by itself that many seconds after the end-of-file. Call it on
    the running event loop.
    """
    loop = asyncio.get_running_loop()
    os.set_inheritable(fd, False)
    os.set_blocking(fd, False)

    def readable() -> None:
        try:
            data = os.read(fd, 1)
        except BlockingIOError:
            return
        if not data:
            loop.remove_reader(fd)
            if exit_after is not None:
                loop.call_later(exit_after, _orphan_exit, exit_after)
            os.kill(os.getpid(), signal.SIGTERM)

    loop.add_reader(fd, readable)


def _orphan_exit(waited: float) -> None:
    logs.get_logger("rtcs.workers").error(
        "parent gone and the drain did not finish; exiting", waited=waited
    )
    os._exit(1)
