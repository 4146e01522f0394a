"""Channel keys bound to channels (``channels: [sms]``): the key file, ``nextbest
keys``, and what such a key may send and get."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient

from nextbest.contract.schema import channel_spelling as catalog_spelling
from nextbest.service.apikeys import ApiKeyError, KeyStore, add_key_to_file, channel_spelling
from nextbest.settings import Settings

from .conftest import Keys, held_out_this_week_or_next, keys_cli, keys_cli_refused

CHANNEL = {"name": "sms-gateway", "role": "channel", "key": "s" * 20}


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        pytest.param(
            {**CHANNEL, "role": "admin", "channels": ["sms"]},
            "'channels' binds a channel key to the channels it speaks for; a key of role "
            "admin takes none",
            id="admin",
        ),
        pytest.param(
            {
                "name": "r",
                "role": "rep",
                "territory_id": "T1",
                "key": "r" * 20,
                "channels": ["sms"],
            },
            "'channels' binds a channel key",
            id="rep",
        ),
        pytest.param(
            {**CHANNEL, "channels": []}, "'channels' must be a non-empty list", id="empty"
        ),
        pytest.param(
            {**CHANNEL, "channels": "sms"}, "'channels' must be a non-empty list", id="not-a-list"
        ),
        pytest.param(
            {**CHANNEL, "channels": ["sms", 7]},
            "'channels' must be a non-empty list of channel names",
            id="number",
        ),
        pytest.param(
            {**CHANNEL, "channels": ["sms", " "]},
            "'channels' must be a non-empty list of channel names",
            id="blank",
        ),
        pytest.param(
            {**CHANNEL, "channels": None},
            "'channels' must be a non-empty list of channel names",
            id="null",
        ),
        pytest.param(
            {**CHANNEL, "channels": [f"c{i}" * 10 for i in range(4)]},
            "'channels' joined with ',' must fit in 64 characters",
            id="too-long-to-log",
        ),
    ],
)
def test_bad_channels_name_the_entry_and_line(tmp_path: Path, entry: dict, match: str) -> None:
    ok = {"name": "ops", "role": "admin", "key": "a" * 20}
    said = f"({entry['name']}): {match}"
    with pytest.raises(ApiKeyError, match=re.escape(f"NEXTBEST_API_KEYS: keys[1] {said}")):
        KeyStore.load(path=None, env={"NEXTBEST_API_KEYS": json.dumps([ok, entry])})
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump({"keys": [entry]}, sort_keys=False))
    with pytest.raises(ApiKeyError) as refused:
        KeyStore.load(path=path, env={})
    line = 1 + next(i for i, t in enumerate(path.read_text().splitlines()) if "channels:" in t)
    assert str(refused.value).startswith(f"{path}, line {line}: keys[0] {said}"), str(refused.value)


def test_channels_are_spelled_as_the_catalog_spells_them() -> None:
    entry = {**CHANNEL, "channels": ["SMS", " Rep visit", "rep-visit", "e_mail"]}
    (principal,) = KeyStore.load(
        path=None, env={"NEXTBEST_API_KEYS": json.dumps([entry])}
    ).principals
    assert principal.channels == ("sms", "rep_visit", "e_mail")
    for name in ["SMS", " Rep  Visit ", "rep-visit", "E_Mail", "remote-detail\t"]:
        assert channel_spelling(name) == catalog_spelling(name)
    unbound = KeyStore.load(path=None, env={"NEXTBEST_API_KEYS": json.dumps([CHANNEL])})
    assert unbound.principals[0].channels is None


def test_keys_add_writes_channels_and_list_shows_them(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    added = keys_cli(
        "add",
        "gw",
        "--role",
        "channel",
        "--channel",
        "SMS",
        "--channel",
        "email",
        "--file",
        str(path),
    )
    assert added.exit_code == 0, added.output
    assert "channels sms, email only" in added.output
    key = added.stdout.strip().splitlines()[-1]
    (entry,) = yaml.safe_load(path.read_text())["keys"]
    assert entry["channels"] == ["sms", "email"]
    principal = KeyStore.load(path=path, env={}).identify(key)
    assert principal is not None and principal.channels == ("sms", "email")
    add_key_to_file(path, name="crm", role="channel")
    listed = keys_cli("list", "--file", str(path))
    assert listed.exit_code == 0, listed.output
    lines = {
        line.split()[1]: line
        for line in listed.stdout.splitlines()
        if "│ gw" in line or "│ crm" in line
    }
    assert "channels" in listed.stdout
    assert "sms, email" in lines["gw"] and "sms" not in lines["crm"]


def test_keys_add_refuses_channels_for_other_roles(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    add_key_to_file(path, name="ops", role="admin")
    said = keys_cli_refused(path, "add", "x", "--role", "admin", "--channel", "sms")
    # From the command line the option is named; the key file's field is named above.
    assert "new key (x): --channel binds a channel key" in said


@pytest.mark.parametrize(
    ("channels", "match"),
    [
        pytest.param(
            [""],
            "new key (x): --channel must name a channel (e.g. --channel sms, repeated for "
            "more); leave it out for a key of every channel",
            id="empty",
        ),
        pytest.param([" ", "sms"], "new key (x): --channel must name a channel", id="blank"),
        pytest.param(
            [f"channel-{i:03d}" for i in range(8)],
            "new key (x): --channel values joined with ',' must fit in",
            id="too-long",
        ),
    ],
)
def test_keys_add_refuses_bad_channels_naming_the_option(
    tmp_path: Path, channels: list[str], match: str
) -> None:
    """A refused --channel is said as the command line gave it, not as the key file's
    field (`'channels' must be a non-empty list ... [sms]`, a list nobody typed)."""
    path = tmp_path / "keys.yaml"
    add_key_to_file(path, name="ops", role="admin")
    options = [part for channel in channels for part in ("--channel", channel)]
    said = " ".join(keys_cli_refused(path, "add", "x", "--role", "channel", *options).split())
    assert match in said, said
    assert "'channels'" not in said and "[sms]" not in said, said


def _bound_key(client: TestClient, api_settings: Settings, name: str, channels: list[str]) -> dict:
    """A channel key bound to ``channels``, added to the running server's key file."""
    key = add_key_to_file(api_settings.api_keys_file, name=name, role="channel", channels=channels)
    return {"Authorization": f"Bearer {key}"}


