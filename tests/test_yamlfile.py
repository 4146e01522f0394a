"""The YAML reader every configuration file goes through: key paths and their lines."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from nextbest.api.schemas import RecommendationCreate
from nextbest.learning.config import load_train_config
from nextbest.learning.levers import load_levers
from nextbest.loop.gate import GateError, load_gate_config
from nextbest.policy.rules import RulesError, ServingRules
from nextbest.service.events import FeedbackEventCreate
from nextbest.settings import Settings
from nextbest.yamlfile import (
    KeyLines,
    Place,
    keys_at,
    load_yaml,
    load_yaml_with_lines,
    near_hint,
    near_word,
    near_words,
    unknown_names,
    validation_message,
    word_of,
    yaml_error_message,
    yaml_error_where,
)

DOCUMENT = """\
# a comment, then a blank line

channels:
  email:
    max_contacts: 2
  rep_visit:
    max_contacts: 1
keys:
  - name: a
    role: admin
  - {name: b,
     role: rep}
withdrawn_actions: [A1, A2]
base: &base {per_days: 7}
again: *base
"""


def test_every_key_path_has_the_line_it_is_written_on() -> None:
    data, lines = load_yaml_with_lines(DOCUMENT)
    assert data["keys"][1] == {"name": "b", "role": "rep"}
    assert lines.lines == {
        ("channels",): 3,
        ("channels", "email"): 4,
        ("channels", "email", "max_contacts"): 5,
        ("channels", "rep_visit"): 6,
        ("channels", "rep_visit", "max_contacts"): 7,
        ("keys",): 8,
        ("keys", 0): 9,
        ("keys", 0, "name"): 9,
        ("keys", 0, "role"): 10,
        ("keys", 1): 11,
        ("keys", 1, "name"): 11,
        ("keys", 1, "role"): 12,
        ("withdrawn_actions",): 13,
        ("withdrawn_actions", 0): 13,
        ("withdrawn_actions", 1): 13,
        ("base",): 14,
        ("base", "per_days"): 14,
        # An alias is at the line of the key holding it; what it repeats is not walked again.
        ("again",): 15,
    }


@pytest.mark.parametrize(
    ("path", "line"),
    [
        pytest.param(("channels", "rep_visit", "max_contacts"), 7, id="written"),
        pytest.param(("channels", "rep_visit", "per_days"), 6, id="missing-key-at-its-section"),
        pytest.param(("keys", 1, "territory_id"), 11, id="missing-field-at-its-list-item"),
        pytest.param(("channels", "email", "[key]"), 4, id="pydantic-tag-after-the-path"),
        pytest.param(("again", "per_days"), 15, id="inside-an-alias-at-the-alias"),
        pytest.param(("snooze_days",), None, id="missing-at-the-top-no-line"),
        pytest.param((), None, id="the-document-no-line"),
    ],
)
def test_a_path_gets_the_line_of_its_longest_written_prefix(
    path: tuple[object, ...], line: int | None
) -> None:
    _, lines = load_yaml_with_lines(DOCUMENT)
    assert lines.line_of(path) == line


def test_lines_within_a_section_count_from_the_file_and_the_section_is_its_own_root() -> None:
    _, lines = load_yaml_with_lines(DOCUMENT)
    keys = lines.within(("keys",))
    assert keys.line_of((0, "role")) == 10
    assert keys.line_of(("anything",)) == 8  # the section's own line
    assert KeyLines().within(("keys",)).line_of((0,)) is None


@pytest.mark.parametrize("text", ["", "# only a comment\n", "5\n"])
def test_a_document_without_entries_has_no_lines(text: str) -> None:
    assert load_yaml_with_lines(text)[1] == KeyLines()


def test_a_key_given_twice_is_still_refused() -> None:
    with pytest.raises(yaml.YAMLError, match="found the key 'seed' a second time"):
        load_yaml_with_lines("seed: 1\nseed: 2\n")


MERGED = """\
email: &capped
  max_contacts: 3
  per_days: 28
