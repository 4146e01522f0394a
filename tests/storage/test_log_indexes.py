"""The per-HCP reads of the erasure find their rows through indexes, on SQLite and
PostgreSQL: the plan of each statement they send, not a timing (a year of log is
millions of rows: bench/logscale.py measures them there).

On PostgreSQL the plans are made with sequential scans priced out of reach
(``enable_seqscan = off``): on a test's few rows a scan is the cheapest plan, so a
plan that still scans a table is one no index can serve.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from nextbest.storage import FeedbackRecord, log_recommendations, record_feedback
from nextbest.storage.repository import count_hcp_rows, erase_hcps, hcps_spelled_alike
from nextbest.storage.tables import FeedbackEvent
from nextbest.storage.testing import T0, recommendation_record, served_item, statements_sent

LOG_TABLES = ("recommendations", "recommendation_items", "feedback_events")


def _plans(engine: Engine, call: Callable[[], Any]) -> list[tuple[str, str]]:
    """(statement, its plan) of each SELECT or DELETE ``call`` sends."""
    with statements_sent(engine) as all_sent:
        call()
    sent = [s for s in all_sent if s[0].lstrip().upper().startswith(("SELECT", "DELETE"))]
    assert sent, "no statement was sent"
    sqlite = engine.dialect.name == "sqlite"
    plans = []
    with engine.connect() as connection:
        if not sqlite:
            connection.exec_driver_sql("SET enable_seqscan = off")
        for statement, parameters in sent:
            rows = connection.exec_driver_sql(
                ("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") + statement, parameters
            )
            plans.append((statement, "\n".join(str(r[-1] if sqlite else r[0]) for r in rows)))
        connection.rollback()
    return plans


def _scanned(engine: Engine, plan: str) -> set[str]:
    """The log tables ``plan`` reads whole (SQLite: SCAN, by the table or an index)."""
    found = re.findall(
        r"SCAN (\w+)" if engine.dialect.name == "sqlite" else r"Seq Scan on (\w+)", plan
    )
    return set(found) & set(LOG_TABLES)


def _log(session: Session) -> None:
    """Answers and events of 00123, of 123 (events only) and of H3; an event of H3
    about 00123's answer."""
    log_recommendations(
        session,
        records=[
            recommendation_record(
                f"r-{hcp}-{n}",
                hcp,
                items=(served_item(1, "A1"),),
                created_at=T0 + timedelta(minutes=n),
            )
            for hcp in ("00123", "H3")
            for n in range(3)
        ],
    )
    session.commit()
    result = record_feedback(
        session,
        events=[
            FeedbackRecord(
                event_id=f"e-{hcp}-{n}",
                event_type="opened",
                occurred_at=T0 + timedelta(hours=1, minutes=n),
                hcp_id=hcp,
                recommendation_id=rid,
                channel="email",
            )
            for n, (hcp, rid) in enumerate(
                [("00123", "r-00123-0"), ("123", None), ("H3", "r-H3-0")]
            )
        ],
    )
    assert not result.rejected, result.rejected
    # Stored without the repository's checks (an older release): an event naming
    # another HCP than the answer it is about.
    session.execute(
        insert(FeedbackEvent).values(
            event_id="crossed",
            event_type="opened",
            occurred_at=T0,
            received_at=T0,
            recommendation_id="r-00123-1",
            hcp_id="H3",
        )
    )
    session.commit()


def test_the_near_id_check_reads_each_table_by_its_folded_id_index(
    engine: Engine, session: Session
) -> None:
    """An erasure of an id no row names looks up ids spelled alike but for case and
    leading zeros by the index of the folded id (revision 0013), not by reading the
    log's tables whole."""
    _log(session)
    found: set[str] = set()
    plans = _plans(engine, lambda: found.update(hcps_spelled_alike(session, hcp_ids=["0123"])))
    assert found == {"00123", "123"}
    assert len(plans) == 2, plans
    for table, (statement, plan) in zip(("recommendations", "feedback_events"), plans, strict=True):
        assert f"ix_{table}_hcp_id_folded" in plan, (statement, plan)
        assert not _scanned(engine, plan), (statement, plan)


def test_an_erasure_counts_and_deletes_an_hcps_rows_through_indexes(
    engine: Engine, session: Session
) -> None:
    """The counts shown before an erasure and its deletes find the HCP's rows, and
    the events about its answers sent by others, through indexes: on PostgreSQL the
    events were one OR of the HCP's and a subquery's, which read feedback_events
    whole, as long as the log is."""
    _log(session)
    counts: list[Any] = []
    plans = _plans(engine, lambda: counts.append(count_hcp_rows(session, hcp_ids=["00123"])))
    plans += _plans(
        engine,
        lambda: counts.append(erase_hcps(session, hcp_ids=["00123"], requester="test").deleted),
    )
    # Its 3 answers with their items; its event, and H3's about its answer.
    assert counts[0] == counts[1]
    assert (counts[0].recommendations, counts[0].feedback_events) == (3, 2)
    deletes = [plan for statement, plan in plans if statement.lstrip().startswith("DELETE")]
    assert len(deletes) == 3, plans
    for statement, plan in plans:
        assert not _scanned(engine, plan), (statement, plan)
