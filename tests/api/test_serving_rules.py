"""Every serving rule through the HTTP API, with live contact history in a real SQLite file."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from nextbest.api.app import create_app

from .conftest import assert_lifts_between, held_out_this_week_or_next


def _delivered(client: TestClient, hcp_id: str, channel: str, days_ago: float, n: int) -> None:
    when = datetime.now(UTC) - timedelta(days=days_ago)
    response = client.post(
        "/v1/feedback",
        json={
            "event_id": f"dlv-{hcp_id}-{channel}-{days_ago}-{n}",
            "event_type": "delivered",
            "hcp_id": hcp_id,
            "channel": channel,
            "occurred_at": when.isoformat(),
        },
    )
    assert response.status_code == 200, response.text


def _ask(client: TestClient, hcp_id: str, **extra) -> dict:
    response = client.post(
        "/v1/recommendations", json={"hcp_id": hcp_id, "k": 20, "explain": True, **extra}
    )
    assert response.status_code == 200, response.text
    return response.json()


def _email_hcp(client: TestClient) -> str:
    """An HCP who gets e-mail items before any contact."""
    model = client.app.state.runtime.recommender
    for hcp_id in model.hcp_ids[:200]:
        if held_out_this_week_or_next(client, str(hcp_id)):
            continue
        body = _ask(client, str(hcp_id), channel="email")
        if body["items"]:
            return str(hcp_id)
    raise AssertionError("no HCP gets e-mail")


def test_a_delivered_email_starts_the_cooldown_at_once(client: TestClient, keys) -> None:
    hcp_id = _email_hcp(client)
    # Reported by another system (the channel key): the budget is shared.
    when = datetime.now(UTC) - timedelta(hours=2)
    client.post(
        "/v1/feedback",
        headers=keys.channel,
        json={
            "event_id": f"cool-{hcp_id}",
            "event_type": "delivered",
            "hcp_id": hcp_id,
            "channel": "email",
            "occurred_at": when.isoformat(),
        },
    ).raise_for_status()
    body = _ask(client, hcp_id)
    assert body["holdout"] or body["items"] is not None
    assert all(i["channel"] != "email" for i in body["items"])
    email_ids = [a for a, why in body["excluded"].items() if any("cool-down" in w for w in why)]
    assert email_ids, body["excluded"]
    catalog = client.app.state.runtime.recommender
    channel_of = dict(zip(catalog.action_ids, catalog.action_channels, strict=True))
    assert {channel_of[a] for a in email_ids} == {"email"}


def test_a_contact_naming_only_its_action_counts_for_its_channel(client: TestClient) -> None:
    hcp_id = _email_hcp(client)
    recommender = client.app.state.runtime.recommender
    channels = zip(recommender.action_ids, recommender.action_channels, strict=True)
    email_action = next(a for a, c in channels if c == "email")
    event = {"event_type": "delivered", "hcp_id": hcp_id, "action_id": email_action}
    # The catalog's channels as the catalog spells them: "Email" would never be counted.
    misspelled = client.post("/v1/feedback", json={**event, "event_id": "x1", "channel": "Email"})
    assert misspelled.status_code == 422
    assert "did you mean 'email'?" in misspelled.json()["rejected"][0]["message"]
    unknown = client.post("/v1/feedback", json={**event, "event_id": "x2", "action_id": "NOPE"})
    assert unknown.status_code == 422
    assert "unknown action_id 'NOPE'" in unknown.json()["rejected"][0]["message"]
    assert any(i["channel"] == "email" for i in _ask(client, hcp_id)["items"])
    client.post("/v1/feedback", json={**event, "event_id": "x3"}).raise_for_status()
    body = _ask(client, hcp_id)
    assert all(i["channel"] != "email" for i in body["items"])
    reasons = [w for why in body["excluded"].values() for w in why]
    assert any("cool-down: last email" in w for w in reasons), reasons


def test_a_contact_on_a_channel_the_catalog_lacks_is_said_to_count_in_the_budget_only(
    client: TestClient,
) -> None:
    hcp_id = _email_hcp(client)
    contact = {"event_type": "completed", "hcp_id": hcp_id}
    # "visit" is a word of one catalog channel's name: a near miss, refused.
    near = client.post("/v1/feedback", json={**contact, "event_id": "v1", "channel": "visit"})
    assert near.status_code == 422
    assert "did you mean 'rep_visit'?" in near.json()["rejected"][0]["message"]
    # "fax" is no catalog channel: stored, and the answer says it binds no channel's cap.
    kept = client.post("/v1/feedback", json={**contact, "event_id": "v2", "channel": "fax"})
    assert kept.status_code == 200, kept.text
    (said,) = kept.json()["uncounted"]
    assert said["event_id"] == "v2"
    assert (
        "counts in the all-channel budget only: channel 'fax' is not a channel" in said["message"]
    )


def test_frequency_cap_from_contacts_beyond_the_cooldown(client: TestClient) -> None:
    hcp_id = _email_hcp(client)
    before = datetime.now(UTC)
    for n, days in enumerate((5.0, 9.0, 14.0)):
        _delivered(client, hcp_id, "email", days, n)
    after = datetime.now(UTC)
    body = _ask(client, hcp_id)
    assert all(i["channel"] != "email" for i in body["items"])
    reasons = [w for why in body["excluded"].values() for w in why]
    capped = (
        "frequency cap: 3 email contacts in the last 28 days, max 3 (channels.email.max_contacts"
    )
    (said,) = {w for w in reasons if w.startswith(capped)}
    # Named at its line of the served rules file, lifting when the contact of 14 days
    # ago, the 3rd newest, leaves the 28-day window.
    assert ", rules.yaml line " in said, said
    assert_lifts_between(said, before + timedelta(days=14), after + timedelta(days=14))
    assert not any("cool-down: last email" in w for w in reasons)


def test_old_contacts_do_not_count(client: TestClient) -> None:
    hcp_id = _email_hcp(client)
    for n in range(3):
        _delivered(client, hcp_id, "email", 40.0 + n, n)
    reasons = [w for why in _ask(client, hcp_id)["excluded"].values() for w in why]
    assert not any("email" in w and ("cap" in w or "cool-down" in w) for w in reasons)


def test_contact_budget_across_channels_blocks_everything(client: TestClient) -> None:
    hcp_id = _email_hcp(client)
    for n in range(8):
        _delivered(client, hcp_id, "webinar" if n % 2 else "rep_phone", 10.0 + n, n)
    body = _ask(client, hcp_id)
    assert body["items"] == []
    assert all(any("contact budget" in w for w in why) for why in body["excluded"].values())


def test_a_request_dated_yesterday_counts_the_contacts_reported_since(client: TestClient) -> None:
    # A send file for yesterday, made after midnight: its e-mails go out now, so an
    # e-mail delivered this morning must stop a second one, as it does for today.
    hcp_id = _email_hcp(client)
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    assert client.app.state.runtime.recommender.as_of.date().isoformat() < yesterday
    before = _ask(client, hcp_id, channel="email", date=yesterday)
    assert before["holdout"] or before["items"], before
    _delivered(client, hcp_id, "email", days_ago=0.01, n=0)  # 15 minutes ago
    recommender = client.app.state.runtime.recommender
    emails = {
        str(a)
        for a, c in zip(recommender.action_ids, recommender.action_channels, strict=True)
        if c == "email"
    }
    for day in (yesterday, None):
        body = _ask(client, hcp_id, channel="email", **({"date": day} if day else {}))
        assert body["items"] == [], (day, body["items"])
        said = [body["excluded"][a] for a in emails]
        assert all(any("cool-down: last email contact" in w for w in why) for why in said), day
    batch = client.post(
        "/v1/recommendations/batch", json={"hcp_ids": [hcp_id], "date": yesterday, "k": 3}
    ).json()
    assert not [i for i in batch["results"][0]["items"] if i["channel"] == "email"]


def test_purpose_separates_medical_from_promotional(client: TestClient) -> None:
    recommender = client.app.state.runtime.recommender
    content_type = dict(zip(recommender.action_ids, recommender._content_types, strict=True))
    seen = {"promotional": set(), "medical": set()}
    for hcp_id in recommender.hcp_ids[:30]:
        for purpose in seen:
            body = _ask(client, str(hcp_id), purpose=purpose)
            seen[purpose] |= {i["content_type"] for i in body["items"]}
            for action_id, why in body["excluded"].items():
                if content_type[action_id] != purpose:
                    assert any(f"not served to a {purpose} request" in w for w in why)
    assert seen["promotional"] == {"promotional"}
    assert seen["medical"] == {"medical"}


def test_specialty_fit_and_consent_are_explained(client: TestClient) -> None:
    recommender = client.app.state.runtime.recommender
    found_specialty = found_consent = False
    for hcp_id in recommender.hcp_ids[:60]:
        body = _ask(client, str(hcp_id))
        served = {i["action_id"] for i in body["items"]}
        for action_id, why in body["excluded"].items():
            assert action_id not in served
            found_specialty |= any("specialty" in w for w in why)
            found_consent |= any(w.startswith("no consent for") for w in why)
    assert found_specialty and found_consent


def test_at_most_two_items_per_channel(client: TestClient) -> None:
    recommender = client.app.state.runtime.recommender
    longest = 0
    for hcp_id in recommender.hcp_ids[:40]:
        items = _ask(client, str(hcp_id))["items"]
        channels = [i["channel"] for i in items]  # an explored first item counts too
        longest = max(longest, len(items))
        for channel in set(channels):
            assert channels.count(channel) <= 2
    assert longest > 2, "some lists should be long enough for the limit to matter"


def test_explain_accounts_for_every_action_not_served(client: TestClient) -> None:
    """With explain, each action is served, left out by a rule (the per-channel limit
    included), or said to be not worth its cost, with its numbers: k=50 would list
    every action worth doing (the catalog has fewer), so none is unaccounted for."""
    recommender = client.app.state.runtime.recommender
    assert len(recommender.action_ids) <= 50
    limit = recommender.max_per_channel
    cut = f"at most {limit} items of one channel in one list (max_items_per_channel)"
    worthless = held_back = 0
    for hcp_id in recommender.hcp_ids[:40].tolist():
        body = _ask(client, str(hcp_id), k=50)
        if body["holdout"] or any(i["explored"] for i in body["items"]):
            continue  # an explored list is not the greedy one explain accounts for
        served = {i["action_id"] for i in body["items"]}
        excluded = body["excluded"]
        assert not served & excluded.keys()
        full = Counter(i["channel"] for i in body["items"])
        for action_id, why in excluded.items():
            costly = [w for w in why if w.startswith("not worth its cost: expected ")]
            if costly:
                worthless += 1
                assert "(net value " in costly[0] and len(why) == 1, why  # allowed by every rule
                # A net value below zero never reads as zero ("-0.00").
                assert not re.search(r"net value [-+]0\.0+\)", costly[0]), costly[0]
            if cut in why:
                held_back += 1
                assert why == [cut]  # allowed by every rule, worth its cost
                channel = recommender.action_channels[recommender.action_ids == action_id][0]
                assert full[channel] == limit, (action_id, channel)  # its channel is full
        assert served | excluded.keys() == set(recommender.action_ids.tolist())
    assert worthless > 0 and held_back > 0


def test_explain_names_the_per_channel_limit_for_what_it_cut_only(client: TestClient) -> None:
    """docs/api.md's example: three e-mails asked for, two listed; the third, ranked within
    k, is cut by max_items_per_channel and said to be; those ranked below k are not."""
    recommender = client.app.state.runtime.recommender
    limit = recommender.max_per_channel
    cut = f"at most {limit} items of one channel in one list (max_items_per_channel)"
    seen = 0
    for hcp_id in recommender.hcp_ids[:200].tolist():
        body = _ask(client, str(hcp_id), k=limit + 1, channel="email", purpose="promotional")
        if body["holdout"] or any(i["explored"] for i in body["items"]):
            continue
        every = _ask(client, str(hcp_id), k=50, channel="email", purpose="promotional")
        worth = len(every["items"]) + sum(cut in w for w in every["excluded"].values())
        limited = [a for a, why in body["excluded"].items() if cut in why]
        if worth <= limit:  # nothing for the limit to cut
            assert not limited and len(body["items"]) == worth
            continue
        assert len(body["items"]) == limit
        assert len(limited) == 1, body["excluded"]  # the third e-mail, not every one after it
        seen += 1
        if seen == 3:
            break
    assert seen, "some HCP should have more e-mails worth sending than the limit"


def test_explain_names_what_the_channel_limit_cut_after_an_explored_first_item(
    api_settings, keys
) -> None:
    """An explored first item counts toward its channel's limit, so the list as served
    may leave out an action the greedy one holds: explain says the limit cut it, as it
    says of the greedy list's cuts (it used to say nothing of it)."""
    settings = api_settings.model_copy(
        update={"epsilon": 1.0, "holdout_rate": 0.0, "seed": 5, "holdout_days": 0}
    )
    with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
        recommender = client.app.state.runtime.recommender
        limit = recommender.max_per_channel
        cut = f"at most {limit} items of one channel in one list (max_items_per_channel)"
        channel_of = dict(zip(recommender.action_ids, recommender.action_channels, strict=True))
        explored = 0
        for hcp_id in recommender.hcp_ids[:40].tolist():
            body = _ask(client, str(hcp_id), k=50)
            items = body["items"]
            if not items or not items[0]["explored"]:
                continue
            explored += 1
            served = {i["action_id"] for i in items}
            excluded = body["excluded"]
            # k=50 lists every action worth its cost that the limit lets in: each
            # other one is accounted for, as in a greedy list.
            assert not served & excluded.keys()
            assert served | excluded.keys() == set(recommender.action_ids.tolist()), hcp_id
            full = Counter(i["channel"] for i in items)
            for action_id, why in excluded.items():
                if cut in why:
                    assert why == [cut]
                    assert full[channel_of[action_id]] == limit, (action_id, items)
        assert explored > 10


