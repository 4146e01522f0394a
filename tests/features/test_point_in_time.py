"""Point-in-time history features: only the past is visible at each decision."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nextbest.contract import load_dataset
from nextbest.features.history import EventLog, HistoryFeaturizer
from nextbest.features.space import FeatureSpace
from nextbest.learning.train import decision_rows

DAY = 86_400


def _log(rows: list[tuple[int, int, int, int, int, float]]) -> EventLog:
    arr = np.array(rows, dtype=np.float64).reshape(-1, 6)
    return EventLog(
        hcp=arr[:, 0].astype(np.int64),
        seconds=arr[:, 1].astype(np.int64),
        channel=arr[:, 2].astype(np.int64),
        topic=arr[:, 3].astype(np.int64),
        engaged=arr[:, 4],
        outcome=arr[:, 5],
    )


def test_counts_rates_and_recency_by_hand() -> None:
    # HCP 0: two e-mails (channel 0) on days 1 and 10, the second opened; a visit
    # (channel 1) on day 20 at the query time itself, which must not be seen.
    log = _log(
        [
            (0, 1 * DAY, 0, 0, 0, 1.0),
            (0, 10 * DAY, 0, 0, 1, 3.0),
            (0, 20 * DAY, 1, 1, 1, 5.0),
            (1, 2 * DAY, 1, 0, 1, 2.0),
        ]
    )
    f = HistoryFeaturizer(("email", "rep_visit"), ("dosing", "safety"))
    f.channel_prior_ = np.array([0.5, 0.5])
    f.topic_prior_ = np.array([0.5, 0.5])
    X = f.transform(log, np.array([0, 0]), np.array([20 * DAY, 21 * DAY]))
    col = f.column
    assert X[0, col("email__touches")] == 2
    assert X[0, col("email__eng_rate")] == pytest.approx((1 + 2 * 0.5) / (2 + 2))
    assert X[0, col("email__days_since")] == pytest.approx(10)
    assert X[0, col("email__touches_7d")] == 0
    assert X[0, col("email__touches_30d")] == 2
    assert X[0, col("rep_visit__touches")] == 0  # same-time visit is not in the past
    assert np.isnan(X[0, col("rep_visit__days_since")])
    assert X[1, col("rep_visit__touches")] == 1  # a day later it is
    assert X[1, col("rep_visit__days_since")] == pytest.approx(1)
    assert X[0, col("all__outcome_mean")] == pytest.approx(2.0)  # HCP 1's rows never leak in


def test_features_at_t_do_not_change_when_later_rows_are_added(world_dir) -> None:
    data = load_dataset(world_dir)
    inter = data.interactions
    cut = inter["timestamp"].quantile(0.6)
    early = inter[inter["timestamp"] < cut].reset_index(drop=True)

    space = FeatureSpace().fit(data.hcps, data.catalog)
    assert space.history is not None
    space.history.fit(space.log(early, data.hcps, data.catalog))  # same priors for both runs

    only_past = decision_rows(space, early, data.hcps, data.catalog).X
    everything = decision_rows(space, inter, data.hcps, data.catalog)
    # The same decisions, computed with all later rows present.
    key_all = inter["hcp_id"] + "|" + inter["timestamp"].astype(str)
    key_early = early["hcp_id"] + "|" + early["timestamp"].astype(str)
    position = pd.Index(key_all).get_indexer(key_early)
    assert (position >= 0).all()
    np.testing.assert_array_equal(everything.X[position], only_past)
    # ...and the later rows do carry history the early ones could not see.
    assert np.nanmax(everything.X[:, space.feature_names.index("all__decisions")]) > np.nanmax(
        only_past[:, space.feature_names.index("all__decisions")]
    )
