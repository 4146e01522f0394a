"""`nextbest prune` through the command line: the cutoff, refusals, counts, confirmation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from nextbest.cli import app
from nextbest.service.requester import os_user
from nextbest.settings import get_settings
from nextbest.storage import FeedbackRecord, log_recommendations, record_feedback
from nextbest.storage.db import store_session
from nextbest.storage.repository import (
    MaintenanceRecord,
    RowCounts,
    erasure_event_id,
    maintenance_runs,
)
from nextbest.storage.tables import FeedbackEvent, Recommendation, RecommendationItem
from nextbest.storage.testing import T0, recommendation_record, served_item

runner = CliRunner()


def _said(result) -> str:
    return " ".join(result.output.split())


@pytest.fixture
def store(
    env_settings: Path, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """A store (SQLite, PostgreSQL) with answers and events from T0 (2024) and from
    yesterday, and serving rules that read 30 days back."""
    recent = datetime.now(UTC) - timedelta(days=1)
    rules = tmp_path / "rules.yaml"
    rules.write_text("dismissal_days: 30\nsnooze_days: 7\n")
    monkeypatch.setenv("NEXTBEST_RULES_FILE", str(rules))
    monkeypatch.setenv("NEXTBEST_DATABASE_URL", database_url)
    get_settings.cache_clear()
    url = get_settings().resolved_database_url
    with store_session(url) as session:
        log_recommendations(
            session,
            records=[
                recommendation_record("old", "H1", items=(served_item(1, "A1"),), created_at=T0),
                recommendation_record(
                    "recent", "H1", items=(served_item(1, "A1"),), created_at=recent
                ),
            ],
        )
        session.commit()
        result = record_feedback(
            session,
            erasure=True,  # an erasure's suppression among them, as erase stores it
            events=[
                FeedbackRecord("open-old", "opened", T0, "H1", "old", "A1"),
                FeedbackRecord("nrx-old", "outcome", T0, "H1", value=2.0),
                FeedbackRecord("out-old", "opted_out", T0, "H1", channel="email"),
                FeedbackRecord(erasure_event_id("H2"), "opted_out", T0, "H2"),
                FeedbackRecord("open-recent", "opened", recent, "H1", "recent", "A1"),
            ],
        )
        assert not result.rejected, result.rejected
    return url


def _rows(url: str) -> tuple[list[str], int, list[str]]:
    with store_session(url) as session:
        return (
            sorted(session.scalars(select(Recommendation.recommendation_id))),
            len(session.scalars(select(RecommendationItem.rank)).all()),
            sorted(session.scalars(select(FeedbackEvent.event_id))),
        )


ALL = (
    ["old", "recent"],
    2,
    sorted(["open-old", "nrx-old", "out-old", erasure_event_id("H2"), "open-recent"]),
)
PRUNED = (["recent"], 1, sorted(["out-old", erasure_event_id("H2"), "open-recent"]))


@pytest.mark.parametrize(
    ("args", "said"),
    [
        ([], "error: give the cutoff as --before DATE or --older-than DAYS (exactly one)"),
        (["--before", "2024-01-01", "--older-than", "730"], "(exactly one)"),
        (["--before", "last year"], "error: --before 'last year' is not a date (use YYYY-MM-DD"),
        (
            ["--before", "2099-01-01", "--yes"],
            "error: --before 2099-01-01 (2099-01-01 00:00:00 UTC) is in the future",
        ),
        (
            ["--older-than", "10", "--yes"],
            "is inside the history serving reads: dismissal_days is 30 days in ",
        ),
        (["--older-than", "29", "--dry-run"], "(--older-than 30 or more); nothing was deleted"),
        (["--older-than", "0"], "error: --older-than 0: give 1 to 36,500 days"),
        (
            ["--older-than", "2y", "--yes"],
            "error: --older-than '2y' is not a number of days: give whole days, such as "
            "--older-than 730 for two years",
        ),
        (["--older-than", "17520h", "--yes"], "error: --older-than '17520h' is not a number of"),
    ],
    ids=[
        "no-cutoff",
        "both",
        "not-a-date",
        "future",
        "inside-rules",
        "inside-dry-run",
        "zero",
        "years",
        "hours",
    ],
)
def test_prune_refuses_a_bad_cutoff_with_exit_2_and_deletes_nothing(
    store: str, args: list[str], said: str
) -> None:
    result = runner.invoke(app, ["prune", *args])
    assert result.exit_code == 2, result.output
    assert said in _said(result), result.output
    assert _rows(store) == ALL


def test_prune_inside_the_rules_names_the_latest_cutoff_allowed(store: str) -> None:
    result = runner.invoke(app, ["prune", "--older-than", "10"])
    latest = datetime.now(UTC) - timedelta(days=30)
    said = _said(result)
    assert "the latest cutoff allowed is " in said, said
    shown = said.split("the latest cutoff allowed is ")[1][:19]
    assert abs(datetime.fromisoformat(shown).replace(tzinfo=UTC) - latest) < timedelta(minutes=1)


def test_prune_without_a_rules_file_refuses(store: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("NEXTBEST_RULES_FILE", str(tmp_path / "missing.yaml"))
    get_settings.cache_clear()
    result = runner.invoke(app, ["prune", "--older-than", "730", "--yes"])
    assert result.exit_code == 2, result.output
    assert "NEXTBEST_RULES_FILE names" in _said(result) and "does not exist" in _said(result)
    assert _rows(store) == ALL


def test_prune_counts_asks_and_deletes_what_is_older_than_the_cutoff(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The offset is honoured: 2024-03-05 01:00+02:00 is 2024-03-04 23:00 UTC.
    before = ["prune", "--before", "2024-03-05T01:00:00+02:00"]
    dry = runner.invoke(app, [*before, "--dry-run"])
    said = _said(dry)
    assert dry.exit_code == 0, dry.output
    assert "rows from before 2024-03-04 23:00:00 UTC in " in said, said
    assert "recommendations 1" in said and "recommendation_items 1" in said, said
    assert "feedback_events 2" in said, said
    assert (
        "kept: 2 consent events (opted_out, opted_in) from before then, 1 of them erasure "
        "suppressions: they decide whether an HCP may be contacted at all" in said
    ), said
    assert (
        "the uplift report, the gate (evaluate, promote) and retrain no longer see these "
        "answers and their feedback" in said
    ), said
    assert "dry run: nothing was deleted" in said, said
    assert _rows(store) == ALL

    # Not on a terminal (cron) without --yes: refused, after the counts.
    refused = runner.invoke(app, before)
    assert refused.exit_code == 2, refused.output
    assert "error: not on a terminal: pass --yes to prune (nothing was deleted)" in _said(refused)
    assert _rows(store) == ALL

    monkeypatch.setattr("nextbest.cli.privacy.on_a_terminal", lambda: True)
    declined = runner.invoke(app, before, input="n\n")
    assert declined.exit_code == 2, declined.output
    assert "not confirmed: nothing was deleted" in _said(declined)
    assert _rows(store) == ALL
    unanswered = runner.invoke(app, before, input="")  # Ctrl-D: a no, not exit 1
    assert unanswered.exit_code == 2, unanswered.output
    assert "not confirmed: nothing was deleted" in _said(unanswered)
    assert _rows(store) == ALL

    pruned = runner.invoke(app, before, input="y\n")
    said = _said(pruned)
    assert pruned.exit_code == 0, pruned.output
    assert (
        "of what is older than 2024-03-04 23:00:00 UTC: deleted 1 recommendation, "
        "1 recommendation item and 2 feedback events; consent events and erasure "
        "suppressions kept" in said
    ), said
    assert _rows(store) == PRUNED
    if store.startswith("sqlite"):  # the deleted rows are not left in the write-ahead log
        database = Path(store.removeprefix("sqlite:///"))
        wal = database.with_name(database.name + "-wal")
        assert not wal.exists() or wal.stat().st_size == 0
    else:  # nor as dead rows in PostgreSQL's tables
        assert "vacuumed feedback_events, recommendation_items, recommendations" in said, said

    again = runner.invoke(app, [*before, "--yes"])
    assert again.exit_code == 0, again.output
    assert "nothing to delete from before 2024-03-04 23:00:00 UTC" in _said(again)
    assert _rows(store) == PRUNED


@pytest.mark.parametrize("days", ["730", "730d", " 730D "])
def test_prune_older_than_days_from_a_job(store: str, days: str) -> None:
    """What cron runs: --older-than and --yes, off a terminal; a line per tenth of the
    work instead of a bar. The days may carry their unit, as --keep-old's do."""
    result = runner.invoke(app, ["prune", "--older-than", days, "--yes"])
    assert result.exit_code == 0, result.output
    said = _said(result)
    assert "deleted 1 recommendation, 1 recommendation item and 2 feedback events" in said, said
    assert "pruning rows: 4/4" in said, said
    assert _rows(store) == PRUNED