def _stored_day(client: TestClient, event_id: str) -> str:
    """The UTC day of the ``occurred_at`` the store kept for ``event_id``: for an event
    counted from its arrival, the server's clock, which a clock reading of the test
    taken before the request misses by a day whenever the two straddle midnight."""
    from sqlalchemy import select

    from nextbest.storage.tables import FeedbackEvent

    with client.app.state.runtime.sessions() as session:
        at = session.scalar(
            select(FeedbackEvent.occurred_at).where(FeedbackEvent.event_id == event_id)
        )
    assert at is not None, f"no event {event_id!r} stored"
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC).date().isoformat()


def _consent(client: TestClient, hcp_id: str, event_type: str, n: int, **extra) -> dict:
    response = client.post(
        "/v1/feedback",
        json={"event_id": f"consent-{hcp_id}-{n}", "event_type": event_type, "hcp_id": hcp_id}
        | extra,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_an_opt_out_closes_its_channel_at_once_and_an_opt_in_reopens_it(
    client: TestClient, keys
) -> None:
    hcp_id = _email_hcp(client)
    day = datetime.now(UTC) - timedelta(hours=1)
    # Sent by the e-mail platform (an unsubscribe link), not by the CRM.
    response = client.post(
        "/v1/feedback",
        headers=keys.channel,
        json={
            "event_id": f"unsub-{hcp_id}",
            "event_type": "opted_out",
            "hcp_id": hcp_id,
            "channel": "email",
            "occurred_at": day.isoformat(),
        },
    )
    assert response.status_code == 200, response.text
    assert not _ask(client, hcp_id, channel="email")["items"]
    body = _ask(client, hcp_id)
    assert all(i["channel"] != "email" for i in body["items"])
    said = {w for why in body["excluded"].values() for w in why}
    # No date: what lifts it is said instead.
    assert (
        f"consent: opted out of email on {day:%Y-%m-%d} (UTC), until the HCP opts in again" in said
    )
    batch = client.post(
        "/v1/recommendations/batch", json={"hcp_ids": [hcp_id], "channel": "email", "k": 5}
    ).json()
    assert not batch["results"][0]["items"]

    _consent(client, hcp_id, "opted_in", 1, channel="email")  # the latest event decides
    assert _ask(client, hcp_id, channel="email")["items"]


@pytest.mark.parametrize(
    ("at", "said"),
    [
        ("2024-03", "occurred_at '2024-03' is a year and month, not a date: it would be read"),
        ("2024", "occurred_at '2024' is a year alone, not a date: it would be read"),
        ("31/12/2024", "occurred_at '31/12/2024' is not an ISO 8601 date or date-time: write"),
        ("9999-12-31T23:59:59-23:59", "occurred_at 9999-12-31T23:59:59-23:59 is outside"),
    ],
    ids=["year-month", "year", "day-first", "beyond-9999"],
)
def test_an_opt_out_whose_time_reads_as_none_is_kept_from_its_arrival(
    client: TestClient, keys, at: str, said: str
) -> None:
    """An opt-out dated '2024-03' (or by any time that reads as none) was refused: alone
    with 422, in a batch rejected while the batch's other events were stored. The
    withdrawal was lost; it is kept, counted from its arrival, and said back under
    uncounted, sent alone or in a batch. An open dated so is still refused."""
    model = client.app.state.runtime.recommender
    served = (
        h
        for h in map(str, model.hcp_ids[:200])
        if not held_out_this_week_or_next(client, h) and _ask(client, h, channel="email")["items"]
    )
    alone, batched = next(served), next(served)
    out = {"event_type": "opted_out", "channel": "email", "occurred_at": at}
    single = client.post(
        "/v1/feedback", json={**out, "event_id": "out-alone", "hcp_id": alone}, headers=keys.channel
    )
    assert single.status_code == 200, single.text
    assert single.json()["accepted"] == 1
    [note] = single.json()["uncounted"]
    assert note["message"].startswith(f"opt-out stored: {said}"), note
    assert note["message"].endswith("; counted from its arrival"), note
    opened = {"event_type": "opened", "channel": "email", "occurred_at": at}
    events = [
        {**opened, "event_id": "open-undated", "hcp_id": batched},
        {**out, "event_id": "out-batched", "hcp_id": batched},
    ]
    batch = client.post("/v1/feedback", json={"events": events}, headers=keys.channel)
    assert batch.status_code == 207, batch.text
    assert batch.json()["accepted"] == 1
    [rejected] = batch.json()["rejected"]
    assert rejected["index"] == 0 and rejected["message"].startswith("occurred_at: "), rejected
    [note] = batch.json()["uncounted"]
    assert note["index"] == 1 and note["message"].startswith(f"opt-out stored: {said}"), note
    for hcp_id, event_id in ((alone, "out-alone"), (batched, "out-batched")):
        body = _ask(client, hcp_id)
        assert all(i["channel"] != "email" for i in body["items"]), body
        withdrawn = {w for why in body["excluded"].values() for w in why}
        day = _stored_day(client, event_id)  # its arrival
        assert (
            f"consent: opted out of email on {day} (UTC), until the HCP opts in again" in withdrawn
        ), withdrawn


UNSUBSCRIBE_LINK = "https://mail.example.com/unsubscribe?list=hcp&token=" + "t" * 300


@pytest.mark.parametrize(
    ("sent", "withdrawn", "said"),
    [
        (
            {"reason": UNSUBSCRIBE_LINK},
            "email",
            f"opt-out stored: reason cut to its first 256 of {len(UNSUBSCRIBE_LINK)} "
            "characters, the most stored",
        ),
        (
            {"reason": 451},
            "email",
            "opt-out stored: reason 451 left out (Input should be a valid string)",
        ),
        ({"reason": ""}, "email", None),
        ({"value": "n/a"}, "email", "opt-out stored: value 'n/a' left out: an opt-out takes none"),
        ({"value": 3}, "email", "opt-out stored: value 3 left out: an opt-out takes none"),
        (
            {"channel": "email; sms; rep visit; webinar; print; direct mail; fax; phone; post"},
            "every channel",
            "opt-out stored: channel 'email; sms; rep visit; webinar; print; d'... (68 "
            "characters) left out (String should have at most 64 characters), as if none "
            "was named",
        ),
        (
            {"channel": ["email"]},
            "every channel",
            "opt-out stored: channel a list left out (Input should be a valid string), as if "
            "none was named",
        ),
        (
            {"list_id": "hcp-newsletter"},
            "email",
            "opt-out stored: list_id left out: not a field of an event",
        ),
        (
            {"recommendation_id": "r" * 65},
            "email",
            f"opt-out stored: recommendation_id '{'r' * 40}'... (65 characters) left out "
            "(String should have at most 64 characters)",
        ),
        (
            {"action_id": 12},
            "email",
            "opt-out stored: action_id 12 left out (Input should be a valid string)",
        ),
    ],
    ids=[
        "long-reason",
        "reason-number",
        "empty-reason",
        "value-text",
        "value-number",
        "long-channel",
        "channel-list",
        "unknown-field",
        "long-recommendation",
        "action-number",
    ],
)
def test_an_opt_out_is_kept_whatever_the_form_of_a_field_but_its_ids(
    client: TestClient, keys, sent: dict, withdrawn: str, said: str | None
) -> None:
    """An opt-out with an unsubscribe link over the 256 characters a reason is stored
    in, a value, a channel that cannot be read, a field no event has or an id of its
    send that cannot be one was refused, alone with 422, in a batch while the batch's
    other events were stored: the HCP kept being contacted. It is kept, sent alone or
    in a batch, with the field cut, left out or read as no channel (every channel
    withdrawn), said under uncounted; an open so sent is still refused."""
    model = client.app.state.runtime.recommender
    served = (
        h
        for h in map(str, model.hcp_ids[:200])
        if not held_out_this_week_or_next(client, h) and _ask(client, h, channel="email")["items"]
    )
    alone, batched = next(served), next(served)
    out = {"event_type": "opted_out", "channel": "email", **sent}
    single = client.post(
        "/v1/feedback", json={**out, "event_id": "out-alone", "hcp_id": alone}, headers=keys.channel
    )
    assert single.status_code == 200, single.text
    assert single.json()["accepted"] == 1
    assert [n["message"] for n in single.json()["uncounted"]] == ([said] if said else [])
    events = [
        {**out, "event_type": "opened", "event_id": "open-too", "hcp_id": batched},
        {**out, "event_id": "out-batched", "hcp_id": batched},
    ]
    batch = client.post("/v1/feedback", json={"events": events}, headers=keys.channel)
    # An open keeps its value (stored, said to count nowhere) and reads an empty reason
    # as none: the ones it does not refuse.
    opened = sent not in ({"value": 3}, {"reason": ""})
    assert batch.status_code == (207 if opened else 200), batch.text
    assert [r["index"] for r in batch.json()["rejected"]] == ([0] if opened else []), batch.text
    assert [(n["message"]) for n in batch.json()["uncounted"] if n["index"] == 1] == (
        [said] if said else []
    )
    for hcp_id, event_id in ((alone, "out-alone"), (batched, "out-batched")):
        body = _ask(client, hcp_id)
        reasons = {w for why in body["excluded"].values() for w in why}
        day = _stored_day(client, event_id)  # sent undated: its arrival
        assert (
            f"consent: opted out of {withdrawn} on {day} (UTC), until the HCP opts in again"
            in reasons
        ), reasons
        if withdrawn == "every channel":
            assert not body["items"], body
        assert all(i["channel"] != "email" for i in body["items"]), body


def test_an_opt_out_whose_hcp_or_event_id_cannot_be_read_is_refused_naming_them(
    client: TestClient,
) -> None:
    """Nothing can be kept without whom it is about or its idempotency key: refused,
    saying which, alone (422, naming the field) and in a batch (by its index)."""
    out = {"event_type": "opted_out", "channel": "email", "reason": UNSUBSCRIBE_LINK}
    alone = client.post("/v1/feedback", json={**out, "event_id": "x", "hcp_id": "h" * 129})
    assert alone.status_code == 422, alone.text
    assert [e["loc"] for e in alone.json()["detail"]] == [
        ["body", "event", "hcp_id"],
        ["body", "event", "reason"],
    ], alone.text
    batch = client.post("/v1/feedback", json={"events": [{**out, "hcp_id": "H1"}]})
    assert batch.status_code == 422, batch.text
    [rejected] = batch.json()["rejected"]
    assert rejected["message"].startswith("event_id: Field required; reason: "), rejected


def test_an_opt_out_of_every_channel_leaves_nothing_to_do(client: TestClient) -> None:
    hcp_id = _email_hcp(client)
    _consent(client, hcp_id, "opted_out", 0)
    body = _ask(client, hcp_id)
    assert not body["items"]
    assert all(
        any(w.startswith("consent: opted out of every channel") for w in why)
        for why in body["excluded"].values()
    )
    _consent(client, hcp_id, "opted_in", 1)
    assert _ask(client, hcp_id)["items"]


def test_consent_given_again_must_be_plain_an_opt_out_fails_safe(client: TestClient) -> None:
    hcp_id = _email_hcp(client)
    back = {"event_type": "opted_in", "hcp_id": hcp_id}
    for n, (extra, says) in enumerate(
        [
            ({"channel": "fax"}, "channel 'fax' is not a channel of the served catalog"),
            ({"channel": "emial"}, "did you mean 'email'?"),
            ({"channel": "email", "action_id": "A001"}, "it takes no action_id"),
            ({"value": 1.0}, "an opted_in event takes no value"),
            ({"reason": "resubscribed"}, "an opted_in event is about an HCP"),
        ]
    ):
        refused = client.post("/v1/feedback", json={**back, "event_id": f"bad-{n}", **extra})
        assert refused.status_code == 422, refused.text
        assert says in refused.json()["rejected"][0]["message"]
    assert _ask(client, hcp_id, channel="email")["items"]  # nothing was stored

    # An opt-out is taken as it comes: "Email" for email, and from a send's
    # unsubscribe link naming the send (its action's channel is the one withdrawn).
    served = _ask(client, hcp_id, channel="email")
    action = served["items"][0]["action_id"]
    link = {
        "event_id": "unsub-link",
        "event_type": "opted_out",
        "hcp_id": hcp_id,
        "recommendation_id": served["recommendation_id"],
        "action_id": action,
        "reason": "unsubscribe link",
    }
    assert client.post("/v1/feedback", json=link).status_code == 200
    assert not _ask(client, hcp_id, channel="email")["items"]
    second = _email_hcp(client)
    spelled = {"event_id": "unsub-2", "event_type": "opted_out", "hcp_id": second}
    assert client.post("/v1/feedback", json={**spelled, "channel": "Email"}).status_code == 200
    assert not _ask(client, second, channel="email")["items"]

    # An HCP the served model does not know yet: its opt-out is kept for when one
    # does, and the answer says so (a typo in the id would otherwise go unseen).
    kept = client.post(
        "/v1/feedback",
        json={"event_id": "new-hcp", "event_type": "opted_out", "hcp_id": "h-not-yet-known"},
    )
    assert kept.status_code == 200 and kept.json()["accepted"] == 1, kept.text
    (note,) = kept.json()["uncounted"]
    assert "no HCP of the served model has the id 'h-not-yet-known' yet" in note["message"]
    other = {"event_type": "delivered", "hcp_id": "h-not-yet-known"}
    refused = client.post("/v1/feedback", json={**other, "event_id": "new-hcp-contact"})
    assert refused.status_code == 422 and "unknown hcp_id" in refused.text


def test_an_opt_in_dated_ahead_does_not_outrank_a_later_opt_out(client: TestClient) -> None:
    hcp_id = _email_hcp(client)
    ahead = (datetime.now(UTC) + timedelta(minutes=14)).isoformat()  # allowed clock skew
    _consent(client, hcp_id, "opted_in", 0, channel="email", occurred_at=ahead)
    # Sent after it, dated when sent: it is the later one (the opt-in counts from
    # when it arrived, not from 14 minutes ahead).
    now = datetime.now(UTC).isoformat()
    _consent(client, hcp_id, "opted_out", 1, channel="email", occurred_at=now)
    assert not _ask(client, hcp_id, channel="email")["items"]


def test_consent_decided_by_the_latest_event_a_withdrawal_winning_a_tie(client: TestClient) -> None:
    model = client.app.state.runtime.recommender
    hcps = []
    for hcp_id in model.hcp_ids[:300]:
        if held_out_this_week_or_next(client, str(hcp_id)):
            continue
        body = _ask(client, str(hcp_id))
        if {"email", "rep_phone"} <= {i["channel"] for i in body["items"]}:
            hcps.append(str(hcp_id))
        if len(hcps) == 2:
            break
    assert len(hcps) == 2, "two HCPs offered e-mail and phone calls"
    first, second = hcps
    day = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)

    def send(hcp_id: str, event_id: str, event_type: str, hours: int, **channel) -> None:
        at = (day + timedelta(hours=hours)).isoformat()
        _consent(client, hcp_id, event_type, 0, event_id=event_id, occurred_at=at, **channel)

    def channels(hcp_id: str, **extra) -> set[str]:
        return {i["channel"] for i in _ask(client, hcp_id, **extra)["items"]}

    # Sent with the date alone, an opt-in and an opt-out tie: the withdrawal wins,
    # whatever their ids (compared as text, "zz" > "aa").
    send(first, "zz-in", "opted_in", 0, channel="email")
    send(first, "aa-out", "opted_out", 0, channel="email")
    assert "email" not in channels(first)
    # A later consent to every channel lifts the e-mail withdrawal.
    send(first, "all-in", "opted_in", 1)
    assert "email" in channels(first)
    # Out of every channel, then back in to e-mail only: e-mail, and nothing else.
    send(second, "all-out", "opted_out", 0)
    send(second, "email-in", "opted_in", 1, channel="email")
    assert channels(second) == {"email"}
    # A decision for an earlier day made now (a send file for yesterday's campaign)
    # honours a withdrawal received since.
    send(first, "late-out", "opted_out", 2, channel="email")
    cutoff_day = model.as_of.date().isoformat()
    assert "email" not in channels(first, date=cutoff_day)


