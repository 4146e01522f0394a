"""Erasure of HCPs (right to erasure) in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from nextbest.storage import FeedbackRecord, log_recommendations, record_feedback
from nextbest.storage.repository import (
    ErasureError,
    RowCounts,
    count_hcp_rows,
    erase_hcps,
    erased_already,
    erasure_event_id,
    maintenance_runs,
    serving_history,
)
from nextbest.storage.tables import FeedbackEvent, Recommendation, RecommendationItem
from nextbest.storage.testing import T0, recommendation_record, served_item

ERASED, KEPT = "H-erased", "H-kept"


def _event(event_id: str, hcp_id: str, event_type: str = "opened", **extra: Any) -> FeedbackRecord:
    return FeedbackRecord(
        event_id=event_id,
        event_type=event_type,
        occurred_at=T0 + timedelta(hours=1),
        hcp_id=hcp_id,
        **extra,
    )


def _fill(session: Session) -> None:
    """Two HCPs, each with answers, items, engagement, a dismissal with a free-text
    reason and consent events; one event of KEPT about ERASED's answer."""
    log_recommendations(
        session,
        records=[
            recommendation_record(
                f"r-{hcp}-{n}",
                hcp,
                items=(served_item(1, "A1"), served_item(2, "A2", "rep_visit")),
                created_at=T0 + timedelta(minutes=n),
            )
            for hcp in (ERASED, KEPT)
            for n in range(3)
        ]
        + [recommendation_record(f"r-{ERASED}-holdout", ERASED, holdout=True)],
    )
    session.commit()
    for hcp in (ERASED, KEPT):
        result = record_feedback(
            session,
            events=[
                _event(f"open-{hcp}", hcp, recommendation_id=f"r-{hcp}-0", action_id="A1"),
                _event(
                    f"dismiss-{hcp}",
                    hcp,
                    "dismissed",
                    recommendation_id=f"r-{hcp}-1",
                    action_id="A2",
                    reason="said his wife is ill",
                ),
                _event(f"out-{hcp}", hcp, "opted_out", channel="email"),
                _event(f"in-{hcp}", hcp, "opted_in", channel="email"),
                _event(f"nrx-{hcp}", hcp, "outcome", value=3.0),
            ],
        )
        assert not result.rejected, result.rejected
    # Stored without the repository's checks (an older release, a hand-made fix):
    # an event naming another HCP than the recommendation it is about.
    session.execute(
        insert(FeedbackEvent).values(
            event_id="crossed",
            event_type="opened",
            occurred_at=T0,
            received_at=T0,
            recommendation_id=f"r-{ERASED}-2",
            hcp_id=KEPT,
        )
    )
    session.commit()


def _rows_naming(session: Session, hcp_id: str) -> dict[str, list[Any]]:
    """Every row of the three tables that names ``hcp_id`` or one of its answers."""
    theirs = select(Recommendation.recommendation_id).where(Recommendation.hcp_id == hcp_id)
    return {
        "recommendations": list(session.scalars(theirs)),
        "recommendation_items": list(
            session.execute(
                select(RecommendationItem.recommendation_id, RecommendationItem.rank).where(
                    RecommendationItem.recommendation_id.in_(theirs)
                )
            )
        ),
        "feedback_events": sorted(
            session.scalars(
                select(FeedbackEvent.event_id).where(
                    (FeedbackEvent.hcp_id == hcp_id) | FeedbackEvent.recommendation_id.in_(theirs)
                )
            )
        ),
    }


