"""The learners keep scikit-learn's estimator contract."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
    parametrize_with_checks,
)

from nextbest.learning.preference import CalibratedEngagementClassifier
from nextbest.learning.uplift import EngagementStratifiedUplift


@parametrize_with_checks([CalibratedEngagementClassifier(n_estimators=10, min_child_samples=2)])
def test_engagement_classifier_passes_sklearn_checks(estimator, check) -> None:
    check(estimator)


# The uplift learner's fit needs ``treated`` and ``engaged`` besides X and y, so
# scikit-learn's generic fit/predict checks cannot call it; the parameter checks apply.
@pytest.mark.parametrize(
    "check",
    [
        check_no_attributes_set_in_init,
        check_parameters_default_constructible,
        check_get_params_invariance,
        check_set_params,
    ],
)
def test_uplift_learner_parameter_contract(check) -> None:
    check("EngagementStratifiedUplift", EngagementStratifiedUplift())


def _uplift_data(n: int = 6000, seed: int = 0):
    """Two HCP columns + one action column; the action only pays for x0 > 0 when engaged."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    treated = rng.random(n) < 0.7
    X[~treated, 2] = np.nan
    p = 1 / (1 + np.exp(-X[:, 1]))
    engaged = (treated & (rng.random(n) < p)).astype(int)
    gain = np.where(X[:, 0] > 0, 2.0, 0.0)
    y = 1.0 + X[:, 1] + engaged * gain + rng.normal(scale=0.5, size=n)
    return X, y, treated, engaged, p, gain


def test_uplift_fit_returns_self_and_learns_the_effect() -> None:
    X, y, treated, engaged, p, gain = _uplift_data()
    learner = EngagementStratifiedUplift(
        n_control_features=2, n_estimators=150, min_child_samples=50
    )
    with pytest.raises(NotFittedError):
        learner.predict(X)
    assert learner.fit(X, y, treated=treated, engaged=engaged) is learner
    tau = learner.predict(X)
    assert tau.shape == (len(X),)
    truth = p * gain
    assert np.corrcoef(tau, truth)[0, 1] > 0.8
    assert abs(tau[X[:, 0] < 0].mean()) < 0.15  # no effect where none exists
    assert learner.stratified_
    assert learner.contributions(X[:7]).shape == (7, 3)
    # An unfitted clone has the same parameters and no fitted state.
    copy = clone(learner)
    assert copy.get_params() == learner.get_params()
    assert not hasattr(copy, "effect_engaged_")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"treated": np.ones(100, bool)}, "both treated and no-touch"),
        ({"treated": np.zeros(100, bool)}, "both treated and no-touch"),
        ({"treated": np.ones(99, bool)}, "treated has shape"),
        ({"propensity": np.ones(3)}, "propensity has shape"),
    ],
)
def test_uplift_bad_input_is_named(kwargs, message) -> None:
    X, y, treated, engaged, _, _ = _uplift_data(100)
    args = {"treated": treated, "engaged": engaged, **kwargs}
    with pytest.raises(ValueError, match=message):
        EngagementStratifiedUplift(n_control_features=2).fit(X, y, **args)


def test_uplift_rejects_bad_control_width() -> None:
    X, y, treated, engaged, _, _ = _uplift_data(300)
    with pytest.raises(ValueError, match=r"n_control_features=7 is outside 1\.\.3"):
        EngagementStratifiedUplift(n_control_features=7).fit(X, y, treated=treated, engaged=engaged)


