"""Draw the benchmarks' figures from the JSON they write to bench/results/.

    python bench/plots.py [--results bench/results] [JSON ...]

Each JSON gets a PNG of the same name beside it (``loop.json`` -> ``loop.png``).
The benchmark is told by the JSON's ``benchmark`` key or, for those without one,
by its file name up to the first ``_`` (``loop_softmax.json`` is a loop run).
An older run without some key, or a run with ``--skip-*`` options, is drawn with
what it has: each panel or series it lacks is named, in the figure and on the
console, never an error. bench/loop.py, bench/quality.py and bench/feedback.py
call ``draw`` after writing their JSON; ``make bench-serve`` runs this script
after bench/serve.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.text import Annotation
from matplotlib.ticker import StrMethodFormatter

RESULTS = Path(__file__).resolve().parent / "results"
DPI = 100
# The gate_figure colours (src/nextbest/evaluation/plots.py): champion blue, challenger orange.
CHAMPION, CHALLENGER = "tab:blue", "tab:orange"
# Counts on an axis as the labels beside them write them: 25,000, not 25000.
THOUSANDS = StrMethodFormatter("{x:,.0f}")


@dataclass
class Drawing:
    """A benchmark's figure and what its JSON lacked (one phrase each)."""

    figure: Figure
    skipped: list[str] = field(default_factory=list)


def _when(data: dict[str, Any]) -> str:
    """'2026-12-04 21:53 UTC' (and the commit, where the JSON has one)."""
    measured = str(data.get("measured_at", "time not recorded"))
    # Else already written for people ("2026-12-04 02:29 UTC"), or missing.
    with contextlib.suppress(ValueError):
        measured = datetime.fromisoformat(measured).strftime("%Y-%m-%d %H:%M UTC")
    commit = data.get("commit")
    return f"{measured} at {str(commit)[:7]}" if commit else measured


def _missing(ax: Axes, what: str) -> None:
    """An empty panel that says what this run did not record."""
    ax.text(0.5, 0.5, f"not in this run:\n{what}", ha="center", va="center", wrap=True)
    ax.set_axis_off()


def _absent(ax: Axes, series: str) -> None:
    """A legend entry for a series this run did not record (an older run's JSON)."""
    ax.plot([], [], linestyle="none", label=f"{series}: not in this run")


def _get(data: dict[str, Any], *keys: str) -> Any:
    """data[k1][k2]... or None where any level is missing (or not a mapping)."""
    found: Any = data
    for key in keys:
        if not isinstance(found, dict):
            return None
        found = found.get(key)
    return found


