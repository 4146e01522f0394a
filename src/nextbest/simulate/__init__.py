"""A synthetic HCP world with known ground truth, for benchmarking NBA policies.

``simulate_world(n_hcps=..., periods=..., seed=...)`` returns a
:class:`SimulatedWorld`: contract tables (``hcps``, ``catalog``, ``interactions``)
that look like real pharma history logged by a traditional, biased policy, and
the truth at the next decision (``truth``: true ``p_engage`` and ``uplift`` of
every HCP x action), so the true value of any policy can be computed exactly
(``true_value``, ``policy_value``, ``oracle_choice``) or sampled (``draw_response``).

Hidden model (all magnitudes in NRx, new prescriptions per weekly period)
-------------------------------------------------------------------------
HCPs (``population``). Specialty skewed to primary care (40%); ~1 territory per
250 HCPs, region = the territory's region; decile uniform 1..10; years in
practice ~ N(17, 9) clipped to 1..45; practice type depends on specialty.
Consent: rep visit/phone 95%, e-mail 80%, webinar 90%.

Engagement. ``p_engage(h, a) = sigmoid(intercept[ch] + channel_affinity[h, ch] +
topic_affinity[h, topic] + medical_fit[h] * medical[a] - fatigue_sensitivity[h] *
touches on ch in the last 4 periods)``, intercepts -0.2 / -0.8 / -1.5 / -2.4 for
rep_visit / rep_phone / email / webinar (history engagement rates about 0.47 /
0.34 / 0.21 / 0.16).

- ``channel_affinity`` = a general "engager" factor (sd 0.45, rising slightly with
  decile) + a channel-specific individual part (sd 0.55) + observable shifts:
  younger HCPs prefer e-mail and webinars, older ones reps; hospitals restrict
  rep visits and like webinars; solo practices like visits; region +-0.15.
- ``topic_affinity`` = specialty profile (e.g. oncology -> new_indication) +
  individual part (sd 0.45).
- ``medical_fit``: medical content +0.5 for specialists, -0.3 for primary care,
  +0.2 in hospitals.
- ``fatigue_sensitivity`` ~ Gamma(2, 0.1) (mean 0.2 logit per recent touch).

Individual parts make an HCP's past engagement rate by channel / topic genuinely
informative beyond its attributes; fatigue makes recency features matter.

Outcome. ``outcome ~ Poisson(baseline[h] + engaged * gain(h, a))`` with
``baseline`` = 0.3 .. 6 NRx geometric in decile (x lognormal noise, sd 0.25) and
``gain(h, a) = persuadability[h] * topic_fit[h, topic] * channel_strength[ch]
(* 0.8 for medical content)``, strengths 0.8 / 0.55 / 0.4 / 0.7 for rep_visit /
rep_phone / email / webinar. True ``uplift = p_engage * gain`` (before cost).

- ``persuadability`` = 0.9 x decile curve (peak at deciles 4-7, 0.12 and 0.04 for
  deciles 9 and 10 who "prescribe anyway") x ``exp(-0.3 z_years)`` (newer HCPs
  move more) x lognormal (sd 0.2). "Loyalists" keep 3% of it: 70% of the senior
  (25+ years) and 2% of the other HCPs in the top engagement quartile. With the
  top deciles this makes about a fifth of heavy engagers essentially
  non-persuadable (max uplift < 0.05 NRx): engagement is not uplift.
- ``topic_fit = exp(specialty need profile + 0.4 * individual topic interest +
  N(0, 0.15))``: need differs from interest on purpose (access and patient
  support move prescribing more than they attract opens), and the shared
  individual part is what history by topic can reveal.

A policy knowing the true ``p_engage`` but persuadability only from observables
and topic history reaches about 92% of the oracle on 20,000 HCPs. The true
``p_engage`` is not known to a learner, though: the Bayes-optimal policy from 26
weeks of history (``nextbest.simulate.posterior``, which knows this model and
sees only the observable tables) reaches about 56%; no learner can do better on
that history.

Costs per touch: rep_visit ~0.6, rep_phone ~0.25, webinar ~0.1, email ~0.02
(+-15% per item).

Logging policy (``logging_policy``): 10% randomized no-touch holdout; of the
rest, 10% uniform exploration over eligible actions and 90% traditional: visits
rise steeply with decile, phone calls peak at mid deciles, 6% webinar invitations,
e-mail for most of the remainder, content nearly at random within the channel;
only eligible actions (consent, specialty, approval at the timestamp). The logged
``propensity`` is the exact marginal probability of the logged option.

The truth refers to the end-of-history decision (``start + 7 * periods`` days),
with eligibility and fatigue as the history left them. ``uplift`` is given for
ineligible pairs too (the effect if it could be delivered); scoring counts them 0.
``oracle_choice(purpose=...)`` and ``eligible_for(purpose)`` keep to what a
request of one purpose may be served (promotional: no medical content, and the
reverse), as the service does; without a purpose the oracle chooses among all
content, which no single request can be served.

Calibration (20,000 HCPs x 26 periods, seed 0; per HCP per decision): oracle
+0.18 NRx, logging policy -0.07, uniformly random eligible action -0.12, highest
``p_engage`` -0.05; "do nothing" is optimal for ~24% of HCPs; the best rep visit
is net-positive for ~30%, the best e-mail for ~80% of those with e-mail consent.
"""

from __future__ import annotations

from nextbest.simulate.vocabulary import CHANNELS, SPECIALTIES, TOPICS
from nextbest.simulate.world import (
    NO_ACTION,
    SimulatedWorld,
    WorldExistsError,
    refuse_another_world,
    simulate_world,
)

__all__ = [
    "CHANNELS",
    "NO_ACTION",
    "SPECIALTIES",
    "TOPICS",
    "SimulatedWorld",
    "WorldExistsError",
    "refuse_another_world",
    "simulate_world",
]
