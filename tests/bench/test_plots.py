"""bench/plots.py: each benchmark's figure, from the committed JSON and from partial runs."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .scripts import ROOT, load_bench

RESULTS = ROOT / "bench" / "results"
plots = load_bench("plots")


def _committed(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / f"{name}.json").read_text())


def _draw(tmp_path: Path, name: str, data: dict[str, Any]) -> tuple[Path, str]:
    """Write ``data`` as ``name``.json in tmp_path, draw it; the PNG and what was said."""
    said: list[str] = []
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    png = plots.draw(path, say=said.append)
    assert png == tmp_path / f"{name}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(said) == 1
    return png, said[0]


def _line(ax: Any, label: str) -> tuple[list[float], list[float]]:
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == label]
    return list(line.get_xdata()), list(line.get_ydata())


# The latest run, one that promoted a challenger (round 4), and one with a lenient gate.
@pytest.mark.parametrize("name", ["loop", "loop_2026-12-04", "loop_margin"])
def test_loop_figure_draws_each_rounds_true_values_and_the_gates_estimates(name: str) -> None:
    data = _committed(name)
    rounds = data["rounds"][1:]
    drawing = plots.loop_figure(data)
    top, bottom = drawing.figure.axes
    numbers = [r["round"] for r in rounds]
    assert _line(top, "served (champion)") == (
        numbers,
        [r["served_ratio_to_oracle"] for r in rounds],
    )
    # With a challenger share the first round has no challenger to judge yet.
    judged = [r for r in rounds if "challenger_ratio_to_oracle" in r]
    assert len(judged) >= len(rounds) - 1
    assert _line(top, "challenger") == (
        [r["round"] for r in judged],
        [r["challenger_ratio_to_oracle"] for r in judged],
    )
    promoted = [r for r in rounds if r.get("promoted")]
    starred = [ln for ln in top.get_lines() if ln.get_label() == "promoted"]
    if promoted:
        assert _line(top, "promoted") == (
            [r["round"] for r in promoted],
            [r["challenger_ratio_to_oracle"] for r in promoted],
        )
    else:
        assert starred == []  # no star where nothing was promoted
    bayes = data["summary"]["bayes_optimal_ratio_to_oracle"]["history_only"]["ratio"]
    assert _line(top, f"Bayes-optimal, history ({bayes:.2f})")[1] == [bayes] * 2
    logging = data["rounds"][0]["ratio_to_oracle"]
    assert _line(top, f"logging policy ({logging:.2f})")[1] == [logging] * 2
    if "true_difference_over_evaluated_weeks" in judged[0]:  # runs on simulated weeks
        truth = ("true gain over the evaluated weeks", "true_difference_over_evaluated_weeks")
    else:
        truth = ("true gain", "true_difference_per_decision")
    assert _line(bottom, truth[0]) == ([r["round"] for r in judged], [r[truth[1]] for r in judged])
    (estimate,) = [c for c in bottom.containers if c.get_label() == "DR estimate (95% CI)"]
    assert list(estimate.lines[0].get_ydata()) == [r["difference"]["value"] for r in judged]
    assert drawing.skipped == []
    when = data["measured_at"][:16].replace("T", " ")
    title = drawing.figure.texts[0].get_text()
    assert f"{when} UTC" in title
    # A gate other than the default's lower bound is named.
    gate = data["setup"].get("gate", {})
    assert ("margin" in title) == (gate.get("criterion") == "margin"), title
    assert bottom.get_ylabel() == "challenger - champion,\nnet NRx per decision"


def test_the_gates_estimate_is_drawn_beside_the_truth_it_estimates() -> None:
    """A run on simulated weeks estimates the gain over the weeks its evidence was
    served in, not the one at the next decision: that truth is drawn beside it."""
    data = copy.deepcopy(_committed("loop_2026-12-04"))
    rounds = data["rounds"][1:]
    for r in rounds:
        r["true_difference_over_evaluated_weeks"] = r["true_difference_per_decision"] + 0.01
    _, bottom = plots.loop_figure(data).figure.axes
    assert _line(bottom, "true gain over the evaluated weeks") == (
        [r["round"] for r in rounds],
        [r["true_difference_over_evaluated_weeks"] for r in rounds],
    )
    assert "true gain" not in [ln.get_label() for ln in bottom.get_lines()]


def test_quality_figure_draws_the_simulators_values_per_hcp() -> None:
    data = _committed("quality")
    left, right = plots.quality_figure(data).figure.axes
    per_hcp = data["simulator"]["per_hcp"]
    widths = [round(p.get_width(), 6) for p in left.patches]
    assert widths[:2] == [round(per_hcp["policy_value"], 6), round(per_hcp["oracle_value"], 6)]
    bayes = data["simulator"]["bayes_ceiling"]["value_per_hcp"]
    assert round(bayes, 6) in widths
    policies = data["hillstrom"]["policies"]
    (free, budget) = right.containers
    assert list(free.lines[0].get_xdata()) == [p["ips_value"]["mean"] for p in policies.values()]
    assert list(budget.lines[0].get_xdata()) == [
        p["ips_value_budget_30"]["mean"] for p in policies.values()
    ]
    assert [t.get_text() for t in right.get_yticklabels()][:2] == ["nextbest", "causalml t learner"]


def test_serve_figure_draws_each_scenarios_p99_against_the_target() -> None:
    data = _committed("serve")
    left, right = plots.serve_figure(data).figure.axes
    # Drawn per series: cache warm's p99 then p50, then cache off's.
    heights = [p.get_height() for p in left.patches]
    assert heights[:3] == [
        data["single_idle"]["p99_ms"],
        data["single_fixed_rate"]["p99_ms"],
        data["single_closed_loop"]["p99_ms"],
    ]
    assert heights[6] == data["score_cache_off"]["single_idle"]["p99_ms"]
    # The target is drawn over the 1,000 req/s scenario's bars only (the second group).
    assert _line(left, "target p99 at 1,000/s (20 ms)") == ([0.55, 1.45], [20.0, 20.0])
    assert [p.get_height() for p in right.patches][1] == data["single_fixed_rate"]["requests_per_s"]


@pytest.mark.parametrize("name", ["loop", "quality", "serve", "feedback"])
def test_committed_results_draw_whole(tmp_path: Path, name: str) -> None:
    png, said = _draw(tmp_path, name, _committed(name))
    assert said == f"wrote {png}"
    # Small enough to commit beside the JSON.
    assert png.stat().st_size < 100_000


def _loop_without_gate_and_ceiling(data: dict[str, Any]) -> None:
    data["summary"].pop("bayes_optimal_ratio_to_oracle")
    for r in data["rounds"]:
        r.pop("difference", None)


def _quality_without_simulator(data: dict[str, Any]) -> None:
    data.pop("simulator")
    data["hillstrom"] = {"error": "/data/hillstrom.csv not found"}


def _serve_without_cache_off(data: dict[str, Any]) -> None:
    data.pop("score_cache_off")
    data.pop("single_closed_loop")


def _feedback_without_postgresql(data: dict[str, Any]) -> None:
    data["results"] = data["results"][:1]


@pytest.mark.parametrize(
    ("name", "remove", "skipped"),
    [
        (
            "loop",
            _loop_without_gate_and_ceiling,
            "Bayes-optimal ceiling (summary.bayes_optimal_ratio_to_oracle); "
            "the gate's estimate of the gain (rounds[].difference)",
        ),
        ("quality", _quality_without_simulator, "simulator; Hillstrom"),
        (
            "serve",
            _serve_without_cache_off,
            "flat out, 32 connections, cache warm; idle, 1 connection, cache off; "
            "1,000 req/s offered, cache off; flat out, 32 connections, cache off",
        ),
        ("feedback", _feedback_without_postgresql, "postgresql (not measured)"),
    ],
)
def test_a_partial_run_draws_what_it_has_and_names_what_it_skipped(
    tmp_path: Path, name: str, remove: Any, skipped: str
) -> None:
    data = copy.deepcopy(_committed(name))
    remove(data)
    png, said = _draw(tmp_path, name, data)
    assert said == f"wrote {png}; skipped, not in the JSON: {skipped}"


def test_the_hillstrom_error_shows_in_the_figure() -> None:
    data = {
        "measured_at": "2026-12-04 02:29 UTC",
        "hillstrom": {"error": "hillstrom.csv not found"},
    }
    drawing = plots.quality_figure(data)
    texts = [t.get_text() for ax in drawing.figure.axes for t in ax.texts]
    assert texts == [
        "not in this run:\nsimulator (--skip-simulator?)",
        "not in this run:\nHillstrom (hillstrom.csv not found)",
    ]


def test_unreadable_or_unknown_results_are_reported_not_drawn(tmp_path: Path) -> None:
    said: list[str] = []
    broken = tmp_path / "loop.json"
    broken.write_text('{"benchmark": "loop", "rounds": [')  # a run killed mid-write
    assert plots.draw(broken, say=said.append) is None
    other = tmp_path / "latency.json"
    other.write_text("{}")
    assert plots.draw(other, say=said.append) is None
    assert said[0].startswith(f"{broken}: not drawn, cannot read it as JSON (")
    assert said[1] == (
        f"{other}: not drawn, no figure for benchmark 'latency'"
        " (known: loop, quality, serve, feedback)"
    )
    assert not list(tmp_path.glob("*.png"))


def test_a_benchmark_run_draws_its_figure_beside_its_json(tmp_path: Path) -> None:
    # The real script, as `make bench-quality` runs it but with everything skipped.
    out = tmp_path / "quality.json"
    run = subprocess.run(
        [sys.executable, "bench/quality.py", "--skip-simulator", "--skip-hillstrom", "--out", out],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"wrote {tmp_path / 'quality.png'}; skipped, not in the JSON: simulator; Hillstrom" in (
        run.stdout
    )
    assert (tmp_path / "quality.png").stat().st_size > 0


def test_the_command_draws_every_result_in_a_directory(tmp_path: Path) -> None:
    for name in ("loop_softmax", "feedback"):
        (tmp_path / f"{name}.json").write_text((RESULTS / f"{name}.json").read_text())
    assert plots.main(["--results", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["feedback.png", "loop_softmax.png"]


def _tick_labels(figure: Any, ax: Any) -> list[str]:
    figure.canvas.draw()  # tick labels are formatted when drawn
    return [t.get_text() for t in ax.get_yticklabels() if t.get_text()]


def test_feedback_figure_keeps_its_legend_off_the_bars_and_writes_thousands() -> None:
    """The target's legend sat inside the axes, over the foot of the second bar;
    the axis read 25000 beside annotations reading 26,101/s."""
    figure = plots.feedback_figure(_committed("feedback")).figure
    [ax] = figure.axes
    assert ax.get_legend() is None
    [legend] = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == ["target (5,000/s)"]
    assert "25,000" in _tick_labels(figure, ax)


def test_serve_figure_writes_latency_and_throughput_as_plain_numbers() -> None:
    """Thousands with a comma: the committed run's throughput is whatever the last
    host achieved, so the test sets one above 2,000 for the axis to reach."""
    data = copy.deepcopy(_committed("serve"))
    data["single_closed_loop"]["requests_per_s"] = 2_400.0
    figure = plots.serve_figure(data).figure
    left, right = figure.axes
    assert {"1", "10", "100"} <= set(_tick_labels(figure, left))
    assert "2,000" in _tick_labels(figure, right)


def test_a_series_an_older_loop_run_lacks_is_named_in_the_legend() -> None:
    """The figure, not only the console, says what the run did not record: a reader
    of loop_softmax.png could not tell "no ceiling recorded" from "no ceiling"."""
    data = copy.deepcopy(_committed("loop"))
    _loop_without_gate_and_ceiling(data)
    data["rounds"][0].pop("ratio_to_oracle")
    top, _ = plots.loop_figure(data).figure.axes
    legend = [t.get_text() for t in top.get_legend().get_texts()]
    assert "Bayes-optimal ceiling: not in this run" in legend
    assert "logging policy: not in this run" in legend
    assert "served (champion)" in legend


def _covered(figure: Any) -> list[str]:
    """What each axes' legend covers of its bars, lines and scenario names, drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.transforms import Bbox

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    covered = []
    for ax in figure.axes:
        legend = ax.get_legend().get_window_extent(renderer)
        for patch in ax.patches:  # a bar from 0 on a log scale runs past the axes: clipped
            drawn = Bbox.intersection(patch.get_window_extent(renderer), ax.bbox)
            if drawn is not None and legend.overlaps(drawn):
                covered.append(f"{ax.get_title()}: a bar of height {patch.get_height():g}")
        for artist in [*ax.get_lines(), *ax.get_xticklabels()]:
            if legend.overlaps(artist.get_window_extent(renderer)):
                covered.append(f"{ax.get_title()}: {artist.get_label() or artist.get_text()}")
    return covered


