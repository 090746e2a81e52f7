"""docs/getting-started.md, as a user follows it: its example files are the ones
shown, the bot answers in a room of a real node, and the custom page chats in
a real headless Chromium."""

from __future__ import annotations

import asyncio
import http.server
import re
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ENV, TIMEOUT, Client, Node
from tests.support.browser import chromium

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "getting-started.md"
BOT = ROOT / "examples" / "bot.py"
PAGE = ROOT / "examples" / "chat.html"
ROOM = "demo.lobby"

NodeFactory = Callable[..., Awaitable[Node]]


def blocks(language: str) -> list[str]:
    """The guide's fenced code blocks in ``language``, as written."""
    fence = re.compile(rf"^```{language}\n(.*?)^```$", re.MULTILINE | re.DOTALL)
    return fence.findall(GUIDE.read_text(encoding="utf-8"))


def test_the_guide_shows_the_example_files_as_they_are() -> None:
    assert BOT.read_text(encoding="utf-8") in blocks("python")
    assert PAGE.read_text(encoding="utf-8") in blocks("html")


@contextmanager
def static_server(html: str) -> Iterator[str]:
    """Serve ``html`` at ``/chat.html`` on loopback, as the guide's ``http.server``
    does (another origin than the node's); yields the page's URL."""
    body = html.encode()

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/chat.html" else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/chat.html"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


@asynccontextmanager
async def bot(node: Node) -> AsyncIterator[asyncio.subprocess.Process]:
    """``python examples/bot.py`` against ``node``, as the guide runs it; stopped on exit."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BOT),
        "--url",
        node.url,
        "--room",
        ROOM,
        env={**ENV, "TOKEN": node.token("bot", ("demo",))},
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
        _, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT)
        # Stopped by the test (SIGTERM), never on its own with an error.
        assert process.returncode == -15, stderr.decode()


async def joined_with_bot(client: Client) -> None:
    """Join the room and return once the bot is a member."""
    members = (await client.request({"type": "join", "room": ROOM}, "joined"))["members"]
    if "bot" not in members:
        await client.expect("presence", room=ROOM, event="join", user="bot")


async def said_by(client: Client, user: str) -> dict[str, Any]:
    """The next message in the room from ``user`` (the frame's ``from``)."""
    sender: dict[str, Any] = {"from": user}
    return await client.expect("message", room=ROOM, **sender)


async def test_the_bot_answers_in_its_room(node_factory: NodeFactory) -> None:
    node = await node_factory(**{"demo.enabled": True})
    async with bot(node):
        alice = await node.client("alice", ("demo",))
        await joined_with_bot(alice)
        said: list[tuple[Any, str]] = [
            ({"text": "hello"}, "Hello, alice! I am a bot. Try /time or /echo <text>."),
            ({"text": "/echo it works"}, "it works"),
            ("Hi!", "Hello, alice! I am a bot. Try /time or /echo <text>."),
        ]
        for data, expected in said:
            await alice.request({"type": "broadcast", "room": ROOM, "data": data})
            answer = await said_by(alice, "bot")
            assert answer["data"] == {"text": expected}
        # Small talk gets no answer: the next thing the bot says answers /time.
        await alice.request({"type": "broadcast", "room": ROOM, "data": {"text": "nice"}})
        await alice.request({"type": "broadcast", "room": ROOM, "data": {"text": "/time"}})
        answer = await said_by(alice, "bot")
        assert re.fullmatch(r"It is \d\d:\d\d:\d\d UTC\.", answer["data"]["text"])


@pytest.mark.slow  # a real browser: a few seconds
async def test_the_custom_page_chats_with_the_bot(node_factory: NodeFactory) -> None:
    node = await node_factory(**{"demo.enabled": True})
    html = PAGE.read_text(encoding="utf-8").replace("127.0.0.1:8765", f"127.0.0.1:{node.app.port}")
    token = node.token("carol", ("demo",))
    with static_server(html) as url:
        await chat_from_the_page(node, url, token)


async def chat_from_the_page(node: Node, url: str, token: str) -> None:
    """Open the page at ``url`` (the bot in the room), paste ``token``, chat."""
    async with bot(node), chromium() as browser:
        page = await browser.new_page()
        page.set_default_timeout(TIMEOUT * 1000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        async def paste(dialog: Any) -> None:
            await dialog.accept(token)

        page.on("dialog", paste)
        await page.goto(url)
        log = page.locator("#log li")
        await log.filter(has_text=f"in {ROOM} as carol").wait_for()

        alice = await node.client("alice", ("demo",))
        await joined_with_bot(alice)
        await log.filter(has_text="alice joined").wait_for()
        await alice.request({"type": "broadcast", "room": ROOM, "data": {"text": "hi carol"}})
        await log.filter(has_text="alice: hi carol").wait_for()

        await page.fill("#text", "hello")
        await page.press("#text", "Enter")
        said = await said_by(alice, "carol")
        assert said["data"] == {"text": "hello"}
        await log.filter(has_text="bot: Hello, carol!").wait_for()
        assert not errors