def test_erasure_leaves_only_the_suppression_and_other_hcps_untouched(session: Session) -> None:
    _fill(session)
    kept_before = _rows_naming(session, KEPT)
    assert "crossed" in kept_before["feedback_events"]  # names KEPT, is about ERASED's answer
    assert count_hcp_rows(session, hcp_ids=[ERASED]) == RowCounts(
        recommendations=4, recommendation_items=6, feedback_events=6
    )

    done = erase_hcps(session, hcp_ids=[ERASED], requester="nextbest erase (dpo)")

    assert done.deleted == RowCounts(4, 6, 6)
    assert done.suppressed == (ERASED,) and done.already_suppressed == ()
    left = _rows_naming(session, ERASED)
    suppression = erasure_event_id(ERASED)
    assert left == {
        "recommendations": [],
        "recommendation_items": [],
        "feedback_events": [suppression],
    }
    row = session.execute(select(FeedbackEvent).where(FeedbackEvent.event_id == suppression))
    kept = row.scalar_one()
    assert (kept.event_type, kept.hcp_id, kept.channel) == ("opted_out", ERASED, None)
    assert (kept.recommendation_id, kept.action_id, kept.reason, kept.value) == (None,) * 4
    assert kept.requester == "nextbest erase (dpo)"
    # The other HCP keeps every row but the event about the erased HCP's answer.
    assert _rows_naming(session, KEPT) == {
        **kept_before,
        "feedback_events": [e for e in kept_before["feedback_events"] if e != "crossed"],
    }
    # The run is recorded with its counts and the number of HCPs, not their ids.
    [run], _ = maintenance_runs(session, limit=10)
    assert (run.command, run.requester, run.outcome, run.hcps) == (
        "erase",
        "nextbest erase (dpo)",
        "finished",
        1,
    )
    assert run.deleted == RowCounts(4, 6, 6) and run.cutoff is None and run.arguments is None
    assert run.ended_at is not None and run.started_at <= run.ended_at
    # Serving reads it as a withdrawal of every channel, whatever came before.
    history = serving_history(session, hcp_ids=[ERASED], windows=[], dismissed_since=None, until=T0)
    assert set(history.consent) == {(ERASED, None)}
    assert history.consent[(ERASED, None)][1] is True


def test_an_erasure_run_again_deletes_what_came_since_and_keeps_its_suppression(
    session: Session,
) -> None:
    _fill(session)
    first = erase_hcps(session, hcp_ids=[ERASED], requester="nextbest erase (dpo)")
    when = erased_already(session, hcp_ids=[ERASED, KEPT])
    assert set(when) == {ERASED}

    again = erase_hcps(session, hcp_ids=[ERASED], requester="nextbest erase (other)")
    assert again.deleted == RowCounts() and again.deleted.total == 0
    assert again.suppressed == () and again.already_suppressed == (ERASED,)
    assert erased_already(session, hcp_ids=[ERASED]) == when  # kept as it was

    # An answer logged meanwhile (a CRM that still asks) goes on the next run.
    log_recommendations(session, records=[recommendation_record("late", ERASED)])
    session.commit()
    assert count_hcp_rows(session, hcp_ids=[ERASED]) == RowCounts(1, 0, 0)
    third = erase_hcps(session, hcp_ids=[ERASED], requester="nextbest erase (dpo)")
    assert third.deleted == RowCounts(1, 0, 0)
    assert _rows_naming(session, ERASED)["feedback_events"] == [erasure_event_id(ERASED)]
    assert first.deleted.total > 0
    # The suppression keeps the first erasure's time; each run's deletes are recorded.
    runs, total = maintenance_runs(session, limit=10)
    assert total == 3
    assert [(r.requester, r.deleted) for r in runs] == [
        ("nextbest erase (dpo)", RowCounts(1, 0, 0)),
        ("nextbest erase (other)", RowCounts()),
        ("nextbest erase (dpo)", first.deleted),
    ]


