"""Per-HCP engagement effects: empirical-Bayes shrunk residual sums, point in time."""

from __future__ import annotations

import numpy as np

from nextbest.features.history import EngagementEffects, EventLog

N_HCPS = 600
TOUCHES = 20  # per HCP and channel
WEEK = 7 * 86_400


def _log(seed: int = 0) -> tuple[EventLog, np.ndarray, np.ndarray]:
    """HCPs with a real logit effect on channel 0 (standard deviation 1) and none on
    channel 1; one topic; every touch's population P(engaged) 0.3. Returns the log,
    its prior and the true channel-0 effects."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(0.0, 1.0, N_HCPS)
    hcp = np.repeat(np.arange(N_HCPS), 2 * TOUCHES)
    channel = np.tile(np.repeat([0, 1], TOUCHES), N_HCPS)
    seconds = np.tile(np.arange(2 * TOUCHES) * WEEK, N_HCPS) + 1_000_000
    prior = np.full(len(hcp), 0.3)
    logit = np.log(0.3 / 0.7) + np.where(channel == 0, truth[hcp], 0.0)
    engaged = (rng.random(len(hcp)) < 1 / (1 + np.exp(-logit))).astype(np.float64)
    log = EventLog(
        hcp=hcp,
        seconds=seconds.astype(np.int64),
        channel=channel,
        topic=np.zeros(len(hcp), dtype=np.int64),
        engaged=engaged,
        outcome=np.full(len(hcp), np.nan),
    )
    return log, prior, truth


def test_effects_spread_where_hcps_differ_and_not_where_they_do_not() -> None:
    log, prior, truth = _log()
    effects = EngagementEffects(n_channels=2, n_topics=1).fit(log, prior)
    # Channel 0's logit effects vary between HCPs (variance 1 on the logit scale; the
    # first Newton step from 0 understates large effects); channel 1's do not.
    assert 0.4 < effects.channel_variance_[0] < 1.5
    assert effects.channel_variance_[1] < 0.05
    at_end = effects.transform(log, prior, np.arange(N_HCPS), np.full(N_HCPS, 2**31))
    assert at_end.shape == (N_HCPS, 3)
    assert np.corrcoef(at_end[:, 0], truth)[0, 1] > 0.7
    # Shrunk: a noisy estimate from 20 touches, pulled towards 0.
    assert at_end[:, 0].std() < truth.std()
    assert np.abs(at_end[:, 1]).max() < 0.2


def test_an_effect_counts_only_touches_before_the_query() -> None:
    log, prior, _ = _log()
    effects = EngagementEffects(n_channels=2, n_topics=1).fit(log, prior)
    hcp = np.arange(N_HCPS)
    first = np.full(N_HCPS, log.seconds.min())
    assert (effects.transform(log, prior, hcp, first) == 0).all()  # nothing before
    middle = np.full(N_HCPS, log.seconds.min() + 5 * WEEK)
    before = effects.transform(log, prior, hcp, middle)
    # Changing every touch at or after the query time changes nothing at it.
    later = log.seconds >= middle[0]
    flipped = EventLog(
        **{**log.__dict__, "engaged": np.where(later, 1.0 - log.engaged, log.engaged)}
    )
    np.testing.assert_array_equal(effects.transform(flipped, prior, hcp, middle), before)
    # Five touches on channel 0 before it: the sum of their residuals, shrunk.
    s2 = effects.channel_variance_[0]
    first_five = (log.hcp == 0) & (log.channel == 0) & ~later
    S = (log.engaged[first_five] - 0.3).sum()
    V = 5 * 0.3 * 0.7
    assert before[0, 0] == np.float32(S / (V + 1 / s2))
