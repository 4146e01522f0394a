"""Preference model: calibrated P(engaged | HCP, action, history)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
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


# The linear base: ridge penalty on each standardized coefficient (a prior of
# variance 1: a few hundred rows of a cell settle its coefficient, fewer are
# pulled towards 0), the Newton steps' stopping size, and their most.
LINEAR_PENALTY = 1.0
LINEAR_INTERCEPT_PENALTY = 1e-4
LINEAR_TOLERANCE = 1e-6
LINEAR_MAX_STEPS = 30
LINEAR_MAX_HALVINGS = 30
LINEAR_MAX_LOGIT = 35.0  # P(engaged) within 1e-15 of 0 or 1: its weight is 0 anyway
# A standardized numeric attribute farther out than this counts as this far (an
# outlier of a skewed column, a revenue, does not tilt a straight line).
LINEAR_CLIP = 5.0


class LinearBase:
    """A logistic model of HCP attributes crossed with action attributes, the trees'
    starting point.

    Engagement is much like a sum on the logit scale: the channel an HCP prefers
    follows its age and setting, the topics it reads its specialty, and each
    touch on a channel in the last weeks tires it of that channel. Trees find
    such an interaction only as a staircase of splits, each on the rows one leaf
    holds, so a noisy 0/1 outcome leaves most of it unfound. Here every product
    of a *left* column (a constant, each numeric HCP attribute standardized, each
    level of a categorical one, the row's recent touches on its channel) with a
    *right* one (a constant, each level of the action's channel, topic and
    content type) gets a coefficient, fitted by ridge-penalized Newton steps, and
    the trees boost from its logit: they learn what it leaves.

    ``terms``: column indices of a model row, ``left_numeric`` and
    ``left_categorical`` / ``right_categorical`` (``[column, levels]`` pairs, codes
    0..levels-1, anything else missing). Every action is one pattern of right
    codes, so the Newton system is summed per pattern (``L' W L`` of its rows
    crossed with its right indicator), not over a design of rows x terms.
    """

    def __init__(self, terms: dict[str, Any]) -> None:
        self.left_numeric = [int(c) for c in terms.get("left_numeric", [])]
        self.left_categorical = [(int(c), int(k)) for c, k in terms.get("left_categorical", [])]
        self.right_categorical = [(int(c), int(k)) for c, k in terms.get("right_categorical", [])]
        self.mean_ = np.zeros(len(self.left_numeric))
        self.scale_ = np.ones(len(self.left_numeric))
        self.n_left = 1 + len(self.left_numeric) + sum(k for _, k in self.left_categorical)
        self.n_right = 1 + sum(k for _, k in self.right_categorical)
        # The coefficients with a last row and column of zeros: where the indicators
        # of a missing or unknown code point, so that no row needs a mask.
        self.padded_ = np.zeros((self.n_left + 1, self.n_right + 1))
        self._left = _Categorical.of(self.left_categorical, 1 + len(self.left_numeric))
        self._right = _Categorical.of(self.right_categorical, 1)
        # The model column each non-constant left and right term is credited to in
        # :meth:`contributions` (a categorical column once per level).
        self._left_source = np.array(
            [*self.left_numeric, *(c for c, k in self.left_categorical for _ in range(k))],
            dtype=np.int64,
        )
        self._right_source = np.array(
            [c for c, k in self.right_categorical for _ in range(k)], dtype=np.int64
        )

    @property
    def coef_(self) -> np.ndarray:
        """``(n_left, n_right)``: the coefficient of each left x right product."""
        return self.padded_[:-1, :-1]

    def left(self, X: np.ndarray) -> np.ndarray:
        """``(n, n_left + 1)``: 1, the standardized numeric columns (missing: 0), the
        categorical ones' indicators, a last column for missing codes."""
        out = np.zeros((len(X), self.n_left + 1))
        out[:, 0] = 1.0
        numeric = self._numeric_index()
        if len(numeric):
            # Written in place, a NumPy call each: a request scores a few dozen rows,
            # where each call's overhead costs more than its arithmetic.
            values = out[:, 1 : 1 + len(numeric)]
            np.subtract(X.take(numeric, axis=1), self.mean_, out=values)
            np.divide(values, self.scale_, out=values)
            values[np.isnan(values)] = 0.0  # missing; an infinity is clipped to its bound
            np.maximum(values, -LINEAR_CLIP, out=values)
            np.minimum(values, LINEAR_CLIP, out=values)
        self._left.set(X, out)
        return out

    def _numeric_index(self) -> np.ndarray:
        """``left_numeric`` as an index array, made once (models pickled before it
        lack it)."""
        found: np.ndarray | None = self.__dict__.get("_numeric")
        if found is None:
            found = self._numeric = np.array(self.left_numeric, dtype=np.int64)
        return found

    def right(self, X: np.ndarray) -> np.ndarray:
        """``(n, n_right + 1)``: 1, each right column's indicators, missing codes' column."""
        out = np.zeros((len(X), self.n_right + 1))
        out[:, 0] = 1.0
        self._right.set(X, out)
        return out

    def fit(self, X: np.ndarray, y: np.ndarray, offset: np.ndarray | None) -> LinearBase:
        """Fit on rows ``X``, 0/1 ``y``, each row's logit ``offset`` (None: 0)."""
        if self.left_numeric and len(X):
            values = X[:, self.left_numeric].astype(np.float64)
            self.mean_ = np.nan_to_num(np.nanmean(values, axis=0))
            spread = np.nan_to_num(np.nanstd(values, axis=0))
            self.scale_ = np.where(spread > 0, spread, 1.0)
        left, right = self.left(X)[:, :-1], self.right(X)[:, :-1]
        # Rows by pattern of right columns (an action): the system's sums per pattern.
        key = right @ (2.0 ** np.arange(self.n_right))
        _, first, which = np.unique(key, return_index=True, return_inverse=True)
        patterns = right[first]
        order = np.argsort(which, kind="stable")
        starts = np.searchsorted(which[order], np.arange(len(patterns) + 1))
        left, y, which = left[order], y[order].astype(np.float64), which[order]
        base = np.zeros(len(y)) if offset is None else offset[order].astype(np.float64)
        crossed = np.einsum("pa,pb->pab", patterns, patterns)  # (P, R, R)
        size = self.n_left * self.n_right
        penalty = np.full(size, LINEAR_PENALTY)
        # The intercept is barely pulled towards 0: enough to keep the system
        # solvable where every fitted row has one outcome.
        penalty[0] = LINEAR_INTERCEPT_PENALTY

        def objective(coef: np.ndarray) -> tuple[float, np.ndarray]:
            """The penalized log-likelihood at ``coef`` and each row's logit."""
            per_left = (patterns @ coef.reshape(self.n_left, self.n_right).T)[which]
            logit = base + np.einsum("nl,nl->n", left, per_left)
            value = float((y * logit - np.logaddexp(0.0, logit)).sum())
            return value - 0.5 * float((penalty * coef * coef).sum()), logit

        coef = np.zeros(size)
        value, logit = objective(coef)
        for _ in range(LINEAR_MAX_STEPS):
            p = 1.0 / (1.0 + np.exp(-np.clip(logit, -LINEAR_MAX_LOGIT, LINEAR_MAX_LOGIT)))
            residual, weight = y - p, p * (1.0 - p)
            gradient = np.zeros((self.n_left, self.n_right))
            hessian = np.zeros((self.n_left, self.n_right, self.n_left, self.n_right))
            for j, pattern in enumerate(patterns):
                part = left[starts[j] : starts[j + 1]]
                gradient += np.outer(part.T @ residual[starts[j] : starts[j + 1]], pattern)
                inner = (part * weight[starts[j] : starts[j + 1], None]).T @ part
                hessian += np.einsum("fg,ab->fagb", inner, crossed[j])
            step = np.linalg.solve(
                hessian.reshape(size, size) + np.diag(penalty),
                gradient.ravel() - penalty * coef,
            )
            # Halved until the penalized likelihood does not fall: a full Newton
            # step overshoots where the outcome is nearly one-sided.
            for _ in range(LINEAR_MAX_HALVINGS):
                tried, tried_logit = objective(coef + step)
                if tried >= value:
                    break
                step = step / 2
            else:
                break
            coef, value, logit = coef + step, tried, tried_logit
            if np.abs(step).max() < LINEAR_TOLERANCE:
                break
        self.padded_[:-1, :-1] = coef.reshape(self.n_left, self.n_right)
        return self

    def logit(self, X: np.ndarray) -> np.ndarray:
        """The base's logit of each row, ``(n,)`` (no offset)."""
        return np.einsum("nl,nl->n", self.left(X), self._by_right(X))

    def _by_right(self, X: np.ndarray) -> np.ndarray:
        """``(n, n_left + 1)``: each row's coefficients summed over its right terms.

        Added term by term in one order, as a gather: a matrix product's rounding
        depends on how many rows it is given (BLAS kernels block them by size), and a
        row must score the same alone, in a batch or in a cache's warm-up.
        """
        by_right = self.padded_.T  # (n_right + 1, n_left + 1); the last row is zeros
        out = np.repeat(by_right[:1], len(X), axis=0)
        for slot in self._right.slots(X).T:
            out += by_right[slot]
        return out

    def contributions(self, X: np.ndarray, n_features: int) -> np.ndarray:
        """The logit's parts by column, ``(n, n_features)``: a product's to its left
        column (its right one's when the left is the constant); the intercept to none."""
        out = np.zeros((len(X), n_features))
        left, right = self.left(X)[:, :-1], self.right(X)[:, :-1]
        by_left = left * self._by_right(X)[:, :-1]  # (n, L): each left column's terms
        by_right = right * self.coef_[0][None, :]
        # Summed into their model columns at once (several levels share a column);
        # ``out.T`` is a view, written through.
        np.add.at(out.T, self._left_source, by_left[:, 1:].T)
        np.add.at(out.T, self._right_source, by_right[:, 1:].T)
        return out


@dataclass(frozen=True)
class _Categorical:
    """Categorical columns whose indicators follow each other from column ``start``."""

    index: np.ndarray  # the columns of a row
    levels: np.ndarray  # how many codes each has
    offsets: np.ndarray  # where each one's indicators start

    @classmethod
    def of(cls, columns: list[tuple[int, int]], start: int) -> _Categorical:
        levels = np.array([k for _, k in columns], dtype=np.int64)
        offsets = start + np.concatenate([[0], np.cumsum(levels)[:-1]]).astype(np.int64)
        return cls(
            np.array([c for c, _ in columns], dtype=np.int64), levels, offsets[: len(levels)]
        )

    def slots(self, X: np.ndarray) -> np.ndarray:
        """``(n, columns)``: where each row's indicator of each column's code sits; -1
        (the last column) for a missing or unknown code (not one of ``0 .. levels - 1``)."""
        return self._slots(X, -1)

    def _slots(self, X: np.ndarray, missing: int) -> np.ndarray:
        codes = X.take(self.index, axis=1)
        known = (codes >= 0) & (codes < self.levels)  # NaN compares False
        slots = np.where(known, codes, 0).astype(np.int64)
        slots += self.offsets
        np.copyto(slots, missing, where=~known)
        return slots

    def set(self, X: np.ndarray, out: np.ndarray) -> None:
        """Set each row's indicator of each column's code in ``out`` to 1 (see ``slots``)."""
        if not len(self.index):
            return
        width = out.shape[1]
        if not out.flags.c_contiguous:
            out[np.arange(len(X))[:, None], self._slots(X, -1)] = 1.0
            return
        # Flat positions in ``out``: one index array, not a row and a column one.
        flat = self._slots(X, width - 1)
        flat += np.arange(0, len(X) * width, width)[:, None]
        out.reshape(-1)[flat.reshape(-1)] = 1.0


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
        linear_terms: dict[str, Any] | None = None,
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
        self.linear_terms = linear_terms
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
        n_cal = int(len(y) * self.calibration_fraction)
        # A calibration slice with a single class cannot fit a map: skip it.
        if n_cal < 50 or target[-n_cal:].min() == target[-n_cal:].max():
            n_cal = 0
        n_fit = len(y) - n_cal
        self.linear_: LinearBase | None = None
        base: np.ndarray | None = None
        if self.linear_terms:
            self.linear_ = LinearBase(self.linear_terms).fit(
                X[:n_fit], target[:n_fit], None if offset is None else offset[:n_fit]
            )
            base = self.linear_.logit(X)
        if self.hidden_columns:
            X = X.copy()
            X[:, self.hidden_columns] = np.nan
        self.intercept_ = 0.0
        if offset is not None and base is None:
            # LightGBM starts from the logit of the mean rate only without an
            # init_score; with one it starts from the offset alone, and the trees
            # would spend their first rounds (of a capped number) on the intercept.
            rate = float(np.clip(target[:n_fit].mean(), 1e-4, 1 - 1e-4))
            self.intercept_ = float(np.log(rate / (1.0 - rate)))
            offset = offset + self.intercept_
        init = base if offset is None else offset if base is None else offset + base
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
        with on_cluster(None) if init is not None else contextlib.nullcontext():
            model, self.n_trees_ = fit_boosted(
                "classifier",
                params,
                X[:n_fit],
                target[:n_fit],
                validation=(
                    Validation(
                        X[n_fit:],
                        target[n_fit:],
                        init_score=None if init is None else init[n_fit:],
                    )
                    if n_cal
                    else None
                ),
                categorical=self.categorical_feature,
                early_stopping_rounds=self.early_stopping_rounds,
                init_score=None if init is None else init[:n_fit],
            )
        self.booster_ = model
        self.calibrator_: IsotonicRegression | None = None
        if n_cal and offset is None:
            trees = np.asarray(
                self.booster_.booster_.predict(
                    X[n_fit:], num_iteration=self.n_trees_, raw_score=True
                )
            )
            logit = trees if base is None else trees + base[n_fit:]
            raw = 1.0 / (1.0 + np.exp(-logit))
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
        linear = getattr(self, "linear_", None)  # artifacts from before the linear base
        if linear is not None:
            from_trees = (
                self.attribution_.raw(paths)
                if paths is not None
                else np.asarray(
                    self.booster_.booster_.predict(
                        X, num_iteration=self.n_trees_, raw_score=True, **predict_threads(len(X))
                    )
                )
            )
            logit = from_trees + linear.logit(X) + (0.0 if offset is None else offset)
            p = 1.0 / (1.0 + np.exp(-logit))
            cal = self.calibrator_
            return p if cal is None else np.interp(p, cal.X_thresholds_, cal.y_thresholds_)
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
        linear = getattr(self, "linear_", None)
        if linear is not None:
            # The base's parts are the logit's too, each its own column's.
            out = out + linear.contributions(X, out.shape[1])
        columns = getattr(self, "offset_columns", None)
        if columns:
            # The offset's parts are the logit's too, each its own column's.
            out = out.copy()
            out[:, columns] += np.nan_to_num(X[:, columns])
        return out
