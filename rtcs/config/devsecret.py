"""The development secret: random per installation, in a file only its user can read.

When no HMAC secret is configured and rtcs listens on loopback, the server and
``python -m rtcs token`` both use the secret kept in ``auth.dev_secret_file``
(default: ``$XDG_STATE_HOME/rtcs/dev-secret``, else
``~/.local/state/rtcs/dev-secret``). The first of them to need it creates it;
every later one reads the same value back. No well-known secret exists.

Creation is race-safe: the secret is written to a private temporary file
(``O_CREAT | O_EXCL``, mode 0600) in the same 0700 directory and then
hard-linked to its final name, which fails when another process got there
first; everyone then reads the one file that won. A reader therefore never
sees a half-written secret.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import stat
from collections.abc import Mapping

from rtcs.errors import ConfigError

__all__ = ["FILE_NAME", "default_path", "read_or_create"]

FILE_NAME = "dev-secret"

# 48 random bytes, 64 URL-safe characters: long enough for HS512 too.
_RANDOM_BYTES = 48


def default_path(environ: Mapping[str, str]) -> str:
    """Where the development secret lives when ``auth.dev_secret_file`` is empty.

    ``$XDG_STATE_HOME/rtcs/dev-secret`` when ``XDG_STATE_HOME`` is an absolute
    path (the XDG base directory spec ignores relative ones), else
    ``$HOME/.local/state/rtcs/dev-secret``; without ``HOME`` in ``environ``,
    the home directory comes from the password database.
    """
    state = environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state):
        home = environ.get("HOME") or _home()
        state = os.path.join(home, ".local", "state")
    return os.path.join(state, "rtcs", FILE_NAME)


def _home() -> str:
    """The current user's home directory from the password database (not ``$HOME``)."""
    return pwd.getpwuid(os.getuid()).pw_dir


def read_or_create(path: str, key: str) -> str:
    """Return the secret stored at ``path``, creating it first if it does not exist.

    A new secret is ``secrets.token_urlsafe(48)``, in a file of mode 0600 in a
    directory created with mode 0700. ``key`` is the name errors show (the
    dotted key ``auth.dev_secret_file`` or the environment variable it came from).

    Raises:
        ConfigError: naming ``key`` and ``path``: the file or its directory
            cannot be created or read, the file is not a regular file owned
            by this user, it is readable or writable by group or others, or
            it is empty.
    """
    try:
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if not os.path.exists(path):
            _create(path, directory)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(key, path, f"cannot create or read: {exc.strerror or exc}") from None
    try:
        _check_trusted(os.fstat(fd), path, key)
        data = os.read(fd, 4096)
    except OSError as exc:
        raise ConfigError(key, path, f"cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    try:
        secret = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ConfigError(key, path, "not ASCII (delete it and a new secret is created)") from None
    if not secret:
        raise ConfigError(key, path, "is empty (delete it and a new secret is created)")
    return secret


def _check_trusted(info: os.stat_result, path: str, key: str) -> None:
    """Refuse a file that is not this user's private regular file."""
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(key, path, "not a regular file")
    if info.st_uid != os.getuid():
        raise ConfigError(key, path, "not owned by the user running rtcs")
    if info.st_mode & 0o077:
        mode = stat.S_IMODE(info.st_mode)
        raise ConfigError(key, path, f"mode {mode:04o}: group or others have access (chmod 600)")


def _create(path: str, directory: str) -> None:
    """Publish a new secret at ``path`` unless another process already did."""
    temporary = os.path.join(directory, f".{FILE_NAME}.{secrets.token_hex(8)}")
    fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_urlsafe(_RANDOM_BYTES).encode("ascii") + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        # Atomic, and fails if the name exists: then another process won the
        # race, and its secret is the one.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
