"""Train, promote and rollback record their decision before the champion alias moves,
and a rollback passes over earlier champions that can no longer be served: real
SQLite MLflow stores, a move refused by the store itself."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nextbest import registry
from nextbest.cli import app
from nextbest.learning.train import TrainResult
from nextbest.loop import gate
from nextbest.loop.gate import GateConfig, GateError
from nextbest.loop.lineage import champion_changes
from nextbest.settings import Settings, get_settings

runner = CliRunner()


def _register(settings: Settings, trained, *, alias: str | None = None) -> str:
    """The session's model registered again in ``settings``' store (no training)."""
    model = registry.load_version(trained.settings, trained.version)
    result = TrainResult(model=model, metrics={}, params={"variant": "moves"})
    return registry.log_training_run(result, settings, alias=alias).version


def _force(settings: Settings, reason: str = "pilot") -> gate.Evaluation:
    """Promote the challenger without evidence (no outcome is logged in these stores)."""
    return gate.promote(settings, config=GateConfig(), force=True, reason=reason)


@contextmanager
def _champion_alias_refused(settings: Settings, alias: str = "champion") -> Iterator[None]:
    """The store refuses to set or move ``alias`` (as a locked or failing store
    would), and takes every other write."""
    store = registry._store_file(settings)
    assert store is not None
    with closing(sqlite3.connect(store)) as db:
        for op in ("INSERT", "UPDATE"):
            db.execute(
                f"CREATE TRIGGER refuse_champion_{op.lower()} BEFORE {op} ON "
                f"registered_model_aliases WHEN NEW.alias = '{alias}' "
                f"BEGIN SELECT RAISE(ABORT, '{alias} alias refused'); END"
            )
        db.commit()
    try:
        yield
    finally:
        with closing(sqlite3.connect(store)) as db:
            for op in ("insert", "update"):
                db.execute(f"DROP TRIGGER refuse_champion_{op}")
            db.commit()


def _decision_runs(settings: Settings, decision: str) -> list:
    client = registry.client(settings)
    experiment = client.get_experiment_by_name(settings.experiment + registry.DECISIONS_SUFFIX)
    runs = client.search_runs([experiment.experiment_id], f"tags.decision = '{decision}'")
    return sorted(runs, key=lambda r: r.info.start_time)


def test_a_promotion_the_store_refuses_is_recorded_as_failed_and_moves_nothing(
    own_copy: Settings, trained
) -> None:
    settings = own_copy
    challenger = _register(settings, trained, alias="challenger")
    with (
        _champion_alias_refused(settings),
        pytest.raises(GateError) as refused,
    ):
        _force(settings)
    said = str(refused.value)
    (run,) = _decision_runs(settings, "promote")
    assert f"promotion of version {challenger} was recorded (MLflow run {run.info.run_id})" in said
    assert "refused to move the alias" in said and "champion alias refused" in said
    assert "the run is marked failed" in said and "champion stays version 1" in said
    assert (run.info.status, run.data.tags[registry.ALIAS_MOVED_TAG]) == ("FAILED", "false")
    assert registry.alias_version(settings, "champion") == "1"
    assert registry.alias_version(settings, "challenger") == challenger
    # Nothing a rollback reads says version 2 was champion (it used to be listed, and a
    # rollback then "returned" to it).
    assert gate.champion_history(settings) == ["1"]
    assert [(c.version, c.decision) for c in champion_changes(settings)] == [("1", "train")]

    # The store takes writes again: the same command promotes, recorded once more.
    assert _force(settings).promoted
    assert registry.alias_version(settings, "champion") == challenger
    assert [(c.version, c.decision) for c in champion_changes(settings)] == [
        ("1", "train"),
        (challenger, "forced promote"),
    ]


def test_a_promotion_refused_after_the_champion_moved_says_it_is_made(
    own_copy: Settings, trained
) -> None:
    """The store took the champion's move and refused what follows: the error said
    the champion stayed version 1, and the run was left out of the timeline, while
    version 2 was served."""
    settings = own_copy
    challenger = _register(settings, trained, alias="challenger")
    with (
        _champion_alias_refused(settings, "previous_champion"),
        pytest.raises(GateError) as refused,
    ):
        _force(settings)
    said = str(refused.value)
    (run,) = _decision_runs(settings, "promote")
    assert said.startswith(
        f"the promotion of version {challenger} is made and recorded (MLflow run "
        f"{run.info.run_id}): the champion is version {challenger}; but the registry "
    ), said
    assert "previous_champion alias refused" in said and "champion stays" not in said
    assert run.data.tags[registry.ALIAS_MOVED_TAG] == "true"
    assert registry.alias_version(settings, "champion") == challenger
    assert [(c.version, c.decision) for c in champion_changes(settings)] == [
        ("1", "train"),
        (challenger, "forced promote"),
    ]


def test_a_rollback_the_store_refuses_leaves_champion_and_history(
    own_copy: Settings, trained
) -> None:
    settings = own_copy
    _register(settings, trained, alias="challenger")
    _force(settings)
    with _champion_alias_refused(settings):
        result = runner.invoke(app, ["rollback", "--reason", "complaints"], env=_env(settings))
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "rollback to version 1 was recorded" in said, said
    assert "champion stays version 2" in said, said
    assert registry.alias_version(settings, "champion") == "2"
    assert gate.champion_history(settings) == ["1", "2"]
    (run,) = _decision_runs(settings, "rollback")
    assert run.info.status == "FAILED"
    assert [c.decision for c in champion_changes(settings)] == ["train", "forced promote"]
    assert gate.rollback(settings).to_version == "1"
    assert [c.decision for c in champion_changes(settings)][-1] == "rollback"


def test_a_first_champion_the_store_refuses_stays_registered_without_it(
    trained, tmp_path: Path
) -> None:
    settings = Settings(models_dir=tmp_path / "models", seed=11)
    _register(settings, trained, alias="challenger")  # makes the store and its tables
    registry.client(settings).delete_registered_model_alias(settings.model_name, "challenger")
    with (
        _champion_alias_refused(settings),
        pytest.raises(registry.AliasNotMovedError, match="training of version 2 as champion"),
    ):
        _register(settings, trained)
    assert registry.alias_version(settings, "champion") is None
    (run,) = _decision_runs(settings, "train")
    assert run.info.status == "FAILED" and run.data.params["to_version"] == "2"
    assert champion_changes(settings) == []
    # Once the store takes the move, --repair makes the first champion.
    code, shown = _models(settings, "--repair")
    assert code == 0 and "is champion now (was no version)" in shown, shown
    assert registry.alias_version(settings, "champion") == "2"


def _env(settings: Settings) -> dict[str, str]:
    get_settings.cache_clear()
    return {"NEXTBEST_MODELS_DIR": str(settings.resolved_models_dir)}


def _break_deleted(settings: Settings, version: str) -> str:
    registry.client(settings).delete_model_version(settings.model_name, version)
    return "deleted from the registry"


def _break_artifacts(settings: Settings, version: str) -> str:
    with registry._model_dir(settings, version) as (root, _):
        shutil.rmtree(root)
    return f"version {version}: its artifacts at"


@pytest.mark.parametrize("breaks", [_break_deleted, _break_artifacts])
def test_rollback_passes_over_a_previous_champion_that_cannot_be_served(
    own_copy: Settings, trained, breaks
) -> None:
    settings = own_copy
    for _ in range(2):
        _register(settings, trained, alias="challenger")
        _force(settings)
    assert gate.champion_history(settings) == ["1", "2", "3"]
    why = breaks(settings, "2")

    result = runner.invoke(app, ["rollback"], env=_env(settings))
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "version 2, an earlier champion, was passed over" in said and why in said, said
    assert "champion is version 1 again (was 3)" in said, said
    assert registry.alias_version(settings, "champion") == "1"
    assert gate.champion_history(settings) == ["1"]
    (run,) = _decision_runs(settings, "rollback")
    assert run.data.params["to_version"] == "1" and why in run.data.tags["skipped"]


def test_rollback_with_no_previous_champion_that_loads_moves_nothing(
    own_copy: Settings, trained
) -> None:
    settings = own_copy
    _register(settings, trained, alias="challenger")
    _force(settings)
    _break_deleted(settings, "1")
    with pytest.raises(GateError, match=r"no previous champion that can be served: version 1: "):
        gate.rollback(settings)
    assert registry.alias_version(settings, "champion") == "2"
    assert gate.champion_history(settings) == ["1", "2"]
    assert _decision_runs(settings, "rollback") == []


def _register_narrow(settings: Settings, trained, *, left_out: int) -> str:
    """The session's model without its last ``left_out`` HCPs (a retrain on a partial
    hcps export), registered as challenger."""
    model = registry.load_version(trained.settings, trained.version)
    narrow = dataclasses.replace(
        model,
        hcps=model.hcps.iloc[:-left_out].reset_index(drop=True),
        hcp_attrs=model.hcp_attrs[:-left_out],
        hcp_history=model.hcp_history[:-left_out],
    )
    result = TrainResult(model=narrow, metrics={}, params={"variant": "narrow"})
    return registry.log_training_run(result, settings, alias="challenger").version


def test_promote_and_rollback_name_hcps_the_new_champion_does_not_know(
    own_copy: Settings, trained
) -> None:
    """HCPs the champion serves that its replacement lacks get a 404 once it is
    served: said by promote (the gate values their decisions as no action) and by
    rollback (HCPs added since the older version was trained). HCPs only the
    replacement knows, 404 until it is served, are said by promote too."""
    settings = own_copy
    known = registry.load_version(settings, "1").hcp_index
    narrow = _register_narrow(settings, trained, left_out=40)
    evaluation = _force(settings)
    (said,) = [r for r in evaluation.decision.reasons if "does not know" in r]
    assert said.startswith(
        f"the challenger, version {narrow}, does not know 40 of the {len(known):,} HCPs the "
        f"champion, version 1, knows ({', '.join(known[-40:-35])} and 35 more)"
    ), said
    assert "the API answers 404 (unknown hcp_id) for them" in said
    decision = registry.client(settings).download_artifacts(evaluation.run_id, "decision.json")
    assert said in Path(decision).read_text()

    # The full version after the narrow one: the 40 are new to the champion, which
    # answers them 404, and none of the evidence is theirs.
    _register(settings, trained, alias="challenger")
    reasons = _force(settings).decision.reasons
    assert not any("does not know" in r for r in reasons)
    (said,) = [r for r in reasons if "lacks" in r]
    assert said.startswith(
        f"the challenger, version 3, knows 40 HCPs the champion, version {narrow}, lacks "
        f"({', '.join(known[-40:-35])} and 35 more): added to the hcps since the champion "
        "was trained, they get 404 (unknown hcp_id) from the API until a version that "
        "knows them is served, or the challenger answers them beside the champion"
    ), said
    assert said.endswith("no evaluated decision is theirs, so the evidence says nothing of them")
    result = runner.invoke(app, ["rollback"], env=_env(settings))
    assert result.exit_code == 0, result.output
    shown = " ".join(result.output.split())
    assert (
        f"note: version {narrow} does not know 40 of the {len(known):,} HCPs version 3 knows"
        in (shown)
    ), shown
    assert "until a version that knows them is promoted" in shown, shown


def test_promote_version_promotes_a_registered_version_again(own_copy: Settings, trained) -> None:
    """A version rolled back (or any earlier one) is promoted again by name, through the
    same gate and its --force, without setting the challenger alias by hand."""
    settings = own_copy
    _register(settings, trained, alias="challenger")
    _force(settings)
    assert registry.alias_version(settings, "champion") == "2"
    challenger = _register(settings, trained, alias="challenger")

    # The champion is the newest version promoted: still not "nothing to promote".
    result = runner.invoke(
        app,
        ["promote", "--version", "1", "--force", "--reason", "v2 misbehaves"],
        env=_env(settings),
    )
    assert result.exit_code == 0, result.output
    assert "promoted version 1 to champion (previous champion: 2)" in result.output
    assert registry.alias_version(settings, "champion") == "1"
    assert registry.alias_version(settings, "previous_champion") == "2"
    assert registry.alias_version(settings, "challenger") == challenger  # left alone

    # The same gate: without evidence and without --force, nothing moves.
    result = runner.invoke(app, ["promote", "--version", "2"], env=_env(settings))
    assert result.exit_code == 2, result.output
    assert "no logged decisions have an outcome yet" in " ".join(result.output.split())
    assert registry.alias_version(settings, "champion") == "1"

    assert gate.promote(
        settings, config=GateConfig(), force=True, reason="fixed", version="2"
    ).promoted
    assert registry.alias_version(settings, "champion") == "2"
    assert gate.champion_history(settings) == ["1", "2", "1", "2"]
    assert [(c.version, c.decision) for c in champion_changes(settings)] == [
        ("1", "train"),
        ("2", "forced promote"),
        ("1", "forced promote"),
        ("2", "forced promote"),
    ]


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (["evaluate", "--version", "9"], "model 'nextbest' has no version 9 in sqlite:///"),
        (["promote", "--version", "9", "--force", "--reason", "x"], "has no version 9 in"),
        (["promote", "--version", "1"], "version 1 of model 'nextbest' is the champion already"),
        (["evaluate", "--version", "0"], "greater than or equal to 1"),
    ],
)
def test_promote_version_refuses_what_it_cannot_promote(
    own_copy: Settings, command: list[str], said: str
) -> None:
    result = runner.invoke(app, command, env=_env(own_copy))
    assert result.exit_code == 2, result.output
    assert said in " ".join(result.output.split()), result.output
    assert registry.alias_version(own_copy, "champion") == "1"


@pytest.mark.parametrize("command", ["evaluate", "models"])
def test_a_command_on_a_damaged_registry_says_one_line_without_mlflows_traceback(
    own_copy: Settings, command: str
) -> None:
    """MLflow logs a failed read of its store at ERROR with a traceback and the SQL
    statement, beside the command's own one line: a real process, a damaged store."""
    import subprocess
    import sys

    store = registry._store_file(own_copy)
    assert store is not None
    with closing(sqlite3.connect(store)) as db:
        db.execute("ALTER TABLE registered_model_aliases RENAME COLUMN alias TO damaged")
        db.commit()
    run = subprocess.run(
        [sys.executable, "-m", "nextbest", command],
        env={**_process_env(), "NEXTBEST_MODELS_DIR": str(own_copy.resolved_models_dir)},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert run.returncode == 2, run.stderr[-3000:]
    said = " ".join((run.stdout + run.stderr).split())
    assert f"error: the MLflow registry sqlite:///{store} cannot be read" in said, said
    assert "OperationalError: no such column" in said, said
    for noise in ("SQLAlchemy database error", "Traceback", "[SQL: "):
        assert noise not in run.stderr, run.stderr[-3000:]


def _process_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("NEXTBEST_")}


