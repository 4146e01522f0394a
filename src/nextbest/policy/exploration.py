"""Exploration and holdout, with the propensity of what was served.

Two policies choose the first item of a list; the rest always follows the
greedy order, within the per-channel limit of one list:

- :class:`EpsilonGreedy`: with probability ``epsilon`` the first item is an
  eligible action drawn uniformly at random, otherwise the greedy best.
- :class:`Softmax` (Boltzmann exploration): the first item is drawn from every
  eligible action with probability proportional to ``exp(score / temperature)``.
  Like greedy, it serves nothing when no action is worth its cost.

With probability ``holdout_rate`` the whole request is a randomized control and
gets no action. With ``holdout_days`` (the service's default: 7) the draw is one
per HCP and period of that many days, not per request: :func:`holdout_draw`
hashes the HCP and the period of the decision date, so an HCP in the
holdout gets nothing from any caller, channel or worker for the whole period,
a control group truly left alone, and every HCP has the same chance
``holdout_rate`` of being in it each period (the propensities below are over
that draw too). Propensities let off-policy estimators (IPS, SNIPS, doubly
robust) and uplift reports reuse what was served. Both policies answer with no
action, outside the holdout, exactly when ``1 - epsilon`` (softmax: ``1``) of the
mass stays on an empty greedy list, so the probability of an empty answer is
``h + (1 - h) * [(1 - epsilon) if greedy is empty else 0]`` (``1`` with no
eligible action), with ``epsilon`` the rate each policy logs (``0`` for softmax).
:attr:`Served.p_nothing` is that probability as computed when serving, with every
rule of the moment applied, and is logged with the answer (``p_no_action``);
``nextbest.loop.evidence.no_action_probability`` rebuilds it by the formula only
for answers logged before it was recorded.
"""

from __future__ import annotations

import hashlib
import math
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import date

import numpy as np

from nextbest.policy.ranking import fill_list, head_per_channel

POLICIES = ("epsilon_greedy", "softmax")
# Keys the holdout draw (see :func:`holdout_draw`): the same in every worker and
# process, after every restart and whatever their seed, so that a server and a
# ``picks --log`` run hold out the same HCPs, as long as both have the same
# holdout rate (each process reads its own; see :func:`same_holdout_rate`).
HOLDOUT_SALT = "nextbest-holdout"
# Keys the draw of the HCPs a challenger answers (see :func:`challenger_draw`).
CHALLENGER_SALT = "nextbest-challenger"


@dataclass(frozen=True)
class Served:
    """What one request gets: action indices best first, and their propensities.

    ``propensity[0]`` is the probability this action was served first; for lower
    ranks it is the probability the action was in the list at all. Both include
    the ``1 - holdout_rate`` of not being held out. ``p_nothing`` is the probability
    of this request getting no action at all, holdout included.
    """

    actions: np.ndarray
    propensity: np.ndarray
    explored: np.ndarray
    holdout: bool
    p_nothing: float


