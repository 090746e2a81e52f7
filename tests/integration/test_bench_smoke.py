"""Smoke run of the benchmark so it cannot rot: every workload at the smallest scale.

Runs ``python -m bench --scale small --repeats 1`` exactly as a user would,
against the raw websockets baseline (always) and rtcs (skipped with the
runner's reason while rtcs is not runnable), then checks the JSON it wrote:
numbers exist and are positive, every burst message and every publish of a
burst arrived (and was acked), and every process it started is gone, the loop
lag probe's included.

A second run measures the ``rules`` workload (rtcs with 0, 10, 100 and 1,000
routing rules, and ``RuleSet.evaluate`` in-process) at the same scale, and
another the ``tracing`` workload (rtcs with tracing off and exporting OTLP to
a null receiver, and the topic route handler in-process).

A third run measures ``rtcs-w2`` (two workers + the redis-server the bench
starts itself) on the fan-out and chat workloads: skipped when redis-server is
missing, failed instead when the ``CI`` environment variable is set.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.report import build_rows, render_table
from bench.servers import pid_alive

# About 20 s: two targets x five workloads, each on a fresh server process
# (burst: about 2 s per target); about 6 s for the rules workload, about 10 s
# for the tracing workload; about 6 s more for rtcs-w2 on two workloads.
pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = ("idle", "fanout", "burst", "reqrep", "chat")
# The headline metrics of each workload, which must be positive numbers.
HEADLINES = {
    "idle": ("idle.100.rss_kb_per_conn", "idle.100.connects_per_s"),
    "fanout": ("fanout.peak_deliveries_per_s", "fanout.p99_ms@10k", "fanout.lag_p99_ms@top"),
    "burst": (
        "burst.20.deliveries_per_s",
        "burst.100.deliveries_per_s",
        "burst.100.completion_p99_ms",
        "burst.100.lag_max_ms",
    ),
    "reqrep": ("reqrep.50.rt_per_s", "reqrep.50.rtt_p99_ms", "reqrep.50.ping_rt_per_s"),
    "chat": ("chat.delivered_per_s", "chat.p99_ms"),
}


def run_bench(out: Path, *args: str) -> dict[str, Any]:
    """Run ``python -m bench --scale small --repeats 1 ARGS``; the JSON it wrote."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            *args,
            "--scale",
            "small",
            "--repeats",
            "1",
            "--json",
            str(out),
            "--max-seconds",
            "90",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert out.exists(), f"no JSON written (exit {proc.returncode}): {proc.stderr[-2000:]}"
    result: dict[str, Any] = json.loads(out.read_text())
    result["_stdout"] = proc.stdout
    result["_stderr"] = proc.stderr
    return result


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_bench(tmp_path_factory.mktemp("bench") / "smoke.json", "--targets", "raw,rtcs")


@pytest.fixture(scope="module")
def smoke_rules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_bench(tmp_path_factory.mktemp("bench") / "smoke-rules.json", "rules")


