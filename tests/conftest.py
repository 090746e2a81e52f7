"""Keep the development secret out of the real user state directory.

With no secret configured on loopback, rtcs reads (on first use creates) its
development secret under ``$XDG_STATE_HOME/rtcs`` or ``~/.local/state/rtcs``
(:mod:`rtcs.config.devsecret`). The tests use a private temporary home instead:

- ``XDG_STATE_HOME`` is set in this process's environment when this module is
  imported (before any other conftest copies the environment), so every
  ``python -m rtcs`` child the tests or the bench start finds it there;
- in this process, :func:`rtcs.config.load` without ``HOME`` in its
  ``environ`` asks the password database for the home directory:
  ``pytest_configure`` points that lookup at the same temporary home.

Both lead to one file, so tokens minted in-process or by ``python -m rtcs
token`` are accepted by every server the tests start.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from rtcs.config import devsecret

TEST_HOME = Path(tempfile.mkdtemp(prefix="rtcs-tests-home-"))
TEST_STATE = TEST_HOME / ".local" / "state"
os.environ["XDG_STATE_HOME"] = str(TEST_STATE)


_patch = pytest.MonkeyPatch()


def pytest_configure(config: pytest.Config) -> None:
    # Before collection: some test modules load settings when imported.
    _patch.setattr(devsecret, "_home", lambda: str(TEST_HOME))


def pytest_unconfigure(config: pytest.Config) -> None:
    _patch.undo()
    shutil.rmtree(TEST_HOME, ignore_errors=True)
