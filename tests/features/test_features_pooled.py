"""Pooled history features: overall engagement, engagement above expectation, own baseline."""

from __future__ import annotations

import numpy as np
import pytest

from nextbest.features.history import EventLog, HistoryFeaturizer

DAY = 86_400


def test_pooled_features_by_hand() -> None:
    # HCP 0: an opened e-mail (outcome 4), an unopened visit (outcome 1), a no-touch
    # period (outcome 2); then a query on day 30. HCP 1 only exists to not leak in.
    rows = np.array(
        [
            (0, 1 * DAY, 0, 0, 1, 4.0),
            (0, 8 * DAY, 1, 1, 0, 1.0),
            (0, 15 * DAY, -1, -1, 0, 2.0),
            (1, 2 * DAY, 0, 0, 1, 9.0),
        ],
        dtype=np.float64,
    )
    log = EventLog(
        hcp=rows[:, 0].astype(np.int64),
        seconds=rows[:, 1].astype(np.int64),
        channel=rows[:, 2].astype(np.int64),
        topic=rows[:, 3].astype(np.int64),
        engaged=rows[:, 4],
        outcome=rows[:, 5],
    )
    f = HistoryFeaturizer(("email", "rep_visit"), ("dosing", "safety"))
    f.channel_prior_ = np.array([0.2, 0.6])
    f.topic_prior_ = np.array([0.5, 0.5])
    f.overall_prior_ = 0.4
    X = f.transform(log, np.array([0, 0]), np.array([30 * DAY, 5 * DAY]))
    col = f.column
    # 1 engaged of 2 touches, smoothed with 2 pseudo-touches at 0.4.
    assert X[0, col("all__eng_rate")] == pytest.approx((1 + 2 * 0.4) / (2 + 2))
    # Expected engagements from the channels touched: 0.2 + 0.6; observed 1.
    assert X[0, col("all__eng_excess")] == pytest.approx((1 - 0.8) / (2 + 2))
    # Outcome when nothing engaged: the visit (1) and the no-touch period (2).
    assert X[0, col("all__outcome_mean_unengaged")] == pytest.approx(1.5)
    # On day 5 only the opened e-mail is in the past: no unengaged period yet.
    assert np.isnan(X[1, col("all__outcome_mean_unengaged")])
    assert X[1, col("all__eng_rate")] == pytest.approx((1 + 0.8) / 3)


def test_fit_learns_the_overall_prior() -> None:
    log = EventLog(
        hcp=np.zeros(4, dtype=np.int64),
        seconds=np.arange(4, dtype=np.int64) * DAY,
        channel=np.array([0, 0, 1, -1]),
        topic=np.array([0, 1, 1, -1]),
        engaged=np.array([1.0, 0.0, 1.0, 0.0]),
        outcome=np.full(4, np.nan),
    )
    f = HistoryFeaturizer(("email", "rep_visit"), ("dosing", "safety")).fit(log)
    assert f.overall_prior_ == pytest.approx(2 / 3)  # no-touch rows are not touches
    np.testing.assert_allclose(f.channel_prior_, [0.5, 1.0])
