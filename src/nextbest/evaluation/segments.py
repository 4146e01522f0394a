"""Measured uplift per segment and channel, treated rows against no-touch rows.

Used as evidence in reasons ("among cardiology HCPs, webinars measured +0.31")
and logged with the run. Each side is a self-normalised inverse-propensity mean
(Hajek), so the traditional policy's habit of touching some HCPs more than
others does not pass for an effect. The no-touch side holds only the untouched
decisions chance chose (a randomized holdout, or a logging policy whose
probabilities were logged), as the uplift model's controls do: in a CRM's history
the reps chose whom to leave alone, and those decisions would measure that choice.

The interval of an effect is cluster-robust by HCP
(:func:`nextbest.evaluation.ope.standard_error`): one HCP's decisions share its
habits, so an HCP decided on weekly is not that many independent outcomes; and
since the same HCP can be on both sides of a cell, the treated and no-touch
means are linearised together, as :func:`nextbest.evaluation.ope.difference`
pairs two policies, rather than given two separate standard errors. Its critical
value is Student's t, as the uplift report's (:mod:`nextbest.loop.report`), on the
degrees of freedom of Welch and Satterthwaite over the two sides' HCPs
(:func:`nextbest.evaluation.ope.welch_dof`), at most the cell's HCPs less one: the
side whose error dominates, often the one with fewer HCPs, sets them. A side whose
outcomes show no spread (no held-out HCP of the segment prescribed) has a clustered
error of 0, as if its mean were exact, and against a few outcomes on the other side
the interval lay above 0, a served reason Fisher's exact test does not support (4 of
30 touched HCPs against 0 of 30 held out: p = 0.11). Each side's squared error is at
least that of a yes/no outcome seen in none of its HCPs, as each arm's in the uplift
report (:func:`nextbest.evaluation.ope.no_spread_variance`, Agresti & Coull).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nextbest.evaluation.ope import (
    critical_value,
    no_spread_variance,
    standard_error,
    welch_dof,
)

MIN_ROWS = 100
# The HCPs are the independent units: with fewer on a side, the cluster-robust
# interval is too narrow (8 HCPs x 60 decisions covered the truth 87% of the time
# for 95%); the uplift report asks as many per arm.
MIN_HCPS = 30
MAX_WEIGHT = 50.0


def _hajek(y: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray]:
    """Weighted mean of ``y`` (n,) and each row's share of its error, ``(n,)``: the
    mean moves by about the sum of these (linearisation; they sum to 0)."""
    mean = float((w * y).sum() / w.sum())
    return mean, w * (y - mean) / w.sum()


def segment_uplift(
    *,
    segment: np.ndarray,
    channel: np.ndarray,
    channels: tuple[str, ...],
    outcome: np.ndarray,
    propensity: np.ndarray,
    hcp: np.ndarray,
    controls: np.ndarray,
) -> dict[str, tuple[float, float, float]]:
    """Effect of each channel versus no touch per segment.

    Args:
        segment: ``(n,)`` segment label of each decision's HCP.
        channel: ``(n,)`` channel code of the decision, -1 for no touch.
        channels: channel names by code.
        outcome: ``(n,)`` outcome (NaN rows are skipped).
        propensity: ``(n,)`` logged probability of what was done (NaN: weight 1).
        hcp: ``(n,)`` the HCP of each decision; the intervals cluster by it.
        controls: ``(n,)`` the untouched decisions chance chose
            (``DecisionRows.controls``); other untouched decisions are left out.

    Returns:
        ``{"<segment>|<channel>": (effect, ci_low, ci_high)}`` for cells with at
        least ``MIN_ROWS`` treated and control rows, from at least ``MIN_HCPS``
        HCPs each; the interval is 95%, Student's t on Welch's degrees of freedom.
    """
    ok = np.isfinite(outcome)
    p = np.asarray(propensity, dtype=np.float64)
    usable = np.isfinite(p) & (p > 0)
    weight = np.where(usable, np.minimum(1.0 / np.where(usable, p, 1.0), MAX_WEIGHT), 1.0)
    labels = pd.Series(np.asarray(segment).astype(str))
    hcp = np.asarray(hcp)
    controls = np.asarray(controls, dtype=bool)
    for arg, values in (("hcp", hcp), ("controls", controls)):
        if len(values) != len(outcome):
            raise ValueError(f"{arg} has {len(values)} rows, outcome has {len(outcome)}")
    out: dict[str, tuple[float, float, float]] = {}
    for name in labels[ok].unique():
        in_segment = ok & (labels == name).to_numpy()
        control = in_segment & (channel < 0) & controls
        if control.sum() < MIN_ROWS or len(np.unique(hcp[control])) < MIN_HCPS:
            continue
        mean_c, share_c = _hajek(outcome[control], weight[control])
        for code, channel_name in enumerate(channels):
            treated = in_segment & (channel == code)
            if treated.sum() < MIN_ROWS or len(np.unique(hcp[treated])) < MIN_HCPS:
                continue
            mean_t, share_t = _hajek(outcome[treated], weight[treated])
            effect = mean_t - mean_c
            cell = treated | control
            share = np.zeros(len(outcome))
            share[treated] = share_t
            share[control] = -share_c
            # standard_error takes per-row terms of a mean: n times each row's share.
            n = int(cell.sum())
            variance = standard_error(n * share[cell], hcp[cell]) ** 2
            # Each side's own squared error, at least the floor of its HCPs (the
            # shortfall added), on its HCPs less one, for Welch's dof.
            sides = []
            for part, rows in ((share_t, treated), (share_c, control)):
                own = standard_error(len(part) * part, hcp[rows]) ** 2
                g_side = len(np.unique(hcp[rows]))
                floor = no_spread_variance(g_side)
                variance += max(0.0, floor - own)
                sides.append((max(own, floor), g_side - 1))
            dof = min(welch_dof(sides), len(np.unique(hcp[cell])) - 1)
            half = critical_value(dof) * float(np.sqrt(variance))
            out[f"{name}|{channel_name}"] = (effect, effect - half, effect + half)
    return out
