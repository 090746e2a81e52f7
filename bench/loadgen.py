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
``reqrep``       every connection (of one group) runs publish→ack (or ping→pong)
                 in a closed loop.
``burst``        the publisher (if told to) writes a burst of publishes in one
                 socket write; every worker waits until its subscribers received
                 the whole burst (and the publisher every ack).
``chat``         every connection broadcasts to its room at a steady rate, then
                 waits for the deliveries of its own rooms.
``probe_start``  open one probe connection that sends ``{"type":"ping","id":N}``
                 every ``interval`` seconds (meant for a worker of its own, see
                 :class:`bench.workloads.LagProbe`); ``probe_take`` returns the
                 ping→pong round trips since the last take; ``probe_stop``.
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
import re
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from bench.wsclient import BenchConnection, connect

LATENCY_SAMPLES = 100_000
REPLY_TYPES = frozenset({"ack", "subscribed", "joined", "error", "pong"})
#: The burst id in a burst delivery's data (``{"b":ID,"k":K,"t":NS}``), found
#: without decoding the frame: every target sends compact JSON.
BURST_ID = re.compile(rb'"b":\s*(\d+)')


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


@dataclass(slots=True)
class BurstStats:
    """Deliveries of one burst seen by one worker."""

    received: int = 0
    expected: int = -1  # set by the ``burst`` command (deliveries may come first)
    first_ns: int = 0
    last_ns: int = 0


@dataclass(slots=True)
class CurrentBurst:
    """The burst a worker's ``burst`` command waits for."""

    stats: BurstStats
    acks_needed: int
    first_id: int  # the publisher's first frame id of the burst
    waiter: asyncio.Future[None]
    acks: int = 0
    errors: int = 0


