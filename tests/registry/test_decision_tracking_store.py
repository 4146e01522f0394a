"""Promote and rollback record their decision in the tracking store the versions they
move between were trained in, or refuse: a tracking store pointed elsewhere than the
registry's (NEXTBEST_TRACKING_URI set to a new file, another project's store) would
split the champion's audit trail over two stores. Real SQLite MLflow stores: the
tracking store and the registry in files of their own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow.entities import ViewType
from typer.testing import CliRunner

from nextbest import registry
from nextbest.cli import app
from nextbest.learning.train import TrainResult
from nextbest.loop import gate
from nextbest.loop.gate import GateConfig
from nextbest.loop.lineage import champion_changes
from nextbest.settings import Settings, get_settings

runner = CliRunner()

PROMOTE = ["promote", "--force", "--reason", "pilot"]
PROMOTE_VERSION = ["promote", "--force", "--reason", "pilot", "--version", "1"]
ROLLBACK = ["rollback", "--reason", "complaints"]


def _register(settings: Settings, trained, *, alias: str | None = None) -> str:
    """The session's model registered again in ``settings``' stores (no training)."""
    model = registry.load_version(trained.settings, trained.version)
    result = TrainResult(model=model, metrics={}, params={"variant": "stores"})
    return registry.log_training_run(result, settings, alias=alias).version


@pytest.fixture
def two_stores(trained, tmp_path: Path) -> Settings:
    """A tracking store and a registry in two files, the versions trained in them:
    version 1 the first champion, 2 promoted (forced), 3 the challenger."""
    settings = Settings(
        models_dir=tmp_path / "models",
        seed=11,
        tracking_uri=f"sqlite:///{tmp_path / 'tracking.db'}",
        registry_uri=f"sqlite:///{tmp_path / 'registry.db'}",
    )
    _register(settings, trained)
    _register(settings, trained, alias="challenger")
    gate.promote(settings, config=GateConfig(), force=True, reason="first")
    _register(settings, trained, alias="challenger")
    assert registry.alias_version(settings, "champion") == "2"
    return settings


def _runs(tracking_uri: str) -> set[str]:
    """The ids of every run (deleted ones too) in the tracking store ``tracking_uri``."""
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    experiments = client.search_experiments(view_type=ViewType.ALL)
    return {
        run.info.run_id
        for e in experiments
        for run in client.search_runs([e.experiment_id], run_view_type=ViewType.ALL)
    }


def _experiments(tracking_uri: str) -> set[str]:
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    return {e.name for e in client.search_experiments(view_type=ViewType.ALL)}


def _registry_state(settings: Settings) -> dict[str, Any]:
    """What a decision writes in the registry: the model's aliases and tags, each
    version's tags."""
    client = registry.client(settings)
    model = client.get_registered_model(settings.model_name)
    versions = client.search_model_versions(f"name='{settings.model_name}'")
    return {
        "aliases": dict(model.aliases),
        "tags": dict(model.tags),
        "versions": {v.version: dict(v.tags) for v in versions},
    }


def _invoke(settings: Settings, tracking_uri: str, args: list[str]) -> tuple[int, str]:
    get_settings.cache_clear()
    env = {
        "NEXTBEST_MODELS_DIR": str(settings.resolved_models_dir),
        "NEXTBEST_TRACKING_URI": tracking_uri,
        "NEXTBEST_REGISTRY_URI": settings.resolved_registry_uri,
    }
    result = runner.invoke(app, args, env=env)
    get_settings.cache_clear()
    assert isinstance(result.exception, SystemExit | None), result.exception  # no traceback
    return result.exit_code, " ".join(result.output.split())  # the console wraps lines


@pytest.fixture
def another_project(trained, tmp_path: Path) -> str:
    """The tracking store of another nextbest project: its own experiments and runs,
    its own decisions experiment, none of them of ``two_stores``' versions."""
    other = Settings(models_dir=tmp_path / "other", seed=11)
    _register(other, trained)
    return other.resolved_tracking_uri