class Exploration(ABC):
    """Draws what to serve from the greedy order; thread-safe, seeded draws.

    Subclasses say how the first item is drawn (:meth:`first_probabilities`);
    everything else (holdout, the rest of the list, propensities) is shared.
    """

    name: str
    epsilon: float  # logged with every answer; the uniform share of the first draw

    def __init__(
        self, *, holdout_rate: float, seed: int | None = None, holdout_days: int = 0
    ) -> None:
        if not 0.0 <= holdout_rate < 1.0:
            raise ValueError(f"holdout_rate must be in [0, 1), got {holdout_rate}")
        if holdout_days < 0:
            raise ValueError(f"holdout_days must be 0 or more, got {holdout_days}")
        self.holdout_rate = holdout_rate
        self.holdout_days = holdout_days
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        # The channel codes last served with, as a list: the model's, the same array
        # on every request (see :meth:`_codes`).
        self._codes_of: tuple[np.ndarray, list[int]] | None = None

    @abstractmethod
    def first_probabilities(
        self, n_eligible: int, best: int, scores: np.ndarray | None
    ) -> np.ndarray:
        """Probability of each eligible action being served first, outside the holdout.

        ``best`` is the position (in the eligible array) of the greedy first
        choice, ``-1`` when the greedy list is empty; ``scores`` ``(n_eligible,)``
        are the arbitration scores. The result sums to 1 or less: the rest is the
        probability of serving nothing.
        """

    def _draw(self) -> tuple[float, float]:
        with self._lock:
            u_holdout, u_first = self._rng.random(2)
        return float(u_holdout), float(u_first)

    def serve(
        self,
        ranked: np.ndarray,
        eligible: np.ndarray,
        *,
        k: int,
        scores: np.ndarray | None = None,
        channel_code: np.ndarray | None = None,
        max_per_channel: int | None = None,
        hcp_id: str | None = None,
        on: date | None = None,
    ) -> Served:
        """Choose what to serve.

        ``ranked``: the actions worth serving (positive score), best first, not
        truncated; ``eligible`` ``(n,)``: every action the rules allow, with their
        ``scores`` ``(n,)`` (needed by softmax). ``channel_code`` (indexed by
        action) and ``max_per_channel`` bound the items of one channel in the
        list, the explored first item included. ``hcp_id`` and the decision date
        ``on`` key the holdout draw when ``holdout_days`` is set (required then).
        """
        if max_per_channel is not None and max_per_channel < 1:
            ranked, eligible = ranked[:0], eligible[:0]
            scores = None if scores is None else scores[:0]
        n = len(eligible)
        # Lists, converted once: fill_list runs several times per answer below.
        ranked_ids = ranked.tolist()
        eligible_ids = eligible.tolist()
        codes = None if channel_code is None else self._codes(channel_code)
        if codes is not None and max_per_channel is not None:
            ranked_ids = head_per_channel(ranked_ids, codes, max_per_channel)
        greedy = fill_list(ranked_ids, k, channel_code=codes, max_per_channel=max_per_channel)
        best = -1
        if greedy:
            best = eligible_ids.index(greedy[0])
        u_holdout, u_first = self._draw()
        if self.holdout_days:
            if hcp_id is None or on is None:
                raise ValueError("a holdout per HCP and period needs hcp_id and on")
            u_holdout = holdout_draw(hcp_id, on, days=self.holdout_days, salt=HOLDOUT_SALT)
        keep = 1.0 - self.holdout_rate
        pi = self.first_probabilities(n, best, scores) if n else np.zeros(0)
        p_nothing = self.holdout_rate + keep * max(0.0, 1.0 - float(pi.sum()))
        if u_holdout < self.holdout_rate:
            return Served(np.empty(0, np.int64), np.empty(0), np.empty(0, bool), True, p_nothing)
        # Array methods, not NumPy's functions: their Python layers cost more than the
        # work on the few hundred numbers of one answer (here and in _inclusion).
        cumulative = pi.cumsum()
        pick = int(cumulative.searchsorted(u_first, side="right"))
        if pick >= n and n and cumulative[-1] > 1.0 - 1e-9:
            pick = int(pi.nonzero()[0][-1])  # rounding left u just above a full sum
        p_first = float(pi[pick]) if pick < n else 0.0
        if p_first == 0.0:
            # Only when an empty greedy list keeps some mass on "nothing".
            return Served(np.empty(0, np.int64), np.empty(0), np.empty(0, bool), False, p_nothing)
        first = eligible_ids[pick]
        rest = fill_list(
            ranked_ids, k - 1, channel_code=codes, max_per_channel=max_per_channel, first=first
        )
        propensity = [p_first]
        if rest:
            propensity += _inclusion(
                rest,
                pi,
                eligible,
                eligible_ids,
                ranked_ids,
                greedy,
                k,
                channel_code=channel_code,
                codes=codes,
                max_per_channel=max_per_channel,
            )
        # Drawn at random instead of the greedy first choice (an action the greedy
        # list holds lower down included: the order is then not by score).
        explored = not greedy or first != greedy[0]
        # Each array built from a list at once: a handful of items, where every NumPy
        # call costs more than the work it does.
        return Served(
            np.array([first, *rest], dtype=np.int64),
            np.array([keep * p for p in propensity]),
            np.array([explored] + [False] * len(rest)),
            False,
            p_nothing,
        )

    def _codes(self, channel_code: np.ndarray) -> list[int]:
        """``channel_code`` as a list, converted once per array: every request passes
        its model's own (200 actions: a few microseconds a request to convert)."""
        known = self._codes_of
        if known is None or known[0] is not channel_code:
            known = self._codes_of = (channel_code, channel_code.tolist())
        return known[1]


