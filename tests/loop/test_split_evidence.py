"""Decisions a challenger share's random split chose the answering version of are
valued with both versions' probabilities of their action (``split_probability``).

Valued with the answering version's alone, a challenger's choice served on an HCP
the champion answered weighs ``n / epsilon``: a few such terms make most of the
estimate's variance. The split is a random draw per HCP, so the mixture is the
probability the action had before the draw, and the estimate stays unbiased.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nextbest.loop import gate
from nextbest.loop.evidence import NO_ACTION, split_probability, split_versions

VOCABULARY = pd.Index(["a", "b", "c", "d"], dtype=object)


def _frame(**columns: list[object]) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    base: dict[str, list[object]] = {
        "model_version": ["2"] * n,
        "split_with": ["1"] * n,
        "split_share": [0.3] * n,
        "policy": ["epsilon_greedy"] * n,
        "holdout_rate": [0.1] * n,
        "epsilon": [0.2] * n,
        "n_candidates": [4] * n,
    }
    base.update(columns)
    return pd.DataFrame(base)


def test_the_probability_of_a_split_decision_mixes_both_versions() -> None:
    decisions = _frame(
        model_version=["2", "1", "2", "2", "2", "2", "2", "2", "2", "2"],
        split_with=["1", "2", "1", "1", "1", "1", "9", "1", None, "1"],
        split_share=[0.3, 0.7, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, np.nan, 0.3],
        policy=["epsilon_greedy"] * 9 + ["softmax"],
        n_candidates=[4, 4, 4, 4, 0, 4, 4, 4, 4, 4],
    )
    # Logged: action code and its probability under the version that answered.
    action = np.array([0, 1, NO_ACTION, NO_ACTION, NO_ACTION, 3, 0, 2, 0, 0])
    pscore = np.array([0.77, 0.77, 0.1, 0.1, 1.0, 0.05, 0.77, 0.05, 0.77, 0.77])
    greedy = {  # each version's replayed greedy choice at every decision
        "1": np.array([1, 1, NO_ACTION, 0, NO_ACTION, 3, 0, -2, 0, 0]),
        "2": np.array([0, 2, 0, 0, 0, 0, 0, 0, 0, 0]),
    }
    catalogs = {"1": pd.Index(["a", "b", "d"]), "2": VOCABULARY}
    asked: list[tuple[str, list[int]]] = []

    def greedy_of(version: str, rows: np.ndarray) -> tuple[np.ndarray, pd.Index] | None:
        asked.append((version, rows.tolist()))
        if version not in greedy:
            return None  # version 9 cannot be loaded
        return greedy[version][rows], catalogs[version]

    found = split_probability(decisions, action, pscore, VOCABULARY, greedy_of)

    keep, explore = 0.9, 0.2 / 4
    expected = [
        # Version 1 chose b, not a: a only by exploration under it.
        0.3 * 0.77 + 0.7 * keep * explore,
        # Answered by version 1, version 2 the other (share 0.7 of the answering one):
        # version 2 chose c, so b only by exploration under it.
        0.7 * 0.77 + 0.3 * keep * explore,
        # No action, version 1's greedy list empty: the holdout or its 1 - epsilon.
        0.3 * 0.1 + 0.7 * (0.1 + keep * 0.8),
        # No action, version 1 would have served a: only the holdout.
        0.3 * 0.1 + 0.7 * 0.1,
        # No candidate at all: no action whichever version answered.
        1.0,
        # d, version 1's own choice.
        0.3 * 0.05 + 0.7 * keep * (0.8 + explore),
        # The other version cannot be loaded: the answering version's alone.
        0.77,
        # c, which version 1's catalog lacks (its greedy choice, d, outside the
        # vocabulary as well): never served by it.
        0.3 * 0.05,
        # No split: the answering version's alone; softmax: not replayed.
        0.77,
        0.77,
    ]
    np.testing.assert_allclose(found.pscore, expected, rtol=1e-12)
    assert (found.mixed, found.unmixed) == (7, 1)
    assert asked == [("1", [0, 2, 3, 4, 5, 7]), ("2", [1]), ("9", [6])]
    assert split_versions(decisions) == ["1", "2", "9"]
    assert split_versions(decisions.drop(columns="split_with")) == []


def _logged_under_a_split(
    rng: np.random.Generator, n_hcps: int, share: float, epsilon: float, n_actions: int
) -> tuple[pd.DataFrame, gate.LoggedBandit, np.ndarray, float, np.ndarray]:
    """One decision per HCP, a random split of HCPs between a champion and a
    challenger, both epsilon-greedy: the log as the gate reads it, the bandit with
    the answering version's own probabilities, the challenger's greedy choices, its
    true value per decision, and the champion's greedy choices."""
    mean = rng.normal(0.0, 1.0, size=(n_hcps, n_actions))  # each HCP's outcome per action
    champion = rng.integers(0, n_actions, size=n_hcps)
    challenger = mean.argmax(axis=1)  # the better policy
    theirs = rng.random(n_hcps) < share
    greedy = np.where(theirs, challenger, champion)
    explored = rng.random(n_hcps) < epsilon
    action = np.where(explored, rng.integers(0, n_actions, size=n_hcps), greedy)
    pscore = (1 - epsilon) * (action == greedy) + epsilon / n_actions
    outcome = mean[np.arange(n_hcps), action] + rng.normal(0.0, 1.0, size=n_hcps)
    decisions = _frame(
        model_version=np.where(theirs, "2", "1").tolist(),
        split_with=np.where(theirs, "1", "2").tolist(),
        split_share=np.where(theirs, share, 1 - share).tolist(),
        holdout_rate=[0.0] * n_hcps,
        epsilon=[epsilon] * n_hcps,
        n_candidates=[n_actions] * n_hcps,
    )
    data = gate.LoggedBandit(
        action=action, outcome=outcome, pscore=pscore, cost=np.zeros(n_actions)
    )
    truth = float(mean[np.arange(n_hcps), challenger].mean())
    return decisions, data, challenger, truth, champion


