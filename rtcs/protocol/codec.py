"""Wire codec: client frames to typed commands, server frames to compact JSON bytes.

``decode`` is the boundary of docs/protocol.md "Client frames and their replies":
any input either becomes a ``Command`` or raises a ``ProtocolError`` subclass
(``BadRequest`` or ``BadTopic``), never anything else. Unknown extra fields
are ignored so that newer clients keep working.

Encoders produce compact UTF-8 JSON (``separators=(",", ":")``,
``ensure_ascii=False``). Fan-out encodes a delivered message once
(``message_tail``) and only splices the per-recipient ``seq`` in front of it
(``with_seq``), so the per-recipient cost is one bytes formatting.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from rtcs.errors import BadRequest, BadTopic, ErrorCode, ProtocolError
from rtcs.protocol.frames import (
    CLIENT_FRAME_TYPES,
    GLOBAL_SCOPE,
    MAX_ID_LENGTH,
    Auth,
    Broadcast,
    BroadcastFilter,
    Command,
    Join,
    Leave,
    Ping,
    PresenceQuery,
    Publish,
    Received,
    RequestId,
    Send,
    ServerFrame,
    Subscribe,
    Unsubscribe,
    validate_name,
    validate_room,
)
from rtcs.protocol.topics import validate_pattern, validate_topic

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "MAX_SEQ",
    "decode",
    "encode_data",
    "encode_error",
    "encode_frame",
    "encode_presence_event",
    "encode_status",
    "encode_welcome",
    "message_tail",
    "with_seq",
    "with_seq_redelivered",
]

DEFAULT_MAX_DEPTH = 32
MAX_SEQ = 2**63 - 1  # seq numbers must fit a signed 64-bit integer in every backend

# A JSON "\uD800".."\uDFFF" escape can yield a lone surrogate, which cannot be
# re-encoded as UTF-8 for other clients; only frames containing one are checked.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _reject_constant(name: str) -> Any:
    # NaN / Infinity are not JSON; echoing them to other clients would break them.
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # "1e400" parses to inf
        raise ValueError("number out of range")
    return value


_loads: Callable[[str], Any] = json.JSONDecoder(
    parse_constant=_reject_constant, parse_float=_finite_float
).decode
_dumps: Callable[[Any], str] = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


# ---------------------------------------------------------------- decoding


def _check_structure(value: Any, max_depth: int, check_strings: bool) -> None:
    """Reject nesting deeper than ``max_depth`` and (if asked) unencodable strings.

    Iterative on purpose: a recursive walk is what the depth limit protects against.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            items: Any = node.values()
            if check_strings:
                for key in node:
                    _check_string(key)
        elif isinstance(node, list):
            items = node
        else:
            if check_strings and isinstance(node, str):
                _check_string(node)
            continue
        if depth > max_depth:
            raise BadRequest(f"nesting deeper than {max_depth}")
        for item in items:
            if isinstance(item, (dict, list)) or (check_strings and isinstance(item, str)):
                stack.append((item, depth + 1))


def _check_string(s: str) -> None:
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest("invalid unicode in string") from None


def _parse(raw: str | bytes, max_depth: int) -> Any:
    if isinstance(raw, (bytes, bytearray, memoryview)):
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("frame is not valid UTF-8") from None
    elif isinstance(raw, str):
        text = raw
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise BadRequest("frame is not valid UTF-8") from None
    else:
        raise BadRequest("frame must be text")
    try:
        obj = _loads(text)
    except RecursionError:
        raise BadRequest("nesting too deep") from None
    except ValueError:  # JSONDecodeError, rejected constants, over-long integers
        raise BadRequest("malformed JSON") from None
    check_strings = _SURROGATE_ESCAPE.search(text) is not None
    # Depth can only exceed max_depth if there are more than max_depth brackets.
    if check_strings or text.count("{") + text.count("[") > max_depth:
        _check_structure(obj, max_depth, check_strings)
    return obj


def _request_id(obj: dict[str, Any]) -> RequestId:
    if "id" not in obj:
        return None
    rid = obj["id"]
    if type(rid) is str:
        if len(rid) > MAX_ID_LENGTH:
            raise BadRequest(f"'id' longer than {MAX_ID_LENGTH} characters")
        return rid
    if type(rid) is int:  # bool is rejected: type(True) is bool, not int
        if len(str(rid)) > MAX_ID_LENGTH:
            raise BadRequest(f"'id' longer than {MAX_ID_LENGTH} characters")
        return rid
    raise BadRequest("'id' must be a string or an integer")


