"""bench/loop.py with the history moved (NEXTBEST_FRESH_HISTORY): each pass waits for
the server's history of its day, the touches are stored as contacts, and a version's
truth is that of its policy with the history it is served with."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from nextbest.contract import load_dataset
from nextbest.learning.config import EngagementParams, TrainConfig, UpliftParams
from nextbest.learning.scoring import ScoringModel
from nextbest.learning.train import train
from nextbest.loop.evidence import action_codes, greedy_actions
from nextbest.settings import Settings
from nextbest.simulate import SimulatedWorld, simulate_world
from nextbest.storage.db import migrate, store_session
from nextbest.storage.repository import FeedbackRecord, record_feedback

from .fakes import DayClock, FakeServer
from .scripts import load_bench

loop = load_bench("loop")

PERIODS = 8
FAST = TrainConfig(
    engagement=EngagementParams(n_estimators=30, num_leaves=15),
    uplift=UpliftParams(n_estimators=40, learning_rate=0.1),
)


@pytest.fixture(scope="module")
def world() -> SimulatedWorld:
    return simulate_world(n_hcps=300, periods=PERIODS, seed=3)


@pytest.fixture(scope="module")
def model(world: SimulatedWorld, tmp_path_factory: pytest.TempPathFactory) -> ScoringModel:
    out = tmp_path_factory.mktemp("loop_world")
    world.write(out, fmt="parquet")
    return train(load_dataset(out), config=FAST).model


def test_each_pass_waits_for_the_history_of_its_day_and_stores_its_touches(
    world: SimulatedWorld,
) -> None:
    clock = DayClock()
    server = FakeServer(world, clock)
    timeline = loop.Timeline(world, PERIODS)
    history_from = pd.Timestamp(world.decision_time) - pd.Timedelta(days=1)
    with httpx.Client(base_url="http://bench", transport=httpx.MockTransport(server.handle)) as c:
        served = loop.serve_round(
            c,
            timeline,
            clock,
            np.random.default_rng(0),
            1,
            decisions_per_hcp=2,
            history_from=history_from,
        )
    # Each pass's requests come once /healthz said its day, not before.
    batches = [h for path, h in server.asked if path == "/v1/recommendations/batch"]
    per_pass = -(-world.n_hcps // loop.SERVE_BATCH)
    days = [loop.pass_time(world, w).tz_localize("UTC").normalize().isoformat() for w in (0, 1)]
    assert batches == [days[0]] * per_pass + [days[1]] * per_pass
    assert server.readings == 2 * (server.lag + 1)
    assert served["history_wait_s"] >= 0
    # Every touch the world delivered is a contact the store is told of.
    action = str(world.catalog["action_id"].iat[0])
    reached = world.eligible[:, 0]
    delivered = [e for e in server.events if e["event_type"] == "delivered"]
    assert len(delivered) == 2 * int(reached.sum()) > 0
    assert {e["action_id"] for e in delivered} == {action}
    assert sum(e["event_type"] == "outcome" for e in server.events) == 2 * world.n_hcps

    # Without a history to wait for (frozen, or a model that cannot move): no /healthz.
    server = FakeServer(world, clock)
    with httpx.Client(base_url="http://bench", transport=httpx.MockTransport(server.handle)) as c:
        loop.serve_round(c, timeline, clock, np.random.default_rng(0), 2)
    assert server.readings == 0


def test_a_server_whose_history_does_not_move_stops_the_bench(world: SimulatedWorld) -> None:
    clock = DayClock()
    clock.set(loop.pass_time(world, 0))
    server = FakeServer(world, clock, lag=10**9)
    server.history = "2026-07-20T00:00:00+00:00"
    with (
        httpx.Client(base_url="http://bench", transport=httpx.MockTransport(server.handle)) as c,
        pytest.raises(RuntimeError, match=r"history is as of 2026-07-20T00:00:00\+00:00 .*"),
    ):
        loop.wait_for_history(c, clock.day(), timeout_s=0.2)


def test_truth_is_of_the_policy_with_the_history_it_is_served_with(
    world: SimulatedWorld, model: ScoringModel, tmp_path: Path
) -> None:
    settings = Settings(models_dir=tmp_path / "models", database_url=f"sqlite:///{tmp_path}/s.db")
    times = [loop.pass_time(world, week) for week in (0, 1, 2)]
    first = loop.greedy_choice(world, model, times[0])
    # Every HCP given its first choice in week 0, on its channel: stored as contacts.
    catalog = world.catalog.set_index("action_id")
    events = [
        FeedbackRecord(
            f"c{i}",
            "delivered",
            times[0].tz_localize("UTC").to_pydatetime(),
            str(h),
            channel=str(catalog.at[world.catalog["action_id"].iat[a], "channel"]),
        )
        for i, (h, a) in enumerate(zip(world.hcps["hcp_id"], first, strict=True))
        if a >= 0
    ]
    migrate(settings.resolved_database_url)
    with store_session(settings.resolved_database_url) as session:
        record_feedback(session, events=events)
        session.commit()

    assert loop.store_contacts(settings, [model], times[2], fresh=False) is None
    contacts = loop.store_contacts(settings, [model], times[2], fresh=True)
    assert contacts is not None and len(contacts) == len(events)
    before = loop.store_contacts(settings, [model], times[0] - pd.Timedelta(days=1), fresh=True)
    assert before is not None and before.empty  # to the end of the day before

    choices = loop.greedy_choices(world, model, times, contacts)
    index = pd.Index(world.catalog["action_id"])
    for at, choice in zip(times, choices, strict=True):
        day = at.tz_localize("UTC").normalize()
        decisions = pd.DataFrame(
            {"hcp_id": world.hcps["hcp_id"], "timestamp": at, "purpose": "promotional"}
        )
        moved = model.advanced(day, contacts) if day > model.as_of.tz_localize("UTC") else model
        expected = action_codes(greedy_actions(moved, decisions), index)
        assert choice.tolist() == expected.tolist()
        # Frozen (no contacts): the snapshot's, as before.
        snapshot = action_codes(greedy_actions(model, decisions), index)
        assert loop.greedy_choice(world, model, at).tolist() == snapshot.tolist()
    # The week-0 touches move the later weeks' choices.
    assert (choices[1] != first).mean() > 0.1
