"""API keys and roles: 401 without a valid key, 403 outside a role's rights or territory."""

from __future__ import annotations

import json
import logging
import re
import uuid
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from nextbest.api.app import create_app
from nextbest.service.apikeys import (
    ApiKeyError,
    KeyStore,
    ReloadingKeyStore,
    add_key_to_file,
    hash_key,
    new_key,
)

from .conftest import CHANNEL_KEY, keys_cli, keys_cli_refused


def _hcp(client: TestClient, *, inside: bool, territory: str) -> str:
    r = client.app.state.runtime.recommender
    rows = [i for i, t in enumerate(r.territory) if (t == territory) == inside]
    return str(r.hcp_ids[rows[0]])


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-key"),
        pytest.param({"Authorization": "Bearer not-a-key-at-all-000"}, id="wrong-bearer"),
        pytest.param({"X-API-Key": "wrong"}, id="wrong-header"),
        pytest.param({"Authorization": "Basic abc"}, id="other-scheme"),
    ],
)
def test_no_valid_key_is_401(client: TestClient, headers: dict) -> None:
    client.headers.clear()
    response = client.post("/v1/recommendations", json={"hcp_id": "H000001"}, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert client.post("/v1/feedback", json={}, headers=headers).status_code == 401
    assert client.post("/v1/admin/reload", headers=headers).status_code == 401


@pytest.mark.parametrize("path", ["/v1/recommendations", "/v1/feedback"])
def test_a_malformed_body_without_a_key_is_401_not_a_schema_hint(
    client: TestClient, keys, path: str
) -> None:
    # JSON that cannot be parsed is refused before any dependency runs; a caller
    # without a key must still get 401, not a 422 describing what the route expects.
    client.headers.clear()
    body = {"content": b'{"hcp_id": ', "headers": {"Content-Type": "application/json"}}
    refused = client.post(path, **body)
    assert refused.status_code == 401, refused.text
    assert refused.headers["www-authenticate"] == "Bearer"
    with_key = client.post(path, content=body["content"], headers={**body["headers"], **keys.admin})
    assert with_key.status_code == 422
    assert with_key.json()["detail"][0]["type"] == "json_invalid"


def test_x_api_key_header_works(client: TestClient, keys) -> None:
    client.headers.clear()
    hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
    response = client.post(
        "/v1/recommendations", json={"hcp_id": hcp}, headers={"X-API-Key": keys.channel_key}
    )
    assert response.status_code == 200


def test_a_bearer_key_is_checked_before_x_api_key_and_another_scheme_is_passed_over(
    client: TestClient, keys
) -> None:
    """As docs/serving.md ("Auth") says: with both headers the bearer key decides; an
    Authorization header of another scheme (a proxy's Basic) leaves X-API-Key to decide."""
    client.headers.clear()
    hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
    valid, unknown = keys.channel_key, "nb_not-a-key-0123456789abcdef"

    def status_with(headers: dict[str, str]) -> int:
        return client.post("/v1/recommendations", json={"hcp_id": hcp}, headers=headers).status_code

    assert status_with({"Authorization": f"Bearer {unknown}", "X-API-Key": valid}) == 401
    assert status_with({"Authorization": f"Bearer {valid}", "X-API-Key": unknown}) == 200
    assert status_with({"Authorization": "Basic dXNlcjpwYXNz", "X-API-Key": valid}) == 200


def test_a_key_header_sent_twice_with_two_keys_is_refused_naming_it(
    client: TestClient, keys
) -> None:
    """A proxy that adds its own key beside the client's sends two Authorization (or
    X-API-Key) headers: the first was checked, whichever it was, so the same client was
    served as a rep or as an admin by the order of its headers. Which key was meant
    cannot be told: 401 saying so. The same key twice is that key."""
    client.headers.clear()
    hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
    admin, rep = keys.admin["Authorization"], keys.rep["Authorization"]
    for name, first, second in (
        ("Authorization", admin, rep),
        ("Authorization", rep, admin),
        ("X-API-Key", keys.channel_key, admin.removeprefix("Bearer ")),
    ):
        response = client.post(
            "/v1/recommendations", json={"hcp_id": hcp}, headers=[(name, first), (name, second)]
        )
        assert response.status_code == 401, response.text
        assert response.json()["detail"] == (
            f"{name} is sent 2 times with different keys: send one key, in one {name} header"
        )
        assert response.headers["WWW-Authenticate"] == "Bearer"
    same = client.post(
        "/v1/recommendations",
        json={"hcp_id": hcp},
        headers=[("Authorization", admin), ("Authorization", f"{admin} ")],
    )
    assert same.status_code == 200, same.text
    proxy = client.post(  # another scheme beside the bearer key is not a key
        "/v1/recommendations",
        json={"hcp_id": hcp},
        headers=[("Authorization", "Basic dXNlcjpwYXNz"), ("Authorization", admin)],
    )
    assert proxy.status_code == 200, proxy.text


def test_probes_need_no_key_and_metrics_a_monitor_or_admin_key(client: TestClient, keys) -> None:
    """Load balancers probe /healthz and /readyz without a key. /metrics answers a
    monitor (a scraper's) or admin key only: its holdout counters, read around one's
    own request, would tell a rep or a mailer whether its HCP was held out. A monitor
    key opens nothing else."""
    client.headers.clear()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    for method in (client.get, client.head):
        refused = method("/metrics")
        assert refused.status_code == 401, refused.text
        assert refused.headers["www-authenticate"] == "Bearer"
    assert (
        client.get("/metrics", headers={"Authorization": "Bearer not-a-key-at-all-000"}).status_code
        == 401
    )
    for headers in (keys.monitor, keys.admin):
        scraped = client.get("/metrics", headers=headers)
        assert scraped.status_code == 200, scraped.text
        assert "nextbest_answers_total" in scraped.text
    for headers, role in ((keys.channel, "channel"), (keys.rep, "rep")):
        refused = client.get("/metrics", headers=headers)
        assert refused.status_code == 403
        assert refused.json()["detail"] == (
            f"role '{role}' may not use this route (allowed: monitor, admin)"
        )
    hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
    for response in (
        client.post("/v1/recommendations", json={"hcp_id": hcp}, headers=keys.monitor),
        client.post("/v1/recommendations/batch", json={"hcp_ids": [hcp]}, headers=keys.monitor),
        client.post("/v1/feedback", json={}, headers=keys.monitor),
        client.post("/v1/admin/reload", headers=keys.monitor),
        client.get(f"/v1/reps/{keys.rep_name}/suggestions", headers=keys.monitor),
    ):
        assert response.status_code == 403, response.text
        assert response.json()["detail"].startswith("role 'monitor' may not use this route")


def test_metrics_without_a_key_when_the_setting_says_so(api_settings, keys) -> None:
    """NEXTBEST_METRICS_AUTH=false serves /metrics to anyone (a scraper that cannot
    send a key); every /v1 route still asks for one."""
    settings = api_settings.model_copy(update={"metrics_auth": False})
    with TestClient(create_app(settings)) as open_metrics:
        assert open_metrics.get("/metrics").status_code == 200
        assert open_metrics.post("/v1/admin/reload").status_code == 401
        assert open_metrics.post("/v1/feedback", json={}).status_code == 401


def test_a_monitor_key_added_by_the_cli_reads_metrics_at_once(
    client: TestClient, api_settings
) -> None:
    """`nextbest keys add prometheus --role monitor` prints a key the running server
    takes for /metrics from the next scrape on, and says what it is for; one asked
    with a territory is refused, the file left as it was."""
    path = str(api_settings.api_keys_file)
    added = keys_cli("add", "prometheus-2", "--role", "monitor", "--file", path)
    assert added.exit_code == 0, added.output
    assert "a monitor key reads GET /metrics and nothing else" in added.output
    key = next(line for line in added.stdout.splitlines() if line.startswith("nb_"))
    client.headers.clear()
    scraped = client.get("/metrics", headers={"Authorization": f"Bearer {key}"})
    assert scraped.status_code == 200, scraped.text
    refused = keys_cli_refused(
        api_settings.api_keys_file, "add", "p3", "--role", "monitor", "--territory-id", "T1"
    )
    assert "a monitor key reads /metrics only, so it takes no --territory-id" in refused, refused


@pytest.mark.parametrize("field", ["territory_id", "purpose"])
def test_a_monitor_key_takes_no_territory_or_purpose(tmp_path: Path, field: str) -> None:
    value = {"territory_id": "T001", "purpose": "medical"}[field]
    path = tmp_path / "api_keys.yaml"
    path.write_text(
        yaml.safe_dump(
            {"keys": [{"name": "prom", "role": "monitor", field: value, "key": "k" * 20}]}
        )
    )
    with pytest.raises(ApiKeyError) as refused:
        KeyStore.load(path=path, env={})
    assert str(refused.value).endswith(
        f"(prom): a monitor key reads /metrics only, so it takes no '{field}'"
    ), str(refused.value)


def test_rep_sees_only_its_territory(client: TestClient, keys) -> None:
    inside = _hcp(client, inside=True, territory=keys.territory)
    outside = _hcp(client, inside=False, territory=keys.territory)
    ok = client.post("/v1/recommendations", json={"hcp_id": inside}, headers=keys.rep)
    assert ok.status_code == 200
    denied = client.post("/v1/recommendations", json={"hcp_id": outside}, headers=keys.rep)
    assert denied.status_code == 403
    assert keys.territory in denied.json()["detail"]
    event = {"event_id": "x-out", "event_type": "opened", "hcp_id": outside}
    assert client.post("/v1/feedback", json=event, headers=keys.rep).status_code == 403
    event = {"event_id": "x-in", "event_type": "opened", "hcp_id": inside}
    assert client.post("/v1/feedback", json=event, headers=keys.rep).status_code == 200
    padded = {"event_id": "x-pad", "event_type": "opened", "hcp_id": f" {inside} "}
    assert client.post("/v1/feedback", json=padded, headers=keys.rep).status_code == 200
    # In a batch, an event outside the territory is rejected alone (403 for it), the
    # others stored: a CRM syncing 500 decisions does not lose 499 for one.
    batch = [
        {"event_id": "b-in", "event_type": "opened", "hcp_id": inside},
        {"event_id": "b-out", "event_type": "opened", "hcp_id": outside},
    ]
    mixed = client.post("/v1/feedback", json={"events": batch}, headers=keys.rep)
    assert mixed.status_code == 207, mixed.text
    answer = mixed.json()
    assert answer["accepted"] == 1
    [refused] = answer["rejected"]
    assert (refused["index"], refused["status"]) == (1, 403)
    assert keys.territory in refused["message"] and outside in refused["message"]
    every = client.post("/v1/feedback", json={"events": batch[1:]}, headers=keys.rep)
    assert every.status_code == 403 and every.json()["accepted"] == 0


def test_a_rep_decision_outside_the_territory_names_the_hcp(client: TestClient, keys) -> None:
    """The rep route says which HCP is outside the territory, as /v1/feedback does."""
    outside = _hcp(client, inside=False, territory=keys.territory)
    event = {"event_id": "x-out", "event_type": "accepted", "hcp_id": outside}
    feedback = client.post("/v1/feedback", json=event, headers=keys.rep)
    decision = {
        "recommendation_id": "0" * 32,
        "hcp_id": f" {outside} ",  # read as the event schema reads it
        "action_id": "A001",
        "decision": "accept",
    }
    rep = client.post(f"/v1/reps/{keys.rep_name}/feedback", json=decision, headers=keys.rep)
    assert (feedback.status_code, rep.status_code) == (403, 403)
    said = rep.json()["detail"]
    assert f"HCP {outside} is outside it" in said
    assert said == feedback.json()["detail"]


def test_a_rep_learns_nothing_of_other_territories_from_a_refusal(client: TestClient, keys) -> None:
    inside = _hcp(client, inside=True, territory=keys.territory)
    outside = _hcp(client, inside=False, territory=keys.territory)
    # Another system stored an opt-out for an HCP of another territory under an id a
    # rep can guess; a rep reusing it is told the id is taken, not what it holds.
    taken = {"event_id": "unsub-881", "event_type": "opted_out", "hcp_id": outside}
    assert client.post("/v1/feedback", json=taken).status_code == 200  # admin
    probe = {"event_id": "unsub-881", "event_type": "opened", "hcp_id": inside}
    refused = client.post("/v1/feedback", json=probe, headers=keys.rep)
    assert refused.status_code == 422
    said = refused.json()["rejected"][0]["message"]
    assert "already stored for another event" in said
    assert outside not in said and "opted_out" not in said
    # Nor to whom another territory's recommendation was served.
    served = client.post("/v1/recommendations", json={"hcp_id": outside}).json()
    named = {**probe, "event_id": "p-2", "recommendation_id": served["recommendation_id"]}
    refused = client.post("/v1/feedback", json=named, headers=keys.rep)
    said = refused.json()["rejected"][0]["message"]
    assert "does not match recommendation" in said and outside not in said

    # Nor whether an HCP it may not see exists: one answer for both, on every route
    # that takes an hcp_id from a rep.
    def answers(hcp: str) -> list[tuple[int, str]]:
        event = {"event_id": f"p-{hcp}", "event_type": "opened", "hcp_id": hcp}
        decision = {
            "recommendation_id": "0" * 32,
            "hcp_id": hcp,
            "action_id": "A001",
            "decision": "accept",
        }
        sent = [
            client.post("/v1/recommendations", json={"hcp_id": hcp}, headers=keys.rep),
            client.post("/v1/feedback", json=event, headers=keys.rep),
            client.post(f"/v1/reps/{keys.rep_name}/feedback", json=decision, headers=keys.rep),
        ]
        batch = client.post("/v1/feedback", json={"events": [event, probe]}, headers=keys.rep)
        said = [(r.status_code, r.json()["detail"].replace(hcp, "<id>")) for r in sent]
        [first, *_] = batch.json()["rejected"]
        return [*said, (first["status"], first["message"].replace(hcp, "<id>"))]

    other, unknown = answers(outside), answers("H-NOWHERE")
    assert {status for status, _ in other} == {403}
    assert other == unknown


def test_each_feedback_event_records_the_key_that_sent_it(client: TestClient, keys) -> None:
    from sqlalchemy import select

    from nextbest.storage.tables import FeedbackEvent

    inside = _hcp(client, inside=True, territory=keys.territory)
    out = {"event_type": "opted_out", "hcp_id": inside, "channel": "email"}
    sent = {
        "by-channel": keys.channel,
        "by-rep": keys.rep,
        "by-admin": keys.admin,
    }
    for event_id, headers in sent.items():
        answer = client.post("/v1/feedback", json={**out, "event_id": event_id}, headers=headers)
        assert answer.status_code == 200, answer.text
    # A resend by another key is the same event: a duplicate, its sender kept.
    again = client.post("/v1/feedback", json={**out, "event_id": "by-rep"}, headers=keys.channel)
    assert again.json()["duplicates"] == 1
    with client.app.state.runtime.sessions() as session:
        rows = session.execute(select(FeedbackEvent.event_id, FeedbackEvent.requester)).all()
    stored = {event_id: requester for event_id, requester in rows}
    assert stored == {"by-channel": "crm-email", "by-rep": keys.rep_name, "by-admin": "ops-admin"}


def test_a_rep_may_record_an_opt_out_but_not_consent_given_again(client: TestClient, keys) -> None:
    inside = _hcp(client, inside=True, territory=keys.territory)
    out = {"event_id": "rep-out", "event_type": "opted_out", "hcp_id": inside, "channel": "email"}
    assert client.post("/v1/feedback", json=out, headers=keys.rep).status_code == 200
    back = {**out, "event_id": "rep-in", "event_type": "opted_in"}
    refused = client.post("/v1/feedback", json=back, headers=keys.rep)
    assert refused.status_code == 403
    assert "may record an opt-out but not consent given again" in refused.text
    assert client.post("/v1/feedback", json=back, headers=keys.channel).status_code == 200


def test_a_rep_cannot_make_another_territorys_opt_out_lost_by_taking_its_id_first(
    client: TestClient, keys
) -> None:
    mine = _hcp(client, inside=True, territory=keys.territory)
    theirs = _hcp(client, inside=False, territory=keys.territory)
    taken = {"event_id": f"optout-{theirs}", "event_type": "opted_out", "hcp_id": mine}
    planted = client.post("/v1/feedback", json={**taken, "channel": "rep_phone"}, headers=keys.rep)
    assert planted.status_code == 200, planted.text
    withdrawal = {"event_id": f"optout-{theirs}", "event_type": "opted_out", "hcp_id": theirs}
    kept = client.post("/v1/feedback", json=withdrawal, headers=keys.channel)
    assert kept.status_code == 200 and kept.json()["accepted"] == 1, kept.text
    [said] = kept.json()["uncounted"]
    assert re.match(r"stored under event_id 'opted_out-[0-9a-f]{32}'", said["message"]), said
    answer = client.post("/v1/recommendations", json={"hcp_id": theirs}, headers=keys.channel)
    assert answer.json()["items"] == [], answer.text  # opted out of every channel


def test_a_rep_may_not_record_outcomes_which_come_from_the_data_feed(
    client: TestClient, keys
) -> None:
    inside = _hcp(client, inside=True, territory=keys.territory)
    visit = {"event_id": "rep-visit", "event_type": "completed", "hcp_id": inside}
    visit["channel"] = "rep_visit"
    nrx = {"event_id": "rep-nrx", "event_type": "outcome", "hcp_id": inside, "value": 5}
    answer = client.post("/v1/feedback", json={"events": [visit, nrx]}, headers=keys.rep)
    assert answer.status_code == 207, answer.text  # the visit is stored, the outcome is not
    assert answer.json()["accepted"] == 1
    [refused] = answer.json()["rejected"]
    assert refused["event_id"] == "rep-nrx" and refused["status"] == 403
    assert "may not record outcomes" in refused["message"]
    alone = client.post("/v1/feedback", json=nrx, headers=keys.rep)
    assert alone.status_code == 403, alone.text
    assert client.post("/v1/feedback", json=nrx, headers=keys.channel).status_code == 200


def test_rep_cannot_read_another_reps_plan_or_use_admin_and_batch(client: TestClient, keys) -> None:
    assert client.get("/v1/reps/rep-2/suggestions", headers=keys.rep).status_code == 403
    assert client.get(f"/v1/reps/{keys.rep_name}/suggestions", headers=keys.rep).status_code == 200
    assert client.post("/v1/admin/reload", headers=keys.rep).status_code == 403
    batch = client.post("/v1/recommendations/batch", json={"hcp_ids": ["H1"]}, headers=keys.rep)
    assert batch.status_code == 403


def test_channel_may_recommend_and_batch_but_not_admin_or_reps(client: TestClient, keys) -> None:
    hcp = _hcp(client, inside=False, territory=keys.territory)
    assert (
        client.post("/v1/recommendations", json={"hcp_id": hcp}, headers=keys.channel).status_code
        == 200
    )
    assert (
        client.post(
            "/v1/recommendations/batch", json={"hcp_ids": [hcp]}, headers=keys.channel
        ).status_code
        == 200
    )
    assert client.post("/v1/admin/reload", headers=keys.channel).status_code == 403
    assert client.get("/v1/reps/rep-1/suggestions", headers=keys.channel).status_code == 403


def test_requester_is_the_key_name_and_keys_are_never_logged(
    client: TestClient, keys, caplog: pytest.LogCaptureFixture
) -> None:
    from nextbest.storage.tables import Recommendation

    hcp = _hcp(client, inside=True, territory=keys.territory)
    with caplog.at_level(logging.DEBUG):
        body = client.post("/v1/recommendations", json={"hcp_id": hcp}, headers=keys.channel).json()
    runtime = client.app.state.runtime
    assert runtime.reclog.flush()
    with runtime.sessions() as session:
        assert session.get(Recommendation, body["recommendation_id"]).requester == "crm-email"
    text = caplog.text
    assert keys.channel_key not in text and hash_key(keys.channel_key) not in text
    assert hcp not in text, "request logs carry no HCP identifiers"
    assert any(getattr(r, "requester", None) == "crm-email" for r in caplog.records)


def test_a_request_id_made_by_the_server_is_a_new_uuid4_each_time(client: TestClient) -> None:
    made = [client.get("/healthz").headers["X-Request-ID"] for _ in range(50)]
    assert len(set(made)) == len(made)
    for request_id in made:
        parsed = uuid.UUID(request_id)
        assert parsed.hex == request_id and parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_each_answer_carries_a_request_id_its_log_line_names(
    client: TestClient, keys, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="nextbest.access"):
        denied = client.post(
            "/v1/recommendations", json={"hcp_id": "H1"}, headers={"Authorization": ""}
        )
        kept = client.get("/healthz", headers={"X-Request-ID": "crm-7f3a:retry.2"})
        odd = client.get("/healthz", headers={"X-Request-ID": "has spaces & more"})
        # A key (as `nextbest keys add` makes them) sent in the wrong header is not
        # written into the logs.
        key = new_key()
        pasted = client.get("/healthz", headers={"X-Request-ID": key})
    made = denied.headers["X-Request-ID"]
    assert pasted.status_code == 200 and pasted.headers["X-Request-ID"] != key
    assert key not in caplog.text and key[3:] not in caplog.text
    assert denied.status_code == 401 and len(made) == 32
    assert kept.headers["X-Request-ID"] == "crm-7f3a:retry.2"  # the caller's own, kept
    assert odd.headers["X-Request-ID"] not in ("has spaces & more", made)
    logged = {getattr(r, "request_id", None): getattr(r, "status", None) for r in caplog.records}
    assert logged[made] == 401 and logged["crm-7f3a:retry.2"] == 200
    # The refused caller's address is logged: the test client's, as it names itself.
    [refused] = [r for r in caplog.records if getattr(r, "request_id", None) == made]
    assert refused.client == "testclient" and refused.requester is None
    assert not hasattr(refused, "recommendation_id")  # nothing was answered


def test_a_request_id_that_is_a_key_the_server_holds_is_not_logged(
    client: TestClient, keys, caplog: pytest.LogCaptureFixture
) -> None:
    """Keys of the key file or NEXTBEST_API_KEYS may be any text, not only the
    ``nb_...`` that `nextbest keys add` makes: one sent as X-Request-ID (the admin
    key, stored hashed; the channel key, stored in plain) was kept as the request's
    id and written in its log lines."""
    from .conftest import ADMIN_KEY

    with caplog.at_level(logging.DEBUG):
        answers = {
            key: client.get("/healthz", headers={"X-Request-ID": key})
            for key in (ADMIN_KEY, keys.channel_key)
        }
        # Refused before its key is even read: the id is still not the key.
        refused = client.post(
            "/v1/recommendations",
            json={"hcp_id": "H1"},
            headers={"Authorization": "", "X-Request-ID": ADMIN_KEY},
        )
    assert refused.status_code == 401
    answers["refused"] = refused
    for answer in answers.values():
        assert answer.headers["X-Request-ID"] not in (ADMIN_KEY, keys.channel_key)
        assert len(answer.headers["X-Request-ID"]) == 32  # one made for it
    assert ADMIN_KEY not in caplog.text and keys.channel_key not in caplog.text
    logged = [getattr(r, "request_id", None) for r in caplog.records if r.name == "nextbest.access"]
    assert logged == [a.headers["X-Request-ID"] for a in answers.values()]


def test_a_request_id_that_is_the_requests_own_credential_is_not_logged(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that copies the credential it sends into X-Request-ID: a key this
    server does not hold (another environment's, one revoked, a gateway's token) is
    a secret all the same, and was written into the 401's log line."""
    foreign = "prod-key-7Hq2Lw9xVb3Kt8Mz"
    with caplog.at_level(logging.DEBUG):
        answers = [
            client.post(
                "/v1/recommendations",
                json={"hcp_id": "H1"},
                headers={"Authorization": f"Bearer {foreign}", "X-Request-ID": foreign},
            ),
            client.post(
                "/v1/recommendations",
                json={"hcp_id": "H1"},
                headers={"Authorization": "", "X-API-Key": foreign, "X-Request-ID": foreign},
            ),
        ]
    for answer in answers:
        assert answer.status_code == 401
        assert answer.headers["X-Request-ID"] != foreign
        assert len(answer.headers["X-Request-ID"]) == 32  # one made for it
    assert foreign not in caplog.text
    # An id that merely resembles the key is the caller's own, and kept.
    kept = client.get("/healthz", headers={"X-Request-ID": foreign[:-1]})
    assert kept.headers["X-Request-ID"] == foreign[:-1]


def test_a_served_answers_log_line_names_its_recommendation_id(
    client: TestClient, keys, caplog: pytest.LogCaptureFixture
) -> None:
    """Support holds a recommendation_id: its access log line (request id, duration,
    requester) is found by it, and the answer's X-Request-ID leads back."""
    hcp = _hcp(client, inside=True, territory=keys.territory)
    with caplog.at_level(logging.INFO, logger="nextbest.access"):
        served = client.post("/v1/recommendations", json={"hcp_id": hcp}, headers=keys.channel)
    [line] = [r for r in caplog.records if r.name == "nextbest.access"]
    assert line.recommendation_id == served.json()["recommendation_id"]
    assert line.request_id == served.headers["X-Request-ID"] and line.requester == "crm-email"


def test_env_keys_and_auth_off(api_settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "NEXTBEST_API_KEYS",
        '[{"name": "env-admin", "role": "admin", "key": "env-key-0123456789abcdef"}]',
    )
    with TestClient(create_app(api_settings)) as c:
        ok = c.get(
            "/v1/reps/rep-1/suggestions?territory_id=T001",
            headers={"X-API-Key": "env-key-0123456789abcdef"},
        )
        assert ok.status_code in (200, 404)
    monkeypatch.delenv("NEXTBEST_API_KEYS")
    with TestClient(create_app(api_settings.model_copy(update={"auth_enabled": False}))) as c:
        hcp = str(c.app.state.runtime.recommender.hcp_ids[0])
        assert c.post("/v1/recommendations", json={"hcp_id": hcp}).status_code == 200


def test_auth_off_is_said_by_the_app_unless_its_starter_said_it(
    api_settings, caplog: pytest.LogCaptureFixture
) -> None:
    """An app started by other means (``uvicorn --factory``, a test) says auth is off
    as it starts; each worker of ``nextbest serve`` (its factory, create_served_app)
    leaves it to ``serve``, which says it once, with the address (tests/e2e)."""
    off = api_settings.model_copy(update={"auth_enabled": False})
    for said in (False, True):
        caplog.clear()
        with (
            caplog.at_level(logging.WARNING, logger="nextbest.api.app"),
            TestClient(create_app(off, auth_off_said=said)),
        ):
            pass
        warned = [r for r in caplog.records if "auth is OFF" in r.getMessage()]
        assert len(warned) == (0 if said else 1), caplog.text


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        pytest.param([{"role": "admin", "key": "k" * 20}], "'name' is required", id="no-name"),
        pytest.param([{"name": "a", "role": "boss", "key": "k" * 20}], "'role'", id="bad-role"),
        pytest.param([{"name": "r", "role": "rep", "key": "k" * 20}], "territory_id", id="rep"),
        *(
            pytest.param(
                [
                    {"name": "ok", "role": "admin", "key": "k" * 20},
                    {"name": name, "role": "rep", "territory_id": "T1", "key": "j" * 20},
                ],
                re.escape(f"NEXTBEST_API_KEYS: keys[1] ({name!r}): a rep key's name is its rep_id"),
                id=f"rep-name-{label}",
            )
            for label, name in [
                ("slash", "rep t001/x"),
                ("space", "rep t001"),
                ("dots", ".."),
                ("leading-dash", "-rep"),
                ("percent", "rep%2F1"),
                ("question-mark", "rep?1"),
                ("non-ascii", "répé"),
            ]
        ),
        pytest.param([{"name": "a", "role": "admin"}], "exactly one of", id="no-key"),
        pytest.param([{"name": "a", "role": "admin", "key": "short"}], "16\\+", id="short"),
        pytest.param([{"name": "a", "role": "admin", "key": ""}], "16\\+", id="empty"),
        *(
            pytest.param(
                [
                    {"name": "ok", "role": "admin", "key": "k" * 20},
                    {"name": "crm", "role": "channel", "key": key},
                ],
                re.escape(f"NEXTBEST_API_KEYS: keys[1] (crm): 'key' {why} ("),
                id=f"unsendable-{label}",
            )
            for label, key, why in [
                ("leading-space", " " + "k" * 20, "starts or ends with whitespace"),
                ("trailing-line-break", "k" * 20 + "\n", "starts or ends with whitespace"),
                ("line-break-inside", "k" * 10 + "\n" + "k" * 10, "holds a control character"),
                ("nul", "k" * 10 + "\x00" + "k" * 10, "holds a control character"),
                ("delete", "k" * 10 + "\x7f" + "k" * 10, "holds a control character"),
                ("accent", "Schlüssel-0123456789", "holds a character outside ASCII"),
            ]
        ),
        pytest.param(
            [{"name": "a", "role": "admin", "key_sha256": "abc"}], "64 hex", id="bad-hash"
        ),
        pytest.param(
            [{"name": "a", "role": "admin", "key": "k" * 20, "password": "x"}],
            "unknown field",
            id="extra",
        ),
        pytest.param(
            [
                {"name": "a", "role": "admin", "key": "k" * 20},
                {"name": "a", "role": "channel", "key": "j" * 20},
            ],
            "unique",
            id="dupe",
        ),
    ],
)
def test_bad_key_entries_name_the_entry(entries: list, match: str) -> None:
    import json

    with pytest.raises(ApiKeyError, match=match):
        KeyStore.load(path=None, env={"NEXTBEST_API_KEYS": json.dumps(entries)})


