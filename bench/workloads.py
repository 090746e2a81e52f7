"""The workloads; each returns ``{metric key: value}`` for one target.

``idle``, ``fanout``, ``burst``, ``reqrep`` and ``chat`` compare rtcs with the baselines;
``rules`` (rtcs only, not in the default set) compares rtcs with routing rules
against rtcs without (:meth:`Runner.rules`, :mod:`bench.rules`); ``tracing``
(rtcs only, not in the default set) rtcs with tracing off and on
(:meth:`Runner.tracing`, :mod:`bench.tracing`).

Sizes come from a :class:`Scale` (``small`` for the smoke test, ``full`` for
the numbers in the issue, ``medium`` for the scale-out comparison of ``rtcs``
and ``rtcs-w2``). Every phase is bounded by a timeout; a worker that does not
answer raises :class:`bench.loadgen.LoadgenError`.

Fan-out and chat also split their latencies by hop: a delivery whose sender
was welcomed by another worker than its receiver crossed between workers (for
``rtcs-w2``, through Redis); ``*_same_*`` and ``*_cross_*`` metrics and the
cross share come from that split (single-process targets have no cross
deliveries, so no ``*_cross_*`` metrics).

Loop lag: during every fan-out step and every burst phase a :class:`LagProbe`
(a process of its own with one connection, subscribed to nothing) sends an
application ``ping`` every 50 ms and records each ``pong``'s round trip; a
server whose event loop is busy answers late.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bench.loadgen import LoadGen, LoadgenError
from bench.rules import (
    PUBLISH_DATA,
    RULE_COUNTS,
    TOPICS,
    matching_count,
    micro,
    rules_toml,
)
from bench.servers import ServerProcess, mint_token

WORKLOADS = ("idle", "fanout", "burst", "reqrep", "chat", "rules", "tracing")
#: What ``python -m bench`` runs without workload names.
DEFAULT_WORKLOADS = ("idle", "fanout", "burst", "reqrep", "chat")
#: Workloads that measure rtcs against itself: they run on the ``rtcs`` target only.
RTCS_ONLY = frozenset({"rules", "tracing"})
FANOUT_TOPIC = "bench.fanout"
REQREP_TOPIC = "bench.reqrep"
BURST_TOPIC = "bench.burst"
LATENCY_REF_OFFERED = 10_000  # fan-out latency is quoted at 10k deliveries/s offered
#: Fan-out latency is also quoted (and judged) at 2 messages/s to every subscriber
#: (10k subscribers x 2 msg/s = 20k deliveries/s offered at full scale).
LATENCY_TARGET_RATE = 2
WARMUP_BURST = 5  # messages in the unmeasured burst before the measured ones
#: A burst with no delivery or ack for this long is given up. Long: a server
#: may build a whole burst's frames in one loop turn before writing any.
BURST_IDLE_S = 10.0
PROBE_INTERVAL = 0.05  # seconds between two loop lag probe pings
CHAT_STEP = 1_000_000
RULES_STEP = 2_000_000  # the rules windows' step tags start above it
WARMUP_STEP = -1  # the step tag of the unmeasured fan-out warm-up (real steps are ≥ 0)
KEEP_UP = 0.9  # a step keeps up when ≥ 90 % of its offered deliveries arrive at rate
EXPLODED_P99_MS = 5_000.0

Metrics = dict[str, float]


class StartServer(Protocol):
    """Starts the target being measured (a fresh process each call); stops it on exit.

    ``env`` adds environment variables (``RTCS_RULES_FILE=...``); ``label``
    tells apart servers of one run that are alive together (log file names).
    """

    def __call__(
        self, env: Mapping[str, str] | None = None, label: str = ""
    ) -> AbstractContextManager[ServerProcess]: ...


@dataclass(frozen=True, slots=True)
class Scale:
    """Workload sizes and durations."""

    name: str
    idle_sizes: tuple[int, ...]
    fanout_subscribers: int
    fanout_offered: tuple[int, ...]  # deliveries/s offered, stepped up
    fanout_step_s: float
    reqrep_clients: tuple[int, ...]
    reqrep_s: float
    # burst: subscribers of one topic; messages per burst; each size repeats
    # for burst_s seconds and at least burst_min_count bursts
    burst_subscribers: int
    burst_sizes: tuple[int, ...]
    burst_s: float
    burst_min_count: int
    chat_rooms: int
    chat_members: int
    chat_rate: float  # broadcasts/s per member
    chat_s: float
    connect_concurrency: int  # handshakes in flight per worker
    # rules: per server, publishers in a closed loop and subscribers per topic
    rules_clients: int
    rules_subscribers: int
    rules_s: float  # one measured window (after rules_warmup_s)
    rules_warmup_s: float
    rules_rounds: int  # windows per (rule count, topic) in one repeat, interleaved
    rules_micro_runs: int  # in-process: runs per (rule count, topic), median
    rules_micro_s: float  # in-process: seconds of evaluate() calls per run


SCALES = {
    "small": Scale(
        name="small",
        idle_sizes=(50, 100),
        fanout_subscribers=50,
        fanout_offered=(2_000, 5_000, 10_000),
        fanout_step_s=0.5,
        reqrep_clients=(10, 50),
        reqrep_s=0.5,
        burst_subscribers=50,
        burst_sizes=(20, 100),
        burst_s=0.3,
        burst_min_count=3,
        chat_rooms=10,
        chat_members=5,
        chat_rate=2.0,
        chat_s=0.5,
        connect_concurrency=25,
        rules_clients=4,
        rules_subscribers=1,
        rules_s=0.1,
        rules_warmup_s=0.05,
        rules_rounds=1,
        rules_micro_runs=1,
        rules_micro_s=0.002,
    ),
    "medium": Scale(
        name="medium",
        idle_sizes=(1_000,),
        fanout_subscribers=4_000,
        fanout_offered=(10_000, 20_000, 40_000, 60_000, 80_000, 100_000, 130_000),
        fanout_step_s=2.0,
        reqrep_clients=(100,),
        reqrep_s=2.0,
        burst_subscribers=4_000,
        burst_sizes=(20, 100),
        burst_s=2.0,
        burst_min_count=3,
        chat_rooms=400,
        chat_members=5,
        chat_rate=1.0,
        chat_s=5.0,
        connect_concurrency=50,
        rules_clients=50,
        rules_subscribers=1,
        rules_s=1.0,
        rules_warmup_s=0.3,
        rules_rounds=3,
        rules_micro_runs=5,
        rules_micro_s=0.1,
    ),
    "full": Scale(
        name="full",
        idle_sizes=(1_000, 10_000),
        fanout_subscribers=10_000,
        fanout_offered=(5_000, 10_000, 20_000, 40_000, 80_000, 160_000),
        fanout_step_s=4.0,
        reqrep_clients=(100, 1_000),
        reqrep_s=4.0,
        burst_subscribers=10_000,
        burst_sizes=(20, 100),
        burst_s=4.0,
        burst_min_count=3,
        chat_rooms=1_000,
        chat_members=10,
        chat_rate=0.1,
        chat_s=10.0,
        connect_concurrency=50,
        rules_clients=50,
        rules_subscribers=1,
        rules_s=1.0,
        rules_warmup_s=0.3,
        rules_rounds=6,
        rules_micro_runs=5,
        rules_micro_s=0.2,
    ),
}


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values`` by nearest rank; 0.0 if empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def source_addresses(count: int = 16) -> list[str]:
    """Loopback source addresses to spread connections over (127.0.0.2 …)."""
    return [f"127.0.0.{2 + i}" for i in range(count)]


def hop_split(res: Sequence[dict[str, Any]], prefix: str, suffix: str) -> Metrics:
    """Same-worker and cross-worker latency percentiles and the cross share.

    ``res`` are the workers' ``await_step`` (or ``chat``) replies. Cross
    metrics only exist when some delivery crossed between workers.
    """
    received = sum(r["received"] for r in res)
    cross = sum(r.get("received_cross", 0) for r in res)
    same_ms = [x for r in res for x in r.get("same", [])]
    cross_ms = [x for r in res for x in r.get("cross", [])]
    out: Metrics = {
        f"{prefix}cross_share{suffix}": cross / received if received else 0.0,
        f"{prefix}p99_same_ms{suffix}": percentile(same_ms, 99),
    }
    if cross_ms:
        out[f"{prefix}p50_cross_ms{suffix}"] = percentile(cross_ms, 50)
        out[f"{prefix}p99_cross_ms{suffix}"] = percentile(cross_ms, 99)
    return out


def lag_metrics(prefix: str, take: Mapping[str, Any], suffix: str = "") -> Metrics:
    """Loop lag percentiles from one :meth:`LagProbe.take`.

    ``lag_unanswered`` counts pings without a pong 2 s after the window
    closed (their age then is among the samples, a lower bound).
    """
    rtts: list[float] = take["rtts"]
    return {
        f"{prefix}lag_p50_ms{suffix}": percentile(rtts, 50),
        f"{prefix}lag_p99_ms{suffix}": percentile(rtts, 99),
        f"{prefix}lag_max_ms{suffix}": max(rtts, default=0.0),
        f"{prefix}lag_unanswered{suffix}": float(take["unanswered"]),
    }


class LagProbe:
    """The loop lag probe: one connection in a process of its own, a ping every 50 ms.

    Its own process, not pinned, so that neither the load generator's busy
    loops nor the runner delay it: a late pong is the server's delay (plus
    the probe's scheduling, well under a millisecond on an idle CPU and a
    few on a busy one). The connection subscribes to nothing.

    Obligations: use as a context manager; the process is stopped by
    :meth:`__exit__` (its PID and exit status are kept in ``pids`` and
    ``exit_codes``).

    Raises (on enter):
        LoadgenError: the process did not start or the connection failed.
    """

    def __init__(self, port: int, interval: float = PROBE_INTERVAL) -> None:
        self.port = port
        self.interval = interval
        self.lg: LoadGen | None = None
        self.pids: list[int] = []
        self.exit_codes: list[int | None] = []

    def __enter__(self) -> LagProbe:
        self.lg = LoadGen(1, None)
        self.pids = self.lg.pids
        try:
            self.lg.call(
                0,
                "probe_start",
                30.0,
                host="127.0.0.1",
                port=self.port,
                token=mint_token("bench-lag-probe"),
                interval=self.interval,
            )
        except BaseException:
            self.close()
            raise
        return self

    def take(self) -> dict[str, Any]:
        """The round trips (ms) of the pings sent since the last take; a new window starts."""
        assert self.lg is not None
        return self.lg.call(0, "probe_take", 15.0, grace=2.0)

    def close(self) -> None:
        if self.lg is None:
            return
        with contextlib.suppress(LoadgenError, OSError):
            self.lg.call(0, "probe_stop", 10.0)
        self.lg.stop()
        self.exit_codes = self.lg.exit_codes
        self.lg = None

    def __exit__(self, *exc: object) -> None:
        self.close()


class Runner:
    """Runs workloads against one target with a shared load generator."""

    def __init__(self, loadgen: LoadGen, scale: Scale, loadgen_cores: int) -> None:
        self.lg = loadgen
        self.scale = scale
        self.loadgen_cores = max(1, loadgen_cores)
        self.addrs = source_addresses()
        #: Connections per ``welcome.server`` (worker) of the last :meth:`connect_all`.
        self.servers: dict[str, int] = {}
        #: Every loop lag probe process started, and its exit status once stopped.
        self.probe_pids: list[int] = []
        self.probe_exit_codes: list[int | None] = []

    # building blocks ----------------------------------------------------------------
    def split(self, n: int) -> list[int]:
        """``n`` spread as evenly as possible over the workers."""
        w = self.lg.size
        return [n // w + (1 if i < n % w else 0) for i in range(w)]

    def tokens(self, worker: int, count: int, tag: str) -> list[str]:
        # A distinct user per connection so per-user limits never apply.
        return [mint_token(f"{tag}-{worker}-{i}") for i in range(count)]

    def connect_all(
        self,
        srv: ServerProcess,
        n: int,
        tag: str,
        topic: str | None = None,
        rooms_per_worker: Sequence[Sequence[str]] | None = None,
        group: str = "",
    ) -> tuple[int, float]:
        """Open ``n`` connections over all workers; return (opened, connects/s).

        ``group`` tags them for a ``reqrep`` that drives that group alone.
        """
        counts = (
            [len(r) for r in rooms_per_worker] if rooms_per_worker is not None else self.split(n)
        )
        per = []
        for i, c in enumerate(counts):
            kw: dict[str, Any] = {"tokens": self.tokens(i, c, tag)}
            if rooms_per_worker is not None:
                kw["rooms"] = list(rooms_per_worker[i])
            per.append(kw)
        timeout = 30.0 + n / 200
        replies = self.lg.call_all(
            "connect",
            timeout + 10,
            per_worker=per,
            host="127.0.0.1",
            port=srv.port,
            local_addrs=self.addrs,
            concurrency=self.scale.connect_concurrency,
            topic=topic,
            timeout=timeout,
            group=group,
        )
        opened = sum(r["opened"] for r in replies)
        self.servers = {}
        for r in replies:
            for server, count in r.get("servers", {}).items():
                self.servers[server] = self.servers.get(server, 0) + count
        if opened < n:
            failures = [f for r in replies for f in r["failures"]]
            raise RuntimeError(f"only {opened}/{n} connections opened: {failures[:3]}")
        span = max(r["end"] for r in replies) - min(r["start"] for r in replies)
        return opened, opened / span if span > 0 else 0.0

    def busiest_share(self) -> float:
        """Share of the last connections that landed on the busiest worker."""
        total = sum(self.servers.values())
        return max(self.servers.values()) / total if total else 0.0

    def close_all(self) -> None:
        self.lg.call_all("close", 60.0)

    @contextlib.contextmanager
    def lag_probe(self, srv: ServerProcess) -> Iterator[LagProbe]:
        """A running :class:`LagProbe` on ``srv``; its process is recorded and stopped."""
        probe = LagProbe(srv.port)
        try:
            with probe:
                self.probe_pids += probe.pids
                yield probe
        finally:
            self.probe_pids = sorted(set(self.probe_pids) | set(probe.pids))
            self.probe_exit_codes += probe.exit_codes

    def loadgen_cpu_pct(
        self, before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]]
    ) -> float:
        cpu = sum(a["cpu"] - b["cpu"] for a, b in zip(after, before, strict=True))
        wall = max(a["wall"] for a in after) - min(b["wall"] for b in before)
        return 100.0 * cpu / (wall * self.loadgen_cores) if wall > 0 else 0.0

    # workloads ------------------------------------------------------------------
    def idle(self, start_server: StartServer) -> Metrics:
        """RSS per idle connection and connect rate, each size on a fresh server."""
        out: Metrics = {}
        for n in self.scale.idle_sizes:
            with start_server() as srv:
                rss0 = srv.rss_kb()
                cpu0 = self.lg.call_all("cpu", 10.0)
                try:
                    opened, rate = self.connect_all(srv, n, "idle")
                    cpu1 = self.lg.call_all("cpu", 10.0)
                    rss1 = srv.rss_kb()
                finally:
                    self.close_all()
            out[f"idle.{n}.rss_kb_per_conn"] = (rss1 - rss0) / opened
            out[f"idle.{n}.connects_per_s"] = rate
            out[f"idle.{n}.loadgen_cpu_pct"] = self.loadgen_cpu_pct(cpu0, cpu1)
        return out

    def fanout(self, start_server: StartServer) -> Metrics:
        """Step the publish rate to N subscribers up until deliveries fall behind.

        The loop lag probe runs through every step: each step's probe p99, and
        p50/p99/max for the largest step run (``@top``).
        """
        sc = self.scale
        n = sc.fanout_subscribers
        out: Metrics = {}
        with start_server() as srv, contextlib.ExitStack() as stack:
            try:
                self.connect_all(srv, n, "fan", topic=FANOUT_TOPIC)
                out["fanout.busiest_worker_share"] = self.busiest_share()
                self.lg.call(
                    0,
                    "publisher",
                    10.0,
                    host="127.0.0.1",
                    port=srv.port,
                    token=mint_token("fan-publisher"),
                )
                local = self.split(n)
                # Warm-up, not measured: the first fan-outs pay for lazily built
                # structures and caches on every target.
                warm = self.lg.call(
                    0, "publish", 30.0, rate=2.0, duration=1.0, step=WARMUP_STEP, topic=FANOUT_TOPIC
                )
                self.lg.call_all(
                    "await_step",
                    30.0,
                    per_worker=[{"expected": warm["sent"] * c} for c in local],
                    step=WARMUP_STEP,
                    timeout=20.0,
                )
                peak = 0.0
                sustained = 0.0
                at_peak: Metrics = {}
                probe = stack.enter_context(self.lag_probe(srv))
                for step, offered in enumerate(sc.fanout_offered):
                    rate = offered / n
                    probe.take()  # the step's window starts here
                    cpu0 = self.lg.call_all("cpu", 10.0)
                    scpu0, rcpu0, t0 = srv.cpu_seconds(), srv.redis_cpu_seconds(), time.monotonic()
                    pub = self.lg.call(
                        0,
                        "publish",
                        sc.fanout_step_s + 30,
                        rate=rate,
                        duration=sc.fanout_step_s,
                        step=step,
                        topic=FANOUT_TOPIC,
                    )
                    grace = max(3.0, 3 * sc.fanout_step_s)
                    res = self.lg.call_all(
                        "await_step",
                        grace + 10,
                        per_worker=[{"expected": pub["sent"] * c} for c in local],
                        step=step,
                        timeout=grace,
                    )
                    scpu1, rcpu1, t1 = srv.cpu_seconds(), srv.redis_cpu_seconds(), time.monotonic()
                    lag = probe.take()
                    delivered = sum(r["received"] for r in res)
                    expected = pub["sent"] * n
                    last = max((r["last"] for r in res if r["received"]), default=pub["start"])
                    window = max(pub["sent"] / rate, last - pub["start"])
                    per_s = delivered / window if window > 0 else 0.0
                    lats = [x for r in res for x in r["latencies"]]
                    p99 = percentile(lats, 99)
                    kept = delivered >= KEEP_UP * expected and per_s >= KEEP_UP * offered
                    tag = f"fanout.step.{offered}"
                    out[f"{tag}.delivered_per_s"] = per_s
                    out[f"{tag}.p99_ms"] = p99
                    out[f"{tag}.loadgen_cpu_pct"] = self.loadgen_cpu_pct(cpu0, res)
                    out[f"{tag}.server_cpu_pct"] = 100.0 * (scpu1 - scpu0) / (t1 - t0)
                    out[f"{tag}.lag_p99_ms"] = percentile(lag["rtts"], 99)
                    out.update(lag_metrics("fanout.", lag, "@top"))
                    out["fanout.top_offered"] = float(offered)
                    if rcpu0 is not None and rcpu1 is not None:
                        out[f"{tag}.redis_cpu_pct"] = 100.0 * (rcpu1 - rcpu0) / (t1 - t0)
                    if per_s > peak:
                        peak = per_s
                        at_peak = {
                            key.replace(f"{tag}.", "fanout.", 1) + "@peak": out[key]
                            for key in (
                                f"{tag}.loadgen_cpu_pct",
                                f"{tag}.server_cpu_pct",
                                f"{tag}.redis_cpu_pct",
                            )
                            if key in out
                        }
                    if offered == LATENCY_REF_OFFERED:
                        out["fanout.p50_ms@10k"] = percentile(lats, 50)
                        out["fanout.p99_ms@10k"] = p99
                        out["fanout.max_ms@10k"] = max(lats, default=0.0)
                        out.update(hop_split(res, "fanout.", "@10k"))
                    if offered == LATENCY_TARGET_RATE * n:
                        out["fanout.p50_ms@2msg"] = percentile(lats, 50)
                        out["fanout.p99_ms@2msg"] = p99
                        out["fanout.max_ms@2msg"] = max(lats, default=0.0)
                    if not kept or p99 > EXPLODED_P99_MS:
                        break
                    sustained = float(offered)
                out["fanout.peak_deliveries_per_s"] = peak
                out["fanout.max_sustained_offered"] = sustained
                out.update(at_peak)
            finally:
                self.close_all()
        return out

    def burst(self, start_server: StartServer) -> Metrics:
        """Bursts of B messages to N subscribers of one topic, one burst at a time.

        For each burst size B: the publisher writes B publishes back to back
        in one socket write, then every worker waits until its subscribers
        received all B (and the publisher all B acks) before the next burst;
        repeated for ``burst_s`` seconds and at least ``burst_min_count``
        bursts, after one unmeasured burst. deliveries/s = deliveries / (last
        delivery of the last burst - write of the first); a burst's
        completion = its last delivery anywhere - its write, over the bursts
        that completed (none: no completion metrics). The loop lag probe runs
        through each size's bursts. A burst that does not complete (timeout,
        or no delivery or ack for :data:`BURST_IDLE_S`) ends that size's bursts.
        """
        sc = self.scale
        n = sc.burst_subscribers
        local = self.split(n)
        out: Metrics = {}
        with start_server() as srv, contextlib.ExitStack() as stack:
            try:
                self.connect_all(srv, n, "burst", topic=BURST_TOPIC)
                self.lg.call(
                    0,
                    "publisher",
                    10.0,
                    host="127.0.0.1",
                    port=srv.port,
                    token=mint_token("burst-publisher"),
                )
                probe = stack.enter_context(self.lag_probe(srv))
                bid = 0
                self.one_burst(bid, WARMUP_BURST, local)  # warm-up, not measured
                for size in sc.burst_sizes:
                    probe.take()  # this size's window starts here
                    cpu0 = self.lg.call_all("cpu", 10.0)
                    scpu0, t0 = srv.cpu_seconds(), time.monotonic()
                    bursts: list[dict[str, Any]] = []
                    while True:
                        bid += 1
                        bursts.append(self.one_burst(bid, size, local))
                        elapsed = time.monotonic() - t0
                        if bursts[-1]["received"] < size * n or bursts[-1]["acks"] < size:
                            break  # stragglers would blur the next burst
                        if len(bursts) >= sc.burst_min_count and elapsed >= sc.burst_s:
                            break
                    scpu1, t1 = srv.cpu_seconds(), time.monotonic()
                    lag = probe.take()
                    tag = f"burst.{size}."
                    received = sum(b["received"] for b in bursts)
                    span = bursts[-1]["last"] - bursts[0]["sent_at"]
                    whole = size * n
                    done = [b["completion_ms"] for b in bursts if b["received"] >= whole]
                    out[f"{tag}deliveries_per_s"] = received / span if span > 0 else 0.0
                    if done:
                        out[f"{tag}completion_p50_ms"] = percentile(done, 50)
                        out[f"{tag}completion_p99_ms"] = percentile(done, 99)
                    out[f"{tag}bursts"] = float(len(bursts))
                    out[f"{tag}delivered_ratio"] = received / (len(bursts) * size * n)
                    out[f"{tag}acked_ratio"] = sum(b["acks"] for b in bursts) / (len(bursts) * size)
                    out.update(lag_metrics(tag, lag))
                    out[f"{tag}loadgen_cpu_pct"] = self.loadgen_cpu_pct(cpu0, bursts[-1]["replies"])
                    out[f"{tag}server_cpu_pct"] = 100.0 * (scpu1 - scpu0) / (t1 - t0)
                    for b in bursts:
                        del b["replies"]
            finally:
                self.close_all()
        return out

    def one_burst(self, bid: int, size: int, local: Sequence[int]) -> dict[str, Any]:
        """Worker 0 writes one burst of ``size``; every worker waits for its share.

        ``local``: subscribers per worker. Returns the burst's write time,
        deliveries, last delivery (epoch s), completion (ms), acks, and the
        workers' replies (for their CPU counters).
        """
        n = sum(local)
        timeout = 10.0 + size * n / 20_000  # far above any target's time for it
        res = self.lg.call_all(
            "burst",
            timeout + 20,
            per_worker=[
                {"expected": size * c, "send": size if i == 0 else 0} for i, c in enumerate(local)
            ],
            burst=bid,
            topic=BURST_TOPIC,
            timeout=timeout,
            idle=BURST_IDLE_S,
        )
        errors = sum(r["errors"] for r in res)
        if errors:
            raise RuntimeError(f"burst publishes answered with {errors} errors")
        sent_at = res[0]["sent_at"]
        last = max((r["last"] for r in res if r["received"]), default=sent_at)
        return {
            "sent_at": sent_at,
            "received": sum(r["received"] for r in res),
            "last": last,
            "completion_ms": 1000.0 * (last - sent_at),
            "acks": res[0]["acks"],
            "replies": res,
        }

    def reqrep(self, start_server: StartServer) -> Metrics:
        """Closed-loop request/reply from C clients: publish→ack, then ping→pong.

        Both windows run on the same server and connections, one after the
        other; ``reqrep.C.*`` are publish→ack, ``reqrep.C.ping_*`` ping→pong.
        """
        sc = self.scale
        out: Metrics = {}
        for clients in sc.reqrep_clients:
            with start_server() as srv:
                try:
                    self.connect_all(srv, clients, "rr")
                    for kind, prefix in (("publish", ""), ("ping", "ping_")):
                        out.update(self.reqrep_window(srv, clients, kind, prefix))
                finally:
                    self.close_all()
        return out

    def reqrep_window(self, srv: ServerProcess, clients: int, kind: str, prefix: str) -> Metrics:
        """One closed-loop window of every connection (``kind``: publish or ping)."""
        sc = self.scale
        warmup = min(1.0, sc.reqrep_s / 2)
        start_at = time.time() + 0.3
        scpu0, t0 = srv.cpu_seconds(), time.monotonic()
        res = self.lg.call_all(
            "reqrep",
            warmup + sc.reqrep_s + 30,
            topic=REQREP_TOPIC,
            start_at=start_at,
            warmup=warmup,
            duration=sc.reqrep_s,
            kind=kind,
        )
        # Includes the warm-up: a slight underestimate of the busy share.
        server_cpu = 100.0 * (srv.cpu_seconds() - scpu0) / (time.monotonic() - t0)
        failed = [f for r in res for f in r["failures"]]
        if failed:
            raise RuntimeError(f"request/reply clients ({kind}) failed: {failed[:3]}")
        rtts = [x for r in res for x in r["latencies"]]
        cpu = sum(r["cpu_window"] for r in res)
        tag = f"reqrep.{clients}.{prefix}"
        return {
            f"{tag}rt_per_s": sum(r["count"] for r in res) / sc.reqrep_s,
            f"{tag}rtt_p50_ms": percentile(rtts, 50),
            f"{tag}rtt_p99_ms": percentile(rtts, 99),
            f"{tag}loadgen_cpu_pct": 100.0 * cpu / (sc.reqrep_s * self.loadgen_cores),
            f"{tag}server_cpu_pct": server_cpu,
        }

    def chat(self, start_server: StartServer) -> Metrics:
        """R rooms x M members, each member broadcasting at a steady rate."""
        sc = self.scale
        rooms = [f"bench-room-{r}" for r in range(sc.chat_rooms)]
        # Whole rooms per worker: each worker then knows exactly what it should receive.
        per_worker: list[list[str]] = [[] for _ in range(self.lg.size)]
        for r, room in enumerate(rooms):
            per_worker[r % self.lg.size].extend([room] * sc.chat_members)
        n = sc.chat_rooms * sc.chat_members
        with start_server() as srv:
            try:
                self.connect_all(srv, n, "chat", rooms_per_worker=per_worker)
                busiest = self.busiest_share()
                grace = max(3.0, sc.chat_s)
                scpu0, rcpu0, t0 = srv.cpu_seconds(), srv.redis_cpu_seconds(), time.monotonic()
                res = self.lg.call_all(
                    "chat",
                    sc.chat_s + grace + 30,
                    rate=sc.chat_rate,
                    duration=sc.chat_s,
                    step=CHAT_STEP,
                    members=sc.chat_members,
                    timeout=grace,
                )
                wall = time.monotonic() - t0
                server_cpu = 100.0 * (srv.cpu_seconds() - scpu0) / wall
                rcpu1 = srv.redis_cpu_seconds()
            finally:
                self.close_all()
        delivered = sum(r["received"] for r in res)
        sent = sum(r["sent"] for r in res)
        start = min(r["start"] for r in res)
        last = max((r["last"] for r in res if r["received"]), default=start)
        window = max(sc.chat_s, last - start)
        lats = [x for r in res for x in r["latencies"]]
        cpu = sum(r["cpu_window"] for r in res)
        out: Metrics = {
            "chat.offered_per_s": sent * sc.chat_members / sc.chat_s,
            "chat.delivered_per_s": delivered / window,
            "chat.delivered_ratio": delivered / (sent * sc.chat_members) if sent else 0.0,
            "chat.p50_ms": percentile(lats, 50),
            "chat.p99_ms": percentile(lats, 99),
            "chat.loadgen_cpu_pct": 100.0 * cpu / (sc.chat_s * self.loadgen_cores),
            "chat.server_cpu_pct": server_cpu,
            "chat.busiest_worker_share": busiest,
        }
        if rcpu0 is not None and rcpu1 is not None:
            out["chat.redis_cpu_pct"] = 100.0 * (rcpu1 - rcpu0) / wall
        out.update(hop_split(res, "chat.", ""))
        return out

    def rules(self, start_server: StartServer) -> Metrics:
        """Routing rules: cost per publish with 0, 10, 100 and 1,000 rules.

        In-process first (:func:`bench.rules.micro`: ``RuleSet.evaluate`` per
        publish, no sockets). Then one rtcs per rule count, alive together and
        pinned to the same CPU: 0 is started without a rules file, the others
        with ``RTCS_RULES_FILE`` naming a file from
        :func:`bench.rules.rules_toml`. Each has ``rules_clients`` publishers
        and ``rules_subscribers`` subscribers on each topic.

        Each round, for the unmatched topic and then the matched one: every
        server alone in turn (order rotating by round) for one closed-loop
        publish→ack window (``rules.e2e.*``: round trips/s, the server's CPU
        per publish over the same window, how many publishes reached the
        subscribers and carried the rules' transform); then one window with
        every server's publishers at once (``rules.shared.*``): the servers
        share the CPU at the same moment, so the machine's other load hits
        them alike and their rates compare to within a few per cent. Medians
        over the rounds; ``*.rt_ratio`` is the median over rounds of the rate
        divided by the no-rules server's in the same round (or window).
        """
        sc = self.scale
        out: Metrics = micro(RULE_COUNTS, sc.rules_micro_runs, sc.rules_micro_s)
        windows: dict[tuple[str, str, int], list[Metrics]] = {}
        with (
            tempfile.TemporaryDirectory(prefix="bench-rules-") as tmp,
            contextlib.ExitStack() as stack,
        ):
            servers: dict[int, ServerProcess] = {}
            for n in RULE_COUNTS:
                env: dict[str, str] = {}
                if n:
                    path = Path(tmp) / f"rules-{n}.toml"
                    path.write_text(rules_toml(n))
                    env["RTCS_RULES_FILE"] = str(path)
                servers[n] = stack.enter_context(start_server(env=env, label=f"rules{n}"))
            stack.callback(self.close_all)  # before the servers stop
            for n, srv in servers.items():
                self.connect_all(srv, sc.rules_clients, f"rules{n}-pub", group=f"{n}.pub")
                for kind, topic in TOPICS.items():
                    subs = f"rules{n}-{kind}"
                    self.connect_all(srv, sc.rules_subscribers, subs, topic=topic, group=subs)
            step = RULES_STEP
            for r in range(sc.rules_rounds):
                at = r % len(RULE_COUNTS)
                order = RULE_COUNTS[at:] + RULE_COUNTS[:at]
                for kind, topic in TOPICS.items():
                    for n in order:
                        step += 1
                        alone = self.rules_window({n: servers[n]}, topic, step)
                        windows.setdefault(("e2e", kind, n), []).append(alone[n])
                    step += 1
                    for n, shared in self.rules_window(servers, topic, step).items():
                        windows.setdefault(("shared", kind, n), []).append(shared)
        for (mode, kind, n), runs in windows.items():
            base = windows[(mode, kind, 0)]
            per_round = [
                {**w, "rt_ratio": w["rt_per_s"] / b["rt_per_s"] if b["rt_per_s"] else 0.0}
                for w, b in zip(runs, base, strict=True)
            ]
            if kind == "matched" and matching_count(n):
                for w, u in zip(per_round, windows[(mode, "unmatched", n)], strict=True):
                    extra = w["server_us"] - u["server_us"]
                    w["server_us_per_matching_rule"] = extra / matching_count(n)
            for metric in per_round[0]:
                values = [w[metric] for w in per_round]
                out[f"rules.{mode}.{kind}.{n}.{metric}"] = statistics.median(values)
        return out

    def rules_window(
        self, servers: Mapping[int, ServerProcess], topic: str, step: int
    ) -> dict[int, Metrics]:
        """One closed-loop publish→ack window on ``topic`` of every server in ``servers``.

        Their publishers (groups ``<n>.pub``) run at once; metrics per server.
        With one server, also the latency and what its subscribers received.
        """
        sc = self.scale
        start_at = time.time() + 0.1
        t_begin = start_at + sc.rules_warmup_s
        self.lg.send_all(
            "reqrep",
            topic=topic,
            start_at=start_at,
            warmup=sc.rules_warmup_s,
            duration=sc.rules_s,
            group=[f"{n}.pub" for n in servers],
            data=PUBLISH_DATA,
            step=step,
        )
        try:
            # Not waiting for anything to settle: the servers' CPU is read at
            # the edges of the workers' counting window, by the same clock.
            time.sleep(max(0.0, t_begin - time.time()))
            cpu0 = {n: srv.cpu_seconds() for n, srv in servers.items()}
            w0 = time.monotonic()
            time.sleep(max(0.0, t_begin + sc.rules_s - time.time()))
            cpu1 = {n: srv.cpu_seconds() for n, srv in servers.items()}
            w1 = time.monotonic()
        finally:
            res = self.lg.recv_all(sc.rules_warmup_s + sc.rules_s + 30)
        failed = [f for r in res for f in r["failures"]]
        if failed:
            raise RuntimeError(f"rules publishers on {topic} failed: {failed[:3]}")
        out: dict[int, Metrics] = {}
        for n in servers:
            count = sum(r["by_group"][f"{n}.pub"] for r in res)
            cpu = cpu1[n] - cpu0[n]
            out[n] = {
                "rt_per_s": count / sc.rules_s,
                "server_us": 1e6 * cpu / count if count else 0.0,
                "server_cpu_pct": 100.0 * cpu / (w1 - w0) if w1 > w0 else 0.0,
            }
        sent = sum(r["sent"] for r in res)
        subs = self.split(sc.rules_subscribers)
        got = self.lg.call_all(
            "await_step",
            20.0,
            per_worker=[{"expected": sent * c} for c in subs],
            step=step,
            timeout=10.0,
        )
        delivered = sum(r["received"] for r in got)
        if len(servers) == 1:
            rtts = [x for r in res for x in r["latencies"]]
            (only,) = out.values()
            only["rtt_p50_ms"] = percentile(rtts, 50)
            only["rtt_p99_ms"] = percentile(rtts, 99)
            only["loadgen_cpu_pct"] = (
                100.0 * sum(r["cpu_window"] for r in res) / (sc.rules_s * self.loadgen_cores)
            )
            only["delivered_ratio"] = delivered / (sent * sc.rules_subscribers) if sent else 0.0
            only["routed_ratio"] = sum(r["marked"] for r in got) / delivered if delivered else 0.0
        return out

    def tracing(self, start_server: StartServer) -> Metrics:
        """Tracing off and on: :func:`bench.tracing.run`."""
        from bench import tracing

        return tracing.run(self, start_server)

    def run(self, workload: str, start_server: StartServer) -> Metrics:
        """Run one named workload.

        Raises:
            ValueError: unknown workload name.
        """
        if workload not in WORKLOADS:
            raise ValueError(f"unknown workload {workload!r}; choose from {', '.join(WORKLOADS)}")
        result: Metrics = getattr(self, workload)(start_server)
        return result
