"""bench/logscale.py fills a store its measurements can read, at the newest schema
and at an older revision it then migrates (a few thousand rows, not a year)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from nextbest.loop.evidence import load_decisions
from nextbest.storage import make_engine, make_session_factory, migrate
from nextbest.storage.db import schema_revisions

from .scripts import load_bench

logscale = load_bench("logscale")

END = datetime(2026, 6, 1, tzinfo=UTC)


def _counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return {
                table: connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
                for table in ("recommendations", "recommendation_items", "feedback_events")
            }
    finally:
        engine.dispose()


@pytest.mark.parametrize("revision", [logscale.FILL_REVISION, "0012"])
def test_the_filled_log_is_read_by_the_newest_code(database_url: str, revision: str) -> None:
    log = logscale.Log(rows=2_000, events=800, hcps=300, seed=3, end=END)
    migrate(database_url, revision=revision)
    figures = logscale.fill(database_url, log)

    # Filled at an older revision, the store is migrated as a run migrates it.
    assert migrate(database_url)[1] == schema_revisions(database_url)[1]
    counts = _counts(database_url)
    assert counts == figures["rows"]
    assert counts["recommendations"] == 2_000
    assert counts["feedback_events"] == 800
    served = {rid for rid, *_ in log.served}
    assert counts["recommendation_items"] == len(served)
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            decisions = load_decisions(session, since=None, with_outcome=False)
    finally:
        engine.dispose()
    assert len(decisions) == 2_000
    assert served < set(decisions["recommendation_id"])


def test_every_read_is_measured_on_the_filled_log(tmp_path: Path) -> None:
    # The in-process figures (the commands, processes of their own, left out): each
    # read of the newest code runs on the filled rows and has its time and plans.
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = logscale.Log(rows=3_000, events=1_200, hcps=300, seed=5, end=END)
    migrate(url)
    logscale.fill(url, log)
    commands = frozenset(
        ("startup", "uplift_report", "uplift_report_since_90d", "lookup_answer", "lookup_hcp")
    ) | {"erase_one_hcp", "erase_unseen_id", "prune_730d"}
    figures = logscale.measure(url, log, tmp_path, "test", skip=commands)
    assert set(figures) == {
        "open_store",
        "serve_file_check",
        "serving_history_one_hcp",
        "rep_latest_decision",
        "feedback_one_event",
        "lookup_answer_reads",
        "lookup_hcp_reads",
        "erase_one_hcp_reads",
        "erase_near_id_check",
        "prune_730d_reads",
        "retrain_log_read",
        "uplift_report_reads",
    }
    assert all(f["seconds"] >= 0 and isinstance(f["plans"], list) for f in figures.values())
    assert figures["retrain_log_read"]["plans"], "the log read's statements were not seen"


def test_an_unknown_backend_is_refused_by_name(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(logscale.__file__), "--backends", "sqlite,mysql"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert "--backends: mysql is not sqlite or postgresql" in done.stderr
