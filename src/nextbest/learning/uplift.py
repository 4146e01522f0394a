"""Uplift model: expected incremental outcome of an action versus no touch."""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data


def _regressor(
    n_estimators: int, learning_rate: float, num_leaves: int, seed: int
) -> lgb.LGBMRegressor:
    return lgb.LGBMRegressor(
        n_estimators=n_estimators,
        learning_rate=learning_rate,
        num_leaves=num_leaves,
        min_child_samples=100,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.8,
        n_jobs=0,
        random_state=seed,
        verbose=-1,
    )


class ResidualUpliftRegressor(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Multi-action uplift by regressing treated outcomes on a no-touch baseline.

    Stage 1 fits ``mu0(x)``, the outcome without a touch, on control rows (the
    randomized holdout and other no-touch decisions) using only the first
    ``n_control_features`` columns (HCP attributes and history). Stage 2 fits
    ``tau(x, a)`` on treated rows to the imputed effect ``y - mu0(x)`` with the
    action's attributes as features, so one model covers every action. This is
    the treated-side stage of the X-learner (Kuenzel et al., 2019, PNAS 116(10)),
    extended to many actions through action features; rows are weighted by the
    inverse of the logged propensity (clipped) so the logging policy's preference
    for some HCPs does not decide what the model learns best.

    ``predict(X)`` returns ``tau``, shape ``(n_rows,)``, in outcome units.
    """

    def __init__(
        self,
        *,
        n_control_features: int,
        categorical_feature: list[int] | None = None,
        n_estimators: int = 300,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        max_weight: float = 20.0,
        random_state: int = 0,
    ) -> None:
        self.n_control_features = n_control_features
        self.categorical_feature = categorical_feature
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.max_weight = max_weight
        self.random_state = random_state

    def fit(
        self,
        X: Any,
        y: Any,
        *,
        treated: Any,
        propensity: Any | None = None,
    ) -> ResidualUpliftRegressor:
        """Fit on rows ``X`` (n, n_features) with outcomes ``y`` (n,).

        ``treated`` (n,) is True where an action was taken; control rows' action
        columns are ignored. ``propensity`` (n,) is the logged probability of what
        was done (NaN or None: unweighted).
        """
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=np.float32)
        treated = np.asarray(treated, dtype=bool)
        if treated.shape != y.shape:
            raise ValueError(f"treated has shape {treated.shape}, expected {y.shape}")
        if not 0 < self.n_control_features <= X.shape[1]:
            raise ValueError(
                f"n_control_features={self.n_control_features} is outside 1..{X.shape[1]}"
            )
        if treated.all() or not treated.any():
            raise ValueError("uplift needs both treated and no-touch rows")
        weight = np.ones(len(y))
        if propensity is not None:
            p = np.asarray(propensity, dtype=np.float64)
            weight = np.where(
                np.isfinite(p) & (p > 0),
                np.minimum(1.0 / np.where(p > 0, p, 1), self.max_weight),
                1.0,
            )

        k = self.n_control_features
        control_cats = [c for c in (self.categorical_feature or []) if c < k]
        self.control_ = _regressor(
            self.n_estimators, self.learning_rate, self.num_leaves, self.random_state
        )
        self.control_.fit(
            X[~treated, :k],
            y[~treated],
            sample_weight=weight[~treated],
            categorical_feature=control_cats or "auto",
        )
        imputed = y[treated] - self.control_.predict(X[treated, :k])
        self.effect_ = _regressor(
            self.n_estimators, self.learning_rate, self.num_leaves, self.random_state
        )
        self.effect_.fit(
            X[treated],
            imputed,
            sample_weight=weight[treated],
            categorical_feature=self.categorical_feature or "auto",
        )
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Expected incremental outcome of each row's action versus no touch, shape ``(n,)``."""
        check_is_fitted(self, "effect_")
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float32)
        return self.uplift(X)

    def uplift(self, X: np.ndarray) -> np.ndarray:
        """``predict`` without input checks, for prepared float32 rows (serving hot path)."""
        return np.asarray(self.effect_.predict(X))

    def baseline(self, X: np.ndarray) -> np.ndarray:
        """Expected outcome without a touch, from the control columns of ``X``."""
        return np.asarray(self.control_.predict(X[:, : self.n_control_features]))

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Per-feature contributions to the uplift, shape ``(n_rows, n_features)``."""
        return np.asarray(self.effect_.booster_.predict(X, pred_contrib=True))[:, :-1]