webinar:
  <<: *capped
  per_days: 14
"""


def test_a_merge_key_merges_with_the_keys_beside_it_taking_precedence() -> None:
    data, lines = load_yaml_with_lines(MERGED)
    assert data == {
        "email": {"max_contacts": 3, "per_days": 28},
        "webinar": {"max_contacts": 3, "per_days": 14},
    }
    # A merged key is at the line it is written on; one written beside the merge, there.
    assert lines.line_of(("webinar", "max_contacts")) == 2
    assert lines.line_of(("webinar", "per_days")) == 6
    # Keys written twice beside a merge are refused as anywhere else.
    with pytest.raises(yaml.YAMLError, match=r"found the key 'per_days' a second time \(first"):
        load_yaml_with_lines(MERGED + "  per_days: 7\n")


def test_a_yaml_error_says_where_and_what_with_tokens_hidden_unless_asked() -> None:
    with pytest.raises(yaml.YAMLError) as twice:
        load_yaml_with_lines("a: 1\nkey: x\nb: 2\nkey: y\n")
    # Hidden by default: a file of API keys may hold a secret where a key is expected.
    assert yaml_error_where(twice.value) == (
        "line 4, column 1: found the key '...' a second time (first on line 2); "
        "while reading a mapping"
    )
    assert yaml_error_message("rules.yaml", twice.value) == (
        "rules.yaml, line 4, column 1: not valid YAML: found the key 'key' a second time "
        "(first on line 2); while reading a mapping"
    )
    with pytest.raises(yaml.YAMLError) as tab:
        load_yaml_with_lines("a:\n\tb: 1\n")
    assert "(YAML indents with spaces, not tabs)" in yaml_error_where(tab.value)


def test_a_place_names_the_file_line_and_path() -> None:
    _, lines = load_yaml_with_lines(DOCUMENT)
    email = Place("rules.yaml", lines).at("channels").at("email")
    assert str(email.at("max_contacts")) == "rules.yaml, line 5: channels.email.max_contacts"
    assert str(email.at("per_days")) == "rules.yaml, line 4: channels.email.per_days"
    assert str(Place("keys.yaml", lines).at("keys").item(1).pointing_at("role")) == (
        "keys.yaml, line 12: keys[1]"
    )
    assert Place("rules.yaml", lines).at("channels").file == "rules.yaml, line 3"
    assert str(Place("<mapping>").at("channels").at("email")) == "<mapping>: channels.email"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rate: float = Field(default=0.1, le=1)


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    first: _Section = _Section()
    second: _Section = _Section()


def test_a_validation_message_names_the_line_of_each_problem() -> None:
    text = "first:\n  rate: 0.5\nsecond:\n  rate: 2\n  speed: 1\n"
    data, lines = load_yaml_with_lines(text)
    with pytest.raises(ValidationError) as refused:
        _Config.model_validate(data)
    assert validation_message("config c.yaml", refused.value, lines) == (
        "config c.yaml, line 4: second.rate: Input should be less than or equal to 1 (read 2, "
        "a whole number); line 5: second.speed: Extra inputs are not permitted"
    )
    assert validation_message("config c.yaml", refused.value, None) == (
        "config c.yaml: second.rate: Input should be less than or equal to 1 (read 2, a "
        "whole number); second.speed: Extra inputs are not permitted"
    )


def test_a_problem_with_the_whole_mapping_has_no_empty_path() -> None:
    with pytest.raises(ValidationError) as refused:
        _Config.model_validate([1])
    assert validation_message("config c.yaml", refused.value, None) == (
        "config c.yaml: Input should be a valid dictionary or instance of _Config (read a list)"
    )
    # Inline levers of a train.yaml written as a number: the line naming them.
    data, lines = load_yaml_with_lines("seed: 1\nfirst: 3\n")
    with pytest.raises(ValidationError) as refused:
        _Section.model_validate(data["first"])
    assert validation_message("first in c.yaml", refused.value, lines.within(("first",))) == (
        "first in c.yaml, line 2: Input should be a valid dictionary or instance of _Section "
        "(read 3, a whole number)"
    )


CONTRACT = ("action_id", "channel", "content_id", "topic", "content_type", "cost")


@pytest.mark.parametrize(
    ("value", "choices", "keywords", "near"),
    [
        pytest.param("emial", ("email", "sms"), {}, ["email"], id="a-slip"),
        pytest.param("promo", ("promotional", "medical"), {}, ["promotional"], id="a-prefix"),
        pytest.param("pr", ("promotional", "medical"), {}, [], id="a-prefix-too-short"),
        pytest.param("fax", ("email", "rep_visit"), {}, [], id="near-none"),
        pytest.param(
            "HCP_Unavailble", ("other", "hcp_unavailable"), {}, [], id="case-counts-by-default"
        ),
        pytest.param(
            "HCP_Unavailble",
            ("other", "hcp_unavailable"),
            {"any_case": True},
            ["hcp_unavailable"],
            id="any-case",
        ),
        pytest.param(
            "t0O1", ("T001", "T002", "X9"), {"any_case": True, "n": 3}, ["T001"], id="an-id"
        ),
        pytest.param(
            "t001", ("T001", "T002"), {"any_case": True, "n": 3}, ["T001"], id="itself-alone"
        ),
        pytest.param("unit_cost", CONTRACT, {}, [], id="words-count-only-when-asked"),
        pytest.param("unit_cost", CONTRACT, {"words": True}, ["cost"], id="a-choice-in-it"),
        pytest.param("visit", ("rep_visit", "email"), {"words": True}, ["rep_visit"], id="in-one"),
    ],
)
def test_the_near_word_is_found_one_way_for_every_did_you_mean(
    value: str, choices: tuple[str, ...], keywords: dict, near: list[str]
) -> None:
    assert near_words(value, choices, **keywords) == near
    one = {k: v for k, v in keywords.items() if k != "n"}
    assert near_word(value, choices, **one) == (near[0] if near else None)
    assert near_hint(value, choices, **one) == (f" (did you mean '{near[0]}'?)" if near else "")


@pytest.mark.parametrize(
    ("value", "choices", "near"),
    [
        # A feedback event's "event": event_id was named (difflib's ratio prefers the
        # shorter), where event_type is as likely, and the one an event lacks.
        pytest.param("event", FeedbackEventCreate, ["event_id", "event_type"], id="event"),
        pytest.param("holdout", Settings, ["holdout_rate", "holdout_days"], id="settings"),
        pytest.param(
            "log", Settings, ["log_flush_ms", "log_max_backlog", "log_max_wait_s"], id="log"
        ),
        pytest.param("rep", ("rep_visit", "rep_phone"), ["rep_visit", "rep_phone"], id="rep"),
        pytest.param(
            "dosing",
            ("dosing_a", "dosing_b", "dosing_c"),
            ["dosing_a", "dosing_b", "dosing_c"],
            id="dosing",
        ),
    ],
)
def test_the_first_words_of_several_choices_name_none_of_them(
    value: str, choices: Any, near: list[str]
) -> None:
    """A name that is the first words of several choices shortens each alike: they
    are its near words as equals, in the order of the choices, and no one of them
    is guessed for it."""
    fields = keys_at(choices, ()) if isinstance(choices, type) else list(choices)
    assert near_words(value, fields, n=3) == near
    assert near_word(value, fields) is None
    assert near_hint(value, fields) == ""


@pytest.mark.parametrize(
    ("value", "choices", "near"),
    [
        # The last words of two fields of the rules file's rep_plan: max_capacity was
        # named (difflib's ratio prefers the shorter), where default_capacity is as likely.
        pytest.param(
            "capacity",
            ("default_capacity", "max_capacity", "dismiss_reasons", "hcp_wide_reasons"),
            ["default_capacity", "max_capacity"],
            id="capacity",
        ),
        pytest.param(
            "reasons",
            ("dismiss_reasons", "hcp_wide_reasons", "max_capacity"),
            ["dismiss_reasons", "hcp_wide_reasons"],
            id="reasons",
        ),
        pytest.param(
            "data", ("safety_data", "trial_data"), ["safety_data", "trial_data"], id="data"
        ),
        # One slip from each, alike by difflib's ratio: it named the later in the alphabet.
        pytest.param("rate", ("rats", "rage"), ["rats", "rage"], id="level-ratio"),
        pytest.param("rate", ("rage", "rats"), ["rage", "rats"], id="level-ratio-other-order"),
        pytest.param("per_dayz", ("per_days", "per_dayx"), ["per_days", "per_dayx"], id="slips"),
    ],
)
def test_choices_as_near_as_each_other_name_none_of_them(
    value: str, choices: tuple[str, ...], near: list[str]
) -> None:
    """A name as near two choices (the last words of both, or one slip from each) had
    one of them guessed for it, picked by how difflib breaks a tie: its near words
    are those, in the order of the choices, and none is guessed."""
    assert near_words(value, choices, n=3) == near
    assert near_word(value, choices) is None
    assert near_hint(value, choices) == ""
    assert unknown_names([value], choices) == (
        f"unknown field '{value}' (allowed here: {', '.join(choices)})"
    )


@pytest.mark.parametrize(
    ("value", "choices", "near"),
    [
        # The first words of one choice only: that one.
        pytest.param("hcp", RecommendationCreate, "hcp_id", id="hcp"),
        pytest.param("hcp_ids", RecommendationCreate, "hcp_id", id="hcp-ids"),
        pytest.param("occurred", FeedbackEventCreate, "occurred_at", id="occurred"),
        pytest.param("recommendation", FeedbackEventCreate, "recommendation_id", id="rec-id"),
        pytest.param("tracking", Settings, "tracking_uri", id="tracking"),
        pytest.param("max_request", Settings, "max_requests_per_connection", id="max-requests"),
        # A slip of spelling nearer than the shortenings: named.
        pytest.param("event_tpye", FeedbackEventCreate, "event_type", id="event-type-slip"),
        pytest.param("event", ("event_id", "event_type", "events"), "events", id="events"),
        pytest.param("holdout_rat", Settings, "holdout_rate", id="holdout-rate-slip"),
        # The last words of one choice only, or nearer one by spelling: that one.
        pytest.param("capacity", ("max_capacity", "dismiss_reasons"), "max_capacity", id="one"),
        pytest.param("max_capacty", ("default_capacity", "max_capacity"), "max_capacity", id="mc"),
    ],
)
def test_a_name_near_one_choice_still_names_it(value: str, choices: Any, near: str) -> None:
    fields = keys_at(choices, ()) if isinstance(choices, type) else list(choices)
    assert near_word(value, fields) == near


def test_a_word_spelled_two_ways_case_aside_is_not_guessed() -> None:
    codes = ("Other", "other", "not_relevant")
    # Both named where several may be (territories), neither where one is.
    assert near_words("OTHRE", codes, n=3, any_case=True) == ["Other", "other"]
    assert near_word("OTHRE", codes, any_case=True) is None
    assert near_hint("OTHRE", codes, any_case=True) == ""
    assert near_word("NOT_RELEVENT", codes, any_case=True) == "not_relevant"


class _Nested(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sections: dict[str, _Section] = {}
    steps: list[_Section] = []
    optional: Annotated[_Section | None, Field(description="may be left out")] = None
    renamed: _Section = Field(default=_Section(), alias="re-named")
    either: _Section | int = 0


def test_the_keys_at_a_place_are_found_through_nested_models() -> None:
    assert keys_at(_Config, ()) == ["first", "second"]
    assert keys_at(_Config, ("second",)) == ["rate"]
    assert keys_at(_Nested, ("sections", "east")) == ["rate"]
    assert keys_at(_Nested, ("steps", 2)) == ["rate"]
    assert keys_at(_Nested, ("optional",)) == ["rate"]
    assert keys_at(_Nested, ("re-named",)) == ["rate"]
    assert "re-named" in keys_at(_Nested, ())
    # Nothing to look up: an unknown section, a plain value, a union of kinds.
    assert keys_at(_Config, ("third",)) == []
    assert keys_at(_Config, ("first", "rate")) == []
    assert keys_at(_Nested, ("either",)) == []


def test_an_unknown_key_near_a_valid_one_says_which() -> None:
    text = "frist:\n  rate: 0.5\nsecond:\n  rat: 1\n  speed: 1\n"
    data, lines = load_yaml_with_lines(text)
    with pytest.raises(ValidationError) as refused:
        _Config.model_validate(data)
    assert validation_message("config c.yaml", refused.value, lines, model=_Config) == (
        "config c.yaml, line 4: second.rat: Extra inputs are not permitted (did you mean "
        "'rate'?); line 5: second.speed: Extra inputs are not permitted (allowed here: rate); "
        "line 1: frist: Extra inputs are not permitted (did you mean 'first'?)"
    )
    with pytest.raises(ValidationError) as refused:
        _Nested.model_validate({"sections": {"east": {"rates": 1}}, "steps": [{}, {"rte": 1}]})
    assert validation_message("config n.yaml", refused.value, None, model=_Nested) == (
        "config n.yaml: sections.east.rates: Extra inputs are not permitted (did you mean "
        "'rate'?); steps.1.rte: Extra inputs are not permitted (did you mean 'rate'?)"
    )


# The settings files read through read_settings_file, each with its own error type and
# its own way of naming the file ({} is its path): the serving rules file by its path
# alone, as every rules message names it (``rules.yaml, line 4: channels.email``).
SETTINGS_FILES = [
    pytest.param(load_train_config, "training config {}", ValueError, id="train"),
    pytest.param(load_levers, "levers file {}", ValueError, id="levers"),
    pytest.param(load_gate_config, "gate config {}", GateError, id="gate"),
    pytest.param(ServingRules.load, "{}", RulesError, id="rules"),
]


@pytest.mark.parametrize(("load", "where", "error"), SETTINGS_FILES)
@pytest.mark.parametrize(
    ("content", "said"),
    [
        # Saved from a Windows editor: read as UTF-8, the é had said nothing of the file.
        pytest.param(
            "seed: 3  # réglé\n".encode("latin-1"),
            ": not UTF-8 text (byte 0xe9 at offset 12): save it as UTF-8",
            id="latin-1",
        ),
        pytest.param(None, " cannot be read: Is a directory", id="a-directory"),
        pytest.param(
            b"- seed: 3\n", ": expected a mapping of settings at the top", id="a-list-at-the-top"
        ),
    ],
)
def test_every_settings_file_says_what_is_wrong_with_it(
    tmp_path: Path,
    load: Callable[[Path], object],
    where: str,
    error: type[Exception],
    content: bytes | None,
    said: str,
) -> None:
    path = tmp_path / "settings.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(error) as refused:
        load(path)
    assert str(refused.value) == f"{where.format(path)}{said}"


# A value of the wrong kind, as each settings file reads it: what YAML made of what was
# written, beside pydantic's message or, for a number YAML 1.1 reads as text, instead of
# it with what to write ({} is the file's path).
@pytest.mark.parametrize(
    ("load", "error", "text", "said"),
    [
        pytest.param(
            load_train_config,
            ValueError,
            "seed: 1\nmax_training_rows: 5e6\n",
            "training config {}, line 2: max_training_rows: 5e6 was read as text ('5e6'): "
            "write a whole number, e.g. 5000000",
            id="train-exponent-without-a-dot",
        ),
        pytest.param(
            load_train_config,
            ValueError,
            "max_training_rows: 5.0e+6\n",
            "training config {}, line 1: max_training_rows: 5000000.0 was read as a decimal "
            "number: write a whole number, 5000000",
            id="train-a-whole-decimal",
        ),
        pytest.param(
            load_train_config,
            ValueError,
            "uplift:\n  learning_rate: 1e-3\n",
            "training config {}, line 2: uplift.learning_rate: 1e-3 was read as text ('1e-3'): "
            "write 1.0e-3 (YAML reads an exponent after a dot and with a sign) or 0.001",
            id="train-a-rate-as-text",
        ),
        pytest.param(
            load_train_config,
            ValueError,
            "seed: true\n",
            "training config {}, line 1: seed: Input should be a valid integer (read true, "
            "true/false)",
            id="train-a-boolean",
        ),
        pytest.param(
            load_train_config,
            ValueError,
            "seed: 2026-01-01\n",
            "training config {}, line 1: seed: Input should be a valid integer (read "
            "2026-01-01, a date)",
            id="train-a-date",
        ),
        pytest.param(
            load_train_config,
            ValueError,
            "engagement:\n  learning_rate: [0.1]\n",
            "training config {}, line 2: engagement.learning_rate: Input should be a valid "
            "number (read a list)",
            id="train-a-list",
        ),
        pytest.param(
            load_levers,
            ValueError,
            "channel:\n  email: {weight: heavy}\n",
            "levers in {}, line 2: channel.email.weight: Input should be a valid number (read "
            "'heavy', text)",
            id="levers-a-word",
        ),
        pytest.param(
            load_levers,
            ValueError,
            "channel:\n  email: {offset: 1e-7}\n",
            "levers in {}, line 2: channel.email.offset: 1e-7 was read as text ('1e-7'): "
            "write 1.0e-7 (YAML reads an exponent after a dot and with a sign)",
            id="levers-a-small-exponent",  # 1e-07, Python's way, would be text again
        ),
        pytest.param(
            load_levers,
            ValueError,
            "topic:\n  no: {weight: 2}\n",
            "levers in {}, line 2: topic.false.[key]: Input should be a valid string (read "
            "false, true/false: quote it if it is text)",
            id="levers-yes-no-on-off",
        ),
        pytest.param(
            load_gate_config,
            GateError,
            "min_decisions: 5e2\n",
            "gate config {}, line 1: min_decisions: 5e2 was read as text ('5e2'): write a "
            "whole number, e.g. 500",
            id="gate-exponent",
        ),
        pytest.param(
            load_gate_config,
            GateError,
            "margin: 2%\n",
            "gate config {}, line 1: margin: Input should be a valid number (read '2%', text)",
            id="gate-a-percentage",
        ),
        pytest.param(
            load_gate_config,
            GateError,
            "min_decisions:\n",
            "gate config {}, line 1: min_decisions: Input should be a valid integer (read "
            "null: no value)",
            id="gate-no-value",
        ),
    ],
)
def test_a_value_of_the_wrong_kind_is_shown_as_read(
    tmp_path: Path,
    load: Callable[[Path], object],
    error: type[Exception],
    text: str,
    said: str,
) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text(text)
    with pytest.raises(error) as refused:
        load(path)
    assert str(refused.value) == said.format(path)


def test_long_text_read_is_shown_cut() -> None:
    data, lines = load_yaml_with_lines(f"second:\n  rate: {'x' * 100}\n")
    with pytest.raises(ValidationError) as refused:
        _Config.model_validate(data)
    assert validation_message("c.yaml", refused.value, lines) == (
        "c.yaml, line 2: second.rate: Input should be a valid number, unable to parse string "
        f"as a number (read '{'x' * 37}...', text)"
    )


def test_an_infinite_number_is_shown_as_yaml_writes_it() -> None:
    """``.inf`` and ``.nan``, which is what a person wrote, not Python's inf and nan."""
    data, lines = load_yaml_with_lines("first:\n  rate: .inf\nsecond:\n  rate: .nan\n")
    with pytest.raises(ValidationError) as refused:
        _Config.model_validate(data)
    assert validation_message("c.yaml", refused.value, lines) == (
        "c.yaml, line 2: first.rate: Input should be less than or equal to 1 (read .inf, a "
        "decimal number); line 4: second.rate: Input should be less than or equal to 1 "
        "(read .nan, a decimal number)"
    )


