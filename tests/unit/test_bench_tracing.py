"""The ``tracing`` benchmark's pure parts: its command line, the null receiver, the table.

No timing here (tests/integration/test_bench_smoke.py runs the workload).
"""

from __future__ import annotations

import http.client
import urllib.parse

import pytest

from bench.cli import parse_args
from bench.tracing import (
    CONFIGS,
    SCALES,
    NullReceiver,
    render_tracing_table,
    server_env,
    tracing_rows,
)
from bench.workloads import DEFAULT_WORKLOADS, RTCS_ONLY
from bench.workloads import SCALES as WORKLOAD_SCALES
from rtcs import config


def test_tracing_runs_on_rtcs_alone_and_not_by_default() -> None:
    args = parse_args(["tracing"])
    assert args.target_names == ["rtcs"] and args.workloads == ["tracing"]
    assert "tracing" in RTCS_ONLY and "tracing" not in DEFAULT_WORKLOADS
    with pytest.raises(SystemExit):
        parse_args(["tracing", "--targets", "raw"])
    assert set(SCALES) == set(WORKLOAD_SCALES)


def post(url: str, path: str, body: bytes) -> int:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        connection.request("POST", path, body, {"Content-Type": "application/x-protobuf"})
        return connection.getresponse().status
    finally:
        connection.close()


def test_the_null_receiver_answers_200_and_counts() -> None:
    with NullReceiver() as receiver:
        assert post(receiver.url, "/v1/traces", b"\x0a\x00") == 200
        assert post(receiver.url, "/v1/metrics", b"x") == 404
        assert (receiver.requests, receiver.bytes) == (1, 2)


def test_every_configuration_is_valid_rtcs_settings() -> None:
    with NullReceiver() as receiver:
        for _, _, exporter, ratio in CONFIGS:
            env = server_env(exporter, ratio, receiver)
            tracing = config.load(None, env).tracing
            assert (tracing.exporter, tracing.sample_ratio) == (exporter, ratio)
            if exporter != "none":
                assert tracing.endpoint == receiver.url


def test_rows_and_table() -> None:
    summary = {
        "tracing.rr.none.rt_per_s": {"rtcs": 9_000.0},
        "tracing.rr.otlp.rt_per_s": {"rtcs": 3_000.0},
        "tracing.rr.otlp.rt_ratio": {"rtcs": 0.33},
        "tracing.micro1.stripped.us_per_publish": {"rtcs": 10.0},
        "tracing.micro1.none.us_per_publish": {"rtcs": 10.1},
        "fanout.peak_deliveries_per_s": {"rtcs": 1.0},  # another workload's: not a row
    }
    rows = tracing_rows(summary)
    assert [row.key for row in rows] == [
        "tracing.rr.{c}.rt_per_s",
        "tracing.rr.{c}.rt_ratio",
        "tracing.micro1.{c}.us_per_publish",
    ]
    assert rows[0].values == {"none": 9_000.0, "otlp": 3_000.0}
    table = render_tracing_table(rows).splitlines()
    assert table[0] == "| metric | unit | no tracing code | none | otlp 1.0 |"
    assert table[2] == "| publish→ack | /s | - | 9,000 | 3,000 |"
    assert table[4] == "| in-process, 1 subscriber: per publish | µs | 10.0 | 10.1 | - |"