def loop_figure(data: dict[str, Any]) -> Drawing:
    """Closed loop: true values per round (ratio to oracle) and the gate's DR gain.

    Top: the served policy and the challenger of each round as a ratio of the
    oracle's true value, with lines for the oracle (1.0), the Bayes-optimal
    ceilings and the logging policy; promoted challengers starred. Bottom: each
    round's estimate of challenger - champion per decision with its 95% interval
    (the gate's estimator, DR by default) beside the true difference.
    """
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7.5), sharex=True)
    skipped: list[str] = []
    rounds = [r for r in data.get("rounds", []) if r.get("round", 0) >= 1]
    served = [
        (r["round"], r["served_ratio_to_oracle"]) for r in rounds if "served_ratio_to_oracle" in r
    ]
    challenger = [
        (r["round"], r["challenger_ratio_to_oracle"])
        for r in rounds
        if "challenger_ratio_to_oracle" in r
    ]
    if served:
        top.plot(*zip(*served, strict=True), marker="o", color=CHAMPION, label="served (champion)")
    else:
        _absent(top, "served (champion)")
        skipped.append("served value per round (rounds[].served_ratio_to_oracle)")
    if challenger:
        top.plot(*zip(*challenger, strict=True), marker="s", color=CHALLENGER, label="challenger")
    else:
        _absent(top, "challenger")
        skipped.append("challenger value per round (rounds[].challenger_ratio_to_oracle)")
    promoted = [
        (n, v) for n, v in challenger if any(r["round"] == n and r.get("promoted") for r in rounds)
    ]
    if promoted:
        top.plot(
            *zip(*promoted, strict=True),
            linestyle="none",
            marker="*",
            markersize=16,
            color="tab:green",
            label="promoted",
        )
    top.axhline(1.0, color="black", linewidth=1, label="oracle (1.0)")
    bayes = _get(data, "summary", "bayes_optimal_ratio_to_oracle")
    ceilings = [
        (key, label, style)
        for key, label, style in (
            ("history_only", "Bayes-optimal, history", "--"),
            ("after_last_round", "Bayes-optimal, history + rounds", "-."),
        )
        if _get(bayes or {}, key, "ratio") is not None
    ]
    for key, label, style in ceilings:
        ratio = bayes[key]["ratio"]
        top.axhline(ratio, color="grey", linestyle=style, label=f"{label} ({ratio:.2f})")
    if not ceilings:
        _absent(top, "Bayes-optimal ceiling")
        skipped.append("Bayes-optimal ceiling (summary.bayes_optimal_ratio_to_oracle)")
    logging_ratio = next(
        (
            r["ratio_to_oracle"]
            for r in data.get("rounds", [])
            if r.get("round") == 0 and "ratio_to_oracle" in r
        ),
        None,
    )
    if logging_ratio is not None:
        top.axhline(
            logging_ratio,
            color="tab:red",
            linestyle=":",
            label=f"logging policy ({logging_ratio:.2f})",
        )
    else:
        _absent(top, "logging policy")
        skipped.append("logging policy (rounds[0].ratio_to_oracle)")
    top.set_ylabel("true value, ratio to oracle")
    top.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    top.set_title("True value of the served policy and the challenger")

    gains = [r for r in rounds if isinstance(r.get("difference"), dict)]
    if gains:
        estimator = str(gains[0]["difference"].get("estimator", "estimate")).removesuffix(
            "_difference"
        )
        x = [r["round"] for r in gains]
        value = [r["difference"]["value"] for r in gains]
        err = [
            [v - r["difference"]["ci_low"] for v, r in zip(value, gains, strict=True)],
            [r["difference"]["ci_high"] - v for v, r in zip(value, gains, strict=True)],
        ]
        bottom.errorbar(
            x,
            value,
            yerr=err,
            fmt="o",
            capsize=3,
            color="black",
            label=f"{estimator.upper()} estimate (95% CI)",
        )
        # What the estimate estimates: the gain over the weeks its decisions were
        # served in (runs since simulated weeks); older runs drew every decision from
        # one state, whose gain is the one at the next decision.
        key = "true_difference_over_evaluated_weeks"
        if not any(key in r for r in gains):
            key = "true_difference_per_decision"
        truth = [(r["round"], r[key]) for r in gains if key in r]
        if truth:
            bottom.plot(
                *zip(*truth, strict=True),
                linestyle="none",
                marker="x",
                markersize=9,
                color="tab:red",
                label=(
                    "true gain over the evaluated weeks"
                    if key == "true_difference_over_evaluated_weeks"
                    else "true gain"
                ),
            )
        else:
            _absent(bottom, "true gain")
            skipped.append(f"true gain per round (rounds[].{key})")
        bottom.axhline(0.0, color="grey", linewidth=1)
        bottom.set_ylabel("challenger - champion,\nnet NRx per decision")
        bottom.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
        bottom.set_title("The gate's evidence: estimated and true gain of the challenger")
    else:
        _missing(bottom, "the gate's estimate of the gain (rounds[].difference)")
        skipped.append("the gate's estimate of the gain (rounds[].difference)")
    bottom.set_xlabel("round")
    if rounds:
        bottom.set_xticks([r["round"] for r in rounds])
    setup = data.get("setup", {})
    said = [setup.get("exploration", "")]
    gate = setup.get("gate") or {}
    if gate.get("criterion") == "margin":  # the default, lower_bound, goes unsaid
        estimator = str(gate.get("estimator", "?")).upper()
        said.append(f"gate: {estimator} point estimate, margin {gate.get('margin', 0):g}")
    mode = ", ".join(filter(None, said))
    fig.suptitle(
        f"Closed loop{f' ({mode})' if mode else ''}, {setup.get('hcps', '?')} HCPs: {_when(data)}"
    )
    fig.tight_layout()
    plt.close(fig)
    return Drawing(fig, skipped)


