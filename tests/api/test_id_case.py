"""An HCP id sent in another case than the served model's (a CRM or a spreadsheet that
changed the case of its ids): refused as before, ids being compared exactly, but the
refusal names the id meant, to a rep key only when it is of the rep's own territory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from nextbest.api.app import create_app
from nextbest.settings import Settings

from .conftest import ADMIN_KEY, REP_KEY, write_keys

IN_ANOTHER_CASE = "(ids are compared exactly, case included: did you mean '{}'?)"


def _hcps(client: TestClient, keys) -> tuple[str, str]:
    """An HCP of the rep key's territory and one of another territory."""
    recommender = client.app.state.runtime.recommender
    ids = [str(h) for h in recommender.hcp_ids]
    own = next(h for h in ids if recommender.territory_of(h) == keys.territory)
    other = next(h for h in ids if recommender.territory_of(h) != keys.territory)
    assert own.lower() != own and other.lower() != other  # the fixture's ids have letters
    return own, other


def test_an_unknown_hcp_id_in_another_case_is_named_in_the_404(client: TestClient, keys) -> None:
    own, _ = _hcps(client, keys)
    response = client.post("/v1/recommendations", json={"hcp_id": own.lower()})
    assert response.status_code == 404, response.text
    assert response.json()["detail"] == (
        f"hcp_id '{own.lower()}' is not known to the served model " + IN_ANOTHER_CASE.format(own)
    )
    unknown = client.post("/v1/recommendations", json={"hcp_id": "H-NO-SUCH-HCP"})
    assert unknown.json()["detail"] == "hcp_id 'H-NO-SUCH-HCP' is not known to the served model"


def test_a_batchs_unknown_id_in_another_case_is_named_with_the_id_meant(
    client: TestClient, keys
) -> None:
    """A batch listed 'h000001' in unknown_hcp_ids without a word, where a single
    request's 404 and feedback name the id meant: the e-mail system's owner saw ids
    it knew to exist called unknown. They stay unknown (ids are compared exactly), and
    unknown_in_another_case names the id meant for each."""
    own, other = _hcps(client, keys)
    sent = [own.lower(), other, "H-NO-SUCH-HCP", other.lower()]
    answer = client.post("/v1/recommendations/batch", json={"hcp_ids": sent})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [r["hcp_id"] for r in body["results"]] == [other]
    assert body["unknown_hcp_ids"] == [own.lower(), "H-NO-SUCH-HCP", other.lower()]
    assert body["unknown_in_another_case"] == {own.lower(): own, other.lower(): other}
    known = client.post("/v1/recommendations/batch", json={"hcp_ids": [own]}).json()
    assert known["unknown_hcp_ids"] == [] and known["unknown_in_another_case"] == {}


def test_a_rep_key_is_told_of_an_id_of_its_own_territory_in_another_case(
    client: TestClient, keys
) -> None:
    """Was: "... this HCP is outside it or not known to the served model", which sent the
    rep's CRM admin looking at territories."""
    own, other = _hcps(client, keys)
    asked = client.post("/v1/recommendations", json={"hcp_id": own.lower()}, headers=keys.rep)
    assert asked.status_code == 403, asked.text
    assert asked.json()["detail"].endswith(IN_ANOTHER_CASE.format(own)), asked.text
    event = {"event_id": "case-1", "event_type": "opted_out", "hcp_id": own.lower()}
    for sent in (event, {"events": [event]}):
        answer = client.post("/v1/feedback", json=sent, headers=keys.rep)
        assert answer.status_code == 403, answer.text
        said = answer.json()
        said = said["rejected"][0]["message"] if "rejected" in said else said["detail"]
        assert said.endswith(IN_ANOTHER_CASE.format(own)), said
    # Of another territory: nothing is said of it, as before.
    refused = client.post("/v1/recommendations", json={"hcp_id": other.lower()}, headers=keys.rep)
    assert refused.status_code == 403, refused.text
    assert refused.json()["detail"].endswith(
        "this HCP is outside it or not known to the served model"
    ), refused.text


