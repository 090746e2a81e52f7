"""The ``tracing`` workload: what tracing costs a message, rtcs against itself.

Three rtcs processes alive together, pinned to the server CPU (:data:`CONFIGS`):
``[tracing] exporter = "none"`` (the default), ``"otlp"`` at ``sample_ratio``
1.0 and ``"otlp"`` at 0.01. Each traced server exports to its own
:class:`NullReceiver`, a tiny HTTP server in the benchmark process on
127.0.0.1 that answers 200 to every ``POST /v1/traces`` (and counts them:
proof the spans left). Every ratio is to the ``none`` server measured in the
same round.

- **Publish→ack** (``tracing.rr*``): publishers in a closed loop on a topic
  with one subscriber: round trips/s, RTT, the server's CPU per publish.
- **Fan-out** (``tracing.fan*``): publishers in a closed loop on a topic with
  ``fan_subscribers`` subscribers: deliveries/s (acked publishes x
  subscribers), delivery latency (publish sent → delivered) p50/p99, the
  server's CPU per delivery.

Each round runs every server alone in turn (order rotating), then all at
once (``*_shared``: they share the CPU at the same moment, so the machine's
other load hits them alike; the ratio judged).

- **In-process** (``tracing.micro*``, :func:`micro`): a publish through the
  topic route handler on Thespian's stock base (no sockets), to 1 and to 100
  local subscribers, with tracing off (``none``), on (``otlp`` at 1.0 and
  0.01, exporting to a :class:`NullReceiver`), and through a handler built
  without the tracing hook (``stripped``: :class:`_StrippedTopicHandler`,
  ``RouteHandler.route`` as it was before tracing), which is what "tracing
  off costs nothing measurable" is measured against.

:func:`tracing_rows` and :func:`render_tracing_table` make the table.
:func:`run` is the workload (``bench.workloads.Runner.tracing``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import statistics
import threading
import time
from collections.abc import Callable, Collection, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from bench.report import fmt

if TYPE_CHECKING:
    from bench.workloads import Runner, StartServer
    from rtcs.backends.base import Envelope
    from rtcs.metrics import DeliveryKind
    from rtcs.protocol.frames import RequestId
    from rtcs.sessions import Session

RR_TOPIC = "bench.trace.rr"
FAN_TOPIC = "bench.trace.fan"
TRACING_STEP = 3_000_000  # the tracing windows' step tags start above it

#: (key, label, exporter, sample ratio) of the servers measured, the baseline first.
CONFIGS: tuple[tuple[str, str, str, float], ...] = (
    ("none", "none", "none", 1.0),
    ("otlp", "otlp 1.0", "otlp", 1.0),
    ("otlp_0_01", "otlp 0.01", "otlp", 0.01),
)
#: In-process only: the handler without the tracing hook, then the servers' configurations.
MICRO_CONFIGS: tuple[tuple[str, str, str, float], ...] = (
    ("stripped", "no tracing code", "none", 1.0),
    *CONFIGS,
)
MICRO_FANOUTS = (1, 100)
#: In-process: sampled spans between two flushes of the exporter, about the
#: SDK's batch (512), well below its queue (2,048): no span is dropped.
FLUSH_SPANS = 600


@dataclass(frozen=True, slots=True)
class TracingScale:
    """Sizes and durations of the tracing workload at one ``--scale``."""

    rr_publishers: int  # per server, closed loop on RR_TOPIC (one subscriber); likewise
    fan_publishers: int  # per server, closed loop on FAN_TOPIC (at least one per loadgen worker)
    fan_subscribers: int  # per server, on FAN_TOPIC
    window_s: float  # one measured window, after warmup_s
    warmup_s: float
    rounds: int  # per repeat: every server alone, then all at once, for each kind
    micro_runs: int  # in-process: runs per configuration (median)
    micro_s: float  # in-process: seconds of publishes per run


SCALES = {
    "small": TracingScale(4, 1, 20, 0.15, 0.05, 1, 1, 0.01),
    "medium": TracingScale(50, 2, 1_000, 1.0, 0.3, 2, 3, 0.1),
    "full": TracingScale(50, 2, 1_000, 2.0, 0.3, 4, 5, 0.3),
}


# --- the null OTLP receiver ---------------------------------------------------------------


class NullReceiver:
    """An OTLP/HTTP collector that keeps nothing: 200 to every ``POST /v1/traces``.

    Runs in a thread of this process on 127.0.0.1 (a free port); counts the
    requests and their bytes. Obligations: :meth:`close` (or use ``with``).
    """

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a collector does

            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(size)
                ok = self.path == "/v1/traces"
                if ok:
                    with lock:
                        receiver.requests += 1
                        receiver.bytes += size
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10.0)

    def __enter__(self) -> NullReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve_null(conn: Connection) -> None:
    """A :class:`NullReceiver` in a process of its own: its URL, then serve until told."""
    with NullReceiver() as receiver:
        conn.send(receiver.url)
        with contextlib.suppress(EOFError, OSError):
            conn.recv()


@contextlib.contextmanager
def receiver_process() -> Iterator[str]:
    """A :class:`NullReceiver` in another process (its URL), stopped by its PID on exit.

    For the in-process measurement: receiving must not take this process's CPU.

    Raises:
        RuntimeError: it did not start within 30 s.
    """
    spawn = multiprocessing.get_context("spawn")
    parent, child = spawn.Pipe()
    proc = spawn.Process(target=_serve_null, args=(child,), daemon=True)
    proc.start()
    try:
        if not parent.poll(30.0):
            raise RuntimeError("the null OTLP receiver process did not start")
        yield str(parent.recv())
    finally:
        with contextlib.suppress(OSError):
            parent.send(None)
        proc.join(10.0)
        if proc.is_alive():
            proc.terminate()
            proc.join(10.0)


def server_env(exporter: str, ratio: float, receiver: NullReceiver | None) -> dict[str, str]:
    """The environment that gives a bench rtcs this tracing configuration."""
    if exporter == "none":
        return {}
    assert receiver is not None
    return {
        "RTCS_TRACING_EXPORTER": exporter,
        "RTCS_TRACING_SAMPLE_RATIO": str(ratio),
        "RTCS_TRACING_ENDPOINT": receiver.url,
        "RTCS_TRACING_SERVICE_NAME": "rtcs-bench",
    }


# --- the in-process measurement -----------------------------------------------------------


class _NullSink:
    """A session's socket that keeps nothing (``rtcs.sessions.Sink``)."""

    def __init__(self, connection_id: str) -> None:
        self.connection_id = connection_id
        self.frames = 0

    def push(self, frame: bytes) -> bool:
        self.frames += 1
        return True

    def push_message(self, frame: bytes) -> bool:
        self.frames += 1
        return True

    def close(self, code: int, reason: str = "") -> None:
        pass


