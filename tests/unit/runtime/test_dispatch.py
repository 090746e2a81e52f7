"""rtcs.runtime.dispatch.Dispatcher: Thespian's dispatch by message class, cached."""

from __future__ import annotations

from typing import Any

import pytest
from thespian.actors import ActorAddress, ActorTypeDispatcher

from rtcs.runtime.dispatch import Dispatcher


class Base:
    pass


class Derived(Base):
    pass


class Other:
    pass


def make(base: type) -> type:
    """The same actor hierarchy on Thespian's dispatcher or on ours."""

    class Parent(base):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[str] = []

        def receiveMsg_Base(self, msg: Base, sender: ActorAddress) -> Any:
            self.seen.append("Parent.Base")

        def receiveMsg_Derived(self, msg: Derived, sender: ActorAddress) -> Any:
            self.seen.append("Parent.Derived")

    class Child(Parent):
        def receiveMsg_Derived(self, msg: Derived, sender: ActorAddress) -> Any:
            self.seen.append("Child.Derived")
            return self.SUPER  # pass it on, as Thespian allows

        def receiveUnrecognizedMessage(self, msg: Any, sender: ActorAddress) -> Any:
            self.seen.append("unrecognized")

    return Child


@pytest.mark.parametrize("message", [Base(), Derived(), Other()], ids=type)
def test_the_same_handlers_run_in_the_same_order_as_thespians(message: object) -> None:
    ours, theirs = make(Dispatcher)(), make(ActorTypeDispatcher)()
    for _ in range(2):  # the second time from the cache
        ours.receiveMessage(message, None)
        theirs.receiveMessage(message, None)
    assert ours.seen == theirs.seen
    assert ours.seen  # something ran


def test_each_class_has_its_own_cache() -> None:
    class A(Dispatcher):
        def receiveMsg_Base(self, msg: Base, sender: ActorAddress) -> Any:
            return "A"

    class B(Dispatcher):
        def receiveMsg_Base(self, msg: Base, sender: ActorAddress) -> Any:
            return "B"

    assert A().receiveMessage(Base(), None) == "A"
    assert B().receiveMessage(Base(), None) == "B"
    assert A().receiveMessage(Other(), None) is None  # nothing takes it


def test_a_handler_replaced_on_the_class_is_the_one_that_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class A(Dispatcher):
        def receiveMsg_Base(self, msg: Base, sender: ActorAddress) -> Any:
            return "original"

    assert A().receiveMessage(Base(), None) == "original"  # cached now
    monkeypatch.setattr(A, "receiveMsg_Base", lambda self, msg, sender: "patched")
    assert A().receiveMessage(Base(), None) == "patched"
