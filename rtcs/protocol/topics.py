"""Topics, subscription patterns and the subscription index.

docs/protocol.md, "Topics, patterns and rooms".

A topic is 1 to 8 dot-separated segments; a segment is 1 to 64 characters of
``[A-Za-z0-9_-]``. A pattern is a topic whose segments may also be ``*`` (exactly
one segment) and whose last segment may be ``>`` (one or more trailing
segments). Because topics have at most 8 segments, ``>`` never matches past the
eighth segment: ``a.b.c.d.e.f.g.>`` matches exactly the 8-segment topics that
``a.b.c.d.e.f.g.*`` matches.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Set
from typing import Generic, TypeVar

from rtcs.errors import BadTopic

__all__ = [
    "MAX_SEGMENTS",
    "MAX_SEGMENT_LENGTH",
    "TopicIndex",
    "covers",
    "is_pattern",
    "matches",
    "overlaps",
    "validate_pattern",
    "validate_topic",
]

MAX_SEGMENTS = 8
MAX_SEGMENT_LENGTH = 64
STAR = "*"
TAIL = ">"

_SEGMENT = rf"[A-Za-z0-9_-]{{1,{MAX_SEGMENT_LENGTH}}}"
_TOPIC_RE = re.compile(rf"{_SEGMENT}(?:\.{_SEGMENT}){{0,{MAX_SEGMENTS - 1}}}")
_PATTERN_SEGMENT = rf"(?:{_SEGMENT}|\*)"
# ``>`` may only be the last segment; the whole pattern still has at most 8 segments.
_PATTERN_RE = re.compile(
    rf"(?:{_PATTERN_SEGMENT}(?:\.{_PATTERN_SEGMENT}){{0,{MAX_SEGMENTS - 1}}}"
    rf"|(?:{_PATTERN_SEGMENT}\.){{0,{MAX_SEGMENTS - 1}}}>)"
)


#: Topics found valid lately (a set of strings, emptied when it reaches
#: ``_VALID_CACHE_SIZE``): a topic published again is checked by one lookup.
_valid_topics: set[str] = set()
_VALID_CACHE_SIZE = 10_000


def validate_topic(s: object) -> str:
    """Return ``s`` if it is a concrete topic.

    Raises:
        BadTopic: ``s`` is not a string, is a pattern, or breaks the segment rules.
    """
    if type(s) is not str:
        raise BadTopic("invalid topic")
    if s in _valid_topics:
        return s
    if _TOPIC_RE.fullmatch(s) is None:
        raise BadTopic("invalid topic")
    if len(_valid_topics) >= _VALID_CACHE_SIZE:
        _valid_topics.clear()
    _valid_topics.add(s)
    return s


def validate_pattern(s: object) -> str:
    """Return ``s`` if it is a topic or a pattern (``*`` segments, ``>`` last).

    Raises:
        BadTopic: ``s`` is not a string or breaks the topic/pattern rules.
    """
    if type(s) is not str or _PATTERN_RE.fullmatch(s) is None:
        raise BadTopic("invalid topic pattern")
    return s


def is_pattern(s: str) -> bool:
    """True if ``s`` (a valid pattern) has a wildcard segment."""
    return any(seg in (STAR, TAIL) for seg in s.split("."))


def _match_segments(pat: list[str], topic: list[str]) -> bool:
    n = len(pat)
    if pat[-1] == TAIL:
        n -= 1
        if len(topic) <= n:  # ``>`` needs at least one segment
            return False
    elif len(topic) != n:
        return False
    for i in range(n):
        p = pat[i]
        if p != STAR and p != topic[i]:
            return False
    return True


def matches(pattern: str, topic: str) -> bool:
    """True if the valid ``pattern`` matches the concrete ``topic``."""
    if pattern == topic:
        return True
    return _match_segments(pattern.split("."), topic.split("."))


def _lengths(segs: list[str]) -> range:
    """Topic lengths a pattern can match."""
    n = len(segs)
    if segs[-1] == TAIL:
        return range(n, MAX_SEGMENTS + 1)
    return range(n, n + 1)


def _segment_at(segs: list[str], i: int) -> str | None:
    """The literal a pattern requires at position ``i``, or None for "any segment"."""
    if i >= len(segs) - 1 and segs[-1] == TAIL:
        return None
    seg = segs[i]
    return None if seg == STAR else seg


def covers(allow: str, pattern: str) -> bool:
    """True if every topic matched by ``pattern`` is also matched by ``allow``.

    Both arguments are valid patterns (a concrete topic is a pattern too).
    """
    a = allow.split(".")
    p = pattern.split(".")
    allowed = _lengths(a)
    for length in _lengths(p):
        if length not in allowed:
            return False
        for i in range(length):
            need = _segment_at(a, i)
            # A position where ``allow`` wants a literal is covered only if ``pattern``
            # wants the same literal there; "any segment" is never a subset of one literal.
            if need is not None and _segment_at(p, i) != need:
                return False
    return True


def overlaps(a: str, b: str) -> bool:
    """True if some topic is matched by both valid patterns ``a`` and ``b``."""
    sa = a.split(".")
    sb = b.split(".")
    lb = _lengths(sb)
    for length in _lengths(sa):
        if length not in lb:
            continue
        for i in range(length):
            x = _segment_at(sa, i)
            y = _segment_at(sb, i)
            if x is not None and y is not None and x != y:
                break
        else:
            return True
    return False


K = TypeVar("K")


class _Node(Generic[K]):
    __slots__ = ("children", "exact", "tail")

    def __init__(self) -> None:
        self.children: dict[str, _Node[K]] = {}  # literal segments and "*"
        self.exact: set[K] = set()  # keys whose pattern ends at this node
        self.tail: set[K] = set()  # keys whose pattern is this node's path + ">"

    def is_empty(self) -> bool:
        return not (self.children or self.exact or self.tail)


class TopicIndex(Generic[K]):
    """Subscription index: which keys have a pattern matching a topic.

    A trie keyed by segment; ``*`` is a child like any literal (a literal
    segment can never be ``*``), ``>`` is stored as the node's ``tail`` set.
    Patterns passed in must be valid (see ``validate_pattern``); the index
    does not validate them again.
    """

    __slots__ = ("_count", "_root")

    def __init__(self) -> None:
        self._root: _Node[K] = _Node()
        self._count = 0

    def __len__(self) -> int:
        """Number of (pattern, key) pairs."""
        return self._count

    def add(self, pattern: str, key: K) -> bool:
        """Record that ``key`` subscribes to ``pattern``; True if it was not already."""
        node = self._root
        segs = pattern.split(".")
        tail = segs[-1] == TAIL
        if tail:
            segs.pop()
        for seg in segs:
            child = node.children.get(seg)
            if child is None:
                child = node.children[seg] = _Node()
            node = child
        bucket = node.tail if tail else node.exact
        if key in bucket:
            return False
        bucket.add(key)
        self._count += 1
        return True

    def remove(self, pattern: str, key: K) -> bool:
        """Forget that ``key`` subscribes to ``pattern``; True if it did. Prunes empty nodes."""
        segs = pattern.split(".")
        tail = segs[-1] == TAIL
        if tail:
            segs.pop()
        path: list[tuple[_Node[K], str]] = []
        node = self._root
        for seg in segs:
            child = node.children.get(seg)
            if child is None:
                return False
            path.append((node, seg))
            node = child
        bucket = node.tail if tail else node.exact
        if key not in bucket:
            return False
        bucket.discard(key)
        self._count -= 1
        while path and node.is_empty():
            parent, seg = path.pop()
            del parent.children[seg]
            node = parent
        return True

    def match(self, topic: str) -> Set[K]:
        """All keys with at least one pattern matching the concrete ``topic``, each once.

        The result is READ-ONLY: when a single trie node matches, it is that
        node's own set (no copy, so fan-out to 10k subscribers of one topic
        costs nothing here). Callers must not mutate it, nor keep it across a
        later ``add``/``remove``; copy it if they need to.
        """
        segs = topic.split(".")
        n = len(segs)
        found: list[set[K]] = []
        stack: list[tuple[_Node[K], int]] = [(self._root, 0)]
        while stack:
            node, depth = stack.pop()
            if depth == n:
                if node.exact:
                    found.append(node.exact)
                continue
            if node.tail:  # ``>`` matches the remaining segments (at least one remains)
                found.append(node.tail)
            children = node.children
            if children:
                child = children.get(segs[depth])
                if child is not None:
                    stack.append((child, depth + 1))
                child = children.get(STAR)
                if child is not None:
                    stack.append((child, depth + 1))
        if not found:
            return frozenset()
        if len(found) == 1:
            return found[0]
        return set().union(*found)

    def patterns(self) -> Iterator[str]:
        """Yield every pattern that has at least one key (order unspecified)."""
        stack: list[tuple[_Node[K], tuple[str, ...]]] = [(self._root, ())]
        while stack:
            node, prefix = stack.pop()
            if node.exact:
                yield ".".join(prefix)
            if node.tail:
                yield ".".join((*prefix, TAIL))
            for seg, child in node.children.items():
                stack.append((child, (*prefix, seg)))