def test_a_prune_stopped_by_the_database_says_what_it_deleted(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection dropped after a first batch: the message named the MLflow store
    and nothing of the rows already deleted."""
    from sqlalchemy.exc import OperationalError

    import nextbest.service.erasure as erasure

    real = erasure.prune_batch
    calls: list[int] = []

    def dropped(session, *, before, run_id=None):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) > 1:
            raise OperationalError("DELETE", {}, Exception("server closed the connection"))
        return real(session, before=before, run_id=run_id)

    monkeypatch.setattr(erasure, "prune_batch", dropped)
    result = runner.invoke(app, ["prune", "--older-than", "400", "--yes"])
    said = _said(result)
    assert result.exit_code == 2, said
    assert "error: prune stopped by a database error after deleting 3 rows (those batches " in said
    assert "run it again once the database answers" in said and "MLflow" not in said
    # The trail says so, with what the committed batch deleted and why it stopped.
    [run] = _runs(store)
    assert f"recorded as interrupted in maintenance_runs (run {run.run_id})" in said, said
    assert (run.command, run.outcome) == ("prune", "interrupted")
    assert run.deleted == RowCounts(1, 1, 1) and run.ended_at is not None
    assert "server closed the connection" in (run.detail or ""), run.detail


def _runs(url: str) -> list[MaintenanceRecord]:
    with store_session(url) as session:
        return maintenance_runs(session, limit=100)[0]


def test_a_prune_records_who_ran_it_when_its_cutoff_and_what_it_deleted(store: str) -> None:
    """The audit trail: one maintenance_runs row per run, in the database itself; a
    dry run records nothing, a run that finds nothing to delete records that."""
    dry = runner.invoke(app, ["prune", "--older-than", "730", "--dry-run"])
    assert dry.exit_code == 0 and "dry run: nothing was deleted" in _said(dry), dry.output
    assert _runs(store) == []

    started = datetime.now(UTC)
    result = runner.invoke(app, ["prune", "--older-than", "730", "--yes"])
    said = _said(result)
    assert result.exit_code == 0, said
    assert "recorded in maintenance_runs (`nextbest lookup --maintenance`)" in said, said
    [run] = _runs(store)
    assert (run.command, run.outcome, run.detail) == ("prune", "finished", None)
    assert run.requester == f"nextbest prune ({os_user()})"
    assert run.arguments == "--older-than 730 --yes" and run.hcps is None
    assert run.deleted == RowCounts(1, 1, 2)
    assert run.cutoff is not None
    assert abs(run.cutoff - (started - timedelta(days=730))) < timedelta(minutes=1)
    assert run.ended_at is not None
    assert started - timedelta(seconds=1) <= run.started_at <= run.ended_at <= datetime.now(UTC)

    again = runner.invoke(app, ["prune", "--older-than", "730"])  # no --yes: nothing to ask
    assert again.exit_code == 0, again.output
    assert "nothing to delete from before " in _said(again)
    latest, first = _runs(store)
    assert first == run
    assert (latest.outcome, latest.deleted, latest.arguments) == (
        "finished",
        RowCounts(),
        "--older-than 730",
    )
    nothing_dry = runner.invoke(app, ["prune", "--older-than", "730", "--dry-run"])
    assert nothing_dry.exit_code == 0 and len(_runs(store)) == 2


def test_a_prune_that_feedback_kept_failing_is_recorded_as_interrupted(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Feedback about the batch's answers arriving on every try: the prune stops after
    PRUNE_TRIES, and its row says interrupted, why, and what the batches before
    deleted (the failed tries' counts rolled back with them)."""
    from sqlalchemy.exc import IntegrityError

    import nextbest.service.erasure as erasure

    real = erasure.prune_batch
    calls: list[int] = []

    def raced(session, *, before, run_id=None):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) > 1:  # as a batch rolled back on its foreign key
            raise IntegrityError("DELETE", {}, Exception("violates foreign key constraint"))
        return real(session, before=before, run_id=run_id)

    monkeypatch.setattr(erasure, "PRUNE_TRIES", 2)
    monkeypatch.setattr(erasure, "prune_batch", raced)
    result = runner.invoke(app, ["prune", "--older-than", "400", "--yes"])
    said = _said(result)
    assert result.exit_code == 2, said
    assert "error: feedback kept arriving about the answers being pruned (2 tries" in said, said
    [run] = _runs(store)
    assert f"(recorded as interrupted in maintenance_runs (run {run.run_id}))" in said, said
    assert run.outcome == "interrupted" and run.ended_at is not None
    assert (run.detail or "").startswith("feedback kept arriving about the answers"), run.detail
    # The first batch's rows are counted: they alone were committed.
    assert run.deleted == RowCounts(1, 1, 1)
    assert _rows(store) == (["recent"], 1, sorted([*PRUNED[2], "nrx-old"]))
    listed = _said(runner.invoke(app, ["lookup", "--maintenance"]))
    assert "--older-than 400 --yes: interrupted 20" in listed, listed
    assert "stopped before the end: feedback kept arriving about the answers" in listed, listed
    partly = _said(runner.invoke(app, ["lookup", "--hcp", "H404"]))
    assert "were partly pruned (the run was interrupted) by nextbest prune (" in partly, partly