def test_a_bound_key_gets_actions_of_its_channels_only(
    client: TestClient, api_settings: Settings
) -> None:
    from sqlalchemy import select

    from nextbest.loop.evidence import greedy_actions
    from nextbest.storage.tables import Recommendation

    webinar = _bound_key(client, api_settings, "webinar-gw", ["Webinar"])
    both = _bound_key(client, api_settings, "mail-and-webinar", ["webinar", "e-mail", "email"])
    runtime = client.app.state.runtime
    hcps = [str(h) for h in runtime.recommender.hcp_ids[:40]]
    unbound, only_webinar, only_two = set(), set(), set()
    for hcp in hcps:
        body = {"hcp_id": hcp, "k": 10}
        unbound |= {
            i["channel"] for i in client.post("/v1/recommendations", json=body).json()["items"]
        }
        answer = client.post("/v1/recommendations", json=body, headers=webinar)
        assert answer.status_code == 200, answer.text
        only_webinar |= {i["channel"] for i in answer.json()["items"]}
        only_two |= {
            i["channel"]
            for i in client.post("/v1/recommendations", json=body, headers=both).json()["items"]
        }
    assert unbound - {"webinar", "email"}, "other channels should be served to an unbound key"
    assert only_webinar == {"webinar"}
    assert only_two and only_two <= {"webinar", "email"}

    batch = client.post(
        "/v1/recommendations/batch", json={"hcp_ids": hcps, "k": 5}, headers=webinar
    )
    assert batch.status_code == 200, batch.text
    served = {i["channel"] for r in batch.json()["results"] for i in r["items"]}
    assert served == {"webinar"}

    # Why the others are left out, when asked.
    explained = client.post(
        "/v1/recommendations", json={"hcp_id": hcps[0], "explain": True}, headers=webinar
    ).json()
    assert any(
        "this API key speaks for webinar only" in why
        for reasons in explained["excluded"].values()
        for why in reasons
    )

    # Answers are logged with the channels they were limited to, and replayed on them.
    assert runtime.reclog.flush()
    with runtime.sessions() as session:
        logged = session.execute(
            select(
                Recommendation.hcp_id,
                Recommendation.created_at,
                Recommendation.requester,
                Recommendation.channel_filter,
            )
        ).all()
    filters = {row.requester: row.channel_filter for row in logged}
    assert filters["webinar-gw"] == "webinar" and filters["mail-and-webinar"] == "email,webinar"
    two = [row for row in logged if row.requester == "mail-and-webinar"]
    decisions = pd.DataFrame(
        {
            "hcp_id": [row.hcp_id for row in two],
            "timestamp": [row.created_at for row in two],
            "purpose": "promotional",
            "channel_filter": [row.channel_filter for row in two],
        }
    )
    model = runtime.recommender.model
    channel_of = dict(zip(model.catalog["action_id"], model.catalog["channel"], strict=True))
    replayed = [a for a in greedy_actions(model, decisions) if a is not None]
    assert replayed and {channel_of[a] for a in replayed} <= {"email", "webinar"}


@pytest.mark.parametrize("route", ["/v1/recommendations", "/v1/recommendations/batch"])
def test_a_bound_key_asking_for_another_channel_is_403(
    client: TestClient, api_settings: Settings, route: str
) -> None:
    webinar = _bound_key(client, api_settings, "webinar-gw", ["webinar"])
    hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
    body = {"hcp_id": hcp} if route == "/v1/recommendations" else {"hcp_ids": [hcp]}
    refused = client.post(route, json={**body, "channel": "email"}, headers=webinar)
    assert refused.status_code == 403
    assert refused.json()["detail"] == (
        "API key 'webinar-gw' speaks for channel(s) webinar only: it may not ask for channel "
        "'email'"
    )
    allowed = client.post(route, json={**body, "channel": "webinar"}, headers=webinar)
    assert allowed.status_code == 200, allowed.text
    # A channel of 50,000 characters is quoted in part, from any key.
    long = "x" * 50_000
    for headers in (webinar, {}):
        refused = client.post(route, json={**body, "channel": long}, headers=headers)
        assert refused.status_code in (403, 422), refused.text[:300]
        assert f"'{'x' * 40}'... (50,000 characters)" in refused.text
        assert len(refused.content) < 1000


