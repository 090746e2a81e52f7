"""Tracing (docs/operations.md, "Tracing"): real nodes, real clients, real exporters.

- ``python -m rtcs`` with ``exporter = "console"``: a publish, a direct message
  and a room broadcast from a websockets client each print their
  ``rtcs.receive`` → ``rtcs.route`` → ``rtcs.deliver`` spans on stdout (the
  SDK's JSON), in one trace; a rule that fails on a publish logs a line with
  that publish's ``trace_id``.
- ``exporter = "otlp"`` to a fake collector in this process (a small HTTP
  server on 127.0.0.1 decoding the POSTed protobuf with ``opentelemetry.proto``):
  the spans and the node's resource arrive; ``sample_ratio = 0`` sends none;
  route plugins are ``rtcs.plugin`` spans, and one failing a publish logs its
  ``trace_id``.
- Two nodes (memory hub, real redis-server): the receiving node's
  ``rtcs.deliver`` is a child of the publishing node's ``rtcs.route``, for
  topic, direct and room messages.
- ``exporter = "none"``: no tracer anywhere, and OpenTelemetry is never imported.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from structlog.testing import capture_logs
from websockets.asyncio.client import connect

from rtcs import config
from rtcs.auth.tokens import mint
from rtcs.tracing import close_tracing, tracing_of
from tests.integration.conftest import ENV, TIMEOUT, Client, Node, start_pair
from tests.support.waiting import wait_until, wait_until_returns

SECRET = "tracing-test-secret-0123456789abcdef"
UPPER = "tests.support.route_plugins:Upper"
TAG = "tests.support.route_plugins:Tag"
# A rule whose condition fails on {"count": "3"} (CEL does not compare a string with 1).
FAILING_RULE = """
[[rule]]
name = "counted"
topic = "rules.>"
when = "data.count > 1"
action = "drop"
"""


# --- python -m rtcs with the console exporter ---------------------------------------------


class RtcsConsole:
    """``python -m rtcs`` with ``exporter = "console"``: its spans (stdout), its logs (stderr)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.spans: list[dict[str, Any]] = []
        self.logs: list[dict[str, Any]] = []
        self.port = 0
        assert proc.stdout is not None and proc.stderr is not None
        self._readers = [
            asyncio.ensure_future(self._read(proc.stdout, self.spans)),
            asyncio.ensure_future(self._read(proc.stderr, self.logs)),
        ]

    @staticmethod
    async def _read(stream: asyncio.StreamReader, into: list[dict[str, Any]]) -> None:
        while line := await stream.readline():
            into.append(json.loads(line))  # every line is one JSON object: a span, a log line

    async def started(self) -> None:
        def port() -> int:
            found = [e["port"] for e in self.logs if e.get("event") == "rtcs started"]
            return found[0] if found else 0

        await wait_until(lambda: port() or self.proc.returncode is not None, TIMEOUT * 3)
        assert self.proc.returncode is None, self.logs
        self.port = port()

    async def client(self, user: str) -> Client:
        auth = config.load(None, {"RTCS_JWT_SECRET": SECRET}).auth
        ws = await connect(
            f"ws://127.0.0.1:{self.port}/ws",
            additional_headers={"Authorization": f"Bearer {mint(auth, user)}"},
            open_timeout=TIMEOUT,
        )
        client = Client(ws)
        client.welcome = await client.expect("welcome")
        return client

    def trace(self, trace_id: str) -> dict[str, dict[str, Any]]:
        """The spans of one trace, by name."""
        return {s["name"]: s for s in self.spans if s["context"]["trace_id"] == trace_id}

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), TIMEOUT * 2)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)