def test_a_prune_that_cannot_record_its_run_deletes_nothing(store: str) -> None:
    """The database refuses the run's row (here a trigger; in production a role
    without INSERT on maintenance_runs): nothing is deleted without a trail."""
    from sqlalchemy import text

    from nextbest.storage import make_engine

    engine = make_engine(store)
    try:
        with engine.begin() as connection:
            if store.startswith("sqlite"):
                connection.execute(
                    text(
                        "CREATE TRIGGER no_runs BEFORE INSERT ON maintenance_runs "
                        "BEGIN SELECT RAISE(ABORT, 'no runs here'); END"
                    )
                )
            else:
                connection.execute(
                    text(
                        "CREATE FUNCTION no_runs() RETURNS trigger LANGUAGE plpgsql AS "
                        "$$ BEGIN RAISE EXCEPTION 'no runs here'; END $$"
                    )
                )
                connection.execute(
                    text(
                        "CREATE TRIGGER no_runs BEFORE INSERT ON maintenance_runs "
                        "FOR EACH ROW EXECUTE FUNCTION no_runs()"
                    )
                )
    finally:
        engine.dispose()
    result = runner.invoke(app, ["prune", "--older-than", "730", "--yes"])
    said = _said(result)
    assert result.exit_code == 2, said
    assert (
        "error: the run could not be recorded in maintenance_runs, so nothing was deleted: " in said
    ), said
    assert "no runs here" in said and "needs SELECT, INSERT and UPDATE on maintenance_runs" in said
    assert _rows(store) == ALL and _runs(store) == []


