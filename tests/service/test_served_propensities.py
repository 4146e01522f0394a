"""The propensities an answer is logged with, against every first draw enumerated.

Exploration works a lower-ranked item's inclusion probability out from the
channels' masses (``policy/exploration.py``'s ``_inclusion``) rather than by
listing every first draw: here each first draw is listed, its list built as
``serve`` builds it, and the probabilities summed, over random catalogs,
rankings, channel limits and list lengths.
"""

from __future__ import annotations

import numpy as np
import pytest

from nextbest.policy.exploration import EpsilonGreedy, Exploration, Softmax
from nextbest.policy.ranking import fill_list, ranked_positive


def _enumerated(
    policy: Exploration,
    eligible: np.ndarray,
    scores: np.ndarray,
    ranked: list[int],
    codes: list[int],
    k: int,
    cap: int | None,
) -> dict[int, float]:
    """P(action in the list, not held out) for every action, each first draw listed."""
    greedy = fill_list(ranked, k, channel_code=codes, max_per_channel=cap)
    best = eligible.tolist().index(greedy[0]) if greedy else -1
    pi = policy.first_probabilities(len(eligible), best, scores)
    keep = 1.0 - policy.holdout_rate
    listed: dict[int, float] = {}
    for f, p in zip(eligible.tolist(), pi.tolist(), strict=True):
        if p == 0.0:
            continue
        rest = fill_list(ranked, k - 1, channel_code=codes, max_per_channel=cap, first=f)
        for a in [f, *rest]:
            listed[a] = listed.get(a, 0.0) + keep * p
    return listed


@pytest.mark.parametrize("make", [EpsilonGreedy, Softmax], ids=["epsilon_greedy", "softmax"])
def test_every_served_propensity_is_the_sum_over_first_draws(make) -> None:
    rng = np.random.default_rng(11)
    checked = 0
    for case in range(60):
        n_actions = int(rng.integers(3, 40))
        channel_code = rng.integers(0, 4, n_actions)
        allowed = rng.random(n_actions) < 0.7
        score = rng.normal(0.0, 0.4, n_actions)
        eligible = np.flatnonzero(allowed)
        if not len(eligible):
            continue
        ranked = ranked_positive(score, allowed)
        k = int(rng.integers(1, 7))
        cap = [None, 1, 2, 3][case % 4]
        policy = (
            EpsilonGreedy(epsilon=0.3, holdout_rate=0.1, seed=case)
            if make is EpsilonGreedy
            else Softmax(temperature=0.2, holdout_rate=0.1, seed=case)
        )
        exact = _enumerated(
            policy,
            eligible,
            score[eligible],
            ranked.tolist(),
            channel_code.tolist(),
            k,
            cap,
        )
        for _ in range(8):
            served = policy.serve(
                ranked,
                eligible,
                k=k,
                scores=score[eligible],
                channel_code=channel_code,
                max_per_channel=cap,
            )
            if not len(served.actions):
                continue
            first, *rest = served.actions.tolist()
            # Rank 1: the probability of being drawn first, outside the holdout.
            greedy = fill_list(ranked.tolist(), k, channel_code=channel_code, max_per_channel=cap)
            best = eligible.tolist().index(greedy[0]) if greedy else -1
            pi = policy.first_probabilities(len(eligible), best, score[eligible])
            drawn = pi[eligible.tolist().index(first)] * (1.0 - policy.holdout_rate)
            assert served.propensity[0] == pytest.approx(drawn, rel=1e-12)
            for a, p in zip(rest, served.propensity[1:].tolist(), strict=True):
                assert p == pytest.approx(min(exact[a], 1.0 - policy.holdout_rate), rel=1e-9), (
                    case,
                    a,
                )
                checked += 1
    assert checked > 200  # the lower ranks were exercised


def test_a_policy_serving_two_catalogs_in_turn_keeps_each_ones_channels() -> None:
    """The channel codes are kept as a list between requests (converted once): a policy
    asked with another model's codes (a reload) limits the channels by the new ones."""
    policy = EpsilonGreedy(epsilon=0.0, holdout_rate=0.0, seed=0)
    eligible = np.arange(4)
    ranked = np.arange(4)  # best first
    one_channel = np.array([0, 0, 0, 0])
    four_channels = np.array([0, 1, 2, 3])
    for _ in range(2):
        served = policy.serve(
            ranked, eligible, k=4, channel_code=one_channel, max_per_channel=1
        ).actions.tolist()
        assert served == [0]
        served = policy.serve(
            ranked, eligible, k=4, channel_code=four_channels, max_per_channel=1
        ).actions.tolist()
        assert served == [0, 1, 2, 3]
