"""rtcs.rulesfile: reading the rules file, compiled once per content."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtcs.errors import ConfigError, RuleError
from rtcs.rules import version_of
from rtcs.rulesfile import read_rules

ONE = '[[rule]]\nname = "a"\ntopic = "t.>"\nwhen = \'data.n > 1\'\n'


def test_the_same_content_is_compiled_once(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(ONE)
    first, version = read_rules(str(path))
    again, same = read_rules(str(path))
    assert again is first and same == version == version_of(ONE)
    path.write_text(ONE.replace('"a"', '"b"'))
    changed, other = read_rules(str(path))
    assert [r.name for r in changed] == ["b"] and other != version


def test_errors_name_the_setting_or_the_rule(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"rules\.file"):
        read_rules(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nname = "a"\ntopic = "t.>"\nstop = "yes"\n')
    with pytest.raises(RuleError, match="rule 'a'"):
        read_rules(str(bad))
