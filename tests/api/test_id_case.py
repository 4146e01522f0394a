"""An HCP id sent in another case than the served model's (a CRM or a spreadsheet that
changed the case of its ids): refused as before, ids being compared exactly, but the
refusal names the id meant, to a rep key only when it is of the rep's own territory."""

from __future__ import annotations

from fastapi.testclient import TestClient

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
