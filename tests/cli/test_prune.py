"""`nextbest prune` through the command line: the cutoff, refusals, counts, confirmation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from nextbest.cli import app
from nextbest.settings import get_settings
from nextbest.storage import FeedbackRecord, log_recommendations, record_feedback
from nextbest.storage.db import store_session
from nextbest.storage.repository import erasure_event_id
from nextbest.storage.tables import FeedbackEvent, Recommendation, RecommendationItem
from nextbest.storage.testing import T0, recommendation_record, served_item

runner = CliRunner()
RECENT = datetime.now(UTC) - timedelta(days=1)


def _said(result) -> str:
    return " ".join(result.output.split())


@pytest.fixture
def store(
    env_settings: Path, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """A store (SQLite, PostgreSQL) with answers and events from T0 (2024) and from
    yesterday, and serving rules that read 30 days back."""
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
                    "recent", "H1", items=(served_item(1, "A1"),), created_at=RECENT
                ),
            ],
        )
        session.commit()
        result = record_feedback(
            session,
            events=[
                FeedbackRecord("open-old", "opened", T0, "H1", "old", "A1"),
                FeedbackRecord("nrx-old", "outcome", T0, "H1", value=2.0),
                FeedbackRecord("out-old", "opted_out", T0, "H1", channel="email"),
                FeedbackRecord(erasure_event_id("H2"), "opted_out", T0, "H2"),
                FeedbackRecord("open-recent", "opened", RECENT, "H1", "recent", "A1"),
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
        (["--older-than", "0"], "Invalid value for '--older-than'"),
    ],
    ids=["no-cutoff", "both", "not-a-date", "future", "inside-rules", "inside-dry-run", "zero"],
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

    monkeypatch.setattr("nextbest.cli._on_a_terminal", lambda: True)
    declined = runner.invoke(app, before, input="n\n")
    assert declined.exit_code == 2, declined.output
    assert "not confirmed: nothing was deleted" in _said(declined)
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


def test_prune_older_than_days_from_a_job(store: str) -> None:
    """What cron runs: --older-than and --yes, off a terminal; a line per tenth of the
    work instead of a bar."""
    result = runner.invoke(app, ["prune", "--older-than", "730", "--yes"])
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

    def dropped(session, *, before):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) > 1:
            raise OperationalError("DELETE", {}, Exception("server closed the connection"))
        return real(session, before=before)

    monkeypatch.setattr(erasure, "prune_batch", dropped)
    result = runner.invoke(app, ["prune", "--older-than", "400", "--yes"])
    said = _said(result)
    assert result.exit_code == 2, said
    assert "error: prune stopped by a database error after deleting 3 rows (those batches " in said
    assert "run it again once the database answers" in said and "MLflow" not in said
