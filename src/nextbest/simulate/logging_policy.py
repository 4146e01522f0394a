"""The traditional, biased policy that produced the simulated history.

Per HCP and period it picks one option among ``1 + A``: column 0 is "no touch",
column ``1 + a`` is catalog action ``a``. The mixture is

    P = HOLDOUT_SHARE * [no touch]
        + (1 - HOLDOUT_SHARE) * (EXPLORATION_SHARE * uniform(eligible actions)
                                 + (1 - EXPLORATION_SHARE) * traditional)

*traditional* is what a sales organisation does without a model: reps chase high
deciles (visits rise steeply with decile), phone calls go to the middle deciles,
webinar invitations go out at random, e-mail is blasted to almost everyone with
consent, and the content within a channel is picked nearly at random. The
exploration term gives every eligible action a positive probability, so
inverse-propensity estimates over the history are unbiased.
"""

from __future__ import annotations

import numpy as np

from nextbest.simulate.catalog import ActionCodes
from nextbest.simulate.response import sigmoid
from nextbest.simulate.vocabulary import CHANNELS, EMAIL, REP_PHONE, REP_VISIT, WEBINAR

HOLDOUT_SHARE = 0.10
EXPLORATION_SHARE = 0.10
WEBINAR_INVITE_RATE = 0.06
EMAIL_SHARE_OF_REST = 0.85  # of the mass left after reps and webinars
MEDICAL_CONTENT_WEIGHT = 0.6  # reps' marketing team favours promotional pieces a little


def _channel_shares(decile: np.ndarray) -> np.ndarray:
    """Traditional P(channel) per HCP, ``(n, C)``; the rest of 1 is "no touch"."""
    d = decile.astype(np.float64)
    shares = np.zeros((d.shape[0], len(CHANNELS)))
    shares[:, REP_VISIT] = 0.55 * sigmoid(1.3 * (d - 7.0))
    shares[:, REP_PHONE] = 0.35 * np.exp(-(((d - 5.0) / 2.2) ** 2))
    shares[:, WEBINAR] = WEBINAR_INVITE_RATE
    rest = 1.0 - shares.sum(axis=1)
    shares[:, EMAIL] = EMAIL_SHARE_OF_REST * rest
    return shares


def treatment_probabilities(
    decile: np.ndarray, eligible: np.ndarray, codes: ActionCodes
) -> np.ndarray:
    """The policy outside the holdout: P(option) per HCP, ``(n, 1 + A)``, rows sum to 1.

    Args:
        decile: ``(n,)`` int 1..10.
        eligible: ``(n, A)`` bool, what each HCP may receive now.
        codes: the catalog as arrays.
    """
    n, n_actions = eligible.shape
    content_weight = eligible * np.where(codes.medical, MEDICAL_CONTENT_WEIGHT, 1.0)[None, :]
    # Normalise content weights within each channel, per HCP.
    per_channel = np.stack(
        [content_weight[:, codes.channel == c].sum(axis=1) for c in range(len(CHANNELS))], axis=1
    )  # (n, C)
    available = per_channel > 0
    # A channel with nothing eligible (no consent, nothing approved) is simply skipped:
    # the traditional policy does not re-route its mass, so it becomes "no touch".
    shares = _channel_shares(decile) * available
    scale = shares / np.where(available, per_channel, 1.0)  # P(channel) / total weight

    n_eligible = eligible.sum(axis=1)
    explore_each = EXPLORATION_SHARE / np.maximum(n_eligible, 1)
    probs = np.empty((n, 1 + n_actions))
    traditional = probs[:, 1:]
    np.multiply(content_weight, scale[:, codes.channel], out=traditional)
    traditional *= 1.0 - EXPLORATION_SHARE
    traditional += eligible * explore_each[:, None]
    probs[:, 0] = (1.0 - EXPLORATION_SHARE) * (1.0 - shares.sum(axis=1)) + EXPLORATION_SHARE * (
        n_eligible == 0
    )
    return probs


def logging_policy_probabilities(
    decile: np.ndarray, eligible: np.ndarray, codes: ActionCodes
) -> np.ndarray:
    """Full logging policy including the holdout: P(option), ``(n, 1 + A)``, rows sum to 1.

    Column 0 is "no touch" (holdout or not); a logged row's ``propensity`` is the
    entry of the option it shows.
    """
    probs = (1.0 - HOLDOUT_SHARE) * treatment_probabilities(decile, eligible, codes)
    probs[:, 0] += HOLDOUT_SHARE
    return probs


def sample_options(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one option per row of ``probs`` (``(n, K)``, rows sum to 1); returns ``(n,)`` ints.

    A zero-probability option is never returned unless it is column 0 and ``u == 0``,
    which is why callers keep "no touch" in column 0 with positive mass.
    """
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(probs.shape[0]) * cdf[:, -1]
    choice = (cdf < u[:, None]).sum(axis=1)
    return np.minimum(choice, probs.shape[1] - 1)
