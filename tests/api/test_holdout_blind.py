"""A rep key cannot tell a held-out HCP from one with nothing worth doing, on any route.

The randomized holdout measures uplift only while the field does not know who is in
it (nextbest.service.blinding). Each test asks through the app with the real rep
key, on SQLite and on PostgreSQL, and checks that channel and admin keys are still
told.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from nextbest.api.app import create_app
from nextbest.contract.schema import is_rep_channel
from nextbest.service import recommend
from nextbest.service.blinding import NOT_SUGGESTED
from nextbest.settings import Settings
from nextbest.storage.tables import Recommendation


@pytest.fixture
def holding_out(api_store: Settings, keys) -> Iterator[TestClient]:
    """Half of the HCPs held out this week; no exploration (an explored item would be
    served to an HCP with nothing worth its cost)."""
    settings = api_store.model_copy(update={"holdout_rate": 0.5, "epsilon": 0.0})
    with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
        yield client


def _held_out_hcp(client: TestClient, keys) -> str:
    """An HCP of the rep's territory held out this week, as a channel key is told."""
    recommender = client.app.state.runtime.recommender
    for hcp in recommender.hcp_ids[recommender.territories[keys.territory]].tolist():
        said = client.post("/v1/recommendations", json={"hcp_id": hcp}, headers=keys.channel)
        assert said.status_code == 200, said.text
        if said.json()["holdout"]:
            return str(hcp)
    raise AssertionError("a holdout rate of 0.5 holds some HCP of the territory out")


def _rep_action(client: TestClient) -> str:
    recommender = client.app.state.runtime.recommender
    return next(a for a, c in recommender.model.channel_by_action.items() if is_rep_channel(c))


def _says_held_out(text: str) -> bool:
    lowered = text.lower()
    return "held out" in lowered or "held-out" in lowered or "randomized control" in lowered


def _rep_answer(client: TestClient, keys, hcp: str) -> dict:
    answer = client.post("/v1/recommendations", json={"hcp_id": hcp}, headers=keys.rep)
    assert answer.status_code == 200, answer.text
    body: dict = answer.json()
    assert body["holdout"] is False and body["items"] == []
    return body


def test_a_reps_decision_on_a_holdout_answer_is_refused_as_on_one_that_served_nothing(
    holding_out: TestClient, keys
) -> None:
    """The rep route refused a decision on the item of a hidden holdout answer saying
    "it was held out (a randomized control ...)": the rep learnt what the answer hid.
    A rep key gets the words of an answer that served nothing; an admin deciding for
    the rep is told."""
    client = holding_out
    held = _held_out_hcp(client, keys)
    rid = _rep_answer(client, keys, held)["recommendation_id"]
    action = _rep_action(client)
    decision = {"recommendation_id": rid, "hcp_id": held, "action_id": action}
    said = {}
    for who, headers in (("rep", keys.rep), ("admin", keys.admin)):
        answer = client.post(
            f"/v1/reps/{keys.rep_name}/feedback",
            json={**decision, "decision": "accept", "event_id": f"decide-{who}"},
            headers=headers,
        )
        assert answer.status_code == 422, answer.text
        (rejected,) = answer.json()["rejected"]
        said[who] = rejected["message"]
    assert said["rep"] == (
        f"action_id '{action}' was not served in recommendation '{rid}' (served: none)"
    )
    assert _says_held_out(said["admin"]), said["admin"]
    # The same event on POST /v1/feedback: the same words to the same keys.
    event = {**decision, "event_type": "accepted"}
    rep = client.post("/v1/feedback", json={**event, "event_id": "fb-rep"}, headers=keys.rep)
    assert rep.json()["rejected"][0]["message"] == said["rep"], rep.text
    admin = client.post("/v1/feedback", json={**event, "event_id": "fb-admin"})
    assert _says_held_out(admin.json()["rejected"][0]["message"]), admin.text


def test_a_reps_contact_on_a_holdout_answer_is_not_said_to_reach_a_held_out_hcp(
    holding_out: TestClient, keys
) -> None:
    """A rep's ``completed`` (or an ``accepted`` naming no action) on a hidden holdout
    answer was stored and said back "held this HCP out (holdout: true ...)". Stored
    all the same (the uplift report counts the contact), and said as on an answer
    that served nothing; a channel key is still told at once."""
    client = holding_out
    held = _held_out_hcp(client, keys)
    rid = _rep_answer(client, keys, held)["recommendation_id"]
    for n, event in enumerate(
        (
            {"event_type": "completed", "channel": "rep_visit"},
            {"event_type": "completed"},
            {"event_type": "accepted"},
        )
    ):
        sent = {**event, "recommendation_id": rid, "hcp_id": held, "event_id": f"contact-{n}"}
        answer = client.post("/v1/feedback", json=sent, headers=keys.rep)
        assert answer.status_code == 200, answer.text
        assert answer.json()["accepted"] == 1
        assert not _says_held_out(answer.text), answer.text
    told = client.post(
        "/v1/feedback",
        json={
            "event_id": "contact-channel",
            "event_type": "delivered",
            "channel": "email",
            "recommendation_id": rid,
            "hcp_id": held,
        },
        headers=keys.channel,
    )
    assert told.status_code == 200, told.text
    assert "held this HCP out" in told.json()["uncounted"][0]["message"]