# (label, key of quality.json's "simulator"): true net NRx of each policy, in total.
SIMULATOR_POLICIES = (
    ("learned (nextbest)", "policy_value"),
    ("oracle", "oracle_value"),
    ("logging", "logging_value"),
    ("random", "random_value"),
    ("top P(engaged)", "engagement_only_value"),
    ("nothing", "no_action_value"),
)


def _simulator_panel(ax: Axes, sim: dict[str, Any] | None, skipped: list[str]) -> None:
    if not sim or not sim.get("n_hcps") or "oracle_value" not in sim:
        _missing(ax, "simulator (--skip-simulator?)")
        skipped.append("simulator")
        return
    n = sim["n_hcps"]
    bars = [(label, sim[key] / n) for label, key in SIMULATOR_POLICIES if key in sim]
    bayes = _get(sim, "bayes_ceiling", "value")
    if bayes is not None:
        bars.insert(2, ("Bayes-optimal ceiling", bayes / n))
    else:
        skipped.append("Bayes-optimal ceiling (simulator.bayes_ceiling)")
    feature = _get(sim, "feature_ceiling", "ratio_to_oracle")
    if feature is not None:
        # Recorded as a ratio only: the same features fitted to the noise-free truth.
        bars.insert(2, ("feature ceiling", feature * sim["oracle_value"] / n))
    else:
        skipped.append("feature ceiling (simulator.feature_ceiling)")
    skipped += [f"{label} (simulator.{key})" for label, key in SIMULATOR_POLICIES if key not in sim]
    oracle = sim["oracle_value"] / n
    y = range(len(bars))
    ax.barh(y, [v for _, v in bars], color="tab:blue")
    ax.set_yticks(y, [label for label, _ in bars])
    ax.invert_yaxis()
    for i, (_, v) in enumerate(bars):
        ax.annotate(
            f"{v:+.3f} ({v / oracle:.2f} of oracle)",
            # Beside the bar's end, or beside zero for a loss (clear of the names).
            (max(v, 0.0), i),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize="small",
        )
    ax.axvline(0.0, color="grey", linewidth=1)
    ax.margins(x=0.6)
    ax.set_xlabel("true net NRx per HCP over the horizon")
    ax.set_title(f"Simulator, {n:,} HCPs x {sim.get('periods', '?')} periods")


def _hillstrom_panel(ax: Axes, hill: dict[str, Any] | None, skipped: list[str]) -> None:
    policies = (hill or {}).get("policies") or {}
    if not policies:
        why = (hill or {}).get("error", "--skip-hillstrom?")
        _missing(ax, f"Hillstrom ({why})")
        skipped.append("Hillstrom")
        return
    names = list(policies)
    budget = f"{_get(hill or {}, 'budget_share') or 0.3:.0%} e-mail budget"
    for offset, (key, label, color) in enumerate(
        (("ips_value", "free choice", "tab:blue"), ("ips_value_budget_30", budget, "tab:orange"))
    ):
        have = [(i, policies[name][key]) for i, name in enumerate(names) if key in policies[name]]
        skipped += [f"{name} {label} ({key})" for name in names if key not in policies[name]]
        if not have:
            continue
        # Points, not bars: the policies differ in the third decimal. Error bars:
        # the spread of the seeds' splits, where the run recorded it.
        ax.errorbar(
            [v["mean"] for _, v in have],
            [i - 0.15 + 0.3 * offset for i, _ in have],
            xerr=[v.get("sd", 0.0) for _, v in have],
            fmt="o",
            capsize=3,
            color=color,
            label=label,
        )
    ax.set_yticks(
        range(len(names)), [n.replace("causalml_", "causalml ").replace("_", " ") for n in names]
    )
    ax.invert_yaxis()
    seeds = len(_get(hill or {}, "seeds") or []) or "?"
    ax.set_xlabel(f"IPS visits per customer (mean of {seeds} seeds, sd over seeds)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Hillstrom e-mail experiment")
    # Under the axis' label: placed "best" inside, it took the lower right, where the
    # last policy's point is whenever it scores as high as the best.
    ax.legend(
        fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False
    )


