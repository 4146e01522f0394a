"""Model behaviour of the ground truth: calibration, engagement != uplift, scoring, draws."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nextbest.simulate import NO_ACTION, SimulatedWorld

NON_PERSUADABLE_UPLIFT = 0.05  # NRx: below a tenth of a rep visit's cost on any action


def _random_eligible_value(world: SimulatedWorld) -> float:
    """Expected total value of a uniformly random eligible action per HCP."""
    n_eligible = world.eligible.sum(axis=1)
    net = np.where(world.eligible, world.net_value, 0.0).sum(axis=1)
    return float((net / np.maximum(n_eligible, 1)).sum())


def _engagement_choice(world: SimulatedWorld) -> np.ndarray:
    """Rank by true engagement probability alone: the 2005-style policy."""
    p = np.where(world.eligible, world.p_engage, -1.0)
    return np.asarray(np.where(world.eligible.any(axis=1), p.argmax(axis=1), NO_ACTION))


def _heavy_engagers(world: SimulatedWorld) -> np.ndarray:
    mean_p = world.p_engage.mean(axis=1)
    return mean_p >= np.quantile(mean_p, 0.75)


# -- calibration -----------------------------------------------------------------------


def test_oracle_beats_logging_policy_and_random(small_world: SimulatedWorld) -> None:
    oracle = small_world.true_value(small_world.oracle_choice())
    logging = small_world.policy_value(small_world.logging_policy_probabilities())
    random = _random_eligible_value(small_world)
    n = small_world.n_hcps
    assert oracle / n > 0.1  # NRx per HCP per decision
    assert oracle > logging + 0.1 * n
    assert oracle > 3 * random and oracle - random > 0.15 * n


def test_engagement_ranking_is_clearly_worse_than_oracle(small_world: SimulatedWorld) -> None:
    oracle = small_world.true_value(small_world.oracle_choice())
    engagement = small_world.true_value(_engagement_choice(small_world))
    assert engagement <= 0.8 * oracle


def test_share_where_doing_nothing_is_best(small_world: SimulatedWorld) -> None:
    choice = small_world.oracle_choice()
    assert 0.10 <= (choice == NO_ACTION).mean() <= 0.30
    # ... and it is concentrated where it should be: top deciles "prescribe anyway".
    top = small_world.hcps["decile"].to_numpy() >= 9
    assert (choice[top] == NO_ACTION).mean() > 3 * (choice[~top] == NO_ACTION).mean()


def test_channel_net_value_shares(small_world: SimulatedWorld) -> None:
    channel = small_world.codes.channel
    net = np.where(small_world.eligible, small_world.net_value, -np.inf)
    best_visit = net[:, channel == 0].max(axis=1)
    best_email = net[:, channel == 2].max(axis=1)
    assert 0.15 <= (best_visit > 0).mean() <= 0.40
    consented = small_world.hcps["consent_email"].to_numpy()
    assert (best_email[consented] > 0).mean() > 0.6


def test_heavy_engagers_include_non_persuadable_hcps(small_world: SimulatedWorld) -> None:
    heavy = _heavy_engagers(small_world)
    max_uplift = small_world.uplift.max(axis=1)
    non_persuadable = max_uplift < NON_PERSUADABLE_UPLIFT
    assert 0.12 <= non_persuadable[heavy].mean() <= 0.35
    # Not only the top deciles: some are mid-decile "loyalists" engagement cannot reveal.
    decile = small_world.hcps["decile"].to_numpy()
    assert (non_persuadable & heavy & (decile <= 8)).sum() >= 10


def test_history_is_informative_about_truth(small_world: SimulatedWorld) -> None:
    """Past e-mail engagement rate tracks true e-mail p_engage: features can learn it."""
    interactions = small_world.interactions
    email = interactions.loc[interactions["channel"] == "email"]
    rate = email.groupby("hcp_id")["engaged"].agg(["mean", "size"])
    rate = rate[rate["size"] >= 8]
    email_cols = small_world.codes.channel == 2
    true_p = pd.Series(
        small_world.p_engage[:, email_cols].mean(axis=1), index=small_world.hcps["hcp_id"]
    )
    corr = np.corrcoef(rate["mean"], true_p.loc[rate.index])[0, 1]
    assert corr > 0.3
    # Persuadability follows observables: mid deciles gain more than top deciles.
    decile = small_world.hcps["decile"].to_numpy()
    gain = small_world.gain.mean(axis=1)
    assert gain[(decile >= 4) & (decile <= 7)].mean() > 4 * gain[decile >= 9].mean()


# -- scoring ---------------------------------------------------------------------------


def test_oracle_choice_is_eligible_positive_and_optimal(small_world: SimulatedWorld) -> None:
    choice = small_world.oracle_choice()
    rows = np.arange(small_world.n_hcps)
    acted = choice != NO_ACTION
    assert small_world.eligible[rows[acted], choice[acted]].all()
    assert (small_world.net_value[rows[acted], choice[acted]] > 0).all()
    details = small_world.true_value(choice, return_details=True)
    assert details["n_ineligible"] == 0 and details["n_actions_taken"] == acted.sum()
    rng = np.random.default_rng(0)
    for _ in range(5):
        other = rng.integers(-1, small_world.n_actions, small_world.n_hcps)
        assert small_world.true_value(other) <= details["value"]


def test_oracle_of_a_purpose_serves_only_that_content_type(small_world: SimulatedWorld) -> None:
    """A promotional request never gets medical content, so neither does its oracle."""
    medical = small_world.codes.medical
    rows = np.arange(small_world.n_hcps)
    everything = small_world.oracle_choice()
    # The oracle over every content type gives medical content to many HCPs ...
    assert (medical[everything[everything != NO_ACTION]]).mean() > 0.1
    for purpose, allowed in (("promotional", ~medical), ("medical", medical)):
        servable = small_world.eligible_for(purpose)
        assert (servable == small_world.eligible & allowed[None, :]).all()
        choice = small_world.oracle_choice(purpose=purpose)
        acted = choice != NO_ACTION
        assert allowed[choice[acted]].all() and servable[rows[acted], choice[acted]].all()
        # ... the best a request of one purpose could be served is worth less,
        value = small_world.true_value(choice)
        assert value < small_world.true_value(everything)
        # ... and it is the best of what that purpose allows: per HCP, the largest
        # positive true net value among its servable actions, or nothing.
        best = np.where(servable, small_world.net_value, -np.inf).max(axis=1)
        assert value == pytest.approx(np.maximum(best, 0.0).sum())
    assert (small_world.eligible_for(None) == small_world.eligible).all()


def test_oracle_refuses_an_unknown_purpose(small_world: SimulatedWorld) -> None:
    with pytest.raises(ValueError, match="purpose must be one of promotional, medical"):
        small_world.oracle_choice(purpose="marketing")  # type: ignore[arg-type]


def test_true_value_of_no_action_is_zero(small_world: SimulatedWorld) -> None:
    assert small_world.true_value(np.full(small_world.n_hcps, NO_ACTION)) == 0.0


def test_true_value_counts_ineligible_choices_as_zero(small_world: SimulatedWorld) -> None:
    rows, cols = np.nonzero(~small_world.eligible)
    first = np.unique(rows, return_index=True)
    hcp, action = first[0][:50], cols[first[1][:50]]
    choice = np.full(small_world.n_hcps, NO_ACTION)
    choice[hcp] = action
    details = small_world.true_value(choice, return_details=True)
    assert details == {"value": 0.0, "per_hcp": 0.0, "n_actions_taken": 0, "n_ineligible": 50}
    # An eligible choice for one more HCP adds exactly its net value.
    extra = int(np.flatnonzero(small_world.eligible[:, 0] & (choice == NO_ACTION))[0])
    choice[extra] = 0
    assert small_world.true_value(choice) == pytest.approx(small_world.net_value[extra, 0])


BAD_CHOICES = [
    (np.zeros(3, dtype=np.int64), "shape"),
    (np.zeros(2_000), "integer"),
    (np.full(2_000, -2), "-1 \\(no action\\)"),
    (np.full(2_000, 10_000), "-1 \\(no action\\)"),
]


@pytest.mark.parametrize(("choice", "message"), BAD_CHOICES)
def test_true_value_rejects_bad_choices(
    small_world: SimulatedWorld, choice: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        small_world.true_value(choice)


def test_policy_value_matches_true_value_for_deterministic_policy(
    small_world: SimulatedWorld,
) -> None:
    choice = small_world.oracle_choice()
    probs = np.zeros((small_world.n_hcps, 1 + small_world.n_actions))
    probs[np.arange(small_world.n_hcps), choice + 1] = 1.0
    assert small_world.policy_value(probs) == pytest.approx(small_world.true_value(choice))
    with pytest.raises(ValueError, match="sum to 1"):
        small_world.policy_value(probs * 0.5)


# -- draws -----------------------------------------------------------------------------


def test_draw_response_matches_truth(small_world: SimulatedWorld) -> None:
    rng = np.random.default_rng(123)
    rows, cols = np.nonzero(small_world.eligible)
    pick = rng.choice(len(rows), size=40, replace=False)
    repeats = 5_000
    hcp = np.repeat(rows[pick], repeats)
    action = np.repeat(cols[pick], repeats)
    engaged, outcome = small_world.draw_response(hcp, action, rng)
    assert engaged.shape == outcome.shape == hcp.shape
    p = small_world.p_engage[rows[pick], cols[pick]]
    mean_engaged = engaged.reshape(40, repeats).mean(axis=1)
    assert np.all(np.abs(mean_engaged - p) < 4.5 * np.sqrt(p * (1 - p) / repeats))
    expected = small_world.baseline[rows[pick]] + small_world.uplift[rows[pick], cols[pick]]
    mean_outcome = outcome.reshape(40, repeats).mean(axis=1)
    sd = outcome.reshape(40, repeats).std(axis=1)
    assert np.all(np.abs(mean_outcome - expected) < 4.5 * sd / np.sqrt(repeats) + 1e-9)


def test_draw_response_without_a_touch_is_baseline(small_world: SimulatedWorld) -> None:
    rng = np.random.default_rng(5)
    hcp = np.repeat(np.arange(20), 5_000)
    engaged, outcome = small_world.draw_response(hcp, np.full(hcp.shape, NO_ACTION), rng)
    assert engaged.sum() == 0
    mean = outcome.reshape(20, 5_000).mean(axis=1)
    base = small_world.baseline[:20]
    assert np.all(np.abs(mean - base) < 4.5 * np.sqrt(base / 5_000))


def test_draw_response_of_ineligible_action_is_not_delivered(small_world: SimulatedWorld) -> None:
    rows, cols = np.nonzero(~small_world.eligible)
    engaged, _ = small_world.draw_response(rows, cols, np.random.default_rng(1))
    assert engaged.sum() == 0


def test_draw_response_rejects_bad_indices(small_world: SimulatedWorld) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="same length"):
        small_world.draw_response(np.arange(3), np.zeros(2, dtype=np.int64), rng)
    with pytest.raises(ValueError, match="hcp_idx"):
        small_world.draw_response(np.array([2_000]), np.array([0]), rng)
    with pytest.raises(ValueError, match="action_idx"):
        small_world.draw_response(np.array([0]), np.array([-3]), rng)
