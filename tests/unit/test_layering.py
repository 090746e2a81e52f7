"""The import layering of rtcs (STYLE.md: "Import direction" and habit 1).

An ``ast`` walk over every module of the ``rtcs`` package reads its imports,
wherever they are: ``import x`` and ``from x import y``, relative ones,
imports inside functions and under ``TYPE_CHECKING``, and
``importlib.import_module("x")`` / ``__import__("x")`` with a literal name.
Each rule is one test listing every offending ``file:line``.

rtcs/actors is a link to the top-level actors/ folder and is the package
``rtcs.actors``: the walk follows the link and names those modules
``rtcs.actors.*``; actors/ is not walked a second time.

Each rule is also run on small synthetic sources (``test_rule_catches``), so a
rule that stopped matching anything fails instead of passing quietly.
"""

from __future__ import annotations

import ast
import fnmatch
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# The pure cores (habit 1): files, as globs relative to the repository. Besides
# the protocol core this lists what pure cores import from rtcs: the package
# __init__ files such an import runs (were rtcs/__init__.py to import the app,
# every pure module would drag it in), and the backend contracts (Protocols and
# the data crossing them, named in the session core's annotations).
PURE = (
    "rtcs/__init__.py",
    "rtcs/protocol/*",
    "rtcs/protocol/states.py",
    "rtcs/errors.py",
    "rtcs/sessions.py",
    "rtcs/auth/__init__.py",
    "rtcs/auth/permissions.py",
    "rtcs/backends/__init__.py",
    "rtcs/backends/base.py",
    "rtcs/revocations.py",
    "rtcs/rules/*",
)

# What a pure core must not import: I/O, concurrency, frameworks, logging.
# Third-party packages not listed may be imported by pure cores only when they
# do no I/O: the CEL package (``cel``, for rule conditions) is one, and
# tests/unit/rules/test_cel.py checks with audit hooks that importing and
# evaluating it opens no file, socket or process. It may only be imported by
# rtcs/rules/cel.py (``cel_only_in_rules``).
IMPURE = (
    "asyncio",
    "socket",
    "ssl",
    "selectors",
    "threading",
    "subprocess",
    "websockets",
    "thespian",
    "redis",
    "prometheus_client",
    "structlog",
    "logging",
)

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "rtcs"
MIN_MODULES = 40  # the package had about 50 modules when this test was written


@dataclass(frozen=True)
class Import:
    line: int
    # The absolute dotted name as far as the source says: ``from a.b import c``
    # gives "a.b.c" (c may be a module or a name in a.b).
    name: str


@dataclass(frozen=True)
class Module:
    name: str  # dotted: rtcs.actors.router
    path: str  # relative to the repository, through the link: rtcs/actors/router.py
    imports: tuple[Import, ...] = field(repr=False)

    @classmethod
    def parse(cls, name: str, source: str, path: str | None = None) -> Module:
        """A module from its source; ``path`` defaults to the one ``name`` implies."""
        is_package = path is not None and path.endswith("__init__.py")
        if path is None:
            path = name.replace(".", "/") + ".py"
        tree = ast.parse(source, filename=path)
        return cls(name, path, tuple(_imports(tree, name, is_package)))

    def at(self, imp: Import) -> str:
        return f"{self.path}:{imp.line}: {imp.name}"


def within(name: str, prefix: str) -> bool:
    """Whether ``name`` is the module ``prefix`` or something inside it."""
    return name == prefix or name.startswith(prefix + ".")


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = module if is_package else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _literal_dynamic_import(node: ast.Call) -> str | None:
    """The name in ``importlib.import_module("x")`` or ``__import__("x")``, if literal."""
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if called not in ("import_module", "__import__") or not node.args:
        return None
    first = node.args[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return None if first.value.startswith(".") else first.value
    return None


def _imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[Import]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, is_package)
            for alias in node.names:
                yield Import(node.lineno, base if alias.name == "*" else f"{base}.{alias.name}")
        elif isinstance(node, ast.Call) and (name := _literal_dynamic_import(node)):
            yield Import(node.lineno, name)


def walk_package() -> list[Module]:
    """Every module of rtcs, following the rtcs/actors link."""
    modules = []
    for directory, subdirectories, files in os.walk(ROOT / PACKAGE, followlinks=True):
        subdirectories[:] = sorted(d for d in subdirectories if d != "__pycache__")
        for filename in sorted(files):
            if not filename.endswith(".py"):
                continue
            path = Path(directory, filename).relative_to(ROOT).as_posix()
            parts = path.removesuffix(".py").split("/")
            if parts[-1] == "__init__":
                parts.pop()
            source = (ROOT / path).read_text(encoding="utf-8")
            modules.append(Module.parse(".".join(parts), source, path))
    return modules


MODULES = walk_package()


def is_pure(module: Module) -> bool:
    return any(fnmatch.fnmatchcase(module.path, pattern) for pattern in PURE)