def _field(obj: Mapping[str, Any], name: str, rid: RequestId) -> Any:
    try:
        return obj[name]
    except KeyError:
        raise BadRequest(f"missing field '{name}'", request_id=rid) from None


def _optional(obj: Mapping[str, Any], name: str) -> Any:
    """A field that may be absent or null: both read as None."""
    return obj.get(name)


def _topic(obj: Mapping[str, Any], rid: RequestId, *, pattern: bool) -> str:
    value = _field(obj, "topic", rid)
    if type(value) is not str:
        raise BadRequest("'topic' must be a string", request_id=rid)
    try:
        return validate_pattern(value) if pattern else validate_topic(value)
    except BadTopic as exc:
        exc.request_id = rid
        raise


def _names(value: Any, what: str, rid: RequestId) -> tuple[str, ...]:
    if value is None:
        return ()
    if type(value) is not list:
        raise BadRequest(f"'{what}' must be a list of strings", request_id=rid)
    return tuple(validate_name(v, what, request_id=rid) for v in value)


def _decode_auth(obj: dict[str, Any], rid: RequestId) -> Auth:
    token = _field(obj, "token", rid)
    if type(token) is not str or not token:
        raise BadRequest("'token' must be a non-empty string", request_id=rid)
    session = _optional(obj, "session")
    if session is not None:
        validate_name(session, "'session'", request_id=rid)
    last_seq = _optional(obj, "last_seq")
    if last_seq is not None and (type(last_seq) is not int or not 0 <= last_seq <= MAX_SEQ):
        raise BadRequest("'last_seq' must be an integer >= 0", request_id=rid)
    return Auth(rid, token, session, last_seq)


def _decode_subscribe(obj: dict[str, Any], rid: RequestId) -> Subscribe:
    topic = _topic(obj, rid, pattern=True)
    receipts = _optional(obj, "receipts")
    if receipts is not None and type(receipts) is not bool:
        raise BadRequest("'receipts' must be a boolean", request_id=rid)
    return Subscribe(rid, topic, receipts is True)


def _decode_unsubscribe(obj: dict[str, Any], rid: RequestId) -> Unsubscribe:
    return Unsubscribe(rid, _topic(obj, rid, pattern=True))


def _decode_publish(obj: dict[str, Any], rid: RequestId) -> Publish:
    topic = _topic(obj, rid, pattern=False)
    return Publish(rid, topic, _field(obj, "data", rid))


def _decode_send(obj: dict[str, Any], rid: RequestId) -> Send:
    to = _field(obj, "to", rid)
    if type(to) is not dict:
        raise BadRequest("'to' must be an object", request_id=rid)
    user = to.get("user")
    connection = to.get("connection")
    if (user is None) == (connection is None):
        raise BadRequest("'to' needs exactly one of 'user' or 'connection'", request_id=rid)
    if user is not None:
        validate_name(user, "'to.user'", request_id=rid)
    else:
        validate_name(connection, "'to.connection'", request_id=rid)
    return Send(rid, user, connection, _field(obj, "data", rid))


def _decode_join(obj: dict[str, Any], rid: RequestId) -> Join:
    return Join(rid, validate_room(_field(obj, "room", rid), request_id=rid))


def _decode_leave(obj: dict[str, Any], rid: RequestId) -> Leave:
    return Leave(rid, validate_room(_field(obj, "room", rid), request_id=rid))


def _decode_broadcast(obj: dict[str, Any], rid: RequestId) -> Broadcast:
    room = _optional(obj, "room")
    scope = _optional(obj, "scope")
    raw_filter = _optional(obj, "filter")
    if (room is not None) + (scope is not None) + (raw_filter is not None) != 1:
        raise BadRequest(
            "broadcast needs exactly one of 'room', 'scope' or 'filter'", request_id=rid
        )
    data = _field(obj, "data", rid)
    if room is not None:
        return Broadcast(rid, validate_room(room, request_id=rid), None, None, data)
    if scope is not None:
        if scope != GLOBAL_SCOPE or type(scope) is not str:
            raise BadRequest("'scope' must be \"global\"", request_id=rid)
        return Broadcast(rid, None, GLOBAL_SCOPE, None, data)
    if type(raw_filter) is not dict:
        raise BadRequest("'filter' must be an object", request_id=rid)
    roles = _names(raw_filter.get("roles"), "filter.roles", rid)
    users = _names(raw_filter.get("users"), "filter.users", rid)
    if not roles and not users:
        raise BadRequest("'filter' needs non-empty 'roles' or 'users'", request_id=rid)
    return Broadcast(rid, None, None, BroadcastFilter(roles, users), data)


