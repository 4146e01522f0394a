"""The engagement model's linear base: HCP attributes crossed with action attributes."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss

from nextbest.learning.preference import CalibratedEngagementClassifier, LinearBase

from .conftest import LearnedWorld, scores_on_truth

# Columns of the rows below: an HCP's numeric attribute, its categorical one (3
# values), the action's channel (2 values), a column the base does not cross.
TERMS = {
    "left_numeric": [0],
    "left_categorical": [[1, 3]],
    "right_categorical": [[2, 2]],
}


def _rows(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Engagement as a sum on the logit scale: the attribute makes channel 1 more and
    channel 0 less engaging, each kind of HCP prefers its own channel. Returns the
    rows, the 0/1 outcomes and the true logits."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, n)
    kind = rng.integers(0, 3, n)
    channel = rng.integers(0, 2, n)
    noise = rng.random(n)
    prefers = np.array([[0.6, -0.6], [-0.4, 0.4], [0.0, 0.0]])  # kind x channel
    logit = -0.8 + np.where(channel == 1, 0.7, -0.7) * x + prefers[kind, channel]
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(int)
    return np.column_stack([x, kind, channel, noise]).astype(np.float32), y, logit


def test_the_base_finds_attribute_by_channel_interactions() -> None:
    X, y, logit = _rows(40_000)
    base = LinearBase(TERMS).fit(X, y, None)
    assert np.corrcoef(base.logit(X), logit)[0, 1] > 0.99
    # A row's logit is the intercept and its columns' parts, nothing else.
    parts = base.contributions(X[:50], X.shape[1])
    np.testing.assert_allclose(parts.sum(axis=1) + base.coef_[0, 0], base.logit(X[:50]))
    assert (parts[:, 3] == 0).all()  # a column the base does not cross has no part
    # An offset is taken as given: the coefficients are what is left beside it.
    shifted = LinearBase(TERMS).fit(X, y, np.full(len(y), 0.5))
    np.testing.assert_allclose(shifted.logit(X), base.logit(X) - 0.5, atol=1e-3)


def test_missing_and_unknown_codes_add_nothing() -> None:
    X, y, _ = _rows(5_000)
    base = LinearBase(TERMS).fit(X, y, None)
    row = X[:3].copy()
    row[:, 1] = [np.nan, 7, -1]  # a missing and two unknown kinds
    row[:, 0] = np.nan  # a missing number counts as the mean
    left = base.left(row)
    assert (left[:, 1:-1] == 0).all()  # the last column: where missing codes point
    assert np.isfinite(base.logit(row)).all()


def test_the_left_columns_are_the_standardized_numbers_and_the_indicators() -> None:
    """``left`` as defined, against a plain reading of it: each number standardized,
    missing as 0 and clipped to +-LINEAR_CLIP (an infinity too), one indicator per
    code, a missing, unknown or negative code in the last column; a fraction of a
    code counts as its whole part. The same indicators written into an array of
    either order."""
    from nextbest.learning.preference import LINEAR_CLIP

    base = LinearBase(TERMS)
    base.mean_, base.scale_ = np.array([2.0]), np.array([0.5])
    X = np.array(
        [
            [2.5, 0, 1, 0],
            [np.nan, 2, 0, 0],
            [np.inf, np.nan, 1, 0],
            [-np.inf, 3, 0, 0],
            [1e6, -1, 1, 0],
            [-0.75, 1.5, 0, 0],
        ]
    )
    indicators = np.zeros((len(X), base.n_left + 1))
    for row, column in enumerate([2, 4, 5, 5, 5, 3]):  # codes 0, 2 -> 2, 4; else last
        indicators[row, column] = 1.0
    expected = indicators.copy()
    expected[:, 0] = 1.0
    expected[:, 1] = [1.0, 0.0, LINEAR_CLIP, -LINEAR_CLIP, LINEAR_CLIP, -LINEAR_CLIP]
    assert (base.left(X) == expected).all()
    for order in ("C", "F"):
        written = np.zeros_like(indicators, order=order)
        base._left.set(X, written)
        assert (written == indicators).all(), order


def test_a_row_scores_the_same_alone_as_in_any_batch() -> None:
    """Bit for bit: a served HCP's rows are scored alone, in a batch of 1,000 HCPs or in
    the score cache's warm-up, and each must rank and explain the same way."""
    rng = np.random.default_rng(3)
    terms = {
        "left_numeric": [0, 1],
        "left_categorical": [[2, 4], [3, 7]],
        "right_categorical": [[4, 5], [5, 9], [6, 4]],  # channel, topic, content type
    }
    n = 301
    X = np.column_stack(
        [rng.normal(size=(n, 2)), rng.integers(0, 4, n), rng.integers(0, 7, n)]
        + [rng.integers(0, k, n) for k in (5, 9, 4)]
    ).astype(np.float32)
    base = LinearBase(terms)
    base.mean_, base.scale_ = np.zeros(2), np.ones(2)
    base.padded_[:-1, :-1] = rng.normal(size=base.coef_.shape)  # last row, column: zeros
    logit, parts = base.logit(X), base.contributions(X, X.shape[1])
    for start, stop in [(0, 1), (7, 8), (0, 3), (5, 12), (100, 201), (13, 300)]:
        assert (base.logit(X[start:stop]) == logit[start:stop]).all(), (start, stop)
        assert (base.contributions(X[start:stop], X.shape[1]) == parts[start:stop]).all()


def test_trees_boosting_from_the_base_beat_trees_alone_on_a_small_history() -> None:
    X, y, _ = _rows(3_000)
    test_X, test_y, test_logit = _rows(20_000, seed=1)
    plain = CalibratedEngagementClassifier(n_estimators=200).fit(X, y)
    based = CalibratedEngagementClassifier(n_estimators=200, linear_terms=TERMS).fit(X, y)
    p_plain, p_based = plain.engage_probability(test_X), based.engage_probability(test_X)
    assert log_loss(test_y, p_based) < log_loss(test_y, p_plain) - 0.005
    truth = 1.0 / (1.0 + np.exp(-test_logit))
    assert np.corrcoef(p_based, truth)[0, 1] > np.corrcoef(p_plain, truth)[0, 1] + 0.02
    # The leaves give the same probabilities.
    paths = based.attribution_.paths(test_X[:20])
    np.testing.assert_allclose(
        based.engage_probability(test_X[:20], paths), based.engage_probability(test_X[:20])
    )


def test_a_trained_model_tells_an_hcps_actions_apart_as_the_truth_does(
    learned: LearnedWorld,
) -> None:
    """On the simulated world, engagement is a per-HCP sum of channel and topic
    affinities that follow the HCP's attributes, less fatigue. Within each HCP, the
    model's engagement logits of its eligible actions follow the true ones (0.68
    with trees alone on this world, 0.74 boosting from the linear base)."""
    world = learned.world
    _, p_engage, _ = scores_on_truth(world, learned.result.model)
    eligible = world.eligible

    def centred_logit(p: np.ndarray) -> np.ndarray:
        logit = np.log(p / (1.0 - p))
        mean = np.where(eligible, logit, 0.0).sum(axis=1) / eligible.sum(axis=1).clip(1)
        return (logit - mean[:, None])[eligible]

    within = np.corrcoef(centred_logit(p_engage), centred_logit(world.p_engage))[0, 1]
    assert within > 0.72