def quality_figure(data: dict[str, Any]) -> Drawing:
    """Learning quality: the simulator's policies' true values; Hillstrom's IPS values."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    skipped: list[str] = []
    _simulator_panel(left, data.get("simulator"), skipped)
    _hillstrom_panel(right, data.get("hillstrom"), skipped)
    fig.suptitle(f"Learning quality (make bench-quality): {_when(data)}")
    fig.tight_layout()
    _widen_for_values(left)
    plt.close(fig)
    return Drawing(fig, skipped)


def _widen_for_values(ax: Axes, pad: float = 4.0) -> None:
    """Move ``ax``'s right limit out until every value written beside a bar (an
    annotation at a data x, offset in points) ends ``pad`` pixels inside the axes:
    a margin in data units leaves room for a label in points only by luck. Call
    once the figure's layout is done (the axes' width in pixels is final)."""
    annotations = [t for t in ax.texts if isinstance(t, Annotation)]
    if not annotations:
        return
    renderer = ax.figure.canvas.get_renderer()  # type: ignore[attr-defined]
    low, high = ax.get_xlim()
    width = ax.bbox.width
    needed = high
    for text in annotations:
        anchor = text.xy[0]
        # The label's reach past its anchor, in pixels: the offset and its width.
        reach = text.get_window_extent(renderer).x1 - ax.transData.transform((anchor, 0))[0]
        if reach + pad >= width:
            continue  # no limit makes room for it: left as drawn
        # With the right limit at h, the anchor lies (anchor - low) / (h - low) of the
        # way across: solve for the h that ends the label pad pixels inside.
        needed = max(needed, low + (anchor - low) * width / (width - reach - pad))
    ax.set_xlim(low, needed)


# (label, key): serve.json's single-recommendation scenarios, each cache warm (top
# level) and cache off (under "score_cache_off").
SERVE_SCENARIOS = (
    ("idle, 1 connection", "single_idle"),
    ("1,000 req/s offered", "single_fixed_rate"),
    ("flat out, 32 connections", "single_closed_loop"),
)


def serve_figure(data: dict[str, Any]) -> Drawing:
    """Serving: latency p50/p99 and requests/s per scenario, cache warm and off."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    skipped: list[str] = []
    series = (
        ("cache warm", data, CHAMPION),
        ("cache off", data.get("score_cache_off") or {}, CHALLENGER),
    )
    labels = [label for label, _ in SERVE_SCENARIOS]
    for offset, (name, runs, color) in enumerate(series):
        x = [i - 0.2 + 0.4 * offset for i in range(len(SERVE_SCENARIOS))]
        have = [
            (xi, runs[key]) for xi, (_, key) in zip(x, SERVE_SCENARIOS, strict=True) if key in runs
        ]
        skipped += [f"{label}, {name}" for label, key in SERVE_SCENARIOS if key not in runs]
        if not have:
            continue
        xs = [xi for xi, _ in have]
        left.bar(
            xs,
            [r["p99_ms"] for _, r in have],
            width=0.4,
            color=color,
            alpha=0.45,
            label=f"{name}: p99",
        )
        left.bar(xs, [r["p50_ms"] for _, r in have], width=0.4, color=color, label=f"{name}: p50")
        right.bar(xs, [r["requests_per_s"] for _, r in have], width=0.4, color=color, label=name)
    target = _get(data, "targets", "single_p99_ms_at_1000_rps", "target") or 20.0
    # Over the scenario it applies to only: 1,000 requests/s offered.
    at = [label for label, _ in SERVE_SCENARIOS].index("1,000 req/s offered")
    left.plot(
        [at - 0.45, at + 0.45],
        [target, target],
        color="tab:red",
        linestyle="--",
        label=f"target p99 at 1,000/s ({target:g} ms)",
    )
    left.set_yscale("log")
    left.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))  # 1, 10, 100: not 10^0
    left.set_ylabel("latency, ms (log scale)")
    left.set_title("Single recommendation: p50 (solid) and p99 (light)")
    right.set_ylabel("requests/s answered")
    right.yaxis.set_major_formatter(THOUSANDS)
    right.set_title("Throughput")
    for ax, columns in ((left, 3), (right, 2)):
        ax.set_xticks(range(len(labels)), labels, fontsize="small")
        # Under the axes: placed "best" inside, a legend lands on a bar whenever every
        # scenario's bar is tall (the throughput of a run that keeps up when idle).
        # Each series' p99 above its p50 in a column, the target in the last.
        handles, names = ax.get_legend_handles_labels()
        order = sorted(range(len(names)), key=lambda i: names[i].startswith("target"))
        ax.legend(
            [handles[i] for i in order],
            [names[i] for i in order],
            fontsize="small",
            loc="upper center",
            bbox_to_anchor=(0.5, -0.1),
            ncol=columns,
            frameon=False,
        )
    fig.suptitle(f"Serving (make bench-serve): {_when(data)}")
    fig.tight_layout()
    plt.close(fig)
    return Drawing(fig, skipped)


