"""Train/serve skew: the rows the server scores are the rows training would build.

Serving scores an HCP from the model's snapshot (its attributes and history as of
the training cut-off ``as_of``). For a decision at ``as_of`` itself, training's own
point-in-time builder (``decision_rows``) run on the history before that moment
must give the very same model row, column for column. Later decisions are scored
from the same snapshot: only recency (older by the days since) and the fatigue
windows (which slide) would differ, as docs/serving.md says.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nextbest.contract import Dataset, load_dataset
from nextbest.features.history import EFFECT, ENGAGEMENT_WAIT_DAYS
from nextbest.learning.scoring import ScoringModel
from nextbest.learning.train import decision_rows, train

from .conftest import QUICK

N_HCPS = 6


def _training_rows(
    model: ScoringModel, data: Dataset, hcp_ids: list[str], moment: pd.Timestamp
) -> np.ndarray:
    """The rows training builds for a decision on every catalog action about each of
    ``hcp_ids`` at ``moment``, from all of the data set's history before it; shape
    ``(len(hcp_ids) * n_actions, n_features)`` in (HCP, action) order."""
    catalog = model.catalog
    history = data.interactions[data.interactions["timestamp"] < moment]
    asked = pd.DataFrame(
        {
            "hcp_id": np.repeat(hcp_ids, len(catalog)),
            "timestamp": moment,
            "action_id": np.tile(catalog["action_id"].to_numpy(), len(hcp_ids)),
            "channel": np.tile(catalog["channel"].to_numpy(), len(hcp_ids)),
            "engaged": 0,
            "outcome": np.nan,
            "propensity": np.nan,
            "holdout": False,
        }
    )
    both = pd.concat([history, asked], ignore_index=True)
    decisions = np.arange(len(both)) >= len(history)
    return decision_rows(model.space, both, data.hcps, data.catalog, decisions=decisions).X


def _served_rows(model: ScoringModel, hcp_ids: list[str]) -> np.ndarray:
    rows = model.hcp_index.get_indexer(hcp_ids)
    n_actions = model.n_actions
    return model.rows(np.repeat(rows, n_actions), np.tile(np.arange(n_actions), len(hcp_ids)))


def _differing(model: ScoringModel, a: np.ndarray, b: np.ndarray) -> list[str]:
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    names = np.array(model.feature_names)
    return sorted(set(names[np.flatnonzero(~same.all(axis=0))].tolist()))


@pytest.fixture(scope="module")
def data(world_dir: Path) -> Dataset:
    return load_dataset(world_dir)


@pytest.mark.parametrize("max_training_rows", [None, 2000], ids=["all-rows", "newest-rows"])
def test_served_rows_are_the_training_rows_at_the_cut_off(
    data: Dataset, max_training_rows: int | None
) -> None:
    config = QUICK.model_copy(update={"max_training_rows": max_training_rows})
    model = train(data, config=config).model
    # HCPs with the most history: the ones whose old contacts matter.
    counts = data.interactions["hcp_id"].value_counts()
    hcp_ids = counts.index[:N_HCPS].tolist()

    expected = _training_rows(model, data, hcp_ids, model.as_of)
    served = _served_rows(model, hcp_ids)
    # New content is served with the identity of the measured content most like it
    # (ActionEvidence.stand_in): the one deliberate difference.
    borrows = np.tile(model.evidence.stand_in >= 0, N_HCPS)
    action_column = model.feature_position["action__action"]
    expected[borrows, action_column] = served[borrows, action_column]

    assert _differing(model, served, expected) == []
    # The HCPs' old history is in what is served, not only the newest decisions'.
    touches = served[:, model.feature_position["all__touches"]]
    assert touches.max() == pytest.approx(
        (data.interactions["hcp_id"].isin(hcp_ids) & data.interactions["action_id"].notna())
        .groupby(data.interactions["hcp_id"])
        .sum()
        .max()
    )


def test_a_later_decision_is_scored_from_the_cut_off_snapshot(data: Dataset) -> None:
    model = train(data, config=QUICK).model
    hcp_ids = data.hcps["hcp_id"].iloc[:N_HCPS].tolist()
    days = 10
    expected = _training_rows(model, data, hcp_ids, model.as_of + pd.Timedelta(days=days))
    served = _served_rows(model, hcp_ids)

    differing = _differing(model, served, expected)
    # Only what time alone moves: recency and the sliding fatigue windows.
    assert all(
        name.endswith(("days_since", "days_since_touch", "touches_7d", "touches_30d"))
        for name in differing
    ), differing
    recency = [model.feature_position[n] for n in differing if "days_since" in n]
    assert recency
    np.testing.assert_allclose(served[:, recency] + days, expected[:, recency], atol=1e-3)


def test_an_advanced_model_moves_recency_and_windows_as_training_would(data: Dataset) -> None:
    """Moved on by the contacts since its cut-off, a model's served rows are those
    training builds at the later day in every column a contact alone moves (gaps and
    fatigue windows); the records (counts, rates, outcomes) stay the cut-off's."""
    end = data.interactions["timestamp"].max()
    as_of = (end - pd.Timedelta(days=24)).normalize()
    model = train(data, config=QUICK, as_of=as_of).model
    day = as_of + pd.Timedelta(days=17)
    touched = data.interactions["channel"].notna()
    contacts = data.interactions.loc[touched, ["hcp_id", "channel", "timestamp"]]
    between = (contacts["timestamp"] >= as_of) & (contacts["timestamp"] < day)
    # HCPs contacted between, and some that were not.
    moved_ids = contacts.loc[between, "hcp_id"].value_counts().index[:N_HCPS].tolist()
    still_ids = [h for h in data.hcps["hcp_id"] if h not in set(contacts.loc[between, "hcp_id"])]
    hcp_ids = moved_ids + still_ids[:N_HCPS]
    assert len(moved_ids) == N_HCPS and len(still_ids) >= N_HCPS

    advanced = model.advanced(day, contacts)
    assert advanced.features_as_of == day.tz_localize("UTC")
    assert model.features_as_of == model.as_of  # the trained model is left as it was
    expected = _training_rows(model, data, hcp_ids, day)
    served = _served_rows(advanced, hcp_ids)
    borrows = np.tile(model.evidence.stand_in >= 0, len(hcp_ids))
    action_column = model.feature_position["action__action"]
    expected[borrows, action_column] = served[borrows, action_column]

    moved = [
        j
        for j, name in enumerate(model.feature_names)
        if name.endswith(("days_since", "days_since_touch", "touches_7d", "touches_30d"))
    ]
    np.testing.assert_allclose(served[:, moved], expected[:, moved], atol=1e-3)
    # The contacts moved something a frozen snapshot would have got wrong.
    frozen = _served_rows(model, hcp_ids)
    windows = [model.feature_position[n] for n in model.feature_names if n.endswith("touches_7d")]
    assert (frozen[:, windows] != expected[:, windows]).any()
    kept = [j for j in range(len(model.feature_names)) if j not in set(moved)]
    np.testing.assert_array_equal(served[:, kept], frozen[:, kept])
    # Day by day (a server moving on each morning) ends where one move does.
    stepwise = model.advanced(as_of + pd.Timedelta(days=6), contacts).advanced(day, contacts)
    np.testing.assert_allclose(stepwise.hcp_history, advanced.hcp_history, atol=1e-4)
    with pytest.raises(ValueError, match="cannot move the history back"):
        advanced.advanced(day - pd.Timedelta(days=1), contacts)