@pytest.mark.parametrize("route", ["/v1/recommendations", "/v1/recommendations/batch"])
def test_a_bound_key_misspelling_a_channel_is_told_the_channel_it_means(
    client: TestClient, api_settings: Settings, route: str
) -> None:
    """A channel no action has is a typo, from a bound key too: a 422 naming the
    channel meant, not a 403 saying the key may not ask for it."""
    webinar = _bound_key(client, api_settings, "webinar-gw", ["webinar"])
    hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
    body = {"hcp_id": hcp} if route == "/v1/recommendations" else {"hcp_ids": [hcp]}
    refused = client.post(route, json={**body, "channel": "webinr"}, headers=webinar)
    assert refused.status_code == 422, refused.text
    (detail,) = refused.json()["detail"]
    assert detail["loc"] == ["body", "channel"]
    assert detail["msg"].startswith("unknown channel 'webinr'; did you mean 'webinar'? (known: ")
    # A channel of the catalog that the key does not speak for is still its own 403.
    assert client.post(route, json={**body, "channel": "email"}, headers=webinar).status_code == 403


def _email_hcp(client: TestClient) -> tuple[str, str]:
    """An HCP who gets e-mail items, and the id of a recommendation serving only e-mail."""
    for hcp_id in client.app.state.runtime.recommender.hcp_ids[:200].tolist():
        if held_out_this_week_or_next(client, str(hcp_id)):
            continue
        body = client.post(
            "/v1/recommendations", json={"hcp_id": str(hcp_id), "channel": "email"}
        ).json()
        if body["items"]:
            return str(hcp_id), body["recommendation_id"]
    raise AssertionError("no HCP gets e-mail")


def _hcp_served_on(client: TestClient, channels: set[str]) -> tuple[str, dict]:
    """An HCP whose 20-item answer serves every one of ``channels`` and some other
    channel too, and that answer."""
    for hcp_id in client.app.state.runtime.recommender.hcp_ids[:200].tolist():
        if held_out_this_week_or_next(client, str(hcp_id)):
            continue
        body = client.post("/v1/recommendations", json={"hcp_id": str(hcp_id), "k": 20}).json()
        served = {item["channel"] for item in body["items"]}
        if channels <= served and served - channels:
            return str(hcp_id), body
    raise AssertionError(f"no HCP is served {sorted(channels)} and another channel")


def _stored(client: TestClient) -> dict[str, tuple[str | None, str | None]]:
    """event_id -> (channel, requester) of every stored feedback event."""
    from sqlalchemy import select

    from nextbest.storage.tables import FeedbackEvent

    runtime = client.app.state.runtime
    with runtime.sessions() as session:
        rows = session.execute(
            select(FeedbackEvent.event_id, FeedbackEvent.channel, FeedbackEvent.requester)
        ).all()
    return {row.event_id: (row.channel, row.requester) for row in rows}


def test_events_about_other_channels_are_refused_one_by_one(
    client: TestClient, api_settings: Settings
) -> None:
    webinar = _bound_key(client, api_settings, "webinar-gw", ["webinar"])
    hcp, email_rec = _email_hcp(client)
    catalog = client.app.state.runtime.recommender.model.catalog
    email_action = str(catalog.loc[catalog["channel"] == "email", "action_id"].iat[0])
    events = [
        {"event_id": "ok-webinar", "event_type": "attended", "hcp_id": hcp, "channel": "webinar"},
        {"event_id": "no-email", "event_type": "opened", "hcp_id": hcp, "channel": "email"},
        {
            "event_id": "no-action",
            "event_type": "clicked",
            "hcp_id": hcp,
            "action_id": email_action,
        },
        {
            "event_id": "no-send",
            "event_type": "delivered",
            "hcp_id": hcp,
            "recommendation_id": email_rec,
            "channel": "webinar",
        },
        {"event_id": "ok-outcome", "event_type": "outcome", "hcp_id": hcp, "value": 2.0},
    ]
    answer = client.post("/v1/feedback", json={"events": events}, headers=webinar)
    assert answer.status_code == 207, answer.text
    body = answer.json()
    assert body["accepted"] == 2
    refused = {r["index"]: r for r in body["rejected"]}
    assert sorted(refused) == [1, 2, 3] and {r["status"] for r in refused.values()} == {403}
    assert refused[1]["message"] == (
        "event 1: channel 'email' is not one API key 'webinar-gw' speaks for (webinar)"
    )
    assert refused[2]["message"] == (
        "event 2: channel 'email' is not one API key 'webinar-gw' speaks for (webinar)"
    )
    assert refused[3]["message"] == (
        f"event 3: recommendation '{email_rec}' served channel(s) email: API key 'webinar-gw' "
        "speaks for webinar only"
    )
    stored = _stored(client)
    assert stored["ok-webinar"] == ("webinar", "webinar-gw")
    assert stored["ok-outcome"] == (None, "webinar-gw")
    assert not {"no-email", "no-action", "no-send"} & set(stored)

    # Every event of the batch refused for its channel: 403 for the whole.
    alone = client.post("/v1/feedback", json={"events": events[1:2]}, headers=webinar)
    assert alone.status_code == 403, alone.text
    # An unbound channel key and admin send them as before.
    assert client.post("/v1/feedback", json={"events": events[1:4]}).status_code == 200


