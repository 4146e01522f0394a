"""Recommendation log and feedback store, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import event, func, insert, make_url, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from nextbest.features.history import ENGAGEMENT_WAIT_DAYS
from nextbest.storage import (
    FeedbackRecord,
    RecommendationRecord,
    ServedItem,
    contact_history,
    contacts_between,
    dismissals,
    get_recommendation,
    last_contacts,
    log_recommendations,
    logged_decisions,
    make_engine,
    make_session_factory,
    migrate,
    record_feedback,
    repository,
)
from nextbest.storage.repository import (
    LOGGED_DECISION_COLUMNS,
    LOGGED_DECISION_DETAIL_COLUMNS,
    feedback_for,
    rows_derived_from,
    serving_history,
)
from nextbest.storage.tables import FeedbackEvent, Recommendation, RecommendationItem
from nextbest.storage.testing import recommendation_record, served_item, statements_sent

# The time every logged test decision is made at, unless a test says otherwise.
T0 = datetime(2024, 3, 4, 9, 0, tzinfo=UTC)

MakeRecommendation = Callable[..., RecommendationRecord]
MakeItem = Callable[..., ServedItem]


@contextmanager
def count_statements(engine: Engine) -> Iterator[list[str]]:
    """Collect the SQL statements sent while the block runs."""
    statements: list[str] = []

    def _collect(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", _collect)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", _collect)


def stored_events(session_factory: sessionmaker[Session]) -> dict[str, FeedbackEvent]:
    # A fresh session: what is visible there was committed.
    with session_factory() as session:
        return {row.event_id: row for row in session.scalars(select(FeedbackEvent))}


def delivered(event_id: str, hcp_id: str, **fields: Any) -> FeedbackRecord:
    fields.setdefault("occurred_at", T0 + timedelta(hours=1))
    fields.setdefault("event_type", "delivered")
    return FeedbackRecord(event_id=event_id, hcp_id=hcp_id, **fields)


@pytest.fixture
def logged(
    session: Session, make_recommendation: MakeRecommendation, make_served_item: MakeItem
) -> list[RecommendationRecord]:
    """Three logged answers: two served ones for h1 and h2, one holdout for h3."""
    records = [
        make_recommendation(
            "rec-1",
            "h1",
            created_at=T0,
            items=(
                make_served_item(1, "a-email", "email"),
                make_served_item(2, "a-visit", "visit"),
            ),
        ),
        make_recommendation(
            "rec-2",
            "h2",
            created_at=T0,
            items=(make_served_item(1, "a-visit", "visit", propensity=0.6),),
        ),
        make_recommendation("rec-3", "h3", holdout=True, created_at=T0 + timedelta(minutes=5)),
    ]
    log_recommendations(session, records=records)
    session.commit()
    return records


# --- recommendation log ---------------------------------------------------------


def test_log_and_get_round_trip(
    session: Session, make_recommendation: MakeRecommendation, make_served_item: MakeItem
) -> None:
    paris = timezone(timedelta(hours=2))
    record = make_recommendation(
        "rec-rt",
        "hcp-42",
        channel_filter="email",
        purpose="medical",
        created_at=datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=paris),
        p_no_action=0.145,
        items=(
            make_served_item(
                1,
                "a1",
                "email",
                propensity=0.855,
                explored=False,
                reasons=("no e-mail in 9 days", 'Ärztin: "dosing" opened 4 of 5'),
            ),
            make_served_item(2, "a2", "email", propensity=0.0125, explored=True),
        ),
    )
    log_recommendations(session, records=[record])
    session.commit()

    loaded = get_recommendation(session, recommendation_id="rec-rt")

    assert loaded is not None
    # Stored and returned as UTC, the same instant.
    assert loaded.created_at == datetime(2024, 5, 1, 10, 30, 15, 123456, tzinfo=UTC)
    assert loaded.created_at.tzinfo == UTC
    assert loaded == record.__class__(**{**record.__dict__, "created_at": loaded.created_at})
    assert get_recommendation(session, recommendation_id="nope") is None
    if session.get_bind().dialect.name == "sqlite":
        # The one text format every SQLite timestamp is stored and compared in.
        raw = session.execute(
            text("SELECT created_at FROM recommendations WHERE recommendation_id = 'rec-rt'")
        ).scalar_one()
        assert raw == "2024-05-01 10:30:15.123456"


def test_latest_holdout_rate_is_the_newest_answers_and_none_before_any(
    session: Session, engine: Engine, make_recommendation: MakeRecommendation
) -> None:
    assert repository.latest_holdout_rate(session) is None
    log_recommendations(
        session,
        records=[
            make_recommendation("old", "h1", created_at=T0, holdout_rate=0.05),
            make_recommendation("new", "h2", created_at=T0 + timedelta(days=1), holdout_rate=0.2),
            make_recommendation("mid", "h3", created_at=T0 + timedelta(hours=1), holdout_rate=0.1),
        ],
    )
    session.commit()
    # One statement, on a Connection as on a Session (a server worker reads it so).
    with engine.connect() as connection, count_statements(engine) as statements:
        assert repository.latest_holdout_rate(connection) == 0.2
    assert len(statements) == 1


def test_hcps_logged_for_a_day_are_those_decided_for_it_whenever_logged(
    session: Session, engine: Engine, make_recommendation: MakeRecommendation
) -> None:
    """`picks --log` asks which HCPs an earlier send already got answers for, decided
    for the day it decides for: a send logged at 23:50 and rerun at 00:10 for the same
    day is a repeat; a file for yesterday logged today, or for tomorrow logged
    yesterday, counts for its own day, not the day it was logged on."""
    day = T0.date()
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    picks, api = "nextbest picks (jdoe)", "crm-eu"
    logged = [
        # (hcp_id, created_at, decided_for, requester)
        ("late", midnight - timedelta(minutes=10), midnight - timedelta(minutes=10), picks),
        ("rerun", midnight + timedelta(minutes=10), midnight - timedelta(days=1), picks),
        ("ahead", midnight - timedelta(days=3), midnight + timedelta(days=1, hours=9), picks),
        ("past", midnight + timedelta(hours=9), midnight - timedelta(days=2), picks),
        ("today", midnight + timedelta(hours=23, minutes=59), midnight, picks),
        ("served", midnight + timedelta(hours=9), midnight + timedelta(hours=9), api),
        ("pattern", midnight + timedelta(hours=1), midnight, "nextbest picks _jdoe)"),
    ]
    log_recommendations(
        session,
        records=[
            make_recommendation(f"rec-{hcp}", hcp, created_at=at, decided_for=decided, requester=by)
            for hcp, at, decided, by in logged
        ],
    )
    session.commit()

    def for_day(offset: int) -> set[str]:
        return repository.hcps_logged_for_day(
            session, day=day + timedelta(days=offset), requester_prefix="nextbest picks ("
        )

    assert for_day(-1) == {"late", "rerun"}
    assert for_day(0) == {"today"}
    assert for_day(1) == {"ahead"}
    assert for_day(-2) == {"past"}
    assert for_day(-3) == for_day(2) == set()
    if engine.dialect.name == "sqlite":
        # The day's answers through the index, not a walk of the whole log: the plan
        # of the statement the query sends.
        sent: list[tuple[str, Any]] = []

        def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
            sent.append((statement, parameters))

        with engine.connect() as connection:
            event.listen(engine, "before_cursor_execute", keep)
            try:
                repository.hcps_logged_for_day(connection, day=day, requester_prefix="x")
            finally:
                event.remove(engine, "before_cursor_execute", keep)
            [(statement, parameters)] = sent
            plan = " ".join(
                str(row[-1])
                for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            )
        assert "ix_recommendations_decided_for" in plan, plan
        assert "SCAN recommendations" not in plan, plan


def test_log_recommendations_is_one_statement_per_table(
    engine: Engine,
    session: Session,
    monkeypatch: pytest.MonkeyPatch,
    make_recommendation: MakeRecommendation,
    make_served_item: MakeItem,
) -> None:
    records = [
        make_recommendation(
            f"rec-{i}", f"h{i}", items=(make_served_item(1, "a1"), make_served_item(2, "a2"))
        )
        for i in range(300)
    ]
    calls: list[str] = []
    for method in ("execute", "execute_many"):
        original = getattr(repository._DriverQuery, method)

        def spy(query: Any, *args: Any, _original: Any = original, _name: str = method) -> Any:
            calls.append(f"{_name}: {query.sql.split('(')[0].strip()}")
            return _original(query, *args)

        monkeypatch.setattr(repository._DriverQuery, method, spy)
    with count_statements(engine) as statements:
        log_recommendations(session, records=records)
        session.commit()
    # One driver call per table, past SQLAlchemy's execution layer: SQLite runs the
    # row insert with executemany, PostgreSQL one unnest statement.
    assert not [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    method = "execute_many" if engine.dialect.name == "sqlite" else "execute"
    assert calls == [
        f"{method}: INSERT INTO recommendations",
        f"{method}: INSERT INTO recommendation_items",
    ]
    with engine.connect() as connection:
        stored = connection.execute(
            select(func.count()).select_from(Recommendation.__table__)
        ).scalar_one()
        items = connection.execute(
            select(func.count()).select_from(RecommendationItem.__table__)
        ).scalar_one()
    assert (stored, items) == (300, 600)


def test_a_failed_log_insert_is_a_sqlalchemy_error_and_stores_nothing(
    session: Session, make_recommendation: MakeRecommendation, make_served_item: MakeItem
) -> None:
    from sqlalchemy.exc import IntegrityError

    first = make_recommendation("rec-dup", "h1", items=(make_served_item(1, "a1"),))
    log_recommendations(session, records=[first])
    session.commit()
    # The second one is a duplicate; the first names an HCP no error may show.
    again = [make_recommendation("rec-new", "HCP-NOT-IN-LOGS"), first]
    # The driver's own error (sqlite3 / psycopg) comes out as SQLAlchemy's, as if
    # SQLAlchemy had run the statement: callers catch one hierarchy on both paths.
    with pytest.raises(IntegrityError, match=r"rec-dup|UNIQUE|unique") as raised:
        log_recommendations(session, records=again)
    assert "HCP-NOT-IN-LOGS" not in str(raised.value)  # parameters hidden
    session.rollback()
    stored = session.execute(select(Recommendation.recommendation_id)).scalars().all()
    assert stored == ["rec-dup"]


def test_recommendation_record_refuses_unknown_purpose(
    make_recommendation: MakeRecommendation,
) -> None:
    with pytest.raises(ValueError, match="purpose must be one of"):
        make_recommendation("rec-x", "h1", purpose="marketing")


@pytest.mark.parametrize(
    ("field", "in_item"),
    [
        ("hcp_id", False),
        ("requester", False),
        ("rep_id", False),
        ("channel_filter", False),
        ("action_id", True),
        ("content_id", True),
        ("channel", True),
    ],
)
def test_a_value_longer_than_its_column_is_never_stored_cut_short(
    session: Session,
    session_factory: sessionmaker[Session],
    make_recommendation: MakeRecommendation,
    make_served_item: MakeItem,
    field: str,
    in_item: bool,
) -> None:
    """SQLite stores it whole; PostgreSQL refuses it as a plain INSERT does ("value
    too long"). Its bulk insert cast each column's array to the column's type, and an
    explicit cast to varchar(n) cuts silently: a cut id no longer joined back to its
    HCP or action (retraining, erasure, the gate), and the two stores disagreed."""
    table = RecommendationItem if in_item else Recommendation
    width = getattr(table, field).type.length
    long = "x" * width + "-tail"
    item_fields: dict[str, Any] = {"rank": 1, "action_id": "a-email", "channel": "email"}
    record_fields: dict[str, Any] = {"recommendation_id": "rec-long", "hcp_id": "h1"}
    (item_fields if in_item else record_fields)[field] = long
    record = make_recommendation(**record_fields, items=(make_served_item(**item_fields),))
    if session.get_bind().dialect.name == "postgresql":
        with pytest.raises(
            DBAPIError, match=f"value too long for type character varying\\({width}\\)"
        ):
            log_recommendations(session, records=[record])
        session.rollback()
        return
    log_recommendations(session, records=[record])
    session.commit()
    with session_factory() as check:
        stored = check.scalars(select(getattr(table, field))).one()
    assert stored == long


def test_a_requester_longer_than_its_column_is_never_stored_cut_short_in_feedback(
    session: Session, session_factory: sessionmaker[Session], logged: list[RecommendationRecord]
) -> None:
    """The feedback store's insert is the same bulk statement: the requester (an API
    key's name, a command's user) is the one text field not checked per event."""
    long = "k" * 128 + "-tail"
    event = delivered("long-requester", "h1", channel="email")
    if session.get_bind().dialect.name == "postgresql":
        with pytest.raises(DBAPIError, match="value too long for type character varying\\(128\\)"):
            record_feedback(session, events=[event], requester=long)
        session.rollback()
        assert stored_events(session_factory) == {}
        return
    assert record_feedback(session, events=[event], requester=long).accepted == ["long-requester"]
    assert stored_events(session_factory)["long-requester"].requester == long


# --- feedback: validation, idempotency ------------------------------------------------


def test_same_batch_twice_is_idempotent(
    session: Session, session_factory: sessionmaker[Session], logged: list[RecommendationRecord]
) -> None:
    batch = [
        delivered("ev-1", "h1", recommendation_id="rec-1", action_id="a-email"),
        FeedbackRecord("ev-2", "opened", T0 + timedelta(hours=2), "h1", recommendation_id="rec-1"),
        FeedbackRecord(
            "ev-3", "outcome", T0 + timedelta(days=3), "h2", recommendation_id="rec-2", value=2.5
        ),
    ]
    first = record_feedback(session, events=batch)
    before = stored_events(session_factory)
    second = record_feedback(session, events=batch)
    after = stored_events(session_factory)

    assert (first.accepted, first.duplicates, first.rejected) == (["ev-1", "ev-2", "ev-3"], [], [])
    assert (second.accepted, second.duplicates, second.rejected) == (
        [],
        ["ev-1", "ev-2", "ev-3"],
        [],
    )
    assert sorted(after) == ["ev-1", "ev-2", "ev-3"]
    # Nothing was rewritten by the retry, not even the reception time.
    for event_id, row in before.items():
        assert (row.received_at, row.occurred_at, row.value) == (
            after[event_id].received_at,
            after[event_id].occurred_at,
            after[event_id].value,
        )


def test_partial_batch_rejects_invalid_events_and_stores_the_rest(
    session: Session, session_factory: sessionmaker[Session], logged: list[RecommendationRecord]
) -> None:
    known_hcps = {"h1", "h2", "h3"}
    asked: list[str] = []

    def hcp_exists(hcp_id: str) -> bool:
        asked.append(hcp_id)
        return hcp_id in known_hcps

    batch = [
        delivered("ok-1", "h1", recommendation_id="rec-1"),
        delivered("bad-rec", "h1", recommendation_id="rec-404"),
        delivered("bad-hcp", "h-unknown"),
        FeedbackRecord("bad-outcome", "outcome", T0, "h2", recommendation_id="rec-2"),
        FeedbackRecord("bad-type", "bounced", T0, "h2"),
        delivered("bad-owner", "h2", recommendation_id="rec-1"),
        FeedbackRecord("bad-reason", "dismissed", T0, "h1", reason="x" * 257),
        FeedbackRecord("bad-value", "outcome", T0, "h2", value=math.nan),
        delivered("", "h1"),
        delivered("no-hcp", None),  # type: ignore[arg-type]
        FeedbackRecord("huge-value", "outcome", T0, "h2", value=-1e308),
        FeedbackRecord("no-reason", "dismissed", T0, "h1"),
        FeedbackRecord("with-reason", "accepted", T0, "h1", reason="not_relevant"),
        FeedbackRecord("ok-2", "outcome", T0, "h2", recommendation_id="rec-2", value=1e9),
        delivered("ok-3", "h1"),
    ]

    result = record_feedback(session, events=batch, hcp_exists=hcp_exists)

    assert result.accepted == ["ok-1", "ok-2", "ok-3"]
    assert result.duplicates == []
    rejected = {index: (event_id, message) for index, event_id, message in result.rejected}
    assert sorted(rejected) == list(range(1, 13))
    expected = {
        1: ("bad-rec", r"^unknown recommendation_id 'rec-404'$"),
        2: ("bad-hcp", r"^unknown hcp_id 'h-unknown'$"),
        3: ("bad-outcome", r"value is required for event_type 'outcome'"),
        4: ("bad-type", r"unknown event_type 'bounced'"),
        5: ("bad-owner", r"hcp_id 'h2' does not match recommendation 'rec-1' \(served to 'h1'\)"),
        6: ("bad-reason", r"reason must be .* at most 256 characters"),
        7: ("bad-value", r"value must be a finite number"),
        8: ("", r"event_id must be a non-empty string"),
        9: ("no-hcp", r"hcp_id must be a non-empty string"),
        10: ("huge-value", r"value -1e\+308 is beyond the limit of 1,000,000,000 either way"),
        # Without the rules file's codes, whether a reason is there is still checked.
        11: ("no-reason", r"^a dismissal needs a reason code$"),
        12: ("with-reason", r"^an acceptance takes no reason code$"),
    }
    for index, (event_id, pattern) in expected.items():
        assert rejected[index][0] == event_id
        assert re.search(pattern, rejected[index][1]), rejected[index]
    assert sorted(stored_events(session_factory)) == ["ok-1", "ok-2", "ok-3"]
    # Asked once per distinct HCP that reached that check, and an unknown one's id in
    # upper case (the lower case is its own): the id meant when a system changed the case.
    assert sorted(asked) == ["H-UNKNOWN", "h-unknown", "h1", "h2"]


def test_unknown_recommendation_ids_are_checked_in_one_query(
    engine: Engine, session: Session, logged: list[RecommendationRecord]
) -> None:
    batch = [
        delivered(f"ev-{i}", "h1", recommendation_id="rec-1" if i % 2 else f"rec-x{i}")
        for i in range(200)
    ]
    with count_statements(engine) as statements:
        result = record_feedback(session, events=batch)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    # One for the recommendations, one for the HCPs' erasures (by their event ids).
    assert len(selects) == 2
    assert len(result.accepted) == 100
    assert len(result.rejected) == 100


def test_repeated_id_within_a_batch_is_stored_once(
    session: Session, session_factory: sessionmaker[Session], logged: list[RecommendationRecord]
) -> None:
    batch = [
        delivered("ev-a", "h1", channel="email"),
        delivered("ev-b", "h1", channel="email"),
        delivered("ev-a", "h1", channel="visit"),
    ]
    result = record_feedback(session, events=batch + batch[:1])

    assert result.accepted == ["ev-a", "ev-b"]
    assert result.duplicates == ["ev-a"]  # the same event again
    # Another channel under the same id is another contact: refused, naming it.
    assert [(i, e) for i, e, _ in result.rejected] == [(2, "ev-a")]
    assert "channel 'email' (this one: 'visit')" in result.rejected[0][2]
    stored = stored_events(session_factory)
    assert sorted(stored) == ["ev-a", "ev-b"]
    assert stored["ev-a"].channel == "email"  # the first occurrence wins


@pytest.mark.parametrize("bad_first", [False, True])
def test_a_new_event_repeated_in_its_batch_with_a_refused_reason_is_accepted_once(
    session: Session,
    session_factory: sessionmaker[Session],
    logged: list[RecommendationRecord],
    bad_first: bool,
) -> None:
    """A dismissal sent twice in one batch, once with a reason code the rules file
    lacks: the valid one is stored by this batch, so it is accepted, not reported
    as already stored (the answer said 0 accepted, 2 duplicates of an event no
    earlier request had sent)."""
    dismissal = FeedbackRecord(
        "dis-1",
        "dismissed",
        T0 + timedelta(hours=1),
        "h1",
        recommendation_id="rec-1",
        action_id="a-email",
        reason="not_relevant",
    )
    bad_reason = dataclasses.replace(dismissal, reason="no_such_code")
    other_action = dataclasses.replace(dismissal, action_id="a-visit", reason="no_such_code")
    batch = [bad_reason, dismissal] if bad_first else [dismissal, bad_reason]
    result = record_feedback(
        session, events=[*batch, other_action], dismiss_reasons=["not_relevant"]
    )

    assert result.accepted == ["dis-1"]
    # Another reason code or another action under the id is another decision, not
    # the one stored: refused for its reason code, which is what the sender can fix.
    assert result.duplicates == []
    assert [(i, e) for i, e, _ in result.rejected] == [
        (0 if bad_first else 1, "dis-1"),
        (2, "dis-1"),
    ]
    assert all(m.startswith("unknown reason code 'no_such_code'") for _, _, m in result.rejected)
    stored = stored_events(session_factory)
    assert list(stored) == ["dis-1"]
    assert (stored["dis-1"].action_id, stored["dis-1"].reason) == ("a-email", "not_relevant")


def test_channel_is_filled_from_the_served_item(
    session: Session, session_factory: sessionmaker[Session], logged: list[RecommendationRecord]
) -> None:
    batch = [
        delivered("ev-1", "h1", recommendation_id="rec-1", action_id="a-visit"),
        delivered("ev-2", "h1", recommendation_id="rec-1", action_id="a-email", channel="phone"),
        delivered("ev-3", "h1", recommendation_id="rec-1", action_id="a-never-served"),
    ]
    record_feedback(session, events=batch)
    stored = stored_events(session_factory)
    assert [stored[e].channel for e in ("ev-1", "ev-2", "ev-3")] == ["visit", "phone", None]


def test_an_id_reused_for_another_event_is_rejected_naming_what_differs(
    session: Session, session_factory: sessionmaker[Session], logged: list[RecommendationRecord]
) -> None:
    first = [
        delivered("ev-1", "h1", recommendation_id="rec-1", action_id="a-email"),
        FeedbackRecord("ev-2", "outcome", T0, "h2", recommendation_id="rec-2", value=2.5),
        FeedbackRecord("ev-3", "dismissed", T0, "h1", action_id="a-visit", reason="other"),
    ]
    assert record_feedback(session, events=first).accepted == ["ev-1", "ev-2", "ev-3"]
    again = [
        # Resends: another time (set on receipt) or a filled channel is no change.
        delivered("ev-1", "h1", recommendation_id="rec-1", action_id="a-email", channel="email"),
        FeedbackRecord(
            "ev-3", "dismissed", T0 + timedelta(hours=2), "h1", action_id="a-visit", reason="other"
        ),
        # Another event under a stored id: a CRM counter that started again.
        delivered("ev-2", "h2", recommendation_id="rec-2"),
        FeedbackRecord("ev-2", "outcome", T0, "h2", recommendation_id="rec-2", value=4.0),
        # The same within one batch: the first occurrence is stored, the other refused.
        delivered("ev-4", "h1", action_id="a-email"),
        delivered("ev-4", "h2", action_id="a-email"),
    ]
    result = record_feedback(session, events=again)
    assert result.accepted == ["ev-4"]
    assert result.duplicates == ["ev-1", "ev-3"]
    assert [(i, event_id) for i, event_id, _ in result.rejected] == [
        (2, "ev-2"),
        (3, "ev-2"),
        (5, "ev-4"),
    ]
    messages = [message for _, _, message in result.rejected]
    assert messages[0] == (
        "event_id 'ev-2' is already stored for another event, with event_type 'outcome' "
        "(this one: 'delivered'); action_id None (this one: 'a-visit'); channel None "
        "(this one: 'visit'); value 2.5 (this one: None): an event_id names one event, "
        "so this one was not stored"
    )
    assert "value 2.5 (this one: 4.0)" in messages[1]
    assert "hcp_id 'h1' (this one: 'h2')" in messages[2]
    stored = stored_events(session_factory)
    assert (stored["ev-2"].event_type, stored["ev-2"].value, stored["ev-4"].hcp_id) == (
        "outcome",
        2.5,
        "h1",
    )


CODES = ("not_relevant", "wrong_content", "hcp_unavailable")


def test_a_decision_resent_under_its_id_with_another_reason_code_is_refused(
    session: Session, session_factory: sessionmaker[Session]
) -> None:
    """A dismissal resent under its event_id with a corrected reason code was answered
    "duplicate" and the correction silently not stored: the rep's CRM showed it taken
    while the stored code (and what it holds back) stayed the first one. It is another
    decision: refused, naming the reason to a key that may read it; a code resent in
    another case is the same decision, a duplicate."""
    first = [
        FeedbackRecord("d-1", "dismissed", T0, "h1", action_id="a-visit", reason="not_relevant"),
        FeedbackRecord("s-1", "snoozed", T0, "h1", action_id="a-phone"),
    ]
    assert record_feedback(session, events=first, dismiss_reasons=CODES).accepted == ["d-1", "s-1"]
    again = [
        FeedbackRecord("d-1", "dismissed", T0, "h1", action_id="a-visit", reason="hcp_unavailable"),
        FeedbackRecord("d-1", "dismissed", T0, "h1", action_id="a-visit", reason="Not_Relevant"),
        FeedbackRecord("s-1", "snoozed", T0, "h1", action_id="a-phone", reason="wrong_content"),
    ]
    result = record_feedback(session, events=again, dismiss_reasons=CODES)
    assert (result.accepted, result.duplicates) == ([], ["d-1"])
    assert result.rejected == [
        (
            0,
            "d-1",
            "event_id 'd-1' is already stored for another event, with reason 'not_relevant' "
            "(this one: 'hcp_unavailable'): an event_id names one event, so this one was not "
            "stored",
        ),
        (
            2,
            "s-1",
            "event_id 's-1' is already stored for another event, with reason None (this one: "
            "'wrong_content'): an event_id names one event, so this one was not stored",
        ),
    ]
    # A rep's key is told the id is taken, not what the stored event says.
    private = record_feedback(session, events=again[:1], dismiss_reasons=CODES, private=True)
    assert [message for _, _, message in private.rejected] == [
        "event_id 'd-1' is already stored for another event: an event_id names one event, "
        "so this one was not stored (give each event an id of its own)"
    ]
    stored = stored_events(session_factory)
    assert (stored["d-1"].reason, stored["s-1"].reason) == ("not_relevant", None)


def test_a_reason_code_an_earlier_version_stored_as_sent_is_the_code_its_resend_names(
    session: Session,
) -> None:
    """Before codes were read in any case, 'Not_Relevant' was stored as sent: its
    resend, read now as the rules file's 'not_relevant', is the same decision."""
    session.add(
        FeedbackEvent(
            event_id="old-d",
            event_type="dismissed",
            occurred_at=T0,
            received_at=T0,
            hcp_id="h1",
            action_id="a1",
            reason="Not_Relevant",
            requester="an older nextbest",
        )
    )
    session.commit()
    resend = [
        FeedbackRecord("old-d", "dismissed", T0, "h1", action_id="a1", reason=reason)
        for reason in ("not_relevant", "NOT_RELEVANT", "Not_Relevant", "wrong_content")
    ]
    result = record_feedback(session, events=resend, dismiss_reasons=CODES)
    assert result.duplicates == ["old-d"] * 3
    assert [(i, e) for i, e, _ in result.rejected] == [(3, "old-d")]
    assert "reason 'not_relevant' (this one: 'wrong_content')" in result.rejected[0][2]


