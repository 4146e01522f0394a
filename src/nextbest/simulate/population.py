"""HCPs of the simulated world: observable attributes and the hidden traits behind them.

Every hidden trait is a mix of a part explained by observables (so a model can
learn it from the ``hcps`` table) and an individual part (so an HCP's own history
carries information the attributes do not). The numbers below are the calibration
documented in :mod:`nextbest.simulate`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from nextbest.simulate.vocabulary import (
    CHANNELS,
    EMAIL,
    HOSPITAL,
    PRACTICE_TYPES,
    PRIMARY_CARE,
    REGIONS,
    REP_PHONE,
    REP_VISIT,
    SOLO,
    SPECIALTIES,
    TOPICS,
    WEBINAR,
)

HCPS_PER_TERRITORY = 250
SPECIALTY_SHARES = np.array([0.22, 0.16, 0.40, 0.10, 0.12])  # order of SPECIALTIES
# P(practice type | specialty): rows SPECIALTIES, columns PRACTICE_TYPES.
PRACTICE_MIX = np.array(
    [
        [0.45, 0.40, 0.15],
        [0.35, 0.45, 0.20],
        [0.15, 0.50, 0.35],
        [0.50, 0.40, 0.10],
        [0.65, 0.30, 0.05],
    ]
)
CONSENT_RATES = np.array([0.95, 0.95, 0.80, 0.90])  # order of CHANNELS

# Topic interest (drives engagement) by specialty; rows SPECIALTIES, columns TOPICS.
TOPIC_INTEREST = np.array(
    [
        [0.5, 0.3, 0.0, -0.2, -0.2, 0.2],
        [0.2, 0.0, 0.5, -0.1, 0.3, 0.1],
        [0.1, 0.2, 0.3, 0.2, 0.2, -0.4],
        [0.1, 0.5, 0.4, -0.2, 0.0, 0.1],
        [0.3, 0.3, -0.2, 0.0, 0.1, 0.6],
    ]
)
# Topic *need* (drives persuasion) by specialty. Deliberately not TOPIC_INTEREST:
# access and patient support move prescriptions more than they attract opens.
TOPIC_NEED = np.array(
    [
        [0.3, 0.1, 0.0, 0.4, 0.1, 0.1],
        [0.1, 0.0, 0.3, 0.4, 0.4, 0.0],
        [0.0, 0.1, 0.2, 0.5, 0.5, -0.5],
        [0.0, 0.4, 0.3, 0.2, 0.1, 0.2],
        [0.1, 0.2, -0.3, 0.3, 0.1, 0.6],
    ]
)
# Small regional differences in channel affinity; rows REGIONS, columns CHANNELS.
REGION_CHANNEL_SHIFT = np.array(
    [
        [-0.10, 0.00, 0.10, 0.10],
        [0.15, 0.05, -0.10, -0.05],
        [0.05, 0.10, 0.00, -0.10],
        [-0.10, -0.10, 0.10, 0.10],
    ]
)
# Persuadability by decile 1..10: mid deciles have room to grow, the top deciles
# already prescribe whatever they will ("prescribe anyway").
DECILE_PERSUADABILITY = np.array([0.45, 0.55, 0.75, 0.95, 1.0, 1.0, 0.9, 0.55, 0.12, 0.04])
PERSUADABILITY_SCALE = 0.9  # NRx gain scale of a mid-decile HCP, before topic and channel
# Heavy engagers who are already fans ("loyalists", near-zero gain): mostly the
# senior ones, so attributes plus engagement history can reveal them.
LOYALIST_SENIOR_YEARS = 25
LOYALIST_RATE_SENIOR, LOYALIST_RATE_OTHER = 0.7, 0.02
PERSUADABILITY_NOISE = 0.2  # sd of the log of the individual factor
TOPIC_NEED_NOISE = 0.15  # individual need not visible in interest
BASELINE_MIN, BASELINE_MAX = 0.3, 6.0  # expected NRx per period, decile 1 and 10


@dataclass(frozen=True, eq=False)
class HiddenTraits:
    """What the simulator knows about each HCP and a model never sees directly.

    Shapes: ``n`` HCPs, ``C`` channels, ``K`` topics (vocabulary order).

    Attributes:
        specialty: ``(n,)`` int code into ``SPECIALTIES``.
        decile: ``(n,)`` int 1..10.
        consent: ``(n, C)`` bool.
        channel_affinity: ``(n, C)`` logit shift of engaging on a channel.
        topic_affinity: ``(n, K)`` logit shift of engaging with a topic.
        medical_fit: ``(n,)`` logit shift for medical (vs promotional) content.
        fatigue_sensitivity: ``(n,)`` logit drop per touch on the same channel in
            the last 4 periods.
        baseline: ``(n,)`` expected NRx per period without any touch.
        persuadability: ``(n,)`` NRx gain scale, before topic fit and channel strength.
        topic_fit: ``(n, K)`` multiplier of the gain by topic (about 1 on average).
        loyalist: ``(n,)`` bool, heavy engagers whose prescribing does not move.
    """

    specialty: np.ndarray
    decile: np.ndarray
    consent: np.ndarray
    channel_affinity: np.ndarray
    topic_affinity: np.ndarray
    medical_fit: np.ndarray
    fatigue_sensitivity: np.ndarray
    baseline: np.ndarray
    persuadability: np.ndarray
    topic_fit: np.ndarray
    loyalist: np.ndarray


@dataclass(frozen=True, eq=False)
class Observables:
    """What the ``hcps`` table shows of each HCP, as arrays (``n`` rows).

    Attributes:
        specialty: ``(n,)`` int code into ``SPECIALTIES``.
        decile: ``(n,)`` int 1..10.
        years: ``(n,)`` int years in practice.
        practice: ``(n,)`` int code into ``PRACTICE_TYPES``.
        region: ``(n,)`` int code into ``REGIONS``.
        consent: ``(n, C)`` bool consent per channel.
    """

    specialty: np.ndarray
    decile: np.ndarray
    years: np.ndarray
    practice: np.ndarray
    region: np.ndarray
    consent: np.ndarray

    def repeat(self, times: int) -> Observables:
        """Each HCP ``times`` times in a row (HCP-major), e.g. to draw many trait samples."""
        return Observables(*(np.repeat(getattr(self, f.name), times, axis=0) for f in fields(self)))


def heavy_engager_threshold(channel_affinity: np.ndarray) -> float:
    """The mean channel affinity above which an HCP of this population is a heavy engager."""
    return float(np.quantile(channel_affinity.mean(axis=1), 0.75))


def draw_hidden_traits(
    obs: Observables, rng: np.random.Generator, *, heavy_threshold: float | None = None
) -> HiddenTraits:
    """Draw the hidden traits of HCPs with the given observables.

    Args:
        obs: the HCPs' observable attributes.
        rng: the generator the draws come from, in a fixed order.
        heavy_threshold: mean channel affinity from which an HCP counts as a heavy
            engager (loyalists are heavy engagers). None: the top quarter of the
            HCPs drawn here, as for a whole population; pass the population's
            value (:func:`heavy_engager_threshold`) when drawing a few HCPs again.
    """
    specialty, decile, years, practice = obs.specialty, obs.decile, obs.years, obs.practice
    n = specialty.shape[0]
    z_years = (years - 17.0) / 9.0
    specialist = specialty != PRIMARY_CARE
    hospital = practice == HOSPITAL
    solo = practice == SOLO

    # A general "engager" factor shared by all channels makes heavy engagers exist;
    # reps have built relationships with high deciles, so it rises a little with decile.
    general = rng.normal(0.0, 0.45, n) + 0.06 * (decile - 5.5)
    channel_affinity = general[:, None] + rng.normal(0.0, 0.55, (n, len(CHANNELS)))
    channel_affinity += REGION_CHANNEL_SHIFT[obs.region]
    # Younger HCPs prefer digital channels; hospitals restrict rep access.
    channel_affinity[:, REP_VISIT] += 0.25 * z_years - 0.3 * hospital + 0.3 * solo
    channel_affinity[:, REP_PHONE] += 0.10 * z_years
    channel_affinity[:, EMAIL] += -0.35 * z_years + 0.1 * hospital
    channel_affinity[:, WEBINAR] += -0.25 * z_years + 0.3 * hospital + 0.2 * specialist

    topic_individual = rng.normal(0.0, 0.45, (n, len(TOPICS)))
    topic_affinity = TOPIC_INTEREST[specialty] + topic_individual
    medical_fit = np.where(specialist, 0.5, -0.3) + 0.2 * hospital + rng.normal(0.0, 0.2, n)
    fatigue_sensitivity = np.asarray(rng.gamma(2.0, 0.1, n))

    # Prescribing volume spans BASELINE_MIN..BASELINE_MAX geometrically over deciles.
    ratio = BASELINE_MAX / BASELINE_MIN
    baseline = BASELINE_MIN * ratio ** ((decile - 1) / 9.0) * rng.lognormal(0.0, 0.25, n)

    # Interest and need are related (people read about what they need) but not equal.
    topic_need = (
        TOPIC_NEED[specialty]
        + 0.4 * topic_individual
        + rng.normal(0.0, TOPIC_NEED_NOISE, topic_individual.shape)
    )
    topic_fit = np.exp(topic_need)
    persuadability = (
        PERSUADABILITY_SCALE
        * DECILE_PERSUADABILITY[decile - 1]
        * np.exp(-0.3 * z_years)
        * rng.lognormal(0.0, PERSUADABILITY_NOISE, n)
    )
    if heavy_threshold is None:
        heavy_threshold = heavy_engager_threshold(channel_affinity)
    heavy = channel_affinity.mean(axis=1) >= heavy_threshold
    loyalist_rate = np.where(
        years >= LOYALIST_SENIOR_YEARS, LOYALIST_RATE_SENIOR, LOYALIST_RATE_OTHER
    )
    loyalist = heavy & (rng.random(n) < loyalist_rate)
    persuadability = np.where(loyalist, 0.03 * persuadability, persuadability)
    return HiddenTraits(
        specialty=specialty,
        decile=decile,
        consent=obs.consent,
        channel_affinity=channel_affinity,
        topic_affinity=topic_affinity,
        medical_fit=medical_fit,
        fatigue_sensitivity=fatigue_sensitivity,
        baseline=baseline,
        persuadability=persuadability,
        topic_fit=topic_fit,
        loyalist=loyalist,
    )


def _labels(prefix: str, n: int, width: int) -> np.ndarray:
    numbers = np.char.zfill(np.arange(1, n + 1).astype(str), width)
    return np.char.add(prefix, numbers).astype(object)


def draw_population(n_hcps: int, rng: np.random.Generator) -> tuple[pd.DataFrame, HiddenTraits]:
    """Draw ``n_hcps`` HCPs: the observable ``hcps`` table and their hidden traits.

    Returns:
        ``(hcps, traits)``: ``hcps`` has one row per HCP in ``hcp_id`` order with the
        contract columns plus ``decile``, ``region``, ``years_in_practice``,
        ``practice_type`` and ``consent_<channel>``; ``traits`` is row-aligned.
    """
    n = n_hcps
    n_territories = max(1, round(n / HCPS_PER_TERRITORY))
    # Territories are geographic, so an HCP's region is its territory's region.
    territory_region = rng.integers(0, len(REGIONS), n_territories)
    territory = rng.integers(0, n_territories, n)
    region = territory_region[territory]
    specialty = rng.choice(len(SPECIALTIES), size=n, p=SPECIALTY_SHARES)
    practice_u = rng.random(n)
    practice = (practice_u[:, None] > PRACTICE_MIX[specialty].cumsum(axis=1)).sum(axis=1)
    practice = np.minimum(practice, len(PRACTICE_TYPES) - 1)
    decile = rng.integers(1, 11, n)
    years = np.clip(np.rint(rng.normal(17.0, 9.0, n)), 1, 45).astype(np.int64)
    consent = rng.random((n, len(CHANNELS))) < CONSENT_RATES

    traits = draw_hidden_traits(
        Observables(specialty, decile, years, practice, region, consent), rng
    )

    hcps = pd.DataFrame(
        {
            "hcp_id": _labels("H", n, 6),
            "specialty": np.array(SPECIALTIES, dtype=object)[specialty],
            "territory_id": _labels("T", n_territories, 3)[territory],
            "decile": decile.astype(np.int64),
            "region": np.array(REGIONS, dtype=object)[region],
            "years_in_practice": years,
            "practice_type": np.array(PRACTICE_TYPES, dtype=object)[practice],
        }
    )
    for c, channel in enumerate(CHANNELS):
        hcps[f"consent_{channel}"] = consent[:, c]
    return hcps, traits
