"""The ``[rules] file`` setting: checked at start, a bad file exits 2 naming rule and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtcs import cli
from rtcs.config import RulesSettings, load
from rtcs.errors import ConfigError, RuleError

GOOD = '[[rule]]\nname = "a"\ntopic = "x.>"\n'
BAD = GOOD + '[[rule]]\nname = "b"\ntopic = "x"\nreroute = "y"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    return path


def test_default_is_no_rules() -> None:
    assert load().rules == RulesSettings(file="")


def test_from_the_file_and_the_environment(tmp_path: Path) -> None:
    rules = write(tmp_path, GOOD)
    conf = tmp_path / "rtcs.toml"
    conf.write_text(f'[rules]\nfile = "{rules}"\n')
    assert load(conf).rules.file == str(rules)
    assert load(environ={"RTCS_RULES_FILE": str(rules)}).rules.file == str(rules)


def test_a_missing_file_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(environ={"RTCS_RULES_FILE": str(tmp_path / "nope.toml")})
    assert caught.value.key == "RTCS_RULES_FILE"
    assert "does not exist" in str(caught.value)


def test_a_bad_file_names_file_rule_and_field(tmp_path: Path) -> None:
    rules = write(tmp_path, BAD)
    with pytest.raises(RuleError) as caught:
        load(overrides={"rules.file": str(rules)})
    assert (caught.value.file, caught.value.rule, caught.value.field) == (
        str(rules),
        "'b'",
        "reroute",
    )


def test_the_cli_exits_2_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = write(tmp_path, BAD)
    monkeypatch.setenv("RTCS_JWT_SECRET", "s" * 32)
    monkeypatch.setenv("RTCS_RULES_FILE", str(rules))
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"rtcs: configuration error: rules file {rules}: rule 'b': reroute:"
        ' only allowed with action = "reroute"\n'
    )