def _decode_presence(obj: dict[str, Any], rid: RequestId) -> PresenceQuery:
    room = _optional(obj, "room")
    user = _optional(obj, "user")
    if (room is None) == (user is None):
        raise BadRequest("presence needs exactly one of 'room' or 'user'", request_id=rid)
    if room is not None:
        return PresenceQuery(rid, validate_room(room, request_id=rid), None)
    return PresenceQuery(rid, None, validate_name(user, "'user'", request_id=rid))


def _decode_ping(obj: dict[str, Any], rid: RequestId) -> Ping:
    return Ping(rid)


def _decode_received(obj: dict[str, Any], rid: RequestId) -> Received:
    seq = _field(obj, "seq", rid)
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        raise BadRequest("'seq' must be an integer >= 0", request_id=rid)
    return Received(rid, seq)


_DECODERS: dict[str, Callable[[dict[str, Any], RequestId], Command]] = {
    Auth.TYPE: _decode_auth,
    Subscribe.TYPE: _decode_subscribe,
    Unsubscribe.TYPE: _decode_unsubscribe,
    Publish.TYPE: _decode_publish,
    Send.TYPE: _decode_send,
    Join.TYPE: _decode_join,
    Leave.TYPE: _decode_leave,
    Broadcast.TYPE: _decode_broadcast,
    PresenceQuery.TYPE: _decode_presence,
    Ping.TYPE: _decode_ping,
    Received.TYPE: _decode_received,
}
assert tuple(_DECODERS) == CLIENT_FRAME_TYPES, "a client frame without a decoder"


