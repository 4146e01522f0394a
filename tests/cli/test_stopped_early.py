"""Commands a signal stops (Ctrl-C, a scheduler's SIGTERM) at the moments a job's log
said nothing of: what each leaves, and that it says so."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from nextbest.cli import app
from nextbest.settings import get_settings
from nextbest.storage import FeedbackRecord, log_recommendations, record_feedback
from nextbest.storage.db import store_session
from nextbest.storage.repository import erasure_event_id, maintenance_runs
from nextbest.storage.tables import FeedbackEvent, Recommendation
from nextbest.storage.testing import T0, recommendation_record, served_item

from .conftest import stopped_at

ROOT = Path(__file__).parents[2]
FAST = Path(__file__).parent / "fast_train.yaml"
runner = CliRunner()


def _said(result) -> str:  # type: ignore[no-untyped-def]
    return " ".join(result.output.split())


@pytest.mark.parametrize(
    ("sent", "at", "how", "code"),
    [
        (signal.SIGTERM, "train config: ", "SIGTERM", 143),
        (signal.SIGINT, "features", "Ctrl-C", 130),
    ],
    ids=["sigterm-as-it-starts", "ctrl-c-in-features"],
)
def test_a_training_stopped_before_its_run_says_no_version_was_registered(
    world_dir: Path, tmp_path: Path, sent: signal.Signals, at: str, how: str, code: int
) -> None:
    """Stopped before it logged its MLflow run (loading its code, reading the data,
    building features), `train` ended with exit code 143 (or 130) and not a word: a
    job's log ended on its config line or a step, as if still at work. It says it was
    stopped, where, and that no version was registered; and none was."""
    models = tmp_path / "models"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTBEST_")}
    src = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    env |= {"NEXTBEST_MODELS_DIR": str(models), "PYTHONPATH": src}
    args = ["train", "--data", str(world_dir), "--config", str(FAST), "--alias", "challenger"]
    run = subprocess.Popen(
        [sys.executable, "-m", "nextbest", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as at a terminal: a suite run in the background (`pytest &`) passes
        # SIGINT on ignored, and Python then never raises KeyboardInterrupt for it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    out, said_all = stopped_at(run, at, sent)
    assert run.returncode == code, (run.returncode, said_all)
    assert "Traceback" not in said_all and not out, (out, said_all)
    where = "as it started" if at.startswith("train config") else "at step 'features"
    assert f"error: train was stopped ({how}) {where}" in said_all, said_all
    assert "before it logged an MLflow run: no version was registered; run it again" in said_all
    listed = subprocess.run(
        [sys.executable, "-m", "nextbest", "models", "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # No version: no models directory at all, or a registry with none in it.
    assert listed.returncode == 2 or '"version"' not in listed.stdout, listed


def _log_answers(url: str, hcp_id: str) -> None:
    """An answer naming ``hcp_id`` and an event about it."""
    with store_session(url) as session:
        log_recommendations(
            session,
            records=[recommendation_record(f"r-{hcp_id}", hcp_id, items=(served_item(1, "A1"),))],
        )
        session.commit()
        record_feedback(
            session,
            events=[FeedbackRecord(f"o-{hcp_id}", "opened", T0, hcp_id, f"r-{hcp_id}", "A1")],
        )


def test_an_erasure_stopped_once_committed_says_what_it_erased(
    env_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduler's SIGTERM right after the erasure's commit (as it cleans up the
    deleted rows): the HCPs were erased, and the job's log said nothing, not even
    that. It says what was erased, what it did not get to, and how to finish."""
    import nextbest.service.erasure as erasure

    url = get_settings().resolved_database_url
    _log_answers(url, "H1")
    real = erasure._clean_up

    def stopped_after_commit(session, deleted, **how):  # type: ignore[no-untyped-def]
        # Raised only where the command handles it: at the default, the test's own
        # process would end here.
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        signal.raise_signal(signal.SIGTERM)
        return real(session, deleted, **how)

    monkeypatch.setattr(erasure, "_clean_up", stopped_after_commit)
    result = runner.invoke(app, ["erase", "H1", "--yes"])
    said = _said(result)
    assert result.exit_code == 143, said
    assert (
        "erased 1 HCP in " in said
        and "deleted 1 recommendation, 1 recommendation item and 1 feedback event; stored "
        "1 suppression (opted_out, every channel)"
        in said
    ), said
    assert (
        "error: erase was interrupted (SIGTERM) once the erasure was committed: 1 HCP erased "
        "in " in said
    ), said
    assert "it was stopped cleaning up after the deletes: the deleted rows may stay " in said
    assert (
        "not name the registered model versions that still hold them: run `nextbest erase` "
        "with the same ids again (nothing is erased twice) to finish the clean-up and have "
        "them named" in said
    ), said
    with store_session(url) as session:
        assert not session.scalars(select(Recommendation.recommendation_id)).all()
        assert session.scalars(select(FeedbackEvent.event_id)).all() == [erasure_event_id("H1")]


