"""Path attributions: exact sums, agreement with TreeSHAP on what matters, speed-free."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from nextbest.learning.attribution import PathAttribution


@pytest.fixture(scope="module")
def booster() -> tuple[lgb.Booster, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, 8)).astype(np.float32)
    X[rng.random(X.shape) < 0.05] = np.nan  # missing values take their own branch
    y = (
        2.0 * np.nan_to_num(X[:, 0])
        + np.nan_to_num(X[:, 1] * X[:, 2])
        + 0.1 * rng.normal(size=4000)
    )
    model = lgb.LGBMRegressor(n_estimators=80, num_leaves=15, verbose=-1, random_state=0)
    return model.fit(X, y).booster_, X


def test_attributions_add_up_to_the_raw_score(booster: tuple[lgb.Booster, np.ndarray]) -> None:
    model, X = booster
    attribution = PathAttribution(model)
    contrib = attribution.contributions(X[:500])
    assert contrib.shape == (500, 8)
    np.testing.assert_allclose(
        attribution.bias_ + contrib.sum(axis=1), model.predict(X[:500]), atol=1e-6
    )


def test_top_features_agree_with_treeshap(booster: tuple[lgb.Booster, np.ndarray]) -> None:
    model, X = booster
    ours = PathAttribution(model).contributions(X[:500])
    shap = np.asarray(model.predict(X[:500], pred_contrib=True))[:, :-1]
    # Feature 0 carries most of the signal: both must usually name it first.
    agree = (np.abs(ours).argmax(axis=1) == np.abs(shap).argmax(axis=1)).mean()
    assert agree > 0.8
    # Features 3..7 are pure noise: neither method gives them much.
    assert np.abs(ours[:, 3:]).mean() < 0.1 * np.abs(ours[:, :3]).mean()


def test_fewer_iterations_and_empty_input(booster: tuple[lgb.Booster, np.ndarray]) -> None:
    model, X = booster
    attribution = PathAttribution(model, num_iteration=10)
    np.testing.assert_allclose(
        attribution.bias_ + attribution.contributions(X[:50]).sum(axis=1),
        model.predict(X[:50], num_iteration=10),
        atol=1e-6,
    )
    assert attribution.contributions(X[:0]).shape == (0, 8)


def test_the_leaves_give_the_score_and_survive_an_old_pickle(
    booster: tuple[lgb.Booster, np.ndarray],
) -> None:
    model, X = booster
    for trees in (None, 10):
        attribution = PathAttribution(model, num_iteration=trees)
        paths = attribution.paths(X[:300])
        np.testing.assert_allclose(
            attribution.raw(paths), model.predict(X[:300], num_iteration=trees), rtol=0, atol=1e-12
        )
        np.testing.assert_array_equal(
            attribution.contributions(X[:300], paths), attribution.contributions(X[:300])
        )
    # An artifact pickled before leaf values were kept gets them on loading.
    state = dict(attribution.__dict__)
    del state["leaf_value_"]
    old = PathAttribution.__new__(PathAttribution)
    old.__setstate__(state)
    np.testing.assert_array_equal(old.leaf_value_, attribution.leaf_value_)
