"""Smoke run of the benchmark so it cannot rot: every workload at the smallest scale.

Runs ``python -m bench --scale small --repeats 1`` exactly as a user would,
against the raw websockets baseline (always) and rtcs (skipped with the
runner's reason while rtcs is not runnable), then checks the JSON it wrote:
numbers exist and are positive, and every process it started is gone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.servers import pid_alive

# About 12 s: two targets x four workloads, each on a fresh server process.
pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = ("idle", "fanout", "reqrep", "chat")
# The headline metrics of each workload, which must be positive numbers.
HEADLINES = {
    "idle": ("idle.100.rss_kb_per_conn", "idle.100.connects_per_s"),
    "fanout": ("fanout.peak_deliveries_per_s", "fanout.p99_ms@10k"),
    "reqrep": ("reqrep.50.rt_per_s", "reqrep.50.rtt_p99_ms"),
    "chat": ("chat.delivered_per_s", "chat.p99_ms"),
}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--scale",
            "small",
            "--repeats",
            "1",
            "--targets",
            "raw,rtcs",
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


def runs_of(result: dict[str, Any], target: str) -> dict[str, dict[str, Any]]:
    return {r["workload"]: r for r in result["runs"] if r["target"] == target}


def assert_numbers(result: dict[str, Any], target: str) -> None:
    runs = runs_of(result, target)
    assert set(runs) == set(WORKLOADS), result["_stderr"][-2000:]
    for workload, keys in HEADLINES.items():
        run = runs[workload]
        assert "error" not in run, run["error"]
        for key in keys:
            assert run["metrics"][key] > 0, (target, key, run["metrics"])


def test_raw_baseline_produces_positive_numbers(smoke: dict[str, Any]) -> None:
    assert smoke["status"]["raw"] == "ok"
    assert_numbers(smoke, "raw")
    # The table printed to stdout carries the raw column.
    assert "| metric | unit |" in smoke["_stdout"]


def test_rtcs_produces_positive_numbers(smoke: dict[str, Any]) -> None:
    status = smoke["status"]["rtcs"]
    if status != "ok":
        pytest.skip(f"rtcs: {status}")
    assert_numbers(smoke, "rtcs")


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