# ------------------------------------------------------------------- rules
# A rule maps the modules to the offending "file:line: name" entries.

Rule = Callable[[list[Module]], list[str]]


def only_under(name: str, banned: str, *allowed: str) -> Rule:
    """``banned`` may be imported only by modules within the ``allowed`` packages."""

    def rule(modules: list[Module]) -> list[str]:
        return [
            module.at(imp)
            for module in modules
            if not any(within(module.name, package) for package in allowed)
            for imp in module.imports
            if within(imp.name, banned)
        ]

    rule.__name__ = name
    return rule


def never(name: str, *banned: str) -> Rule:
    """No module of rtcs imports any of ``banned``."""

    def rule(modules: list[Module]) -> list[str]:
        return [
            module.at(imp)
            for module in modules
            for imp in module.imports
            if any(within(imp.name, prefix) for prefix in banned)
        ]

    rule.__name__ = name
    return rule


def pure_cores_stay_pure(modules: list[Module]) -> list[str]:
    """Pure cores import nothing in IMPURE."""
    return [
        module.at(imp)
        for module in modules
        if is_pure(module)
        for imp in module.imports
        if any(within(imp.name, name) for name in IMPURE)
    ]


def pure_cores_import_only_pure_rtcs(modules: list[Module]) -> list[str]:
    """What a pure core imports from rtcs is pure too, packages on the way included.

    An import of ``rtcs.a.b.c`` resolves to the longest known module prefix;
    that module and each package above it run on import, so each must be pure.
    """
    by_name = {module.name: module for module in modules}
    offences = []
    for module in (m for m in modules if is_pure(m)):
        for imp in module.imports:
            if not within(imp.name, PACKAGE):
                continue
            parts = imp.name.split(".")
            loaded = [".".join(parts[:n]) for n in range(1, len(parts) + 1)]
            impure = [by_name[n].path for n in loaded if n in by_name and not is_pure(by_name[n])]
            if impure:
                offences.append(f"{module.at(imp)} (runs {', '.join(impure)})")
    return offences


websockets_in_gateway = only_under(
    "websockets_in_gateway", "websockets", "rtcs.gateway", "rtcs.client"
)
thespian_in_runtime_and_actors = only_under(
    "thespian_in_runtime_and_actors", "thespian", "rtcs.runtime", "rtcs.actors"
)
redis_in_redis_backend = only_under("redis_in_redis_backend", "redis", "rtcs.backends.redis")
cel_only_in_rules = only_under("cel_only_in_rules", "cel", "rtcs.rules.cel")
no_top_level_actors = never("no_top_level_actors", "actors")
no_tests_or_bench = never("no_tests_or_bench", "tests", "bench")


def offences_message(what: str, offences: list[str]) -> str:
    return f"{what}: {len(offences)} offending import(s)\n  " + "\n  ".join(offences)


# ------------------------------------------------------------ the walk itself


def test_the_walk_finds_the_package() -> None:
    names = {module.name for module in MODULES}
    assert len(MODULES) >= MIN_MODULES, sorted(names)
    # Through the link, as rtcs.actors; never as a top-level actors package.
    assert {"rtcs", "rtcs.actors", "rtcs.gateway.handle", "rtcs.protocol.codec"} <= names
    assert any(within(name, "rtcs.actors") and name != "rtcs.actors" for name in names)
    assert all(within(name, PACKAGE) for name in names)
    assert sum(len(module.imports) for module in MODULES) > 5 * len(MODULES)


@pytest.mark.parametrize("pattern", PURE)
def test_every_pure_entry_names_a_module(pattern: str) -> None:
    # A renamed or moved pure core must not silently leave the pure set.
    assert any(fnmatch.fnmatchcase(module.path, pattern) for module in MODULES), pattern


# ----------------------------------------------------------------- the rules


def test_websockets_only_in_the_gateway_and_the_client() -> None:
    offences = websockets_in_gateway(MODULES)
    assert not offences, offences_message(
        "websockets outside rtcs/gateway/ and rtcs/client/", offences
    )


def test_thespian_only_in_runtime_and_actors() -> None:
    offences = thespian_in_runtime_and_actors(MODULES)
    assert not offences, offences_message(
        "thespian outside rtcs/runtime/ and rtcs/actors/", offences
    )


def test_redis_only_in_the_redis_backend() -> None:
    offences = redis_in_redis_backend(MODULES)
    assert not offences, offences_message("redis outside rtcs/backends/redis/", offences)


def test_pure_cores_import_no_io_framework_or_logging() -> None:
    offences = pure_cores_stay_pure(MODULES)
    assert not offences, offences_message(f"pure cores importing any of {IMPURE}", offences)


def test_pure_cores_import_only_pure_rtcs_modules() -> None:
    offences = pure_cores_import_only_pure_rtcs(MODULES)
    assert not offences, offences_message("pure cores importing impure rtcs modules", offences)


