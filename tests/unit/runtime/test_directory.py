from __future__ import annotations

import pytest
from thespian.actors import ActorAddress

from rtcs.runtime import Directory


def test_register_lookup_require() -> None:
    directory = Directory()
    address = ActorAddress("/A~a")
    assert directory.lookup("router") is None
    directory.register("router", address)
    assert directory.lookup("router") == address
    assert directory.require("router") == address
    assert directory.names() == ["router"]
    assert "router" in directory
    assert len(directory) == 1


def test_require_names_the_missing_name() -> None:
    with pytest.raises(LookupError, match="'router'"):
        Directory().require("router")


def test_unregister_only_the_given_address() -> None:
    directory = Directory()
    old, new = ActorAddress("/A~a"), ActorAddress("/A~b")
    directory.register("router", old)
    directory.register("router", new)  # a restart replaced it
    assert directory.unregister("router", old) is False
    assert directory.require("router") == new
    assert directory.unregister("router", new) is True
    assert directory.lookup("router") is None
    assert directory.unregister("router") is False


def test_unregister_without_address_removes_any() -> None:
    directory = Directory()
    directory.register("metrics", ActorAddress("/A~c"))
    assert directory.unregister("metrics") is True
    assert directory.names() == []
