"""The HTTP API against a real SQLite file and a real MLflow registry."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from nextbest import registry
from nextbest.api.app import create_app
from nextbest.storage.tables import FeedbackEvent, Recommendation


def _hcp_with_actions(client: TestClient, trained) -> tuple[str, dict]:
    from nextbest.service.picks import picks_frame

    model, _ = registry.load_alias(trained.settings)
    picks = picks_frame(model, hcp_ids=list(model.hcps["hcp_id"]), k=1)
    for hcp_id in picks["hcp_id"]:
        body = client.post("/v1/recommendations", json={"hcp_id": hcp_id, "k": 3}).json()
        if body["items"]:
            return hcp_id, body
    raise AssertionError("no HCP got any recommendation")


def test_recommendation_happy_path(client: TestClient, trained) -> None:
    hcp_id, body = _hcp_with_actions(client, trained)
    assert body["hcp_id"] == hcp_id
    assert body["model_version"] == trained.version
    assert body["uplift_source"] == "uplift_model"
    items = body["items"]
    assert len(items) in (1, 2, 3)
    assert [i["rank"] for i in items] == list(range(1, len(items) + 1))
    for item in items:
        assert item["reasons"], "every item carries at least one reason"
        assert 0 < item["propensity"] <= 1
        assert 0 <= item["p_engage"] <= 1
        if not item["explored"]:
            assert item["score"] > 0
            assert item["score"] == pytest.approx(item["expected_uplift"] - item["cost"])
    greedy = [i["score"] for i in items if not i["explored"]]
    assert greedy == sorted(greedy, reverse=True)


def test_recommendations_are_logged_with_propensity(client: TestClient, trained) -> None:
    hcp_id, body = _hcp_with_actions(client, trained)
    runtime = client.app.state.runtime
    assert runtime.reclog.flush()
    with runtime.sessions() as session:
        row = session.get(Recommendation, body["recommendation_id"])
        assert row is not None
        assert row.hcp_id == hcp_id
        assert row.model_version == trained.version
        assert row.holdout is body["holdout"]


def test_served_version_is_the_champion(client: TestClient, trained) -> None:
    assert registry.alias_version(trained.settings, "champion") == trained.version
    health = client.get("/healthz").json()
    assert health.pop("features_as_of").startswith(
        str(client.app.state.runtime.recommender.model.as_of.date())
    )
    assert health == {"status": "ok", "model_version": trained.version}
    assert client.get("/readyz").status_code == 200


def test_ids_are_read_as_the_data_files_read_them(client: TestClient) -> None:
    # The files' ids are stripped of surrounding spaces; a CRM field padded with
    # them was a 404 for an HCP the service knows.
    hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
    answer = client.post("/v1/recommendations", json={"hcp_id": f" {hcp} ", "k": 1})
    assert answer.status_code == 200 and answer.json()["hcp_id"] == hcp
    batch = client.post("/v1/recommendations/batch", json={"hcp_ids": [f"{hcp}  "]}).json()
    assert [r["hcp_id"] for r in batch["results"]] == [hcp] and not batch["unknown_hcp_ids"]


def test_unknown_hcp_is_404_with_message(client: TestClient) -> None:
    response = client.post("/v1/recommendations", json={"hcp_id": "NOPE-1"})
    assert response.status_code == 404
    assert "NOPE-1" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({}, "hcp_id", id="missing-hcp"),
        pytest.param({"hcp_id": "H000001", "k": 0}, "k", id="k-zero"),
        pytest.param({"hcp_id": "H000001", "k": 500}, "k", id="k-too-big"),
        pytest.param({"hcp_id": "H000001", "k": True}, "k", id="k-boolean"),
        pytest.param({"hcp_id": "H000001", "purpose": "sales"}, "purpose", id="bad-purpose"),
        pytest.param({"hcp_id": "H000001", "channel": "fax"}, "channel", id="unknown-channel"),
        pytest.param({"hcp_id": "H000001", "colour": "red"}, "colour", id="unknown-field"),
        pytest.param({"hcp_id": "H000001", "date": "yesterday"}, "date", id="bad-date"),
    ],
)
def test_invalid_body_is_422_naming_the_field(client: TestClient, body: dict, field: str) -> None:
    response = client.post("/v1/recommendations", json=body)
    assert response.status_code == 422
    locations = [err["loc"][-1] for err in response.json()["detail"]]
    assert field in locations


def test_channel_filter_and_consent(client: TestClient, trained) -> None:
    from nextbest.contract import load_dataset

    hcps = load_dataset(trained.data_dir).hcps
    no_email = hcps.loc[~hcps["consent_email"], "hcp_id"]
    assert len(no_email), "the world should have HCPs without e-mail consent"
    for hcp_id in no_email[:10]:
        body = client.post("/v1/recommendations", json={"hcp_id": hcp_id, "k": 10}).json()
        assert all(i["channel"] != "email" for i in body["items"])
    hcp_id = hcps["hcp_id"].iat[0]
    body = client.post(
        "/v1/recommendations", json={"hcp_id": hcp_id, "k": 10, "channel": "webinar"}
    ).json()
    assert all(i["channel"] == "webinar" for i in body["items"])


def test_expired_content_is_never_served(client: TestClient, trained) -> None:
    from nextbest.contract import load_dataset

    catalog = load_dataset(trained.data_dir).catalog
    day = "2027-06-01T00:00:00"
    expired = set(catalog.loc[catalog["approved_until"] < day, "action_id"])
    assert expired, "the simulated catalog should have expired content"
    served = set()
    for hcp_id in load_dataset(trained.data_dir).hcps["hcp_id"][:40]:
        body = client.post(
            "/v1/recommendations", json={"hcp_id": hcp_id, "k": 20, "date": day}
        ).json()
        served |= {i["action_id"] for i in body["items"]}
    assert served, "some actions should be served"
    assert not served & expired


def test_feedback_is_idempotent_by_event_id(client: TestClient, trained) -> None:
    hcp_id, body = _hcp_with_actions(client, trained)
    event = {
        "event_id": f"evt-{body['recommendation_id']}",
        "event_type": "opened",
        "hcp_id": hcp_id,
        "recommendation_id": body["recommendation_id"],
        "action_id": body["items"][0]["action_id"],
    }
    first = client.post("/v1/feedback", json=event)
    assert first.status_code == 200
    assert first.json() == {"accepted": 1, "duplicates": 0, "rejected": [], "uncounted": []}
    again = client.post("/v1/feedback", json=event)
    assert again.status_code == 200
    assert again.json() == {"accepted": 0, "duplicates": 1, "rejected": [], "uncounted": []}
    runtime = client.app.state.runtime
    with runtime.sessions() as session:
        count = session.scalar(
            select(func.count())
            .select_from(FeedbackEvent)
            .where(FeedbackEvent.event_id == event["event_id"])
        )
    assert count == 1


def test_a_dismissal_needs_a_reason_code_of_the_rules_file(client: TestClient, trained) -> None:
    hcp_id, body = _hcp_with_actions(client, trained)

    def dismiss(event_id: str, reason: str) -> dict:
        event = {
            "event_id": event_id,
            "event_type": "dismissed",
            "hcp_id": hcp_id,
            "recommendation_id": body["recommendation_id"],
            "action_id": body["items"][0]["action_id"],
            "reason": reason,
        }
        answer = client.post("/v1/feedback", json=event)
        return {"status": answer.status_code, **answer.json()}

    refused = dismiss("d-free-text", "whatever I like")
    assert refused["status"] == 422
    assert refused["rejected"][0]["message"].startswith(
        "unknown reason code 'whatever I like' for a dismissed event; known: not_relevant"
    )
    assert dismiss("d-code", "not_relevant")["accepted"] == 1

    # The rep route's rule, whoever sends the event: a dismissal says why, an
    # acceptance or a contact does not; each bad event of a batch rejected alone.
    item = {
        "hcp_id": hcp_id,
        "recommendation_id": body["recommendation_id"],
        "action_id": body["items"][0]["action_id"],
    }
    answer = client.post(
        "/v1/feedback",
        json={
            "events": [
                {**item, "event_id": "d-none", "event_type": "dismissed"},
                {**item, "event_id": "a-why", "event_type": "accepted", "reason": "other"},
                {**item, "event_id": "o-why", "event_type": "opened", "reason": "curious"},
                {**item, "event_id": "s-none", "event_type": "snoozed"},
            ]
        },
    )
    assert answer.status_code == 207, answer.text
    # A snooze ("not now") need not say why; another system's open may carry words.
    assert answer.json()["accepted"] == 2
    said = {r["index"]: (r["event_id"], r["message"]) for r in answer.json()["rejected"]}
    assert sorted(said) == [0, 1]
    assert said[0][0] == "d-none"
    assert said[0][1].startswith("a dismissal needs a reason code: not_relevant, ")
    assert said[1] == ("a-why", "an acceptance takes no reason code")


def test_feedback_batch_with_one_bad_event_keeps_the_good_ones(client: TestClient, trained) -> None:
    hcp_id, _ = _hcp_with_actions(client, trained)
    events = [
        {"event_id": "b-1", "event_type": "delivered", "hcp_id": hcp_id, "channel": "email"},
        {"event_id": "b-2", "event_type": "opened", "hcp_id": "NOBODY"},
        {"event_id": "b-3", "event_type": "outcome", "hcp_id": hcp_id, "value": 2.0},
    ]
    response = client.post("/v1/feedback", json={"events": events})
    assert response.status_code == 207
    result = response.json()
    assert result["accepted"] == 2
    assert [(r["index"], r["event_id"]) for r in result["rejected"]] == [(1, "b-2")]
    assert "NOBODY" in result["rejected"][0]["message"]


def test_a_malformed_event_in_a_batch_is_rejected_alone(client: TestClient, trained) -> None:
    """An event that is not a valid event is rejected by its index, naming its field;
    the valid events of the batch are stored, as with an unknown HCP."""
    hcp_id, _ = _hcp_with_actions(client, trained)
    events = [
        {"event_id": "m-1", "event_type": "delivered", "hcp_id": hcp_id, "channel": "email"},
        {"event_id": "m-2", "event_type": "liked", "hcp_id": hcp_id},
        {"event_id": "m-3", "event_type": "opened", "occurred_at": "2026-13-01"},
        "not an event",
        {"event_id": "m-5", "event_type": "opened", "hcp_id": "NOBODY"},
        {"event_id": "m-6", "event_type": "outcome", "hcp_id": hcp_id, "value": 1.0, "x": 1},
        {"event_id": "m-7", "event_type": "outcome", "hcp_id": hcp_id, "value": 2.0},
    ]
    response = client.post("/v1/feedback", json={"events": events})
    assert response.status_code == 207, response.text
    result = response.json()
    assert (result["accepted"], result["duplicates"]) == (2, 0)
    rejected = {r["index"]: (r["event_id"], r["message"]) for r in result["rejected"]}
    assert sorted(rejected) == [1, 2, 3, 4, 5]
    assert rejected[1][0] == "m-2" and rejected[1][1].startswith("event_type: ")
    assert rejected[2][0] == "m-3"
    assert "hcp_id: Field required" in rejected[2][1] and "occurred_at: " in rejected[2][1]
    assert rejected[3][0] == "" and "event" in rejected[3][1]
    assert rejected[4][0] == "m-5" and "NOBODY" in rejected[4][1]
    assert rejected[5][0] == "m-6" and rejected[5][1].startswith("x: Extra inputs")
    runtime = client.app.state.runtime
    with runtime.sessions() as session:
        stored = session.scalars(
            select(FeedbackEvent.event_id).where(FeedbackEvent.event_id.like("m-%"))
        ).all()
    assert sorted(stored) == ["m-1", "m-7"]
    # Nothing valid: 422, with the same per-event answer.
    response = client.post("/v1/feedback", json={"events": events[1:4]})
    assert response.status_code == 422, response.text
    assert [r["index"] for r in response.json()["rejected"]] == [0, 1, 2]


@pytest.mark.parametrize(
    ("event", "field"),
    [
        pytest.param({"event_type": "opened", "hcp_id": "H1"}, "event_id", id="no-event-id"),
        pytest.param(
            {"event_id": "x", "event_type": "liked", "hcp_id": "H1"}, "event_type", id="bad-type"
        ),
        pytest.param(
            {"event_id": "x", "event_type": "outcome", "hcp_id": "H1", "value": "lots"},
            "value",
            id="bad-value",
        ),
        pytest.param(
            {"event_id": "x", "event_type": "outcome", "hcp_id": "H1", "value": True},
            "value",
            id="boolean-value",
        ),
    ],
)
def test_invalid_feedback_is_422(client: TestClient, event: dict, field: str) -> None:
    response = client.post("/v1/feedback", json=event)
    assert response.status_code == 422
    assert field in str(response.json()["detail"])


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
def test_a_number_that_is_no_json_is_a_422(client: TestClient, number: str) -> None:
    # Python's JSON parser reads NaN; echoing it back in the 422 made a 500.
    for path, body in (
        ("/v1/recommendations", '{"hcp_id": "H000001", "k": %s}'),
        ("/v1/recommendations/batch", '{"hcp_ids": ["H000001"], "k": %s}'),
        ("/v1/feedback", '{"event_id": "n", "event_type": "opened", "hcp_id": "H1", "x": %s}'),
    ):
        response = client.post(
            path, content=body % number, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422, (path, response.text)
        assert response.headers["X-Request-ID"]


def test_the_reasons_an_item_was_shown_with_are_logged_with_it(client: TestClient) -> None:
    """They depend on the contact history of the moment: support and audits read them
    back from the log (`nextbest lookup`), not from a new answer."""
    from nextbest.storage.repository import get_recommendation

    runtime = client.app.state.runtime
    answers = (
        client.post("/v1/recommendations", json={"hcp_id": str(hcp), "k": 3}).json()
        for hcp in runtime.recommender.hcp_ids[:50]
    )
    answer = next(a for a in answers if a["items"])
    assert runtime.reclog.flush()
    with runtime.sessions() as session:
        logged = get_recommendation(session, recommendation_id=answer["recommendation_id"])
    assert logged is not None and answer["items"]
    assert [list(item.reasons) for item in logged.items] == [
        item["reasons"] for item in answer["items"]
    ]


def test_single_recommendations_read_history_on_one_kept_connection(api_settings, keys) -> None:
    """On SQLite the single route's history reads reuse one connection instead of
    checking one out of the pool per request (a fifth of the read's CPU)."""
    import threading

    from sqlalchemy import event

    settings = api_settings.model_copy(update={"log_flush_ms": 5})  # writes: another thread
    with TestClient(create_app(settings), headers=dict(keys.admin)) as c:
        runtime = c.app.state.runtime  # type: ignore[attr-defined]
        hcps = [str(h) for h in runtime.recommender.hcp_ids[:8]]
        loop = c.portal.call(threading.get_ident)  # type: ignore[union-attr]
        on_loop: list[object] = []
        event.listen(
            runtime.engine,
            "checkout",
            lambda dbapi, _r, _p: on_loop.append(dbapi) if threading.get_ident() == loop else None,
        )
        for hcp in hcps:
            assert c.post("/v1/recommendations", json={"hcp_id": hcp, "k": 3}).status_code == 200
        assert len(on_loop) == 1  # opened at the first read, then kept
        assert c.post("/v1/recommendations", json={"hcp_id": hcps[0], "explain": True}).is_success
        assert len(on_loop) == 1


def test_an_email_platforms_unsubscribe_withdraws_and_its_bounce_is_told_to_send_nothing(
    client: TestClient, trained
) -> None:
    """An export's `unsubscribed` row is the opt-out it is (stored, in force at once,
    said under uncounted); its `bounced` row is rejected alone, saying to send nothing."""
    hcp_id, _ = _hcp_with_actions(client, trained)
    events = [
        {"event_id": "p-1", "event_type": "delivered", "hcp_id": hcp_id, "channel": "email"},
        {"event_id": "p-2", "event_type": "Unsubscribed", "hcp_id": hcp_id, "channel": "email"},
        {"event_id": "p-3", "event_type": "bounced", "hcp_id": hcp_id, "channel": "email"},
    ]
    response = client.post("/v1/feedback", json={"events": events})
    assert response.status_code == 207, response.text
    result = response.json()
    assert result["accepted"] == 2
    (rejected,) = result["rejected"]
    assert rejected["event_id"] == "p-3"
    assert rejected["message"].endswith(
        "(a bounced e-mail reached nobody: send no event for it (a contact is 'delivered'))"
    )
    (note,) = result["uncounted"]
    assert note["event_id"] == "p-2"
    assert "event_type 'Unsubscribed' read as 'opted_out'" in note["message"]
    explained = client.post(
        "/v1/recommendations", json={"hcp_id": hcp_id, "channel": "email", "explain": True}
    ).json()
    assert explained["items"] == []
    assert any(
        "consent: opted out of email on " in why
        for reasons in explained["excluded"].values()
        for why in reasons
    )
    # Its resend, as sent or as read, is the same event.
    again = client.post("/v1/feedback", json=events[1]).json()
    assert (again["accepted"], again["duplicates"]) == (0, 1)
    read = {**events[1], "event_type": "opted_out"}
    assert client.post("/v1/feedback", json=read).json()["duplicates"] == 1


def test_an_email_platforms_spam_complaint_withdraws_the_email_it_names(
    client: TestClient, keys
) -> None:
    """A complaint webhook (`spamreport`) naming the send is an opt-out of its channel:
    stored, said under uncounted, and the next batch picks no e-mail for the HCP,
    where it was refused and the HCP kept being picked e-mails the platform would not
    send."""
    recommender = client.app.state.runtime.recommender
    ids = [str(h) for h in recommender.hcp_ids[:200]]
    batch = client.post(
        "/v1/recommendations/batch",
        json={"hcp_ids": ids, "k": 1, "channel": "email"},
        headers=keys.channel,
    ).json()
    picked = next(r for r in batch["results"] if r["items"])
    complaint = {
        "event_id": "sg-spam-1",
        "event_type": "spamreport",
        "hcp_id": picked["hcp_id"],
        "recommendation_id": picked["recommendation_id"],
        "action_id": picked["items"][0]["action_id"],
    }
    response = client.post("/v1/feedback", json={"events": [complaint]}, headers=keys.channel)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["accepted"] == 1 and result["rejected"] == []
    (note,) = result["uncounted"]
    assert note["message"] == (
        "opt-out stored: event_type 'spamreport' (a spam complaint) read as 'opted_out'"
    )
    again = client.post(
        "/v1/recommendations/batch",
        json={"hcp_ids": [picked["hcp_id"]], "k": 1, "channel": "email"},
        headers=keys.channel,
    ).json()
    assert again["results"][0]["items"] == []
    explained = client.post(
        "/v1/recommendations", json={"hcp_id": picked["hcp_id"], "explain": True}
    ).json()
    said = [why for reasons in explained["excluded"].values() for why in reasons]
    assert any(why.startswith("consent: opted out of email on ") for why in said), said
    # The e-mail is withdrawn, not every channel: the complaint named an e-mail send.
    assert not any("opted out of every channel" in why for why in said), said
    # Its resend is the same event.
    assert client.post("/v1/feedback", json=complaint).json()["duplicates"] == 1


def test_an_event_naming_an_action_its_answer_did_not_serve_is_stored_and_said(
    client: TestClient, trained
) -> None:
    """An e-mail system that joined its sends to the wrong answer hears of it: the
    delivery is stored as what was done instead, and said under uncounted."""
    hcp_id, body = _hcp_with_actions(client, trained)
    served = {i["action_id"] for i in body["items"]}
    model, _ = registry.load_alias(trained.settings)
    other = next(a for a in model.catalog["action_id"] if a not in served)
    sent = {
        "event_id": "instead-1",
        "event_type": "opened",
        "hcp_id": hcp_id,
        "recommendation_id": body["recommendation_id"],
        "action_id": other,
    }
    response = client.post("/v1/feedback", json={"events": [sent]})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["accepted"] == 1
    (note,) = result["uncounted"]
    assert note["index"] == 0 and note["event_id"] == "instead-1"
    assert note["message"] == (
        f"stored, but recommendation '{body['recommendation_id']}' did not serve action "
        f"'{other}' (it served {', '.join(sorted(served))}): counted as done instead of "
        "what was served; if it was not, send the action_id of that answer's item"
    )
    # Naming a served item says nothing.
    item = {**sent, "event_id": "served-1", "action_id": body["items"][0]["action_id"]}
    assert client.post("/v1/feedback", json=item).json()["uncounted"] == []
