"""rtcs.client stands alone: the standard library, websockets and itself.

A client application installs rtcs for its client; nothing of the server
(actors, Thespian, Redis, the configuration) may load with it. The pure parts
(backoff, close codes, seq, tokens, frames, errors, events) do no I/O: they
import neither asyncio nor websockets.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

CLIENT = Path(__file__).resolve().parents[3] / "rtcs" / "client"
PURE = ("_backoff", "_closecodes", "_errors", "_events", "_frames", "_sequence", "_tokens")
IO = ("asyncio", "socket", "ssl", "websockets", "logging")


def imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: use absolute imports"
            names.append(node.module or "")
    return names


MODULES = sorted(CLIENT.glob("*.py"))


def test_the_package_is_there() -> None:
    assert {p.stem for p in MODULES} >= {"__init__", "_connection", *PURE}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_imports_only_the_standard_library_websockets_and_itself(path: Path) -> None:
    for name in imports(path):
        top = name.split(".")[0]
        allowed = (
            top in sys.stdlib_module_names
            or top == "websockets"
            or name == "rtcs"  # the version
            or name.startswith("rtcs.client")
        )
        assert allowed, f"{path.name} imports {name}"


@pytest.mark.parametrize("stem", PURE)
def test_pure_parts_do_no_io(stem: str) -> None:
    for name in imports(CLIENT / f"{stem}.py"):
        assert name.split(".")[0] not in IO, f"{stem} imports {name}"
