"""Commands a scheduler stops (SIGTERM: a timeout, a deploy) or a user interrupts
(Ctrl-C), run as their own process: what they leave and what they say."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from nextbest.service.events import MAX_FEEDBACK_BATCH
from nextbest.storage.db import migrate

from .conftest import stopped_at

ROOT = Path(__file__).parents[2]


def test_feedback_stopped_by_sigterm_says_what_it_stored_and_removes_old_rejects(
    tmp_path: Path,
) -> None:
    """A feed import a scheduler timed out ended at the signal's default: no word of
    how much was stored, and the --rejected file of an earlier run left in place for
    the job that sends it to take as this run's. It stops as Ctrl-C does: exit code
    143, one line saying how many rows were done (their batches committed) and that
    the file sent again stores the rest, the earlier rejects removed; sent again, the
    rows already stored are not stored twice."""
    models = tmp_path / "models"
    models.mkdir()
    log = models / "nextbest.db"
    migrate(f"sqlite:///{log}")  # the log, made before the first feed
    # Ten batches: stopped after the second, eight are left to store on the second run.
    rows = 10 * MAX_FEEDBACK_BATCH
    events = tmp_path / "feed.csv"
    events.write_text(
        "event_id,event_type,hcp_id,occurred_at\n"
        + "".join(f"e-{i},opened,H{i % 300:06d},2026-11-01T10:00:00Z\n" for i in range(rows))
    )
    rejected = tmp_path / "rejected.csv"
    rejected.write_text("row,event_id,rejected_because\n2,old-1,an earlier run's\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXTBEST_")}
    src = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    env |= {"NEXTBEST_MODELS_DIR": str(models), "PYTHONPATH": src}
    args = [sys.executable, "-m", "nextbest", "feedback", str(events)]
    run = subprocess.Popen(
        [*args, "--rejected", str(rejected)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Off a terminal: a line per tenth of the rows (a batch).
    out, said_all = stopped_at(run, f"storing events: {2 * MAX_FEEDBACK_BATCH:,}/", signal.SIGTERM)
    with sqlite3.connect(log) as connection:
        (stored,) = connection.execute("SELECT count(*) FROM feedback_events").fetchone()
    assert run.returncode == 143, (run.returncode, said_all)
    assert "Traceback" not in said_all and not out, (out, said_all)
    assert 2 * MAX_FEEDBACK_BATCH <= stored < rows and stored % MAX_FEEDBACK_BATCH == 0, stored
    assert (
        f"error: feedback was interrupted (SIGTERM) with at least {stored:,} of "
        f"{rows:,} rows of {events} done: their events are stored (each batch is "
        "committed as it is done); send the file again to store the rest (an event_id "
        "already stored is not stored twice)"
    ) in said_all, said_all
    assert not rejected.exists(), said_all
    assert f"removed {rejected}: this run ended without writing its rejected rows" in said_all
    again = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{stored:,} already stored; 0 rejected" in again.stdout, again.stdout
    with sqlite3.connect(log) as connection:
        (stored,) = connection.execute("SELECT count(*) FROM feedback_events").fetchone()
    assert stored == rows
