"""Offline evaluation of a trained model on the time-based held-out slice.

Three questions, each answered on decisions the model never saw:

1. Does it predict engagement? AUC and log loss, overall and per channel, and
   the calibration table behind the per-channel plot.
2. Does it rank incremental effect? Qini / cumulative-gain curves per action
   group (channel), treated rows of the group against the no-touch rows chance
   chose (holdout or logged with a propensity, the controls the uplift model
   fitted on), weighted by inverse logged propensity.
3. Would its choices pay? The off-policy value of the learned policy (top-1
   eligible action by arbitration score, or nothing) from the logged decisions:
   IPS, self-normalised IPS and doubly robust (``nextbest.evaluation.ope``),
   next to the logging policy's own average and the "never act" policy, and its
   gain over each, paired on the same decisions. The intervals are cluster-robust
   by HCP: one HCP's decisions are not independent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

from nextbest.evaluation import ope
from nextbest.evaluation.uplift_curves import uplift_curve

if TYPE_CHECKING:
    from nextbest.learning.scoring import ScoringModel
    from nextbest.learning.train import DecisionRows

# Scoring every eval decision against every action is (n x A) rows; beyond this
# many decisions a seeded sample answers the same questions.
MAX_POLICY_DECISIONS = 20_000
# The candidate rows are built and scored this many (decision, action) pairs at a
# time: all at once, 20,000 decisions by a catalog of 600 actions were 3 GB of
# features (and the run stopped for memory at evaluation, after the models).
PAIRS_PER_BLOCK = 500_000
MIN_GROUP_ROWS = 50
MAX_WEIGHT = 50.0


def candidate_rows(model: ScoringModel, rows: DecisionRows) -> np.ndarray:
    """Model rows for every (decision, action) pair, shape ``(n * A, n_features)``, decision-major.

    Each decision keeps its own point-in-time HCP and history columns; the action
    columns and the action's channel/topic history are filled in per action.
    """
    space = model.space
    n_hcp = len(space.hcp_feature_names)
    n_control = len(space.control_feature_names)
    n, n_actions = len(rows.X), model.n_actions
    control = rows.X[:, :n_control]
    hcp_attrs = np.repeat(control[:, :n_hcp], n_actions, axis=0)
    history = np.repeat(control[:, n_hcp:], n_actions, axis=0)
    action = np.tile(np.arange(n_actions), n)
    return space.rows(hcp_attrs, history, model.action_attrs[action], model.cross_cols[action])


def eligible_at(model: ScoringModel, rows: DecisionRows) -> np.ndarray:
    """What each decision could have received, shape ``(n, A)``: consent, specialty,
    approval, and only actions the model scores (ActionEvidence), as serving does."""
    from nextbest.policy.eligibility import EligibilityIndex

    index = EligibilityIndex.build(model)
    at = rows.seconds.astype("datetime64[s]").astype("datetime64[ns]")[:, None]
    until_ok = np.isnat(index.approved_until)[None, :] | (index.approved_until[None, :] >= at)
    approved = (index.approved_from[None, :] <= at) & until_ok
    if index.unscored is not None:
        approved &= ~index.unscored[None, :]
    return index.consent[rows.hcp] & index.specialty_ok[rows.hcp] & approved


def evaluate_model(model: ScoringModel, rows: DecisionRows, *, seed: int = 0) -> dict[str, Any]:
    """Metrics (flat, for MLflow) and the arrays behind the figures, as a dict.

    Keys: ``metrics`` (name -> float), ``curves`` (group -> UpliftCurve),
    ``calibration`` (channel -> (mean predicted, observed, decisions) per decile:
    tied predictions can leave a decile a handful of decisions).
    """
    out: dict[str, Any] = {"metrics": {}, "curves": {}, "calibration": {}}
    _engagement(model, rows, out)
    known = np.isfinite(rows.outcome)
    if model.uplift_model is None or not known.any():
        return out
    from nextbest.learning.train import _subset

    # Two samples, scored together: the curves' from every decision with an outcome,
    # the policy value's from those of known propensity, the only ones it can use.
    # One sample for both left the policy value a few hundred decisions where a
    # history without propensities surrounds the logged ones (a retrain's slice).
    rng = np.random.default_rng(seed)
    for_curves = _at_most(np.flatnonzero(known), MAX_POLICY_DECISIONS, rng)
    of_known_propensity = np.flatnonzero(
        known & np.isfinite(rows.propensity) & (rows.propensity > 0)
    )
    for_policy = np.intersect1d(for_curves, of_known_propensity)
    wanted = min(MAX_POLICY_DECISIONS, len(of_known_propensity))
    if len(for_policy) < wanted:  # topped up at random: a uniform sample still
        rest = np.setdiff1d(of_known_propensity, for_policy)
        for_policy = np.union1d(for_policy, _at_most(rest, wanted - len(for_policy), rng))
    scored = np.union1d(for_curves, for_policy)
    sub = _subset(rows, scored)
    uplift, net, baseline = _candidate_scores(model, sub)
    eligible = eligible_at(model, sub)
    c = np.isin(scored, for_curves)
    _curves(model, _subset(sub, c), uplift[c], eligible[c], out)
    p = np.isin(scored, for_policy)
    _policy_value(model, _subset(sub, p), baseline[p], uplift[p], net[p], eligible[p], out)
    return out


def _at_most(positions: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``positions``, or a seeded sample of ``n`` of them, in order."""
    if len(positions) <= n:
        return positions
    return np.sort(rng.choice(positions, n, replace=False))


