"""A small simulated world with its ground truth, and a model trained on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from nextbest.contract import Dataset, load_dataset
from nextbest.learning.config import EngagementParams, TrainConfig, UpliftParams
from nextbest.learning.scoring import ScoringModel
from nextbest.learning.train import TrainResult, train
from nextbest.simulate import SimulatedWorld, simulate_world

# Small models: these tests check behaviour, the benchmark checks quality at scale.
QUICK = TrainConfig(
    engagement=EngagementParams(n_estimators=60, num_leaves=15),
    uplift=UpliftParams(n_estimators=150, learning_rate=0.06),
)


@dataclass(frozen=True)
class LearnedWorld:
    world: SimulatedWorld
    dataset: Dataset
    result: TrainResult


@pytest.fixture(scope="session")
def learned(tmp_path_factory: pytest.TempPathFactory) -> LearnedWorld:
    """1,500 HCPs x 16 weeks (24,000 decisions), trained up to the end of history."""
    world = simulate_world(n_hcps=1500, periods=16, seed=5)
    out: Path = tmp_path_factory.mktemp("learned_world")
    world.write(out, fmt="parquet")
    dataset = load_dataset(out)
    return LearnedWorld(world, dataset, train(dataset, config=QUICK, as_of=world.decision_time))


def scores_on_truth(
    world: SimulatedWorld, model: ScoringModel
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The model's uplift, P(engaged) and net value of every (HCP, action) of ``world``,
    each of shape ``(n_hcps, n_actions)`` in the world's order."""
    n, a = world.n_hcps, world.n_actions
    hcp_rows = np.repeat(model.hcp_index.get_indexer(world.hcps["hcp_id"]), a)
    action_rows = np.tile(model.action_index.get_indexer(world.catalog["action_id"]), n)
    scores = model.score(hcp_rows, action_rows)
    net = model.net_value(scores.uplift, action_rows).reshape(n, a)
    return scores.uplift.reshape(n, a), scores.p_engage.reshape(n, a), net
