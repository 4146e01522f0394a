"""Training: point-in-time rows from history, preference and uplift models, metrics.

``train(dataset)`` returns a :class:`TrainResult` holding the served artifact
(:class:`ScoringModel`) and the run's metrics; logging to MLflow and registering
is the registry's job, so training can be tested and reused without a tracking
store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nextbest.features.history import (
    DAY,
    FATIGUE_WINDOWS_DAYS,
    EngagementEffects,
    EventLog,
    Touches,
)
from nextbest.features.space import FeatureSpace
from nextbest.learning.boosting import on_cluster
from nextbest.learning.config import TrainConfig
from nextbest.learning.distributed import PartitionedHistory, worker_count
from nextbest.learning.preference import CalibratedEngagementClassifier, rows_in_order
from nextbest.learning.scoring import (
    PREFERENCE_X_VALUE,
    UPLIFT_MODEL,
    ActionEvidence,
    ScoringModel,
    listed,
)
from nextbest.learning.uplift import MIN_CALIBRATION_ROWS, EngagementStratifiedUplift

if TYPE_CHECKING:
    from distributed import Client

    from nextbest.contract import Dataset
    from nextbest.registry import TrainingCode

# Told each stage's name as it starts ("features", "models", ...) and, within a
# stage that can take minutes, "stage (what it is doing)" ("models (engagement)"): a
# listener counts a stage when its name changes, and shows the rest as it comes.
Progress = Callable[[str], None]

# Fewer no-touch or treated rows than this and an uplift model would be noise.
MIN_ROWS_PER_ARM = 200
# An as_of this many days after the newest interaction is noted in the run (a typo?).
STALE_AS_OF_DAYS = 14
# Interactions later than now by more than this are taken for mistakes (clocks and
# time zones of exports differ by hours, not days).
FUTURE_SLACK = pd.Timedelta(days=1)
# Holdout-measured segment uplift (for reasons) is averaged over at most this many rows.
MAX_SEGMENT_ROWS = 500_000


@dataclass
class DecisionRows:
    """Model rows for logged decisions, aligned arrays of length ``n``."""

    X: np.ndarray
    treated: np.ndarray
    engaged: np.ndarray
    outcome: np.ndarray
    propensity: np.ndarray
    holdout: np.ndarray
    seconds: np.ndarray
    action_rows: np.ndarray
    hcp: np.ndarray  # row of the HCP in the data set's hcps table

    @property
    def controls(self) -> np.ndarray:
        """Untouched decisions chance chose, shape ``(n,)``: a randomized holdout, or
        a logging policy whose probabilities were logged.

        Only these measure what a touch adds. Elsewhere (a CRM's history) the reps
        chose whom to leave alone, and touched against untouched measures that
        choice. The uplift model fits on these controls and the evaluation's
        curves compare with them.
        """
        return ~self.treated & (self.holdout | np.isfinite(self.propensity))


@dataclass
class TrainResult:
    """What a run learned: the served model, its metrics and params, notes for people.

    ``eval_rows`` is the time-based held-out slice; ``evaluation`` holds the
    arrays behind the run's figures (curves per action group, calibration).
    """

    model: ScoringModel
    metrics: dict[str, float]
    params: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    eval_rows: DecisionRows | None = None
    evaluation: dict[str, Any] = field(default_factory=dict)
    # The code that trained, read when training began (what the registry records).
    code: TrainingCode | None = None


def decision_rows(
    space: FeatureSpace,
    interactions: pd.DataFrame,
    hcps: pd.DataFrame,
    catalog: pd.DataFrame,
    *,
    decisions: np.ndarray | None = None,
) -> DecisionRows:
    """Point-in-time model rows, one per decision in ``interactions``.

    Each row's history block is computed from the HCP's decisions strictly
    before its own timestamp. No-touch rows get NaN action features.
    ``decisions`` (bool, ``(len(interactions),)``; default all) picks the
    decisions that get a row; every row of ``interactions`` is history either way.
    """
    assert space.history is not None
    full_log = space.log(interactions, hcps, catalog)
    if decisions is not None:
        interactions = interactions[decisions]
        log = EventLog(**{f.name: getattr(full_log, f.name)[decisions] for f in fields(EventLog)})
    else:
        log = full_log
    history = space.history.transform(full_log, log.hcp, log.seconds)
    space.add_effects(history, hcps, log.hcp, log.seconds)
    hcp_attrs = space.hcp_block(hcps)[log.hcp]
    action_rows = pd.Index(catalog["action_id"]).get_indexer(interactions["action_id"])
    treated = action_rows >= 0
    safe_rows = np.where(treated, action_rows, 0)
    action_attrs = space.action_block(catalog)[safe_rows]
    cross_cols = space.cross_columns(catalog)[safe_rows]
    X = space.rows(hcp_attrs, history, action_attrs, cross_cols)
    n_control = len(space.control_feature_names)
    X[~treated, n_control:] = np.nan
    return DecisionRows(
        X=X,
        treated=treated,
        engaged=interactions["engaged"].to_numpy(dtype=np.int8),
        outcome=interactions["outcome"].to_numpy(dtype=np.float64),
        propensity=interactions["propensity"].to_numpy(dtype=np.float64),
        holdout=interactions["holdout"].to_numpy(dtype=bool),
        seconds=log.seconds,
        action_rows=action_rows,
        hcp=log.hcp,
    )


def _subset(rows: DecisionRows, mask: np.ndarray) -> DecisionRows:
    return DecisionRows(
        **{name: getattr(rows, name)[mask] for name in DecisionRows.__dataclass_fields__}
    )


def before_evaluation_slice(
    seconds: np.ndarray, eval_fraction: float, always: np.ndarray | None = None
) -> tuple[np.ndarray, int, bool]:
    """Which decisions are fitted: all but the evaluation slice, the newest
    ``eval_fraction`` of those not ``always`` fitted.

    ``seconds``: ``(n,)`` decision times in whole seconds, in time order. Returns
    ``(in_fit, n_eval, by_position)``: the mask, the slice's nominal size, and
    whether time could not separate the slices (one campaign date, e.g. a
    randomized e-mail test), so the last rows in order stand in for "later".
    """
    always = np.zeros(len(seconds), dtype=bool) if always is None else always
    pool = np.flatnonzero(~always)  # may go to the slice; in time order
    n_eval = int(len(pool) * eval_fraction)
    cut = seconds[pool[-n_eval]] if n_eval else np.iinfo(np.int64).max
    in_fit = (seconds < cut) | always
    if n_eval and not in_fit[pool].any():
        in_fit = always.copy()
        in_fit[pool[: len(pool) - n_eval]] = True
        return in_fit, n_eval, True
    return in_fit, n_eval, False


def fitted_decisions(
    seconds: np.ndarray,
    action_rows: np.ndarray,
    catalog: pd.DataFrame,
    eval_fraction: float,
    always: np.ndarray | None = None,
) -> tuple[np.ndarray, int, bool]:
    """:func:`before_evaluation_slice`, but new evidence is fitted, not held out: the
    decisions on an action, channel or topic that is too thin to score from the
    decisions before the slice, or that has more touches in the slice than before it.

    A pilot of a new channel or content is the newest data, so most of it falls in
    the evaluation slice: held out, it would leave the channel unscored
    (ActionEvidence), or the content fitted on its first week's sends only, however
    many it holds; and what the model never saw has no past to be evaluated against.
    Established actions keep about ``eval_fraction`` of their touches in the slice.
    ``action_rows``: ``(n,)`` each decision's catalog row, -1 for no touch.
    """
    always = np.zeros(len(seconds), dtype=bool) if always is None else always
    in_fit, n_eval, by_position = before_evaluation_slice(seconds, eval_fraction, always)
    before = touches_per_action(action_rows[in_fit], len(catalog))
    held = touches_per_action(action_rows[~in_fit], len(catalog))
    new = ActionEvidence.of(catalog, before).unscored | (held > before)
    for column in ("channel", "topic"):
        names = catalog[column].astype(str)
        per_name = pd.DataFrame({"before": before, "held": held}).groupby(names.to_numpy()).sum()
        newer = per_name.index[per_name["held"] > per_name["before"]]
        new |= names.isin(newer).to_numpy()
    on_new = (action_rows >= 0) & new[np.maximum(action_rows, 0)]
    if not (on_new & ~in_fit).any():
        return in_fit, n_eval, by_position
    # All of them: those before the slice would otherwise be the new slice's newest.
    return before_evaluation_slice(seconds, eval_fraction, always | on_new)


def touches_per_action(action_rows: np.ndarray, n_actions: int) -> np.ndarray:
    """Touches per catalog action among decisions ``action_rows`` (-1: no touch)."""
    return np.bincount(action_rows[action_rows >= 0], minlength=n_actions).astype(np.int64)


def engagement_problem(engaged: np.ndarray, eval_fraction: float) -> str | None:
    """Why engagement cannot be learned from ``engaged`` (of the fitted decisions with
    an action: too few, or all one value), or None. ``nextbest validate`` asks too."""
    if len(engaged) < MIN_ROWS_PER_ARM:
        return (
            f"only {len(engaged):,} decisions with an action before the evaluation slice "
            f"(the newest {eval_fraction:g} of decisions, eval_fraction); at least "
            f"{MIN_ROWS_PER_ARM} are needed to learn engagement"
        )
    seen = np.unique(engaged).tolist()
    if len(seen) < 2:
        return (
            f"interactions: every decision with an action before the evaluation slice has "
            f"engaged = {seen[0]}; engagement is learned from both 0s and 1s"
        )
    return None


# Params a run derives from its data, config and code (the data's sizes, its evaluation
# slice, the trees early stopping kept, the uplift learner's shape): the others are
# what it was asked for (asked_params), and runs asked for the same on the same data
# with the same code derive the same.
DERIVED_PARAMS = frozenset(
    {
        "uplift_source",
        "n_hcps",
        "n_actions",
        "n_decisions",
        "n_features",
        "eval_from",
        "eval_until",
        "engagement.trees",
        "uplift.learner",
        "uplift.stratified",
        "uplift.heterogeneity",
        "uplift.calibration_rows",
        "uplift.control.trees",
        "uplift.effect_engaged.trees",
        "uplift.effect_unengaged.trees",
    }
)


def asked_params(
    dataset: Dataset,
    *,
    config: TrainConfig | None = None,
    as_of: pd.Timestamp | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """The params ``train(dataset, config=config, as_of=as_of, client=client)`` will
    log other than :data:`DERIVED_PARAMS`, known before it runs: its cut-off, its
    config's values and the files they came from, its Dask workers (``workers``: how
    many the cluster of ``client`` has, None without one; a cluster of this machine
    has :func:`~nextbest.learning.distributed.local_workers` before it starts).

    Raises ValueError where train would: an ``as_of`` before every interaction.
    """
    cutoff, _ = _cutoff(dataset.interactions, as_of)
    return _asked_params(cutoff, config or TrainConfig(), workers)


def _asked_params(as_of: pd.Timestamp, config: TrainConfig, workers: int | None) -> dict[str, Any]:
    return {
        "as_of": str(as_of),
        "eval_fraction": config.eval_fraction,
        "calibration_fraction": config.calibration_fraction,
        "max_rows_per_model": config.max_rows_per_model,
        "max_training_rows": config.max_training_rows,
        "seed": config.seed,
        **{f"value_per_engagement.{k}": v for k, v in config.value_per_engagement.items()},
        **{f"engagement.{k}": v for k, v in config.engagement.model_dump().items()},
        **{f"uplift.{k}": v for k, v in config.uplift.model_dump().items()},
        **config.levers.as_params(),
        "config.file": config.source,
        "config.levers": config.levers_source,
        **({"dask.workers": workers} if workers is not None else {}),
    }


def _cutoff(
    interactions: pd.DataFrame, as_of: pd.Timestamp | None
) -> tuple[pd.Timestamp, list[str]]:
    """The cut-off a run learns before (naive UTC, as the history) and notes for people:
    ``as_of`` at its UTC instant, else just after the newest interaction, else now."""
    notes: list[str] = []
    if as_of is not None and as_of.tzinfo is not None:
        as_of = as_of.tz_convert("UTC").tz_localize(None)  # history is naive UTC
    if as_of is None:
        now = pd.Timestamp.now(tz="UTC").tz_localize(None)
        as_of = (
            interactions["timestamp"].max() + pd.Timedelta(seconds=1) if len(interactions) else now
        )
        future = int((interactions["timestamp"] > now + FUTURE_SLACK).sum())
        if future:
            # A mistyped year (2099) made as_of the model's cut-off: it then refused
            # every request until that day. History up to now is what can be learned.
            as_of = now
            notes.append(
                f"{future:,} interaction(s) dated after now (the latest "
                f"{interactions['timestamp'].max():%Y-%m-%d}; a mistyped year?) are left "
                f"out: training learns from history up to now ({now:%Y-%m-%d %H:%M} UTC)"
            )
    if len(interactions):
        first, newest = interactions["timestamp"].min(), interactions["timestamp"].max()
        if as_of <= first:
            raise ValueError(
                f"no interactions before as_of {pd.Timestamp(as_of):%Y-%m-%d %H:%M}: the "
                f"data run from {first:%Y-%m-%d} to {newest:%Y-%m-%d}"
            )
        gap = (pd.Timestamp(as_of) - newest) / pd.Timedelta(days=1)
        if gap > STALE_AS_OF_DAYS:
            notes.append(
                f"as_of {pd.Timestamp(as_of):%Y-%m-%d} is {gap:,.0f} days after the newest "
                f"interaction ({newest:%Y-%m-%d}): the served snapshot counts recency from as_of"
            )
    return pd.Timestamp(as_of), notes


def train(
    dataset: Dataset,
    *,
    config: TrainConfig | None = None,
    as_of: pd.Timestamp | None = None,
    progress: Progress | None = None,
    client: Client | None = None,
    fit_from: pd.Timestamp | None = None,
    fingerprint: str | None = None,
    code: TrainingCode | None = None,
) -> TrainResult:
    """Learn preference and uplift from ``dataset`` as it was at ``as_of``.

    ``as_of`` (default: just after the newest interaction; one with a zone is read
    at its UTC instant) cuts the history:
    decisions at or after it are ignored, and the served HCP snapshot is the
    history before it. The models are fitted on the decisions before the
    time-based evaluation slice (the newest ``eval_fraction``); with ``fit_from``,
    decisions at or after it are always fitted and the slice is the newest of the
    decisions before it (retraining: the logged feedback, newer than the history,
    is learned from, and the slice is the history's, as the champion's was). With
    a Dask ``client`` the features are built and the models boosted on its cluster
    (:mod:`nextbest.learning.distributed`). ``fingerprint``: ``dataset.fingerprint()``
    when the caller has taken it already (hashing a large history takes seconds), kept
    in the model's metadata. ``code``: the code that trains, as the caller read it
    when its work began (:func:`nextbest.registry.training_code`); read here, before
    any training, when not given. Kept in the result for the registry to record: a
    file edited while the training runs is not the code that trained.
    """
    if code is None:
        from nextbest.registry import training_code

        code = training_code()
    with on_cluster(client):
        result = _train(
            dataset,
            config=config,
            as_of=as_of,
            progress=progress,
            client=client,
            fit_from=fit_from,
            fingerprint=fingerprint,
        )
    result.code = code
    return result


def _train(
    dataset: Dataset,
    *,
    config: TrainConfig | None,
    as_of: pd.Timestamp | None,
    progress: Progress | None,
    client: Client | None,
    fit_from: pd.Timestamp | None = None,
    fingerprint: str | None = None,
) -> TrainResult:
    config = config or TrainConfig()
    step = progress or (lambda _msg: None)
    hcps, catalog = dataset.hcps, dataset.catalog
    if (mismatch := config.catalog_mismatch(catalog)) is not None:
        raise ValueError(mismatch)
    interactions = dataset.interactions
    as_of, notes = _cutoff(interactions, as_of)
    interactions = interactions[interactions["timestamp"] < as_of]
    # The decisions that become model rows: all, or the newest max_training_rows. Every
    # decision before as_of stays history: a row's features (and the served snapshot)
    # are those of the HCP's whole past, not of the part that happens to be kept, else
    # an HCP last contacted before the kept decisions is served as never contacted.
    kept: np.ndarray | None = None
    if config.max_training_rows and len(interactions) > config.max_training_rows:
        newest = interactions.nlargest(config.max_training_rows, "timestamp").index
        kept = interactions.index.isin(newest)
    decisions = interactions if kept is None else interactions[kept]

    step("features")
    space = FeatureSpace()
    space.fit(hcps, catalog)
    assert space.history is not None
    history = space.history
    # The served snapshot: every HCP's history features as of the cut-off.
    snapshot_seconds = np.full(len(hcps), pd.Timestamp(as_of).value // 10**9, dtype=np.int64)
    snapshot: Callable[[], np.ndarray]
    if client is None:
        full_log = space.log(interactions, hcps, catalog)
        history.fit(full_log)
        rows = decision_rows(space, interactions, hcps, catalog, decisions=kept)

        def snapshot() -> np.ndarray:
            return history.transform(full_log, np.arange(len(hcps)), snapshot_seconds)
    else:
        partitioned = PartitionedHistory(client, interactions, hcps, catalog, decisions=kept)
        history.fit_counts(partitioned.engagement_counts(space))
        rows = partitioned.decision_rows(space)

        def snapshot() -> np.ndarray:
            return partitioned.snapshot(space, snapshot_seconds)

    # Time order, then a time-based evaluation slice: the newest decisions (before
    # ``fit_from``: those at or after it are always fitted).
    order = np.argsort(rows.seconds, kind="stable")
    rows = _subset(rows, order)
    always = (
        rows.seconds >= pd.Timestamp(fit_from).value // 10**9
        if fit_from is not None
        else np.zeros(len(order), dtype=bool)
    )
    in_fit, n_eval, by_position = fitted_decisions(
        rows.seconds, rows.action_rows, catalog, config.eval_fraction, always
    )
    plain, _, _ = before_evaluation_slice(rows.seconds, config.eval_fraction, always)
    if (fitted_new := in_fit & ~plain).any():
        new_ids = (
            catalog["action_id"].astype(str).to_numpy()[np.unique(rows.action_rows[fitted_new])]
        )
        notes.append(
            f"{int(fitted_new.sum()):,} decision(s) of the evaluation slice (the newest) are "
            "fitted instead, on actions, channels or topics with more touches there than "
            f"before it (a pilot, a launch): {listed(sorted(new_ids))}"
        )
    if by_position:
        notes.append(
            "all decisions share one timestamp: the evaluation slice is the last "
            f"{n_eval} decisions in file order, not a later time window"
        )
    fit_rows = _subset(rows, in_fit)
    eval_rows = _subset(rows, ~in_fit) if n_eval else None
    if eval_rows is None:
        notes.append(
            f"no evaluation: eval_fraction {config.eval_fraction:g} of "
            f"{int((~always).sum()):,} decisions holds none out, so the run has no AUC, "
            "calibration, Qini or policy value to show"
        )
    if config.calibration_fraction == 0:
        notes.append(
            "calibration_fraction 0: engagement probabilities are LightGBM's own, with no "
            "held-out time slice to stop boosting or to calibrate the population model the "
            "per-HCP engagement effects are measured against (expect a worse log loss)"
        )

    # One step: the uplift learner fits the engagement model inside its own fit.
    step("models")
    treated = fit_rows.treated
    if (problem := engagement_problem(fit_rows.engaged[treated], config.eval_fraction)) is not None:
        raise ValueError(problem)
    engagement_params: dict[str, Any] = {
        **config.engagement.model_dump(),
        "calibration_fraction": config.calibration_fraction,
        "max_rows": config.max_rows_per_model,
        "categorical_feature": space.categorical_features,
        "linear_terms": space.linear_terms,
        "random_state": config.seed,
    }

    has_outcome = bool(np.isfinite(fit_rows.outcome).any())
    outcome_known = np.isfinite(fit_rows.outcome)
    untouched = ~fit_rows.treated & outcome_known
    # Untouched decisions reps chose (not chance) measure whom they left alone.
    observational = untouched & ~fit_rows.controls
    n_control = int((untouched & ~observational).sum())
    n_treated = int((fit_rows.treated & outcome_known).sum())
    with_uplift = has_outcome and n_control >= MIN_ROWS_PER_ARM and n_treated >= MIN_ROWS_PER_ARM
    # Per-HCP engagement effects, learned from the engagement model's own rows (those
    # the uplift learner fits it on) and written into every row's effect columns.
    engaging = treated & (outcome_known & ~observational if with_uplift else True)
    effects = Effects.learn(space, _subset(fit_rows, engaging), catalog, engagement_params)
    for part in (fit_rows, eval_rows):
        if part is not None:
            effects.fill(space, part, catalog)
    engagement_params["hidden_columns"] = space.engagement_history_columns
    # One campaign (each HCP touched once, as on Hillstrom): no touch has an earlier
    # one of its HCP, so every effect is 0 and an offset would only cost the isotonic
    # calibration; the engagement model is then the population model.
    offsets = fit_rows.X[:, space.effect_offset_columns][engaging]
    if np.nan_to_num(offsets).any():
        engagement_params["offset_columns"] = space.effect_offset_columns
    engagement = CalibratedEngagementClassifier(**engagement_params)
    uplift_model: EngagementStratifiedUplift | None = None
    if with_uplift:
        if observational.any():
            notes.append(
                f"{int(observational.sum()):,} untouched decisions with an outcome are neither "
                "holdout nor logged with a propensity: the uplift model leaves them out and "
                f"compares with the {n_control:,} that are"
            )
        known = _subset(fit_rows, outcome_known & ~observational)
        uplift_model = EngagementStratifiedUplift(
            n_control_features=len(space.control_feature_names),
            categorical_feature=space.categorical_features,
            **config.uplift.model_dump(),
            action_column=space.feature_names.index("action__action"),
            segment_columns=[space.feature_names.index("action__topic")],
            engagement=engagement,
            max_rows_per_stage=config.max_rows_per_model,
            engagement_only_columns=space.effect_columns,
            random_state=config.seed,
        ).fit(
            known.X,
            known.outcome,
            treated=known.treated,
            engaged=known.engaged,
            propensity=known.propensity,
            progress=lambda doing: step(f"models ({doing})"),
        )
        fitted_engagement = uplift_model.engagement_
        uplift_source = UPLIFT_MODEL
        if not uplift_model.stratified_:
            notes.append(
                "too few engaged or unengaged touches to split the uplift model by engagement; "
                "one treated-side stage was fitted"
            )
        unseen = uplift_model.n_calibration_rows_
        if uplift_model.calibrate_heterogeneity and unseen < MIN_CALIBRATION_ROWS:
            notes.append(
                f"differences between HCPs are not calibrated: {unseen:,} treated decision(s) "
                "are newer than every row the uplift and engagement models fitted on (need "
                f"{MIN_CALIBRATION_ROWS}); each HCP keeps the uplift the model learned"
            )
    else:
        step("models (engagement)")
        fitted_engagement = engagement.fit(fit_rows.X[treated], fit_rows.engaged[treated])
        uplift_source = PREFERENCE_X_VALUE
        has_column = "outcome" in decisions and bool(decisions["outcome"].notna().any())
        if not has_column:
            why = "no outcome column"
        elif not has_outcome:
            why = "no outcomes before the evaluation slice"
        elif n_control < MIN_ROWS_PER_ARM and observational.sum() >= MIN_ROWS_PER_ARM:
            why = (
                f"the {int(observational.sum()):,} untouched decisions with an outcome are "
                "neither a randomized holdout nor logged with a propensity (observational "
                "history: comparing them with touched ones would measure whom the reps chose "
                "to touch, not what a touch adds)"
            )
        else:
            why = (
                f"{n_control} no-touch (holdout or logged with a propensity) and {n_treated} "
                f"treated rows with an outcome before the evaluation slice (need "
                f"{MIN_ROWS_PER_ARM} each)"
            )
        notes.append(
            f"uplift falls back to preference x value per engagement: {why}; "
            "scores rank by expected engagement value, not measured incremental effect"
        )

    action_touches = touches_per_action(fit_rows.action_rows, len(catalog))
    notes.extend(ActionEvidence.of(catalog, action_touches).notes(catalog))

    step("snapshot")
    hcp_history = snapshot()
    # Served rows (and rows built later for decisions at or after the cut-off) carry
    # every HCP's effects at the cut-off.
    space.effects = pd.DataFrame(
        effects.of(np.arange(len(hcps)), snapshot_seconds),
        index=pd.Index(hcps["hcp_id"]),
        columns=history.effect_names,
    )
    cut = int(pd.Timestamp(as_of).value // 10**9)
    space.effects_as_of = cut
    space.add_effects(hcp_history, hcps, np.arange(len(hcps)), snapshot_seconds)
    # The touches the snapshot's fatigue windows count, for moving them on at serving.
    start = cut - max(FATIGUE_WINDOWS_DAYS) * DAY
    recent = interactions[interactions["timestamp"] >= pd.Timestamp(start, unit="s")]
    recent_touches = Touches.of(space.log(recent, hcps, catalog), start, cut)
    model = ScoringModel(
        space=space,
        engagement=fitted_engagement,
        uplift_model=uplift_model,
        uplift_source=uplift_source,
        value_per_engagement=dict(config.value_per_engagement),
        hcps=hcps.reset_index(drop=True),
        catalog=catalog.reset_index(drop=True),
        hcp_attrs=space.hcp_block(hcps),
        hcp_history=hcp_history,
        as_of=pd.Timestamp(as_of),
        metadata={
            "data_fingerprint": fingerprint or dataset.fingerprint(),
            "n_decisions": len(decisions),
            "decision_period_days": _decision_period_days(decisions),
            "notes": notes,
            **_segment_evidence(
                space, _subset(fit_rows, ~observational), hcps, catalog, uplift_model
            ),
        },
        levers=config.levers,
        action_touches=action_touches,
        recent_touches=recent_touches,
    )

    step("evaluation")
    from nextbest.evaluation.offline import evaluate_model

    metrics = _metrics(model, fit_rows, eval_rows)
    evaluation = evaluate_model(model, eval_rows, seed=config.seed) if eval_rows else {}
    metrics.update(evaluation.pop("metrics", {}))
    notes.extend(_evaluation_notes(metrics, eval_rows, uplift_model is not None))
    params = {
        **_asked_params(as_of, config, None if client is None else worker_count(client)),
        "uplift_source": uplift_source,
        "n_hcps": len(hcps),
        "n_actions": len(catalog),
        "n_decisions": len(decisions),
        "n_features": len(space.feature_names),
    }
    if eval_rows is not None:
        # Which decisions the held-out figures are on: versions whose slices match
        # compare by them (``nextbest models``).
        for key, at in (
            ("eval_from", eval_rows.seconds.min()),
            ("eval_until", eval_rows.seconds.max()),
        ):
            params[key] = pd.Timestamp(int(at), unit="s", tz="UTC").isoformat()
    # The trees kept by early stopping: engagement.n_estimators is only an upper bound.
    params["engagement.trees"] = fitted_engagement.n_trees_
    if uplift_model is not None:
        params["uplift.learner"] = "engagement-stratified X-learner"
        params["uplift.stratified"] = uplift_model.stratified_
        params["uplift.heterogeneity"] = uplift_model.heterogeneity_
        params["uplift.calibration_rows"] = uplift_model.n_calibration_rows_
        for stage in ("control_", "effect_engaged_", "effect_unengaged_"):
            params[f"uplift.{stage.strip('_')}.trees"] = getattr(uplift_model, stage).n_trees_
    return TrainResult(
        model=model,
        metrics=metrics,
        params=params,
        notes=notes,
        eval_rows=eval_rows,
        evaluation=evaluation,
    )


@dataclass
class Effects:
    """Per-HCP engagement effects learned from the engagement model's rows
    (:class:`~nextbest.features.history.EngagementEffects`): the touches, their
    population P(engaged) (an engagement model that sees no engagement history of
    the HCP) and the shrinkage learned from them."""

    effects: EngagementEffects
    log: EventLog
    prior: np.ndarray

    @classmethod
    def learn(
        cls,
        space: FeatureSpace,
        rows: DecisionRows,
        catalog: pd.DataFrame,
        params: dict[str, Any],
    ) -> Effects:
        """Fit the population model on ``rows`` (touches in time order) and the
        effects' shrinkage on their residuals."""
        # In this process on a cluster too: the effects are features, and a cluster
        # run's features are exactly a plain run's (docs/learning.md, section 8).
        with on_cluster(None):
            population = CalibratedEngagementClassifier(
                **params, hidden_columns=space.engagement_history_columns
            ).fit(rows.X, rows.engaged)
        prior = np.clip(population.engage_probability(rows.X), 1e-4, 1 - 1e-4)
        channel, topic = _action_codes(space, catalog)
        log = EventLog(
            hcp=rows.hcp,
            seconds=rows.seconds,
            channel=channel[rows.action_rows],
            topic=topic[rows.action_rows],
            engaged=rows.engaged.astype(np.float64),
            outcome=np.full(len(rows.hcp), np.nan),
        )
        effects = EngagementEffects(len(space.channels), len(space.topics)).fit(log, prior)
        return cls(effects, log, prior)

    def of(self, hcp: np.ndarray, seconds: np.ndarray) -> np.ndarray:
        """Each query's effects, ``(n, n_channels + n_topics)``."""
        return self.effects.transform(self.log, self.prior, hcp, seconds)

    def fill(self, space: FeatureSpace, rows: DecisionRows, catalog: pd.DataFrame) -> None:
        """Write each row's effects at its time into its history and cross columns."""
        assert space.history is not None
        values = self.of(rows.hcp, rows.seconds)
        start = len(space.hcp_feature_names)
        columns = [start + space.history.column(n) for n in space.history.effect_names]
        rows.X[:, columns] = values
        channel, topic = _action_codes(space, catalog)
        touched = rows.treated
        at = np.flatnonzero(touched)
        own_channel, own_topic = space.effect_offset_columns
        n_channels = len(space.channels)
        rows.X[at, own_channel] = values[at, channel[rows.action_rows[at]]]
        rows.X[at, own_topic] = values[at, n_channels + topic[rows.action_rows[at]]]


