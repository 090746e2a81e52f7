"""rtcs.logs: JSON shape, redaction, stdlib routing, levels, formats."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from rtcs.errors import ConfigError
from rtcs.logs import QUIET_LOGGERS, REDACTED, configure, get_logger, redact


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, quiet_level in quiet.items():
        logging.getLogger(name).setLevel(quiet_level)
    structlog.reset_defaults()


@pytest.fixture
def stream() -> io.StringIO:
    return io.StringIO()


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_have_timestamp_level_logger_event_and_bound_fields(stream: io.StringIO) -> None:
    configure(stream=stream)
    get_logger("rtcs.gateway", connection_id="c-1", user="alice").info("connected", n=2)
    [line] = lines(stream)
    assert line["event"] == "connected"
    assert line["level"] == "info"
    assert line["logger"] == "rtcs.gateway"
    assert line["connection_id"] == "c-1"
    assert line["user"] == "alice"
    assert line["n"] == 2
    assert isinstance(line["timestamp"], str) and line["timestamp"].endswith("Z")


def test_secret_keys_are_redacted(stream: io.StringIO) -> None:
    configure(stream=stream)
    get_logger("rtcs.auth").warning(
        "rejected",
        token="eyJhbGciOi.secret",
        data={"text": "private"},
        body="hello",
        Authorization="Bearer abc",
        cookie="rtcs_token=abc",
        password="hunter2",
        secret="s3",
        reason="expired",
    )
    [line] = lines(stream)
    for key in ("token", "data", "body", "Authorization", "cookie", "password", "secret"):
        assert line[key] == REDACTED, key
    assert line["reason"] == "expired"
    assert "eyJhbGciOi" not in stream.getvalue()
    assert "hunter2" not in stream.getvalue()


def test_nested_secret_keys_are_redacted(stream: io.StringIO) -> None:
    configure(stream=stream)
    get_logger("rtcs.gateway").info("frame", frame={"type": "auth", "token": "abc"})
    [line] = lines(stream)
    assert line["frame"] == {"type": "auth", "token": REDACTED}


def test_redact_is_a_plain_processor() -> None:
    event = {"event": "x", "Token": "t", "keep": 1}
    assert redact(None, "info", event) == {"event": "x", "Token": REDACTED, "keep": 1}


def test_stdlib_logging_goes_through_the_same_output(stream: io.StringIO) -> None:
    configure(stream=stream)
    logging.getLogger("rtcs.runtime").warning(
        "actor %s restarted", "router", extra={"token": "t", "attempt": 2}
    )
    [line] = lines(stream)
    assert line["event"] == "actor router restarted"
    assert line["level"] == "warning"
    assert line["logger"] == "rtcs.runtime"
    assert line["token"] == REDACTED
    assert line["attempt"] == 2
    assert "timestamp" in line


def test_exceptions_are_rendered_into_the_line(stream: io.StringIO) -> None:
    configure(stream=stream)
    try:
        raise ZeroDivisionError("boom")
    except ZeroDivisionError:
        get_logger("rtcs.router").exception("route failed")
    [line] = lines(stream)
    assert line["level"] == "error"
    assert "ZeroDivisionError: boom" in str(line["exception"])


def test_records_below_the_level_are_dropped(stream: io.StringIO) -> None:
    configure(level="warning", stream=stream)
    log = get_logger("rtcs.gateway")
    log.info("quiet")
    logging.getLogger("rtcs.runtime").info("quiet too")
    log.error("loud")
    assert [line["event"] for line in lines(stream)] == ["loud"]


def test_configuring_again_replaces_the_output(stream: io.StringIO) -> None:
    first = io.StringIO()
    configure(stream=first)
    log = get_logger("rtcs.gateway")
    configure(stream=stream)
    log.info("once")
    assert first.getvalue() == ""
    assert [line["event"] for line in lines(stream)] == ["once"]


def test_console_format_is_human_readable_and_still_redacts(stream: io.StringIO) -> None:
    configure(fmt="console", level="debug", stream=stream)
    get_logger("rtcs.gateway", user="alice").debug("subscribed", token="abc")
    text = stream.getvalue()
    assert "subscribed" in text
    assert "user=alice" in text
    assert "abc" not in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


@pytest.mark.parametrize(
    ("level", "fmt", "key"), [("loud", "json", "log.level"), ("info", "xml", "log.format")]
)
def test_unknown_level_or_format_names_the_setting(level: str, fmt: str, key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        configure(level=level, fmt=fmt, stream=io.StringIO())
    assert raised.value.key == key


@pytest.mark.parametrize(
    "name", ["websockets.server", "websockets.client", "rtcs.gateway.websockets", "redis.client"]
)
def test_third_party_loggers_never_write_below_info(stream: io.StringIO, name: str) -> None:
    configure(level="debug", stream=stream)
    third_party = logging.getLogger(name)
    assert not third_party.isEnabledFor(logging.DEBUG)
    third_party.debug("> Authorization: Bearer eyJ.secret")
    # Even if the library lowers its own level, the handler drops the record.
    third_party.setLevel(logging.DEBUG)
    try:
        third_party.debug('< TEXT \'{"data": "private"}\'')
    finally:
        third_party.setLevel(logging.NOTSET)
    third_party.info("connection open")
    assert [line["event"] for line in lines(stream)] == ["connection open"]
    get_logger("rtcs.gateway").debug("rtcs debug lines still appear")
    assert lines(stream)[-1]["event"] == "rtcs debug lines still appear"


def test_websockets_connection_lines_are_quiet_unless_debugging(stream: io.StringIO) -> None:
    configure(level="info", stream=stream)
    logging.getLogger("rtcs.gateway.websockets").info("connection open")
    logging.getLogger("rtcs.gateway.websockets").warning("slow")
    assert [line["event"] for line in lines(stream)] == ["slow"]