# Runs `nextbest ARGS...` with the first write of alias ALIAS held for two minutes
# before the store takes it (WHEN "before") or after ("after", the call not returned
# yet), saying so in MARKER: a promotion or rollback caught half-way by a signal.
_HELD_AT_ALIAS = """
import os, sys, time
from pathlib import Path

from mlflow.tracking.client import MlflowClient

alias_held, when, marker = sys.argv[1], sys.argv[2], Path(sys.argv[3])
original = MlflowClient.set_registered_model_alias


def held(self, name, alias, version):
    hold = alias == alias_held and not marker.exists()
    if hold and when == "after":
        original(self, name, alias, version)
    if hold:
        # Whole or not at all: a reader polling for the file saw it empty, its
        # pid not yet written, and a SIGKILL sent then left it so.
        marker.with_name(marker.name + '.part').write_text(str(os.getpid()))
        os.replace(marker.with_name(marker.name + '.part'), marker)
        time.sleep(120)
    return original(self, name, alias, version)


MlflowClient.set_registered_model_alias = held
sys.argv = ["nextbest", *sys.argv[4:]]
from nextbest.cli import main

main()
"""


def _interrupted(
    settings: Settings, tmp_path: Path, alias: str, sig: int, *args: str, when: str = "before"
):
    """``nextbest *args`` in its own process, sent ``sig`` while its write of ``alias``
    is held (``when``: before or after the store took it); the finished process."""
    return _signalled_once_held(
        settings, tmp_path, sig, _HELD_AT_ALIAS, alias, when, str(tmp_path / "held"), *args
    )