def decode(raw: str | bytes, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Command:
    """Decode one client frame into a typed command.

    ``raw`` is the text of a WebSocket text frame (``bytes`` must be UTF-8).
    Unknown extra fields are ignored. Whenever the frame's ``id`` is readable
    and valid, the raised error carries it as ``request_id`` so the error
    reply echoes it.

    Raises:
        BadRequest: invalid UTF-8, malformed JSON (including NaN/Infinity and
            out-of-range numbers), not an object, nesting deeper than
            ``max_depth``, an invalid ``id``, a missing or unknown ``type``, or
            a missing or ill-typed field.
        BadTopic: ``topic`` breaks the topic rules, or ``publish`` names a pattern.
    """
    obj = _parse(raw, max_depth)
    if type(obj) is not dict:
        raise BadRequest("frame must be a JSON object")
    rid = _request_id(obj)
    type_ = obj.get("type")
    if type(type_) is not str:
        raise BadRequest("missing or non-string 'type'", request_id=rid)
    decoder = _DECODERS.get(type_)
    if decoder is None:
        raise BadRequest("unknown frame type", request_id=rid)
    try:
        return decoder(obj, rid)
    except ProtocolError as exc:
        # Frame constructors raise without knowing the id in a few paths.
        if exc.request_id is None:
            exc.request_id = rid
        raise


# ---------------------------------------------------------------- encoding


def encode_data(data: Any) -> bytes:
    """Encode any JSON value as compact UTF-8 JSON.

    Raises:
        TypeError: ``data`` is not JSON-serialisable.
        ValueError: ``data`` contains NaN or infinity.
    """
    return _dumps(data).encode()


def encode_frame(type_: str, id: RequestId = None, **fields: Any) -> bytes:
    """Encode a server frame ``{"type": type_, "id": id, **fields}``; ``id`` only when not None.

    Raises:
        TypeError: a field value is not JSON-serialisable.
    """
    frame: dict[str, Any] = {"type": type_}
    if id is not None:
        frame["id"] = id
    frame.update(fields)
    return _dumps(frame).encode()


def encode_ack(id: RequestId) -> bytes:
    """Encode ``{"type":"ack","id":id}`` (the reply to every publish: kept cheap)."""
    if id is None:
        return b'{"type":"ack"}'
    if type(id) is int:
        return b'{"type":"ack","id":%d}' % id
    return _dumps({"type": "ack", "id": id}).encode()


def encode_error(id: RequestId, code: ErrorCode, message: str) -> bytes:
    """Encode ``{"type":"error","id","code","message"}``; ``id`` only when not None."""
    return encode_frame(ServerFrame.ERROR, id, code=code.value, message=message)


def encode_welcome(
    *,
    connection_id: str,
    session_id: str,
    user: str,
    roles: Sequence[str],
    heartbeat: int,
    resumed: bool,
    server: str,
    replayed: int | None = None,
    id: RequestId = None,
    degraded: bool = False,
) -> bytes:
    """Encode the ``welcome`` frame (docs/protocol.md "Authentication" and "Sessions").

    ``replayed`` is included only when not None (it is set on resume); ``id``
    only when the ``auth`` frame carried one; ``"degraded": true`` only while
    the shared backend is unavailable.
    """
    extra: dict[str, Any] = {} if replayed is None else {"replayed": replayed}
    if degraded:
        extra["degraded"] = True
    return encode_frame(
        ServerFrame.WELCOME,
        id,
        connection_id=connection_id,
        session_id=session_id,
        user=user,
        roles=list(roles),
        heartbeat=heartbeat,
        resumed=resumed,
        server=server,
        **extra,
    )


def message_tail(
    *,
    topic: str | None = None,
    room: str | None = None,
    from_user: str | None = None,
    data: Any,
    ts: float,
) -> bytes:
    """Encode everything of a ``message`` frame after ``"seq":N,`` once per published message.

    At most one of ``topic`` / ``room`` is set (``room="*"`` for a global
    broadcast); ``from`` is included when ``from_user`` is set; ``ts`` is
    milliseconds since the epoch, sent as an integer (a float is truncated). The result
    starts with ``"topic":``, ``"room":`` or ``"from":`` and ends with ``}``.

    Raises:
        ValueError: both ``topic`` and ``room``, or none of topic/room/from_user, are set.
        TypeError: ``data`` is not JSON-serialisable.
    """
    frame: dict[str, Any] = {}
    if topic is not None:
        if room is not None:
            raise ValueError("a message has a topic or a room, not both")
        frame["topic"] = topic
    elif room is not None:
        frame["room"] = room
    elif from_user is None:
        raise ValueError("a message needs a topic, a room or a sender")
    if from_user is not None:
        frame["from"] = from_user
    frame["data"] = data
    frame["ts"] = int(ts)
    return _dumps(frame).encode()[1:]


def tail_target(tail: bytes) -> tuple[str, str] | None:
    """Where a ``message_tail`` was addressed: ``("topic", T)`` or ``("room", R)``.

    None for a direct message (a tail that starts with ``"from":``). Topics
    and room names hold no character JSON escapes, so the name is the text
    between the quotes.
    """
    for kind, prefix in (("topic", b'"topic":"'), ("room", b'"room":"')):
        if tail.startswith(prefix):
            end = tail.find(b'"', len(prefix))
            if end < 0:
                return None
            return kind, tail[len(prefix) : end].decode()
    return None


def with_seq(seq: int, tail: bytes) -> bytes:
    """Splice a recipient's ``seq`` in front of a ``message_tail``: the full ``message`` frame."""
    return b'{"type":"message","seq":%d,%b' % (seq, tail)


def with_seq_redelivered(seq: int, tail: bytes) -> bytes:
    """``with_seq`` for a message delivered again for want of a receipt:
    the frame carries ``"redelivered":true`` (docs/protocol.md "Delivery receipts")."""
    return b'{"type":"message","seq":%d,"redelivered":true,%b' % (seq, tail)


def encode_status(degraded: bool, reason: str | None = None) -> bytes:
    """Encode ``{"type":"status","degraded":…}`` (with ``reason`` while degraded)."""
    if degraded:
        return encode_frame(ServerFrame.STATUS, degraded=True, reason=reason or "backend")
    return encode_frame(ServerFrame.STATUS, degraded=False)


def encode_presence_event(room: str, event: Literal["join", "leave"], user: str) -> bytes:
    """Encode ``{"type":"presence","room","event","user"}`` for room members."""
    frame = {"type": ServerFrame.PRESENCE.value, "room": room, "event": event, "user": user}
    return _dumps(frame).encode()
