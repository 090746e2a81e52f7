"""Load generator: worker processes, each driving many connections on one loop.

The runner talks to each worker over a pipe with ``(command, kwargs)`` tuples
and gets one ``dict`` back per command. Every reply carries the worker's
cumulative CPU seconds (``cpu``) and wall clock (``wall``) so the runner can
report how busy the generator was: a saturated generator shows as ~100 %.

Commands (all bounded by their own timeout):

``connect``      open ``n`` connections (handshake + token + welcome), then
                 optionally subscribe each to a topic or join it to a room.
``publisher``    open one extra connection used by ``publish``.
``publish``      open-loop publishes at a fixed rate for a duration.
``await_step``   wait until this worker's subscribers received a step's messages.
``reqrep``       every connection (of one group) runs publish→ack in a closed loop.
``chat``         every connection broadcasts to its room at a steady rate, then
                 waits for the deliveries of its own rooms.
``close``        abort every connection.
``cpu``          just report CPU and wall clock.

Payloads carry ``"t"``, the sender's ``time.time_ns()``; all processes run on
one machine, so receive time minus ``t`` is the end-to-end latency. They also
carry ``"w"``, the ``server`` named in the sender's ``welcome`` (which worker it
is on): a delivery to a connection welcomed by another worker crossed between
workers (through Redis for rtcs), and its latency is kept apart as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from bench.wsclient import BenchConnection, connect

LATENCY_SAMPLES = 100_000
REPLY_TYPES = frozenset({"ack", "subscribed", "joined", "error", "pong"})


class LoadgenError(RuntimeError):
    """A worker failed a command, died, or did not answer in time."""


def raise_nofile_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(slots=True)
class ConnState:
    """What the worker tracks per connection."""

    welcome: asyncio.Future[dict[str, Any]]
    pending: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    next_id: int = 0
    room: str | None = None
    group: str = ""  # ``connect``'s group: ``reqrep`` can drive one group only
    server: str = ""  # ``welcome.server``: which worker this connection is on
    # request/reply mode: called with each reply instead of resolving a future
    on_reply: Callable[[BenchConnection, ConnState, dict[str, Any]], None] | None = None
    rr_sent_ns: int = 0


@dataclass(slots=True)
class StepStats:
    """Deliveries seen by one worker for one step (fan-out step or chat run).

    ``latencies_ms`` samples every delivery; ``same_ms`` and ``cross_ms`` those
    that stayed on the sender's worker and those that crossed to another one.
    """

    received: int = 0
    received_cross: int = 0
    marked: int = 0  # deliveries whose data has a ``routed`` field (set by routing rules)
    last_ns: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    same_ms: list[float] = field(default_factory=list)
    cross_ms: list[float] = field(default_factory=list)


def sample(values: list[float], seen: int, value: float, rng: random.Random) -> None:
    """Add ``value`` (the ``seen``-th) to a uniform reservoir of LATENCY_SAMPLES."""
    if len(values) < LATENCY_SAMPLES:
        values.append(value)
    else:
        j = rng.randrange(seen)
        if j < LATENCY_SAMPLES:
            values[j] = value


class Worker:
    """One load generator process: owns connections and answers commands."""

    def __init__(self, pipe: Connection, index: int) -> None:
        self.pipe = pipe
        self.index = index
        self.conns: list[BenchConnection] = []
        self.publisher: BenchConnection | None = None
        self.steps: dict[int, StepStats] = {}
        self.acks = 0
        self.errors = 0
        self.error_samples: list[str] = []
        self.rng = random.Random(index)

    # frames -------------------------------------------------------------------
    def on_text(self, conn: BenchConnection, payload: bytes) -> None:
        """Dispatch one server frame: deliveries are counted, replies resolved."""
        msg = json.loads(payload)
        kind = msg.get("type")
        if kind == "message":
            data = msg.get("data")
            if not isinstance(data, dict) or "s" not in data:
                return
            now = time.time_ns()
            st = self.steps.get(data["s"])
            if st is None:
                st = self.steps[data["s"]] = StepStats()
            st.received += 1
            st.last_ns = now
            if "routed" in data:
                st.marked += 1
            lat = (now - data["t"]) / 1e6
            # Reservoir sampling keeps the sample uniform over the whole step.
            sample(st.latencies_ms, st.received, lat, self.rng)
            state = conn.state
            assert isinstance(state, ConnState)
            if data.get("w", state.server) != state.server:
                st.received_cross += 1
                sample(st.cross_ms, st.received_cross, lat, self.rng)
            else:
                sample(st.same_ms, st.received - st.received_cross, lat, self.rng)
            return
        state = conn.state
        assert isinstance(state, ConnState)
        if kind in REPLY_TYPES:
            if state.on_reply is not None:
                state.on_reply(conn, state, msg)
                return
            if kind == "error":
                self.errors += 1
                if len(self.error_samples) < 5:
                    self.error_samples.append(f"{msg.get('code')}: {msg.get('message')}")
            fut = state.pending.pop(msg.get("id"), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
            elif kind == "ack":
                self.acks += 1
        elif kind == "welcome" and not state.welcome.done():
            state.server = str(msg.get("server", ""))
            state.welcome.set_result(msg)

    def frame_id(self, conn: BenchConnection) -> int:
        state = conn.state
        assert isinstance(state, ConnState)
        state.next_id += 1
        return state.next_id

    async def request(
        self, conn: BenchConnection, frame: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        """Send ``frame`` with a fresh id and wait for the reply carrying it.

        Raises:
            LoadgenError: the reply was an ``error`` frame.
            TimeoutError: no reply within ``timeout``.
        """
        state = conn.state
        assert isinstance(state, ConnState)
        fid = self.frame_id(conn)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        state.pending[fid] = fut
        conn.send(json.dumps({**frame, "id": fid}).encode())
        async with asyncio.timeout(timeout):
            reply = await fut
        if reply.get("type") == "error":
            raise LoadgenError(f"{frame['type']}: {reply.get('code')}: {reply.get('message')}")
        return reply

    # connections ----------------------------------------------------------------
    async def open_one(
        self, host: str, port: int, path: str, local_addr: str | None, timeout: float
    ) -> BenchConnection:
        """Connect and wait for ``welcome``; the connection's state is set up."""
        loop = asyncio.get_running_loop()
        welcome: asyncio.Future[dict[str, Any]] = loop.create_future()

        def on_text(conn: BenchConnection, payload: bytes) -> None:
            if conn.state is None:
                conn.state = ConnState(welcome)
            self.on_text(conn, payload)

        conn = await connect(host, port, path, on_text, local_addr=local_addr, timeout=timeout)
        if conn.state is None:
            conn.state = ConnState(welcome)
        try:
            async with asyncio.timeout(timeout):
                await welcome
        except BaseException:
            conn.abort()
            raise
        return conn

    async def cmd_connect(
        self,
        host: str,
        port: int,
        tokens: Sequence[str],
        local_addrs: Sequence[str],
        concurrency: int,
        topic: str | None = None,
        rooms: Sequence[str] | None = None,
        timeout: float = 60.0,
        group: str = "",
    ) -> dict[str, Any]:
        """Open ``len(tokens)`` connections, ``concurrency`` handshakes at a time.

        ``group`` tags them, so ``reqrep`` can drive this group alone.
        """
        sem = asyncio.Semaphore(concurrency)
        failures: list[str] = []
        opened: list[BenchConnection | None] = [None] * len(tokens)

        async def one(i: int) -> None:
            async with sem:
                try:
                    opened[i] = await self.open_one(
                        host,
                        port,
                        f"/ws?token={tokens[i]}",
                        local_addrs[i % len(local_addrs)] if local_addrs else None,
                        timeout,
                    )
                except (OSError, TimeoutError, ConnectionError) as exc:
                    failures.append(repr(exc))

        start = time.time()
        async with asyncio.timeout(timeout + 5):
            await asyncio.gather(*(one(i) for i in range(len(tokens))))
        end = time.time()
        conns = [c for c in opened if c is not None]
        for conn in conns:
            state = conn.state
            assert isinstance(state, ConnState)
            state.group = group
        self.conns.extend(conns)
        if topic is not None or rooms is not None:

            async def setup(i: int, conn: BenchConnection) -> None:
                async with sem:
                    if topic is not None:
                        await self.request(conn, {"type": "subscribe", "topic": topic}, timeout)
                    if rooms is not None:
                        room = rooms[i]
                        await self.request(conn, {"type": "join", "room": room}, timeout)
                        state = conn.state
                        assert isinstance(state, ConnState)
                        state.room = room

            async with asyncio.timeout(timeout + 5):
                await asyncio.gather(*(setup(i, c) for i, c in enumerate(conns)))
        servers: dict[str, int] = {}
        for conn in conns:
            state = conn.state
            assert isinstance(state, ConnState)
            servers[state.server] = servers.get(state.server, 0) + 1
        return {
            "opened": len(conns),
            "servers": servers,
            "failed": len(failures),
            "failures": failures[:5],
            "start": start,
            "end": end,
        }

    async def cmd_publisher(self, host: str, port: int, token: str) -> dict[str, Any]:
        """Open the connection that ``publish`` uses; reply with its ``server``."""
        self.publisher = await self.open_one(host, port, f"/ws?token={token}", None, 10.0)
        state = self.publisher.state
        assert isinstance(state, ConnState)
        return {"server": state.server}

    async def paced(
        self, senders: Sequence[BenchConnection], rate: float, duration: float, make: Any
    ) -> tuple[int, float]:
        """Send ``rate`` frames/s in total, round-robin over ``senders``, for ``duration``.

        ``make(conn)`` returns the frame bytes. A tick sends whatever is due, so
        the aggregate rate holds even when the loop is late. Returns the count
        sent and the start time (epoch seconds).
        """
        loop = asyncio.get_running_loop()
        start_mono = loop.time()
        start = time.time()
        total = int(rate * duration + 0.5)
        sent = 0
        nxt = 0
        tick = min(0.01, 1.0 / rate) if rate > 0 else 0.01
        while sent < total:
            elapsed = loop.time() - start_mono
            due = min(total, int(elapsed * rate) + 1)
            while sent < due:
                conn = senders[nxt]
                nxt = (nxt + 1) % len(senders)
                if conn.is_open:
                    conn.send(make(conn))
                sent += 1
            if sent >= total:
                break
            await asyncio.sleep(max(0.0, (sent / rate) - (loop.time() - start_mono), tick / 4))
        return sent, start

    async def cmd_publish(
        self, rate: float, duration: float, step: int, topic: str
    ) -> dict[str, Any]:
        """Publish to ``topic`` at ``rate``/s for ``duration`` seconds (open loop)."""
        pub = self.publisher
        if pub is None:
            raise LoadgenError("no publisher connection")
        pub_state = pub.state
        assert isinstance(pub_state, ConnState)
        server = pub_state.server

        def make(conn: BenchConnection) -> bytes:
            frame = {
                "type": "publish",
                "id": self.frame_id(conn),
                "topic": topic,
                "data": {"s": step, "t": time.time_ns(), "w": server},
            }
            return json.dumps(frame).encode()

        sent, start = await self.paced([pub], rate, duration, make)
        return {"sent": sent, "start": start}

    async def cmd_await_step(
        self, step: int, expected: int, timeout: float, idle: float = 1.5
    ) -> dict[str, Any]:
        """Wait until ``expected`` deliveries of ``step`` arrived here, or progress stops.

        Gives up after ``timeout`` seconds, or ``idle`` seconds without a new
        delivery; returns what arrived.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_count = -1
        last_change = loop.time()
        while True:
            st = self.steps.get(step, StepStats())
            now = loop.time()
            if st.received >= expected or now >= deadline:
                break
            if st.received != last_count:
                last_count, last_change = st.received, now
            elif now - last_change >= idle:
                break
            await asyncio.sleep(0.02)
        st = self.steps.pop(step, StepStats())
        return {
            "received": st.received,
            "received_cross": st.received_cross,
            "marked": st.marked,
            "last": st.last_ns / 1e9,
            "latencies": st.latencies_ms,
            "same": st.same_ms,
            "cross": st.cross_ms,
        }

    async def cmd_reqrep(
        self,
        topic: str,
        start_at: float,
        warmup: float,
        duration: float,
        group: str | Sequence[str] | None = None,
        data: dict[str, Any] | None = None,
        step: int | None = None,
    ) -> dict[str, Any]:
        """Every connection (of ``group``, if given): publish to ``topic``, await the ack, repeat.

        ``group`` may name several groups, all driven at once; ``by_group`` in
        the reply has the round trips counted per group.

        Round trips completing inside ``[start_at + warmup, start_at + warmup +
        duration]`` (epoch seconds) are counted; latencies are perf-counter RTTs.
        Driven from the frame callback (no task or future per request) so the
        generator spends as little CPU per round trip as it can. The payload is
        ``{"t": <ns>}`` plus ``"s": step`` (so subscribers count deliveries
        per step, see ``await_step``) and the fields of ``data``. ``sent`` in
        the reply counts every publish, warm-up and tail included.
        """
        loop = asyncio.get_running_loop()
        t_begin = start_at + warmup
        t_end = t_begin + duration
        rtts: list[float] = []
        counted = 0
        in_flight = 0
        sent = 0
        groups = None if group is None else {group} if isinstance(group, str) else set(group)
        by_group = dict.fromkeys(groups or (), 0)
        failures: list[str] = []
        finished = loop.create_future()
        rng = self.rng
        head = b'{"type":"publish","topic":"' + topic.encode() + b'","id":'
        fields = {**(data or {}), **({} if step is None else {"s": step})}
        # The other fields of the payload, after "t": b'' or b',"s":1,...'.
        rest = json.dumps(fields, separators=(",", ":")).encode()[1:-1]
        rest = b"," + rest if rest else b""
        perf_ns, time_ns, wall = time.perf_counter_ns, time.time_ns, time.time

        def send_next(conn: BenchConnection, state: ConnState) -> None:
            nonlocal in_flight, sent
            state.next_id += 1
            state.rr_sent_ns = perf_ns()
            in_flight += 1
            sent += 1
            conn.send(b'%s%d,"data":{"t":%d%s}}' % (head, state.next_id, time_ns(), rest))

        def on_reply(conn: BenchConnection, state: ConnState, msg: dict[str, Any]) -> None:
            nonlocal counted, in_flight
            t1 = perf_ns()
            in_flight -= 1
            if msg.get("type") != "ack":
                failures.append(f"publish: {msg.get('code')}: {msg.get('message')}")
                state.on_reply = None
            else:
                now = wall()
                if t_begin <= now <= t_end:
                    counted += 1
                    if groups is not None:
                        by_group[state.group] += 1
                    rtt = (t1 - state.rr_sent_ns) / 1e6
                    if len(rtts) < LATENCY_SAMPLES:
                        rtts.append(rtt)
                    else:
                        j = rng.randrange(counted)
                        if j < LATENCY_SAMPLES:
                            rtts[j] = rtt
                if now < t_end and conn.is_open:
                    send_next(conn, state)
                    return
                state.on_reply = None
            if in_flight == 0 and not finished.done():
                finished.set_result(None)

        conns = [
            c
            for c in self.conns
            if groups is None or (isinstance(c.state, ConnState) and c.state.group in groups)
        ]
        if not conns:
            raise LoadgenError(f"no connections in group {group!r}")
        await asyncio.sleep(max(0.0, start_at - time.time()))
        for conn in conns:
            state = conn.state
            assert isinstance(state, ConnState)
            state.on_reply = on_reply
            send_next(conn, state)
        await asyncio.sleep(max(0.0, t_begin - time.time()))
        cpu_begin = cpu_seconds()
        await asyncio.sleep(max(0.0, t_end - time.time()))
        cpu_end = cpu_seconds()
        try:
            async with asyncio.timeout(10):
                await finished
        except TimeoutError:
            failures.append(f"{in_flight} publishes unanswered 10 s after the end")
        for conn in conns:
            state = conn.state
            assert isinstance(state, ConnState)
            state.on_reply = None
        return {
            "sent": sent,
            "count": counted,
            "by_group": by_group,
            "latencies": rtts,
            "failures": failures[:5],
            "failed": len(failures),
            "cpu_window": cpu_end - cpu_begin,
        }

    async def cmd_chat(
        self, rate: float, duration: float, step: int, members: int, timeout: float
    ) -> dict[str, Any]:
        """Each connection broadcasts to its room at ``rate``/s; wait for deliveries.

        Rooms are whole inside one worker, so this worker expects exactly
        ``sent * members`` deliveries.
        """
        senders = [c for c in self.conns if isinstance(c.state, ConnState) and c.state.room]
        if not senders:
            raise LoadgenError("no room members")

        def make(conn: BenchConnection) -> bytes:
            state = conn.state
            assert isinstance(state, ConnState)
            frame = {
                "type": "broadcast",
                "id": self.frame_id(conn),
                "room": state.room,
                "data": {"s": step, "t": time.time_ns(), "w": state.server},
            }
            return json.dumps(frame).encode()

        # Random order so the rooms' senders interleave like independent users.
        order = list(senders)
        self.rng.shuffle(order)
        cpu0 = cpu_seconds()
        sent, start = await self.paced(order, rate * len(order), duration, make)
        cpu1 = cpu_seconds()
        res = await self.cmd_await_step(step, sent * members, timeout)
        res.update(sent=sent, start=start, cpu_window=cpu1 - cpu0)
        return res

    async def cmd_close(self) -> dict[str, Any]:
        """Abort every connection and forget all state."""
        n = len(self.conns)
        for conn in self.conns:
            conn.abort()
        if self.publisher is not None:
            self.publisher.abort()
            self.publisher = None
        self.conns = []
        self.steps.clear()
        errors, self.errors = self.errors, 0
        samples, self.error_samples = self.error_samples, []
        return {"closed": n, "errors": errors, "error_samples": samples}

    async def cmd_cpu(self) -> dict[str, Any]:
        return {}

    # main loop ------------------------------------------------------------------
    async def serve(self) -> None:
        """Answer commands until ``exit`` or until the runner's pipe closes."""
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()

        def readable() -> None:
            try:
                inbox.put_nowait(self.pipe.recv())
            except (EOFError, OSError):
                loop.remove_reader(self.pipe.fileno())
                inbox.put_nowait(None)

        loop.add_reader(self.pipe.fileno(), readable)
        while True:
            item = await inbox.get()
            if item is None or item[0] == "exit":
                break
            name, kwargs = item
            try:
                result = await getattr(self, f"cmd_{name}")(**kwargs)
            except Exception as exc:  # every failure goes back to the runner
                result = {"error": f"{type(exc).__name__}: {exc}"}
            result["cpu"] = cpu_seconds()
            result["wall"] = time.time()
            self.pipe.send(result)
        await self.cmd_close()


