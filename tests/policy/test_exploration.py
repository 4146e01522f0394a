"""Epsilon-greedy exploration and holdout: seeded, with propensities that match frequencies."""

from __future__ import annotations

import numpy as np
import pytest

from nextbest.policy.exploration import EpsilonGreedy


def test_same_seed_same_draws() -> None:
    greedy, eligible = np.array([3, 1, 4]), np.arange(6)
    a = [EpsilonGreedy(epsilon=0.3, holdout_rate=0.2, seed=5).serve(greedy, eligible, k=3)]
    b = [EpsilonGreedy(epsilon=0.3, holdout_rate=0.2, seed=5).serve(greedy, eligible, k=3)]
    assert a[0].actions.tolist() == b[0].actions.tolist() and a[0].holdout == b[0].holdout


def test_first_slot_propensity_matches_its_frequency() -> None:
    policy = EpsilonGreedy(epsilon=0.4, holdout_rate=0.1, seed=0)
    greedy, eligible = np.array([2, 0, 1]), np.arange(5)
    n = 20_000
    first: dict[int, int] = {}
    claimed: dict[int, float] = {}
    holdouts = 0
    for _ in range(n):
        s = policy.serve(greedy, eligible, k=3)
        if s.holdout:
            holdouts += 1
            assert len(s.actions) == 0
            continue
        a = int(s.actions[0])
        first[a] = first.get(a, 0) + 1
        claimed[a] = float(s.propensity[0])
        assert s.explored[0] == (a not in greedy)
    assert holdouts / n == pytest.approx(0.1, abs=0.01)
    for a, count in first.items():
        assert count / n == pytest.approx(claimed[a], abs=0.015), a


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epsilon": 1.5, "holdout_rate": 0.0}, "epsilon"),
        ({"epsilon": 0.1, "holdout_rate": 1.0}, "holdout"),
    ],
)
def test_bad_rates_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EpsilonGreedy(**kwargs)
