"""What a CRM integration meets around the rep call plan: the holdout kept from rep
keys on every route, decisions on a plan fetched for a later day, and a territory
whose HCPs the served model does not know yet."""

from __future__ import annotations

from collections.abc import Iterator
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
