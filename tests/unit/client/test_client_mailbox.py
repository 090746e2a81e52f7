"""The client's mailboxes: order, a bound that makes the writer wait, an end."""

from __future__ import annotations

import asyncio

import pytest

from rtcs.client._mailbox import Mailbox

TIMEOUT = 5.0


async def test_items_come_out_in_order() -> None:
    box: Mailbox[int] = Mailbox(10)
    for i in range(5):
        await box.put(i)
    assert [await box.get() for _ in range(5)] == [0, 1, 2, 3, 4]


async def test_a_full_mailbox_makes_put_wait_until_the_reader_takes_one() -> None:
    box: Mailbox[int] = Mailbox(2)
    await box.put(1)
    await box.put(2)
    writer = asyncio.create_task(box.put(3))
    await asyncio.sleep(0)  # one turn: the writer runs up to its wait
    assert not writer.done() and len(box) == 2
    assert await box.get() == 1
    await asyncio.wait_for(writer, TIMEOUT)
    assert [await box.get(), await box.get()] == [2, 3]


async def test_a_reader_waits_for_the_next_item() -> None:
    box: Mailbox[str] = Mailbox(1)
    reader = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    assert not reader.done()
    await box.put("x")
    assert await asyncio.wait_for(reader, TIMEOUT) == "x"


async def test_drop_oldest_keeps_the_latest() -> None:
    box: Mailbox[int] = Mailbox(3, drop_oldest=True)
    for i in range(5):
        await box.put(i)
    assert (len(box), box.dropped) == (3, 2)
    assert [await box.get() for _ in range(3)] == [2, 3, 4]


async def test_the_end_comes_after_the_items() -> None:
    box: Mailbox[int] = Mailbox(5)
    await box.put(1)
    box.end()
    await box.put(2)  # ignored after the end
    assert [item async for item in box] == [1]
    with pytest.raises(StopAsyncIteration):
        await box.get()


async def test_an_end_with_an_error_raises_it_after_the_items() -> None:
    box: Mailbox[int] = Mailbox(5)
    await box.put(1)
    box.end(RuntimeError("gone"))
    box.end()  # a second end changes nothing
    assert await box.get() == 1
    with pytest.raises(RuntimeError, match="gone"):
        await box.get()


async def test_the_end_wakes_a_waiting_reader_and_writer() -> None:
    box: Mailbox[int] = Mailbox(1)
    reader = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    box.end(ValueError("stop"))
    with pytest.raises(ValueError, match="stop"):
        await asyncio.wait_for(reader, TIMEOUT)
    full: Mailbox[int] = Mailbox(1)
    await full.put(1)
    writer = asyncio.create_task(full.put(2))
    await asyncio.sleep(0)
    full.end()
    await asyncio.wait_for(writer, TIMEOUT)
    assert [item async for item in full] == [1]


def test_the_bound_is_at_least_one() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        Mailbox(0)
