"""The Python client of rtcs (asyncio): requests, messages and events over one
connection that reconnects and resumes by itself. See docs/client-python.md.

::

    from rtcs.client import Client

    async with Client("ws://127.0.0.1:8765/ws", token=TOKEN) as c:
        await c.subscribe("chat.>")
        await c.publish("chat.general", {"text": "hi"})   # returns after the ack
        async for msg in c.messages():                     # exactly once, in seq order
            print(msg.topic or msg.room, msg.sender, msg.data, msg.seq)

The token travels in the ``Authorization: Bearer`` header. A callable
``token=`` (plain or async) is called for every connection and to refresh the
token before its ``exp`` (read from the JWT payload, never verified here).

**Reconnect and resume.** When a connection ends, the close code decides
(table below). To reconnect, the client waits as :class:`Reconnect` says
(exponential backoff with full jitter, a cap; ``later`` seconds more when the
server asked for it) and presents ``?session=…&last_seq=…``, the session and
the highest ``seq`` it handed to :meth:`Client.messages`. On ``resumed: true``
rtcs replays exactly what came after; the client still drops any ``seq`` it
already handed on, so the application sees every message once, in order. On
``resumed: false`` the events carry :class:`SessionLost` (the gap is said,
never hidden), and the client subscribes to and joins again everything it had.

**Delivery receipts.** ``subscribe(topic, receipts=True)``: a message the
application took from :meth:`Client.messages` is acknowledged to rtcs with a
cumulative ``received`` frame (coalesced: ``receipt_delay``,
``receipt_batch``), and rtcs sends again, marked ``redelivered``, what stays
unacknowledged; a copy of a message the client holds is dropped by ``seq``
and acknowledged again (docs/protocol.md, "Delivery receipts").

**Requests in flight when the connection drops.** ``subscribe``,
``unsubscribe``, ``join``, ``leave``, ``presence`` and ``ping`` are resent on
the next connection (serving them twice changes nothing). ``publish`` is
resent with the same ``id`` if the session resumes and the first send is less
than ``dedup_window`` (60 s) old (rtcs de-duplicates it: delivered once);
otherwise it raises :class:`ConnectionLost`. ``send`` and ``broadcast`` are not
de-duplicated by rtcs, so they raise :class:`ConnectionLost` (at most once).
A request made while the client reconnects waits for the next connection. Every
request raises :class:`RequestTimeout` after its timeout, reconnecting
included.

**Close codes** (docs/protocol.md, "Limits and close codes"):

====  ==========================================  =======================================
code  meaning                                     the client
====  ==========================================  =======================================
1000  normal close: another connection took the   stops (:class:`Rejected`): never fights
      session over                                for a session
1001  server shutting down                        reconnects and resumes
1003  binary frame                                stops (:class:`Rejected`): a client bug
1006  dropped, no close frame (network)           reconnects and resumes
1007  invalid UTF-8                               stops (:class:`Rejected`)
1009  frame too large (checked before sending:    stops (:class:`Rejected`)
      :class:`TooLarge`)
1011  internal error                              reconnects and resumes
1013  overloaded or backend unavailable           reconnects ``later`` and resumes
4001  authentication failed, expired or revoked   stops (:class:`AuthFailed`); with a
                                                  token callable, a connection that was
                                                  authenticated reconnects once with a
                                                  fresh token, unless ``revoked``
4003  forbidden (origin or account blocked)       stops (:class:`Rejected`)
4008  too slow: outbound queue overflowed         reconnects and resumes
4029  rate limit or error budget exhausted        reconnects ``later`` and resumes
4031  connection limit reached                    reconnects ``later`` and resumes
any   other code                                  reconnects and resumes
====  ==========================================  =======================================

Refused handshakes: HTTP 401 stops (:class:`AuthFailed`); 403, 400 and other
4xx stop (:class:`Rejected`); 429 and 503 reconnect ``later``; other statuses
and network errors reconnect. The policy gives up after ``max_attempts``
failed attempts in a row or ``max_elapsed`` seconds offline
(:class:`GaveUp`, then :class:`ReconnectFailed`).

**Events** (:meth:`Client.events`, an async iterator of typed events):
:class:`Connected`, :class:`Disconnected`, :class:`Reconnecting`,
:class:`SessionLost`, :class:`Status` (degraded mode),
:class:`SubscriptionDropped`, :class:`RoomDropped`, :class:`PresenceChanged`,
:class:`TokenRefreshed`, :class:`TokenRefreshFailed`, :class:`GaveUp` and,
last, :class:`Stopped`.
"""

from rtcs.client._backoff import Reconnect
from rtcs.client._connection import Client, TokenSource
from rtcs.client._errors import (
    AuthFailed,
    BadRequest,
    BadTopic,
    ClientClosed,
    ConnectionLost,
    Forbidden,
    InternalError,
    LimitExceeded,
    Offline,
    RateLimited,
    ReconnectFailed,
    Rejected,
    RequestTimeout,
    RtcsError,
    TooLarge,
    Unavailable,
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
)

__all__ = [
    "Ack",
    "AuthFailed",
    "BadRequest",
    "BadTopic",
    "Client",
    "ClientClosed",
    "Connected",
    "ConnectionLost",
    "Disconnected",
    "Event",
    "Forbidden",
    "GaveUp",
    "InternalError",
    "Joined",
    "Left",
    "LimitExceeded",
    "Message",
    "Offline",
    "Pong",
    "PresenceChanged",
    "RateLimited",
    "Reconnect",
    "ReconnectFailed",
    "Reconnecting",
    "Rejected",
    "RequestTimeout",
    "RoomDropped",
    "RoomPresence",
    "RtcsError",
    "SessionLost",
    "Status",
    "Stopped",
    "Subscribed",
    "SubscriptionDropped",
    "TokenRefreshFailed",
    "TokenRefreshed",
    "TokenSource",
    "TooLarge",
    "Unavailable",
    "Unsubscribed",
    "UserPresence",
    "Welcome",
]
