"""``python -m bench``: run workloads against rtcs and the baselines, print a table.

Each (workload, repeat) runs every target back to back on a fresh server
process, so drift hits all targets alike; the table shows medians over repeats
and rtcs' ratio to each baseline measured in the same run. Results are written
as JSON to ``bench/results/<timestamp>.json`` or ``--json PATH``.

With ``rtcs-w2`` among the targets (rtcs ``--workers 2``, Redis backend) the
runner starts one redis-server on a free loopback port first, empties it before
each rtcs-w2 start, and stops it by PID at the end; the table then also shows
rtcs-w2/rtcs and the latency rtcs-w2 adds over rtcs.

``python -m bench rules`` measures rtcs against itself: routing rules (0, 10,
100 and 1,000 rules) on the ``rtcs`` target only, printed as its own table
with every rule count's ratio to the rtcs without rules of the same run
(:mod:`bench.rules`). It is not part of the default set of workloads.

``python -m bench tracing`` likewise measures rtcs against itself: tracing
off (``none``) and on (``otlp`` at sample ratios 1.0 and 0.01, exporting to a
null OTLP receiver in this process), printed as its own table with every
ratio to ``none`` of the same run (:mod:`bench.tracing`). Not in the default
set either.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.loadgen import LoadGen, LoadgenError, raise_nofile_limit
from bench.report import build_rows, medians, render_table
from bench.rules import render_rules_table, rules_rows
from bench.servers import (
    NODE_DIR,
    REPO_ROOT,
    TARGET_NAMES,
    RedisProcess,
    ServerError,
    ServerProcess,
    TargetSpec,
    prepare_node,
    targets_by_name,
)
from bench.tracing import render_tracing_table, tracing_rows
from bench.workloads import DEFAULT_WORKLOADS, RTCS_ONLY, SCALES, WORKLOADS, Runner

RESULTS_DIR = REPO_ROOT / "bench" / "results"


class Interrupted(Exception):
    """SIGTERM arrived; unwind so every server and worker is stopped."""


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, OS, Python and library versions."""
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    libs: dict[str, str | None] = {}
    for name in ("websockets", "thespian", "PyJWT", "rtcs"):
        try:
            libs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            libs[name] = None
    node = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        node = (
            subprocess.run(
                ["node", "--version"], capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
            or None
        )
    ws_pkg = NODE_DIR / "node_modules" / "ws" / "package.json"
    with contextlib.suppress(OSError, ValueError):
        libs["ws (node)"] = json.loads(ws_pkg.read_text())["version"]
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": node,
        "libraries": libs,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark rtcs against a raw websockets server and a Node ws server,"
        " and rtcs with 2 workers + Redis against rtcs with one.",
    )
    parser.add_argument(
        "workloads",
        nargs="*",
        metavar="WORKLOAD",
        help=f"any of {', '.join(WORKLOADS)} (default: {', '.join(DEFAULT_WORKLOADS)};"
        " rules measures rtcs with routing rules against rtcs without, tracing rtcs with"
        " tracing off and on; both on the rtcs target only)",
    )
    parser.add_argument(
        "--targets",
        default=None,
        help=f"comma-separated servers to measure, any of {', '.join(TARGET_NAMES)}"
        " (default: rtcs,raw,node, or rtcs when only rules or tracing runs;"
        " rtcs-w2 needs redis-server on PATH)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--scale",
        choices=sorted(SCALES),
        default="full",
        help="small: seconds (smoke test); medium: the scale-out comparison; full (default)",
    )
    parser.add_argument("--json", type=Path, default=None, help="where to write the results")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="load generator processes (default: one per core)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="deadline for the whole run, checked before each run starts: a run"
        " that has started finishes (each is bounded by its own timeouts)"
        " (default: 3600 full, 180 small)",
    )
    args = parser.parse_args(argv)
    for w in args.workloads:
        if w not in WORKLOADS:
            parser.error(f"unknown workload {w!r}; choose from {', '.join(WORKLOADS)}")
    args.workloads = args.workloads or list(DEFAULT_WORKLOADS)
    if args.targets is None:
        only_rtcs = all(w in RTCS_ONLY for w in args.workloads)
        args.targets = "rtcs" if only_rtcs else "rtcs,raw,node"
    args.target_names = [t.strip() for t in args.targets.split(",") if t.strip()]
    for t in args.target_names:
        if t not in TARGET_NAMES:
            parser.error(f"unknown target {t!r}; choose from {', '.join(TARGET_NAMES)}")
    if "rtcs-w2" in args.target_names and shutil.which("redis-server") is None:
        parser.error(
            "target rtcs-w2 needs redis-server on PATH (Debian: apt-get install redis-server)"
        )
    rtcs_only = sorted(set(args.workloads) & RTCS_ONLY)
    if rtcs_only and "rtcs" not in args.target_names:
        parser.error(f"workload {rtcs_only[0]} runs on the rtcs target: add rtcs to --targets")
    if args.repeats < 1 or args.workers < 1:
        parser.error("--repeats and --workers must be at least 1")
    if args.max_seconds is None:
        args.max_seconds = 180.0 if args.scale == "small" else 3600.0
    return args