def test_an_advanced_model_counts_contacts_in_its_records_once_their_engagement_is_known(
    data: Dataset,
) -> None:
    """With each contact's action and engagement, the move counts the contacts in the
    HCPs' records too: at the later day the touch counts, engagement rates (per
    channel, per topic, overall), engagement excess and decisions are those training
    builds from the history with every contact whose engagement is known by then,
    one engaged at once, one not engaged after the wait; a contact still within it
    is left for a later day."""
    end = data.interactions["timestamp"].max()
    as_of = (end - pd.Timedelta(days=24)).normalize()
    model = train(data, config=QUICK, as_of=as_of).model
    day = as_of + pd.Timedelta(days=17)
    wait = pd.Timedelta(days=ENGAGEMENT_WAIT_DAYS)
    interactions = data.interactions
    touched = interactions["channel"].notna()
    contacts = interactions.loc[touched, ["hcp_id", "channel", "timestamp", "action_id"]]
    engaged = interactions.loc[touched, "engaged"].astype(bool)
    # Each engagement reported an hour after its contact.
    contacts["engaged_at"] = (contacts["timestamp"] + pd.Timedelta(hours=1)).where(engaged)
    between = (contacts["timestamp"] >= as_of) & (contacts["timestamp"] < day)
    pending = between & ~engaged & (contacts["timestamp"] > day - wait)
    pending_ids = set(contacts.loc[pending, "hcp_id"])
    moved_ids = [
        h for h in contacts.loc[between, "hcp_id"].value_counts().index if h not in pending_ids
    ][:N_HCPS]
    hcp_ids = moved_ids + sorted(pending_ids)[:N_HCPS]
    assert len(moved_ids) == N_HCPS and len(pending_ids) >= 1

    advanced = model.advanced(day, contacts)
    served = _served_rows(advanced, hcp_ids)
    frozen = _served_rows(model, hcp_ids)
    # Training's rows at ``day`` from what the move can know: no untouched decision
    # since the cut-off (the store's contacts are touches) and no contact pending.
    span = (interactions["timestamp"] >= as_of) & (interactions["timestamp"] < day)
    unknown = span & (~touched | pending.reindex(interactions.index, fill_value=False))
    known = replace(data, interactions=interactions[~unknown])
    expected = _training_rows(model, known, hcp_ids, day)

    names = model.feature_names
    records = [
        j
        for j, name in enumerate(names)
        if name.endswith(("__touches", "__eng_rate", "all__eng_excess", "all__decisions"))
    ]
    # Every channel's and topic's, the overall ones, and the action's own (this_*).
    assert len(records) == 2 * len(model.space.channels) + 2 * len(model.space.topics) + 8
    np.testing.assert_allclose(served[:, records], expected[:, records], rtol=1e-5, atol=1e-5)
    assert (served[:, records] != frozen[:, records]).any()
    # The outcome means and the engagement effects stay the cut-off's.
    kept = [j for j, name in enumerate(names) if "outcome_mean" in name or name.endswith(EFFECT)]
    np.testing.assert_array_equal(served[:, kept], frozen[:, kept])
    # Day by day ends where one move does, a pending contact counted on the day its
    # wait ends.
    stepwise = model.advanced(day - pd.Timedelta(days=2), contacts).advanced(day, contacts)
    np.testing.assert_allclose(stepwise.hcp_history, advanced.hcp_history, rtol=1e-5, atol=1e-4)
    later = model.advanced(day + wait, contacts[contacts["timestamp"] < day])
    pending_rows = later.hcp_index.get_indexer(sorted(pending_ids))
    assert model.space.history is not None
    all_touches = model.space.history.column("all__touches")
    assert (
        later.hcp_history[pending_rows, all_touches]
        > advanced.hcp_history[pending_rows, all_touches]
    ).all()


