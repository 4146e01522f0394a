"""Uplift curves from treated and control rows: Qini, cumulative gain, uplift at k.

Rows are ranked by a predicted uplift ``score``, best first. For the top share
``phi`` of rows, with ``Y_T, N_T`` (``Y_C, N_C``) the weighted outcome sum and
weight of treated (control) rows among them:

- Qini curve (Radcliffe, 2007, "Using control groups to target on predicted
  lift"): ``Q(phi) = (Y_T - Y_C * N_T / N_C) / N``, the incremental outcome per
  row of the whole population gained by treating the top ``phi``.
- Cumulative gain curve: ``G(phi) = (Y_T / N_T - Y_C / N_C) * phi``.
- Uplift at k: ``Y_T / N_T - Y_C / N_C`` within the top ``k``.

Areas are the mean over a grid of ``phi`` in (0, 1]; ``qini_auc`` subtracts the
random-targeting line ``phi * Q(1)``, so 0 means "ranks no better than chance"
and the unit is outcome per row. Weights (e.g. inverse logged propensities) make
the treated and control groups stand for the same population when assignment
was not uniform.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRID = 100


@dataclass(frozen=True)
class UpliftCurve:
    """Curves on ``phi`` (shape ``(GRID + 1,)``, from 0 to 1) and their summaries."""

    phi: np.ndarray
    qini: np.ndarray
    gain: np.ndarray
    qini_auc: float
    auuc: float
    n_treated: int
    n_control: int

    def uplift_at(self, share: float) -> float:
        """``Y_T / N_T - Y_C / N_C`` among the top ``share`` of rows (from the gain curve)."""
        j = round(share * GRID)
        return float(self.gain[j] / self.phi[j]) if j > 0 else float("nan")


def uplift_curve(
    score: np.ndarray,
    treated: np.ndarray,
    outcome: np.ndarray,
    weight: np.ndarray | None = None,
) -> UpliftCurve:
    """Qini and gain curves of ranking rows by ``score``; all inputs shape ``(n,)``.

    Raises ValueError when a group is empty or the shapes disagree.
    """
    score = np.asarray(score, dtype=np.float64)
    treated = np.asarray(treated, dtype=bool)
    outcome = np.asarray(outcome, dtype=np.float64)
    w = np.ones(len(score)) if weight is None else np.asarray(weight, dtype=np.float64)
    for name, arr in (("treated", treated), ("outcome", outcome), ("weight", w)):
        if arr.shape != score.shape:
            raise ValueError(f"{name} has shape {arr.shape}, score has {score.shape}")
    if treated.all() or not treated.any():
        raise ValueError("uplift curves need both treated and control rows")
    if not np.isfinite(score).all() or not np.isfinite(outcome).all():
        raise ValueError("score and outcome must be finite")
    # Ties are broken at random but reproducibly, so a constant score gives the random line.
    jitter = np.random.default_rng(0).random(len(score))
    order = np.lexsort((jitter, -score))
    t, y, w = treated[order], outcome[order], w[order]
    n_t = np.cumsum(w * t)
    n_c = np.cumsum(w * ~t)
    y_t = np.cumsum(w * y * t)
    y_c = np.cumsum(w * y * ~t)
    total = w.sum()
    phi = np.linspace(0.0, 1.0, GRID + 1)
    # Position reached after targeting the top share phi, by weight.
    at = np.searchsorted(np.cumsum(w), phi[1:] * total - 1e-9, side="left")
    at = np.minimum(at, len(w) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(n_c[at] > 0, n_t[at] / np.maximum(n_c[at], 1e-12), 0.0)
        qini = (y_t[at] - y_c[at] * ratio) / total
        mean_t = np.where(n_t[at] > 0, y_t[at] / np.maximum(n_t[at], 1e-12), 0.0)
        mean_c = np.where(n_c[at] > 0, y_c[at] / np.maximum(n_c[at], 1e-12), 0.0)
        gain = (mean_t - mean_c) * phi[1:]
    qini = np.concatenate([[0.0], qini])
    gain = np.concatenate([[0.0], gain])
    qini_auc = float(np.mean(qini[1:] - phi[1:] * qini[-1]))
    return UpliftCurve(
        phi=phi,
        qini=qini,
        gain=gain,
        qini_auc=qini_auc,
        auuc=float(np.mean(gain[1:])),
        n_treated=int(treated.sum()),
        n_control=int((~treated).sum()),
    )