def test_a_reason_that_decides_nothing_may_differ_between_sends(
    session: Session, session_factory: sessionmaker[Session]
) -> None:
    """An opt-out's or an open's reason (free text) counts nowhere: a resend with
    another (a nightly export after the webhook) is a duplicate, not a second
    withdrawal kept under a derived id."""
    first = [
        FeedbackRecord("o-1", "opted_out", T0, "h1", channel="email", reason="unsubscribe link"),
        FeedbackRecord("op-1", "opened", T0, "h1", channel="email", reason="pixel"),
    ]
    assert record_feedback(session, events=first).accepted == ["o-1", "op-1"]
    again = [
        FeedbackRecord("o-1", "opted_out", T0, "h1", channel="email", reason="List-Unsubscribe"),
        FeedbackRecord("op-1", "opened", T0, "h1", channel="email"),
    ]
    result = record_feedback(session, events=again)
    assert (result.accepted, result.duplicates, result.rejected) == ([], ["o-1", "op-1"], [])
    assert result.uncounted == []
    assert sorted(stored_events(session_factory)) == ["o-1", "op-1"]


def test_an_opt_out_under_a_taken_id_keeps_the_derived_id_earlier_versions_gave_it(
    session: Session, session_factory: sessionmaker[Session]
) -> None:
    """Identities now hold a decision's reason code; an opt-out's derived id, which
    hashes what it says, is the one an earlier version kept it under, so its resend
    after an upgrade is a duplicate, not a second row."""
    taken = FeedbackRecord("x-1", "dismissed", T0, "h1", action_id="a1", reason="not_relevant")
    assert record_feedback(session, events=[taken]).accepted == ["x-1"]
    opt_out = FeedbackRecord("x-1", "opted_out", T0, "h1", channel="email")
    said = json.dumps(["x-1", "opted_out", "h1", None, None, "email", None, ""])
    earlier = "opted_out-" + hashlib.sha256(said.encode()).hexdigest()[:32]
    assert record_feedback(session, events=[opt_out]).accepted == [earlier]
    assert record_feedback(session, events=[opt_out]).duplicates == [earlier]
    assert sorted(stored_events(session_factory)) == sorted(["x-1", earlier])


