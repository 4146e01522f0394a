"""Quality benchmark: how much the learned policy is worth, on the simulator and on real data.

1. Simulator (default 20,000 HCPs x 26 weekly periods, seed 0): train through the
   data contract on the history, then score every HCP at the end of history and
   compute the *true* net value (incremental NRx - cost, summed over HCPs) of the
   learned top-1-or-nothing policy, the oracle, random eligible actions, the
   logging policy, ranking by engagement probability alone, and doing nothing;
   beside them, the ceilings: the same features fitted to the noise-free truth,
   and the Bayes-optimal policy from the same history (``--bayes-samples``).
2. Hillstrom e-mail experiment (64,000 customers, randomized thirds), outcome
   ``visit``: per seed 0-4 a 50/50 split stratified by arm; fit on one half,
   choose No E-Mail / Mens / Womens for each customer of the other half, and
   estimate the value by IPS (propensity 1/3), with and without a 30% e-mail
   budget; Qini AUC per e-mail vs none. In the same run and on the same splits:
   every constant policy and causalml's T-, X- and S-learners on LightGBM.
3. Optionally (``--scale-hcps``), training time on a large simulated world.

Writes bench/results/quality.json and replaces the quality table in
bench/README.md. Run: ``make bench-quality`` (or ``.venv/bin/python bench/quality.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nextbest.contract import Dataset, load_dataset
from nextbest.contract.adapters import load_hillstrom
from nextbest.evaluation.offline import candidate_rows
from nextbest.evaluation.uplift_curves import uplift_curve
from nextbest.learning.config import TrainConfig
from nextbest.learning.train import decision_rows, train
from nextbest.settings import drop_environment_settings
from nextbest.simulate import simulate_world
from nextbest.simulate.world import best_or_none

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "quality.json"
README = ROOT / "README.md"
HILLSTROM = ROOT.parent.parent / "shared" / "data" / "hillstrom.csv"
ARMS = ("none", "mens_email", "womens_email")
BUDGET = 0.30


def _say(message: str) -> None:
    print(message, flush=True)


# -- simulator -----------------------------------------------------------------


def simulator(
    n_hcps: int, periods: int, seed: int, config: TrainConfig, *, bayes_samples: int = 1000
) -> dict[str, Any]:
    world = simulate_world(n_hcps=n_hcps, periods=periods, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        world.write(tmp, fmt="parquet")
        dataset = load_dataset(tmp)
    start = time.perf_counter()
    result = train(dataset, config=config, as_of=world.decision_time)
    train_seconds = time.perf_counter() - start
    model = result.model
    n, n_actions = world.n_hcps, world.n_actions
    # The model's rows follow its own hcps/catalog order; map them to the world's.
    hcp_rows = model.hcp_index.get_indexer(world.hcps["hcp_id"])
    action_rows = model.action_index.get_indexer(world.catalog["action_id"])
    pair_hcp = np.repeat(hcp_rows, n_actions)
    pair_action = np.tile(action_rows, n)
    scores = model.score(pair_hcp, pair_action)
    net = model.net_value(scores.uplift, pair_action).reshape(n, n_actions)
    p_engage = scores.p_engage.reshape(n, n_actions)
    eligible = world.eligible

    learned = best_or_none(net, eligible)
    by_engagement = np.where(eligible, p_engage, -np.inf).argmax(axis=1)
    by_engagement = np.where(eligible.any(axis=1), by_engagement, -1)
    rng = np.random.default_rng(seed)
    random_pick = np.array(
        [rng.choice(np.flatnonzero(e)) if e.any() else -1 for e in eligible], dtype=np.int64
    )
    oracle = world.oracle_choice()
    values = {
        "policy_value": world.true_value(learned),
        "oracle_value": world.true_value(oracle),
        "random_value": world.true_value(random_pick),
        "logging_value": world.policy_value(world.logging_policy_probabilities()),
        "engagement_only_value": world.true_value(by_engagement),
        "no_action_value": 0.0,
    }
    true_uplift = world.uplift[eligible]
    out: dict[str, Any] = {
        "n_hcps": n,
        "periods": periods,
        "seed": seed,
        "n_actions": n_actions,
        "n_decisions": len(dataset.interactions),
        **values,
        "ratio_to_oracle": values["policy_value"] / values["oracle_value"],
        "ratio_to_logging": (
            values["policy_value"] / values["logging_value"] if values["logging_value"] else None
        ),
        "gain_over_no_action_per_hcp": values["policy_value"] / n,
        "per_hcp": {k: v / n for k, v in values.items()},
        "policy_action_rate": float((learned >= 0).mean()),
        "oracle_action_rate": float((oracle >= 0).mean()),
        "uplift_correlation_with_truth": float(
            np.corrcoef(scores.uplift.reshape(n, n_actions)[eligible], true_uplift)[0, 1]
        ),
        "p_engage_correlation_with_truth": float(
            np.corrcoef(p_engage[eligible], world.p_engage[eligible])[0, 1]
        ),
        "train_seconds": train_seconds,
        "uplift_heterogeneity": result.params.get("uplift.heterogeneity"),
        "feature_ceiling": _feature_ceiling(world, dataset, model),
        "shortfall": _shortfall(world, net, learned, oracle),
        **(
            {"bayes_ceiling": _bayes_ceiling(world, net, learned, bayes_samples)}
            if bayes_samples
            else {}
        ),
        "uplift_source": model.uplift_source,
        "eval_metrics": {
            k: v for k, v in result.metrics.items() if k.startswith(("eval_", "ope_"))
        },
    }
    return out


def _shortfall(
    world: Any, net: np.ndarray, learned: np.ndarray, oracle: np.ndarray
) -> dict[str, float]:
    """Where the learned policy loses against the oracle: *whether* to act, or *what*.

    Each value is a ratio to the oracle's value of a policy mixing the two: the
    action the model ranks first, served exactly where the oracle acts; and the
    oracle's best action, served exactly where the learned policy acts. Beside
    them, a policy that knows the truth only on average over HCPs alike in
    specialty and decile.
    """
    ours = np.where(world.eligible, net, -np.inf).argmax(axis=1)
    theirs = np.where(world.eligible, world.net_value, -np.inf).argmax(axis=1)
    oracle_value = world.true_value(oracle)
    # What the attributes alone allow: each HCP gets the best action by the true
    # mean net value of the *other* HCPs of its specialty and decile (leave one out).
    cell = pd.factorize(
        world.hcps["specialty"].astype(str) + "|" + world.hcps["decile"].astype(str)
    )[0]
    sums = np.zeros((cell.max() + 1, world.n_actions))
    np.add.at(sums, cell, world.net_value)
    others = np.maximum(np.bincount(cell)[cell] - 1, 1)[:, None]
    by_cell = best_or_none((sums[cell] - world.net_value) / others, world.eligible)
    return {
        "our_action_where_oracle_acts": world.true_value(np.where(oracle >= 0, ours, -1))
        / oracle_value,
        "oracle_action_where_we_act": world.true_value(np.where(learned >= 0, theirs, -1))
        / oracle_value,
        "true_cell_means_specialty_decile": world.true_value(by_cell) / oracle_value,
    }


def _bayes_ceiling(
    world: Any, net: np.ndarray, learned: np.ndarray, samples: int
) -> dict[str, Any]:
    """The Bayes-optimal policy from the same history (:mod:`nextbest.simulate.posterior`).

    It knows the simulator's response model and priors, sees only what the learner
    sees, and so bounds what any learner can reach on this world. Beside it, per
    channel: how often each policy picks it, and how well the learned model's and
    the posterior's net values of its eligible actions follow the truth.
    """
    from nextbest.simulate.posterior import posterior_values
    from nextbest.simulate.vocabulary import CHANNELS

    _say(f"  Bayes-optimal policy: {samples} trait samples per HCP")
    start = time.perf_counter()
    post = posterior_values(
        world, samples=samples, seed=0, progress=lambda done: _say(f"    {done}")
    )
    seconds = time.perf_counter() - start
    eligible = world.eligible
    choice = post.choice(eligible)
    value, oracle_value = world.true_value(choice), world.true_value(world.oracle_choice())
    uplift = post.net_value + world.cost[None, :]
    oracle = world.oracle_choice()

    def share(pick: np.ndarray, channel: int) -> float:
        acted = pick >= 0
        return float((acted & (world.codes.channel[np.maximum(pick, 0)] == channel)).mean())

    def correlation(estimate: np.ndarray, mask: np.ndarray) -> float:
        return float(np.corrcoef(estimate[mask], world.net_value[mask])[0, 1])

    by_channel = {}
    for c, name in enumerate(CHANNELS):
        mask = eligible & (world.codes.channel == c)[None, :]
        by_channel[name] = {
            "share_chosen_learned_bayes_oracle": [
                share(learned, c),
                share(choice, c),
                share(oracle, c),
            ],
            "net_value_correlation_learned_bayes": [
                correlation(net, mask),
                correlation(post.net_value, mask),
            ],
        }
    return {
        "samples_per_hcp": samples,
        "value": value,
        "value_per_hcp": value / world.n_hcps,
        "ratio_to_oracle": value / oracle_value,
        "learned_policy_ratio_to_bayes": world.true_value(learned) / value,
        "uplift_correlation_with_truth": float(
            np.corrcoef(uplift[eligible], world.uplift[eligible])[0, 1]
        ),
        "action_rate": float((choice >= 0).mean()),
        "same_choice_as_learned_policy": float((choice == learned).mean()),
        "effective_samples_p1_p10_p50": [
            float(q) for q in np.quantile(post.effective_samples, [0.01, 0.10, 0.50])
        ],
        "by_channel": by_channel,
        "seconds": seconds,
    }


def _true_rates_of_logged_touches(world: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per logged touch: its row in ``world.interactions``, true P(engaged) and true gain."""
    from nextbest.simulate.response import FATIGUE_WINDOW, sigmoid, static_logit

    n, periods = world.n_hcps, len(world.interactions) // world.n_hcps
    action = pd.Index(world.catalog["action_id"]).get_indexer(world.interactions["action_id"])
    channel = np.where(action >= 0, world.codes.channel[np.maximum(action, 0)], -1)
    by_period = channel.reshape(periods, n)  # interactions are period-major, HCPs in order
    recent = np.zeros((periods, n))
    for t in range(periods):
        for past in range(max(0, t - FATIGUE_WINDOW), t):
            recent[t] += (by_period[past] == by_period[t]) & (by_period[t] >= 0)
    touched = np.flatnonzero(action >= 0)
    hcp = touched % n
    logit = static_logit(world.traits, world.codes)[hcp, action[touched]]
    fatigue = world.traits.fatigue_sensitivity[hcp] * recent.ravel()[touched]
    return touched, sigmoid(logit - fatigue), world.gain[hcp, action[touched]]


