"""An HCP erased with `nextbest erase` gets nothing from the running service, at once."""

from __future__ import annotations

from fastapi.testclient import TestClient

from nextbest.service.erasure import erase
from nextbest.settings import Settings


def _ask(client: TestClient, hcp_id: str) -> dict:
    response = client.post("/v1/recommendations", json={"hcp_id": hcp_id, "k": 20, "explain": True})
    assert response.status_code == 200, response.text
    return response.json()


def test_an_erased_hcp_known_to_the_model_gets_no_items(
    client: TestClient, api_settings: Settings
) -> None:
    model = client.app.state.runtime.recommender
    hcp_id = next(str(h) for h in model.hcp_ids[:200] if _ask(client, str(h))["items"])

    done, _ = erase(api_settings, [hcp_id])  # the served model still holds the HCP
    assert done.suppressed == (hcp_id,)

    body = _ask(client, hcp_id)
    assert body["items"] == []
    assert body["excluded"] and all(
        any(w.startswith("consent: opted out of every channel") for w in why)
        for why in body["excluded"].values()
    ), body["excluded"]
    batch = client.post("/v1/recommendations/batch", json={"hcp_ids": [hcp_id], "k": 5})
    assert batch.status_code == 200, batch.text
    assert batch.json()["results"][0]["items"] == []


def test_feedback_from_before_an_erasure_is_refused_by_the_api(
    client: TestClient, api_settings: Settings
) -> None:
    hcp_id = str(client.app.state.runtime.recommender.hcp_ids[0])
    sent = _ask(client, hcp_id)
    client.app.state.runtime.reclog.flush()
    erase(api_settings, [hcp_id])

    late = {"event_id": "late-open", "event_type": "opened", "hcp_id": hcp_id}
    answer = client.post(
        "/v1/feedback", json={**late, "occurred_at": sent["created_at"], "channel": "email"}
    )
    assert answer.status_code == 422, answer.text
    (rejected,) = answer.json()["rejected"]
    assert rejected["message"].startswith(f"HCP '{hcp_id}' was erased on ")
    assert "take the HCP out of what you send" in rejected["message"]
