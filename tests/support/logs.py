"""rtcs logging captured as ``python -m rtcs`` configures it, then restored."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

from rtcs import logs


@contextmanager
def json_logs(level: str = "debug") -> Iterator[io.StringIO]:
    """Configure rtcs logging at ``level`` in JSON into a buffer; restore the
    root logger, the quietened loggers and structlog on exit."""
    root = logging.getLogger()
    handlers, root_level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in logs.QUIET_LOGGERS}
    stream = io.StringIO()
    logs.configure(level, "json", stream)
    try:
        yield stream
    finally:
        root.handlers[:] = handlers
        root.setLevel(root_level)
        for name, quiet_level in quiet.items():
            logging.getLogger(name).setLevel(quiet_level)
        structlog.reset_defaults()
