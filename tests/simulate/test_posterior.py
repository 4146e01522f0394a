"""The Bayes-optimal policy: it reads only what a learner sees, and its history matters."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from nextbest.simulate import SimulatedWorld
from nextbest.simulate.posterior import observables, posterior_values

SAMPLES = 200
PER_HCP_TRAITS = (
    "channel_affinity",
    "topic_affinity",
    "medical_fit",
    "fatigue_sensitivity",
    "baseline",
    "persuadability",
    "topic_fit",
    "loyalist",
)


@pytest.fixture(scope="module")
def posterior(small_world: SimulatedWorld):
    return posterior_values(small_world, samples=SAMPLES, seed=1)


def _correlation(world: SimulatedWorld, net_value: np.ndarray) -> float:
    uplift = net_value + world.cost[None, :]
    return float(np.corrcoef(uplift[world.eligible], world.uplift[world.eligible])[0, 1])


def test_observables_are_read_back_from_the_hcps_table(small_world: SimulatedWorld) -> None:
    obs = observables(small_world.hcps)
    np.testing.assert_array_equal(obs.specialty, small_world.traits.specialty)
    np.testing.assert_array_equal(obs.decile, small_world.traits.decile)
    np.testing.assert_array_equal(obs.consent, small_world.traits.consent)


def test_no_hcp_hidden_trait_is_read(small_world: SimulatedWorld, posterior) -> None:
    # Give every HCP another's hidden traits: the population is the same (so is
    # the heavy-engager threshold), each HCP's own traits are not.
    perm = np.random.default_rng(5).permutation(small_world.n_hcps)
    traits = small_world.traits
    shuffled = dataclasses.replace(
        traits, **{name: getattr(traits, name)[perm] for name in PER_HCP_TRAITS}
    )
    again = posterior_values(
        dataclasses.replace(small_world, traits=shuffled), samples=SAMPLES, seed=1
    )
    np.testing.assert_array_equal(again.net_value, posterior.net_value)


def test_posterior_means_are_calibrated_against_the_truth(
    small_world: SimulatedWorld, posterior
) -> None:
    eligible = small_world.eligible
    estimate = (posterior.net_value + small_world.cost[None, :])[eligible]
    truth = small_world.uplift[eligible]
    slope = np.cov(estimate, truth)[0, 1] / estimate.var()
    assert 0.9 < slope < 1.1
    assert estimate.mean() == pytest.approx(truth.mean(), rel=0.05)
    assert (posterior.effective_samples >= 1.0).all()
    assert (posterior.effective_samples <= SAMPLES + 1e-9).all()


def test_an_hcps_own_history_is_what_informs_it(small_world: SimulatedWorld, posterior) -> None:
    # Hand every HCP another HCP's whole history: a correct likelihood then
    # misleads, so both the estimates and the policy get worse.
    n = small_world.n_hcps
    periods = len(small_world.interactions) // n
    perm = np.random.default_rng(11).permutation(n)
    rows = (np.arange(periods)[:, None] * n + perm[None, :]).ravel()
    frame = small_world.interactions
    moved = frame.copy()
    for column in ("action_id", "channel", "content_id", "engaged", "outcome"):
        moved[column] = frame[column].to_numpy()[rows]
    wrong = posterior_values(
        dataclasses.replace(small_world, interactions=moved), samples=SAMPLES, seed=1
    )
    assert _correlation(small_world, posterior.net_value) > (
        _correlation(small_world, wrong.net_value) + 0.05
    )
    eligible = small_world.eligible
    right_value = small_world.true_value(posterior.choice(eligible))
    wrong_value = small_world.true_value(wrong.choice(eligible))
    oracle_value = small_world.true_value(small_world.oracle_choice())
    assert right_value > wrong_value + 0.05 * oracle_value
    assert right_value < oracle_value


def test_bad_sizes_are_refused(small_world: SimulatedWorld) -> None:
    with pytest.raises(ValueError, match="samples"):
        posterior_values(small_world, samples=0)