def test_a_prune_whose_interrupted_mark_was_refused_does_not_say_it_was_marked(
    env_settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM after a batch while another connection holds the database's write lock
    (a server logging, on SQLite): the mark 'interrupted' could not be written and its
    row still says 'running', yet the command said "its run is marked interrupted". It
    says the row could not be marked and reads 'running'."""
    import nextbest.service.erasure as erasure

    rules = tmp_path / "rules.yaml"
    rules.write_text("dismissal_days: 30\n")
    monkeypatch.setenv("NEXTBEST_RULES_FILE", str(rules))
    get_settings.cache_clear()
    url = get_settings().resolved_database_url
    for hcp_id in ("H1", "H2"):
        _log_answers(url, hcp_id)
    real = erasure.prune_batch
    calls: list[int] = []
    holder = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)

    def stopped_while_locked(session, *, before, run_id=None):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) > 1:
            # A writer holds the lock; the prune's connection waits a moment, not 10 s.
            session.connection().exec_driver_sql("PRAGMA busy_timeout = 200")
            holder.execute("BEGIN IMMEDIATE")
            signal.raise_signal(signal.SIGTERM)
        return real(session, before=before, run_id=run_id)

    monkeypatch.setattr(erasure, "prune_batch", stopped_while_locked)
    try:
        result = runner.invoke(app, ["prune", "--older-than", "400", "--yes"])
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()
    said = _said(result)
    assert result.exit_code == 143, said
    assert "marked interrupted in maintenance_runs (`nextbest" not in said, said
    assert "error: prune was interrupted (SIGTERM) after deleting " in said, said
    assert "could not be marked interrupted and says 'running', with the rows deleted" in said
    with store_session(url) as session:
        [run], _ = maintenance_runs(session, limit=5)
    assert run.outcome == "running" and run.ended_at is None, run
    assert f"its run {run.run_id} in maintenance_runs" in said, said


def test_a_first_training_stopped_after_its_run_says_its_version_is_registered(
    world_dir: Path, env_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first `train` stopped once its run registered the version in full, before it
    made it champion (waiting for the decision lock, say): the registry's word was
    missing, the version registered and nothing served. It says so, and how to mend it."""
    from nextbest import registry

    def stopped(*args, **kwargs):  # type: ignore[no-untyped-def]
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(registry, "_log_trained_champion", stopped)
    result = runner.invoke(app, ["train", "--data", str(world_dir), "--config", str(FAST)])
    said = _said(result)
    assert result.exit_code == 143, said
    assert "error: training was interrupted (SIGTERM) after MLflow run " in said, said
    assert (
        "registered version 1 in full, as the first champion, before it was made champion: "
        "`nextbest models` says whether it is, and `nextbest models --repair` makes it "
        "champion if no version is"
    ) in said, said
    assert "before it logged an MLflow run" not in said, said
    settings = get_settings()
    assert [v.version for v in registry.list_versions(settings)] == ["1"]
    assert registry.alias_version(settings, registry.CHAMPION_ALIAS) is None


def test_an_erasure_stopped_as_it_reads_the_registry_is_a_stop_not_an_unreadable_registry(
    env_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while erase read the registry for the versions holding the HCPs, as
    MLflow was being imported: Python hands a signal raised while it builds a class
    on as a RuntimeError (`Error calling __set_name__ ...`), and erase said "the model
    registry could not be read" with exit code 1, where a scheduler's stop is 143. It
    is said as a stop, with what was erased."""
    import nextbest.service.erasure as erasure

    _log_answers(get_settings().resolved_database_url, "H1")

    def read_while_importing(*args, **kwargs):  # type: ignore[no-untyped-def]
        class Field:  # what an imported module's class (MLflow's) holds
            def __set_name__(self, owner: type, name: str) -> None:
                signal.raise_signal(signal.SIGTERM)

        class Endpoint:
            mappings = Field()

    monkeypatch.setattr(erasure, "versions_holding", read_while_importing)
    result = runner.invoke(app, ["erase", "H1", "--yes"])
    said = _said(result)
    assert result.exit_code == 143, said
    assert "could not be read" not in said, said
    assert (
        "error: erase was interrupted (SIGTERM) once the erasure was committed: 1 HCP erased "
        "in " in said
    ), said
    assert "; it did not name the registered model versions that still hold them" in said


def test_a_stop_python_wrapped_in_an_error_ends_as_a_stop(
    world_dir: Path,
    env_settings: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SIGTERM while Python built a class (a library's, as it was imported) reaches
    the command as a RuntimeError: `train` printed a traceback and exited 1, which a
    scheduler reads as a failed training rather than its own timeout. It ends as the
    stop it is, exit code 143, saying what it left."""
    import nextbest.cli.train as train_command
    from nextbest.cli import main

    def load_while_importing(data: Path) -> None:
        class Field:  # what an imported module's class (MLflow's, pydantic's) holds
            def __set_name__(self, owner: type, name: str) -> None:
                signal.raise_signal(signal.SIGTERM)

        class Endpoint:
            mappings = Field()

    monkeypatch.setattr(train_command, "load_data", load_while_importing)
    monkeypatch.setattr(sys, "argv", ["nextbest", "train", "--data", str(world_dir)])
    with pytest.raises(SystemExit) as ended:
        main()
    said = " ".join(capsys.readouterr().err.split())
    assert ended.value.code == 143, said
    assert "Traceback" not in said, said
    assert (
        "error: train was stopped (SIGTERM) at step 'load', before it logged an MLflow run" in said
    )
