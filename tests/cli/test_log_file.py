"""A recommendation log that does not exist: a mistyped NEXTBEST_DATABASE_URL never
makes a new one. Commands that only read the contact history (explain, picks) read it
as empty and say so; those that write the log (picks --log, erase, feedback) refuse."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import Result

from nextbest import registry
from nextbest.cli import app
from nextbest.settings import get_settings

from .conftest import LOG_WRITERS, runner

RULES = Path(__file__).parents[2] / "training" / "rules.yaml"


def _said(result: Result) -> str:
    return " ".join(result.output.split())


def _typo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """NEXTBEST_DATABASE_URL set to a SQLite file (in directories) that does not exist."""
    typo = tmp_path / "some" / "typo" / "x.db"
    monkeypatch.setenv("NEXTBEST_DATABASE_URL", f"sqlite:///{typo}")
    monkeypatch.setenv("NEXTBEST_RULES_FILE", str(RULES))
    get_settings.cache_clear()
    return typo


def _served_copy(trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The trained registry copied to a models directory of this test; an HCP it knows."""
    models = tmp_path / "models"
    shutil.copytree(trained.settings.models_dir, models)
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(models))
    monkeypatch.setenv("NEXTBEST_RULES_FILE", str(RULES))
    get_settings.cache_clear()
    return str(pd.read_csv(trained.data_dir / "hcps.csv", dtype=str)["hcp_id"].iat[3])