def test_feedback_from_before_an_erasure_sent_after_it_is_not_stored_again(
    session: Session,
) -> None:
    """An e-mail system's opens of last week's send, reported after the HCP was
    erased, are what the erasure deleted: stored, they would undo it until the
    next run. What occurred after it (consent given again) is stored as ever."""
    from datetime import UTC, datetime

    _fill(session)
    erase_hcps(session, hcp_ids=[ERASED], requester="nextbest erase (dpo)")
    erased_at = erased_already(session, hcp_ids=[ERASED])[ERASED]
    late = [
        _event("late-open", ERASED),
        _event("late-outcome", ERASED, event_type="outcome", value=3.0),
        _event("late-opt-out", ERASED, event_type="opted_out", channel="email"),
        FeedbackRecord("at-erasure", "delivered", erased_at, ERASED, channel="email"),
        _event("other-hcp", KEPT),
    ]
    result = record_feedback(session, events=late)
    assert result.accepted == ["other-hcp"]
    assert [(i, e) for i, e, _ in result.rejected] == [
        (0, "late-open"),
        (1, "late-outcome"),
        (2, "late-opt-out"),
        (3, "at-erasure"),
    ]
    assert all(
        why.startswith(f"HCP '{ERASED}' was erased on {erased_at:%Y-%m-%d %H:%M:%S} UTC")
        for *_, why in result.rejected
    )
    assert _rows_naming(session, ERASED)["feedback_events"] == [erasure_event_id(ERASED)]
    assert count_hcp_rows(session, hcp_ids=[ERASED]) == RowCounts()

    # Consent given again after the erasure, and what follows it, are new.
    after = datetime.now(UTC) + timedelta(seconds=1)
    again = record_feedback(
        session,
        events=[
            FeedbackRecord("opt-in", "opted_in", after, ERASED, channel="email"),
            FeedbackRecord("open-after", "opened", after, ERASED, channel="email"),
        ],
    )
    assert again.accepted == ["opt-in", "open-after"] and not again.rejected


def test_an_hcp_with_no_rows_gets_its_suppression(session: Session) -> None:
    done = erase_hcps(session, hcp_ids=["never-served", "never-served"], requester="x")
    assert done.suppressed == ("never-served",) and done.deleted == RowCounts()
    assert set(erased_already(session, hcp_ids=["never-served"])) == {"never-served"}


