"""The burst workload's and the loop lag probe's bookkeeping in a load generator worker.

No server and no timing: connections have a transport that records what is
written, and the frames a server would send are handed to the worker's
callbacks directly, as its event loop would.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.speedups import apply_mask

from bench.loadgen import BURST_ID, ConnState, ProbeState, Worker
from bench.workloads import lag_metrics, percentile
from bench.wsclient import BenchConnection


class RecordingTransport(asyncio.Transport):
    """Keeps every ``write``; never closes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def abort(self) -> None:
        pass


def client_frames(data: bytes) -> Iterator[dict[str, Any]]:
    """Decode the masked client text frames in ``data`` (payloads < 126 bytes)."""
    pos = 0
    while pos < len(data):
        n = data[pos + 1] & 0x7F
        assert n < 126
        mask = data[pos + 2 : pos + 6]
        yield json.loads(apply_mask(data[pos + 6 : pos + 6 + n], mask))
        pos += 6 + n


def connection(worker: Worker) -> tuple[BenchConnection, RecordingTransport]:
    """An open connection as ``connect`` leaves it, welcome received."""
    loop = asyncio.get_running_loop()
    conn = BenchConnection(b"", worker.on_text)
    transport = RecordingTransport()
    conn.transport = transport
    conn._open = True
    welcome: asyncio.Future[dict[str, Any]] = loop.create_future()
    welcome.set_result({})
    conn.state = ConnState(welcome)
    return conn, transport


@pytest.fixture
def worker() -> Iterator[Worker]:
    ours, theirs = multiprocessing.Pipe()
    yield Worker(theirs, 0)
    ours.close()
    theirs.close()


# Each target's frame for the same delivery: compact JSON, fields in its own order.
DELIVERY = {
    "rtcs": b'{"type":"message","seq":3,"topic":"bench.burst",'
    b'"data":{"b":7,"k":2,"t":1700000000000000000},"ts":1700000000000}',
    "raw": b'{"type":"message","topic":"bench.burst","data":{"b":7,"k":2,"t":1700000000000000000}}',
    "node": b'{"type":"message","topic":"bench.burst",'
    b'"data":{"b":7,"k":2,"t":1700000000000000000}}',
}


@pytest.mark.parametrize("target", sorted(DELIVERY))
def test_the_burst_id_is_found_in_every_targets_frame(target: str) -> None:
    m = BURST_ID.search(DELIVERY[target])
    assert m is not None and int(m[1]) == 7


def test_other_frames_carry_no_burst_id() -> None:
    assert BURST_ID.search(b'{"type":"welcome","connection_id":"c-1","server":"x"}') is None
    assert BURST_ID.search(b'{"type":"ack","id":12}') is None


async def test_a_burst_is_one_write_and_ends_when_every_delivery_and_ack_arrived(
    worker: Worker,
) -> None:
    subs = [connection(worker)[0] for _ in range(2)]
    worker.conns.extend(subs)
    pub, pub_transport = connection(worker)
    worker.publisher = pub
    loop = asyncio.get_running_loop()
    task = loop.create_task(
        worker.cmd_burst(burst=1, expected=6, send=3, topic="bench.burst", timeout=30.0)
    )

    def server() -> None:
        # Runs after the command's first step: the burst has been written.
        (written,) = pub_transport.writes
        frames = list(client_frames(written))
        assert [f["data"]["k"] for f in frames] == [0, 1, 2]
        assert {f["data"]["b"] for f in frames} == {1}
        assert all(f["type"] == "publish" and f["topic"] == "bench.burst" for f in frames)
        for k in range(3):
            for sub in subs:
                # The subscribers' frames now go to the lean burst callback.
                sub.on_text(sub, b'{"type":"message","topic":"t","data":{"b":1,"k":%d}}' % k)
        for frame in frames:
            pub.on_text(pub, json.dumps({"type": "ack", "id": frame["id"]}).encode())

    loop.call_soon(server)
    res = await task
    assert (res["received"], res["acks"], res["errors"], res["sent"]) == (6, 3, 0, 3)
    assert res["sent_at"] > 0 and res["last"] >= res["first"] > 0
    assert worker.bursts == {}  # forgotten once returned


async def test_deliveries_before_the_command_count(worker: Worker) -> None:
    sub = connection(worker)[0]
    worker.conns.append(sub)
    for k in range(4):
        worker.on_burst_text(sub, b'{"type":"message","data":{"b":5,"k":%d}}' % k)
    res = await worker.cmd_burst(burst=5, expected=4, timeout=30.0)
    assert (res["received"], res["acks"], res["sent"]) == (4, 0, 0)


async def test_a_burst_without_progress_returns_what_arrived(worker: Worker) -> None:
    sub = connection(worker)[0]
    worker.conns.append(sub)
    worker.on_burst_text(sub, b'{"type":"message","data":{"b":2,"k":0}}')
    res = await worker.cmd_burst(burst=2, expected=5, timeout=30.0, idle=0.01)
    assert res["received"] == 1


async def test_a_late_delivery_of_an_earlier_burst_is_not_counted(worker: Worker) -> None:
    sub = connection(worker)[0]
    worker.conns.append(sub)
    worker.on_burst_text(sub, b'{"type":"message","data":{"b":3,"k":0}}')
    worker.on_burst_text(sub, b'{"type":"message","data":{"b":4,"k":0}}')
    res = await worker.cmd_burst(burst=4, expected=1, timeout=30.0)
    assert res["received"] == 1


async def test_probe_windows_keep_each_ping_in_the_window_it_was_sent_in(
    worker: Worker,
) -> None:
    conn, _ = connection(worker)
    probe = worker.probe = ProbeState(conn, 0.05)
    state = conn.state
    assert isinstance(state, ConnState)
    state.on_reply = worker.on_probe_reply
    t0 = 1_000
    probe.outstanding = {1: (t0, 0), 2: (t0, 0)}
    probe.sent = {0: 2}
    conn.on_text(conn, b'{"type":"pong","id":1}')
    loop = asyncio.get_running_loop()

    def later() -> None:
        # A ping of the next window, and the last pong of the first.
        probe.outstanding[3] = (t0, probe.window)
        probe.sent[probe.window] = 1
        conn.on_text(conn, b'{"type":"pong","id":2}')

    loop.call_soon(later)
    first = await worker.cmd_probe_take(grace=30.0)
    assert (len(first["rtts"]), first["sent"], first["unanswered"]) == (2, 2, 0)
    assert all(rtt > 0 for rtt in first["rtts"])
    # The next window: its ping never answered, its age counts as a lower bound.
    second = await worker.cmd_probe_take(grace=0.01)
    assert (len(second["rtts"]), second["sent"], second["unanswered"]) == (1, 1, 1)
    assert probe.outstanding == {}


def test_lag_metrics() -> None:
    rtts = [float(x) for x in range(200, 0, -1)]
    take = {"rtts": rtts, "unanswered": 2}
    assert lag_metrics("burst.20.", take) == {
        "burst.20.lag_p50_ms": percentile(rtts, 50),
        "burst.20.lag_p99_ms": percentile(rtts, 99),
        "burst.20.lag_max_ms": 200.0,
        "burst.20.lag_unanswered": 2.0,
    }
    assert (
        lag_metrics("fanout.", {"rtts": [], "unanswered": 0}, "@top")["fanout.lag_max_ms@top"] == 0
    )
