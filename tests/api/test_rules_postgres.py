"""The live-history rules and the batched log on the real PostgreSQL (production store)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from nextbest.api.app import create_app
from nextbest.storage.testing import POSTGRES_URL_ENV, temporary_postgres_database

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not os.environ.get(POSTGRES_URL_ENV),
        reason=f"{POSTGRES_URL_ENV} is not set: PostgreSQL tests skipped",
    ),
]


@pytest.fixture
def pg_client(api_settings, keys) -> Iterator[TestClient]:
    with temporary_postgres_database(os.environ[POSTGRES_URL_ENV]) as url:
        settings = api_settings.model_copy(update={"database_url": url})
        with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
            yield client


def test_caps_cooldowns_and_dismissals_on_postgres(pg_client: TestClient, keys) -> None:
    recommender = pg_client.app.state.runtime.recommender
    hcp = next(
        str(h)
        for h in recommender.hcp_ids[:200]
        if pg_client.post(
            "/v1/recommendations", json={"hcp_id": str(h), "channel": "email"}
        ).json()["items"]
    )
    when = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    event = {"event_id": f"pg-{hcp}", "event_type": "delivered", "hcp_id": hcp}
    pg_client.post(
        "/v1/feedback", json={**event, "channel": "email", "occurred_at": when}
    ).raise_for_status()
    body = pg_client.post(
        "/v1/recommendations", json={"hcp_id": hcp, "k": 20, "explain": True}
    ).json()
    assert all(i["channel"] != "email" for i in body["items"])
    cooled = {w for why in body["excluded"].values() for w in why if "cool-down" in w}
    # The rule, its line and when it lifts, read on the engine for an explanation.
    assert cooled and all("(channels.email.cooldown_days, rules.yaml line " in w for w in cooled)
    assert all(", lifts " in w for w in cooled), cooled
    # Feedback on a just-served (batched-log) recommendation resolves at once.
    served = next(i for i in body["items"]) if body["items"] else None
    if served is not None:
        answer = pg_client.post(
            "/v1/feedback",
            json={
                "event_id": f"pg-open-{hcp}",
                "event_type": "opened",
                "hcp_id": hcp,
                "recommendation_id": body["recommendation_id"],
                "action_id": served["action_id"],
            },
        )
        assert answer.json() == {"accepted": 1, "duplicates": 0, "rejected": [], "uncounted": []}
    plan = pg_client.get(f"/v1/reps/{keys.rep_name}/suggestions", headers=keys.rep).json()
    assert plan["suggestions"]


def test_a_nul_in_a_rep_decision_is_a_422_on_postgres(pg_client: TestClient, keys) -> None:
    """PostgreSQL refuses a NUL in a text parameter: the lookup of the pair's latest
    decision raised it, and the decision was answered 500."""
    plan = pg_client.get(f"/v1/reps/{keys.rep_name}/suggestions", headers=keys.rep).json()
    first = plan["suggestions"][0]
    decision = {
        "recommendation_id": first["recommendation_id"],
        "hcp_id": first["hcp_id"],
        "action_id": "A\x00",
        "decision": "accept",
    }
    sent = pg_client.post(f"/v1/reps/{keys.rep_name}/feedback", json=decision, headers=keys.rep)
    assert sent.status_code == 422, sent.text
    assert sent.json()["detail"][0]["loc"] == ["body", "action_id"]


def test_a_plan_for_a_rep_id_with_a_nul_is_refused_not_dropped_from_the_log(
    pg_client: TestClient, keys
) -> None:
    log = pg_client.app.state.runtime.reclog
    plan = pg_client.get("/v1/reps/x%00y/suggestions", params={"territory_id": keys.territory})
    log.flush()
    assert plan.status_code == 422, plan.text
    assert log.dropped == 0
