"""Picks for a file with ``NEXTBEST_FRESH_HISTORY`` on score as a server moving its
history each day serves: the model's history moved on to the picks' day by the
contacts the store holds since its cut-off."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nextbest import registry
from nextbest.learning.scoring import ScoringModel
from nextbest.service.picks import HistoryMove, file_picks, logged_picks, picks_frame
from nextbest.settings import Settings
from nextbest.storage.db import migrate, store_session
from nextbest.storage.repository import FeedbackRecord, record_feedback

N_HCPS = 150
NO_CONTACTS = pd.DataFrame({"hcp_id": [], "channel": [], "timestamp": []})


@pytest.fixture
def settings(trained, tmp_path: Path) -> Settings:
    """The trained registry with a store of its own, no serving rules, exploration and
    holdout off, and the history moved (NEXTBEST_FRESH_HISTORY)."""
    rules = tmp_path / "rules.yaml"
    rules.write_text("")
    settings = trained.settings.model_copy(
        update={
            "database_url": f"sqlite:///{tmp_path / 'store.db'}",
            "rules_file": rules,
            "epsilon": 0.0,
            "holdout_rate": 0.0,
            "fresh_history": True,
        }
    )
    migrate(settings.resolved_database_url)
    return settings


def _off(settings: Settings) -> Settings:
    return settings.model_copy(update={"fresh_history": False})


def _contacted(
    settings: Settings, model: ScoringModel, hcp_ids: list[str], *, on: datetime, at: list[datetime]
) -> pd.DataFrame:
    """Store a delivered contact at each of ``at`` for every HCP of ``hcp_ids`` with a
    pick on ``on``, on that pick's channel (what tires it of what it would be sent);
    the contacts, as ``contacts_between`` reads them."""
    firsts = picks_frame(model, hcp_ids=hcp_ids, k=1, on=on)
    rows = [
        (hcp_id, channel, when)
        for hcp_id, channel in zip(firsts["hcp_id"], firsts["channel"], strict=True)
        for when in at
    ]
    contacts = pd.DataFrame(rows, columns=["hcp_id", "channel", "timestamp"])
    with store_session(settings.resolved_database_url) as session:
        result = record_feedback(
            session,
            events=[
                FeedbackRecord(f"contact-{i}", "delivered", when, hcp_id, channel=channel)
                for i, (hcp_id, channel, when) in enumerate(rows)
            ],
        )
        session.commit()
    assert len(result.accepted) == len(rows) > N_HCPS // 2
    contacts["timestamp"] = pd.to_datetime(contacts["timestamp"], utc=True)
    return contacts


def test_file_picks_score_with_the_history_moved_to_their_day(settings: Settings) -> None:
    model, version = registry.load_alias(settings)
    ids = model.hcps["hcp_id"].astype(str).tolist()[:N_HCPS]
    as_of = pd.Timestamp(model.as_of).tz_localize("UTC")
    day = (as_of.normalize() + pd.Timedelta(days=10)).to_pydatetime()
    contacts = _contacted(
        settings,
        model,
        ids,
        on=day,
        # Two before the day (counted), one on it (not yet known at its start).
        at=[day - timedelta(days=2), day - timedelta(days=1), day + timedelta(hours=9)],
    )
    known = contacts[contacts["timestamp"] < day]
    move = HistoryMove()

    picked = file_picks(settings, model, version=version, hcp_ids=ids, on=day, history_move=move)

    assert (move.day, move.contacts, move.cannot) == (day, len(known), None)
    moved = model.advanced(pd.Timestamp(day), known)
    expected = file_picks(_off(settings), moved, version=version, hcp_ids=ids, on=day)
    pd.testing.assert_frame_equal(picked, expected)
    # The contacts change picks, beyond what the days since the cut-off alone change.
    days_only = model.advanced(pd.Timestamp(day), NO_CONTACTS)
    for other in (model, days_only):
        before = file_picks(_off(settings), other, version=version, hcp_ids=ids, on=day)
        both = picked.merge(before, on="hcp_id", how="outer", suffixes=("", "_other"))
        assert (both["action_id"] != both["action_id_other"]).mean() > 0.1

    # Off, or a model that cannot move its history: the cut-off's history.
    off = HistoryMove()
    frozen = file_picks(_off(settings), model, version=version, hcp_ids=ids, on=day)
    again = file_picks(
        _off(settings), model, version=version, hcp_ids=ids, on=day, history_move=off
    )
    assert off == HistoryMove()
    pd.testing.assert_frame_equal(again, frozen)
    state = model.__getstate__()
    state.pop("recent_touches")  # an artifact from before snapshots kept them
    old = ScoringModel.__new__(ScoringModel)
    old.__setstate__(state)
    cannot = HistoryMove()
    file_picks(settings, old, version=version, hcp_ids=ids, on=day, history_move=cannot)
    assert cannot.day is None
    assert cannot.cannot is not None and f"version {version}'s artifact" in cannot.cannot


def test_logged_picks_score_with_the_history_moved_to_today(settings: Settings) -> None:
    model, version = registry.load_alias(settings)
    ids = model.hcps["hcp_id"].astype(str).tolist()[:N_HCPS]
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    contacts = _contacted(settings, model, ids, on=now, at=[today - timedelta(hours=12)])

    done = logged_picks(settings, hcp_ids=ids, clock=lambda: now)  # the same day throughout

    assert (done.history_move.day, done.history_move.contacts) == (today, len(contacts))
    columns = ["hcp_id", "rank", "action_id"]
    # Exploration and holdout off: the greedy picks of the model moved to today.
    moved = model.advanced(pd.Timestamp(today), contacts)
    expected = file_picks(_off(settings), moved, version=version, hcp_ids=ids)
    assert done.frame[columns].values.tolist() == expected[columns].values.tolist()
    rows = moved.hcp_index.get_indexer(done.frame["hcp_id"])
    actions = moved.action_index.get_indexer(done.frame["action_id"])
    uplift = done.frame["expected_uplift"].to_numpy(dtype=np.float64)
    np.testing.assert_allclose(moved.score(rows, actions).uplift, uplift, rtol=1e-9)
    frozen = file_picks(_off(settings), model, version=version, hcp_ids=ids)
    assert frozen[columns].values.tolist() != done.frame[columns].values.tolist()