def _stripped_handler() -> type:
    """A TopicHandler whose ``route`` is ``RouteHandler.route`` without its tracing hook.

    The in-process baseline of "tracing off costs nothing": the same path
    without the one test of ``self.trace`` (and what it guards). Kept as a
    copy on purpose; it must follow any other change to ``RouteHandler.route``.
    """
    from rtcs.actors.routing import TopicHandler

    class _StrippedTopicHandler(TopicHandler):
        def route(
            self,
            kind: DeliveryKind,
            recipients: Collection[Session],
            tail: bytes,
            envelope: Callable[[], Envelope],
            session: Session,
            request_id: RequestId,
            started: float,
            key: Hashable | None = None,
        ) -> None:
            ctx = self.ctx
            ctx.metrics.delivered(kind, len(recipients))
            then = self.finish(session, request_id)

            def routed() -> None:
                ctx.after_write(lambda: ctx.metrics.routed(kind, time.perf_counter() - started))
                self.publish_remote(envelope, then)

            self.fanout(recipients, tail, routed, key)

    return _StrippedTopicHandler


@contextlib.contextmanager
def _micro_node(
    exporter: str, ratio: float, fanout: int, stripped: bool, endpoint: str
) -> Iterator[Callable[[int], None]]:
    """A topic route handler with ``fanout`` subscribers, driven by direct calls.

    The handler is called as Thespian's dispatch calls it
    (``receiveMessage``), without an actor system: a publish to local
    subscribers needs none (no timer, no send, no broker). Yields
    ``publish(n)``: ``n`` publishes, each as the connection actor sends it
    (the traced request inside an ``rtcs.receive`` span when tracing is on),
    handled up to the publisher's ack; with tracing on, their spans are
    exported too (to ``endpoint``, in batches of about :data:`FLUSH_SPANS`
    sampled spans and the rest at the end: the SDK's queue never overflows,
    so no span is dropped uncounted).

    Raises:
        RuntimeError: the publishes were not acked.
    """
    from rtcs import config
    from rtcs.actors.context import NodeContext
    from rtcs.actors.messages import Configure, RoutePublish, RouteSubscribe
    from rtcs.actors.routing import TopicHandler
    from rtcs.actors.routing.handler import frame_attributes, traced_request
    from rtcs.auth.permissions import Policy
    from rtcs.auth.tokens import TokenVerifier
    from rtcs.backends.memory import memory_backends
    from rtcs.config.settings import TracingSettings
    from rtcs.logs import get_logger
    from rtcs.metrics import Metrics
    from rtcs.runtime.directory import Directory
    from rtcs.sessions import SessionRegistry
    from rtcs.tracing import build_tracing, use_tracing

    settings = config.load(None, {}, {"auth.secret": "bench-micro-" + "x" * 32})
    ctx = NodeContext(
        settings=settings,
        node_id="bench-micro",
        metrics=Metrics(),
        backends=memory_backends(),
        policy=Policy.default(),
        verifier=TokenVerifier(settings.auth),
        directory=Directory(),
        sessions=SessionRegistry(settings.session.replay_buffer),
        log=get_logger("bench.tracing", node="bench-micro"),
    )
    tracing = build_tracing(
        TracingSettings(exporter=exporter, sample_ratio=ratio, endpoint=endpoint), "bench-micro"
    )
    use_tracing(ctx, tracing)
    try:
        handler = (_stripped_handler() if stripped else TopicHandler)()
        handle = handler.receiveMessage
        handle(Configure(ctx), None)
        for i in range(fanout):
            session = ctx.sessions.create(f"sub-{i}", ("user",))
            ctx.sessions.attach(session, _NullSink(f"c-sub-{i}"))
            handle(RouteSubscribe(session, FAN_TOPIC, i), None)
        publisher = ctx.sessions.create("pub", ("user",))
        sink = _NullSink("c-pub")
        ctx.sessions.attach(publisher, sink)
        data = {"t": 1, "s": 0, "text": "hello"}
        attributes: dict[str, Any] = {
            **(frame_attributes(RoutePublish(publisher, FAN_TOPIC, data, 0)) or {}),
            "rtcs.connection_id": "c-pub",
            "rtcs.user": "pub",
        }

        def publish(n: int) -> None:
            if tracing is None:
                for i in range(n):
                    handle(RoutePublish(publisher, FAN_TOPIC, data, i), None)
                return
            sample, receive = tracing.sample, tracing.receive
            flush = tracing.provider.force_flush
            every = max(1, round(FLUSH_SPANS / (3 * ratio))) if ratio else n + 1
            for i in range(n):
                request = RoutePublish(publisher, FAN_TOPIC, data, i)
                if not sample():  # as the connection actor does: sent plain
                    handle(request, None)
                    continue
                span = receive(attributes)
                handle(traced_request(request, span), None)
                span.end()
                if i % every == every - 1:
                    flush()
            # The export of these spans counts too, and must not run (in the
            # SDK's thread) while the next configuration is timed.
            flush()

        publish(3)
        before = sink.frames
        publish(10)
        if sink.frames - before != 10:
            raise RuntimeError(f"in-process publishes were not acked: {sink.frames - before}/10")
        yield publish
    finally:
        if tracing is not None:
            tracing.shutdown()


