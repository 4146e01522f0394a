"""Fixtures of the loop suite: a small world, models served in-process, outcomes drawn
from the simulator's ground truth and recorded as feedback in a real SQLite store.

Two stores, each with its own MLflow registry (promotions here must never move the
session-wide ``trained`` champion other suites rely on):

- ``honest_loop``: the champion is a model trained on the history.
- ``visit_loop``: the champion is a deliberately bad policy, "always the model's
  best rep visit" (true value about -0.3 NRx per HCP on this world), so a
  "do nothing" challenger (true value 0) is known to be better.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from nextbest import registry
from nextbest.api.process import free_port, start_server, stop_server
from nextbest.contract import Dataset, load_dataset
from nextbest.learning.config import EngagementParams, TrainConfig, UpliftParams
from nextbest.learning.levers import Lever, Levers
from nextbest.learning.scoring import ScoringModel
from nextbest.learning.train import TrainResult, train
from nextbest.loop.evidence import action_codes, greedy_actions
from nextbest.service.feedback import ingest_feedback, log_served
from nextbest.service.runtime import ServingRuntime
from nextbest.settings import Settings
from nextbest.simulate import SimulatedWorld, simulate_world
from nextbest.storage.repository import FeedbackRecord

# Same small models as the session-wide fixtures (tests/conftest.py FAST_CONFIG).
FAST_CONFIG = TrainConfig(
    engagement=EngagementParams(n_estimators=40, num_leaves=15),
    uplift=UpliftParams(n_estimators=60, learning_rate=0.08),
)
PERIODS = 12
N_HCPS = 600


@dataclass(frozen=True)
class LoopWorld:
    world: SimulatedWorld
    data_dir: Path
    dataset: Dataset
    honest: ScoringModel

    def true_value(self, model: ScoringModel) -> float:
        """True net value per HCP of ``model``'s greedy policy at the end of history."""
        decisions = pd.DataFrame(
            {
                "hcp_id": self.world.hcps["hcp_id"],
                # The moment the truth is of, not the clock's: a session running past
                # midnight must not move the policy's day off the truth's.
                "timestamp": self.world.decision_time,
                "purpose": "promotional",
                "channel_filter": None,
            }
        )
        codes = action_codes(
            greedy_actions(model, decisions), pd.Index(self.world.catalog["action_id"])
        )
        return self.world.true_value(codes) / self.world.n_hcps


def with_offsets(model: ScoringModel, offsets: dict[str, float]) -> ScoringModel:
    """A copy of ``model`` whose arbitration gets a score offset per channel (levers).

    Costs stay the catalog's, so the value of what it serves is measured honestly.
    """
    levers = Levers(channel={channel: Lever(offset=o) for channel, o in offsets.items()})
    return dataclasses.replace(model, levers=levers)


def always_visit(model: ScoringModel) -> ScoringModel:
    """Serves the model's best rep visit to everyone who may get one."""
    channels = set(model.catalog["channel"])
    return with_offsets(model, {c: 1000.0 if c == "rep_visit" else -1000.0 for c in channels})


def do_nothing(model: ScoringModel) -> ScoringModel:
    """Never finds anything worth its cost."""
    return with_offsets(model, dict.fromkeys(set(model.catalog["channel"]), -1000.0))


def register(model: ScoringModel, settings: Settings, *, alias: str | None = None) -> str:
    result = TrainResult(model=model, metrics={}, params={"variant": "test"})
    return registry.log_training_run(result, settings, alias=alias).version


def outcome_events(results: list[dict[str, Any]], value: float) -> list[dict[str, Any]]:
    """An ``outcome`` feedback event of ``value`` for each answer of a batch's ``results``."""
    return [
        {
            "event_id": f"o-{r['recommendation_id']}",
            "event_type": "outcome",
            "hcp_id": r["hcp_id"],
            "recommendation_id": r["recommendation_id"],
            "value": value,
        }
        for r in results
    ]


@contextmanager
def admin_server(
    settings: Settings, tmp_path: Path, **env: str
) -> Iterator[tuple[httpx.Client, subprocess.Popen[bytes]]]:
    """A real ``nextbest serve`` on ``settings``' models directory, with polling off and
    ``env`` (NEXTBEST_* settings) beside it: a client holding its admin key, and the
    server process (stopped at the end)."""
    admin_key = "loop-suite-admin-key"
    keys = tmp_path / "api_keys.yaml"
    digest = hashlib.sha256(admin_key.encode()).hexdigest()
    keys.write_text(f"keys:\n  - name: t\n    role: admin\n    key_sha256: {digest}\n")
    keys.chmod(0o600)
    port = free_port()
    proc = start_server(
        port=port,
        env={
            **os.environ,
            "NEXTBEST_MODELS_DIR": str(settings.models_dir),
            "NEXTBEST_API_KEYS_FILE": str(keys),
            "NEXTBEST_RELOAD_INTERVAL_S": "0",
            **env,
        },
        timeout_s=90,
    )
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {admin_key}"},
        # A bound against a hung server, not a speed target: a reload loads two models,
        # which took over 30 s on a machine loaded several times over.
        timeout=120,
    )
    try:
        yield client, proc
    finally:
        client.close()
        stop_server(proc)