@dataclass(slots=True)
class ProbeState:
    """The loop lag probe: one connection pinging at a fixed interval.

    Each ping belongs to the window that was open when it was sent; a window
    is closed and returned by ``probe_take``.
    """

    conn: BenchConnection
    interval: float
    window: int = 0
    next_id: int = 0
    outstanding: dict[int, tuple[int, int]] = field(default_factory=dict)  # id: (ns, window)
    rtts_ms: dict[int, list[float]] = field(default_factory=dict)
    sent: dict[int, int] = field(default_factory=dict)
    drained: asyncio.Future[None] | None = None
    task: asyncio.Task[None] | None = None


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
        self.bursts: dict[int, BurstStats] = {}
        self.burst: CurrentBurst | None = None
        self.lean = False  # subscribers' frames go to on_burst_text
        self.probe: ProbeState | None = None

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

    def on_burst_text(self, conn: BenchConnection, payload: bytes) -> None:
        """A subscriber's frame during bursts: count burst deliveries without decoding."""
        m = BURST_ID.search(payload)
        if m is None:
            self.on_text(conn, payload)
            return
        bid = int(m[1])
        st = self.bursts.get(bid)
        if st is None:
            st = self.bursts[bid] = BurstStats()
        now = time.time_ns()
        if not st.received:
            st.first_ns = now
        st.received += 1
        st.last_ns = now
        if st.received == st.expected:
            self.burst_check()

    def on_burst_reply(self, conn: BenchConnection, state: ConnState, msg: dict[str, Any]) -> None:
        """The publisher's acks (and errors) during a burst."""
        cur = self.burst
        if cur is None:
            return
        if msg.get("type") == "ack":
            fid = msg.get("id")
            if isinstance(fid, int) and fid >= cur.first_id:
                cur.acks += 1
                self.burst_check()
        else:
            cur.errors += 1
            if len(self.error_samples) < 5:
                self.error_samples.append(f"{msg.get('code')}: {msg.get('message')}")

    def burst_check(self) -> None:
        """Resolve the current burst's waiter once everything of it arrived here."""
        cur = self.burst
        if (
            cur is not None
            and cur.stats.received >= cur.stats.expected
            and cur.acks >= cur.acks_needed
            and not cur.waiter.done()
        ):
            cur.waiter.set_result(None)

    def on_probe_reply(self, conn: BenchConnection, state: ConnState, msg: dict[str, Any]) -> None:
        """A pong for the loop lag probe: its round trip goes to the ping's window."""
        t1 = time.perf_counter_ns()
        probe = self.probe
        if probe is None or msg.get("type") != "pong":
            return
        sent = probe.outstanding.pop(msg.get("id", -1), None)
        if sent is None:
            return
        t0, window = sent
        probe.rtts_ms.setdefault(window, []).append((t1 - t0) / 1e6)
        drained = probe.drained
        if (
            drained is not None
            and not drained.done()
            and all(w != window for _, w in probe.outstanding.values())
        ):
            drained.set_result(None)

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
        kind: str = "publish",
    ) -> dict[str, Any]:
        """Every connection (of ``group``, if given): publish to ``topic``, await the ack, repeat.

        With ``kind="ping"`` the request is ``{"type":"ping","id":N}`` and the
        reply awaited a ``pong`` (``topic``, ``data`` and ``step`` are unused).

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
        if kind not in ("publish", "ping"):
            raise LoadgenError(f"unknown request kind {kind!r}")
        ping = kind == "ping"
        expect = "pong" if ping else "ack"

        def send_next(conn: BenchConnection, state: ConnState) -> None:
            nonlocal in_flight, sent
            state.next_id += 1
            state.rr_sent_ns = perf_ns()
            in_flight += 1
            sent += 1
            if ping:
                conn.send(b'{"type":"ping","id":%d}' % state.next_id)
            else:
                conn.send(b'%s%d,"data":{"t":%d%s}}' % (head, state.next_id, time_ns(), rest))

        def on_reply(conn: BenchConnection, state: ConnState, msg: dict[str, Any]) -> None:
            nonlocal counted, in_flight
            t1 = perf_ns()
            in_flight -= 1
            if msg.get("type") != expect:
                failures.append(f"{kind}: {msg.get('code')}: {msg.get('message')}")
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
            failures.append(f"{in_flight} {kind} requests unanswered 10 s after the end")
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

    async def cmd_burst(
        self,
        burst: int,
        expected: int,
        timeout: float,
        topic: str = "",
        send: int = 0,
        idle: float = 2.0,
    ) -> dict[str, Any]:
        """Wait until this worker's subscribers received ``expected`` deliveries of ``burst``.

        With ``send`` > 0 the publisher first writes ``send`` publishes to
        ``topic`` back to back in one socket write (data ``{"b": burst, "k":
        index, "t": ns}``) and also waits for their ``send`` acks. Gives up
        after ``timeout`` s, or ``idle`` s without a new delivery or ack.
        ``sent_at`` is the epoch time of the write.
        """
        loop = asyncio.get_running_loop()
        if not self.lean:
            for conn in self.conns:
                conn.on_text = self.on_burst_text
            self.lean = True
        st = self.bursts.setdefault(burst, BurstStats())
        st.expected = expected
        cur = CurrentBurst(st, send, 0, loop.create_future())
        sent_at = 0.0
        if send:
            pub = self.publisher
            if pub is None:
                raise LoadgenError("no publisher connection")
            state = pub.state
            assert isinstance(state, ConnState)
            state.on_reply = self.on_burst_reply
            cur.first_id = state.next_id + 1
            head = b'{"type":"publish","topic":"' + topic.encode() + b'","id":'
            frames = []
            for k in range(send):
                state.next_id += 1
                frames.append(
                    b'%s%d,"data":{"b":%d,"k":%d,"t":%d}}'
                    % (head, state.next_id, burst, k, time.time_ns())
                )
            sent_at = time.time()
            pub.send_many(frames)
        self.burst = cur
        self.burst_check()
        deadline = loop.time() + timeout
        progress = -1
        try:
            while not cur.waiter.done():
                left = deadline - loop.time()
                seen = st.received + cur.acks
                if left <= 0 or seen == progress:
                    break
                progress = seen
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(idle, left)):
                        await asyncio.shield(cur.waiter)
        finally:
            self.burst = None
            self.bursts.pop(burst, None)
        return {
            "received": st.received,
            "first": st.first_ns / 1e9,
            "last": st.last_ns / 1e9,
            "sent_at": sent_at,
            "sent": send,
            "acks": cur.acks,
            "errors": cur.errors,
        }

    async def probe_loop(self, probe: ProbeState) -> None:
        """Send a ping every ``probe.interval`` seconds while the connection is open."""
        loop = asyncio.get_running_loop()
        nxt = loop.time()
        while probe.conn.is_open:
            probe.next_id += 1
            probe.outstanding[probe.next_id] = (time.perf_counter_ns(), probe.window)
            probe.sent[probe.window] = probe.sent.get(probe.window, 0) + 1
            probe.conn.send(b'{"type":"ping","id":%d}' % probe.next_id)
            # A late wake-up does not send a catch-up burst of pings.
            nxt = max(nxt + probe.interval, loop.time())
            await asyncio.sleep(nxt - loop.time())

    async def cmd_probe_start(
        self, host: str, port: int, token: str, interval: float = 0.05
    ) -> dict[str, Any]:
        """Open the probe connection and start pinging every ``interval`` s."""
        if self.probe is not None:
            raise LoadgenError("a probe is already running")
        conn = await self.open_one(host, port, f"/ws?token={token}", None, 10.0)
        state = conn.state
        assert isinstance(state, ConnState)
        state.on_reply = self.on_probe_reply
        probe = self.probe = ProbeState(conn, interval)
        probe.task = asyncio.get_running_loop().create_task(self.probe_loop(probe))
        return {"server": state.server}

    async def cmd_probe_take(self, grace: float = 2.0) -> dict[str, Any]:
        """Close the current window and return its round trips (ms).

        Pings of the window still unanswered get up to ``grace`` s; those still
        unanswered then are counted in ``unanswered`` and their age so far
        joins ``rtts`` (a lower bound of their round trip).
        """
        probe = self.probe
        if probe is None:
            raise LoadgenError("no probe running")
        window = probe.window
        probe.window += 1
        if any(w == window for _, w in probe.outstanding.values()):
            probe.drained = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await probe.drained
            probe.drained = None
        rtts = probe.rtts_ms.pop(window, [])
        now = time.perf_counter_ns()
        late = [i for i, (_, w) in probe.outstanding.items() if w == window]
        for i in late:
            t0, _ = probe.outstanding.pop(i)
            rtts.append((now - t0) / 1e6)
        return {
            "rtts": rtts,
            "sent": probe.sent.pop(window, 0),
            "unanswered": len(late),
            "open": probe.conn.is_open,
        }

    async def cmd_probe_stop(self) -> dict[str, Any]:
        """Stop pinging and close the probe connection."""
        probe, self.probe = self.probe, None
        if probe is not None:
            if probe.task is not None:
                probe.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await probe.task
            probe.conn.abort()
        return {}

    async def cmd_close(self) -> dict[str, Any]:
        """Abort every connection and forget all state."""
        await self.cmd_probe_stop()
        n = len(self.conns)
        for conn in self.conns:
            conn.abort()
        if self.publisher is not None:
            self.publisher.abort()
            self.publisher = None
        self.conns = []
        self.steps.clear()
        self.bursts.clear()
        self.burst = None
        self.lean = False
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
