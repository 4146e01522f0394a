"""Every 422 the service raises itself names where the bad field was sent."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient


def _rep_feedback(extra: dict) -> dict:
    return {
        "recommendation_id": "0" * 32,
        "hcp_id": "{hcp}",
        "action_id": "A1",
        "decision": "dismiss",
        **extra,
    }


@pytest.mark.parametrize(
    ("method", "url", "params", "body", "loc"),
    [
        ("post", "/v1/recommendations", None, {"hcp_id": "{hcp}", "k": 99}, ["body", "k"]),
        (
            "post",
            "/v1/recommendations",
            None,
            {"hcp_id": "{hcp}", "channel": "fax"},
            ["body", "channel"],
        ),
        (
            "post",
            "/v1/recommendations/batch",
            None,
            {"hcp_ids": ["{hcp}"], "channel": "fax"},
            ["body", "channel"],
        ),
        (
            "post",
            "/v1/recommendations/batch",
            None,
            {"hcp_ids": ["{hcp}"], "k": 0},
            ["body", "k"],
        ),
        (
            "post",
            "/v1/recommendations/batch",
            None,
            {"hcp_ids": ["{hcp}"], "k": True},
            ["body", "k"],
        ),
        (
            "post",
            "/v1/recommendations/batch",
            None,
            {"hcp_ids": ["{hcp}"], "date": "20261101"},
            ["body", "date"],
        ),
        # A list was refused twice, at ["body", "date", "date"] and [..., "datetime"].
        ("post", "/v1/recommendations", None, {"hcp_id": "{hcp}", "date": []}, ["body", "date"]),
        ("get", "/v1/reps/{rep}/suggestions", {"capacity": 0}, None, ["query", "capacity"]),
        # A misspelt parameter is named, not ignored (the default capacity was served).
        ("get", "/v1/reps/{rep}/suggestions", {"capcity": 5}, None, ["query", "capcity"]),
        # Given twice: which one was meant? (The last one was served.)
        ("get", "/v1/reps/{rep}/suggestions", {"capacity": [5, 8]}, None, ["query", "capacity"]),
        ("get", "/v1/reps/{rep}/suggestions", {"capacity": 999}, None, ["query", "capacity"]),
        ("get", "/v1/reps/anyone/suggestions", {}, None, ["query", "territory_id"]),
        ("post", "/v1/reps/{rep}/feedback", None, _rep_feedback({}), ["body", "reason"]),
        (
            "post",
            "/v1/reps/{rep}/feedback",
            None,
            _rep_feedback({"reason": "bored"}),
            ["body", "reason"],
        ),
    ],
)
def test_each_422_names_body_query_or_path(
    client: TestClient, keys, method: str, url: str, params, body, loc: list[str]
) -> None:
    recommender = client.app.state.runtime.recommender
    hcp = next(
        str(h) for h in recommender.hcp_ids if recommender.territory_of(str(h)) == keys.territory
    )
    headers = keys.rep if "{rep}" in url else keys.admin
    url = url.replace("{rep}", keys.rep_name)
    if body is not None:
        body = {
            key: (
                [v.replace("{hcp}", hcp) for v in value]
                if isinstance(value, list)
                else value.replace("{hcp}", hcp)
                if isinstance(value, str)
                else value
            )
            for key, value in body.items()
        }
    response = client.request(method.upper(), url, params=params, json=body, headers=headers)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail[0]["loc"] == loc, detail
    assert detail[0]["msg"]
    # The exception behind a "Value error, ..." message is in msg, not echoed as {},
    # and msg is our sentence without pydantic's prefix.
    assert "error" not in detail[0].get("ctx", {}), detail
    assert not detail[0]["msg"].startswith("Value error, "), detail
    assert len(detail) == 1, detail


@pytest.mark.parametrize(
    ("url", "body"),
    [
        (
            "/v1/recommendations",
            {
                "hcp_id": "{hcp}",
                "k": None,
                "channel": None,
                "purpose": None,
                "date": None,
                "explain": None,
            },
        ),
        (
            "/v1/recommendations/batch",
            {
                "hcp_ids": ["{hcp}"],
                "k": None,
                "channel": None,
                "purpose": None,
                "date": None,
                "explain": None,
            },
        ),
    ],
    ids=["recommendation", "batch"],
)
def test_a_field_sent_as_null_is_read_as_not_sent(client: TestClient, url: str, body: dict) -> None:
    """A client that writes every field of its request object, unset ones as null
    (Jackson's, .NET's and Newtonsoft's default), got a 422 for "k": null and
    "explain": null, where "channel": null was read as no channel: each is its default."""
    hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
    body = {
        key: ([hcp] if key == "hcp_ids" else hcp if key == "hcp_id" else value)
        for key, value in body.items()
    }
    response = client.post(url, json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    if url.endswith("/batch"):
        assert [r["hcp_id"] for r in answer["results"]] == [hcp]
        assert all(len(r["items"]) <= 1 for r in answer["results"])  # k: 1, the batch's
    else:
        assert answer["excluded"] is None  # explain: false
        assert len(answer["items"]) <= 5  # k: 5


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        # A batch is told apart from one event by its "events" key: each bad body
        # is reported against the shape it was sent in, and only against that one.
        # (A bad event inside a batch is rejected alone, by its index: test_api.py.)
        ({"events": []}, ["body", "batch", "events"]),
        ({"events": "opened"}, ["body", "batch", "events"]),
        (
            {
                "event_id": "bad-2",
                "hcp_id": "H1",
                "event_type": "opened",
                "occurred_at": "2026-13-01",
            },
            ["body", "event", "occurred_at"],
        ),
        ({"event_id": "bad-3", "event_type": "opened"}, ["body", "event", "hcp_id"]),
    ],
)
def test_a_bad_feedback_body_is_reported_against_its_own_shape(
    client: TestClient, body: dict, loc: list
) -> None:
    response = client.post("/v1/feedback", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert [error["loc"] for error in detail] == [loc], detail


@pytest.mark.parametrize("events", [[], [{"event_id": "a-1", "event_type": "opened"}]])
def test_a_bare_array_of_events_is_told_how_a_batch_is_sent(
    client: TestClient, events: list
) -> None:
    """A channel system posting its events as a JSON array was answered that one
    event "should be a valid dictionary", which did not say what to send."""
    response = client.post("/v1/feedback", json=events)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "batch"], error
    assert error["msg"].startswith('a batch is sent as an object, {"events": [...]}'), error
    assert "not as a bare JSON array" in error["msg"], error


@pytest.mark.parametrize(
    ("url", "params", "body"),
    [
        ("/v1/recommendations", {"k": 3, "channel": "email"}, {"hcp_id": "{hcp}"}),
        ("/v1/recommendations/batch", {"k": 2}, {"hcp_ids": ["{hcp}"]}),
        (
            "/v1/feedback",
            {"dry_run": "true"},
            {"event_id": "q-1", "event_type": "opened", "hcp_id": "{hcp}"},
        ),
        ("/v1/reps/{rep}/feedback", {"decision": "accept"}, _rep_feedback({})),
    ],
    ids=["recommendation", "batch", "feedback", "rep-decision"],
)
def test_a_query_parameter_beside_a_body_is_refused_not_ignored(
    client: TestClient, keys, url: str, params: dict, body: dict
) -> None:
    """The body routes read no query parameter: ``?k=3&channel=email`` was ignored (five
    actions of every channel served) and ``?dry_run=true`` stored the events all the
    same. The first one sent is named, before anything is served or stored; a caller
    without a key learns nothing of it (401)."""
    recommender = client.app.state.runtime.recommender
    hcp = next(
        str(h) for h in recommender.hcp_ids if recommender.territory_of(str(h)) == keys.territory
    )
    headers = keys.rep if "{rep}" in url else keys.admin
    url = url.replace("{rep}", keys.rep_name)
    sent = {
        key: [hcp] if value == ["{hcp}"] else hcp if value == "{hcp}" else value
        for key, value in body.items()
    }
    response = client.post(url, params=params, json=sent, headers=headers)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", next(iter(params))], error
    assert error["msg"] == (
        "this route takes no query parameters: send its fields in the JSON body"
    ), error
    unkeyed = client.post(url, params=params, json=sent, headers={"Authorization": ""})
    assert unkeyed.status_code == 401, unkeyed.text
    if url == "/v1/feedback":  # nothing was stored: the event is new when sent right
        stored = client.post(url, json=sent)
        assert stored.json() == {"accepted": 1, "duplicates": 0, "rejected": [], "uncounted": []}


@pytest.mark.parametrize(
    ("sent", "near"), [("dismissed", "dismiss"), ("accepted", "accept"), ("Snoozed", "snooze")]
)
def test_a_rep_decision_near_one_is_named(client: TestClient, keys, sent: str, near: str) -> None:
    """A CRM sending the decision as the event it is stored as (``dismissed``) got
    "Input should be 'accept', 'dismiss' or 'snooze'", as for any word: the answer
    says which decision was meant, as for an event type near one."""
    response = client.post(
        f"/v1/reps/{keys.rep_name}/feedback",
        json={**_rep_feedback({"reason": "not_relevant"}), "decision": sent},
        headers=keys.rep,
    )
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "decision"], error
    assert error["msg"] == (
        f"Input should be one of 'accept', 'dismiss', 'snooze' (did you mean '{near}'?)"
    ), error


@pytest.mark.parametrize(("sent", "near"), [("Promo", "promotional"), ("medicl", "medical")])
def test_a_purpose_near_one_is_named(client: TestClient, keys, sent: str, near: str) -> None:
    """A CRM's picklist abbreviation (``Promo``) got "Input should be 'promotional' or
    'medical'", as for any word: the answer names the purpose it shortens or misspells."""
    recommender = client.app.state.runtime.recommender
    hcp = next(
        str(h) for h in recommender.hcp_ids if recommender.territory_of(str(h)) == keys.territory
    )
    response = client.post(
        "/v1/recommendations", json={"hcp_id": hcp, "purpose": sent}, headers=keys.admin
    )
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "purpose"], error
    assert error["msg"] == (
        f"Input should be one of 'promotional', 'medical' (did you mean '{near}'?)"
    ), error