def test_an_opt_out_is_never_lost_over_its_form(client: TestClient) -> None:
    model = client.app.state.runtime.recommender
    hcps = [
        str(h)
        for h in model.hcp_ids[:300]
        if not held_out_this_week_or_next(client, str(h))
        and _ask(client, str(h), channel="email")["items"]
    ]
    assert len(hcps) >= 5
    cases = [
        ({"channel": "e-mail"}, "channel 'e-mail' read as 'email'"),
        ({"channel": "mail"}, "channel 'mail' read as 'email'"),
        ({"channel": "fax"}, "is no catalog channel: every channel withdrawn"),
        ({"channel": "all"}, None),
        # A retired content's unsubscribe link and a mail forwarded to someone else.
        (
            {"action_id": "A-RETIRED", "recommendation_id": "0" * 32},
            "action 'A-RETIRED' left out",
        ),
    ]
    for hcp_id, (extra, note) in zip(hcps, cases, strict=False):
        event = {"event_id": f"out-{hcp_id}", "event_type": "opted_out", "hcp_id": hcp_id}
        answer = client.post("/v1/feedback", json={**event, **extra})
        assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text
        said = [u["message"] for u in answer.json()["uncounted"]]
        assert (note is None and not said) or (note is not None and note in said[0]), said
        assert not _ask(client, hcp_id, channel="email")["items"], extra


