"""A champion whose model cannot be loaded, with evidence in the recommendation log:
the gate says so in one line and how to replace it, and a forced promotion replaces
it. Real stores: a copy of a served SQLite store and its MLflow registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from nextbest import registry
from nextbest.cli import app
from nextbest.loop import gate
from nextbest.loop.gate import GateConfig, GateError
from nextbest.settings import Settings, get_settings

from .conftest import LoopWorld, do_nothing, register

pytestmark = pytest.mark.xdist_group("loop")

runner = CliRunner()


@pytest.fixture
def broken_champion(loop_world: LoopWorld, honest_copy: Settings) -> tuple[Settings, str, str]:
    """A copy of the served store whose champion's artifacts are gone, and a challenger:
    ``(settings, champion, challenger)``."""
    settings = honest_copy
    # A champion of this copy's own (its artifacts are not the shared store's).
    champion = register(loop_world.honest, settings)
    registry.set_alias(settings, "champion", champion)
    challenger = register(do_nothing(loop_world.honest), settings, alias="challenger")
    _damage(settings, champion)
    return settings, champion, challenger


def _damage(settings: Settings, version: str) -> None:
    """Overwrite ``version``'s scoring model (a disk error, a bad restore)."""
    with registry._model_dir(settings, version) as (root, _):
        (artifact,) = root.rglob("scoring_model.joblib")
        artifact.write_bytes(b"not a model")


def _env(settings: Settings) -> dict[str, str]:
    get_settings.cache_clear()
    return {"NEXTBEST_MODELS_DIR": str(settings.resolved_models_dir)}


def test_evaluate_says_the_champion_cannot_be_loaded_and_how_to_replace_it(
    broken_champion: tuple[Settings, str, str],
) -> None:
    settings, champion, challenger = broken_champion
    with pytest.raises(gate.ChampionUnloadableError) as raised:
        gate.evaluate(settings, config=GateConfig(), log=False)
    said = str(raised.value)
    assert said.startswith(f"the champion, version {champion}, cannot be loaded, so the gate ")
    assert "its artifacts at" in said and "were altered after it was registered" in said, said
    assert "`nextbest promote --force --reason TEXT` replaces it with the challenger, " in said
    assert f"version {challenger}" in said and "\n" not in said

    for command in (["evaluate"], ["promote"]):
        result = runner.invoke(app, command, env=_env(settings))
        assert result.exit_code == 2, result.output
        shown = " ".join(result.output.split())
        assert f"error: the champion, version {champion}, cannot be loaded" in shown, shown
        assert "promote --force --reason" in shown and "Traceback" not in shown, shown
    assert registry.alias_version(settings, "champion") == champion


def test_a_forced_promotion_replaces_a_champion_that_cannot_be_loaded(
    broken_champion: tuple[Settings, str, str],
) -> None:
    settings, champion, challenger = broken_champion
    result = runner.invoke(
        app, ["promote", "--force", "--reason", "champion artifacts lost"], env=_env(settings)
    )
    assert result.exit_code == 0, result.output
    shown = " ".join(result.output.split())
    assert f"promoted version {challenger} to champion" in shown, shown
    assert f"the champion, version {champion}, could not be evaluated: " in shown, shown
    assert registry.alias_version(settings, "champion") == challenger
    assert registry.alias_version(settings, "previous_champion") == champion
    assert gate.champion_history(settings)[-2:] == [champion, challenger]
    client = registry.client(settings)
    tags = client.get_model_version(settings.model_name, challenger).tags
    assert tags[gate.PROMOTION_TAG] == "forced"
    (run,) = client.search_runs(
        [client.get_experiment_by_name(settings.experiment + "-evaluation").experiment_id],
        f"params.challenger_version = '{challenger}'",
    )
    assert run.data.tags["decision"] == "promote"
    assert run.data.tags["reason"] == "champion artifacts lost"
    assert "were altered" in run.data.tags["champion_unloadable"]
    decision = Path(client.download_artifacts(run.info.run_id, "decision.json")).read_text()
    assert f"the champion, version {champion}, could not be evaluated" in decision


def test_a_forced_promotion_refuses_a_challenger_that_cannot_be_loaded_either(
    broken_champion: tuple[Settings, str, str],
) -> None:
    settings, champion, challenger = broken_champion
    _damage(settings, challenger)
    with pytest.raises(
        GateError, match=r"and the challenger, version \d+, cannot be loaded either"
    ):
        gate.evaluate(settings, config=GateConfig(), log=False)
    with pytest.raises(GateError, match=rf"the challenger, version {challenger}, cannot be loaded"):
        gate.promote(settings, config=GateConfig(), force=True, reason="both lost")
    assert registry.alias_version(settings, "champion") == champion


def test_a_version_named_without_the_alias_is_called_by_its_number(
    loop_world: LoopWorld, broken_champion: tuple[Settings, str, str]
) -> None:
    """`--version N` naming a version the alias challenger does not: the gate's errors
    called it "the challenger, version N," (the challenger is another version), and
    told to retrain, which makes another version, or to promote without --version."""
    settings, champion, challenger = broken_champion
    named = register(do_nothing(loop_world.honest), settings)
    assert named != challenger
    client = registry.client(settings)
    with pytest.raises(gate.ChampionUnloadableError) as unloadable:
        gate.evaluate(settings, config=GateConfig(), log=False, version=named)
    client.set_model_version_tag(settings.model_name, named, gate.SHARE_TAG, "0.2")
    with pytest.raises(GateError) as wider:
        gate.evaluate(settings, config=GateConfig(evaluation_share=0.3), version=named)
    client.set_model_version_tag(settings.model_name, named, gate.SHARE_TAG, "0")
    with pytest.raises(gate.NoEvidenceError) as none_left:
        gate.evaluate(settings, config=GateConfig(), version=named)
    _damage(settings, named)
    with pytest.raises(GateError) as forced:  # no evidence: forced, found unloadable
        gate.promote(settings, config=GateConfig(), force=True, reason="r", version=named)
    client.delete_model_version_tag(settings.model_name, named, gate.SHARE_TAG)
    with pytest.raises(GateError) as both:
        gate.evaluate(settings, config=GateConfig(), version=named)

    assert str(unloadable.value).endswith(
        f"`nextbest promote --version {named} --force --reason TEXT` replaces it with "
        f"version {named} without the gate (or `nextbest rollback` returns to the previous "
        "champion)"
    ), unloadable.value
    assert str(wider.value) == (
        f"the gate config's evaluation_share is 0.3 but version {named} was retrained with "
        "evaluation_share 0.2: it was trained on about 33% of the decisions it would be "
        "evaluated on. Evaluate with evaluation_share 0.2 (or less) in the gate config "
        "(--config)"
    )
    assert str(none_left.value) == (
        f"version {named} was retrained with evaluation_share 0: it was trained on every "
        "logged decision with an outcome, so none is left to judge it by: promote "
        f"--version {named} --force --reason TEXT (it skips the gate)"
    )
    assert str(forced.value).startswith(
        f"version {named} cannot be loaded, so it is not promoted, forced or not"
    ), forced.value
    assert f"; and version {named} cannot be loaded either: " in str(both.value), both.value
    for raised in (unloadable, wider, none_left, forced, both):
        assert "challenger" not in str(raised.value), raised.value
    assert registry.alias_version(settings, "champion") == champion
    assert registry.alias_version(settings, "challenger") == challenger