def feedback_figure(data: dict[str, Any]) -> Drawing:
    """Feedback ingest: events/s through the API per database, against the target."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    skipped: list[str] = []
    results = [r for r in data.get("results", []) if "events_per_s" in r]
    measured = {r.get("backend") for r in results}
    skipped += [f"{b} (not measured)" for b in ("sqlite", "postgresql") if b not in measured]
    if results:
        ax.bar(range(len(results)), [r["events_per_s"] for r in results], color=CHAMPION)
        for i, r in enumerate(results):
            if "acknowledged_missing" in r:
                ax.annotate(
                    f"{r['events_per_s']:,}/s, {r['acknowledged_missing']} missing",
                    (i, r["events_per_s"]),
                    xytext=(0, 3),
                    textcoords="offset points",
                    ha="center",
                )
        ax.set_xticks(range(len(results)), [str(r.get("backend", "?")) for r in results])
        target = results[0].get("target_events_per_s", 5000)
        ax.axhline(target, color="tab:red", linestyle="--", label=f"target ({target:,}/s)")
        ax.set_ylabel("events/s through the API")
        ax.yaxis.set_major_formatter(THOUSANDS)
        ax.margins(y=0.12)
        # Under the axes: inside, it covered the foot of a bar.
        fig.legend(loc="lower center", fontsize="small", frameon=False)
    else:
        _missing(ax, "any backend's results")
    ax.set_title(f"Feedback ingest (make bench-feedback): {_when(data)}")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    plt.close(fig)
    return Drawing(fig, skipped)


def draw(
    json_path: Path,
    *,
    say: Callable[[str], object] = print,
) -> Path | None:
    """Draw ``json_path``'s figure into the PNG beside it; return its path.

    A file that cannot be read, or of a benchmark without a figure, is reported
    through ``say`` and returns None.
    """
    try:
        data = json.loads(json_path.read_text())
    except (OSError, ValueError) as err:
        say(f"{json_path}: not drawn, cannot read it as JSON ({err})")
        return None
    kind = data.get("benchmark") if isinstance(data, dict) else None
    kind = kind or json_path.stem.split("_")[0]
    if kind not in FIGURES:
        say(
            f"{json_path}: not drawn, no figure for benchmark {kind!r}"
            f" (known: {', '.join(FIGURES)})"
        )
        return None
    png = json_path.with_suffix(".png")
    # Matplotlib's own style, whatever another library set on import (causalml, which
    # `make bench-quality` imports before drawing, sets "fivethirtyeight" for all).
    with plt.style.context("default"):
        drawing = FIGURES[kind](data)
        drawing.figure.savefig(png, dpi=DPI)
    skipped = f"; skipped, not in the JSON: {'; '.join(drawing.skipped)}" if drawing.skipped else ""
    say(f"wrote {png}{skipped}")
    return png


FIGURES: dict[str, Callable[[dict[str, Any]], Drawing]] = {
    "loop": loop_figure,
    "quality": quality_figure,
    "serve": serve_figure,
    "feedback": feedback_figure,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="*", type=Path, help="results to draw (default: all)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="directory of results")
    args = parser.parse_args(argv)
    paths = args.json or sorted(args.results.glob("*.json"))
    if not paths:
        print(f"no results to draw in {args.results}")
    for path in paths:
        draw(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