def _signalled_once_held(
    settings: Settings, tmp_path: Path, sig: int, script: str, *argv: str
) -> tuple[int, str]:
    """``python -c script *argv`` (a nextbest command held at a write, which creates
    ``tmp_path / "held"`` when it is) in its own process, sent ``sig`` once held; its
    exit code and its output, whitespace folded."""
    import signal

    assert sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
    with _held(settings, tmp_path, script, *argv) as process:
        process.send_signal(sig)
        out, err = process.communicate(timeout=60)
    return process.returncode, " ".join((out + err).split())


@contextmanager
def _held(settings: Settings, tmp_path: Path, script: str, *argv: str) -> Iterator:
    """``python -c script *argv`` in its own process (a nextbest command held at a
    write, which creates ``tmp_path / "held"`` when it is), yielded once held; killed
    on exit if it still runs."""
    import signal
    import subprocess
    import sys
    import time

    marker = tmp_path / "held"
    process = subprocess.Popen(
        [sys.executable, "-c", script, *argv],
        env={**_process_env(), "NEXTBEST_MODELS_DIR": str(settings.resolved_models_dir)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
        # Ctrl-C as at a terminal: a suite started in the background (`make test &`)
        # ignores SIGINT, and so would every command it starts, never interrupted.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        # A retrain fits its models before it sets its alias: minutes on a loaded machine.
        deadline = time.monotonic() + 240
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), process.communicate(timeout=5)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=60)


def test_a_promotion_interrupted_before_the_champion_moved_ends_killed_and_moves_nothing(
    own_copy: Settings, trained, tmp_path: Path
) -> None:
    """A scheduler's SIGTERM while the promotion moves the alias left its run RUNNING
    for good, read as a promotion by `nextbest models --history`."""
    import signal

    settings = own_copy
    challenger = _register(settings, trained, alias="challenger")
    code, said = _interrupted(
        settings, tmp_path, "champion", signal.SIGTERM, "promote", "--force", "--reason", "x"
    )
    assert code == 128 + signal.SIGTERM, said
    (run,) = _decision_runs(settings, "promote")
    assert run.info.status == "KILLED", said
    assert run.data.tags[registry.ALIAS_MOVED_TAG] == "false"
    assert (
        f"error: the promotion of version {challenger} was interrupted (SIGTERM) after it "
        f"was recorded (MLflow run {run.info.run_id}) and before the champion moved: the run "
        "is marked killed (alias_moved = false) and left out of `nextbest models --history`;"
        " the champion stays version 1"
    ) in said, said
    assert registry.alias_version(settings, "champion") == "1"
    assert registry.alias_version(settings, "challenger") == challenger
    assert gate.champion_history(settings) == ["1"]
    assert registry.PENDING_TAG not in _registered_model_tags(settings)
    assert [(c.version, c.decision) for c in champion_changes(settings)] == [("1", "train")]
    # Run again, the promotion is made and recorded once.
    assert _force(settings).promoted
    assert [(c.version, c.decision) for c in champion_changes(settings)] == [
        ("1", "train"),
        (challenger, "forced promote"),
    ]


def test_a_promotion_interrupted_after_the_champion_moved_is_finished_and_recorded(
    own_copy: Settings, trained, tmp_path: Path
) -> None:
    """Ctrl-C once the champion alias has moved: the promotion is made (servers may
    have loaded it already), so what it leaves is written and its run says so."""
    import signal

    settings = own_copy
    challenger = _register(settings, trained, alias="challenger")
    code, said = _interrupted(
        settings,
        tmp_path,
        "previous_champion",
        signal.SIGINT,
        "promote",
        "--force",
        "--reason",
        "x",
    )
    assert code == 130, said
    (run,) = _decision_runs(settings, "promote")
    assert run.info.status == "KILLED", said
    assert run.data.tags[registry.ALIAS_MOVED_TAG] == "true"
    assert (
        f"error: the promotion of version {challenger} was interrupted (Ctrl-C) after the "
        f"champion moved: it is made, and recorded (MLflow run {run.info.run_id}, marked "
        f"killed, alias_moved = true); the champion is version {challenger}"
    ) in said, said
    assert registry.alias_version(settings, "champion") == challenger
    assert registry.alias_version(settings, "previous_champion") == "1"
    assert registry.alias_version(settings, "challenger") is None
    version = registry.client(settings).get_model_version(settings.model_name, challenger)
    assert version.tags["promotion"] == "forced" and "promoted_at" in version.tags
    assert gate.champion_history(settings) == ["1", challenger]
    assert registry.PENDING_TAG not in _registered_model_tags(settings)
    assert [(c.version, c.decision, c.interrupted) for c in champion_changes(settings)] == [
        ("1", "train", None),
        (challenger, "forced promote", "Ctrl-C"),
    ]
    shown = _history(settings)
    assert (
        f"interrupted after the champion moved: forced promote of version {challenger} "
        f"(MLflow run {run.info.run_id}, Ctrl-C): made"
    ) in shown, shown


def test_a_rollback_interrupted_before_the_champion_moved_leaves_champion_and_history(
    own_copy: Settings, trained, tmp_path: Path
) -> None:
    import signal

    settings = own_copy
    _register(settings, trained, alias="challenger")
    _force(settings)
    code, said = _interrupted(settings, tmp_path, "champion", signal.SIGTERM, "rollback")
    assert code == 128 + signal.SIGTERM, said
    (run,) = _decision_runs(settings, "rollback")
    assert (run.info.status, run.data.tags[registry.ALIAS_MOVED_TAG]) == ("KILLED", "false")
    assert "the champion stays version 2" in said, said
    assert registry.alias_version(settings, "champion") == "2"
    assert gate.champion_history(settings) == ["1", "2"]
    assert [c.decision for c in champion_changes(settings)] == ["train", "forced promote"]


def test_a_rollback_interrupted_just_after_the_store_took_the_move_keeps_its_history(
    own_copy: Settings, trained, tmp_path: Path
) -> None:
    """A signal just after the store took the champion's move, before the call
    returned: the list rollback walks back was put back as if the champion had not
    moved, so it named version 2 last while version 1 was champion."""
    import signal

    settings = own_copy
    _register(settings, trained, alias="challenger")
    _force(settings)
    code, said = _interrupted(
        settings, tmp_path, "champion", signal.SIGTERM, "rollback", when="after"
    )
    assert code == 128 + signal.SIGTERM, said
    (run,) = _decision_runs(settings, "rollback")
    assert (run.info.status, run.data.tags[registry.ALIAS_MOVED_TAG]) == ("KILLED", "true")
    assert "the rollback to version 1 was interrupted (SIGTERM) after the champion moved" in (
        said
    ), said
    assert registry.alias_version(settings, "champion") == "1"
    assert registry.alias_version(settings, "previous_champion") is None
    assert gate.champion_history(settings) == ["1"]
    assert [c.decision for c in champion_changes(settings)] == [
        "train",
        "forced promote",
        "rollback",
    ]


