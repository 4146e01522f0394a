"""docs/operations.md's PostgreSQL backup and restore, its commands run as written."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import make_url, text

from nextbest.storage import FeedbackRecord, log_recommendations, migrate, record_feedback
from nextbest.storage.db import make_engine, store_session
from nextbest.storage.repository import erasure_event_id
from nextbest.storage.testing import (
    POSTGRES_URL_ENV,
    recommendation_record,
    served_item,
    temporary_postgres_database,
)

pytestmark = pytest.mark.postgres

DOC = Path(__file__).parents[2] / "docs" / "operations.md"
DOC_URL = "postgresql://nextbest@db:5432/nextbest"
DOC_FILE = "/backup/nextbest.dump"
TABLES = ("recommendations", "recommendation_items", "feedback_events", "maintenance_runs")


def _documented(program: str) -> list[str]:
    """The ``program`` command of the section "Backup and restore", as written."""
    section = DOC.read_text(encoding="utf-8").split("## Backup and restore", 1)[1]
    section = section.split("\n## ", 1)[0]
    found = re.findall(rf"^{program} .*$", section, re.M)
    assert len(found) == 1, f"docs/operations.md, 'Backup and restore': {program} {found}"
    return shlex.split(found[0])


def _run(args: list[str], url: str, dump: Path) -> None:
    """``args`` with the doc's URL and file replaced by the test's."""
    server = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    args = [a.replace(DOC_URL, server).replace(DOC_FILE, str(dump)) for a in args]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    assert done.returncode == 0, (args[0], done.stderr)


def _counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return {
                table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                for table in TABLES
            }
    finally:
        engine.dispose()


def test_the_documented_restore_into_a_prepared_database_keeps_every_row(
    tmp_path: Path,
) -> None:
    """A plain ``pg_restore -d`` into a database a server's start had already given
    nextbest's tables (or the one restored over) loaded no feedback event and no
    item: each names an answer not loaded yet, against the constraints already
    there. The opt-outs and erasure suppressions were gone with them."""
    server = os.environ.get(POSTGRES_URL_ENV)
    if not server:
        pytest.skip(f"{POSTGRES_URL_ENV} is not set: PostgreSQL tests skipped")
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("pg_dump and pg_restore are not installed")
    dump = tmp_path / "nextbest.dump"
    at = datetime(2026, 11, 2, 9, tzinfo=UTC)
    with (
        temporary_postgres_database(server) as source,
        temporary_postgres_database(server) as target,
    ):
        migrate(source)
        with store_session(source) as session:
            log_recommendations(
                session,
                records=[
                    recommendation_record("r1", "H1", items=(served_item(1, "A1"),)),
                    recommendation_record("r2", "H2", items=(served_item(1, "A2"),)),
                ],
            )
            session.commit()
            result = record_feedback(
                session,
                events=[
                    FeedbackRecord("open-1", "opened", at, "H1", "r1", "A1"),
                    FeedbackRecord("unsub-1", "opted_out", at, "H2", "r2", channel="email"),
                ],
            )
            assert not result.rejected, result.rejected
            result = record_feedback(
                session,
                erasure=True,
                events=[FeedbackRecord(erasure_event_id("H3"), "opted_out", at, "H3")],
            )
            assert not result.rejected, result.rejected
        backed_up = _counts(source)
        assert backed_up["recommendation_items"] == 2 and backed_up["feedback_events"] == 3

        _run(_documented("pg_dump"), source, dump)
        migrate(target)  # a server started on it before the restore
        _run(_documented("pg_restore"), target, dump)
        assert _counts(target) == backed_up
        _run(_documented("pg_restore"), target, dump)  # and again, over itself
        assert _counts(target) == backed_up
