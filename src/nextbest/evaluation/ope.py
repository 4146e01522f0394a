"""Off-policy value of a target policy from logged decisions.

Shared vocabulary (as in Open Bandit Pipeline): each logged decision has the
``action`` the logging policy took (index, ``-1`` = no touch), its ``reward``
(the outcome, net of cost if the caller subtracts it) and ``pscore`` (the
logged probability of that action). A deterministic target policy is given by
the action it would take on the same decision, ``target`` (``-1`` = no touch).

Estimators (value per decision, with a 95% confidence interval):

- IPS: inverse propensity scoring (Horvitz & Thompson, 1952).
- SNIPS: self-normalised IPS (Swaminathan & Joachims, NeurIPS 2015).
- DR: doubly robust (Dudik, Langford & Li, ICML 2011), using a reward model's
  prediction of the target action ``q_target`` and of the logged action ``q_logged``.

``estimate`` picks an estimator by name; ``difference`` estimates the value of one
target policy minus another's (or the logging policy's own) on the same decisions,
with a paired interval (the
per-decision terms are subtracted before the variance is taken, so two policies
that mostly agree are compared far more precisely than two separate intervals allow).

Both take optional ``groups`` (``(n,)`` labels, e.g. the HCP of each decision): the
interval is then cluster-robust (the variance of per-group sums of the centred
terms), which is the honest one when the same HCP is decided on several times and
its decisions are not independent. With one decision per group it equals the
ordinary interval.

The interval is the estimate plus or minus Student's t critical value
(:func:`critical_value`) times the standard error, not the normal's 1.96: the
error is itself estimated, from the decisions (``n - 1`` degrees of freedom) or,
clustered, from the groups (``G - 1``: Cameron & Miller, "A Practitioner's Guide
to Cluster-Robust Inference", J. Human Resources 50(2), 2015, section VI on few
clusters), and with a dozen HCPs the normal's interval is too short (t on 11
degrees of freedom is 2.20). From 250 HCPs on, the two agree within 0.5%. A paired
IPS or DR difference rests on the HCPs where the two policies choose differently
(their terms are 0 elsewhere whatever the outcome): :func:`difference`, and on
those HCPs' decisions that tried either one's choice: :func:`disagreement`.

Outcomes with no spread (a rare prescription seen on none of the decisions that
tried a policy's choice) would leave only the importance weights' spread, or none,
in the terms: each side of a value or difference keeps at least the error of a
yes/no outcome seen in none of its HCPs (:func:`no_spread_shortfall`, the uplift
report's floor, :func:`no_spread_variance`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from scipy.stats import t as student_t

# The normal's two-sided 95% quantile: Student's t's in the limit of many degrees of freedom.
Z_95 = 1.959963984540054
ESTIMATORS: tuple[str, ...] = ("ips", "snips", "dr")
Estimator = Literal["ips", "snips", "dr"]


@dataclass(frozen=True)
class PolicyValue:
    """Estimated value per decision and its 95% confidence interval."""

    estimator: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    effective_n: float
    # Of Student's t the interval takes: the groups (HCPs) less one, or the decisions.
    dof: float = math.inf

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "estimator": self.estimator,
            "value": self.value,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "n": self.n,
            "effective_n": self.effective_n,
            "dof": self.dof,
        }


def _check(action: np.ndarray, reward: np.ndarray, pscore: np.ndarray, target: np.ndarray) -> None:
    n = len(action)
    for name, arr in (("reward", reward), ("pscore", pscore), ("target", target)):
        if len(arr) != n:
            raise ValueError(f"{name} has {len(arr)} rows, action has {n}")
    if n == 0:
        raise ValueError("no logged decisions to evaluate")
    if not np.all((pscore > 0) & (pscore <= 1)):
        raise ValueError("pscore must be in (0, 1] for every logged decision")
    if not np.all(np.isfinite(reward)):
        raise ValueError("reward must be finite for every logged decision")


def standard_error(terms: np.ndarray, groups: np.ndarray | None) -> float:
    """Standard error of ``terms.mean()``; cluster-robust over ``groups`` when given.

    Cluster-robust (Liang & Zeger, 1986): ``G / (G - 1) * sum_g (sum_{i in g} (t_i - mean))^2
    / n^2`` over the ``G`` groups; with singleton groups it is ``std(ddof=1) / sqrt(n)``.
    """
    return clustered_error(terms, groups)[0]


def clustered_error(
    terms: np.ndarray, groups: np.ndarray | None, informative: np.ndarray | None = None
) -> tuple[float, float]:
    """:func:`standard_error` of ``terms.mean()`` and the degrees of freedom it rests
    on, for :func:`critical_value`: ``n - 1`` for ``n`` terms, ``G - 1`` for ``G``
    groups when clustered (the groups are the independent units). Fewer than two
    terms or groups: an infinite error on 0 degrees of freedom.

    ``informative`` ``(n,)`` bool marks the terms not known to be 0 before any outcome
    is seen (a paired difference's decisions where the two policies choose
    differently). The others are left out: the error is that of the mean over the
    ``m`` informative terms, times their share ``m / n`` (known without error), and
    rests on the groups (or terms) among them, less one. Those zeros carry no
    evidence of the spread, and centred at the mean they would be counted as if
    they did; all informative, it is the error above.
    """
    n = len(terms)
    if informative is not None and not np.all(informative):
        if len(informative) != n:
            raise ValueError(f"informative has {len(informative)} rows, the decisions {n}")
        if groups is not None and len(groups) != n:
            raise ValueError(f"groups has {len(groups)} rows, the decisions {n}")
        kept = np.flatnonzero(informative)
        se, dof = clustered_error(terms[kept], None if groups is None else np.asarray(groups)[kept])
        # None informative or one: no error can be estimated (inf, not 0 x inf).
        return (se * len(kept) / n if math.isfinite(se) else se), dof
    if n < 2:
        return float("inf"), 0.0
    if groups is None:
        return float(terms.std(ddof=1) / np.sqrt(n)), float(n - 1)
    if len(groups) != n:
        raise ValueError(f"groups has {len(groups)} rows, the decisions {n}")
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    sums = np.bincount(codes.ravel(), weights=terms - terms.mean())
    n_groups = len(sums)
    if n_groups < 2:
        return float("inf"), 0.0
    se = float(np.sqrt(n_groups / (n_groups - 1) * (sums**2).sum()) / n)
    return se, float(n_groups - 1)


def critical_value(dof: float, tail: float = 0.025) -> float:
    """Student's t quantile leaving ``tail`` above it with ``dof`` degrees of freedom:
    2.20 for 11, 2.00 for 58, 4.30 for 2, 1.96 (the normal's) in the limit. ``tail``
    0.025: the two-sided 95% interval. An error on fewer than one degree of freedom
    (from one HCP) bounds nothing: infinite."""
    if dof < 1:
        return math.inf
    return float(student_t.isf(tail, dof))


def welch_dof(parts: Sequence[tuple[float, float]]) -> float:
    """Degrees of freedom of a sum of independently estimated squared errors, each
    ``(variance, its degrees of freedom)``: ``(sum v)^2 / sum (v^2 / dof)``, the
    approximation of Satterthwaite (Biometrics Bulletin 2(6), 1946) and Welch
    (Biometrika 34, 1947). The part whose error dominates sets them; all parts 0
    (nothing varies): infinite, the caller bounds it by its clusters."""
    total = sum(v for v, _ in parts)
    if total <= 0:
        return math.inf
    if any(dof <= 0 and v > 0 for v, dof in parts):
        return 0.0
    return total**2 / sum(v**2 / dof for v, dof in parts if v > 0)


def no_spread_variance(n_hcps: int) -> float:
    """The smallest squared standard error a mean outcome over ``n_hcps`` HCPs is
    given (an arm of the uplift report, :func:`nextbest.loop.report.difference_error`;
    a side of a segment's effect, :func:`nextbest.evaluation.segments.segment_uplift`):
    that of a yes/no outcome seen in none (or all) of them, by Agresti &
    Coull's adjusted Wald interval (The American Statistician 52(2), 1998: two
    successes and two failures added, ``p = 2 / (G + 4)``, variance
    ``p (1 - p) / (G + 4)``), in the outcome's unit (one prescription, one yes).

    An arm whose outcomes are all alike (no HCP of a small segment prescribed) has
    a clustered error of 0, and its mean looked exact: the interval of two such arms
    was [0, 0], and against an arm with a few events it read as a difference where
    Fisher's exact test finds none (0 of 30 against 4 of 30: "serving hurts", p =
    0.11). The HCPs are the units, as for the clustered error. An arm with a real
    spread keeps its own error, which is larger except at a handful of HCPs. An
    outcome in other units (revenue) gets a floor of one of those units.
    """
    p = 2.0 / (n_hcps + 4)
    return p * (1.0 - p) / (n_hcps + 4)


def no_spread_shortfall(
    reward: np.ndarray,
    sides: Sequence[np.ndarray],
    groups: np.ndarray | None,
    share: float = 1.0,
) -> float:
    """What a policy value's squared standard error lacks when the outcomes it rests on
    show no spread: each side, ``(n,)`` bool (the decisions that tried a policy's
    choice, where it is valued), adds how far the squared error of its mean
    ``reward`` (clustered over ``groups``; the decisions when None) falls short of
    :func:`no_spread_variance` of its groups, times ``share`` squared (the decisions
    whose mean the sides measure, over all ``n``: the differing ones of a paired
    difference). A side of fewer than two groups has no error of its own.

    A rare outcome (a prescription after 2% of visits) is often seen on none of the
    few decisions that tried one policy's choice: every one of their rewards is then
    minus the action's cost, the estimator's terms vary only with the importance
    weights, and its interval read the cost saved by not visiting as a certain gain
    (the gate passed it in 45% of seeded logs where the visits' prescriptions were
    worth their cost, :func:`difference`). The outcomes' spread, not the weights',
    is what such a side's error lacks; with a real spread it adds nothing.
    """
    total = 0.0
    for tried in sides:
        kept = np.flatnonzero(tried)
        units = kept if groups is None else np.asarray(groups)[kept]
        own, _ = clustered_error(np.asarray(reward, dtype=np.float64)[kept], units)
        floor = no_spread_variance(len(np.unique(units)))
        total += max(0.0, floor - (own**2 if math.isfinite(own) else 0.0))
    return share**2 * total


def _interval(
    name: str,
    terms: np.ndarray,
    weights: np.ndarray,
    groups: np.ndarray | None = None,
    informative: np.ndarray | None = None,
    shortfall: float = 0.0,
) -> PolicyValue:
    """The value ``terms.mean()`` and its interval, the squared error raised by
    ``shortfall`` (:func:`no_spread_shortfall`) when it can be estimated at all."""
    n = len(terms)
    value = float(terms.mean())
    se, dof = clustered_error(terms, groups, informative)
    se = math.sqrt(se**2 + shortfall) if math.isfinite(se) else se
    # 0 x an infinite critical value (no spread, from one group) is still no interval.
    half = math.inf if not math.isfinite(se) or dof < 1 else critical_value(dof) * se
    ess = float(weights.sum() ** 2 / (weights**2).sum()) if (weights**2).sum() > 0 else 0.0
    return PolicyValue(name, value, value - half, value + half, n, ess, dof)


def ips(
    action: np.ndarray, reward: np.ndarray, pscore: np.ndarray, target: np.ndarray
) -> PolicyValue:
    """Inverse propensity score estimate; shapes ``(n,)``."""
    _check(action, reward, pscore, target)
    w = (action == target) / pscore
    return _interval("ips", w * reward, w, shortfall=no_spread_shortfall(reward, [w > 0], None))


def snips(
    action: np.ndarray, reward: np.ndarray, pscore: np.ndarray, target: np.ndarray
) -> PolicyValue:
    """Self-normalised IPS; the interval uses the delta method."""
    _check(action, reward, pscore, target)
    w = (action == target) / pscore
    mean_w = w.mean()
    if mean_w == 0:
        raise ValueError(
            "the target policy never agrees with the logged actions: SNIPS is undefined"
        )
    value = float((w * reward).sum() / w.sum())
    terms = value + w * (reward - value) / mean_w  # influence function of the ratio estimator
    result = _interval("snips", terms, w, shortfall=no_spread_shortfall(reward, [w > 0], None))
    return replace(result, value=value)


def doubly_robust(
    action: np.ndarray,
    reward: np.ndarray,
    pscore: np.ndarray,
    target: np.ndarray,
    q_target: np.ndarray,
    q_logged: np.ndarray,
) -> PolicyValue:
    """Doubly robust estimate: ``q_target + 1[a = target] / pscore * (reward - q_logged)``."""
    _check(action, reward, pscore, target)
    w = (action == target) / pscore
    shortfall = no_spread_shortfall(reward, [w > 0], None)
    return _interval("dr", q_target + w * (reward - q_logged), w, shortfall=shortfall)


def _terms(
    estimator: str,
    action: np.ndarray,
    reward: np.ndarray,
    pscore: np.ndarray,
    target: np.ndarray,
    q_target: np.ndarray | None,
    q_logged: np.ndarray | None,
) -> tuple[float, np.ndarray, np.ndarray]:
    """(value, per-decision influence terms, importance weights) of one estimator."""
    _check(action, reward, pscore, target)
    w = (action == target) / pscore
    if estimator == "ips":
        terms = w * reward
        return float(terms.mean()), terms, w
    if estimator == "snips":
        if w.sum() == 0:
            raise ValueError(
                "the target policy never agrees with the logged actions: SNIPS is undefined"
            )
        value = float((w * reward).sum() / w.sum())
        return value, value + w * (reward - value) / w.mean(), w
    if estimator == "dr":
        if q_target is None or q_logged is None:
            raise ValueError("the dr estimator needs q_target and q_logged (a reward model)")
        if len(q_target) != len(action) or len(q_logged) != len(action):
            raise ValueError(
                f"q_target has {len(q_target)} and q_logged {len(q_logged)} rows, "
                f"action has {len(action)}"
            )
        terms = q_target + w * (reward - q_logged)
        return float(terms.mean()), terms, w
    raise ValueError(f"unknown estimator {estimator!r}: use one of {', '.join(ESTIMATORS)}")


def estimate(
    estimator: str,
    action: np.ndarray,
    reward: np.ndarray,
    pscore: np.ndarray,
    target: np.ndarray,
    *,
    q_target: np.ndarray | None = None,
    q_logged: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> PolicyValue:
    """Value per decision of ``target`` by the named estimator (``ips``, ``snips``, ``dr``).

    Shapes ``(n,)``; ``q_target`` / ``q_logged`` are needed for ``dr`` only; ``groups``
    makes the interval cluster-robust (decisions of one group are not independent).
    The decisions that tried the target's choices keep at least the error of a yes/no
    outcome seen in none of their groups (:func:`no_spread_shortfall`).
    """
    value, terms, w = _terms(estimator, action, reward, pscore, target, q_target, q_logged)
    shortfall = no_spread_shortfall(reward, [w > 0], groups)
    return replace(_interval(estimator, terms, w, groups, shortfall=shortfall), value=value)


@dataclass(frozen=True)
class Disagreement:
    """Where two deterministic policies choose differently, and how much of it the
    logging policy tried: ``decisions`` and ``groups`` (HCPs; the decisions when there
    are none) where they differ, and on those decisions the effective sample size of
    each one's importance weights (``target_effective_n``, ``baseline_effective_n``).

    Only a differing decision whose logged action is one policy's choice carries
    evidence on it; the paired difference rests on both kinds. Few of either, and its
    t interval rests on a handful of large weighted corrections, whose sums are far
    from normal when the reward model is off: :func:`difference`'s interval then
    promises more than it keeps.
    """

    decisions: int
    groups: int
    target_effective_n: float
    baseline_effective_n: float

    @property
    def effective_n(self) -> float:
        """The lesser of the two effective sample sizes: the evidence on the side tried least."""
        return min(self.target_effective_n, self.baseline_effective_n)


def _effective_n(weights: np.ndarray) -> float:
    """Kish's effective sample size of importance weights: ``(sum w)^2 / sum w^2``."""
    squares = float((weights**2).sum())
    return float(weights.sum() ** 2 / squares) if squares > 0 else 0.0


