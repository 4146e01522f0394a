"""Preference model: calibrated P(engaged | HCP, action, history)."""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.isotonic import IsotonicRegression
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import check_is_fitted, validate_data


class CalibratedEngagementClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """LightGBM classifier whose probabilities are calibrated on a later time slice.

    Rows must be passed in time order: the last ``calibration_fraction`` of them is
    held out of boosting and used to fit an isotonic map from raw to calibrated
    probability, so calibration is judged on data the trees never saw and that
    lies after the data they learned from, as in production.

    Parameters are LightGBM's own; ``categorical_feature`` lists column indices.
    """

    def __init__(
        self,
        *,
        n_estimators: int = 200,
        learning_rate: float = 0.08,
        num_leaves: int = 31,
        min_child_samples: int = 50,
        calibration_fraction: float = 0.15,
        categorical_feature: list[int] | None = None,
        n_jobs: int = 0,
        random_state: int = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.calibration_fraction = calibration_fraction
        self.categorical_feature = categorical_feature
        self.n_jobs = n_jobs
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> CalibratedEngagementClassifier:
        """Fit on ``X`` (n_rows, n_features), ``y`` (n_rows,) in 0/1, in time order."""
        if not 0.0 <= self.calibration_fraction < 1.0:
            raise ValueError(
                f"calibration_fraction must be in [0, 1), got {self.calibration_fraction}"
            )
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=np.float32)
        self.classes_ = unique_labels(y)
        if len(self.classes_) != 2:
            raise ValueError(
                f"engagement needs both outcomes 0 and 1 in the data, got {self.classes_}"
            )
        target = (y == self.classes_[1]).astype(np.int8)
        n_cal = int(len(y) * self.calibration_fraction)
        # A calibration slice with a single class cannot fit a map: skip it.
        if n_cal < 50 or target[-n_cal:].min() == target[-n_cal:].max():
            n_cal = 0
        n_fit = len(y) - n_cal
        self.booster_ = lgb.LGBMClassifier(
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_child_samples=self.min_child_samples,
            subsample=0.8,
            subsample_freq=1,
            colsample_bytree=0.8,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
            verbose=-1,
        ).fit(X[:n_fit], target[:n_fit], categorical_feature=self.categorical_feature or "auto")
        self.calibrator_: IsotonicRegression | None = None
        if n_cal:
            raw = np.asarray(self.booster_.booster_.predict(X[n_fit:]))
            self.calibrator_ = IsotonicRegression(out_of_bounds="clip", y_min=1e-4, y_max=1 - 1e-4)
            self.calibrator_.fit(raw, target[n_fit:])
        self.n_calibration_rows_ = n_cal
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Calibrated probabilities, shape ``(n_rows, 2)``."""
        check_is_fitted(self, "booster_")
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float32)
        p = self.engage_probability(X)
        return np.column_stack([1.0 - p, p])

    def engage_probability(self, X: np.ndarray) -> np.ndarray:
        """P(engaged) for prepared float32 rows, shape ``(n_rows,)``; the serving hot path."""
        # The Booster directly: the scikit-learn wrapper's checks cost more than
        # the prediction itself for the ~200 rows of one request.
        raw = np.asarray(self.booster_.booster_.predict(X))
        if self.calibrator_ is None:
            return np.asarray(raw)
        return np.asarray(self.calibrator_.predict(raw))

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)])

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """LightGBM's per-feature contributions to the raw score, shape ``(n_rows, n_features)``."""
        contrib = self.booster_.booster_.predict(X, pred_contrib=True)
        return np.asarray(contrib)[:, :-1]
