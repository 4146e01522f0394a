"""Exploration and holdout, with the propensity of what was served.

Epsilon-greedy on the first slot: with probability ``epsilon`` the first item is
an eligible action drawn uniformly at random (the rest of the list follows the
greedy order). With probability ``holdout_rate`` the whole request is a
randomized control and gets no action. Propensities let off-policy estimators
(IPS, SNIPS, doubly robust) and uplift reports reuse what was served.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Served:
    """What one request gets: action indices best first, and their propensities.

    ``propensity[0]`` is the probability this action was served first; for lower
    ranks it is the probability the action was in the list at all.
    """

    actions: np.ndarray
    propensity: np.ndarray
    explored: np.ndarray
    holdout: bool
    p_nothing: float


class EpsilonGreedy:
    """Epsilon-greedy exploration with a randomized holdout; thread-safe draws."""

    name = "epsilon_greedy"

    def __init__(self, *, epsilon: float, holdout_rate: float, seed: int | None = None) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        if not 0.0 <= holdout_rate < 1.0:
            raise ValueError(f"holdout_rate must be in [0, 1), got {holdout_rate}")
        self.epsilon = epsilon
        self.holdout_rate = holdout_rate
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()

    def _draw(self, n_eligible: int) -> tuple[float, float, int]:
        with self._lock:
            u_holdout, u_explore = self._rng.random(2)
            pick = int(self._rng.integers(n_eligible)) if n_eligible else -1
        return float(u_holdout), float(u_explore), pick

    def serve(self, greedy: np.ndarray, eligible: np.ndarray, *, k: int) -> Served:
        """Choose what to serve from the ``greedy`` list (best first) and the
        ``eligible`` action indices (every action the rules allow)."""
        n = len(eligible)
        u_holdout, u_explore, pick = self._draw(n)
        keep = 1.0 - self.holdout_rate
        greedy = greedy[:k]
        # Probability of an empty answer: holdout, or greedy says nothing and no exploration.
        p_nothing = self.holdout_rate + keep * (1.0 - self.epsilon if n else 1.0) * (
            len(greedy) == 0
        )
        if u_holdout < self.holdout_rate:
            return Served(np.empty(0, np.int64), np.empty(0), np.empty(0, bool), True, p_nothing)
        explored_first = n > 0 and u_explore < self.epsilon
        if explored_first:
            first = eligible[pick]
            rest = greedy[greedy != first][: k - 1]
            actions = np.concatenate([[first], rest]).astype(np.int64)
            explored = np.zeros(len(actions), dtype=bool)
            explored[0] = first not in greedy
        else:
            actions = greedy.astype(np.int64)
            explored = np.zeros(len(actions), dtype=bool)
        m = len(greedy)
        share = self.epsilon / n if n else 0.0
        propensity = np.empty(len(actions))
        for r, a in enumerate(actions):
            if r == 0:
                p = (1.0 - self.epsilon) * float(m > 0 and a == greedy[0]) + share
            elif m == k and a == greedy[-1]:
                # The last greedy slot is dropped when exploration brings in an outsider.
                p = 1.0 - self.epsilon * (n - m) / n
            else:
                p = 1.0
            propensity[r] = keep * p
        return Served(actions, propensity, explored, False, float(p_nothing))
