"""An engagement model that boosts from a per-row logit offset (per-HCP effects)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nextbest.contract.adapters import load_hillstrom
from nextbest.learning.preference import CalibratedEngagementClassifier
from nextbest.learning.train import train
from nextbest.learning.uplift import EngagementStratifiedUplift

from .conftest import QUICK, LearnedWorld


def _rows(n: int = 6000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Columns: a feature, the row's offset, a column the model must not use."""
    rng = np.random.default_rng(seed)
    feature = rng.random(n)
    offset = rng.normal(0.0, 1.5, n)
    leak = rng.random(n)
    logit = -0.5 + 1.5 * feature + offset
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    leak = np.where(y == 1, leak, leak - 0.5)  # tells the label: hidden, it is never used
    return np.column_stack([feature, offset, leak]).astype(np.float32), y


def test_the_offset_enters_the_logit_and_hidden_columns_stay_out_of_the_trees() -> None:
    X, y = _rows()
    model = CalibratedEngagementClassifier(
        n_estimators=80, hidden_columns=[1, 2], offset_columns=[1]
    ).fit(X, y)
    assert model.calibrator_ is None  # an isotonic map would flatten the offset
    used = model.booster_.booster_.feature_importance(importance_type="split")
    assert used[0] > 0 and used[1] == 0 and used[2] == 0
    # The same row with the offset one higher: exactly one more on the logit.
    row = X[:5].copy()
    shifted = row.copy()
    shifted[:, 1] += 1.0
    logit = np.log(model.engage_probability(row) / (1 - model.engage_probability(row)))
    moved = model.engage_probability(shifted)
    np.testing.assert_allclose(np.log(moved / (1 - moved)) - logit, 1.0, atol=1e-6)
    # A missing offset counts 0; the leaves give the same probabilities.
    blank = row.copy()
    blank[:, 1] = np.nan
    np.testing.assert_allclose(
        np.log(model.engage_probability(blank) / (1 - model.engage_probability(blank))),
        logit - row[:, 1],
        atol=1e-5,
    )
    paths = model.attribution_.paths(row)
    np.testing.assert_allclose(model.engage_probability(row, paths), model.engage_probability(row))
    # The offset is its own column's part of the logit.
    contributions = model.contributions(row)
    np.testing.assert_allclose(contributions[:, 1], row[:, 1], atol=1e-6)
    # The effects are learned: better than the same trees without them.
    plain = CalibratedEngagementClassifier(n_estimators=80, hidden_columns=[1, 2]).fit(X, y)
    X_new, y_new = _rows(seed=1)

    def log_loss(p: np.ndarray) -> float:
        return float(-np.mean(y_new * np.log(p) + (1 - y_new) * np.log(1 - p)))

    assert (
        log_loss(model.engage_probability(X_new)) < log_loss(plain.engage_probability(X_new)) - 0.05
    )


def test_with_an_offset_boosting_starts_from_the_mean_rate() -> None:
    # LightGBM starts from the mean's logit only without an init_score: with an
    # offset, a few trees would still be near 0.5 for a 10% engagement rate.
    rng = np.random.default_rng(0)
    n = 6000
    offset = rng.normal(0.0, 0.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(-2.2 + offset)))).astype(int)
    X = np.column_stack([rng.random(n), offset]).astype(np.float32)
    model = CalibratedEngagementClassifier(
        n_estimators=3, hidden_columns=[1], offset_columns=[1], early_stopping_rounds=None
    ).fit(X, y)
    assert abs(model.engage_probability(X).mean() - y.mean()) < 0.02
    assert model.intercept_ < -1.5


def test_outcome_stages_never_read_the_engagement_only_columns() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    X, engaged = _rows(n)
    treated = rng.random(n) < 0.7
    y = rng.poisson(1.0 + 0.5 * X[:, 0] + treated * engaged * 0.8).astype(float)
    uplift = EngagementStratifiedUplift(
        n_control_features=1,
        n_estimators=100,
        min_child_samples=50,
        engagement=CalibratedEngagementClassifier(
            n_estimators=50, hidden_columns=[1, 2], offset_columns=[1]
        ),
        engagement_only_columns=[1, 2],
    ).fit(X, y, treated=treated, engaged=engaged)
    other = X.copy()
    other[:, 1:] = rng.normal(0.0, 3.0, (n, 2))
    for gain, moved in zip(uplift.gains(X), uplift.gains(other), strict=True):
        np.testing.assert_array_equal(gain, moved)
    # ... while P(engaged), and so the uplift, follows the offset.
    assert not np.allclose(uplift.uplift(X), uplift.uplift(other))


def test_a_trained_model_serves_each_hcps_effects_at_the_cut_off(learned: LearnedWorld) -> None:
    model = learned.result.model
    space = model.space
    assert space.effects is not None and space.history is not None
    effects = space.effects.to_numpy()
    assert np.abs(effects).max() > 0.1  # HCPs differ on this world
    columns = [space.history.column(n) for n in space.history.effect_names]
    np.testing.assert_array_equal(model.hcp_history[:, columns], effects)
    assert model.engagement.calibrator_ is None
    # The served P(engaged) follows the HCP's effect on the action's channel and topic.
    hcp = int(np.abs(effects).sum(axis=1).argmax())
    actions = np.arange(model.n_actions)
    served = model.score(np.full(model.n_actions, hcp), actions).p_engage
    X = model.rows(np.full(model.n_actions, hcp), actions)
    offset = np.nansum(X[:, space.effect_offset_columns], axis=1)
    X[:, space.effect_columns] = 0.0
    without = model.engagement.engage_probability(X)

    def logit(p: np.ndarray) -> np.ndarray:
        return np.log(p / (1 - p))

    np.testing.assert_allclose(logit(served) - logit(without), offset, atol=1e-5)
    assert np.abs(offset).max() > 0.1


HILLSTROM = Path(os.environ.get("NEXTBEST_HILLSTROM_CSV", "/work/shared/data/hillstrom.csv"))


@pytest.mark.skipif(not HILLSTROM.is_file(), reason=f"{HILLSTROM} not present")
def test_one_campaign_has_no_effects_and_keeps_the_calibration(tmp_path: Path) -> None:
    # Each customer touched once: no touch has an earlier one of its HCP, so every
    # effect is 0; an offset of zeros would only have turned the calibration off.
    part = tmp_path / "hillstrom.csv"
    pd.read_csv(HILLSTROM, nrows=12_000).to_csv(part, index=False)
    data = load_hillstrom(part, outcome="visit")
    result = train(data, config=QUICK.model_copy(update={"eval_fraction": 0.0}))
    engagement = result.model.engagement
    assert not engagement.offset_columns
    assert engagement.calibrator_ is not None
    # Served probabilities are the isotonic map's of the model's own: its trees'
    # logit boosting from the linear base's.
    X = result.model.rows(np.arange(200), np.zeros(200, dtype=np.int64))
    trees = engagement.booster_.booster_.predict(
        X, num_iteration=engagement.n_trees_, raw_score=True
    )
    raw = 1.0 / (1.0 + np.exp(-(trees + engagement.linear_.logit(X))))
    np.testing.assert_allclose(
        engagement.engage_probability(X), engagement.calibrator_.predict(raw), atol=1e-6
    )
