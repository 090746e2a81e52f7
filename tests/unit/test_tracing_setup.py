"""rtcs.tracing's pure parts and the ``[tracing]`` settings.

The W3C ``traceparent`` in and out, the ``trace_id`` of log lines, what
:func:`build_tracing` builds for each exporter, and the settings' defaults,
environment variables and errors.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtcs import config
from rtcs.config.settings import TracingSettings
from rtcs.errors import ConfigError
from rtcs.tracing import (
    DELIVER,
    RECEIVE,
    ROUTE,
    Tracing,
    build_tracing,
    format_traceparent,
    parse_traceparent,
    trace_fields,
)

# The example of the W3C Trace Context specification.
EXAMPLE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


# --- traceparent -------------------------------------------------------------------------


def test_the_specification_example_parses() -> None:
    assert parse_traceparent(EXAMPLE) == (
        0x4BF92F3577B34DA6A3CE929D0E0E4736,
        0x00F067AA0BA902B7,
        1,
    )


@given(
    st.integers(1, (1 << 128) - 1),
    st.integers(1, (1 << 64) - 1),
    st.integers(0, 255),
)
def test_traceparent_round_trips(trace_id: int, span_id: int, flags: int) -> None:
    text = format_traceparent(trace_id, span_id, flags)
    assert len(text) == 55 and text == text.lower()
    assert parse_traceparent(text) == (trace_id, span_id, flags)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        EXAMPLE.upper(),  # hex is lower case
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero span id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # version ff
        EXAMPLE + "-more",  # version 00 has exactly four fields
        EXAMPLE[:-1],
        " " + EXAMPLE,
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-" + "x" * 300,  # too long
    ],
)
def test_what_is_not_a_traceparent_is_none(text: str) -> None:
    assert parse_traceparent(text) is None


def test_a_later_version_may_carry_more_fields() -> None:
    later = "01" + EXAMPLE[2:] + "-what.comes=next"
    assert parse_traceparent(later) == parse_traceparent(EXAMPLE)


@given(st.text(max_size=80))
def test_any_text_parses_or_is_none(text: str) -> None:
    parsed = parse_traceparent(text)
    if parsed is not None and text.startswith("00-"):
        assert format_traceparent(*parsed) == text


@pytest.mark.parametrize("ids", [(0, 1, 1), (1, 0, 1), (1 << 128, 1, 1), (1, 1, 256)])
def test_format_refuses_what_is_not_a_span_context(ids: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError):
        format_traceparent(*ids)


# --- the tracer ------------------------------------------------------------------------


def console(**settings: object) -> tuple[Tracing, io.StringIO]:
    out = io.StringIO()
    tracing = build_tracing(TracingSettings(exporter="console", **settings), "node-1", out=out)  # type: ignore[arg-type]
    assert tracing is not None
    return tracing, out


def spans(out: io.StringIO) -> list[dict[str, object]]:
    """The spans the console exporter wrote: one JSON object per line."""
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_tracing_none_builds_nothing() -> None:
    assert build_tracing(TracingSettings(), "node-1") is None


def test_console_writes_one_json_line_per_span_with_the_node_resource() -> None:
    tracing, out = console(service_name="chat")
    receive = tracing.receive({"rtcs.frame_type": "publish"})
    receive.end()
    route = tracing.route(receive, {"rtcs.kind": "topic"})
    deliver = tracing.deliver(route, "topic", 3)
    deliver.end()
    route.end()
    written = spans(out)
    assert [s["name"] for s in written] == [RECEIVE, DELIVER, ROUTE]
    assert len({s["context"]["trace_id"] for s in written}) == 1  # type: ignore[index]
    by_name = {s["name"]: s for s in written}
    assert by_name[ROUTE]["parent_id"] == by_name[RECEIVE]["context"]["span_id"]  # type: ignore[index]
    assert by_name[DELIVER]["parent_id"] == by_name[ROUTE]["context"]["span_id"]  # type: ignore[index]
    assert by_name[DELIVER]["attributes"] == {"rtcs.kind": "topic", "rtcs.fanout_size": 3}
    resource = by_name[ROUTE]["resource"]["attributes"]  # type: ignore[index]
    assert resource["service.name"] == "chat"
    assert resource["service.instance.id"] == "node-1"


def test_a_traceparent_carries_the_trace_to_another_tracer() -> None:
    sender, _ = console()
    receiver, out = console()
    route = sender.route(None, {})
    parent = receiver.remote_parent(sender.traceparent(route))
    assert parent is not None
    receiver.deliver(parent, "topic", 2, origin="node-a").end()
    (delivered,) = spans(out)
    context = route.get_span_context()
    assert delivered["context"]["trace_id"] == f"0x{context.trace_id:032x}"  # type: ignore[index]
    assert delivered["parent_id"] == f"0x{context.span_id:016x}"
    assert delivered["kind"] == "SpanKind.CONSUMER"
    assert delivered["attributes"]["rtcs.from_node"] == "node-a"  # type: ignore[index]
    assert receiver.remote_parent("not a traceparent") is None


def test_sampling_decides_before_any_span_and_a_remote_decision_is_followed() -> None:
    never, _ = console(sample_ratio=0.0)
    always, _ = console(sample_ratio=1.0)
    assert not any(never.sample() for _ in range(1000))
    assert all(always.sample() for _ in range(1000))
    tenth, _ = console(sample_ratio=0.1)
    assert 50 < sum(tenth.sample() for _ in range(2000)) < 350  # 200 expected
    # A traceparent that says "not sampled": nothing below it is made or recorded.
    receiver, received = console()
    parent = receiver.remote_parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
    assert parent is not None
    assert receiver.deliver(parent, "topic", 1) is parent
    assert (
        receiver.route(parent, {}) is parent and receiver.child("rtcs.rules", parent, {}) is parent
    )
    parent.end()
    assert spans(received) == []
    assert trace_fields(parent) == {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}


def test_trace_fields() -> None:
    tracing, _ = console()
    span = tracing.receive({})
    assert trace_fields(None) == {}
    (value,) = trace_fields(span).values()
    assert len(value) == 32 and int(value, 16) == span.get_span_context().trace_id


def test_failed_spans_have_status_error() -> None:
    tracing, out = console()
    span = tracing.receive({})
    tracing.fail(span, "broker unavailable")
    span.end()
    (written,) = spans(out)
    assert written["status"] == {"status_code": "ERROR", "description": "broker unavailable"}


# --- settings ---------------------------------------------------------------------------


def test_defaults() -> None:
    tracing = config.load().tracing
    assert tracing == TracingSettings()
    assert (tracing.exporter, tracing.sample_ratio, tracing.service_name) == ("none", 1.0, "rtcs")
    assert tracing.endpoint == "http://127.0.0.1:4318/v1/traces"


def test_environment_and_file(tmp_path: Path) -> None:
    conf = tmp_path / "rtcs.toml"
    conf.write_text('[tracing]\nexporter = "otlp"\nsample_ratio = 0\nservice_name = "edge"\n')
    tracing = config.load(conf, {"RTCS_TRACING_SAMPLE_RATIO": "0.25"}).tracing
    assert tracing == TracingSettings("otlp", 0.25, "edge", "http://127.0.0.1:4318/v1/traces")
    env = {
        "RTCS_TRACING_EXPORTER": "console",
        "RTCS_TRACING_SERVICE_NAME": "rtcs-eu",
        "RTCS_TRACING_ENDPOINT": "https://collector.example:4318/v1/traces",
    }
    tracing = config.load(None, env).tracing
    assert tracing.exporter == "console" and tracing.service_name == "rtcs-eu"
    assert tracing.endpoint == "https://collector.example:4318/v1/traces"


@pytest.mark.parametrize(
    "variable, value",
    [
        ("RTCS_TRACING_EXPORTER", "jaeger"),
        ("RTCS_TRACING_EXPORTER", "OTLP"),
        ("RTCS_TRACING_SAMPLE_RATIO", "1.5"),
        ("RTCS_TRACING_SAMPLE_RATIO", "-0.1"),
        ("RTCS_TRACING_SAMPLE_RATIO", "half"),
        ("RTCS_TRACING_SAMPLE_RATIO", "nan"),
        ("RTCS_TRACING_SERVICE_NAME", " "),
        ("RTCS_TRACING_ENDPOINT", "127.0.0.1:4318"),
        ("RTCS_TRACING_ENDPOINT", "grpc://127.0.0.1:4317"),
        ("RTCS_TRACING_ENDPOINT", "http://127.0.0.1:99999/v1/traces"),
        ("RTCS_TRACING_ENDPOINT", "http://[::1/v1/traces"),
        ("RTCS_TRACING_COLOR", "blue"),
    ],
)
def test_bad_values_name_the_variable_and_the_value(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(None, {variable: value})
    message = str(info.value)
    assert variable in message and value in message


@pytest.mark.parametrize(
    "toml, key",
    [
        ('exporter = "zipkin"', "tracing.exporter"),
        ("sample_ratio = 2", "tracing.sample_ratio"),
        ('sample_ratio = "all"', "tracing.sample_ratio"),
        ('service_name = ""', "tracing.service_name"),
        ('endpoint = "collector:4318"', "tracing.endpoint"),
        ("exporters = []", "tracing.exporters"),
    ],
)
def test_bad_file_values_name_the_key(tmp_path: Path, toml: str, key: str) -> None:
    conf = tmp_path / "rtcs.toml"
    conf.write_text(f"[tracing]\n{toml}\n")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config.load(conf)
