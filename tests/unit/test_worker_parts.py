"""The pure parts of rtcs.workers, and the worker metrics responder (rtcs.metrics_http)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from rtcs.metrics import Metrics
from rtcs.metrics_http import MAX_HEAD, start_metrics_listener
from rtcs.workers import Backoff, InstanceCounter, LocalCounter

# -- the restart backoff -------------------------------------------------------------


def test_backoff_doubles_from_initial_to_maximum() -> None:
    policy = Backoff(initial=0.1, maximum=5.0, reset_after=10.0)
    delays, delay = [], 0.0
    for _ in range(9):
        delay = policy.next(delay, uptime=0.01)
        delays.append(delay)
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]


def test_backoff_resets_after_a_worker_stayed_up() -> None:
    policy = Backoff(initial=0.1, maximum=5.0, reset_after=10.0)
    assert policy.next(3.2, uptime=9.99) == 5.0
    assert policy.next(3.2, uptime=10.0) == 0.1
    assert policy.next(0.0, uptime=0.0) == 0.1  # the first restart


def test_backoff_never_returns_zero() -> None:
    policy = Backoff()
    delay = 0.0
    for uptime in (0.0, 0.0, 100.0, 0.0):
        delay = policy.next(delay, uptime)
        assert delay >= policy.initial > 0


# -- counters ------------------------------------------------------------------------


def test_local_counter() -> None:
    counter = LocalCounter()
    assert counter.total() == 0
    counter.set(7)
    assert counter.total() == 7


def test_instance_counter_slots_in_one_process() -> None:
    parent = InstanceCounter.create(3)
    try:
        a = InstanceCounter.attach(parent.name, 3, 0)
        c = InstanceCounter.attach(parent.name, 3, 2)
        a.set(5)
        c.set(11)
        assert a.total() == c.total() == parent.total() == 16
        parent.clear(2)
        assert a.total() == 5
        with pytest.raises(RuntimeError):
            parent.set(1)  # the parent has no slot of its own
        a.close()
        c.close()
    finally:
        parent.close()
    with pytest.raises(FileNotFoundError):
        InstanceCounter.attach(parent.name, 3, 0)


def test_instance_counter_refuses_bad_indexes() -> None:
    parent = InstanceCounter.create(2)
    try:
        with pytest.raises(ValueError, match="worker index 2"):
            InstanceCounter.attach(parent.name, 2, 2)
        with pytest.raises(ValueError, match="too small"):
            InstanceCounter.attach(parent.name, 1000, 0)
    finally:
        parent.close()


# -- the worker metrics responder ------------------------------------------------------


@pytest.fixture
async def listener() -> AsyncIterator[tuple[int, Metrics]]:
    metrics = Metrics()
    metrics.set_build(node="worker-7")
    server = await start_metrics_listener("127.0.0.1", 0, metrics.render)
    yield server.sockets[0].getsockname()[1], metrics
    server.close()
    await server.wait_closed()


async def _request(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 5.0)  # the server closes
    writer.close()
    await writer.wait_closed()
    return response


async def test_get_metrics(listener: tuple[int, Metrics]) -> None:
    port, _ = listener
    response = await _request(port, b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: text/plain; version=" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert b'rtcs_build_info{node="worker-7"' in body


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /ws HTTP/1.1\r\n\r\n", b"404"),
        (b"GET /healthz HTTP/1.1\r\n\r\n", b"404"),
        (b"POST /metrics HTTP/1.1\r\n\r\n", b"405"),
        (b"nonsense\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/1.1\r\n", b"400"),  # the client closes mid-head
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n", b"400"),
    ],
)
async def test_anything_else_is_refused(
    listener: tuple[int, Metrics], raw: bytes, status: bytes
) -> None:
    port, _ = listener
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    writer.write_eof()
    response = await asyncio.wait_for(reader.read(), 5.0)
    writer.close()
    await writer.wait_closed()
    assert response.split(b" ", 2)[1] == status


async def test_head_has_no_body(listener: tuple[int, Metrics]) -> None:
    port, _ = listener
    response = await _request(port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 200 OK") and response.endswith(b"\r\n\r\n")
