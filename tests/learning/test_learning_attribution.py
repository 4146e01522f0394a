"""Path attributions: exact sums, agreement with TreeSHAP on what matters, speed-free."""

from __future__ import annotations

import pickle

import lightgbm as lgb
import numpy as np
import pytest

from nextbest.learning import uplift as uplift_module
from nextbest.learning.attribution import JoinedPaths, PathAttribution

from .conftest import LearnedWorld


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


def test_joined_models_give_each_models_own_leaves(
    booster: tuple[lgb.Booster, np.ndarray],
) -> None:
    """One LightGBM call on the joined trees gives every model's paths exactly."""
    model, X = booster
    rng = np.random.default_rng(1)
    y = (np.nan_to_num(X[:, 3]) > 0).astype(int)  # another objective, with categorical splits
    Xc = X.copy()
    Xc[:, 4] = rng.integers(0, 6, len(X))
    classifier = lgb.LGBMClassifier(n_estimators=40, num_leaves=7, verbose=-1, random_state=0)
    other = classifier.fit(Xc, y, categorical_feature=[4]).booster_
    parts = [
        PathAttribution(model, num_iteration=30),
        PathAttribution(other),
        PathAttribution(model, num_iteration=5),
    ]
    joined = JoinedPaths(parts)
    assert joined.booster is not None and joined.booster.num_trees() == 30 + 40 + 5
    for rows in (Xc[:1], Xc[:500]):
        got = joined.paths(rows)
        assert len(got) == 3
        for part, paths in zip(parts, got, strict=True):
            np.testing.assert_array_equal(paths, part.paths(rows))
    empty = joined.paths(Xc[:0])
    assert [p.shape for p in empty] == [(0, 30), (0, 40), (0, 5)]
    assert JoinedPaths([]).paths(Xc[:3]) == []


def test_the_uplift_model_asks_lightgbm_once_and_pickles_without_the_joined_trees(
    learned: LearnedWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    uplift = learned.result.model.uplift_model
    assert uplift is not None
    # Rows of 50 HCPs: none shares the unengaged stage's leaves with another.
    X = learned.result.model.rows(np.arange(50), np.arange(50) % 40)
    separate = [part.paths(X) for part in uplift._path_models()]
    calls = []
    real = lgb.Booster.predict

    def counted(self: lgb.Booster, *args: object, **kwargs: object) -> object:
        calls.append(kwargs.get("pred_leaf"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(lgb.Booster, "predict", counted)
    paths = uplift.paths(X)
    assert calls == [True]
    np.testing.assert_array_equal(paths.engagement, separate[0])
    np.testing.assert_array_equal(paths.engaged, separate[1])
    np.testing.assert_array_equal(paths.unengaged, separate[-1])
    assert "_joined_paths" in uplift.__dict__
    copy = pickle.loads(pickle.dumps(uplift))
    assert "_joined_paths" not in copy.__dict__ and "_joined_paths" in uplift.__dict__
    np.testing.assert_array_equal(copy.uplift(X), uplift.uplift(X))


def _rows_of_hcps(learned: LearnedWorld, hcps: list[int], per_hcp: int) -> np.ndarray:
    """Model rows of ``per_hcp`` actions for each of ``hcps``, grouped by HCP."""
    model = learned.result.model
    n_actions = model.n_actions
    hcp_rows = np.repeat(np.asarray(hcps, dtype=np.int64), per_hcp)
    return model.rows(hcp_rows, np.tile(np.arange(per_hcp) % n_actions, len(hcps)))


def test_an_hcps_rows_ask_the_unengaged_stage_once_and_score_as_alone(
    learned: LearnedWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unengaged stage reads the HCP's columns alone: a request's candidates of one
    HCP share its leaves, which are asked of LightGBM once per HCP; every score and
    attribution is the one each row gets in a call of its own, bit for bit."""
    uplift = learned.result.model.uplift_model
    assert uplift is not None and uplift.unengaged_columns_ == uplift.n_control_features
    X = _rows_of_hcps(learned, [3, 7, 3], per_hcp=60)  # HCP 3 twice: two runs of it
    X[120:, 0] = np.nan  # a missing HCP value still matches its neighbours
    asked: list[int] = []
    real = lgb.Booster.predict

    def counted(self: lgb.Booster, data: np.ndarray, *args: object, **kwargs: object) -> object:
        asked.append(len(data))
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(lgb.Booster, "predict", counted)
    # However few trees the quick model's unengaged stage has, a call of its own pays.
    monkeypatch.setattr(uplift_module, "SEPARATE_CALL_LEAVES", 1)
    paths = uplift.paths(X)
    assert asked == [180, 3]  # the treated-side stages' leaves, then one row per run
    assert paths.unengaged_of is not None
    assert paths.unengaged_of.tolist() == [0] * 60 + [1] * 60 + [2] * 60
    asked.clear()
    g0_fresh = uplift.gains(X)[1]  # without leaves: LightGBM's predictions
    assert asked == [180, 3]

    parts = uplift.uplift_parts(X, paths=paths)
    contributions = uplift.contributions(X, paths=paths)
    picked = np.array([179, 5, 61, 0])
    taken = paths.take(picked)
    assert len(taken.unengaged) == 3  # only the entries the taken rows use
    taken_contributions = uplift.contributions(X[picked], paths=taken)
    monkeypatch.setattr(lgb.Booster, "predict", real)
    for i in (0, 59, 60, 150, 179):
        alone = X[i : i + 1]
        one = uplift.uplift_parts(alone, paths=uplift.paths(alone))
        assert parts.uplift[i] == one.uplift[0]
        assert parts.gains[1][i] == one.gains[1][0]
        np.testing.assert_array_equal(contributions[i], uplift.contributions(alone)[0])
    np.testing.assert_array_equal(taken_contributions, contributions[picked])
    np.testing.assert_array_equal(g0_fresh, uplift.effect_unengaged_.predict(X))
    # A second call pays only when it spares at least SEPARATE_CALL_LEAVES leaves.
    spared = (len(X) - 3) * uplift.effect_unengaged_.attribution_.num_iteration
    monkeypatch.setattr(uplift_module, "SEPARATE_CALL_LEAVES", spared + 1)
    assert uplift.paths(X).unengaged_of is None
    monkeypatch.setattr(uplift_module, "SEPARATE_CALL_LEAVES", spared)
    assert uplift.paths(X).unengaged_of is not None


def test_a_model_without_the_hcp_only_unengaged_stage_asks_every_row(
    learned: LearnedWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model trained before the unengaged stage read the HCP alone (no
    ``unengaged_columns_``) may read the action's columns there: every row is asked."""
    uplift = pickle.loads(pickle.dumps(learned.result.model.uplift_model))
    del uplift.unengaged_columns_
    X = _rows_of_hcps(learned, [3], per_hcp=120)
    paths = uplift.paths(X)
    assert paths.unengaged_of is None and len(paths.unengaged) == 120
    np.testing.assert_array_equal(uplift.uplift(X), learned.result.model.uplift_model.uplift(X))