def serve_rounds(settings: Settings, world: SimulatedWorld, *, rounds: int, seed: int) -> int:
    """Serve every HCP ``rounds`` times with the champion, send drawn outcomes as feedback.

    Returns the number of outcome events stored.
    """
    runtime = ServingRuntime.start(settings)
    rng = np.random.default_rng(seed)
    hcp_index = pd.Index(world.hcps["hcp_id"])
    action_index = pd.Index(world.catalog["action_id"])
    stored = 0
    try:
        for round_ in range(rounds):
            recommender = runtime.recommender
            recs = [recommender.recommend(hcp_id=h, k=1) for h in world.hcps["hcp_id"]]
            with runtime.sessions() as session:
                log_served(session, recommendations=recs, recommender=recommender, requester="t")
            hcps = hcp_index.get_indexer([r.hcp_id for r in recs])
            actions = np.array(
                [action_index.get_loc(r.items[0].action_id) if r.items else -1 for r in recs]
            )
            _, outcome = world.draw_response(hcps, actions, rng)
            events = [
                FeedbackRecord(
                    event_id=f"{round_}-{r.recommendation_id}",
                    event_type="outcome",
                    occurred_at=datetime.now(UTC),
                    hcp_id=r.hcp_id,
                    recommendation_id=r.recommendation_id,
                    value=float(value),
                )
                for r, value in zip(recs, outcome, strict=True)
            ]
            with runtime.sessions() as session:
                result = ingest_feedback(session, events=events, model=recommender.model)
            assert not result.rejected, result.rejected[:3]
            stored += len(result.accepted)
    finally:
        runtime.close()
    return stored


@pytest.fixture(scope="session")
def loop_world(tmp_path_factory: pytest.TempPathFactory) -> LoopWorld:
    # History ends today (UTC, the log's days), so the logged decisions continue it
    # without a time gap.
    start = datetime.now(UTC).date() - timedelta(days=7 * PERIODS)
    world = simulate_world(n_hcps=N_HCPS, periods=PERIODS, seed=5, start=start)
    out = tmp_path_factory.mktemp("loop_world")
    world.write(out, fmt="parquet")
    dataset = load_dataset(out)
    honest = train(dataset, config=FAST_CONFIG).model
    return LoopWorld(world=world, data_dir=out, dataset=dataset, honest=honest)


def _settings(tmp_path_factory: pytest.TempPathFactory, name: str) -> Settings:
    # High exploration and holdout: small logs must still cover the alternatives. Each
    # round stands for another week, run within seconds: a holdout drawn per request
    # (as bench/loop.py does), not the same HCPs held out in every round.
    return Settings(
        models_dir=tmp_path_factory.mktemp(name),
        seed=1,
        epsilon=0.3,
        holdout_rate=0.3,
        holdout_days=0,
    )


@dataclass(frozen=True)
class ServedStore:
    settings: Settings
    champion: str
    n_outcomes: int
    # Clock readings before and after the rounds were served: when its log was made.
    served_from: datetime
    served_until: datetime


@pytest.fixture(scope="session")
def honest_loop(loop_world: LoopWorld, tmp_path_factory: pytest.TempPathFactory) -> ServedStore:
    settings = _settings(tmp_path_factory, "honest_loop")
    version = register(loop_world.honest, settings)
    served_from = datetime.now(UTC)
    n = serve_rounds(settings, loop_world.world, rounds=2, seed=0)
    return ServedStore(settings, version, n, served_from, datetime.now(UTC))


@pytest.fixture(scope="session")
def visit_loop(loop_world: LoopWorld, tmp_path_factory: pytest.TempPathFactory) -> ServedStore:
    settings = _settings(tmp_path_factory, "visit_loop")
    version = register(always_visit(loop_world.honest), settings)
    served_from = datetime.now(UTC)
    n = serve_rounds(settings, loop_world.world, rounds=2, seed=1)
    return ServedStore(settings, version, n, served_from, datetime.now(UTC))


@pytest.fixture
def honest_copy(honest_loop: ServedStore, tmp_path: Path) -> Settings:
    """A copy of ``honest_loop``'s store (its registry and recommendation log), so what
    a test registers, tags or records stays in it."""
    models = tmp_path / "models"
    shutil.copytree(honest_loop.settings.resolved_models_dir, models)
    return honest_loop.settings.model_copy(update={"models_dir": models})