def test_feedback_naming_an_hcp_in_another_case_names_the_id_meant(
    client: TestClient, keys
) -> None:
    """Was: "unknown hcp_id 'h000001'" alone, from an e-mail system whose ids lost their
    case on the way; an opt-out for it was kept for an HCP not known yet, silently."""
    own, _ = _hcps(client, keys)
    contact = {"event_id": "case-contact", "event_type": "delivered", "hcp_id": own.lower()}
    refused = client.post("/v1/feedback", json=contact)
    assert refused.status_code == 422, refused.text
    assert refused.text.count(IN_ANOTHER_CASE.format(own)) == 1, refused.text
    opt_out = {"event_id": "case-opt-out", "event_type": "opted_out", "hcp_id": own.lower()}
    kept = client.post("/v1/feedback", json=opt_out)
    assert kept.status_code == 200 and kept.json()["accepted"] == 1, kept.text
    (note,) = kept.json()["uncounted"]
    assert note["message"].endswith(IN_ANOTHER_CASE.format(own)), note
    unknown = {"event_id": "no-such", "event_type": "delivered", "hcp_id": "H-NO-SUCH-HCP"}
    said = client.post("/v1/feedback", json=unknown).text
    assert "unknown hcp_id 'H-NO-SUCH-HCP'" in said and "did you mean" not in said, said


def test_a_rep_id_in_another_case_is_named_as_an_hcp_id_is(client: TestClient, keys) -> None:
    """A rep key asking for its own plan under its name upper-cased (a CRM's user
    field) got a 403 naming neither; an admin's plan for it, 'no rep key is named'."""
    shouted = keys.rep_name.upper()
    own = client.get(f"/v1/reps/{shouted}/suggestions", headers=keys.rep)
    assert own.status_code == 403, own.text
    assert own.json()["detail"] == (
        f"rep key '{keys.rep_name}' may only use its own call plan, not that of '{shouted}'"
        + " "
        + IN_ANOTHER_CASE.format(keys.rep_name)
    )
    admin = client.get(f"/v1/reps/{shouted}/suggestions")
    assert admin.status_code == 422, admin.text
    assert admin.json()["detail"][0]["msg"] == (
        f"no rep key is named '{shouted}' {IN_ANOTHER_CASE.format(keys.rep_name)}, so an "
        "admin names the territory to plan: ?territory_id="
    )
    # Another rep's name is no case of its own: nothing is added.
    other = client.get("/v1/reps/REP-2/suggestions", headers=keys.rep)
    assert "did you mean" not in other.text, other.text


def test_feedback_naming_a_recommendation_in_another_case_names_the_id_meant(
    client: TestClient, keys
) -> None:
    """Recommendation ids are written in lower case: one a CRM upper-cased was
    "unknown recommendation_id" alone, on the feedback and the rep decision routes."""
    hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
    served = client.post("/v1/recommendations", json={"hcp_id": hcp}).json()
    meant = served["recommendation_id"]
    assert meant == meant.lower() != meant.upper()
    event = {"event_id": "case-rec", "event_type": "opened", "hcp_id": hcp,
             "recommendation_id": meant.upper()}  # fmt: skip
    refused = client.post("/v1/feedback", json=event)
    assert refused.status_code == 422, refused.text
    assert refused.json()["rejected"][0]["message"] == (
        f"unknown recommendation_id '{meant.upper()}' " + IN_ANOTHER_CASE.format(meant)
    )
    unknown = client.post("/v1/feedback", json={**event, "recommendation_id": "f" * 32})
    assert "did you mean" not in unknown.text, unknown.text


# -- ids stored in mixed case (a CRM's, such as Veeva's 18-character ids) ---------------


def _crm_id(hcp_id: str) -> str:
    """An 18-character id in mixed case, neither all upper nor all lower case."""
    return f"a0B5e0000{hcp_id}Ab"[:18]


@pytest.fixture(scope="module")
def crm_ids(trained, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, str]:
    """The shared world with its HCP ids a CRM's, in mixed case, and a model trained on it
    registered as champion; and the territory of its first HCP."""
    from nextbest import registry
    from nextbest.contract import load_dataset
    from nextbest.learning.config import EngagementParams, TrainConfig, UpliftParams
    from nextbest.learning.train import train

    fast = TrainConfig(  # as the shared fixture's model is trained
        engagement=EngagementParams(n_estimators=40, num_leaves=15),
        uplift=UpliftParams(n_estimators=60, learning_rate=0.08),
    )
    data = tmp_path_factory.mktemp("crm-world")
    for name in ("hcps.csv", "interactions.csv", "catalog.csv"):
        frame = pd.read_csv(trained.data_dir / name, dtype=str, keep_default_na=False)
        if "hcp_id" in frame:
            frame["hcp_id"] = frame["hcp_id"].map(_crm_id)
        frame.to_csv(data / name, index=False)
    dataset = load_dataset(data)
    settings = Settings(models_dir=tmp_path_factory.mktemp("crm-models"), seed=11)
    registry.log_training_run(train(dataset, config=fast), settings)
    return settings, str(dataset.hcps["territory_id"].iat[0])