def _feature_ceiling(world: Any, dataset: Dataset, model: Any) -> dict[str, float]:
    """What the same features could give at best: models fitted to the noise-free truth.

    P(engaged) and the gain when engaged are fitted by LightGBM on the logged
    touches with the *true* values as targets (no 0/1 or Poisson noise), on the
    model's own features, then scored like the learned policy. The ratio to the
    oracle it reaches bounds what any learner on these features and this much
    history can do; the gap between it and ``ratio_to_oracle`` is estimation.
    """
    import lightgbm as lgb

    touched, p_true, gain_true = _true_rates_of_logged_touches(world)
    rows = decision_rows(model.space, world.interactions, dataset.hcps, dataset.catalog)
    X = rows.X[touched]
    n, n_actions = world.n_hcps, world.n_actions
    hcp_rows = model.hcp_index.get_indexer(world.hcps["hcp_id"])
    action_rows = model.action_index.get_indexer(world.catalog["action_id"])
    grid = model.rows(np.repeat(hcp_rows, n_actions), np.tile(action_rows, n))
    cats = model.space.categorical_features

    def fit(target: np.ndarray) -> np.ndarray:
        reg = lgb.LGBMRegressor(n_estimators=600, learning_rate=0.05, verbose=-1)
        reg.fit(X, target, categorical_feature=cats)
        return np.asarray(reg.predict(grid)).reshape(n, n_actions)

    p_hat, gain_hat = np.clip(fit(p_true), 0.0, 1.0), fit(gain_true)
    eligible = world.eligible

    def ratio(uplift: np.ndarray) -> float:
        choice = best_or_none(uplift - world.cost[None, :], eligible)
        return world.true_value(choice) / world.true_value(world.oracle_choice())

    return {
        "ratio_to_oracle": ratio(p_hat * gain_hat),
        "ratio_with_true_gain": ratio(p_hat * world.gain),
        "ratio_with_true_p_engage": ratio(world.p_engage * gain_hat),
        "p_engage_correlation_with_truth": float(
            np.corrcoef(p_hat[eligible], world.p_engage[eligible])[0, 1]
        ),
        "gain_correlation_with_truth": float(
            np.corrcoef(gain_hat[eligible], world.gain[eligible])[0, 1]
        ),
    }