def test_many_hcps_are_erased_in_chunks(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    import nextbest.storage.repository as repository

    monkeypatch.setattr(repository, "_in_chunk_size", lambda db: 6)  # chunks of 2 HCPs
    hcps = [f"H{i}" for i in range(5)]
    log_recommendations(
        session,
        records=[
            recommendation_record(f"r{i}", h, items=(served_item(1, "A1"),))
            for i, h in enumerate(hcps)
        ],
    )
    session.commit()
    assert count_hcp_rows(session, hcp_ids=hcps) == RowCounts(5, 5, 0)
    done = erase_hcps(session, hcp_ids=hcps, requester="x")
    assert done.deleted == RowCounts(5, 5, 0) and done.suppressed == tuple(hcps)
    assert session.scalars(select(Recommendation.recommendation_id)).all() == []


def test_an_event_under_an_erasure_id_is_refused(session: Session) -> None:
    """Anyone may send feedback; an event stored under an erasure's id would block
    that HCP's erasure, or under its own HCP's, pass for one (lookup says erased)."""
    _fill(session)
    planted = [
        _event(erasure_event_id(ERASED), KEPT),
        _event(erasure_event_id(KEPT), KEPT, event_type="opted_out"),
        _event(erasure_event_id(KEPT).upper(), KEPT, event_type="opted_out"),
    ]
    result = record_feedback(session, events=planted)
    assert not result.accepted and len(result.rejected) == 3
    assert all("which marks the records nextbest erase keeps" in why for *_, why in result.rejected)
    assert erased_already(session, hcp_ids=[KEPT]) == {}
    erase_hcps(session, hcp_ids=[ERASED], requester="x")
    assert ERASED in erased_already(session, hcp_ids=[ERASED])


def test_a_suppression_that_cannot_be_stored_erases_nothing(session: Session) -> None:
    _fill(session)
    before = _rows_naming(session, ERASED)
    # Its event id already taken by another event (stored before such ids were refused).
    taken = _event(erasure_event_id(ERASED), KEPT)
    session.execute(
        insert(FeedbackEvent).values(
            event_id=taken.event_id,
            event_type=taken.event_type,
            occurred_at=taken.occurred_at,
            received_at=taken.occurred_at,
            hcp_id=taken.hcp_id,
        )
    )
    session.commit()
    with pytest.raises(ErasureError, match=f"HCP '{ERASED}': event_id"):
        erase_hcps(session, hcp_ids=[ERASED], requester="x")
    assert _rows_naming(session, ERASED) == before
    assert maintenance_runs(session, limit=10) == ([], 0)  # nothing done, nothing recorded


_TABLES = ("feedback_events", "recommendation_items", "recommendations")


def _dead_rows(connection: Any) -> dict[str, int]:
    """Dead rows per table, counted by reading every page (pgstattuple), not from
    the statistics, which may lag."""
    return {
        table: int(
            connection.exec_driver_sql(
                f"SELECT dead_tuple_count FROM pgstattuple('{table}')"
            ).scalar_one()
        )
        for table in _TABLES
    }


@pytest.mark.postgres
def test_an_erasure_on_postgres_vacuums_the_deleted_rows_away(
    postgres_url: str, tmp_path: Any
) -> None:
    """A DELETE leaves dead rows holding the HCP id in the table files until VACUUM;
    the erasure vacuums each table it deleted from, so none is left."""
    from nextbest.service.erasure import erase
    from nextbest.settings import Settings
    from nextbest.storage.db import make_engine, make_session_factory, migrate

    migrate(postgres_url)
    engine = make_engine(postgres_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        with make_session_factory(engine)() as session:
            _fill(session)
            # Without VACUUM, the deleted rows stay on disk: what the erasure must not leave.
            erase_hcps(session, hcp_ids=[KEPT], requester="test")
        with engine.connect() as connection:
            assert all(n > 0 for n in _dead_rows(connection).values())
        settings = Settings(models_dir=tmp_path / "models", database_url=postgres_url)
        done, cleanup = erase(settings, [ERASED])
        assert done.deleted.total > 0
        assert cleanup.backend == "postgresql" and cleanup.complete, cleanup
        assert set(cleanup.vacuumed) == set(_TABLES)
        assert cleanup.dead_left == dict.fromkeys(cleanup.vacuumed, 0)
        with engine.connect() as connection:
            assert _dead_rows(connection) == dict.fromkeys(_TABLES, 0)
            vacuumed = connection.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_user_tables "
                "WHERE relname = ANY(%(t)s) AND last_vacuum IS NOT NULL",
                {"t": list(_TABLES)},
            ).scalar_one()
            assert vacuumed == 3
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_dead_rows_another_transaction_still_sees_are_reported(
    postgres_url: str, tmp_path: Any
) -> None:
    """A BI session's snapshot taken before the erasure keeps VACUUM from removing
    the rows: the erasure says so instead of claiming them gone."""
    from nextbest.service.erasure import erase
    from nextbest.settings import Settings
    from nextbest.storage.db import make_engine, make_session_factory, migrate

    migrate(postgres_url)
    engine = make_engine(postgres_url)
    try:
        with make_session_factory(engine)() as session:
            _fill(session)
        with engine.connect() as bi:
            bi.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            bi.exec_driver_sql("SELECT count(*) FROM feedback_events").scalar_one()
            settings = Settings(models_dir=tmp_path / "models", database_url=postgres_url)
            _, cleanup = erase(settings, [ERASED])
            bi.rollback()
        assert not cleanup.complete and cleanup.dead_left["feedback_events"] > 0, cleanup
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_an_erasure_on_postgres_leaves_no_id_in_the_planner_statistics(
    postgres_url: str, tmp_path: Any
) -> None:
    """ANALYZE (autovacuum runs it as tables grow) keeps sampled values of each
    column, the HCP ids among them (pg_stats: most common values, histogram
    bounds); VACUUM alone leaves them there after the rows are gone."""
    from nextbest.service.erasure import erase
    from nextbest.settings import Settings
    from nextbest.storage.db import make_engine, make_session_factory, migrate

    migrate(postgres_url)
    engine = make_engine(postgres_url)

    def sampled_hcp_ids() -> str:
        with engine.connect() as connection:
            return " ".join(
                str(row)
                for row in connection.exec_driver_sql(
                    "SELECT most_common_vals, histogram_bounds FROM pg_stats "
                    "WHERE tablename = 'recommendations' AND attname = 'hcp_id'"
                )
            )

    try:
        with make_session_factory(engine)() as session:
            _fill(session)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("ANALYZE recommendations")
        assert ERASED in sampled_hcp_ids()
        settings = Settings(models_dir=tmp_path / "models", database_url=postgres_url)
        _, cleanup = erase(settings, [ERASED])
        assert "recommendations" in cleanup.vacuumed
        assert KEPT in sampled_hcp_ids() and ERASED not in sampled_hcp_ids()
    finally:
        engine.dispose()
