"""Where and when `evaluate` records the gate's verdict (an MLflow run of the
evaluation experiment, the challenger's ``gate`` tag): in the tracking store the
versions were trained in, as a promotion records its decision, and holding the
decision lock while it writes, against the champion it judged. Real SQLite stores: a
copy of a served store and its registry; the CLI in-process, threads for a decision
made beside it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow.entities import ViewType
from typer.testing import CliRunner

from nextbest import registry
from nextbest.cli import app
from nextbest.loop import gate
from nextbest.loop.gate import GateConfig, GateError
from nextbest.settings import Settings, get_settings

from .conftest import LoopWorld, ServedStore, do_nothing, register

pytestmark = pytest.mark.xdist_group("loop")

CONFIG = GateConfig(evaluation_share=0.3, min_decisions=1)


def _runs(tracking_uri: str) -> set[str]:
    """The ids of every run (deleted ones too) in the tracking store ``tracking_uri``."""
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    return {
        run.info.run_id
        for e in client.search_experiments(view_type=ViewType.ALL)
        for run in client.search_runs([e.experiment_id], run_view_type=ViewType.ALL)
    }


def _tags(settings: Settings, version: str) -> dict[str, str]:
    return dict(registry.client(settings).get_model_version(settings.model_name, version).tags)


def _gate_command(command: str, config: Path, env: dict[str, str]) -> tuple[Any, str]:
    """``nextbest COMMAND --config CONFIG`` run in process with ``env`` (settings read
    afresh before and after), and its output on one line."""
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, [command, "--config", str(config)], env=env)
    finally:
        get_settings.cache_clear()
    return result, " ".join(result.output.split())


def test_evaluate_records_nothing_in_a_tracking_store_without_the_versions_runs(
    loop_world: LoopWorld, honest_loop: ServedStore, tmp_path: Path
) -> None:
    """The registry in a store of its own, NEXTBEST_TRACKING_URI pointed at another
    project's: evaluate wrote its run there, apart from the versions' runs and the
    decisions, and tagged the challenger with a run the registry's store does not
    have; promote was refused there. Now evaluate is refused as promote is, first."""
    settings = Settings(
        models_dir=tmp_path / "models",
        tracking_uri=f"sqlite:///{tmp_path / 'tracking.db'}",
        registry_uri=f"sqlite:///{tmp_path / 'registry.db'}",
        database_url=honest_loop.settings.resolved_database_url,  # the served log, read
    )
    assert register(loop_world.honest, settings) == "1"  # the first champion
    challenger = register(do_nothing(loop_world.honest), settings, alias="challenger")
    other = Settings(models_dir=tmp_path / "other")
    register(loop_world.honest, other)
    elsewhere = other.resolved_tracking_uri
    runs_here, runs_there = _runs(settings.resolved_tracking_uri), _runs(elsewhere)
    tags = _tags(settings, challenger)
    (tmp_path / "gate.yaml").write_text("evaluation_share: 0.3\nmin_decisions: 1\n")

    def evaluate(tracking_uri: str) -> tuple[int, str]:
        env = {
            "NEXTBEST_MODELS_DIR": str(settings.resolved_models_dir),
            "NEXTBEST_TRACKING_URI": tracking_uri,
            "NEXTBEST_REGISTRY_URI": settings.resolved_registry_uri,
            "NEXTBEST_DATABASE_URL": settings.resolved_database_url,
        }
        result, said = _gate_command("evaluate", tmp_path / "gate.yaml", env)
        assert isinstance(result.exception, SystemExit | None), result.exception
        return result.exit_code, said

    code, said = evaluate(elsewhere)
    assert code == 2, said
    assert said.startswith(
        f"error: the MLflow registry {settings.resolved_registry_uri} has versions of "
        f"model 'nextbest' ({challenger}, 1) whose training runs the tracking store "
        f"{elsewhere} does not have (run "
    ), said
    assert (
        "the evaluation would be recorded apart from them: nothing was written. Set "
        "NEXTBEST_TRACKING_URI to the store they were trained in; if their runs were "
        "deleted from this one on purpose, run again with --runs-deleted to record the "
        "evaluation here"
    ) in said, said
    assert "gate config" not in said and "evaluating" not in said, said  # it did not run
    assert _runs(elsewhere) == runs_there
    assert _runs(settings.resolved_tracking_uri) == runs_here
    assert _tags(settings, challenger) == tags
    # In the store they were trained in: recorded there.
    code, said = evaluate(settings.resolved_tracking_uri)
    assert code == 0, said
    (recorded,) = _runs(settings.resolved_tracking_uri) - runs_here
    assert f"evaluation run: {recorded}" in said, said
    assert _tags(settings, challenger)["gate"].endswith(f"vs v1 (run {recorded})")


def _evaluation_runs(settings: Settings) -> list[str]:
    client = registry.client(settings)
    experiment = client.get_experiment_by_name(settings.experiment + "-evaluation")
    if experiment is None:
        return []
    return [r.info.run_id for r in client.search_runs([experiment.experiment_id])]


def test_evaluate_waits_for_a_decision_and_records_nothing_once_it_moved_the_champion(
    loop_world: LoopWorld, honest_copy: Settings
) -> None:
    """A promotion made while evaluate judged the challenger against the old champion:
    evaluate wrote, without the decision lock, a `keep` verdict against version 1 in
    the midst of the promotion's decision, and tagged the version just promoted
    `failed vs v1`. Now it waits for the decision to end, then finds the champion
    moved and records nothing."""
    settings = honest_copy
    champion = registry.alias_version(settings, "champion")
    challenger = register(do_nothing(loop_world.honest), settings, alias="challenger")
    other = register(do_nothing(loop_world.honest), settings)
    runs, tags = _evaluation_runs(settings), _tags(settings, challenger)
    waiting = threading.Event()

    class Waiting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "this evaluation waits for it to end" in record.getMessage():
                waiting.set()

    def promotion() -> None:
        with registry.deciding_alone(settings, "promotion"):
            assert waiting.wait(120)  # evaluate has judged, and waits to record
            gate.promote(settings, config=CONFIG, force=True, reason="r", version=other)

    handler = Waiting()
    logging.getLogger("nextbest.registry").addHandler(handler)
    promoting = threading.Thread(target=promotion)
    try:
        promoting.start()
        with pytest.raises(GateError) as refused:
            gate.evaluate(settings, config=CONFIG)
    finally:
        waiting.set()
        promoting.join(120)
        logging.getLogger("nextbest.registry").removeHandler(handler)
    assert str(refused.value) == (
        f"the champion of model 'nextbest' moved from version {champion} to version {other} "
        "while the gate judged the challenger against it (a promotion or rollback decided "
        "meanwhile): this verdict was not recorded; evaluate again"
    )
    assert registry.alias_version(settings, "champion") == other
    (promoted,) = set(_evaluation_runs(settings)) - set(runs)  # the promotion's own
    assert registry.client(settings).get_run(promoted).data.tags["decision"] == "promote"
    assert _tags(settings, challenger) == tags


def test_evaluate_refused_by_a_decision_lock_held_past_its_wait_writes_nothing(
    loop_world: LoopWorld,
    honest_copy: Settings,
    decision_elsewhere: Callable[..., AbstractContextManager[None]],
) -> None:
    settings = honest_copy.model_copy(update={"decision_wait_s": 0.0})
    challenger = register(do_nothing(loop_world.honest), settings, alias="challenger")
    runs, tags = _evaluation_runs(settings), _tags(settings, challenger)
    with decision_elsewhere(settings, "rollback"):
        with pytest.raises(GateError) as refused:
            gate.evaluate(settings, config=CONFIG)
        # Without its record, it writes nothing and needs no lock.
        assert gate.evaluate(settings, config=CONFIG, log=False).run_id is None
    said = str(refused.value)
    assert said.startswith("the rollback by process "), said
    assert said.endswith(
        "; this evaluation did not wait for it (NEXTBEST_DECISION_WAIT_S is 0) and decided "
        "nothing: run the command again once it has ended"
    ), said
    assert _evaluation_runs(settings) == runs
    assert _tags(settings, challenger) == tags


def test_evaluate_keeps_the_gate_config_it_read_and_logs_its_counts_whole(
    loop_world: LoopWorld, honest_copy: Settings, tmp_path: Path
) -> None:
    """The evaluation run had the gate's values but not its file (training runs keep
    theirs under config/), and logged min_differing_effective_n: 20 as 20.0."""
    settings = honest_copy
    register(do_nothing(loop_world.honest), settings, alias="challenger")
    path = tmp_path / "gate.yaml"
    text = "# the brand's gate\nestimator: DR\nmin_decisions: 1\nmin_differing_effective_n: 20\n"
    path.write_text(text)
    evaluation = gate.evaluate(settings, config=gate.load_gate_config(path))
    assert evaluation.run_id is not None
    client = registry.client(settings)
    params = client.get_run(evaluation.run_id).data.params
    assert params["gate.estimator"] == "dr"
    assert params["gate.min_differing_effective_n"] == "20"
    assert params["gate.min_effective_n"] == "100"
    assert params["gate.evaluation_share"] == "0.3"
    assert params["gate.file"] == str(path)
    kept = [a.path for a in client.list_artifacts(evaluation.run_id, "config")]
    assert kept == ["config/gate.yaml"]
    path.write_text("estimator: ips\n")  # edited after the run: the run keeps what it read
    copy = client.download_artifacts(evaluation.run_id, "config/gate.yaml", str(tmp_path))
    assert Path(copy).read_text() == text
    # The built-in defaults: no file to keep, and said so.
    evaluation = gate.evaluate(settings, config=GateConfig(min_decisions=1))
    assert evaluation.run_id is not None
    assert client.get_run(evaluation.run_id).data.params["gate.file"] == "built-in defaults"
    assert client.list_artifacts(evaluation.run_id, "config") == []


@pytest.mark.parametrize("command", ["evaluate", "promote"])
def test_evaluate_and_promote_read_each_alias_once_for_the_versions_they_judge(
    loop_world: LoopWorld,
    honest_copy: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
) -> None:
    """The command read the champion and challenger aliases to say what it judges,
    and the gate read them again to judge: with a remote registry, a round trip
    each, and an alias moved in between made it judge another version than it said.
    Counted on the real MLflow client of a real store: both are read once for the
    judging; evaluate reads the champion again under the decision lock (the verdict
    is recorded only against the champion it judged), promote the challenger first
    (none: a retried promotion may have promoted it already)."""
    settings = honest_copy
    challenger = register(do_nothing(loop_world.honest), settings, alias="challenger")
    (tmp_path / "gate.yaml").write_text("evaluation_share: 0.3\nmin_decisions: 1\n")
    read: list[str] = []
    by_alias = mlflow.MlflowClient.get_model_version_by_alias

    def counted(client: mlflow.MlflowClient, name: str, alias: str) -> Any:
        read.append(alias)
        return by_alias(client, name, alias)

    monkeypatch.setattr(mlflow.MlflowClient, "get_model_version_by_alias", counted)
    env = {
        "NEXTBEST_MODELS_DIR": str(settings.resolved_models_dir),
        "NEXTBEST_DATABASE_URL": settings.resolved_database_url,
    }
    result, said = _gate_command(command, tmp_path / "gate.yaml", env)
    assert isinstance(result.exception, SystemExit | None), result.exception
    assert result.exit_code in (0, 1), said  # judged, whichever the verdict
    assert f"challenger v{challenger}" in said, said
    judging = ["champion", "challenger"]
    if command == "evaluate":
        assert read == [*judging, "champion"], read
    else:
        assert read == ["challenger", *judging], read


def test_evaluate_below_min_decisions_shows_and_records_the_difference_not_decided_on(
    loop_world: LoopWorld, honest_copy: Settings, tmp_path: Path
) -> None:
    """Fewer reserved decisions than min_decisions: evaluate said so and kept the
    champion with no paired difference, and its run had no difference.* metrics, so
    nothing showed how far the evidence was from a decision. It prints the difference
    and its interval as not decided on, and the run logs them with a tag that says so."""
    settings = honest_copy
    register(do_nothing(loop_world.honest), settings, alias="challenger")
    (tmp_path / "gate.yaml").write_text("evaluation_share: 0.3\nmin_decisions: 1000000\n")
    env = {
        "NEXTBEST_MODELS_DIR": str(settings.resolved_models_dir),
        "NEXTBEST_DATABASE_URL": settings.resolved_database_url,
    }
    result, said = _gate_command("evaluate", tmp_path / "gate.yaml", env)
    assert result.exit_code == 0, said
    assert "the gate needs 1000000" in said, said
    assert "- not decided on, below min_decisions: challenger - champion = " in said, said
    assert "not passed" in said, said
    runs = _evaluation_runs(settings)
    run_id = said.split("evaluation run: ")[1].split()[0]
    assert run_id in runs, said
    run = registry.client(settings).get_run(run_id)
    metrics, tags = run.data.metrics, run.data.tags
    assert metrics["passed"] == 0
    low, value, high = (metrics[f"difference.{key}"] for key in ("ci_low", "value", "ci_high"))
    assert low < value < high
    assert f"challenger - champion = {value:+.4f} per decision" in said
    n = int(metrics["n_decisions"])
    assert tags["difference_not_decided_on"] == (
        f"below min_decisions: {n:,} decisions, the gate needs 1,000,000"
    )


@pytest.mark.parametrize("command", ["evaluate", "promote"])
def test_a_gate_stopped_while_it_judges_says_what_it_left(
    loop_world: LoopWorld,
    honest_copy: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
) -> None:
    """A scheduler's SIGTERM while the gate read the evidence: `evaluate` and `promote`
    exited 143 without a word, a job's log ending on `evaluating challenger vs
    champion ...`. They say they were stopped and what to look at; nothing is recorded
    and the champion stays."""
    import signal

    settings = honest_copy
    champion = registry.alias_version(settings, "champion")
    challenger = register(do_nothing(loop_world.honest), settings, alias="challenger")
    runs, tags = _evaluation_runs(settings), _tags(settings, challenger)
    (tmp_path / "gate.yaml").write_text("evaluation_share: 0.3\nmin_decisions: 1\n")

    def stopped(*args: Any, **kwargs: Any) -> Any:
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(gate, "load_decisions", stopped)
    env = {
        "NEXTBEST_MODELS_DIR": str(settings.resolved_models_dir),
        "NEXTBEST_DATABASE_URL": settings.resolved_database_url,
    }
    result, said = _gate_command(command, tmp_path / "gate.yaml", env)
    assert result.exit_code == 143, said
    assert f"error: {command} was stopped (SIGTERM) before it said what it decided: " in said
    left = (
        "it moves no alias, so the champion and the challenger are as they were"
        if command == "evaluate"
        else "`nextbest models --history` says whether the champion moved; run it again if "
        "it did not"
    )
    assert left in said, said
    assert registry.alias_version(settings, "champion") == champion
    assert _evaluation_runs(settings) == runs
    assert _tags(settings, challenger) == tags