@pytest.mark.parametrize("named", ["fax", "All"])
def test_an_opt_out_of_a_channel_it_cannot_tell_withdraws_every_channel_with_its_action(
    client: TestClient, named: str
) -> None:
    """'fax' (or 'All') beside an e-mail action: the answer said every channel was
    withdrawn, but the row was stored for the action's channel, e-mail, and the rep
    still visited."""
    model = client.app.state.runtime.recommender
    hcp_id = next(
        str(h)
        for h in model.hcp_ids[:300]
        if not held_out_this_week_or_next(client, str(h))
        and {"email"} < {i["channel"] for i in _ask(client, str(h))["items"]}
    )
    email_action = _ask(client, hcp_id, channel="email")["items"][0]["action_id"]
    event = {
        "event_id": f"out-{named}-action",
        "event_type": "opted_out",
        "hcp_id": hcp_id,
        "channel": named,
        "action_id": email_action,
    }
    answer = client.post("/v1/feedback", json=event)
    assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text
    said = [u["message"] for u in answer.json()["uncounted"]]
    if named == "fax":
        assert "channel 'fax' is no catalog channel: every channel withdrawn" in said[0], said
    assert not _ask(client, hcp_id)["items"], "every channel withdrawn, as said"
    again = client.post("/v1/feedback", json=event)
    assert again.status_code == 200 and again.json()["duplicates"] == 1, again.text


