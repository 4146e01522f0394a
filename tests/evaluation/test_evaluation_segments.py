"""Segment uplift: propensity weighting removes the logging policy's targeting."""

from __future__ import annotations

import numpy as np
import pytest

from nextbest.evaluation.segments import segment_uplift


def test_segment_effects_recover_the_truth_under_biased_assignment() -> None:
    rng = np.random.default_rng(0)
    n = 60_000
    segment = rng.choice(["oncology", "cardiology"], size=n)
    high = rng.random(n) < 0.5  # high prescribers: bigger baseline, touched far more often
    p_touch = np.where(high, 0.8, 0.2)
    touched = rng.random(n) < p_touch
    effect = np.where(segment == "oncology", 0.6, 0.0)
    y = np.where(high, 5.0, 1.0) + touched * effect + rng.normal(size=n)
    channel = np.where(touched, 0, -1)
    propensity = np.where(touched, p_touch, 1 - p_touch)
    table = segment_uplift(
        segment=segment,
        channel=channel,
        channels=("webinar",),
        outcome=y,
        propensity=propensity,
    )
    onc, low, high_ci = table["oncology|webinar"]
    assert onc == pytest.approx(0.6, abs=0.1)
    assert low < onc < high_ci
    card = table["cardiology|webinar"]
    assert card[1] < 0 < card[2]  # no effect: the interval covers 0


def test_small_cells_are_left_out() -> None:
    table = segment_uplift(
        segment=np.array(["a"] * 50),
        channel=np.array([0, -1] * 25),
        channels=("email",),
        outcome=np.ones(50),
        propensity=np.full(50, 0.5),
    )
    assert table == {}