@pytest.mark.parametrize("args", [PROMOTE, PROMOTE_VERSION, ROLLBACK], ids=lambda a: " ".join(a))
def test_a_decision_on_another_projects_tracking_store_is_refused_writing_nothing(
    two_stores: Settings, another_project: str, args: list[str]
) -> None:
    """The champion moved, and its decision run was written in the other store, apart
    from the versions' runs and the decisions before it."""
    settings = two_stores
    runs_here, runs_there = _runs(settings.resolved_tracking_uri), _runs(another_project)
    experiments_there = _experiments(another_project)
    before = _registry_state(settings)

    code, said = _invoke(settings, another_project, args)
    assert code == 2, said
    decision = "rollback" if args[0] == "rollback" else "promotion"
    involved = "(2, 1)" if decision == "rollback" or "--version" in args else "(3, 2)"
    # Said first: promote said the gate config it read, of a gate that never ran.
    assert said.startswith(
        f"error: the MLflow registry {settings.resolved_registry_uri} has versions of "
        f"model 'nextbest' {involved} whose training runs the tracking store "
        f"{another_project} does not have (run "
    ), said
    assert "gate config" not in said, said
    assert (
        "it is probably not the tracking store they were trained in, where the decisions on "
        f"the champion are recorded, and the {decision} would be recorded apart from them: "
        f"nothing was {'rolled back' if decision == 'rollback' else 'promoted'}. Set "
        "NEXTBEST_TRACKING_URI to the store they were trained in; if their runs were deleted "
        f"from this one on purpose, run again with --runs-deleted to record the {decision} here"
    ) in said, said
    assert registry.alias_version(settings, "champion") == "2"
    assert _registry_state(settings) == before
    assert _runs(settings.resolved_tracking_uri) == runs_here
    assert _runs(another_project) == runs_there
    assert _experiments(another_project) == experiments_there
    assert [c.decision for c in champion_changes(settings)] == ["train", "forced promote"]


@pytest.mark.parametrize("args", [["models"], ["models", "--json"]], ids=" ".join)
def test_models_on_a_tracking_store_file_that_does_not_exist_makes_none(
    two_stores: Settings, tmp_path: Path, args: list[str]
) -> None:
    """`nextbest models` only reads, yet listing the versions through MLflow made the
    tracking store's file (with its tables and a Default experiment) at a mistyped
    path: now it says what the path is, and makes nothing there."""
    settings = two_stores
    missing = tmp_path / "typo" / "mlflow.db"
    missing.parent.mkdir()
    before = _registry_state(settings)

    code, said = _invoke(settings, f"sqlite:///{missing}", args)
    assert code == 2, said
    assert (
        f"error: the MLflow tracking store sqlite:///{missing} is a file that does not exist, "
        "so it has none of the training runs of the versions of model 'nextbest' in the "
        f"registry {settings.resolved_registry_uri}: it is not the tracking store they were "
        "trained in; set NEXTBEST_TRACKING_URI to that store"
    ) in said, said
    assert not missing.exists() and list(missing.parent.iterdir()) == []
    assert _registry_state(settings) == before
    # The stores it was trained in: listed as ever.
    code, said = _invoke(settings, settings.resolved_tracking_uri, args)
    assert code == 0, said


@pytest.mark.parametrize("args", [PROMOTE, ROLLBACK], ids=lambda a: a[0])
def test_a_decision_on_a_tracking_store_file_that_does_not_exist_is_refused_unmade(
    two_stores: Settings, tmp_path: Path, args: list[str]
) -> None:
    """A relative path run from another directory, a typo: MLflow made the file, a
    store of its own for the decision run."""
    settings = two_stores
    missing = tmp_path / "elsewhere" / "mlflow.db"
    missing.parent.mkdir()
    runs_here = _runs(settings.resolved_tracking_uri)
    before = _registry_state(settings)

    code, said = _invoke(settings, f"sqlite:///{missing}", args)
    assert code == 2, said
    decision = "rollback" if args[0] == "rollback" else "promotion"
    assert (
        f"error: the MLflow tracking store sqlite:///{missing} is a file that does not exist, "
        "so it has none of the training runs of the versions of model 'nextbest' in the "
        f"registry {settings.resolved_registry_uri}: it is not the tracking store they were "
        f"trained in, where the decisions on the champion are recorded, and the {decision} "
        "would be recorded apart from them: nothing was "
    ) in said, said
    assert "Set NEXTBEST_TRACKING_URI to the store they were trained in" in said, said
    assert not missing.exists() and list(missing.parent.iterdir()) == []
    assert _registry_state(settings) == before
    assert _runs(settings.resolved_tracking_uri) == runs_here


