"""Preference model: calibrated P(engaged | HCP, action, history)."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.isotonic import IsotonicRegression
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import check_is_fitted, validate_data

from nextbest.learning.attribution import PathAttribution, predict_threads
from nextbest.learning.boosting import Validation, fit_boosted, on_cluster


def rows_in_order(n: int, max_rows: int | None, seed: int) -> np.ndarray | None:
    """A uniform sample of ``max_rows`` of ``n`` row positions, sorted; None keeps every row.

    Sorting keeps the time order the fits rely on (the newest rows calibrate and
    decide early stopping). Past a million rows or so, more rows of the same
    history barely change a boosted model but cost time in proportion.
    """
    if max_rows is None or n <= max_rows:
        return None
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_rows, replace=False))


def boosted_positions(n_rows: int, max_rows: int | None, seed: int, n_boosted: int) -> np.ndarray:
    """Positions, among ``n_rows`` rows given to a fit, that boosting fitted on: the
    oldest ``n_boosted`` of those :func:`rows_in_order` kept (the newer kept rows were
    held out, the rest never seen), sorted."""
    kept = rows_in_order(n_rows, max_rows, seed)
    return (np.arange(n_rows) if kept is None else kept)[:n_boosted]


class CalibratedEngagementClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """LightGBM classifier whose probabilities are calibrated on a later time slice.

    Rows must be passed in time order: the last ``calibration_fraction`` of them is
    held out of boosting and used to fit an isotonic map from raw to calibrated
    probability, so calibration is judged on data the trees never saw and that
    lies after the data they learned from, as in production.

    Parameters are LightGBM's own; ``categorical_feature`` lists column indices.
    ``hidden_columns``: columns the trees never see (set missing before boosting).
    ``offset_columns``: columns whose sum (missing counts 0) is added to each row's
    logit, the trees boosting from it (LightGBM's ``init_score``): per-HCP
    engagement effects, learned outside the trees. With an offset the
    probabilities are the model's own: an isotonic map after it would flatten
    what the effects tell HCPs apart by; the later slice still stops boosting.
    """

    def __init__(
        self,
        *,
        n_estimators: int = 200,
        learning_rate: float = 0.08,
        num_leaves: int = 31,
        min_child_samples: int = 50,
        calibration_fraction: float = 0.15,
        early_stopping_rounds: int | None = 30,
        max_rows: int | None = None,
        categorical_feature: list[int] | None = None,
        hidden_columns: list[int] | None = None,
        offset_columns: list[int] | None = None,
        n_jobs: int = 0,
        random_state: int = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.calibration_fraction = calibration_fraction
        self.early_stopping_rounds = early_stopping_rounds
        self.max_rows = max_rows
        self.categorical_feature = categorical_feature
        self.hidden_columns = hidden_columns
        self.offset_columns = offset_columns
        self.n_jobs = n_jobs
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> CalibratedEngagementClassifier:
        """Fit on ``X`` (n_rows, n_features), ``y`` (n_rows,) in 0/1, in time order."""
        if not 0.0 <= self.calibration_fraction < 1.0:
            raise ValueError(
                f"calibration_fraction must be in [0, 1), got {self.calibration_fraction}"
            )
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=np.float32)
        self.n_rows_ = len(y)
        kept = rows_in_order(len(y), self.max_rows, self.random_state)
        if kept is not None:
            X, y = X[kept], y[kept]
        self.classes_ = unique_labels(y)
        if len(self.classes_) > 2:
            raise ValueError(
                "Only binary classification is supported: engagement is 0/1, "
                f"got classes {self.classes_}"
            )
        if len(self.classes_) != 2:
            raise ValueError(
                "engagement needs both outcomes 0 and 1 in the data, "
                f"got one class: {self.classes_}"
            )
        target = (y == self.classes_[1]).astype(np.int8)
        offset = self.offset(X)
        if self.hidden_columns:
            X = X.copy()
            X[:, self.hidden_columns] = np.nan
        n_cal = int(len(y) * self.calibration_fraction)
        # A calibration slice with a single class cannot fit a map: skip it.
        if n_cal < 50 or target[-n_cal:].min() == target[-n_cal:].max():
            n_cal = 0
        n_fit = len(y) - n_cal
        self.intercept_ = 0.0
        if offset is not None:
            # LightGBM starts from the logit of the mean rate only without an
            # init_score; with one it starts from the offset alone, and the trees
            # would spend their first rounds (of a capped number) on the intercept.
            rate = float(np.clip(target[:n_fit].mean(), 1e-4, 1 - 1e-4))
            self.intercept_ = float(np.log(rate / (1.0 - rate)))
            offset = offset + self.intercept_
        params = {
            "n_estimators": self.n_estimators,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples,
            "subsample": 0.8,
            "subsample_freq": 1,
            "colsample_bytree": 0.8,
            "n_jobs": self.n_jobs,
            "random_state": self.random_state,
            "verbose": -1,
        }
        # The later slice also says when more trees stop helping: on a small data
        # set (one e-mail campaign) 200 trees would learn its noise. One number
        # chosen on the slice barely touches the calibration fitted on it.
        # LightGBM's Dask estimators drop an offset when boosting goes on from the
        # previous block: a model with one boosts in this process, cluster or not.
        with on_cluster(None) if offset is not None else contextlib.nullcontext():
            model, self.n_trees_ = fit_boosted(
                "classifier",
                params,
                X[:n_fit],
                target[:n_fit],
                validation=(
                    Validation(
                        X[n_fit:],
                        target[n_fit:],
                        init_score=None if offset is None else offset[n_fit:],
                    )
                    if n_cal
                    else None
                ),
                categorical=self.categorical_feature,
                early_stopping_rounds=self.early_stopping_rounds,
                init_score=None if offset is None else offset[:n_fit],
            )
        self.booster_ = model
        self.calibrator_: IsotonicRegression | None = None
        if n_cal and offset is None:
            raw = np.asarray(self.booster_.booster_.predict(X[n_fit:], num_iteration=self.n_trees_))
            self.calibrator_ = IsotonicRegression(out_of_bounds="clip", y_min=1e-4, y_max=1 - 1e-4)
            self.calibrator_.fit(raw, target[n_fit:])
        self.n_calibration_rows_ = n_cal
        self.n_boosted_ = n_fit
        self.attribution_ = PathAttribution(self.booster_.booster_, num_iteration=self.n_trees_)
        return self

    def offset(self, X: np.ndarray) -> np.ndarray | None:
        """Each row's logit offset, the sum of its ``offset_columns`` (missing: 0),
        ``(n_rows,)``; None without offset columns."""
        columns = getattr(self, "offset_columns", None)  # artifacts from before offsets
        if not columns:
            return None
        return np.asarray(np.nansum(X[:, columns], axis=1, dtype=np.float64))

    def boosted_rows(self) -> np.ndarray:
        """Positions of the rows given to ``fit`` that boosting fitted on, sorted; the
        others calibrated the probabilities, chose the number of trees or were left
        out by ``max_rows``."""
        check_is_fitted(self, "n_boosted_")
        return boosted_positions(self.n_rows_, self.max_rows, self.random_state, self.n_boosted_)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False  # engaged or not
        tags.input_tags.allow_nan = True
        return tags

    def predict_proba(self, X: Any) -> np.ndarray:
        """Calibrated probabilities, shape ``(n_rows, 2)``."""
        check_is_fitted(self, "booster_")
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float32)
        p = self.engage_probability(X)
        return np.column_stack([1.0 - p, p])

    def engage_probability(self, X: np.ndarray, paths: np.ndarray | None = None) -> np.ndarray:
        """P(engaged) for prepared float32 rows, shape ``(n_rows,)``; the serving hot path.

        ``paths`` (``attribution_.paths(X)``): score from those leaves, no LightGBM call.
        """
        offset = self.offset(X)
        if offset is not None:
            if paths is not None:
                logit = self.attribution_.raw(paths)
            else:
                logit = np.asarray(
                    self.booster_.booster_.predict(
                        X, num_iteration=self.n_trees_, raw_score=True, **predict_threads(len(X))
                    )
                )
            intercept = getattr(self, "intercept_", 0.0)  # artifacts from before it
            return np.asarray(1.0 / (1.0 + np.exp(-(logit + offset + intercept))))
        if paths is not None:
            # The binary objective's link: LightGBM's own predict applies the same.
            raw = 1.0 / (1.0 + np.exp(-self.attribution_.raw(paths)))
        else:
            # The Booster directly: the scikit-learn wrapper's checks cost more than
            # the prediction itself for the ~200 rows of one request.
            threads = predict_threads(len(X))
            # Artifacts from before early stopping existed use every tree.
            trees = getattr(self, "n_trees_", None)
            raw = np.asarray(self.booster_.booster_.predict(X, num_iteration=trees, **threads))
        if self.calibrator_ is None:
            return np.asarray(raw)
        # The isotonic map is piecewise linear between its thresholds and clipped
        # beyond them (out_of_bounds="clip"): exactly np.interp, without the input
        # validation that costs sklearn's predict more than the map itself.
        cal = self.calibrator_
        return np.interp(raw, cal.X_thresholds_, cal.y_thresholds_)

    def predict(self, X: Any) -> np.ndarray:
        """Engaged (the positive class) when calibrated P(engaged) >= 0.5, shape ``(n_rows,)``."""
        check_is_fitted(self, "booster_")
        return np.asarray(self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)])

    def contributions(self, X: np.ndarray, paths: np.ndarray | None = None) -> np.ndarray:
        """Per-feature contributions to the raw (logit) score, shape ``(n_rows, n_features)``.

        Path attributions precomputed at fit time (see :mod:`nextbest.learning.attribution`);
        ``paths`` as for :meth:`engage_probability`.
        """
        out = self.attribution_.contributions(X, paths)
        columns = getattr(self, "offset_columns", None)
        if columns:
            # The offset's parts are the logit's too, each its own column's.
            out = out.copy()
            out[:, columns] += np.nan_to_num(X[:, columns])
        return out
