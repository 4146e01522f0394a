"""Rep decisions and feedback as a CRM sends them: picklist capitals, no
``occurred_at``, retries without an ``event_id``, and refusals in the caller's words."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from nextbest.api.app import create_app
from nextbest.api.schemas import RepPlanPublic
from nextbest.service.runtime import ServingRuntime
from nextbest.settings import Settings
from nextbest.storage.tables import FeedbackEvent


def _plan(client: TestClient, keys, **params: Any) -> RepPlanPublic:
    response = client.get(f"/v1/reps/{keys.rep_name}/suggestions", params=params, headers=keys.rep)
    assert response.status_code == 200, response.text
    return RepPlanPublic.model_validate(response.json())


def _stored(client: TestClient, event_id: str) -> tuple[Any, ...]:
    with client.app.state.runtime.sessions() as session:
        row = session.execute(
            select(FeedbackEvent.event_type, FeedbackEvent.reason, FeedbackEvent.occurred_at).where(
                FeedbackEvent.event_id == event_id
            )
        ).one()
    return tuple(row)


def _decide(client: TestClient, keys, suggestion, decision: str, **more: Any) -> dict:
    body = {
        "recommendation_id": suggestion.recommendation_id,
        "hcp_id": suggestion.hcp_id,
        "action_id": suggestion.action_id,
        "decision": decision,
        **more,
    }
    answer = client.post(f"/v1/reps/{keys.rep_name}/feedback", json=body, headers=keys.rep)
    return {"status": answer.status_code, **answer.json()}


def test_a_crm_picklists_capitals_are_read_as_the_words_they_spell(
    client: TestClient, keys
) -> None:
    """`decision: "Accept"` was refused with "did you mean 'accept'", a reason code
    `Not_Relevant` as unknown and `purpose: "Medical"` as no purpose, while
    /v1/feedback read `Opened` as `opened`: each closed set of words a caller sends
    is read in any case, spaces around it dropped."""
    first, second, third = _plan(client, keys, capacity=3).suggestions[:3]
    accepted = _decide(client, keys, first, "Accept", event_id="crm-accept-1")
    assert (accepted["status"], accepted["accepted"]) == (200, 1), accepted
    assert _stored(client, "crm-accept-1")[:2] == ("accepted", None)
    dismissed = _decide(
        client, keys, second, " DISMISS ", reason="Not_Relevant", event_id="crm-dismiss-1"
    )
    assert (dismissed["status"], dismissed["accepted"]) == (200, 1), dismissed
    # Stored as the rules file spells the code: it suppresses as that code does.
    assert _stored(client, "crm-dismiss-1")[:2] == ("dismissed", "not_relevant")
    again = client.post(
        "/v1/recommendations", json={"hcp_id": second.hcp_id, "k": 50, "explain": True}
    ).json()
    assert any("not_relevant" in why for why in again["excluded"][second.action_id]), again
    snoozed = _decide(client, keys, third, "Snooze", reason="Wrong_Content")
    assert (snoozed["status"], snoozed["accepted"]) == (200, 1), snoozed
    # /v1/feedback reads a reason code in any case too.
    event = {
        "event_id": "crm-fb-dismiss-1",
        "event_type": "Dismissed",
        "hcp_id": third.hcp_id,
        "recommendation_id": third.recommendation_id,
        "action_id": third.action_id,
        "reason": "TOO_FREQUENT",
    }
    fed = client.post("/v1/feedback", json=event)
    assert fed.status_code == 200 and fed.json()["accepted"] == 1, fed.text
    assert _stored(client, "crm-fb-dismiss-1")[:2] == ("dismissed", "too_frequent")
    # A near miss is still refused naming the word meant; a word near none as before.
    near = _decide(client, keys, first, "Dismissed", reason="not_relevant")
    assert near["status"] == 422 and "did you mean 'dismiss'?" in str(near), near
    # The purpose, on every route that takes one.
    one = client.post("/v1/recommendations", json={"hcp_id": first.hcp_id, "purpose": "Medical"})
    assert one.status_code == 200, one.text
    assert {i["content_type"] for i in one.json()["items"]} <= {"medical"}, one.json()
    batch = client.post(
        "/v1/recommendations/batch", json={"hcp_ids": [first.hcp_id], "purpose": " Promotional"}
    )
    assert batch.status_code == 200, batch.text
    plan = client.get(
        "/v1/reps/msl-1/suggestions",
        params={"territory_id": keys.territory, "purpose": "MEDICAL", "capacity": 2},
    )
    assert plan.status_code == 200, plan.text
    assert plan.json()["purpose"] == "medical"


def _dated_by_the_server(api_settings: Settings, keys, at: datetime) -> dict[str, datetime]:
    """A snooze on the rep route and a completion on /v1/feedback, both sent without
    occurred_at to a server whose clock reads ``at``: when each was stored as happening."""
    runtime = ServingRuntime.start(api_settings, clock=lambda: at)
    try:
        with TestClient(create_app(api_settings, runtime), headers=dict(keys.admin)) as client:
            first, second = _plan(client, keys, capacity=2).suggestions[:2]
            decided = _decide(client, keys, first, "snooze", event_id="dated-snooze")
            assert (decided["status"], decided["accepted"]) == (200, 1), decided
            event = {
                "event_id": "dated-completed",
                "event_type": "completed",
                "hcp_id": second.hcp_id,
                "recommendation_id": second.recommendation_id,
                "action_id": second.action_id,
            }
            fed = client.post("/v1/feedback", json=event)
            assert fed.status_code == 200 and fed.json()["accepted"] == 1, fed.text
            return {
                event_id: _stored(client, event_id)[2].replace(tzinfo=UTC)
                for event_id in ("dated-snooze", "dated-completed")
            }
    finally:
        runtime.close()


def test_decisions_and_events_without_a_time_are_dated_by_the_servers_clock(
    api_settings: Settings, keys
) -> None:
    """Plans and recommendations are decided by the served recommender's clock, but
    a rep decision or a /v1/feedback event sent without occurred_at was stored at the
    machine's now: a server whose clock read a month ago dated a dismissal a month
    after the plan it was made on. Both are dated by the clock plans are decided by."""
    from nextbest.service.recommend import cutoff

    runtime = ServingRuntime.start(api_settings)
    at = cutoff(runtime.recommender.model) + timedelta(days=2, hours=3)
    runtime.close()
    assert at < datetime.now(UTC) - timedelta(days=1)
    stored = _dated_by_the_server(api_settings, keys, at)
    assert stored == {"dated-snooze": at, "dated-completed": at}, stored


def test_a_server_clock_ahead_of_the_machine_accepts_what_it_dated(
    api_settings: Settings, keys
) -> None:
    """An event without occurred_at is dated by the served recommender's clock, but the
    store judged "in the future" by the machine's: a server whose clock read two days
    ahead refused its own dating of every decision and event sent without a time
    ("occurred_at ... is in the future"). Judged by the clock it was dated by."""
    at = datetime.now(UTC) + timedelta(days=2)
    stored = _dated_by_the_server(api_settings, keys, at)
    assert stored == {"dated-snooze": at, "dated-completed": at}, stored


def test_a_decision_resent_under_its_event_id_with_another_reason_is_refused(
    client: TestClient, keys
) -> None:
    """A CRM that resent a dismissal under its own event_id with the reason code the rep
    corrected was told "duplicate", and the first code stayed stored (and held back
    what it holds back) without a word. Refused as another event under a taken id, on
    the rep route and on /v1/feedback; the code in another case is still the same."""
    first = _plan(client, keys, capacity=1).suggestions[0]
    sent = _decide(client, keys, first, "dismiss", reason="not_relevant", event_id="crm-d-9")
    assert (sent["status"], sent["accepted"]) == (200, 1), sent
    same = _decide(client, keys, first, "Dismiss", reason="Not_Relevant", event_id="crm-d-9")
    assert (same["status"], same["duplicates"], same["rejected"]) == (200, 1, []), same
    corrected = _decide(
        client, keys, first, "dismiss", reason="hcp_unavailable", event_id="crm-d-9"
    )
    assert (corrected["status"], corrected["duplicates"]) == (422, 0), corrected
    assert [r["message"] for r in corrected["rejected"]] == [
        "event_id 'crm-d-9' is already stored for another event: an event_id names one "
        "event, so this one was not stored (give each event an id of its own)"
    ]
    event = {
        "event_id": "crm-d-9",
        "event_type": "dismissed",
        "hcp_id": first.hcp_id,
        "recommendation_id": first.recommendation_id,
        "action_id": first.action_id,
        "reason": "wrong_content",
    }
    # An admin key is told what differs; a rep key is not.
    by_admin = client.post("/v1/feedback", json=event).json()
    assert "with reason 'not_relevant' (this one: 'wrong_content')" in str(by_admin), by_admin
    by_rep = client.post("/v1/feedback", json=event, headers=keys.rep)
    assert by_rep.status_code == 422 and "not_relevant" not in by_rep.text, by_rep.text
    assert _stored(client, "crm-d-9")[:2] == ("dismissed", "not_relevant")


def test_a_refused_decision_without_an_event_id_shows_one_id_on_every_retry(
    client: TestClient, keys
) -> None:
    """A decision that changed the item's current one got an id with the time it was
    received in it: each retry of the same refused decision showed another id in
    `rejected`. Derived from what it says, its day and the decision it replaces, a
    retry is recognisable, and once valid a duplicate."""
    s = _plan(client, keys, capacity=3).suggestions[0]
    assert _decide(client, keys, s, "accept")["accepted"] == 1
    wrong = type(s)(**{**s.model_dump(), "recommendation_id": "no-such-recommendation"})
    refused = [_decide(client, keys, wrong, "dismiss", reason="not_relevant") for _ in range(2)]
    assert all(r["status"] == 422 for r in refused), refused
    ids = {r["rejected"][0]["event_id"] for r in refused}
    assert len(ids) == 1, ids
    # Valid, sent twice: one event.
    sent = [_decide(client, keys, s, "dismiss", reason="not_relevant") for _ in range(2)]
    assert [(r["accepted"], r["duplicates"]) for r in sent] == [(1, 0), (0, 1)], sent
    # A rep changing their mind again the same day is still a new decision each time.
    for decision, reason in (("accept", None), ("dismiss", "not_relevant"), ("accept", None)):
        more = {} if reason is None else {"reason": reason}
        assert _decide(client, keys, s, decision, **more)["accepted"] == 1, decision


def test_a_reason_code_refused_on_the_rep_route_names_the_decision_sent(
    client: TestClient, keys
) -> None:
    """A reason code refused on a snooze said "for a snoozed event" where the CRM had
    sent `snooze`: said in the words the caller sent."""
    s = _plan(client, keys, capacity=1).suggestions[0]
    for decision in ("snooze", "dismiss"):
        refused = _decide(client, keys, s, decision, reason="bored")
        assert refused["status"] == 422, refused
        said = str(refused["detail"])
        assert f"unknown reason code 'bored' for decision '{decision}'" in said, said
        assert "event" not in said, said


def test_an_admin_planning_under_a_channel_or_admin_keys_name_is_told_whose_it_is(
    client: TestClient,
) -> None:
    """An admin asking for /v1/reps/crm-email/suggestions was told "no rep key is
    named 'crm-email'", as if no key had that name: it is a channel key's."""
    for name, role in (("crm-email", "a channel key"), ("ops-admin", "an admin key")):
        plan = client.get(f"/v1/reps/{name}/suggestions")
        assert plan.status_code == 422, plan.text
        (error,) = plan.json()["detail"]
        assert error["msg"] == (
            f"'{name}' is {role}, not a rep key: it has no territory, so an admin names "
            "the territory to plan: ?territory_id="
        ), error


