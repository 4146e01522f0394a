"""The gate's evidence spans every serving version; holdout answers get their true
probability of no action, in the gate and in retraining."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from nextbest import registry
from nextbest.loop import gate
from nextbest.loop.evidence import (
    greedy_actions,
    load_decisions,
    no_action_probability,
    serving_greedy_empty,
    version_loader,
)
from nextbest.loop.gate import GateConfig
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
    second = register(do_nothing(loop_world.honest), settings, alias="champion")
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


def test_holdout_answers_of_an_empty_greedy_policy_are_likelier(
    two_versions: TwoVersionStore,
) -> None:
    settings = two_versions.settings
    decisions = _decisions(settings)
    empty, unresolved = serving_greedy_empty(decisions, version_loader(settings))
    assert unresolved == 0
    holdout = decisions["holdout"].to_numpy(dtype=bool)
    by_second = (decisions["model_version"] == two_versions.second).to_numpy()
    # "Do nothing" never has a greedy action; only holdout rows are resolved at all.
    assert empty[holdout & by_second].all() and (holdout & by_second).any()
    assert not empty[~holdout].any()
    p = no_action_probability(decisions, empty)
    h, eps = 0.3, 0.3
    assert np.allclose(p[holdout & by_second], h + (1 - h) * (1 - eps))
    # Without re-scoring the holdout rate is the lower bound.
    lower = no_action_probability(decisions, None)
    assert np.allclose(lower[holdout], h)


def test_unloadable_serving_version_keeps_the_lower_bound(
    two_versions: TwoVersionStore,
) -> None:
    decisions = _decisions(two_versions.settings)
    empty, unresolved = serving_greedy_empty(decisions, lambda version: None)
    assert unresolved == int(decisions["holdout"].sum()) > 0
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
    assert exact.n_holdout_unresolved == 0
    assert bound.n_holdout_unresolved == bound.n_holdout > 0
    decisions = _decisions(settings)
    n_second_holdout = int(
        (decisions["holdout"] & (decisions["model_version"] == two_versions.second)).sum()
    )
    h, eps = 0.3, 0.3
    exact_holdout = exact.interactions.loc[exact.interactions["holdout"], "propensity"]
    bound_holdout = bound.interactions.loc[bound.interactions["holdout"], "propensity"]
    assert np.allclose(bound_holdout, h)
    assert int(np.isclose(exact_holdout, h + (1 - h) * (1 - eps)).sum()) >= n_second_holdout > 0
    # The same rows either way; only holdout propensities differ.
    direct = feedback_interactions(decisions, loop_world.dataset)
    assert len(direct.interactions) == len(exact.interactions)
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