def _killed(settings: Settings, tmp_path: Path, alias: str, *args: str, when: str = "before"):
    """``nextbest *args`` killed outright (SIGKILL: nothing of it runs after) while its
    write of ``alias`` is held: its decision run is left RUNNING."""
    import signal

    code, said = _interrupted(settings, tmp_path, alias, signal.SIGKILL, *args, when=when)
    assert code == -signal.SIGKILL, said
    return said


def _history(settings: Settings) -> str:
    result = runner.invoke(app, ["models", "--history"], env=_env(settings), terminal_width=240)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_a_promotion_killed_before_the_champion_moved_is_not_in_the_timeline(
    own_copy: Settings, trained, tmp_path: Path
) -> None:
    """SIGKILL (or a power cut) before the champion moved leaves the run RUNNING: the
    timeline read it as made, so `--history` and `--champion-at` named version 2 the
    champion while version 1 was served."""
    settings = own_copy
    challenger = _register(settings, trained, alias="challenger")
    _killed(settings, tmp_path, "champion", "promote", "--force", "--reason", "x")
    (run,) = _decision_runs(settings, "promote")
    assert run.info.status == "RUNNING"
    assert registry.alias_version(settings, "champion") == "1"
    assert [(c.version, c.decision) for c in champion_changes(settings)] == [("1", "train")]
    shown = _history(settings)
    assert (
        f"interrupted before the champion moved, not made: forced promote of version "
        f"{challenger} (replacing 1; MLflow run {run.info.run_id}, started "
    ) in shown, shown
    assert "its run never ended and the champion is not version" in shown, shown
    listed = json.loads(runner.invoke(app, ["models", "--json"], env=_env(settings)).output)
    assert [c["version"] for c in listed["champion_changes"]] == ["1"]
    (said,) = listed["decisions_interrupted"]
    assert (said["version"], said["run_id"], said["run_status"]) == (
        challenger,
        run.info.run_id,
        "RUNNING",
    )
    # Nothing is marked by reading: the run is judged again at each read.
    assert registry.client(settings).get_run(run.info.run_id).info.status == "RUNNING"

    # Promoted once the process is gone, the same version: the killed run stays out.
    assert _force(settings).promoted
    changes = champion_changes(settings)
    assert [(c.version, c.decision, c.interrupted) for c in changes] == [
        ("1", "train", None),
        (challenger, "forced promote", None),
    ]
    assert changes[1].run_id != run.info.run_id


def test_a_promotion_killed_after_the_champion_moved_is_made_and_flagged(
    own_copy: Settings, trained, tmp_path: Path
) -> None:
    """SIGKILL once the champion moved: the decision is made (servers load it), and
    the timeline says its run never ended."""
    settings = own_copy
    challenger = _register(settings, trained, alias="challenger")
    _killed(settings, tmp_path, "previous_champion", "promote", "--force", "--reason", "x")
    (killed,) = _decision_runs(settings, "promote")
    assert killed.info.status == "RUNNING"
    assert registry.alias_version(settings, "champion") == challenger
    changes = champion_changes(settings)
    assert [(c.version, c.decision, c.interrupted) for c in changes] == [
        ("1", "train", None),
        (challenger, "forced promote", "run not ended"),
    ]
    shown = _history(settings)
    # The line under the table (a table's cell may wrap where the output is narrow).
    assert (
        f"interrupted after the champion moved: forced promote of version {challenger} "
        f"(MLflow run {killed.info.run_id}): its run never ended"
    ) in shown, shown
    assert "interrupted before the champion moved" not in shown, shown

    # A later rollback: the killed promotion is still judged made, by the champion
    # the rollback replaced.
    assert gate.rollback(settings).to_version == "1"
    assert [(c.version, c.decision, c.interrupted) for c in champion_changes(settings)] == [
        ("1", "train", None),
        (challenger, "forced promote", "run not ended"),
        ("1", "rollback", None),
    ]


def test_a_rollback_killed_before_the_champion_moved_is_not_in_the_timeline(
    own_copy: Settings, trained, tmp_path: Path
) -> None:
    settings = own_copy
    _register(settings, trained, alias="challenger")
    _force(settings)
    _killed(settings, tmp_path, "champion", "rollback", "--reason", "complaints")
    (run,) = _decision_runs(settings, "rollback")
    assert run.info.status == "RUNNING"
    assert registry.alias_version(settings, "champion") == "2"
    assert [c.decision for c in champion_changes(settings)] == ["train", "forced promote"]
    # A second after the killed run began, or now if that is still to come (a time to
    # come is answered "as of now", not "was").
    started = datetime.fromtimestamp(run.info.start_time / 1000, UTC)
    when = min(started + timedelta(seconds=1), datetime.now(UTC))
    result = runner.invoke(app, ["models", "--champion-at", when.isoformat()], env=_env(settings))
    assert "the champion was version 2: forced promote" in result.output, result.output
    assert "interrupted before the champion moved, not made: rollback of version 1" in (
        _history(settings)
    )
    # Run again, the rollback is made: the killed run does not stand for it.
    assert gate.rollback(settings).to_version == "1"
    changes = champion_changes(settings)
    assert [c.decision for c in changes] == ["train", "forced promote", "rollback"]
    assert changes[-1].run_id != run.info.run_id


def test_a_first_champion_training_killed_before_the_move_names_no_champion(
    trained, tmp_path: Path
) -> None:
    """`nextbest train` killed while it sets the first champion: the version is
    registered without it, and the timeline used to name it champion since then."""
    settings = Settings(models_dir=tmp_path / "models", seed=11)
    fast = Path(__file__).parents[1] / "cli" / "fast_train.yaml"
    data = str(trained.data_dir)
    _killed(settings, tmp_path, "champion", "train", "--data", data, "--config", str(fast))
    (run,) = _decision_runs(settings, "train")
    assert (run.info.status, run.data.params["to_version"]) == ("RUNNING", "1")
    assert registry.alias_version(settings, "champion") is None
    assert champion_changes(settings) == []
    shown = _history(settings)
    assert "no champion yet" in shown, shown
    assert "interrupted before the champion moved, not made: train of version 1 (replacing " in (
        shown
    ), shown
    code, shown = _models(settings, "--champion-at", "2026-11-30T12:00")
    assert (code, shown) == (
        0,
        "at 2026-11-30T12:00:00+00:00 no version was champion: none has been yet "
        "(`nextbest train --data DIR` sets the first)",
    )
    code, shown = _models(settings, "--champion-at", "2026-11-30T12:00", "--json")
    assert code == 0 and json.loads(shown) == {
        "at": "2026-11-30T12:00:00+00:00",
        "champion": None,
        "first_champion": None,
    }, shown

    # What it was to do is known: version 1 is the first champion, which --repair makes.
    code, shown = _models(settings)
    assert code == 0, shown
    assert (
        "v1 trained " in shown
        and "registered in full as the first champion, but no version is champion (its "
        "training stopped before it set the alias): `nextbest models --repair` makes it "
        "champion"
        in shown
    ), shown
    assert json.loads(_models(settings, "--json")[1])["versions"][0]["alias_unset"] == "champion"
    code, shown = _models(settings, "--repair")
    assert code == 0, shown
    assert (
        "taken off: the mark (decision_pending) of the training of version 1 as champion" in shown
    ), shown
    assert (
        "finished: version 1, registered in full as the first champion by a training stopped "
        "before it set the alias, is champion now (was no version)"
    ) in shown, shown
    assert registry.alias_version(settings, "champion") == "1"
    (made,) = champion_changes(settings)
    assert (made.version, made.decision, made.previous) == ("1", "train", None)
    assert made.run_id != run.info.run_id and "--repair" in (made.reason or ""), made
    assert "nothing to repair" in _models(settings, "--repair")[1]


def _models(settings: Settings, *args: str, **env: str) -> tuple[int, str]:
    result = runner.invoke(
        app, ["models", *args], env={**_env(settings), **env}, terminal_width=240
    )
    return result.exit_code, " ".join(result.output.split())