@pytest.mark.parametrize("args", [PROMOTE, PROMOTE_VERSION, ROLLBACK], ids=lambda a: " ".join(a))
def test_a_decision_on_the_tracking_store_the_versions_were_trained_in_is_made(
    two_stores: Settings, args: list[str]
) -> None:
    """The tracking store and the registry apart, as the versions were trained: the
    decision is made and recorded beside the others."""
    settings = two_stores
    code, said = _invoke(settings, settings.resolved_tracking_uri, args)
    assert code == 0, said
    moved = {"promote": "3", "rollback": "1"}[args[0]] if "--version" not in args else "1"
    assert registry.alias_version(settings, "champion") == moved
    made = "rollback" if args[0] == "rollback" else "forced promote"
    assert [c.decision for c in champion_changes(settings)] == ["train", "forced promote", made]


def test_runs_deleted_on_purpose_records_the_decision_in_the_tracking_store_given(
    two_stores: Settings, another_project: str
) -> None:
    """--runs-deleted, the data scientist's word that the versions' runs were collected
    from this tracking store: the promotion is made and recorded there."""
    settings = two_stores
    runs_there = _runs(another_project)
    code, said = _invoke(settings, another_project, [*PROMOTE, "--runs-deleted"])
    assert code == 0, said
    assert registry.alias_version(settings, "champion") == "3"
    (new,) = _runs(another_project) - runs_there
    run = mlflow.MlflowClient(tracking_uri=another_project).get_run(new)
    assert (run.data.tags["decision"], run.data.params["challenger_version"]) == ("promote", "3")


def test_one_store_whose_training_runs_were_deleted_still_records_decisions(
    own_copy: Settings, trained
) -> None:
    """The tracking store is the registry (the default): a decision is recorded beside
    the registry whatever runs it keeps, so runs collected on purpose refuse nothing."""
    settings = own_copy
    _register(settings, trained, alias="challenger")
    mv = registry.client(settings).get_model_version(settings.model_name, "2")
    registry.client(settings).delete_run(mv.run_id)
    _hard_delete(settings, mv.run_id)
    evaluation = gate.promote(settings, config=GateConfig(), force=True, reason="pilot")
    assert evaluation.promoted and registry.alias_version(settings, "champion") == "2"
    assert gate.rollback(settings).to_version == "1"


def _hard_delete(settings: Settings, run_id: str) -> None:
    """Run ``run_id`` collected from the tracking store (as ``mlflow gc`` does)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(settings.resolved_tracking_uri, settings.artifact_location)
    store._hard_delete_run(run_id)
    with pytest.raises(mlflow.exceptions.MlflowException, match="not found"):
        registry.client(settings).get_run(run_id)


def test_a_rollback_checks_the_version_it_returns_to_past_one_that_cannot_be_served(
    two_stores: Settings,
) -> None:
    """Rollback passes over an earlier champion that cannot be loaded for the one before
    it, but the check read the first earlier champion's run: version 1's missing run
    went unseen, and the rollback to it was recorded apart from it."""
    settings = two_stores
    gate.promote(settings, config=GateConfig(), force=True, reason="wider")
    assert gate.champion_history(settings) == ["1", "2", "3"]
    with registry._model_dir(settings, "2") as (root, _):  # a disk error, a bad restore
        (artifact,) = root.rglob("scoring_model.joblib")
        artifact.write_bytes(b"not a model")
    first = registry.client(settings).get_model_version(settings.model_name, "1").run_id
    registry.client(settings).delete_run(first)
    _hard_delete(settings, first)
    runs_here = _runs(settings.resolved_tracking_uri)
    before = _registry_state(settings)

    code, said = _invoke(settings, settings.resolved_tracking_uri, ROLLBACK)
    assert code == 2, said
    assert (
        f"error: the MLflow registry {settings.resolved_registry_uri} has versions of model "
        f"'nextbest' (1) whose training runs the tracking store "
        f"{settings.resolved_tracking_uri} does not have (run {first}): "
    ) in said, said
    assert "the rollback would be recorded apart from them: nothing was rolled back" in said
    assert _registry_state(settings) == before
    assert _runs(settings.resolved_tracking_uri) == runs_here
    # Collected on purpose: rolled back to version 1, version 2 passed over.
    code, said = _invoke(settings, settings.resolved_tracking_uri, [*ROLLBACK, "--runs-deleted"])
    assert code == 0, said
    assert "version 2, an earlier champion, was passed over" in said, said
    assert registry.alias_version(settings, "champion") == "1"
