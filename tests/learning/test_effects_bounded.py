"""Per-HCP engagement effects stay finite where the population model is near-certain."""

from __future__ import annotations

import numpy as np

from nextbest.features.history import EngagementEffects, EventLog
from nextbest.learning.preference import CalibratedEngagementClassifier

N_HCPS = 600
TOUCHES = 8  # per HCP
WEEK = 7 * 86_400


def _certain_world(seed: int = 0) -> tuple[EventLog, np.ndarray]:
    """A retrain on logged decisions whose population model came out near-certain:
    P(engaged) 1e-4 (the floor training clips it to) on most touches, while a
    quarter of them engaged. Two channels, three topics."""
    rng = np.random.default_rng(seed)
    n = N_HCPS * TOUCHES
    hcp = np.repeat(np.arange(N_HCPS), TOUCHES)
    seconds = np.tile(np.arange(TOUCHES) * WEEK, N_HCPS) + 1_000_000
    prior = np.where(rng.random(n) < 0.9, 1e-4, 0.02)
    log = EventLog(
        hcp=hcp,
        seconds=seconds.astype(np.int64),
        channel=rng.integers(0, 2, n),
        topic=rng.integers(0, 3, n),
        engaged=(rng.random(n) < 0.25).astype(np.float64),
        outcome=np.full(n, np.nan),
    )
    return log, prior


def test_effects_stay_within_what_each_hcps_rate_shows() -> None:
    log, prior = _certain_world()
    effects = EngagementEffects(n_channels=2, n_topics=3).fit(log, prior)
    # The HCPs' spread on the logit scale is bounded by their rates' (about 9: the
    # logit of a quarter against that of 1e-4), not the millions of a moment
    # estimate that divides by p (1 - p) near 0.
    assert (effects.channel_variance_ < 150).all() and (effects.topic_variance_ < 150).all()
    every = effects.transform(log, prior, log.hcp, log.seconds + 1)
    # An HCP engaging every time on touches of P(engaged) 1e-4 is about 9 to 11 above
    # the population on the logit scale; the Newton step S / V said 10,000.
    assert np.abs(every).max() < 12
    assert (every >= 0).mean() > 0.5  # they engage far more than the population said

    # The engagement model boosting from these effects serves probabilities strictly
    # inside (0, 1): an offset of 10,000 made them exactly 0 or 1.
    own_channel = every[np.arange(len(log.hcp)), log.channel]
    own_topic = every[np.arange(len(log.hcp)), 2 + log.topic]
    feature = np.random.default_rng(1).random(len(log.hcp))
    X = np.column_stack([feature, own_channel, own_topic]).astype(np.float32)
    model = CalibratedEngagementClassifier(
        n_estimators=20, hidden_columns=[1, 2], offset_columns=[1, 2]
    ).fit(X, log.engaged.astype(int))
    p = model.engage_probability(X)
    assert np.isfinite(p).all() and (p > 0).all() and (p < 1).all()


def test_a_calibrated_population_keeps_its_effects() -> None:
    """Where the population P(engaged) is the truth on average, the bound does not
    bind: the effect is the shrunk Newton step ``S / (V + 1 / s2)``."""
    rng = np.random.default_rng(2)
    n = N_HCPS * 20
    hcp = np.repeat(np.arange(N_HCPS), 20)
    truth = rng.normal(0.0, 0.7, N_HCPS)
    prior = np.full(n, 0.3)
    logit = np.log(0.3 / 0.7) + truth[hcp]
    log = EventLog(
        hcp=hcp,
        seconds=(np.tile(np.arange(20) * WEEK, N_HCPS) + 1_000_000).astype(np.int64),
        channel=np.zeros(n, dtype=np.int64),
        topic=np.zeros(n, dtype=np.int64),
        engaged=(rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float64),
        outcome=np.full(n, np.nan),
    )
    effects = EngagementEffects(n_channels=1, n_topics=1).fit(log, prior)
    s2 = effects.channel_variance_[0]
    S = np.bincount(hcp, weights=log.engaged - 0.3)
    V = 20 * 0.3 * 0.7
    at_end = effects.transform(log, prior, np.arange(N_HCPS), np.full(N_HCPS, 2**31))
    np.testing.assert_allclose(at_end[:, 0], S / (V + 1 / s2), rtol=1e-5, atol=1e-6)