def _candidate_scores(
    model: ScoringModel, rows: DecisionRows
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Uplift and net value of every (decision, action) pair, shape ``(n, A)`` each,
    and each decision's expected outcome without a touch, ``(n,)``; scored
    ``PAIRS_PER_BLOCK`` pairs at a time, so memory does not grow with the catalog."""
    from nextbest.learning.train import _subset

    assert model.uplift_model is not None
    n, n_actions = len(rows.X), model.n_actions
    uplift, net = np.empty((n, n_actions)), np.empty((n, n_actions))
    baseline = np.empty(n)
    step = max(1, PAIRS_PER_BLOCK // n_actions)
    for start in range(0, n, step):
        block = _subset(rows, np.arange(start, min(start + step, n)))
        X = candidate_rows(model, block)
        action = np.tile(np.arange(n_actions), len(block.X))
        scores = model.score_rows(X, action, keep_paths=False)
        uplift[start : start + step] = scores.uplift.reshape(-1, n_actions)
        net[start : start + step] = model.net_value(scores.uplift, action).reshape(-1, n_actions)
        baseline[start : start + step] = model.uplift_model.baseline(X[::n_actions])
    return uplift, net, baseline


def _engagement(model: ScoringModel, rows: DecisionRows, out: dict[str, Any]) -> None:
    treated = rows.treated
    if not treated.any():
        return
    y = rows.engaged[treated]
    p = model.engagement.engage_probability(rows.X[treated])
    channel = model.action_channel_code[rows.action_rows[treated]]
    groups = {"all": np.ones(len(y), dtype=bool)}
    groups.update({name: channel == c for c, name in enumerate(model.space.channels)})
    for name, mask in groups.items():
        if mask.sum() < MIN_GROUP_ROWS or y[mask].min() == y[mask].max():
            continue
        suffix = "" if name == "all" else f".{name}"
        out["metrics"][f"eval_auc{suffix}"] = float(roc_auc_score(y[mask], p[mask]))
        out["metrics"][f"eval_log_loss{suffix}"] = float(
            log_loss(y[mask], np.clip(p[mask], 1e-6, 1 - 1e-6))
        )
        if name != "all":
            edges = np.quantile(p[mask], np.linspace(0, 1, 11))
            which = np.clip(np.searchsorted(edges, p[mask], side="right") - 1, 0, 9)
            bins = [b for b in range(10) if (which == b).any()]
            out["calibration"][name] = (
                np.array([p[mask][which == b].mean() for b in bins]),
                np.array([y[mask][which == b].mean() for b in bins]),
                np.array([(which == b).sum() for b in bins]),
            )


def _weights(rows: DecisionRows) -> np.ndarray:
    p = rows.propensity
    ok = np.isfinite(p) & (p > 0)
    return np.where(ok, np.minimum(1.0 / np.where(ok, p, 1.0), MAX_WEIGHT), 1.0)


def _curves(
    model: ScoringModel,
    rows: DecisionRows,
    uplift: np.ndarray,
    eligible: np.ndarray,
    out: dict[str, Any],
) -> None:
    """One Qini curve per channel: its treated rows against the no-touch rows that
    chance chose (``DecisionRows.controls``, as the uplift model was fitted on)."""
    control = rows.controls
    weight = _weights(rows)
    logged_channel = np.where(
        rows.treated, model.action_channel_code[np.maximum(rows.action_rows, 0)], -1
    )
    for c, name in enumerate(model.space.channels):
        in_group = model.action_channel_code == c
        usable = eligible[:, in_group]
        # Score = the model's mean uplift over the channel's eligible actions.
        counts = usable.sum(axis=1)
        score = np.where(
            counts > 0,
            (uplift[:, in_group] * usable).sum(axis=1) / np.maximum(counts, 1),
            np.nan,
        )
        mask = ((logged_channel == c) | control) & np.isfinite(score)
        if (rows.treated & mask).sum() < MIN_GROUP_ROWS or (control & mask).sum() < MIN_GROUP_ROWS:
            continue
        curve = uplift_curve(score[mask], rows.treated[mask], rows.outcome[mask], weight[mask])
        out["curves"][name] = curve
        out["metrics"][f"eval_qini_auc.{name}"] = curve.qini_auc
        out["metrics"][f"eval_auuc.{name}"] = curve.auuc
        out["metrics"][f"eval_uplift_at_30.{name}"] = curve.uplift_at(0.3)


def _policy_value(
    model: ScoringModel,
    rows: DecisionRows,
    baseline: np.ndarray,
    uplift: np.ndarray,
    net: np.ndarray,
    eligible: np.ndarray,
    out: dict[str, Any],
) -> None:
    """IPS / SNIPS / DR value per decision (outcome - cost) of the learned policy,
    with intervals cluster-robust by HCP (an HCP's decisions share the HCP), and its
    gain over the logging policy and over doing nothing by each, paired on the same
    decisions (:func:`nextbest.evaluation.ope.difference`)."""
    ok = np.isfinite(rows.propensity) & (rows.propensity > 0)
    if ok.sum() < MIN_GROUP_ROWS:
        return
    n = len(uplift)
    masked = np.where(eligible, net, -np.inf)
    best = masked.argmax(axis=1)
    target = np.where(masked[np.arange(n), best] > 0, best, -1)
    logged = np.where(rows.treated, rows.action_rows, -1)
    cost = model.action_cost
    reward = rows.outcome - np.where(logged >= 0, cost[np.maximum(logged, 0)], 0.0)
    q = baseline[:, None] + uplift - cost[None, :]  # reward model per (decision, action)
    q_target = np.where(target >= 0, q[np.arange(n), np.maximum(target, 0)], baseline)
    q_logged = np.where(logged >= 0, q[np.arange(n), np.maximum(logged, 0)], baseline)
    a, r, p, t = logged[ok], reward[ok], rows.propensity[ok], target[ok]
    hcp = rows.hcp[ok]
    metrics = out["metrics"]
    # SNIPS is undefined for a policy no logged decision of known propensity agrees
    # with: left out, not a failed run after every model was fitted.
    estimates = {
        name: ope.estimate(
            name, a, r, p, t, q_target=q_target[ok], q_logged=q_logged[ok], groups=hcp
        )
        for name in ope.ESTIMATORS
        if name != "snips" or (a == t).any()
    }
    for name, value in estimates.items():
        metrics[f"ope_{name}_policy_value"] = value.value
        metrics[f"ope_{name}_ci_low"] = value.ci_low
        metrics[f"ope_{name}_ci_high"] = value.ci_high
    # Paired against the logging policy (its observed rewards) and against doing
    # nothing, on the same decisions: not the learned interval beside a point.
    nothing = np.full(len(a), -1)
    references: dict[str, np.ndarray | None] = {"logged": None}
    if (a < 0).any():  # else no decision of known propensity did nothing (touches only)
        # By each estimator, as the learned policy's value and its gain over doing
        # nothing are: the SNIPS value alone, drawn beside a DR value and a DR gain,
        # did not add up (2.19 - 1.99 beside a gain of +0.18).
        for name in estimates:
            metrics[f"ope_{name}_no_action_value"] = ope.estimate(
                name, a, r, p, nothing, q_target=baseline[ok], q_logged=q_logged[ok]
            ).value
        references["nothing"] = nothing
    for name in estimates:
        for over, reference in references.items():
            gain = ope.difference(
                name,
                a,
                r,
                p,
                t,
                reference,
                q_target=q_target[ok],
                q_baseline=None if reference is None else baseline[ok],
                q_logged=q_logged[ok],
                groups=hcp,
            )
            metrics[f"ope_{name}_gain_over_{over}"] = gain.value
            metrics[f"ope_{name}_gain_over_{over}_ci_low"] = gain.ci_low
            metrics[f"ope_{name}_gain_over_{over}_ci_high"] = gain.ci_high
    metrics["logging_policy_value"] = float(r.mean())
    metrics["ope_decisions"] = float(len(a))  # what every value above rests on
    # On the decisions the values are computed on, so the two describe one policy.
    metrics["policy_action_rate"] = float((t >= 0).mean())
    out["policy"] = {name: value.as_dict() for name, value in estimates.items()}
