"""The gateway: the only code that touches sockets.

It accepts connections (handshake checks: path, readiness, origin, per-address
limit, pending-auth caps, crash penalties, token), serves ``/healthz``,
``/readyz``, ``/metrics``, ``/client/rtcs.js`` and (``demo.enabled``) ``/demo``
on the same port (``rtcs.assets``, ``rtcs.demo``), turns each text frame into a
``ClientText`` actor message and each socket close into ``SocketClosed``.
Everything the actors write goes through the connection's bounded
``ConnectionHandle``.

The client's address is the TCP peer's, or, for a peer in
``server.trusted_proxies``, the one its PROXY v2 header
(``rtcs.gateway.frontdoor``) and then its ``X-Forwarded-For`` header name;
per-address limits, logs and the handle's ``peer`` use it.

HTTP refusals before the upgrade (docs/protocol.md): 400 bad resume parameters
or a repeated ``Host``/``Origin`` header, 401 bad token, 403 origin not allowed,
404 unknown path, 429 too many connections from one address, too many
unauthenticated ones, or a crash penalty, 503 not ready.

With ``server.test_echo_path`` set (tests only), an upgrade to exactly that
path skips every check but the message-size limit and is served by
``rtcs.gateway.echo.serve_echo``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import ssl
import weakref
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, cast

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from rtcs import admin, api, assets, demo
from rtcs import status as node_status
from rtcs.actors.admission import admission_of
from rtcs.actors.context import CONNECTIONS, NodeContext
from rtcs.actors.messages import OpenConnection, SocketClosed
from rtcs.auth.extract import HandshakeAuth, extract, origin_allowed, own_origin
from rtcs.auth.tokens import Identity
from rtcs.errors import AuthError, CloseCode, ProtocolError
from rtcs.gateway.coalesce import Coalescer
from rtcs.gateway.echo import serve_echo
from rtcs.gateway.frontdoor import FrontDoorConnection, RefusedReason, front_door
from rtcs.gateway.handle import ConnectionHandle
from rtcs.protocol.frames import SUBPROTOCOL
from rtcs.protocol.http import HttpRequest
from rtcs.protocol.proxy import TrustedProxies
from rtcs.sessions import ConnectionIds

#: How the gateway hands a message to an actor: ``tell(address, message)``,
#: on the loop thread (the actor system's ``tell``).
Tell = Callable[[Any, object], None]


class Gateway:
    """The websockets server of one node.

    Obligations: create, ``start()``, and ``stop()`` on the event loop that
    runs the actor system; ``tell`` is only called from that loop.
    """

    def __init__(
        self,
        ctx: NodeContext,
        tell: Tell,
        readiness: Callable[[], str | None],
    ) -> None:
        self.ctx = ctx
        self.tell = tell
        self.readiness = readiness  # None when ready, else the reason
        # The handshake's auth result, from process_request to the handler,
        # kept beside the connection rather than on it (a failed upgrade
        # never reaches the handler: its entry goes with the connection).
        self._auth: weakref.WeakKeyDictionary[
            ServerConnection, tuple[HandshakeAuth, Identity | None, str]
        ] = weakref.WeakKeyDictionary()
        self._trusted = TrustedProxies(ctx.settings.server.trusted_proxies)
        self.handles: set[ConnectionHandle] = set()
        # What the watchdog looks at (_watch_buffers).
        self._watched: set[ConnectionHandle] = set()
        self.port: int = 0
        self._per_address: dict[str, int] = {}
        self._connection_ids = ConnectionIds()
        self._server: Server | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._scheme = "wss" if ctx.settings.server.tls_cert else "ws"
        #: Reloads the rules file (POST /admin/rules/reload); set by the node.
        self.reload_rules: admin.Reloader | None = None
        # One write per connection per loop iteration (rtcs.gateway.coalesce).
        self.coalescer = Coalescer(ctx.settings.limits.batch_window_ms / 1000.0)

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        settings = self.ctx.settings
        server = settings.server
        self._server = await serve(
            self._handler,
            server.host,
            server.port,
            process_request=self._process_request,
            create_connection=front_door(
                self._trusted,
                self._proxy_refused,
                self._http,
                server.open_timeout,
                settings.limits.ws_max_queue,
            ),
            select_subprotocol=_select_subprotocol,
            compression=None,
            max_size=settings.limits.max_message_size,
            max_queue=settings.limits.ws_max_queue,
            ping_interval=settings.heartbeat.interval,
            ping_timeout=settings.heartbeat.timeout,
            close_timeout=settings.server.close_timeout,
            server_header="rtcs",
            ssl=self._ssl_context(),
            reuse_port=settings.server.workers > 1,
            logger=logging.getLogger("rtcs.gateway.websockets"),
        )
        sockets = list(self._server.sockets)
        self.port = sockets[0].getsockname()[1] if sockets else server.port
        self._watchdog = asyncio.get_running_loop().create_task(self._watch_buffers())
        return self.port

    async def _http(self, request: HttpRequest, address: str) -> tuple[HTTPStatus, dict[str, Any]]:
        """A request with a body (``POST``): the service API (rtcs.api) and the
        operator endpoints (rtcs.admin), and the demo's tokens (rtcs.demo)."""
        if request.path == demo.TOKEN_PATH:
            ctx = self.ctx
            status, body = demo.token_answer(request, ctx.settings, ctx.verifier, ctx.wall())
            ctx.log.debug("demo token", status=status.value, address=address)
            return status, body
        if request.path in api.PATHS:
            status, body = await api.handle(request, self.ctx, self.tell)
            # Refusals at info (401/403 matter to security); routed ones are traffic.
            log = self.ctx.log.debug if status is HTTPStatus.ACCEPTED else self.ctx.log.info
            log("api request", path=request.path, status=status.value, address=address)
            return status, body
        if request.path == node_status.PATH:  # GET only (_process_request)
            return HTTPStatus.METHOD_NOT_ALLOWED, {"code": "method_not_allowed"}
        ctx = self.ctx
        if request.path == admin.RULES_RELOAD_PATH:
            workers = ctx.settings.server.workers
            status, body = await admin.reload_rules(
                request, ctx.verifier, self.reload_rules, workers
            )
            ctx.log.info("admin request", path=request.path, status=status.value, address=address)
            return status, body
        revoker = ctx.revoker
        if revoker is None:
            return HTTPStatus.NOT_FOUND, {"code": "not_found"}
        status, body = await admin.handle(request, ctx.verifier, revoker)
        self.ctx.log.info("admin request", path=request.path, status=status.value, address=address)
        return status, body

    def _ssl_context(self) -> ssl.SSLContext | None:
        server = self.ctx.settings.server
        if not server.tls_cert:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(server.tls_cert, server.tls_key or None)
        return context

    def stop_accepting(self) -> None:
        """Close the listening sockets; live connections are left alone."""
        if self._server is not None:
            self._server.close(close_connections=False)

    async def wait_closed(self, timeout: float) -> bool:
        """Wait until every connection handler finished; False on timeout."""
        if self._server is None:
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._server.wait_closed()
        except TimeoutError:
            for handle in list(self.handles):
                handle.abort()
            return False
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._watchdog
        return True

    def _proxy_refused(self, reason: RefusedReason, peer: str) -> None:
        self.ctx.metrics.handshake_rejected(400)
        self.ctx.log.warning("PROXY header refused", reason=reason, peer=peer)

    # -- HTTP side ------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        settings = self.ctx.settings
        path, _, _ = request.path.partition("?")
        echo = settings.server.test_echo_path
        if echo and path == echo:
            # websockets' own message queue: serve_echo reads with recv(); the
            # handler tells echo connections by it.
            cast(FrontDoorConnection, connection).raw_frames = False
            return None
        if path == "/healthz":
            return _text(HTTPStatus.OK, "ok\n")
        if path == "/readyz":
            reason = self.readiness()
            if reason is None:
                return _json(HTTPStatus.OK, {"status": "ready", "degraded": self.ctx.degraded})
            return _json(
                HTTPStatus.SERVICE_UNAVAILABLE, {"status": "unavailable", "reason": reason}
            )
        if settings.metrics.enabled and path == settings.metrics.path:
            body, content_type = self.ctx.metrics.render()
            return _response(HTTPStatus.OK, body, content_type)
        if path == node_status.PATH:
            code, payload, extra = node_status.answer(
                request.method,
                request.headers.get_all("Authorization"),
                self.ctx.verifier,
                lambda: node_status.gather(self.ctx, len(self.handles)),
            )
            address = self._client_address(connection, request.headers)
            self.ctx.log.info("admin request", path=path, status=code.value, address=address)
            response = _json(code, payload)
            response.headers.update(extra)
            return response
        if path == assets.CLIENT_PATH:
            return _asset(assets.CLIENT_JS, request)
        if path.startswith(demo.PAGE_PATH) and settings.demo.enabled:
            if path == demo.PAGE_PATH:
                return _asset(assets.DEMO_PAGE, request)
            if path == demo.TOKEN_PATH:  # POST only (_http)
                response = _json(HTTPStatus.METHOD_NOT_ALLOWED, {"code": "method_not_allowed"})
                response.headers["Allow"] = "POST"
                return response
        if path in admin.PATHS or path in api.PATHS:  # POST only: never websockets' (frontdoor.py)
            response = _json(HTTPStatus.METHOD_NOT_ALLOWED, {"code": "method_not_allowed"})
            response.headers["Allow"] = "POST"
            return response
        if path != settings.server.path:
            return _text(HTTPStatus.NOT_FOUND, "not found\n")
        return self._check_upgrade(connection, request)

    def _check_upgrade(self, connection: ServerConnection, request: Request) -> Response | None:
        settings = self.ctx.settings
        metrics = self.ctx.metrics
        reason = self.readiness()
        if reason is not None:
            metrics.handshake_rejected(503)
            return _json(
                HTTPStatus.SERVICE_UNAVAILABLE, {"status": "unavailable", "reason": reason}
            )
        headers = request.headers
        duplicate = _duplicate_header(headers)
        if duplicate is not None:
            # Which one would count is ambiguous (and Headers.get raises).
            metrics.handshake_rejected(400)
            return _text(HTTPStatus.BAD_REQUEST, f"more than one {duplicate} header\n")
        origin = headers.get("Origin")
        own = own_origin(self._scheme, headers.get("Host")) if origin is not None else None
        if not origin_allowed(origin, settings.server.allowed_origins, own):
            metrics.handshake_rejected(403)
            self.ctx.log.info("handshake refused", status=403, reason="origin not allowed")
            return _text(HTTPStatus.FORBIDDEN, "origin not allowed\n")
        address = self._client_address(connection, headers)
        if self._per_address.get(address, 0) >= settings.limits.max_connections_per_address:
            metrics.handshake_rejected(429)
            return _text(HTTPStatus.TOO_MANY_REQUESTS, "too many connections from this address\n")
        try:
            auth = extract(
                path=request.path,
                headers=headers,
                scheme=self._scheme,
                allowed_origins=settings.server.allowed_origins,
                cookie_name=settings.auth.cookie_name,
                allow_query_token=settings.auth.allow_query_token,
            )
            identity = None
            if auth.token is not None:
                identity = self.ctx.verifier.verify(auth.token, now=self.ctx.wall())
        except AuthError as exc:
            metrics.handshake_rejected(401)
            self.ctx.log.info("handshake refused", status=401, reason=exc.reason, peer=address)
            return _text(HTTPStatus.UNAUTHORIZED, f"authentication failed: {exc.reason}\n")
        except ProtocolError as exc:
            metrics.handshake_rejected(400)
            return _text(HTTPStatus.BAD_REQUEST, f"{exc.message}\n")
        refusal = admission_of(self.ctx).check(
            address, None if identity is None else identity.user, self.ctx.clock()
        )
        if refusal is not None:
            metrics.handshake_rejected(429)
            self.ctx.log.info("handshake refused", status=429, reason=refusal.reason, peer=address)
            return _text(HTTPStatus.TOO_MANY_REQUESTS, f"{refusal.reason}\n")
        # Handed to the connection handler, which runs right after the upgrade.
        self._auth[connection] = (auth, identity, address)
        return None

    def _client_address(self, connection: ServerConnection, headers: Headers) -> str:
        """The TCP peer, or the client a trusted proxy names (module docstring)."""
        peer = _address(connection)
        trusted = self._trusted
        if not trusted:
            return peer
        # The front door only takes a PROXY header from a trusted peer.
        if isinstance(connection, FrontDoorConnection) and connection.proxied is not None:
            peer = connection.proxied
        forwarded = headers.get_all("X-Forwarded-For")
        return trusted.client(peer, ",".join(forwarded) if forwarded else None)

    # -- WebSocket side ---------------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        if not cast(FrontDoorConnection, ws).raw_frames:  # server.test_echo_path
            await serve_echo(ws)
            return
        ctx = self.ctx
        auth, identity, address = self._auth.pop(ws)
        _forget_handshake(ws)
        self._per_address[address] = self._per_address.get(address, 0) + 1
        handle = ConnectionHandle(
            ws,
            self._connection_ids(),
            address,
            ctx.settings.limits.outbox_bytes,
            ctx.settings.server.close_timeout,
            ctx.metrics,
            self.coalescer,
        )
        self.handles.add(handle)
        # Watched until admitted or refused, and again whenever congested.
        self._watched.add(handle)
        cast(FrontDoorConnection, ws).on_congested = functools.partial(self._watched.add, handle)
        ctx.metrics.opened()
        admission = admission_of(ctx)
        # Re-checked now that the socket counts (handshakes run concurrently).
        refusal = admission.open(
            handle.connection_id, address, pending=identity is None, now=ctx.clock()
        )
        try:
            if refusal is None:
                await self._serve(ws, handle, auth, identity)
            else:
                handle.close(refusal.code, refusal.reason)
                await _wait_closed(ws)
        finally:
            if refusal is None:
                admission.closed(handle.connection_id)
            code = _close_code(handle, ws)
            ctx.log.debug(
                "connection closed",
                connection_id=handle.connection_id,
                user=handle.user,
                code=code,
                peer=address,
            )
            self.handles.discard(handle)
            # A late pause_writing must not put a finished handle back.
            cast(FrontDoorConnection, ws).on_congested = None
            self._watched.discard(handle)
            left = self._per_address[address] - 1
            if left:
                self._per_address[address] = left
            else:
                del self._per_address[address]
            ctx.metrics.closed(code, asyncio.get_running_loop().time() - handle.created)

    async def _serve(
        self,
        ws: ServerConnection,
        handle: ConnectionHandle,
        auth: HandshakeAuth,
        identity: Identity | None,
    ) -> None:
        supervisor = self.ctx.directory.lookup(CONNECTIONS)
        if supervisor is None:
            handle.close(CloseCode.TRY_AGAIN_LATER, "not ready")
            await _wait_closed(ws)
            return
        tell = self.tell
        tell(supervisor, OpenConnection(handle, auth, identity))
        # The watchdog refuses the connection with 1013 if the supervisor
        # never answers (no timer per connection).
        refusal = await handle.admission()
        if refusal is not None:
            handle.close(refusal, _REFUSALS.get(refusal, "refused"))
            await _wait_closed(ws)
            return
        actor = handle.actor
        handle.receive(tell, self.ctx.settings.limits.inbound_queue)
        connection = cast(FrontDoorConnection, ws)
        connection.take_frames(handle.frame)
        try:
            await ws.wait_closed()
        finally:
            tell(actor, SocketClosed(ws.close_code))

    async def _watch_buffers(self) -> None:
        """Close connections whose write buffer outgrew the outbox bound.

        Catches what ``push`` cannot see: pongs to a ping flood from a client
        that never reads (docs/architecture.md, "Backpressure"). Also refuses
        (1013) a connection whose actor did not start within
        ``server.open_timeout``.

        It looks only at the connections that can need it: those not yet
        admitted, and those whose transport paused writing since the last
        look (a write buffer over the bound is over the transport's
        high-water mark first; with a bound below that mark, the connection
        is watched all along).
        """
        settings = self.ctx.settings
        limit = settings.limits.outbox_bytes
        open_timeout = settings.server.open_timeout
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(settings.server.watchdog_interval)
            now = loop.time()
            for handle in list(self._watched):
                decided = handle.decided
                if not decided and now - handle.created > open_timeout:
                    handle.refuse(CloseCode.TRY_AGAIN_LATER)
                if not handle.closing and handle.write_buffer_size() > limit:
                    self.ctx.metrics.outbox_drop("write_buffer")
                    handle.close(CloseCode.TOO_SLOW, "outbound queue overflow")
                    handle.abort()
                elif decided and not handle.congested:
                    self._watched.discard(handle)