def test_an_unsubscribe_naming_only_its_send_withdraws_the_sends_channel(
    client: TestClient,
) -> None:
    """An e-mail's unsubscribe link that carries the send's recommendation_id alone
    withdraws e-mail, not every channel (the rep's visits stay), and says so."""
    model = client.app.state.runtime.recommender
    hcp_id = next(
        str(h)
        for h in model.hcp_ids[:300]
        if not held_out_this_week_or_next(client, str(h))
        and {"email"} < {i["channel"] for i in _ask(client, str(h))["items"]}
    )
    send = _ask(client, hcp_id, channel="email")
    assert {i["channel"] for i in send["items"]} == {"email"}
    event = {
        "event_id": "unsub-send",
        "event_type": "opted_out",
        "hcp_id": hcp_id,
        "recommendation_id": send["recommendation_id"],
    }
    answer = client.post("/v1/feedback", json=event)
    assert answer.status_code == 200, answer.text
    (note,) = answer.json()["uncounted"]
    assert "channel read as 'email', the one its send served" in note["message"]
    assert not _ask(client, hcp_id, channel="email")["items"]
    assert {i["channel"] for i in _ask(client, hcp_id)["items"]} - {"email"}


def test_a_net_value_below_zero_never_reads_as_zero() -> None:
    """+0.02 outcome for a cost of 0.02 (net value -0.00) said nothing to a rep."""
    from nextbest.service.recommend import _decimals_for

    shown = [f"{v:+.{_decimals_for(v)}f}" for v in (-0.27, -0.004, -0.0004, 0.0)]
    assert shown == ["-0.27", "-0.004", "-0.0004", "+0.0000"]