def _time_per_publish(publish: Callable[[int], None], budget_s: float) -> float:
    """CPU µs of this process (every thread: the exporter's too) per publish, over
    about ``budget_s`` seconds (calibrated on a few)."""
    counter = time.process_time
    t0 = counter()
    publish(20)
    per = max((counter() - t0) / 20, 1e-7)
    n = max(20, int(budget_s / per))
    t0 = counter()
    publish(n)
    return (counter() - t0) / n * 1e6


def micro(runs: int, budget_s: float, fanouts: Sequence[int] = MICRO_FANOUTS) -> dict[str, float]:
    """``tracing.micro<F>.<config>.us_per_publish`` and ``.ratio`` (to ``none``).

    For each fan-out size, every configuration of :data:`MICRO_CONFIGS` is
    timed ``runs`` times, interleaved (a, b, c, d, a, b, ...), so drift hits
    all alike; medians.
    """
    out: dict[str, float] = {}
    with receiver_process() as endpoint:
        for fanout in fanouts:
            with contextlib.ExitStack() as stack:
                publishers = {
                    key: stack.enter_context(
                        _micro_node(exporter, ratio, fanout, key == "stripped", endpoint)
                    )
                    for key, _, exporter, ratio in MICRO_CONFIGS
                }
                times: dict[str, list[float]] = {key: [] for key in publishers}
                for _ in range(runs):
                    for key, publish in publishers.items():
                        times[key].append(_time_per_publish(publish, budget_s))
            base = statistics.median(times["none"])
            for key, values in times.items():
                us = statistics.median(values)
                out[f"tracing.micro{fanout}.{key}.us_per_publish"] = us
                out[f"tracing.micro{fanout}.{key}.ratio"] = us / base if base else 0.0
    return out