def test_a_key_no_client_can_send_is_refused_naming_its_line_never_the_key(
    tmp_path: Path,
) -> None:
    """Such a key was accepted, and every request its client made got 401."""
    path = tmp_path / "keys.yaml"
    path.write_text(
        "keys:\n"
        f"  - {{name: ops, role: admin, key_sha256: {hash_key('k' * 20)}}}\n"
        '  - {name: crm, role: channel, key: "crm-Schlüssel-2026-07"}\n'
    )
    with pytest.raises(ApiKeyError) as refused:
        KeyStore.load(path=path, env={})
    said = str(refused.value)
    assert said.startswith(f"{path}, line 3: keys[1] (crm): 'key' holds a character outside ")
    assert "Schlüssel" not in said
    assert "Schlüssel" not in keys_cli_refused(path, "add", "sms", "--role", "channel")


def test_a_key_with_spaces_inside_is_one_a_client_can_send(
    api_settings, keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A header keeps the spaces inside its value: such a key is no error."""
    phrase = "correct horse battery staple"
    monkeypatch.setenv(
        "NEXTBEST_API_KEYS", json.dumps([{"name": "p", "role": "admin", "key": phrase}])
    )
    with TestClient(create_app(api_settings)) as c:
        for header in ({"X-API-Key": phrase}, {"Authorization": f"Bearer {phrase}"}):
            assert c.post("/v1/admin/reload", headers=header).status_code == 200


def test_add_key_to_file_stores_only_the_hash(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    key = add_key_to_file(path, name="demo", role="channel")
    assert key not in path.read_text() and hash_key(key) in path.read_text()
    store = KeyStore.load(path=path, env={})
    principal = store.identify(key)
    assert principal is not None and principal.name == "demo" and principal.role == "channel"
    assert store.identify(key + "x") is None


def test_keys_from_the_cli_apply_to_a_running_server(
    client: TestClient, api_settings, keys
) -> None:
    path = str(api_settings.api_keys_file)
    inside = _hcp(client, inside=True, territory=keys.territory)
    added = keys_cli(
        "add", "rep-2", "--role", "rep", "--territory-id", keys.territory, "--file", path
    )
    assert added.exit_code == 0, added.output
    new_key = added.stdout.strip().splitlines()[-1]
    assert new_key not in Path(path).read_text()
    as_new = {"Authorization": f"Bearer {new_key}"}
    ok = client.post("/v1/recommendations", json={"hcp_id": inside}, headers=as_new)
    assert ok.status_code == 200, ok.text

    listed = keys_cli("list", "--file", path)
    assert listed.exit_code == 0 and "rep-2" in listed.stdout and "ops-admin" in listed.stdout
    assert hash_key(new_key) not in listed.stdout

    # The same name again is refused without --replace, and names the key.
    again = keys_cli("add", "rep-2", "--role", "rep", "--territory-id", "T9", "--file", path)
    assert again.exit_code == 2 and "rep-2" in again.output
    rotated = keys_cli(
        "add",
        "rep-2",
        "--role",
        "rep",
        "--territory-id",
        keys.territory,
        "--replace",
        "--file",
        path,
    )
    assert rotated.exit_code == 0, rotated.output
    newer = {"Authorization": f"Bearer {rotated.stdout.strip().splitlines()[-1]}"}
    assert (
        client.post("/v1/recommendations", json={"hcp_id": inside}, headers=as_new).status_code
        == 401
    )
    assert (
        client.post("/v1/recommendations", json={"hcp_id": inside}, headers=newer).status_code
        == 200
    )

    # A removed key stops working at the next request; the others keep working.
    assert (
        client.post("/v1/recommendations", json={"hcp_id": inside}, headers=keys.rep).status_code
        == 200
    )
    removed = keys_cli("remove", "rep-1", "--file", path)
    assert removed.exit_code == 0, removed.output
    assert (
        client.post("/v1/recommendations", json={"hcp_id": inside}, headers=keys.rep).status_code
        == 401
    )
    assert (
        client.post("/v1/recommendations", json={"hcp_id": inside}, headers=keys.admin).status_code
        == 200
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # Named as the command takes them, and the role given quoted: a key file's
        # messages name the field and quote no value (a line may hold a key).
        pytest.param(
            ["add", "x", "--role", "rep"],
            "new key (x): a rep key needs --territory-id",
            id="rep-without-territory",
        ),
        pytest.param(
            ["add", "x", "--role", "boss"],
            "new key (x): --role must be one of admin, channel, rep, monitor, not 'boss'",
            id="unknown-role",
        ),
        pytest.param(
            ["add", "x", "--role", "Rep"],
            "new key (x): --role must be one of admin, channel, rep, monitor, not 'Rep' "
            "(lower case)",
            id="role-not-lower-case",
        ),
        pytest.param(
            ["add", "x", "--role", "nb_" + "k" * 30],  # a key pasted after the wrong option
            "--role must be one of admin, channel, rep, monitor, not <33 characters>",
            id="role-as-long-as-a-key",
        ),
        pytest.param(
            ["add", "x", "--role", "rep", "--territory-id", "T001", "--channel", "sms"],
            "new key (x): --channel binds a channel key to the channels it speaks for; a key "
            "of role rep takes none",
            id="channel-of-a-rep-key",
        ),
        pytest.param(["remove", "nobody"], "no key named 'nobody'", id="unknown-name"),
        pytest.param(
            ["add", "rep t001/x", "--role", "rep", "--territory-id", "T001"],
            "new key ('rep t001/x'): a rep key's name is its rep_id",
            id="rep-name-not-a-path-segment",
        ),
    ],
)
def test_keys_cli_refuses_bad_input_and_leaves_the_file(
    tmp_path: Path, args: list[str], message: str
) -> None:
    path = tmp_path / "keys.yaml"
    add_key_to_file(path, name="ops", role="admin")
    said = " ".join(keys_cli_refused(path, *args).split())
    assert message in said, said
    assert "k" * 30 not in said


def test_a_rep_name_that_is_no_path_segment_is_refused_in_the_key_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    entry = {"name": "rep t001/x", "role": "rep", "territory_id": "T001", "key": "k" * 20}
    path.write_text(yaml.safe_dump({"keys": [entry]}))
    with pytest.raises(ApiKeyError) as refused:
        KeyStore.load(path=path, env={})
    said = str(refused.value)
    # safe_dump sorts the fields: the name is on line 3, after "keys:" and "- key: ...".
    assert said.startswith(f"{path}, line 3: keys[0] ('rep t001/x'): a rep key's name is its")
    assert "ASCII letters and digits, '.', '_', '-' and '@' (no accents" in said
    # Other keys' names are only logged: any name will do.
    path.write_text(yaml.safe_dump({"keys": [{**entry, "role": "channel"}]}))
    assert KeyStore.load(path=path, env={}).principals[0].name == "rep t001/x"


@pytest.mark.parametrize("role", ["admin", "channel", "rep"])
def test_a_key_name_longer_than_the_logged_requester_is_refused_naming_the_entry(
    tmp_path: Path, role: str
) -> None:
    """A key's name is the requester every answer and event it sends is stored with,
    128 characters at most: PostgreSQL cut a longer one short (SQLite kept it
    whole), so the log named a key the file does not have."""
    long = "r" * 129
    entry = {"name": long, "role": role, "territory_id": "T001", "key": "k" * 20}
    if role != "rep":
        del entry["territory_id"]
    said = (
        f"({'r' * 40!r}... (129 characters)): 'name' is at most 128 characters, all the "
        "recommendation log and the feedback store keep of the requester it is logged as"
    )
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump({"keys": [entry]}, sort_keys=False))
    with pytest.raises(ApiKeyError) as refused:
        KeyStore.load(path=path, env={})
    assert str(refused.value).startswith(f"{path}, line 2: keys[0] {said}"), str(refused.value)
    with pytest.raises(ApiKeyError, match=re.escape(f"NEXTBEST_API_KEYS: keys[0] {said}")):
        KeyStore.load(path=None, env={"NEXTBEST_API_KEYS": json.dumps([entry])})
    with pytest.raises(ApiKeyError, match=re.escape(said)):
        add_key_to_file(tmp_path / "new.yaml", name=long, role=role, territory_id="T001")
    assert not (tmp_path / "new.yaml").exists()
    path.write_text(yaml.safe_dump({"keys": [{**entry, "name": long[:128]}]}))
    assert KeyStore.load(path=path, env={}).principals[0].name == long[:128]


def test_a_rep_key_named_with_every_allowed_character_reaches_its_plan(
    client: TestClient, api_settings, keys
) -> None:
    name = "Jane.Doe_2@acme-t1"
    key = add_key_to_file(
        api_settings.api_keys_file, name=name, role="rep", territory_id=keys.territory
    )
    as_rep = {"Authorization": f"Bearer {key}"}
    plan = client.get(f"/v1/reps/{name}/suggestions", headers=as_rep)
    assert plan.status_code == 200, plan.text
    assert plan.json()["rep_id"] == name
    s = plan.json()["suggestions"][0]
    decision = {k: s[k] for k in ("recommendation_id", "hcp_id", "action_id")}
    decided = client.post(
        f"/v1/reps/{name}/feedback", json={**decision, "decision": "accept"}, headers=as_rep
    )
    assert decided.status_code == 200 and decided.json()["accepted"] == 1, decided.text


def test_an_invalid_key_file_keeps_the_keys_in_force(
    client: TestClient, api_settings, keys, caplog: pytest.LogCaptureFixture
) -> None:
    hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
    api_settings.api_keys_file.write_text("keys: [{name: half-written")
    with caplog.at_level(logging.ERROR, logger="nextbest.service.apikeys"):
        answer = client.post("/v1/recommendations", json={"hcp_id": hcp}, headers=keys.admin)
    assert answer.status_code == 200
    assert "invalid, keeping the keys" in caplog.text


def test_a_key_file_that_disappears_keeps_the_keys_in_force(
    api_settings, keys, caplog: pytest.LogCaptureFixture
) -> None:
    path = api_settings.api_keys_file
    with TestClient(create_app(api_settings), headers=dict(keys.admin)) as client:
        hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
        text = path.read_text()
        path.unlink()  # a delete-then-write deployment, half way
        with caplog.at_level(logging.ERROR, logger="nextbest.service.apikeys"):
            kept = client.post("/v1/recommendations", json={"hcp_id": hcp}, headers=keys.channel)
        assert kept.status_code == 200
        assert "is gone, keeping the keys" in caplog.text
        gone = client.get("/readyz").json()["keys_error"]
        assert "is gone" in gone and str(path) not in gone
        # A reload (SIGHUP's, with one worker) keeps them, and its answer says why.
        reloaded = client.post("/v1/admin/reload")
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json()["key_notes"] == [gone]

        # Written again without crm-email: read, and the revocation applies.
        entries = [e for e in yaml.safe_load(text)["keys"] if e["name"] != "crm-email"]
        path.write_text(yaml.safe_dump({"keys": entries}))
        assert "keys_error" not in client.get("/readyz").json()
        revoked = client.post("/v1/recommendations", json={"hcp_id": hcp}, headers=keys.channel)
        assert revoked.status_code == 401


def test_a_reread_asked_for_says_each_time_what_is_wrong_with_the_key_file(
    api_settings, caplog: pytest.LogCaptureFixture
) -> None:
    """What a single worker's SIGHUP asks of its keys: the file read at once (not at
    the next request), and a file gone or invalid said at each signal, not only at
    the check that first found it; a file back is read and said."""
    path = api_settings.api_keys_file
    store = ReloadingKeyStore(path=path, env={})
    text = path.read_text()

    def said() -> list[str]:  # the errors, and the file read again (not its warnings)
        return [
            r.getMessage()
            for r in caplog.records
            if r.levelno >= logging.ERROR or "re-read" in r.getMessage()
        ]

    gone = f"API key file {path} is gone, keeping the keys"
    path.unlink()
    with caplog.at_level(logging.INFO, logger="nextbest.service.apikeys"):
        store.reread()
        assert said() == [gone]
        assert store.error is not None  # a request's check: said already, not again
        store.reread()
        assert said() == [gone, gone]
        path.write_text("keys: [{name: half-written")
        store.reread()
        store.reread()
        invalid = said()[2:]
        assert len(invalid) == 2 and invalid[0] == invalid[1], invalid
        assert invalid[0].startswith("API key file changed but is invalid, keeping the keys: ")
        path.write_text(text)
        store.reread()
        store.reread()  # nothing wrong: nothing to say
        assert said()[4:] == [f"API keys re-read from {path}: 4 keys"], said()
    assert store.identify(CHANNEL_KEY) is not None


def test_a_rep_key_outside_the_served_territories_gets_a_note(
    api_settings, keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nextbest.settings import get_settings

    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(api_settings.resolved_models_dir))
    get_settings.cache_clear()
    try:
        path = str(tmp_path / "keys.yaml")
        typo = keys_cli("add", "rep-x", "--role", "rep", "--territory-id", "T-typo", "--file", path)
        known = keys_cli(
            "add", "rep-y", "--role", "rep", "--territory-id", keys.territory, "--file", path
        )
        other_case = keys.territory.lower()
        cased = keys_cli(
            "add", "rep-z", "--role", "rep", "--territory-id", other_case, "--file", path
        )
    finally:
        get_settings.cache_clear()
    assert typo.exit_code == 0 and known.exit_code == 0, typo.output + known.output
    said = " ".join(typo.stderr.split())
    assert "has no HCP in territory T-typo: this rep's" in said, typo.stderr
    assert "has no HCP" not in known.stderr
    assert f"in territory {other_case} (did you mean {keys.territory}? territories match " in (
        " ".join(cased.stderr.split())
    ), cased.stderr
    # The key itself stays the last line of stdout, for scripts.
    assert typo.stdout.strip().splitlines()[-1].startswith("nb_")

    # `keys list --check-territories` notes every rep key so locked out, not only the
    # one just added; `keys list` alone reads the key file and nothing else.
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(api_settings.resolved_models_dir))
    get_settings.cache_clear()
    try:
        plain = keys_cli("list", "--file", path)
        listed = keys_cli("list", "--file", path, "--check-territories")
    finally:
        get_settings.cache_clear()
    assert plain.exit_code == 0 and "has no HCP" not in plain.output, plain.output
    assert "rep-x" in plain.stdout and "T-typo" in plain.stdout
    said = " ".join(listed.stderr.split())
    assert listed.exit_code == 0, listed.output
    assert "has no HCP in territory T-typo: the requests of rep key 'rep-x' are refused" in said
    assert (
        f"in territory {other_case} (did you mean {keys.territory}? territories match exactly): "
        "the requests of rep key 'rep-z' are refused until it does"
    ) in said, said
    assert "'rep-y'" not in said


def test_keys_list_needs_no_model_even_with_rep_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listing rep keys loaded the served model (seconds, and more for a large one) to
    check their territories, and failed, after the table, on a registry it could not
    read: listing keys reads the key file alone. The check is asked for by name, and a
    registry it cannot read is then said in one line (exit 2), not skipped in silence."""
    from nextbest.settings import get_settings

    models = tmp_path / "models"
    models.mkdir()
    (models / "mlflow.db").write_text("not a database\n")  # a damaged registry store
    path = str(tmp_path / "keys.yaml")
    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(models))
    get_settings.cache_clear()
    try:
        added = keys_cli("add", "rep-x", "--role", "rep", "--territory-id", "T1", "--file", path)
        listed = keys_cli("list", "--file", path)
        checked = keys_cli("list", "--file", path, "--check-territories")
    finally:
        get_settings.cache_clear()
    # The key is added (and printed last, for scripts) whatever the registry's state;
    # the check it could not make is said, no longer an exit 2 after the key was added.
    assert added.exit_code == 0, added.output
    assert added.stdout.strip().splitlines()[-1].startswith("nb_")
    assert "note: territory T1 was not checked against the served model: " in (
        " ".join(added.stderr.split())
    ), added.stderr
    assert listed.exit_code == 0, listed.output
    assert "rep-x" in listed.stdout and "T1" in listed.stdout
    assert listed.stderr == "", listed.stderr
    assert checked.exit_code == 2, checked.output
    assert "rep-x" in checked.stdout
    said = " ".join(checked.stderr.split())
    assert said.startswith(
        "error: the territories of the rep keys were not checked against the served model: "
    ), said
    assert f"{models / 'mlflow.db'}" in said and "file is not a database" in said, said