@pytest.fixture
async def console_node(tmp_path: Path) -> AsyncIterator[RtcsConsole]:
    rules = tmp_path / "rules.toml"
    rules.write_text(FAILING_RULE)
    env = {
        **ENV,
        "RTCS_JWT_SECRET": SECRET,
        "RTCS_TRACING_EXPORTER": "console",
        "RTCS_TRACING_SERVICE_NAME": "rtcs-console-test",
        "RTCS_RULES_FILE": str(rules),
        "RTCS_SERVER_DRAIN_GRACE": "0",
        "RTCS_SERVER_DRAIN_TIMEOUT": "2",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rtcs",
        "--port",
        "0",
        "--log-level",
        "info",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    node = RtcsConsole(proc)
    try:
        await node.started()
        yield node
    finally:
        await node.stop()


def message_trace(node: RtcsConsole, connection_id: str, **attributes: str) -> str:
    """The trace id of the one ``rtcs.receive`` from ``connection_id`` with ``attributes``
    (``frame_type="send"`` for ``rtcs.frame_type``)."""
    wanted = {f"rtcs.{key}": value for key, value in attributes.items()}
    (found,) = [
        s["context"]["trace_id"]
        for s in node.spans
        if s["name"] == "rtcs.receive"
        and s["attributes"]["rtcs.connection_id"] == connection_id
        and wanted.items() <= s["attributes"].items()
    ]
    return str(found)


def assert_one_path(spans: dict[str, dict[str, Any]], kind: str, fanout: int) -> None:
    """receive → route → deliver, each the child of the one before, ``fanout`` recipients."""
    receive, route, deliver = spans["rtcs.receive"], spans["rtcs.route"], spans["rtcs.deliver"]
    assert receive["parent_id"] is None and receive["kind"] == "SpanKind.SERVER"
    assert route["parent_id"] == receive["context"]["span_id"]
    assert deliver["parent_id"] == route["context"]["span_id"]
    assert route["attributes"]["rtcs.kind"] == kind
    assert deliver["attributes"] == {"rtcs.kind": kind, "rtcs.fanout_size": fanout}
    assert route["resource"]["attributes"]["service.name"] == "rtcs-console-test"


async def test_console_spans_follow_a_publish_a_direct_message_and_a_room_broadcast(
    console_node: RtcsConsole,
) -> None:
    node = console_node
    alice, bob, carol = [await node.client(user) for user in ("alice", "bob", "carol")]
    await bob.subscribe("chat.x")
    await carol.subscribe("chat.>")
    for client in (alice, bob):
        await client.request({"type": "join", "room": "lobby"}, "joined")
    sender = alice.welcome["connection_id"]

    await alice.publish("chat.x", {"n": 1})
    await bob.expect("message", topic="chat.x")
    await carol.expect("message", topic="chat.x")
    await alice.request({"type": "send", "to": {"user": "bob"}, "data": "hi"})
    await bob.expect("message", data="hi")
    await alice.request({"type": "broadcast", "room": "lobby", "data": "all"})
    await bob.expect("message", room="lobby")

    # Each span is written as it ends; the deliver span ends before the ack.
    await wait_until(lambda: len([s for s in node.spans if s["name"] == "rtcs.deliver"]) >= 3)
    publish = node.trace(message_trace(node, sender, frame_type="publish"))
    assert_one_path(publish, "topic", 2)
    receive = publish["rtcs.receive"]["attributes"]
    assert receive == {
        "rtcs.frame_type": "publish",
        "rtcs.kind": "topic",
        "rtcs.topic": "chat.x",
        "rtcs.connection_id": sender,
        "rtcs.user": "alice",
    }
    direct = node.trace(message_trace(node, sender, frame_type="send"))
    assert_one_path(direct, "direct", 1)
    assert direct["rtcs.route"]["attributes"]["rtcs.to_user"] == "bob"
    room = node.trace(message_trace(node, sender, frame_type="broadcast"))
    assert_one_path(room, "room", 2)
    assert room["rtcs.receive"]["attributes"]["rtcs.room"] == "lobby"
    # Three messages, three traces; subscribing and joining made none.
    assert len({s["context"]["trace_id"] for s in node.spans}) == 3


async def test_a_rule_failing_on_a_publish_logs_its_trace_id(console_node: RtcsConsole) -> None:
    node = console_node
    alice = await node.client("alice")
    await alice.subscribe("rules.>")
    await alice.publish("rules.a", {"count": "3"})  # the condition fails: not dropped
    await alice.expect("message", topic="rules.a")
    await alice.publish("rules.b", {"count": 3})  # holds: dropped, no error

    def failed() -> list[dict[str, Any]]:
        return [e for e in node.logs if e.get("event", "").startswith("rule conditions failed")]

    await wait_until(lambda: failed() and any(s["name"] == "rtcs.rules" for s in node.spans))
    (line,) = failed()
    assert line["rules"] == ["counted"] and line["level"] == "warning"
    spans = node.trace(message_trace(node, alice.welcome["connection_id"], topic="rules.a"))
    assert f"0x{line['trace_id']}" == spans["rtcs.receive"]["context"]["trace_id"]
    rules = spans["rtcs.rules"]
    assert rules["parent_id"] == spans["rtcs.route"]["context"]["span_id"]
    assert rules["attributes"]["rtcs.rules.errors"] == ["counted"]
    # Lines not about a message have no trace id.
    started = [e for e in node.logs if e.get("event") == "rtcs started"]
    assert started and "trace_id" not in started[0]


# --- otlp to a fake collector ---------------------------------------------------------------


class Collector:
    """A fake OTLP/HTTP collector on 127.0.0.1: keeps every span POSTed to ``/v1/traces``.

    Runs in a thread of its own (the exporter posts from the SDK's thread, and
    a flush blocks its caller until the collector answered).
    """

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.content_types: set[str] = set()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                collector.requests.append(request)
                collector.content_types.add(self.headers.get("Content-Type", ""))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: pytest shows what matters

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def spans(self) -> list[dict[str, Any]]:
        """Every span received, flattened: name, ids (hex), node, attributes."""
        out = []
        for request in list(self.requests):
            for resource_spans in request.resource_spans:
                resource = attributes(resource_spans.resource.attributes)
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        out.append(
                            {
                                "name": span.name,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent_id": span.parent_span_id.hex(),
                                "node": resource["service.instance.id"],
                                "service": resource["service.name"],
                                "attributes": attributes(span.attributes),
                                "status": (
                                    "error"
                                    if span.status.code == span.status.STATUS_CODE_ERROR
                                    else "",
                                    span.status.message,
                                ),
                            }
                        )
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(TIMEOUT)


def value(any_value: AnyValue) -> Any:
    which = any_value.WhichOneof("value")
    if which == "array_value":
        return [value(v) for v in any_value.array_value.values]
    return getattr(any_value, which) if which else None


def attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: value(pair.value) for pair in pairs}


