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


def gate_figure(decision: dict[str, Any], *, champion: str, challenger: str) -> Any:
    """The off-policy gate's evidence (``GateDecision.as_dict()``) at a glance.

    Left: each estimator's value per decision of the champion and the challenger,
    with 95% intervals. Right, on the scale where the gate decides: the paired
    difference (challenger - champion) and each policy's gain over "no action",
    with a line at zero.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    estimators = [e for e in ("ips", "snips", "dr") if e in decision["champion"]]
    for offset, (role, label, color) in enumerate(
        (
            ("champion", f"champion v{champion}", "tab:blue"),
            ("challenger", f"challenger v{challenger}", "tab:orange"),
        )
    ):
        rows = [(i, decision[role][e]) for i, e in enumerate(estimators) if e in decision[role]]
        y = [i - 0.15 + 0.3 * offset for i, _ in rows]
        value = [v["value"] for _, v in rows]
        err = [
            [v["value"] - v["ci_low"] for _, v in rows],
            [v["ci_high"] - v["value"] for _, v in rows],
        ]
        left.errorbar(value, y, xerr=err, fmt="o", capsize=3, color=color, label=label)
    left.set_yticks(range(len(estimators)), estimators)
    left.invert_yaxis()
    left.set_xlabel("value per decision (95% CI)")
    left.set_title(f"Estimates on {decision['n_decisions']:,} logged decisions")
    # Below the axes: inside, "best" still lands on an interval when they span it.
    left.legend(
        loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, fontsize="small", frameon=False
    )

    gate = decision["estimator"]
    bars = []
    if decision.get("difference"):
        bars.append((f"challenger - champion ({gate})", decision["difference"], "black"))
    for role, color in (("champion", "tab:blue"), ("challenger", "tab:orange")):
        if role in decision.get("vs_no_action", {}):
            bars.append((f"{role} - no action", decision["vs_no_action"][role], color))
    for i, (_, v, color) in enumerate(bars):
        right.errorbar(
            [v["value"]],
            [i],
            xerr=[[v["value"] - v["ci_low"]], [v["ci_high"] - v["value"]]],
            fmt="o",
            capsize=3,
            color=color,
        )
    right.axvline(0.0, color="grey", linewidth=1)
    right.set_yticks(range(len(bars)), [label for label, _, _ in bars])
    right.invert_yaxis()
    right.set_xlabel("paired difference per decision (95% CI)")
    verdict = "passed" if decision["passed"] else "not passed"
    right.set_title(f"Gate ({gate}): {verdict}")
    fig.tight_layout()
    plt.close(fig)
    return fig
