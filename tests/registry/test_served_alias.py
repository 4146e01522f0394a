"""What training may give the served alias (NEXTBEST_SERVE_ALIAS) when that is another
than ``champion``: a model's first version only; a later one reaches serving through
``nextbest promote``. Real SQLite MLflow stores, the CLI in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from nextbest import registry
from nextbest.cli import app
from nextbest.learning.train import TrainResult
from nextbest.loop.lineage import champion_changes
from nextbest.settings import Settings, get_settings

runner = CliRunner()


def _result(trained) -> TrainResult:
    model = registry.load_version(trained.settings, trained.version)
    return TrainResult(model=model, metrics={}, params={"variant": "served-alias"})


def _env(settings: Settings, serve_alias: str) -> dict[str, str]:
    get_settings.cache_clear()
    return {
        "NEXTBEST_MODELS_DIR": str(settings.resolved_models_dir),
        "NEXTBEST_SERVE_ALIAS": serve_alias,
    }


def test_a_later_version_does_not_get_an_unset_served_alias(own_copy: Settings, trained) -> None:
    """A champion exists and the server reads 'production', which names nothing yet (the
    setting changed after the first version): a trained version used to take
    'production', so it was served without the gate and no decision recorded it."""
    settings = own_copy.model_copy(update={"serve_alias": "production"})
    info = registry.log_training_run(_result(trained), settings)
    assert info.aliases == ()
    assert registry.alias_version(settings, "production") is None
    assert registry.alias_version(settings, "champion") == "1"
    assert [(c.version, c.decision) for c in champion_changes(settings)] == [("1", "train")]


def test_train_says_the_served_alias_names_no_version(
    own_copy: Settings, trained, world_dir: Path
) -> None:
    config = Path(__file__).parents[1] / "cli" / "fast_train.yaml"
    result = runner.invoke(
        app,
        ["train", "--data", str(world_dir), "--config", str(config)],
        env=_env(own_copy, "production"),
    )
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert (
        "note: the server reads alias 'production' (NEXTBEST_SERVE_ALIAS), which names no "
        "version: version 2 is not served. Training gives that alias to a model's first "
        "version only; a later one is served once `nextbest promote` makes it champion and "
        "'production' is moved to it in the registry"
    ) in said, said
    assert registry.alias_version(own_copy, "production") is None
    assert registry.alias_version(own_copy, "champion") == "1"


@pytest.mark.parametrize("alias", ["champion", "production"])
def test_train_may_not_give_the_served_aliases_once_a_champion_exists(
    own_copy: Settings, tmp_path: Path, alias: str
) -> None:
    """With 'production' served and naming nothing, `--alias champion` replaced the
    champion without the gate (and `--alias production` served the new version):
    refused before the data are read."""
    result = runner.invoke(
        app,
        ["train", "--data", str(tmp_path / "not-read"), "--alias", alias],
        env=_env(own_copy, "production"),
    )
    said = " ".join(result.output.split())
    assert result.exit_code == 2, said
    assert said.startswith(f"error: --alias {alias}: "), said
    assert "not-read" not in said  # refused before the data are looked at
    assert [v.version for v in registry.list_versions(own_copy)] == ["1"]
    assert registry.alias_version(own_copy, "production") is None


@pytest.mark.parametrize("challenger_before", [False, True])
def test_retrain_refuses_a_served_alias_of_challenger_before_any_work(
    own_copy: Settings, trained, tmp_path: Path, challenger_before: bool
) -> None:
    """NEXTBEST_SERVE_ALIAS=challenger: every retrain (alias 'challenger') would be
    served at once, without the gate. With no challenger yet it went through; with
    one, the refusal told to use --alias challenger, the very alias refused."""
    if challenger_before:
        registry.log_training_run(_result(trained), own_copy, alias="challenger")
    before = [v.version for v in registry.list_versions(own_copy)]
    result = runner.invoke(
        app,
        ["retrain", "--data", str(tmp_path / "not-read"), "--allow-history-only"],
        env=_env(own_copy, "challenger"),
    )
    said = " ".join(result.output.split())
    assert result.exit_code == 2, said
    assert said == (
        "error: --alias challenger: the server reads alias 'challenger' "
        "(NEXTBEST_SERVE_ALIAS), so the new version would be served at once, without the "
        "gate; register it under another alias (--alias NAME), or serve the champion "
        "(unset NEXTBEST_SERVE_ALIAS)"
    ), said
    assert [v.version for v in registry.list_versions(own_copy)] == before