@pytest.fixture
def holdout_client(api_settings: Settings, keys):
    settings = api_settings.model_copy(update={"holdout_rate": 0.5})
    with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
        yield client


def test_a_decision_on_a_held_out_answer_says_it_was_held_out(holdout_client, keys) -> None:
    """Deciding on an answer that held the HCP out said "action_id 'A016' was not
    served in recommendation ... (served: none)", as if the answer had lost an item:
    it says the HCP was held out, nothing served by design, to an admin deciding for
    the rep (a rep key is not told: test_holdout_blind.py)."""
    client = holdout_client
    plan = client.get(
        f"/v1/reps/{keys.rep_name}/suggestions", params={"explain": "true", "capacity": 30}
    ).json()
    held = [why for why in plan["left_out"] if why["why"] == "held_out"]
    assert held, plan["left_out"]
    answer = held[0]
    refused = client.post(
        f"/v1/reps/{keys.rep_name}/feedback",
        json={
            "recommendation_id": answer["recommendation_id"],
            "hcp_id": answer["hcp_id"],
            "action_id": answer["action_id"],
            "decision": "accept",
        },
    )
    assert refused.status_code == 422, refused.text
    [said] = refused.json()["rejected"]
    assert said["message"] == (
        f"action_id '{answer['action_id']}' was not served in recommendation "
        f"'{answer['recommendation_id']}': it was held out (a randomized control: nothing "
        "was served, by design), so there is nothing to decide on; send no decision for it"
    ), said


