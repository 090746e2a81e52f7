"""TopicIndex, covers and overlaps agree with brute force over a small alphabet."""

from __future__ import annotations

import itertools

from hypothesis import example, given, settings
from hypothesis import strategies as st

from rtcs.protocol.topics import TopicIndex, covers, matches, overlaps, validate_pattern

# Literal segments come from {a, b}; "x" stands for every other segment, so that
# "*" is never equivalent to a finite set of literals.
LITERALS = ["a", "b"]
UNIVERSE = [
    ".".join(segs) for n in range(1, 9) for segs in itertools.product([*LITERALS, "x"], repeat=n)
]  # every topic up to 8 segments over {a, b, x}: 9840 topics

segment = st.sampled_from([*LITERALS, "*"])


@st.composite
def patterns(draw: st.DrawFn, max_segments: int = 8) -> str:
    n = draw(st.integers(1, max_segments))
    segs = draw(st.lists(segment, min_size=n, max_size=n))
    if draw(st.booleans()):
        segs[-1] = ">"
    return validate_pattern(".".join(segs))


@st.composite
def topics(draw: st.DrawFn) -> str:
    n = draw(st.integers(1, 8))
    return ".".join(draw(st.lists(st.sampled_from([*LITERALS, "x"]), min_size=n, max_size=n)))


def matched(pattern: str) -> frozenset[str]:
    return frozenset(t for t in UNIVERSE if matches(pattern, t))


def brute_match(pattern: str, topic: str) -> bool:
    p, t = pattern.split("."), topic.split(".")
    if p[-1] == ">":
        return len(t) >= len(p) and all(a in ("*", b) for a, b in zip(p[:-1], t, strict=False))
    return len(t) == len(p) and all(a in ("*", b) for a, b in zip(p, t, strict=True))


@settings(max_examples=300, deadline=None)
@given(patterns(), topics())
def test_matches_agrees_with_a_direct_reading(pattern: str, topic: str) -> None:
    assert matches(pattern, topic) is brute_match(pattern, topic)


@st.composite
def related_pairs(draw: st.DrawFn) -> tuple[str, str]:
    """Two patterns that differ in one position, so that the interesting edges are hit
    (notably ">" against "*" in the eighth segment)."""
    a = draw(patterns()).split(".")
    b = list(a)
    i = draw(st.integers(0, len(b) - 1))
    choices = [*LITERALS, "*"] + ([">"] if i == len(b) - 1 else [])
    b[i] = draw(st.sampled_from(choices))
    if draw(st.booleans()) and len(b) < 8:
        b.append(draw(st.sampled_from([*LITERALS, "*", ">"])))
        if ">" in b[:-1]:
            b.pop()
    return ".".join(a), validate_pattern(".".join(b))


@settings(max_examples=150, deadline=None)
@given(st.tuples(patterns(), patterns()) | related_pairs())
@example(("*.*.*.*.*.*.*.*", "*.*.*.*.*.*.*.>"))
@example(("a.b.a.b.a.b.a.>", "a.b.a.b.a.b.a.b"))
def test_covers_and_overlaps_agree_with_brute_force(pair: tuple[str, str]) -> None:
    a, b = pair
    ma, mb = matched(a), matched(b)
    assert covers(a, b) is (mb <= ma)
    assert covers(b, a) is (ma <= mb)
    assert overlaps(a, b) is bool(ma & mb)
    assert overlaps(b, a) is bool(ma & mb)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), patterns(max_segments=4), st.integers(0, 5)),
        max_size=40,
    ),
    st.lists(topics(), min_size=1, max_size=10),
)
def test_index_agrees_with_brute_force(ops: list[tuple[bool, str, int]], probe: list[str]) -> None:
    index: TopicIndex[int] = TopicIndex()
    model: set[tuple[str, int]] = set()
    for adding, pattern, key in ops:
        if adding:
            assert index.add(pattern, key) is ((pattern, key) not in model)
            model.add((pattern, key))
        else:
            assert index.remove(pattern, key) is ((pattern, key) in model)
            model.discard((pattern, key))
        assert len(index) == len(model)
    assert sorted(index.patterns()) == sorted({p for p, _ in model})
    for topic in [*probe, *(p for p, _ in model if "*" not in p and ">" not in p)]:
        expected = {k for p, k in model if matches(p, topic)}
        assert set(index.match(topic)) == expected
    for pattern, key in list(model):
        assert index.remove(pattern, key)
    assert len(index) == 0
    assert index._root.is_empty()