@pytest.mark.parametrize(
    ("method", "url", "body", "said"),
    [
        ("POST", "/v1/admin/reload", {"force": True}, "(force)"),
        (
            "GET",
            "/v1/reps/{rep}/suggestions",
            {"capacity": 5},
            "(date, capacity, territory_id, purpose, explain)",
        ),
    ],
    ids=["reload", "rep-plan"],
)
def test_a_body_sent_to_a_route_that_reads_none_is_refused_not_ignored(
    client: TestClient, keys, method: str, url: str, body: dict, said: str
) -> None:
    """``{"force": true}`` posted to the reload was ignored: the served version was not
    loaded again, and the answer did not say so. A body naming nothing (none, ``{}``,
    ``null``, as client libraries send by default) is still read as none."""
    url = url.replace("{rep}", keys.rep_name)
    headers = keys.rep if "/reps/" in url else keys.admin
    response = client.request(method, url, json=body, headers=headers)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body"], error
    assert error["msg"] == (
        f"this route reads no body: send its parameters in the query string {said}"
    ), error
    # "{ }" and "{\n}": an empty object as pretty printers write it (Jackson's).
    for nothing in (None, {}, "null", "{ }", "{\n}\n"):
        sent = {"content": nothing} if isinstance(nothing, str) else {"json": nothing}
        answer = client.request(
            method, url, headers={**headers, "Content-Type": "application/json"}, **sent
        )
        assert answer.status_code == 200, answer.text
    unkeyed = client.request(method, url, json=body, headers={"Authorization": ""})
    assert unkeyed.status_code == 401, unkeyed.text


@pytest.mark.parametrize(
    ("k", "said"),
    [
        ("1e308", "Input should be less than or equal to 50"),
        ("-1e308", "Input should be greater than or equal to 1"),
    ],
)
def test_a_count_beyond_any_integer_is_refused_by_its_bounds(
    client: TestClient, k: str, said: str
) -> None:
    """Was pydantic's "Unable to parse input string as an integer, exceeded maximum
    size": no string was sent, and the bounds were not said."""
    hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
    for url, ids in (
        ("/v1/recommendations", f'"hcp_id": "{hcp}"'),
        ("/v1/recommendations/batch", f'"hcp_ids": ["{hcp}"]'),
    ):
        response = client.post(
            url, content=f'{{{ids}, "k": {k}}}', headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422, response.text
        [error] = response.json()["detail"]
        assert (error["loc"], error["msg"]) == (["body", "k"], said), error