def test_an_opt_out_sent_before_any_model_withdraws_its_channel_in_any_case(
    api_settings, keys, tmp_path
) -> None:
    """A server started before any model stored an opt-out of ' Email ' as 'Email', and
    consent was matched on the channel exactly: once a model was served, the HCP was
    offered e-mail all the same. Stored as catalogs spell channels, it withdraws e-mail."""
    from sqlalchemy import select

    from nextbest.storage.tables import FeedbackEvent

    with TestClient(create_app(api_settings), headers=dict(keys.admin)) as client:
        hcp_id = _email_hcp(client)
    empty = api_settings.model_copy(update={"models_dir": tmp_path / "empty"})
    with TestClient(create_app(empty), headers=dict(keys.admin)) as early:
        assert early.get("/healthz").json().get("model_version") is None
        out = {"event_id": "unsub-early", "event_type": "opted_out", "hcp_id": hcp_id}
        answer = early.post("/v1/feedback", json={**out, "channel": " Email "})
        assert answer.status_code == 200, answer.text
        assert answer.json()["accepted"] == 1 and answer.json()["uncounted"] == [], answer.text
        # Sent again as the catalog spells it: the same event, not a conflict.
        again = early.post("/v1/feedback", json={**out, "channel": "email"})
        assert again.json()["duplicates"] == 1, again.text
        with early.app.state.runtime.sessions() as session:
            stored = session.scalar(
                select(FeedbackEvent.channel).where(FeedbackEvent.event_id == "unsub-early")
            )
        assert stored == "email"
    with TestClient(create_app(api_settings), headers=dict(keys.admin)) as client:
        assert not _ask(client, hcp_id, channel="email")["items"]
        assert all(i["channel"] != "email" for i in _ask(client, hcp_id)["items"])


def _served_on(client: TestClient, channel: str, but: set[str] = frozenset()) -> str:
    """An HCP (not one of ``but``) who gets items of ``channel`` before any contact."""
    for hcp_id in map(str, client.app.state.runtime.recommender.hcp_ids[:300]):
        if hcp_id in but or held_out_this_week_or_next(client, hcp_id):
            continue
        if _ask(client, hcp_id, channel=channel)["items"]:
            return hcp_id
    raise AssertionError(f"no HCP gets {channel}")


def test_an_opt_out_stored_with_no_model_withdraws_once_a_model_is_loaded(
    api_settings, keys, tmp_path
) -> None:
    """With no model served, opt-outs of 'E Mail', 'rep visit' and 'fax' were kept
    as 'e_mail', 'rep_visit' and 'fax' and compared with the catalog's channels as
    stored once a model was loaded: the first and the last withdrew nothing. Read
    against the served catalog, each withdraws what it would have had the model been
    loaded on arrival: email, rep_visit, and every channel (nextbest cannot tell
    'fax'), and an explanation says the opt-out."""
    import shutil

    with TestClient(create_app(api_settings), headers=dict(keys.admin)) as client:
        mail = _served_on(client, "email")
        visit = _served_on(client, "rep_visit", but={mail})
        fax = _served_on(client, "email", but={mail, visit})
    models = tmp_path / "models-later"
    empty = api_settings.model_copy(update={"models_dir": models, "tracking_uri": None})
    on = datetime.now(UTC) - timedelta(days=2)
    with TestClient(create_app(empty), headers=dict(keys.admin)) as client:
        assert client.get("/healthz").json().get("model_version") is None
        events = [
            {"event_id": f"unsub-{hcp_id}", "event_type": "opted_out", "hcp_id": hcp_id}
            | {"channel": channel, "occurred_at": on.isoformat()}
            for hcp_id, channel in ((mail, "E Mail"), (visit, "rep visit"), (fax, "fax"))
        ]
        answer = client.post("/v1/feedback", json={"events": events})
        assert answer.status_code == 200 and answer.json()["accepted"] == 3, answer.text
        # A model is registered and loaded, the same process serving on.
        shutil.copytree(api_settings.resolved_models_dir, models)
        reloaded = client.post("/v1/admin/reload")
        assert reloaded.status_code == 200, reloaded.text
        assert client.get("/healthz").json().get("model_version") is not None
        # Sent again, read now as 'email': the same opt-out, not another under its id.
        again = client.post("/v1/feedback", json=events[0])
        assert again.status_code == 200 and again.json()["duplicates"] == 1, again.text
        assert again.json()["uncounted"] == [], again.text

        body = _ask(client, mail)
        assert body["items"] and all(i["channel"] != "email" for i in body["items"]), body
        reasons = {w for why in body["excluded"].values() for w in why}
        said = f"consent: opted out of email on {on:%Y-%m-%d} (UTC), until the HCP opts in again"
        assert said in reasons, reasons
        assert not _ask(client, mail, channel="email")["items"]

        assert not _ask(client, visit, channel="rep_visit")["items"]
        assert all(i["channel"] != "rep_visit" for i in _ask(client, visit)["items"])

        body = _ask(client, fax)
        assert not body["items"], body["items"]
        reasons = {w for why in body["excluded"].values() for w in why}
        assert f"consent: opted out of every channel on {on:%Y-%m-%d} (UTC)" in " ".join(reasons), (
            reasons
        )


