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


def _yes_no_cell(*, touched_yes: int, held_yes: int) -> dict[str, np.ndarray]:
    """30 touched and 30 held-out HCPs, 4 decisions each, a yes/no outcome: yes on
    every decision of the first ``touched_yes`` (``held_yes``) HCPs of each side."""
    hcp = np.repeat(np.arange(60), 4)
    channel = np.where(hcp < 30, 0, -1)
    yes = (hcp < touched_yes) | ((hcp >= 30) & (hcp < 30 + held_yes))
    return {
        "segment": np.full(len(hcp), "nephrology"),
        "channel": channel,
        "outcome": yes.astype(np.float64),
        "propensity": np.full(len(hcp), 0.5),
        "hcp": hcp,
        "controls": channel < 0,
    }


def test_no_outcome_on_one_side_against_a_few_on_the_other_is_no_reason() -> None:
    """4 of 30 touched HCPs said yes, none of 30 held out: the no-touch side's error
    was 0, its mean as if exact, and the interval [+0.005, +0.261] lay above 0, a
    served reason ("webinars measured +0.13") where Fisher's exact test on the HCPs
    gives p = 0.11. Each side's error is at least that of a yes/no outcome seen in
    none of its 30 HCPs, as in the uplift report."""
    cell = _yes_no_cell(touched_yes=4, held_yes=0)
    effect, low, high = segment_uplift(channels=("webinar",), **cell)["nephrology|webinar"]
    assert stats.fisher_exact([[4, 26], [0, 30]]).pvalue > 0.1
    assert effect == pytest.approx(4 / 30)
    assert low < 0 < effect < high


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_sides_whose_outcomes_are_all_alike_keep_an_interval(value: float) -> None:
    """Every outcome of the cell the same: the interval was [0, 0], an exact "no
    effect" from 60 HCPs. It is now that of two sides of 30 HCPs each with a yes/no
    outcome seen in none of them: Agresti & Coull's ``p = 2 / 34``, variance
    ``p (1 - p) / 34`` per side, on Student's t with 58 degrees of freedom."""
    cell = _yes_no_cell(touched_yes=0, held_yes=0)
    cell["outcome"][:] = value
    effect, low, high = segment_uplift(channels=("webinar",), **cell)["nephrology|webinar"]
    p = 2 / 34
    half = stats.t.isf(0.025, 58) * np.sqrt(2 * p * (1 - p) / 34)
    assert (effect, low, high) == pytest.approx((0.0, -half, half))


def test_enough_outcomes_on_one_side_against_none_is_still_a_reason() -> None:
    """10 of 30 touched HCPs said yes against none held out (Fisher's p = 0.0006): the
    floor widens the interval but leaves it above 0."""
    cell = _yes_no_cell(touched_yes=10, held_yes=0)
    assert stats.fisher_exact([[10, 20], [0, 30]]).pvalue < 0.001
    effect, low, _high = segment_uplift(channels=("webinar",), **cell)["nephrology|webinar"]
    assert effect == pytest.approx(10 / 30)
    assert low > 0
