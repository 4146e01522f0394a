"""The figures a training run logs: a channel without enough held-out data is named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from nextbest.contract import load_dataset
from nextbest.evaluation.plots import training_figures
from nextbest.learning.config import EngagementParams, TrainConfig, UpliftParams
from nextbest.learning.train import TrainResult, train
from nextbest.simulate import simulate_world

QUICK = TrainConfig(
    engagement=EngagementParams(n_estimators=30, num_leaves=7),
    uplift=UpliftParams(n_estimators=40),
)


def _trained(out: Path, *, n_hcps: int, drop_newest_webinars: bool) -> TrainResult:
    world = simulate_world(n_hcps=n_hcps, periods=8, seed=3)
    world.write(out, fmt="parquet")
    if drop_newest_webinars:  # webinars stopped: none in the held-out (newest) slice
        interactions = pd.read_parquet(out / "interactions.parquet")
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
    assert ax.get_ylabel() == "observed engagement rate"
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
