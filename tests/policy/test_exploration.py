"""Exploration and holdout: seeded, with propensities that match frequencies."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta

import numpy as np
import pytest

from nextbest.policy.exploration import (
    EpsilonGreedy,
    Exploration,
    Softmax,
    holdout_draw,
    make_exploration,
)
from nextbest.policy.ranking import (
    fill_list,
    head_per_channel,
    ranked_by_value,
    ranked_positive,
    top_k,
)

# Eight eligible actions on three channels; five are worth serving.
CHANNEL = np.array([0, 0, 0, 1, 1, 2, 2, 0])
SCORE = np.array([0.9, 0.8, 0.7, 0.5, -0.1, 0.3, -0.4, -0.2])
ELIGIBLE = np.arange(8)
RANKED = ranked_positive(SCORE, np.ones(8, dtype=bool))


def _serve(policy: Exploration, k: int, cap: int | None = 2):
    return policy.serve(
        RANKED, ELIGIBLE, k=k, scores=SCORE, channel_code=CHANNEL, max_per_channel=cap
    )


def test_same_seed_same_draws() -> None:
    greedy, eligible = np.array([3, 1, 4]), np.arange(6)
    a = [EpsilonGreedy(epsilon=0.3, holdout_rate=0.2, seed=5).serve(greedy, eligible, k=3)]
    b = [EpsilonGreedy(epsilon=0.3, holdout_rate=0.2, seed=5).serve(greedy, eligible, k=3)]
    assert a[0].actions.tolist() == b[0].actions.tolist() and a[0].holdout == b[0].holdout
    s1 = [_serve(Softmax(temperature=0.2, holdout_rate=0.1, seed=9), 3) for _ in range(1)]
    s2 = [_serve(Softmax(temperature=0.2, holdout_rate=0.1, seed=9), 3) for _ in range(1)]
    assert s1[0].actions.tolist() == s2[0].actions.tolist()


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
        # Any first item but the greedy best was drawn at random, even one the
        # greedy list holds lower down: the list is then not in score order.
        assert s.explored[0] == (a != greedy[0])
    assert holdouts / n == pytest.approx(0.1, abs=0.01)
    for a, count in first.items():
        assert count / n == pytest.approx(claimed[a], abs=0.015), a


@pytest.mark.parametrize(
    "policy",
    [
        EpsilonGreedy(epsilon=0.5, holdout_rate=0.1, seed=1),
        Softmax(temperature=0.3, holdout_rate=0.1, seed=2),
    ],
    ids=["epsilon_greedy", "softmax"],
)
def test_every_propensity_matches_its_frequency_under_channel_limits(policy) -> None:
    """Rank 1: P(served first); lower ranks: P(in the list), channel limit included."""
    n, k = 30_000, 3
    first: Counter[int] = Counter()
    listed: Counter[int] = Counter()
    claimed_first: dict[int, float] = {}
    claimed_listed: dict[int, float] = {}
    for _ in range(n):
        s = _serve(policy, k)
        if s.holdout:
            continue
        a0 = int(s.actions[0])
        first[a0] += 1
        claimed_first[a0] = float(s.propensity[0])
        for a in s.actions.tolist():
            listed[a] += 1
        for a, p in zip(s.actions[1:].tolist(), s.propensity[1:].tolist(), strict=True):
            assert claimed_listed.setdefault(a, p) == pytest.approx(p)
    for a, count in first.items():
        assert count / n == pytest.approx(claimed_first[a], abs=0.012), ("first", a)
    # A lower-rank item's inclusion probability covers every way it gets listed.
    for a, p in claimed_listed.items():
        assert listed[a] / n == pytest.approx(p, abs=0.012), ("listed", a)


@pytest.mark.parametrize(
    "policy",
    [
        EpsilonGreedy(epsilon=1.0, holdout_rate=0.0, seed=3),
        Softmax(temperature=5.0, holdout_rate=0.0, seed=4),
    ],
    ids=["epsilon_greedy", "softmax"],
)
@pytest.mark.parametrize("cap", [1, 2])
def test_an_explored_first_item_never_breaks_the_channel_limit(policy, cap: int) -> None:
    explored = 0
    for _ in range(2_000):
        s = _serve(policy, 4, cap)
        counts = Counter(CHANNEL[s.actions].tolist())
        assert max(counts.values()) <= cap, s.actions
        assert len(set(s.actions.tolist())) == len(s.actions)
        explored += bool(s.explored[0])
    assert explored > 100  # the draws did explore


def test_softmax_probabilities_follow_the_scores() -> None:
    policy = Softmax(temperature=0.25, holdout_rate=0.2, seed=0)
    s = _serve(policy, 1)
    weights = np.exp(SCORE / 0.25)
    expected = 0.8 * weights / weights.sum()
    draws = Counter()
    n = 20_000
    for _ in range(n):
        served = _serve(policy, 1)
        if not served.holdout:
            draws[int(served.actions[0])] += 1
            assert served.propensity[0] == pytest.approx(expected[served.actions[0]])
    assert s.p_nothing == pytest.approx(0.2)
    assert draws[0] / n == pytest.approx(expected[0], abs=0.012)
    # Colder is greedier.
    cold = Softmax(temperature=0.01, holdout_rate=0.0, seed=0)
    assert all(int(_serve(cold, 1).actions[0]) == 0 for _ in range(200))


@pytest.mark.parametrize(
    ("policy", "p_empty"),
    [
        (EpsilonGreedy(epsilon=0.3, holdout_rate=0.1, seed=0), 0.1 + 0.9 * 0.7),
        (Softmax(temperature=0.3, holdout_rate=0.1, seed=0), 1.0),
    ],
    ids=["epsilon_greedy", "softmax"],
)
def test_no_action_probability_is_what_the_loop_assumes(policy, p_empty: float) -> None:
    """h + (1 - h) * (1 - epsilon) when nothing is worth serving (softmax logs epsilon 0)."""
    nothing_worth = np.empty(0, dtype=np.int64)
    s = policy.serve(nothing_worth, ELIGIBLE, k=3, scores=-np.abs(SCORE))
    h, eps = policy.holdout_rate, policy.epsilon
    assert s.p_nothing == pytest.approx(h + (1 - h) * (1 - eps)) == pytest.approx(p_empty)
    empty = sum(
        len(policy.serve(nothing_worth, ELIGIBLE, k=3, scores=-np.abs(SCORE)).actions) == 0
        for _ in range(5_000)
    )
    assert empty / 5_000 == pytest.approx(p_empty, abs=0.02)
    # With something worth serving, only the holdout answers with nothing.
    assert _serve(policy, 3).p_nothing == pytest.approx(h)


def test_fill_list_counts_the_first_item_channel() -> None:
    assert fill_list(RANKED, 3, channel_code=CHANNEL, max_per_channel=2) == [0, 1, 3]
    assert fill_list(RANKED, 3, channel_code=CHANNEL, max_per_channel=2, first=7) == [0, 3, 5]
    assert fill_list(RANKED, 3, channel_code=CHANNEL, max_per_channel=1, counted=0) == [3, 5]


def test_every_fill_over_the_per_channel_head_is_the_fill_over_the_whole_ranking() -> None:
    rng = np.random.default_rng(5)
    for _ in range(300):
        n_actions = int(rng.integers(1, 40))
        codes = rng.integers(0, 4, n_actions).tolist()
        # Often one channel dominates the top of the ranking, as 50 e-mails do.
        ranked = rng.permutation(n_actions)
        ranked = ranked[np.argsort([codes[a] != 0 for a in ranked], kind="stable")].tolist()
        cap = int(rng.integers(1, 4))
        head = head_per_channel(ranked, codes, cap)
        assert head == [a for a in ranked if a in set(head)]  # order kept
        for k in (1, 3, 5):
            for kwargs in [
                {},
                *({"first": a} for a in ranked),
                *({"counted": c} for c in range(4)),
            ]:
                whole = fill_list(ranked, k, channel_code=codes, max_per_channel=cap, **kwargs)
                assert (
                    fill_list(head, k, channel_code=codes, max_per_channel=cap, **kwargs) == whole
                )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"policy": "epsilon_greedy", "epsilon": 1.5, "holdout_rate": 0.0}, "epsilon"),
        ({"policy": "epsilon_greedy", "epsilon": 0.1, "holdout_rate": 1.0}, "holdout"),
        ({"policy": "softmax", "temperature": 0.1, "holdout_days": -7}, "holdout_days"),
        ({"policy": "softmax", "temperature": 0.0}, "temperature"),
        ({"policy": "softmax", "temperature": float("nan")}, "temperature"),
        ({"policy": "thompson"}, "exploration must be one of"),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict, match: str) -> None:
    arguments = {"epsilon": 0.1, "temperature": 0.1, "holdout_rate": 0.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        make_exploration(arguments.pop("policy"), **arguments)


def test_a_holdout_per_hcp_and_period_holds_every_request_of_the_period() -> None:
    """With ``holdout_days``, whether a request is held out depends on its HCP and its
    period alone: every request of an HCP in one week agrees, whatever the
    exploration draws; across HCPs and weeks the share held out is the rate."""
    rate, monday = 0.2, date(2026, 11, 30)
    policy = EpsilonGreedy(epsilon=0.5, holdout_rate=rate, seed=3, holdout_days=7)
    hcps = [f"H{i:04d}" for i in range(2_000)]

    def held(hcp: str, on: date) -> bool:
        return _serve_for(policy, hcp, on).holdout

    week = {h: held(h, monday) for h in hcps}
    assert sum(week.values()) / len(hcps) == pytest.approx(rate, abs=0.03)
    for h in hcps[:200]:  # Tuesday to Sunday of that week: the same HCPs
        assert all(held(h, monday + timedelta(days=d)) == week[h] for d in range(1, 7)), h
    # The next week draws anew, independently of the last.
    after = {h: held(h, monday + timedelta(days=7)) for h in hcps}
    both = sum(week[h] and after[h] for h in hcps) / len(hcps)
    assert both == pytest.approx(rate * rate, abs=0.02)
    assert sum(after.values()) / len(hcps) == pytest.approx(rate, abs=0.03)
    # The propensities still carry 1 - rate, the chance of not being held out.
    served = next(s for h in hcps if not (s := _serve_for(policy, h, monday)).holdout)
    assert served.p_nothing == pytest.approx(rate)
    with pytest.raises(ValueError, match="hcp_id and on"):
        _serve(policy, 3)


def _serve_for(policy: Exploration, hcp: str, on: date):
    return policy.serve(
        RANKED,
        ELIGIBLE,
        k=3,
        scores=SCORE,
        channel_code=CHANNEL,
        max_per_channel=2,
        hcp_id=hcp,
        on=on,
    )


def test_holdout_draws_are_uniform_and_keyed_by_salt_hcp_and_period() -> None:
    monday = date(2026, 11, 30)
    draws = np.array([holdout_draw(f"H{i}", monday, days=7, salt="s") for i in range(20_000)])
    assert ((draws >= 0) & (draws < 1)).all()
    counts, _ = np.histogram(draws, bins=10, range=(0, 1))
    assert counts.min() > 1_800 and counts.max() < 2_200, counts  # 2,000 each, sd ~42
    assert holdout_draw("H1", monday, days=7, salt="s") == holdout_draw(
        "H1", monday + timedelta(days=6), days=7, salt="s"
    )
    assert holdout_draw("H1", monday, days=7, salt="s") != holdout_draw(
        "H1", monday - timedelta(days=1), days=7, salt="s"
    ), "a Sunday belongs to the week before"
    assert holdout_draw("H1", monday, days=7, salt="s") != holdout_draw(
        "H1", monday, days=7, salt="t"
    )


def test_tied_actions_are_ranked_in_catalog_order_in_picks_as_in_a_single_answer() -> None:
    # Ties at the k-th place, more than fit: the first in catalog order, every time.
    score = np.array(
        [
            [0.1, 0.5, 0.2, 0.5, 0.5, 0.3, 0.5, 0.5, 0.9, 0.5, 0.5, 0.5],
            [0.5] * 12,
        ]
    )
    eligible = np.ones_like(score, dtype=bool)
    eligible[1, 0] = False
    picked = top_k(score, eligible, k=3)
    assert [row.tolist() for row in picked] == [[8, 1, 3], [1, 2, 3]]
    for row, got in zip(range(2), picked, strict=True):
        assert got.tolist() == ranked_positive(score[row], eligible[row])[:3].tolist()
    channels = np.array([0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1])
    limited = top_k(score, eligible, k=3, channel_code=channels, max_per_channel=1)
    assert [row.tolist() for row in limited] == [[8, 3], [1, 2]]


def test_ranked_by_value_is_ranked_positive_of_the_row() -> None:
    """A request ranks its allowed actions from their own values (_decide), as
    ranked_positive ranks a whole row: the same order, ties to the lower action."""
    rng = np.random.default_rng(3)
    for _ in range(200):
        score = rng.choice([-1.0, 0.0, 0.5, 0.5, 1.0, 2.0], size=40) + 0.0
        allowed = rng.random(40) < 0.6
        actions = np.flatnonzero(allowed)
        got = ranked_by_value(actions, score[actions])
        assert got.tolist() == ranked_positive(score, allowed).tolist()