def test_a_server_notes_rep_keys_of_territories_without_hcps_at_start_and_reload(
    api_settings, keys, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a territory alignment file, a rep key whose territory the served model
    has no HCP in was refused everything without a word in the server's log."""
    path = api_settings.api_keys_file
    add_key_to_file(path, name="rep-typo", role="rep", territory_id="T-typo")
    note = (
        "rep keys of territories T-typo have no HCP of the served model: their requests "
        "are refused until a model version with some is served (or their territory_id in "
        "the key file is corrected)"
    )
    with (
        caplog.at_level(logging.WARNING, logger="nextbest.service.runtime"),
        TestClient(create_app(api_settings), headers=dict(keys.admin)) as client,
    ):
        assert f"API keys: {note}" in caplog.text, caplog.text
        answer = client.post("/v1/admin/reload")
    assert answer.status_code == 200 and answer.json()["key_notes"] == [note], answer.text


ENV_ADMIN = '[{"name": "envk", "role": "admin", "key": "ENV-PLAINTEXT-SECRET-0123456789"}]'


def test_keys_cli_refuses_a_file_a_server_would_refuse_with_the_environment_keys(
    api_settings, keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name in both the file and NEXTBEST_API_KEYS makes a server keep its old keys
    and ignore the file's changes; the CLI refuses to write such a file, saying why,
    so a later revocation still applies."""
    monkeypatch.setenv("NEXTBEST_API_KEYS", ENV_ADMIN)
    path = api_settings.api_keys_file
    with TestClient(create_app(api_settings), headers=dict(keys.admin)) as client:
        hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
        before = path.read_text()
        clash = keys_cli("add", "envk", "--role", "channel", "--file", str(path))
        assert clash.exit_code == 2, clash.output
        said = " ".join(clash.output.split())
        assert "not changed: a server would refuse" in said
        assert "'envk' (in " in said and "and NEXTBEST_API_KEYS)" in said
        assert path.read_text() == before

        removed = keys_cli("remove", "crm-email", "--file", str(path))
        assert removed.exit_code == 0, removed.output
        revoked = client.post("/v1/recommendations", json={"hcp_id": hcp}, headers=keys.channel)
        assert revoked.status_code == 401
        assert "keys_error" not in client.get("/readyz").json()


def test_readyz_says_when_an_invalid_key_file_keeps_old_keys_in_force(
    api_settings, keys, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NEXTBEST_API_KEYS", ENV_ADMIN)
    path = api_settings.api_keys_file
    with TestClient(create_app(api_settings), headers=dict(keys.admin)) as client:
        assert "keys_error" not in client.get("/readyz").json()
        # Edited by hand: crm-email revoked, but envk added, which the variable also names.
        path.write_text(
            yaml.safe_dump(
                {"keys": [{"name": "envk", "role": "channel", "key_sha256": hash_key("x" * 20)}]}
            )
        )
        with caplog.at_level(logging.ERROR, logger="nextbest.service.apikeys"):
            ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text  # it still serves, with the old keys
        error = ready.json()["keys_error"]
        assert "keys read before are in force" in error and "server log names" in error
        # The route needs no key: the entry at fault (a person's user id, for a rep
        # key) and the file's path are in the operator's log, not in its answer.
        assert "'envk'" in caplog.text and "'envk'" not in error and str(path) not in error
        hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
        still = client.post("/v1/recommendations", json={"hcp_id": hcp}, headers=keys.channel)
        assert still.status_code == 200  # the revocation is not applied: hence keys_error

        # The CLI refuses to touch the file while it stays invalid with the variable...
        listed = keys_cli("list", "--file", str(path))
        assert listed.exit_code == 2 and "a server would refuse these keys" in listed.output
        assert keys_cli("add", "other", "--role", "admin", "--file", str(path)).exit_code == 2
        # ...and removing the clashing name is the change that fixes it.
        fixed = keys_cli("remove", "envk", "--file", str(path))
        assert fixed.exit_code == 0, fixed.output
        assert "keys_error" not in client.get("/readyz").json()
        gone = client.post("/v1/recommendations", json={"hcp_id": hcp}, headers=keys.channel)
        assert gone.status_code == 401


SECRET = "PLAINTEXT-SECRET-xyz98765432"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            f"keys:\n  - name: crm\n    role: channel\n    key: {SECRET}: oops\n",
            "not valid YAML, line 4, column 38: mapping values are not allowed here",
            id="syntax-error-on-a-key-line",
        ),
        pytest.param(
            f"keys:\n  - {{name: a, role: admin, key: *{SECRET}}}\n",
            "not valid YAML, line 2, column 33: found undefined alias '...'",
            id="key-read-as-an-alias",
        ),
        pytest.param(
            f"keys:\n  - name: a\n    role: admin\n    key: !{SECRET}\n",
            "line 4, column 10: could not determine a constructor for the tag '...'",
            id="key-read-as-a-tag",
        ),
        pytest.param(
            f"keys:\n  - {{name: a, role: admin, {SECRET}}}\n",
            "keys[0]: unknown field <28 characters> (allowed here: name, role, territory_id,",
            id="key-written-as-a-field",
        ),
    ],
)
def test_key_file_errors_name_line_and_column_never_the_text(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(ApiKeyError) as raised:
        KeyStore.load(path=path, env={})
    assert str(raised.value).startswith(f"{path}")
    assert message in str(raised.value)
    assert "PLAINTEXT" not in str(raised.value)


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        pytest.param(
            "  - name: ops\n    role: boss\n    key: {secret}\n",
            "line 6: keys[1] (ops): 'role' must be one of admin, channel, rep, monitor",
            id="bad-value",
        ),
        pytest.param(
            "  - name: ops\n    role: admin\n    key: {secret}\n    scope: all\n",
            "line 8: keys[1]: unknown field 'scope' (allowed here: name, role, territory_id, "
            "purpose, channels, key, key_sha256, previous_key_sha256, previous_valid_until)",
            id="unknown-key",
        ),
        pytest.param(
            "  - name: ops\n    role: admin\n    key: {secret}\n    purpse: medical\n",
            "line 8: keys[1]: unknown field 'purpse' (did you mean 'purpose'?)",
            id="misspelt-key",
        ),
        pytest.param(
            "  - role: admin\n    key: {secret}\n",
            "line 5: keys[1]: 'name' is required",
            id="missing-key-at-its-entry",
        ),
        pytest.param(
            "  - name: rep-t9\n    role: rep\n    key: {secret}\n",
            "line 5: keys[1] (rep-t9): a rep key needs 'territory_id'",
            id="missing-territory-at-its-entry",
        ),
        pytest.param(
            "  - name: rep-t9\n    role: rep\n    key: {secret}\n    territory_id: 010\n",
            "line 8: keys[1] (rep-t9): 'territory_id' is not text; write it as the hcps "
            "file does, in quotes if it is digits ('010')",
            id="territory-written-as-a-number",
        ),
        pytest.param(
            "  - name: ops\n    role: admin\n    key: short\n",
            "line 7: keys[1] (ops): 'key' must be a string of 16+ characters",
            id="bad-key-its-line-not-its-text",
        ),
    ],
)
def test_key_file_errors_name_the_line_never_the_value(
    tmp_path: Path, entry: str, said: str
) -> None:
    path = tmp_path / "keys.yaml"
    first = "keys:\n  - name: crm\n    role: channel\n    key: " + "k" * 20 + "\n"
    path.write_text(first + entry.format(secret=SECRET))
    with pytest.raises(ApiKeyError) as refused:
        KeyStore.load(path=path, env={})
    assert str(refused.value) == f"{path}, {said}"
    assert "PLAINTEXT" not in str(refused.value)


def test_a_name_given_twice_in_the_key_file_names_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(
        "keys:\n  - {name: ops, role: admin, key: " + "k" * 20 + "}\n"
        "  - {name: crm, role: channel, key: " + "j" * 20 + "}\n"
        "  - {name: ops, role: channel, key: " + "m" * 20 + "}\n"
    )
    with pytest.raises(ApiKeyError) as refused:
        KeyStore.load(path=path, env={})
    assert str(refused.value) == (
        f"API key names must be unique; repeated: 'ops' (in {path}, line 2 and {path}, line 4)"
    )


SHARED = "shared-key-0123456789abcdef"
ENV_SHARED = f'[{{"name": "env-ops", "role": "admin", "key": "{SHARED}"}}]'


@pytest.mark.parametrize(
    ("text", "env", "given_as"),
    [
        pytest.param(
            f"keys:\n  - {{name: crm, role: channel, key: {SHARED}}}\n"
            f"  - {{name: ops, role: admin, key_sha256: {hash_key(SHARED)}}}\n",
            {},
            "'crm' (in {path}, line 2) and 'ops' (in {path}, line 3)",
            id="plaintext-and-its-hash",
        ),
        pytest.param(
            f"keys:\n  - {{name: crm, role: channel, key_sha256: {hash_key(SHARED).upper()}}}\n"
            f"  - {{name: ops, role: admin, key_sha256: {hash_key(SHARED)}}}\n",
            {},
            "'crm' (in {path}, line 2) and 'ops' (in {path}, line 3)",
            id="one-hash-twice-in-other-case",
        ),
        pytest.param(
            f"keys:\n  - {{name: crm, role: channel, key: {SHARED}}}\n",
            {"NEXTBEST_API_KEYS": ENV_SHARED},
            "'crm' (in {path}, line 2) and 'env-ops' (in NEXTBEST_API_KEYS)",
            id="file-and-variable",
        ),
        pytest.param(
            f"keys:\n  - {{name: ops, role: admin, key_sha256: {hash_key('n' * 20)},\n"
            f"      previous_key_sha256: {hash_key(SHARED)},\n"
            "      previous_valid_until: '2999-01-01T00:00:00Z'}\n"
            f"  - {{name: crm, role: channel, key: {SHARED}}}\n",
            {},
            "'ops' (in {path}, line 2) and 'crm' (in {path}, line 5)",
            id="a-retiring-key-as-another-entrys-key",
        ),
    ],
)
def test_a_key_given_twice_names_both_entries_never_the_key(
    tmp_path: Path, text: str, env: dict, given_as: str
) -> None:
    """The first entry holding a key won: removing it gave the key the other's role."""
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(ApiKeyError) as refused:
        KeyStore.load(path=path, env=env)
    said = str(refused.value)
    assert said.startswith(
        "API keys must be unique, each given under one name; the same key is given as "
        + given_as.format(path=path)
        + ": remove all but one of these entries"
    ), said
    assert SHARED not in said and hash_key(SHARED) not in said.lower()


def test_a_key_given_again_under_an_admin_name_is_refused_by_a_running_server(
    client: TestClient, api_settings, keys, caplog: pytest.LogCaptureFixture
) -> None:
    path = api_settings.api_keys_file
    with path.open("a") as file:
        file.write(f"- {{name: weak-admin, role: admin, key: {keys.channel_key}}}\n")
    with caplog.at_level(logging.ERROR, logger="nextbest.service.apikeys"):
        ready = client.get("/readyz")
    assert "keys read before are in force" in ready.json()["keys_error"]
    assert "'crm-email' (in " in caplog.text and "and 'weak-admin' (in " in caplog.text
    assert keys.channel_key not in caplog.text
    # The channel key stays crm-email's, and removing crm-email would hand it to
    # weak-admin: refused until the file gives the key once.
    as_admin = client.post("/v1/admin/reload", headers=keys.channel)
    assert as_admin.status_code == 403, as_admin.text
    said = " ".join(keys_cli_refused(path, "remove", "crm-email").split())
    assert "the same key is given as 'crm-email' (in " in said and keys.channel_key not in said


WEAK = "password12345678"


@pytest.mark.parametrize(
    ("mode", "plaintext", "warned"),
    [
        pytest.param(0o600, False, [], id="owner-only-hashes"),
        pytest.param(
            0o644,
            False,
            ["{path} can be read by users other than its owner (mode 0644): `chmod 600 {path}`"],
            id="world-readable",
        ),
        pytest.param(
            0o660,
            False,
            ["{path} can be read and changed by users other than its owner (mode 0660)"],
            id="group-writable",
        ),
        pytest.param(
            0o600,
            True,
            [
                "{path}: entry 'weak-admin' (line 3) holds its key in plaintext ('key'), "
                "which anyone who reads the file can use: give each a new key stored as its "
                "SHA-256 with `nextbest keys add NAME --role ROLE --replace`"
            ],
            id="plaintext-key",
        ),
    ],
)
def test_a_key_file_others_may_read_or_with_plaintext_keys_is_warned_of(
    tmp_path: Path, mode: int, plaintext: bool, warned: list[str]
) -> None:
    path = tmp_path / "keys.yaml"
    text = f"keys:\n  - {{name: ops, role: admin, key_sha256: {hash_key('k' * 20)}}}\n"
    if plaintext:
        text += f"  - {{name: weak-admin, role: admin, key: '{WEAK}'}}\n"
    path.write_text(text)
    path.chmod(mode)
    store = KeyStore.load(path=path, env={})
    assert len(store.warnings) == len(warned), store.warnings
    for said, expected in zip(store.warnings, warned, strict=True):
        assert said.startswith(expected.format(path=path)), said
        assert WEAK not in said


@pytest.mark.parametrize(
    ("mode", "warned"),
    [
        pytest.param(0o777, True, id="anyone-may-write"),
        pytest.param(0o1777, False, id="sticky-as-tmp"),
        pytest.param(0o775, False, id="group-may-write"),
        pytest.param(0o755, False, id="owner-writes"),
    ],
)
def test_a_key_file_in_a_directory_anyone_may_write_is_warned_of(
    tmp_path: Path, mode: int, warned: bool
) -> None:
    """Anyone who may write the directory may rename a file of their own over the
    key file, with an admin key in it: its mode 600 did not stop that."""
    directory = tmp_path / "models"
    path = directory / "api_keys.yaml"
    add_key_to_file(path, name="ops", role="admin")
    directory.chmod(mode)
    said = (
        f"{directory} (the directory of api_keys.yaml) can be changed by any user "
        f"(mode {mode:04o}): anyone could replace the key file with one holding a key of "
        f"their own; `chmod o-w {directory}`"
    )
    assert KeyStore.load(path=path, env={}).warnings == ((said,) if warned else ())
    listed = keys_cli("list", "--file", str(path))
    assert listed.exit_code == 0, listed.output
    assert (f"warning: {said}" in " ".join(listed.stderr.split())) is warned, listed.stderr


def test_a_running_server_and_keys_list_warn_of_an_unsafe_key_file(
    api_settings, keys, caplog: pytest.LogCaptureFixture
) -> None:
    """A plaintext admin key appended to a file all may read was taken in silence."""
    path = api_settings.api_keys_file
    hashed = f"key_sha256: {hash_key(keys.channel_key)}"
    path.write_text(path.read_text().replace(f"key: {keys.channel_key}", hashed))
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="nextbest.service.apikeys"):
        with TestClient(create_app(api_settings), headers=dict(keys.admin)) as client:
            assert "unsafe" not in caplog.text
            with path.open("a") as file:
                file.write(f"- {{name: weak-admin, role: admin, key: '{WEAK}'}}\n")
            path.chmod(0o644)
            weak = client.post("/v1/admin/reload", headers={"X-API-Key": WEAK})
            assert weak.status_code != 401  # documented: a plaintext entry is a key...
        # ...but the server says the file is unsafe, at the re-read and at start.
        with TestClient(create_app(api_settings), headers=dict(keys.admin)):
            pass
    unsafe = [r.getMessage() for r in caplog.records if "API key file unsafe" in r.getMessage()]
    readable = f"{path} can be read by users other than its owner (mode 0644): `chmod 600"
    plain = f"{path}: entry 'weak-admin' (line "
    assert [m for m in unsafe if readable in m] and len(unsafe) == 4, unsafe
    assert len([m for m in unsafe if plain in m and "holds its key in plaintext" in m]) == 2
    assert WEAK not in caplog.text

    listed = keys_cli("list", "--file", str(path))
    said = " ".join(listed.stderr.split())
    assert listed.exit_code == 0 and f"warning: {readable}" in said, said
    assert f"warning: {plain}" in said and WEAK not in listed.output
    path.chmod(0o600)
    assert "can be read" not in keys_cli("list", "--file", str(path)).stderr


def test_a_key_file_broken_on_a_plaintext_key_line_is_not_logged(
    client: TestClient, api_settings, keys, caplog: pytest.LogCaptureFixture
) -> None:
    path = api_settings.api_keys_file
    path.write_text(path.read_text().replace(f"key: {keys.channel_key}", f"key: {SECRET}: oops"))
    hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
    with caplog.at_level(logging.DEBUG):
        kept = client.post("/v1/recommendations", json={"hcp_id": hcp}, headers=keys.channel)
    assert kept.status_code == 200  # the keys read before are in force
    assert f"{path}: not valid YAML, line " in caplog.text
    error = client.get("/readyz").json()["keys_error"]
    listed = keys_cli("list", "--file", str(path))
    assert listed.exit_code == 2 and "not valid YAML, line" in " ".join(listed.output.split())
    for said in (caplog.text, error, listed.output):
        assert "PLAINTEXT" not in said and "oops" not in said


def test_listing_no_keys_says_what_a_server_does_and_how_to_add_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty table said nothing of a server that will refuse every caller."""
    monkeypatch.delenv("NEXTBEST_API_KEYS", raising=False)
    path = tmp_path / "api_keys.yaml"
    listed = keys_cli("list", "--file", str(path))
    said = " ".join(listed.stdout.split())
    assert listed.exit_code == 0 and f"no API key file at {path}" in said, said
    assert "answers every /v1 request 401" in said and "`nextbest keys add NAME" in said, said
    assert not path.exists()
    assert keys_cli("add", "ops", "--role", "admin", "--file", str(path)).exit_code == 0
    assert "ops" in keys_cli("list", "--file", str(path)).stdout
    assert keys_cli("remove", "ops", "--file", str(path)).exit_code == 0
    said = " ".join(keys_cli("list", "--file", str(path)).stdout.split())
    assert f"no API keys in {path}" in said, said


def test_a_running_server_warns_when_only_the_key_files_mode_changes(
    api_settings, keys, caplog: pytest.LogCaptureFixture
) -> None:
    """A chmod changes neither the file's time nor its size: it was not re-read, so
    a file opened to every user stayed unwarned until its next edit."""
    path = api_settings.api_keys_file
    hashed = f"key_sha256: {hash_key(keys.channel_key)}"
    path.write_text(path.read_text().replace(f"key: {keys.channel_key}", hashed))
    path.chmod(0o600)
    with (
        caplog.at_level(logging.WARNING, logger="nextbest.service.apikeys"),
        TestClient(create_app(api_settings), headers=dict(keys.admin)) as client,
    ):
        assert "unsafe" not in caplog.text
        path.chmod(0o644)
        assert client.post("/v1/admin/reload").status_code == 200
    readable = f"{path} can be read by users other than its owner (mode 0644)"
    assert readable in caplog.text, caplog.text


def test_a_key_hashed_by_hand_as_operations_md_says_is_accepted(
    client: TestClient, api_settings
) -> None:
    """The command docs/operations.md gives for a key's SHA-256, run by a shell, makes
    an entry a running server accepts (`echo` would hash a newline too: 401)."""
    import os
    import subprocess

    doc = (Path(__file__).parents[2] / "docs" / "operations.md").read_text(encoding="utf-8")
    found = re.search(r"`(printf '%s' \"\$KEY\" \| sha256sum[^`]*)`", doc)
    assert found, "docs/operations.md gives no command for a key's SHA-256"
    key = "nb_by-hand-0123456789abcdef"
    digest = subprocess.run(
        ["bash", "-c", found[1]],
        env={**os.environ, "KEY": key},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    keys = api_settings.api_keys_file
    entries = yaml.safe_load(keys.read_text())
    entries["keys"].append({"name": "by-hand", "role": "channel", "key_sha256": digest})
    keys.write_text(yaml.safe_dump(entries))
    hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
    asked = client.post(
        "/v1/recommendations",
        json={"hcp_id": hcp},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert asked.status_code == 200, asked.text