def _registered_model_tags(settings: Settings) -> dict[str, str]:
    return dict(registry.client(settings).get_registered_model(settings.model_name).tags)


def test_a_promotion_killed_after_the_champion_moved_is_said_unfinished_and_finished_by_a_rerun(
    own_copy: Settings, trained, tmp_path: Path
) -> None:
    """SIGKILL between the champion's move and previous_champion: the new champion kept
    alias challenger, so a retried `nextbest promote` stopped with "the 'challenger'
    alias names the champion itself" (exit 2), and `nextbest models` did not say that
    anything was unfinished."""
    settings = own_copy
    challenger = _register(settings, trained, alias="challenger")
    _killed(settings, tmp_path, "previous_champion", "promote", "--force", "--reason", "x")
    (killed,) = _decision_runs(settings, "promote")
    assert registry.alias_version(settings, "champion") == challenger
    assert registry.alias_version(settings, "challenger") == challenger

    code, shown = _models(settings)
    assert code == 0, shown
    assert (
        f"unfinished: the promotion of version {challenger} (replacing 1; MLflow run "
        f"{killed.info.run_id}, recorded "
    ) in shown, shown
    pid = (tmp_path / "held").read_text()
    assert (
        f"moved the champion and stopped before it finished (its process {pid} on host "
        f"{socket.gethostname()} has ended): alias previous_champion names no version, not "
        "version 1; alias challenger still names "
        f"the champion, version {challenger}; version {challenger} lacks its tags "
        "gate, promoted_at, promotion. `nextbest models --repair` finishes it"
    ) in shown, shown
    code, out = _models(settings, "--json")
    unfinished = json.loads(out)["decision_unfinished"]
    assert (unfinished["kind"], unfinished["champion"], unfinished["run_id"]) == (
        "promotion",
        challenger,
        killed.info.run_id,
    )
    assert len(unfinished["unwritten"]) == 3

    # The retried job: the promotion is finished, and there is nothing more to promote.
    result = runner.invoke(
        app, ["promote", "--force", "--reason", "x"], env=_env(settings), terminal_width=240
    )
    said = " ".join(result.output.split())
    assert result.exit_code == 0, said
    assert (
        f"finished: the promotion of version {challenger} (replacing 1; MLflow run "
        f"{killed.info.run_id}) had moved the champion and stopped before it finished: "
        "alias previous_champion names no version, not version 1;"
    ) in said, said
    assert f"nothing to promote: version {challenger}, the newest, is champion already" in said
    # When, as `nextbest models` says it: not the tag's raw ISO time with microseconds.
    assert re.search(r"already \(promoted \d{4}-\d\d-\d\d \d\d:\d\d UTC\)", said), said
    assert registry.alias_version(settings, "previous_champion") == "1"
    assert registry.alias_version(settings, "challenger") is None
    assert gate.champion_history(settings) == ["1", challenger]
    tags = registry.client(settings).get_model_version(settings.model_name, challenger).tags
    assert tags["promotion"] == "forced" and "promoted_at" in tags
    # The gate's verdict, written after the run ended, was lost with the process.
    assert tags["gate"] == f"failed vs v1 (run {killed.info.run_id})"
    assert registry.PENDING_TAG not in _registered_model_tags(settings)
    assert "unfinished" not in _models(settings)[1]
    # Finished, not made again: one promotion in the timeline.
    assert [(c.version, c.decision) for c in champion_changes(settings)] == [
        ("1", "train"),
        (challenger, "forced promote"),
    ]


def test_a_rollback_killed_after_the_champion_moved_is_finished_by_a_rerun_not_made_twice(
    own_copy: Settings, trained, tmp_path: Path
) -> None:
    """SIGKILL between a rollback's move (3 -> 2) and previous_champion: previous_champion
    named the champion itself, and a retried `nextbest rollback` went on to version 1."""
    settings = own_copy
    for _ in range(2):
        _register(settings, trained, alias="challenger")
        _force(settings)
    assert registry.alias_version(settings, "champion") == "3"
    _killed(settings, tmp_path, "previous_champion", "rollback", "--reason", "complaints")
    (killed,) = _decision_runs(settings, "rollback")
    assert registry.alias_version(settings, "champion") == "2"
    assert registry.alias_version(settings, "previous_champion") == "2"

    code, shown = _models(settings)
    assert code == 0, shown
    assert (
        f"unfinished: the rollback to version 2 (replacing 3; MLflow run {killed.info.run_id}"
    ) in shown, shown
    assert (
        "alias previous_champion names version 2, not version 1; version 3 lacks its tag "
        "rolled_back_at. `nextbest models --repair` finishes it"
    ) in shown, shown

    result = runner.invoke(app, ["rollback"], env=_env(settings), terminal_width=240)
    said = " ".join(result.output.split())
    assert result.exit_code == 0, said
    assert (
        f"finished: the rollback to version 2 (replacing 3; MLflow run {killed.info.run_id}) "
        "had moved the champion and stopped before it finished: alias previous_champion "
        "names version 2, not version 1; version 3 lacks its tag rolled_back_at (written now)"
    ) in said, said
    assert "not rolled back further" in said, said
    assert registry.alias_version(settings, "champion") == "2"
    assert registry.alias_version(settings, "previous_champion") == "1"
    assert gate.champion_history(settings) == ["1", "2"]
    assert len(_decision_runs(settings, "rollback")) == 1
    # Run once more, it is a rollback of its own.
    assert gate.rollback(settings).to_version == "1"


def test_models_repair_finishes_a_promotion_the_store_refused_after_the_move(
    own_copy: Settings, trained
) -> None:
    """The store took the champion's move and refused previous_champion: the error
    said to look at `nextbest models`, which said nothing was amiss, and nothing
    finished the promotion."""
    settings = own_copy
    challenger = _register(settings, trained, alias="challenger")
    with (
        _champion_alias_refused(settings, "previous_champion"),
        pytest.raises(GateError) as refused,
    ):
        _force(settings)
    assert "once it takes writes again, `nextbest models --repair` finishes it" in str(
        refused.value
    )
    code, shown = _models(settings)
    assert f"unfinished: the promotion of version {challenger} (replacing 1;" in shown, shown
    assert "alias previous_champion names no version, not version 1" in shown, shown

    # Refused again, it is said in one line, and stays unfinished.
    with _champion_alias_refused(settings, "previous_champion"):
        code, shown = _models(settings, "--repair")
    assert code == 2, shown
    assert "refused to finish it: MlflowException:" in shown, shown
    assert "previous_champion alias refused" in shown, shown
    assert registry.PENDING_TAG in _registered_model_tags(settings)

    code, shown = _models(settings, "--repair")
    assert code == 0, shown
    assert f"finished: the promotion of version {challenger} (replacing 1;" in shown, shown
    assert "unfinished" not in shown, shown
    assert registry.alias_version(settings, "previous_champion") == "1"
    assert registry.alias_version(settings, "challenger") is None
    assert registry.PENDING_TAG not in _registered_model_tags(settings)
    code, shown = _models(settings, "--repair")
    assert "nothing to repair: no decision or training was left unfinished" in shown, shown


# Runs `nextbest ARGS...` with the first write of version tag TAG held for two minutes
# before the store takes it, saying so in MARKER: training caught by a signal while
# it logs its run, after the version was registered.
_HELD_AT_VERSION_TAG = """
import os, sys, time
from pathlib import Path

from mlflow.tracking.client import MlflowClient

tag_held, marker = sys.argv[1], Path(sys.argv[2])
original = MlflowClient.set_model_version_tag


def held(self, name, version, key, value):
    if key == tag_held and not marker.exists():
        # Whole or not at all: a reader polling for the file saw it empty, its
        # pid not yet written, and a SIGKILL sent then left it so.
        marker.with_name(marker.name + '.part').write_text(str(os.getpid()))
        os.replace(marker.with_name(marker.name + '.part'), marker)
        time.sleep(120)
    return original(self, name, version, key, value)


MlflowClient.set_model_version_tag = held
sys.argv = ["nextbest", *sys.argv[3:]]
from nextbest.cli import main

main()
"""


