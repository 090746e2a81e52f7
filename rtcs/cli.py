"""``python -m rtcs``: run a node, or mint a token to try it out.

::

    python -m rtcs [--host H] [--port P] [--config FILE] [--workers N] [--log-level L]
    python -m rtcs token SUB [--roles a,b] [--ttl SECONDS] [--session S] [--config FILE]
    python -m rtcs check-config [--config FILE]

Settings come from the built-in defaults, then the TOML file, then ``RTCS_*``
environment variables, then these flags. A bad setting stops start-up with a
message naming the key and the value (exit status 2).

With ``--workers N`` (N > 1) this process becomes the parent of N workers
(rtcs.workers); each worker re-runs ``python -m rtcs`` with the same arguments
plus internal flags (``--worker-index``, ``--instance-counter``,
``--parent-fd``) that only the parent passes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
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
    # Internal: set by the parent of --workers N on each worker's command line.
    parser.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--instance-counter", metavar="NAME", help=argparse.SUPPRESS)
    parser.add_argument("--parent-fd", type=int, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command")
    token = sub.add_parser(
        "token",
        help="print a token signed with the configured key (without one, on loopback:"
        " the development secret the server uses too, from auth.dev_secret_file)",
    )
    token.add_argument("sub", help="the user id (the token's sub claim)")
    token.add_argument("--roles", default="", help="comma-separated roles, e.g. admin,user")
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds until it expires")
    token.add_argument("--session", default=None, help="optional session claim")
    check = sub.add_parser(
        "check-config",
        help="check the settings (file, RTCS_* variables, flags), the rules file and the"
        " plugins, then exit: 0 and a summary, or 2 and what is wrong",
    )
    # --config is accepted after the subcommand too (without replacing one given before).
    for command in (token, check):
        command.add_argument(
            "--config", metavar="PATH", default=argparse.SUPPRESS, help="TOML configuration file"
        )
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

        plugins = load_plugins(settings, None)  # import every plugin now: errors name the key
        if args.command == "check-config":
            return _check_config(settings, args, [spec.name for spec in plugins])
        if settings.server.workers > 1 and settings.backend.kind == "memory":
            raise ConfigError(
                "server.workers",
                settings.server.workers,
                "more than one worker needs the shared backend: set backend.kind ="
                ' "redis" (the memory backend lives inside one process)',
            )
        if args.worker_index is not None:
            settings = _worker_settings(settings, args.worker_index)
    except ConfigError as exc:
        print(f"rtcs: configuration error: {exc}", file=sys.stderr)
        return 2
    from rtcs import logs

    logs.configure(settings.log.level, settings.log.format)
    # SIGHUP reloads the rules once the node serves (rtcs.app.serve; a parent
    # forwards it to its workers); until then it must not end the process.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if args.worker_index is None and settings.server.workers > 1:
        return _parent(settings, list(sys.argv[1:] if argv is None else argv))
    try:
        return asyncio.run(_node(settings, args))
    except ConfigError as exc:  # found while building the node (e.g. TLS files)
        print(f"rtcs: configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the port is taken
        print(f"rtcs: cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def _worker_settings(settings: Any, index: int) -> Any:
    """Worker ``index``'s settings: its own node id when one is configured."""
    if not 0 <= index < settings.server.workers:
        raise ConfigError("--worker-index", index, f"must be in 0..{settings.server.workers - 1}")
    if settings.server.node_id:
        return settings.with_overrides({"server.node_id": f"{settings.server.node_id}-{index}"})
    return settings  # the default "<hostname>-<pid>" differs per worker already


async def _node(settings: Any, args: argparse.Namespace) -> int:
    """One node: the whole instance, or worker ``args.worker_index`` of it."""
    from rtcs.app import App, serve
    from rtcs.workers import (
        STOP_GRACE,
        ConnectionCounter,
        InstanceCounter,
        LocalCounter,
        watch_parent,
    )

    if args.parent_fd is not None:
        # First: a worker never outlives its parent, even when its drain hangs.
        server = settings.server
        watch_parent(
            args.parent_fd, exit_after=server.drain_grace + server.drain_timeout + STOP_GRACE
        )
    counter: ConnectionCounter = LocalCounter()
    if args.instance_counter is not None and args.worker_index is not None:
        counter = InstanceCounter.attach(
            args.instance_counter, settings.server.workers, args.worker_index
        )
    listeners: list[asyncio.Server] = []

    async def started(app: App) -> None:
        # Worker I's own metrics port (docs/operations.md, "Workers").
        metrics, server = settings.metrics, settings.server
        if args.worker_index is None or not metrics.enabled or not metrics.worker_port:
            return
        from rtcs.metrics_http import start_metrics_listener

        port = metrics.worker_port + args.worker_index
        listeners.append(
            await start_metrics_listener(server.host, port, app.metrics.render, metrics.path)
        )
        app.log.info("worker metrics listening", port=port, path=metrics.path)

    try:
        return await serve(settings, instance=counter, on_started=started)
    finally:
        for listener in listeners:
            listener.close()
        if isinstance(counter, InstanceCounter):
            counter.close()


def _parent(settings: Any, argv: list[str]) -> int:
    """Run ``settings.server.workers`` workers on one port until SIGTERM/SIGINT."""
    from rtcs.workers import STOP_GRACE, InstanceCounter, WorkerParent, reserve_port, run_parent

    server = settings.server
    try:
        reserved = reserve_port(server.host, server.port)
    except OSError as exc:
        print(f"rtcs: cannot start: {exc}", file=sys.stderr)
        return 1
    port = reserved.getsockname()[1]
    counter = InstanceCounter.create(server.workers)

    def command(index: int, parent_fd: int) -> list[str]:
        # argparse keeps the last --port: the reserved port replaces 0.
        return [
            *(sys.executable, "-m", "rtcs", *argv),
            *("--port", str(port), "--worker-index", str(index)),
            *("--instance-counter", counter.name, "--parent-fd", str(parent_fd)),
        ]

    parent = WorkerParent(
        server.workers,
        command,
        counter=counter,
        stop_timeout=server.drain_grace + server.drain_timeout + STOP_GRACE,
    )
    parent.log.info("starting workers", workers=server.workers, host=server.host, port=port)
    try:
        return run_parent(parent)
    finally:
        counter.close()
        reserved.close()


def _check_config(settings: Any, args: argparse.Namespace, plugins: list[str]) -> int:
    """Everything start-up checks before it listens, without listening.

    Raises:
        ConfigError: the rules file cannot be read or has a bad rule.
    """
    rules = 0
    if settings.rules.file:
        from rtcs.rulesfile import read_rules

        rules = len(read_rules(settings.rules.file)[0])
    print(
        f"rtcs: configuration OK (file: {args.config or 'none'}; "
        f"backend: {settings.backend.kind}; "
        f"rules: {rules}{' from ' + settings.rules.file if settings.rules.file else ''}; "
        f"plugins: {', '.join(plugins) or 'none'})"
    )
    return 0


def _token(settings: Any, args: argparse.Namespace) -> int:
    from rtcs.auth.tokens import mint

    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    if not args.ttl > 0:
        raise ConfigError("--ttl", args.ttl, "must be positive")
    limit = settings.auth.max_token_lifetime
    if args.ttl > limit:
        # The server would refuse the token: say so instead of minting it.
        raise ConfigError("--ttl", args.ttl, f"must not exceed auth.max_token_lifetime ({limit:g})")
    print(mint(settings.auth, args.sub, roles=roles, ttl=args.ttl, session=args.session))
    return 0