def test_an_opt_in_stored_with_no_model_is_read_against_the_catalog_as_its_opt_out(
    api_store, keys, tmp_path
) -> None:
    """With no model served, an opt-in of 'E Mail' was kept as 'e_mail' and, once a
    model was loaded, granted nothing, while the opt-out it answered was read as
    email: an HCP who opted out of 'E Mail' (or 'email') and back in with 'E Mail'
    stayed withdrawn. Read against the served catalog as an opt-out is, it gives
    e-mail back; the later of the two still decides, and a channel nextbest cannot
    tell ('fax') grants nothing."""
    with TestClient(create_app(api_store), headers=dict(keys.admin)) as client:
        both_near = _served_on(client, "email")
        exact_out = _served_on(client, "email", but={both_near})
        fax_in = _served_on(client, "email", but={both_near, exact_out})
        out_later = _served_on(client, "email", but={both_near, exact_out, fax_in})
    empty = api_store.model_copy(
        update={"models_dir": tmp_path / "models-later", "tracking_uri": None}
    )
    earlier = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    later = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    sent = [
        (both_near, "opted_out", "E Mail", earlier),
        (both_near, "opted_in", "E Mail", later),
        (exact_out, "opted_out", "email", earlier),
        (exact_out, "opted_in", "E Mail", later),
        (fax_in, "opted_out", "email", earlier),
        (fax_in, "opted_in", "fax", later),
        (out_later, "opted_in", "E Mail", earlier),
        (out_later, "opted_out", "email", later),
    ]
    events = [
        {"event_id": f"{kind}-{hcp_id}", "event_type": kind, "hcp_id": hcp_id}
        | {"channel": channel, "occurred_at": at}
        for hcp_id, kind, channel, at in sent
    ]
    with TestClient(create_app(empty), headers=dict(keys.admin)) as early:
        assert early.get("/healthz").json().get("model_version") is None
        answer = early.post("/v1/feedback", json={"events": events})
        assert answer.status_code == 200 and answer.json()["accepted"] == len(events), answer.text
    with TestClient(create_app(api_store), headers=dict(keys.admin)) as client:
        assert _ask(client, both_near, channel="email")["items"]
        assert _ask(client, exact_out, channel="email")["items"]
        # Sent again once a model serves, as sent or as read: the same event, which a
        # 422 would have said was not stored. A new one so named is refused, as before.
        for channel in ("E Mail", "email"):
            again = client.post("/v1/feedback", json={**events[1], "channel": channel})
            assert again.status_code == 200 and again.json()["duplicates"] == 1, again.text
        new = client.post("/v1/feedback", json={**events[1], "event_id": "in-new"})
        assert new.status_code == 422, new.text
        assert "did you mean 'email'?" in new.json()["rejected"][0]["message"], new.text
        body = _ask(client, fax_in, channel="email")
        assert not body["items"], body["items"]
        assert not _ask(client, out_later, channel="email")["items"]
        # An opt-in of a channel nextbest cannot tell lifts no opt-out of every channel.
        client.post(
            "/v1/feedback",
            json={"event_id": "out-all", "event_type": "opted_out", "hcp_id": both_near}
            | {"occurred_at": (datetime.now(UTC) - timedelta(days=1)).isoformat()},
        ).raise_for_status()
    with TestClient(create_app(empty), headers=dict(keys.admin)) as early:
        answer = early.post(
            "/v1/feedback",
            json={"event_id": "in-fax", "event_type": "opted_in", "hcp_id": both_near}
            | {"channel": "fax"},
        )
        assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text
    with TestClient(create_app(api_store), headers=dict(keys.admin)) as client:
        assert not _ask(client, both_near)["items"]


def test_an_opt_in_of_all_is_refused_with_or_without_a_model(api_settings, keys, tmp_path) -> None:
    """An opt-in of 'all' was refused with a model served (no channel 'all' to grant)
    but stored with none, where it granted nothing: refused alike in both, saying how
    to give consent again for every channel."""
    said = (
        "channel 'All' names no channel: consent is given again channel by channel; name "
        "the channel (or leave it out to give consent for every channel)"
    )
    empty = api_settings.model_copy(update={"models_dir": tmp_path / "empty"})
    for served, settings in (("none", empty), ("model", api_settings)):
        with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
            back = {"event_id": f"in-{served}", "event_type": "opted_in", "hcp_id": "h-1"}
            answer = client.post("/v1/feedback", json={**back, "channel": "All"})
            assert answer.status_code == 422, answer.text
            assert answer.json()["rejected"][0]["message"] == said, answer.text
            # Left out, it gives consent again for every channel, as before.
            plain = client.post("/v1/feedback", json=back)
            assert plain.status_code == 200 and plain.json()["accepted"] == 1, plain.text


def test_an_opt_out_whose_event_id_is_over_long_is_kept_once(client: TestClient) -> None:
    """An opt-out whose event_id was longer than the 128 characters stored (a consent
    system's token) was refused with 422, the withdrawal lost. It is kept under an id
    derived from its own, said under uncounted; sent again, it is a duplicate."""
    from sqlalchemy import func, select

    from nextbest.storage.tables import FeedbackEvent

    hcp_id = _email_hcp(client)
    long_id = "unsub-" + "t" * 194
    out = {"event_id": long_id, "event_type": "opted_out", "hcp_id": hcp_id, "channel": "email"}
    answer = client.post("/v1/feedback", json=out)
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 1, answer.text
    ((note),) = answer.json()["uncounted"]
    derived = note["event_id"]
    assert derived.startswith("opted_out-"), note
    assert note["message"] == (
        f"opt-out stored: event_id '{long_id[:40]}'... (200 characters) is longer than the "
        f"128 characters stored: stored under event_id '{derived}', derived from it (the "
        "same for every resend)"
    ), note
    again = client.post("/v1/feedback", json={"events": [out]})
    assert again.status_code == 200 and again.json()["duplicates"] == 1, again.text
    assert not _ask(client, hcp_id, channel="email")["items"]
    with client.app.state.runtime.sessions() as session:
        kept = session.scalar(
            select(func.count()).where(FeedbackEvent.hcp_id == hcp_id).select_from(FeedbackEvent)
        )
    assert kept == 1
    # Any other event with such an id is still refused, naming the field.
    opened = {**out, "event_type": "opened"}
    refused = client.post("/v1/feedback", json={"events": [opened]})
    assert refused.status_code == 422, refused.text
    assert refused.json()["rejected"][0]["message"].startswith("event_id: String should have")


