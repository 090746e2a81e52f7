"""Topic and pattern rules, matching, covers/overlaps and the subscription index."""

from __future__ import annotations

import pytest

from rtcs.errors import BadTopic
from rtcs.protocol.topics import (
    TopicIndex,
    covers,
    is_pattern,
    matches,
    overlaps,
    validate_pattern,
    validate_topic,
)

VALID_TOPICS = ["a", "system.notifications.alert", "A-b_9.x", "x" * 64, ".".join("abcdefgh")]
INVALID_TOPICS = [
    "",
    ".",
    "a.",
    ".a",
    "a..b",
    "x" * 65,
    ".".join("abcdefghi"),
    "a b",
    "a/b",
    "é",
    "a\n",
    "a.*",
    "a.>",
    "*",
    ">",
]


@pytest.mark.parametrize("topic", VALID_TOPICS)
def test_valid_topics(topic: str) -> None:
    assert validate_topic(topic) == topic
    assert validate_pattern(topic) == topic
    assert not is_pattern(topic)


@pytest.mark.parametrize("topic", [*INVALID_TOPICS, None, 1, b"a"])
def test_invalid_topics(topic: object) -> None:
    with pytest.raises(BadTopic):
        validate_topic(topic)


@pytest.mark.parametrize(
    "pattern", ["*", ">", "a.*", "a.>", "*.alert", "*.*.>", ".".join("*" * 8), "a.b.c.d.e.f.g.>"]
)
def test_valid_patterns(pattern: str) -> None:
    assert validate_pattern(pattern) == pattern
    assert is_pattern(pattern)


@pytest.mark.parametrize(
    "pattern",
    ["", "a.>.b", ">.a", ">>", "a*", "a.**", "**", "a.>.>", ".".join("*" * 9), "a.b.c.d.e.f.g.h.>"],
)
def test_invalid_patterns(pattern: str) -> None:
    with pytest.raises(BadTopic):
        validate_pattern(pattern)


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("system.*", "system.alert", True),
        ("system.*", "system.a.b", False),
        ("system.>", "system.alert", True),
        ("system.>", "system.a.b", True),
        ("system.>", "system", False),
        ("*.alert", "system.alert", True),
        ("*.alert", "system.other", False),
        (">", "a", True),
        (">", "a.b.c", True),
        ("*", "a.b", False),
        ("a.b", "a.b", True),
        ("a.b", "a.c", False),
        ("a.b", "a.b.c", False),
        ("a.*.c", "a.x.c", True),
    ],
)
def test_matches(pattern: str, topic: str, expected: bool) -> None:
    assert matches(pattern, topic) is expected


@pytest.mark.parametrize(
    ("allow", "pattern", "expected"),
    [
        (">", "a.b", True),
        (">", "*.>", True),
        ("a.>", "a.*", True),
        ("a.>", "a.>", True),
        ("a.>", ">", False),
        ("a.*", "a.>", False),
        ("a.*", "a.b", True),
        ("a.b", "a.*", False),
        ("*.b", "a.b", True),
        ("*.>", "a.b.c", True),
        ("a.b", "a.b", True),
        ("a.b", "a.c", False),
        ("a.*.*", "a.>", False),
        # ">" stops at 8 segments, so these sets are equal:
        ("a.b.c.d.e.f.g.*", "a.b.c.d.e.f.g.>", True),
        ("a.b.c.d.e.f.*.>", "a.b.c.d.e.f.*.*", True),
        ("a.b.c.d.e.f.*.*", "a.b.c.d.e.f.*.>", True),
        ("a.b.c.d.e.f.*.*", "a.b.c.d.e.*.>", False),
    ],
)
def test_covers(allow: str, pattern: str, expected: bool) -> None:
    assert covers(allow, pattern) is expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("system.>", ">", True),
        ("system.>", "*.alert", True),
        ("system.>", "other.>", False),
        ("system.>", "system", False),
        ("a.*", "a.b.c", False),
        ("a.*", "*.b", True),
        ("a.b", "a.b", True),
        ("a.b", "a.c", False),
        ("*.*", ">", True),
        ("a.>", "*.b.>", True),
        (".".join("*" * 8), "a.>", True),
    ],
)
def test_overlaps(a: str, b: str, expected: bool) -> None:
    assert overlaps(a, b) is expected
    assert overlaps(b, a) is expected


def test_index_match_exact_returns_the_node_set_without_copying() -> None:
    index: TopicIndex[str] = TopicIndex()
    for i in range(100):
        index.add("news.sport", f"k{i}")
    first = index.match("news.sport")
    assert first is index.match("news.sport")  # the node's own set
    assert len(first) == 100
    assert index.match("news.weather") == set()


def test_index_union_when_several_nodes_match() -> None:
    index: TopicIndex[str] = TopicIndex()
    assert index.add("a.b", "x")
    assert index.add("a.*", "x")
    assert index.add("a.>", "y")
    assert index.add(">", "z")
    assert index.add("*.b", "w")
    assert not index.add("a.b", "x")
    assert len(index) == 5
    assert index.match("a.b") == {"x", "y", "z", "w"}
    assert index.match("a.c") == {"x", "y", "z"}
    assert index.match("a.b.c") == {"y", "z"}
    assert index.match("a") == {"z"}
    assert index.match("b.b") == {"z", "w"}


def test_index_remove_and_prune() -> None:
    index: TopicIndex[int] = TopicIndex()
    index.add("a.b.c", 1)
    index.add("a.>", 2)
    assert not index.remove("a.b.c", 2)
    assert not index.remove("a.b", 1)
    assert not index.remove("x.y", 1)
    assert index.remove("a.b.c", 1)
    assert not index.remove("a.b.c", 1)
    assert sorted(index.patterns()) == ["a.>"]
    assert index.remove("a.>", 2)
    assert len(index) == 0
    assert list(index.patterns()) == []
    assert index._root.is_empty()  # every node pruned


def test_index_patterns() -> None:
    index: TopicIndex[str] = TopicIndex()
    for p in ("a", "a.b", "a.>", "*.c", ">"):
        index.add(p, "k")
        index.add(p, "j")
    assert sorted(index.patterns()) == sorted(["a", "a.b", "a.>", "*.c", ">"])
    assert len(index) == 10