def test_events_are_judged_ahead_by_the_clock_reading_the_caller_dated_them_by(
    session: Session, session_factory: sessionmaker[Session]
) -> None:
    """The API dates an event sent without occurred_at by the served recommender's
    clock; the store judged "in the future" by the machine's, so a server whose clock
    reads ahead of the machine's (a decision date set ahead) refused its own dating.
    Stored as received at the reading the caller passes, and judged by the later of
    it and the machine's clock."""
    ahead = datetime.now(UTC) + timedelta(days=2)
    event = FeedbackRecord("ahead-1", "dismissed", ahead, "h1", action_id="a1", reason="other")
    by_machine = record_feedback(session, events=[event])
    assert [(e, m.split(" (")[0]) for _, e, m in by_machine.rejected] == [
        ("ahead-1", f"occurred_at {ahead.isoformat()} is in the future")
    ]
    by_caller = record_feedback(session, events=[event], received_at=ahead)
    assert (by_caller.accepted, by_caller.rejected) == (["ahead-1"], [])
    stored = stored_events(session_factory)["ahead-1"]
    assert stored.received_at.replace(tzinfo=UTC) == ahead
    # Ahead of the caller's reading too, by more than the skew allowed: refused.
    later = dataclasses.replace(event, event_id="ahead-2", occurred_at=ahead + timedelta(hours=1))
    assert record_feedback(session, events=[later], received_at=ahead).rejected[0][1] == "ahead-2"
    # A caller's clock set back does not refuse what a sender dated by the real time.
    behind = datetime.now(UTC) - timedelta(days=30)
    now = dataclasses.replace(event, event_id="real-time", occurred_at=datetime.now(UTC))
    assert record_feedback(session, events=[now], received_at=behind).accepted == ["real-time"]


def test_the_catalog_names_unknown_actions_and_fills_channels(
    session: Session, session_factory: sessionmaker[Session], logged: list[RecommendationRecord]
) -> None:
    catalog = {"a-email": "email", "a-visit": "visit", "a-webinar": "webinar"}
    batch = [
        delivered("cat-1", "h1", action_id="a-webinar"),  # no recommendation: the catalog's
        delivered("cat-2", "h1", action_id="a-typo"),
        delivered("cat-3", "h1", recommendation_id="rec-1", action_id="a-typo"),
        # Served by an earlier model whose catalog had it: the log knows its channel.
        delivered("cat-4", "h2", recommendation_id="rec-2", action_id="a-visit"),
        delivered("cat-5", "h1", channel="Email"),
        delivered("cat-6", "h1", channel="conference"),  # not the catalog's: kept as sent
        delivered("cat-7", "h1", action_id="a-email", channel="visit"),  # what happened
        delivered("cat-8", "h1", channel="emial"),  # a typo no cap would ever count
    ]
    result = record_feedback(
        session, events=batch, action_channels={k: v for k, v in catalog.items() if k != "a-visit"}
    )
    assert result.accepted == ["cat-1", "cat-4", "cat-6", "cat-7"]
    messages = {event_id: message for _, event_id, message in result.rejected}
    assert messages == {
        "cat-2": "unknown action_id 'a-typo': not in the served model's catalog",
        "cat-3": "unknown action_id 'a-typo': not in the served model's catalog "
        "nor in recommendation 'rec-1'",
        "cat-5": "channel 'Email' is not a channel of the served catalog; did you mean "
        "'email'? (known: email, webinar)",
        "cat-8": "channel 'emial' is not a channel of the served catalog; did you mean "
        "'email'? (known: email, webinar)",
    }
    stored = stored_events(session_factory)
    assert {e: stored[e].channel for e in result.accepted} == {
        "cat-1": "webinar",
        "cat-4": "visit",
        "cat-6": "conference",
        "cat-7": "visit",
    }


def test_a_contact_without_channel_takes_its_recommendations_one_item_or_is_flagged(
    session: Session, session_factory: sessionmaker[Session], logged: list[RecommendationRecord]
) -> None:
    batch = [
        delivered("one-item", "h2", recommendation_id="rec-2"),  # served a-visit alone
        delivered("two-items", "h1", recommendation_id="rec-1"),  # served two
        delivered("bare", "h1"),
        FeedbackRecord("opened", "opened", T0, "h1", recommendation_id="rec-1"),  # no contact
    ]
    result = record_feedback(session, events=batch)
    assert result.accepted == ["one-item", "two-items", "bare", "opened"]
    assert [(i, e) for i, e, _ in result.uncounted] == [(1, "two-items"), (2, "bare")]
    assert result.uncounted[0][2] == (
        "stored, but counts in the all-channel budget only: recommendation 'rec-1' served 2 "
        "actions on several channels (a-email, a-visit): name the action_id"
    )
    stored = stored_events(session_factory)
    assert (stored["one-item"].action_id, stored["one-item"].channel) == ("a-visit", "visit")
    assert stored["two-items"].channel is None and stored["bare"].channel is None
    # Sent again, the filled-in event is the same event: a duplicate, not a conflict,
    # also with the channel it was filled in with now stated.
    again = record_feedback(
        session,
        events=[batch[0], delivered("one-item", "h2", recommendation_id="rec-2", channel="visit")],
    )
    assert again.duplicates == ["one-item", "one-item"] and not again.rejected


def test_an_event_from_the_future_is_refused(
    session: Session, session_factory: sessionmaker[Session]
) -> None:
    now = datetime.now(UTC)
    batch = [
        delivered("soon", "h1", occurred_at=now + timedelta(minutes=5)),  # clock skew
        delivered("later", "h1", occurred_at=now + timedelta(hours=2)),
        # A local time two hours ahead of UTC, sent without its offset.
        delivered("naive", "h1", occurred_at=(now + timedelta(hours=2)).replace(tzinfo=None)),
    ]
    result = record_feedback(session, events=batch)
    assert result.accepted == ["soon"]
    assert [event_id for _, event_id, _ in result.rejected] == ["later", "naive"]
    assert all("is in the future (received at" in m for _, _, m in result.rejected)
    assert "a time without a UTC offset is read as UTC" in result.rejected[1][2]
    assert "UTC offset" not in result.rejected[0][2]  # "later" had its offset
    ancient = record_feedback(
        session, events=[delivered("y1", "h1", occurred_at=datetime(1, 1, 1))]
    )
    assert "is before 2000-01-01" in ancient.rejected[0][2]
    assert set(stored_events(session_factory)) == {"soon"}


def test_a_decision_must_name_an_item_its_recommendation_served(
    session: Session, session_factory: sessionmaker[Session], logged: list[RecommendationRecord]
) -> None:
    def decided(event_id: str, event_type: str, action_id: str) -> FeedbackRecord:
        return delivered(
            event_id, "h1", recommendation_id="rec-1", action_id=action_id, event_type=event_type
        )

    batch = [
        decided("acc-ok", "accepted", "a-visit"),
        decided("acc-bad", "accepted", "a-never-served"),
        decided("dis-bad", "dismissed", "a-never-served"),
        decided("sno-bad", "snoozed", "a-never-served"),
        decided("done-other", "completed", "a-never-served"),  # what was done instead
    ]
    result = record_feedback(session, events=batch)
    assert result.accepted == ["acc-ok", "done-other"]
    assert [(i, eid) for i, eid, _ in result.rejected] == [
        (1, "acc-bad"),
        (2, "dis-bad"),
        (3, "sno-bad"),
    ]
    assert (
        "action_id 'a-never-served' was not served in recommendation 'rec-1'"
        in (result.rejected[0][2])
    )
    assert set(stored_events(session_factory)) == {"acc-ok", "done-other"}


def test_a_decision_dated_before_its_recommendation_was_served_is_refused(
    session: Session, session_factory: sessionmaker[Session], logged: list[RecommendationRecord]
) -> None:
    """rec-1 was served at T0: a decision on it cannot be older, beyond the clock skew
    allowed between the CRM and the server (the windows it opens would count from then)."""

    def decided(event_id: str, event_type: str, occurred_at: datetime) -> FeedbackRecord:
        return delivered(
            event_id,
            "h1",
            recommendation_id="rec-1",
            action_id="a-visit",
            event_type=event_type,
            reason=None if event_type == "accepted" else "not_relevant",
            occurred_at=occurred_at,
        )

    batch = [
        decided("acc-january", "accepted", datetime(2024, 1, 1, tzinfo=UTC)),
        decided("dis-skew", "dismissed", T0 - timedelta(minutes=10)),  # a CRM clock behind
        decided("sno-early", "snoozed", T0 - timedelta(minutes=16)),
        decided("acc-naive", "accepted", T0.replace(tzinfo=None)),  # read as UTC
        # 09:00 in New York (UTC-5) sent without its offset reads as 4:00 UTC, then
        # 5 hours before the recommendation was served.
        decided("dis-naive", "dismissed", (T0 - timedelta(hours=5)).replace(tzinfo=None)),
    ]
    result = record_feedback(session, events=batch)
    assert result.accepted == ["dis-skew", "acc-naive"]
    assert [(i, eid) for i, eid, _ in result.rejected] == [
        (0, "acc-january"),
        (2, "sno-early"),
        (4, "dis-naive"),
    ]
    january = result.rejected[0][2]
    assert january == (
        "occurred_at 2024-01-01T00:00:00+00:00 predates the recommendation it names: "
        "'rec-1' was served at 2024-03-04T09:00:00+00:00"
    )
    assert "a time without a UTC offset is read as UTC" in result.rejected[2][2]
    assert set(stored_events(session_factory)) == {"dis-skew", "acc-naive"}


def test_engagement_dated_before_its_recommendation_is_refused_and_an_opt_out_kept(
    session: Session,
    session_factory: sessionmaker[Session],
    logged: list[RecommendationRecord],
    make_recommendation: MakeRecommendation,
    make_served_item: MakeItem,
) -> None:
    """An open a month before its answer was served cannot be its effect (a
    recommendation id sent with the wrong row); an outcome dated by its feed's period
    (a month) and an opt-out naming the send (it fails safe) are kept. An answer
    decided for an earlier time (a send planned for yesterday) takes events from
    that time on."""
    planned = make_recommendation(
        "rec-planned",
        "h1",
        created_at=T0,
        decided_for=T0 - timedelta(days=1),
        items=(make_served_item(1, "a-email", "email"),),
    )
    log_recommendations(session, records=[planned])
    session.commit()
    month_before = T0 - timedelta(days=30)
    batch = [
        delivered("open-early", "h1", recommendation_id="rec-1", event_type="opened",
                  action_id="a-email", occurred_at=month_before),
        delivered("nrx-early", "h1", recommendation_id="rec-1", event_type="outcome",
                  value=2.0, occurred_at=month_before),
        delivered("optout-early", "h1", recommendation_id="rec-1", event_type="opted_out",
                  channel="email", occurred_at=month_before),
        delivered("open-ok", "h1", recommendation_id="rec-1", event_type="opened",
                  action_id="a-email"),
        delivered("open-planned", "h1", recommendation_id="rec-planned", event_type="opened",
                  action_id="a-email", occurred_at=T0 - timedelta(hours=12)),
        delivered("open-before-plan", "h1", recommendation_id="rec-planned",
                  event_type="opened", action_id="a-email", occurred_at=T0 - timedelta(days=2)),
    ]  # fmt: skip
    result = record_feedback(session, events=batch)
    assert result.accepted == ["nrx-early", "optout-early", "open-ok", "open-planned"]
    assert [(i, eid) for i, eid, _ in result.rejected] == [
        (0, "open-early"),
        (5, "open-before-plan"),
    ]
    assert result.rejected[0][2] == (
        "occurred_at 2024-02-03T09:00:00+00:00 predates the recommendation it names: "
        "'rec-1' was served at 2024-03-04T09:00:00+00:00"
    )
    assert result.rejected[1][2].endswith("'rec-planned' was decided for 2024-03-03T09:00:00+00:00")
    assert set(stored_events(session_factory)) == {
        "nrx-early",
        "optout-early",
        "open-ok",
        "open-planned",
    }


def test_a_date_alone_on_the_day_of_its_send_counts_from_the_send(
    session: Session, session_factory: sessionmaker[Session], logged: list[RecommendationRecord]
) -> None:
    """A daily export dates events by day ("2024-03-04", read as midnight): the send
    day's delivery and open were refused as predating a send made at 09:00."""

    def opened(event_id: str, occurred_at: datetime) -> FeedbackRecord:
        return delivered(event_id, "h1", recommendation_id="rec-1", event_type="opened",
                         action_id="a-email", occurred_at=occurred_at)  # fmt: skip

    batch = [
        opened("by-day", datetime(2024, 3, 4)),  # no offset: UTC, as every naive time
        opened("day-before", datetime(2024, 3, 3)),
        opened("at-four", datetime(2024, 3, 4, 4, 0, tzinfo=UTC)),  # a time: judged as one
    ]
    result = record_feedback(session, events=batch)
    assert result.accepted == ["by-day"] and not result.uncounted
    assert [event_id for _, event_id, _ in result.rejected] == ["day-before", "at-four"]
    assert all("predates the recommendation it names" in m for _, _, m in result.rejected)
    stored = stored_events(session_factory)["by-day"].occurred_at
    assert stored.replace(tzinfo=UTC) == T0  # from the send, not before it