def test_lookup_by_hcp_says_whether_its_rows_may_have_been_pruned(store: str) -> None:
    """'pruned' is a fact from maintenance_runs, not a guess."""
    with store_session(store) as session:
        log_recommendations(session, records=[recommendation_record("gone", "H9", created_at=T0)])
        session.commit()
    never = _said(runner.invoke(app, ["lookup", "--hcp", "H404"]))
    assert "nothing logged about this id: never asked for, or an id the served model" in never
    assert "no prune is recorded in maintenance_runs; ids match exactly" in never, never
    assert "H9: 1 logged answer" in _said(runner.invoke(app, ["lookup", "--hcp", "H9"]))

    assert runner.invoke(app, ["prune", "--older-than", "730", "--yes"]).exit_code == 0
    [run] = _runs(store)
    assert run.cutoff is not None
    result = runner.invoke(app, ["lookup", "--hcp", "H9"])
    said = _said(result)
    assert result.exit_code == 0, said
    assert "HCP H9: 0 logged answers" in said, said
    assert (
        f"or logged before a prune: rows older than {run.cutoff.isoformat()} were pruned by "
        f"{run.requester} in the run of {run.started_at.isoformat()} (`nextbest lookup "
        "--maintenance` lists every run); ids match exactly" in said
    ), said
    found = json.loads(runner.invoke(app, ["lookup", "--hcp", "H9", "--json"]).stdout)
    assert found["pruned"]["run_id"] == run.run_id
    assert found["pruned"]["cutoff"] == run.cutoff.isoformat()
    # An HCP with rows left is told its older ones went.
    kept = _said(runner.invoke(app, ["lookup", "--hcp", "H1"]))
    assert "HCP H1: 1 logged answer" in kept and "rows older than 20" in kept, kept
    assert f"were pruned by {run.requester} in the run of " in kept, kept


