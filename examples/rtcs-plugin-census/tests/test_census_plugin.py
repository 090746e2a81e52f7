"""rtcs-plugin-census: its pure core, its options, and its entry point as rtcs sees it.

These tests need the package installed (``pip install -e
examples/rtcs-plugin-census``): the entry point exists only then. The plugin
talking to real clients is tested in rtcs's tests/integration/test_plugins.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from rtcs_plugin_census import Census, CensusPlugin, parse_options

from rtcs import config
from rtcs.errors import ConfigError
from rtcs.plugins import GROUP, installed, load_plugins

# A secret, so loading settings never creates the development secret.
SECRET = {"auth.secret": "census-plugin-tests-secret-0123456789"}


def settings(plugins: dict[str, Any]) -> config.Settings:
    return config.load(None, {}, {**SECRET, "plugins": plugins})


def test_a_changed_count_is_published_at_once() -> None:
    census = Census(refresh=30.0)
    assert census.observe(0, now=0.0) == 0
    assert census.observe(3, now=1.0) == 3
    assert census.observe(2, now=2.0) == 2


def test_an_unchanged_count_is_repeated_only_after_refresh() -> None:
    census = Census(refresh=10.0)
    assert census.observe(5, now=100.0) == 5
    assert census.observe(5, now=109.9) is None
    assert census.observe(5, now=110.0) == 5
    assert census.observe(5, now=115.0) is None


def test_options_are_parsed_or_refused_with_a_reason() -> None:
    valid, refused = parse_options(
        {"interval": 2, "refresh": 0, "topic": "ops.census", "colour": "red"}
    )
    assert valid == {"interval": 2.0, "topic": "ops.census"}
    assert set(refused) == {"refresh", "colour"}
    assert "positive" in refused["refresh"]
    assert parse_options({"topic": "ops.>", "interval": True})[0] == {}


def test_the_package_offers_the_plugin_through_its_entry_point() -> None:
    (entry_point,) = installed()["census"]
    assert entry_point.group == GROUP
    assert entry_point.load() is CensusPlugin


@pytest.mark.parametrize("entry", [True, {}, {"enabled": True, "interval": 0.5}])
def test_rtcs_starts_the_plugin_when_the_configuration_names_it(entry: Any) -> None:
    (spec,) = load_plugins(settings({"census": entry}), None)
    assert (spec.name, spec.actor_class) == ("census", CensusPlugin)


@pytest.mark.parametrize("entry", [False, {"enabled": False, "interval": 0.5}])
def test_a_disabled_plugin_is_not_started(entry: Any) -> None:
    assert load_plugins(settings({"census": entry}), None) == []


def test_an_installed_plugin_is_not_started_unless_named() -> None:
    assert load_plugins(settings({}), None) == []


def test_bad_options_stop_start_up_naming_the_plugin() -> None:
    with pytest.raises(ConfigError) as caught:
        load_plugins(settings({"census": {"refresh": -1}}), None)
    assert caught.value.key == "plugins.census"
    assert caught.value.reason.startswith("refresh: ")
