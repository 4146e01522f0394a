"""Qini / gain curves: known answers on constructed data, and bad input named."""

from __future__ import annotations

import numpy as np
import pytest

from nextbest.evaluation.uplift_curves import uplift_curve


def _experiment(n: int = 20_000, seed: int = 0):
    """Half treated at random; treatment adds 1.0 only where x > 0."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    treated = rng.random(n) < 0.5
    y = rng.normal(size=n) + treated * (x > 0)
    return x, treated, y


def test_a_perfect_ranking_beats_random_and_reverse() -> None:
    x, treated, y = _experiment()
    good = uplift_curve(x, treated, y)
    bad = uplift_curve(-x, treated, y)
    flat = uplift_curve(np.zeros_like(x), treated, y)
    # Perfect ranking, by hand: Q(phi) = phi / 2 up to phi = 0.5, then 0.25; the
    # random line is 0.25 phi; the area between them is 1/16.
    assert good.qini_auc == pytest.approx(1 / 16, abs=0.01)
    assert bad.qini_auc == pytest.approx(-1 / 16, abs=0.01)
    assert abs(flat.qini_auc) < 0.03  # random targeting lies on the diagonal
    # All treated: the overall effect, about 0.5; the top half holds all of it (about 1.0).
    assert good.uplift_at(1.0) == pytest.approx(0.5, abs=0.05)
    assert good.uplift_at(0.5) == pytest.approx(1.0, abs=0.08)
    assert good.qini[0] == 0.0
    assert good.qini[-1] == pytest.approx(flat.qini[-1], abs=1e-9)
    assert good.auuc > flat.auuc


def test_weights_undo_unequal_assignment() -> None:
    rng = np.random.default_rng(1)
    n = 40_000
    x = rng.normal(size=n)
    p = np.where(x > 0, 0.8, 0.2)  # those who benefit were treated more often
    treated = rng.random(n) < p
    y = 2.0 * (x > 0) + treated * 0.5 + rng.normal(size=n)  # constant true effect 0.5
    weight = np.where(treated, 1 / p, 1 / (1 - p))
    naive = uplift_curve(x, treated, y)
    fixed = uplift_curve(x, treated, y, weight)
    assert fixed.uplift_at(1.0) == pytest.approx(0.5, abs=0.06)
    assert abs(naive.uplift_at(1.0) - 0.5) > 0.5


@pytest.mark.parametrize(
    ("score", "treated", "outcome", "message"),
    [
        (np.zeros(4), np.ones(4, bool), np.zeros(4), "both treated and control"),
        (np.zeros(4), np.zeros(4, bool), np.zeros(4), "both treated and control"),
        (np.zeros(4), np.array([1, 0, 1], bool), np.zeros(4), "treated has shape"),
        (np.array([0, np.nan, 0, 0]), np.array([1, 0, 1, 0], bool), np.zeros(4), "finite"),
    ],
)
def test_bad_input_is_named(score, treated, outcome, message) -> None:
    with pytest.raises(ValueError, match=message):
        uplift_curve(score, treated, outcome)
