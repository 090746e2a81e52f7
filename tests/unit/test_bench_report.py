"""The benchmark table's targets (rtcs / raw, one worker) and labels; no timing."""

from __future__ import annotations

import pytest

from bench.cli import parse_args
from bench.report import build_rows, describe, render_table
from bench.workloads import DEFAULT_WORKLOADS, SCALES

LARGEST_IDLE = 10_000


@pytest.mark.parametrize(
    ("key", "target"),
    [
        ("burst.20.deliveries_per_s", ">= 1.5x"),
        ("burst.100.deliveries_per_s", ">= 1.5x"),
        ("fanout.p99_ms@2msg", "<= 0.8x"),
        ("reqrep.100.rt_per_s", ">= 1x"),
        ("reqrep.1000.rt_per_s", ">= 1x"),
        ("reqrep.100.ping_rt_per_s", ">= 1x"),
        ("reqrep.1000.ping_rt_per_s", ">= 1x"),
        ("idle.10000.rss_kb_per_conn", "<= 1.2x"),
        ("idle.1000.connects_per_s", ">= 1x"),
        ("idle.10000.connects_per_s", ">= 1x"),
    ],
)
def test_the_targets(key: str, target: str) -> None:
    assert str(describe(key, LARGEST_IDLE).target) == target


@pytest.mark.parametrize(
    "key",
    [
        "idle.1000.rss_kb_per_conn",  # only the largest size is judged
        "fanout.peak_deliveries_per_s",
        "fanout.p99_ms@10k",
        "fanout.lag_p99_ms@top",
        "burst.100.lag_p99_ms",
        "burst.100.completion_p99_ms",
        "reqrep.100.ping_rtt_p50_ms",
    ],
)
def test_rows_without_a_target(key: str) -> None:
    assert describe(key, LARGEST_IDLE).target is None


def test_labels_say_which_request_and_which_burst() -> None:
    assert describe("reqrep.1000.ping_rt_per_s", LARGEST_IDLE).label == (
        "reqrep 1,000 clients, ping→pong: round trips"
    )
    assert describe("reqrep.100.rtt_p99_ms", LARGEST_IDLE).label == (
        "reqrep 100 clients, publish→ack: RTT p99"
    )
    info = describe("burst.100.lag_max_ms", LARGEST_IDLE)
    assert (info.label, info.unit) == ("burst of 100: loop lag max", "ms")
    info = describe("fanout.step.160000.lag_p99_ms", LARGEST_IDLE)
    assert (info.label, info.unit) == ("fanout 160,000/s offered: loop lag p99", "ms")


def test_verdicts_and_row_order() -> None:
    summary = {
        "reqrep.100.ping_rt_per_s": {"rtcs": 30_000.0, "raw": 40_000.0},
        "burst.100.deliveries_per_s": {"rtcs": 160_000.0, "raw": 100_000.0},
        "burst.20.deliveries_per_s": {"rtcs": 140_000.0, "raw": 100_000.0},
        "fanout.p99_ms@2msg": {"rtcs": 70.0, "raw": 100.0},
        "idle.10000.rss_kb_per_conn": {"rtcs": 20.0, "raw": 16.0},
    }
    rows = build_rows(summary, LARGEST_IDLE)
    assert [r.key for r in rows] == [
        "idle.10000.rss_kb_per_conn",
        "fanout.p99_ms@2msg",
        "burst.20.deliveries_per_s",
        "burst.100.deliveries_per_s",
        "reqrep.100.ping_rt_per_s",
    ]
    assert [r.verdict for r in rows] == ["✗", "✓", "✗", "✓", "✗"]
    table = render_table(rows, ["rtcs", "raw"])
    assert "| burst of 20: deliveries | /s | 140,000 | 100,000 | 1.40 | >= 1.5x | ✗ |" in table


def test_burst_runs_by_default_at_every_scale() -> None:
    assert "burst" in DEFAULT_WORKLOADS
    assert parse_args([]).workloads == list(DEFAULT_WORKLOADS)
    assert parse_args(["burst", "--scale", "small"]).workloads == ["burst"]
    assert SCALES["full"].burst_subscribers == 10_000
    assert SCALES["small"].burst_subscribers == 50
    for scale in SCALES.values():
        assert scale.burst_sizes == (20, 100)
    # 10k subscribers x 2 msg/s is one of the full scale's fan-out steps.
    full = SCALES["full"]
    assert 2 * full.fanout_subscribers in full.fanout_offered


def test_the_scale_out_burst_target_is_on_two_workers_against_one_raw_process() -> None:
    summary = {
        "burst.20.deliveries_per_s": {"rtcs": 300_000.0, "rtcs-w2": 200_000.0, "raw": 75_000.0},
        "burst.100.deliveries_per_s": {"rtcs": 480_000.0, "rtcs-w2": 180_000.0, "raw": 86_000.0},
        "fanout.peak_deliveries_per_s": {"rtcs": 68_000.0, "rtcs-w2": 66_000.0, "raw": 61_000.0},
    }
    rows = {row.key: row for row in build_rows(summary, LARGEST_IDLE)}
    burst20, burst100 = rows["burst.20.deliveries_per_s"], rows["burst.100.deliveries_per_s"]
    assert burst20.scale_target == ">= 2.5x (rtcs-w2/raw)"
    assert burst20.ratios["rtcs-w2/raw"] == pytest.approx(200 / 75)
    assert (burst20.scale_verdict, burst100.scale_verdict) == ("✓", "✗")
    peak = rows["fanout.peak_deliveries_per_s"]
    assert (peak.scale_target, peak.scale_verdict) == (">= 1.6x (rtcs-w2/rtcs)", "✗")
    table = render_table(list(rows.values()), ["rtcs", "rtcs-w2", "raw"])
    header = [cell.strip() for cell in table.splitlines()[0].split("|")]
    assert {"rtcs-w2/raw", "target (w2)", "ok (w2)"} <= set(header)
