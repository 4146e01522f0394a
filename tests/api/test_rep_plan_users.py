"""What a CRM integration meets around the rep call plan: the holdout kept from rep
keys on every route, decisions on a plan fetched for a later day, and a territory
whose HCPs the served model does not know yet."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from nextbest import registry
from nextbest.api.app import create_app
from nextbest.settings import Settings
from nextbest.storage.tables import Recommendation


@pytest.fixture
def holding_out(api_settings: Settings, keys) -> Iterator[TestClient]:
    settings = api_settings.model_copy(update={"holdout_rate": 0.5})
    with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
        yield client


def test_a_rep_key_is_not_told_an_hcp_is_held_out(holding_out: TestClient, keys) -> None:
    """A rep plan skips held-out HCPs without a word to a rep key; the same key asking
    POST /v1/recommendations about such an HCP was answered ``holdout: true``, so a
    rep could find the randomized control of the territory one HCP at a time. A rep
    key gets an empty answer (nothing to do) and the log keeps it as the holdout it
    is; channel and admin keys are still told."""
    client = holding_out
    recommender = client.app.state.runtime.recommender
    ours = recommender.hcp_ids[recommender.territories[keys.territory]].tolist()
    held = None
    for hcp in ours:
        said = client.post("/v1/recommendations", json={"hcp_id": hcp}, headers=keys.channel)
        assert said.status_code == 200, said.text
        if said.json()["holdout"]:
            held = hcp
            break
    assert held is not None, "a holdout rate of 0.5 holds some HCP of the territory out"
    for explain in (False, True):
        answer = client.post(
            "/v1/recommendations", json={"hcp_id": held, "explain": explain}, headers=keys.rep
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["holdout"] is False, body
        assert body["items"] == []
        runtime = client.app.state.runtime
        assert runtime.reclog.flush()
        with runtime.sessions() as session:
            row = session.get(Recommendation, body["recommendation_id"])
            assert row is not None and row.holdout is True and row.requester == keys.rep_name
    admin = client.post("/v1/recommendations", json={"hcp_id": held}).json()
    assert admin["holdout"] is True


def test_a_territory_of_the_file_the_model_does_not_know_says_so(
    own_registry: Settings, keys, tmp_path: Path
) -> None:
    """A territory the alignment file holds, with HCPs the served model was not
    trained with, was a 404 saying it "is not known to the territory alignment
    file" and suggesting other territories: it names the file's HCPs and the
    model version instead."""
    model, version = registry.load_alias(own_registry)
    alignment = model.hcps[["hcp_id", "territory_id"]].astype(str)
    later = pd.DataFrame({"hcp_id": ["H-NEW-1", "H-NEW-2"], "territory_id": ["T-LATER"] * 2})
    path = tmp_path / "territories.csv"
    pd.concat([alignment, later]).to_csv(path, index=False)
    settings = own_registry.model_copy(update={"territories_file": path})
    with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
        served = client.app.state.runtime.recommender.version
        plan = client.get("/v1/reps/ops-view/suggestions", params={"territory_id": "T-LATER"})
        assert plan.status_code == 404, plan.text
        assert plan.json()["detail"] == (
            f"territory_id 'T-LATER' is not known to the served model (version {served}): "
            "the territory alignment file lists it with 2 HCPs, none of which the served "
            "model knows (served once a model trained with them is); a rep key for it is "
            "refused until then: `nextbest keys list --check-territories` lists such keys"
        )
        # A territory the file does not hold is still said to be the file's unknown.
        plan = client.get("/v1/reps/ops-view/suggestions", params={"territory_id": "T-NOPE"})
        assert plan.status_code == 404
        assert "is not known to the territory alignment file" in plan.json()["detail"]
    assert version == served


def test_a_snooze_on_a_plan_fetched_ahead_holds_from_the_plans_day(
    api_store: Settings, keys
) -> None:
    """A rep planning a day two weeks ahead snoozed an item of that day's plan: the
    snooze counted 7 days from when it was sent, had ended before that day, and the
    item was on the plan for it again. A decision on an answer decided for a later
    day holds from that day, for its snooze_days."""
    settings = api_store.model_copy(update={"holdout_rate": 0.0, "epsilon": 0.0})
    with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
        recommender = client.app.state.runtime.recommender
        days = recommender.rules.snooze_window
        assert days is not None and days < 14
        ahead = (recommender.clock().date() + timedelta(days=14)).isoformat()
        url = f"/v1/reps/{keys.rep_name}/suggestions"
        plan = client.get(url, params={"date": ahead, "capacity": 3}, headers=keys.rep)
        assert plan.status_code == 200, plan.text
        first = plan.json()["suggestions"][0]
        pair = (first["hcp_id"], first["action_id"])
        snoozed = client.post(
            f"/v1/reps/{keys.rep_name}/feedback",
            json={
                "recommendation_id": first["recommendation_id"],
                "hcp_id": pair[0],
                "action_id": pair[1],
                "decision": "snooze",
            },
            headers=keys.rep,
        )
        assert snoozed.status_code == 200, snoozed.text

        def excluded(day: date) -> list[str]:
            answer = client.post(
                "/v1/recommendations",
                json={"hcp_id": pair[0], "date": day.isoformat(), "explain": True, "k": 50},
                headers=keys.rep,
            )
            assert answer.status_code == 200, answer.text
            return answer.json()["excluded"].get(pair[1], [])

        capacity = recommender.rules.rep_max_capacity
        again = client.get(url, params={"date": ahead, "capacity": capacity}, headers=keys.rep)
        assert pair not in {(s["hcp_id"], s["action_id"]) for s in again.json()["suggestions"]}
        day = date.fromisoformat(ahead)
        said = " ".join(excluded(day))
        assert "snoozed in the last" in said, said
        assert f"lifts {day + timedelta(days=days):%Y-%m-%d}" in said, said
        assert any("snoozed" in w for w in excluded(day + timedelta(days=days - 1)))
        assert not any("snoozed" in w for w in excluded(day + timedelta(days=days)))
