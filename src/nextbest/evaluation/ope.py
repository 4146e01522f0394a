"""Off-policy value of a target policy from logged decisions.

Shared vocabulary (as in Open Bandit Pipeline): each logged decision has the
``action`` the logging policy took (index, ``-1`` = no touch), its ``reward``
(the outcome, net of cost if the caller subtracts it) and ``pscore`` (the
logged probability of that action). A deterministic target policy is given by
the action it would take on the same decision, ``target`` (``-1`` = no touch).

Estimators (value per decision, with a normal-approximation confidence interval):

- IPS: inverse propensity scoring (Horvitz & Thompson, 1952).
- SNIPS: self-normalised IPS (Swaminathan & Joachims, NeurIPS 2015).
- DR: doubly robust (Dudik, Langford & Li, ICML 2011), using a reward model's
  prediction of the target action ``q_target`` and of the logged action ``q_logged``.

``estimate`` picks an estimator by name; ``difference`` estimates the value of one
target policy minus another's on the same decisions, with a paired interval (the
per-decision terms are subtracted before the variance is taken, so two policies
that mostly agree are compared far more precisely than two separate intervals allow).

Both take optional ``groups`` (``(n,)`` labels, e.g. the HCP of each decision): the
interval is then cluster-robust (the variance of per-group sums of the centred
terms), which is the honest one when the same HCP is decided on several times and
its decisions are not independent. With one decision per group it equals the
ordinary interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

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

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "estimator": self.estimator,
            "value": self.value,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "n": self.n,
            "effective_n": self.effective_n,
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
    n = len(terms)
    if n < 2:
        return float("inf")
    if groups is None:
        return float(terms.std(ddof=1) / np.sqrt(n))
    if len(groups) != n:
        raise ValueError(f"groups has {len(groups)} rows, the decisions {n}")
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    sums = np.bincount(codes.ravel(), weights=terms - terms.mean())
    n_groups = len(sums)
    if n_groups < 2:
        return float("inf")
    return float(np.sqrt(n_groups / (n_groups - 1) * (sums**2).sum()) / n)


def _interval(
    name: str, terms: np.ndarray, weights: np.ndarray, groups: np.ndarray | None = None
) -> PolicyValue:
    n = len(terms)
    value = float(terms.mean())
    se = standard_error(terms, groups)
    ess = float(weights.sum() ** 2 / (weights**2).sum()) if (weights**2).sum() > 0 else 0.0
    return PolicyValue(name, value, value - Z_95 * se, value + Z_95 * se, n, ess)


def ips(
    action: np.ndarray, reward: np.ndarray, pscore: np.ndarray, target: np.ndarray
) -> PolicyValue:
    """Inverse propensity score estimate; shapes ``(n,)``."""
    _check(action, reward, pscore, target)
    w = (action == target) / pscore
    return _interval("ips", w * reward, w)


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
    result = _interval("snips", terms, w)
    return PolicyValue("snips", value, result.ci_low, result.ci_high, result.n, result.effective_n)


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
    return _interval("dr", q_target + w * (reward - q_logged), w)


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
    """
    value, terms, w = _terms(estimator, action, reward, pscore, target, q_target, q_logged)
    result = _interval(estimator, terms, w, groups)
    return PolicyValue(
        estimator, value, result.ci_low, result.ci_high, result.n, result.effective_n
    )


def difference(
    estimator: str,
    action: np.ndarray,
    reward: np.ndarray,
    pscore: np.ndarray,
    target: np.ndarray,
    baseline: np.ndarray,
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
    ``groups`` makes the interval cluster-robust.
    """
    value_t, terms_t, w_t = _terms(estimator, action, reward, pscore, target, q_target, q_logged)
    value_b, terms_b, w_b = _terms(
        estimator, action, reward, pscore, baseline, q_baseline, q_logged
    )
    differs = target != baseline
    result = _interval(f"{estimator}_difference", terms_t - terms_b, (w_t + w_b) * differs, groups)
    return PolicyValue(
        f"{estimator}_difference",
        value_t - value_b,
        result.ci_low,
        result.ci_high,
        result.n,
        result.effective_n,
    )
