"""Child processes the tests start: tied to the test process, stopped by PID."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int) -> Callable[[], None]:
    """A ``preexec_fn``: the kernel sends ``signum`` to the child when the test
    process dies, even by SIGKILL (Linux ``prctl``; a no-op elsewhere)."""

    def arm() -> None:  # runs in the child between fork and exec
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signum)

    return arm


def stop(proc: subprocess.Popen[bytes] | None, timeout: float, *, resume: bool = False) -> None:
    """SIGTERM, SIGKILL after ``timeout``, reap; nothing for an exited process.

    ``resume`` sends SIGCONT first (a stopped process cannot handle SIGTERM).
    """
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        if resume:
            proc.send_signal(signal.SIGCONT)
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)
