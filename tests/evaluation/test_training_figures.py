"""The figures a training run logs: a channel without enough held-out data is named,
and the learned policy's value is drawn from the run's own metrics."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from nextbest.contract import load_dataset
from nextbest.evaluation.plots import (
    gate_estimator,
    policy_value_figure,
    training_figures,
    wilson_interval,
)
from nextbest.learning.config import EngagementParams, TrainConfig, UpliftParams
from nextbest.learning.train import TrainResult, train
from nextbest.simulate import simulate_world

QUICK = TrainConfig(
    engagement=EngagementParams(n_estimators=30, num_leaves=7),
    uplift=UpliftParams(n_estimators=40),
)


def _trained(
    out: Path,
    *,
    n_hcps: int,
    drop_newest_webinars: bool,
    without_outcomes: bool = False,
    newest_unlogged: bool = False,
) -> TrainResult:
    world = simulate_world(n_hcps=n_hcps, periods=8, seed=3)
    world.write(out, fmt="parquet")
    interactions = pd.read_parquet(out / "interactions.parquet")
    if without_outcomes:  # engagement only: the preference x value fallback
        interactions.drop(columns="outcome").to_parquet(out / "interactions.parquet")
    if newest_unlogged:  # the held-out slice from a CRM: no propensity logged
        newest = interactions["timestamp"] >= interactions["timestamp"].quantile(0.7)
        interactions.loc[newest, "propensity"] = np.nan
        interactions.to_parquet(out / "interactions.parquet")
    if drop_newest_webinars:  # webinars stopped: none in the held-out (newest) slice
        catalog = pd.read_parquet(out / "catalog.parquet")
        webinar = catalog.loc[catalog["channel"] == "webinar", "action_id"]
        newest = interactions["timestamp"] >= interactions["timestamp"].quantile(0.7)
        interactions[~(interactions["action_id"].isin(webinar) & newest)].to_parquet(
            out / "interactions.parquet"
        )
    return train(load_dataset(out), config=QUICK, as_of=world.decision_time)


def _texts(figure: Any) -> list[str]:
    return [t.get_text() for t in figure.texts] + [
        t.get_text() for ax in figure.axes for t in ax.texts
    ]


@pytest.fixture(scope="module")
def without_webinars(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return _trained(tmp_path_factory.mktemp("world"), n_hcps=1200, drop_newest_webinars=True)


def test_a_channel_without_held_out_decisions_is_named_not_left_out(
    without_webinars: TrainResult,
) -> None:
    result = without_webinars
    assert "webinar" in result.model.space.channels
    figures = training_figures(result)
    calibration = figures["calibration_by_channel"]
    [ax] = calibration.axes
    drawn = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "webinar" not in drawn and "email" in drawn
    [said] = _texts(calibration)
    assert said.startswith("not enough data for ")
    assert "webinar" in said and "email" not in said.split(":")[0]
    # Units and what the slice is, on the axes and in the title.
    assert ax.get_xlabel().startswith("predicted P(engaged)")
    assert ax.get_ylabel() == "observed engagement rate (95% CI)"
    n_eval = int(result.metrics["eval_decisions"])
    assert f"{n_eval:,} newest decisions" in ax.get_title()
    qini = figures["qini_by_channel"]
    assert any("webinar" in text for text in _texts(qini))
    assert qini.axes[0].get_xlabel().startswith("share of decisions targeted")


def test_with_no_channel_to_draw_the_figure_says_so(tmp_path: Path) -> None:
    """300 HCPs: no channel has 50 held-out contacts and 50 chance-chosen controls
    with an outcome, so no Qini curve; the figure was not logged at all, and a
    reader looking for it could not tell why."""
    result = _trained(tmp_path, n_hcps=300, drop_newest_webinars=False)
    assert result.model.uplift_model is not None
    assert not result.evaluation["curves"]
    qini = training_figures(result)["qini_by_channel"]
    [said] = _texts(qini)
    assert said.startswith("not enough data for any channel:")
    assert not qini.axes[0].axison  # no empty axes under it


def test_each_calibration_point_carries_the_interval_of_its_decisions(
    without_webinars: TrainResult,
) -> None:
    """Tied predictions can leave a decile a few decisions, whose observed rate of 0
    or 1 looked as sure as a decile of hundreds."""
    calibration = without_webinars.evaluation["calibration"]
    [ax] = training_figures(without_webinars)["calibration_by_channel"].axes
    assert [c.get_label() for c in ax.containers] == list(calibration)
    for container, (_, rate, n) in zip(ax.containers, calibration.values(), strict=True):
        assert n.sum() >= 50
        low, high = wilson_interval(rate, n)
        [bars] = container.lines[2]
        ends = np.array([segment[:, 1] for segment in bars.get_segments()])
        np.testing.assert_allclose(ends, np.column_stack([low, high]))
    assert ax.get_ylabel() == "observed engagement rate (95% CI)"


def test_wilson_interval_stays_in_zero_to_one_and_is_wide_on_few_decisions() -> None:
    low, high = wilson_interval(np.array([0.0, 1.0, 0.5]), np.array([10, 1, 400]))
    np.testing.assert_allclose(low[:2], [0.0, 0.2065], atol=1e-4)
    np.testing.assert_allclose(high[:2], [0.2775, 1.0], atol=1e-4)
    assert high[2] - low[2] == pytest.approx(2 * 1.96 * 0.5 / 20, rel=0.01)


def test_a_decile_where_all_or_none_engaged_is_drawn(without_webinars: TrainResult) -> None:
    """Wilson's bound at a rate of 0 or 1 is the rate give or take rounding: an error
    bar of -1e-17 stopped `nextbest train` with "'yerr' must not contain negative
    values" after the models were fitted."""
    from dataclasses import replace

    p = np.array([0.05, 0.3, 0.9])
    rate = np.array([0.0, 0.3, 1.0])
    for n in range(1, 400):
        low, high = wilson_interval(rate, np.full(3, n))
        if low[0] > rate[0] or high[2] < rate[2]:
            break
    else:
        pytest.fail("no n where rounding puts a bound past the rate: nothing to check")
    result = replace(
        without_webinars,
        evaluation={
            **without_webinars.evaluation,
            "calibration": {"email": (p, rate, np.full(3, n))},
        },
    )
    [ax] = training_figures(result)["calibration_by_channel"].axes
    [container] = ax.containers
    [bars] = container.lines[2]
    ends = np.array([segment[:, 1] for segment in bars.get_segments()])
    assert ends[0, 0] == 0.0 and ends[2, 1] == 1.0


