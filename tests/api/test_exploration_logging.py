"""Holdout and exploration through the API: seeded, and logged for off-policy evaluation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from nextbest.api.app import create_app
from nextbest.storage.tables import Recommendation, RecommendationItem


@pytest.fixture
def exploring(api_settings, keys) -> Iterator[TestClient]:
    settings = api_settings.model_copy(update={"epsilon": 0.5, "holdout_rate": 0.3, "seed": 4})
    with TestClient(create_app(settings), headers=dict(keys.admin)) as c:
        yield c


def _run(client: TestClient, n: int = 120) -> list[dict]:
    ids = [str(h) for h in client.app.state.runtime.recommender.hcp_ids[:n]]
    return [client.post("/v1/recommendations", json={"hcp_id": h, "k": 3}).json() for h in ids]


def test_holdout_and_exploration_are_logged_with_propensities(exploring: TestClient) -> None:
    bodies = _run(exploring)
    holdouts = [b for b in bodies if b["holdout"]]
    assert 0.15 < len(holdouts) / len(bodies) < 0.45
    assert all(b["items"] == [] for b in holdouts)
    explored = [i for b in bodies for i in b["items"] if i["explored"]]
    assert explored, "epsilon 0.5 explores"
    assert all(i["reasons"][0].startswith("explored") for i in explored)
    runtime = exploring.app.state.runtime
    assert runtime.reclog.flush()
    with runtime.sessions() as session:
        for b in bodies:
            row = session.get(Recommendation, b["recommendation_id"])
            assert row is not None
            assert row.holdout == b["holdout"]
            assert row.model_version == b["model_version"]
            assert row.epsilon == 0.5 and row.holdout_rate == 0.3
            items = (
                session.query(RecommendationItem)
                .filter_by(recommendation_id=b["recommendation_id"])
                .order_by(RecommendationItem.rank)
                .all()
            )
            assert [(i.action_id, i.propensity, i.explored) for i in items] == [
                (i["action_id"], pytest.approx(i["propensity"]), i["explored"]) for i in b["items"]
            ]
    for b in bodies:
        for item in b["items"][:1]:
            # First slot: (1 - holdout) x (greedy share + epsilon / n) stays within (0, 0.7].
            assert 0 < item["propensity"] <= 0.7 + 1e-9


def test_same_seed_same_answers(api_settings, keys) -> None:
    settings = api_settings.model_copy(update={"epsilon": 0.5, "holdout_rate": 0.3, "seed": 9})
    runs = []
    for _ in range(2):
        with TestClient(create_app(settings), headers=dict(keys.admin)) as c:
            runs.append([(b["holdout"], [i["action_id"] for i in b["items"]]) for b in _run(c, 40)])
    assert runs[0] == runs[1]
