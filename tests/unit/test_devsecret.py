"""Tests for rtcs.config.devsecret: the per-installation development secret file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from rtcs.config import devsecret
from rtcs.errors import ConfigError

KEY = "auth.dev_secret_file"


def test_created_on_first_use_user_only(tmp_path: Path) -> None:
    path = tmp_path / "state" / "rtcs" / "dev-secret"
    secret = devsecret.read_or_create(str(path), KEY)
    assert len(secret) >= 64  # token_urlsafe(48): 48 random bytes
    assert path.read_text() == secret + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert sorted(os.listdir(path.parent)) == ["dev-secret"]  # no temporary left


def test_reused_afterwards(tmp_path: Path) -> None:
    path = str(tmp_path / "dev-secret")
    first = devsecret.read_or_create(path, KEY)
    assert devsecret.read_or_create(path, KEY) == first
    assert devsecret.read_or_create(str(tmp_path / "other"), KEY) != first


def test_a_creation_that_loses_the_race_keeps_the_winner(tmp_path: Path) -> None:
    path = str(tmp_path / "dev-secret")
    devsecret._create(path, str(tmp_path))
    winner = Path(path).read_text()
    devsecret._create(path, str(tmp_path))  # as if it had checked before the winner linked
    assert Path(path).read_text() == winner
    assert os.listdir(tmp_path) == ["dev-secret"]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o620])
def test_group_or_world_access_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "dev-secret"
    devsecret.read_or_create(str(path), KEY)
    path.chmod(mode)
    with pytest.raises(ConfigError) as info:
        devsecret.read_or_create(str(path), KEY)
    assert (info.value.key, info.value.value) == (KEY, str(path))
    assert "chmod 600" in info.value.reason


def test_a_file_of_another_user_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "dev-secret"
    devsecret.read_or_create(str(path), KEY)
    monkeypatch.setattr(os, "getuid", lambda: path.stat().st_uid + 1)
    with pytest.raises(ConfigError, match="not owned") as info:
        devsecret.read_or_create(str(path), KEY)
    assert info.value.key == KEY


def test_an_unreadable_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "dev-secret"
    devsecret.read_or_create(str(path), KEY)
    path.chmod(0)
    if os.geteuid() == 0:  # root reads any file: make opening it fail like for a user
        real_open = os.open

        def refuse(name: str, flags: int, mode: int = 0o777) -> int:
            if name == str(path):
                raise PermissionError(13, "Permission denied", name)
            return real_open(name, flags, mode)

        monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(ConfigError, match="cannot create or read") as info:
        devsecret.read_or_create(str(path), "RTCS_AUTH_DEV_SECRET_FILE")
    assert info.value.key == "RTCS_AUTH_DEV_SECRET_FILE"


def test_a_directory_or_an_empty_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="not a regular file"):
        devsecret.read_or_create(str(tmp_path / "dir"), KEY)
    empty = tmp_path / "empty"
    empty.touch(mode=0o600)
    with pytest.raises(ConfigError, match="empty"):
        devsecret.read_or_create(str(empty), KEY)


# Each child imports everything, then waits for one line on stdin: the test
# releases them all at once.
CHILD = """
import sys
from rtcs.config import devsecret
sys.stdin.readline()
print(devsecret.read_or_create(sys.argv[1], "auth.dev_secret_file"))
"""


def test_processes_starting_together_share_one_secret(tmp_path: Path) -> None:
    path = str(tmp_path / "state" / "rtcs" / "dev-secret")
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    try:
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        outputs = [child.communicate(timeout=30)[0].strip() for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert all(child.returncode == 0 for child in children)
    assert set(outputs) == {Path(path).read_text().strip()}
    assert os.listdir(Path(path).parent) == ["dev-secret"]