def _policy_value_texts(figure: Any) -> tuple[str, list[str], str]:
    [ax] = figure.axes
    return ax.get_title(), [t.get_text() for t in ax.get_yticklabels()], "\n".join(_texts(figure))


def test_the_learned_policy_value_is_drawn_from_the_run_metrics(
    without_webinars: TrainResult,
) -> None:
    """The IPS / SNIPS / DR values were numbers in the run only; the figure draws the
    same numbers, with their intervals, beside the logged policy and doing nothing."""
    metrics = without_webinars.metrics
    figure = training_figures(without_webinars)["policy_value_by_estimator"]
    [ax] = figure.axes
    title, ticks, under = _policy_value_texts(figure)
    n = int(metrics["ope_decisions"])
    assert n == without_webinars.evaluation["policy"]["dr"]["n"] >= 50
    assert f"on {n:,} held-out decisions" in title
    assert f"it acts on {metrics['policy_action_rate']:.0%} of them" in title
    assert ax.get_xlabel() == "net value per decision: outcome - cost (95% CI)"
    [learned] = ax.containers
    estimators = [name for name in ("ips", "snips", "dr") if f"ope_{name}_policy_value" in metrics]
    assert "ips" in estimators and "dr" in estimators
    np.testing.assert_array_equal(
        learned.lines[0].get_xdata(), [metrics[f"ope_{e}_policy_value"] for e in estimators]
    )
    [bars] = learned.lines[2]
    np.testing.assert_allclose(
        [segment[:, 0] for segment in bars.get_segments()],
        [[metrics[f"ope_{e}_ci_low"], metrics[f"ope_{e}_ci_high"]] for e in estimators],
        rtol=1e-12,
    )
    for e in estimators:  # each tick names the estimator and says its interval
        [tick] = [t for t in ticks if t.startswith(f"learned policy, {e.upper()}\n")]
        said = re.fullmatch(r"\S+ [^\n]+\n([-+][\d.]+) \(([-+][\d.]+) to ([-+][\d.]+)\)", tick)
        assert said, tick
        decimals = len(said[1].split(".")[-1])
        np.testing.assert_allclose(
            [float(x) for x in said.groups()],
            [metrics[f"ope_{e}{key}"] for key in ("_policy_value", "_ci_low", "_ci_high")],
            atol=0.5 * 10**-decimals,
        )
    references = {line.get_label(): line.get_xdata()[0] for line in ax.get_lines()}
    assert references["logged policy (its average)"] == metrics["logging_policy_value"]
    assert references["no action (DR)"] == metrics["ope_dr_no_action_value"]
    # Under the axes: the gate's estimator's paired gains, the same numbers as the metrics.
    assert gate_estimator() == "dr"
    for over, what in (("logged", "the logged policy"), ("nothing", "doing nothing")):
        key = f"ope_dr_gain_over_{over}"
        gain = [metrics[f"{key}{end}"] for end in ("", "_ci_low", "_ci_high")]
        for e in estimators:  # every estimator's gain is a metric, paired on the same decisions
            assert (
                metrics[f"ope_{e}_gain_over_{over}_ci_low"] <= metrics[f"ope_{e}_gain_over_{over}"]
            )
        # One sentence per reference, each ending ", by DR" (wrapped at 100 characters).
        sentences = " ".join(under.split()).split(", by DR")
        [line] = [sentence for sentence in sentences if what in sentence]
        said = re.search(r"([-+][\d.]+) \(([-+][\d.]+) to ([-+][\d.]+)\) per decision", line)
        assert said, line
        decimals = len(said[1].split(".")[-1])
        np.testing.assert_allclose(
            [float(x) for x in said.groups()], gain, atol=0.5 * 10**-decimals
        )
        verdict = "adds" if gain[1] > 0 else "falls short" if gain[2] < 0 else "not distinguishable"
        assert verdict in line, line
    # Paired: the difference of the two values, not of two separately estimated ones.
    assert metrics["ope_dr_gain_over_logged"] == pytest.approx(
        metrics["ope_dr_policy_value"] - metrics["logging_policy_value"]
    )


