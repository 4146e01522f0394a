"""A field a request body does not take names the field meant, as a settings file's does.

pydantic answers ``"chanel"`` with ``Extra inputs are not permitted`` alone; the
service adds the field it is near, or, near none, those taken there. The 422's
``type`` and ``loc`` stay pydantic's: clients parse them.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from .conftest import Keys

EXTRA = "Extra inputs are not permitted"


def _hcp(client: TestClient, keys: Keys) -> str:
    """An HCP of the rep key's territory, so that every key may ask about it."""
    recommender = client.app.state.runtime.recommender
    return next(
        str(h) for h in recommender.hcp_ids if recommender.territory_of(str(h)) == keys.territory
    )


def _filled(value: Any, hcp: str) -> Any:
    if isinstance(value, dict):
        return {key: _filled(item, hcp) for key, item in value.items()}
    if isinstance(value, list):
        return [_filled(item, hcp) for item in value]
    return hcp if value == "{hcp}" else value


def _decision(**extra: Any) -> dict[str, Any]:
    return {
        "recommendation_id": "0" * 32,
        "hcp_id": "{hcp}",
        "action_id": "A1",
        "decision": "accept",
        **extra,
    }


def _event(n: int, **fields: Any) -> dict[str, Any]:
    return {"event_id": f"misspelt-{n}", "event_type": "opened", "hcp_id": "{hcp}", **fields}


@pytest.mark.parametrize(
    ("url", "body", "loc", "said"),
    [
        (
            "/v1/recommendations",
            {"hcp_id": "{hcp}", "chanel": "email"},
            ["body", "chanel"],
            "(did you mean 'channel'?)",
        ),
        (
            "/v1/recommendations",
            {"hcp_ids": ["{hcp}"]},
            ["body", "hcp_ids"],
            "(did you mean 'hcp_id'?)",
        ),
        (
            "/v1/recommendations/batch",
            {"hcp_ids": ["{hcp}"], "purpse": "medical"},
            ["body", "purpse"],
            "(did you mean 'purpose'?)",
        ),
        (
            "/v1/reps/{rep}/feedback",
            _decision(occured_at="2026-01-01T00:00:00Z"),
            ["body", "occured_at"],
            "(did you mean 'occurred_at'?)",
        ),
        # One event is read as the event it was meant to be.
        (
            "/v1/feedback",
            {"event_id": "misspelt-0", "hcp_id": "{hcp}", "evnt_type": "opened"},
            ["body", "event", "evnt_type"],
            "(did you mean 'event_type'?)",
        ),
        # A batch's own field, nested under the shape it was read as.
        (
            "/v1/feedback",
            {"events": [_event(1)], "dry_rn": True},
            ["body", "batch", "dry_rn"],
            "(allowed here: events)",
        ),
        # Its "events" misspelt: read as a batch (it has no event_type), not as one
        # event missing three fields, and named.
        (
            "/v1/feedback",
            {"evnts": [_event(2)]},
            ["body", "batch", "evnts"],
            "(did you mean 'events'?)",
        ),
        # Near nothing: the fields taken there.
        (
            "/v1/recommendations",
            {"hcp_id": "{hcp}", "priority": 1},
            ["body", "priority"],
            "(allowed here: hcp_id, k, channel, purpose, date, explain)",
        ),
        # The batch's explain is refused in words of its own: not a field to offer.
        (
            "/v1/recommendations/batch",
            {"hcp_ids": ["{hcp}"], "explian": True},
            ["body", "explian"],
            "(allowed here: hcp_ids, k, channel, purpose, date)",
        ),
    ],
    ids=[
        "recommendation",
        "recommendation-plural",
        "batch",
        "rep-decision",
        "feedback-event",
        "feedback-batch",
        "feedback-batch-events",
        "near-nothing",
        "batch-near-nothing",
    ],
)
def test_a_field_not_taken_names_the_field_meant(
    client: TestClient, keys: Keys, url: str, body: dict[str, Any], loc: list[Any], said: str
) -> None:
    headers = keys.rep if "{rep}" in url else keys.admin
    url = url.replace("{rep}", keys.rep_name)
    sent = _filled(body, _hcp(client, keys))
    response = client.post(url, json=sent, headers=headers)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    [error] = [e for e in detail if e["type"] == "extra_forbidden"]
    assert error["loc"] == loc, detail
    assert error["msg"] == f"{EXTRA} {said}", detail
    assert error["input"] == sent[loc[-1]], detail
    # The other problems of the body keep pydantic's words (the field it lacks).
    assert all(e["msg"] == "Field required" for e in detail if e is not error), detail
    # A caller without a key learns nothing of the fields a route takes.
    unkeyed = client.post(url, json=sent, headers={"Authorization": ""})
    assert unkeyed.status_code == 401, unkeyed.text
    # Sent as the answer says (the field renamed, or left out), every field is taken
    # and none is missing (a value may still be refused: a list of ids for one id).
    meant = re.search(r"did you mean '(\w+)'", said)
    value = sent.pop(loc[-1])
    if meant:
        sent[meant.group(1)] = value
    corrected = client.post(url, json=sent, headers=headers)
    problems = corrected.json().get("detail")
    kinds = {e["type"] for e in problems} if isinstance(problems, list) else set()
    assert not kinds & {"extra_forbidden", "missing"}, corrected.text