def test_an_accepted_suggestion_is_suggested_until_it_is_completed(
    api_settings: Settings, keys
) -> None:
    """As docs/api.md says: an accept is not a contact, so the next plan, the same
    day's, suggests the HCP again; a completed visit counts against the channel's
    cool-down, and the plan leaves the HCP's actions of that channel out."""
    settings = api_settings.model_copy(update={"holdout_rate": 0.0, "epsilon": 0.0})
    with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
        s = _plan(client, keys, capacity=5).suggestions[0]
        assert _decide(client, keys, s, "accept")["accepted"] == 1
        again = _plan(client, keys, capacity=5)
        assert (s.hcp_id, s.action_id) in {(x.hcp_id, x.action_id) for x in again.suggestions}
        done = {
            "event_id": "visit-done-1",
            "event_type": "completed",
            "hcp_id": s.hcp_id,
            "recommendation_id": s.recommendation_id,
            "action_id": s.action_id,
        }
        fed = client.post("/v1/feedback", json=done, headers=keys.rep)
        assert fed.status_code == 200 and fed.json()["accepted"] == 1, fed.text
        after = _plan(client, keys, capacity=5)
        assert (s.hcp_id, s.channel) not in {(x.hcp_id, x.channel) for x in after.suggestions}


@pytest.mark.parametrize("decision", ["complete", "Completed", "done", "visited", "took place"])
def test_a_visit_done_sent_as_a_decision_is_told_where_it_goes(
    client: TestClient, keys, decision: str
) -> None:
    """A CRM whose suggestion card has a "done" button and sends it to the rep route
    is told that a visit done is a `completed` event for POST /v1/feedback, where it
    read as pydantic's "Input should be 'accept', 'dismiss' or 'snooze'" alone; nothing
    is stored."""
    s = _plan(client, keys, capacity=1).suggestions[0]
    answer = _decide(client, keys, s, decision, event_id="crm-done-1")
    assert answer["status"] == 422, answer
    (detail,) = answer["detail"]
    assert detail["loc"] == ["body", "decision"] and detail["type"] == "literal_error"
    assert detail["msg"] == (
        "Input should be 'accept', 'dismiss' or 'snooze' (a visit or call that took place "
        "is no decision on the suggestion: send it to POST /v1/feedback as a 'completed' "
        "event naming this recommendation_id and action_id, which counts it against the "
        "channel's caps and cool-down)"
    )
    with client.app.state.runtime.sessions() as session:
        stored = session.execute(
            select(FeedbackEvent.event_id).where(FeedbackEvent.event_id == "crm-done-1")
        ).all()
    assert stored == []


