"""Helpers shared by every test suite: waiting on conditions, a fake clock."""

from tests.support.waiting import FakeClock, describe, wait_until, wait_until_returns

__all__ = ["FakeClock", "describe", "wait_until", "wait_until_returns"]