def test_cel_only_in_the_rules_conditions() -> None:
    offences = cel_only_in_rules(MODULES)
    assert not offences, offences_message("cel outside rtcs/rules/cel.py", offences)


def test_no_import_of_the_top_level_actors_package() -> None:
    offences = no_top_level_actors(MODULES)
    assert not offences, offences_message("'actors' instead of 'rtcs.actors'", offences)


def test_no_import_of_tests_or_bench() -> None:
    offences = no_tests_or_bench(MODULES)
    assert not offences, offences_message("rtcs importing tests or bench", offences)


# ---------------------------------------------- each rule, on synthetic sources

IMPURE_LOGS = Module.parse("rtcs.logs", "import structlog\n")
TYPE_CHECKING_THESPIAN = """\
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from thespian.actors import Actor
"""
IMPORT_IN_FUNCTION = """\
def serve():
    from websockets.asyncio.server import serve

    return serve
"""


CASES = [
    (websockets_in_gateway, "rtcs.app", "import websockets\n", True),
    (websockets_in_gateway, "rtcs.app", IMPORT_IN_FUNCTION, True),
    (websockets_in_gateway, "rtcs.gateway.server", IMPORT_IN_FUNCTION, False),
    (websockets_in_gateway, "rtcs.client._connection", IMPORT_IN_FUNCTION, False),
    (thespian_in_runtime_and_actors, "rtcs.gateway.server", TYPE_CHECKING_THESPIAN, True),
    (thespian_in_runtime_and_actors, "rtcs.plugins", "import thespian.actors\n", True),
    (thespian_in_runtime_and_actors, "rtcs.actors.router", TYPE_CHECKING_THESPIAN, False),
    (thespian_in_runtime_and_actors, "rtcs.runtime.control", "import thespian\n", False),
    (redis_in_redis_backend, "rtcs.backends.memory.broker", "import redis.asyncio\n", True),
    (redis_in_redis_backend, "rtcs.app", "x = __import__('redis')\n", True),
    (redis_in_redis_backend, "rtcs.backends.redis.broker", "from redis import Redis\n", False),
    (redis_in_redis_backend, "rtcs.app", "from rtcs.backends.redis import b\n", False),
    (pure_cores_stay_pure, "rtcs.protocol.codec", "import asyncio\n", True),
    (pure_cores_stay_pure, "rtcs.sessions", "from logging import getLogger\n", True),
    (
        pure_cores_stay_pure,
        "rtcs.errors",
        "import importlib\nimportlib.import_module('ssl')\n",
        True,
    ),
    (pure_cores_stay_pure, "rtcs.auth.permissions", "def f():\n    import threading\n", True),
    (pure_cores_stay_pure, "rtcs.protocol.codec", "import json, re\n", False),
    (pure_cores_stay_pure, "rtcs.metrics", "import prometheus_client\n", False),
    (pure_cores_import_only_pure_rtcs, "rtcs.protocol.codec", "from rtcs import logs\n", True),
    (pure_cores_import_only_pure_rtcs, "rtcs.protocol.codec", "from ..logs import x\n", True),
    (pure_cores_import_only_pure_rtcs, "rtcs.sessions", "from rtcs.errors import E\n", False),
    (cel_only_in_rules, "rtcs.rules.engine", "import cel\n", True),
    (cel_only_in_rules, "rtcs.protocol.codec", "from cel import compile\n", True),
    (cel_only_in_rules, "rtcs.rules.cel", "import cel\n", False),
    (cel_only_in_rules, "rtcs.rules.engine", "from rtcs.rules.cel import C\n", False),
    (no_top_level_actors, "rtcs.plugins", "from actors.messages import Configure\n", True),
    (no_top_level_actors, "rtcs.app", "import actors\n", True),
    (no_top_level_actors, "rtcs.plugins", "from rtcs.actors.messages import C\n", False),
    (no_top_level_actors, "rtcs.actors.router", "from .messages import C\n", False),
    (no_tests_or_bench, "rtcs.app", "from tests.support import wait_until\n", True),
    (no_tests_or_bench, "rtcs.cli", "import bench.loadgen\n", True),
    (no_tests_or_bench, "rtcs.cli", "import benchmark\n", False),
]


@pytest.mark.parametrize(
    "rule, name, source, offends",
    CASES,
    ids=[f"{r.__name__}-{n}-{'offends' if o else 'allowed'}" for r, n, _, o in CASES],
)
def test_rule_on_synthetic_source(rule: Rule, name: str, source: str, offends: bool) -> None:
    module = Module.parse(name, source)
    offences = rule([module, IMPURE_LOGS])
    assert bool(offences) is offends, offences
    if offends:
        assert all(entry.startswith(f"{module.path}:") for entry in offences)