@pytest.mark.parametrize("decision", ["completer", "undone", "recall", "visit", "held"])
def test_a_word_only_like_a_visit_done_is_refused_in_pydantics_words(
    client: TestClient, keys, decision: str
) -> None:
    s = _plan(client, keys, capacity=1).suggestions[0]
    (detail,) = _decide(client, keys, s, decision)["detail"]
    assert detail["msg"] == "Input should be 'accept', 'dismiss' or 'snooze'"


def test_an_empty_reason_a_crm_sends_for_a_picklist_left_unset_is_none(
    client: TestClient, keys
) -> None:
    """A CRM writing every field of its decision, an unset reason as `""`, had each of
    its acceptances refused (`an acceptance takes no reason code`) and its snoozes
    (`unknown reason code ''`); an e-mail platform doing so had every open refused
    (`reason must be a non-empty string`). Empty or white space alone, a reason is
    none; a dismissal without one is still refused, saying it needs a code."""
    first, second, third = _plan(client, keys, capacity=3).suggestions[:3]
    accepted = _decide(client, keys, first, "accept", reason="", event_id="crm-empty-1")
    assert (accepted["status"], accepted["accepted"]) == (200, 1), accepted
    assert _stored(client, "crm-empty-1")[:2] == ("accepted", None)
    snoozed = _decide(client, keys, second, "snooze", reason="  ", event_id="crm-empty-2")
    assert (snoozed["status"], snoozed["accepted"]) == (200, 1), snoozed
    assert _stored(client, "crm-empty-2")[:2] == ("snoozed", None)
    dismissed = _decide(client, keys, third, "dismiss", reason="")
    assert dismissed["status"] == 422, dismissed
    (detail,) = dismissed["detail"]
    assert detail["loc"] == ["body", "reason"]
    assert detail["msg"].startswith("a dismissal needs a reason code: "), detail
    events = [
        {
            "event_id": f"esp-empty-{n}",
            "event_type": event_type,
            "hcp_id": third.hcp_id,
            "recommendation_id": third.recommendation_id,
            "action_id": third.action_id,
            "reason": reason,
        }
        for n, (event_type, reason) in enumerate([("accepted", ""), ("snoozed", " ")])
    ]
    fed = client.post("/v1/feedback", json={"events": events}, headers=keys.rep)
    assert fed.status_code == 200, fed.text
    assert fed.json()["accepted"] == 2
    assert [_stored(client, e["event_id"])[1] for e in events] == [None, None]
    # A dismissal sent so names what it lacks, not the form of an empty text.
    lacking = {**events[0], "event_id": "esp-empty-9", "event_type": "dismissed"}
    (rejected,) = client.post("/v1/feedback", json=lacking, headers=keys.rep).json()["rejected"]
    assert rejected["message"].startswith("a dismissal needs a reason code"), rejected