def test_an_opt_out_of_all_an_earlier_version_stored_withdraws_every_channel(
    client: TestClient,
) -> None:
    """An earlier server with no model served stored an opt-out of 'All' as sent, and
    consent read it as a channel named 'all': once a model was served, the HCP was
    offered every channel all the same. Read as every channel, as one stored now."""
    from sqlalchemy import insert

    from nextbest.storage.tables import FeedbackEvent

    hcp_id = _email_hcp(client)
    at = datetime.now(UTC) - timedelta(days=3)
    with client.app.state.runtime.sessions() as session:
        session.execute(
            insert(FeedbackEvent).values(
                event_id="unsub-all-early",
                event_type="opted_out",
                hcp_id=hcp_id,
                channel="All",
                occurred_at=at,
                received_at=at,
            )
        )
        session.commit()
    body = _ask(client, hcp_id)
    assert not body["items"], body["items"]
    reasons = {w for why in body["excluded"].values() for w in why}
    assert f"consent: opted out of every channel on {at:%Y-%m-%d} (UTC)" in " ".join(reasons), (
        reasons
    )


@pytest.mark.parametrize(
    ("content", "said"),
    [
        pytest.param(
            "dismissal_days: 30  # réglé\n".encode("latin-1"),
            ": not UTF-8 text (byte 0xe9 at offset 23): save it as UTF-8",
            id="latin-1",
        ),
        pytest.param(None, " cannot be read: Is a directory", id="a-directory"),
        pytest.param(
            b"- dismissal_days: 30\n",
            ": expected a mapping of settings at the top",
            id="a-list-at-the-top",
        ),
    ],
)
def test_a_reload_refuses_a_bad_rules_file_as_every_settings_file_is_refused(
    own_registry, keys, tmp_path: Path, content: bytes | None, said: str
) -> None:
    """Read by the loader of the training config, levers and gate config: a rules file
    saved as Latin-1, replaced by a directory or written as a list is refused naming
    the file in their words (tests/test_yamlfile.py), and the rules held keep serving."""
    shipped = Path(__file__).parents[2] / "training" / "rules.yaml"
    rules = tmp_path / "rules.yaml"
    rules.write_text(shipped.read_text())
    settings = own_registry.model_copy(update={"rules_file": rules})
    with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
        held = client.get("/readyz").json()["rules_fingerprint"]
        rules.unlink()
        if content is None:
            rules.mkdir()
        else:
            rules.write_bytes(content)
        answer = client.post("/v1/admin/reload")
        assert answer.status_code == 500, answer.text
        assert f"{rules}{said}" in answer.json()["detail"], answer.text
        assert client.get("/readyz").json()["rules_fingerprint"] == held


def test_a_recommendation_is_decided_by_the_servers_clock_not_the_machines(
    api_settings, keys
) -> None:
    """The single route decided for the machine's date, whatever clock the served
    recommender decides by: a server whose clock read months ago counted an e-mail
    delivered an hour ago by the machine's date (after that clock's now) and missed
    one delivered an hour before its own now. By its clock: the other way round."""
    from nextbest.service.recommend import cutoff
    from nextbest.service.runtime import ServingRuntime

    settings = api_settings.model_copy(update={"holdout_rate": 0.0, "epsilon": 0.0})
    runtime = ServingRuntime.start(settings)
    at = cutoff(runtime.recommender.model) + timedelta(days=10, hours=12)
    runtime.close()
    assert at < datetime.now(UTC) - timedelta(days=3)  # the rules' cool-down: 3 days
    runtime = ServingRuntime.start(settings, clock=lambda: at)
    with TestClient(create_app(settings, runtime), headers=dict(keys.admin)) as client:
        recommender = runtime.recommender
        emailed = [
            h
            for h in recommender.hcp_ids[:100].tolist()
            if recommender.recommend(hcp_id=h, k=1, channel="email").items
        ]
        before, after = emailed[:2]
        for event_id, hcp_id, when in (
            ("before-its-now", before, at - timedelta(hours=1)),
            ("after-its-now", after, datetime.now(UTC) - timedelta(hours=1)),
        ):
            response = client.post(
                "/v1/feedback",
                json={
                    "event_id": event_id,
                    "event_type": "delivered",
                    "hcp_id": hcp_id,
                    "channel": "email",
                    "occurred_at": when.isoformat(),
                },
            )
            assert response.status_code == 200, response.text
        served = {}
        for hcp_id in (before, after):
            answer = client.post(
                "/v1/recommendations", json={"hcp_id": hcp_id, "k": 1, "channel": "email"}
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["created_at"] == at.isoformat()
            served[hcp_id] = bool(answer.json()["items"])
    assert served == {before: False, after: True}, served


def test_content_sent_within_repeat_days_is_not_offered_to_that_hcp_again(
    api_store, keys, tmp_path: Path
) -> None:
    """channels.email.repeat_days: the e-mail an HCP got 5 days ago (past the 3-day
    cool-down) is not chosen for that HCP again, in a single answer or a batch, and
    explain says why and when it lifts; content sent longer ago than that is offered.
    Through the event-loop read on PostgreSQL, the thread's on SQLite."""
    rules = tmp_path / "rules.yaml"
    rules.write_text("channels:\n  email:\n    cooldown_days: 3\n    repeat_days: 30\n")
    settings = api_store.model_copy(update={"rules_file": rules})
    with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
        hcp_id = _email_hcp(client)
        emails = [i["action_id"] for i in _ask(client, hcp_id, channel="email")["items"]]
        assert emails, hcp_id
        sent, long_ago = emails[0], emails[1:2]
        now = datetime.now(UTC)
        for action_id, days in [(sent, 5), *((a, 31) for a in long_ago)]:
            event = {
                "event_id": f"sent-{action_id}-{days}",
                "event_type": "delivered",
                "hcp_id": hcp_id,
                "action_id": action_id,
                "occurred_at": (now - timedelta(days=days)).isoformat(),
            }
            client.post("/v1/feedback", json=event).raise_for_status()
        body = _ask(client, hcp_id, channel="email")
        served = [i["action_id"] for i in body["items"]]
        assert sent not in served and set(long_ago) <= set(served), (served, body["excluded"])
        [said] = [w for w in body["excluded"][sent] if w.startswith("repeat:")]
        assert said.startswith(
            "repeat: this email content reached the HCP 5 days ago, not repeated within 30 "
            f"days (channels.email.repeat_days, {rules.name} line 4), lifts "
        ), said
        assert_lifts_between(said, now + timedelta(days=25), now + timedelta(days=25, minutes=2))
        batch = client.post(
            "/v1/recommendations/batch",
            json={"hcp_ids": [hcp_id], "channel": "email", "k": 20},
        )
        assert batch.status_code == 200, batch.text
        [result] = batch.json()["results"]
        assert sent not in [i["action_id"] for i in result["items"]], result
