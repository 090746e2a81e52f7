"""The pure shard-key rule, and the channels ``wire.Keys`` derives from it."""

from __future__ import annotations

import pytest

from rtcs.backends.base import ALL_SHARDS, Envelope, EnvelopeKind, shard_key
from rtcs.backends.redis.wire import Keys, shard_of
from rtcs.protocol.topics import matches


@pytest.mark.parametrize(
    ("target", "key"),
    [
        ("chat", "chat"),
        ("chat.x", "chat"),
        ("chat.>", "chat"),
        ("chat.*.x", "chat"),
        ("chat.a.b.c", "chat"),
        ("*", ALL_SHARDS),
        ("*.x", ALL_SHARDS),
        (">", ALL_SHARDS),
    ],
)
def test_a_topic_or_pattern_is_keyed_by_its_first_segment(target: str, key: str | None) -> None:
    assert shard_key("topic", target) == key


@pytest.mark.parametrize("kind", ["room", "presence", "user", "connection"])
def test_other_targets_are_their_own_key(kind: EnvelopeKind) -> None:
    assert shard_key(kind, "lobby.a") == "lobby.a"


def test_a_room_and_its_presence_share_a_channel() -> None:
    keys = Keys("rtcs", 16)
    room = keys.channel(Envelope("n", "room", "lobby", b""))
    assert keys.channel(Envelope("n", "presence", "lobby", b"")) == room
    assert keys.interest("room", "lobby") == (room,)


@pytest.mark.parametrize(
    ("pattern", "topic"),
    [("chat.>", "chat.a.b"), ("chat.*.x", "chat.y.x"), ("chat.y", "chat.y"), ("*.x", "q.x")],
)
def test_listening_to_a_pattern_covers_every_topic_it_matches(pattern: str, topic: str) -> None:
    assert matches(pattern, topic)
    keys = Keys("rtcs", 16)
    assert keys.channel(Envelope("n", "topic", topic, b"")) in keys.interest("topic", pattern)


def test_a_leading_wildcard_needs_every_shard_and_a_literal_one_shard() -> None:
    keys = Keys("rtcs", 4)
    assert keys.interest("topic", "*.x") == keys.shard_channels
    assert keys.interest("topic", ">") == keys.shard_channels
    assert keys.interest("topic", "chat.>") == (keys.shard_channels[shard_of("chat", 4)],)


def test_global_and_filter_use_the_all_channel_and_nodes_their_own() -> None:
    keys = Keys("rtcs", 16)
    assert keys.interest("global", "") == (keys.global_channel,)
    assert keys.channel(Envelope("n", "filter", "", b"")) == keys.global_channel
    assert keys.node_channel("node-a") == b"rtcs:node:{node-a}"
