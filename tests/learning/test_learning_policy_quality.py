"""Model behaviour on a small simulated world whose ground truth is known."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nextbest.contract import Dataset, load_dataset
from nextbest.learning.reasons import explain
from nextbest.learning.scoring import PREFERENCE_X_VALUE, UPLIFT_MODEL, Scores
from nextbest.learning.train import DecisionRows, _subset, train
from nextbest.simulate import simulate_world
from nextbest.simulate.world import best_or_none

from .conftest import QUICK, LearnedWorld, scores_on_truth


def _scores(learned: LearnedWorld) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return scores_on_truth(learned.world, learned.result.model)


def test_uplift_ranking_beats_random_by_a_clear_margin(learned: LearnedWorld) -> None:
    world = learned.world
    uplift, _, net = _scores(learned)
    choice = best_or_none(net, world.eligible)
    rng = np.random.default_rng(0)
    random_choice = np.array([rng.choice(np.flatnonzero(e)) for e in world.eligible])
    learned_value = world.true_value(choice) / world.n_hcps
    random_value = world.true_value(random_choice) / world.n_hcps
    # Per HCP, in NRx: random eligible actions lose money; the learned policy must not.
    assert learned_value > random_value + 0.08
    assert learned_value > 0
    # Ranking: predicted and true uplift agree across eligible pairs.
    eligible = world.eligible
    assert np.corrcoef(uplift[eligible], world.uplift[eligible])[0, 1] > 0.3


def test_engaged_gain_is_pooled_by_hcp_kind_and_topic(learned: LearnedWorld) -> None:
    """Training gives the uplift model each categorical HCP column x the action's topic;
    region does not change what a touch is worth in the simulator, and its factors
    are shrunk to about one value (the differences between its cells are noise)."""
    model = learned.result.model
    uplift = model.uplift_model
    assert uplift is not None
    names = model.feature_names
    pairs = {names[column]: names[group] for column, group, _, _ in uplift.segment_scale_}
    assert pairs == dict.fromkeys(model.space.categorical_hcp_columns, "action__topic")
    tables = {names[column]: table for column, _, _, table in uplift.segment_scale_}
    assert np.ptp(tables["specialty"]) > 0.2
    assert np.ptp(tables["region"]) < 0.05 * np.ptp(tables["specialty"])


def test_an_unengaged_touch_is_worth_the_same_whichever_action_it_was(
    learned: LearnedWorld,
) -> None:
    """In the simulator an unengaged touch does nothing, so what the unengaged stage
    learns beyond noise is the HCP's: trees that split on the action fitted noise
    per action, which decided between an HCP's actions. Within each HCP the uplift
    of its eligible actions follows the true one (0.511 on this world when g_0 saw
    the action, 0.526 from the HCP's columns alone)."""
    world = learned.world
    model = learned.result.model
    assert model.uplift_model is not None
    n, a = world.n_hcps, world.n_actions
    X = model.rows(
        np.repeat(model.hcp_index.get_indexer(world.hcps["hcp_id"]), a),
        np.tile(model.action_index.get_indexer(world.catalog["action_id"]), n),
    )
    _, unengaged = model.uplift_model.gains(X)
    eligible = world.eligible
    unengaged = unengaged.reshape(n, a)
    spread = np.where(eligible, unengaged, -np.inf).max(axis=1) - np.where(
        eligible, unengaged, np.inf
    ).min(axis=1)
    assert np.ptp(unengaged[eligible]) > 0.01  # it does tell HCPs apart
    assert spread[eligible.any(axis=1)].max() == 0.0

    uplift, _, _ = _scores(learned)

    def centred(values: np.ndarray) -> np.ndarray:
        mean = np.where(eligible, values, 0.0).sum(axis=1) / eligible.sum(axis=1).clip(1)
        return (values - mean[:, None])[eligible]

    assert np.corrcoef(centred(uplift), centred(world.uplift))[0, 1] > 0.52


def test_learned_policy_beats_engagement_only_ranking(learned: LearnedWorld) -> None:
    world = learned.world
    _, p_engage, net = _scores(learned)
    choice = best_or_none(net, world.eligible)
    by_engagement = np.where(world.eligible, p_engage, -np.inf).argmax(axis=1)
    assert world.true_value(choice) > world.true_value(by_engagement)


def test_run_reports_evaluation_metrics_and_figures(learned: LearnedWorld) -> None:
    from nextbest.evaluation.plots import training_figures

    result = learned.result
    assert result.model.uplift_source == UPLIFT_MODEL
    metrics = result.metrics
    for key in ("eval_auc", "eval_log_loss", "eval_auc.email", "ope_ips_policy_value"):
        assert np.isfinite(metrics[key]), key
    assert 0.5 < metrics["eval_auc"] < 1.0
    low, high = metrics["ope_dr_ci_low"], metrics["ope_dr_ci_high"]
    assert low <= metrics["ope_dr_policy_value"] <= high
    assert any(k.startswith("eval_qini_auc.") for k in metrics)
    # Enough of the newest treated decisions were left out of every model to
    # calibrate the differences between HCPs on.
    assert result.params["uplift.calibration_rows"] >= 500
    assert not any("not calibrated" in note for note in result.notes)
    figures = training_figures(result)
    assert set(figures) == {
        "calibration_by_channel",
        "policy_value_by_estimator",
        "qini_by_channel",
    }


def test_every_item_gets_readable_reasons(learned: LearnedWorld) -> None:
    model = learned.result.model
    hcp_rows = np.repeat(np.arange(30), model.n_actions)
    action_rows = np.tile(np.arange(model.n_actions), 30)
    X = model.rows(hcp_rows, action_rows)
    scores = model.score_rows(X, action_rows)
    reasons = explain(model, X, action_rows, hcp_rows, scores)
    assert len(reasons) == len(X)
    assert all(1 <= len(r) <= 5 for r in reasons)
    assert all(r[0].startswith("expected ") and "versus no contact" in r[0] for r in reasons)
    flat = [s for r in reasons for s in r[1:]]
    assert flat, "no item got a reason beyond its expected value"
    # The item's own channel history shows up with real counts ("opened 3 of 7 e-mails").
    assert any(" of " in s and "so far" in s for s in flat)
    assert not any("nan" in s.lower() for s in flat)


def test_reasons_for_no_items_and_fast_contributions(learned: LearnedWorld) -> None:
    model = learned.result.model
    empty = np.zeros((0, len(model.space.feature_names)), dtype=np.float32)
    none = np.zeros(0, dtype=np.int64)
    assert explain(model, empty, none, none, Scores(np.zeros(0), np.zeros(0))) == []
    X = model.rows(np.zeros(5, dtype=np.int64), np.arange(5))
    contrib = model.uplift_model.contributions(X)  # type: ignore[union-attr]
    assert contrib.shape == (5, len(model.space.feature_names))
    assert np.isfinite(contrib).all()


def test_fallback_without_outcomes_says_so(learned: LearnedWorld) -> None:
    data = learned.dataset
    interactions = data.interactions.copy()
    interactions["outcome"] = np.nan
    blind = Dataset(data.hcps, data.catalog, interactions, source=None)
    # A channel value_per_engagement names but the catalog lacks is refused before any
    # work (it was ignored, with a note after the training).
    config = QUICK.model_copy(update={"value_per_engagement": {"fax": 2.0}})
    with pytest.raises(ValueError, match=r"value_per_engagement\.fax: no channel of the catalog"):
        train(blind, config=config, as_of=learned.world.decision_time)
    result = train(blind, config=QUICK, as_of=learned.world.decision_time)
    model = result.model
    assert model.uplift_source == PREFERENCE_X_VALUE
    assert model.uplift_model is None
    assert any("falls back to preference x value" in note for note in result.notes)
    X = model.rows(np.zeros(4, dtype=np.int64), np.arange(4))
    scores = model.score_rows(X, np.arange(4))
    np.testing.assert_allclose(scores.uplift, scores.p_engage)  # value 1.0 per engagement
    reasons = explain(model, X, np.arange(4), np.zeros(4, int), scores)
    assert all("no measured uplift yet" in r[0] for r in reasons)
    assert not any("; " in sentence for r in reasons for sentence in r)  # picks join with it


def test_observational_history_falls_back_and_mixed_history_compares_only_chance(
    learned: LearnedWorld,
) -> None:
    """Untouched decisions that are neither holdout nor logged with a propensity (a
    CRM's history: the reps chose whom to leave alone) cannot measure a touch."""
    data = learned.dataset
    crm = data.interactions.copy()
    crm["propensity"] = np.nan
    crm["holdout"] = False
    result = train(
        Dataset(data.hcps, data.catalog, crm, source=None),
        config=QUICK,
        as_of=learned.world.decision_time,
    )
    assert result.model.uplift_source == PREFERENCE_X_VALUE
    fallback = next(n for n in result.notes if "falls back to preference x value" in n)
    assert "neither a randomized holdout nor logged with a propensity" in fallback, fallback
    # Half the history logged as the simulator's policy logged it: the uplift model
    # is fitted, on the untouched decisions chance chose, and says what it left out.
    mixed = data.interactions.copy()
    unlogged = mixed["hcp_id"].isin(data.hcps["hcp_id"].iloc[::2])
    mixed.loc[unlogged, "propensity"] = np.nan
    mixed.loc[unlogged, "holdout"] = False
    result = train(
        Dataset(data.hcps, data.catalog, mixed, source=None),
        config=QUICK,
        as_of=learned.world.decision_time,
    )
    assert result.model.uplift_source == UPLIFT_MODEL
    left_out = [n for n in result.notes if "the uplift model leaves them out" in n]
    assert len(left_out) == 1, result.notes


def _followed_by(rows: DecisionRows, more: DecisionRows) -> DecisionRows:
    """``rows`` with ``more`` after them, as one slice."""
    return DecisionRows(
        **{
            name: np.concatenate([getattr(rows, name), getattr(more, name)])
            for name in DecisionRows.__dataclass_fields__
        }
    )


def test_qini_curves_compare_with_the_controls_the_uplift_model_fitted_on(
    learned: LearnedWorld,
) -> None:
    """Untouched decisions nobody randomized (a CRM's: reps left alone whom they
    chose) are no control for the curves, as they are none for training."""
    from nextbest.evaluation import offline

    model, rows = learned.result.model, learned.result.eval_rows
    assert rows is not None
    crm = _subset(rows, ~rows.treated)  # copies of the slice's untouched decisions
    crm.holdout[:] = False
    crm.propensity[:] = np.nan
    crm.outcome += 50.0  # whom the reps left alone wrote far more anyway
    both = _followed_by(rows, crm)
    plain = offline.evaluate_model(model, rows, seed=3)["metrics"]
    mixed = offline.evaluate_model(model, both, seed=3)["metrics"]
    curves = [k for k in plain if k.startswith(("eval_qini_auc.", "eval_auuc.", "eval_uplift_at"))]
    assert len(curves) >= 3, plain.keys()
    for key in curves:
        assert mixed[key] == pytest.approx(plain[key], rel=1e-9, abs=1e-12), key


def test_policy_value_intervals_count_hcps_not_decisions(learned: LearnedWorld) -> None:
    """Every decision logged twice over (same HCP, same outcome) is no new evidence:
    the intervals are cluster-robust by HCP, so they do not narrow."""
    from nextbest.evaluation import offline

    model, rows = learned.result.model, learned.result.eval_rows
    assert rows is not None
    twice = _subset(rows, np.repeat(np.arange(len(rows.X)), 2))
    once = offline.evaluate_model(model, rows, seed=3)["metrics"]
    doubled = offline.evaluate_model(model, twice, seed=3)["metrics"]
    for name in ("ips", "snips", "dr"):
        for part in ("policy_value", "ci_low", "ci_high"):
            key = f"ope_{name}_{part}"
            assert doubled[key] == pytest.approx(once[key], rel=1e-9, abs=1e-12), key
        assert once[f"ope_{name}_ci_low"] < once[f"ope_{name}_ci_high"]


def test_policy_action_rate_is_of_the_decisions_the_values_are_of(
    learned: LearnedWorld,
) -> None:
    """Decisions without a logged propensity (a CRM's) get no policy value, so they
    do not enter the share of decisions the valued policy acts on either."""
    from nextbest.evaluation import offline

    model, rows = learned.result.model, learned.result.eval_rows
    assert rows is not None
    _, net, _ = offline._candidate_scores(model, rows)
    acts = (np.where(offline.eligible_at(model, rows), net, -np.inf).max(axis=1) > 0) & (
        np.isfinite(rows.outcome)
    )
    crm = _subset(rows, ~acts)  # copies of decisions the policy leaves alone
    crm.propensity[:] = np.nan
    crm.holdout[:] = False
    both = _followed_by(rows, crm)
    assert np.isfinite(both.outcome).sum() <= offline.MAX_POLICY_DECISIONS  # no sampling
    plain = offline.evaluate_model(model, rows, seed=3)["metrics"]
    mixed = offline.evaluate_model(model, both, seed=3)["metrics"]
    assert 0 < plain["policy_action_rate"] < 1
    assert mixed["policy_action_rate"] == pytest.approx(plain["policy_action_rate"], abs=1e-12)
    assert mixed["ope_dr_policy_value"] == pytest.approx(plain["ope_dr_policy_value"], rel=1e-9)


def test_policy_value_keeps_its_decisions_when_a_history_without_propensities_is_sampled(
    learned: LearnedWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retrain's slice: the logged decisions among many more of a history without
    propensities. Past the sampling cap, one sample of all decisions left the policy
    value only the logged decisions that sample happened to draw (a few hundred of
    thousands); the policy value now samples the decisions it can use."""
    from nextbest.evaluation import offline

    model, rows = learned.result.model, learned.result.eval_rows
    assert rows is not None
    usable = np.isfinite(rows.outcome) & np.isfinite(rows.propensity) & (rows.propensity > 0)
    crm = _subset(rows, np.tile(np.flatnonzero(np.isfinite(rows.outcome)), 3))
    crm.propensity[:] = np.nan
    crm.holdout[:] = False
    both = _followed_by(rows, crm)
    monkeypatch.setattr(offline, "MAX_POLICY_DECISIONS", int(usable.sum()))
    plain = offline.evaluate_model(model, rows, seed=3)["metrics"]
    mixed = offline.evaluate_model(model, both, seed=3)["metrics"]
    for name in ("ips", "snips", "dr"):
        for part in ("policy_value", "ci_low", "ci_high"):
            key = f"ope_{name}_{part}"
            assert mixed[key] == pytest.approx(plain[key], rel=1e-9, abs=1e-12), key
    assert mixed["policy_action_rate"] == pytest.approx(plain["policy_action_rate"], abs=1e-12)
    assert any(k.startswith("eval_qini_auc.") for k in mixed), mixed.keys()


def test_policy_value_without_untouched_decisions_of_known_propensity(
    learned: LearnedWorld,
) -> None:
    """A history whose propensities are logged on touches only (the holdout flagged,
    with none): the uplift model fits on the holdout, and the evaluation stopped the
    run after every model was fitted, the "never act" SNIPS value being undefined
    (no decision of known propensity did nothing). It is left out; the rest stays."""
    from nextbest.evaluation import offline

    model, rows = learned.result.model, learned.result.eval_rows
    assert rows is not None
    touches_only = _subset(rows, np.arange(len(rows.X)))
    touches_only.propensity[~touches_only.treated] = np.nan
    assert touches_only.controls.any()  # the holdout: controls all the same
    metrics = offline.evaluate_model(model, touches_only, seed=3)["metrics"]
    assert "ope_snips_no_action_value" not in metrics
    for name in ("ips", "dr"):
        assert np.isfinite(metrics[f"ope_{name}_policy_value"]), name
    assert np.isfinite(metrics["logging_policy_value"])
    assert "ope_snips_no_action_value" in offline.evaluate_model(model, rows, seed=3)["metrics"]


def test_a_run_says_when_too_few_decisions_calibrate_heterogeneity(tmp_path: Path) -> None:
    """400 HCPs x 8 weeks: a stratum too small to hold rows out of boosting fits on
    its newest rows too, so no decision is left to calibrate on, and the run says so."""
    world = simulate_world(n_hcps=400, periods=8, seed=5)
    world.write(tmp_path, fmt="parquet")
    result = train(load_dataset(tmp_path), config=QUICK, as_of=world.decision_time)
    assert result.model.uplift_source == UPLIFT_MODEL
    assert result.params["uplift.calibration_rows"] < 500
    assert result.params["uplift.heterogeneity"] == 1.0
    note = next(n for n in result.notes if "differences between HCPs are not calibrated" in n)
    assert "(need 500); each HCP keeps the uplift the model learned" in note


def test_segment_evidence_is_logged_with_intervals(learned: LearnedWorld) -> None:
    table = learned.result.model.metadata["segment_uplift"]
    assert table
    for key, (effect, low, high) in table.items():
        _segment, channel = key.split("|")
        assert channel in learned.result.model.space.channels
        assert low <= effect <= high


def test_training_before_any_history_is_refused(learned: LearnedWorld) -> None:
    with pytest.raises(ValueError, match="no interactions before as_of 2026-06-01 00:00"):
        train(learned.dataset, config=QUICK, as_of=pd.Timestamp("2026-06-01"))


def test_training_without_any_engagement_names_the_column(learned: LearnedWorld) -> None:
    from dataclasses import replace

    never = learned.dataset.interactions.assign(engaged=np.int8(0))
    with pytest.raises(ValueError, match=r"every decision with an action .* has engaged = 0"):
        train(replace(learned.dataset, interactions=never), config=QUICK)


def test_candidate_rows_rebuild_the_logged_rows(learned: LearnedWorld) -> None:
    from nextbest.evaluation.offline import candidate_rows, eligible_at

    result = learned.result
    rows, model = result.eval_rows, result.model
    assert rows is not None
    X = candidate_rows(model, rows).reshape(len(rows.X), model.n_actions, -1)
    treated = np.flatnonzero(rows.treated)[:200]
    logged = X[treated, rows.action_rows[treated]]
    np.testing.assert_array_equal(np.isnan(logged), np.isnan(rows.X[treated]))
    np.testing.assert_allclose(np.nan_to_num(logged), np.nan_to_num(rows.X[treated]))
    # What the logging policy chose was eligible when it chose it.
    eligible = eligible_at(model, rows)
    assert eligible[treated, rows.action_rows[treated]].all()


def test_evaluation_scores_in_blocks_as_it_would_at_once(
    learned: LearnedWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The policy figures do not depend on how many pairs are scored at a time (a
    large catalog scores its candidates in blocks to bound memory)."""
    from nextbest.evaluation import offline

    result = learned.result
    rows, model = result.eval_rows, result.model
    assert rows is not None

    def evaluated(pairs: int) -> tuple[dict[str, float], int]:
        monkeypatch.setattr(offline, "PAIRS_PER_BLOCK", pairs)
        tracemalloc.start()
        try:
            metrics = offline.evaluate_model(model, rows, seed=3)["metrics"]
            return metrics, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    whole, peak_whole = evaluated(10**9)
    blocks, peak_blocks = evaluated(7 * model.n_actions + 5)  # uneven blocks of 7 decisions
    assert whole.keys() == blocks.keys() and "ope_dr_policy_value" in whole
    for name, value in whole.items():
        assert blocks[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    # The candidate rows (decisions x actions x features) were most of the memory.
    assert peak_blocks < 0.5 * peak_whole, (peak_blocks, peak_whole)


def test_as_of_outside_the_data_is_refused_or_noted(learned: LearnedWorld) -> None:
    data = learned.dataset
    first = data.interactions["timestamp"].min()
    with pytest.raises(ValueError, match=r"no interactions before as_of .*: the data run from"):
        train(data, config=QUICK, as_of=first - pd.Timedelta(days=1))
    newest = data.interactions["timestamp"].max()
    late = train(data, config=QUICK, as_of=newest + pd.Timedelta(days=400))
    assert any("400 days after the newest interaction" in note for note in late.notes)


def test_a_run_says_when_its_evaluation_is_weak_or_lacks_a_policy_value(
    learned: LearnedWorld,
) -> None:
    from nextbest.learning.train import _evaluation_notes

    rows = learned.result.eval_rows
    assert rows is not None
    good = {"eval_auc": 0.71, "ope_dr_policy_value": 0.2}
    assert _evaluation_notes(good, rows, has_uplift=True) == []
    weak = _evaluation_notes({"eval_auc": 0.511}, rows, has_uplift=True)
    assert "barely better than chance (AUC 0.511)" in weak[0]
    assert "no policy value (IPS, SNIPS, DR) for this run" in weak[1]
    # Preference x value runs have no policy value to miss.
    assert len(_evaluation_notes({"eval_auc": 0.511}, rows, has_uplift=False)) == 1