def _action_data(n: int, *, heterogeneous: bool = True, seed: int = 0):
    """Three HCP columns + an action code column (0..2); effect per action, maybe per HCP."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    treated = rng.random(n) < 0.7
    action = rng.integers(0, 3, n)
    X[:, 3] = np.where(treated, action, np.nan)
    engaged = (treated & (rng.random(n) < 0.5)).astype(int)
    per_action = np.array([0.5, 1.0, 1.5])[action]
    gain = per_action * (1.0 + 0.9 * np.sign(X[:, 0])) if heterogeneous else per_action
    y = rng.poisson(1.0 + engaged * gain).astype(np.float64)
    return X, y, treated, engaged, gain


@pytest.mark.parametrize("heterogeneous", [False, True])
def test_heterogeneity_is_calibrated_on_held_out_rows(heterogeneous: bool) -> None:
    X, y, treated, engaged, _ = _action_data(20_000, heterogeneous=heterogeneous)
    learner = EngagementStratifiedUplift(
        n_control_features=3,
        action_column=3,
        n_estimators=300,
        min_child_samples=20,
        num_leaves=31,
        learning_rate=0.1,
        early_stopping_rounds=300,
    ).fit(X, y, treated=treated, engaged=engaged)
    if heterogeneous:
        # Real differences between HCPs survive the calibration.
        assert learner.heterogeneity_ > 0.6
    else:
        # Big trees with no early stopping learn noise; the calibration shrinks it away.
        assert learner.heterogeneity_ < 0.4
    probe = X[treated][:2000]
    tau = learner.predict(probe)
    codes = probe[:, 3].astype(int)
    means = learner.action_mean_uplift_
    assert means is not None and np.isfinite(means).all()
    # Shrunk predictions stay centred on each action's mean: only the spread changes.
    for code in range(3):
        centred = tau[codes == code] - means[code]
        assert abs(centred.mean()) < 0.1 * abs(means[code]) + 0.05


def test_heterogeneity_is_calibrated_only_on_rows_no_model_fitted_on() -> None:
    """Engagement falls from 80% to 10% late in the history: the newest 15% of treated
    rows are then mostly unengaged, more than the unengaged stage held out, and
    calibrating on rows a noise-learning stage fitted would keep its noise."""
    X, y, treated, engaged, _ = _action_data(20_000, heterogeneous=False)
    rng = np.random.default_rng(1)
    late = np.arange(len(y)) >= 0.7 * len(y)
    engaged = (treated & (rng.random(len(y)) < np.where(late, 0.1, 0.8))).astype(int)
    y = rng.poisson(1.0 + engaged * np.nan_to_num(X[:, 3] + 1) * 0.5).astype(np.float64)
    learner = EngagementStratifiedUplift(
        n_control_features=3,
        action_column=3,
        n_estimators=300,
        min_child_samples=20,
        num_leaves=31,
        learning_rate=0.1,
        early_stopping_rounds=0,  # every stage grows all 300 trees; the newest rows stay out
    ).fit(X, y, treated=treated, engaged=engaged)
    assert learner.stratified_
    # Big trees without early stopping learned noise: on rows they never saw it shows
    # (0.3 to 0.5 over seeds: mu0's errors sit in target and prediction alike); the
    # newest 15% of treated rows, half of them fitted on, kept all of it (1.0).
    assert learner.heterogeneity_ < 0.7
    # The calibration rows are the newest treated rows, and no model boosted on any.
    n_cal = learner.n_calibration_rows_
    assert n_cal >= 500
    et = engaged[treated]
    seen = np.zeros(len(et), dtype=bool)
    seen[learner.engagement_.boosted_rows()] = True
    for e, stage in ((1, learner.effect_engaged_), (0, learner.effect_unengaged_)):
        seen[np.flatnonzero(et == e)[stage.boosted_rows()]] = True
    assert not seen[-n_cal:].any()
    assert seen[-n_cal - 1]  # and they are all there are


def test_heterogeneity_is_kept_when_too_few_rows_are_held_out() -> None:
    X, y, treated, engaged, _ = _action_data(3000, heterogeneous=False)
    learner = EngagementStratifiedUplift(n_control_features=3, action_column=3, n_estimators=30)
    learner.fit(X, y, treated=treated, engaged=engaged)
    assert 0 < learner.n_calibration_rows_ < 500
    assert learner.heterogeneity_ == 1.0 and learner.action_mean_uplift_ is None


def test_calibration_can_be_turned_off() -> None:
    X, y, treated, engaged, _ = _action_data(6000, heterogeneous=False)
    learner = EngagementStratifiedUplift(
        n_control_features=3, action_column=3, calibrate_heterogeneity=False
    ).fit(X, y, treated=treated, engaged=engaged)
    assert learner.heterogeneity_ == 1.0 and learner.action_mean_uplift_ is None


def test_row_cap_samples_in_time_order() -> None:
    from nextbest.learning.preference import rows_in_order

    assert rows_in_order(100, None, 0) is None
    assert rows_in_order(100, 100, 0) is None
    kept = rows_in_order(10_000, 1_000, 0)
    assert kept is not None and len(kept) == 1_000
    assert (np.diff(kept) > 0).all()  # sorted, no repeats
    assert kept.max() > 9_000 and kept.min() < 1_000  # spread over the whole history
    X, _y, treated, engaged, _ = _action_data(6000)
    clf = CalibratedEngagementClassifier(n_estimators=20, max_rows=2000)
    clf.fit(X[treated], engaged[treated])
    assert clf.n_calibration_rows_ == int(2000 * clf.calibration_fraction)


def test_uplift_row_cap_applies_per_engagement_stratum() -> None:
    X, y, treated, engaged, p, gain = _uplift_data(8000)
    capped = EngagementStratifiedUplift(
        n_control_features=2, n_estimators=60, min_child_samples=50, max_rows_per_stage=1500
    )
    used = capped._treated_rows_used(engaged[treated])
    assert used is not None and (np.diff(used) > 0).all()
    assert np.bincount(engaged[treated][used]).tolist() == [1500, 1500]
    capped.fit(X, y, treated=treated, engaged=engaged)
    # Fitted on at most 1,500 rows a stratum, the learner still finds the effect.
    pred = capped.predict(X[treated])
    truth = (p * gain)[treated]
    assert np.corrcoef(pred, truth)[0, 1] > 0.6


def test_served_calibration_equals_the_fitted_isotonic_map() -> None:
    X, _y, treated, engaged, _ = _action_data(6000)
    clf = CalibratedEngagementClassifier(n_estimators=30).fit(X[treated], engaged[treated])
    assert clf.calibrator_ is not None
    rows = X[treated][:500]
    raw = clf.booster_.booster_.predict(rows, num_iteration=clf.n_trees_)
    # Beyond the thresholds too: the map is clipped there.
    wide = np.concatenate([raw, [-1.0, 0.0, 1.0, 2.0]])
    served = np.interp(wide, clf.calibrator_.X_thresholds_, clf.calibrator_.y_thresholds_)
    np.testing.assert_allclose(served, clf.calibrator_.predict(wide), rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        clf.engage_probability(rows), clf.calibrator_.predict(raw), rtol=0, atol=1e-12
    )


def test_contributions_reuse_the_gains_of_scoring_exactly() -> None:
    X, y, treated, engaged, _ = _action_data(6000)
    learner = EngagementStratifiedUplift(n_control_features=3, action_column=3).fit(
        X, y, treated=treated, engaged=engaged
    )
    rows = X[treated][:50]
    tau, gains = learner.uplift_and_gains(rows)
    np.testing.assert_array_equal(tau, learner.uplift(rows))
    np.testing.assert_array_equal(gains[0], learner.gains(rows)[0])
    # Without the gains, contributions score the rows from their leaves: the same
    # sums in another order.
    np.testing.assert_allclose(
        learner.contributions(rows, None, gains), learner.contributions(rows), rtol=0, atol=1e-12
    )


def test_scores_from_the_leaves_equal_lightgbms_predictions() -> None:
    X, y, treated, engaged, _ = _action_data(6000)
    learner = EngagementStratifiedUplift(n_control_features=3, action_column=3).fit(
        X, y, treated=treated, engaged=engaged
    )
    rows = X[treated][:300]
    paths = learner.paths(rows)
    assert paths.engagement.shape == (300, learner.engagement_.n_trees_)
    engagement = learner.engagement_
    np.testing.assert_allclose(
        engagement.engage_probability(rows, paths.engagement),
        engagement.engage_probability(rows),
        rtol=0,
        atol=1e-12,
    )
    tau, gains = learner.uplift_and_gains(rows)
    tau_leaves, gains_leaves = learner.uplift_and_gains(rows, paths=paths)
    for ours, lightgbm in ((tau_leaves, tau), *zip(gains_leaves, gains, strict=True)):
        np.testing.assert_allclose(ours, lightgbm, rtol=0, atol=1e-12)
    assert learner.contributions(rows[:0]).shape == (0, rows.shape[1])
    assert learner.uplift_and_gains(rows[:0], paths=learner.paths(rows[:0]))[0].shape == (0,)
    # The reasons of a few rows, from the leaves kept for all of them.
    few = np.arange(0, 300, 37)
    np.testing.assert_allclose(
        learner.contributions(rows[few], None, None, paths.take(few)),
        learner.contributions(rows[few]),
        rtol=0,
        atol=1e-12,
    )


def test_per_action_tables_read_each_rows_action_once_per_call(monkeypatch) -> None:
    X, y, treated, engaged, _ = _action_data(6000)
    learner = EngagementStratifiedUplift(n_control_features=3, action_column=3).fit(
        X, y, treated=treated, engaged=engaged
    )
    assert learner.action_scale_ is not None and learner.action_mean_uplift_ is not None
    learner.heterogeneity_ = 0.5  # as calibration may set it: both tables are used
    rows = X[treated][:40].copy()
    # No action, a negative code, codes past either table: each table's "missing" value.
    rows[:4, 3] = [np.nan, -1.0, len(learner.action_scale_), 1e9]
    expected_scale = np.array(
        [
            learner.action_scale_[int(c)] if 0 <= c < len(learner.action_scale_) else 1.0
            for c in rows[:, 3]
        ]
    )
    tau, (g1, _) = learner.uplift_and_gains(rows)
    np.testing.assert_array_equal(g1, learner.effect_engaged_.predict(rows) * expected_scale)
    means = learner.action_mean_uplift_
    centre = np.array([means[int(c)] if 0 <= c < len(means) else np.nan for c in rows[:, 3]])
    raw = learner.engagement_.engage_probability(rows) * g1 + (
        1.0 - learner.engagement_.engage_probability(rows)
    ) * learner.effect_unengaged_.predict(rows)
    lam = learner.heterogeneity_
    np.testing.assert_allclose(
        tau, np.where(np.isnan(centre), raw, centre + lam * (raw - centre)), rtol=0, atol=1e-12
    )
    # One reading of the rows' actions per call, for every table it looks up.
    read = []
    index = learner._action_index
    monkeypatch.setattr(learner, "_action_index", lambda X: read.append(len(X)) or index(X))
    _, gains = learner.uplift_and_gains(rows)
    learner.contributions(rows[:5], None, (gains[0][:5], gains[1][:5]))
    assert read == [40, 5]
    # Given the terms scoring worked out, the contributions do not read them again.
    parts = learner.uplift_parts(rows)
    learner.contributions(rows[:5], None, None, None, parts.terms.take(np.arange(5)))
    assert read == [40, 5, 40]


# Gain factor per (HCP segment, action topic): rows segments 0-2, columns topics 0-2.
SEGMENT_TOPIC_FACTOR = np.array([[0.3, 1.0, 2.0], [2.0, 1.0, 0.3], [1.0, 1.0, 1.0]])


def _segment_data(n: int, seed: int = 0):
    """HCP columns: segment code (categorical), a numeric attribute; action columns:
    action code 0..5 and its topic (action % 3). The engaged gain is the action's
    strength times a factor of the HCP's segment and the action's topic."""
    rng = np.random.default_rng(seed)
    segment = rng.integers(0, 3, n)
    action = rng.integers(0, 6, n)
    treated = rng.random(n) < 0.8
    X = np.column_stack(
        [segment, rng.normal(size=n), np.where(treated, action, np.nan), action % 3]
    ).astype(np.float32)
    X[~treated, 3] = np.nan
    engaged = (treated & (rng.random(n) < 0.4)).astype(int)
    strength = np.array([0.3, 0.5, 0.7, 0.4, 0.6, 0.8])
    gain = strength[action] * SEGMENT_TOPIC_FACTOR[segment, action % 3]
    y = rng.poisson(4.0 + engaged * gain).astype(np.float64)
    return X, y, treated, engaged, gain


def test_segment_topic_factors_are_pooled_across_the_cells_rows() -> None:
    """Under Poisson noise four times the gain, small trees early-stopped on noisy
    rows barely find a gain that needs splits on two columns at once; fitting each
    (segment, topic) cell's factor from all of its rows finds it."""
    X, y, treated, engaged, gain = _segment_data(20_000)
    common = {
        "n_control_features": 2,
        "categorical_feature": [0, 2, 3],
        "action_column": 2,
        "random_state": 0,
    }
    pooled = EngagementStratifiedUplift(**common, segment_columns=[3]).fit(
        X, y, treated=treated, engaged=engaged
    )
    plain = EngagementStratifiedUplift(**common).fit(X, y, treated=treated, engaged=engaged)
    assert plain.segment_scale_ == []
    ((column, group, n_codes, table),) = pooled.segment_scale_
    assert (column, group, n_codes) == (0, 3, 3)
    # The fitted factors follow the true ones (relative to each segment's mean: the
    # segment's level is the stage's to learn), and the segment whose topics do not
    # matter gets about the same factor for each.
    truth = SEGMENT_TOPIC_FACTOR / SEGMENT_TOPIC_FACTOR.mean(axis=1, keepdims=True)
    fitted = table.reshape(3, 3) / table.reshape(3, 3).mean(axis=1, keepdims=True)
    assert np.corrcoef(fitted.ravel(), truth.ravel())[0, 1] > 0.95
    np.testing.assert_allclose(fitted[2], 1.0, atol=0.2)
    rows = X[treated]
    g_pooled, g_plain = pooled.gains(rows)[0], plain.gains(rows)[0]
    truth_rows = gain[treated]
    assert np.corrcoef(g_pooled, truth_rows)[0, 1] > 0.9
    assert np.corrcoef(g_pooled, truth_rows)[0, 1] > np.corrcoef(g_plain, truth_rows)[0, 1] + 0.03
    # A segment or topic the fit never saw (NaN, or a code past the table) keeps factor 1.
    unseen = rows[:4].copy()
    unseen[0, 0], unseen[1, 3], unseen[2, 0] = np.nan, np.nan, 7
    scale = pooled._scale_of(pooled._action_index(unseen), unseen)
    action_scale = pooled.action_scale_[unseen[:, 2].astype(int)]
    np.testing.assert_allclose(scale[:3], action_scale[:3], rtol=1e-12)