def test_valued_with_the_mixture_a_challenger_is_judged_without_bias_and_closer() -> None:
    """Over repeated worlds, the challenger's IPS value with the mixture is centred on
    its true value, as with each answering version's own probabilities, and spreads
    far less: its choices served on the champion's HCPs no longer weigh n / epsilon."""
    rng = np.random.default_rng(7)
    vocabulary = pd.Index([f"a{i}" for i in range(20)], dtype=object)
    own_errors, mixed_errors, own_widths, mixed_widths, covered = [], [], [], [], []
    for _ in range(200):
        decisions, data, challenger, truth, champion = _logged_under_a_split(
            rng, n_hcps=1_000, share=0.5, epsilon=0.1, n_actions=20
        )
        greedy = {"1": champion, "2": challenger}

        def greedy_of(version: str, rows: np.ndarray) -> tuple[np.ndarray, pd.Index]:
            return greedy[version][rows], vocabulary  # noqa: B023 (called at once)

        split = split_probability(decisions, data.action, data.pscore, vocabulary, greedy_of)
        assert split.mixed == len(decisions)
        mixed = gate.LoggedBandit(data.action, data.outcome, split.pscore, data.cost)
        own_ips = gate.policy_estimates(data, challenger)["ips"]
        mixed_ips = gate.policy_estimates(mixed, challenger)["ips"]
        own_errors.append(own_ips.value - truth)
        mixed_errors.append(mixed_ips.value - truth)
        own_widths.append(own_ips.ci_high - own_ips.ci_low)
        mixed_widths.append(mixed_ips.ci_high - mixed_ips.ci_low)
        covered.append(mixed_ips.ci_low <= truth <= mixed_ips.ci_high)
    own, mixed = np.array(own_errors), np.array(mixed_errors)
    # Unbiased, both: the mean error within three standard errors of 0.
    assert abs(mixed.mean()) < 3 * mixed.std() / np.sqrt(len(mixed)), mixed.mean()
    assert abs(own.mean()) < 3 * own.std() / np.sqrt(len(own)), own.mean()
    # Closer: the mixture's errors spread less than half as much, and its intervals
    # are narrower while covering the truth about as often as they say (95%).
    assert mixed.std() < 0.5 * own.std(), (mixed.std(), own.std())
    assert np.median(mixed_widths) < 0.6 * np.median(own_widths)
    assert np.mean(covered) > 0.9, np.mean(covered)
