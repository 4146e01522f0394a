"""A PostgreSQL database that answers reads but refuses writes (a standby after a
failover, ``default_transaction_read_only``, a privilege revoked) is unavailable:
answers whose log cannot be written are kept and retried, new ones refused, feedback
not acknowledged, and readiness says so. Before, every such answer was served,
counted as dropped and never logged, while the worker said it was ready."""

from __future__ import annotations

import os
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from nextbest.storage.db import make_engine
from nextbest.storage.testing import POSTGRES_URL_ENV

from .conftest import serving


def _read_only(server_url: str, database: str, on: bool) -> None:
    """Make new sessions of ``database`` read-only (or not) and end its open ones,
    so that every session from now on has the setting."""
    admin = sa.create_engine(
        make_url(server_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(
                f'ALTER DATABASE "{database}" SET default_transaction_read_only = '
                + ("on" if on else "off")
            )
            connection.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": database},
            )
    finally:
        admin.dispose()


def _until(check, what: str, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
    return found


@pytest.mark.postgres
def test_answers_are_not_served_unlogged_while_the_database_refuses_writes(
    own_registry, keys, postgres_url: str
) -> None:
    server_url = os.environ[POSTGRES_URL_ENV]
    database = make_url(postgres_url).database
    assert database
    settings = own_registry.model_copy(update={"database_url": postgres_url, "log_flush_ms": 200})
    with serving(settings, keys) as (runtime, client, hcp):
        with client:
            assert client.post("/v1/recommendations", json={"hcp_id": hcp}).status_code == 200
            assert runtime.reclog.flush(timeout=30)
            _read_only(server_url, database, True)

            # Reads still work: an answer is served (once the pools have replaced the
            # sessions ended above), and its log write is refused.
            def answered():
                answer = client.post("/v1/recommendations", json={"hcp_id": hcp})
                return answer if answer.status_code == 200 else None

            served = _until(answered, "no answer was served from the read-only database")
            _until(lambda: runtime.reclog.failing, "the refused log write went unnoticed")
            ready = client.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert "recommendation log store failing" in ready.json()["status"]
            assert "nextbest_recommendation_log_failing 1.0" in client.get("/metrics").text
            refused = client.post("/v1/recommendations", json={"hcp_id": hcp})
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
            event = {
                "event_id": "while-read-only",
                "event_type": "opened",
                "hcp_id": hcp,
                "recommendation_id": served.json()["recommendation_id"],
            }
            # (An event naming the kept answer would wait for its log row; one that
            # names none is refused by the insert itself.)
            contact = {
                "event_id": "contact-while-read-only",
                "event_type": "delivered",
                "hcp_id": hcp,
                "action_id": str(runtime.recommender.action_ids[0]),
            }
            said = _until(
                lambda: (
                    (r := client.post("/v1/feedback", json=contact)).status_code == 503
                    and "refuses writes" in r.json()["detail"]
                    and r
                ),
                "feedback to a read-only database was not refused with 503",
            )
            assert said.headers["Retry-After"] == "1"
            assert runtime.reclog.dropped == 0
            _read_only(server_url, database, False)
            assert runtime.reclog.flush(timeout=60)  # the kept answer is written
            assert "nextbest_recommendation_log_failing 0.0" in client.get("/metrics").text
            stored = _until(
                lambda: (r := client.post("/v1/feedback", json=event)).status_code == 200 and r,
                "feedback was not stored once the database took writes again",
            )
            assert stored.json()["accepted"] == 1, stored.text  # its answer was logged
        assert runtime.reclog.dropped == 0
        engine = make_engine(postgres_url)
        try:
            with engine.connect() as connection:
                logged = connection.exec_driver_sql("SELECT count(*) FROM recommendations")
                assert logged.scalar_one() == runtime.reclog.written == 2
        finally:
            engine.dispose()


@pytest.mark.postgres
def test_a_held_table_lock_gets_a_503_after_the_lock_timeout_not_a_hang(
    own_registry, keys, postgres_url: str
) -> None:
    """A transaction left open holding a lock on the feedback table (a VACUUM FULL,
    a migration, a forgotten BEGIN in psql) made every request wait for it; a
    serving worker's statements now give up after NEXTBEST_DB_LOCK_TIMEOUT_MS and
    the request is refused with 503, to be retried. Its sessions are named in
    pg_stat_activity. /readyz, whose SELECT 1 was answered meanwhile, is 503 too
    and names the table; so it is for a lock that stops the log's inserts only."""
    settings = own_registry.model_copy(
        update={"database_url": postgres_url, "db_lock_timeout_ms": 300}
    )
    holder = sa.create_engine(make_url(postgres_url).set(drivername="postgresql+psycopg"))
    try:
        with serving(settings, keys) as (runtime, client, hcp), client:
            assert client.post("/v1/recommendations", json={"hcp_id": hcp}).status_code == 200
            with holder.connect() as held:
                held.exec_driver_sql("LOCK TABLE feedback_events IN ACCESS EXCLUSIVE MODE")
                names = held.exec_driver_sql(
                    "SELECT DISTINCT application_name FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).scalars()
                assert "nextbest" in set(names)
                for call in (
                    lambda: client.post("/v1/recommendations", json={"hcp_id": hcp}),
                    lambda: client.post(
                        "/v1/recommendations/batch", json={"hcp_ids": [hcp], "k": 1}
                    ),
                ):
                    started = time.monotonic()
                    refused = call()
                    # 300 ms per statement; far below the lock's lifetime (the test's).
                    assert time.monotonic() - started < 10
                    assert refused.status_code == 503, refused.text
                    assert refused.headers["Retry-After"] == "1"
                ready = client.get("/readyz")
                assert ready.status_code == 503, ready.text
                assert ready.json()["status"] == "table feedback_events locked by another session"
                held.rollback()  # the lock is released
            assert client.get("/readyz").status_code == 200
            assert client.post("/v1/recommendations", json={"hcp_id": hcp}).status_code == 200
            assert runtime.reclog.flush(timeout=30)
            with holder.connect() as held:
                # What CREATE INDEX takes: reads go on, the log's inserts wait.
                held.exec_driver_sql("LOCK TABLE recommendations IN SHARE MODE")
                ready = client.get("/readyz")
                assert ready.status_code == 503, ready.text
                assert ready.json()["status"] == "table recommendations locked by another session"
                held.rollback()
            assert client.get("/readyz").status_code == 200
    finally:
        holder.dispose()
