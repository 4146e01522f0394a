"""Uplift model: expected incremental outcome of an action versus no touch.

The learner is a multi-action X-learner (Kuenzel, Sekhon, Bickel & Yu, 2019,
PNAS 116(10)) whose treated-side stage is split by engagement:

    mu0(x)      = E[y | x, no touch]                      (control rows)
    g_e(x, a)   = E[y - mu0(x) | x, action a, engaged = e]  (treated rows, e = 0 / 1)
    tau(x, a)   = p(x, a) g_1(x, a) + (1 - p(x, a)) g_0(x, a)

where ``p(x, a)`` is the calibrated engagement probability. By the law of total
probability ``tau`` is exactly ``E[y | x, a] - mu0(x)``, the incremental outcome,
whatever engagement means; the split only moves variance. Engagement is a
high-signal 0/1 outcome learned from every touch, while the outcome (new
prescriptions) is a noisy count; letting ``p`` carry "will they engage" leaves
the outcome stages to learn only "what is it worth when they do", a far
smoother function (persuadability, need for the topic, channel strength). On
data where an unengaged touch changes nothing (an unopened e-mail), ``g_0``
is close to 0 and early stopping keeps it nearly constant. ``g_0`` is learned
from the HCP's columns alone: whatever it holds beyond noise (an error of
``mu0`` on the treated HCPs, or on Hillstrom ``-mu0`` itself) is the HCP's,
while trees free to split on the action fit per-action noise that decides
between an HCP's actions (docs/learning.md, section 3).

Bias of the logging policy: control and treated rows are weighted by the inverse
of their logged propensity (clipped at ``max_weight``), so HCPs the traditional
policy rarely left alone (high deciles) still count in ``mu0``, and rarely chosen
actions still count in ``g``. The randomized holdout is part of the control rows
and guarantees every HCP type has some.

Heterogeneity is calibrated on held-out rows, the newest treated rows that no
model of ``tau`` boosted on: the predicted differences between HCPs for one
action are shrunk towards the action's mean by the slope of the held-out imputed
effects on them (see ``_calibrate``), so a model that learned noise does not
personalise on it.

Why not a DR- or R-learner (Kennedy, 2023, EJS 17(2); Nie & Wager, 2021,
Biometrika 108(2)): their pseudo-outcomes divide residuals by propensities that
are as small as 0.0025 for 40 actions, which on Poisson prescription counts gives
targets with a standard deviation hundreds of times the effect. docs/learning.md
has the comparison.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils.validation import check_is_fitted, validate_data

from nextbest.learning.attribution import JoinedPaths, PathAttribution, predict_threads
from nextbest.learning.boosting import Validation, fit_boosted
from nextbest.learning.preference import (
    CalibratedEngagementClassifier,
    boosted_positions,
    rows_in_order,
)

# Fewer rows than this in an engagement stratum and the split is not worth it.
MIN_STRATUM_ROWS = 200
# Fewest held-out treated rows to calibrate heterogeneity on, and per action to trust its mean.
MIN_CALIBRATION_ROWS = 500
MIN_ROWS_PER_ACTION_MEAN = 30
# A stage's leaves hold at most 1/50 (2%) of its rows, whatever min_child_samples says.
MIN_LEAF_SHARE_INVERSE = 50
# Leaves of the unengaged stage that sharing them between an HCP's rows must spare
# before its paths are asked for in a LightGBM call of their own: twice what the call
# costs (measured on a 2-core AMD EPYC: 27 us for the call, 8-10 ns a leaf walked).
SEPARATE_CALL_LEAVES = 8192


class Paths(NamedTuple):
    """The leaves some rows reach in each model of the uplift (``attribution_.paths``).

    ``unengaged_of`` (n,): each row's entry in ``unengaged``, when rows of one HCP
    share the leaves of the unengaged stage, which reads the HCP's columns alone
    (:meth:`EngagementStratifiedUplift.paths`); None: one entry per row, in order.
    """

    engagement: np.ndarray
    engaged: np.ndarray
    unengaged: np.ndarray
    unengaged_of: np.ndarray | None = None

    def take(self, index: np.ndarray) -> Paths:
        """The paths of the rows at ``index``."""
        if self.unengaged_of is None:
            return Paths(self.engagement[index], self.engaged[index], self.unengaged[index])
        # Only the shared entries the taken rows use: reasons read every entry kept.
        used, of = np.unique(self.unengaged_of[index], return_inverse=True)
        return Paths(self.engagement[index], self.engaged[index], self.unengaged[used], of)

    def unengaged_rows(self, X: np.ndarray) -> np.ndarray:
        """The rows of ``X`` (these paths') that ``unengaged``'s entries are, in order."""
        if self.unengaged_of is None:
            return X
        _, first = np.unique(self.unengaged_of, return_index=True)  # each entry's first row
        return X[first]


class RowTerms(NamedTuple):
    """What the uplift of some rows was weighed by, per row, from their action and
    segment (:meth:`EngagementStratifiedUplift.uplift_parts`); kept so that
    :meth:`~EngagementStratifiedUplift.contributions` of the same rows need not
    work them out again.

    ``scale``: the engaged gain's scale ``(n,)`` (1.0: no scaling); ``centre``: the
    mean uplift of the row's action it is shrunk towards ``(n,)`` (NaN: not shrunk;
    None: no row is).
    """

    scale: np.ndarray | float
    centre: np.ndarray | None

    def take(self, index: np.ndarray) -> RowTerms:
        """The terms of the rows at ``index``."""
        scale = self.scale if np.ndim(self.scale) == 0 else self.scale[index]  # type: ignore[index]
        return RowTerms(scale, None if self.centre is None else self.centre[index])


class UpliftParts(NamedTuple):
    """:meth:`EngagementStratifiedUplift.uplift_parts`: ``uplift`` ``(n,)``, the gains
    ``(g_1, g_0)`` and the rows' :class:`RowTerms`."""

    uplift: np.ndarray
    gains: tuple[np.ndarray, np.ndarray]
    terms: RowTerms