def test_a_moved_model_moves_on_with_the_contacts_of_its_last_month(data: Dataset) -> None:
    """Once moved, a model needs only the contacts from a fatigue window (30 days)
    before the day it is as of: moved on with those alone it ends where one move with
    every contact since the cut-off does, gaps, windows and records."""
    end = data.interactions["timestamp"].max()
    as_of = (end - pd.Timedelta(days=60)).normalize()
    model = train(data, config=QUICK, as_of=as_of).model
    touched = data.interactions["channel"].notna()
    contacts = data.interactions.loc[touched, ["hcp_id", "channel", "timestamp", "action_id"]]
    engaged = data.interactions.loc[touched, "engaged"].astype(bool)
    contacts["engaged_at"] = (contacts["timestamp"] + pd.Timedelta(hours=1)).where(engaged)
    assert model.contacts_needed_from == model.as_of.tz_localize("UTC")
    first, day = as_of + pd.Timedelta(days=40), as_of + pd.Timedelta(days=55)
    moved = model.advanced(first, contacts)
    start = moved.contacts_needed_from
    assert start == (first - pd.Timedelta(days=30)).tz_localize("UTC")
    since = pd.to_datetime(contacts["timestamp"], utc=True) >= start
    assert (~since & (contacts["timestamp"] >= as_of)).any()  # some are left unread
    np.testing.assert_allclose(
        moved.advanced(day, contacts[since]).hcp_history,
        model.advanced(day, contacts).hcp_history,
        rtol=1e-5,
        atol=1e-4,
    )


def test_a_model_cannot_move_its_history_back_or_without_its_recent_touches(
    data: Dataset,
) -> None:
    model = train(data, config=QUICK).model
    none = pd.DataFrame({"hcp_id": [], "channel": [], "timestamp": []})
    with pytest.raises(ValueError, match="cannot move the history back"):
        model.advanced(model.as_of - pd.Timedelta(days=1), none)
    state = model.__getstate__()
    state.pop("recent_touches")  # an artifact from before they were kept
    old = ScoringModel.__new__(ScoringModel)
    old.__setstate__(state)
    assert not old.advances
    with pytest.raises(ValueError, match="retrain it to move its history"):
        old.advanced(model.as_of, none)
