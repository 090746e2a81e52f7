"""The front door: the PROXY protocol v2 header, read before websockets sees a byte.

``websockets.asyncio.server.serve`` builds one :class:`FrontDoorConnection`
per accepted TCP connection (``create_connection=``). Its first
``data_received`` calls go to :meth:`FrontDoorConnection._sniff`, which looks
for a PROXY v2 header (``rtcs.protocol.proxy.parse``):

- no header (the first byte is not the signature's, i.e. an HTTP request):
  the bytes go to websockets unchanged;
- a header from a peer in ``server.trusted_proxies``: it is consumed, its
  client address becomes :attr:`FrontDoorConnection.proxied`, and what
  follows it goes to websockets;
- a header from any other peer, or a malformed one: the TCP connection is
  aborted and ``on_refused`` is called with a reason (a bounded label; never
  the bytes).

Then, when an ``http`` handler is bound, the request line is sniffed too: a
request starting with ``POST`` (which websockets cannot serve: it refuses
request bodies) is read here (``rtcs.protocol.http``, at most
``MAX_HTTP_HEAD`` + ``MAX_HTTP_BODY`` bytes within ``http_timeout``), answered
by the handler and closed; anything else goes to websockets.

Once decided, ``data_received`` is websockets' own method again (an instance
attribute set once), so frames cost nothing extra; a trusted proxy may also
connect without a header (its health checks), and its own address stands.

Frames. After the handshake, websockets hands every frame to
``process_event``, which would queue data frames for ``recv()``. A front-door
connection instead hands them to the callback the gateway gives
:meth:`FrontDoorConnection.take_frames` (the connection's handle, which
assembles text messages and tells them to the connection actor): no queue, no
``recv()`` coroutine per message. Frames that arrive before the gateway takes
them (between the handshake and the actor's admission) wait in a list; past
``early_frames`` of them (``limits.ws_max_queue``, the bound websockets' own
queue would have had) the socket is not read until then. Connections with
``raw_frames`` False (the test-only echo route) keep websockets' own queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, Literal

from websockets.asyncio.messages import Assembler
from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import Event

from rtcs.protocol import proxy
from rtcs.protocol.http import HttpError, HttpRequest, parse_request, render_response
from rtcs.protocol.proxy import ProxyHeader, ProxyHeaderError, TrustedProxies, Verdict

#: Why a PROXY header was refused (a log field and a metric label).
RefusedReason = Literal["untrusted", "malformed"]

#: Answers a request with a body: ``(request, client address)`` -> status and JSON.
HttpHandler = Callable[[HttpRequest, str], Awaitable[tuple[HTTPStatus, dict[str, Any]]]]


_no_messages: Assembler | None = None


def _closed_assembler() -> Assembler:
    """A closed message queue, shared by the connections whose frames rtcs takes.

    Made on first use (it needs a running loop); it is only ever closed
    again (idempotent), never read, so any loop may share it.
    """
    global _no_messages
    if _no_messages is None:
        _no_messages = Assembler(pause=lambda: None, resume=lambda: None)
        _no_messages.close()
    return _no_messages


#: Where a connection's data frames go once the gateway takes them.
FrameSink = Callable[[Frame], None]

MAX_HTTP_HEAD = 8192
MAX_HTTP_BODY = 65536
_POST = b"POST "


class FrontDoorConnection(ServerConnection):
    """A ``ServerConnection`` that first strips a trusted PROXY v2 header.

    Build subclasses with :func:`front_door`; the class attributes hold the
    trusted networks and the refusal callback.
    """

    trusted: TrustedProxies = TrustedProxies(())
    on_refused: Callable[[RefusedReason, str], None] | None = None
    http: HttpHandler | None = None
    http_timeout: float = 10.0
    #: Frames kept before the gateway takes them, past which reading pauses.
    early_frames: int = 64

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The client's address from a trusted PROXY header, else None.
        self.proxied: str | None = None
        self._head = b""
        self._proxy_done = False
        self._http_task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        #: False: data frames go to websockets' own queue (``recv()``).
        self.raw_frames = True
        self._frames_to: FrameSink | None = None
        self._early: list[Frame] | None = None
        #: Called when the transport's write buffer passed its high-water mark
        #: (the gateway's watchdog then watches this connection).
        self.on_congested: Callable[[], None] | None = None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.on_congested is not None:
            self.on_congested()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # Every connection starts sniffing; decided ones call websockets'
        # method directly (see _decided).
        self.data_received = self._sniff  # type: ignore[method-assign]

    def _sniff(self, data: bytes) -> None:
        head = self._head + data if self._head else data
        if self._proxy_done:
            self._sniff_method(head)
            return
        if head.startswith(proxy.SIGNATURE) and not self.trusted.trusts(self._peer()):
            # Refused as soon as it is recognisable: nothing more is read.
            self._refuse("untrusted")
            return
        try:
            found = proxy.parse(head)
        except ProxyHeaderError:
            self._refuse("malformed")
            return
        if found is Verdict.INCOMPLETE:
            self._head = head
            return
        self._head = b""
        if isinstance(found, ProxyHeader):
            if found.source is not None:
                self.proxied = found.source[0]
            head = head[found.length :]
        if self.http is not None:
            self._proxy_done = True
            self._sniff_method(head)
            return
        self._decided()
        if head:
            ServerConnection.data_received(self, head)

    def _sniff_method(self, head: bytes) -> None:
        """After the PROXY stage: a ``POST`` request is ours, the rest websockets'."""
        if self._http_task is not None:
            self._head = head  # the request is being answered; nothing more is read
            return
        if len(head) < len(_POST) and _POST.startswith(head):
            self._head = head  # too short to tell yet (empty included)
            return
        if not head.startswith(_POST):
            self._head = b""
            self._decided()
            ServerConnection.data_received(self, head)
            return
        loop = asyncio.get_running_loop()
        if self._timer is None:  # the whole request within http_timeout
            self._timer = loop.call_later(self.http_timeout, self._http_too_slow)
        try:
            request = parse_request(head, max_head=MAX_HTTP_HEAD, max_body=MAX_HTTP_BODY)
        except HttpError as exc:
            too_large = exc.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
            code = "too_large" if too_large else "bad_request"
            self._answer(exc.status, {"code": code, "message": exc.reason})
            return
        if request is None:
            self._head = head
            return
        self._head = b""
        self.transport.pause_reading()  # one request per connection: nothing more is read
        self._http_task = loop.create_task(self._serve_http(request))

    def _http_too_slow(self) -> None:
        if self._http_task is None:
            self._answer(HTTPStatus.REQUEST_TIMEOUT, {"code": "timeout"})

    async def _serve_http(self, request: HttpRequest) -> None:
        handler = self.http
        assert handler is not None  # only set when bound
        try:
            status, body = await handler(request, self.proxied or self._peer())
        except Exception:  # a handler bug must not leave the socket hanging
            status, body = HTTPStatus.INTERNAL_SERVER_ERROR, {"code": "internal"}
        self._answer(status, body)

    def _answer(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        """Write a complete response and close; websockets never sees the request."""
        self._head = b""
        if self._timer is not None:
            self._timer.cancel()
        payload = json.dumps(body).encode()
        transport = self.transport
        with contextlib.suppress(Exception):
            transport.write(render_response(status, payload, "application/json"))
        transport.close()

    # -- frames, once open ------------------------------------------------------------

    def process_event(self, event: Event) -> None:
        if not self.raw_frames or not isinstance(event, Frame):
            super().process_event(event)  # the handshake request; the echo route
            return
        opcode = event.opcode
        if opcode is Opcode.PONG:
            self.acknowledge_pings(bytes(event.data))
        elif opcode is Opcode.TEXT or opcode is Opcode.CONT or opcode is Opcode.BINARY:
            to = self._frames_to
            if to is not None:
                to(event)
                return
            early = self._early
            if early is None:
                early = self._early = []
            early.append(event)
            if len(early) == self.early_frames:
                self.transport.pause_reading()
        # PING and CLOSE: websockets' protocol has answered them already.

    def take_frames(self, to: FrameSink) -> None:
        """From now on hand every data frame to ``to``, starting with those that waited.

        websockets' own message queue is never used from then on: it is
        replaced by a shared, closed one (about 1 KiB per connection less).
        """
        self._frames_to = to
        self.recv_messages = _closed_assembler()
        early, self._early = self._early, None
        if early:
            if len(early) >= self.early_frames:
                self.transport.resume_reading()
            for frame in early:
                to(frame)

    def _decided(self) -> None:
        # Drop the instance attribute: the class's (websockets') method is found again.
        del self.data_received

    def _peer(self) -> str:
        peer = self.transport.get_extra_info("peername")
        return str(peer[0]) if peer else "unknown"

    def _refuse(self, reason: RefusedReason) -> None:
        self._head = b""
        self._decided()
        hook = self.on_refused
        if hook is not None:
            hook(reason, self._peer())
        self.transport.abort()


def front_door(
    trusted: TrustedProxies,
    on_refused: Callable[[RefusedReason, str], None],
    http: HttpHandler | None = None,
    http_timeout: float = 10.0,
    early_frames: int = 64,
) -> type[FrontDoorConnection]:
    """A :class:`FrontDoorConnection` class bound to ``trusted``, ``on_refused``,
    (optionally) the handler of ``POST`` requests, and the bound of frames kept
    before the gateway takes them."""
    return type(
        "BoundFrontDoorConnection",
        (FrontDoorConnection,),
        {
            "trusted": trusted,
            "on_refused": staticmethod(on_refused),
            "http": staticmethod(http) if http is not None else None,
            "http_timeout": http_timeout,
            "early_frames": early_frames,
        },
    )