class EpsilonGreedy(Exploration):
    """Epsilon-greedy exploration with a randomized holdout."""

    name = "epsilon_greedy"

    def __init__(
        self,
        *,
        epsilon: float,
        holdout_rate: float,
        seed: int | None = None,
        holdout_days: int = 0,
    ) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        super().__init__(holdout_rate=holdout_rate, seed=seed, holdout_days=holdout_days)
        self.epsilon = epsilon

    def first_probabilities(
        self, n_eligible: int, best: int, scores: np.ndarray | None
    ) -> np.ndarray:
        pi = np.empty(n_eligible)
        pi.fill(self.epsilon / n_eligible)
        if best >= 0:
            pi[best] += 1.0 - self.epsilon
        return pi


class Softmax(Exploration):
    """Softmax (Boltzmann) exploration with a randomized holdout.

    P(first = a) = exp(s_a / T) / sum_b exp(s_b / T) over the eligible actions,
    with ``s`` the arbitration score (expected incremental value - cost, in the
    model's outcome units) and ``T`` the ``temperature`` in the same units: a
    small T is nearly greedy, a large one nearly uniform (Sutton & Barto,
    *Reinforcement Learning*, 2nd ed., section 2.8). When no action has a
    positive score the answer is empty, as the greedy policy's would be, so the
    logged ``epsilon`` is 0.
    """

    name = "softmax"
    epsilon = 0.0

    def __init__(
        self,
        *,
        temperature: float,
        holdout_rate: float,
        seed: int | None = None,
        holdout_days: int = 0,
    ) -> None:
        if not (np.isfinite(temperature) and temperature > 0.0):
            raise ValueError(f"temperature must be a number > 0, got {temperature}")
        super().__init__(holdout_rate=holdout_rate, seed=seed, holdout_days=holdout_days)
        self.temperature = float(temperature)

    def first_probabilities(
        self, n_eligible: int, best: int, scores: np.ndarray | None
    ) -> np.ndarray:
        if best < 0:
            return np.zeros(n_eligible)
        if scores is None or len(scores) != n_eligible:
            raise ValueError("softmax exploration needs the score of every eligible action")
        z = (np.asarray(scores, dtype=np.float64) - float(np.max(scores))) / self.temperature
        weights = np.exp(z)
        return weights / weights.sum()


def holdout_draw(hcp_id: str, on: date, *, days: int, salt: str) -> float:
    """A uniform number in [0, 1) fixed for ``hcp_id`` over the period of ``days``
    days holding ``on`` (for 7: the week from Monday), independent between HCPs
    and periods: the holdout draw shared by every request of that HCP and period.

    Periods count from 0001-01-01, a Monday. A keyed hash (BLAKE2b, 64 bits) of
    salt, HCP and period stands in for a random draw that every worker and every
    restart repeats without sharing state.
    """
    period = (on.toordinal() - 1) // days
    return _keyed_uniform(salt, hcp_id, str(days), str(period))


def challenger_draw(hcp_id: str, version: str) -> float:
    """A uniform number in [0, 1) fixed for ``hcp_id`` and the challenger ``version``:
    an HCP whose draw is below ``NEXTBEST_CHALLENGER_SHARE`` is answered by that
    challenger, by every worker and request, for as long as it is the challenger.
    Independent of the holdout draw, and drawn afresh for each new challenger."""
    return _keyed_uniform(CHALLENGER_SALT, hcp_id, version)


def _keyed_uniform(*parts: str) -> float:
    # A keyed hash (BLAKE2b, 64 bits) of the parts, as a number in [0, 1).
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def same_holdout_rate(rate: float, other: float) -> bool:
    """Whether two holdout rates hold out the same HCPs: the draw is one hash per
    HCP and period compared with the rate, so processes agree on who is held out
    only when their rates are equal (up to the rounding of a rate read back from
    the recommendation log)."""
    return math.isclose(rate, other, rel_tol=1e-9, abs_tol=1e-12)


def make_exploration(
    policy: str,
    *,
    epsilon: float,
    temperature: float,
    holdout_rate: float,
    seed: int | None = None,
    holdout_days: int = 0,
) -> Exploration:
    """The exploration policy named ``policy`` (one of :data:`POLICIES`); a holdout
    per HCP and period of ``holdout_days`` days, or per call for 0."""
    if policy == "epsilon_greedy":
        return EpsilonGreedy(
            epsilon=epsilon, holdout_rate=holdout_rate, seed=seed, holdout_days=holdout_days
        )
    if policy == "softmax":
        return Softmax(
            temperature=temperature, holdout_rate=holdout_rate, seed=seed, holdout_days=holdout_days
        )
    raise ValueError(f"exploration must be one of {', '.join(POLICIES)}, got {policy!r}")


