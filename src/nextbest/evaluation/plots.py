"""Figures logged with every training run (people would rather look than read)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from nextbest.evaluation.ope import ESTIMATORS, Z_95

# The unit of every off-policy value drawn (the gate's figure and the training run's).
NET_VALUE = "net value per decision: outcome - cost (95% CI)"

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from nextbest.learning.train import TrainResult


def training_figures(result: TrainResult) -> dict[str, Any]:
    """Calibration of P(engaged) per channel, the learned policy's off-policy value
    and Qini curves per action group.

    All come from the time-based held-out slice (``result.evaluation``); a run
    without one (eval_fraction 0) has no figures, and one without an uplift model
    no Qini curves (its policy value figure says why it has no value). A channel of
    the model with too few held-out decisions for a line is named on the figure ("not
    enough data"), never silently left out.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nextbest.evaluation.offline import MIN_GROUP_ROWS

    figures: dict[str, Any] = {}
    if not result.evaluation:
        return figures
    channels = list(result.model.space.channels)
    n_eval = result.metrics.get("eval_decisions")
    on = f"the {n_eval:,.0f} newest decisions" if n_eval else "the newest decisions"
    calibration = result.evaluation.get("calibration", {})
    fig, ax = plt.subplots(figsize=(5.5, 5.3))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    for name, (mean_p, mean_y, n) in calibration.items():
        # A decile of a few tied predictions reads 0 or 1: its interval says how little
        # that weighs beside the deciles of many decisions.
        low, high = wilson_interval(mean_y, n)
        # At a rate of 0 or 1 the bound is the rate itself, give or take rounding.
        below, above = np.maximum(mean_y - low, 0.0), np.maximum(high - mean_y, 0.0)
        ax.errorbar(mean_p, mean_y, yerr=[below, above], marker="o", capsize=2, label=name)
    ax.set_xlabel("predicted P(engaged) (a point: a tenth of the channel's contacts)")
    ax.set_ylabel("observed engagement rate (95% CI)")
    ax.set_title(f"Calibration on {on}, by channel", fontsize="medium")
    ax.legend(loc="upper left", fontsize="small")
    _not_enough(
        fig,
        ax,
        [c for c in channels if c not in calibration],
        f"fewer than {MIN_GROUP_ROWS} held-out contacts, or all engaged alike",
        drawn=bool(calibration),
    )
    plt.close(fig)
    figures["calibration_by_channel"] = fig
    if result.model.uplift_model is None:
        why = (
            "this run has no uplift model: it ranks by preference x value, expected "
            "engagement rather than outcome - cost (notes.txt says why)"
        )
    else:
        rows = result.eval_rows
        logged = 0
        if rows is not None:
            known = np.isfinite(rows.outcome) & np.isfinite(rows.propensity)
            logged = int((known & (rows.propensity > 0)).sum())
        why = (
            f"{logged:,} held-out decisions with an outcome carry a logged propensity "
            f"(need {MIN_GROUP_ROWS})"
        )
    figures["policy_value_by_estimator"] = policy_value_figure(result.metrics, why_none=why)
    if result.model.uplift_model is None:
        return figures
    curves = result.evaluation.get("curves", {})
    fig, ax = plt.subplots(figsize=(6, 5.3))
    for name, curve in curves.items():
        (line,) = ax.plot(curve.phi, curve.qini, label=f"{name} (Qini AUC {curve.qini_auc:+.3f})")
        ax.plot([0, 1], [0, curve.qini[-1]], color=line.get_color(), linestyle=":")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_xlabel("share of decisions targeted, highest predicted uplift first")
    ax.set_ylabel("incremental outcome per decision, cumulative")
    ax.set_title(f"Qini curves on {on}\n(dotted: random targeting)", fontsize="medium")
    if curves:
        ax.legend(fontsize="small")
    _not_enough(
        fig,
        ax,
        [c for c in channels if c not in curves],
        f"fewer than {MIN_GROUP_ROWS} held-out contacts or chance-chosen no-touch "
        "decisions with an outcome",
        drawn=bool(curves),
    )
    plt.close(fig)
    figures["qini_by_channel"] = fig
    return figures


def policy_value_figure(
    metrics: dict[str, float], *, why_none: str, estimator: str | None = None
) -> Figure:
    """The learned policy's off-policy value per decision by estimator, from a run's
    ``metrics`` (``ope_<estimator>_policy_value``, ``_ci_low``, ``_ci_high``,
    ``ope_decisions``), with 95% intervals, beside the logging policy's average
    (``logging_policy_value``) and doing nothing by ``estimator`` (the gate's default
    when None: ``ope_<estimator>_no_action_value``, when some logged decision did
    nothing); the title says the share of decisions it acts on
    (``policy_action_rate``). Under the axes, by the same ``estimator``, what the
    learned policy adds over the logged policy and over doing nothing, from the
    paired differences (``ope_<estimator>_gain_over_logged``, ``_over_nothing``, each
    with ``_ci_low`` and ``_ci_high``): the two values share their decisions, so
    their own intervals side by side say less. The learned policy's value by that
    estimator minus either reference drawn is the gain said under it. Without a
    value, ``why_none`` is said in place of the axes.
    """
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    if "ope_decisions" not in metrics:
        ax.set_title("Learned policy's value per decision", fontsize="medium")
        _in_place_of_axes(
            fig, ax, "no policy value:\n" + textwrap.fill(why_none, 50, break_on_hyphens=False)
        )
        plt.close(fig)
        return fig
    n = int(metrics["ope_decisions"])
    by = estimator or gate_estimator()
    logged = metrics["logging_policy_value"]
    nothing = metrics.get(f"ope_{by}_no_action_value")
    names = [key.upper() for key in ESTIMATORS]
    intervals = {
        key.upper(): (
            metrics[f"ope_{key}_policy_value"],
            metrics[f"ope_{key}_ci_low"],
            metrics[f"ope_{key}_ci_high"],
        )
        for key in ESTIMATORS
        if f"ope_{key}_policy_value" in metrics
    }
    digits = _digits([high - low for _, low, high in intervals.values()])
    labels = []
    for name in names:
        if name in intervals:
            value, low, high = intervals[name]
            said = f"{value:+.{digits}f} ({low:+.{digits}f} to {high:+.{digits}f})"
        else:  # SNIPS: no logged decision chose what the learned policy would
            said = "undefined: no logged decision\nchose as it would"
        labels.append(f"learned policy, {name}\n{said}")
    y = [i for i, name in enumerate(names) if name in intervals]
    values, lows, highs = (np.array(column) for column in zip(*intervals.values(), strict=True))
    ax.errorbar(
        values,
        y,
        xerr=[values - lows, highs - values],
        fmt="o",
        capsize=3,
        color="tab:orange",
        label="learned policy",
    )
    references = [("logged policy (its average)", logged, "black", "D", "--")]
    if nothing is not None:
        references.append((f"no action ({by.upper()})", nothing, "grey", "s", ":"))
    for i, (label, at, color, marker, line) in enumerate(references, start=len(labels)):
        ax.plot([at], [i], marker=marker, color=color, linestyle="none", label=label)
        ax.axvline(at, color=color, linestyle=line, linewidth=0.8)
        labels.append(f"{label}\n{at:+.{digits}f}")
    ax.set_yticks(range(len(labels)), labels, fontsize="small")
    ax.invert_yaxis()
    ax.set_xlabel(NET_VALUE)
    acts = metrics.get("policy_action_rate")
    on = "" if acts is None else f"it acts on {acts:.0%} of them; "
    ax.set_title(
        f"Learned policy's value on {n:,} held-out decisions\n"
        f"({on}intervals cluster-robust by HCP)",
        fontsize="medium",
    )
    # A sentence a line: 100 characters of the small font fit the figure's width.
    _under_axes(fig, gains_said(metrics, by), width=100)
    plt.close(fig)
    return fig


def gate_estimator() -> str:
    """The estimator the off-policy gate decides on when ``training/gate.yaml`` does
    not say (:class:`nextbest.loop.gate.GateConfig`)."""
    from nextbest.loop.gate import GateConfig

    return str(GateConfig.model_fields["estimator"].default)


def gains_said(metrics: dict[str, float], estimator: str) -> list[str]:
    """One line per reference (the logged policy, doing nothing) of what the learned
    policy adds over it per decision by ``estimator``, from the paired difference's
    metrics: "adds" or "falls short" when its interval leaves out 0, else "not
    distinguishable". Nothing for a reference without them."""
    lines = []
    for over, what in (("logged", "the logged policy"), ("nothing", "doing nothing")):
        key = f"ope_{estimator}_gain_over_{over}"
        if key not in metrics:
            continue
        value, low, high = (metrics[key], metrics[f"{key}_ci_low"], metrics[f"{key}_ci_high"])
        digits = _digits([high - low])
        said = f"{value:+.{digits}f} ({low:+.{digits}f} to {high:+.{digits}f}) per decision"
        by = f"by {estimator.upper()}"
        if low > 0:
            lines.append(f"the learned policy adds {said} over {what}, {by}")
        elif high < 0:
            lines.append(f"the learned policy falls short of {what}: {said}, {by}")
        else:
            lines.append(f"not distinguishable from {what}: {said}, {by}")
    return lines


def _digits(widths: list[float]) -> int:
    """Decimals that show the narrowest finite interval width to two digits (0 to 6)."""
    finite = [w for w in widths if np.isfinite(w) and w > 0]
    if not finite:
        return 3
    return int(np.clip(1 - np.floor(np.log10(min(finite))), 0, 6))


def wilson_interval(rate: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """95% Wilson score interval of binomial proportions ``rate`` out of ``n``, shapes
    ``(k,)``: within [0, 1] and not empty at 0 or 1 (Wilson, 1927, JASA 22:209)."""
    z2 = Z_95**2
    centre = (rate + z2 / (2 * n)) / (1 + z2 / n)
    half = Z_95 * np.sqrt(rate * (1 - rate) / n + z2 / (4 * n**2)) / (1 + z2 / n)
    return centre - half, centre + half


def _not_enough(fig: Figure, ax: Axes, missing: list[str], why: str, *, drawn: bool) -> None:
    """Name the channels without a line under the axes; with no line ``drawn``, in them."""
    import textwrap

    if not drawn:
        _in_place_of_axes(
            fig,
            ax,
            "not enough data for any channel:\n" + textwrap.fill(why, 45, break_on_hyphens=False),
        )
        return
    _under_axes(fig, [f"not enough data for {', '.join(missing)}: {why}"] if missing else [])


def _in_place_of_axes(fig: Figure, ax: Axes, said: str) -> None:
    """Why a figure has nothing to draw, where its axes would be (no empty axes)."""
    ax.set_axis_off()
    ax.text(0.5, 0.5, said, transform=ax.transAxes, ha="center", va="center")
    fig.tight_layout()


def _under_axes(fig: Figure, lines: list[str], width: int = 80) -> None:
    """Plain sentences under the axes, each wrapped at ``width`` characters, with room
    made for them."""
    import textwrap

    if not lines:
        fig.tight_layout()
        return
    said = "\n".join(textwrap.fill(line, width, break_on_hyphens=False) for line in lines)
    fig.text(0.02, 0.02, said, fontsize="small", va="bottom")
    height = fig.get_figheight()
    fig.tight_layout(rect=(0, (0.2 * (said.count("\n") + 1) + 0.1) / height, 1, 1))


def _row_note(ax: Axes, y: float, said: str) -> None:
    """A small grey note across the middle of ``ax`` at row ``y``."""
    ax.text(
        0.5,
        y,
        said,
        transform=ax.get_yaxis_transform(),
        ha="center",
        va="center",
        fontsize="small",
        color="dimgrey",
    )


def _no_difference(decision: dict[str, Any]) -> str:
    """What the gate figure says in place of a paired difference the gate did not
    estimate: the reason it stopped at, which is its first (too few decisions, an
    estimator a policy leaves undefined, two policies that always agree), without
    its asides in brackets, in lines that fit the panel (the reasons printed and
    ``decision.json`` have it whole)."""
    import re
    import textwrap

    reasons = decision.get("reasons") or []
    said = re.sub(r" \([^()]*\)", "", reasons[0]) if reasons else "no difference estimated"
    return textwrap.fill(said, 46, break_on_hyphens=False)


def _not_decided_on(decision: dict[str, Any]) -> str:
    """What the gate figure says under a paired difference it drew but the gate did
    not decide on (``difference_not_decided_on``: too few decisions), "" when it
    decided on it: "not decided on: below min_decisions", the counts left to the
    title (the decisions) and the reasons (the gate's minimum)."""
    why = decision.get("difference_not_decided_on") or ""
    return f"not decided on: {why.split(':')[0]}" if why else ""


def gate_figure(
    decision: dict[str, Any], *, champion: str, challenger: str, judged: str = "challenger"
) -> Any:
    """The off-policy gate's evidence (``GateDecision.as_dict()``) at a glance.

    Left: each estimator's value per decision of the champion and the challenger,
    with 95% intervals. Right, on the scale where the gate decides: the paired
    difference (challenger - champion) and each policy's gain over "no action",
    with a line at zero; a difference shown below ``min_decisions``, which the gate
    did not decide on (``difference_not_decided_on``), grey and hollow, said under
    it. ``judged``: the challenger's name, as the gate's reasons
    and the CLI give it ("challenger", or "version 3" for one ``--version`` named
    that the alias does not).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    estimators = [e for e in ESTIMATORS if e in decision["champion"]]
    for offset, (role, label, color) in enumerate(
        (
            ("champion", f"champion v{champion}", "tab:blue"),
            (
                "challenger",
                f"challenger v{challenger}" if judged == "challenger" else judged,
                "tab:orange",
            ),
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
    for tick in left.get_yticklabels():  # the estimate the gate decides on stands out
        if tick.get_text() == decision["estimator"]:
            tick.set_fontweight("bold")
    left.invert_yaxis()
    left.set_xlabel(NET_VALUE)
    left.set_title(f"Estimates on {decision['n_decisions']:,} logged decisions")
    # Below the axes: inside, "best" still lands on an interval when they span it.
    left.legend(
        loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, fontsize="small", frameon=False
    )

    gate = decision["estimator"]
    # The difference's row is there even when the gate estimated none, saying why:
    # an empty panel under "not passed" read as a plot that had failed.
    bars: list[tuple[str, dict[str, Any] | None, str]] = [
        (f"{judged} - champion ({gate})", decision.get("difference") or None, "black")
    ]
    for role, name, color in (
        ("champion", "champion", "tab:blue"),
        ("challenger", judged, "tab:orange"),
    ):
        if role in decision.get("vs_no_action", {}):
            bars.append((f"{name} - no action ({gate})", decision["vs_no_action"][role], color))
    for i, (_, v, color) in enumerate(bars):
        if v is None:
            _row_note(right, i, _no_difference(decision))
            continue
        # Below min_decisions the difference is drawn, to show how far the evidence is
        # from a decision, but grey and hollow, and said under it: the gate did not
        # decide on it, whichever side of zero it lies.
        undecided = i == 0 and _not_decided_on(decision)
        notes = [undecided] if undecided else []
        if undecided:
            color = "grey"
        if not np.isfinite(v["ci_high"] - v["ci_low"]):
            # Its error rests on one HCP (the two choose differently for one only): a
            # bare dot read as an exact difference. Hollow, and said beside it.
            right.plot([v["value"]], [i], "o", mfc="none", color=color)
            notes.insert(0, "no interval: an error needs two HCPs")
        else:
            right.errorbar(
                [v["value"]],
                [i],
                xerr=[[v["value"] - v["ci_low"]], [v["ci_high"] - v["value"]]],
                fmt="o",
                capsize=3,
                color=color,
                mfc="none" if undecided else color,
            )
        if notes:  # under its dot (the axis runs top down)
            _row_note(right, i + 0.3, "\n".join(notes))
    if any(v is not None for _, v, _ in bars):
        right.axvline(0.0, color="grey", linewidth=1)
    else:  # nothing on the scale: no ticks of a range nothing was drawn in
        right.set_xticks([])
    right.set_yticks(range(len(bars)), [label for label, _, _ in bars])
    right.set_ylim(max(len(bars), 1) - 0.5, -0.5)  # top down, room under each row for a note
    right.locator_params(axis="x", nbins=5)  # small differences have long tick labels
    right.set_xlabel("paired difference in net value per decision (95% CI)")
    verdict = "passed" if decision["passed"] else "not passed"
    right.set_title(f"Gate ({gate}): {verdict}")
    fig.tight_layout()
    plt.close(fig)
    return fig