def test_an_opt_out_without_channel_from_a_one_channel_key_withdraws_that_channel(
    client: TestClient, api_settings: Settings
) -> None:
    mail = _bound_key(client, api_settings, "mail-gw", ["email"])
    hcp, _ = _email_hcp(client)
    before = client.post("/v1/recommendations", json={"hcp_id": hcp, "k": 20}).json()
    assert {i["channel"] for i in before["items"]} - {"email"}, "other channels should be served"
    out = {"event_id": "stop-1", "event_type": "opted_out", "hcp_id": hcp}
    answer = client.post("/v1/feedback", json=out, headers=mail)
    assert answer.status_code == 200, answer.text
    (said,) = answer.json()["uncounted"]
    assert said["message"].startswith(
        "opt-out stored for channel 'email', the one API key 'mail-gw' speaks for"
    )
    assert _stored(client)["stop-1"] == ("email", "mail-gw")
    after = client.post("/v1/recommendations", json={"hcp_id": hcp, "k": 20}).json()
    assert after["items"] and all(i["channel"] != "email" for i in after["items"])
    # "all" is no way around it either.
    every = {**out, "event_id": "stop-2", "channel": "all"}
    assert client.post("/v1/feedback", json=every, headers=mail).status_code == 200
    assert _stored(client)["stop-2"] == ("email", "mail-gw")


@pytest.mark.parametrize(
    ("channel", "said"),
    [
        ("fax", "channel 'fax' is no catalog channel"),
        (
            "e" * 65,
            f"channel '{'e' * 40}'... (65 characters) left out (String should have at most 64 "
            "characters), as if none was named",
        ),
    ],
    ids=["unknown", "too-long"],
)
def test_an_opt_out_of_no_catalog_channel_from_a_one_channel_key_withdraws_that_channel(
    client: TestClient, api_settings: Settings, channel: str, said: str
) -> None:
    """A one-channel key's opt-out naming a channel the catalog does not have ('fax')
    was read as every channel, which the key does not speak for: refused with 403,
    the withdrawal lost. It withdraws the key's channel, as one naming none does."""
    mail = _bound_key(client, api_settings, "mail-gw", ["email"])
    hcp, _ = _email_hcp(client)
    out = {"event_id": "stop-1", "event_type": "opted_out", "hcp_id": hcp, "channel": channel}
    answer = client.post("/v1/feedback", json=out, headers=mail)
    assert answer.status_code == 200, answer.text
    (note,) = answer.json()["uncounted"]
    assert note["message"].startswith(
        "opt-out stored for channel 'email', the one API key 'mail-gw' speaks for"
    ), note
    assert said in note["message"], note
    assert _stored(client)["stop-1"] == ("email", "mail-gw")
    after = client.post("/v1/recommendations", json={"hcp_id": hcp, "k": 20}).json()
    assert after["items"] and all(i["channel"] != "email" for i in after["items"])
    # A catalog channel other than its own is still not the key's to withdraw.
    other = {**out, "event_id": "stop-2", "channel": "webinar"}
    refused = client.post("/v1/feedback", json=other, headers=mail)
    assert refused.status_code == 403, refused.text


def test_a_contact_without_channel_from_a_one_channel_key_counts_for_that_channel(
    client: TestClient, api_settings: Settings
) -> None:
    """An e-mail system's "delivered" is an e-mail: it counts against the e-mail caps
    (a cool-down), not only the all-channel budget, and a resend naming the channel
    is the same event."""
    mail = _bound_key(client, api_settings, "mail-gw", ["email"])
    hcp, _ = _email_hcp(client)
    sent = {"event_id": "sent-1", "event_type": "delivered", "hcp_id": hcp}
    answer = client.post("/v1/feedback", json=sent, headers=mail)
    assert answer.status_code == 200, answer.text
    assert answer.json()["uncounted"] == [], answer.text  # counted, nothing to say
    assert _stored(client)["sent-1"] == ("email", "mail-gw")
    again = client.post("/v1/feedback", json={**sent, "channel": "email"}, headers=mail)
    assert again.status_code == 200 and again.json()["duplicates"] == 1, again.text
    # The shipped rules give e-mail a 3-day cool-down: no e-mail for this HCP now.
    after = client.post("/v1/recommendations", json={"hcp_id": hcp, "k": 20}).json()
    assert after["items"] and all(i["channel"] != "email" for i in after["items"]), after
    # An unbound key's channel-less contact still counts in the budget only.
    other = {**sent, "event_id": "sent-2"}
    unbound = client.post("/v1/feedback", json=other)
    assert "all-channel budget only" in unbound.json()["uncounted"][0]["message"]
    assert _stored(client)["sent-2"][0] is None


