"""The Bayes-optimal policy of a simulated world: the most any learner could get from its history.

The learned policy and the oracle are not on an equal footing: the oracle knows each
HCP's hidden traits, a learner sees only the ``hcps`` table and the history. The
policy here sees exactly what a learner sees, but knows the simulator's own
response model and priors (:mod:`nextbest.simulate.population`,
:mod:`nextbest.simulate.response`). For each HCP it weighs trait samples drawn from
the prior given the HCP's observable attributes by the likelihood of the HCP's whole
logged history (every engagement and every outcome, fatigue included), and acts on
the action of largest posterior expected net value, or on none when no action's is
positive. No policy built from the same data can have a larger expected true value,
so its ratio to the oracle is the ceiling of that ratio on this world, up to the
Monte Carlo error of the samples (``effective_samples`` says how many the weights
leave per HCP).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nextbest.simulate.catalog import ActionCodes
from nextbest.simulate.population import (
    Observables,
    draw_hidden_traits,
    heavy_engager_threshold,
)
from nextbest.simulate.response import (
    engagement_probability,
    incremental_gain,
    recent_touches,
    static_logit,
)
from nextbest.simulate.vocabulary import CHANNELS, PRACTICE_TYPES, REGIONS, SPECIALTIES
from nextbest.simulate.world import NO_ACTION, SimulatedWorld


@dataclass(frozen=True)
class Posterior:
    """Posterior expected values per HCP x action and how well the samples cover them.

    Attributes:
        net_value: ``(n, A)`` posterior expected uplift minus cost, NRx.
        effective_samples: ``(n,)`` Kish effective sample size of each HCP's weights.
    """

    net_value: np.ndarray
    effective_samples: np.ndarray

    def choice(self, eligible: np.ndarray) -> np.ndarray:
        """``(n,)`` the eligible action of largest posterior net value, -1 if none is positive."""
        net = np.where(eligible, self.net_value, -np.inf)
        best = net.argmax(axis=1)
        positive = net[np.arange(net.shape[0]), best] > 0
        return np.where(positive, best, NO_ACTION).astype(np.int64)


def observables(hcps: pd.DataFrame) -> Observables:
    """The simulator's observable attributes read back from its ``hcps`` table."""

    def codes(column: str, vocabulary: tuple[str, ...]) -> np.ndarray:
        return hcps[column].map({v: i for i, v in enumerate(vocabulary)}).to_numpy(np.int64)

    return Observables(
        specialty=codes("specialty", SPECIALTIES),
        decile=hcps["decile"].to_numpy(np.int64),
        years=hcps["years_in_practice"].to_numpy(np.int64),
        practice=codes("practice_type", PRACTICE_TYPES),
        region=codes("region", REGIONS),
        consent=np.column_stack([hcps[f"consent_{c}"].to_numpy(bool) for c in CHANNELS]),
    )


def posterior_values(
    world: SimulatedWorld,
    *,
    samples: int = 2000,
    seed: int = 0,
    block_hcps: int = 100,
    progress: Callable[[int], None] | None = None,
) -> Posterior:
    """Posterior expected net value of every HCP x action given the world's history.

    Args:
        world: the simulated world; only its observable tables, catalog and
            population-level constants are read, never an HCP's hidden traits.
        samples: trait samples per HCP.
        seed: seed of the samples.
        block_hcps: HCPs per block (memory grows with ``block_hcps * samples``).
        progress: called with the number of HCPs done after each block.
    """
    if samples < 1 or block_hcps < 1:
        raise ValueError("samples and block_hcps must be >= 1")
    n, codes = world.n_hcps, world.codes
    periods = len(world.interactions) // n
    obs = observables(world.hcps)
    # A population constant of the simulator (which HCPs count as heavy engagers),
    # known to its model as the priors are; no HCP's own traits enter.
    threshold = heavy_engager_threshold(world.traits.channel_affinity)

    index = {a: i for i, a in enumerate(world.catalog["action_id"])}
    frame = world.interactions
    logged = frame["action_id"].map(index).fillna(NO_ACTION).to_numpy(np.int64)
    action = logged.reshape(periods, n)
    engaged = frame["engaged"].to_numpy(np.float64).reshape(periods, n)
    outcome = frame["outcome"].to_numpy(np.float64).reshape(periods, n)
    touched = np.where(action != NO_ACTION, codes.channel[np.maximum(action, 0)], -1)
    recent = np.stack([recent_touches(touched, t) for t in range(periods + 1)])

    rng = np.random.default_rng(seed)
    net_value = np.empty((n, codes.n_actions))
    effective = np.empty(n)
    for start in range(0, n, block_hcps):
        hcp = np.arange(start, min(start + block_hcps, n))
        block = _block(obs, hcp, samples, threshold, rng, codes, action, engaged, outcome, recent)
        net_value[hcp], effective[hcp] = block
        if progress is not None:
            progress(len(hcp))
    return Posterior(net_value=net_value - codes.cost[None, :], effective_samples=effective)


def _block(
    obs: Observables,
    hcp: np.ndarray,
    samples: int,
    threshold: float,
    rng: np.random.Generator,
    codes: ActionCodes,
    action: np.ndarray,
    engaged: np.ndarray,
    outcome: np.ndarray,
    recent: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior expected uplift ``(h, A)`` and effective sample sizes ``(h,)`` of HCPs ``hcp``."""
    h = hcp.shape[0]
    block_obs = Observables(
        obs.specialty[hcp],
        obs.decile[hcp],
        obs.years[hcp],
        obs.practice[hcp],
        obs.region[hcp],
        obs.consent[hcp],
    ).repeat(samples)
    traits = draw_hidden_traits(block_obs, rng, heavy_threshold=threshold)
    logit = static_logit(traits, codes)  # (h * samples, A)
    gain = incremental_gain(traits, codes)
    rows = np.arange(h * samples)
    log_lik = np.zeros(h * samples)
    for t in range(action.shape[0]):
        a = np.repeat(action[t, hcp], samples)
        acted = a != NO_ACTION
        safe = np.maximum(a, 0)
        channel = codes.channel[safe]
        fatigue = (
            traits.fatigue_sensitivity * np.repeat(recent[t, hcp], samples, axis=0)[rows, channel]
        )
        z = logit[rows, safe] - fatigue
        e = np.repeat(engaged[t, hcp], samples)
        # log sigmoid(z) if engaged, log sigmoid(-z) if not; only touched periods count.
        log_lik -= np.where(acted, np.logaddexp(0.0, np.where(e > 0, -z, z)), 0.0)
        mean = traits.baseline + e * np.where(acted, gain[rows, safe], 0.0)
        log_lik += np.repeat(outcome[t, hcp], samples) * np.log(mean) - mean
    log_lik = log_lik.reshape(h, samples)
    weights = np.exp(log_lik - log_lik.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    end_recent = np.repeat(recent[-1, hcp], samples, axis=0)
    uplift = engagement_probability(logit, traits, codes, end_recent) * gain
    expected = np.einsum("hs,hsa->ha", weights, uplift.reshape(h, samples, -1))
    return expected, 1.0 / (weights**2).sum(axis=1)
