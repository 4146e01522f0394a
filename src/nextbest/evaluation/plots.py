"""Figures logged with every training run (people would rather look than read)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nextbest.learning.train import TrainResult


def training_figures(result: TrainResult) -> dict[str, Any]:
    """Calibration of P(engaged) per channel and Qini curves per action group.

    Both come from the time-based held-out slice (``result.evaluation``); a run
    without one (eval_fraction 0) has no figures.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures: dict[str, Any] = {}
    calibration = result.evaluation.get("calibration", {})
    if calibration:
        fig, ax = plt.subplots(figsize=(5.5, 5))
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
        for name, (mean_p, mean_y) in calibration.items():
            ax.plot(mean_p, mean_y, marker="o", label=name)
        ax.set_xlabel("predicted P(engaged)")
        ax.set_ylabel("observed engagement rate")
        ax.set_title("Calibration on the newest decisions, by channel")
        ax.legend()
        fig.tight_layout()
        plt.close(fig)
        figures["calibration_by_channel"] = fig
    curves = result.evaluation.get("curves", {})
    if curves:
        fig, ax = plt.subplots(figsize=(6, 5))
        for name, curve in curves.items():
            (line,) = ax.plot(
                curve.phi, curve.qini, label=f"{name} (Qini AUC {curve.qini_auc:+.3f})"
            )
            ax.plot([0, 1], [0, curve.qini[-1]], color=line.get_color(), linestyle=":")
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.set_xlabel("share of HCPs targeted, best predicted uplift first")
        ax.set_ylabel("incremental outcome per HCP")
        ax.set_title("Qini curves on the newest decisions (dotted: random targeting)")
        ax.legend(fontsize="small")
        fig.tight_layout()
        plt.close(fig)
        figures["qini_by_channel"] = fig
    return figures