def _retrain_stopped(settings: Settings, trained, tmp_path: Path, sig: int) -> tuple[int, str]:
    """`nextbest retrain` (a model of the history alone, the fast config) sent ``sig``
    once it registered its version, while it tags it; the exit code and the output."""
    return _signalled_once_held(
        settings,
        tmp_path,
        sig,
        _HELD_AT_VERSION_TAG,
        registry.DIGEST_TAG,
        str(tmp_path / "held"),
        *_retrain_args(trained),
    )


def test_a_retrain_stopped_by_sigterm_ends_its_training_run_killed_and_says_what_it_left(
    own_copy: Settings, trained, tmp_path: Path
) -> None:
    """A scheduler's SIGTERM while retrain logged its run ended the process outright:
    the training run stayed RUNNING in MLflow for good, and `nextbest models` listed
    the version it had registered, without its digest, as any other."""
    import signal

    settings = own_copy
    code, said = _retrain_stopped(settings, trained, tmp_path, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, said
    version = registry.client(settings).get_model_version(settings.model_name, "2")
    run = registry.client(settings).get_run(version.run_id)
    assert run.info.status == "KILLED", said
    assert run.data.tags[registry.INTERRUPTED_TAG] == "SIGTERM"
    assert (
        f"error: training was interrupted (SIGTERM) while it logged MLflow run "
        f"{run.info.run_id}: the run is marked killed; version 2 was registered from it "
        "before it stopped, without all of its tags"
    ) in said, said
    code, shown = _models(settings)
    assert (
        "its training run was interrupted (SIGTERM) and marked killed: the version was "
        "registered without all of its tags (no artifact_sha256: loaded unverified)"
    ) in shown, shown
    listed = json.loads(_models(settings, "--json")[1])["versions"]
    assert [(v["version"], v["training_run_status"]) for v in listed] == [
        ("2", "KILLED"),
        ("1", None),
    ]


def test_a_retrain_killed_outright_is_judged_by_its_version_at_read(
    own_copy: Settings, trained, tmp_path: Path
) -> None:
    """SIGKILL while retrain tags its version: the run stays RUNNING (nothing of the
    process runs after), and `nextbest models` says so of the version."""
    import signal

    settings = own_copy
    code, said = _retrain_stopped(settings, trained, tmp_path, signal.SIGKILL)
    assert code == -signal.SIGKILL, said
    version = registry.client(settings).get_model_version(settings.model_name, "2")
    assert registry.client(settings).get_run(version.run_id).info.status == "RUNNING"
    code, shown = _models(settings)
    assert (
        "its training run never ended (its process was killed outright, or is still at "
        "work): the version was registered without all of its tags"
    ) in shown, shown


def test_a_promotion_killed_after_the_move_leaves_its_gate_verdict_to_repair(
    own_copy: Settings, trained, tmp_path: Path
) -> None:
    """The challenger's gate tag was written after the decision run ended, outside what
    the promotion records it leaves: a kill after the move lost it, and `--repair`
    finished the promotion without it."""
    settings = own_copy
    challenger = _register(settings, trained, alias="challenger")
    _killed(settings, tmp_path, "previous_champion", "promote", "--force", "--reason", "x")
    (killed,) = _decision_runs(settings, "promote")
    tags = registry.client(settings).get_model_version(settings.model_name, challenger).tags
    assert "gate" not in tags
    unwritten = json.loads(_models(settings, "--json")[1])["decision_unfinished"]["unwritten"]
    assert f"version {challenger} lacks its tags gate, promoted_at, promotion" in unwritten

    code, shown = _models(settings, "--repair")
    assert code == 0, shown
    assert f"version {challenger} lacks its tags gate, promoted_at, promotion (written now)" in (
        shown
    ), shown
    tags = registry.client(settings).get_model_version(settings.model_name, challenger).tags
    assert tags["gate"] == f"failed vs v1 (run {killed.info.run_id})"
    assert "gate failed vs v1; promoted by --force" in shown, shown


@pytest.mark.parametrize("then", ["repair", "promote"])
def test_a_decision_killed_before_the_champion_moved_leaves_no_mark_once_repaired(
    own_copy: Settings, trained, tmp_path: Path, then: str
) -> None:
    """SIGKILL between writing decision_pending and moving the champion: the mark stayed
    until a promotion replaced it, `--repair` said there was nothing to repair and
    left it, and a promotion the gate refused left it too."""
    settings = own_copy
    challenger = _register(settings, trained, alias="challenger")
    _killed(settings, tmp_path, "champion", "promote", "--force", "--reason", "x")
    (killed,) = _decision_runs(settings, "promote")
    assert registry.alias_version(settings, "champion") == "1"
    assert registry.PENDING_TAG in _registered_model_tags(settings)
    # Read, it is not said: the promotion was not made.
    code, shown = _models(settings)
    assert code == 0 and "unfinished" not in shown, shown
    assert json.loads(_models(settings, "--json")[1])["decision_unfinished"] is None

    if then == "repair":
        code, shown = _models(settings, "--repair")
        assert code == 0, shown
        assert (
            f"taken off: the mark (decision_pending) of the promotion of version {challenger} "
            f"(MLflow run {killed.info.run_id}), killed before the champion moved: it was "
            "not made"
        ) in shown, shown
        assert "nothing to repair" not in shown, shown
    else:
        # No evidence, no --force: nothing is promoted, and the stale mark goes.
        result = runner.invoke(app, ["promote"], env=_env(settings))
        assert result.exit_code == 2, result.output
    assert registry.PENDING_TAG not in _registered_model_tags(settings)
    assert registry.alias_version(settings, "champion") == "1"
    assert registry.alias_version(settings, "challenger") == challenger
    code, shown = _models(settings, "--repair")
    assert "nothing to repair: no decision or training was left unfinished" in shown, shown


def _retrain_args(trained) -> list[str]:
    fast = Path(__file__).parents[1] / "cli" / "fast_train.yaml"
    return [
        "retrain",
        "--data",
        str(trained.data_dir),
        "--config",
        str(fast),
        "--allow-history-only",
    ]


def test_a_retrain_stopped_by_sigterm_before_it_set_the_challenger_says_so(
    own_copy: Settings, trained, tmp_path: Path
) -> None:
    """SIGTERM once the training run ended, before the challenger alias was set: the
    version stayed registered without it and nothing said so; `evaluate` and
    `promote` then judged the older challenger."""
    import signal

    settings = own_copy
    older = _register(settings, trained, alias="challenger")
    code, said = _interrupted(
        settings, tmp_path, "challenger", signal.SIGTERM, *_retrain_args(trained)
    )
    assert code == 128 + signal.SIGTERM, said
    new = str(int(older) + 1)
    version = registry.client(settings).get_model_version(settings.model_name, new)
    run = registry.client(settings).get_run(version.run_id)
    assert (run.info.status, run.data.tags[registry.INTERRUPTED_TAG]) == ("KILLED", "SIGTERM")
    assert (
        f"version {new} was registered from it in full before it stopped, but not given "
        f"alias challenger (which names version {older}): `nextbest models --repair` makes "
        "it challenger"
    ) in said, said
    assert registry.alias_version(settings, "challenger") == older


def test_a_retrain_killed_before_it_set_the_challenger_is_said_and_repaired(
    own_copy: Settings, trained, tmp_path: Path
) -> None:
    """SIGKILL once the version was registered in full, before the challenger alias:
    `nextbest models` listed it as any other, and the older challenger stayed the one
    `evaluate` and `promote` judge."""
    settings = own_copy
    older = _register(settings, trained, alias="challenger")
    _killed(settings, tmp_path, "challenger", *_retrain_args(trained))
    new = str(int(older) + 1)
    assert registry.alias_version(settings, "challenger") == older

    code, shown = _models(settings)
    assert code == 0, shown
    assert (
        f"v{new} trained " in shown
        and "its training run never ended (its process was killed outright, or is still at "
        "work): the version is registered in full, but it is not the challenger it "
        "was registered as (the run stopped before it set the alias): `nextbest models "
        "--repair` makes it challenger"
    ) in shown, shown
    # evaluate (and promote) say whose challenger they judge, before they judge it.
    result = runner.invoke(app, ["evaluate"], env=_env(settings), terminal_width=240)
    said = " ".join(result.output.split())
    assert (
        f"note: version {new} was registered in full as challenger by a training run stopped "
        f"before it set the alias, so the challenger here is version {older}: `nextbest "
        f"models --repair` makes version {new} the challenger"
    ) in said, said
    listed = json.loads(_models(settings, "--json")[1])["versions"]
    assert [(v["version"], v["registered_as"], v["alias_unset"]) for v in listed] == [
        (new, "challenger", "challenger"),
        (older, "challenger", None),
        ("1", "champion", None),  # the first train's, champion as registered
    ]

    code, shown = _models(settings, "--repair")
    assert code == 0, shown
    assert (
        f"finished: version {new}, registered in full by a training run stopped before it "
        f"gave it alias challenger, is challenger now (was version {older})"
    ) in shown, shown
    assert registry.alias_version(settings, "challenger") == new
    assert "is not the challenger" not in _models(settings)[1]
    code, shown = _models(settings, "--repair")
    assert "nothing to repair" in shown, shown

    # Promoted, it is no longer challenger, and that is not said as missing either.
    _force(settings)
    assert registry.alias_version(settings, "champion") == new
    assert "is not the challenger" not in _models(settings)[1]


def _tags_now(settings: Settings) -> dict[str, str]:
    return _registered_model_tags(settings)


@pytest.mark.parametrize("held_at", ["before the move", "after the move"])
def test_repair_leaves_a_decision_at_work_in_this_process_alone(
    own_copy: Settings, trained, monkeypatch: pytest.MonkeyPatch, held_at: str
) -> None:
    """`nextbest models --repair` while a promotion was under way took its mark off
    (held between its mark and its move: a kill after the move then went unsaid) or
    finished it under it (held after the move); a rollback went ahead beside it. Now
    `nextbest models` says it is in progress, and --repair waits for its lock (here
    told not to: refused, exit 2)."""
    import threading

    settings = own_copy
    challenger = _register(settings, trained, alias="challenger")
    held, go = threading.Event(), threading.Event()
    promoting: list[threading.Thread] = []

    def holding(original):
        def hold(*args, **kwargs):
            if threading.current_thread() in promoting and not held.is_set():
                held.set()
                assert go.wait(120)
            return original(*args, **kwargs)

        return hold

    if held_at == "before the move":
        monkeypatch.setattr(gate, "_set_champion", holding(gate._set_champion))
    else:
        monkeypatch.setattr(registry, "finish_decision", holding(registry.finish_decision))
    outcome: list[object] = []
    promoting.append(threading.Thread(target=lambda: outcome.append(_force(settings)), daemon=True))
    promoting[0].start()
    try:
        assert held.wait(120)
        mark = _tags_now(settings)[registry.PENDING_TAG]
        code, shown = _models(settings, "--repair", NEXTBEST_DECISION_WAIT_S="0")
        assert code == 2, shown
        assert (
            "is deciding on model 'nextbest' (it holds "
            f"{settings.resolved_models_dir / '.mlflow.db.nextbest.decision.lock'}); this "
            "repair did not wait for it (NEXTBEST_DECISION_WAIT_S is 0) and repaired "
            "nothing: run `nextbest models --repair` again once it has ended"
        ) in shown, shown
        assert _tags_now(settings)[registry.PENDING_TAG] == mark
        code, shown = _models(settings)
        assert code == 0, shown
        assert f"the promotion of version {challenger} (replacing 1; MLflow run " in shown, shown
        assert "is in progress: process " in shown, shown
        assert (
            "is at work on it; `nextbest models --repair`, promote and rollback wait for it "
            "to end before they act (where no decision lock keeps it, a registry over HTTP "
            "beside a SQLite store: repair leaves it alone and they refuse), and train makes "
            "no first champion beside it"
        ) in shown, shown
        assert "unfinished" not in shown and "taken off" not in shown, shown
        assert "finished:" not in shown, shown
        assert _tags_now(settings)[registry.PENDING_TAG] == mark
        code, out = _models(settings, "--json")
        listed = json.loads(out)
        assert listed["decision_unfinished"] is None
        assert listed["decision_in_progress"]["champion"] == challenger
        # The next decision waits for it rather than deciding beside it; told not to
        # wait, it is refused at once, naming it.
        no_wait = settings.model_copy(update={"decision_wait_s": 0.0})
        with pytest.raises(
            GateError,
            match=r"^the promotion by process \d+ on host .* is deciding on model 'nextbest' "
            r".*; this rollback did not wait for it .* and decided nothing",
        ):
            gate.rollback(no_wait)
    finally:
        go.set()
        promoting[0].join(120)
    (evaluation,) = outcome
    assert evaluation.promoted  # type: ignore[attr-defined]
    assert registry.alias_version(settings, "champion") == challenger
    assert registry.alias_version(settings, "previous_champion") == "1"
    assert registry.alias_version(settings, "challenger") is None
    assert registry.PENDING_TAG not in _tags_now(settings)
    assert _decision_runs(settings, "rollback") == []
    code, shown = _models(settings, "--repair")
    assert "nothing to repair" in shown, shown


def test_repair_leaves_a_decision_at_work_in_another_process_alone_until_it_is_killed(
    own_copy: Settings, trained, tmp_path: Path
) -> None:
    """A scheduled `nextbest promote` held between its mark and its move: `--repair`
    in another terminal took the mark off. Killed once `--repair` left it, the
    decision is read as killed, and its mark is taken off."""
    import signal

    settings = own_copy
    challenger = _register(settings, trained, alias="challenger")
    args = ("champion", "before", str(tmp_path / "held"), "promote", "--force", "--reason", "x")
    with _held(settings, tmp_path, _HELD_AT_ALIAS, *args) as process:
        code, shown = _models(settings)
        assert code == 0, shown
        assert f"the promotion of version {challenger} (replacing 1; MLflow run " in shown, shown
        assert f"is in progress: process {process.pid} on host " in shown, shown
        code, shown = _models(settings, "--repair", NEXTBEST_DECISION_WAIT_S="0")
        assert code == 2 and "taken off" not in shown, shown
        assert f"the promotion by process {process.pid} on host" in shown, shown
        assert "this repair did not wait for it" in shown, shown
        assert registry.PENDING_TAG in _tags_now(settings)
        result = runner.invoke(
            app,
            ["rollback"],
            env={**_env(settings), "NEXTBEST_DECISION_WAIT_S": "0"},
            terminal_width=240,
        )
        assert result.exit_code == 2, result.output
        assert f"the promotion by process {process.pid} on host" in " ".join(result.output.split())
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    code, shown = _models(settings)
    assert "is in progress" not in shown, shown
    code, shown = _models(settings, "--repair")
    assert f"taken off: the mark (decision_pending) of the promotion of version {challenger}" in (
        shown
    ), shown
    assert registry.PENDING_TAG not in _tags_now(settings)
    assert registry.alias_version(settings, "champion") == "1"


def test_a_mark_is_at_work_only_while_its_own_process_runs_on_this_host() -> None:
    """The pid alone would read a later process that took it over (or one on another
    host) as the decision at work, for ever."""
    import os
    import subprocess
    import sys

    here = registry.DecidingProcess.this()
    assert (here.host, here.pid) == (socket.gethostname(), os.getpid())
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        running = registry.DecidingProcess.of(other.pid)
        assert running.alive()
        assert not dataclasses.replace(running, started=running.started + "0").alive()
        assert not dataclasses.replace(running, host=running.host + "-elsewhere").alive()
    finally:
        other.kill()
        other.wait(30)
    assert not running.alive()
    # This process: at work only within its own decision (a thread may be at one).
    assert not here.alive(run_id="0123")
    with registry._deciding("0123"):
        assert here.alive(run_id="0123")
        assert not here.alive(run_id="4567")
    assert not here.alive(run_id="0123")


def test_models_repair_on_an_empty_registry_says_one_thing(tmp_path: Path) -> None:
    """`--repair` said "nothing to repair", then that no version was registered."""
    settings = Settings(models_dir=tmp_path / "models", seed=11)
    settings.ensure_dirs()  # made, empty: nothing trained into it yet
    code, plain = _models(settings)
    code_repair, shown = _models(settings, "--repair")
    assert (code_repair, code) == (2, 2), shown
    assert shown == plain, shown
    assert "has no registered version in" in shown and "nothing to repair" not in shown


def _unfinished_of(process: registry.DecidingProcess | None) -> registry.UnfinishedDecision:
    end = registry.DecisionEnd(
        kind="promotion", champion="3", replaces="2", run_id="2bcc8de1", process=process
    )
    return registry.UnfinishedDecision(end, ("alias previous_champion names version 1",))


def test_an_unfinished_decision_says_what_is_known_of_its_process() -> None:
    """It said "killed outright, or is still at work" of a process known to have
    ended on this host, and of one on another host alike."""
    import subprocess
    import sys

    other = subprocess.Popen([sys.executable, "-c", "pass"])
    other.wait(30)
    ended = registry.DecidingProcess.of(other.pid)
    said = _unfinished_of(ended).said()
    assert (
        "moved the champion and stopped before it finished (its process "
        f"{other.pid} on host {ended.host} has ended): alias previous_champion names "
        "version 1. `nextbest models --repair` finishes it"
    ) in said, said

    elsewhere = registry.DecidingProcess(host="batch-2", pid=4242, started="b/1")
    said = _unfinished_of(elsewhere).said()
    assert (
        "moved the champion and has not finished (it was made on host batch-2, by process "
        "4242, where it may still be at work): alias previous_champion names version 1. "
        "`nextbest models --repair` finishes it once it is not"
    ) in said, said

    said = _unfinished_of(None).said()
    assert (
        "stopped before it finished (its process was killed outright, or is still at work)"
    ) in said, said

    # This very process, no longer at work on it (a decision that failed, and the
    # command or notebook goes on): not said to have ended.
    said = _unfinished_of(registry.DecidingProcess.this()).said()
    assert "(this process, " in said and "is no longer at work on it)" in said, said


def test_a_train_beside_a_first_champion_in_progress_leaves_it_the_champion(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two trainings on a registry with no champion: the second, ending while the first
    was between its mark and its move, wrote its own mark over the first's and made
    its version champion too (both recorded as replacing none), and the first then
    moved the champion back to the older version."""
    import threading

    settings = Settings(models_dir=tmp_path / "models", seed=11)
    _register(settings, trained, alias="challenger")  # makes the store and its tables
    registry.client(settings).delete_registered_model_alias(settings.model_name, "challenger")
    held, go = threading.Event(), threading.Event()
    first: list[threading.Thread] = []
    original = registry.set_alias

    def hold(settings_: Settings, alias: str, version: str) -> None:
        if threading.current_thread() in first and alias == "champion" and not held.is_set():
            held.set()
            assert go.wait(120)
        original(settings_, alias, version)

    monkeypatch.setattr(registry, "set_alias", hold)
    outcome: list[str] = []
    first.append(
        threading.Thread(target=lambda: outcome.append(_register(settings, trained)), daemon=True)
    )
    first[0].start()
    try:
        assert held.wait(120)
        mark = _tags_now(settings)[registry.PENDING_TAG]
        second = _register(settings, trained)
        assert _tags_now(settings)[registry.PENDING_TAG] == mark
        # Asked for champion (a model's first version), it waits for it rather than
        # decide beside it; told not to wait, it is registered without the alias at
        # once, saying why.
        model = registry.load_version(trained.settings, trained.version)
        asked = registry.log_training_run(
            TrainResult(model=model, metrics={}, params={"variant": "moves"}),
            settings.model_copy(update={"decision_wait_s": 0.0}),
            alias="champion",
        )
        assert (asked.version, asked.aliases) == ("4", ())
        assert asked.not_champion is not None and re.search(
            r"^the champion decision of a training by process \d+ on host .* and "
            r"decided nothing: version 4 is registered without alias champion; once it has "
            r"ended, `nextbest promote --version 4` puts it to the gate",
            asked.not_champion,
        ), asked.not_champion
        tags = registry.client(settings).get_model_version(settings.model_name, "4").tags
        assert registry.REGISTERED_AS_TAG not in tags
        assert _tags_now(settings)[registry.PENDING_TAG] == mark
    finally:
        go.set()
        first[0].join(120)
    (made,) = outcome
    assert int(second) > int(made)
    assert registry.alias_version(settings, "champion") == made
    assert registry.alias_version(settings, "challenger") is None
    assert [(c.version, c.decision, c.previous) for c in champion_changes(settings)] == [
        (made, "train", None)
    ]
    assert registry.PENDING_TAG not in _tags_now(settings)
    code, shown = _models(settings, "--repair")
    assert code == 0 and "nothing to repair" in shown, shown


@pytest.mark.parametrize("asked", ["champion", None])
def test_a_training_another_made_champion_meanwhile_leaves_that_one_champion(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, asked: str | None
) -> None:
    """`--alias champion` is checked before training, on a model with no champion; a
    second training that ended first, while this one logged its run, made its own
    version champion, and this one then replaced it without the gate (recorded as
    replacing it). Without an alias it took no alias, but its `registered_as` tag
    still claimed champion, which `nextbest models --repair` acts on."""
    import threading

    settings = Settings(models_dir=tmp_path / "models", seed=11)
    other: list[str] = []
    original = registry.artifact_digest

    def meanwhile(files: dict[str, bytes]) -> str:
        # Within this training's run, its version registered: the other one ends.
        if threading.current_thread() is threading.main_thread() and not other:
            ended = threading.Thread(target=lambda: other.append(_register(settings, trained)))
            ended.start()
            ended.join(300)
            assert other, "the other training did not register"
        return original(files)

    model = registry.load_version(trained.settings, trained.version)
    result = TrainResult(model=model, metrics={}, params={"variant": "raced"})
    monkeypatch.setattr(registry, "artifact_digest", meanwhile)
    info = registry.log_training_run(result, settings, alias=asked)
    (champion,) = other
    assert champion != info.version
    assert registry.alias_version(settings, "champion") == champion
    assert info.aliases == () and registry.describe_version(settings, info.version).aliases == ()
    tags = registry.client(settings).get_model_version(settings.model_name, info.version).tags
    assert registry.REGISTERED_AS_TAG not in tags and registry.DIGEST_TAG in tags
    assert [(c.version, c.decision, c.previous) for c in champion_changes(settings)] == [
        (champion, "train", None)
    ]
    if asked == "champion":
        assert info.not_champion == (
            f"version {info.version} is registered in full without alias champion: version "
            f"{champion} became champion while it trained, and the champion changes only by "
            "`nextbest promote`, which runs the gate; `nextbest evaluate --version "
            f"{info.version}` compares the two, and `nextbest promote --version "
            f"{info.version}` makes it champion if the gate passes"
        )
    else:  # not asked for, nothing to say: a later version, as documented
        assert info.not_champion is None
    code, shown = _models(settings, "--repair")
    assert code == 0 and "nothing to repair" in shown, shown
    assert registry.alias_version(settings, "champion") == champion
