"""``python -m rtcs``: run a node, or mint a token to try it out.

::

    python -m rtcs [--host H] [--port P] [--config FILE] [--workers N] [--log-level L]
    python -m rtcs token SUB [--roles a,b] [--ttl SECONDS] [--session S] [--config FILE]

Settings come from the built-in defaults, then the TOML file, then ``RTCS_*``
environment variables, then these flags. A bad setting stops start-up with a
message naming the key and the value (exit status 2).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any

from rtcs import __version__
from rtcs.errors import ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtcs", description="rtcs real-time communication service"
    )
    parser.add_argument("--version", action="version", version=f"rtcs {__version__}")
    parser.add_argument("--config", metavar="PATH", help="TOML configuration file")
    parser.add_argument("--host", help="address to listen on (server.host)")
    parser.add_argument("--port", type=int, help="port to listen on, 0 for any (server.port)")
    parser.add_argument("--workers", type=int, help="worker processes (server.workers)")
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), help="log level (log.level)"
    )
    sub = parser.add_subparsers(dest="command")
    token = sub.add_parser("token", help="print a token signed with the configured key")
    token.add_argument("sub", help="the user id (the token's sub claim)")
    token.add_argument("--roles", default="", help="comma-separated roles, e.g. admin,user")
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds until it expires")
    token.add_argument("--session", default=None, help="optional session claim")
    return parser


def _settings(args: argparse.Namespace) -> Any:
    from rtcs import config

    overrides: dict[str, Any] = {}
    for flag, key in (
        ("host", "server.host"),
        ("port", "server.port"),
        ("workers", "server.workers"),
        ("log_level", "log.level"),
    ):
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = value
    return config.load(args.config, os.environ, overrides)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rtcs`` and ``python -m rtcs``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
        if args.command == "token":
            return _token(settings, args)
        from rtcs.plugins import load_plugins

        load_plugins(settings, None)  # import every plugin now: errors name the key
        if settings.server.workers > 1 and settings.backend.kind == "memory":
            raise ConfigError(
                "server.workers",
                settings.server.workers,
                'more than one worker needs a shared backend (backend.kind = "redis"),'
                " which is not available yet; run one worker per instance",
            )
    except ConfigError as exc:
        print(f"rtcs: configuration error: {exc}", file=sys.stderr)
        return 2
    from rtcs import logs
    from rtcs.app import serve

    logs.configure(settings.log.level, settings.log.format)
    try:
        return asyncio.run(serve(settings))
    except ConfigError as exc:  # found while building the node (e.g. TLS files)
        print(f"rtcs: configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the port is taken
        print(f"rtcs: cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def _token(settings: Any, args: argparse.Namespace) -> int:
    from rtcs.auth.tokens import mint

    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    if args.ttl <= 0:
        raise ConfigError("--ttl", args.ttl, "must be positive")
    print(mint(settings.auth, args.sub, roles=roles, ttl=args.ttl, session=args.session))
    return 0