def test_contributions_from_the_terms_scoring_carried_equal_those_worked_out_again() -> None:
    """The reasons weigh each row's attributions by the gain scale and shrinking
    centre scoring worked out for it; carried from scoring, they are the ones the
    contributions would work out themselves: rows of every action, of actions past
    the tables (new, without a scale or mean of their own), without an action, and
    of a segment or topic the fit never saw."""
    X, y, treated, engaged, _ = _segment_data(8000)
    learner = EngagementStratifiedUplift(
        n_control_features=2,
        categorical_feature=[0, 2, 3],
        action_column=2,
        segment_columns=[3],
        random_state=0,
    ).fit(X, y, treated=treated, engaged=engaged)
    assert learner.segment_scale_ and learner.action_mean_uplift_ is not None
    learner.heterogeneity_ = 0.5  # as calibration may set it: the centres are used
    rows = X[treated][:60].copy()
    n_scaled = len(learner.action_scale_)
    rows[:4, 2] = [n_scaled, n_scaled + 3, np.nan, -1.0]
    rows[4, 0], rows[5, 3] = np.nan, 7
    paths = learner.paths(rows)
    parts = learner.uplift_parts(rows, paths=paths)
    terms = parts.terms
    assert isinstance(terms.scale, np.ndarray) and terms.centre is not None
    # Several actions' scales and centres, and none for the rows without one of their own.
    assert len(np.unique(np.round(terms.scale, 12))) > 6
    assert np.isnan(terms.centre[:4]).all() and not np.isnan(terms.centre[6:]).any()
    np.testing.assert_allclose(parts.uplift, learner.uplift(rows), rtol=0, atol=1e-12)
    again = learner._terms(rows)
    np.testing.assert_array_equal(terms.scale, again.scale)
    np.testing.assert_array_equal(terms.centre, again.centre)
    np.testing.assert_array_equal(
        learner.contributions(rows, None, parts.gains, paths, terms),
        learner.contributions(rows, None, None, paths),
    )
    # The served few, taken from the candidates' terms.
    few = np.array([0, 1, 2, 3, 4, 5, 17, 41])
    np.testing.assert_array_equal(
        learner.contributions(
            rows[few],
            None,
            (parts.gains[0][few], parts.gains[1][few]),
            paths.take(few),
            terms.take(few),
        ),
        learner.contributions(rows[few], None, None, paths.take(few)),
    )