def test_an_api_key_files_errors_show_no_value_read(tmp_path: Path) -> None:
    """Key files hold secrets: a value of the wrong kind is named by its field, never
    shown, unlike in the other settings files."""
    from nextbest.service.apikeys import ApiKeyError, KeyStore

    secret = "s3cr3t-k3y-0123456789"
    path = tmp_path / "api_keys.yaml"
    for entry, field in [
        (f"{{name: crm, role: {secret}, key: {secret}}}", "role"),
        (f"{{name: crm, role: admin, key: [{secret}]}}", "key"),
        ("{name: crm, role: admin, key: 12345678901234567890}", "key"),
        (f"{{name: crm, role: rep, territory_id: 5.0e+6, key: {secret}}}", "territory_id"),
    ]:
        path.write_text(f"keys:\n  - {entry}\n")
        with pytest.raises(ApiKeyError) as refused:
            KeyStore.load(path=path, env={})
        said = str(refused.value)
        assert f"'{field}'" in said, said
        for shown in (secret, "12345678901234567890", "5000000", "(read "):
            assert shown not in said, said


def test_a_word_of_a_closed_set_is_read_in_any_case() -> None:
    read = word_of(("ips", "snips", "dr"))
    assert [read(v) for v in ("DR", " Snips ", "ips", "doubly robust", 3, None)] == [
        "dr",
        "snips",
        "ips",
        "doubly robust",
        3,
        None,
    ]
    # A near miss is refused naming the word meant; the field refuses the rest.
    for typo, meant in (("SNISP", "snips"), ("d r", "dr")):
        with pytest.raises(PydanticCustomError) as refused:
            read(typo)
        assert str(refused.value) == (
            f"Input should be one of 'ips', 'snips', 'dr' (did you mean '{meant}'?)"
        )
    # Words differing only in case: which one was meant cannot be told.
    read = word_of(("Low", "low", "high"))
    assert [read(v) for v in ("LOW", "low", "Low", "HIGH")] == ["LOW", "low", "Low", "high"]


