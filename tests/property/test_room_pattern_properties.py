"""Room patterns and message tails, for any input.

- a room pattern from the configuration is accepted or refused with a
  ConfigError naming its key, never anything else;
- a ``{user}`` room pattern never lets one user reach another user's rooms:
  two different users never both match one room through the same
  ``{user}``-prefix pattern;
- ``tail_target`` reads back the topic or room of any ``message_tail``.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rtcs.auth.permissions import Policy
from rtcs.errors import ConfigError
from rtcs.protocol.codec import message_tail, tail_target

ROOM_CHARS = "abcAZ09_.:@-"
rooms = st.text(alphabet=ROOM_CHARS, min_size=1, max_size=20)
users = st.text(alphabet="ab_-.:@", min_size=1, max_size=6)
patterns = st.text(alphabet=ROOM_CHARS + "*{}user ", max_size=24)


@given(patterns)
def test_any_room_pattern_is_accepted_or_names_its_key(pattern: str) -> None:
    try:
        Policy.from_mapping({"roles": {"r": {"rooms": True, "join": [pattern]}}})
    except ConfigError as exc:
        assert exc.key == "rbac.roles.r.join"


@given(st.sampled_from(["dm:{user}:*", "{user}@*", "a.{user}.b*", "{user}"]), users, users, rooms)
def test_user_patterns_keep_users_apart(pattern: str, alice: str, bob: str, room: str) -> None:
    policy = Policy.from_mapping({"roles": {"*": {"rooms": True, "join": [pattern]}}})
    if alice != bob:
        assert not (policy.can_join_room((), room, alice) and policy.can_join_room((), room, bob))


topics = st.lists(st.text(alphabet="abZ09_-", min_size=1, max_size=5), min_size=1, max_size=4)


@given(topics | rooms, st.booleans(), st.integers() | st.text(max_size=5))
def test_tail_target_reads_back_any_tail(
    target: list[str] | str, sender: bool, data: object
) -> None:
    from_user = "bob" if sender else None
    if isinstance(target, list):
        topic = ".".join(target)
        tail = message_tail(topic=topic, from_user=from_user, data=data, ts=0)
        assert tail_target(tail) == ("topic", topic)
    else:
        tail = message_tail(room=target, from_user=from_user, data=data, ts=0)
        assert tail_target(tail) == ("room", target)
    assert tail_target(message_tail(from_user="bob", data=data, ts=0)) is None