def test_explain_reads_a_log_not_made_yet_as_empty_and_makes_none(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Explaining before the first serve is a use; a mistyped NEXTBEST_DATABASE_URL
    made the file and its directory and decided with no contacts, caps unsaid."""
    hcp = _served_copy(trained, tmp_path, monkeypatch)
    typo = _typo(tmp_path, monkeypatch)
    for args in ([], ["--json"]):
        result = runner.invoke(app, ["explain", hcp, *args])
        said = " ".join(result.stderr.split())
        assert result.exit_code == 0, result.output
        assert (
            f"note: no recommendation log at {typo} (NEXTBEST_DATABASE_URL is sqlite:///{typo}):"
            " read as empty and not made, so caps, cool-downs and dismissals counted no contacts"
        ) in said, said
        assert not (tmp_path / "some").exists()
    # The default log in the models directory, before anything is served: the same.
    monkeypatch.delenv("NEXTBEST_DATABASE_URL")
    get_settings.cache_clear()
    default = tmp_path / "models" / "nextbest.db"
    assert not default.exists()
    result = runner.invoke(app, ["explain", hcp])
    said = " ".join(result.stderr.split())
    assert result.exit_code == 0, result.output
    assert (
        f"no recommendation log at {default} (NEXTBEST_DATABASE_URL is not set: kept in the "
        "models directory): read as empty and not made"
    ) in said, said
    assert not default.exists()


def test_explain_of_a_log_that_exists_says_no_note(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hcp = _served_copy(trained, tmp_path, monkeypatch)
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    result = runner.invoke(app, ["explain", hcp])
    assert result.exit_code == 0, result.output
    assert "no recommendation log" not in result.output, result.output


def test_explain_with_model_names_that_model_for_an_hcp_it_does_not_know(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--model challenger` was answered "not known to the served model"."""
    _served_copy(trained, tmp_path, monkeypatch)
    registry.set_alias(get_settings(), "challenger", "1")
    asked = runner.invoke(app, ["explain", "NO-SUCH-HCP", "--model", "challenger"])
    said = _said(asked)
    assert asked.exit_code == 2, said
    assert (
        "error: hcp_id 'NO-SUCH-HCP' is not known to model version 1 (--model challenger)"
    ) in said, said
    served = runner.invoke(app, ["explain", "NO-SUCH-HCP"])
    assert "hcp_id 'NO-SUCH-HCP' is not known to the served model" in _said(served)


def test_picks_without_log_reads_a_log_not_made_as_empty_and_with_log_refuses_it(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain picks decide as explain does; picks --log writes the answers as served, and
    a mistyped setting logged them in a new log that no server or report reads."""
    _served_copy(trained, tmp_path, monkeypatch)
    typo = _typo(tmp_path, monkeypatch)
    out = tmp_path / "picks.csv"
    data = ["--data", str(trained.data_dir), "--out", str(out)]
    plain = runner.invoke(app, ["picks", *data])
    said = " ".join(plain.stderr.split())
    assert plain.exit_code == 0, plain.output
    assert f"note: no recommendation log at {typo} (NEXTBEST_DATABASE_URL is " in said, said
    assert "caps, cool-downs and dismissals counted no contacts" in said, said
    assert out.exists() and not (tmp_path / "some").exists()
    out.unlink()
    logged = runner.invoke(app, ["picks", *data, "--log"])
    said = _said(logged)
    assert logged.exit_code == 2, said
    assert (
        f"error: no recommendation log at {typo} (NEXTBEST_DATABASE_URL is sqlite:///{typo}): "
        "these answers would be logged as served in a new recommendation log there that no "
        "server, uplift report or retrain reads; check its spelling, or make the database "
        "with `nextbest db upgrade`"
    ) in said, said
    assert not out.exists() and not (tmp_path / "some").exists()


@pytest.mark.parametrize(("command", "lost"), LOG_WRITERS, ids=["erase", "feedback"])
def test_a_command_that_writes_the_log_refuses_a_sqlite_file_that_does_not_exist(
    env_settings: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
    lost: str,
) -> None:
    """Erasures and feeds went to a new log at a mistyped NEXTBEST_DATABASE_URL that no
    server reads, and "erased" / "stored" was said."""
    env_settings.mkdir()  # the models directory is right: the log set elsewhere is not
    typo = _typo(tmp_path, monkeypatch)
    events = tmp_path / "events.csv"
    events.write_text("event_id,event_type,hcp_id,channel\ne-1,opted_out,H000001,email\n")
    result = runner.invoke(app, [arg.format(events=events) for arg in command])
    said = _said(result)
    assert result.exit_code == 2, said
    assert (
        f"error: no recommendation log at {typo} (NEXTBEST_DATABASE_URL is sqlite:///{typo}): "
        f"{lost}recommendation log there that no server"
    ) in said, said
    assert "check its spelling, or make the database with `nextbest db upgrade`" in said, said
    assert not (tmp_path / "some").exists()


@pytest.mark.parametrize(("command", "lost"), LOG_WRITERS, ids=["erase", "feedback"])
def test_a_command_that_writes_the_log_run_without_the_setting_refuses_a_log_not_made(
    env_settings: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
    lost: str,
) -> None:
    """A PostgreSQL deployment's erasure job run without NEXTBEST_DATABASE_URL (cron's
    environment, `sudo`): the suppressions went to a new SQLite log in the models
    directory, "erased" was said with exit code 0, and the servers, reading
    PostgreSQL, kept contacting the HCP."""
    env_settings.mkdir()  # the models directory the servers use, without nextbest.db
    monkeypatch.setenv("NEXTBEST_RULES_FILE", str(RULES))
    get_settings.cache_clear()
    events = tmp_path / "events.csv"
    events.write_text("event_id,event_type,hcp_id,channel\ne-1,opted_out,H000001,email\n")
    result = runner.invoke(app, [arg.format(events=events) for arg in command])
    said = _said(result)
    assert result.exit_code == 2, said
    log = env_settings / "nextbest.db"
    assert (
        f"error: no recommendation log at {log} (NEXTBEST_DATABASE_URL is not set: kept in "
        f"the models directory): {lost}recommendation log there that no server"
    ) in said, said
    assert "set NEXTBEST_DATABASE_URL as they have it" in said, said
    assert "make the log with `nextbest db upgrade`" in said, said
    assert not log.exists()
    # Made as said, the same command runs.
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    again = runner.invoke(app, [arg.format(events=events) for arg in command])
    assert again.exit_code == 0, _said(again)


@pytest.mark.parametrize(
    "command",
    [
        ["prune", "--older-than", "730", "--yes"],
        ["lookup", "--hcp", "H000001"],
        ["lookup", "--maintenance"],
        ["uplift-report", "--out", "{report}"],
    ],
    ids=["prune", "lookup-hcp", "lookup-maintenance", "uplift-report"],
)
def test_a_command_answering_from_the_log_run_without_the_setting_refuses_a_log_not_made(
    env_settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    """The same job without NEXTBEST_DATABASE_URL: a weekly prune made an empty SQLite
    log, pruned nothing there and said so with exit code 0, every week; a lookup for
    an access request answered "nothing logged about this id"; an uplift report made
    the log and reported no evidence, as if nothing had been served."""
    env_settings.mkdir()
    monkeypatch.setenv("NEXTBEST_RULES_FILE", str(RULES))
    get_settings.cache_clear()
    report = tmp_path / "report"
    result = runner.invoke(app, [arg.format(report=report) for arg in command])
    said = _said(result)
    assert result.exit_code == 2, said
    log = env_settings / "nextbest.db"
    assert (
        f"error: no recommendation log at {log} (NEXTBEST_DATABASE_URL is not set: kept in "
        "the models directory): this command reads the log kept there and makes none"
    ) in said, said
    assert "set NEXTBEST_DATABASE_URL as they have it" in said, said
    assert not log.exists() and not report.exists()


def test_picks_log_run_without_the_setting_refuses_a_log_not_made(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PostgreSQL deployment's send job run without NEXTBEST_DATABASE_URL: picks
    --log made a new SQLite log in the models directory, logged the answers there with
    their propensities and holdout (what the uplift report and off-policy evaluation
    read) and wrote the file to send, exit 0; no server, report or retrain read them.
    A new SQLite deployment makes the log first with `nextbest db upgrade`."""
    _served_copy(trained, tmp_path, monkeypatch)
    out = tmp_path / "send.csv"
    args = ["picks", "--data", str(trained.data_dir), "--out", str(out), "--log"]
    log = tmp_path / "models" / "nextbest.db"
    result = runner.invoke(app, args)
    said = _said(result)
    assert result.exit_code == 2, said
    assert (
        f"error: no recommendation log at {log} (NEXTBEST_DATABASE_URL is not set: kept in "
        "the models directory): these answers would be logged as served in a new "
        "recommendation log there that no server, uplift report or retrain reads"
    ) in said, said
    assert "set NEXTBEST_DATABASE_URL as they have it" in said, said
    assert "make the log with `nextbest db upgrade`" in said, said
    assert not log.exists() and not out.exists()
    # Made as said, the send is logged.
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    sent = runner.invoke(app, args)
    assert sent.exit_code == 0, _said(sent)
    with sqlite3.connect(log) as connection:
        (logged,) = connection.execute("SELECT count(*) FROM recommendations").fetchone()
    assert logged == len(pd.read_csv(trained.data_dir / "hcps.csv")), logged


def test_a_refused_feedback_run_leaves_no_earlier_rejected_file(
    env_settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job that sends what the last run rejected took an earlier run's rejects for
    this run's when the run was refused for anything but the feed file itself."""
    events = tmp_path / "events.csv"
    events.write_text("event_id,event_type,hcp_id\ne-1,opened,H000001\n")
    rejected = tmp_path / "rejected.csv"
    for refused in ("models directory", "log file"):
        rejected.write_text("row,event_id,rejected_because\n2,old-1,an earlier run's\n")
        if refused == "log file":
            env_settings.mkdir()
            _typo(tmp_path, monkeypatch)
        result = runner.invoke(app, ["feedback", str(events), "--rejected", str(rejected)])
        said = _said(result)
        assert result.exit_code == 2, said
        assert not rejected.exists(), said
        assert (
            f"removed {rejected}: this run ended without writing its rejected rows there, "
            "and an earlier run's must not be taken for them"
        ) in said, said
    # The feed given as --rejected (its rows sent again) is the input: kept.
    result = runner.invoke(app, ["feedback", str(events), "--rejected", str(events)])
    assert result.exit_code == 2 and events.exists(), _said(result)


def test_a_refused_uplift_report_makes_no_out_dir(
    env_settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--out was made before the stores were checked: an empty report directory was
    left behind a refused run."""
    out = tmp_path / "reports" / "uplift"
    result = runner.invoke(app, ["uplift-report", "--out", str(out)])  # no models directory
    assert result.exit_code == 2 and "models directory" in _said(result), _said(result)
    assert not (tmp_path / "reports").exists()
    env_settings.mkdir()
    _typo(tmp_path, monkeypatch)
    result = runner.invoke(app, ["uplift-report", "--out", str(out)])
    assert result.exit_code == 2 and "no recommendation log at" in _said(result), _said(result)
    assert not (tmp_path / "reports").exists()
    # Still checked first: a path under a file, named.
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    result = runner.invoke(app, ["uplift-report", "--out", str(a_file / "uplift")])
    assert result.exit_code == 2, _said(result)
    assert f"error: --out: Not a directory: {a_file}" in _said(result), _said(result)


def test_a_refused_picks_run_makes_no_out_dir(
    trained, env_settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directories of --out were made before the stores were checked."""
    out = tmp_path / "sends" / "2026-12" / "picks.csv"
    data = ["--data", str(trained.data_dir), "--out", str(out)]
    result = runner.invoke(app, ["picks", *data])  # no models directory
    assert result.exit_code == 2 and "models directory" in _said(result), _said(result)
    assert not (tmp_path / "sends").exists()
    _served_copy(trained, tmp_path, monkeypatch)
    _typo(tmp_path, monkeypatch)
    result = runner.invoke(app, ["picks", *data, "--log"])
    assert result.exit_code == 2 and "no recommendation log at" in _said(result), _said(result)
    assert not (tmp_path / "sends").exists()
    monkeypatch.delenv("NEXTBEST_DATABASE_URL")
    get_settings.cache_clear()
    assert runner.invoke(app, ["picks", *data]).exit_code == 0 and out.exists()


def test_a_refused_feedback_run_makes_no_rejected_dir(
    env_settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directories of --rejected were made before the stores were checked."""
    events = tmp_path / "events.csv"
    events.write_text("event_id,event_type,hcp_id\ne-1,opened,H000001\n")
    rejected = tmp_path / "feeds" / "2026-12" / "rejected.csv"
    result = runner.invoke(app, ["feedback", str(events), "--rejected", str(rejected)])
    assert result.exit_code == 2 and "models directory" in _said(result), _said(result)
    assert not (tmp_path / "feeds").exists()
    env_settings.mkdir()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0  # the log feedback is for
    result = runner.invoke(app, ["feedback", str(events), "--rejected", str(rejected)])
    assert result.exit_code == 0, _said(result)
    assert rejected.read_text().splitlines()[0].startswith("row,event_id")  # header only


@pytest.mark.parametrize("command", [["evaluate"], ["promote"]])
def test_the_gate_refuses_a_log_that_does_not_exist(
    env_settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    """The gate's evidence is the log's exploration: with a mistyped
    NEXTBEST_DATABASE_URL, evaluate and promote made an empty log there and judged the
    challenger on no evidence."""
    env_settings.mkdir()
    typo = _typo(tmp_path, monkeypatch)
    result = runner.invoke(app, command)
    said = _said(result)
    assert result.exit_code == 2, said
    assert f"error: no recommendation log at {typo}" in said, said
    assert "this command reads the log kept there and makes none" in said, said
    assert not (tmp_path / "some").exists()


@pytest.mark.parametrize("command", [["evaluate"], ["promote"]])
def test_the_gate_run_without_the_setting_refuses_a_log_not_made(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    """A PostgreSQL deployment's evaluation job run without NEXTBEST_DATABASE_URL:
    evaluate and promote made an empty SQLite log in the models directory and said
    "no logged decisions have an outcome yet" of a log the servers fill elsewhere."""
    from nextbest.learning.train import TrainResult

    _served_copy(trained, tmp_path, monkeypatch)
    settings = get_settings()
    model = registry.load_version(trained.settings, trained.version)
    result = TrainResult(model=model, metrics={}, params={})
    registry.log_training_run(result, settings, alias="challenger")
    log = settings.resolved_models_dir / "nextbest.db"
    assert not log.exists()
    result = runner.invoke(app, command)
    said = _said(result)
    assert result.exit_code == 2, said
    assert (
        f"error: no recommendation log at {log} (NEXTBEST_DATABASE_URL is not set: kept in "
        "the models directory): this command reads the log kept there and makes none"
    ) in said, said
    assert "set NEXTBEST_DATABASE_URL as they have it" in said, said
    assert "evaluating" not in said, said  # refused before any line of the gate
    assert not log.exists()