def cpu_layout() -> tuple[int | None, list[int]]:
    """Pin servers to the last allowed CPU and the load generator to the others."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) == 1:
        return None, cpus
    return cpus[-1], cpus[:-1]


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise Interrupted(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the requested workloads x repeats x targets; return the result record."""
    deadline = time.monotonic() + args.max_seconds
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_dir = RESULTS_DIR / "logs" / stamp
    raise_nofile_limit()
    with contextlib.ExitStack() as stack:
        redis: RedisProcess | None = None
        if "rtcs-w2" in args.target_names:
            redis = RedisProcess(log_dir / "redis")
            stack.callback(redis.stop)
            redis.start()
        result = _run(args, deadline, log_dir, redis)
    if redis is not None:
        result["redis"] = {"pid": redis.pid, "port": redis.port, "exit_code": redis.exit_code}
    return result


def _run(
    args: argparse.Namespace, deadline: float, log_dir: Path, redis: RedisProcess | None
) -> dict[str, Any]:
    specs = targets_by_name(args.target_names, redis.url if redis is not None else "")
    status: dict[str, str] = {}
    active: list[TargetSpec] = []
    for spec in specs:
        if spec.name == "node" and (reason := prepare_node()) is not None:
            status["node"] = f"skipped: {reason}"
            print(f"node: skipped: {reason}", file=sys.stderr)
            continue
        status[spec.name] = "ok"
        active.append(spec)

    server_cpu, loadgen_cpus = cpu_layout()
    scale = SCALES[args.scale]
    runs: list[dict[str, Any]] = []
    servers: list[dict[str, Any]] = []
    started = time.time()
    loadgen = LoadGen(args.workers, loadgen_cpus)
    loadgen_pids = list(loadgen.pids)
    loadgen_exit_codes: list[int | None] = []
    # The loop lag probe's processes (one per fanout or burst run), each stopped by its run.
    probe_pids: list[int] = []
    probe_exit_codes: list[int | None] = []
    try:
        for workload in args.workloads:
            for repeat in range(args.repeats):
                for spec in list(active):
                    if workload in RTCS_ONLY and spec.name != "rtcs":
                        continue  # it measures rtcs against itself
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"deadline of {args.max_seconds:.0f} s reached")

                    @contextlib.contextmanager
                    def start(
                        env: Mapping[str, str] | None = None,
                        label: str = "",
                        spec: TargetSpec = spec,
                    ) -> Iterator[ServerProcess]:
                        target = spec.name
                        if env or label:
                            # Its own log file: servers of one workload may run together.
                            name = f"{spec.name}-{label}" if label else spec.name
                            spec = dataclasses.replace(
                                spec, name=name, env={**spec.env, **(env or {})}
                            )
                        shared = redis if target == "rtcs-w2" else None
                        if shared is not None:
                            shared.flush()  # no sessions or presence left from the last start
                        srv = ServerProcess(spec, server_cpu, log_dir, shared)
                        entry: dict[str, Any] = {"target": target}
                        if label:
                            entry["label"] = label
                        try:
                            with srv:
                                entry["pid"] = srv.pid
                                servers.append(entry)
                                if srv.worker_pids:
                                    entry["worker_pids"] = srv.worker_pids
                                yield srv
                        finally:
                            if srv.proc is not None:
                                if "pid" not in entry:  # it never became ready
                                    entry["pid"] = srv.pid
                                    servers.append(entry)
                                entry["exit_code"] = srv.exit_code
                                if srv.worker_pids:
                                    entry["worker_pids"] = srv.worker_pids

                    record: dict[str, Any] = {
                        "target": spec.name,
                        "workload": workload,
                        "repeat": repeat,
                    }
                    t0 = time.monotonic()
                    print(f"[{workload} #{repeat + 1}] {spec.name} …", file=sys.stderr, flush=True)
                    runner = Runner(loadgen, scale, len(loadgen_cpus))
                    try:
                        record["metrics"] = runner.run(workload, start)
                    except ServerError as exc:
                        record["error"] = str(exc)
                        if spec.name.startswith("rtcs"):
                            status[spec.name] = f"not runnable: {exc}"
                            print(f"{spec.name}: not runnable: {exc}", file=sys.stderr)
                            active.remove(spec)
                            runs.append(record)  # the failed attempt stays in the JSON
                            probe_pids += runner.probe_pids
                            probe_exit_codes += runner.probe_exit_codes
                            continue
                    except (LoadgenError, RuntimeError, TimeoutError) as exc:
                        record["error"] = f"{type(exc).__name__}: {exc}"
                        print(f"  failed: {record['error']}", file=sys.stderr)
                        # A worker may be out of step with its pipe: start afresh.
                        loadgen.stop()
                        loadgen_exit_codes += loadgen.exit_codes
                        loadgen = LoadGen(args.workers, loadgen_cpus)
                        loadgen_pids += loadgen.pids
                    probe_pids += runner.probe_pids
                    probe_exit_codes += runner.probe_exit_codes
                    record["seconds"] = round(time.monotonic() - t0, 2)
                    runs.append(record)
    except (KeyboardInterrupt, Interrupted, TimeoutError) as exc:
        status["aborted"] = f"{type(exc).__name__}: {exc}"
        print(f"aborted: {exc}", file=sys.stderr)
    finally:
        loadgen.stop()
        loadgen_exit_codes += loadgen.exit_codes

    summary = medians(runs)
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
        "command": "python -m bench " + " ".join(sys.argv[1:]),
        "scale": scale.name,
        "scale_params": {k: getattr(scale, k) for k in scale.__slots__},
        "repeats": args.repeats,
        "workloads": args.workloads,
        "targets": [s.name for s in specs],
        "status": status,
        "machine": machine_info(),
        "layout": {
            "server_cpu": server_cpu,
            "loadgen_cpus": loadgen_cpus,
            "loadgen_workers": args.workers,
            "unpinned": [s.name for s in specs if not s.pinned],
        },
        "servers": servers,
        "loadgen_pids": loadgen_pids,
        "loadgen_exit_codes": loadgen_exit_codes,
        "probe_pids": probe_pids,
        "probe_exit_codes": probe_exit_codes,
        "runs": runs,
        "summary": summary,
        "largest_idle": max(scale.idle_sizes),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the table; write JSON. Returns the exit status."""
    args = parse_args(argv)
    with sigterm_unwinds():
        try:
            result = run(args)
        except ServerError as exc:  # the shared redis-server did not start
            print(f"python -m bench: {exc}", file=sys.stderr)
            return 2
    targets = [t for t in result["targets"] if result["status"].get(t) == "ok"]
    summary = result["summary"]
    rows = build_rows(
        {k: v for k, v in summary.items() if not k.startswith(("rules.", "tracing."))},
        result["largest_idle"],
    )
    trace_rows = tracing_rows(summary)
    result["tracing_table"] = [
        {"key": r.key, "label": r.label, "unit": r.unit, "values": r.values} for r in trace_rows
    ]
    rule_rows = rules_rows(summary)
    result["rules_table"] = [
        {
            "key": r.key,
            "label": r.label,
            "unit": r.unit,
            "values": {str(n): v for n, v in r.values.items()},
            "target": r.target,
            "ok": r.verdict,
        }
        for r in rule_rows
    ]
    result["table"] = [
        {
            "key": r.key,
            "label": r.label,
            "unit": r.unit,
            "values": r.values,
            "ratios": r.ratios,
            "target": r.target,
            "ok": r.verdict,
        }
        for r in rows
    ]
    path = args.json or RESULTS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(
        f"\nscale={result['scale']} repeats={result['repeats']} "
        f"(medians; ratios measured in this run)"
    )
    for name, state in result["status"].items():
        if state != "ok":
            print(f"{name}: {state}")
    if rows:
        print(render_table(rows, targets))
    if rule_rows:
        print(
            "\nRouting rules (rtcs; 10% of the rules match the matched topic, none the"
            " unmatched one; ratios to the rtcs without rules of the same run)"
        )
        print(render_rules_table(rule_rows))
    if trace_rows:
        print(
            "\nTracing (rtcs; exporter none, and otlp to a null receiver at sample ratios 1.0"
            " and 0.01; ratios to none of the same run)"
        )
        print(render_tracing_table(trace_rows))
    print(f"\nJSON: {path}")
    failed = [r for r in result["runs"] if "error" in r and r["target"] in targets]
    return 1 if failed or "aborted" in result["status"] else 0