_REFUSALS = {
    int(CloseCode.CONNECTION_LIMIT): "connection limit reached",
    int(CloseCode.RATE_LIMITED): "too many crashes, retry later",
    int(CloseCode.GOING_AWAY): "server shutting down",
    int(CloseCode.TRY_AGAIN_LATER): "try again later",
}


def _close_code(handle: ConnectionHandle, ws: ServerConnection) -> int:
    """The code a connection ended with: what rtcs decided or sent, else what
    the client sent, else 1006 (dropped)."""
    if handle.close_code is not None:
        return handle.close_code
    sent = ws.protocol.close_sent
    if sent is not None:
        return int(sent.code)
    return int(ws.close_code or CloseCode.ABNORMAL)


async def _wait_closed(ws: ServerConnection) -> None:
    with contextlib.suppress(Exception):
        await ws.wait_closed()


#: Request headers that must appear at most once (else HTTP 400). Others are
#: lists and are joined: ``Sec-WebSocket-Protocol`` (by websockets too) and
#: ``Cookie`` with "; "; two ``Authorization`` headers join into one bad
#: credential (HTTP 401).
_SINGLE_HEADERS = ("Host", "Origin")


def _duplicate_header(headers: Headers) -> str | None:
    """The first of ``_SINGLE_HEADERS`` that the request repeats, else None."""
    for name in _SINGLE_HEADERS:
        if len(headers.get_all(name)) > 1:
            return name
    return None