# -- Hillstrom -----------------------------------------------------------------


def _split(arms: np.ndarray, seed: int) -> np.ndarray:
    """A 50/50 split stratified by arm; True = training half."""
    rng = np.random.default_rng(seed)
    train_mask = np.zeros(len(arms), dtype=bool)
    for arm in np.unique(arms):
        idx = np.flatnonzero(arms == arm)
        chosen = rng.choice(idx, size=len(idx) // 2, replace=False)
        train_mask[chosen] = True
    return train_mask


def _choices(gain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The arm chosen per customer by ``gain`` ((n, 2): mens, womens vs none): free, budgeted."""
    best = gain.argmax(axis=1)
    best_gain = gain[np.arange(len(gain)), best]
    choice = np.where(best_gain > 0, best + 1, 0)
    k = round(BUDGET * len(gain))
    order = np.argsort(-best_gain, kind="stable")
    budget_choice = np.zeros(len(gain), dtype=np.int64)
    top = order[:k]
    budget_choice[top] = np.where(best_gain[top] > 0, best[top] + 1, 0)
    return choice, budget_choice


def _paired_difference(
    ours: np.ndarray, theirs: np.ndarray, arm: np.ndarray, visit: np.ndarray, propensity: float
) -> dict[str, float]:
    """IPS value of ``ours`` minus ``theirs`` on the same customers, with its standard error."""
    per_customer = ((arm == ours).astype(float) - (arm == theirs)) * visit / propensity
    return {
        "difference": float(per_customer.mean()),
        "standard_error": float(per_customer.std(ddof=1) / np.sqrt(len(per_customer))),
    }


def _policy_figures(
    gain: np.ndarray, arm: np.ndarray, visit: np.ndarray, propensity: float
) -> dict[str, float]:
    """IPS value of choosing by ``gain`` ((n, 2): mens, womens vs none), free and budgeted."""
    choice, budget_choice = _choices(gain)
    figures = {
        "ips_value": float(np.mean((arm == choice) * visit / propensity)),
        "ips_value_budget_30": float(np.mean((arm == budget_choice) * visit / propensity)),
        "email_share": float((choice > 0).mean()),
        "mens_share": float((choice == 1).mean()),
    }
    for j, name in enumerate(("mens_email", "womens_email"), start=1):
        mask = (arm == j) | (arm == 0)
        curve = uplift_curve(gain[mask, j - 1], arm[mask] == j, visit[mask])
        figures[f"qini_auc_{name}"] = curve.qini_auc
    return figures


def _causalml_gains(
    features: pd.DataFrame, arm: np.ndarray, visit: np.ndarray, train_mask: np.ndarray, seed: int
) -> dict[str, np.ndarray]:
    """Predicted uplift (n_test, 2) of causalml's T/X/S learners on LightGBM."""
    import lightgbm as lgb
    from causalml.inference.meta import BaseSRegressor, BaseTRegressor, BaseXRegressor

    names = np.array(ARMS)[arm]
    X_train, X_test = features[train_mask].to_numpy(), features[~train_mask].to_numpy()

    def regressor() -> lgb.LGBMRegressor:
        return lgb.LGBMRegressor(
            n_estimators=200, learning_rate=0.05, random_state=seed, verbose=-1
        )

    learners = {
        "causalml_t_learner": BaseTRegressor(learner=regressor(), control_name="none"),
        "causalml_x_learner": BaseXRegressor(learner=regressor(), control_name="none"),
        "causalml_s_learner": BaseSRegressor(learner=regressor(), control_name="none"),
    }
    out = {}
    train_names, train_y = names[train_mask], visit[train_mask]
    for name, learner in learners.items():
        fit_kwargs: dict[str, Any] = {}
        predict_kwargs: dict[str, Any] = {}
        if name == "causalml_x_learner":
            # Assignment was uniformly random: within each e-mail-vs-none pair, P = 1/2.
            fit_kwargs["p"] = {a: np.full(len(X_train), 0.5) for a in ARMS[1:]}
            predict_kwargs["p"] = {a: np.full(len(X_test), 0.5) for a in ARMS[1:]}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            learner.fit(X_train, train_names, train_y, **fit_kwargs)
            tau = np.asarray(learner.predict(X_test, **predict_kwargs))
        # causalml orders treatment columns by sorted group name: mens_email, womens_email.
        out[name] = tau.reshape(len(X_test), -1)[:, :2]
    return out


def _features(hcps: pd.DataFrame) -> pd.DataFrame:
    """Numeric customer features for the causalml learners (the ones our model sees)."""
    frame = hcps[["recency", "history", "mens", "womens", "newbie"]].astype(float).copy()
    for column in ("territory_id", "purchase_channel", "history_segment"):
        frame[column] = pd.Categorical(hcps[column].astype(str)).codes.astype(float)
    return frame


def hillstrom(
    path: Path, seeds: list[int], config: TrainConfig, *, with_causalml: bool = True
) -> dict[str, Any]:
    """Hillstrom on ``seeds`` splits; ``with_causalml`` False leaves out its learners."""
    data = load_hillstrom(path, outcome="visit")
    inter = data.interactions.reset_index(drop=True)
    hcp_row = pd.Index(data.hcps["hcp_id"]).get_indexer(inter["hcp_id"])
    arm_name = inter["action_id"].fillna("none").to_numpy()
    arm = np.select([arm_name == "mens_email", arm_name == "womens_email"], [1, 2], 0)
    visit = inter["outcome"].to_numpy(dtype=np.float64)
    features = _features(data.hcps.iloc[hcp_row].reset_index(drop=True))
    propensity = float(inter["propensity"].iloc[0])
    causalml_status = "left out (--skip-causalml)"
    if with_causalml:
        try:
            import causalml  # noqa: F401

            causalml_status = "installed"
        except ImportError as exc:
            causalml_status = f"not installed ({exc}); run `pip install -e '.[bench]'`"

    per_seed: dict[str, list[dict[str, float]]] = {}
    differences: dict[str, list[dict[str, dict[str, float]]]] = {}
    heterogeneity: list[Any] = []
    for seed in seeds:
        _say(f"  hillstrom seed {seed}")
        train_mask = _split(arm, seed)
        train_data = Dataset(
            data.hcps, data.catalog, inter[train_mask].reset_index(drop=True), source=path
        )
        result = train(train_data, config=config.model_copy(update={"seed": seed}))
        model = result.model
        heterogeneity.append(result.params.get("uplift.heterogeneity"))
        test = decision_rows(model.space, inter[~train_mask], data.hcps, data.catalog)
        X = candidate_rows(model, test)
        actions = np.tile(np.arange(model.n_actions), len(test.X))
        scores = model.score_rows(X, actions)
        net = model.net_value(scores.uplift, actions).reshape(len(test.X), model.n_actions)
        order = model.action_index.get_indexer(["mens_email", "womens_email"])
        gains = {"nextbest": net[:, order]}
        if causalml_status == "installed":
            gains.update(_causalml_gains(features, arm, visit, train_mask, seed))
        test_arm, test_visit = arm[~train_mask], visit[~train_mask]
        chosen: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name, gain in gains.items():
            per_seed.setdefault(name, []).append(
                _policy_figures(gain, test_arm, test_visit, propensity)
            )
            chosen[name] = _choices(gain)
        for j, name in enumerate(ARMS):
            value = float(np.mean((test_arm == j) * test_visit / propensity))
            per_seed.setdefault(f"constant_{name}", []).append(
                {"ips_value": value, "ips_value_budget_30": value if j == 0 else float("nan")}
            )
        # A constant e-mail under the budget: a random 30% get it, the rest none.
        for j, name in enumerate(ARMS[1:], start=1):
            rng = np.random.default_rng(seed)
            lucky = rng.random(len(test_arm)) < BUDGET
            choice = np.where(lucky, j, 0)
            per_seed[f"constant_{name}"][-1]["ips_value_budget_30"] = float(
                np.mean((test_arm == choice) * test_visit / propensity)
            )
            chosen[f"constant_{name}"] = (np.full(len(test_arm), j), choice)
        # Our policy against every other on the same held-out customers: the
        # difference of the two IPS values and its standard error.
        ours_free, ours_budget = chosen["nextbest"]
        for name, (free, budget) in chosen.items():
            if name != "nextbest":
                differences.setdefault(name, []).append(
                    {
                        "free": _paired_difference(
                            ours_free, free, test_arm, test_visit, propensity
                        ),
                        "budget_30": _paired_difference(
                            ours_budget, budget, test_arm, test_visit, propensity
                        ),
                    }
                )

    summary: dict[str, Any] = {}
    for name, runs in per_seed.items():
        keys = runs[0].keys()
        summary[name] = {
            key: {
                "mean": float(np.nanmean([r[key] for r in runs])),
                "sd": float(np.nanstd([r[key] for r in runs], ddof=1)) if len(runs) > 1 else 0.0,
                "per_seed": [r[key] for r in runs],
            }
            for key in keys
        }
    constants = [f"constant_{a}" for a in ARMS]
    best_constant = max(constants, key=lambda c: summary[c]["ips_value"]["mean"])
    ours = summary["nextbest"]
    rivals = [name for name in summary if name.startswith("causalml_")]
    return {
        "outcome": "visit",
        "seeds": seeds,
        "split": "50/50 stratified by arm",
        "propensity": propensity,
        "budget_share": BUDGET,
        "causalml": causalml_status,
        "policies": summary,
        "best_constant": best_constant,
        "nextbest_heterogeneity_per_seed": heterogeneity,
        # nextbest minus each other policy, free and under the budget: the mean over
        # seeds of the paired IPS difference, and the mean of each split's standard
        # error (the splits overlap, so the seeds' mean is not 5 times more precise).
        "nextbest_minus": {
            name: {
                mode: {
                    "difference": float(np.mean([r[mode]["difference"] for r in runs])),
                    "standard_error_of_one_split": float(
                        np.mean([r[mode]["standard_error"] for r in runs])
                    ),
                    "per_seed": [r[mode]["difference"] for r in runs],
                }
                for mode in ("free", "budget_30")
            }
            for name, runs in differences.items()
        },
        "policy_value": ours["ips_value"]["mean"],
        "policy_value_budget_30": ours["ips_value_budget_30"]["mean"],
        "beats_best_constant": ours["ips_value"]["mean"]
        >= summary[best_constant]["ips_value"]["mean"],
        "beats_causalml": {
            name: {
                "free": ours["ips_value"]["mean"] >= summary[name]["ips_value"]["mean"],
                "budget_30": ours["ips_value_budget_30"]["mean"]
                >= summary[name]["ips_value_budget_30"]["mean"],
            }
            for name in rivals
        },
    }


# -- scale ---------------------------------------------------------------------


def _world_dataset(n_hcps: int, periods: int) -> tuple[Any, Any]:
    world = simulate_world(n_hcps=n_hcps, periods=periods, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        world.write(tmp, fmt="parquet")
        return world, load_dataset(tmp)


def scale(n_hcps: int, periods: int, config: TrainConfig) -> dict[str, Any]:
    """Training time on a large world, in this process."""
    world, dataset = _world_dataset(n_hcps, periods)
    return {
        "n_hcps": n_hcps,
        "periods": periods,
        "n_interactions": len(world.interactions),
        **_timed_training(dataset, config, world.decision_time),
        "budget_seconds": 180,
    }


def dask_training(n_hcps: int, periods: int, config: TrainConfig) -> dict[str, Any]:
    """The same world trained in this process and on local Dask clusters of 1 and of
    all cores' workers, one after the other: what the cluster costs on one machine,
    and how its time falls with workers (the part that more machines would repeat)."""
    from nextbest.learning.distributed import connect, worker_count

    world, dataset = _world_dataset(n_hcps, periods)
    out: dict[str, Any] = {
        "n_hcps": n_hcps,
        "periods": periods,
        "n_interactions": len(world.interactions),
        "plain": _timed_training(dataset, config, world.decision_time),
    }
    for label, workers in (("one_worker", 1), ("all_workers", None)):
        with connect("local", workers=workers) as client:
            n = worker_count(client)
            out[label] = {
                "workers": n,
                **_timed_training(dataset, config, world.decision_time, client=client),
            }
    plain, one, every = out["plain"], out["one_worker"], out["all_workers"]
    out["all_workers_ratio_to_plain"] = every["train_seconds"] / plain["train_seconds"]
    out["all_workers_speedup_over_one_worker"] = one["train_seconds"] / every["train_seconds"]
    return out


def _timed_training(
    dataset: Any, config: TrainConfig, as_of: pd.Timestamp, client: Any = None
) -> dict[str, Any]:
    stamps: list[tuple[str, float]] = []

    def progress(step: str) -> None:
        stamps.append((step, time.perf_counter()))

    start = time.perf_counter()
    result = train(dataset, config=config, as_of=as_of, progress=progress, client=client)
    total = time.perf_counter() - start
    # Each progress message starts a phase; a phase lasts until the next one.
    ends = [t for _, t in stamps[1:]] + [start + total]
    durations = {step: end - t for (step, t), end in zip(stamps, ends, strict=True)}
    return {
        "train_seconds": total,
        # The budget covers building features and fitting the models; the snapshot
        # for serving and the evaluation on the held-out slice come after.
        # (The models step's own messages, "models (engagement)", are phases of it.)
        "features_and_models_seconds": sum(
            seconds
            for phase, seconds in durations.items()
            if phase.split(" (", 1)[0] in ("features", "models")
        ),
        "phases_seconds": durations,
        "eval_auc": result.metrics.get("eval_auc"),
        "ope_dr_policy_value": result.metrics.get("ope_dr_policy_value"),
    }


# -- report --------------------------------------------------------------------


def _table(results: dict[str, Any]) -> str:
    lines = ["| figure | value |", "|---|---|"]
    sim = results.get("simulator")
    if sim:
        per = sim["per_hcp"]
        lines += [
            f"| simulator {sim['n_hcps']:,} HCPs x {sim['periods']} periods: learned policy, "
            f"true net NRx per HCP | {per['policy_value']:+.4f} |",
            f"| oracle / logging / random / engagement-only / nothing | {per['oracle_value']:+.4f}"
            f" / {per['logging_value']:+.4f} / {per['random_value']:+.4f} / "
            f"{per['engagement_only_value']:+.4f} / 0 |",
            f"| `ratio_to_oracle` (target >= 0.90) | {sim['ratio_to_oracle']:.3f} |",
            *(
                [
                    "| same features fitted to the noise-free truth (ceiling), ratio to oracle | "
                    f"{sim['feature_ceiling']['ratio_to_oracle']:.3f} |"
                ]
                if "feature_ceiling" in sim
                else []
            ),
            *(
                [
                    "| Bayes-optimal policy from the same history, knowing the simulator's "
                    "model (the most any learner can reach), ratio to oracle; "
                    "learned policy's ratio to it | "
                    f"{sim['bayes_ceiling']['ratio_to_oracle']:.3f}; "
                    f"{sim['bayes_ceiling']['learned_policy_ratio_to_bayes']:.3f} |",
                    *_channel_rows(sim["bayes_ceiling"].get("by_channel", {})),
                ]
                if "bayes_ceiling" in sim
                else []
            ),
            *(
                [
                    "| ratio to oracle: our first-ranked action where the oracle acts; "
                    "the oracle's action where we act | "
                    f"{sim['shortfall']['our_action_where_oracle_acts']:.3f}; "
                    f"{sim['shortfall']['oracle_action_where_we_act']:.3f} |",
                    "| ratio to oracle of the best action by the true mean net value of "
                    "HCPs of the same specialty and decile | "
                    f"{sim['shortfall']['true_cell_means_specialty_decile']:.3f} |",
                ]
                if "shortfall" in sim
                else []
            ),
            f"| training time ({sim['n_decisions']:,} decisions) | {sim['train_seconds']:.0f} s |",
        ]
    hill = results.get("hillstrom")
    if hill and "policies" in hill:
        pol = hill["policies"]
        for name in ["nextbest", *(n for n in pol if n.startswith("causalml_"))]:
            row = pol[name]
            lines.append(
                f"| Hillstrom {name}: IPS visits per customer, free / 30% budget; Qini AUC "
                f"mens / womens | {row['ips_value']['mean']:.4f} / "
                f"{row['ips_value_budget_30']['mean']:.4f}; "
                f"{row['qini_auc_mens_email']['mean']:+.4f} / "
                f"{row['qini_auc_womens_email']['mean']:+.4f} |"
            )
        for name, row in hill.get("nextbest_minus", {}).items():
            lines.append(
                f"| Hillstrom nextbest minus {name}, free / 30% budget: difference "
                f"(standard error of one split) | {row['free']['difference']:+.4f} "
                f"({row['free']['standard_error_of_one_split']:.4f}) / "
                f"{row['budget_30']['difference']:+.4f} "
                f"({row['budget_30']['standard_error_of_one_split']:.4f}) |"
            )
        for arm in ARMS:
            row = pol[f"constant_{arm}"]
            lines.append(
                f"| Hillstrom constant {arm}: free / 30% budget | {row['ips_value']['mean']:.4f}"
                f" / {row['ips_value_budget_30']['mean']:.4f} |"
            )
    big = results.get("scale")
    if big:
        lines.append(
            f"| training, {big['n_interactions']:,} interactions: features + models "
            f"(budget 180 s); whole run with snapshot and evaluation | "
            f"{big.get('features_and_models_seconds', big['train_seconds']):.0f} s; "
            f"{big['train_seconds']:.0f} s |"
        )
    on = results.get("dask_training")
    if on:
        plain, one, every = on["plain"], on["one_worker"], on["all_workers"]
        lines.append(
            f"| training, {on['n_interactions']:,} interactions: in process; on a local Dask "
            f"cluster of 1 worker; of {every['workers']} workers (eval AUC of each) | "
            f"{plain['train_seconds']:.0f} s; {one['train_seconds']:.0f} s; "
            f"{every['train_seconds']:.0f} s ({plain['eval_auc']:.3f}; {one['eval_auc']:.3f}; "
            f"{every['eval_auc']:.3f}) |"
        )
    return "\n".join(lines)


def _channel_rows(by_channel: dict[str, Any]) -> list[str]:
    """Where the learned policy and the Bayes-optimal one differ, channel by channel."""
    if not by_channel:
        return []
    names = " / ".join(name.replace("_", " ") for name in by_channel)

    def cells(key: str, i: int, fmt: str) -> str:
        return " / ".join(format(row[key][i], fmt) for row in by_channel.values())

    share, corr = "share_chosen_learned_bayes_oracle", "net_value_correlation_learned_bayes"
    return [
        f"| share of HCPs given a {names}: learned; Bayes-optimal; oracle | "
        f"{cells(share, 0, '.3f')}; {cells(share, 1, '.3f')}; {cells(share, 2, '.3f')} |",
        f"| correlation of estimated and true net value within each channel "
        f"({names}): learned; Bayes-optimal | {cells(corr, 0, '.2f')}; {cells(corr, 1, '.2f')} |",
    ]


READING = """Reading it. Simulator values are the *true* net value (incremental NRx minus
cost) of one action or none per HCP at the end of history, from the simulator's
ground truth; "top P(engaged)" always acts on the eligible action the preference
model rates most likely to engage; "random" always acts on a uniformly chosen
eligible action; "logging" is the history's own policy, holdout included.
Hillstrom values are inverse-propensity estimates (propensity 1/3) of visits per
customer on the held-out half of each split; a learned policy e-mails whenever
its predicted gain is above 0 (e-mails cost 0), or, under the budget, only the
30% with the largest predicted gain. The Bayes-optimal policy sees what the
learner sees but knows the simulator's model and priors; no learner can beat it
on this history in expectation. `simulator.uplift_correlation_with_truth`
and `simulator.p_engage_correlation_with_truth` in the JSON say how close the
model's estimates are to the truth; docs/learning.md discusses the shortfall.
The Dask row trains one world three times in the same run: in this process
(LightGBM threads on every core), then on local clusters of 1 and of one worker
per core (`nextbest train --dask local`, docs/learning.md section 8). On one
machine a cluster costs time (messages, the data set built again for each block
of trees); the fall from 1 worker to all of them is the part more machines
repeat."""


def _stamps(results: dict[str, Any]) -> str:
    """When each section was measured (a run may refresh only some sections)."""
    parts = [
        f"{name} {results[name].get('measured_at', results['measured_at'])}"
        for name in ("simulator", "hillstrom", "scale", "dask_training")
        if isinstance(results.get(name), dict)
    ]
    return ", ".join(parts) or results["measured_at"]


def _write_readme(results: dict[str, Any]) -> None:
    begin, end = "<!-- quality:begin -->", "<!-- quality:end -->"
    block = (
        f"{begin}\n## Quality (`make bench-quality`)\n\n"
        f"Measured on {results['machine']}: {_stamps(results)}; "
        "full figures in `bench/results/quality.json`.\n\n"
        f"{_table(results)}\n\n{READING}\n{end}"
    )
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    README.write_text(text)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    drop_environment_settings(say=print)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hcps", type=int, default=20_000)
    parser.add_argument("--periods", type=int, default=26)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hillstrom", type=Path, default=HILLSTROM)
    parser.add_argument("--hillstrom-seeds", type=int, default=5)
    parser.add_argument("--scale-hcps", type=int, default=0, help="e.g. 200000 (5.2M rows)")
    parser.add_argument("--scale-periods", type=int, default=25)
    parser.add_argument(
        "--dask-hcps",
        type=int,
        default=0,
        help="e.g. 40000 (1M rows): train that world plainly and on local Dask clusters",
    )
    parser.add_argument(
        "--bayes-samples",
        type=int,
        default=1000,
        help="trait samples per HCP for the Bayes-optimal policy (0: skip it)",
    )
    parser.add_argument("--skip-simulator", action="store_true")
    parser.add_argument("--skip-hillstrom", action="store_true")
    parser.add_argument(
        "--skip-causalml",
        action="store_true",
        help="Hillstrom without causalml's learners (a quicker check of ours)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    config = TrainConfig()
    now = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d %H:%M UTC")
    # A run that skips a section keeps that section's figures from the last run.
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    results: dict[str, Any] = {
        **previous,
        "measured_at": now,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "command": "make bench-quality",
    }
    if not args.skip_simulator:
        _say(f"simulator: {args.hcps} HCPs x {args.periods} periods")
        results["simulator"] = sim = simulator(
            args.hcps, args.periods, args.seed, config, bayes_samples=args.bayes_samples
        )
        sim["measured_at"] = now
        results.update(
            {
                k: sim[k]
                for k in (
                    "policy_value",
                    "oracle_value",
                    "random_value",
                    "logging_value",
                    "engagement_only_value",
                    "ratio_to_oracle",
                )
            }
        )
        _say(
            json.dumps({k: results[k] for k in ("policy_value", "oracle_value", "ratio_to_oracle")})
        )
    if args.skip_hillstrom:
        pass
    elif args.hillstrom.exists():
        _say(f"hillstrom: {args.hillstrom}")
        hill_config = config.model_copy(update={"eval_fraction": 0.0})
        results["hillstrom"] = hillstrom(
            args.hillstrom,
            list(range(args.hillstrom_seeds)),
            hill_config,
            with_causalml=not args.skip_causalml,
        )
        results["hillstrom"]["measured_at"] = now
    else:
        results["hillstrom"] = {"error": f"{args.hillstrom} not found"}
    # Training time: in process ("scale"), and in process beside Dask ("dask_training").
    for key, option, n_hcps, measure in (
        ("scale", "--scale-hcps", args.scale_hcps, scale),
        ("dask_training", "--dask-hcps", args.dask_hcps, dask_training),
    ):
        if not n_hcps:
            continue
        _say(f"{key}: {n_hcps} HCPs x {args.scale_periods} periods")
        results[key] = measure(n_hcps, args.scale_periods, config)
        results[key]["measured_at"] = now
        results[key]["command"] = (
            f"python bench/quality.py --skip-simulator --skip-hillstrom "
            f"{option} {n_hcps} --scale-periods {args.scale_periods}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=float) + "\n")
    if args.out == RESULTS:
        _write_readme(results)
    print(_table(results))
    from plots import draw  # bench/plots.py: the figure, beside the JSON

    draw(args.out)
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
