"""Off-policy estimators: intervals that hold their coverage on logs with a known truth."""

from __future__ import annotations

import numpy as np
import pytest

from nextbest.evaluation import ope

K = 5  # actions
N_CONTEXTS = 40


def _world(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean reward per (context, action) and two deterministic policies on the contexts."""
    rng = np.random.default_rng(seed)
    mu = 2.0 + rng.normal(0.0, 0.3, (N_CONTEXTS, K))
    champion = rng.integers(K, size=N_CONTEXTS)
    challenger = np.where(rng.random(N_CONTEXTS) < 0.5, mu.argmax(axis=1), champion)
    return mu, champion, challenger


def _epsilon_greedy_log(
    n: int, mu: np.ndarray, logger: np.ndarray, epsilon: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(context, action, Poisson reward, propensity) logged by epsilon-greedy on ``logger``."""
    context = rng.integers(N_CONTEXTS, size=n)
    explore = rng.random(n) < epsilon
    action = np.where(explore, rng.integers(K, size=n), logger[context])
    pscore = epsilon / K + (1.0 - epsilon) * (action == logger[context])
    reward = rng.poisson(mu[context, action]).astype(np.float64)
    return context, action, reward, pscore


def _per_action_model(action: np.ndarray, reward: np.ndarray) -> np.ndarray:
    """A deliberately crude reward model: the mean reward of each action, whatever the context."""
    sums = np.bincount(action, weights=reward, minlength=K)
    return sums / np.maximum(np.bincount(action, minlength=K), 1)


@pytest.mark.parametrize("estimator", ["ips", "snips", "dr"])
def test_paired_difference_interval_covers_the_truth_95_percent(estimator: str) -> None:
    mu, champion, challenger = _world(seed=0)
    truth = float(
        (mu[np.arange(N_CONTEXTS), challenger] - mu[np.arange(N_CONTEXTS), champion]).mean()
    )
    rng = np.random.default_rng(1)
    covered, widths = [], []
    for _ in range(300):
        context, action, reward, pscore = _epsilon_greedy_log(3000, mu, champion, 0.3, rng)
        q = _per_action_model(action, reward)
        diff = ope.difference(
            estimator,
            action,
            reward,
            pscore,
            challenger[context],
            champion[context],
            q_target=q[challenger[context]],
            q_baseline=q[champion[context]],
            q_logged=q[action],
        )
        covered.append(diff.ci_low <= truth <= diff.ci_high)
        widths.append(diff.ci_high - diff.ci_low)
    coverage = float(np.mean(covered))
    # 300 replications: a true 95% interval lands in [0.91, 0.985] with > 99% probability.
    assert 0.91 <= coverage <= 0.985, coverage
    assert np.mean(widths) < 0.5


def test_dr_difference_is_exactly_zero_where_the_policies_agree() -> None:
    mu, champion, _ = _world(seed=2)
    rng = np.random.default_rng(3)
    context, action, reward, pscore = _epsilon_greedy_log(2000, mu, champion, 0.3, rng)
    q = _per_action_model(action, reward)
    other = champion.copy()
    other[0] = (champion[0] + 1) % K  # disagree on one context only
    diff = ope.difference(
        "dr",
        action,
        reward,
        pscore,
        other[context],
        champion[context],
        q_target=q[other[context]],
        q_baseline=q[champion[context]],
        q_logged=q[action],
    )
    agree = context != 0
    # The per-decision terms vanish on agreement, so the value is a sum over context 0 only.
    t, b = other[context], champion[context]
    hit = (action == t).astype(np.float64) - (action == b)
    terms = q[t] - q[b] + hit / pscore * (reward - q[action])
    assert np.all(terms[agree] == 0.0)
    assert diff.value == pytest.approx(terms.mean())


def test_groups_of_singletons_give_the_ordinary_interval() -> None:
    rng = np.random.default_rng(4)
    n = 500
    action = rng.integers(3, size=n)
    reward = rng.normal(size=n)
    pscore = np.full(n, 1 / 3)
    target = np.zeros(n, dtype=np.int64)
    plain = ope.estimate("ips", action, reward, pscore, target)
    grouped = ope.estimate("ips", action, reward, pscore, target, groups=np.arange(n))
    assert grouped.ci_low == pytest.approx(plain.ci_low)
    assert grouped.ci_high == pytest.approx(plain.ci_high)


def test_cluster_robust_interval_keeps_coverage_when_hcps_repeat() -> None:
    """20 decisions per HCP with an HCP effect the reward model does not know: the
    ordinary interval is far too narrow, the cluster-robust one is not."""
    rng = np.random.default_rng(5)
    n_hcps, per_hcp = 150, 20
    truth = 1.0  # value of "always action 0": mean of the HCP effects (0) + 1
    plain_cover, grouped_cover = [], []
    for _ in range(200):
        effect = rng.normal(0.0, 1.0, n_hcps)
        hcp = np.repeat(np.arange(n_hcps), per_hcp)
        action = rng.integers(2, size=len(hcp))
        reward = effect[hcp] + (action == 0) + rng.normal(0.0, 0.5, len(hcp))
        pscore = np.full(len(hcp), 0.5)
        target = np.zeros(len(hcp), dtype=np.int64)
        q = np.where(action == 0, 1.0, 0.0)
        kwargs = {"q_target": np.ones(len(hcp)), "q_logged": q}
        plain = ope.estimate("dr", action, reward, pscore, target, **kwargs)
        grouped = ope.estimate("dr", action, reward, pscore, target, groups=hcp, **kwargs)
        plain_cover.append(plain.ci_low <= truth <= plain.ci_high)
        grouped_cover.append(grouped.ci_low <= truth <= grouped.ci_high)
    assert np.mean(plain_cover) < 0.7
    assert 0.9 <= np.mean(grouped_cover) <= 0.99


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"groups": np.arange(3), "q_target": np.zeros(4), "q_logged": np.zeros(4)},
            "groups has 3 rows, the decisions 4",
        ),
        ({"q_target": np.zeros(4)}, "needs q_target and q_logged"),
        ({"q_target": np.zeros(3), "q_logged": np.zeros(4)}, "q_target has 3"),
    ],
)
def test_bad_inputs_name_the_problem(kwargs: dict[str, np.ndarray], match: str) -> None:
    action = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match=match):
        ope.estimate(
            "dr", action, np.ones(4), np.full(4, 0.5), np.zeros(4, dtype=np.int64), **kwargs
        )