def worker_main(pipe: Connection, index: int, cpus: Sequence[int] | None) -> None:
    """Process entry point for one load generator worker."""
    if cpus:
        os.sched_setaffinity(0, set(cpus))
    raise_nofile_limit()
    asyncio.run(Worker(pipe, index).serve())


class LoadGen:
    """The runner's handle on the worker processes.

    Obligations: call :meth:`stop` (or use as a context manager); it ends every
    worker by PID, SIGKILL after a grace period.
    """

    def __init__(self, workers: int, cpus: Sequence[int] | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        self.exit_codes: list[int | None] = []
        self.cpus = list(cpus) if cpus else None
        for i in range(workers):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=worker_main,
                args=(theirs, i, self.cpus),
                name=f"bench-loadgen-{i}",
                daemon=True,
            )
            proc.start()
            theirs.close()
            self.pipes.append(ours)
            self.procs.append(proc)

    @property
    def size(self) -> int:
        return len(self.procs)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def send(self, i: int, name: str, **kwargs: Any) -> None:
        self.pipes[i].send((name, kwargs))

    def recv(self, i: int, timeout: float) -> dict[str, Any]:
        """Wait for worker ``i``'s reply.

        Raises:
            LoadgenError: no reply in ``timeout`` s, the worker died, or it failed.
        """
        pipe = self.pipes[i]
        if not pipe.poll(timeout):
            raise LoadgenError(f"worker {i} did not answer within {timeout:.0f} s")
        try:
            reply: dict[str, Any] = pipe.recv()
        except EOFError as exc:
            raise LoadgenError(f"worker {i} died") from exc
        if "error" in reply:
            raise LoadgenError(f"worker {i}: {reply['error']}")
        return reply

    def call(self, i: int, name: str, wait: float, **kwargs: Any) -> dict[str, Any]:
        """Send one command to worker ``i`` and wait up to ``wait`` s for its reply."""
        self.send(i, name, **kwargs)
        return self.recv(i, wait)

    def call_all(
        self,
        name: str,
        wait: float,
        per_worker: Sequence[dict[str, Any]] | None = None,
        **common: Any,
    ) -> list[dict[str, Any]]:
        """Send one command to every worker at once and collect every reply."""
        self.send_all(name, per_worker, **common)
        return self.recv_all(wait)

    def send_all(
        self, name: str, per_worker: Sequence[dict[str, Any]] | None = None, **common: Any
    ) -> None:
        """Send one command to every worker; collect the replies with :meth:`recv_all`."""
        for i in range(self.size):
            extra = per_worker[i] if per_worker is not None else {}
            self.send(i, name, **common, **extra)

    def recv_all(self, wait: float) -> list[dict[str, Any]]:
        """Every worker's reply to the last :meth:`send_all`, within ``wait`` s in all.

        Raises:
            LoadgenError: the first worker that failed (the others are still drained).
        """
        deadline = time.monotonic() + wait
        replies = []
        first_error: LoadgenError | None = None
        for i in range(self.size):
            try:
                replies.append(self.recv(i, max(0.1, deadline - time.monotonic())))
            except LoadgenError as exc:
                # Still drain the others so the pipes stay in step.
                first_error = first_error or exc
                replies.append({})
        if first_error is not None:
            raise first_error
        return replies

    def stop(self, grace: float = 5.0) -> None:
        """Ask every worker to exit; kill the ones that do not."""
        for pipe in self.pipes:
            # A worker that is already gone is joined/killed below.
            with contextlib.suppress(OSError):
                pipe.send(("exit", {}))
        for proc in self.procs:
            proc.join(grace)
            if proc.is_alive():
                proc.kill()
                proc.join(grace)
        for pipe in self.pipes:
            pipe.close()
        # Recorded while still running, so a report can show every worker was
        # stopped here (not reaped at interpreter exit).
        self.exit_codes = [proc.exitcode for proc in self.procs]

    def __enter__(self) -> LoadGen:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
