"""The NEXTBEST_* settings as an operator writes them: closed choices in any case."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from nextbest.cli import app
from nextbest.settings import Settings, get_settings

SHIPPED_RULES = Path(__file__).parents[1] / "training" / "rules.yaml"


@pytest.mark.parametrize(
    ("variable", "written", "read"),
    [
        ("NEXTBEST_EXPLORATION", "Softmax", ("exploration", "softmax")),
        ("NEXTBEST_EXPLORATION", " SOFTMAX\n", ("exploration", "softmax")),
        ("NEXTBEST_EXPLORATION", "Epsilon_Greedy ", ("exploration", "epsilon_greedy")),
        ("NEXTBEST_AUTH_ENABLED", " false ", ("auth_enabled", False)),
        ("NEXTBEST_AUTH_ENABLED", "FALSE", ("auth_enabled", False)),
        ("NEXTBEST_GC_FREEZE", "True\n", ("gc_freeze", True)),
    ],
)
def test_closed_choice_settings_are_read_in_any_case_without_spaces_around(
    monkeypatch: pytest.MonkeyPatch, variable: str, written: str, read: tuple[str, object]
) -> None:
    monkeypatch.setenv(variable, written)
    field, value = read
    assert getattr(Settings(), field) == value


SWITCHES = sorted(name for name, f in Settings.model_fields.items() if f.annotation is bool)
# As docs/operations.md, "Configuration", lists them.
TRUE_WORDS, FALSE_WORDS = (
    ("true", "1", "yes", "on", "t", "y"),
    ("false", "0", "no", "off", "f", "n"),
)


@pytest.mark.parametrize("field", SWITCHES)
def test_every_true_or_false_setting_reads_the_words_the_docs_list(
    monkeypatch: pytest.MonkeyPatch, field: str
) -> None:
    variable = f"NEXTBEST_{field.upper()}"
    for words, value in ((TRUE_WORDS, True), (FALSE_WORDS, False)):
        for word in words:
            for written in (word, f" {word.upper()} "):
                monkeypatch.setenv(variable, written)
                assert getattr(Settings(), field) is value, (variable, written)
    for word in ("2", "enabled"):
        monkeypatch.setenv(variable, word)
        with pytest.raises(ValidationError, match="Input should be a valid boolean"):
            Settings()


def test_the_docs_name_every_true_or_false_setting_and_its_words() -> None:
    docs = (Path(__file__).parents[1] / "docs" / "operations.md").read_text()
    said = " ".join(docs.split("the true-or-false\nsettings", 1)[1].split("\n\n")[0].split())
    assert SWITCHES, Settings.model_fields
    for field in SWITCHES:
        assert f"`NEXTBEST_{field.upper()}`" in said.split(")", 1)[0], (field, said)
    words = ", ".join(f"`{w}`" for w in TRUE_WORDS[:-1]) + f" or `{TRUE_WORDS[-1]}` as true"
    assert words in said, said
    words = ", ".join(f"`{w}`" for w in FALSE_WORDS[:-1]) + f" or `{FALSE_WORDS[-1]}` as false"
    assert words in said, said


@pytest.mark.parametrize(
    ("variable", "written", "said"),
    [
        ("NEXTBEST_EXPLORATION", "thompson", "Input should be 'epsilon_greedy' or 'softmax'"),
        # The start of one word only: the word it shortens.
        (
            "NEXTBEST_EXPLORATION",
            "soft",
            "Input should be one of 'epsilon_greedy', 'softmax' (did you mean 'softmax'?)",
        ),
        ("NEXTBEST_EXPLORATION", "epsilon greedy", "(did you mean 'epsilon_greedy'?)"),
        (
            "NEXTBEST_EXPLORATION",
            "Sofmax",
            "Input should be one of 'epsilon_greedy', 'softmax' (did you mean 'softmax'?)",
        ),
        ("NEXTBEST_GC_FREEZE", "sometimes", "Input should be a valid boolean"),
    ],
)
def test_a_value_that_is_none_of_the_choices_keeps_its_error(
    monkeypatch: pytest.MonkeyPatch, variable: str, written: str, said: str
) -> None:
    monkeypatch.setenv(variable, written)
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert said in str(refused.value)


def test_a_command_takes_a_capitalised_exploration_and_refuses_another_word(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``NEXTBEST_EXPLORATION=Softmax`` stopped every command as an invalid setting."""
    runner = CliRunner()
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("NEXTBEST_RULES_FILE", str(SHIPPED_RULES))
    monkeypatch.setenv("NEXTBEST_EXPLORATION", "Softmax")
    get_settings.cache_clear()
    taken = runner.invoke(app, ["rules", "check"])
    assert taken.exit_code == 0, taken.output
    assert "is valid" in taken.output
    assert get_settings().exploration == "softmax"
    monkeypatch.setenv("NEXTBEST_EXPLORATION", "thompson")
    get_settings.cache_clear()
    refused = runner.invoke(app, ["rules", "check"])
    assert refused.exit_code == 2, refused.output
    assert (
        "invalid setting: NEXTBEST_EXPLORATION='thompson': Input should be 'epsilon_greedy' or "
        "'softmax'" in " ".join(refused.output.split())
    )
    monkeypatch.setenv("NEXTBEST_EXPLORATION", "sofmax")
    get_settings.cache_clear()
    refused = runner.invoke(app, ["rules", "check"])
    assert refused.exit_code == 2, refused.output
    assert (
        "invalid setting: NEXTBEST_EXPLORATION='sofmax': Input should be one of "
        "'epsilon_greedy', 'softmax' (did you mean 'softmax'?)" in " ".join(refused.output.split())
    )


def test_a_setting_named_by_the_start_of_its_name_is_warned_of_with_the_name_meant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """NEXTBEST_MAX_REQUESTS=1000 was called no setting with no word of
    NEXTBEST_MAX_REQUESTS_PER_CONNECTION, which a settings file's key so shortened gets."""
    from nextbest.settings import unknown_environment_settings

    monkeypatch.setenv("NEXTBEST_MAX_REQUESTS", "1000")
    monkeypatch.setenv("NEXTBEST_DB_LOCK", "500")
    said = unknown_environment_settings()
    assert (
        "NEXTBEST_DB_LOCK is not a nextbest setting (did you mean "
        "NEXTBEST_DB_LOCK_TIMEOUT_MS?): it is ignored"
    ) in said, said
    assert (
        "NEXTBEST_MAX_REQUESTS is not a nextbest setting (did you mean "
        "NEXTBEST_MAX_REQUESTS_PER_CONNECTION?): it is ignored"
    ) in said, said


def test_a_setting_in_another_case_is_read_and_not_warned_of(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """NEXTBEST_epsilon=0.3 is read (as any case is), yet was warned of as no setting,
    "it is ignored"; a misspelt one in lower case was not warned of at all."""
    from nextbest.settings import unknown_environment_settings

    monkeypatch.setenv("NEXTBEST_epsilon", "0.3")
    monkeypatch.setenv("nextbest_epsilion", "0.3")
    monkeypatch.setenv("NEXTBEST_api_keys", "[]")  # read as written only: not read
    assert Settings().epsilon == 0.3
    said = unknown_environment_settings()
    assert not [s for s in said if s.startswith("NEXTBEST_epsilon ")], said
    assert (
        "nextbest_epsilion is not a nextbest setting (did you mean NEXTBEST_EPSILON?): "
        "it is ignored"
    ) in said, said
    assert (
        "NEXTBEST_api_keys is not a nextbest setting (did you mean NEXTBEST_API_KEYS?): "
        "it is ignored"
    ) in said, said
