"""The Bayes-optimal policy: it reads only what a learner sees, and its history matters."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from nextbest.simulate import SimulatedWorld
from nextbest.simulate.posterior import Responses, observables, posterior_values

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


def test_responses_after_the_history_add_evidence(small_world: SimulatedWorld, posterior) -> None:
    # Thirty more touches per HCP on random eligible actions, as a closed loop
    # with exploration would gather: the posterior must use them.
    rng = np.random.default_rng(3)
    n, draws = small_world.n_hcps, 30
    hcp = np.repeat(np.arange(n), draws)
    action = rng.integers(0, small_world.n_actions, hcp.shape[0])
    engaged, outcome = small_world.draw_response(hcp, action, rng)
    more = posterior_values(
        small_world,
        samples=SAMPLES,
        seed=1,
        responses=Responses(hcp=hcp, action=action, engaged=engaged, outcome=outcome),
    )
    assert _correlation(small_world, more.net_value) > (
        _correlation(small_world, posterior.net_value) + 0.02
    )
    eligible = small_world.eligible
    assert small_world.true_value(more.choice(eligible)) > small_world.true_value(
        posterior.choice(eligible)
    )
    # The order the responses come in does not matter.
    shuffled = rng.permutation(hcp.shape[0])
    again = posterior_values(
        small_world,
        samples=SAMPLES,
        seed=1,
        responses=Responses(
            hcp=hcp[shuffled],
            action=action[shuffled],
            engaged=engaged[shuffled],
            outcome=outcome[shuffled],
        ),
    )
    np.testing.assert_allclose(again.net_value, more.net_value, rtol=1e-9, atol=1e-12)


def test_responses_naming_unknown_rows_are_refused(small_world: SimulatedWorld) -> None:
    one = np.array([0.0])
    with pytest.raises(ValueError, match=r"responses\.hcp"):
        posterior_values(
            small_world,
            samples=2,
            responses=Responses(np.array([small_world.n_hcps]), np.array([0]), one, one),
        )
    with pytest.raises(ValueError, match="one length"):
        Responses(np.array([0, 1]), np.array([0]), one, one)