def test_consent_for_every_channel_from_a_bound_key_is_refused(
    client: TestClient, api_settings: Settings
) -> None:
    mail = _bound_key(client, api_settings, "mail-gw", ["email"])
    two = _bound_key(client, api_settings, "mail-and-webinar", ["email", "webinar"])
    hcp, _ = _email_hcp(client)
    back = {"event_id": "in-1", "event_type": "opted_in", "hcp_id": hcp}
    refused = client.post("/v1/feedback", json={"events": [back]}, headers=mail)
    assert refused.status_code == 403, refused.text
    assert refused.json()["rejected"][0]["message"] == (
        "event 0: opted_in without a channel would grant consent for every channel: API key "
        "'mail-gw' speaks for email only; name the channel"
    )
    refused = client.post("/v1/feedback", json={**back, "event_id": "in-2"}, headers=two)
    assert refused.status_code == 403, refused.text
    assert "opted_in without a channel would grant consent for every channel" in refused.text
    assert not {"in-1", "in-2"} & set(_stored(client))
    # An opt-out is kept for the key's channels instead (a withdrawal is not lost).
    out = {"event_id": "out-1", "event_type": "opted_out", "hcp_id": hcp}
    assert client.post("/v1/feedback", json=out, headers=two).status_code == 200
    assert _stored(client)["out-1"] == ("email", "mail-and-webinar")
    # Named, the key's own channel is granted.
    named = client.post("/v1/feedback", json={**back, "channel": "email"}, headers=mail)
    assert named.status_code == 200, named.text
    assert _stored(client)["in-1"] == ("email", "mail-gw")


def test_the_reload_answer_names_keys_bound_to_channels_the_catalog_lacks(
    client: TestClient, api_settings: Settings
) -> None:
    assert client.post("/v1/admin/reload").json()["key_notes"] == []
    _bound_key(client, api_settings, "webinar-gw", ["webinar"])
    assert client.post("/v1/admin/reload").json()["key_notes"] == []
    _bound_key(client, api_settings, "sms-gw", ["SMS"])
    _bound_key(client, api_settings, "mixed", ["email", "fax"])
    channels = ", ".join(sorted(client.app.state.runtime.recommender.channels))
    answer = client.post("/v1/admin/reload")
    assert answer.status_code == 200, answer.text
    assert answer.json()["key_notes"] == [
        f"API key 'sms-gw' speaks for channel(s) sms, which no action of the served catalog "
        f"uses ({channels}): it gets no recommendation until one does",
        f"API key 'mixed' speaks for channel(s) fax, which no action of the served catalog "
        f"uses ({channels}): it gets recommendations of email",
    ]
    # Such a key is no error: it is served, with nothing of the missing channel.
    sms = _bound_key(client, api_settings, "sms-gw-2", ["sms"])
    hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
    answer = client.post("/v1/recommendations", json={"hcp_id": hcp}, headers=sms)
    assert answer.status_code == 200 and answer.json()["items"] == []
    # ... and replayed (the gate, the uplift report) as serving nothing, not as an error.
    from nextbest.loop.evidence import greedy_actions

    runtime = client.app.state.runtime
    decisions = pd.DataFrame(
        {"hcp_id": [hcp], "timestamp": [pd.Timestamp.now(tz="UTC")], "channel_filter": ["sms"]}
    )
    assert greedy_actions(runtime.recommender.model, decisions).tolist() == [None]


def test_an_opt_out_from_a_key_of_a_channel_the_catalog_lacks_is_kept_for_it(
    client: TestClient, api_settings: Settings
) -> None:
    """An SMS gateway's key bound to sms, before the catalog has SMS: its 'stop',
    naming sms or no channel, was read as every channel and refused with 403 ('would
    withdraw consent for every channel'), the withdrawal lost. It is kept for sms and
    said; an e-mail recommendation is not held back by it."""
    sms = _bound_key(client, api_settings, "sms-gw", ["sms"])
    hcp, _ = _email_hcp(client)
    channels = ", ".join(sorted(client.app.state.runtime.recommender.channels))
    stop = {"event_type": "opted_out", "hcp_id": hcp}
    answer = client.post(
        "/v1/feedback",
        json={
            "events": [
                {**stop, "event_id": "stop-1"},
                {**stop, "event_id": "stop-2", "channel": "SMS"},
            ]
        },
        headers=sms,
    )
    assert answer.status_code == 200, answer.text
    lacks = (
        f"opt-out of channel 'sms', which the served catalog does not have (known: {channels}): "
        "it withdraws nothing the catalog serves today; kept, it applies once a served "
        "catalog has sms"
    )
    assert [(n["event_id"], n["message"]) for n in answer.json()["uncounted"]] == [
        (
            "stop-1",
            f"opt-out stored for channel 'sms', the one API key 'sms-gw' speaks for; {lacks}",
        ),
        ("stop-2", lacks),
    ]
    stored = _stored(client)
    assert (stored["stop-1"], stored["stop-2"]) == (("sms", "sms-gw"), ("sms", "sms-gw"))
    email = client.post("/v1/recommendations", json={"hcp_id": hcp, "channel": "email"}).json()
    assert email["items"], email