# --- the end-to-end windows ---------------------------------------------------------------


def window(
    runner: Runner,
    servers: Mapping[str, Any],
    kind: str,
    step: int,
    subscribers: int,
) -> dict[str, dict[str, float]]:
    """One closed-loop window of publishers ``<config>.<kind>`` of every server in ``servers``.

    ``kind`` is "rr" (topic :data:`RR_TOPIC`) or "fan" (:data:`FAN_TOPIC`);
    ``subscribers`` per server on that topic. Metrics per server: round
    trips/s, deliveries/s (acked publishes x ``subscribers``: a publish is
    acked after its last local delivery), the server's CPU per publish and
    its CPU share; with one server, also the RTT and the delivery latency
    percentiles and the share of deliveries that arrived.
    """
    sc = SCALES[runner.scale.name]
    topic = RR_TOPIC if kind == "rr" else FAN_TOPIC
    start_at = time.time() + 0.1
    t_begin = start_at + sc.warmup_s
    runner.lg.send_all(
        "reqrep",
        topic=topic,
        start_at=start_at,
        warmup=sc.warmup_s,
        duration=sc.window_s,
        group=[f"{key}.{kind}" for key in servers],
        data={"text": "hello"},
        step=step,
    )
    try:
        # The servers' CPU is read at the edges of the workers' counting window.
        time.sleep(max(0.0, t_begin - time.time()))
        cpu0 = {key: srv.cpu_seconds() for key, srv in servers.items()}
        w0 = time.monotonic()
        time.sleep(max(0.0, t_begin + sc.window_s - time.time()))
        cpu1 = {key: srv.cpu_seconds() for key, srv in servers.items()}
        w1 = time.monotonic()
    finally:
        res = runner.lg.recv_all(sc.warmup_s + sc.window_s + 30)
    failed = [f for r in res for f in r["failures"]]
    if failed:
        raise RuntimeError(f"tracing publishers on {topic} failed: {failed[:3]}")
    out: dict[str, dict[str, float]] = {}
    for key in servers:
        count = sum(r["by_group"][f"{key}.{kind}"] for r in res)
        cpu = cpu1[key] - cpu0[key]
        out[key] = {
            "rt_per_s": count / sc.window_s,
            "deliveries_per_s": count * subscribers / sc.window_s,
            "server_us": 1e6 * cpu / count if count else 0.0,
            "server_cpu_pct": 100.0 * cpu / (w1 - w0) if w1 > w0 else 0.0,
        }
    sent = sum(r["sent"] for r in res)
    local = runner.split(subscribers)
    got = runner.lg.call_all(
        "await_step",
        40.0,
        per_worker=[{"expected": sent * c} for c in local],
        step=step,
        timeout=30.0,
    )
    if len(servers) == 1:
        (only,) = out.values()
        rtts = [x for r in res for x in r["latencies"]]
        lats = [x for r in got for x in r["latencies"]]
        only["rtt_p50_ms"] = _percentile(rtts, 50)
        only["rtt_p99_ms"] = _percentile(rtts, 99)
        only["p50_ms"] = _percentile(lats, 50)
        only["p99_ms"] = _percentile(lats, 99)
        received = sum(r["received"] for r in got)
        only["delivered_ratio"] = received / (sent * subscribers) if sent else 0.0
    return out


