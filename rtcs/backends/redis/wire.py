"""What the Redis backends put on the wire and in keys: pure, no I/O, no redis.

Envelope encoding (broker payloads), all integers big-endian::

    offset  size     field
    0       1        version, 0x01, 0x02 or 0x03
    1       1        kind, an index into ``KINDS``
    2       2        n = byte length of origin;  then n bytes of UTF-8
    .       4        n = byte length of target;  then n bytes of UTF-8
    .       2        roles: count, then per role  2-byte length + UTF-8
    .       4        users: count, then per user  2-byte length + UTF-8
    .       2        versions 2, 3: n = byte length of exclude; then n bytes of UTF-8
    .       2        version 3 only: n = byte length of trace; then n bytes of UTF-8
    .       rest     tail, raw bytes (the pre-encoded message tail)

The tail is last, so it needs no length prefix. The overhead is 14 bytes plus
origin and target (and roles and users, for ``filter`` and rule-filtered
``topic`` envelopes). Version 3 is written only for an envelope with a
``trace`` (the W3C ``traceparent`` of a traced message, rtcs.tracing), its
``exclude`` possibly empty; version 2 only for one with an ``exclude`` user
(a routing rule's ``exclude_sender``) and no trace; every other envelope is
version 1, byte for byte what earlier releases wrote and read (so a node
with tracing off writes no byte more). ``decode_envelope`` accepts exactly
what ``encode_envelope`` produces and raises ``WireError`` for anything else
(bad version or kind, truncation, invalid UTF-8, a version 2 without an
exclude or a version 3 without a trace); the broker logs and drops such a
payload.

String lists (a session's subscriptions and rooms) are a 4-byte count, then
per string a 4-byte length and its UTF-8 (``pack_strings`` /
``unpack_strings``).

A session's delivery receipts (``base.ReceiptState``; ``pack_receipts`` /
``unpack_receipts``)::

    offset  size     field
    0       1        version, 0x01
    1       8        upto (the session's seq when they were taken)
    9       .        patterns: a string list, as ``pack_strings``
    .       4        unacked: count, then per message 8-byte seq + 4-byte redeliveries

A session without receipts stores nothing for them (sessions saved by
releases before them load as sessions without receipts).

Channels: an envelope with a target travels on one of ``shards`` channels,
``<prefix>:bus:<crc32(key) % shards>``, where ``key`` is
``base.shard_key(kind, target)``: a topic's first segment (so a pattern names
its shard: ``chat.>`` needs the shard of ``chat``), a room's name (its
messages and presence frames share one channel, hence keep publish order).
``global`` and ``filter`` (no target) travel on ``<prefix>:bus:all``. An
envelope for one node (direct messages) travels on that node's channel
``<prefix>:node:{<node>}`` (braces: the Cluster hash tag).

Key names put the entity between braces, a Redis Cluster hash tag, so that all
keys of one session (or user, room, node) live on one slot and a Lua script
can touch them together: ``rtcs:s:{s-abc}:meta``. The prefix may not contain
braces, or it would become the hash tag. An id containing ``}`` shortens its
tag, which still puts all keys of that entity on one slot.
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple, get_args

from rtcs.backends.base import ALL_SHARDS, Envelope, EnvelopeKind, ReceiptState, shard_key

VERSION = 1
#: The version of envelopes that carry an ``exclude`` user (and no trace).
VERSION_EXCLUDE = 2
#: The version of envelopes that carry a trace (and maybe an ``exclude`` user).
VERSION_TRACE = 3
KINDS: tuple[EnvelopeKind, ...] = get_args(EnvelopeKind)
UNTARGETED: frozenset[str] = frozenset({"global", "filter"})

_HEAD = struct.Struct(">BBH")  # version, kind, origin length
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
#: The version byte of ``pack_receipts``.
RECEIPTS_VERSION = 1
_UNACKED = struct.Struct(">QI")  # seq, redeliveries
_KIND_INDEX = {kind: i for i, kind in enumerate(KINDS)}


class WireError(ValueError):
    """A payload that ``encode_envelope`` / ``pack_strings`` did not produce."""


def _utf8(text: str, limit: int, what: str) -> bytes:
    data = text.encode()
    if len(data) > limit:
        raise ValueError(f"{what} is {len(data)} bytes, the wire allows {limit}")
    return data


def encode_envelope(envelope: Envelope) -> bytes:
    """The bytes of ``envelope`` (layout and version in the module docstring).

    Raises:
        ValueError: a field is too long for its length prefix (origin, a role
            a user, ``exclude`` or ``trace`` over 65535 bytes), or ``kind`` is
            unknown.
    """
    kind = _KIND_INDEX.get(envelope.kind)
    if kind is None:
        raise ValueError(f"unknown envelope kind {envelope.kind!r}")
    origin = _utf8(envelope.origin, 0xFFFF, "origin")
    target = _utf8(envelope.target, 0xFFFFFFFF, "target")
    version = VERSION_TRACE if envelope.trace else VERSION_EXCLUDE if envelope.exclude else VERSION
    parts = [_HEAD.pack(version, kind, len(origin)), origin, _U32.pack(len(target)), target]
    parts.append(_U16.pack(len(envelope.roles)))
    for role in envelope.roles:
        data = _utf8(role, 0xFFFF, "role")
        parts += (_U16.pack(len(data)), data)
    parts.append(_U32.pack(len(envelope.users)))
    for user in envelope.users:
        data = _utf8(user, 0xFFFF, "user")
        parts += (_U16.pack(len(data)), data)
    if version != VERSION:
        data = _utf8(envelope.exclude, 0xFFFF, "exclude")
        parts += (_U16.pack(len(data)), data)
    if version == VERSION_TRACE:
        data = _utf8(envelope.trace, 0xFFFF, "trace")
        parts += (_U16.pack(len(data)), data)
    parts.append(envelope.tail)
    return b"".join(parts)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise WireError(f"truncated: needs {end} bytes, has {len(self.data)}")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u16(self) -> int:
        return int(_U16.unpack(self.take(2))[0])

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def text(self, size: int) -> str:
        try:
            return self.take(size).decode()
        except UnicodeDecodeError as exc:
            raise WireError(f"invalid UTF-8 at byte {self.pos - size}") from exc


def decode_envelope(data: bytes) -> Envelope:
    """The envelope ``encode_envelope`` turned into ``data``.

    Raises:
        WireError: ``data`` is not an envelope of version 1, 2 or 3.
    """
    if len(data) < _HEAD.size:
        raise WireError(f"truncated: {len(data)} bytes")
    version, kind, origin_size = _HEAD.unpack_from(data)
    if version not in (VERSION, VERSION_EXCLUDE, VERSION_TRACE):
        raise WireError(f"unknown envelope version {version}")
    if kind >= len(KINDS):
        raise WireError(f"unknown envelope kind {kind}")
    reader = _Reader(data)
    reader.pos = _HEAD.size
    origin = reader.text(origin_size)
    target = reader.text(reader.u32())
    roles = tuple(reader.text(reader.u16()) for _ in range(reader.u16()))
    users_count = reader.u32()
    if users_count > len(data):  # each user costs at least 2 bytes: garbage
        raise WireError(f"implausible user count {users_count}")
    users = tuple(reader.text(reader.u16()) for _ in range(users_count))
    exclude = trace = ""
    if version != VERSION:
        exclude = reader.text(reader.u16())
        if not exclude and version == VERSION_EXCLUDE:  # encode_envelope writes version 1 then
            raise WireError("version 2 without an exclude user")
    if version == VERSION_TRACE:
        trace = reader.text(reader.u16())
        if not trace:  # encode_envelope writes version 1 or 2 then
            raise WireError("version 3 without a trace")
    return Envelope(
        origin=origin,
        kind=KINDS[kind],
        target=target,
        tail=data[reader.pos :],
        roles=roles,
        users=users,
        exclude=exclude,
        trace=trace,
    )


def pack_strings(items: tuple[str, ...]) -> bytes:
    """A list of strings as bytes: 4-byte count, then 4-byte length + UTF-8 each."""
    parts = [_U32.pack(len(items))]
    for item in items:
        data = item.encode()
        parts += (_U32.pack(len(data)), data)
    return b"".join(parts)


def unpack_strings(data: bytes) -> tuple[str, ...]:
    """The strings ``pack_strings`` packed into ``data``.

    Raises:
        WireError: ``data`` is not such a list (truncated, trailing bytes, bad UTF-8).
    """
    reader = _Reader(data)
    count = reader.u32()
    if count > len(data):
        raise WireError(f"implausible string count {count}")
    items = tuple(reader.text(reader.u32()) for _ in range(count))
    if reader.pos != len(data):
        raise WireError(f"{len(data) - reader.pos} trailing bytes")
    return items


def pack_receipts(state: ReceiptState) -> bytes:
    """A session's delivery receipts as bytes (the layout in the module docstring).

    Raises:
        ValueError: a seq or ``upto`` outside 0..2**64-1, or redeliveries
            outside 0..2**32-1.
    """
    try:
        parts = [bytes((RECEIPTS_VERSION,)), _U64.pack(state.upto)]
        parts.append(pack_strings(state.patterns))
        parts.append(_U32.pack(len(state.unacked)))
        parts += [_UNACKED.pack(seq, redeliveries) for seq, redeliveries in state.unacked]
    except struct.error as exc:
        raise ValueError(f"receipt state out of range: {exc}") from None
    return b"".join(parts)


def unpack_receipts(data: bytes) -> ReceiptState:
    """The receipts ``pack_receipts`` packed into ``data``.

    Raises:
        WireError: ``data`` is not such a record (unknown version, truncated,
            trailing bytes, bad UTF-8).
    """
    reader = _Reader(data)
    version = reader.take(1)[0]
    if version != RECEIPTS_VERSION:
        raise WireError(f"unknown receipts version {version}")
    upto = int(_U64.unpack(reader.take(8))[0])
    count = reader.u32()
    if count > len(data):
        raise WireError(f"implausible string count {count}")
    patterns = tuple(reader.text(reader.u32()) for _ in range(count))
    count = reader.u32()
    if count * _UNACKED.size > len(data) - reader.pos:
        raise WireError(f"implausible unacked count {count}")
    unacked = tuple(
        (int(seq), int(redeliveries))
        for seq, redeliveries in (_UNACKED.unpack(reader.take(_UNACKED.size)) for _ in range(count))
    )
    if reader.pos != len(data):
        raise WireError(f"{len(data) - reader.pos} trailing bytes")
    return ReceiptState(patterns=patterns, unacked=unacked, upto=upto)


def shard_of(target: str, shards: int) -> int:
    """The shard (0 <= shard < ``shards``) whose channel carries ``target``."""
    return zlib.crc32(target.encode()) % shards


class Keys:
    """Every key and channel name of one deployment (``prefix``), in one place.

    Raises (constructor):
        ValueError: ``prefix`` is empty or contains ``{`` or ``}``.
    """

    def __init__(self, prefix: str, shards: int) -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(f"key prefix must be non-empty and brace-free, got {prefix!r}")
        if shards < 1:
            raise ValueError(f"shards must be at least 1, got {shards!r}")
        self.prefix = prefix
        self.shards = shards
        self.global_channel = f"{prefix}:bus:all".encode()
        self.shard_channels = tuple(f"{prefix}:bus:{i}".encode() for i in range(shards))
        self.sessions_index = f"{prefix}:sessions"
        self.nodes = f"{prefix}:nodes"

    def channel(self, envelope: Envelope) -> bytes:
        """The channel ``envelope`` is published on (when not sent to one node)."""
        if envelope.kind in UNTARGETED:
            return self.global_channel
        key = shard_key(envelope.kind, envelope.target)
        if key is ALL_SHARDS:  # not a valid topic; any shard will do
            return self.shard_channels[0]
        return self.shard_channels[shard_of(key, self.shards)]

    def interest(self, kind: EnvelopeKind, target: str) -> tuple[bytes, ...]:
        """The channels a node listening to ``kind``/``target`` must subscribe to.

        Every envelope ``channel`` puts on a channel for a matching target is
        on one of these: one shard, or every shard for a topic pattern whose
        first segment is a wildcard; the global channel for ``global``/``filter``.
        """
        if kind in UNTARGETED:
            return (self.global_channel,)
        key = shard_key(kind, target)
        if key is ALL_SHARDS:
            return self.shard_channels
        return (self.shard_channels[shard_of(key, self.shards)],)

    def node_channel(self, node: str) -> bytes:
        """The channel of envelopes sent to ``node`` alone (on the node's slot)."""
        return f"{self.prefix}:node:{{{node}}}".encode()

    def session(self, session_id: str) -> tuple[str, str]:
        """The session's ``meta`` hash and ``buf`` list, on one slot."""
        base = f"{self.prefix}:s:{{{session_id}}}"
        return f"{base}:meta", f"{base}:buf"

    def publishes(self, session_id: str) -> str:
        """Sorted set of the session's recent publish ids -> when seen (µs),
        on the session's slot (``first_publish``)."""
        return f"{self.prefix}:s:{{{session_id}}}:pub"

    def user_connections(self, user: str) -> str:
        """Hash of the user's connection id -> node."""
        return f"{self.prefix}:u:{{{user}}}:conns"

    def connection_node(self, connection_id: str) -> str:
        """String: the node holding the connection, on the connection's own slot."""
        return f"{self.prefix}:c:{{{connection_id}}}:node"

    def room_members(self, room: str) -> str:
        """Hash of the room's user -> JSON object {member: node}."""
        return f"{self.prefix}:r:{{{room}}}:members"

    def node_entries(self, node: str) -> str:
        """Set of what ``node`` holds (``encode_entry`` values), for ``drop_node``."""
        return f"{self.prefix}:n:{{{node}}}:held"

    def node_sweeper(self, node: str) -> str:
        """Which live node is sweeping the dead ``node`` (``SET NX PX``)."""
        return f"{self.prefix}:n:{{{node}}}:sweeper"


def _lp(text: str) -> bytes:
    data = text.encode()
    return b"%d:" % len(data) + data


class ConnectionEntry(NamedTuple):
    """A node holds connection ``connection_id`` of ``user``."""

    user: str
    connection_id: str


class MemberEntry(NamedTuple):
    """A node holds ``member`` (a session id) of ``user`` in ``room``."""

    room: str
    user: str
    member: str


def encode_entry(entry: ConnectionEntry | MemberEntry) -> bytes:
    """The member of a node's ``held`` set that records ``entry``."""
    if isinstance(entry, ConnectionEntry):
        return b"c" + _lp(entry.user) + entry.connection_id.encode()
    return b"m" + _lp(entry.room) + _lp(entry.user) + entry.member.encode()


def decode_entry(data: bytes) -> ConnectionEntry | MemberEntry:
    """The entry ``encode_entry`` turned into ``data``.

    Raises:
        WireError: ``data`` was not made by ``encode_entry``.
    """
    kind, body = data[:1], data[1:]
    if kind == b"c":
        user, rest = _split_prefixed(body)
        return ConnectionEntry(user, _text(rest))
    if kind == b"m":
        room, rest = _split_prefixed(body)
        user, rest = _split_prefixed(rest)
        return MemberEntry(room, user, _text(rest))
    raise WireError(f"unknown entry kind {kind!r}")


def _text(data: bytes) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise WireError("invalid UTF-8") from exc


def _split_prefixed(data: bytes) -> tuple[str, bytes]:
    # b"<n>:<n bytes><rest>" -> (the n bytes as text, rest)
    head, sep, body = data.partition(b":")
    if not sep or not head.isdigit() or (head.startswith(b"0") and head != b"0"):
        raise WireError("missing or non-canonical length prefix")
    size = int(head)
    if size > len(body):
        raise WireError("truncated length-prefixed string")
    return _text(body[:size]), body[size:]
