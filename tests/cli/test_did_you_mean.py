"""A word a command refuses names the one it most likely means (docs/operations.md,
"Did you mean"): a key's role, simulate's --format, explain's --model alias."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tests.cli.conftest import explained_on_a_copy, runner

from nextbest.cli import app
from nextbest.service.apikeys import ApiKeyError, KeyStore
from nextbest.settings import get_settings


def _refused(*args: str) -> str:
    result = runner.invoke(app, list(args))
    said = " ".join(result.output.split())
    assert result.exit_code == 2, said
    return said


@pytest.mark.parametrize(
    ("role", "said"),
    [
        pytest.param("admn", "not 'admn' (did you mean 'admin'?)", id="a-slip"),
        pytest.param("chan", "not 'chan' (did you mean 'channel'?)", id="its-start"),
        pytest.param("Rep", "not 'Rep' (lower case)", id="case-said-once"),
    ],
)
def test_keys_add_names_the_role_meant(tmp_path: Path, role: str, said: str) -> None:
    path = tmp_path / "keys.yaml"
    refused = _refused("keys", "add", "x", "--role", role, "--file", str(path))
    assert f"--role must be one of admin, channel, rep, monitor, {said}" in refused
    assert refused.count("did you mean") <= 1
    assert not path.exists()


def test_keys_add_guesses_no_role_for_a_word_near_none(tmp_path: Path) -> None:
    refused = _refused("keys", "add", "x", "--role", "boss", "--file", str(tmp_path / "k.yaml"))
    roles = "admin, channel, rep, monitor"
    assert refused.endswith(f"--role must be one of {roles}, not 'boss'"), refused


@pytest.mark.parametrize("role", ["admn", "ADMIN"])
def test_a_key_files_role_names_the_role_meant_and_never_the_value(
    tmp_path: Path, role: str
) -> None:
    path = tmp_path / "keys.yaml"
    entry = {"name": "ops", "role": role, "key": "PLAINTEXT-" + "k" * 20}
    path.write_text(yaml.safe_dump({"keys": [entry]}))
    with pytest.raises(ApiKeyError) as refused:
        KeyStore.load(path=path, env={})
    said = str(refused.value)
    roles = "admin, channel, rep, monitor"
    assert f"(ops): 'role' must be one of {roles} (did you mean 'admin'?)" in said
    assert role not in said and "PLAINTEXT" not in said


def test_a_key_pasted_as_a_role_is_near_no_role(tmp_path: Path) -> None:
    refused = _refused(
        "keys", "add", "x", "--role", "admin" + "k" * 20, "--file", str(tmp_path / "k.yaml")
    )
    assert refused.endswith("not <25 characters>"), refused


@pytest.mark.parametrize(
    ("given", "said"),
    [
        pytest.param("parqet", "got 'parqet' (did you mean 'parquet'?)", id="a-slip"),
        pytest.param("CSV", "got 'CSV' (did you mean 'csv'?)", id="another-case"),
        pytest.param("xml", "got 'xml'", id="near-none"),
    ],
)
def test_simulate_names_the_format_meant(
    env_settings: Path, tmp_path: Path, given: str, said: str
) -> None:
    out = tmp_path / "world"
    refused = _refused("simulate", "--out", str(out), "--format", given)
    assert refused.endswith(f"--format must be csv or parquet, {said}"), refused
    assert not out.exists()


def test_explain_names_the_alias_meant(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mistyped alias is answered with the alias of the registry it is near; one
    near none of them, with none."""
    from nextbest import registry

    hcp = explained_on_a_copy(trained, tmp_path, monkeypatch)
    registry.set_alias(get_settings(), "challenger", "1")
    for asked, meant in (("champoin", "champion"), ("Challenger", "challenger")):
        said = _refused("explain", hcp, "--model", asked)
        assert (
            f"--model {asked}: model 'nextbest' has no alias '{asked}' (did you mean '{meant}'?) "
            "(`nextbest models` lists the versions and their aliases)"
        ) in said, said
    said = _refused("explain", hcp, "--model", "staging")
    assert "has no alias 'staging' (`nextbest models` lists" in said, said
