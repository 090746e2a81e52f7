"""The rtcs client: one WebSocket connection at a time, reconnected and resumed.

The I/O shell around the pure parts of the package: :mod:`._backoff` (when to
reconnect), :mod:`._closecodes` (whether to), :mod:`._sequence` (exactly once,
in order), :mod:`._tokens` (when to refresh) and :mod:`._frames` (the wire).

One task (``_run``) owns the connection: it connects, reads the ``welcome``,
then runs a reader (every frame: replies to the pending requests, messages to
the inbox, the rest to the events) next to a setup step (re-subscribing after
a lost session, sending the requests that wait, then opening the gate for new
ones), a token-refresh timer and the delivery-receipt sender, until the socket
ends; then it decides from the close code whether and when to reconnect.

Delivery receipts (docs/protocol.md "Delivery receipts"): the inbox holds
each message with the session epoch it arrived in; when the application
takes one from :meth:`Client.messages`, its ``seq`` becomes the one to
acknowledge, and the sender writes one cumulative ``received`` for what was
taken within ``receipt_delay`` (at once after ``receipt_batch`` messages).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import itertools
import json
import logging
import random as _random
import ssl as _ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, overload

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidStatus,
    InvalidURI,
    WebSocketException,
)
from websockets.protocol import State
from websockets.uri import parse_uri

from rtcs import __version__
from rtcs.client._backoff import Reconnect
from rtcs.client._closecodes import ABNORMAL, Action, after_close, after_refusal, stop_error
from rtcs.client._errors import (
    ClientClosed,
    ConnectionLost,
    RateLimited,
    ReconnectFailed,
    RequestTimeout,
    RtcsError,
    error_from_frame,
)
from rtcs.client._events import (
    Connected,
    Disconnected,
    Event,
    GaveUp,
    PresenceChanged,
    Reconnecting,
    RoomDropped,
    SessionLost,
    Status,
    Stopped,
    SubscriptionDropped,
    TokenRefreshed,
    TokenRefreshFailed,
)
from rtcs.client._frames import (
    Ack,
    Joined,
    Left,
    Message,
    Pong,
    RoomPresence,
    Subscribed,
    Unsubscribed,
    UserPresence,
    Welcome,
    encode,
    resume_url,
)
from rtcs.client._mailbox import Mailbox
from rtcs.client._sequence import SeqTracker
from rtcs.client._tokens import refresh_delay, retry_delay, token_expiry

__all__ = ["Client", "TokenSource"]

log = logging.getLogger("rtcs.client")

#: A token, or a callable (plain or async) returning a fresh one on every call.
TokenSource: TypeAlias = str | Callable[[], str] | Callable[[], Awaitable[str]]

#: Requests resent after a reconnect when their reply was lost: serving them twice
#: changes nothing (the server answers a repeated subscribe or join the same way).
_IDEMPOTENT = frozenset({"subscribe", "unsubscribe", "join", "leave", "presence", "ping"})
#: Resent only if the session resumes: rtcs de-duplicates publishes by id per session.
_DEDUPLICATED = frozenset({"publish"})
#: Reply frames matched to a pending request by their ``id``.
_REPLIES = frozenset(
    {"subscribed", "unsubscribed", "ack", "joined", "left", "presence_state", "pong", "welcome"}
)
#: Frames sent at once while restoring a lost session's subscriptions and rooms
#: (below the server's default burst of 200 frames).
_RESTORE_BATCH = 50
#: Seconds between two rounds of restore requests that were rate limited, and how many rounds.
_RESTORE_PAUSE = 1.0
_RESTORE_ROUNDS = 5


class _Sent(enum.Enum):
    """Where a request stands with respect to the wire."""

    UNSENT = "unsent"  # the next open connection sends it
    SENT = "sent"  # on the current connection, reply awaited
    AWAITING_RESUME = "awaiting_resume"  # a publish whose connection dropped: resent if resumed


@dataclass(eq=False, slots=True)
class _Pending:
    id: int
    kind: str
    text: str
    future: asyncio.Future[dict[str, Any]]
    # Bound to one connection (restoring it, refreshing its token): never resent.
    internal: bool = False
    state: _Sent = _Sent.UNSENT
    first_sent: float | None = None


class _Messages:
    """What :meth:`Client.messages` returns: the inbox, read by the
    application, each message taken noted for delivery receipts."""

    __slots__ = ("_client",)

    def __init__(self, client: Client) -> None:
        self._client = client

    def __aiter__(self) -> _Messages:
        return self

    async def __anext__(self) -> Message:
        client = self._client
        epoch, message = await client._inbox.get()
        client._took(epoch, message)
        return message


class _Retry(Exception):
    """A connection attempt failed in a way worth another attempt."""

    def __init__(self, cause: str, *, later: bool = False) -> None:
        super().__init__(cause)
        self.cause = cause
        self.later = later


class _Stop(Exception):
    """A connection attempt failed in a way that ends the client."""

    def __init__(self, error: ClientClosed) -> None:
        super().__init__(str(error))
        self.error = error


def _close_info(ws: ClientConnection) -> tuple[int, str]:
    code = ws.close_code
    return (ABNORMAL if code is None else code), (ws.close_reason or "")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _positive(name: str, value: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 < value < float("inf")
    ):
        raise ValueError(f"{name} must be a positive number, not {value!r}")
    return float(value)


class Client:
    """An rtcs client: requests, messages and events over one self-healing connection.

    Use it as an async context manager (``async with Client(url, token=t) as
    c``), or call :meth:`connect` and :meth:`close`. Every request method
    sends one frame with an ``id`` and returns the typed reply, or raises the
    :class:`~rtcs.client.RtcsError` subclass of the error code. Messages
    arrive on :meth:`messages` exactly once, in ``seq`` order, across
    reconnects; what happens to the connection arrives on :meth:`events`.

    Only used from one event loop. Not thread-safe.
    """

    def __init__(
        self,
        url: str,
        token: TokenSource,
        *,
        reconnect: Reconnect | None = None,
        request_timeout: float = 10.0,
        open_timeout: float = 10.0,
        close_timeout: float = 2.0,
        refresh_margin: float = 60.0,
        max_message_size: int = 65536,
        max_queue: int = 10_000,
        max_events: int = 1_000,
        dedup_window: float = 60.0,
        receipt_delay: float = 0.05,
        receipt_batch: int = 100,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        additional_headers: Mapping[str, str] | None = None,
        ssl: _ssl.SSLContext | None = None,
        rng: Callable[[], float] = _random.random,
    ) -> None:
        """Set the client up; nothing connects before :meth:`connect` (or ``async with``).

        Args:
            url: ``ws://HOST:PORT/ws`` or ``wss://…``.
            token: the JWT, or a callable (plain or async) returning a fresh one;
                a callable is called for every connection and to refresh the
                token ``refresh_margin`` seconds before it expires.
            reconnect: the backoff and give-up policy (default: never give up).
            request_timeout: seconds a request may wait for its reply, time
                spent reconnecting included (a method's ``timeout`` overrides it).
            open_timeout: seconds for the handshake, and again for the ``welcome``.
            close_timeout: seconds :meth:`close` waits for the closing handshake.
            refresh_margin: refresh this long before the token's ``exp`` (a
                quarter of a shorter remaining lifetime).
            max_message_size: the server's ``limits.max_message_size``: larger
                frames raise :class:`~rtcs.client.TooLarge` without being sent.
            max_queue: messages buffered for :meth:`messages`; when full, the
                client stops reading the socket until the application catches up.
            max_events: events kept for :meth:`events`; the oldest go first.
            dedup_window: the server's ``limits.dedup_window``: a publish whose
                connection dropped is resent (same id) only within it.
            receipt_delay: seconds a delivery receipt waits for more messages
                to be taken, so one ``received`` covers them all (with
                subscriptions made with ``receipts=True``).
            receipt_batch: messages taken after which the receipt goes at once.
            ping_interval, ping_timeout: WebSocket keepalive (None: off).
            additional_headers: more handshake headers (never ``Authorization``).
            ssl: the TLS context for ``wss://`` URLs (default: the system's).
            rng: returns numbers in ``[0, 1)`` for the backoff jitter.

        Raises:
            ValueError: an invalid URL, an empty token or an out-of-range
                number; the message names the argument.
            TypeError: ``token`` is neither a string nor a callable.
        """
        try:
            parse_uri(url)
        except InvalidURI as exc:
            raise ValueError(f"url {url!r} is not a WebSocket URL: {exc}") from None
        if isinstance(token, str):
            if not token:
                raise ValueError("token must not be empty")
        elif not callable(token):
            raise TypeError(f"token must be a str or a callable, not {type(token).__name__}")
        for name, value in (
            ("max_message_size", max_message_size),
            ("max_queue", max_queue),
            ("max_events", max_events),
            ("receipt_batch", receipt_batch),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        headers = dict(additional_headers or {})
        if any(name.lower() == "authorization" for name in headers):
            raise ValueError("additional_headers must not hold Authorization: pass token=")
        self._url = url
        self._token_source: TokenSource = token
        self._refreshable = not isinstance(token, str)
        self._reconnect = reconnect if reconnect is not None else Reconnect()
        self._request_timeout = _positive("request_timeout", request_timeout)
        self._open_timeout = _positive("open_timeout", open_timeout)
        self._close_timeout = _positive("close_timeout", close_timeout)
        self._refresh_margin = _positive("refresh_margin", refresh_margin)
        self._dedup_window = _positive("dedup_window", dedup_window)
        self._receipt_delay = _positive("receipt_delay", receipt_delay)
        self._receipt_batch = receipt_batch
        self._max_message_size = max_message_size
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._headers = list(headers.items())
        self._ssl = ssl
        self._rng = rng
        self._clock = time.monotonic
        self._wall = time.time

        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._seq = SeqTracker()
        # Messages with the session epoch they arrived in (a lost session
        # starts a new epoch: what the old one left in the inbox is never
        # acknowledged to the new session).
        self._inbox: Mailbox[tuple[int, Message]] = Mailbox(max_queue)
        self._messages = _Messages(self)
        self._events: Mailbox[Event] = Mailbox(max_events, drop_oldest=True)
        self._subscriptions: dict[str, None] = {}  # ordered sets
        # Delivery receipts: the subscriptions made with them, the session
        # epoch, the highest seq the application took and the highest sent
        # in a ``received`` on this connection.
        self._receipt_topics: set[str] = set()
        self._epoch = 0
        self._taken = 0
        self._acked = 0
        self._ack_again = False  # a redelivered duplicate: acknowledge even if sent
        self._ack_wanted = asyncio.Event()
        self._ack_now = asyncio.Event()
        self._rooms: dict[str, None] = {}
        self._welcome: Welcome | None = None
        self._degraded = False
        self._token_in_use = ""
        # The open connection requests go to; None while (re)connecting.
        self._ws: ClientConnection | None = None
        # The connection being served, open or not yet ready.
        self._current: ClientConnection | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None
        self._closing = False
        self._end: ClientClosed | None = None

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self) -> Welcome:
        """Connect and return once the first ``welcome`` arrived.

        The first connection follows the reconnect policy too: refused or
        unreachable servers are retried until the policy gives up.

        Raises:
            AuthFailed: the token was refused.
            Rejected: the server refused the connection for good.
            ReconnectFailed: the reconnect policy gave up.
            ClientClosed: the client was closed meanwhile.
            RuntimeError: :meth:`connect` was already called.
        """
        if self._run_task is not None or self._end is not None:
            raise RuntimeError("connect() may be called once per Client")
        self._first = asyncio.get_running_loop().create_future()
        self._run_task = asyncio.create_task(self._run(), name="rtcs.client")
        try:
            await asyncio.shield(self._first)
        except BaseException:
            await self.close()
            raise
        assert self._welcome is not None
        return self._welcome

    async def close(self) -> None:
        """Close the connection (code 1000) and stop reconnecting. Idempotent.

        Requests still waiting raise :class:`~rtcs.client.ClientClosed`;
        :meth:`messages` yields what it holds, then ends; :meth:`events` ends
        with :class:`~rtcs.client.Stopped` (error None).
        """
        first_call = not self._closing
        self._closing = True
        task = self._run_task
        ws = self._current
        if first_call and ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        if task is not None and not task.done():
            # The run loop returns by itself once the reader ends; anything
            # else it may be waiting for (a backoff, a handshake) is cancelled.
            await asyncio.wait({task}, timeout=self._close_timeout)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._finish(None)

    # ----------------------------------------------------------- properties

    @property
    def welcome(self) -> Welcome | None:
        """The last ``welcome`` (of the connection, or of a token refresh)."""
        return self._welcome

    @property
    def session_id(self) -> str | None:
        """The current session's id (kept across resumes)."""
        return self._welcome.session_id if self._welcome else None

    @property
    def connection_id(self) -> str | None:
        """The current (or last) connection's id."""
        return self._welcome.connection_id if self._welcome else None

    @property
    def user(self) -> str | None:
        """The authenticated user id (the token's ``sub``)."""
        return self._welcome.user if self._welcome else None

    @property
    def last_seq(self) -> int:
        """The highest ``seq`` of the session handed to :meth:`messages` (0: none)."""
        return self._seq.last

    @property
    def connected(self) -> bool:
        """True while a connection is open and ready for requests."""
        return self._ws is not None

    @property
    def degraded(self) -> bool:
        """True while the server says it runs without its shared backend."""
        return self._degraded

    @property
    def subscriptions(self) -> frozenset[str]:
        """The topics and patterns subscribed (restored after a lost session)."""
        return frozenset(self._subscriptions)

    @property
    def receipt_subscriptions(self) -> frozenset[str]:
        """The subscriptions made with ``receipts=True``."""
        return frozenset(self._receipt_topics)

    @property
    def rooms(self) -> frozenset[str]:
        """The rooms joined (re-joined after a lost session)."""
        return frozenset(self._rooms)

    @property
    def closed(self) -> ClientClosed | None:
        """Why the client ended (None while it runs or reconnects)."""
        return self._end

    # ------------------------------------------------------------- streams

    def messages(self) -> AsyncIterator[Message]:
        """Every ``message`` frame of the session, exactly once, in ``seq`` order.

        One reader: the stream is shared, not copied. It survives reconnects;
        after :class:`~rtcs.client.SessionLost` (announced on :meth:`events`)
        it goes on with the new session's messages. It ends when the
        application closes the client, or raises the
        :class:`~rtcs.client.ClientClosed` subclass the client stopped with,
        after the buffered messages. With receipt subscriptions, a message
        taken from here counts as received (the next ``received`` covers it).
        """
        return self._messages

    def events(self) -> AsyncIterator[Event]:
        """What happens to the connection, as typed events, ending with :class:`Stopped`.

        One reader. Up to ``max_events`` unread events are kept; older ones are dropped.
        """
        return self._events

    # ------------------------------------------------------------ requests

    async def subscribe(
        self, topic: str, *, receipts: bool = False, timeout: float | None = None
    ) -> Subscribed:
        """Subscribe to a topic or pattern (``chat.*``, ``chat.>``).

        The subscription is remembered and restored if the session is lost.
        With ``receipts=True`` the client acknowledges its messages once the
        application took them from :meth:`messages`, and rtcs sends again
        those it does not hear about (docs/protocol.md "Delivery receipts").
        Subscribing again to the same pattern sets ``receipts`` anew.

        Raises:
            BadTopic: not a valid topic or pattern.
            Forbidden: the user's roles do not allow it.
            LimitExceeded: too many subscriptions.
            RequestTimeout, ClientClosed, RateLimited: as every request.
        """
        request: dict[str, Any] = {"type": "subscribe", "topic": topic}
        if receipts:
            request["receipts"] = True
        frame = await self._call(request, timeout)
        self._subscriptions[topic] = None
        if receipts:
            self._receipt_topics.add(topic)
        else:
            self._receipt_topics.discard(topic)
        return Subscribed.from_frame(frame)

    async def unsubscribe(self, topic: str, *, timeout: float | None = None) -> Unsubscribed:
        """Unsubscribe from a topic or pattern (a subscription that does not exist is fine).

        Raises:
            BadTopic: not a valid topic or pattern.
            RequestTimeout, ClientClosed, RateLimited: as every request.
        """
        frame = await self._call({"type": "unsubscribe", "topic": topic}, timeout)
        self._subscriptions.pop(topic, None)
        self._receipt_topics.discard(topic)
        return Unsubscribed.from_frame(frame)

    async def publish(self, topic: str, data: Any, *, timeout: float | None = None) -> Ack:
        """Publish ``data`` (any JSON value) to ``topic``; returns once rtcs acked it.

        If the connection drops before the ack, the publish is resent with the
        same id after a successful resume (rtcs de-duplicates it: delivered
        once, ``Ack.duplicate`` tells); if the session is lost it raises
        :class:`~rtcs.client.ConnectionLost` (it may have been delivered).

        Raises:
            BadTopic: not a valid topic, or a pattern.
            Forbidden: the user's roles do not allow it.
            Unavailable: a backend it needs is down (degraded mode); retry later.
            TooLarge: the frame exceeds ``max_message_size`` (nothing sent).
            ConnectionLost, RequestTimeout, ClientClosed, RateLimited.
            TypeError, ValueError: ``data`` is not JSON.
        """
        frame = await self._call({"type": "publish", "topic": topic, "data": data}, timeout)
        return Ack.from_frame(frame)

    async def send(
        self,
        data: Any,
        *,
        user: str | None = None,
        connection: str | None = None,
        timeout: float | None = None,
    ) -> Ack:
        """Send a direct message to exactly one of ``user`` (every connection of
        that user) or ``connection`` (one connection id).

        At most once: if the connection drops before the ack it raises
        :class:`~rtcs.client.ConnectionLost` and is not resent.

        Raises:
            Offline: no live connection of that user (or no such connection).
            Forbidden: the user's roles do not allow direct messages.
            TooLarge, ConnectionLost, RequestTimeout, ClientClosed, RateLimited.
            ValueError: not exactly one of ``user`` and ``connection``.
        """
        if (user is None) == (connection is None):
            raise ValueError("send needs exactly one of user= or connection=")
        to = {"user": user} if user is not None else {"connection": connection}
        frame = await self._call({"type": "send", "to": to, "data": data}, timeout)
        return Ack.from_frame(frame)

    async def join(self, room: str, *, timeout: float | None = None) -> Joined:
        """Join ``room``; returns its members. Remembered and re-joined if the session is lost.

        Raises:
            BadRequest: not a valid room name.
            Forbidden: the user's roles do not allow this room.
            LimitExceeded: too many rooms.
            Unavailable: the presence backend is down.
            RequestTimeout, ClientClosed, RateLimited: as every request.
        """
        frame = await self._call({"type": "join", "room": room}, timeout)
        self._rooms[room] = None
        return Joined.from_frame(frame)

    async def leave(self, room: str, *, timeout: float | None = None) -> Left:
        """Leave ``room``.

        Raises:
            BadRequest: not a valid room name.
            RequestTimeout, ClientClosed, RateLimited: as every request.
        """
        frame = await self._call({"type": "leave", "room": room}, timeout)
        self._rooms.pop(room, None)
        return Left.from_frame(frame)

    async def broadcast(
        self,
        data: Any,
        *,
        room: str | None = None,
        scope: Literal["global"] | None = None,
        roles: Sequence[str] | None = None,
        users: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> Ack:
        """Broadcast ``data`` to exactly one of: a ``room`` the client joined,
        everyone (``scope="global"``), or the connections of a filter (``roles``
        any of, and/or ``users``: the frame's ``filter``).

        At most once, like :meth:`send`.

        Raises:
            Forbidden: not a member of the room, or no permission for global or
                filtered broadcasts.
            BadRequest, TooLarge, ConnectionLost, RequestTimeout, ClientClosed,
            RateLimited.
            ValueError: not exactly one target.
        """
        frame: dict[str, Any] = {"type": "broadcast", "data": data}
        targets = 0
        if room is not None:
            frame["room"] = room
            targets += 1
        if scope is not None:
            frame["scope"] = scope
            targets += 1
        if roles is not None or users is not None:
            chosen: dict[str, list[str]] = {}
            if roles is not None:
                chosen["roles"] = list(roles)
            if users is not None:
                chosen["users"] = list(users)
            frame["filter"] = chosen
            targets += 1
        if targets != 1:
            raise ValueError("broadcast needs exactly one of room=, scope= or roles=/users=")
        return Ack.from_frame(await self._call(frame, timeout))

    @overload
    async def presence(self, *, room: str, timeout: float | None = None) -> RoomPresence: ...

    @overload
    async def presence(self, *, user: str, timeout: float | None = None) -> UserPresence: ...

    async def presence(
        self, *, room: str | None = None, user: str | None = None, timeout: float | None = None
    ) -> RoomPresence | UserPresence:
        """The members of ``room``, or whether ``user`` is online (on every node).

        Raises:
            Forbidden: the room's presence is not visible to this user.
            Unavailable: the presence backend is down.
            BadRequest, RequestTimeout, ClientClosed, RateLimited.
            ValueError: not exactly one of ``room`` and ``user``.
        """
        if (room is None) == (user is None):
            raise ValueError("presence needs exactly one of room= or user=")
        if room is not None:
            frame = await self._call({"type": "presence", "room": room}, timeout)
            return RoomPresence.from_frame(frame)
        frame = await self._call({"type": "presence", "user": user}, timeout)
        return UserPresence.from_frame(frame)

    async def ping(self, *, timeout: float | None = None) -> Pong:
        """An application-level round trip; returns it, measured.

        Raises:
            RequestTimeout, ClientClosed, RateLimited: as every request.
        """
        start = self._clock()
        frame = await self._call({"type": "ping"}, timeout)
        return Pong(rtt=self._clock() - start, frame=frame)

    async def auth(self, token: str | None = None, *, timeout: float | None = None) -> Welcome:
        """Refresh the connection's token now (an ``auth`` frame on the open connection).

        ``token`` defaults to a fresh one from the token callable (or the
        static token). A given token also replaces a static token for later
        reconnects. With a token callable the client refreshes by itself;
        this is for applications that manage tokens themselves.

        Raises:
            Forbidden: the server refused the token (the old one stays in force).
            RequestTimeout, ConnectionLost, ClientClosed, RateLimited.
        """
        fresh = token if token is not None else await self._fresh_token()
        frame = await self._call({"type": "auth", "token": fresh}, timeout)
        self._token_in_use = fresh
        if token is not None and not self._refreshable:
            self._token_source = token
        self._welcome = Welcome.from_frame(frame)
        return self._welcome

    # ------------------------------------------------------- request plumbing

    async def _call(self, frame: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        """Send ``frame`` with a new id once a connection is ready; its reply frame.

        Raises:
            RtcsError: the error frame's class, RequestTimeout, ConnectionLost,
                TooLarge, or the ClientClosed the client ended with.
        """
        if self._end is not None:
            raise self._end
        if self._run_task is None:
            raise RuntimeError("not connected: use `async with Client(...)` or await connect()")
        seconds = self._request_timeout if timeout is None else _positive("timeout", timeout)
        pending = self._register(frame, internal=False)
        try:
            async with asyncio.timeout(seconds):
                ws = self._ws
                if ws is not None:
                    await self._transmit(ws, pending)
                # Otherwise the next connection sends it (_setup).
                return await pending.future
        except TimeoutError:
            raise RequestTimeout(f"no reply to {pending.kind} within {seconds:g} s") from None
        finally:
            self._pending.pop(pending.id, None)

    async def _exchange(self, ws: ClientConnection, frame: dict[str, Any]) -> dict[str, Any]:
        """One request on ``ws`` alone (restoring it, refreshing its token).

        Raises:
            RtcsError: as :meth:`_call`; ConnectionLost when ``ws`` closes first.
        """
        pending = self._register(frame, internal=True)
        try:
            async with asyncio.timeout(self._request_timeout):
                await self._transmit(ws, pending)
                if pending.state is _Sent.UNSENT:
                    raise ConnectionLost("the connection closed")
                return await pending.future
        except TimeoutError:
            raise RequestTimeout(f"no reply to {pending.kind}") from None
        finally:
            self._pending.pop(pending.id, None)

    def _register(self, frame: dict[str, Any], *, internal: bool) -> _Pending:
        rid = next(self._ids)
        text = encode({**frame, "id": rid}, self._max_message_size)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        pending = _Pending(rid, frame["type"], text, future, internal)
        self._pending[rid] = pending
        return pending

    async def _transmit(self, ws: ClientConnection, pending: _Pending) -> None:
        """Write ``pending`` on ``ws`` if it is open (else it stays unsent)."""
        if ws.state is not State.OPEN:
            return
        # Marked before the write: from here on the server may have it.
        pending.state = _Sent.SENT
        if pending.first_sent is None:
            pending.first_sent = self._clock()
        with contextlib.suppress(ConnectionClosed):  # the run loop handles the drop
            await ws.send(pending.text)

    def _fail(self, pending: _Pending, error: BaseException) -> None:
        if not pending.future.done():
            pending.future.set_exception(error)

    def _after_drop(self) -> None:
        """The connection dropped: decide for each request it carried (module docstring)."""
        for pending in list(self._pending.values()):
            if pending.future.done() or pending.state is not _Sent.SENT:
                continue
            if pending.internal or pending.kind not in _IDEMPOTENT | _DEDUPLICATED:
                self._fail(
                    pending,
                    ConnectionLost(
                        f"the connection dropped before the reply to {pending.kind}: "
                        "it may have been served, and is not resent"
                    ),
                )
            elif pending.kind in _DEDUPLICATED:
                pending.state = _Sent.AWAITING_RESUME
            else:
                pending.state = _Sent.UNSENT

    def _after_welcome(self, resumed: bool) -> None:
        """Publishes that lost their ack: resend (same id) if resumed, else fail."""
        now = self._clock()
        for pending in list(self._pending.values()):
            if pending.state is not _Sent.AWAITING_RESUME or pending.future.done():
                continue
            first = pending.first_sent if pending.first_sent is not None else now
            if resumed and now - first < self._dedup_window:
                pending.state = _Sent.UNSENT
                continue
            why = "the session was lost" if not resumed else "too late to resend it"
            self._fail(
                pending,
                ConnectionLost(
                    f"the connection dropped before the ack and {why}: "
                    "the publish may or may not have been delivered"
                ),
            )

    # --------------------------------------------------------- the run loop

    async def _run(self) -> None:
        try:
            await self._run_connections()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: end the client visibly rather than hang
            log.exception("rtcs client stopped by an unexpected error")
            self._finish(ClientClosed(f"internal client error: {_describe(exc)}"))

    async def _run_connections(self) -> None:
        policy = self._reconnect
        attempt = 1  # the number of the next attempt since the connection was lost
        failures = 0  # failed attempts in a row
        wait = False  # the first connection of the client goes at once
        lost_at = self._clock()
        later = False
        cause = ""
        while not self._closing:
            if wait:
                elapsed = self._clock() - lost_at
                if policy.gives_up(failures, elapsed):
                    log.warning("rtcs client gave up after %d attempt(s): %s", failures, cause)
                    self._emit(GaveUp(failures, elapsed, cause))
                    self._finish(ReconnectFailed(failures, elapsed, cause))
                    return
                delay = policy.delay(attempt, self._rng(), later=later)
                log.info(
                    "rtcs client reconnecting in %.2f s (attempt %d): %s", delay, attempt, cause
                )
                self._emit(Reconnecting(attempt, delay, cause))
                await asyncio.sleep(delay)
                if self._closing:
                    return
            try:
                ws, welcome = await self._open()
            except _Stop as stop:
                self._finish(stop.error)
                return
            except _Retry as retry:
                attempt, failures, wait = attempt + 1, failures + 1, True
                later, cause = retry.later, retry.cause
                continue
            code, reason = await self._serve(ws, welcome)
            if self._closing:
                return
            cause = f"close code {code}" + (f" ({reason})" if reason else "")
            action = after_close(code, reason, authenticated=True, refreshable=self._refreshable)
            if action is Action.STOP:
                self._finish(stop_error(code, reason))
                return
            log.warning("rtcs client lost its connection: %s", cause)
            attempt, failures, wait, lost_at = 1, 0, True, self._clock()
            later = action is Action.LATER

    async def _open(self) -> tuple[ClientConnection, Welcome]:
        """One connection attempt, up to its ``welcome``.

        Raises:
            _Retry: worth another attempt (refused connection, timeout, 5xx…).
            _Stop: the client must end (the close-code table).
        """
        try:
            async with asyncio.timeout(self._open_timeout):
                token = await self._fresh_token()
        except Exception as exc:  # the application's callable: retried, and said
            raise _Retry(f"the token callable failed: {_describe(exc)}") from None
        url = self._url
        if self._welcome is not None:
            url = resume_url(url, self._welcome.session_id, self._seq.last)
        headers = [("Authorization", f"Bearer {token}"), *self._headers]
        options: dict[str, Any] = {} if self._ssl is None else {"ssl": self._ssl}
        try:
            ws = await connect(
                url,
                additional_headers=headers,
                open_timeout=self._open_timeout,
                close_timeout=self._close_timeout,
                ping_interval=self._ping_interval,
                ping_timeout=self._ping_timeout,
                compression=None,
                # Server frames carry a client's message plus the envelope.
                max_size=max(2**20, 2 * self._max_message_size + 4096),
                user_agent_header=f"rtcs-python/{__version__}",
                **options,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            body = exc.response.body.decode("utf-8", "replace")[:200] if exc.response.body else ""
            action = after_refusal(status)
            if action is Action.STOP:
                raise _Stop(stop_error(status, body, http=True)) from None
            raise _Retry(f"HTTP {status}", later=action is Action.LATER) from None
        except InvalidURI as exc:  # a redirect to something else
            raise _Stop(ClientClosed(f"bad URL: {exc}")) from None
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise _Retry(_describe(exc)) from None
        try:
            async with asyncio.timeout(self._open_timeout):
                raw = await ws.recv()
            frame = json.loads(raw)
            if not isinstance(frame, dict) or frame.get("type") != "welcome":
                raise ValueError(f"expected a welcome, got {str(raw)[:100]!r}")
        except ConnectionClosed:
            code, reason = _close_info(ws)
            action = after_close(code, reason, authenticated=False, refreshable=self._refreshable)
            if action is Action.STOP:
                raise _Stop(stop_error(code, reason)) from None
            raise _Retry(
                f"close code {code} before welcome", later=action is Action.LATER
            ) from None
        except (TimeoutError, ValueError) as exc:
            await ws.close()
            raise _Retry(f"no welcome: {_describe(exc)}") from None
        self._token_in_use = token
        return ws, Welcome.from_frame(frame)

    async def _serve(self, ws: ClientConnection, welcome: Welcome) -> tuple[int, str]:
        """Run one authenticated connection until it ends; its close code and reason."""
        self._current = ws
        session_lost = self._on_welcome(welcome)
        reader = asyncio.create_task(self._read(ws), name="rtcs.client.read")
        setup = asyncio.create_task(self._setup(ws, session_lost), name="rtcs.client.setup")
        refresh = asyncio.create_task(self._refresh(ws), name="rtcs.client.refresh")
        receipts = asyncio.create_task(self._acknowledge(ws), name="rtcs.client.receipts")
        try:
            await reader
        finally:
            self._ws = None
            for task in (setup, refresh, receipts, reader):
                task.cancel()
            for task in (setup, refresh, receipts, reader):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        code, reason = _close_info(ws)
        self._current = None
        self._emit(Disconnected(code, reason))
        self._after_drop()
        return code, reason

    def _on_welcome(self, welcome: Welcome) -> bool:
        """Take a connection's welcome; True when a resume was refused (session lost)."""
        previous = self._welcome
        lost = previous is not None and not welcome.resumed
        if lost:
            assert previous is not None
            log.warning(
                "rtcs client could not resume session %s after seq %d: new session %s",
                previous.session_id,
                self._seq.last,
                welcome.session_id,
            )
            self._emit(SessionLost(previous.session_id, welcome.session_id, self._seq.last))
            self._seq.reset()
            self._epoch += 1
            self._taken = 0
        # A new connection: a receipt sent on the last one may be lost.
        self._acked = 0
        if self._taken and self._receipt_topics:
            self._ack_wanted.set()
        self._after_welcome(resumed=not lost)
        self._welcome = welcome
        self._emit(
            Connected(
                welcome.session_id,
                welcome.resumed,
                welcome.replayed,
                welcome.connection_id,
                welcome.user,
                welcome.degraded,
            )
        )
        if welcome.degraded != self._degraded:
            self._degraded = welcome.degraded
            self._emit(Status(welcome.degraded))
        if self._first is not None and not self._first.done():
            self._first.set_result(None)
        return lost

    async def _setup(self, ws: ClientConnection, session_lost: bool) -> None:
        """Restore a lost session, send what waits, then open the gate for requests."""
        if session_lost:
            await self._restore(ws)
        while ws.state is State.OPEN:
            waiting = sorted(
                (p for p in self._pending.values() if p.state is _Sent.UNSENT and not p.internal),
                key=lambda p: p.id,
            )
            if not waiting:
                # No await between this check and the gate: nothing waits unsent.
                self._ws = ws
                return
            for pending in waiting:
                await self._transmit(ws, pending)

    async def _restore(self, ws: ClientConnection) -> None:
        """Subscribe and join again what the lost session had, in batches."""
        work = [("subscribe", topic) for topic in self._subscriptions]
        work += [("join", room) for room in self._rooms]
        for round_ in range(_RESTORE_ROUNDS):
            limited: list[tuple[str, str]] = []
            for start in range(0, len(work), _RESTORE_BATCH):
                batch = work[start : start + _RESTORE_BATCH]
                results = await asyncio.gather(
                    *(self._exchange(ws, self._restore_frame(k, n)) for k, n in batch),
                    return_exceptions=True,
                )
                for (kind, name), result in zip(batch, results, strict=True):
                    if isinstance(result, RateLimited):
                        limited.append((kind, name))
                    elif isinstance(result, RequestTimeout | ConnectionLost):
                        log.warning("rtcs client could not restore %s %s: %s", kind, name, result)
                    elif isinstance(result, RtcsError):
                        self._dropped(kind, name, result.code)
                    elif isinstance(result, BaseException):
                        raise result
            if not limited:
                return
            work = limited
            if round_ + 1 < _RESTORE_ROUNDS:
                await asyncio.sleep(_RESTORE_PAUSE)
        log.warning("rtcs client could not restore %d subscription(s) or room(s)", len(work))

    def _restore_frame(self, kind: str, name: str) -> dict[str, Any]:
        if kind == "subscribe":
            frame: dict[str, Any] = {"type": kind, "topic": name}
            if name in self._receipt_topics:
                frame["receipts"] = True
            return frame
        return {"type": kind, "room": name}

    def _dropped(self, kind: str, name: str, reason: str) -> None:
        if kind == "subscribe":
            self._receipt_topics.discard(name)
            if self._subscriptions.pop(name, False) is None:
                self._emit(SubscriptionDropped(name, reason))
        elif self._rooms.pop(name, False) is None:
            self._emit(RoomDropped(name, reason))

    async def _read(self, ws: ClientConnection) -> None:
        """Hand every frame of ``ws`` on until it closes."""
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                try:
                    frame = json.loads(raw)
                except ValueError:
                    log.warning("rtcs client ignored a frame that is not JSON")
                    continue
                if isinstance(frame, dict):
                    await self._dispatch(frame)

    async def _dispatch(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "message":
            message = Message.from_frame(frame)
            if message.seq <= 0 or self._seq.accept(message.seq):
                await self._inbox.put((self._epoch, message))
            elif message.redelivered:
                # Held already: its receipt was lost or is not sent yet.
                self._ack_again = True
                self._ack_wanted.set()
            return
        rid = frame.get("id")
        if rid is not None and (kind in _REPLIES or kind == "error"):
            pending = self._pending.get(rid) if type(rid) is int else None
            if pending is not None and not pending.future.done():
                if kind == "error":
                    pending.future.set_exception(error_from_frame(frame))
                else:
                    pending.future.set_result(frame)
            return
        if kind == "status":
            degraded = frame.get("degraded") is True
            reason = frame.get("reason")
            if degraded != self._degraded:
                self._degraded = degraded
                self._emit(Status(degraded, reason if isinstance(reason, str) else None))
        elif kind == "presence":
            room, user, event = frame.get("room"), frame.get("user"), frame.get("event")
            if isinstance(room, str) and isinstance(user, str) and isinstance(event, str):
                self._emit(PresenceChanged(room, user, event))
        elif kind in ("unsubscribed", "left"):
            # Sent unasked when the server drops a subscription or a room.
            name = frame.get("topic" if kind == "unsubscribed" else "room")
            reason = frame.get("reason")
            if isinstance(name, str):
                what = "subscribe" if kind == "unsubscribed" else "join"
                self._dropped(what, name, reason if isinstance(reason, str) else "dropped")
        elif kind == "error":
            log.warning("rtcs client got an error without id: %s", frame.get("code"))

    # --------------------------------------------------- delivery receipts

    def _took(self, epoch: int, message: Message) -> None:
        """The application took ``message`` from :meth:`messages`."""
        if epoch != self._epoch or message.seq <= self._taken:
            return
        self._taken = message.seq
        if self._receipt_topics:
            self._ack_wanted.set()
            if self._taken - self._acked >= self._receipt_batch:
                self._ack_now.set()

    async def _acknowledge(self, ws: ClientConnection) -> None:
        """Send what the application took as cumulative ``received`` frames on
        ``ws``: one per ``receipt_delay`` at most, unless ``receipt_batch``
        messages wait."""
        while True:
            await self._ack_wanted.wait()
            if not self._ack_now.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._receipt_delay):
                        await self._ack_now.wait()
            self._ack_wanted.clear()
            self._ack_now.clear()
            seq = self._taken
            if seq <= 0 or (seq <= self._acked and not self._ack_again):
                continue
            self._ack_again = False
            self._acked = seq
            if ws.state is not State.OPEN:
                return
            with contextlib.suppress(ConnectionClosed):  # the run loop handles the drop
                await ws.send(encode({"type": "received", "seq": seq}, self._max_message_size))

    # -------------------------------------------------------------- tokens

    async def _fresh_token(self) -> str:
        source = self._token_source
        if isinstance(source, str):
            return source
        value = source()
        if inspect.isawaitable(value):
            value = await value
        if not isinstance(value, str) or not value:
            raise TypeError(f"the token callable returned {type(value).__name__}, not a token")
        return value

    async def _refresh(self, ws: ClientConnection) -> None:
        """Refresh the token of ``ws`` before it expires, for as long as ``ws`` lives."""
        if not self._refreshable:
            return
        while True:
            expires = token_expiry(self._token_in_use)
            if expires is None:
                return  # not a readable JWT: nothing to schedule
            await asyncio.sleep(refresh_delay(expires, self._wall(), self._refresh_margin))
            while True:
                try:
                    token = await self._fresh_token()
                    fresh_exp = token_expiry(token)
                    if fresh_exp is not None and fresh_exp <= expires:
                        raise ValueError("the token callable returned no fresher token")
                    frame = await self._exchange(ws, {"type": "auth", "token": token})
                except ConnectionLost:
                    return
                except Exception as exc:  # the application's callable, or the server's refusal
                    log.warning("rtcs client token refresh failed: %s", _describe(exc))
                    self._emit(TokenRefreshFailed(_describe(exc)))
                    delay = retry_delay(expires, self._wall())
                    if delay is None:
                        return  # the server closes with 4001; the reconnect gets a fresh token
                    await asyncio.sleep(delay)
                    continue
                self._token_in_use = token
                self._welcome = Welcome.from_frame(frame)
                self._emit(TokenRefreshed(fresh_exp))
                break

    # --------------------------------------------------------------- the end

    def _emit(self, event: Event) -> None:
        self._events.put_nowait(event)

    def _finish(self, error: ClientClosed | None) -> None:
        """End the client: fail what waits, end the streams. Idempotent."""
        if self._end is not None:
            return
        end = error if error is not None else ClientClosed("the client was closed")
        self._end = end
        self._closing = True
        self._ws = None
        if error is not None:
            log.warning("rtcs client stopped: %s", error)
        for pending in list(self._pending.values()):
            self._fail(pending, end)
        self._inbox.end(error)
        self._emit(Stopped(error))
        self._events.end()
        if self._first is not None and not self._first.done():
            self._first.set_exception(end)
            self._first.exception()  # retrieved: connect() raises it, if it waits