def _scale_by_hand(learner: EngagementStratifiedUplift, rows: np.ndarray) -> np.ndarray:
    """Each row's engaged-gain scale, one row and one factor at a time: its action's
    scale (1.0 without one), times each (HCP column, action column) pair's factor in
    the order fitted (1.0 for a missing code or a cell past the table)."""
    out = []
    for row in rows.tolist():
        a = row[learner.action_column]
        known = not np.isnan(a) and 0 <= a < len(learner.action_scale_)
        scale = float(learner.action_scale_[int(a)]) if known else 1.0
        for column, group, n_codes, table in learner.segment_scale_:
            h, g = row[column], row[group]
            cell = -1 if np.isnan(h) or np.isnan(g) or g >= n_codes else int(h) * n_codes + int(g)
            scale *= float(table[cell]) if 0 <= cell < len(table) else 1.0
        out.append(scale)
    return np.array(out)


def test_segment_factors_of_several_pairs_are_the_fitted_cells_bit_for_bit() -> None:
    """Scoring looks every pair's factors up at once, from tables padded with 1.0
    for missing and unfitted codes: the scales are the cells' products, in the order
    fitted, bit for bit; and a second fit's tables replace the first's."""
    X, y, treated, engaged, _ = _segment_data(8000)
    rng = np.random.default_rng(3)
    # A second categorical HCP column (region), so that two pairs scale each row.
    X = np.column_stack([X[:, :1], rng.integers(0, 4, len(X)), X[:, 1:]]).astype(np.float32)
    learner = EngagementStratifiedUplift(
        n_control_features=3,
        categorical_feature=[0, 1, 3, 4],
        action_column=3,
        segment_columns=[4],
        random_state=0,
    )
    for seed in (0, 1):
        keep = np.random.default_rng(seed).random(len(X)) < 0.9
        learner.fit(X[keep], y[keep], treated=treated[keep], engaged=engaged[keep])
        assert [(c, g) for c, g, _, _ in learner.segment_scale_] == [(0, 4), (1, 4)]
        rows = X[treated][:40].copy()
        rows[0, 0], rows[1, 1], rows[2, 4] = np.nan, np.nan, np.nan  # missing codes
        rows[3, 0], rows[4, 1], rows[5, 4] = 9, 17, 3  # past a table, a topic unfitted
        rows[6, 3] = np.nan  # no action: no scale at all
        scale = learner._terms(rows).scale
        np.testing.assert_array_equal(scale, _scale_by_hand(learner, rows))
        g1 = learner.gains(rows)[0]
        np.testing.assert_array_equal(g1, learner.effect_engaged_.predict(rows) * scale)