def disagreement(
    action: np.ndarray,
    pscore: np.ndarray,
    target: np.ndarray,
    baseline: np.ndarray,
    groups: np.ndarray | None = None,
) -> Disagreement:
    """:class:`Disagreement` of ``target`` and ``baseline`` on the logged decisions;
    shapes ``(n,)`` as :func:`difference`'s."""
    n = len(action)
    for name, arr in (("pscore", pscore), ("target", target), ("baseline", baseline)):
        if len(arr) != n:
            raise ValueError(f"{name} has {len(arr)} rows, action has {n}")
    if groups is not None and len(groups) != n:
        raise ValueError(f"groups has {len(groups)} rows, the decisions {n}")
    differs = target != baseline
    n_groups = int(differs.sum()) if groups is None else len(np.unique(np.asarray(groups)[differs]))
    return Disagreement(
        decisions=int(differs.sum()),
        groups=n_groups,
        target_effective_n=_effective_n((action == target) * differs / pscore),
        baseline_effective_n=_effective_n((action == baseline) * differs / pscore),
    )


def difference(
    estimator: str,
    action: np.ndarray,
    reward: np.ndarray,
    pscore: np.ndarray,
    target: np.ndarray,
    baseline: np.ndarray | None,
    *,
    q_target: np.ndarray | None = None,
    q_baseline: np.ndarray | None = None,
    q_logged: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> PolicyValue:
    """Value of ``target`` minus value of ``baseline`` on the same decisions.

    Both are deterministic target policies (action per decision, ``-1`` = no touch),
    shapes ``(n,)``. The 95% interval is paired: it comes from the per-decision
    difference of the two estimators' influence terms. For DR that difference is
    ``q(target) - q(baseline)`` plus the importance-weighted residual of the logged
    outcome where the logged action is one of the two (and exactly 0 where the two
    policies agree), so outcome noise on the decisions they share does not enter.
    ``effective_n`` is that of the decisions where the two policies disagree (only
    those carry information about the difference); ``n`` counts all decisions.
    ``groups`` makes the interval cluster-robust. Its critical value is Student's t on
    the pairs less one (the groups less one, clustered): each decision is one pair.

    IPS's and DR's terms are 0 whatever the outcome where the two policies agree, so
    those decisions (and the groups with no other) say nothing of the error: it is
    taken over the decisions where they disagree (times their share), on the groups
    among them less one (:func:`clustered_error`'s ``informative``). Two policies that
    differ on 8 of 2,000 HCPs are compared on Student's t with 7 degrees of freedom,
    not 1,999. SNIPS's normalisation moves every term, so its error takes them all.

    Each policy's outcomes where the two differ are seen on the decisions that tried
    its choice: a side whose rewards there show less spread than a yes/no outcome seen
    in none of its HCPs adds the shortfall (:func:`no_spread_shortfall`), times the
    differing decisions' share squared.

    ``baseline`` None is the logging policy itself: its value is the mean observed
    ``reward`` (no estimator needed, and no ``q_baseline``), each decision's term is
    its reward, and the two can choose differently wherever the logged action was not
    the target's for certain (``pscore`` 1). The target's terms and the outcomes move
    together on the decisions that tried its choice, so the paired interval is
    narrower than one from the two values' own errors.

    A target that takes the logged action on every decision the logging policy took
    for certain (IPS and DR: no term can be other than 0) gains exactly 0, and its
    interval is 0 too. (Two target policies that agree everywhere keep no interval:
    no error can be estimated, and the gate reports no difference for them.)
    """
    if baseline is None and q_baseline is not None:
        raise ValueError(
            "q_baseline is for a baseline policy's actions: the logging policy "
            "(baseline None) is valued by its observed rewards, pass no q_baseline"
        )
    value_t, terms_t, w_t = _terms(estimator, action, reward, pscore, target, q_target, q_logged)
    if baseline is None:  # the logging policy: on its own decisions, its outcomes
        value_b, terms_b, w_b = float(reward.mean()), reward, np.ones(len(reward))
        differs = (action != target) | (pscore < 1)
        tried_baseline = differs
    else:
        value_b, terms_b, w_b = _terms(
            estimator, action, reward, pscore, baseline, q_baseline, q_logged
        )
        differs = target != baseline
        tried_baseline = differs & (action == baseline)
    terms = terms_t - terms_b
    # A term that is not 0 where they agree (a reward model that values one action two
    # ways) is evidence like any other: only the zeros that are known in advance leave.
    informative = None if estimator == "snips" else differs | (terms != 0)
    if baseline is None and informative is not None and not informative.any():
        zero = _interval(f"{estimator}_difference", terms, np.zeros(len(terms)), groups)
        return replace(zero, value=0.0, ci_low=0.0, ci_high=0.0)
    # Each policy's outcomes where they differ are seen on the decisions that tried its choice.
    sides = [differs & (action == target), tried_baseline]
    shortfall = no_spread_shortfall(reward, sides, groups, share=float(differs.mean()))
    result = _interval(
        f"{estimator}_difference",
        terms,
        (w_t + w_b) * differs,
        groups,
        informative,
        shortfall=shortfall,
    )
    return replace(result, value=value_t - value_b)