@pytest.fixture
def collector() -> Iterator[Collector]:
    made = Collector()
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
async def traced_factory(
    node_factory: Callable[..., Awaitable[Node]], collector: Collector
) -> AsyncIterator[Callable[..., Awaitable[Node]]]:
    """``node_factory`` with ``exporter = "otlp"`` to ``collector``; each node's tracer is
    closed (its exporter thread stopped) after the test."""
    made: list[Node] = []

    async def make(backends: Any = None, **overrides: Any) -> Node:
        settings = {
            "tracing.exporter": "otlp",
            "tracing.endpoint": collector.url,
            "tracing.service_name": "rtcs-otlp-test",
            "server.drain_grace": 0,
            **overrides,
        }
        node = await node_factory(backends, **settings)
        made.append(node)
        return node

    yield make
    for node in made:
        await close_tracing(node.app.tracing)


async def flush(*nodes: Node) -> None:
    """Export every span the nodes ended so far (the flush blocks: off the loop)."""
    for node in nodes:
        tracing = node.app.tracing
        assert tracing is not None
        await asyncio.to_thread(tracing.provider.force_flush)


async def test_otlp_exports_the_spans_of_a_publish(
    traced_factory: Callable[..., Awaitable[Node]], collector: Collector
) -> None:
    node = await traced_factory()
    alice, bob = await node.client("alice"), await node.client("bob")
    await bob.subscribe("news")
    await alice.publish("news", 1)
    await bob.expect("message", topic="news")
    await flush(node)
    spans = collector.spans()
    assert {s["name"] for s in spans} == {"rtcs.receive", "rtcs.route", "rtcs.deliver"}
    assert len({s["trace_id"] for s in spans}) == 1
    by_name = {s["name"]: s for s in spans}
    assert by_name["rtcs.route"]["parent_id"] == by_name["rtcs.receive"]["span_id"]
    assert by_name["rtcs.deliver"]["parent_id"] == by_name["rtcs.route"]["span_id"]
    assert by_name["rtcs.deliver"]["attributes"]["rtcs.fanout_size"] == 1
    assert by_name["rtcs.receive"]["attributes"]["rtcs.user"] == "alice"
    assert {(s["node"], s["service"]) for s in spans} == {(node.app.node_id, "rtcs-otlp-test")}
    assert collector.content_types == {"application/x-protobuf"}


async def test_sample_ratio_0_exports_nothing(
    traced_factory: Callable[..., Awaitable[Node]], collector: Collector
) -> None:
    node = await traced_factory(**{"tracing.sample_ratio": 0.0})
    alice = await node.client("alice")
    await alice.subscribe("news")
    await alice.publish("news", 1)
    await alice.expect("message", topic="news")
    await flush(node)
    assert collector.spans() == []


