"""Figures logged with every training run (people would rather look than read)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from nextbest.learning.train import TrainResult


def training_figures(result: TrainResult) -> dict[str, Any]:
    """Calibration of P(engaged) per channel on the evaluation slice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.eval_rows
    if rows is None or not rows.treated.any():
        return {}
    model = result.model
    treated = rows.treated
    p = model.engagement.engage_probability(rows.X[treated])
    y = rows.engaged[treated]
    channel = model.action_channel_code[rows.action_rows[treated]]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    for code, name in enumerate(model.space.channels):
        mask = channel == code
        if mask.sum() < 50:
            continue
        bins = np.quantile(p[mask], np.linspace(0, 1, 11))
        which = np.clip(np.searchsorted(bins, p[mask], side="right") - 1, 0, 9)
        mean_p = [p[mask][which == b].mean() for b in range(10) if (which == b).any()]
        mean_y = [y[mask][which == b].mean() for b in range(10) if (which == b).any()]
        ax.plot(mean_p, mean_y, marker="o", label=name)
    ax.set_xlabel("predicted P(engaged)")
    ax.set_ylabel("observed engagement rate")
    ax.set_title("Calibration on the newest decisions, by channel")
    ax.legend()
    fig.tight_layout()
    plt.close(fig)
    return {"calibration_by_channel": fig}
