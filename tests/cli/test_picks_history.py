"""`nextbest picks` with NEXTBEST_FRESH_HISTORY on says the history it scored with."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from nextbest import registry
from nextbest.settings import get_settings
from nextbest.storage.db import migrate, store_session
from nextbest.storage.repository import FeedbackRecord, record_feedback

from .conftest import explained_on_a_copy, run_ok


def _contacted(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *offsets: timedelta
) -> tuple[str, pd.Timestamp]:
    """An HCP of a copy of the trained registry, and a day 10 days after the cut-off,
    with a delivered e-mail stored at each of ``offsets`` from that day."""
    hcp_id = explained_on_a_copy(trained, tmp_path, monkeypatch)
    settings = get_settings()
    migrate(settings.resolved_database_url)
    model, _ = registry.load_alias(settings)
    day = pd.Timestamp(model.as_of).tz_localize("UTC").normalize() + pd.Timedelta(days=10)
    with store_session(settings.resolved_database_url) as session:
        record_feedback(
            session,
            events=[
                FeedbackRecord(f"c{i}", "delivered", day + offset, hcp_id, channel="email")
                for i, offset in enumerate(offsets)
            ],
        )
        session.commit()
    return hcp_id, day


def test_picks_say_the_day_and_the_contacts_the_history_was_moved_by(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two before the day, one on it (not known at its start, but by --log's).
    _, day = _contacted(
        trained, tmp_path, monkeypatch, -timedelta(days=3), -timedelta(days=1), timedelta(hours=1)
    )
    said = f"history moved to {day:%Y-%m-%d} by 2 contacts since the cut-off (0 engaged)"
    out = tmp_path / "picks.csv"
    picks = ["picks", "--data", str(trained.data_dir), "--out", str(out)]

    assert said not in run_ok(*picks, "--as-of", f"{day:%Y-%m-%d}")  # off: the cut-off's

    monkeypatch.setenv("NEXTBEST_FRESH_HISTORY", "true")
    get_settings.cache_clear()
    plain = run_ok(*picks, "--as-of", f"{day:%Y-%m-%d}")
    assert said in plain.splitlines(), plain
    today = pd.Timestamp.now(tz="UTC").normalize()
    logged = run_ok(*picks, "--log")
    assert f"history moved to {today:%Y-%m-%d} by 3 contacts since the cut-off (0" in logged


def test_explain_answers_on_the_history_a_server_would_have_moved_and_says_so(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hcp_id, day = _contacted(trained, tmp_path, monkeypatch, -timedelta(days=2))
    explain = ["explain", hcp_id, "--date", f"{day:%Y-%m-%d}"]
    said = f"history moved to {day:%Y-%m-%d} by 1 contact since the cut-off (0 engaged)"

    assert said not in run_ok(*explain)  # off: the cut-off's history

    monkeypatch.setenv("NEXTBEST_FRESH_HISTORY", "true")
    get_settings.cache_clear()
    assert said in run_ok(*explain).splitlines()
