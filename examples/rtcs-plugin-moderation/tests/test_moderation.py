"""rtcs-plugin-moderation: its pure decisions, its options, its entry point as rtcs sees it.

These tests need the package installed (``pip install -e
examples/rtcs-plugin-moderation``): the entry point exists only then. The
plugin deciding about real clients' publishes is tested in rtcs's
tests/integration/test_moderation_plugin.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from rtcs_plugin_moderation import (
    ANSWER,
    Moderation,
    ModerationPlugin,
    moderate,
    moderation_of,
    parse_options,
)

from rtcs import config
from rtcs.errors import ConfigError
from rtcs.plugins import GROUP, KEEP, Decision, RoutePlugin, installed, load_plugins

# A secret, so loading settings never creates the development secret.
SECRET = {"auth.secret": "moderation-plugin-tests-secret-012345678"}
BANNED = ("darn", "heck")
AUDIT = "audit.moderation"


def settings(plugins: dict[str, Any]) -> config.Settings:
    return config.load(None, {}, {**SECRET, "plugins": plugins})


# -- finding words ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["darn", "Darn!", "oh DARN it", "well,heck.", "(heck)", "darn-it", "é darn é", "x\ndarn"],
)
def test_a_banned_word_is_found_whole_and_in_any_case(text: str) -> None:
    assert Moderation(BANNED).found(text)


@pytest.mark.parametrize("text", ["", "darned", "undarn", "dar n", "darn_it", "2heck", "hecks"])
def test_a_word_inside_another_is_not_banned(text: str) -> None:
    assert not Moderation(BANNED).found(text)


def test_no_banned_words_finds_nothing() -> None:
    assert not Moderation().found("darn")
    assert Moderation().mask("darn") == "darn"


def test_masking_keeps_the_length_and_everything_else() -> None:
    moderation = Moderation(BANNED, "mask")
    assert moderation.mask("Darn, HECK and darned heck!") == "****, **** and darned ****!"


def test_the_longer_of_two_words_sharing_a_start_is_masked_whole() -> None:
    assert Moderation(["dang", "dang it"], "mask").mask("dang it all") == "******* all"


def test_words_are_matched_literally_not_as_expressions() -> None:
    moderation = Moderation(["c++", "a.b"], "mask")
    assert moderation.mask("c++ and a.b but not axb") == "*** and *** but not axb"


# -- decisions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "data", [{"text": "hello there"}, "hello", {"text": 3, "darn": "darn"}, ["darn"], 7, None]
)
def test_clean_messages_and_data_without_text_are_delivered_unchanged(data: Any) -> None:
    assert moderate(Moderation(BANNED, audit_topic=AUDIT), "chat.room", "ann", data) == Decision()


def test_drop_mode_drops_and_answers_without_the_word() -> None:
    decision = moderate(Moderation(BANNED), "chat.room", "ann", {"text": "oh darn"})
    assert decision.drop
    assert decision.answer == {"moderated": True, "reason": "banned_word"} == ANSWER
    assert decision.data is KEEP and decision.publish == ()
    assert "darn" not in repr(decision.answer)


def test_mask_mode_delivers_a_masked_copy_of_an_object() -> None:
    data = {"text": "oh Darn", "room": "lobby"}
    decision = moderate(Moderation(BANNED, "mask"), "chat.room", "ann", data)
    assert decision == Decision(data={"text": "oh ****", "room": "lobby"})
    assert data == {"text": "oh Darn", "room": "lobby"}  # never mutated


def test_mask_mode_masks_string_data() -> None:
    decision = moderate(Moderation(BANNED, "mask"), "chat.room", "ann", "heck no")
    assert decision == Decision(data="**** no")


@pytest.mark.parametrize(("mode", "action"), [("drop", "dropped"), ("mask", "masked")])
def test_every_moderated_message_is_audited(mode: Any, action: str) -> None:
    moderation = Moderation(BANNED, mode, audit_topic=AUDIT)
    decision = moderate(moderation, "chat.room", "ann", "darn")
    assert decision.publish == ((AUDIT, {"topic": "chat.room", "user": "ann", "action": action}),)
    assert decision.drop is (mode == "drop")


# -- options ------------------------------------------------------------------------


def test_options_are_parsed_or_refused_with_a_reason() -> None:
    valid, refused = parse_options(
        {
            "banned": ["darn"],
            "mode": "shout",
            "audit_topic": "audit.>",
            "colour": "red",
            "topics": ["chat.>"],
            "timeout": 1.0,
        }
    )
    assert valid == {"banned": ("darn",)}
    assert set(refused) == {"mode", "audit_topic", "colour"}
    assert "concrete topic" in refused["audit_topic"]
    assert "topics" in refused["colour"]  # rtcs's options are known too


@pytest.mark.parametrize("banned", ["darn", ["darn", ""], ["two words"], [1], {"darn": 1}])
def test_banned_must_be_a_list_of_words(banned: Any) -> None:
    assert set(parse_options({"banned": banned})[1]) == {"banned"}


def test_missing_options_take_the_defaults() -> None:
    moderation = moderation_of(parse_options({})[0])
    assert (moderation.banned, moderation.mode, moderation.audit_topic) == ((), "drop", None)
    moderation = moderation_of(parse_options({"mode": "mask", "audit_topic": AUDIT})[0])
    assert (moderation.mode, moderation.audit_topic) == ("mask", AUDIT)


# -- the package as rtcs sees it -----------------------------------------------------


def test_the_package_offers_the_plugin_through_its_entry_point() -> None:
    (entry_point,) = installed()["moderation"]
    assert entry_point.group == GROUP
    assert entry_point.load() is ModerationPlugin
    assert issubclass(ModerationPlugin, RoutePlugin)


@pytest.mark.parametrize("entry", [True, {}, {"enabled": True, "banned": ["darn"]}])
def test_rtcs_starts_the_plugin_when_the_configuration_names_it(entry: Any) -> None:
    (spec,) = load_plugins(settings({"moderation": entry}), None)
    assert (spec.name, spec.actor_class) == ("moderation", ModerationPlugin)


def test_an_installed_plugin_is_not_started_unless_named() -> None:
    assert load_plugins(settings({}), None) == []
    assert load_plugins(settings({"moderation": {"enabled": False}}), None) == []


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"mode": "shout"}, "mode: "),
        ({"banned": "darn"}, "banned: "),
        ({"audit_topic": "audit.*"}, "audit_topic: "),
        ({"bannned": ["darn"]}, "bannned: unknown option"),
    ],
)
def test_bad_options_stop_start_up_naming_the_plugin(options: dict[str, Any], reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_plugins(settings({"moderation": options}), None)
    assert caught.value.key == "plugins.moderation"
    assert caught.value.reason.startswith(reason)


@pytest.mark.parametrize(
    ("options", "key"), [({"topics": []}, "topics"), ({"timeout": 0}, "timeout")]
)
def test_rtcs_checks_topics_and_timeout(options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_plugins(settings({"moderation": options}), None)
    assert caught.value.key == f"plugins.moderation.{key}"


def test_the_plugin_sees_chat_topics_unless_configured_otherwise() -> None:
    # rtcs reads the class attribute when the options have no ``topics``.
    assert ModerationPlugin.topics == ("chat.>",)