def test_a_one_channel_keys_opt_out_of_a_channel_it_cannot_tell_is_kept_with_no_model(
    api_settings: Settings, keys: Keys, tmp_path: Path
) -> None:
    """With no model served, an e-mail system's key (bound to email) sending a 'stop'
    naming a channel nextbest cannot tell ('fax', 'e-mail') was refused with 403:
    'fax' is not one the key speaks for. With a model served the same opt-out is kept
    for email. Kept alike with none (no catalog tells any channel but the key's own),
    it withdraws e-mail once a model is loaded, and its resend is the same event; an
    SMS gateway's 'stop' naming 'all' or 'fax' withdraws sms only, not every channel
    of a catalog without SMS."""
    import shutil

    from nextbest.api.app import create_app

    admin = dict(keys.admin)
    with TestClient(create_app(api_settings), headers=admin) as client:
        hcp, _ = _email_hcp(client)
        texted = next(
            str(h)
            for h in client.app.state.runtime.recommender.hcp_ids[:200].tolist()
            if str(h) != hcp
            and not held_out_this_week_or_next(client, str(h))
            and client.post(
                "/v1/recommendations", json={"hcp_id": str(h), "channel": "email"}
            ).json()["items"]
        )
    models = tmp_path / "models-later"
    empty = api_settings.model_copy(update={"models_dir": models, "tracking_uri": None})
    with TestClient(create_app(empty), headers=admin) as client:
        assert client.get("/healthz").json().get("model_version") is None
        mail = _bound_key(client, api_settings, "mail-gw", ["email"])
        sms = _bound_key(client, api_settings, "sms-gw", ["sms"])
        stop = {"event_type": "opted_out", "hcp_id": hcp}
        answer = client.post(
            "/v1/feedback",
            json={
                "events": [
                    {**stop, "event_id": "stop-fax", "channel": "fax"},
                    {**stop, "event_id": "stop-e-mail", "channel": "e-mail"},
                ]
            },
            headers=mail,
        )
        assert answer.status_code == 200, answer.text
        assert [(n["event_id"], n["message"]) for n in answer.json()["uncounted"]] == [
            (
                event_id,
                "opt-out stored for channel 'email', the one API key 'mail-gw' speaks for "
                f"(channel '{named}' is not read against a catalog: no model is served)",
            )
            for event_id, named in (("stop-fax", "fax"), ("stop-e-mail", "e-mail"))
        ]
        texts = {"event_type": "opted_out", "hcp_id": texted}
        answer = client.post(
            "/v1/feedback",
            json={
                "events": [
                    {**texts, "event_id": "sms-all", "channel": "all"},
                    {**texts, "event_id": "sms-fax", "channel": "fax"},
                ]
            },
            headers=sms,
        )
        assert answer.status_code == 200 and answer.json()["accepted"] == 2, answer.text
        stored = _stored(client)
        assert [stored[e] for e in ("stop-fax", "stop-e-mail", "sms-all", "sms-fax")] == [
            ("email", "mail-gw"),
            ("email", "mail-gw"),
            ("sms", "sms-gw"),
            ("sms", "sms-gw"),
        ]

        # A model is registered and loaded, the same process serving on.
        shutil.copytree(api_settings.resolved_models_dir, models)
        assert client.post("/v1/admin/reload").status_code == 200
        assert client.get("/healthz").json().get("model_version") is not None
        after = client.post("/v1/recommendations", json={"hcp_id": hcp, "k": 20}).json()
        assert after["items"] and all(i["channel"] != "email" for i in after["items"]), after
        # The SMS gateway's stop withdrew sms, which the catalog lacks: e-mail is served.
        email = client.post(
            "/v1/recommendations", json={"hcp_id": texted, "channel": "email"}
        ).json()
        assert email["items"], email

        # With the model, the resend is the same event, and a new one is kept alike.
        again = client.post(
            "/v1/feedback", json={**stop, "event_id": "stop-fax", "channel": "fax"}, headers=mail
        )
        assert again.status_code == 200 and again.json()["duplicates"] == 1, again.text
        new = client.post(
            "/v1/feedback", json={**stop, "event_id": "stop-fax-2", "channel": "fax"}, headers=mail
        )
        assert new.status_code == 200 and new.json()["accepted"] == 1, new.text
        assert _stored(client)["stop-fax-2"] == ("email", "mail-gw")
        # A catalog channel other than its own is not the key's to withdraw.
        webinar = {**stop, "event_id": "stop-webinar", "channel": "webinar"}
        assert client.post("/v1/feedback", json=webinar, headers=mail).status_code == 403


def _rows_of(client: TestClient, hcp_id: str) -> list[tuple[str, str | None, str | None]]:
    """(event_id, channel, requester) of each stored opt-out of ``hcp_id``, by channel."""
    from sqlalchemy import select

    from nextbest.storage.tables import FeedbackEvent

    with client.app.state.runtime.sessions() as session:
        rows = session.execute(
            select(FeedbackEvent.event_id, FeedbackEvent.channel, FeedbackEvent.requester).where(
                FeedbackEvent.hcp_id == hcp_id, FeedbackEvent.event_type == "opted_out"
            )
        ).all()
    return sorted(((r.event_id, r.channel, r.requester) for r in rows), key=lambda r: r[1:])