def test_lookup_maintenance_lists_prunes_and_erasures_newest_first(store: str) -> None:
    empty = runner.invoke(app, ["lookup", "--maintenance"])
    assert empty.exit_code == 0, empty.output
    assert "0 of 0 shown" in _said(empty) and "none: nothing was pruned or erased" in _said(empty)

    assert runner.invoke(app, ["prune", "--older-than", "730", "--yes"]).exit_code == 0
    assert runner.invoke(app, ["erase", "H1", "--yes"]).exit_code == 0
    user = os_user()
    result = runner.invoke(app, ["lookup", "--maintenance"])
    said = _said(result)
    assert result.exit_code == 0, said
    assert "maintenance runs in " in said and ": 2 of 2 shown, newest first" in said, said
    erased_at = said.index(f"erase by nextbest erase ({user}), 1 HCP: finished 20")
    pruned_at = said.index(f"prune by nextbest prune ({user}), --older-than 730 --yes: finished")
    assert erased_at < pruned_at, said
    # The erasure took what the prune left of H1: its recent answer, the event about
    # it and its opt-out; the prune says its cutoff.
    erasure, prune = said[erased_at:pruned_at], said[pruned_at:]
    assert (
        "deleted 1 recommendation, 1 recommendation item and 2 feedback events (run " in erasure
    ), said
    assert "older than" not in erasure, said
    assert (
        " what was older than 20" in prune
        and "deleted 1 recommendation, 1 recommendation item and 2 feedback events (run " in prune
    ), said
    cut = _said(runner.invoke(app, ["lookup", "--maintenance", "--limit", "1"]))
    assert "1 of 2 shown, newest first; --limit 2 shows all" in cut and "prune by" not in cut
    found = json.loads(runner.invoke(app, ["lookup", "--maintenance", "--json"]).stdout)
    assert found["n_runs"] == 2
    assert [r["command"] for r in found["runs"]] == ["erase", "prune"]
    assert found["runs"][0]["hcps"] == 1 and found["runs"][0]["cutoff"] is None
    assert found["runs"][1]["deleted"] == {
        "recommendations": 1,
        "recommendation_items": 1,
        "feedback_events": 2,
    }
    both = runner.invoke(app, ["lookup", "--maintenance", "--hcp", "H1"])
    assert both.exit_code == 2 and "one of them" in both.output, both.output


def test_the_recorded_user_is_the_account_not_what_logname_claims(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An audit trail names who ran a command by the process's user id: LOGNAME is an
    environment variable anyone can set, so a differing claim is recorded beside it."""
    import os
    import pwd

    from nextbest.service.requester import file_requester

    account = pwd.getpwuid(os.getuid()).pw_name
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(name, raising=False)
    assert os_user() == account
    monkeypatch.setenv("LOGNAME", account)
    assert file_requester("prune") == f"nextbest prune ({account})"
    monkeypatch.setenv("LOGNAME", "mallory")
    assert os_user() == f"{account}, LOGNAME says mallory"
    assert file_requester("erase") == f"nextbest erase ({account}, LOGNAME says mallory)"
    # A claim of any length: the requester is cut to the width the log stores (on
    # PostgreSQL a longer one failed the write of every answer or event it named).
    monkeypatch.setenv("LOGNAME", "m" * 300)
    said = file_requester("picks")
    assert len(said) == 128
    assert said.startswith(f"nextbest picks ({account}, LOGNAME says mmm") and said.endswith(
        "m...)"
    )


def test_a_prune_stopped_by_sigterm_is_recorded_as_interrupted_and_says_so(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduler's timeout (SIGTERM) after a batch: the process ended at the signal,
    its run left 'running' in maintenance_runs for good and nothing said. It stops as
    Ctrl-C does: exit code 143, the run marked interrupted by SIGTERM with the first
    batch's counts, and a line saying what was deleted and to run it again."""
    import signal

    import nextbest.service.erasure as erasure

    real = erasure.prune_batch
    calls: list[int] = []

    def timed_out(session, *, before, run_id=None):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) > 1:
            # Raised only where the command handles it: at the default, the test's own
            # process would end here.
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, (
                "SIGTERM would end prune at once, its run left 'running'"
            )
            signal.raise_signal(signal.SIGTERM)
        return real(session, before=before, run_id=run_id)

    monkeypatch.setattr(erasure, "prune_batch", timed_out)
    result = runner.invoke(app, ["prune", "--older-than", "400", "--yes"])
    said = _said(result)
    assert result.exit_code == 143, said
    assert (
        "error: prune was interrupted (SIGTERM) after deleting 3 rows: those batches are "
        "committed and stay deleted, and its run is marked interrupted in maintenance_runs "
        "(`nextbest lookup --maintenance`); run it again to delete the rest"
    ) in said, said
    [run] = _runs(store)
    assert run.outcome == "interrupted" and run.ended_at is not None
    assert run.detail == "stopped by SIGTERM", run.detail
    assert run.deleted == RowCounts(1, 1, 1)
    assert _rows(store) == (["recent"], 1, sorted([*PRUNED[2], "nrx-old"]))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back after the run
    monkeypatch.setattr(erasure, "prune_batch", real)
    assert runner.invoke(app, ["prune", "--older-than", "400", "--yes"]).exit_code == 0
    assert _rows(store) == PRUNED
