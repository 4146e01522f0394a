"""Segment uplift: propensity weighting removes the logging policy's targeting."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

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
        hcp=np.arange(n),
        controls=~touched,
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
        hcp=np.arange(50),
        controls=np.array([False, True] * 25),
    )
    assert table == {}


def _weekly_world(rng: np.random.Generator, n_hcps: int, weeks: int) -> dict[str, np.ndarray]:
    """Decisions about each HCP every week, no effect anywhere; an HCP's outcomes
    share its habits, and a coin per HCP decides whether it is touched (at the
    logged probability 0.5) or held out for the whole period."""
    hcp = np.repeat(np.arange(n_hcps), weeks)
    touched = np.repeat(rng.random(n_hcps) < 0.5, weeks)
    habit = np.repeat(rng.normal(scale=2.0, size=n_hcps), weeks)
    return {
        "segment": np.repeat(rng.choice(["oncology", "cardiology"], size=n_hcps), weeks),
        "channel": np.where(touched, 0, -1),
        "outcome": habit + rng.normal(size=len(hcp)),
        "propensity": np.full(len(hcp), 0.5),
        "hcp": hcp,
        "controls": ~touched,
    }


def test_decisions_logged_twice_do_not_narrow_the_intervals() -> None:
    """The same decisions twice over (same HCP, same outcome) are no new evidence."""
    world = _weekly_world(np.random.default_rng(1), n_hcps=400, weeks=6)
    twice = {name: np.repeat(values, 2) for name, values in world.items()}
    once = segment_uplift(channels=("webinar",), **world)
    doubled = segment_uplift(channels=("webinar",), **twice)
    assert once.keys() == doubled.keys() == {"oncology|webinar", "cardiology|webinar"}
    for key, (effect, low, high) in once.items():
        assert low < effect < high
        assert doubled[key] == pytest.approx((effect, low, high), rel=1e-9, abs=1e-12), key


def test_intervals_keep_their_coverage_when_hcps_are_decided_on_weekly() -> None:
    """No effect anywhere: a 95% interval must cover 0 about 95% of the time. Counted
    as independent rows, an HCP's 8 decisions sharing its habits made it cover 0
    only about half the time."""
    rng = np.random.default_rng(2)
    covered = []
    for _ in range(200):
        table = segment_uplift(channels=("webinar",), **_weekly_world(rng, n_hcps=200, weeks=8))
        covered += [low < 0 < high for _effect, low, high in table.values()]
    assert len(covered) == 400
    assert np.mean(covered) > 0.91


def test_cells_of_few_hcps_are_left_out() -> None:
    """Hundreds of decisions, but from 16 HCPs: too few independent units."""
    world = _weekly_world(np.random.default_rng(3), n_hcps=16, weeks=30)
    world["segment"][:] = "nephrology"
    assert (world["channel"] == 0).sum() >= 100 and (world["channel"] < 0).sum() >= 100
    assert segment_uplift(channels=("webinar",), **world) == {}


def test_untouched_decisions_chance_did_not_choose_are_no_control() -> None:
    """A CRM's history: the reps left alone HCPs who wrote little anyway (no propensity
    logged). Those decisions would pass the reps' choice off as the touch's effect."""
    rng = np.random.default_rng(4)
    world = _weekly_world(rng, n_hcps=400, weeks=6)
    chosen = segment_uplift(channels=("webinar",), **world)
    n = 3000
    crm = {
        "segment": rng.choice(["oncology", "cardiology"], size=n),
        "channel": np.full(n, -1),
        "outcome": rng.normal(loc=-3.0, size=n),
        "propensity": np.full(n, np.nan),
        "hcp": np.arange(400, 400 + n),
        "controls": np.zeros(n, dtype=bool),
    }
    both = {name: np.concatenate([world[name], crm[name]]) for name in world}
    assert segment_uplift(channels=("webinar",), **both) == chosen
    for _effect, low, high in chosen.values():
        assert low < 0 < high


def test_a_cell_of_few_hcps_takes_welchs_t() -> None:
    """30 no-touch HCPs (4 decisions each, an HCP's outcome the same each time) with
    a wide spread against 120 touched HCPs: the no-touch side's error dominates and
    rests on 29 degrees of freedom, and the interval is Welch's t-test's on the HCPs
    (31 degrees of freedom, 2.04), not 1.96 (5% shorter), up to the clustered error's
    small-sample factor over all the cell's HCPs (1.3% here)."""
    rng = np.random.default_rng(8)
    touched, held = 120, 30
    habit = np.concatenate([rng.normal(0.3, 1.0, touched), rng.normal(0.0, 3.0, held)])
    hcp = np.concatenate([np.arange(touched), np.repeat(np.arange(touched, touched + held), 4)])
    channel = np.where(hcp < touched, 0, -1)
    table = segment_uplift(
        segment=np.full(len(hcp), "nephrology"),
        channel=channel,
        channels=("webinar",),
        outcome=habit[hcp],
        propensity=np.full(len(hcp), 0.5),
        hcp=hcp,
        controls=channel < 0,
    )
    effect, low, high = table["nephrology|webinar"]
    welch = stats.ttest_ind(habit[:touched], habit[touched:], equal_var=False)
    interval = welch.confidence_interval()
    assert effect == pytest.approx(habit[:touched].mean() - habit[touched:].mean())
    assert high - effect == pytest.approx(interval.high - effect, rel=0.015)
    assert effect - low == pytest.approx(effect - interval.low, rel=0.015)


@pytest.mark.parametrize(
    ("arg", "message"),
    [("hcp", "hcp has 3 rows, outcome has 4"), ("controls", "controls has 3 rows, outcome has 4")],
)
def test_arrays_of_another_length_are_refused(arg: str, message: str) -> None:
    given = {
        "segment": np.array(["a"] * 4),
        "channel": np.array([0, -1, 0, -1]),
        "outcome": np.ones(4),
        "propensity": np.full(4, 0.5),
        "hcp": np.arange(4),
        "controls": np.array([False, True] * 2),
    }
    given[arg] = given[arg][:3]
    with pytest.raises(ValueError, match=message):
        segment_uplift(channels=("email",), **given)