def test_an_event_of_a_batch_names_the_field_meant(client: TestClient, keys: Keys) -> None:
    """A bad event of a batch is rejected alone, by its index: its message names the
    field meant, and lists an event's fields once for the fields near none."""
    events = [
        _event(10),
        _event(11, chanel="email"),
        _event(12),
        {**_event(13), "evnt_type": "opened", "event_type": None},
        _event(14, campaign="c-1", segment="s-1"),
    ]
    events[3].pop("event_type")
    response = client.post("/v1/feedback", json=_filled({"events": events}, _hcp(client, keys)))
    assert response.status_code == 207, response.text
    result = response.json()
    assert result["accepted"] == 2, result
    messages = {r["index"]: r["message"] for r in result["rejected"]}
    assert messages[1] == f"chanel: {EXTRA} (did you mean 'channel'?)", messages
    assert f"evnt_type: {EXTRA} (did you mean 'event_type'?)" in messages[3], messages
    assert "event_type: Field required" in messages[3], messages
    fields = (
        "event_id, event_type, hcp_id, recommendation_id, action_id, channel, occurred_at, "
        "reason, value"
    )
    listed = f"campaign: {EXTRA} (allowed here: {fields}); segment: {EXTRA}"
    assert messages[4] == listed, messages


def test_a_refusal_of_another_kind_is_as_it_was(client: TestClient, keys: Keys) -> None:
    """Only a field not taken gets the field meant; a bad value keeps pydantic's words."""
    response = client.post("/v1/recommendations", json={"hcp_id": _hcp(client, keys), "k": 99})
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert (error["type"], error["loc"]) == ("less_than_equal", ["body", "k"])
    assert error["msg"] == "Input should be less than or equal to 50", error


def test_the_fields_taken_still_pass(client: TestClient, keys: Keys) -> None:
    hcp = _hcp(client, keys)
    one = client.post(
        "/v1/recommendations",
        json={"hcp_id": hcp, "k": 2, "channel": None, "purpose": "promotional", "explain": True},
    )
    assert one.status_code == 200, one.text
    many = client.post(
        "/v1/recommendations/batch", json={"hcp_ids": [hcp], "k": 1, "purpose": "promotional"}
    )
    assert many.status_code == 200, many.text
    event = _filled(_event(20, channel="email", reason="clicked through"), hcp)
    alone = client.post("/v1/feedback", json=event)
    assert alone.status_code == 200, alone.text
    batch = client.post("/v1/feedback", json={"events": [_filled(_event(21), hcp)]})
    assert batch.json() == {"accepted": 1, "duplicates": 0, "rejected": [], "uncounted": []}


def test_one_event_with_a_word_near_events_is_still_one_event(client: TestClient) -> None:
    """Only a list at a key near ``events`` makes a body a batch: ``"event": "opened"``
    is an event with its type misnamed, reported against an event's fields."""
    body = {"event_id": "misspelt-30", "hcp_id": "H1", "event": "opened"}
    response = client.post("/v1/feedback", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    locs = [error["loc"] for error in detail]
    assert locs == [["body", "event", "event_type"], ["body", "event", "event"]], locs
    # "event" begins event_id and event_type alike: neither is guessed (event_id was,
    # the shorter, though it is sent and event_type is the one missing); the fields
    # are listed.
    fields = (
        "event_id, event_type, hcp_id, recommendation_id, action_id, channel, occurred_at, "
        "reason, value"
    )
    assert detail[1]["msg"] == f"{EXTRA} (allowed here: {fields})", detail


@pytest.mark.parametrize(
    ("url", "params", "said"),
    [
        ("/v1/reps/{rep}/suggestions", {"capcity": 5}, "(did you mean 'capacity'?)"),
        ("/v1/admin/reload", {"forse": "true"}, "(did you mean 'force'?)"),
        # Near nothing: the parameters taken there, as a body's fields are listed.
        (
            "/v1/reps/{rep}/suggestions",
            {"page": 2},
            "(allowed here: date, capacity, territory_id, purpose, explain)",
        ),
    ],
    ids=["plan", "reload", "near-nothing"],
)
def test_a_query_parameter_not_taken_is_said_as_a_field_not_taken(
    client: TestClient, keys: Keys, url: str, params: dict[str, Any], said: str
) -> None:
    """A misspelt query parameter was said "did you mean 'x'? known: ..." where a
    misspelt body field is said as a settings file's unknown key: both now name the
    one meant, or, near none, those taken there. The answer keeps its own shape: a
    ``value_error`` at ``["query", name]``."""
    headers = keys.rep if "{rep}" in url else keys.admin
    method = "POST" if "admin" in url else "GET"
    url = url.replace("{rep}", keys.rep_name)
    response = client.request(method, url, params=params, headers=headers)
    assert response.status_code == 422, response.text
    [name] = params
    assert response.json()["detail"] == [
        {"loc": ["query", name], "msg": f"unknown query parameter {said}", "type": "value_error"}
    ]