def _inclusion(
    targets: list[int],
    pi: np.ndarray,
    eligible: np.ndarray,
    eligible_ids: list[int],
    ranked: list[int],
    greedy: list[int],
    k: int,
    *,
    channel_code: np.ndarray | None,
    codes: list[int] | None,
    max_per_channel: int | None,
) -> list[float]:
    """P(a is in the list | not held out) for each action ``a`` in ``targets``.

    The list is ``[f] + fill(ranked without f, k - 1, f's channel counted)`` with
    ``f`` drawn from ``pi`` (over ``eligible``, distinct actions; ``eligible_ids``
    the same as a list). Any ``f`` of the greedy list
    yields the greedy list itself; any other ``f`` yields ``f`` plus a fill that
    depends only on ``f``'s channel, unless ``f`` would itself be taken by that
    fill, which is handled one by one (at most ``k - 1`` per channel).
    """
    prob = dict.fromkeys(targets, 0.0)
    # The greedy list's few actions found by position (a list's index, in C), not by
    # comparing every eligible action with each of them.
    in_greedy = np.zeros(len(eligible_ids), dtype=bool)
    for a in greedy:
        if (at := _position(eligible_ids, a)) >= 0:  # else not eligible: never drawn first
            in_greedy[at] = True
    greedy_mass = float(pi[in_greedy].sum())
    is_other = ~in_greedy & (pi > 0.0)
    others = is_other.nonzero()[0]
    greedy_set = set(greedy)

    def first_mass(a: int) -> float:
        """The probability of ``a`` being drawn first outside the greedy list (0: it
        is in the list, or never drawn). Asked of a few actions only: the targets
        and the fills' items."""
        if a in greedy_set or (at := _position(eligible_ids, a)) < 0:
            return 0.0
        return float(pi[at]) if is_other[at] else 0.0

    for a in targets:
        prob[a] += first_mass(a)  # a itself drawn first (outside the greedy list)
    capped = channel_code is not None and max_per_channel is not None
    fills: dict[int, list[int]] = {}
    by_channel: dict[int, float] = {}
    if capped and channel_code is not None:
        mass_of = np.bincount(channel_code[eligible[others]], weights=pi[others])
        channels = (mass_of > 0.0).nonzero()[0].tolist()
    else:
        mass_of = np.array([float(pi[others].sum())])
        channels = [-1] if len(others) else []
    masses = mass_of.tolist()
    # The fill with one more item of channel c counted differs from the plain one
    # only if the plain one already holds max_per_channel items of c.
    base = fill_list(ranked, k - 1, channel_code=codes, max_per_channel=max_per_channel)
    base_codes = [] if codes is None else [codes[a] for a in base]
    for c in channels:
        if capped and max_per_channel is not None and base_codes.count(c) >= max_per_channel:
            fill = fill_list(
                ranked, k - 1, channel_code=codes, max_per_channel=max_per_channel, counted=c
            )
        else:
            fill = base
        fills[c] = fill
        mass = masses[c if capped else 0]
        # An f the fill would take itself leaves a different fill: one by one.
        # (The fill rule makes this impossible today; kept so the sum stays
        # exact if the rule ever changes.)
        for f in fill:
            p = first_mass(f)
            if p == 0.0 or (capped and codes is not None and codes[f] != c):
                continue
            mass -= p
            rest = fill_list(
                ranked, k - 1, channel_code=codes, max_per_channel=max_per_channel, first=f
            )
            for a in rest:
                if a in prob:
                    prob[a] += p
        by_channel[c] = mass
    for a in targets:
        if a in greedy_set:
            prob[a] += greedy_mass
        for c, mass in by_channel.items():
            if a in fills[c]:
                prob[a] += mass
    return [min(prob[a], 1.0) for a in targets]


def _position(ids: list[int], a: int) -> int:
    """Where ``a`` is in ``ids`` (its first place), -1 if nowhere."""
    try:
        return ids.index(a)
    except ValueError:
        return -1