def test_an_opt_out_dated_where_it_cannot_have_happened_counts_from_its_arrival(
    session: Session, session_factory: sessionmaker[Session]
) -> None:
    """A withdrawal of consent is not lost over a local time sent without its offset
    (hours ahead of UTC) or a date before 2000; consent given again is refused."""
    ahead = (datetime.now(UTC) + timedelta(hours=2)).replace(tzinfo=None)
    batch = [
        delivered("out-ahead", "h1", event_type="opted_out", channel="email", occurred_at=ahead),
        delivered("out-1970", "h2", event_type="opted_out", occurred_at=datetime(1970, 1, 1)),
        delivered("in-ahead", "h1", event_type="opted_in", channel="email", occurred_at=ahead),
    ]
    before = datetime.now(UTC)
    result = record_feedback(session, events=batch)
    assert result.accepted == ["out-ahead", "out-1970"]
    assert [event_id for _, event_id, _ in result.rejected] == ["in-ahead"]
    said = {event_id: message for _, event_id, message in result.uncounted}
    assert said["out-ahead"].startswith(
        f"opt-out stored: occurred_at {ahead.isoformat()}+00:00 is in the future (received at "
    ), said
    assert said["out-ahead"].endswith(
        "; a time without a UTC offset is read as UTC; counted from its arrival"
    ), said
    assert said["out-1970"].startswith(
        "opt-out stored: occurred_at 1970-01-01T00:00:00+00:00 is before 2000-01-01: "
    ), said
    assert said["out-1970"].endswith("; counted from its arrival"), said
    stored = stored_events(session_factory)
    for event_id in ("out-ahead", "out-1970"):
        kept = stored[event_id].occurred_at.replace(tzinfo=UTC)
        assert before <= kept <= datetime.now(UTC), (event_id, kept)


def test_an_opt_out_read_otherwise_than_sent_is_kept_saying_how(
    session: Session, session_factory: sessionmaker[Session]
) -> None:
    """The events schema reads an opt-out past fields that cannot be read (a time that
    reads as none, '2024-03'), saying how: the store keeps it and says so; any other
    event carrying such a note is refused with it."""
    why = "occurred_at '2024-03' is a year and month, not a date; counted from its arrival"
    arrived = datetime.now(UTC)
    batch = [
        delivered("out", "h1", event_type="opted_out", occurred_at=arrived, unread=why),
        delivered("open", "h1", event_type="opened", occurred_at=arrived, unread=why),
    ]
    result = record_feedback(session, events=batch)
    assert result.accepted == ["out"]
    assert result.rejected == [(1, "open", f"only an opt-out is read otherwise than sent: {why}")]
    assert result.uncounted == [(0, "out", f"opt-out stored: {why}")]
    kept = stored_events(session_factory)["out"].occurred_at.replace(tzinfo=UTC)
    assert abs(kept - arrived) < timedelta(seconds=1), kept


def test_an_opt_out_is_kept_whatever_the_form_of_its_value_reason_or_channel(
    session: Session, session_factory: sessionmaker[Session]
) -> None:
    """An opt-out with a value ('an opted_out event takes no value'), an empty reason or
    one holding a NUL character ('reason must be a non-empty string'), or a channel of
    'all' or '' sent while no catalog is at hand (stored as a channel 'all' that no
    action has, or refused as empty) was rejected or withdrew nothing. Each is kept:
    the value left out, the reason without what cannot be stored, the channel as
    every channel; an opt-in or an open so sent is still refused."""
    opt_out = functools.partial(delivered, event_type="opted_out", channel="email")
    batch = [
        opt_out("out-value", "h1", value=3.5),
        opt_out("out-zero", "h2", value=0.0),
        opt_out("out-blank", "h3", reason=""),
        opt_out("out-nul", "h4", reason="https://x.example/u?t=1\x00"),
        opt_out("out-all", "h5", channel="All"),
        opt_out("out-empty", "h6", channel=""),
        delivered("in-value", "h1", event_type="opted_in", value=3.5),
        delivered("open-blank", "h1", event_type="opened", reason=""),
    ]
    result = record_feedback(session, events=batch)
    assert [event_id for _, event_id, _ in result.rejected] == ["in-value", "open-blank"]
    assert result.accepted == [e.event_id for e in batch[:6]]
    said = {event_id: message for _, event_id, message in result.uncounted}
    assert said == {
        "out-value": "opt-out stored: value 3.5 left out: an opt-out takes none",
        "out-nul": "opt-out stored: reason's NUL characters (\\u0000) left out: the store "
        "cannot hold them",
    }, said
    stored = stored_events(session_factory)
    assert [stored[e.event_id].value for e in batch[:2]] == [None, None]
    assert stored["out-blank"].reason is None
    assert stored["out-nul"].reason == "https://x.example/u?t=1"
    assert [stored[e].channel for e in ("out-value", "out-all", "out-empty")] == [
        "email",
        None,
        None,
    ]


def test_a_consent_event_without_a_catalog_is_stored_and_read_as_catalogs_spell_its_channel(
    session: Session, session_factory: sessionmaker[Session]
) -> None:
    """With no model served (no catalog), an opt-out of 'Email' or ' Rep Visit' was
    stored as sent, and consent was matched on the channel exactly: it withdrew
    nothing from 'email'. Stored now as catalogs spell channels, as with a model; and
    consent events stored so before are read the same way."""
    consent = functools.partial(delivered, event_type="opted_out")
    batch = [
        consent("out-case", "h1", channel="Email"),
        consent("out-spaces", "h2", channel=" Rep Visit "),
        consent("out-fax", "h3", channel="fax"),
        consent("in-case", "h4", event_type="opted_in", channel="SMS"),
    ]
    result = record_feedback(session, events=batch)
    assert result.accepted == [e.event_id for e in batch], result
    stored = stored_events(session_factory)
    assert {e.event_id: stored[e.event_id].channel for e in batch} == {
        "out-case": "email",
        "out-spaces": "rep_visit",
        "out-fax": "fax",
        "in-case": "sms",
    }
    # Rows an earlier nextbest stored as sent: no migration, read as catalogs spell them.
    later = T0 + timedelta(hours=2)
    old = [
        ("old-out", "opted_out", "h5", "Email", T0),
        ("old-in", "opted_in", "h1", "EMAIL", later),
    ]
    _stored_by_an_earlier_version(session, old)
    history = serving_history(
        session,
        hcp_ids=["h1", "h2", "h3", "h4", "h5"],
        windows=[],
        dismissed_since=None,
        until=T0 + timedelta(days=1),
    )
    withdrawn = {key: out for key, (_, out) in history.consent.items()}
    assert withdrawn == {
        # h1's opt-out of 'Email' (T0 + 1h) is lifted by the opt-in of 'EMAIL' after it.
        ("h1", "email"): False,
        ("h5", "email"): True,
    }, withdrawn
    # The consent events stored now with no catalog, left to be read against the
    # served one: the latest opt-out and the latest opt-in of each HCP and name.
    assert set(history.consent_unmatched) == {
        ("h1", "email", True),
        ("h2", "rep_visit", True),
        ("h3", "fax", True),
        ("h4", "sms", False),
    }, history.consent_unmatched


def test_an_opt_out_stored_with_no_catalog_withdraws_what_it_would_have_with_one(
    session: Session, session_factory: sessionmaker[Session]
) -> None:
    """With no model served, an opt-out of 'E Mail' was stored as 'e_mail' and one of
    'fax' as 'fax', and consent compared them with the catalog's channels as stored
    once a model served: they withdrew nothing. Served with a model on arrival, the
    first withdraws email and the second every channel (nextbest cannot tell it):
    read against the served catalog, they do so now. An SMS gateway's opt-out of its
    own sms withdraws nothing while the catalog has no sms (as on arrival with a
    model), and sms once it has; another sender's, every channel until then."""
    from nextbest.policy.rules import HistoryRules, LiveHistory, ServingRules

    out = functools.partial(delivered, event_type="opted_out")
    result = record_feedback(
        session,
        events=[
            out("out-mail", "h1", channel="E Mail"),
            out("out-visit", "h2", channel="rep visit"),
            out("out-fax", "h3", channel="fax"),
            # A channel no catalog has yet, from a sender that may speak for any.
            out("out-sms-any", "h6", channel="Sms"),
            # Back in to e-mail after its opt-out: the later event decides.
            out("in-mail", "h4", event_type="opted_in", channel="email"),
            out("out-mail-4", "h4", channel="e-mail", occurred_at=T0),
        ],
    )
    assert result.rejected == [] and len(result.accepted) == 6, result
    gateway = record_feedback(
        session, events=[out("out-sms", "h5", channel="SMS")], requester="sms-gw", channels=["sms"]
    )
    assert gateway.accepted == ["out-sms"], gateway
    flags = {
        event_id: (row.channel, row.channel_unmatched)
        for event_id, row in stored_events(session_factory).items()
    }
    assert flags == {
        "out-mail": ("e_mail", True),
        "out-visit": ("rep_visit", True),
        "out-fax": ("fax", True),
        "out-sms-any": ("sms", True),
        "in-mail": ("email", True),
        "out-mail-4": ("e_mail", True),
        # Its sender's own channel, named for certain: read as stored.
        "out-sms": ("sms", None),
    }, flags
    found = serving_history(
        session,
        hcp_ids=["h1", "h2", "h3", "h4", "h5", "h6"],
        windows=[],
        dismissed_since=None,
        until=T0 + timedelta(days=1),
    )
    history = LiveHistory(
        now=T0 + timedelta(days=1),
        consent=found.consent,
        consent_unmatched=found.consent_unmatched,
    )
    rules = ServingRules.from_mapping({})

    def blocked_channels(channels: list[str]) -> dict[str, set[str]]:
        catalog = HistoryRules(
            rules,
            channels=np.array(channels, dtype=object),
            action_ids=np.array([f"a-{c}" for c in channels], dtype=object),
        )
        hcps = ["h1", "h2", "h3", "h4", "h5", "h6"]
        out = catalog.blocked(hcps, history)
        return {
            h: {c for c, no in zip(channels, row, strict=True) if no}
            for h, row in zip(hcps, out, strict=True)
        }

    everything = {"email", "rep_visit", "webinar"}
    assert blocked_channels(["email", "rep_visit", "webinar"]) == {
        "h1": {"email"},
        "h2": {"rep_visit"},
        "h3": everything,
        "h4": set(),
        "h5": set(),
        "h6": everything,
    }
    assert blocked_channels(["email", "rep_visit", "webinar", "sms"]) == {
        "h1": {"email"},
        "h2": {"rep_visit"},
        "h3": everything | {"sms"},
        "h4": set(),
        "h5": {"sms"},
        "h6": {"sms"},
    }


def test_an_opt_in_stored_with_no_catalog_is_read_against_one_as_an_opt_out_is(
    session: Session, session_factory: sessionmaker[Session]
) -> None:
    """With no model served, an opt-in of 'E Mail' was stored as 'e_mail', unmarked,
    and granted nothing once a catalog was served, while the opt-out of 'E Mail' it
    answered was read as email. Marked as the opt-out is and read against the served
    catalog, it gives email back; one of a channel nextbest cannot tell ('fax')
    grants nothing, and does not hide the opt-out of 'fax' before it (read as every
    channel) until the catalog has fax; at the same time, the opt-out still wins."""
    from nextbest.policy.rules import HistoryRules, LiveHistory, ServingRules

    consent = functools.partial(delivered, event_type="opted_out")
    later = T0 + timedelta(hours=2)
    result = record_feedback(
        session,
        events=[
            consent("out-near", "h1", channel="E Mail"),
            consent("in-near", "h1", event_type="opted_in", channel="E Mail", occurred_at=later),
            consent("out-fax", "h2", channel="fax"),
            consent("in-fax", "h2", event_type="opted_in", channel="fax", occurred_at=later),
            consent("out-all", "h3"),
            consent("in-near-3", "h3", event_type="opted_in", channel="e-mail", occurred_at=later),
            consent("in-tie", "h4", event_type="opted_in", channel="E Mail"),
            consent("out-tie", "h4", channel="email"),
        ],
    )
    assert result.rejected == [] and len(result.accepted) == 8, result
    marked = {e: row.channel_unmatched for e, row in stored_events(session_factory).items()}
    assert marked == {**dict.fromkeys(marked, True), "out-all": None}, marked
    found = serving_history(
        session,
        hcp_ids=["h1", "h2", "h3", "h4"],
        windows=[],
        dismissed_since=None,
        until=T0 + timedelta(days=1),
    )
    history = LiveHistory(
        now=T0 + timedelta(days=1),
        consent=found.consent,
        consent_unmatched=found.consent_unmatched,
    )

    def blocked_channels(channels: list[str]) -> dict[str, set[str]]:
        catalog = HistoryRules(
            ServingRules.from_mapping({}),
            channels=np.array(channels, dtype=object),
            action_ids=np.array([f"a-{c}" for c in channels], dtype=object),
        )
        hcps = ["h1", "h2", "h3", "h4"]
        out = catalog.blocked(hcps, history)
        return {
            h: {c for c, no in zip(channels, row, strict=True) if no}
            for h, row in zip(hcps, out, strict=True)
        }

    assert blocked_channels(["email", "rep_visit"]) == {
        "h1": set(),
        "h2": {"email", "rep_visit"},
        "h3": {"rep_visit"},
        "h4": {"email"},
    }
    assert blocked_channels(["email", "rep_visit", "fax"])["h2"] == set()
    # Resent once a model serves, as sent or as read: the same event. A new one so
    # named is refused, saying the channel it means.
    again = record_feedback(
        session,
        events=[
            consent("in-near", "h1", event_type="opted_in", channel=channel)
            for channel in ("email", "E Mail")
        ]
        + [consent("in-near-new", "h1", event_type="opted_in", channel="E Mail")],
        action_channels={"a-email": "email", "a-visit": "rep_visit"},
    )
    assert again.duplicates == ["in-near", "in-near"], again
    ((_, refused_id, message),) = again.rejected
    assert refused_id == "in-near-new" and "did you mean 'email'?" in message, again