async def test_route_plugins_are_spans_and_a_failing_one_logs_the_trace_id(
    traced_factory: Callable[..., Awaitable[Node]], collector: Collector
) -> None:
    plugins = {"upper": {"actor": UPPER, "timeout": 2.0}, "tag": TAG}
    node = await traced_factory(plugins=plugins)
    pub, sub = await node.client("pub"), await node.client("sub")
    await sub.subscribe("chat.>")
    await pub.publish("chat.room", {"text": "hi"})
    await sub.expect("message", topic="chat.room")
    with capture_logs() as logs:
        rid = pub.next_id()
        await pub.send({"type": "publish", "id": rid, "topic": "chat.x", "data": {"text": "crash"}})
        await pub.expect("error", id=rid, code="internal")
    await flush(node)

    spans = collector.spans()
    (ok,) = [
        s
        for s in spans
        if s["name"] == "rtcs.route" and s["attributes"]["rtcs.topic"] == "chat.room"
    ]
    asked = [s for s in spans if s["name"] == "rtcs.plugin" and s["trace_id"] == ok["trace_id"]]
    assert [s["attributes"]["rtcs.plugin_name"] for s in asked] == ["upper", "tag"]
    assert all(s["parent_id"] == ok["span_id"] for s in asked)
    (failed,) = [e for e in logs if e["event"] == "route plugin failed a publish"]
    assert failed["plugin"] == "upper" and failed["reason"] == "crashed"
    (crashed,) = [
        s for s in spans if s["name"] == "rtcs.route" and s["attributes"]["rtcs.topic"] == "chat.x"
    ]
    assert failed["trace_id"] == crashed["trace_id"]
    (plugin,) = [
        s for s in spans if s["name"] == "rtcs.plugin" and s["trace_id"] == crashed["trace_id"]
    ]
    assert plugin["status"] == ("error", "crashed")


# --- two nodes ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_the_receiving_node_delivers_in_the_publishing_node_trace(
    kind: str, traced_factory: Callable[..., Awaitable[Node]], collector: Collector
) -> None:
    a, b = await start_pair(kind, traced_factory)
    alice, bob = await a.client("alice"), await b.client("bob")
    await bob.subscribe("chat.x")
    for client in (alice, bob):
        await client.request({"type": "join", "room": "lobby"}, "joined")
    presence = a.app.backends.presence
    await wait_until_returns(lambda: presence.user_connections("bob"), 1)

    await alice.publish("chat.x", "topic")
    await bob.expect("message", data="topic")
    await alice.request({"type": "send", "to": {"user": "bob"}, "data": "direct"})
    await bob.expect("message", data="direct")
    await alice.request({"type": "broadcast", "room": "lobby", "data": "room"})
    await bob.expect("message", data="room")
    await flush(a, b)

    spans = collector.spans()
    routes = {
        s["attributes"]["rtcs.kind"]: s
        for s in spans
        if s["name"] == "rtcs.route" and s["node"] == "node-a"
    }
    remote = {
        s["attributes"]["rtcs.kind"]: s
        for s in spans
        if s["name"] == "rtcs.deliver" and s["node"] == "node-b"
    }
    assert set(routes) == set(remote) == {"topic", "direct", "room"}
    for kind_ in routes:
        route, deliver = routes[kind_], remote[kind_]
        assert deliver["trace_id"] == route["trace_id"], kind_
        assert deliver["parent_id"] == route["span_id"], kind_
        assert deliver["attributes"]["rtcs.fanout_size"] == 1
        assert deliver["attributes"]["rtcs.from_node"] == "node-a"


# --- tracing off ------------------------------------------------------------------------------


async def test_tracing_none_has_no_tracer(node: Node) -> None:
    assert node.app.tracing is None
    assert node.app.ctx is not None and tracing_of(node.app.ctx) is None
    alice = await node.client("alice")
    await alice.subscribe("news")
    await alice.publish("news", 1)
    await alice.expect("message", topic="news")


NO_OPENTELEMETRY = """
import asyncio, sys
from rtcs import config
from rtcs.app import App
from rtcs.backends.memory import MemoryHub, memory_backends
from rtcs.sessions import Session

async def main():
    settings = config.load(None, {}, {"server.port": 0, "server.drain_grace": 0})
    app = App(settings, backends=memory_backends(MemoryHub()))  # distributed: envelopes too
    await app.start()
    from websockets.asyncio.client import connect
    from rtcs.auth.tokens import mint
    token = mint(settings.auth, "alice")
    async with connect(f"ws://127.0.0.1:{app.port}/ws",
                       additional_headers={"Authorization": "Bearer " + token}) as ws:
        await ws.recv()  # welcome
        await ws.send('{"type":"subscribe","topic":"t","id":1}')
        await ws.recv()
        await ws.send('{"type":"publish","topic":"t","data":1,"id":2}')
        frames = [await ws.recv(), await ws.recv()]
        assert any('"message"' in f for f in frames), frames
    await app.stop()
    print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))

asyncio.run(main())
"""


def test_tracing_none_never_imports_opentelemetry(tmp_path: Path) -> None:
    env = {**ENV, "XDG_STATE_HOME": str(tmp_path)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.getcwd(), ENV.get("PYTHONPATH")) if p)
    result = subprocess.run(
        [sys.executable, "-c", NO_OPENTELEMETRY],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