def _action_codes(space: FeatureSpace, catalog: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each catalog action's channel and topic code in ``space``'s vocabularies."""
    channel = pd.Categorical(catalog["channel"], categories=list(space.channels)).codes
    topic = pd.Categorical(catalog["topic"], categories=list(space.topics)).codes
    return np.asarray(channel, dtype=np.int64), np.asarray(topic, dtype=np.int64)


# An engagement model ranking the evaluation slice at most this well is about as
# good as chance: its probabilities still drive every score, and a run says so.
WEAK_AUC = 0.55


def _evaluation_notes(
    metrics: dict[str, float], eval_rows: DecisionRows | None, has_uplift: bool
) -> list[str]:
    """What the evaluation slice could not show, or showed to be weak."""
    from nextbest.evaluation.offline import MIN_GROUP_ROWS

    if eval_rows is None:
        return []
    notes = []
    auc = metrics.get("eval_auc")
    if auc is not None and np.isfinite(auc) and auc <= WEAK_AUC:
        notes.append(
            f"the engagement model ranks the evaluation slice barely better than chance "
            f"(AUC {auc:.3f}): its probabilities say little about who engages, yet every "
            "score uses them"
        )
    if has_uplift and "ope_dr_policy_value" not in metrics:
        logged = int((np.isfinite(eval_rows.propensity) & (eval_rows.propensity > 0)).sum())
        notes.append(
            f"no policy value (IPS, SNIPS, DR) for this run: {logged:,} decisions of the "
            f"evaluation slice carry a logged propensity (need {MIN_GROUP_ROWS})"
        )
    return notes


def _segment_evidence(
    space: FeatureSpace,
    rows: DecisionRows,
    hcps: pd.DataFrame,
    catalog: pd.DataFrame,
    uplift_model: EngagementStratifiedUplift | None,
) -> dict[str, Any]:
    """Uplift per (segment, channel) for reasons, against the untouched decisions chance
    chose (``rows.controls``); segment = specialty.

    Outcomes are compared net of the no-touch baseline model's prediction: the
    logging policy touches high prescribers most, and clipped propensity weights
    alone would leave part of that difference looking like an effect.
    """
    from nextbest.evaluation.segments import segment_uplift

    column = "specialty"
    if column not in hcps or uplift_model is None:
        return {}
    # Segment averages need far fewer rows than the models; predicting the baseline
    # for millions of rows would cost more than the averages gain from them.
    kept = rows_in_order(len(rows.X), MAX_SEGMENT_ROWS, seed=0)
    if kept is not None:
        rows = _subset(rows, kept)
    residual = rows.outcome - uplift_model.baseline(rows.X)
    channel_of_action = pd.Categorical(catalog["channel"], categories=list(space.channels)).codes
    channel = np.where(rows.treated, channel_of_action[np.maximum(rows.action_rows, 0)], -1)
    table = segment_uplift(
        segment=hcps[column].astype(str).to_numpy()[rows.hcp],
        channel=channel,
        channels=space.channels,
        outcome=residual,
        propensity=rows.propensity,
        hcp=rows.hcp,
        controls=rows.controls,
    )
    return {"segment_column": column, "segment_uplift": table} if table else {}


def _decision_period_days(interactions: pd.DataFrame) -> float | None:
    """The usual time between two decisions about one HCP, in days (the median gap),
    so that reasons can say "a week" where the data speak of periods; None without
    two decisions about any HCP."""
    if len(interactions) < 2:
        return None
    hcp = interactions["hcp_id"].to_numpy()
    stamps = interactions["timestamp"].to_numpy().astype("datetime64[s]").astype(np.int64)
    same = hcp[1:] == hcp[:-1]  # contract order: by HCP, then time
    gaps = np.diff(stamps)[same]
    gaps = gaps[gaps > 0]
    return float(np.median(gaps)) / 86_400 if len(gaps) else None


def _metrics(
    model: ScoringModel, fit_rows: DecisionRows, eval_rows: DecisionRows | None
) -> dict[str, float]:
    metrics: dict[str, float] = {
        "train_decisions": float(len(fit_rows.X)),
        "train_treated": float(fit_rows.treated.sum()),
    }
    if eval_rows is None or not eval_rows.treated.any():
        return metrics
    treated = eval_rows.treated
    y = eval_rows.engaged[treated]
    p = model.engagement.engage_probability(eval_rows.X[treated])
    metrics["eval_decisions"] = float(len(eval_rows.X))
    metrics["eval_engaged_rate"] = float(y.mean())
    metrics["eval_mean_p_engage"] = float(p.mean())
    return metrics