def test_an_opt_out_whose_event_id_is_longer_than_stored_is_kept_under_one_derived_from_it(
    session: Session, session_factory: sessionmaker[Session]
) -> None:
    """An opt-out whose event_id is over the 128 characters stored (a consent system's
    token) was refused, the withdrawal lost. It is kept under an id derived from its
    own, the same for its resends (stored once), and said; any other event with such
    an id is still refused."""
    long_id = "unsub-" + "t" * 294
    out = delivered(long_id, "h1", event_type="opted_out", channel="email")
    first = record_feedback(session, events=[out, delivered(long_id, "h1")])
    ((index, derived, said),) = first.uncounted
    assert (index, first.accepted) == (0, [derived]), first
    assert derived.startswith("opted_out-") and len(derived) <= 128, derived
    assert said == (
        f"opt-out stored: event_id '{long_id[:40]}'... (300 characters) is longer than the "
        f"128 characters stored: stored under event_id '{derived}', derived from it (the "
        "same for every resend)"
    ), said
    assert [(i, m) for i, _, m in first.rejected] == [
        (1, "event_id must be a non-empty string of at most 128 characters")
    ], first.rejected
    again = record_feedback(session, events=[out])
    assert (again.accepted, again.duplicates) == ([], [derived]), again
    # Another opt-out under the same id is kept too, under an id of its own.
    other = record_feedback(session, events=[dataclasses.replace(out, channel="sms")])
    assert len(other.accepted) == 1 and other.accepted[0] != derived, other
    stored = stored_events(session_factory)
    assert sorted((e.hcp_id, e.channel) for e in stored.values()) == [
        ("h1", "email"),
        ("h1", "sms"),
    ]
    assert stored[derived].channel == "email"


def test_an_opt_out_of_a_channel_the_served_catalog_lacks_is_kept_saying_so(
    session: Session,
    session_factory: sessionmaker[Session],
    make_recommendation: MakeRecommendation,
    make_served_item: MakeItem,
) -> None:
    """An opt-out whose channel is certain but not one the served catalog has (an SMS
    gateway's key bound to sms, before the catalog has SMS; the unsubscribe link of a
    send on a channel since dropped) was refused, the withdrawal lost, as one 'without
    a channel' for the key's. It is kept for that channel, said under uncounted; an
    opt-in of such a channel is still refused."""
    now = datetime.now(UTC)
    sent = make_served_item(1, "a-sms", "sms")
    log_recommendations(
        session,
        records=[
            make_recommendation("rec-1", "h1", created_at=now - timedelta(hours=1), items=(sent,))
        ],
    )
    session.commit()
    catalog = {"a-email": "email", "a-visit": "rep_visit"}
    out = functools.partial(delivered, event_type="opted_out", occurred_at=now)
    from_key = [out("gw-none", "h1"), out("gw-sms", "h2", channel="SMS")]
    bound = record_feedback(
        session, events=from_key, action_channels=catalog, channels=["sms"], requester="sms-gw"
    )
    assert (bound.rejected, bound.accepted) == ([], ["gw-none", "gw-sms"]), bound
    lacks = (
        "opt-out of channel 'sms', which the served catalog does not have (known: email, "
        "rep_visit): it withdraws nothing the catalog serves today; kept, it applies once "
        "a served catalog has sms"
    )
    assert bound.uncounted == [
        (0, "gw-none", "opt-out stored for channel 'sms', the one API key 'sms-gw' speaks "
         f"for; {lacks}"),
        (1, "gw-sms", lacks),
    ]  # fmt: skip
    linked = [
        out("link-action", "h1", recommendation_id="rec-1", action_id="a-sms"),
        out("link-send", "h1", recommendation_id="rec-1"),
        delivered("in-sms", "h1", event_type="opted_in", channel="sms", occurred_at=now),
    ]
    result = record_feedback(session, events=linked, action_channels=catalog)
    assert result.accepted == ["link-action", "link-send"], result
    assert [(i, m) for i, _, m in result.uncounted] == [
        (0, lacks),
        (1, f"opt-out stored: channel read as 'sms', the one its send served; {lacks}"),
    ], result.uncounted
    assert [i for i, _, _ in result.rejected] == [2], result.rejected
    stored = stored_events(session_factory)
    assert {e: stored[e].channel for e in ("gw-none", "gw-sms", "link-action", "link-send")} == {
        "gw-none": "sms",
        "gw-sms": "sms",
        "link-action": "sms",
        "link-send": "sms",
    }


def _stored_by_an_earlier_version(
    session: Session, rows: list[tuple[str, str, str, str, datetime]]
) -> None:
    """(event_id, event_type, hcp_id, channel, occurred_at) rows inserted as an earlier
    nextbest stored them, with no model served (channels as sent): no migration."""
    for event_id, event_type, hcp_id, channel, at in rows:
        session.execute(
            insert(FeedbackEvent).values(
                event_id=event_id,
                event_type=event_type,
                hcp_id=hcp_id,
                channel=channel,
                occurred_at=at,
                received_at=at,
            )
        )
    session.commit()


def test_an_opt_out_of_all_an_earlier_version_stored_is_read_as_every_channel(
    session: Session,
) -> None:
    """With no model served, an earlier nextbest stored an opt-out of 'all' as sent,
    and consent read it as a channel named 'all': it withdrew nothing. An opt-out of
    every channel is stored with no channel (NULL) now; one of 'all' stored before is
    read the same way, and the two are one HCP's consent on every channel."""
    later = T0 + timedelta(hours=2)
    _stored_by_an_earlier_version(
        session,
        [
            ("old-all", "opted_out", "h1", "all", T0),
            ("old-All", "opted_out", "h2", "All", T0),
            ("old-every", "opted_out", "h3", "Every Channel", T0),
            ("old-star", "opted_out", "h4", "*", T0),
            # Back in to e-mail since: e-mail only, as after an opt-out stored now.
            ("old-in-email", "opted_in", "h2", "email", later),
            # An opted_in names a catalog channel or none ('all' is refused with a
            # model): one stored of 'all' grants no channel, as it never did.
            ("old-out-email", "opted_out", "h6", "email", T0),
            ("old-in-all", "opted_in", "h6", "all", later),
        ],
    )
    consent = functools.partial(delivered, event_type="opted_out")
    result = record_feedback(
        session,
        events=[
            consent("new-all", "h5", channel="all"),
            # The HCP of the old opt-out of 'all' opts back in to every channel now:
            # the later of the two decides, as between two opt-outs stored now.
            consent("new-in", "h1", event_type="opted_in", occurred_at=later),
        ],
    )
    assert result.accepted == ["new-all", "new-in"], result
    history = serving_history(
        session,
        hcp_ids=["h1", "h2", "h3", "h4", "h5", "h6"],
        windows=[],
        dismissed_since=None,
        until=T0 + timedelta(days=1),
    )
    withdrawn = {key: out for key, (_, out) in history.consent.items()}
    assert withdrawn == {
        ("h1", None): False,
        ("h2", None): True,
        ("h2", "email"): False,
        ("h3", None): True,
        ("h4", None): True,
        ("h5", None): True,
        ("h6", "email"): True,
        ("h6", "all"): False,
    }, withdrawn


def test_a_consent_event_an_earlier_version_stored_as_sent_is_a_duplicate_when_sent_again(
    session: Session, session_factory: sessionmaker[Session]
) -> None:
    """With no model served, an earlier nextbest stored consent events' channels as
    sent ('Email', 'All'); they are stored as catalogs spell them now ('email', none).
    Sent again, an opted_in was refused as another event under its id ("channel
    'Email' (this one: 'email')") and an opt-out stored a second time under a derived
    id. Compared as catalogs spell channels, each is the duplicate it is, with a model
    served or not; an event saying otherwise under such an id is still refused."""
    later = T0 + timedelta(hours=2)
    _stored_by_an_earlier_version(
        session,
        [
            ("old-out", "opted_out", "h1", "Email", T0),
            ("old-in", "opted_in", "h1", "Email", later),
            ("old-all", "opted_out", "h2", "All", T0),
            ("old-visit", "opted_out", "h3", "Rep Visit", T0),
        ],
    )
    consent = functools.partial(delivered, event_type="opted_out")
    again = [
        consent("old-out", "h1", channel="Email"),
        consent("old-in", "h1", event_type="opted_in", channel="email", occurred_at=later),
        consent("old-all", "h2", channel="all"),
        consent("old-visit", "h3", channel="rep-visit"),
    ]
    catalog = {"a-email": "email", "a-visit": "rep_visit"}
    for action_channels in (None, catalog):
        result = record_feedback(session, events=again, action_channels=action_channels)
        assert result.duplicates == [e.event_id for e in again], result
        assert not (result.accepted or result.rejected or result.uncounted), result
    assert sorted(stored_events(session_factory)) == [
        "old-all",
        "old-in",
        "old-out",
        "old-visit",
    ]
    other = record_feedback(
        session, events=[consent("old-in", "h1", event_type="opted_in", channel="sms")]
    )
    ((index, event_id, message),) = other.rejected
    assert (index, event_id) == (0, "old-in"), other
    assert "channel 'email' (this one: 'sms')" in message, message


def test_a_contact_of_a_held_out_hcp_is_stored_and_said_back(
    session: Session, session_factory: sessionmaker[Session], logged: list[RecommendationRecord]
) -> None:
    """A sender that ignored holdout: true learns it from the answer, not weeks later
    from the uplift report, whether it reports the delivery or only the open (which
    only a contact brings); an outcome of the held-out HCP is no contact."""
    after = T0 + timedelta(minutes=10)
    batch = [
        delivered("sent-anyway", "h3", recommendation_id="rec-3", channel="email",
                  occurred_at=after),
        delivered("opened-anyway", "h3", recommendation_id="rec-3", event_type="opened",
                  occurred_at=after),
        delivered("its-nrx", "h3", recommendation_id="rec-3", event_type="outcome", value=1.0,
                  occurred_at=after),
        delivered("served", "h1", recommendation_id="rec-1", action_id="a-email",
                  occurred_at=after),
        # A CRM that offered the held-out HCP to its rep, who accepted the visit.
        delivered("accepted-anyway", "h3", recommendation_id="rec-3", event_type="accepted",
                  channel=None, occurred_at=after),
    ]  # fmt: skip
    result = record_feedback(session, events=batch)
    assert result.accepted == [
        "sent-anyway", "opened-anyway", "its-nrx", "served", "accepted-anyway"
    ]  # fmt: skip
    assert not result.rejected
    said = {event_id: message for _, event_id, message in result.uncounted}
    assert set(said) == {"sent-anyway", "opened-anyway", "accepted-anyway"}, said
    for event_id in said:
        assert said[event_id].startswith(
            "stored, but recommendation 'rec-3' held this HCP out (holdout: true"
        ), said
    assert "nothing was to be sent or accepted)" in said["accepted-anyway"], said
    assert "or accepted" not in said["opened-anyway"], said
    # Without a channel, both things to know, in one message saying "stored" once.
    again = record_feedback(
        session,
        events=[delivered("no-channel", "h3", recommendation_id="rec-3", occurred_at=after)],
    )
    [(_, _, message)] = again.uncounted
    assert message.count("stored") == 1 and "counts in the all-channel budget only" in message
    assert "held this HCP out" in message, message
    assert set(stored_events(session_factory)) == {
        "sent-anyway",
        "opened-anyway",
        "its-nrx",
        "served",
        "accepted-anyway",
        "no-channel",
    }


def test_a_value_on_an_event_other_than_an_outcome_is_said_to_count_nowhere(
    session: Session, logged: list[RecommendationRecord]
) -> None:
    """Only outcomes' values are summed (the uplift report, retraining): a click sent
    with its order value is stored, and the sender told that the value counts nowhere."""
    after = T0 + timedelta(minutes=10)
    batch = [
        delivered("click-12", "h1", recommendation_id="rec-1", action_id="a-email",
                  event_type="clicked", value=12.5, occurred_at=after),
        delivered("nrx-2", "h1", recommendation_id="rec-1", event_type="outcome", value=2.0,
                  occurred_at=after),
        delivered("held-open", "h3", recommendation_id="rec-3", event_type="opened",
                  value=1.0, occurred_at=after),
        delivered("open-0", "h1", recommendation_id="rec-1", action_id="a-email",
                  event_type="opened", value=0.0, occurred_at=after),  # an export's filler
    ]  # fmt: skip
    result = record_feedback(session, events=batch)
    assert result.accepted == ["click-12", "nrx-2", "held-open", "open-0"]
    assert not result.rejected
    said = {event_id: message for _, event_id, message in result.uncounted}
    assert set(said) == {"click-12", "held-open"}, said
    assert said["click-12"] == (
        "stored, but its value 12.5 counts nowhere: only outcome events' values are "
        "measured (send it as an outcome event of its own)"
    )
    # Both things to know, in one message saying "stored" once.
    assert said["held-open"].count("stored") == 1, said
    assert "held this HCP out" in said["held-open"], said
    assert "its value 1 counts nowhere" in said["held-open"], said