def _percentile(values: Sequence[float], q: float) -> float:
    from bench.workloads import percentile

    return percentile(values, q)


def _connect(runner: Runner, servers: Mapping[str, Any], sc: TracingScale) -> None:
    """Every server's publishers and subscribers (groups ``<config>.rr``, ``<config>.fan``)."""
    # Every load generator worker drives some publishers of each group.
    rr_publishers = max(sc.rr_publishers, runner.lg.size)
    fan_publishers = max(sc.fan_publishers, runner.lg.size)
    for key, srv in servers.items():
        runner.connect_all(srv, rr_publishers, f"trace-{key}-rr", group=f"{key}.rr")
        runner.connect_all(srv, 1, f"trace-{key}-rrsub", topic=RR_TOPIC, group=f"{key}.rrsub")
        runner.connect_all(srv, fan_publishers, f"trace-{key}-fan", group=f"{key}.fan")
        runner.connect_all(
            srv, sc.fan_subscribers, f"trace-{key}-fansub", topic=FAN_TOPIC, group=f"{key}.sub"
        )


def run(runner: Runner, start_server: StartServer) -> dict[str, float]:
    """The workload: in-process first, then the three servers' windows (module docstring)."""
    sc = SCALES[runner.scale.name]
    out: dict[str, float] = micro(sc.micro_runs, sc.micro_s)
    windows: dict[tuple[str, str], list[dict[str, float]]] = {}
    keys = [key for key, _, _, _ in CONFIGS]
    with contextlib.ExitStack() as receiving:
        receivers = {
            key: receiving.enter_context(NullReceiver())
            for key, _, exporter, _ in CONFIGS
            if exporter != "none"
        }
        with contextlib.ExitStack() as stack:
            servers: dict[str, Any] = {}
            for key, _, exporter, ratio in CONFIGS:
                env = server_env(exporter, ratio, receivers.get(key))
                servers[key] = stack.enter_context(start_server(env=env, label=f"tracing-{key}"))
            stack.callback(runner.close_all)  # before the servers stop
            _connect(runner, servers, sc)
            step = TRACING_STEP
            for r in range(sc.rounds):
                at = r % len(keys)
                order = keys[at:] + keys[:at]
                for kind, subscribers in (("rr", 1), ("fan", sc.fan_subscribers)):
                    for key in order:
                        step += 1
                        alone = window(runner, {key: servers[key]}, kind, step, subscribers)
                        windows.setdefault((kind, key), []).append(alone[key])
                    step += 1
                    for key, shared in window(runner, servers, kind, step, subscribers).items():
                        windows.setdefault((f"{kind}_shared", key), []).append(shared)
        # The servers stopped, exporting what they still held: every span has arrived.
        for key, receiver in receivers.items():
            out[f"tracing.export.{key}.requests"] = float(receiver.requests)
            out[f"tracing.export.{key}.kb"] = receiver.bytes / 1024
    for (mode, key), runs in windows.items():
        base = windows[(mode, "none")]
        for metric in runs[0]:
            values = [w[metric] for w in runs]
            out[f"tracing.{mode}.{key}.{metric}"] = statistics.median(values)
        for metric in ("rt_per_s", "deliveries_per_s"):
            ratios = [
                w[metric] / b[metric] if b[metric] else 0.0 for w, b in zip(runs, base, strict=True)
            ]
            out[f"tracing.{mode}.{key}.{metric.split('_')[0]}_ratio"] = statistics.median(ratios)
    return out