@pytest.mark.parametrize(
    ("named", "said"),
    [
        ({}, ""),
        ({"channel": "all"}, ""),
        ({"channel": "fax"}, " (channel 'fax' is no catalog channel)"),
        (
            {"channel": "fax", "action_id": "retired-1"},
            "; opt-out stored: action 'retired-1' left out (not in the served catalog); "
            "channel 'fax' is no catalog channel",
        ),
    ],
    ids=["none", "all", "unknown", "unknown-action"],
)
def test_a_several_channel_keys_opt_out_it_cannot_place_withdraws_each_of_its_channels(
    client: TestClient, api_settings: Settings, named: dict, said: str
) -> None:
    """A marketing platform's key bound to email and webinar sending a 'stop' naming
    no channel, 'all' or one nextbest cannot tell ('fax'; a retired content's link)
    was refused with 403 (it would withdraw every channel): the withdrawal lost. It
    withdraws every channel the key speaks for, one row each, and nothing else; a
    resend is a duplicate."""
    platform = _bound_key(client, api_settings, "platform", ["email", "webinar"])
    hcp, _ = _hcp_served_on(client, {"email", "webinar"})
    stop = {"event_id": "stop-1", "event_type": "opted_out", "hcp_id": hcp, **named}
    answer = client.post("/v1/feedback", json=stop, headers=platform)
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 1, answer.text
    rows = _rows_of(client, hcp)
    assert [(channel_, requester) for _, channel_, requester in rows] == [
        ("email", "platform"),
        ("webinar", "platform"),
    ]
    assert rows[0][0] == "stop-1" and rows[1][0].startswith("opted_out-"), rows
    (note,) = answer.json()["uncounted"]
    assert note["message"] == (
        "opt-out stored for channels email, webinar, every channel API key 'platform' "
        f"speaks for{said}; each other channel a row of its own: webinar under "
        f"event_id '{rows[1][0]}'"
    ), note
    after = client.post("/v1/recommendations", json={"hcp_id": hcp, "k": 20}).json()
    served = {i["channel"] for i in after["items"]}
    assert served and not served & {"email", "webinar"}, after

    # Sent again, alone or in a batch: a duplicate, nothing more stored or said.
    for body in (stop, {"events": [stop, stop]}):
        again = client.post("/v1/feedback", json=body, headers=platform)
        assert again.status_code == 200, again.text
        assert (again.json()["accepted"], again.json()["uncounted"]) == (0, []), again.text
    assert _rows_of(client, hcp) == rows

    # A catalog channel it does not speak for is still not the key's to withdraw.
    other = {**stop, "event_id": "stop-2", "channel": "rep_visit"}
    refused = client.post("/v1/feedback", json=other, headers=platform)
    assert refused.status_code == 403, refused.text


def test_an_opt_out_stored_for_one_channel_sent_again_by_a_key_of_several_adds_the_rest(
    client: TestClient, api_settings: Settings
) -> None:
    """The e-mail system's 'stop' forwarded by the platform too: the same event, for
    e-mail a duplicate, and the platform's other channel withdrawn as well, said."""
    mail = _bound_key(client, api_settings, "mail-gw", ["email"])
    platform = _bound_key(client, api_settings, "platform", ["email", "webinar"])
    hcp, _ = _email_hcp(client)
    stop = {"event_id": "stop-1", "event_type": "opted_out", "hcp_id": hcp}
    assert client.post("/v1/feedback", json=stop, headers=mail).status_code == 200
    again = client.post("/v1/feedback", json={"events": [stop]}, headers=platform)
    assert again.status_code == 200, again.text
    assert (again.json()["accepted"], again.json()["duplicates"]) == (0, 1), again.text
    rows = _rows_of(client, hcp)
    assert [(c, r) for _, c, r in rows] == [("email", "mail-gw"), ("webinar", "platform")]
    (note,) = again.json()["uncounted"]
    assert note["message"].endswith(f"webinar under event_id '{rows[1][0]}'"), note