@pytest.fixture(scope="module")
def smoke_tracing(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_bench(tmp_path_factory.mktemp("bench") / "smoke-tracing.json", "tracing")


@pytest.fixture(scope="module")
def smoke_w2(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if shutil.which("redis-server") is None:
        reason = "redis-server not installed (apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so the rtcs-w2 smoke run must run", pytrace=False)
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("bench") / "smoke-w2.json"
    return run_bench(out, "fanout", "chat", "--targets", "rtcs-w2")


def runs_of(result: dict[str, Any], target: str) -> dict[str, dict[str, Any]]:
    return {r["workload"]: r for r in result["runs"] if r["target"] == target}


def assert_numbers(
    result: dict[str, Any], target: str, workloads: tuple[str, ...] = WORKLOADS
) -> None:
    runs = runs_of(result, target)
    assert set(runs) == set(workloads), result["_stderr"][-2000:]
    for workload in workloads:
        run = runs[workload]
        keys = HEADLINES[workload]
        assert "error" not in run, run["error"]
        for key in keys:
            assert run["metrics"][key] > 0, (target, key, run["metrics"])


def assert_bursts_complete(result: dict[str, Any], target: str) -> None:
    """Every subscriber got every burst message; the publisher got every ack."""
    metrics = runs_of(result, target)["burst"]["metrics"]
    for size in (20, 100):
        assert metrics[f"burst.{size}.delivered_ratio"] == 1.0, (target, size, metrics)
        assert metrics[f"burst.{size}.acked_ratio"] == 1.0, (target, size, metrics)
        assert metrics[f"burst.{size}.bursts"] >= 3, (target, size, metrics)
        assert metrics[f"burst.{size}.lag_unanswered"] == 0, (target, size, metrics)


def test_raw_baseline_produces_positive_numbers(smoke: dict[str, Any]) -> None:
    assert smoke["status"]["raw"] == "ok"
    assert_numbers(smoke, "raw")
    assert_bursts_complete(smoke, "raw")
    # The table printed to stdout carries the raw column and the burst target.
    assert "| metric | unit |" in smoke["_stdout"]
    assert "| burst of 100: deliveries | /s |" in smoke["_stdout"]


def test_rtcs_produces_positive_numbers(smoke: dict[str, Any]) -> None:
    status = smoke["status"]["rtcs"]
    if status != "ok":
        pytest.skip(f"rtcs: {status}")
    assert_numbers(smoke, "rtcs")
    assert_bursts_complete(smoke, "rtcs")


def test_every_process_was_stopped(smoke: dict[str, Any]) -> None:
    servers = smoke["servers"]
    assert any(s["target"] == "raw" for s in servers)
    for server in servers:
        assert server.get("exit_code") is not None, server
        assert not pid_alive(server["pid"]), server
    # Workers are stopped by the runner itself: their exit codes were known
    # before it returned (daemon processes reaped at exit would show None).
    codes = smoke["loadgen_exit_codes"]
    assert len(codes) == len(smoke["loadgen_pids"]) > 0
    assert all(code is not None for code in codes), codes
    # One loop lag probe process per fanout and burst run, each stopped by its run.
    probes = smoke["probe_pids"]
    assert len(probes) == len(smoke["probe_exit_codes"]) >= 2, smoke["probe_exit_codes"]
    assert all(code is not None for code in smoke["probe_exit_codes"])
    assert not any(pid_alive(pid) for pid in probes)


def test_rules_measures_every_rule_count_against_no_rules(smoke_rules: dict[str, Any]) -> None:
    assert smoke_rules["targets"] == ["rtcs"], smoke_rules["_stderr"][-2000:]
    status = smoke_rules["status"]["rtcs"]
    if status != "ok":
        pytest.skip(f"rtcs: {status}")
    (run,) = smoke_rules["runs"]
    assert "error" not in run, run["error"]
    metrics = run["metrics"]
    for n in (0, 10, 100, 1000):
        for kind in ("unmatched", "matched"):
            assert metrics[f"rules.e2e.{kind}.{n}.rt_per_s"] > 0, (n, kind)
            assert metrics[f"rules.e2e.{kind}.{n}.server_us"] > 0, (n, kind)
            assert metrics[f"rules.micro.{kind}.{n}.us_per_publish"] > 0, (n, kind)
            # Every server's publishers also ran at once, sharing the server CPU.
            assert metrics[f"rules.shared.{kind}.{n}.rt_per_s"] > 0, (n, kind)
            # Every publish reached the subscriber: the rules deliver.
            assert metrics[f"rules.e2e.{kind}.{n}.delivered_ratio"] == 1.0, (n, kind)
        assert metrics[f"rules.e2e.unmatched.{n}.routed_ratio"] == 0.0
    assert metrics["rules.e2e.unmatched.0.rt_ratio"] == 1.0
    assert metrics["rules.shared.unmatched.0.rt_ratio"] == 1.0
    assert metrics["rules.micro.matched.1000.us_per_matching_rule"] > 0
    # The servers started with a rules file really apply it: the subscribers
    # got the rules' transform, and 100 matching rules cost the server more.
    assert metrics["rules.e2e.matched.0.routed_ratio"] == 0.0
    assert metrics["rules.e2e.matched.1000.routed_ratio"] == 1.0
    assert metrics["rules.e2e.matched.1000.server_us"] > metrics["rules.e2e.matched.0.server_us"]
    # One server per rule count, each stopped; one table row per rule count.
    labels = [s["label"] for s in smoke_rules["servers"]]
    assert sorted(labels) == sorted(f"rules{n}" for n in (0, 10, 100, 1000))
    assert_stopped(smoke_rules)
    assert "| metric | unit | no rules | 10 (1 matching) |" in smoke_rules["_stdout"]
    (judged,) = [r for r in smoke_rules["rules_table"] if r["target"]]
    assert judged["key"] == "rules.shared.unmatched.{n}.rt_ratio"
    assert set(judged["values"]) == {"0", "10", "100", "1000"}


def test_tracing_measures_otlp_against_none(smoke_tracing: dict[str, Any]) -> None:
    assert smoke_tracing["targets"] == ["rtcs"], smoke_tracing["_stderr"][-2000:]
    status = smoke_tracing["status"]["rtcs"]
    if status != "ok":
        pytest.skip(f"rtcs: {status}")
    (run,) = smoke_tracing["runs"]
    assert "error" not in run, run["error"]
    metrics = run["metrics"]
    for config in ("none", "otlp", "otlp_0_01"):
        for mode in ("rr", "rr_shared"):
            assert metrics[f"tracing.{mode}.{config}.rt_per_s"] > 0, (mode, config)
        for mode in ("fan", "fan_shared"):
            assert metrics[f"tracing.{mode}.{config}.deliveries_per_s"] > 0, (mode, config)
        assert metrics[f"tracing.fan.{config}.p99_ms"] > 0, config
        # Every publish reached every subscriber, traced or not.
        assert metrics[f"tracing.fan.{config}.delivered_ratio"] == 1.0, config
        assert metrics[f"tracing.rr.{config}.delivered_ratio"] == 1.0, config
    for config in ("stripped", "none", "otlp", "otlp_0_01"):
        for fanout in (1, 100):
            assert metrics[f"tracing.micro{fanout}.{config}.us_per_publish"] > 0
    assert metrics["tracing.rr.none.rt_ratio"] == metrics["tracing.micro1.none.ratio"] == 1.0
    # The traced server really exported: its null receiver got spans.
    assert metrics["tracing.export.otlp.requests"] > 0
    assert "tracing.export.none.requests" not in metrics
    labels = [s["label"] for s in smoke_tracing["servers"]]
    assert sorted(labels) == ["tracing-none", "tracing-otlp", "tracing-otlp_0_01"]
    assert_stopped(smoke_tracing)
    assert (
        "| metric | unit | no tracing code | none | otlp 1.0 | otlp 0.01 |"
        in (smoke_tracing["_stdout"])
    )
    keys = {row["key"] for row in smoke_tracing["tracing_table"]}
    assert "tracing.fan.{c}.deliveries_ratio" in keys


def assert_stopped(result: dict[str, Any]) -> None:
    servers = result["servers"]
    assert servers
    for server in servers:
        assert server.get("exit_code") is not None, server
        assert not pid_alive(server["pid"]), server
        for pid in server.get("worker_pids", []):
            assert not pid_alive(pid), server


@pytest.mark.redis
def test_two_workers_with_redis_produce_positive_numbers(smoke_w2: dict[str, Any]) -> None:
    assert smoke_w2["status"]["rtcs-w2"] == "ok", smoke_w2["_stderr"][-2000:]
    assert_numbers(smoke_w2, "rtcs-w2", ("fanout", "chat"))
    runs = runs_of(smoke_w2, "rtcs-w2")
    # Clients landed on both workers, so some deliveries crossed Redis.
    for workload, key in (("fanout", "fanout.cross_share@10k"), ("chat", "chat.cross_share")):
        metrics = runs[workload]["metrics"]
        assert 0 < metrics[key] < 1, (workload, metrics)
    assert runs["chat"]["metrics"]["chat.p99_cross_ms"] > 0
    assert "fanout.redis_cpu_pct@peak" in runs["fanout"]["metrics"]


@pytest.mark.redis
def test_two_workers_and_redis_were_stopped(smoke_w2: dict[str, Any]) -> None:
    assert_stopped(smoke_w2)
    assert all(len(s["worker_pids"]) >= 2 for s in smoke_w2["servers"]), smoke_w2["servers"]
    redis = smoke_w2["redis"]
    assert redis["exit_code"] is not None
    assert not pid_alive(redis["pid"])


def test_table_has_the_scale_out_columns() -> None:
    summary = {
        "fanout.peak_deliveries_per_s": {"rtcs": 50_000.0, "rtcs-w2": 85_000.0, "raw": 60_000.0},
        "chat.p99_ms": {"rtcs": 2.0, "rtcs-w2": 3.0, "raw": 1.5},
        "chat.p99_cross_ms": {"rtcs-w2": 4.5},
    }
    rows = {r.key: r for r in build_rows(summary, 100)}
    peak = rows["fanout.peak_deliveries_per_s"]
    assert peak.ratios == {
        "rtcs/raw": 50_000 / 60_000,
        "rtcs-w2/rtcs": 1.7,
        "rtcs-w2/raw": 85_000 / 60_000,
    }
    # Peak fan-out has a scale-out target only (rtcs-w2/rtcs), none on rtcs/raw.
    assert (peak.verdict, peak.scale_verdict) == ("", "✓")
    assert rows["chat.p99_ms"].added_ms == 1.0
    # The cross-worker hop is measured against one worker's p99 over all deliveries.
    assert rows["chat.p99_cross_ms"].added_ms == 2.5
    table = render_table(list(rows.values()), ["rtcs", "rtcs-w2", "raw"])
    assert "| rtcs-w2/rtcs |" in table
    assert "+2.50" in table