def test_the_no_action_reference_is_by_the_estimator_of_the_gain_said_under_it(
    without_webinars: TrainResult,
) -> None:
    """Doing nothing was drawn by SNIPS beside the learned policy's DR value and a
    gain over doing nothing by DR: on the demo, DR +2.19 beside no action (SNIPS)
    +1.99 under "+0.18 over doing nothing, by DR", figures that did not add up. Each
    estimator's no-action value is a metric, the plot draws the one by the estimator
    of the sentence under it, and value minus reference is that sentence's gain."""
    metrics = without_webinars.metrics
    for name in ("ips", "snips", "dr"):
        assert metrics[f"ope_{name}_policy_value"] - metrics[
            f"ope_{name}_no_action_value"
        ] == pytest.approx(metrics[f"ope_{name}_gain_over_nothing"], abs=1e-12)
    # The figures differ by estimator: a SNIPS reference beside DR's gain would not add up.
    assert abs(metrics["ope_snips_no_action_value"] - metrics["ope_dr_no_action_value"]) > 1e-3
    for by in ("dr", "ips"):
        figure = policy_value_figure(metrics, why_none="-", estimator=by)
        [ax] = figure.axes
        references = {line.get_label(): line.get_xdata()[0] for line in ax.get_lines()}
        assert references[f"no action ({by.upper()})"] == metrics[f"ope_{by}_no_action_value"]
        assert [label for label in references if label.startswith("no action")] == [
            f"no action ({by.upper()})"
        ]
        # The sentence under the plot gives the gain drawn: value minus the reference.
        sentences = " ".join(_texts(figure)[0].split()).split(f", by {by.upper()}")
        [line] = [sentence for sentence in sentences if "doing nothing" in sentence]
        said = re.search(r"([-+][\d.]+) \(", line)
        assert said, line
        decimals = len(said[1].split(".")[-1])
        drawn = metrics[f"ope_{by}_policy_value"] - references[f"no action ({by.upper()})"]
        assert float(said[1]) == pytest.approx(drawn, abs=0.5 * 10**-decimals)


def _gain(over: str, value: float, low: float, high: float, by: str = "dr") -> dict[str, float]:
    key = f"ope_{by}_gain_over_{over}"
    return {key: value, f"{key}_ci_low": low, f"{key}_ci_high": high}