def test_a_reps_explanation_of_a_holdout_answer_gives_no_value_and_leaves_nothing_out(
    holding_out: TestClient, keys
) -> None:
    """With explain, a rep key's answer about a held-out HCP listed why every action
    but those the list would have held was left out: the allowed actions missing from
    ``excluded`` gave the holdout away. Every action is said, each the rules allow
    with NOT_SUGGESTED and no value, as of an HCP with nothing worth doing."""
    client = holding_out
    held = _held_out_hcp(client, keys)
    recommender = client.app.state.runtime.recommender
    every_action = set(recommender.model.channel_by_action)
    answer = client.post(
        "/v1/recommendations", json={"hcp_id": held, "explain": True}, headers=keys.rep
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["holdout"] is False and body["items"] == []
    assert not _says_held_out(answer.text) and "holdout: true" not in answer.text
    excluded = body["excluded"]
    assert set(excluded) == every_action
    allowed = [a for a, why in excluded.items() if why == [NOT_SUGGESTED]]
    assert allowed, "the held-out HCP has actions the rules allow"
    assert not any(
        "worth its cost" in w or "items of one channel" in w
        for why in excluded.values()
        for w in why
    )
    # Rule reasons are kept: those of every action the rules leave out.
    ruled = {a: why for a, why in excluded.items() if why != [NOT_SUGGESTED]}
    assert all(NOT_SUGGESTED not in why for why in ruled.values())
    # An admin's explanation of the same HCP: told, and the same rules.
    admin = client.post("/v1/recommendations", json={"hcp_id": held, "explain": True}).json()
    assert admin["holdout"] is True
    assert {a: w for a, w in admin["excluded"].items() if a in ruled} == ruled


def _holdout_answers(client: TestClient) -> set[str]:
    runtime = client.app.state.runtime
    assert runtime.reclog.flush()
    with runtime.sessions() as session:
        rows = session.execute(
            select(Recommendation.hcp_id).where(Recommendation.holdout.is_(True))
        ).all()
    return {str(h) for (h,) in rows}


def test_a_reps_plan_says_held_out_hcps_as_those_with_nothing_worth_doing(
    api_store: Settings, keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rep key's plan with explain left the held-out HCPs out of ``left_out`` and out
    of ``n_left_out``: ``n_hcps`` minus the suggestions minus ``n_left_out`` counted
    them, the ranks of ``below_capacity`` skipped their places, and in a territory
    listed whole the HCPs missing were the control. Now every HCP of the territory
    is said, the held-out ones as ``not_suggested`` with those whose rep actions are
    worth nothing, in territory order, without value."""
    monkeypatch.setattr(recommend, "MAX_LEFT_OUT", 1000)  # the whole territory (206)
    settings = api_store.model_copy(
        update={"epsilon": 0.0, "holdout_rate": 0.3, "seed": 4, "holdout_days": 0}
    )
    with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
        before = _holdout_answers(client)
        response = client.get(
            f"/v1/reps/{keys.rep_name}/suggestions",
            params={"capacity": 10, "explain": "true"},
            headers=keys.rep,
        )
        assert response.status_code == 200, response.text
        plan = response.json()
        held = _holdout_answers(client) - before
    assert held, "a holdout rate of 0.3 holds some of the first ranks out"
    assert not _says_held_out(response.text) and "held_out" not in response.text
    left_out = plan["left_out"]
    suggested = {s["hcp_id"] for s in plan["suggestions"]}
    listed = {e["hcp_id"] for e in left_out}
    recommender = client.app.state.runtime.recommender
    territory = recommender.hcp_ids[recommender.territories[keys.territory]].tolist()
    assert suggested | listed == set(territory) and not suggested & listed
    assert plan["n_left_out"] == plan["n_hcps"] - len(suggested) == len(left_out)
    below = [e for e in left_out if e["why"] == "below_capacity"]
    assert [e["rank"] for e in below] == list(
        range(len(suggested) + 1, len(suggested) + 1 + len(below))
    )
    not_suggested = [e for e in left_out if e["why"] == "not_suggested"]
    assert held <= {e["hcp_id"] for e in not_suggested}
    assert not {"no_rep_action_worth_its_cost", "held_out"} & {e["why"] for e in left_out}
    # In territory order, with no value nor place: nothing sets the held-out ones apart.
    order = {hcp: n for n, hcp in enumerate(territory)}
    assert [order[e["hcp_id"]] for e in not_suggested] == sorted(
        order[e["hcp_id"]] for e in not_suggested
    )
    for entry in not_suggested:
        assert set(entry) == {"hcp_id", "why", "excluded"}, entry
        said = [why for why in entry["excluded"].values() if why == [NOT_SUGGESTED]]
        assert said, entry
    assert "worth its cost" not in json.dumps(not_suggested)