@pytest.mark.parametrize(
    ("pscore", "reward", "match"),
    [
        (np.array([0.5, 0.0]), np.ones(2), r"pscore must be in \(0, 1\]"),
        (np.array([0.5, 1.5]), np.ones(2), r"pscore must be in \(0, 1\]"),
        (np.full(2, 0.5), np.array([1.0, np.nan]), "reward must be finite"),
    ],
)
def test_bad_logs_are_refused(pscore: np.ndarray, reward: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ope.ips(np.array([0, 1]), reward, pscore, np.array([0, 0]))


def test_intervals_take_students_t_on_the_units_the_error_rests_on() -> None:
    """Clustered: the HCPs less one; alone: the decisions less one; paired: the pairs
    less one. t's 97.5% quantile is 2.20 on 11 degrees of freedom, 1.98 on 119, 2.57 on 5."""
    rng = np.random.default_rng(6)
    hcp = np.repeat(np.arange(12), 10)
    n = len(hcp)
    action = rng.integers(2, size=n)
    reward = rng.normal(size=n) + rng.normal(size=12)[hcp]
    pscore = np.full(n, 0.5)
    one, zero = np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    terms = (action == 1) / pscore * reward  # IPS of "always 1"
    clustered = ope.estimate("ips", action, reward, pscore, one, groups=hcp)
    alone = ope.estimate("ips", action, reward, pscore, one)
    for result, dof, se, t in (
        (clustered, 11, ope.standard_error(terms, hcp), 2.2009851600916392),
        (alone, n - 1, float(terms.std(ddof=1) / np.sqrt(n)), 1.98009987645694),
    ):
        assert result.dof == dof
        assert (result.ci_high - result.value) / se == pytest.approx(t)
    paired = ope.difference("ips", action, reward, pscore, one, zero, groups=hcp // 2)
    assert paired.dof == 5  # 6 groups of two HCPs
    half = paired.ci_high - paired.value
    hit = ((action == 1).astype(np.float64) - (action == 0)) / pscore * reward
    assert half / ope.standard_error(hit, hcp // 2) == pytest.approx(2.5705818356363155)


def test_few_hcps_do_not_read_a_gain_more_often_than_promised() -> None:
    """No gain in the population of HCPs, 6 of them in the log: a 95% interval's lower
    bound is above zero in 2.5% of logs. With the normal's 1.96 on the clustered
    error it was twice as often (a challenger promoted on noise); with t on 5 degrees
    of freedom it keeps the promise."""
    rng = np.random.default_rng(7)
    hcp = np.repeat(np.arange(6), 120)
    n = len(hcp)
    one, zero, q = np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64), np.zeros(n)
    above_t, above_normal = [], []
    for _ in range(4000):
        action = rng.integers(2, size=n)
        gain = rng.normal(0.0, 0.4, 6)[hcp]
        reward = rng.normal(2.0, 1.0, 6)[hcp] + gain * (action == 1) + rng.normal(size=n)
        diff = ope.difference(
            "dr",
            action,
            reward,
            np.full(n, 0.5),
            one,
            zero,
            q_target=q,
            q_baseline=q,
            q_logged=q,
            groups=hcp,
        )
        se = (diff.ci_high - diff.ci_low) / 2 / ope.critical_value(diff.dof)
        above_t.append(diff.ci_low > 0)
        above_normal.append(diff.value - ope.Z_95 * se > 0)
    assert np.mean(above_normal) > 0.04
    # 4000 logs: a rate of 2.5% lands in [0.018, 0.032] with > 99% probability.
    assert 0.018 <= np.mean(above_t) <= 0.032, np.mean(above_t)


def _few_differ(n_hcps: int, per_hcp: int, differ: int, seed: int) -> dict[str, np.ndarray]:
    """A log of ``n_hcps`` HCPs, ``per_hcp`` decisions each, actions 0 / 1 at 0.5, and two
    policies (``target`` takes 1 on the first ``differ`` HCPs, ``baseline`` never)."""
    rng = np.random.default_rng(seed)
    hcp = np.repeat(np.arange(n_hcps), per_hcp)
    n = len(hcp)
    action = rng.integers(2, size=n)
    reward = rng.normal(2.0, 1.0, n_hcps)[hcp] + rng.normal(size=n)
    return {
        "action": action,
        "reward": reward,
        "pscore": np.full(n, 0.5),
        "target": np.where(hcp < differ, 1, 0),
        "baseline": np.zeros(n, dtype=np.int64),
        "groups": hcp,
    }


def test_a_paired_difference_rests_on_the_hcps_where_the_policies_differ() -> None:
    """Where two policies agree, IPS's and DR's difference terms are 0 before any outcome
    is seen: 8 HCPs of 2,000 where they differ give Student's t on 7 degrees of freedom,
    and the error of the mean over those HCPs' decisions times their share."""
    log = _few_differ(2000, 3, differ=8, seed=9)
    n = len(log["action"])
    q = {"q_target": np.zeros(n), "q_baseline": np.zeros(n), "q_logged": np.zeros(n)}
    diff = ope.difference("dr", **log, **q)
    differ = log["target"] != log["baseline"]
    terms = ((log["action"] == 1).astype(np.float64) - (log["action"] == 0)) / 0.5 * log["reward"]
    terms = terms * differ
    kept, hcp = terms[differ], log["groups"][differ]  # 24 decisions of HCPs 0-7
    sums = np.bincount(hcp, weights=kept - kept.mean())
    se = float(np.sqrt(8 / 7 * (sums**2).sum()) / n)
    assert diff.dof == 7
    assert diff.value == pytest.approx(terms.mean())
    assert (diff.ci_high - diff.value) / se == pytest.approx(2.3646242515927844)  # t_0.975, 7
    assert ope.difference("ips", **log).dof == 7
    # SNIPS's normalisation moves every term: its error takes all the HCPs.
    assert ope.difference("snips", **log).dof == 1999
    # Every HCP differs: the error over all of them, as before.
    everywhere = {**log, "target": np.ones(n, dtype=np.int64)}
    every = ope.difference("dr", **everywhere, **q)
    all_terms = ((log["action"] == 1).astype(np.float64) - (log["action"] == 0)) / 0.5
    se_all, dof_all = ope.clustered_error(all_terms * log["reward"], log["groups"])
    assert every.dof == dof_all == 1999
    assert every.ci_high - every.value == pytest.approx(ope.critical_value(1999) * se_all)
    # Without HCPs each decision is a unit: the 24 where they differ, less one.
    assert ope.difference("dr", **{**log, "groups": None}, **q).dof == 23
    # One HCP, or none, where they differ: no error can be estimated, no interval.
    for differ_on in (1, 0):
        alone = ope.difference("dr", **_few_differ(2000, 3, differ=differ_on, seed=9), **q)
        assert alone.dof == 0
        assert (alone.ci_low, alone.ci_high) == (-np.inf, np.inf)


def test_few_disagreeing_hcps_read_a_gain_as_often_as_promised() -> None:
    """No gain in the population of HCPs; the two policies differ on 8 HCPs of 2,000.
    The error over all 2,000 (their zeros centred at the mean, counted as evidence of
    the spread) on t with 1,999 degrees of freedom put the lower bound above zero in
    1.5% of logs, not the 2.5% promised (and with 3 such HCPs it never can: a sum of
    3 terms over its root sum of squares is at most sqrt(3) < 1.96); t on 7 with that
    error, in 0.1%. The error over the 8, on t with 7, keeps the promise: 2.0%."""
    rng = np.random.default_rng(8)
    n_hcps, per_hcp = 2000, 3
    hcp = np.repeat(np.arange(n_hcps), per_hcp)
    n = len(hcp)
    target, zero, q = np.where(hcp < 8, 1, 0), np.zeros(n, dtype=np.int64), np.zeros(n)
    above, above_all_hcps, above_all_hcps_t7 = [], [], []
    for _ in range(4000):
        action = rng.integers(2, size=n)
        gain = rng.normal(0.0, 0.4, n_hcps)[hcp]
        reward = rng.normal(2.0, 1.0, n_hcps)[hcp] + gain * (action == 1) + rng.normal(size=n)
        diff = ope.difference(
            "dr",
            action,
            reward,
            np.full(n, 0.5),
            target,
            zero,
            q_target=q,
            q_baseline=q,
            q_logged=q,
            groups=hcp,
        )
        terms = ((action == 1).astype(np.float64) - (action == 0)) / 0.5 * reward * (target == 1)
        se_all, dof_all = ope.clustered_error(terms, hcp)
        above.append(diff.ci_low > 0)
        above_all_hcps.append(diff.value - ope.critical_value(dof_all) * se_all > 0)
        above_all_hcps_t7.append(diff.value - ope.critical_value(7) * se_all > 0)
    assert diff.dof == 7
    assert np.mean(above_all_hcps) < 0.018, np.mean(above_all_hcps)
    assert np.mean(above_all_hcps_t7) < 0.005, np.mean(above_all_hcps_t7)
    # 4000 logs: a rate of 2.5% lands in [0.018, 0.032] with > 99% probability.
    assert 0.018 <= np.mean(above) <= 0.032, np.mean(above)


@pytest.mark.parametrize(
    ("estimator", "reward_value"),
    [("ips", 0.0), ("snips", 0.0), ("dr", 0.0), ("snips", 1.0), ("dr", 1.0)],
)
def test_rewards_all_alike_keep_an_interval(estimator: str, reward_value: float) -> None:
    """Every reward the same (no HCP prescribed, or every one did): the terms had no
    spread and each interval was a point, "+0.000 [+0.000, +0.000]". A policy's value
    keeps the error of a yes/no outcome seen in none (or all) of the HCPs its choices
    were tried on; a paired difference, that of each policy's tries where the two
    differ, times the differing decisions' share. (IPS's terms with every reward 1 are
    the importance weights, which vary: the floor adds to their spread.)"""
    rng = np.random.default_rng(10)
    hcp = np.repeat(np.arange(300), 2)
    n = len(hcp)
    action = rng.integers(2, size=n)
    reward, pscore = np.full(n, reward_value), np.full(n, 0.5)
    one, zero = np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    q = {"q_target": reward, "q_logged": reward}
    value = ope.estimate(estimator, action, reward, pscore, one, groups=hcp, **q)
    tried = len(np.unique(hcp[action == 1]))
    half = ope.critical_value(299) * np.sqrt(ope.no_spread_variance(tried))
    assert (value.value, value.ci_low, value.ci_high) == pytest.approx(
        (reward_value, reward_value - half, reward_value + half)
    )
    target = np.where(hcp < 60, 1, 0)  # differs from "always 0" on 60 HCPs' 120 decisions
    diff = ope.difference(
        estimator, action, reward, pscore, target, zero, q_baseline=reward, groups=hcp, **q
    )
    sides = [len(np.unique(hcp[(hcp < 60) & (action == a)])) for a in (1, 0)]
    floor = sum(ope.no_spread_variance(g) for g in sides) * (120 / n) ** 2
    # SNIPS's error takes every HCP (its normalisation moves every term).
    assert diff.dof == (299 if estimator == "snips" else 59)
    half = ope.critical_value(diff.dof) * np.sqrt(floor)
    assert (diff.value, diff.ci_low, diff.ci_high) == pytest.approx((0.0, -half, half))


def _with_hcps(
    n_hcps: int, per_hcp: int, mu: np.ndarray, logger: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(HCP, context, action, reward, propensity) logged by epsilon-greedy (0.3) on
    ``logger``, each HCP one context decided ``per_hcp`` times, with an HCP effect on
    every reward no reward model knows."""
    hcp = np.repeat(np.arange(n_hcps), per_hcp)
    context = rng.integers(N_CONTEXTS, size=n_hcps)[hcp]
    action = np.where(rng.random(len(hcp)) < 0.3, rng.integers(K, size=len(hcp)), logger[context])
    pscore = 0.3 / K + 0.7 * (action == logger[context])
    effect = rng.normal(0.0, 0.5, n_hcps)[hcp]
    reward = rng.poisson(mu[context, action]).astype(np.float64) + effect
    return hcp, context, action, reward, pscore


@pytest.mark.parametrize("estimator", ["ips", "snips", "dr"])
def test_gain_over_the_logged_policy_is_paired_and_covers_the_truth(estimator: str) -> None:
    """The learned policy's gain over the logging policy (epsilon-greedy on the
    champion: its value is the mean observed reward) shares the decisions and the
    outcomes: paired, its interval is narrower than the two values' own errors
    combined, and it covers the true gain as often as promised."""
    mu, champion, challenger = _world(seed=0)
    rows = np.arange(N_CONTEXTS)
    logged_truth = 0.7 * mu[rows, champion] + 0.3 * mu.mean(axis=1)
    truth = float((mu[rows, challenger] - logged_truth).mean())
    rng = np.random.default_rng(11)
    covered, narrower = [], []
    for _ in range(200):
        hcp, context, action, reward, pscore = _with_hcps(300, 5, mu, champion, rng)
        q = _per_action_model(action, reward)
        target = challenger[context]
        kwargs = {"q_target": q[target], "q_logged": q[action], "groups": hcp}
        gain = ope.difference(estimator, action, reward, pscore, target, None, **kwargs)
        learned = ope.estimate(estimator, action, reward, pscore, target, **kwargs)
        assert gain.value == pytest.approx(learned.value - reward.mean())
        covered.append(gain.ci_low <= truth <= gain.ci_high)
        own = (learned.ci_high - learned.ci_low) / (2 * ope.critical_value(learned.dof))
        logged_se = ope.standard_error(reward, hcp)
        unpaired = 2 * ope.critical_value(gain.dof) * np.hypot(own, logged_se)
        narrower.append(gain.ci_high - gain.ci_low < unpaired)
    coverage = float(np.mean(covered))
    # 200 replications: a true 95% interval lands in [0.9, 0.99] with > 99% probability.
    assert 0.9 <= coverage <= 0.99, coverage
    assert all(narrower)


@pytest.mark.parametrize("estimator", ["ips", "snips", "dr"])
def test_a_policy_that_does_what_the_logger_did_gains_exactly_nothing(estimator: str) -> None:
    """A deterministic logging policy (every propensity 1) and a target that chooses as
    it did: the gain over the logged policy is 0, and so is its interval (IPS and DR
    had no informative decision and read an infinite one)."""
    rng = np.random.default_rng(12)
    hcp = np.repeat(np.arange(200), 3)
    n = len(hcp)
    action = rng.integers(-1, K, size=n)
    reward = rng.poisson(2.0, n).astype(np.float64)
    q = rng.normal(2.0, 0.3, n)
    gain = ope.difference(
        estimator,
        action,
        reward,
        np.ones(n),
        action.copy(),
        None,
        q_target=q,
        q_logged=q,
        groups=hcp,
    )
    assert gain.value == pytest.approx(0.0, abs=1e-12)
    assert gain.ci_high - gain.ci_low == pytest.approx(0.0, abs=1e-12)


def test_the_logged_policy_is_valued_by_its_rewards_not_a_reward_model() -> None:
    n = 10
    one = np.ones(n)
    with pytest.raises(ValueError, match="pass no q_baseline"):
        ope.difference("dr", np.zeros(n), one, one, np.zeros(n), None, q_baseline=one)


def test_an_hcps_decisions_repeated_do_not_narrow_the_gain_over_the_logged_policy() -> None:
    """Each HCP's decisions written five times are no new evidence: clustered by HCP the
    interval of the gain over the logged policy stays as it was, where counted as
    independent decisions it would narrow by sqrt(5)."""
    mu, champion, challenger = _world(seed=0)
    hcp, context, action, reward, pscore = _with_hcps(
        300, 4, mu, champion, np.random.default_rng(13)
    )
    q = _per_action_model(action, reward)
    target = challenger[context]

    def gain(times: int, clustered: bool) -> ope.PolicyValue:
        def again(x: np.ndarray) -> np.ndarray:
            return np.tile(x, times)

        return ope.difference(
            "dr",
            again(action),
            again(reward),
            again(pscore),
            again(target),
            None,
            q_target=again(q[target]),
            q_logged=again(q[action]),
            groups=again(hcp) if clustered else None,
        )

    once, five = gain(1, clustered=True), gain(5, clustered=True)
    assert five.value == pytest.approx(once.value)
    assert five.ci_high - five.ci_low == pytest.approx(once.ci_high - once.ci_low, rel=1e-9)
    independent = gain(5, clustered=False)
    assert independent.ci_high - independent.ci_low < 0.5 * (once.ci_high - once.ci_low)