def test_a_several_channel_keys_opt_out_is_kept_for_each_of_its_channels_with_no_model(
    api_settings: Settings, keys: Keys, tmp_path: Path
) -> None:
    """With no model served, a marketing platform's key bound to email and sms sending
    a 'stop' naming 'fax', 'all' or no channel was refused with 403. Kept for email
    and sms, it withdraws e-mail once a model is loaded (sms: once a catalog has it),
    and its resend with the model is the same event."""
    import shutil

    from nextbest.api.app import create_app

    admin = dict(keys.admin)
    with TestClient(create_app(api_settings), headers=admin) as client:
        hcp, _ = _email_hcp(client)
    models = tmp_path / "models-later"
    empty = api_settings.model_copy(update={"models_dir": models, "tracking_uri": None})
    with TestClient(create_app(empty), headers=admin) as client:
        assert client.get("/healthz").json().get("model_version") is None
        platform = _bound_key(client, api_settings, "platform", ["email", "sms"])
        stop = {"event_type": "opted_out", "hcp_id": hcp}
        sent = [
            {**stop, "event_id": "stop-fax", "channel": "fax"},
            {**stop, "event_id": "stop-all", "channel": "all"},
            {**stop, "event_id": "stop-none"},
        ]
        answer = client.post("/v1/feedback", json={"events": sent}, headers=platform)
        assert answer.status_code == 200 and answer.json()["accepted"] == 3, answer.text
        rows = _rows_of(client, hcp)
        assert [(c, r) for _, c, r in rows] == [("email", "platform")] * 3 + [
            ("sms", "platform")
        ] * 3
        assert {e for e, _, _ in rows[:3]} == {"stop-fax", "stop-all", "stop-none"}
        notes = {n["event_id"]: n["message"] for n in answer.json()["uncounted"]}
        assert notes["stop-fax"].startswith(
            "opt-out stored for channels email, sms, every channel API key 'platform' speaks "
            "for (channel 'fax' is not read against a catalog: no model is served); each "
            "other channel a row of its own: sms under event_id 'opted_out-"
        ), notes
        assert notes["stop-none"].startswith(
            "opt-out stored for channels email, sms, every channel API key 'platform' speaks "
            "for; each other channel a row of its own: sms under event_id 'opted_out-"
        ), notes

        shutil.copytree(api_settings.resolved_models_dir, models)
        assert client.post("/v1/admin/reload").status_code == 200
        assert client.get("/healthz").json().get("model_version") is not None
        after = client.post("/v1/recommendations", json={"hcp_id": hcp, "k": 20}).json()
        assert after["items"] and all(i["channel"] != "email" for i in after["items"]), after

        again = client.post("/v1/feedback", json={"events": sent}, headers=platform)
        assert again.status_code == 200, again.text
        assert (again.json()["duplicates"], again.json()["uncounted"]) == (3, []), again.text
        assert _rows_of(client, hcp) == rows
        # With the model, a new one is kept alike, sms said to be no catalog channel.
        new = client.post("/v1/feedback", json={**stop, "event_id": "stop-new"}, headers=platform)
        assert new.status_code == 200 and new.json()["accepted"] == 1, new.text
        assert new.json()["uncounted"][0]["message"].endswith(
            " (no channel of the served catalog: it applies once one has it)"
        ), new.text


def test_a_one_channel_keys_opt_out_naming_an_action_no_catalog_knows_withdraws_its_channel(
    client: TestClient, api_settings: Settings
) -> None:
    """A retired content's unsubscribe link through the e-mail system's key: the action
    is left out, and the opt-out was then read as every channel, refused with 403 and
    lost. It withdraws the key's channel."""
    mail = _bound_key(client, api_settings, "mail-gw", ["email"])
    hcp, _ = _email_hcp(client)
    stop = {"event_id": "stop-1", "event_type": "opted_out", "hcp_id": hcp, "action_id": "gone"}
    answer = client.post("/v1/feedback", json=stop, headers=mail)
    assert answer.status_code == 200, answer.text
    assert answer.json()["uncounted"][0]["message"] == (
        "opt-out stored for channel 'email', the one API key 'mail-gw' speaks for; opt-out "
        "stored: action 'gone' left out (not in the served catalog)"
    ), answer.text
    assert _stored(client)["stop-1"] == ("email", "mail-gw")
    again = client.post("/v1/feedback", json=stop, headers=mail)
    assert again.status_code == 200 and again.json()["duplicates"] == 1, again.text


def test_keys_add_notes_a_channel_the_served_catalog_lacks(
    own_registry: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A channel key bound to a channel no served action is on would be answered with
    nothing to do, every time (an SMS gateway set up before the SMS content is in the
    catalog): the key is added, and the operator told."""
    from nextbest.settings import get_settings

    monkeypatch.setenv("NEXTBEST_MODELS_DIR", str(own_registry.resolved_models_dir))
    path = tmp_path / "keys.yaml"

    def add(name: str, *channels: str) -> str:
        get_settings.cache_clear()
        try:
            bound = [arg for channel in channels for arg in ("--channel", channel)]
            added = keys_cli("add", name, "--role", "channel", *bound, "--file", str(path))
        finally:
            get_settings.cache_clear()
        assert added.exit_code == 0, added.output
        return " ".join(added.stderr.split())

    only_sms = add("sms-gw", "SMS")
    assert "has no action on channel(s) sms (its channels: email," in only_sms, only_sms
    assert "answered with nothing to do until it does" in only_sms, only_sms
    both = add("gw", "sms", "email")
    assert "has no action on channel(s) sms (" in both and "get none of those" in both, both
    assert "has no action" not in add("mailer", "Email")
    # Spelt otherwise than the catalog, a channel is another channel: said, with the near one.
    misspelt = add("mailer-2", "e-mail")
    assert "no action on channel(s) e_mail (" in misspelt, misspelt
    assert "did you mean 'email' for 'e_mail'?" in misspelt, misspelt
    assert [e["name"] for e in yaml.safe_load(path.read_text())["keys"]] == [
        "sms-gw",
        "gw",
        "mailer",
        "mailer-2",
    ]
