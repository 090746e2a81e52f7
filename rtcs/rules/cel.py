"""Rule conditions (``when``): CEL expressions compiled once, evaluated per publish.

The only module of rtcs that imports the CEL package (PyPI
``common-expression-language``, import name ``cel``). An expression sees three
variables:

- ``topic``: the publish's topic (the new topic while a rerouted message's
  rules run);
- ``data``: the message's data as transformed by the rules before it;
- ``sender``: ``{"user": <the publisher's user id>, "roles": [<its roles>]}``.

A condition holds only when it evaluates to exactly ``true``. Reading a field
that is not there (``data.level`` on ``{}``) is a missing field: the condition
is false, as the issue asks, and nothing is reported. Any other evaluation
error (mixing types, calling an unknown function, a value CEL cannot represent)
also makes the condition false, but :meth:`Condition.check` reports it so the
caller can count it.

Pure: evaluation is in-process (the package's Rust core); no I/O. Importing the
package also imports its interactive command-line tool (typer, rich,
prompt_toolkit), which costs about 0.2 s once and loads asyncio and logging
modules without using them (tests/unit/rules/test_rules_cel.py checks that
neither the import nor an evaluation opens a file, socket or process).
:mod:`rtcs.config` imports the rules only when ``rules.file`` is set.
"""

from __future__ import annotations

import enum
from typing import Any

import cel

__all__ = ["MAX_WHEN_LENGTH", "Condition", "Variables", "Verdict"]

#: The longest ``when`` expression accepted, in characters: a bound on compile
#: time and on what one rule may cost per publish.
MAX_WHEN_LENGTH = 1024


class Verdict(enum.Enum):
    """What a condition said about one publish."""

    TRUE = "true"
    FALSE = "false"  # false, not a boolean, or a missing field
    ERROR = "error"  # false because evaluation failed for another reason


class Variables:
    """The variables of one evaluation, converted to CEL values once.

    Converting Python values to CEL is most of an evaluation's cost (about
    25 µs for a small message, against 0.3 µs to run a condition on values
    already converted), so one publish converts ``data`` once and again only
    after a transform changed it (:meth:`set`), however many conditions run.
    """

    __slots__ = ("_context", "failed")

    def __init__(self, topic: str, data: Any, sender: Any) -> None:
        self._context = cel.Context()
        # A value CEL cannot represent (never one decoded from JSON) makes
        # every condition of this evaluation an ERROR.
        self.failed = False
        self.set("topic", topic)
        self.set("data", data)
        self.set("sender", sender)

    def set(self, name: str, value: Any) -> None:
        """Give ``name`` a new value (after a transform, or a reroute)."""
        try:
            self._context.add_variable(name, value)
        except Exception:  # the conversion failed: see ``failed``
            self.failed = True


class Condition:
    """A compiled ``when`` expression. Build it with :meth:`compile`."""

    __slots__ = ("_program", "source")

    def __init__(self, source: str, program: cel.Program) -> None:
        self.source = source
        self._program = program

    @classmethod
    def compile(cls, source: str) -> Condition:
        """Compile ``source`` once.

        Raises:
            ValueError: ``source`` is empty, longer than :data:`MAX_WHEN_LENGTH`
                or not a valid CEL expression (the message says which).
        """
        if not source.strip():
            raise ValueError("must not be empty")
        if len(source) > MAX_WHEN_LENGTH:
            raise ValueError(f"longer than {MAX_WHEN_LENGTH} characters")
        try:
            program = cel.compile(source)
        except ValueError as exc:
            # The parser's message quotes the expression and points at the column.
            raise ValueError(f"not a valid CEL expression: {exc}") from None
        return cls(source, program)

    def check(self, variables: Variables) -> Verdict:
        """Evaluate against ``variables`` (``topic``, ``data``, ``sender``); never raises."""
        if variables.failed:
            return Verdict.ERROR
        try:
            result = self._program.execute(variables._context)
        except KeyError:
            return Verdict.FALSE  # a missing field or map key
        except Exception:  # reported as ERROR: the caller counts it
            return Verdict.ERROR
        return Verdict.TRUE if result is True else Verdict.FALSE

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Condition) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)

    def __repr__(self) -> str:
        return f"Condition({self.source!r})"
