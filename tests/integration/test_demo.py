"""The demo page in a real headless Chromium, its token endpoint, the stats topic,
and ``/client/rtcs.js`` (docs/operations.md, "Demo page").

Two browser contexts (two users, separate cookie jars and network state) open
``/demo`` on a real node. Bob's socket is then dropped by the server while
his browser is offline, Alice chats on, and Bob's page, once back online,
must show every message exactly once and in order (the DOM's list).

With ``DEMO_SCREENSHOT=docs/demo.png`` the browser test also saves Alice's
page there once he is back (the screenshot in the docs).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

import pytest

from rtcs.auth.tokens import TokenVerifier
from tests.integration.conftest import Node, http_get, wait_detached
from tests.support.browser import chromium

if TYPE_CHECKING:
    from playwright.async_api import Page

#: Milliseconds a page may take to show what a step waits for.
WAIT_MS = 5_000
#: Seconds between the node's stats messages in these tests.
SAMPLE = 0.2

NodeFactory = Callable[..., Awaitable[Node]]


# -- HTTP helpers ------------------------------------------------------------------------


def _request(
    node: Node, path: str, *, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(node.http + path, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


async def fetch(
    node: Node, path: str, *, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """``GET`` (or, with a body, ``POST``) ``path`` off the loop: status, headers, body."""
    return await asyncio.get_running_loop().run_in_executor(
        None, lambda: _request(node, path, body=body, headers=headers)
    )


async def demo_token(node: Node, user: Any) -> tuple[int, dict[str, Any]]:
    status, _, body = await fetch(node, "/demo/token", body=json.dumps({"user": user}).encode())
    answer: dict[str, Any] = json.loads(body)
    return status, answer


# -- the page in a browser ---------------------------------------------------------------


@pytest.mark.slow  # a real browser: a few seconds
async def test_two_users_chat_and_a_dropped_page_resumes(node_factory: NodeFactory) -> None:
    node = await node_factory(
        **{
            "demo.enabled": True,
            "metrics.sample_interval": SAMPLE,
            "server.node_id": "node-1",
        }
    )
    async with chromium() as browser:
        contexts = [await browser.new_context(viewport={"width": 1280, "height": 760})]
        alice = await contexts[0].new_page()
        errors: list[str] = []
        alice.on("pageerror", lambda exc: errors.append(f"alice: {exc}"))
        alice.set_default_timeout(WAIT_MS)
        await refused(alice, node)
        await login(alice, node, "alice")

        # The operator panel shows this node's figures: Alice alone, then with Bob.
        connections = alice.locator('#nodes .node[data-node="node-1"] [data-stat="connections"]')
        await connections.filter(has_text=re.compile(r"^1$")).wait_for()
        contexts.append(await browser.new_context(viewport={"width": 1280, "height": 760}))
        bob = await contexts[1].new_page()
        bob.on("pageerror", lambda exc: errors.append(f"bob: {exc}"))
        bob.set_default_timeout(WAIT_MS)
        await login(bob, node, "bob")
        await connections.filter(has_text=re.compile(r"^2$")).wait_for()
        card = alice.locator('#nodes .node[data-node="node-1"]')
        updates = int(await card.get_attribute("data-updates") or 0)
        await until(alice, f"document.querySelector('#nodes .node').dataset.updates > {updates}")
        assert await card.locator('[data-stat="breaker"]').inner_text() == "closed"

        # Presence both ways, then chat both ways.
        await alice.locator('#members li[data-user="bob"]').wait_for()
        await bob.locator('#members li[data-user="alice"]').wait_for()
        chat = ["Hi bob! Welcome to the rtcs demo.", "Hi alice. Presence says you are here too."]
        await say(alice, chat[0])
        await shown(bob, chat[:1])
        await say(bob, chat[1])
        await shown(alice, chat)
        await shown(bob, chat)

        # Bob's browser goes offline and the server drops his socket.
        session = await bob.get_attribute("body", "data-session")
        assert session
        await contexts[1].set_offline(True)
        gateway = node.app.gateway
        assert gateway is not None
        [handle] = [h for h in gateway.handles if h.user == "bob"]
        handle.abort()
        await wait_detached(node, session)
        await bob.locator("body[data-state=waiting]").wait_for()
        away = [
            "Your socket was just dropped by the server...",
            "...and these were sent while you were away.",
            "Resume replays them: once each, in order.",
        ]
        for text in away:
            await say(alice, text)
        await shown(alice, chat + away)
        assert await texts(bob) == chat  # nothing reached Bob meanwhile

        # Back online: the page resumes its session and shows everything once, in order.
        await contexts[1].set_offline(False)
        # The page reconnects at once on the browser's "online" event.
        await bob.locator("body[data-connects='2']").wait_for(timeout=3 * WAIT_MS)
        await shown(bob, chat + away)
        # The three, and the stats messages of the meantime, came from the replay.
        note = await bob.locator("#messages li.note", has_text="session resumed").inner_text()
        replayed = re.search(r"session resumed, (\d+) missed", note)
        assert replayed is not None and int(replayed.group(1)) >= len(away), note
        seqs = await bob.locator("#messages li.msg").evaluate_all(
            "items => items.map(li => Number(li.dataset.seq))"
        )
        assert seqs == sorted(set(seqs)), seqs
        # And live again, both ways.
        everything = [*chat, *away, "Got all three, in order."]
        await say(bob, everything[-1])
        await shown(alice, everything)
        await shown(bob, everything)
        await alice.locator('#members li[data-user="bob"]').wait_for()

        # The page's own Disconnect / Reconnect: close(), then connect() resumes.
        await bob.click("#toggle")
        await bob.locator("body[data-state=closed]").wait_for()
        await alice.locator('#members li[data-user="bob"]').wait_for(state="detached")
        everything.append("And one while you were disconnected.")
        await say(alice, everything[-1])
        await shown(alice, everything)
        assert await texts(bob) == everything[:-1]
        await bob.click("#toggle")
        await bob.locator("body[data-connects='3']").wait_for()
        await shown(bob, everything)
        await alice.locator('#members li[data-user="bob"]').wait_for()

        screenshot = os.environ.get("DEMO_SCREENSHOT")
        if screenshot:
            # Some history in the panel, then its rates with a last message.
            panel = "document.querySelector('#nodes .node').dataset.updates"
            await until(bob, f"{panel} > 40", 20_000)
            last = "The panel on the right is live: this node's figures, every second."
            await say(alice, last)
            await shown(bob, [*everything, last])
            await until(
                bob, f"{panel} > {await bob.locator('#nodes .node').get_attribute('data-updates')}"
            )
            await bob.screenshot(path=screenshot)
        assert not errors


async def login(page: Page, node: Node, name: str) -> None:
    """Open ``/demo`` and join as ``name``; returns once the page is connected."""
    await page.goto(node.http + "/demo")
    await page.fill("#name", name)
    await page.click("#login-button")
    await page.locator("body[data-state=active]").wait_for()
    await page.locator('#rooms li.current[data-room="demo.lobby"]').wait_for()


async def until(page: Page, expression: str, timeout: float = WAIT_MS) -> None:
    """Wait until ``expression`` is true in ``page``, checked every 50 ms (a page in
    the background gets no animation frames, Playwright's default polling)."""
    # A function, not a bare expression: the page's CSP forbids eval of strings.
    await page.wait_for_function(f"() => {expression}", polling=50, timeout=timeout)


async def refused(page: Page, node: Node) -> None:
    """A bad name: the page shows the server's refusal and stays on its form."""
    await page.goto(node.http + "/demo")
    # Past the input's own pattern: the server's answer is what is shown.
    await page.evaluate("document.querySelector('#name').removeAttribute('pattern')")
    await page.fill("#name", "no spaces")
    await page.click("#login-button")
    await page.locator("#login-error").filter(has_text="characters").wait_for()
    assert await page.locator("#login").is_visible()


async def say(page: Page, text: str) -> None:
    await page.fill("#text", text)
    await page.press("#text", "Enter")


async def texts(page: Page) -> list[str]:
    found: list[str] = await page.locator("#messages li.msg .text").all_inner_texts()
    return found


async def shown(page: Page, expected: list[str]) -> None:
    """Wait until the page's message list holds ``expected`` messages, then compare them."""
    await until(page, f"document.querySelectorAll('#messages li.msg').length >= {len(expected)}")
    assert await texts(page) == expected


# -- the HTTP side -------------------------------------------------------------------------


async def test_demo_is_404_when_disabled(node: Node) -> None:
    status, _ = await http_get(node, "/demo")
    assert status == 404
    status, _ = await http_get(node, "/demo/token")
    assert status == 404
    status, answer = await demo_token(node, "alice")
    assert (status, answer["code"]) == (404, "not_found")


async def test_the_page_is_served_when_enabled(node_factory: NodeFactory) -> None:
    node = await node_factory(**{"demo.enabled": True})
    status, headers, body = await fetch(node, "/demo")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert b'import { Client } from "/client/rtcs.js"' in body
    # Self-contained: nothing from another origin.
    assert b"https://" not in body
    assert b"http://" not in body.replace(b"http://www.w3.org/2000/svg", b"")
    status, headers, _ = await fetch(node, "/demo/token")
    assert (status, headers["Allow"]) == (405, "POST")


async def test_client_js_is_served_with_an_etag(node: Node) -> None:
    status, headers, body = await fetch(node, "/client/rtcs.js")
    assert status == 200
    assert headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert headers["Cache-Control"] == "no-cache"
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert body == resources.files("rtcs").joinpath("static", "rtcs.js").read_bytes()
    etag = headers["ETag"]
    status, headers, body = await fetch(node, "/client/rtcs.js", headers={"If-None-Match": etag})
    assert (status, body, headers["ETag"]) == (304, b"", etag)
    status, _, body = await fetch(node, "/client/rtcs.js", headers={"If-None-Match": '"other"'})
    assert status == 200 and body


async def test_demo_token_endpoint(node_factory: NodeFactory) -> None:
    node = await node_factory(**{"demo.enabled": True, "demo.token_ttl": 120})
    status, answer = await demo_token(node, "alice")
    assert status == 200
    identity = TokenVerifier(node.app.settings.auth).verify(answer["token"])
    assert (identity.user, identity.roles) == ("alice", ("demo",))
    # iat is rounded down, exp up.
    assert 120 <= identity.expires_at - identity.claims["iat"] <= 121
    assert answer["stats_topic"] == "system.stats"
    assert (answer["room_prefix"], answer["ws_path"]) == ("demo.", "/ws")
    for bad in ("", "a" * 33, "a.b", "a b", "ünï", 7, None, ["alice"]):
        status, answer = await demo_token(node, bad)
        assert (status, answer["code"]) == (400, "bad_request"), bad
    for body in (b"", b"{", b'"alice"', b'{"user": "alice", "roles": ["admin"]}'):
        status, _, raw = await fetch(node, "/demo/token", body=body)
        assert (status, json.loads(raw)["code"]) == (400, "bad_request"), body


async def test_demo_tokens_open_a_connection_with_the_demo_role(node_factory: NodeFactory) -> None:
    # A policy in which "*" may do nothing: what works is the role "demo" alone.
    node = await node_factory(**{"demo.enabled": True, "rbac": {"roles": {"*": {}}}})
    _, answer = await demo_token(node, "carol")
    client = await node.client(
        "carol", additional_headers={"Authorization": f"Bearer {answer['token']}"}
    )
    assert client.welcome["roles"] == ["demo"]
    assert (await client.request({"type": "join", "room": "demo.lobby"}, "joined"))["room"]
    assert await client.request({"type": "subscribe", "topic": "system.stats"}, "subscribed")
    for frame in (
        {"type": "join", "room": "lobby"},
        {"type": "publish", "topic": "system.stats", "data": {"node": "fake"}},
        {"type": "subscribe", "topic": ">"},
    ):
        error = await client.request(frame, "error")
        assert error["code"] == "forbidden", frame


# -- the stats topic -----------------------------------------------------------------------


STATS_FIELDS = {
    "node",
    "connections",
    "messages_in_per_s",
    "messages_out_per_s",
    "deliveries_per_s",
    "restarts",
    "breaker",
    "degraded",
    "interval",
}


async def test_stats_topic_messages(node_factory: NodeFactory) -> None:
    node = await node_factory(
        **{
            "metrics.stats_topic": "ops.stats",
            "metrics.sample_interval": 0.05,
            "server.node_id": "node-s",
        }
    )
    client = await node.client("ops")
    await client.subscribe("ops.stats")
    frames = [await client.expect("message", topic="ops.stats") for _ in range(3)]
    for frame in frames:
        assert "from" not in frame  # the server's own publish
        data = frame["data"]
        assert set(data) == STATS_FIELDS
        assert (data["node"], data["connections"]) == ("node-s", 1)
        assert (data["breaker"], data["degraded"], data["restarts"]) == ("closed", False, 0)
        assert data["interval"] == 0.05
    # Traffic shows up in the rates: messages in (the publishes) and out.
    for i in range(20):
        await client.publish("chat.x", i)
    # Stats sampled during the publishes are dropped: the next one follows them all.
    client.pending = [f for f in client.pending if f.get("topic") != "ops.stats"]
    data = (await client.expect("message", topic="ops.stats"))["data"]
    assert data["messages_in_per_s"] > 0 and data["messages_out_per_s"] > 0


async def test_no_stats_topic_by_default(node_factory: NodeFactory) -> None:
    node = await node_factory(**{"metrics.sample_interval": 0.02})
    assert node.app.settings.stats_topic == ""
    client = await node.client("ops")
    await client.subscribe(">")
    await client.request({"type": "ping"}, "pong")
    await client.silent(0.3)  # about 15 samples, and no message
