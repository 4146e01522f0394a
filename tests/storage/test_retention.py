"""Retention: deleting the log and feedback from before a cutoff, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from nextbest.policy.rules import ServingRules
from nextbest.service.erasure import CutoffError, check_cutoff, prune, rows_before
from nextbest.settings import Settings
from nextbest.storage import FeedbackRecord, log_recommendations, record_feedback
from nextbest.storage.repository import (
    PruneKept,
    RowCounts,
    count_rows_before,
    erasure_event_id,
    maintenance_runs,
    prune_batch,
)
from nextbest.storage.tables import FeedbackEvent, Recommendation, RecommendationItem
from nextbest.storage.testing import T0, recommendation_record, served_item

CUT = T0 + timedelta(days=10)
H = "H-1"


def _event(
    event_id: str, occurred_at: datetime, event_type: str = "opened", **extra: Any
) -> FeedbackRecord:
    return FeedbackRecord(event_id, event_type, occurred_at, extra.pop("hcp_id", H), **extra)


def _fill(session: Session) -> None:
    """Answers and events on both sides of CUT, consent events and a suppression."""
    item = served_item(1, "A1")
    log_recommendations(
        session,
        records=[
            recommendation_record("old", H, items=(item, served_item(2, "A2")), created_at=T0),
            recommendation_record("old-holdout", H, holdout=True, created_at=T0),
            # Logged before the cutoff for a decision after it (a plan for next week).
            recommendation_record(
                "old-ahead",
                H,
                items=(item,),
                created_at=CUT - timedelta(days=1),
                decided_for=CUT + timedelta(days=1),
            ),
            # The send an HCP unsubscribed from: kept whole with its opt-out.
            recommendation_record("old-unsubscribed", H, items=(item,), created_at=T0),
            recommendation_record("at-cut", H, items=(item,), created_at=CUT),
            recommendation_record("new", H, items=(item,), created_at=CUT + timedelta(hours=1)),
        ],
    )
    session.commit()
    result = record_feedback(
        session,
        erasure=True,  # an erasure's suppression among them, as erase stores it
        events=[
            _event("open-old", T0 + timedelta(hours=1), recommendation_id="old", action_id="A1"),
            # Tied to an old answer, after the cutoff: nothing from the cutoff on goes,
            # so the answer is kept whole (as one a dismissal the rules still count).
            _event(
                "late-nrx", CUT + timedelta(days=2), "outcome", recommendation_id="old", value=2
            ),
            _event("delivered-old", T0, "delivered", channel="email"),
            _event("nrx-old", T0 + timedelta(days=1), "outcome", value=1.0),
            _event("nrx-at-cut", CUT, "outcome", value=1.0),
            _event("nrx-new", CUT + timedelta(days=1), "outcome", value=1.0),
            _event("open-new", CUT + timedelta(hours=2), recommendation_id="new", action_id="A1"),
            _event("out-old", T0, "opted_out", channel="email"),
            _event("in-old", T0 + timedelta(hours=1), "opted_in", channel="email"),
            _event(
                "unsub", T0 + timedelta(hours=1), "opted_out", recommendation_id="old-unsubscribed"
            ),
            _event(
                "open-unsub",
                T0 + timedelta(hours=1),
                recommendation_id="old-unsubscribed",
                action_id="A1",
            ),
            _event(erasure_event_id("H-gone"), T0, "opted_out", hcp_id="H-gone"),
        ],
    )
    assert not result.rejected, result.rejected


def _left(session: Session) -> dict[str, list[Any]]:
    return {
        "recommendations": sorted(session.scalars(select(Recommendation.recommendation_id))),
        "recommendation_items": sorted(
            (row.recommendation_id, row.rank)
            for row in session.execute(
                select(RecommendationItem.recommendation_id, RecommendationItem.rank)
            )
        ),
        "feedback_events": sorted(session.scalars(select(FeedbackEvent.event_id))),
    }


def test_a_prune_deletes_what_is_older_than_the_cutoff_and_keeps_consent(
    session: Session,
) -> None:
    _fill(session)
    assert count_rows_before(session, before=CUT) == (
        RowCounts(recommendations=1, recommendation_items=0, feedback_events=2),
        PruneKept(consent_events=4, suppressions=1, recommendations=2),
    )

    assert prune_batch(session, before=CUT) == RowCounts(1, 0, 0)  # the answers first
    assert prune_batch(session, before=CUT) == RowCounts(0, 0, 2)  # then untied events
    assert prune_batch(session, before=CUT) == RowCounts()

    assert _left(session) == {
        "recommendations": ["at-cut", "new", "old", "old-ahead", "old-unsubscribed"],
        "recommendation_items": [
            ("at-cut", 1),
            ("new", 1),
            ("old", 1),
            ("old", 2),
            ("old-ahead", 1),
            ("old-unsubscribed", 1),
        ],
        "feedback_events": sorted(
            [
                "in-old",
                "late-nrx",
                "open-old",
                "nrx-at-cut",
                "nrx-new",
                "open-new",
                "open-unsub",
                "out-old",
                "unsub",
                erasure_event_id("H-gone"),
            ]
        ),
    }
    deleted, kept = count_rows_before(session, before=CUT)
    assert deleted == RowCounts() and kept.consent_events == 4


def test_a_prune_runs_in_batches_until_everything_old_is_gone(
    database_url: str, session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nextbest.storage.repository as repository

    monkeypatch.setattr(repository, "PRUNE_BATCH", 2)
    log_recommendations(
        session,
        records=[
            recommendation_record(
                f"r{n}", H, items=(served_item(1, "A1"),), created_at=T0 + timedelta(minutes=n)
            )
            for n in range(5)
        ]
        + [recommendation_record("kept", H, created_at=CUT)],
    )
    session.commit()
    events = [
        _event(f"open-{n}", T0 + timedelta(hours=1), recommendation_id=f"r{n}", action_id="A1")
        for n in range(5)
    ] + [_event(f"nrx-{n}", T0 + timedelta(days=n), "outcome", value=1.0) for n in range(3)]
    assert not record_feedback(session, events=events).rejected
    session.close()
    settings = Settings(models_dir=tmp_path / "models", database_url=database_url)
    assert rows_before(settings, CUT)[0] == RowCounts(5, 5, 8)

    batches: list[RowCounts] = []
    deleted, cleanup = prune(settings, CUT, progress=batches.append)

    assert batches == [
        RowCounts(2, 2, 2),
        RowCounts(2, 2, 2),
        RowCounts(1, 1, 1),
        RowCounts(0, 0, 2),
        RowCounts(0, 0, 1),
    ]
    assert deleted == RowCounts(5, 5, 8)
    assert _left(session) == {
        "recommendations": ["kept"],
        "recommendation_items": [],
        "feedback_events": [],
    }
    # One run recorded, every batch's counts added to it.
    [run], total = maintenance_runs(session, limit=10)
    assert total == 1 and (run.command, run.outcome, run.arguments) == ("prune", "finished", None)
    assert run.deleted == deleted and run.cutoff == CUT
    assert run.requester.startswith("nextbest prune (")
    if database_url.startswith("sqlite"):
        assert cleanup.backend == "sqlite" and cleanup.log_emptied
    else:
        assert cleanup.backend == "postgresql" and cleanup.complete, cleanup
        assert set(cleanup.vacuumed) == {
            "feedback_events",
            "recommendation_items",
            "recommendations",
        }


NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
RULES = ServingRules.from_mapping(
    {
        "channels": {"email": {"max_contacts": 3, "per_days": 28, "cooldown_days": 3}},
        "dismissal_days": 30,
        "snooze_days": 7,
    },
    source="rules.yaml",
)


@pytest.mark.parametrize(
    ("before", "rules", "match"),
    [
        pytest.param(NOW + timedelta(seconds=1), ServingRules(), "is in the future", id="future"),
        pytest.param(
            NOW - timedelta(days=29),
            RULES,
            r"dismissal_days is 30 days in rules.yaml, and deleting what it counts would let "
            r"serving contact HCPs again too soon",
            id="inside-dismissals",
        ),
        pytest.param(
            NOW - timedelta(days=2),
            ServingRules.from_mapping({"all_channels": {"max_contacts": 8, "per_days": 7}}),
            r"all_channels.per_days is 7 days",
            id="inside-budget",
        ),
    ],
)
def test_a_cutoff_in_the_future_or_inside_the_rules_windows_is_refused(
    before: datetime, rules: ServingRules, match: str
) -> None:
    with pytest.raises(CutoffError, match=match):
        check_cutoff(before, rules, now=NOW)


def test_a_cutoff_at_or_before_the_rules_longest_window_is_allowed() -> None:
    check_cutoff(NOW - timedelta(days=30), RULES, now=NOW)
    check_cutoff(NOW, ServingRules(), now=NOW)  # no rule reads history: up to now
    with pytest.raises(CutoffError) as refused:
        check_cutoff(NOW - timedelta(days=30) + timedelta(seconds=1), RULES, now=NOW)
    assert refused.value.latest == NOW - timedelta(days=30)
    assert (refused.value.days, refused.value.rule) == (30, "dismissal_days")


def test_a_batch_that_feedback_arriving_meanwhile_failed_is_run_again(
    database_url: str, session: Session, tmp_path: Path
) -> None:
    """An event about one of the batch's answers stored between its DELETEs (as a
    server's could be) fails the batch on the foreign key; the batch is rolled back
    and selected afresh."""
    from sqlalchemy import event, insert
    from sqlalchemy.engine import Engine

    log_recommendations(
        session, records=[recommendation_record("old", H, items=(served_item(1, "A1"),))]
    )
    session.commit()
    session.close()
    raced: list[str] = []

    def race(connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("DELETE FROM recommendation_items") and not raced:
            raced.append(statement)  # stored in the batch's transaction: rolled back with it
            late = {"event_id": "late", "event_type": "opened", "hcp_id": H}
            connection.execute(
                insert(FeedbackEvent).values(
                    **late, occurred_at=T0, received_at=T0, recommendation_id="old"
                )
            )

    event.listen(Engine, "after_cursor_execute", race)
    try:
        settings = Settings(models_dir=tmp_path / "models", database_url=database_url)
        batches: list[RowCounts] = []
        deleted, _ = prune(settings, CUT, progress=batches.append)
    finally:
        event.remove(Engine, "after_cursor_execute", race)
    assert raced, "the race was not run"
    assert deleted == RowCounts(recommendations=1, recommendation_items=1)
    assert batches == [deleted]
    assert _left(session) == {
        "recommendations": [],
        "recommendation_items": [],
        "feedback_events": [],
    }


def test_a_prune_stopped_by_ctrl_c_is_recorded_with_what_its_batches_deleted(
    database_url: str, session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted by the operator between batches: the batches before stay deleted,
    the run says interrupted with their counts, and the interrupt goes on up."""
    import nextbest.storage.repository as repository

    monkeypatch.setattr(repository, "PRUNE_BATCH", 1)
    log_recommendations(
        session,
        records=[
            recommendation_record(f"r{n}", H, created_at=T0 + timedelta(minutes=n))
            for n in range(3)
        ],
    )
    session.commit()
    session.close()
    settings = Settings(models_dir=tmp_path / "models", database_url=database_url)

    batches: list[RowCounts] = []

    def stop_after_two(batch: RowCounts) -> None:
        batches.append(batch)
        if len(batches) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prune(settings, CUT, arguments="--before 2024-03-14", progress=stop_after_two)
    assert _left(session)["recommendations"] == ["r2"]
    [run], _ = maintenance_runs(session, limit=10)
    assert (run.outcome, run.detail, run.arguments) == (
        "interrupted",
        "KeyboardInterrupt",
        "--before 2024-03-14",
    )
    assert run.deleted == RowCounts(recommendations=2) and run.ended_at is not None
