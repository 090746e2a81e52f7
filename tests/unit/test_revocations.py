"""The node's table of revoked users and sessions."""

from __future__ import annotations

from rtcs.revocations import Revocation, RevocationTable


def test_tokens_issued_at_or_before_a_user_revocation_are_refused_until_it_expires() -> None:
    table = RevocationTable()
    table.add(Revocation("user", "bob", at=100.0, until=200.0))
    assert table.user_refused("bob", 99.0, now=150.0)
    assert table.user_refused("bob", 100.0, now=150.0)
    assert table.user_refused("bob", None, now=150.0)  # no iat: cannot be newer
    assert not table.user_refused("bob", 101.0, now=150.0)
    assert not table.user_refused("alice", 50.0, now=150.0)
    assert not table.user_refused("bob", 99.0, now=200.0)  # expired
    assert len(table) == 0


def test_the_newest_revocation_of_a_target_wins() -> None:
    table = RevocationTable()
    assert table.add(Revocation("user", "bob", at=100.0, until=200.0))
    assert not table.add(Revocation("user", "bob", at=90.0, until=190.0))
    assert table.add(Revocation("user", "bob", at=120.0, until=220.0))
    assert table.user_refused("bob", 110.0, now=150.0)


def test_sessions_are_revoked_apart_from_users() -> None:
    table = RevocationTable()
    table.add(Revocation("session", "s1", at=100.0, until=200.0))
    assert table.session_refused("s1", now=150.0)
    assert not table.user_refused("s1", 1.0, now=150.0)
    assert not table.session_refused("s1", now=201.0)


def test_prune_drops_only_expired_entries() -> None:
    table = RevocationTable()
    table.add(Revocation("user", "a", at=1.0, until=10.0))
    table.add(Revocation("session", "s", at=1.0, until=20.0))
    assert table.prune(now=15.0) == 1
    assert len(table) == 1