def test_serve_figure_keeps_its_legends_off_the_bars_whatever_their_heights() -> None:
    """Placed "best" inside the axes, a legend found a free corner on the committed
    run by luck: with every scenario's throughput tall (a run that keeps up when
    idle too), the throughput legend lay over the first bar."""
    data = _committed("serve")
    tall = copy.deepcopy(data)
    for key in ("single_idle", "single_fixed_rate"):
        tall[key]["requests_per_s"] = 2100.0
        tall["score_cache_off"][key]["requests_per_s"] = 1900.0
        tall[key]["p99_ms"] = tall["score_cache_off"][key]["p99_ms"] = 150.0
    figures = [plots.serve_figure(runs).figure for runs in (data, tall)]
    assert [_covered(figure) for figure in figures] == [[], []]
    for figure in figures:  # each series' p99 above its p50, the target last
        left, right = figure.axes
        assert [t.get_text() for t in left.get_legend().get_texts()] == [
            "cache warm: p99",
            "cache warm: p50",
            "cache off: p99",
            "cache off: p50",
            "target p99 at 1,000/s (20 ms)",
        ]
        assert [t.get_text() for t in right.get_legend().get_texts()] == ["cache warm", "cache off"]


def test_quality_figure_keeps_the_hillstrom_legend_under_the_axes() -> None:
    """Placed "best", the legend took the lower right of the Hillstrom panel, where the
    last policy's point lands once it scores near the best: under the axes' label now."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = plots.quality_figure(_committed("quality")).figure
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    _, right = figure.axes
    legend = right.get_legend().get_window_extent(renderer)
    assert legend.y1 < right.bbox.y0  # wholly under the axes
    assert not legend.overlaps(right.xaxis.label.get_window_extent(renderer))
    assert [t.get_text() for t in right.get_legend().get_texts()] == [
        "free choice",
        "30% e-mail budget",
    ]


def test_quality_figure_keeps_every_simulator_value_inside_its_axes() -> None:
    """The oracle's value, written beside the longest bar, ran past the panel's right
    edge (``ax.margins`` leaves room in data units, the label's width is in points)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    data = _committed("quality")
    # A run whose losses are small: the data's span, and so the margin, shrinks.
    small_losses = copy.deepcopy(data)
    for key in ("logging_value", "random_value", "engagement_only_value"):
        small_losses["simulator"][key] = -0.01 * small_losses["simulator"]["n_hcps"]
    for runs in (data, small_losses):
        figure = plots.quality_figure(runs).figure
        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        renderer = canvas.get_renderer()
        left, _ = figure.axes
        assert len(left.texts) == 8
        for text in left.texts:
            drawn = text.get_window_extent(renderer)
            assert left.bbox.x0 <= drawn.x0 and drawn.x1 <= left.bbox.x1, text.get_text()


def test_a_style_set_by_another_library_does_not_change_the_pictures(tmp_path: Path) -> None:
    """causalml sets matplotlib's "fivethirtyeight" style on import, and `make
    bench-quality` imports it before drawing: quality.png came out grey, in larger
    type, its Hillstrom axis label cut at the right edge ("... sd o")."""
    import matplotlib.pyplot as plt

    plain, styled = tmp_path / "plain", tmp_path / "styled"
    for folder in (plain, styled):
        folder.mkdir()
        (folder / "quality.json").write_text(json.dumps(_committed("quality")))
    plots.draw(plain / "quality.json", say=lambda _: None)
    with plt.style.context("fivethirtyeight"):
        plots.draw(styled / "quality.json", say=lambda _: None)
    assert (styled / "quality.png").read_bytes() == (plain / "quality.png").read_bytes()