@pytest.fixture
def crm_client(crm_ids: tuple[Settings, str], tmp_path: Path) -> Iterator[TestClient]:
    settings, territory = crm_ids
    write_keys(tmp_path / "api_keys.yaml", territory)
    settings = settings.model_copy(
        update={
            "api_keys_file": tmp_path / "api_keys.yaml",
            "database_url": f"sqlite:///{tmp_path / 'serve.db'}",
        }
    )
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as c:
        yield c


def test_an_id_stored_in_mixed_case_is_named_when_sent_in_any_other_case(
    crm_client: TestClient,
) -> None:
    """Was: "hcp_id 'A0B5E0000H000001AB' is not known to the served model" alone, for
    'a0B5e0000H000001Ab' (ids a spreadsheet upper-cased): only an id stored all upper
    or all lower case was named."""
    recommender = crm_client.app.state.runtime.recommender
    stored = str(recommender.hcp_ids[0])
    assert stored not in (stored.upper(), stored.lower())
    served = crm_client.post("/v1/recommendations", json={"hcp_id": stored})
    assert served.status_code == 200, served.text
    for sent in (stored.upper(), stored.lower(), stored.swapcase()):
        answer = crm_client.post("/v1/recommendations", json={"hcp_id": sent})
        assert answer.status_code == 404, answer.text
        assert answer.json()["detail"] == (
            f"hcp_id '{sent}' is not known to the served model " + IN_ANOTHER_CASE.format(stored)
        )
    unknown = crm_client.post("/v1/recommendations", json={"hcp_id": "a0B5e0000X999999Ab"})
    assert "did you mean" not in unknown.text, unknown.text


def test_a_rep_and_feedback_are_told_of_an_id_stored_in_mixed_case(
    crm_client: TestClient, crm_ids: tuple[Settings, str]
) -> None:
    _, territory = crm_ids
    recommender = crm_client.app.state.runtime.recommender
    ids = [str(h) for h in recommender.hcp_ids]
    own = next(h for h in ids if recommender.territory_of(h) == territory)
    other = next(h for h in ids if recommender.territory_of(h) != territory)
    rep = {"Authorization": f"Bearer {REP_KEY}"}
    asked = crm_client.post("/v1/recommendations", json={"hcp_id": own.upper()}, headers=rep)
    assert asked.status_code == 403, asked.text
    assert asked.json()["detail"].endswith(IN_ANOTHER_CASE.format(own)), asked.text
    # Of another territory: nothing is said of it.
    refused = crm_client.post("/v1/recommendations", json={"hcp_id": other.upper()}, headers=rep)
    assert refused.status_code == 403 and "did you mean" not in refused.text, refused.text
    contact = {"event_id": "crm-contact", "event_type": "delivered", "hcp_id": own.lower()}
    rejected = crm_client.post("/v1/feedback", json=contact)
    assert rejected.status_code == 422, rejected.text
    assert rejected.json()["rejected"][0]["message"] == (
        f"unknown hcp_id '{own.lower()}' " + IN_ANOTHER_CASE.format(own)
    )
    opt_out = {"event_id": "crm-opt-out", "event_type": "opted_out", "hcp_id": own.upper()}
    kept = crm_client.post("/v1/feedback", json=opt_out)
    assert kept.status_code == 200 and kept.json()["accepted"] == 1, kept.text
    (note,) = kept.json()["uncounted"]
    assert note["message"].endswith(IN_ANOTHER_CASE.format(own)), note
    exact = {"event_id": "crm-exact", "event_type": "delivered", "hcp_id": own}
    assert crm_client.post("/v1/feedback", json=exact).json()["accepted"] == 1


def test_a_feedback_file_naming_an_id_stored_in_mixed_case_names_the_id_meant(
    crm_ids: tuple[Settings, str], tmp_path: Path
) -> None:
    """`nextbest feedback FILE` checks ids against the model it loads itself (no server's
    recommender): the id meant is named there too."""
    from nextbest import registry
    from nextbest.service.feedback_file import ingest_events, read_events
    from nextbest.storage.db import migrate

    settings, _ = crm_ids
    settings = settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'f.db'}"})
    migrate(settings.resolved_database_url)
    model, _ = registry.load_alias(settings)
    stored = str(model.hcps["hcp_id"].iat[0])
    feed = tmp_path / "events.csv"
    feed.write_text(
        f"event_id,event_type,hcp_id\nf-1,delivered,{stored.upper()}\nf-2,delivered,{stored}\n"
    )
    done = ingest_events(settings, read_events(feed), model=model)
    assert done.accepted == 1
    assert done.rejected == [
        (1, "f-1", f"unknown hcp_id '{stored.upper()}' " + IN_ANOTHER_CASE.format(stored))
    ]