# --- the table ------------------------------------------------------------------------------

#: (metric key template, label, unit) of the table's rows, in order; ``{c}`` is the
#: configuration key. ``*ratio`` values are medians of per-round ratios to ``none``.
ROWS: tuple[tuple[str, str, str], ...] = (
    ("tracing.rr.{c}.rt_per_s", "publish→ack", "/s"),
    ("tracing.rr.{c}.rt_ratio", "publish→ack / none (same round)", "x"),
    ("tracing.rr.{c}.rtt_p50_ms", "publish→ack p50", "ms"),
    ("tracing.rr.{c}.rtt_p99_ms", "publish→ack p99", "ms"),
    ("tracing.rr.{c}.server_us", "server CPU per publish", "µs"),
    ("tracing.rr_shared.{c}.rt_per_s", "all at once: publish→ack", "/s"),
    ("tracing.rr_shared.{c}.rt_ratio", "all at once: publish→ack / none", "x"),
    ("tracing.rr_shared.{c}.server_us", "all at once: server CPU per publish", "µs"),
    ("tracing.fan.{c}.deliveries_per_s", "fan-out: deliveries", "/s"),
    ("tracing.fan.{c}.deliveries_ratio", "fan-out: deliveries / none (same round)", "x"),
    ("tracing.fan.{c}.p50_ms", "fan-out: delivery latency p50", "ms"),
    ("tracing.fan.{c}.p99_ms", "fan-out: delivery latency p99", "ms"),
    ("tracing.fan.{c}.server_us", "fan-out: server CPU per publish", "µs"),
    ("tracing.fan.{c}.delivered_ratio", "fan-out: delivered / expected", ""),
    ("tracing.fan_shared.{c}.deliveries_per_s", "all at once: fan-out deliveries", "/s"),
    ("tracing.fan_shared.{c}.deliveries_ratio", "all at once: fan-out deliveries / none", "x"),
    ("tracing.micro1.{c}.us_per_publish", "in-process, 1 subscriber: per publish", "µs"),
    ("tracing.micro1.{c}.ratio", "in-process, 1 subscriber: / none", "x"),
    ("tracing.micro100.{c}.us_per_publish", "in-process, 100 subscribers: per publish", "µs"),
    ("tracing.micro100.{c}.ratio", "in-process, 100 subscribers: / none", "x"),
    ("tracing.export.{c}.requests", "OTLP requests received", ""),
)


@dataclass(frozen=True, slots=True)
class TracingRow:
    """One metric of the tracing workload: its median per configuration key."""

    key: str  # the metric key template, with "{c}"
    label: str
    unit: str
    values: dict[str, float]


def tracing_rows(
    summary: Mapping[str, Mapping[str, float]], target: str = "rtcs"
) -> list[TracingRow]:
    """The rows of ``summary`` (``{metric: {target: median}}``) with any value for ``target``."""
    rows = []
    for template, label, unit in ROWS:
        values = {
            key: summary[metric][target]
            for key, _, _, _ in MICRO_CONFIGS
            if target in summary.get(metric := template.format(c=key), {})
        }
        if values:
            rows.append(TracingRow(template, label, unit, values))
    return rows


def render_tracing_table(rows: Sequence[TracingRow]) -> str:
    """The "Tracing" table (Markdown): one column per configuration measured."""
    keys = [key for key, _, _, _ in MICRO_CONFIGS if any(key in row.values for row in rows)]
    labels = {key: label for key, label, _, _ in MICRO_CONFIGS}
    cols = ["metric", "unit", *(labels[key] for key in keys)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in rows:
        cells = [row.label, row.unit, *(fmt(row.values.get(key)) for key in keys)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
