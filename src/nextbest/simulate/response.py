"""How an HCP responds to an action: engagement probability and prescription gain.

    p_engage(h, a) = sigmoid(intercept[ch] + channel_affinity[h, ch] + topic_affinity[h, k]
                             + medical_fit[h] * medical[a] - fatigue_sensitivity[h] * recent[h, ch])
    gain(h, a)     = persuadability[h] * topic_fit[h, k] * channel_strength[ch] * medical_gain[a]
    outcome        ~ Poisson(baseline[h] + engaged * gain(h, a))
    uplift(h, a)   = p_engage(h, a) * gain(h, a)

with ``ch``/``k`` the action's channel/topic and ``recent[h, ch]`` the HCP's touches
on that channel in the last ``FATIGUE_WINDOW`` periods.
"""

from __future__ import annotations

import numpy as np

from nextbest.simulate.catalog import ActionCodes
from nextbest.simulate.population import HiddenTraits
from nextbest.simulate.vocabulary import CHANNELS

FATIGUE_WINDOW = 4  # periods (weeks) of touches that still weigh on an HCP
# Base engagement (logit) per channel: most visits happen once booked, few e-mails are opened.
CHANNEL_INTERCEPT = np.array([-0.2, -0.8, -1.5, -2.4])  # order of CHANNELS
# How much an engaged touch moves prescribing: a face-to-face visit most, an e-mail least.
CHANNEL_STRENGTH = np.array([0.8, 0.55, 0.4, 0.7])  # order of CHANNELS
MEDICAL_GAIN = 0.8  # scientific content persuades a little less than a promotional message


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, elementwise."""
    return 1.0 / (1.0 + np.exp(-x))


def static_logit(traits: HiddenTraits, codes: ActionCodes) -> np.ndarray:
    """The engagement logit of every HCP x action before fatigue, shape ``(n, A)``."""
    return (
        CHANNEL_INTERCEPT[codes.channel][None, :]
        + traits.channel_affinity[:, codes.channel]
        + traits.topic_affinity[:, codes.topic]
        + traits.medical_fit[:, None] * codes.medical[None, :]
    )


def engagement_probability(
    logit: np.ndarray, traits: HiddenTraits, codes: ActionCodes, recent: np.ndarray
) -> np.ndarray:
    """P(engaged) of every HCP x action given recent touches.

    Args:
        logit: ``(n, A)`` from :func:`static_logit`.
        traits: hidden traits of the ``n`` HCPs.
        codes: the catalog as arrays.
        recent: ``(n, C)`` touches per channel in the last ``FATIGUE_WINDOW`` periods.

    Returns:
        ``(n, A)`` probabilities in (0, 1).
    """
    fatigue = traits.fatigue_sensitivity[:, None] * recent[:, codes.channel]
    return sigmoid(logit - fatigue)


def incremental_gain(traits: HiddenTraits, codes: ActionCodes) -> np.ndarray:
    """Expected extra NRx in the next period *if engaged*, shape ``(n, A)``, >= 0."""
    action_factor = CHANNEL_STRENGTH[codes.channel] * np.where(codes.medical, MEDICAL_GAIN, 1.0)
    return (
        traits.persuadability[:, None] * traits.topic_fit[:, codes.topic] * action_factor[None, :]
    )


def recent_touches(touched_channel: np.ndarray, period: int) -> np.ndarray:
    """Touches per channel in the ``FATIGUE_WINDOW`` periods before ``period``.

    Args:
        touched_channel: ``(periods, n)`` int channel code touched per period, -1 for none.
        period: the decision period; periods ``period - FATIGUE_WINDOW .. period - 1`` count.

    Returns:
        ``(n, C)`` float counts.
    """
    n = touched_channel.shape[1]
    counts = np.zeros((n, len(CHANNELS)))
    rows = np.arange(n)
    for past in range(max(0, period - FATIGUE_WINDOW), period):
        channel = touched_channel[past]
        touched = channel >= 0
        # One decision per HCP per period, so no index repeats and += is exact.
        counts[rows[touched], channel[touched]] += 1.0
    return counts
