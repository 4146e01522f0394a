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
from nextbest.simulate.world import NO_ACTION, SimulatedWorld, best_or_none


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
        return best_or_none(self.net_value, eligible)


@dataclass(frozen=True)
class Responses:
    """Responses drawn after the history by :meth:`SimulatedWorld.draw_response`.

    Drawn from the end-of-history state without ``extra_touches`` (each draw
    independent), as the closed-loop benchmark does; ``(m,)`` arrays each.

    Attributes:
        hcp: row indices into ``hcps``.
        action: catalog row indices, -1 for no touch.
        engaged: 0/1.
        outcome: NRx.
    """

    hcp: np.ndarray
    action: np.ndarray
    engaged: np.ndarray
    outcome: np.ndarray

    def __post_init__(self) -> None:
        shapes = {np.shape(getattr(self, f)) for f in ("hcp", "action", "engaged", "outcome")}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise ValueError("hcp, action, engaged and outcome must be 1-d arrays of one length")


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
    responses: Responses | None = None,
    progress: Callable[[str], None] | None = None,
) -> Posterior:
    """Posterior expected net value of every HCP x action given the world's history.

    Args:
        world: the simulated world; only its observable tables, catalog and
            population-level constants are read, never an HCP's hidden traits.
        samples: trait samples per HCP.
        seed: seed of the samples.
        block_hcps: HCPs per block (memory grows with ``block_hcps * samples``).
        responses: more evidence, drawn after the history (e.g. a closed loop's
            served decisions and their outcomes); an undelivered action (not
            eligible) counts as no touch, as in the draw.
        progress: told each tenth of the HCPs done ("40% of HCPs"); this takes
            about a minute per 20 million HCP x sample pairs on one core.
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

    history = (action, engaged, outcome, recent)
    later = _delivered(world, responses)

    rng = np.random.default_rng(seed)
    net_value = np.empty((n, codes.n_actions))
    effective = np.empty(n)
    told = 0
    for start in range(0, n, block_hcps):
        hcp = np.arange(start, min(start + block_hcps, n))
        block = _block(obs, hcp, samples, threshold, rng, codes, history, later)
        net_value[hcp], effective[hcp] = block
        tenths = (hcp[-1] + 1) * 10 // n
        if progress is not None and tenths > told:
            told = tenths
            progress(f"{10 * tenths}% of HCPs")
    return Posterior(net_value=net_value - codes.cost[None, :], effective_samples=effective)


def _delivered(world: SimulatedWorld, responses: Responses | None) -> Responses | None:
    """``responses`` sorted by HCP, with undelivered actions as no touch."""
    if responses is None:
        return None
    hcp = np.asarray(responses.hcp, dtype=np.int64)
    action = np.asarray(responses.action, dtype=np.int64)
    if hcp.size and (hcp.min() < 0 or hcp.max() >= world.n_hcps):
        raise ValueError(f"responses.hcp values must be in 0..{world.n_hcps - 1}")
    if action.size and (action.min() < NO_ACTION or action.max() >= world.n_actions):
        raise ValueError(f"responses.action values must be -1 or 0..{world.n_actions - 1}")
    delivered = (action != NO_ACTION) & world.eligible[hcp, np.maximum(action, 0)]
    order = np.argsort(hcp, kind="stable")
    return Responses(
        hcp=hcp[order],
        action=np.where(delivered, action, NO_ACTION)[order],
        engaged=np.asarray(responses.engaged, dtype=np.float64)[order],
        outcome=np.asarray(responses.outcome, dtype=np.float64)[order],
    )


def _log_likelihood(
    z: np.ndarray, acted: np.ndarray, engaged: np.ndarray, outcome: np.ndarray, mean: np.ndarray
) -> np.ndarray:
    """Log-likelihood of responses (up to a constant): engagement if touched, then outcome.

    ``z`` is the engagement logit, ``mean`` the Poisson mean of the outcome.
    """
    # log sigmoid(z) if engaged, log sigmoid(-z) if not; only touches count.
    touched = np.where(acted, np.logaddexp(0.0, np.where(engaged > 0, -z, z)), 0.0)
    return outcome * np.log(mean) - mean - touched


def _block(
    obs: Observables,
    hcp: np.ndarray,
    samples: int,
    threshold: float,
    rng: np.random.Generator,
    codes: ActionCodes,
    history: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    later: Responses | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior expected uplift ``(h, A)`` and effective sample sizes ``(h,)`` of HCPs ``hcp``.

    ``history`` is the logged ``(action, engaged, outcome)``, each ``(periods, n)``,
    and the touches per channel before each period and at the end,
    ``(periods + 1, n, C)``.
    """
    action, engaged, outcome, recent = history
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
        mean = traits.baseline + e * np.where(acted, gain[rows, safe], 0.0)
        log_lik += _log_likelihood(z, acted, e, np.repeat(outcome[t, hcp], samples), mean)
    log_lik = log_lik.reshape(h, samples)
    end_recent = np.repeat(recent[-1, hcp], samples, axis=0)
    p_end = engagement_probability(logit, traits, codes, end_recent)
    if later is not None:
        log_lik += _later_log_likelihood(later, hcp, samples, p_end, gain, traits.baseline)
    weights = np.exp(log_lik - log_lik.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    uplift = p_end * gain
    expected = np.einsum("hs,hsa->ha", weights, uplift.reshape(h, samples, -1))
    return expected, 1.0 / (weights**2).sum(axis=1)


def _later_log_likelihood(
    later: Responses,
    hcp: np.ndarray,
    samples: int,
    p_end: np.ndarray,
    gain: np.ndarray,
    baseline: np.ndarray,
) -> np.ndarray:
    """``(h, samples)`` log-likelihood of the responses about the block's HCPs ``hcp``."""
    lo, hi = np.searchsorted(later.hcp, [hcp[0], hcp[-1] + 1])
    local = later.hcp[lo:hi] - hcp[0]
    action = later.action[lo:hi]
    acted = (action != NO_ACTION)[:, None]
    safe = np.maximum(action, 0)[:, None]
    rows = local[:, None] * samples + np.arange(samples)[None, :]  # (m, samples)
    p = np.clip(p_end[rows, safe], 1e-12, 1 - 1e-12)
    engaged = later.engaged[lo:hi, None]
    mean = baseline[rows] + engaged * np.where(acted, gain[rows, safe], 0.0)
    z = np.log(p) - np.log1p(-p)
    per_response = _log_likelihood(z, acted, engaged, later.outcome[lo:hi, None], mean)
    out = np.zeros((hcp.shape[0], samples))
    np.add.at(out, local, per_response)
    return out
