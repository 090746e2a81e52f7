"""rtcs.rules.cel: conditions compile once, evaluate without raising, and do no I/O."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rtcs.rules.cel import MAX_WHEN_LENGTH, Condition, Variables, Verdict

REPO = Path(__file__).resolve().parents[3]
SENDER = {"user": "u1", "roles": ["mod"]}


def check(source: str, data: object) -> Verdict:
    return Condition.compile(source).check(Variables("a.b", data, SENDER))


@pytest.mark.parametrize(
    ("source", "data", "verdict"),
    [
        ('data.level in ["high", "critical"]', {"level": "high"}, Verdict.TRUE),
        ('data.level in ["high", "critical"]', {"level": "low"}, Verdict.FALSE),
        ('data.level in ["high", "critical"]', {}, Verdict.FALSE),  # missing field
        ("data.a.b == 1", {"a": {}}, Verdict.FALSE),  # missing nested field
        ('has(data.level) && data.level == "x"', {}, Verdict.FALSE),
        ('sender.user == "u1" && topic.startsWith("a.")', {}, Verdict.TRUE),
        ("1", {}, Verdict.FALSE),  # not a boolean: false
        ("data.n + 1 > 0", {"n": "x"}, Verdict.ERROR),  # mixing types
        ("nosuch(1)", {}, Verdict.ERROR),
    ],
)
def test_verdicts(source: str, data: object, verdict: Verdict) -> None:
    assert check(source, data) is verdict


def test_variables_change_between_checks() -> None:
    variables = Variables("a.b", {"n": 1}, SENDER)
    condition = Condition.compile('data.n == 2 && topic == "c"')
    assert condition.check(variables) is Verdict.FALSE
    variables.set("data", {"n": 2})
    variables.set("topic", "c")
    assert condition.check(variables) is Verdict.TRUE


def test_a_value_cel_cannot_hold_is_an_error() -> None:
    variables = Variables("a.b", {"n": object()}, SENDER)
    assert variables.failed
    assert Condition.compile("true").check(variables) is Verdict.ERROR


@pytest.mark.parametrize(("source", "reason"), [("", "empty"), ("  ", "empty"), ("a +", "CEL")])
def test_compile_refuses(source: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        Condition.compile(source)


def test_length_bound() -> None:
    padded = "true" + " " * (MAX_WHEN_LENGTH - 4)
    assert Condition.compile(padded).source == padded
    with pytest.raises(ValueError, match="longer than"):
        Condition.compile(padded + " ")


def test_equality_by_source() -> None:
    assert Condition.compile("true") == Condition.compile("true")
    assert len({Condition.compile("true"), Condition.compile("true")}) == 1
    assert Condition.compile("true") != Condition.compile("false")


# Run in a child: audit hooks cannot be removed. Records every file opened that is
# not a module being imported, and every socket, process or exec event.
CHILD = """
import json, sys
events = []
IO = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.fork", "os.spawn")
def hook(event, args):
    if event == "open" and not str(args[0]).endswith((".py", ".pyc", ".so")):
        events.append([event, str(args[0])])
    elif event.startswith(IO):
        events.append([event, ""])
sys.addaudithook(hook)
from rtcs.rules import load_rules
imported = list(events)
events.clear()
rules = load_rules(open(sys.argv[1], "rb").read(), "example")
events.clear()  # reading the example file above is the test's own I/O
for n in range(200):
    rules.evaluate("system.x.alert", {"level": "high", "msg": "m", "n": n}, "u", ["r"])
    rules.evaluate("chat.staff", {"body": "b"}, "u", ["r"])
print(json.dumps({"import": imported, "evaluate": events}))
"""


def test_importing_and_evaluating_cel_does_no_io() -> None:
    # The pure-core rule allows the CEL package only because of this.
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(REPO / "conf" / "rules.example.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=REPO,
    )
    seen = json.loads(done.stdout)
    assert seen == {"import": [], "evaluate": []}