def test_libyaml_reads_what_pyyaml_reads_and_pyyaml_says_what_is_wrong(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Files are parsed by libyaml (several times faster: a key file of thousands of
    reps is read again by every worker after each change), to the same data and lines
    as PyYAML's own parser; a document it refuses is said as PyYAML says it."""
    from nextbest import yamlfile

    assert yamlfile._FAST_LOADERS, "PyYAML without libyaml: the slow parser reads every file"
    text = (
        "keys:\n"
        "  - {name: a, role: rep, territory_id: '010'}\n"
        "  - name: b\n"
        "    channels: [sms, email]\n"
        "defaults: &d {x: 1.5}\n"
        "merged:\n"
        "  <<: *d\n"
        "  y: null\n"
    )
    fast = load_yaml_with_lines(text)
    assert load_yaml(text) == fast[0]
    monkeypatch.setattr(yamlfile, "_FAST_LOADERS", ())
    assert load_yaml_with_lines(text) == fast
    assert fast[1].line_of(("keys", 1, "channels")) == 4
    assert fast[0]["merged"] == {"x": 1.5, "y": None}
    monkeypatch.undo()
    # libyaml's own words for a tab: "found character that cannot start any token".
    with pytest.raises(yaml.YAMLError) as tab:
        load_yaml("a:\n\tb: 1\n")
    assert "(YAML indents with spaces, not tabs)" in yaml_error_where(tab.value)
    with pytest.raises(yaml.YAMLError) as twice:
        load_yaml_with_lines("a: 1\nb: 2\na: 3\n")
    assert "found the key 'a' a second time (first on line 1)" in yaml_error_where(
        twice.value, show_tokens=True
    )