class BoostedStage:
    """One LightGBM regression stage with early stopping on its newest rows.

    Rows are expected in time order: the last ``validation_fraction`` of them are
    kept out of boosting and decide how many trees to keep (at most
    ``n_estimators``), so a stage fitted to mostly noise stays small and flat.
    """

    def __init__(
        self,
        *,
        n_estimators: int,
        learning_rate: float,
        num_leaves: int,
        min_child_samples: int,
        validation_fraction: float,
        early_stopping_rounds: int,
        random_state: int,
        max_rows: int | None = None,
    ) -> None:
        self.params: dict[str, Any] = {
            "n_estimators": n_estimators,
            "learning_rate": learning_rate,
            "num_leaves": num_leaves,
            "min_child_samples": min_child_samples,
            "subsample": 0.8,
            "subsample_freq": 1,
            "colsample_bytree": 0.8,
            "n_jobs": 0,
            "random_state": random_state,
            "verbose": -1,
        }
        self.validation_fraction = validation_fraction
        self.early_stopping_rounds = early_stopping_rounds
        self.max_rows = max_rows

    def fit(
        self, X: np.ndarray, y: np.ndarray, weight: np.ndarray, categorical: list[int]
    ) -> BoostedStage:
        self.n_rows_ = len(y)
        kept = rows_in_order(len(y), self.max_rows, int(self.params["random_state"]))
        if kept is not None:
            X, y, weight = X[kept], y[kept], weight[kept]
        n_valid = int(len(y) * self.validation_fraction)
        params = dict(self.params)
        # A leaf size meant for a large data set would leave a small one unsplit.
        params["min_child_samples"] = max(
            1, min(int(params["min_child_samples"]), len(y) // MIN_LEAF_SHARE_INVERSE)
        )
        n_fit = len(y) - n_valid
        stopping = n_valid >= 100 and n_fit >= 100
        model, self.n_trees_ = fit_boosted(
            "regressor",
            params,
            X[:n_fit] if stopping else X,
            y[:n_fit] if stopping else y,
            weight=weight[:n_fit] if stopping else weight,
            validation=Validation(X[n_fit:], y[n_fit:], weight[n_fit:]) if stopping else None,
            categorical=categorical,
            early_stopping_rounds=self.early_stopping_rounds,
        )
        self.n_boosted_ = n_fit if stopping else len(y)
        self.booster_ = model.booster_
        self.attribution_ = PathAttribution(self.booster_, num_iteration=self.n_trees_)
        return self

    def boosted_rows(self) -> np.ndarray:
        """Positions of the rows given to ``fit`` that boosting fitted on, sorted; the
        others only chose the number of trees or were left out by ``max_rows``."""
        seed = int(self.params["random_state"])
        return boosted_positions(self.n_rows_, self.max_rows, seed, self.n_boosted_)

    def predict(self, X: np.ndarray, paths: np.ndarray | None = None) -> np.ndarray:
        """Predictions for rows ``X``; from their leaves if given ``attribution_.paths(X)``."""
        if paths is not None:
            return self.attribution_.raw(paths)
        threads = predict_threads(len(X))
        return np.asarray(self.booster_.predict(X, num_iteration=self.n_trees_, **threads))


class EngagementStratifiedUplift(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Multi-action uplift ``tau(x, a)`` (outcome units) versus no touch; see the module doc.

    One model covers every action: rows carry the action's attributes and the
    HCP's history on the action's own channel and topic. Columns
    ``[0, n_control_features)`` describe the HCP only and are all that ``mu0`` and
    the unengaged stage ``g_0`` see.

    Parameters are LightGBM's (shared by the outcome stages) plus
    ``engagement``: an unfitted engagement classifier with ``engage_probability``
    (default :class:`CalibratedEngagementClassifier`), cloned and fitted on the
    treated rows; the fitted one is ``engagement_``.
    """

    def __init__(
        self,
        *,
        n_control_features: int = 1,
        categorical_feature: list[int] | None = None,
        n_estimators: int = 1500,
        learning_rate: float = 0.03,
        num_leaves: int = 7,
        min_child_samples: int = 800,
        max_weight: float = 20.0,
        variance_weighting: bool = True,
        action_column: int | None = None,
        segment_columns: list[int] | None = None,
        validation_fraction: float = 0.15,
        early_stopping_rounds: int = 30,
        engagement: CalibratedEngagementClassifier | None = None,
        max_rows_per_stage: int | None = None,
        calibrate_heterogeneity: bool = True,
        engagement_only_columns: list[int] | None = None,
        random_state: int = 0,
    ) -> None:
        self.n_control_features = n_control_features
        self.categorical_feature = categorical_feature
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.max_weight = max_weight
        self.variance_weighting = variance_weighting
        self.action_column = action_column
        self.segment_columns = segment_columns
        self.validation_fraction = validation_fraction
        self.early_stopping_rounds = early_stopping_rounds
        self.engagement = engagement
        self.max_rows_per_stage = max_rows_per_stage
        self.calibrate_heterogeneity = calibrate_heterogeneity
        self.engagement_only_columns = engagement_only_columns
        self.random_state = random_state

    def _stage(self) -> BoostedStage:
        return BoostedStage(
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_child_samples=self.min_child_samples,
            validation_fraction=self.validation_fraction,
            early_stopping_rounds=self.early_stopping_rounds,
            random_state=self.random_state,
            max_rows=self.max_rows_per_stage,
        )

    def fit(
        self,
        X: Any,
        y: Any,
        *,
        treated: Any,
        engaged: Any,
        propensity: Any | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> EngagementStratifiedUplift:
        """Fit on rows ``X`` (n, n_features) in time order, outcomes ``y`` (n,).

        ``treated`` (n,) is True where an action was taken (control rows' action
        columns are ignored); ``engaged`` (n,) 0/1 says whether the touch engaged;
        ``propensity`` (n,) is the logged probability of what was done (NaN or
        None: unweighted). ``progress`` is told which model is fitted as each starts.
        """
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", dtype=np.float32)
        y = np.asarray(y, dtype=np.float64)
        treated = np.asarray(treated, dtype=bool)
        engaged = np.asarray(engaged).astype(np.int8)
        for name, arr in (("treated", treated), ("engaged", engaged)):
            if arr.shape != y.shape:
                raise ValueError(f"{name} has shape {arr.shape}, expected {y.shape}")
        if not 0 < self.n_control_features <= X.shape[1]:
            raise ValueError(
                f"n_control_features={self.n_control_features} is outside 1..{X.shape[1]}"
            )
        if treated.all() or not treated.any():
            raise ValueError("uplift needs both treated and no-touch rows")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(
                f"validation_fraction must be in [0, 1), got {self.validation_fraction}"
            )
        weight = _inverse_propensity(propensity, len(y), self.max_weight)
        say = progress or (lambda _doing: None)

        say("engagement")
        engagement = clone(self.engagement) if self.engagement is not None else None
        if engagement is None:
            engagement = CalibratedEngagementClassifier(
                categorical_feature=self.categorical_feature, random_state=self.random_state
            )
        self.engagement_ = engagement.fit(X[treated], engaged[treated])
        # Columns for the engagement model alone (its per-HCP effects): missing for the
        # control model and every outcome stage, which then never split on them,
        # whatever they hold. (Set in the stages' own copies of the rows.)
        only = list(self.engagement_only_columns or [])

        k = self.n_control_features
        cats = list(self.categorical_feature or [])
        say("uplift, outcomes without a touch")
        Xc = X[~treated, :k]
        Xc[:, [c for c in only if c < k]] = np.nan
        self.control_ = self._stage().fit(
            Xc, y[~treated], weight[~treated], [c for c in cats if c < k]
        )
        del Xc
        Xt, yt, wt, et = X[treated], y[treated], weight[treated], engaged[treated]
        full = _inverse_propensity(propensity, len(y), 1e3)[treated]
        used = self._treated_rows_used(et)
        if used is not None:
            # Only the rows the treated-side stages will fit on need mu0 and targets.
            Xt, yt, wt, et, full = Xt[used], yt[used], wt[used], et[used], full[used]
        scored = Xt[:, only].copy()  # the heterogeneity is calibrated on rows as scored
        Xt[:, only] = np.nan
        baseline = self.control_.predict(Xt[:, :k])
        imputed = yt - baseline
        if self.variance_weighting:
            # Counts are roughly Poisson: an HCP who writes 6 a week adds far more
            # noise to y - mu0 than one who writes 0.3. Weighted least squares
            # with weight 1 / variance keeps the noisy ones from deciding the splits.
            typical = max(float(np.median(np.abs(baseline))), 1e-3)
            wt = wt / np.maximum(np.abs(baseline), 0.25 * typical)
        stratified = min(int(et.sum()), int((1 - et).sum())) >= MIN_STRATUM_ROWS
        self.stratified_ = stratified
        self.action_scale_: np.ndarray | None = None
        self.segment_scale_: list[tuple[int, int, int, np.ndarray]] = []
        if stratified:
            on = et == 1
            # Population averages need the full inverse-propensity weights, not the clipped ones.
            scale = self._action_scale(Xt[on], imputed[on], full[on])
            target, stage_weight = imputed[on], wt[on]
            if scale is not None:
                scale = scale * self._segment_scale(Xt[on], target / scale, stage_weight * scale**2)
                target = target / scale
                stage_weight = stage_weight * scale**2  # the scaled target's variance shrinks
            say("uplift, effect of engaged touches")
            self.effect_engaged_ = self._stage().fit(Xt[on], target, stage_weight, cats)
            say("uplift, effect of unengaged touches")
            # What a touch adds when it did not engage, from the HCP's columns alone: the
            # action's are left missing, so no tree splits on them (see the class doc).
            # Not declared categorical: an all-missing categorical column crashes a
            # LightGBM worker of a Dask cluster.
            unengaged = Xt[~on]
            unengaged[:, k:] = np.nan
            self.effect_unengaged_ = self._stage().fit(
                unengaged, imputed[~on], wt[~on], [c for c in cats if c < k]
            )
            self.unengaged_columns_: int | None = k
            del unengaged
        else:
            # Too few rows on one side: one treated-side stage, as in the plain X-learner.
            say("uplift, effect of a touch")
            shared = self._stage().fit(Xt, imputed, wt, cats)
            self.effect_engaged_ = self.effect_unengaged_ = shared
            self.unengaged_columns_ = None
        self.heterogeneity_ = 1.0
        self.action_mean_uplift_: np.ndarray | None = None
        self.n_calibration_rows_ = 0
        if self.calibrate_heterogeneity and self.action_column is not None:
            start = self._newest_unseen(et, used, int(treated.sum()))
            self.n_calibration_rows_ = len(imputed) - start
            newest = Xt[start:].copy()
            newest[:, only] = scored[start:]
            self._calibrate(newest, imputed[start:], wt[start:])
        return self

    def _newest_unseen(self, engaged: np.ndarray, used: np.ndarray | None, n_treated: int) -> int:
        """Where the newest treated rows that no model of ``tau`` boosted on begin.

        ``engaged`` ``(m,)`` are the rows the outcome stages were given (in time
        order; ``used`` their positions among the ``n_treated`` treated rows, None
        for all). Each stage held out its own newest rows: under drift (engagement
        falling, say) the newest unengaged rows reach back less far than the newest
        engaged ones, and the newest rows overall include some a stage fitted on.
        Only rows after the last row any of them fitted on are clean. An engagement
        model without ``boosted_rows`` is taken to have boosted on none of them.
        """
        seen = np.zeros(len(engaged), dtype=bool)
        if self.stratified_:
            for e, stage in ((1, self.effect_engaged_), (0, self.effect_unengaged_)):
                seen[np.flatnonzero(engaged == e)[stage.boosted_rows()]] = True
        else:
            seen[self.effect_engaged_.boosted_rows()] = True
        boosted_rows = getattr(self.engagement_, "boosted_rows", None)
        if boosted_rows is not None:
            by_engagement = np.zeros(n_treated, dtype=bool)
            by_engagement[boosted_rows()] = True
            seen |= by_engagement if used is None else by_engagement[used]
        hits = np.flatnonzero(seen)
        return int(hits[-1]) + 1 if len(hits) else 0

    def _treated_rows_used(self, engaged: np.ndarray) -> np.ndarray | None:
        """Treated row positions the stages fit on (in time order), None for all.

        Each engagement stratum keeps at most ``max_rows_per_stage`` rows, the same
        cap a stage applies to itself; sampling before the stages spares predicting
        ``mu0`` for rows no stage would see.
        """
        if self.max_rows_per_stage is None:
            return None
        positions = [np.flatnonzero(engaged == e) for e in (0, 1)]
        picked = []
        for part in positions:
            kept = rows_in_order(len(part), self.max_rows_per_stage, self.random_state)
            picked.append(part if kept is None else part[kept])
        if sum(len(p) for p in picked) == len(engaged):
            return None
        return np.sort(np.concatenate(picked))

    def _calibrate(self, X: np.ndarray, z: np.ndarray, w: np.ndarray) -> None:
        """How much of the predicted difference between HCPs for one action is real.

        On the newest treated rows no model of ``tau`` boosted on (given here in
        time order: ``X`` ``(m, n_features)``, imputed effects ``z`` ``(m,)``, their
        weights ``w`` ``(m,)``; these rows only chose numbers of trees or calibrated
        the engagement probability), regress the imputed effect ``y - mu0`` on the
        predicted uplift, both centred within each action. The slope
        ``heterogeneity_`` (clipped to [0, 1]) says how far the per-HCP deviations
        from an action's mean are to be trusted: 1 keeps them, 0 gives every HCP
        its action's average effect. Differences between actions are untouched.
        The slope errs towards 1 (keeping differences): an error of ``mu0`` sits in
        both the target and the prediction and looks like real heterogeneity, so
        this shrinks only what is clearly noise. Below ``MIN_CALIBRATION_ROWS``
        rows nothing is calibrated: ``heterogeneity_`` stays 1 and every HCP keeps
        the uplift the stages learned.
        """
        if self.action_column is None or len(z) < MIN_CALIBRATION_ROWS:
            return
        codes = X[:, self.action_column]
        if np.isnan(codes).any():
            return
        codes = codes.astype(np.int64)
        tau = self.uplift(X)
        n_codes = int(codes.max()) + 1
        mass = np.bincount(codes, weights=w, minlength=n_codes)
        count = np.bincount(codes, minlength=n_codes)
        safe = np.maximum(mass, 1e-12)
        tau_mean = np.bincount(codes, weights=w * tau, minlength=n_codes) / safe
        z_mean = np.bincount(codes, weights=w * z, minlength=n_codes) / safe
        tc, zc = tau - tau_mean[codes], z - z_mean[codes]
        spread = float((w * tc * tc).sum())
        if spread <= 0:
            return
        self.heterogeneity_ = float(np.clip((w * tc * zc).sum() / spread, 0.0, 1.0))
        # Actions without enough rows here keep their own predictions (NaN: no shrinking).
        self.action_mean_uplift_ = np.where(count >= MIN_ROWS_PER_ACTION_MEAN, tau_mean, np.nan)

    def _action_scale(
        self, X: np.ndarray, imputed: np.ndarray, weight: np.ndarray
    ) -> np.ndarray | None:
        """Per-row scale of its action's average gain when engaged, or None (no scaling).

        Gains are close to multiplicative: how far an HCP can be moved times how
        strong the action is. Dividing each row's target by its action's
        population-average gain (inverse-propensity weighted, so a channel the
        traditional policy aims at low-gain HCPs is not judged by them) lets one
        model learn the HCP's multiplier from every channel's rows at once; a
        rarely logged (HCP type, action) pair then borrows from the common ones.
        """
        if self.action_column is None:
            return None
        codes = X[:, self.action_column]
        if np.isnan(codes).any():
            return None
        codes = codes.astype(np.int64)
        n_codes = int(codes.max()) + 1
        total = np.bincount(codes, weights=weight * imputed, minlength=n_codes)
        mass = np.bincount(codes, weights=weight, minlength=n_codes)
        count = np.bincount(codes, minlength=n_codes)
        overall = float((weight * imputed).sum() / weight.sum())
        if overall <= 0:
            return None
        # Shrink rare actions towards the overall mean (50 pseudo-rows).
        prior = 50.0 * float(weight.mean())
        per_action = (total + prior * overall) / (mass + prior)
        per_action = np.maximum(per_action, 0.1 * overall)
        per_action[count == 0] = overall
        self.action_scale_ = per_action
        return per_action[codes]

    def _segment_scale(self, X: np.ndarray, ratio: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """Per-row factor of the engaged gain shared by HCPs of one kind on one kind of action.

        ``ratio`` ``(m,)`` is each engaged row's imputed gain over its action's
        average gain, ``weight`` ``(m,)`` its precision. For each pair of a
        categorical HCP column (specialty, say) and an action column of
        ``segment_columns`` (its topic, its channel), the factor of each cell
        (cardiologists x dosing) is the weighted least-squares fit of the ratio
        left by the pairs before it, shrunk towards the pair's average by
        empirical Bayes (:func:`_shrunk`): a pair whose cells differ no more
        than their noise (region x topic on data where region does not matter)
        gets factors of about 1. The factors multiply. The stage then learns
        what is left: a cell's few hundred noisy rows decide its factor
        together, where a tree of the stage would need splits on both columns
        at once to find it. Sets ``segment_scale_``: ``(hcp column,
        action column, n_action_codes, table)``, the table indexed by
        ``hcp code * n_action_codes + action code``.
        """
        factor = np.ones(len(ratio))
        hcp_columns = [c for c in self.categorical_feature or [] if c < self.n_control_features]
        for group in self.segment_columns or []:
            for column in hcp_columns:
                known = ~np.isnan(X[:, column]) & ~np.isnan(X[:, group])
                if not known.any():
                    continue
                n_codes = int(X[known, group].max()) + 1
                n_cells = (int(X[known, column].max()) + 1) * n_codes
                cell = _cell(X[:, column], X[:, group], n_codes)
                inside = cell >= 0
                c = cell[inside]
                f, w, r = factor[inside], weight[inside], ratio[inside]
                table = _shrunk(c, n_cells, w * f, f, r)
                factor[inside] *= table[c]
                self.segment_scale_.append((column, group, n_codes, table))
        return factor

    def predict(self, X: Any) -> np.ndarray:
        """Expected incremental outcome of each row's action versus no touch, shape ``(n,)``."""
        check_is_fitted(self, "effect_engaged_")
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=np.float32)
        return self.uplift(X)

    def uplift(self, X: np.ndarray, p_engage: np.ndarray | None = None) -> np.ndarray:
        """``predict`` without input checks (serving hot path); pass ``p_engage`` if known."""
        return self.uplift_and_gains(X, p_engage)[0]

    def _path_models(self) -> list[PathAttribution]:
        """The attributions of the models of ``tau``: engagement, engaged, unengaged."""
        stages: list[Any] = [self.engagement_, self.effect_engaged_]
        if self.effect_unengaged_ is not self.effect_engaged_:
            stages.append(self.effect_unengaged_)
        return [stage.attribution_ for stage in stages]

    @property
    def n_path_trees(self) -> int:
        """Trees :meth:`paths` reports a leaf of, per row (over all its models)."""
        return sum(int(part.num_iteration) for part in self._path_models())

    def paths(self, X: np.ndarray) -> Paths:
        """The leaves rows ``X`` reach in each model of ``tau``, from one LightGBM call,
        or two when the rows of each HCP sharing the unengaged stage's leaves spares
        more than a call costs (``SEPARATE_CALL_LEAVES``): that stage reads the HCP's
        columns alone, so a request's hundred candidates of one HCP reach the same.

        Passed to :meth:`uplift_and_gains` and :meth:`contributions`, they spare
        both from calling LightGBM again.
        """
        models = self._path_models()
        trees = models[-1].num_iteration
        shared = self._unengaged_rows(X) if (len(X) - 1) * trees >= SEPARATE_CALL_LEAVES else None
        if shared is not None:
            first, of = shared
            if (len(X) - len(first)) * trees >= SEPARATE_CALL_LEAVES:
                engagement, engaged = self._joined("_joined_paths_treated", models[:2]).paths(X)
                return Paths(engagement, engaged, models[-1].paths(X[first]), of)
        engagement, engaged, *unengaged = self._joined("_joined_paths", models).paths(X)
        return Paths(engagement, engaged, unengaged[0] if unengaged else engaged)

    def _joined(self, name: str, models: list[PathAttribution]) -> JoinedPaths:
        """The joined trees of ``models``, built once per loaded model and kept as
        attribute ``name`` (not pickled: see __getstate__)."""
        joined: JoinedPaths | None = self.__dict__.get(name)
        if joined is None:
            joined = JoinedPaths(models)
            setattr(self, name, joined)
        return joined

    def _unengaged_rows(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """``(first, of)`` when neighbouring rows of ``X`` share the unengaged stage's
        inputs (as a request's or a batch's rows of one HCP do): the first row of each
        run of them and each row's run; None when none do, or when the stage reads more
        than the HCP's columns (one shared with the engaged stage, or a model trained
        before it read only those). Runs of equal bits: a row with a missing value
        still matches its neighbours."""
        k = getattr(self, "unengaged_columns_", None)
        n = len(X)
        if k is None or n < 2 or X.dtype.kind != "f":
            return None
        bits = X[:, :k].view(np.dtype(f"u{X.dtype.itemsize}"))
        starts = np.empty(n, dtype=bool)
        starts[0] = True
        np.any(bits[1:] != bits[:-1], axis=1, out=starts[1:])
        first = np.flatnonzero(starts)
        if len(first) == n:
            return None
        return first, np.cumsum(starts) - 1

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())  # a copy: the base class may return __dict__
        for cached in ("_joined_paths", "_joined_paths_treated", "_padded_tables"):
            state.pop(cached, None)
        return state

    def uplift_and_gains(
        self, X: np.ndarray, p_engage: np.ndarray | None = None, paths: Paths | None = None
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """``(uplift, (g_1, g_0))``: the gains come back for :meth:`contributions` to reuse."""
        parts = self.uplift_parts(X, p_engage, paths)
        return parts.uplift, parts.gains

    def uplift_parts(
        self, X: np.ndarray, p_engage: np.ndarray | None = None, paths: Paths | None = None
    ) -> UpliftParts:
        """The uplift of rows ``X`` with what :meth:`contributions` of the same rows can
        reuse: the gains and each row's :class:`RowTerms`."""
        if p_engage is not None:
            p = p_engage
        else:
            p = self.engagement_.engage_probability(X, None if paths is None else paths.engagement)
        terms = self._terms(X)
        g1, g0 = self._gains(X, paths, terms.scale)
        tau = np.asarray(p * g1 + (1.0 - p) * g0)
        centre = terms.centre
        if centre is not None:
            lam = self.heterogeneity_
            tau = np.where(np.isnan(centre), tau, centre + lam * (tau - centre))
        return UpliftParts(tau, (g1, g0), terms)

    def _terms(self, X: np.ndarray) -> RowTerms:
        """Each row's gain scale and shrinking centre, from one reading of its action."""
        actions = self._action_index(X)
        return RowTerms(self._scale_of(actions, X), self._action_mean(actions))

    def _action_index(self, X: np.ndarray) -> np.ndarray | None:
        """Each row's action code as an index into the per-action tables (past the end of
        each: no action), or None without an action column. Read once per scoring call,
        for every table (:func:`_per_action`)."""
        if self.action_column is None:
            return None
        codes = X[:, self.action_column]
        return np.where(codes >= 0, codes, _NO_ACTION).astype(np.int64)  # NaN >= 0 is False

    def _action_mean(self, actions: np.ndarray | None) -> np.ndarray | None:
        """Per row, its action's mean uplift to shrink towards (NaN: keep), or None."""
        means = self._tables().mean
        if means is None or actions is None or self.heterogeneity_ >= 1.0:
            return None
        return _per_action(actions, means)

    def gains(self, X: np.ndarray, paths: Paths | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(g_1, g_0)``: incremental outcome when engaged / not engaged, each ``(n,)``."""
        return self._gains(X, paths, self._scale_of(self._action_index(X), X))

    def _gains(
        self, X: np.ndarray, paths: Paths | None, scale: np.ndarray | float
    ) -> tuple[np.ndarray, np.ndarray]:
        """The gains of rows ``X``, the engaged one times ``scale`` (:meth:`_scale_of`)."""
        if paths is None:
            g1 = self.effect_engaged_.predict(X)
            shared = self._unengaged_rows(X)
            if shared is None:
                return g1 * scale, self.effect_unengaged_.predict(X)
            first, of = shared  # the HCP's columns alone: once per run of them
            return g1 * scale, self.effect_unengaged_.predict(X[first])[of]
        g1 = self.effect_engaged_.predict(X, paths.engaged)
        g0 = self.effect_unengaged_.predict(X, paths.unengaged)
        return g1 * scale, g0 if paths.unengaged_of is None else g0[paths.unengaged_of]

    def _scale_of(self, actions: np.ndarray | None, X: np.ndarray) -> np.ndarray | float:
        """The engaged gain's scale per row: its action's (``actions`` from
        :meth:`_action_index`) times its segment factors (``segment_scale_``, read
        from the rows ``X``)."""
        tables = self._tables()
        if tables.scale is None or actions is None:
            return 1.0
        out = _per_action(actions, tables.scale)
        segments = tables.segments
        if segments is not None:
            for factor in segments.factors(X):  # in the order they were fitted, as trained
                out = out * factor
        return out

    def _tables(self) -> _Tables:
        """The per-action and segment tables in the form scoring reads them, made once
        per fitted model (not pickled: see __getstate__)."""
        scale = getattr(self, "action_scale_", None)  # artifacts from before scaling existed
        means = getattr(self, "action_mean_uplift_", None)  # and from before calibration
        segments = getattr(self, "segment_scale_", [])
        found: _Tables | None = self.__dict__.get("_padded_tables")
        # Made again if a fit replaced any of them (calibration scores with the scales
        # before the means exist).
        if found is None or any(
            mine is not theirs
            for mine, theirs in zip(found.made_of, (scale, means, segments), strict=True)
        ):
            found = self._padded_tables = _Tables(
                made_of=(scale, means, segments),
                scale=None if scale is None else np.append(scale, 1.0),
                mean=None if means is None else np.append(means, np.nan),
                segments=_SegmentFactors.of(segments) if segments else None,
            )
        return found

    def baseline(self, X: np.ndarray) -> np.ndarray:
        """Expected outcome without a touch, from the control columns of ``X``."""
        return self.control_.predict(X[:, : self.n_control_features])

    def contributions(
        self,
        X: np.ndarray,
        p_engage: np.ndarray | None = None,
        gains: tuple[np.ndarray, np.ndarray] | None = None,
        paths: Paths | None = None,
        terms: RowTerms | None = None,
    ) -> np.ndarray:
        """Per-feature contributions to the uplift, shape ``(n_rows, n_features)``.

        The outcome stages' path attributions weighted as in ``tau``, plus the
        engagement model's (on the logit scale) times ``d tau / d logit =
        (g_1 - g_0) p (1 - p)``: a first-order split of ``tau`` over features.
        ``p_engage``, ``gains`` and ``terms`` (from :meth:`uplift_parts` of the same
        rows) spare working them out again, ``paths`` (:meth:`paths` of ``X``) asking
        LightGBM for the leaves.
        """
        paths = self.paths(X) if paths is None else paths
        if p_engage is None:
            p_engage = self.engagement_.engage_probability(X, paths.engagement)
        p = p_engage
        terms = self._terms(X) if terms is None else terms
        g1, g0 = self._gains(X, paths, terms.scale) if gains is None else gains
        out = (p * terms.scale)[:, None] * self.effect_engaged_.attribution_.contributions(
            X, paths.engaged
        )
        if self.effect_unengaged_ is not self.effect_engaged_:
            unengaged = self.effect_unengaged_.attribution_.contributions(
                paths.unengaged_rows(X), paths.unengaged
            )
            if paths.unengaged_of is not None:
                unengaged = unengaged[paths.unengaged_of]
            out += (1.0 - p)[:, None] * unengaged
        slope = (g1 - g0) * p * (1.0 - p)
        out += slope[:, None] * self.engagement_.contributions(X, paths.engagement)
        centre = terms.centre
        if centre is not None:
            # Shrinking towards the action's mean scales every deviation alike.
            out *= np.where(np.isnan(centre), 1.0, self.heterogeneity_)[:, None]
        return np.asarray(out)


# Past the end of every per-action table: the index of a row without an action code.
_NO_ACTION = float(2**62)


def _per_action(actions: np.ndarray, padded: np.ndarray) -> np.ndarray:
    """``padded[index]`` for each row's action index (:meth:`EngagementStratifiedUplift.
    _action_index`), where ``padded`` is a per-action table with its "missing" value
    appended: that value for a row without an action or with one past the table."""
    return padded[np.minimum(actions, len(padded) - 1)]


class _SegmentFactors(NamedTuple):
    """Every (HCP column, action column) pair's factors of ``segment_scale_`` as one
    flat table, each pair's padded to ``(n_hcp_codes + 1, n_action_codes + 1)`` with
    factor 1.0 in the last row and column (a missing or unfitted code), so that
    :meth:`factors` looks up every pair's factor of every row in one gather."""

    hcp_columns: list[int]
    action_columns: list[int]
    hcp_pad: np.ndarray  # (n_pairs,) float: the padded row's code, n_hcp_codes
    action_pad: np.ndarray  # (n_pairs,) float: the padded column's code, n_action_codes
    width: np.ndarray  # (n_pairs,) int64: each pair's padded row, n_action_codes + 1
    start: np.ndarray  # (n_pairs,) int64: where each pair's table starts in ``table``
    table: np.ndarray

    @classmethod
    def of(cls, segments: list[tuple[int, int, int, np.ndarray]]) -> _SegmentFactors:
        starts, padded = [], []
        at = 0
        for _, _, n_codes, table in segments:
            square = np.ones((len(table) // n_codes + 1, n_codes + 1))
            square[:-1, :-1] = table.reshape(-1, n_codes)
            starts.append(at)
            padded.append(square.ravel())
            at += square.size
        return cls(
            hcp_columns=[column for column, _, _, _ in segments],
            action_columns=[group for _, group, _, _ in segments],
            hcp_pad=np.array([len(table) // n for _, _, n, table in segments], dtype=np.float64),
            action_pad=np.array([n for _, _, n, _ in segments], dtype=np.float64),
            width=np.array([n + 1 for _, _, n, _ in segments], dtype=np.int64),
            start=np.array(starts, dtype=np.int64),
            table=np.concatenate(padded),
        )

    def factors(self, X: np.ndarray) -> np.ndarray:
        """Per pair, each row's factor, ``(n_pairs, n_rows)``: its cell's, 1.0 where
        either code is missing (NaN), negative or past the pair's table."""
        hcp = _code_or_pad(X[:, self.hcp_columns], self.hcp_pad)
        action = _code_or_pad(X[:, self.action_columns], self.action_pad)
        return self.table[(self.start + hcp * self.width + action).T]


def _code_or_pad(codes: np.ndarray, pad: np.ndarray) -> np.ndarray:
    """Integer codes ``(n, k)``, ``pad[j]`` for column ``j``'s missing (NaN), negative or
    past-the-end ones."""
    return np.minimum(np.where(codes >= 0, codes, pad), pad).astype(np.int64)  # NaN >= 0: False


class _Tables(NamedTuple):
    """:meth:`EngagementStratifiedUplift._tables`: the action scale and mean tables with
    their "missing" value appended (1.0, NaN; None: no such table) and the segment
    factors (None: none), with the fitted attributes they were made of."""

    made_of: tuple[Any, Any, Any]
    scale: np.ndarray | None
    mean: np.ndarray | None
    segments: _SegmentFactors | None


def _cell(hcp_codes: np.ndarray, action_codes: np.ndarray, n_action_codes: int) -> np.ndarray:
    """Per row ``hcp code * n_action_codes + action code``; -1 where either is NaN or
    the action code is not below ``n_action_codes``."""
    known = ~np.isnan(hcp_codes) & ~np.isnan(action_codes)
    h = np.where(known, hcp_codes, 0).astype(np.int64)
    a = np.where(known, action_codes, 0).astype(np.int64)
    return np.where(known & (a < n_action_codes), h * n_action_codes + a, -1)


def _shrunk(
    cell: np.ndarray, n_cells: int, weight: np.ndarray, f: np.ndarray, r: np.ndarray
) -> np.ndarray:
    """Per cell, the factor ``b`` of ``r ~ b f`` (weighted least squares), shrunk.

    Each cell's estimate ``b_c`` has a sampling variance ``v_c`` (the sandwich
    estimate, robust to the counts' unequal noise); the spread of the true
    factors between cells is what the estimates' spread exceeds the noise by,
    ``s2 = max(0, var(b) - mean(v))`` (method of moments), and each estimate is
    pulled towards the cells' mean ``m`` by ``s2 / (s2 + v_c)``. Cells without
    rows get ``m``. Returns ``(n_cells,)``, clipped to [0.1, 10].
    """
    mass = np.bincount(cell, weights=weight * f, minlength=n_cells)
    fit = np.bincount(cell, weights=weight * r, minlength=n_cells)
    seen = mass > 0
    b = np.where(seen, fit / np.where(seen, mass, 1.0), 0.0)
    residual = weight * (r - b[cell] * f)
    v = np.bincount(cell, weights=residual**2, minlength=n_cells) / np.where(seen, mass, 1.0) ** 2
    share = mass[seen] / mass[seen].sum()
    m = float((share * b[seen]).sum())
    s2 = max(0.0, float((share * (b[seen] - m) ** 2).sum() - (share * v[seen]).sum()))
    shrink = np.where(seen, s2 / np.maximum(s2 + v, 1e-300), 0.0)
    return np.clip(m + shrink * (b - m), 0.1, 10.0)


def _inverse_propensity(propensity: Any | None, n: int, max_weight: float) -> np.ndarray:
    if propensity is None:
        return np.ones(n)
    p = np.asarray(propensity, dtype=np.float64)
    if p.shape != (n,):
        raise ValueError(f"propensity has shape {p.shape}, expected ({n},)")
    usable = np.isfinite(p) & (p > 0)
    return np.where(usable, np.minimum(1.0 / np.where(usable, p, 1.0), max_weight), 1.0)
