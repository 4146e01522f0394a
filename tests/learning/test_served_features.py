"""Train/serve skew: the rows the server scores are the rows training would build.

Serving scores an HCP from the model's snapshot (its attributes and history as of
the training cut-off ``as_of``). For a decision at ``as_of`` itself, training's own
point-in-time builder (``decision_rows``) run on the history before that moment
must give the very same model row, column for column. Later decisions are scored
from the same snapshot: only recency (older by the days since) and the fatigue
windows (which slide) would differ, as docs/serving.md says.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nextbest.contract import Dataset, load_dataset
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