def _select_subprotocol(connection: ServerConnection, offered: Any) -> Any:
    return SUBPROTOCOL if SUBPROTOCOL in offered else None


def _address(connection: ServerConnection) -> str:
    remote = connection.remote_address
    return str(remote[0]) if remote else "unknown"


def _response(status: HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return Response(status.value, status.phrase, headers, body)


def _text(status: HTTPStatus, text: str) -> Response:
    return _response(status, text.encode(), "text/plain; charset=utf-8")


def _json(status: HTTPStatus, payload: dict[str, Any]) -> Response:
    return _response(status, json.dumps(payload).encode(), "application/json")


def _asset(asset: assets.Asset, request: Request) -> Response:
    """A packaged file (rtcs.assets): 200, 304 on a matching ``If-None-Match``, else 404."""
    answer = assets.answer(asset, request.headers.get_all("If-None-Match"))
    if answer is None:
        return _text(HTTPStatus.NOT_FOUND, "not found\n")
    status, body, headers = answer
    return Response(status.value, status.phrase, Headers(headers), body)


def _forget_handshake(ws: ServerConnection) -> None:
    """Empty the handshake's request and response headers once the connection is open.

    Everything rtcs needs from them (token, origin, address) was taken in
    ``process_request``, and websockets reads neither later; they were about
    2.5 KiB of every idle connection's memory (docs/performance.md). They are
    emptied in place: websockets' frame parser keeps the request object for
    the connection's lifetime.
    """
    if ws.request is not None:
        ws.request.headers.clear()
    if ws.response is not None:
        ws.response.headers.clear()
