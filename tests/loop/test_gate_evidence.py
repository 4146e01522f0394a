"""The gate's evidence spans every serving version; holdout answers get their true
probability of no action, in the gate and in retraining: the one logged when they
were served, or, for answers logged before it was (schema revision 0004), the one
re-scoring with the serving version finds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from nextbest import registry
from nextbest.learning.scoring import ScoringModel
from nextbest.loop import gate
from nextbest.loop.evidence import (
    greedy_actions,
    load_decisions,
    needs_rescoring,
    no_action_probability,
    serving_greedy_empty,
    version_loader,
)
from nextbest.loop.gate import GateConfig, bandit_from_decisions
from nextbest.loop.retrain import feedback_interactions, read_feedback_rows
from nextbest.settings import Settings
from nextbest.storage.db import make_engine, make_session_factory

from .conftest import LoopWorld, always_visit, do_nothing, register, serve_rounds

pytestmark = pytest.mark.xdist_group("loop")


@dataclass(frozen=True)
class TwoVersionStore:
    settings: Settings
    first: str  # the honest model, served in round 1
    second: str  # "do nothing", served in round 2: every greedy list is empty
    n_first: int
    n_second: int


@pytest.fixture(scope="module")
def two_versions(
    loop_world: LoopWorld, tmp_path_factory: pytest.TempPathFactory
) -> TwoVersionStore:
    settings = Settings(
        models_dir=tmp_path_factory.mktemp("two_versions"), seed=2, epsilon=0.3, holdout_rate=0.3
    )
    first = register(loop_world.honest, settings, alias="champion")
    n_first = serve_rounds(settings, loop_world.world, rounds=1, seed=3)
    # Made champion as the served version moves, by promote (training gives it to a
    # model's first version only).
    second = register(do_nothing(loop_world.honest), settings, alias="challenger")
    assert gate.promote(settings, config=GateConfig(), force=True, reason="round 2").promoted
    n_second = serve_rounds(settings, loop_world.world, rounds=1, seed=4)
    return TwoVersionStore(settings, first, second, n_first, n_second)


def _decisions(settings: Settings) -> pd.DataFrame:
    engine = make_engine(settings.resolved_database_url)
    try:
        with make_session_factory(engine)() as session:
            return load_decisions(session)
    finally:
        engine.dispose()


def test_gate_counts_the_decisions_of_every_serving_version(
    loop_world: LoopWorld, two_versions: TwoVersionStore
) -> None:
    settings = two_versions.settings
    register(always_visit(loop_world.honest), settings, alias="challenger")
    evaluation = gate.evaluate(settings, config=GateConfig(evaluation_share=0.0), log=False)
    assert evaluation.champion_version == two_versions.second
    assert evaluation.served_by == {
        two_versions.first: two_versions.n_first,
        two_versions.second: two_versions.n_second,
    }
    assert evaluation.decision.n_decisions == two_versions.n_first + two_versions.n_second
    assert evaluation.unresolved_holdout == 0
    # "Do nothing" (the champion) against "always visit": the champion is far better.
    assert not evaluation.decision.passed


def _logged_before_0004(decisions: pd.DataFrame) -> pd.DataFrame:
    """The same decisions as if logged before the probability of no action was."""
    return decisions.assign(p_no_action=np.nan)


def test_holdout_answers_of_an_empty_greedy_policy_are_likelier(
    two_versions: TwoVersionStore,
) -> None:
    settings = two_versions.settings
    logged = _decisions(settings)
    holdout = logged["holdout"].to_numpy(dtype=bool)
    by_second = (logged["model_version"] == two_versions.second).to_numpy()
    h, eps = 0.3, 0.3
    # Served without live rules, so what was logged is what re-scoring finds.
    no_action = logged["action_id"].isna().to_numpy()
    assert logged["p_no_action"].notna().all()
    assert np.allclose(logged.loc[holdout & by_second, "p_no_action"], h + (1 - h) * (1 - eps))

    decisions = _logged_before_0004(logged)
    empty, unresolved = serving_greedy_empty(decisions, version_loader(settings))
    assert unresolved == 0
    # "Do nothing" never has a greedy action; only holdout rows are resolved at all.
    assert empty[holdout & by_second].all() and (holdout & by_second).any()
    assert not empty[~holdout].any()
    p = no_action_probability(decisions, empty)
    assert np.allclose(p[holdout & by_second], h + (1 - h) * (1 - eps))
    assert np.allclose(p[no_action], logged.loc[no_action, "p_no_action"])
    # Without re-scoring the holdout rate is the lower bound.
    lower = no_action_probability(decisions, None)
    assert np.allclose(lower[holdout], h)
    # Logged, neither re-scoring nor its absence changes anything.
    assert np.allclose(no_action_probability(logged, None)[no_action], p[no_action])


def test_unloadable_serving_version_keeps_the_lower_bound(
    two_versions: TwoVersionStore,
) -> None:
    decisions = _logged_before_0004(_decisions(two_versions.settings))
    empty, unresolved = serving_greedy_empty(decisions, lambda version: None)
    assert unresolved == int(decisions["holdout"].sum()) > 0
    assert not empty.any()


def test_logged_holdout_answers_need_no_serving_version(
    two_versions: TwoVersionStore,
) -> None:
    decisions = _decisions(two_versions.settings)
    asked: list[str] = []

    def load(version: str) -> ScoringModel | None:
        asked.append(version)
        return None

    empty, unresolved = serving_greedy_empty(decisions, load)
    assert (asked, unresolved) == ([], 0)
    assert not empty.any()


def test_retraining_uses_the_true_no_action_probability(
    loop_world: LoopWorld, two_versions: TwoVersionStore
) -> None:
    settings = two_versions.settings
    engine = make_engine(settings.resolved_database_url)
    try:
        with make_session_factory(engine)() as session:
            exact = read_feedback_rows(
                session,
                loop_world.dataset,
                since=None,
                load_model=version_loader(settings),
            )
            bound = read_feedback_rows(session, loop_world.dataset, since=None)
    finally:
        engine.dispose()
    # Every answer was logged with its probability of no action: no version to load.
    assert exact.n_holdout_unresolved == bound.n_holdout_unresolved == 0
    decisions = _decisions(settings)
    n_second_holdout = int(
        (decisions["holdout"] & (decisions["model_version"] == two_versions.second)).sum()
    )
    h, eps = 0.3, 0.3
    exact_holdout = exact.interactions.loc[exact.interactions["holdout"], "propensity"]
    bound_holdout = bound.interactions.loc[bound.interactions["holdout"], "propensity"]
    assert np.allclose(bound_holdout, exact_holdout)
    assert int(np.isclose(exact_holdout, h + (1 - h) * (1 - eps)).sum()) >= n_second_holdout > 0
    # Logged before 0004: re-scored, or the holdout rate without a version to re-score with.
    old = _logged_before_0004(decisions)
    rescored = feedback_interactions(
        old, loop_world.dataset, greedy_empty=serving_greedy_empty(old, version_loader(settings))[0]
    )
    lower = feedback_interactions(old, loop_world.dataset)
    assert len(rescored.interactions) == len(lower.interactions) == len(exact.interactions)
    rescored_holdout = rescored.interactions.loc[rescored.interactions["holdout"], "propensity"]
    assert np.allclose(rescored_holdout, exact_holdout)
    assert np.allclose(lower.interactions.loc[lower.interactions["holdout"], "propensity"], h)
    assert registry.alias_version(settings, "champion") == two_versions.second


def test_greedy_actions_reads_any_slice_and_replays_days_before_the_cutoff(
    loop_world: LoopWorld,
) -> None:
    # The report passes the decisions of each model version, a slice of the whole
    # log whose index labels are not positions; the gate replays decisions made
    # before the challenger's history ends (it was trained on later ones).
    model = loop_world.honest
    hcp_ids = model.hcps["hcp_id"].astype(str).tolist()[:40]
    as_of = pd.Timestamp(model.as_of)
    decisions = pd.DataFrame(
        {
            "hcp_id": hcp_ids * 2,
            "timestamp": [as_of - pd.Timedelta(days=30)] * 40 + [as_of] * 40,
            "purpose": "promotional",
            "channel_filter": None,
        },
        index=range(1000, 1080),
    )
    later = decisions.iloc[40:]
    expected = greedy_actions(model, later.reset_index(drop=True))
    assert list(greedy_actions(model, later)) == list(expected)
    assert any(a is not None for a in expected)
    earlier = greedy_actions(model, decisions.iloc[:40])
    assert any(a is not None for a in earlier)


def test_no_action_rows_take_their_logged_probability(loop_world: LoopWorld) -> None:
    """A holdout answer whose greedy list the live rules had emptied (an opt-out, a cap:
    re-scoring sees neither) is logged with h + (1 - h)(1 - epsilon): the gate and
    retraining divide by that, not by h. Rows logged before it was keep the rebuilt
    value, re-scored only for holdout answers."""
    model = loop_world.honest
    h, eps = 0.1, 0.3
    emptied = h + (1 - h) * (1 - eps)  # 0.73
    hcps = loop_world.dataset.hcps["hcp_id"].astype(str).tolist()[:5]
    action = str(model.catalog["action_id"].iat[0])
    at = pd.Timestamp(model.as_of)
    decisions = pd.DataFrame(
        {
            "recommendation_id": [f"r{i}" for i in range(5)],
            "hcp_id": hcps,
            "timestamp": at,
            "decided_for": at,
            "purpose": "promotional",
            "channel_filter": None,
            "model_version": ["8", "8", "7", "7", "8"],
            # held out, emptied by live rules | empty answer | two held out before 0004
            # (the first with an empty greedy list) | served
            "action_id": [None, None, None, None, action],
            "holdout": [True, False, True, True, False],
            "propensity": [h, np.nan, h, h, 0.6],
            "engaged": 0,
            "outcome": 1.0,
            "n_candidates": 10,
            "epsilon": eps,
            "holdout_rate": h,
            "p_no_action": [emptied, emptied, np.nan, np.nan, h],
        }
    )
    assert needs_rescoring(decisions).tolist() == [False, False, True, True, False]
    asked: list[str] = []

    def load(version: str) -> ScoringModel | None:
        asked.append(version)
        return None

    _, unresolved = serving_greedy_empty(decisions, load)
    assert (asked, unresolved) == (["7"], 2)  # only the rows logged without it

    # What re-scoring found for the rows logged without it; it has no say over the others.
    greedy_empty = np.array([False, False, True, False, False])
    expected = [emptied, emptied, emptied, h, 0.6]
    p = no_action_probability(decisions, greedy_empty)
    assert np.allclose(p[:4], expected[:4])
    assert np.allclose(no_action_probability(decisions, None)[:3], [emptied, emptied, h])

    bandit = bandit_from_decisions(decisions, champion=model, greedy_empty=greedy_empty)
    assert np.allclose(bandit.pscore, expected)
    rows = feedback_interactions(decisions, loop_world.dataset, greedy_empty=greedy_empty)
    propensity = rows.interactions.set_index("hcp_id")["propensity"]
    assert np.allclose(propensity.loc[hcps].to_numpy(dtype=float), expected)