def test_the_policy_value_figure_says_the_paired_gain_over_the_logged_policy() -> None:
    """The line under the plot compared each interval with the logged policy's value,
    a point with noise of its own on the same decisions: a DR interval of 2.1 to 2.7
    beside a logged 2.0 read as a gain the paired difference (-0.05 to +0.35) does
    not show. It says the paired gain by the gate's estimator."""
    metrics = {
        "ope_decisions": 1234.0,
        "logging_policy_value": 2.0,
        "ope_ips_policy_value": 2.2,
        "ope_ips_ci_low": 1.9,
        "ope_ips_ci_high": 2.5,
        "ope_dr_policy_value": 2.4,
        "ope_dr_ci_low": 2.1,
        "ope_dr_ci_high": 2.7,
        **_gain("logged", 0.15, -0.05, 0.35),
        **_gain("logged", 0.2, 0.01, 0.39, by="ips"),
    }
    # SNIPS undefined (no logged decision agrees with the policy), no no-touch decision.
    _, ticks, under = _policy_value_texts(policy_value_figure(metrics, why_none="-"))
    assert ticks == [
        "learned policy, IPS\n+2.20 (+1.90 to +2.50)",
        "learned policy, SNIPS\nundefined: no logged decision\nchose as it would",
        "learned policy, DR\n+2.40 (+2.10 to +2.70)",
        "logged policy (its average)\n+2.00",
    ]
    assert "\n" not in under  # a sentence a line: "by DR" alone on a second read as a heading
    said = " ".join(under.split())
    assert said == (
        "not distinguishable from the logged policy: +0.15 (-0.05 to +0.35) per decision, by DR"
    )
    gains = {
        **metrics,
        **_gain("logged", 0.12, 0.03, 0.21),
        **_gain("nothing", -0.3, -0.52, -0.08),
        "ope_snips_no_action_value": 2.7,
    }
    said = " ".join(_policy_value_texts(policy_value_figure(gains, why_none="-"))[2].split())
    assert said == (
        "the learned policy adds +0.12 (+0.03 to +0.21) per decision over the logged "
        "policy, by DR the learned policy falls short of doing nothing: -0.30 (-0.52 to "
        "-0.08) per decision, by DR"
    )
    by_ips = " ".join(
        _texts(policy_value_figure(metrics, why_none="-", estimator="ips"))[0].split()
    )
    assert by_ips == (
        "the learned policy adds +0.20 (+0.01 to +0.39) per decision over the logged policy, by IPS"
    )


def test_without_an_uplift_model_the_policy_value_figure_says_so(tmp_path: Path) -> None:
    result = _trained(tmp_path, n_hcps=300, drop_newest_webinars=False, without_outcomes=True)
    assert result.model.uplift_model is None
    assert not any(key.startswith("ope_") for key in result.metrics)
    figure = training_figures(result)["policy_value_by_estimator"]
    [said] = _texts(figure)
    assert said.startswith("no policy value:\nthis run has no uplift model")
    assert "preference x value" in said
    assert not figure.axes[0].axison


def test_with_too_few_logged_held_out_decisions_the_policy_value_figure_says_so(
    tmp_path: Path,
) -> None:
    result = _trained(tmp_path, n_hcps=300, drop_newest_webinars=False, newest_unlogged=True)
    assert result.model.uplift_model is not None
    assert "ope_dr_policy_value" not in result.metrics
    figure = training_figures(result)["policy_value_by_estimator"]
    [said] = _texts(figure)
    assert said.startswith("no policy value:\n0 held-out decisions with an outcome carry")
    assert "(need 50)" in said
    assert not figure.axes[0].axison


def test_the_policy_value_plot_is_logged_with_the_run_beside_the_others(trained: Any) -> None:
    from nextbest import registry

    (listed,) = [
        v for v in registry.list_versions(trained.settings) if v.version == trained.version
    ]
    client = registry.client(trained.settings)
    stored = {Path(a.path).name for a in client.list_artifacts(listed.run_id, "plots")}
    assert stored == {
        "calibration_by_channel.png",
        "policy_value_by_estimator.png",
        "qini_by_channel.png",
    }
    metrics = client.get_run(listed.run_id).data.metrics
    assert metrics["ope_decisions"] >= 50 and "ope_dr_policy_value" in metrics