def test_a_recommendation_deleted_while_its_feedback_is_stored_is_then_unknown(
    session: Session,
    session_factory: sessionmaker[Session],
    logged: list[RecommendationRecord],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A prune (or an erasure) deletes rec-2 between the batch's lookup and its INSERT:
    the INSERT failed on the foreign key and the API answered 500. The batch is now
    recorded again: the open is rejected as naming an unknown recommendation, the
    opt-out stored without it, the other events as they were."""
    import nextbest.storage.repository as repository

    looked_up = repository._served_recommendations
    deleted: list[str] = []

    def then_deleted(db: Session, recommendation_ids: Any) -> Any:
        found = looked_up(db, recommendation_ids)
        if not deleted:
            with session_factory() as other:
                other.execute(
                    RecommendationItem.__table__.delete().where(
                        RecommendationItem.recommendation_id == "rec-2"
                    )
                )
                other.execute(
                    Recommendation.__table__.delete().where(
                        Recommendation.recommendation_id == "rec-2"
                    )
                )
                other.commit()
            deleted.append("rec-2")
        return found

    monkeypatch.setattr(repository, "_served_recommendations", then_deleted)
    batch = [
        delivered("open-2", "h2", recommendation_id="rec-2", event_type="opened"),
        delivered("unsub-2", "h2", recommendation_id="rec-2", event_type="opted_out"),
        delivered("open-1", "h1", recommendation_id="rec-1", event_type="opened"),
    ]
    result = record_feedback(session, events=batch)
    assert deleted == ["rec-2"]
    assert result.accepted == ["unsub-2", "open-1"]
    assert [(eid, why) for _, eid, why in result.rejected] == [
        ("open-2", "unknown recommendation_id 'rec-2'")
    ]
    assert set(stored_events(session_factory)) == {"unsub-2", "open-1"}


def test_naive_and_offset_times_are_stored_as_utc(
    session: Session, session_factory: sessionmaker[Session]
) -> None:
    batch = [
        delivered("naive", "h1", occurred_at=datetime(2024, 6, 1, 8, 0)),
        delivered(
            "offset",
            "h1",
            occurred_at=datetime(2024, 6, 1, 10, 0, tzinfo=timezone(timedelta(hours=2))),
        ),
    ]
    record_feedback(session, events=batch)
    stored = stored_events(session_factory)
    expected = datetime(2024, 6, 1, 8, 0, tzinfo=UTC)
    assert stored["naive"].occurred_at == expected
    assert stored["offset"].occurred_at == expected
    assert stored["naive"].received_at.tzinfo == UTC


def test_batch_of_5000_events_is_stored_in_a_few_statements(
    engine: Engine,
    session: Session,
    session_factory: sessionmaker[Session],
    logged: list[RecommendationRecord],
) -> None:
    batch = [
        FeedbackRecord(
            event_id=f"bulk-{i:05d}",
            event_type=("delivered", "opened", "clicked")[i % 3],
            occurred_at=T0 + timedelta(seconds=i),
            hcp_id="h1" if i % 2 else "h2",
            recommendation_id="rec-1" if i % 2 else "rec-2",
            action_id="a-email" if i % 2 else None,
        )
        for i in range(5000)
    ]
    with count_statements(engine) as statements:
        result = record_feedback(session, events=batch)

    assert len(result.accepted) == 5000
    assert result.duplicates == [] and result.rejected == []
    # One validation query, one for the HCPs' erasures and one INSERT (SQLAlchemy
    # sends SQLite's as pages of 1,000 rows), not one statement per event.
    assert len(statements) <= 2 + 5, statements
    with session_factory() as fresh:
        assert fresh.scalar(select(func.count()).select_from(FeedbackEvent)) == 5000
        assert fresh.scalar(select(func.count()).where(FeedbackEvent.channel == "email")) == 2500


def test_concurrent_batches_with_overlapping_ids_store_each_id_once(
    session_factory: sessionmaker[Session], logged: list[RecommendationRecord]
) -> None:
    n_threads, n_events = 6, 400
    start = threading.Barrier(n_threads)

    def send(worker: int) -> list[str]:
        # Every worker sends the shared ids, in its own order, plus ids of its own.
        shared = [
            delivered(f"shared-{i}", "h1", recommendation_id="rec-1") for i in range(n_events)
        ]
        shared = shared[worker * 37 :] + shared[: worker * 37]
        own = [delivered(f"own-{worker}-{i}", "h2") for i in range(50)]
        with session_factory() as session:
            start.wait()
            result = record_feedback(session, events=shared + own)
        assert result.rejected == []
        assert len(result.accepted) + len(result.duplicates) == n_events + 50
        return result.accepted

    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        accepted = [event_id for ids in pool.map(send, range(n_threads)) for event_id in ids]

    expected = n_events + n_threads * 50
    # Each id reported as new exactly once across all callers, and stored exactly once.
    assert len(accepted) == expected
    assert len(set(accepted)) == expected
    assert len(stored_events(session_factory)) == expected


# --- contact history, cool-downs, dismissals -----------------------------------------


def test_contact_history_counts_contact_events_since_a_time(session: Session) -> None:
    since = T0
    record_feedback(
        session,
        events=[
            # A second after `since`: counted.
            delivered("c1", "h1", channel="email", occurred_at=since + timedelta(seconds=1)),
            delivered("c2", "h1", channel="email", occurred_at=since + timedelta(days=2)),
            # At `since` (a window's start is out of it) or before: not counted.
            delivered("c3", "h1", channel="email", occurred_at=since),
            delivered("c10", "h1", channel="email", occurred_at=since - timedelta(seconds=1)),
            FeedbackRecord("c4", "completed", since + timedelta(days=1), "h1", channel="visit"),
            # Engagement, not a contact.
            FeedbackRecord("c5", "opened", since + timedelta(days=3), "h1", channel="email"),
            FeedbackRecord("c6", "dismissed", since + timedelta(days=3), "h1", channel="visit"),
            delivered("c7", "h2", channel="email", occurred_at=since + timedelta(days=1)),
            # An HCP nobody asked about.
            delivered("c8", "h9", channel="email", occurred_at=since + timedelta(days=1)),
            delivered("c9", "h1", occurred_at=since + timedelta(days=1)),  # no channel
        ],
    )

    history = contact_history(session, hcp_ids=["h1", "h2", "h-none"], since=since)

    assert history == {
        ("h1", "email"): (2, since + timedelta(days=2)),
        ("h1", "visit"): (1, since + timedelta(days=1)),
        ("h2", "email"): (1, since + timedelta(days=1)),
    }
    assert contact_history(session, hcp_ids=[], since=since) == {}


def test_contacts_between_two_times_are_every_hcps_first_reports(
    session: Session, logged: list[RecommendationRecord]
) -> None:
    start, end = T0, T0 + timedelta(days=7)
    record_feedback(
        session,
        events=[
            delivered("c1", "h1", channel="email", occurred_at=start),  # the start is in
            delivered("c2", "h2", channel="visit", occurred_at=start + timedelta(days=3)),
            delivered("c3", "h1", channel="email", occurred_at=end),  # the end is not
            delivered("c4", "h1", channel="email", occurred_at=start - timedelta(seconds=1)),
            FeedbackRecord("c5", "opened", start + timedelta(days=1), "h1", channel="email"),
            delivered("c6", "h3", occurred_at=start + timedelta(days=1)),  # no channel
            FeedbackRecord("c7", "completed", start + timedelta(days=2), "h9", channel="visit"),
            # The same item reported twice is one contact, at its first report.
            *(
                delivered(
                    f"c8-{day}",
                    "h1",
                    channel="email",
                    occurred_at=start + timedelta(days=day),
                    recommendation_id="rec-1",
                    action_id="a-email",
                )
                for day in (5, 4)
            ),
            # Its recommendation's first engagement is when the contact engaged.
            *(
                FeedbackRecord(
                    f"c9-{day}",
                    kind,
                    start + timedelta(days=day),
                    "h1",
                    recommendation_id="rec-1",
                    action_id="a-email",
                )
                for day, kind in ((9, "clicked"), (6, "opened"))
            ),
        ],
    )

    found = contacts_between(session, start=start, end=end)

    assert list(found.columns) == ["hcp_id", "channel", "timestamp", "action_id", "engaged_at"]
    assert found[["hcp_id", "channel"]].to_numpy().tolist() == [
        ["h1", "email"],
        ["h9", "visit"],
        ["h2", "visit"],
        ["h1", "email"],
    ]
    assert found["timestamp"].tolist() == [
        pd.Timestamp(start + timedelta(days=d)) for d in (0, 2, 3, 4)
    ]
    assert found["action_id"].tolist() == [None, None, None, "a-email"]
    # Opened a day later (c5, of its HCP and channel), a completed visit (its own
    # engagement), not engaged, opened later (its recommendation's c9).
    engaged_at = found["engaged_at"]
    assert engaged_at.isna().tolist() == [False, False, True, False]
    assert engaged_at.iloc[0] == pd.Timestamp(start + timedelta(days=1))
    assert engaged_at.iloc[1] == pd.Timestamp(start + timedelta(days=2))
    assert engaged_at.iloc[3] == pd.Timestamp(start + timedelta(days=6))
    assert contacts_between(session, start=end, end=end + timedelta(days=1)).shape == (1, 5)


def test_contacts_between_says_when_each_contact_and_its_engagement_were_reported(
    session: Session, logged: list[RecommendationRecord]
) -> None:
    """What a replay moves a history by, day by day: only what the store held then (a
    feed of yesterday's sends this morning moved no history at midnight)."""
    hour, day = timedelta(hours=1), timedelta(days=1)
    sent, opened = T0 + 2 * day, T0 + 5 * day  # when each batch reached the store
    record_feedback(
        session,
        events=[
            delivered(
                "n1",
                "h1",
                channel="email",
                occurred_at=T0,
                recommendation_id="rec-1",
                action_id="a-email",
            ),
            delivered("u1", "h2", channel="email", occurred_at=T0 + hour),
            FeedbackRecord("x1", "completed", T0 + 2 * hour, "h9", channel="visit"),
        ],
        received_at=sent,
    )
    record_feedback(
        session,
        events=[
            FeedbackRecord(
                "o1", "opened", T0 + 3 * hour, "h1", recommendation_id="rec-1", action_id="a-email"
            ),
            FeedbackRecord("o2", "opened", T0 + 4 * hour, "h2", channel="email"),
        ],
        received_at=opened,
    )
    found = contacts_between(session, start=T0, end=T0 + 7 * day, reported=True)

    assert list(found.columns) == [
        "hcp_id",
        "channel",
        "timestamp",
        "action_id",
        "engaged_at",
        "reported_at",
        "engagement_reported_at",
    ]
    by_hcp = found.set_index("hcp_id")
    assert (by_hcp["reported_at"] == pd.Timestamp(sent)).all()
    # Its recommendation's open, an open of its HCP and channel, its own completion.
    assert by_hcp.loc["h1", "engagement_reported_at"] == pd.Timestamp(opened)
    assert by_hcp.loc["h2", "engagement_reported_at"] == pd.Timestamp(opened)
    assert by_hcp.loc["h9", "engagement_reported_at"] == pd.Timestamp(sent)
    assert by_hcp["engaged_at"].tolist() == [pd.Timestamp(T0 + h * hour) for h in (3, 4, 2)]
    plain = contacts_between(session, start=T0, end=T0 + 7 * day)
    assert list(plain.columns) == list(found.columns)[:5]


def test_a_contact_naming_no_recommendation_is_engaged_by_the_next_open_on_its_channel(
    session: Session,
) -> None:
    """A send nextbest did not suggest is engaged by an engagement event of its HCP and
    channel (naming no recommendation either) within the wait after it, and an open
    belongs to the HCP's latest send on the channel, not to every one before it."""
    start = T0
    hour = timedelta(hours=1)
    record_feedback(
        session,
        events=[
            delivered("s1", "h1", channel="email", occurred_at=start),
            delivered("s2", "h1", channel="email", occurred_at=start + timedelta(days=1)),
            FeedbackRecord("o1", "opened", start + timedelta(days=1) + hour, "h1", channel="email"),
            # Opened twice: engaged at the first.
            FeedbackRecord(
                "o2", "clicked", start + timedelta(days=1) + 2 * hour, "h1", channel="email"
            ),
            # Another HCP, another channel: neither engages h1's e-mails.
            FeedbackRecord("o3", "opened", start + 2 * hour, "h2", channel="email"),
            delivered("s3", "h1", channel="webinar", occurred_at=start),
            # Past the wait: left to a retrain.
            delivered("s4", "h2", channel="email", occurred_at=start + timedelta(days=2)),
            FeedbackRecord(
                "o4",
                "opened",
                start + timedelta(days=2 + ENGAGEMENT_WAIT_DAYS) + hour,
                "h2",
                channel="email",
            ),
        ],
    )
    found = contacts_between(session, start=start, end=start + timedelta(days=7))
    engaged = dict(
        zip(
            zip(found["hcp_id"], found["channel"], found["timestamp"], strict=True),
            found["engaged_at"],
            strict=True,
        )
    )
    day = timedelta(days=1)
    assert pd.isna(engaged[("h1", "email", pd.Timestamp(start))])
    assert engaged[("h1", "email", pd.Timestamp(start + day))] == pd.Timestamp(start + day + hour)
    assert pd.isna(engaged[("h1", "webinar", pd.Timestamp(start))])
    assert pd.isna(engaged[("h2", "email", pd.Timestamp(start + 2 * day))])
    assert list(found.columns) == ["hcp_id", "channel", "timestamp", "action_id", "engaged_at"]


def test_an_open_after_a_suggested_send_does_not_engage_an_earlier_unsuggested_one(
    session: Session, logged: list[RecommendationRecord]
) -> None:
    """An engagement naming no recommendation belongs to the HCP's latest send on the
    channel, whether that send names a recommendation or not: after a suggested
    e-mail (rec-1), an open naming nothing is not credited to the CRM's own e-mail
    the day before, though that one is within the wait."""
    day, hour = timedelta(days=1), timedelta(hours=1)
    record_feedback(
        session,
        events=[
            delivered("u1", "h1", channel="email", occurred_at=T0),
            delivered(
                "n1",
                "h1",
                channel="email",
                occurred_at=T0 + day,
                recommendation_id="rec-1",
                action_id="a-email",
            ),
            FeedbackRecord("o1", "opened", T0 + day + hour, "h1", channel="email"),
            # A later unsuggested send, opened after it: engaged as before.
            delivered("u2", "h1", channel="email", occurred_at=T0 + 3 * day),
            FeedbackRecord("o2", "opened", T0 + 3 * day + hour, "h1", channel="email"),
        ],
    )
    found = contacts_between(session, start=T0, end=T0 + timedelta(days=7))
    engaged = dict(zip(found["timestamp"], found["engaged_at"], strict=True))

    assert pd.isna(engaged[pd.Timestamp(T0)])
    # The suggested send is engaged by its own events only (none were sent).
    assert pd.isna(engaged[pd.Timestamp(T0 + day)])
    assert engaged[pd.Timestamp(T0 + 3 * day)] == pd.Timestamp(T0 + 3 * day + hour)


def test_last_contacts_are_the_most_recent_contact_ever(session: Session) -> None:
    record_feedback(
        session,
        events=[
            delivered("l1", "h1", channel="email", occurred_at=T0 - timedelta(days=400)),
            delivered("l2", "h1", channel="email", occurred_at=T0 - timedelta(days=30)),
            FeedbackRecord("l3", "completed", T0 - timedelta(days=10), "h1", channel="visit"),
            FeedbackRecord("l4", "clicked", T0, "h1", channel="email"),  # not a contact
        ],
    )
    assert last_contacts(session, hcp_ids=["h1"]) == {
        ("h1", "email"): T0 - timedelta(days=30),
        ("h1", "visit"): T0 - timedelta(days=10),
    }
    assert last_contacts(session, hcp_ids=["h1"], channels=["visit"]) == {
        ("h1", "visit"): T0 - timedelta(days=10)
    }


def test_dismissals_keep_the_latest_reason_since_a_time(session: Session) -> None:
    record_feedback(
        session,
        events=[
            FeedbackRecord(
                "d1", "dismissed", T0 - timedelta(days=1), "h1", action_id="a1", reason="old"
            ),
            FeedbackRecord(
                "d2",
                "dismissed",
                T0 + timedelta(hours=1),
                "h1",
                action_id="a1",
                reason="not relevant",
            ),
            FeedbackRecord(
                "d3", "dismissed", T0 + timedelta(hours=2), "h1", action_id="a1", reason="saw it"
            ),
            FeedbackRecord("d4", "snoozed", T0 + timedelta(hours=1), "h1", action_id="a2"),
            FeedbackRecord(
                "d5", "dismissed", T0 - timedelta(days=2), "h1", action_id="a3", reason="too old"
            ),
            FeedbackRecord("d6", "dismissed", T0 + timedelta(hours=1), "h1"),  # no action
            FeedbackRecord("d7", "accepted", T0 + timedelta(hours=1), "h1", action_id="a4"),
        ],
    )
    assert dismissals(session, hcp_ids=["h1", "h2"], since=T0) == {
        ("h1", "a1"): "saw it",
        ("h1", "a2"): "snoozed",
    }


# --- logged decisions for retraining and off-policy evaluation --------------------


def test_logged_decisions_shape_and_values(
    session: Session, make_recommendation: MakeRecommendation, logged: list[RecommendationRecord]
) -> None:
    # A served answer that turned out empty (every candidate filtered out).
    empty = make_recommendation("rec-4", "h4", created_at=T0 + timedelta(minutes=9))
    log_recommendations(session, records=[empty])
    session.commit()
    record_feedback(
        session,
        events=[
            delivered("f1", "h1", recommendation_id="rec-1", action_id="a-email"),
            FeedbackRecord(
                "f2", "opened", T0 + timedelta(hours=2), "h1", recommendation_id="rec-1"
            ),
            FeedbackRecord(
                "f3", "clicked", T0 + timedelta(hours=3), "h1", recommendation_id="rec-1"
            ),
            FeedbackRecord(
                "f4", "outcome", T0 + timedelta(days=9), "h1", recommendation_id="rec-1", value=2.0
            ),
            FeedbackRecord(
                "f5", "outcome", T0 + timedelta(days=9), "h1", recommendation_id="rec-1", value=1.5
            ),
            delivered("f6", "h2", recommendation_id="rec-2"),  # delivered only: not engaged
            FeedbackRecord(
                "f7", "outcome", T0 + timedelta(days=9), "h3", recommendation_id="rec-3", value=0.5
            ),
        ],
    )

    frame = logged_decisions(session)

    assert list(frame.columns) == list(LOGGED_DECISION_COLUMNS)
    assert frame["recommendation_id"].tolist() == ["rec-1", "rec-2", "rec-3", "rec-4"]
    assert frame["hcp_id"].tolist() == ["h1", "h2", "h3", "h4"]
    assert str(frame["timestamp"].dtype) == "datetime64[ns]"  # naive UTC
    assert frame["timestamp"].tolist() == [
        pd.Timestamp("2024-03-04 09:00"),
        pd.Timestamp("2024-03-04 09:00"),
        pd.Timestamp("2024-03-04 09:05"),
        pd.Timestamp("2024-03-04 09:09"),
    ]
    assert frame["action_id"].tolist() == ["a-email", "a-visit", None, None]
    assert frame["channel"].tolist() == ["email", "visit", None, None]
    assert frame["content_id"].tolist() == ["content-a-email", "content-a-visit", None, None]
    assert frame["engaged"].dtype == "int64"
    assert frame["engaged"].tolist() == [1, 0, 0, 0]
    outcome = frame["outcome"].tolist()
    assert outcome[:3] == [3.5, pytest.approx(float("nan"), nan_ok=True), 0.5]
    assert math.isnan(outcome[1]) and math.isnan(outcome[3])
    propensity = frame["propensity"].tolist()
    assert propensity[:3] == [0.9, 0.6, 0.1]  # the holdout row carries the holdout rate
    assert math.isnan(propensity[3])  # empty non-holdout answer
    assert frame["holdout"].dtype == bool
    assert frame["holdout"].tolist() == [False, False, True, False]
    assert frame["model_version"].unique().tolist() == ["nextbest/7"]


def test_outcomes_without_a_recommendation_count_for_the_hcps_latest_decision(
    session: Session, make_recommendation: MakeRecommendation, logged: list[RecommendationRecord]
) -> None:
    # A weekly NRx feed knows HCPs, not recommendations: each outcome counts for the
    # HCP's latest logged decision at most 7 days before it, a holdout one included
    # (so the uplift report has its control group), and for none otherwise.
    later = make_recommendation(
        "rec-5", "h1", created_at=T0 + timedelta(days=3), model_version="nextbest/8"
    )
    log_recommendations(session, records=[later])
    session.commit()

    def outcome(event_id: str, hcp: str, days: float, value: float, **fields: Any) -> Any:
        at = T0 + timedelta(days=days)
        return FeedbackRecord(event_id, "outcome", at, hcp, value=value, **fields)

    record_feedback(
        session,
        events=[
            outcome("o1", "h1", 2, 1.0),  # rec-1 (rec-5 comes later)
            outcome("o2", "h1", 4, 2.0),  # rec-5, the latest before it
            outcome("o3", "h3", 1, 0.25),  # rec-3, a holdout answer
            outcome("o4", "h1", 20, 9.0),  # 17 days after rec-5: none
            outcome("o5", "h2", -1, 5.0),  # before any decision of h2: none
            outcome("o6", "h1", 9, 2.0, recommendation_id="rec-1"),  # named: as before
        ],
    )
    frame = logged_decisions(session).set_index("recommendation_id")
    assert frame.loc["rec-1", "outcome"] == 3.0
    assert frame.loc["rec-5", "outcome"] == 2.0
    assert frame.loc["rec-3", "outcome"] == 0.25
    assert math.isnan(frame.loc["rec-2", "outcome"])
    assert logged_decisions(session).attrs["outcomes_by_hcp"] == (3, 2)
    # One version's decisions: the outcome of rec-5 (another version) is not moved
    # to an older decision of this one.
    own = logged_decisions(session, model_version="nextbest/7").set_index("recommendation_id")
    assert own.loc["rec-1", "outcome"] == 3.0 and "rec-5" not in own.index
    # Since a day after rec-1: o1 and o2 happened after it, but o1's decision is
    # before it: o1 is neither counted nor said to match nothing.
    later_only = logged_decisions(session, since=T0 + timedelta(days=1))
    assert later_only["recommendation_id"].tolist() == ["rec-5"]
    assert later_only.attrs["outcomes_by_hcp"] == (1, 1)  # o2; o4 matched nothing
    # A narrower window: o1 (2 days after rec-1) no longer counts.
    narrow = logged_decisions(session, outcome_window=timedelta(days=1))
    assert narrow.set_index("recommendation_id").loc["rec-1", "outcome"] == 2.0


def test_outcomes_without_a_recommendation_follow_plans_logged_ahead(
    session: Session, make_recommendation: MakeRecommendation
) -> None:
    """Plans for the next weeks logged on one day, a minute apart: an outcome of the
    first week counts for the first week's decision (by the date each was asked for),
    not for the last one logged."""
    plans = [
        make_recommendation(
            f"plan-{week}",
            "h9",
            created_at=T0 + timedelta(minutes=week),
            decided_for=T0 + timedelta(days=7 * week),
        )
        for week in (1, 2, 3)
    ]
    log_recommendations(session, records=plans)
    session.commit()
    record_feedback(
        session,
        events=[
            FeedbackRecord("w1", "outcome", T0 + timedelta(days=9), "h9", value=1.0),
            FeedbackRecord("w3", "outcome", T0 + timedelta(days=22), "h9", value=3.0),
        ],
    )
    frame = logged_decisions(session).set_index("recommendation_id")
    assert frame.loc["plan-1", "outcome"] == 1.0
    assert math.isnan(frame.loc["plan-2", "outcome"])
    assert frame.loc["plan-3", "outcome"] == 3.0


def test_logged_decisions_since_and_empty(
    session: Session, logged: list[RecommendationRecord]
) -> None:
    later = logged_decisions(session, since=T0 + timedelta(minutes=1))
    assert later["recommendation_id"].tolist() == ["rec-3"]

    none = logged_decisions(session, since=T0 + timedelta(days=1))
    assert none.empty
    assert list(none.columns) == list(LOGGED_DECISION_COLUMNS)


def test_logged_decisions_details_and_model_version(
    session: Session, make_recommendation: MakeRecommendation, logged: list[RecommendationRecord]
) -> None:
    other = make_recommendation(
        "rec-9",
        "h9",
        created_at=T0 + timedelta(minutes=7),
        model_version="nextbest/8",
        purpose="medical",
        channel_filter="email",
        n_candidates=0,
        epsilon=0.2,
        holdout_rate=0.05,
        requester="nextbest picks",
        p_no_action=1.0,
    )
    log_recommendations(session, records=[other])
    session.commit()
    record_feedback(
        session,
        events=[
            FeedbackRecord(
                "g1", "outcome", T0 + timedelta(days=9), "h9", recommendation_id="rec-9", value=4.0
            ),
            FeedbackRecord(
                "g2", "outcome", T0 + timedelta(days=9), "h1", recommendation_id="rec-1", value=1.0
            ),
        ],
    )

    detailed = logged_decisions(session, details=True)
    assert list(detailed.columns) == [*LOGGED_DECISION_COLUMNS, *LOGGED_DECISION_DETAIL_COLUMNS]
    row = detailed.set_index("recommendation_id").loc["rec-9"]
    assert (row["purpose"], row["channel_filter"], row["n_candidates"]) == ("medical", "email", 0)
    assert row["requester"] == "nextbest picks"
    assert (row["epsilon"], row["holdout_rate"]) == (0.2, 0.05)
    assert detailed["n_candidates"].dtype == "int64"
    # Logged as the serving policy computed it; NaN for answers logged without it.
    assert row["p_no_action"] == 1.0 and detailed["p_no_action"].dtype == "float64"
    assert detailed.set_index("recommendation_id")["p_no_action"].drop("rec-9").isna().all()

    only_8 = logged_decisions(session, model_version="nextbest/8")
    assert only_8["recommendation_id"].tolist() == ["rec-9"]
    assert only_8["outcome"].tolist() == [4.0]
    only_7 = logged_decisions(session, model_version="nextbest/7", since=T0 + timedelta(minutes=1))
    assert only_7["recommendation_id"].tolist() == ["rec-3"]
    assert logged_decisions(session, model_version="nextbest/99").empty


def test_logged_decisions_frame_of_every_kind_of_row(
    session: Session,
    make_recommendation: MakeRecommendation,
    make_served_item: MakeItem,
    logged: list[RecommendationRecord],
) -> None:
    """The whole frame, values, dtypes, order and attrs, on a log with every kind of
    row: served, explored, holdout and empty answers, one asked for another day, two
    logged at the same time, feedback of each kind, outcomes named and by HCP, an
    erased HCP. Its values are what the reads of the log have always given."""
    more = [
        # Empty (every candidate filtered out), decided for the next day, with the
        # serving policy's probability of no action.
        make_recommendation(
            "rec-4",
            "h4",
            created_at=T0 + timedelta(minutes=9, microseconds=250),
            decided_for=T0 + timedelta(days=1),
            p_no_action=0.3,
            requester="nextbest picks",
            channel_filter="email",
            n_candidates=0,
        ),
        # Explored: a low-propensity item first, by another version, which a random
        # split (a challenger share) chose to answer the HCP.
        make_recommendation(
            "rec-5",
            "h5",
            created_at=T0 + timedelta(hours=1),
            model_version="nextbest/8",
            purpose="medical",
            epsilon=0.2,
            split_with="nextbest/7",
            split_share=0.25,
            items=(
                make_served_item(1, "a-webinar", "webinar", propensity=0.05),
                make_served_item(2, "a-email", "email", propensity=0.5),
            ),
        ),
        make_recommendation(
            "rec-6", "h6", created_at=T0 + timedelta(hours=2), items=(make_served_item(1, "a-x"),)
        ),
    ]
    log_recommendations(session, records=more)
    session.commit()
    at = T0 + timedelta(hours=3)
    record_feedback(
        session,
        events=[
            delivered("e1", "h1", recommendation_id="rec-1", action_id="a-email"),
            FeedbackRecord("e2", "opened", at, "h1", recommendation_id="rec-1"),
            FeedbackRecord("e3", "outcome", at, "h1", recommendation_id="rec-1", value=2.5),
            delivered("e4", "h2", recommendation_id="rec-2"),  # reached, not engaged
            FeedbackRecord(
                "e5",
                "dismissed",
                at,
                "h5",
                recommendation_id="rec-5",
                action_id="a-webinar",
                reason="not relevant",
            ),
            FeedbackRecord("e6", "clicked", at, "h5", recommendation_id="rec-5"),
            FeedbackRecord("e7", "outcome", at, "h5", recommendation_id="rec-5", value=0.0),
            FeedbackRecord("e8", "outcome", at + timedelta(days=1), "h3", value=1.25),  # by HCP
            FeedbackRecord("e9", "outcome", at + timedelta(days=2), "h4", value=4.0),  # by HCP
            FeedbackRecord("e10", "outcome", T0 - timedelta(days=30), "h2", value=9.0),  # none
            FeedbackRecord("e11", "outcome", at, "h6", recommendation_id="rec-6", value=7.0),
            FeedbackRecord("e12", "outcome", at, "h6", value=3.0),
        ],
    )
    repository.erase_hcps(session, hcp_ids=["h6"], requester="privacy office")

    frame = logged_decisions(session, details=True)

    nan, none = float("nan"), None
    served = [T0, T0, T0 + timedelta(minutes=5), more[0].created_at, more[1].created_at]
    naive = pd.to_datetime(pd.Series(served), utc=True).dt.tz_localize(None)
    expected = pd.DataFrame(
        {
            "hcp_id": ["h1", "h2", "h3", "h4", "h5"],  # h6 erased
            "timestamp": naive,
            "action_id": ["a-email", "a-visit", none, none, "a-webinar"],
            "channel": ["email", "visit", none, none, "webinar"],
            "content_id": ["content-a-email", "content-a-visit", none, none, "content-a-webinar"],
            "engaged": np.array([1, 0, 0, 0, 1], dtype="int64"),
            # rec-3 and rec-4 by HCP (rec-4 from the day it was decided for).
            "outcome": [2.5, nan, 1.25, 4.0, 0.0],
            "propensity": [0.9, 0.6, 0.1, nan, 0.05],
            "holdout": [False, False, True, False, False],
            "recommendation_id": ["rec-1", "rec-2", "rec-3", "rec-4", "rec-5"],
            "model_version": ["nextbest/7"] * 4 + ["nextbest/8"],
            "contacted": np.array([1, 1, 0, 0, 1], dtype="int64"),
            "requester": ["crm-eu", "crm-eu", "crm-eu", "nextbest picks", "crm-eu"],
            "purpose": ["promotional"] * 4 + ["medical"],
            "channel_filter": [none, none, none, "email", none],
            "n_candidates": np.array([200, 200, 200, 0, 200], dtype="int64"),
            "epsilon": [0.05, 0.05, 0.05, 0.05, 0.2],
            "holdout_rate": [0.1] * 5,
            "decided_for": naive.where(naive.index != 3, pd.Timestamp("2024-03-05 09:00")),
            "p_no_action": [nan, nan, nan, 0.3, nan],
            "outcome_named": [True, False, False, False, True],
            "policy": ["epsilon_greedy"] * 5,
            "split_with": [none] * 4 + ["nextbest/7"],
            "split_share": [nan] * 4 + [0.25],
        }
    )
    expected = expected.astype(
        {"action_id": object, "channel": object, "content_id": object, "split_with": object}
    )
    pd.testing.assert_frame_equal(frame, expected, check_exact=True)
    assert frame.attrs == {"outcomes_by_hcp": (2, 1)}  # e8 and e9 counted; e10 none
    # Without details: the same rows, the contract's columns only.
    plain = logged_decisions(session)
    pd.testing.assert_frame_equal(plain, expected.loc[:, list(LOGGED_DECISION_COLUMNS)])
    assert plain.attrs == frame.attrs


def test_the_reads_of_the_whole_log_give_equal_frames_on_sqlite_and_postgresql(
    tmp_path: Path, postgres_url: str
) -> None:
    """The same rows give the same frames, values and dtypes, on SQLite (timestamps
    read as text) and PostgreSQL (as microseconds since the epoch, computed by the
    server, whatever the session's time zone): times given in other zones, with
    microseconds, either side of 1970, and none (an answer logged before 0003)."""
    behind = timezone(timedelta(hours=-3, minutes=-30))
    ahead = timezone(timedelta(hours=5, minutes=45))
    records = [
        recommendation_record(
            "r-1",
            "h1",
            created_at=datetime(2024, 3, 4, 5, 30, 0, 123456, tzinfo=behind),
            decided_for=datetime(2024, 3, 5, tzinfo=ahead),
            items=(served_item(1, "a1"),),
        ),
        recommendation_record(
            "r-2",
            "h2",
            created_at=datetime(2024, 3, 4, 9, 0, 0, 1, tzinfo=UTC),
            decided_for=datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            holdout=True,
        ),
        recommendation_record(
            "r-3",
            "h2",
            created_at=datetime(2024, 3, 11, 23, 59, 59, 999999, tzinfo=ahead),
            model_version="nextbest/8",
            items=(served_item(1, "a2"),),
        ),
    ]
    events = [
        FeedbackRecord(
            "e-1", "opened", datetime(2024, 3, 4, 12, 0, 0, 7, tzinfo=behind), "h1", "r-1", "a1"
        ),
        FeedbackRecord(
            "e-2", "outcome", datetime(2024, 3, 6, 1, 2, 3, 456789, tzinfo=ahead), "h2", value=2.0
        ),
        FeedbackRecord("e-3", "outcome", datetime(2024, 3, 12, tzinfo=UTC), "h2", value=1.5),
    ]
    # A session zone other than UTC (half hours, and a daylight-saving change in March).
    postgres = make_url(postgres_url).update_query_dict({"options": "-c TimeZone=America/St_Johns"})
    frames: dict[str, list[pd.DataFrame]] = {}
    sent: dict[str, list[tuple[str, Any]]] = {}
    for url in (
        f"sqlite:///{tmp_path / 'log.db'}",
        postgres.render_as_string(hide_password=False),
    ):
        migrate(url)
        engine = make_engine(url)
        try:
            with make_session_factory(engine)() as session:
                log_recommendations(session, records=records)
                session.commit()
                assert not record_feedback(session, events=events).rejected
                session.execute(  # as an answer logged before revision 0003 is
                    update(Recommendation)
                    .where(Recommendation.recommendation_id == "r-3")
                    .values(decided_for=None)
                )
                session.commit()
                with statements_sent(engine) as sent[engine.dialect.name]:
                    frames[engine.dialect.name] = [
                        logged_decisions(session, details=True),
                        # Reads the answers' times again, for the outcomes by HCP.
                        logged_decisions(session, model_version="nextbest/8", details=True),
                        repository.hcp_outcomes(session),
                    ]
        finally:
            engine.dispose()
    for on_sqlite, on_postgres in zip(frames["sqlite"], frames["postgresql"], strict=True):
        pd.testing.assert_frame_equal(on_postgres, on_sqlite, check_exact=True)
        assert on_postgres.attrs == on_sqlite.attrs
    every, _, outcomes = frames["sqlite"]
    assert every["timestamp"].tolist() == [
        pd.Timestamp("2024-03-04 09:00:00.000001"),
        pd.Timestamp("2024-03-04 09:00:00.123456"),
        pd.Timestamp("2024-03-11 18:14:59.999999"),
    ]
    assert every["decided_for"].tolist() == [
        pd.Timestamp("1969-12-31 23:59:59.999999"),
        pd.Timestamp("2024-03-04 18:15"),
        pd.Timestamp("2024-03-11 18:14:59.999999"),  # none: when it was served
    ]
    assert str(outcomes["at"].dtype) == "datetime64[ns, UTC]"
    assert outcomes["at"].tolist() == [
        pd.Timestamp("2024-03-05 19:17:03.456789", tz="UTC"),
        pd.Timestamp("2024-03-12", tz="UTC"),
    ]
    # PostgreSQL sends its timestamps as integers, not as datetime objects to convert.
    reads = [statement for statement, _ in sent["postgresql"] if "created_at" in statement]
    assert reads and all(
        "EXTRACT(epoch FROM recommendations.created_at)" in statement for statement in reads
    ), reads


def test_events_stored_before_the_reason_rule_are_duplicates_when_sent_again(
    session: Session,
) -> None:
    """An older nextbest stored a dismissal without a reason and an acceptance with
    one: their resend (an outbox, a nightly file) is a duplicate, not a rejection;
    a new such event is still refused."""
    for event_id, event_type, reason in (
        ("old-dismissal", "dismissed", None),
        ("old-acceptance", "accepted", "other"),
    ):
        session.add(
            FeedbackEvent(
                event_id=event_id,
                event_type=event_type,
                occurred_at=T0,
                received_at=T0,
                hcp_id="h1",
                action_id="a1",
                reason=reason,
                requester="an older nextbest",
            )
        )
    session.commit()
    again = record_feedback(
        session,
        events=[
            FeedbackRecord("old-dismissal", "dismissed", T0, "h1", action_id="a1"),
            FeedbackRecord("new-dismissal", "dismissed", T0, "h1", action_id="a1"),
            FeedbackRecord("old-acceptance", "accepted", T0, "h1", action_id="a1", reason="other"),
            # The same id for another action is not the stored event: refused as new.
            FeedbackRecord("old-acceptance", "accepted", T0, "h1", action_id="a2", reason="x"),
        ],
    )
    assert sorted(again.duplicates) == ["old-acceptance", "old-dismissal"]
    assert [(i, e) for i, e, _ in again.rejected] == [(1, "new-dismissal"), (3, "old-acceptance")]
    assert again.rejected[0][2].startswith("a dismissal needs a reason code")
    assert again.accepted == []


@pytest.mark.parametrize(
    "field", ["event_id", "hcp_id", "recommendation_id", "action_id", "channel", "reason"]
)
def test_a_nul_character_in_a_text_field_is_refused_per_event_on_every_database(
    session: Session,
    session_factory: sessionmaker[Session],
    logged: list[RecommendationRecord],
    field: str,
) -> None:
    """PostgreSQL refuses a NUL in text (SQLite stores it): the event must be refused
    on its own, naming the field, not fail the batch with a DataError. (An opt-out
    leaves out a recommendation or action it cannot name, as any unknown one.)"""
    fields: dict[str, Any] = {
        "event_id": "with-nul",
        "event_type": "clicked",
        "occurred_at": T0,
        "hcp_id": "h1",
        "recommendation_id": "rec-1",
        "action_id": "a-email",
        "channel": "email",
        "reason": "unsubscribe link",
    }
    fields[field] = f"{fields[field]}\x00x"
    batch = [FeedbackRecord(**fields), delivered("ok", "h1", channel="email")]
    result = record_feedback(session, events=batch)
    assert result.accepted == ["ok"]
    [(index, _, message)] = result.rejected
    assert index == 0
    assert message.startswith(f"{field} contains a NUL character"), message
    assert sorted(stored_events(session_factory)) == ["ok"]


def test_an_opt_out_whose_id_another_event_holds_is_stored_under_a_derived_id(
    session: Session, session_factory: sessionmaker[Session], logged: list[RecommendationRecord]
) -> None:
    """Event ids are the sender's and shared by every key: an id taken first by
    another event (a rep's, by chance or not) must not lose a withdrawal of consent."""
    squatted = FeedbackRecord("optout-h2", "opted_out", T0, "h1", channel="rep_phone")
    assert record_feedback(session, events=[squatted], requester="rep-1").accepted == ["optout-h2"]
    withdrawal = FeedbackRecord("optout-h2", "opted_out", T0, "h2")
    other = delivered("optout-h2", "h2", channel="email")  # not an opt-out: refused
    result = record_feedback(session, events=[withdrawal, other], requester="consent")
    [(index, event_id, said)] = result.uncounted
    [derived] = result.accepted
    assert (index, event_id) == (0, "optout-h2") and derived != "optout-h2"
    assert said.startswith(f"stored under event_id '{derived}': event_id 'optout-h2'"), said
    assert [(i, e) for i, e, _ in result.rejected] == [(1, "optout-h2")]
    stored = stored_events(session_factory)
    assert (stored[derived].hcp_id, stored[derived].channel) == ("h2", None)
    assert stored["optout-h2"].hcp_id == "h1"  # the first event keeps its id
    # Sent again, it is a duplicate of the one stored under the derived id.
    again = record_feedback(session, events=[withdrawal], requester="consent")
    assert again.accepted == [] and again.duplicates == [derived]
    assert len(stored_events(session_factory)) == 2


def test_an_opt_out_of_a_requester_of_several_channels_is_one_row_per_channel(
    session: Session, session_factory: sessionmaker[Session]
) -> None:
    """A marketing platform bound to email and sms: its opt-out naming no channel,
    'all' or 'fax' withdraws both, one row per channel; sent again (in the same batch,
    or later with no model served) it is a duplicate, nothing stored twice."""
    out = functools.partial(delivered, event_type="opted_out")
    sent = [
        out("none", "h1"),
        out("all", "h2", channel="all"),
        out("fax", "h3", channel="fax"),
        out("fax", "h3", channel="fax"),  # its repeat in the batch
    ]
    bound = functools.partial(
        record_feedback, session, events=sent, channels=["email", "sms"], requester="platform"
    )
    result = bound(action_channels={"a-email": "email", "a-visit": "rep_visit"})
    assert result.rejected == [], result
    assert (result.accepted, result.duplicates) == (["none", "all", "fax"], ["fax"]), result
    assert [i for i, _, _ in result.uncounted] == [0, 1, 2], result.uncounted
    said = result.uncounted[0][2]
    assert said.startswith(
        "opt-out stored for channels email, sms, every channel API key 'platform' speaks "
        "for; each other channel a row of its own: sms under event_id 'opted_out-"
    ), said
    assert said.endswith("(no channel of the served catalog: it applies once one has it)")
    again = bound(action_channels=None)
    assert again.accepted == [] and again.uncounted == [], again
    assert again.duplicates == ["none", "all", "fax", "fax"], again
    rows = sorted(
        (row.hcp_id, row.channel, row.requester, row.channel_unmatched)
        for row in stored_events(session_factory).values()
    )
    assert rows == [(h, c, "platform", None) for h in ("h1", "h2", "h3") for c in ("email", "sms")]
    history = serving_history(
        session, hcp_ids=["h1", "h2", "h3"], windows=[], dismissed_since=None,
        until=T0 + timedelta(days=1),
    )  # fmt: skip
    withdrawn = {key for key, (_, withdrew) in history.consent.items() if withdrew}
    assert withdrawn == {(h, c) for h in ("h1", "h2", "h3") for c in ("email", "sms")}
    # A look-up of the HCP links each row under a derived id to the event it came from.
    listed = feedback_for(session, hcp_id="h3")
    assert sorted((e["channel"], e["derived_from"]) for e in listed) == [
        ("email", None),
        ("sms", "fax"),
    ], listed
    # And the event's id finds them (a look-up given it for a recommendation's).
    [sms] = [e["event_id"] for e in listed if e["channel"] == "sms"]
    assert rows_derived_from(session, event_id="fax", hcp_id="h3") == [sms]
    assert rows_derived_from(session, event_id="none", hcp_id="h3") == []
    assert rows_derived_from(session, event_id=sms, hcp_id="h3") == []
