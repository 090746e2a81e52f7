"""Structured logging: JSON lines (or a console view) through structlog.

``configure()`` is called once by the composition root. It sends structlog
loggers and stdlib loggers (``logging.getLogger("rtcs.runtime")``, websockets,
…) through one handler on the root logger, so every line has the same shape:

    {"event": "connection closed", "level": "info", "logger": "rtcs.gateway",
     "timestamp": "2024-05-01T12:00:00.000000Z", "connection_id": "c-…", ...}

Bind ``connection_id`` and ``user`` once per connection with ``get_logger(name,
connection_id=..., user=...)``. A line about one message (a rule that failed
on it, a route plugin that failed it, a backend call it needed) carries the
message's ``trace_id`` when tracing is on (``rtcs.tracing.trace_fields``), the
trace id of its spans. Tokens and message bodies are never logged:
callers leave them out, and ``redact`` replaces the values of the keys in
``REDACTED_KEYS`` as a second line of defence. Third-party loggers that print
request headers or frames at DEBUG (``QUIET_LOGGERS``: websockets, redis-py)
never write below INFO, whatever ``log.level`` says (docs/operations.md, "Logs").
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor

from rtcs.errors import ConfigError

REDACTED_KEYS = frozenset(
    {"token", "data", "body", "authorization", "cookie", "password", "secret"}
)
REDACTED = "[redacted]"
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
FORMATS = ("json", "console")

#: Loggers (and their children) held at INFO or above even at ``log.level =
#: "debug"``: at DEBUG, websockets prints every request header (bearer tokens,
#: cookies) and every frame (message bodies), and redis-py prints commands
#: (published bodies). Their records below INFO are also dropped by the handler,
#: in case a library lowers its own level.
QUIET_LOGGERS = ("websockets", "rtcs.gateway.websockets", "redis")

# Marks the handler configure() installs, so a second call replaces it instead
# of adding another and printing every line twice.
_HANDLER_NAME = "rtcs"


def _redacted(value: object) -> object:
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and k.lower() in REDACTED_KEYS else _redacted(v)
            for k, v in value.items()
        }
    return value


def redact(_logger: object, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: replace the value of every key in ``REDACTED_KEYS``.

    Keys match case-insensitively, at the top level and inside nested mappings.
    """
    for key, value in event_dict.items():
        if key.lower() in REDACTED_KEYS:
            event_dict[key] = REDACTED
        elif isinstance(value, Mapping):
            event_dict[key] = _redacted(value)
    return event_dict


def _is_quiet(name: str) -> bool:
    return any(name == q or name.startswith(q + ".") for q in QUIET_LOGGERS)


class _QuietFloor(logging.Filter):
    """Drops records below INFO from ``QUIET_LOGGERS``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.INFO or not _is_quiet(record.name)


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        redact,
    ]


def configure(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging to ``stream`` (stderr when None).

    ``fmt`` is "json" (one object per line: timestamp, level, logger, event and
    the bound fields) or "console" (aligned, human-readable). Records below
    ``level`` are dropped. Calling again replaces the previous configuration.

    Raises:
        ConfigError: ``level`` or ``fmt`` is not one of the known values.
    """
    numeric = LEVELS.get(level.lower())
    if numeric is None:
        raise ConfigError("log.level", level, f"must be one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ConfigError("log.format", fmt, f"must be one of {', '.join(FORMATS)}")

    shared = _shared_processors()
    renderer: list[Processor]
    if fmt == "json":
        renderer = [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ]
    else:
        renderer = [structlog.dev.ConsoleRenderer(colors=False)]

    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        # Calls below the level return at once (no processor chain): debug
        # lines on hot paths cost nothing when they are not written.
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # Not cached, so loggers obtained before a reconfiguration follow it.
        cache_logger_on_first_use=False,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        # ExtraAdder first, so that stdlib ``extra=`` fields are redacted too.
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    handler.addFilter(_QuietFloor())

    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.INFO))
    # websockets logs every connection opened and closed at INFO; rtcs counts
    # those in metrics instead, so that logger speaks from WARNING unless debugging.
    if numeric > logging.DEBUG:
        logging.getLogger("rtcs.gateway.websockets").setLevel(max(numeric, logging.WARNING))


def get_logger(name: str, **bind: Any) -> structlog.stdlib.BoundLogger:
    """A logger named ``name`` with ``bind`` attached to every line it writes.

    Bind identifiers (``connection_id``, ``user``, ``node``), never tokens or
    message bodies.
    """
    return structlog.stdlib.get_logger(name, **bind)
