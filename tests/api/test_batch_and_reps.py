"""Batch picks for e-mail systems and rep call plans, through the HTTP API."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from datetime import date as date_type
from types import SimpleNamespace

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from nextbest.api.schemas import RecommendationBatchPublic, RecommendationPublic, RepPlanPublic

from .conftest import assert_lifts_between


def test_batch_answers_every_known_hcp_and_lists_the_unknown(client: TestClient) -> None:
    recommender = client.app.state.runtime.recommender
    ids = [str(h) for h in recommender.hcp_ids[:300]]
    response = client.post(
        "/v1/recommendations/batch",
        json={"hcp_ids": [*ids, "NOBODY-1"], "k": 2, "channel": "email"},
    )
    assert response.status_code == 200
    body = RecommendationBatchPublic.model_validate(response.json())
    assert body.unknown_hcp_ids == ["NOBODY-1"]
    assert [r.hcp_id for r in body.results] == ids
    assert len({r.recommendation_id for r in body.results}) == len(ids)
    served = [r for r in body.results if r.items]
    assert len(served) > 50
    for r in body.results:
        assert len(r.items) <= 2
        assert not (r.holdout and r.items)
        for item in r.items:
            assert item.channel == "email" and item.content_type == "promotional"
            assert 0 < item.propensity <= 1 and item.reasons


def test_batch_answers_match_single_requests(client: TestClient) -> None:
    """Same rules and scores in the vectorised path as for one HCP (greedy items)."""
    recommender = client.app.state.runtime.recommender
    ids = [str(h) for h in recommender.hcp_ids[300:340]]
    batch = client.post("/v1/recommendations/batch", json={"hcp_ids": ids, "k": 3}).json()
    compared = 0
    for result in batch["results"]:
        single = client.post(
            "/v1/recommendations", json={"hcp_id": result["hcp_id"], "k": 3}
        ).json()
        a = {i["action_id"]: i["score"] for i in result["items"] if not i["explored"]}
        b = {i["action_id"]: i["score"] for i in single["items"] if not i["explored"]}
        for action_id in a.keys() & b.keys():
            assert a[action_id] == pytest.approx(b[action_id])
            compared += 1
    assert compared > 10


def test_batch_over_1000_is_422_with_a_message(client: TestClient) -> None:
    response = client.post(
        "/v1/recommendations/batch", json={"hcp_ids": [f"H{i:06d}" for i in range(1001)]}
    )
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["loc"][-1] == "hcp_ids"
    assert "at most 1000 HCPs per call, got 1001" in detail["msg"]
    assert "input" not in detail  # the 1,001 ids are not sent back
    assert len(response.content) < 1000
    empty = client.post("/v1/recommendations/batch", json={"hcp_ids": []})
    assert empty.status_code == 422
    (detail,) = empty.json()["detail"]
    assert detail["loc"] == ["body", "hcp_ids"]
    assert detail["msg"] == "no HCP ids: send 1 to 1000 per call"
    assert detail["input"] == []  # a short input is still echoed


@pytest.mark.parametrize("explain", [True, False])
def test_a_batch_asking_for_explanations_is_told_where_to_ask(
    client: TestClient, explain: bool
) -> None:
    """The batch explains nothing: the refusal names the route that does, not just
    "extra inputs are not permitted"."""
    response = client.post(
        "/v1/recommendations/batch", json={"hcp_ids": ["H000001"], "explain": explain}
    )
    assert response.status_code == 422
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", "explain"] and detail["input"] is explain
    assert detail["msg"].startswith("the batch route takes no explain: ask POST ")
    assert '/v1/recommendations with "explain": true' in detail["msg"]
    assert "nextbest explain HCP_ID" in detail["msg"]
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert "explain" not in schema["RecommendationBatchCreate"]["properties"]


def test_an_oversized_feedback_batch_is_refused_without_echoing_it(client: TestClient) -> None:
    events = [{"event_id": f"o-{i}", "event_type": "opened", "hcp_id": "H1"} for i in range(5001)]
    response = client.post("/v1/feedback", json={"events": events})
    assert response.status_code == 422
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", "batch", "events"]
    assert detail["msg"] == (
        "at most 5000 events per call, got 5001: split the batch, or send a file of "
        "them with `nextbest feedback FILE`"
    )
    assert "input" not in detail
    assert len(response.content) < 1000
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    events = schema["FeedbackBatchCreate"]["properties"]["events"]
    assert (events["minItems"], events["maxItems"]) == (1, 5000)


def test_an_empty_feedback_batch_says_how_many_events_to_send(client: TestClient) -> None:
    response = client.post("/v1/feedback", json={"events": []})
    assert response.status_code == 422
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", "batch", "events"]
    assert detail["msg"] == "no events: send 1 to 5000 in events, or one event alone"


GZIP_JSON = {"Content-Type": "application/json", "Content-Encoding": "gzip"}


MILLION_ZEROS = ",".join(["0"] * 1_000_000)


@pytest.mark.parametrize(
    ("route", "key", "text", "loc", "says"),
    [
        pytest.param(
            "/v1/recommendations/batch",
            "channel",
            f'{{"hcp_ids": [{MILLION_ZEROS}]}}',
            ["body", "hcp_ids"],
            "at most 1000 HCPs per call, got 1000000",
            id="batch-of-a-million-bad-ids",
        ),
        pytest.param(
            "/v1/feedback",
            "rep",
            '{"events": [' + ",".join(["{}"] * 1_000_000) + "]}",
            ["body", "batch", "events"],
            "at most 5000 events per call, got 1000000: split the batch",
            id="a-million-empty-events",
        ),
    ],
)
def test_a_million_items_are_refused_by_their_number_in_a_short_answer(
    client: TestClient, keys, route: str, key: str, text: str, loc: list[str], says: str
) -> None:
    # Two megabytes that compress to a few kilobytes: cheap for any key holder to send.
    packed = gzip.compress(text.encode(), mtime=0)
    response = client.post(route, content=packed, headers={**GZIP_JSON, **getattr(keys, key)})
    assert response.status_code == 422, response.text[:500]
    (detail,) = response.json()["detail"]  # one error, not one per item
    assert detail["loc"] == loc and says in detail["msg"]
    assert "input" not in detail
    assert len(response.content) < 1000


def test_a_422_lists_the_first_errors_and_counts_the_others(client: TestClient) -> None:
    response = client.post("/v1/recommendations/batch", json={"hcp_ids": [0] * 1000})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert [e["loc"] for e in detail[:-1]] == [["body", "hcp_ids", i] for i in range(20)]
    assert all(e["type"] == "string_type" and e["input"] == 0 for e in detail[:-1])
    assert detail[-1]["type"] == "too_many_errors" and detail[-1]["loc"] == ["body"]
    assert detail[-1]["msg"].startswith("980 more errors not listed (the first 20 are above)")
    assert detail[-1]["ctx"] == {"listed": 20, "unlisted": 980}
    assert len(response.content) < 10_000


def test_a_long_value_is_quoted_in_part_by_the_message_that_refuses_it(
    client: TestClient,
) -> None:
    """A date or number a message quotes is cut: a megabyte sent is not sent back."""
    sent = "2026-" + "1" * 1_000_000
    response = client.post("/v1/recommendations/batch", json={"hcp_ids": ["H1"], "date": sent})
    assert response.status_code == 422
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", "date"]
    assert detail["msg"].startswith(f"'{sent[:40]}'... (1,000,005 characters) is not a date")
    assert len(response.content) < 1000


def test_batch_recommendations_are_logged(client: TestClient) -> None:
    from nextbest.storage.tables import Recommendation

    recommender = client.app.state.runtime.recommender
    ids = [str(h) for h in recommender.hcp_ids[:20]]
    body = client.post("/v1/recommendations/batch", json={"hcp_ids": ids}).json()
    runtime = client.app.state.runtime
    assert runtime.reclog.flush()
    with runtime.sessions() as session:
        for r in body["results"]:
            row = session.get(Recommendation, r["recommendation_id"])
            assert row is not None and row.hcp_id == r["hcp_id"] and row.holdout == r["holdout"]
            # Each answer says when it was served, as the log has it (UTC).
            served = datetime.fromisoformat(r["created_at"])
            assert served == row.created_at.replace(tzinfo=UTC)


def test_an_hcp_listed_twice_in_a_batch_gets_one_answer(client: TestClient) -> None:
    from sqlalchemy import func, select

    from nextbest.storage.tables import Recommendation

    recommender = client.app.state.runtime.recommender
    a, b, c = (str(h) for h in recommender.hcp_ids[30:33])
    body = client.post(
        "/v1/recommendations/batch", json={"hcp_ids": [a, b, a, "NOPE", c, b, "NOPE", a]}
    ).json()
    assert [r["hcp_id"] for r in body["results"]] == [a, b, c]
    assert body["repeated_hcp_ids"] == [a, b, "NOPE"] and body["unknown_hcp_ids"] == ["NOPE"]
    runtime = client.app.state.runtime
    assert runtime.reclog.flush()
    with runtime.sessions() as session:
        logged = session.scalar(
            select(func.count()).select_from(Recommendation).where(Recommendation.hcp_id == a)
        )
    assert logged == 1
    single = client.post("/v1/recommendations/batch", json={"hcp_ids": [a]}).json()
    assert single["repeated_hcp_ids"] == []


def _plan(client: TestClient, keys, **params) -> RepPlanPublic:
    response = client.get(f"/v1/reps/{keys.rep_name}/suggestions", params=params, headers=keys.rep)
    assert response.status_code == 200, response.text
    return RepPlanPublic.model_validate(response.json())


def test_rep_plan_says_when_it_was_served(client: TestClient, keys) -> None:
    before = datetime.now(UTC)
    plan = _plan(client, keys)
    assert before - timedelta(seconds=1) <= plan.created_at <= datetime.now(UTC)
    assert plan.created_at.tzinfo is not None
    # Written as the recommendation routes write theirs ("+00:00"; it was "Z").
    raw = client.get(f"/v1/reps/{keys.rep_name}/suggestions", headers=keys.rep).json()
    one = client.post("/v1/recommendations", json={"hcp_id": plan.suggestions[0].hcp_id})
    assert raw["created_at"].endswith("+00:00") and one.json()["created_at"].endswith("+00:00")


def test_rep_plan_respects_territory_capacity_and_rep_channels(client: TestClient, keys) -> None:
    recommender = client.app.state.runtime.recommender
    plan = _plan(client, keys, capacity=5)
    assert plan.territory_id == keys.territory and plan.capacity == 5
    assert 0 < len(plan.suggestions) <= 5
    assert plan.n_hcps == len(recommender.territories[keys.territory])
    assert [s.rank for s in plan.suggestions] == list(range(1, len(plan.suggestions) + 1))
    assert len({s.hcp_id for s in plan.suggestions}) == len(plan.suggestions)
    for s in plan.suggestions:
        assert recommender.territory_of(s.hcp_id) == keys.territory
        assert s.channel.startswith("rep_")
        assert s.content_id and s.reasons
    greedy = [s.score for s in plan.suggestions if not s.explored]
    assert greedy == sorted(greedy, reverse=True)
    default = _plan(client, keys)
    assert default.capacity == recommender.rules.rep_default_capacity


def test_a_rep_plans_answers_are_replayed_on_rep_channels_only(client: TestClient, keys) -> None:
    """The uplift report and the gate replay a logged answer with its channel filter:
    a rep plan's is every rep channel, not the whole catalog (its held-out HCPs are
    the rep channels' control)."""
    from sqlalchemy import select

    from nextbest.contract.schema import REP_CHANNELS_FILTER
    from nextbest.loop.evidence import greedy_actions
    from nextbest.storage.tables import Recommendation

    _plan(client, keys, capacity=30)
    runtime = client.app.state.runtime
    assert runtime.reclog.flush()
    with runtime.sessions() as session:
        logged = session.execute(
            select(Recommendation.hcp_id, Recommendation.created_at, Recommendation.channel_filter)
        ).all()
    assert logged and {row.channel_filter for row in logged} == {REP_CHANNELS_FILTER}
    model = runtime.recommender.model
    # The plan's logged answers, and the same filter on every HCP the model knows: the
    # plan picks the HCPs a visit suits best, whose first action may be a rep one anyway.
    planned = {row.hcp_id for row in logged}
    others = [h for h in model.hcps["hcp_id"].astype(str) if h not in planned]
    decisions = pd.DataFrame(
        {
            "hcp_id": [row.hcp_id for row in logged] + others,
            "timestamp": [row.created_at for row in logged] + [logged[0].created_at] * len(others),
            "purpose": "promotional",
            "channel_filter": REP_CHANNELS_FILTER,
        }
    )
    replayed = [a for a in greedy_actions(model, decisions) if a is not None]
    channel_of = dict(zip(model.catalog["action_id"], model.catalog["channel"], strict=True))
    assert replayed and all(channel_of[a].startswith("rep_") for a in replayed)
    # The whole catalog, as before, would put other channels first for some of them.
    everything = greedy_actions(model, decisions.assign(channel_filter=None))
    assert any(a is not None and not channel_of[a].startswith("rep_") for a in everything)


@pytest.mark.parametrize(
    ("params", "field"),
    [({"capacity": 0}, "capacity"), ({"capacity": 999}, "capacity"), ({"date": "soon"}, "date")],
)
def test_rep_plan_bad_parameters_are_422(client: TestClient, keys, params, field) -> None:
    response = client.get(f"/v1/reps/{keys.rep_name}/suggestions", params=params, headers=keys.rep)
    assert response.status_code == 422
    assert field in str(response.json()["detail"])


@pytest.mark.parametrize(
    ("sent", "said"),
    [
        ("2.5", "'2.5' is not a whole number: capacity is how many HCPs to suggest, from 1"),
        ("ten", "'ten' is not a whole number: capacity is how many HCPs to suggest, from 1"),
        ("", "'' is not a whole number: capacity is how many HCPs to suggest, from 1"),
        ("0", "must be between 1 and 30 (rep_plan.max_capacity of the serving rules), got 0"),
        ("-3", "must be between 1 and 30 (rep_plan.max_capacity of the serving rules), got -3"),
        ("31", "must be between 1 and 30 (rep_plan.max_capacity of the serving rules), got 31"),
    ],
)
def test_a_capacity_that_is_no_count_of_hcps_says_what_to_send(
    client: TestClient, keys, sent: str, said: str
) -> None:
    """A capacity that was no integer was refused in pydantic's words (`unable to
    parse string as an integer`), one out of range without saying where its bound
    is set."""
    assert client.app.state.runtime.recommender.rules.rep_max_capacity == 30
    response = client.get(
        f"/v1/reps/{keys.rep_name}/suggestions", params={"capacity": sent}, headers=keys.rep
    )
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["query", "capacity"]
    assert error["msg"].startswith(said), error["msg"]
    spaced = client.get(
        f"/v1/reps/{keys.rep_name}/suggestions", params={"capacity": " 2 "}, headers=keys.rep
    )
    assert spaced.status_code == 200 and spaced.json()["capacity"] == 2, spaced.text


@pytest.mark.parametrize(
    ("field", "sent", "said"),
    [
        ("capacity", "9" * 5000, "far more HCPs than a plan holds: capacity is"),
        ("date", "9" * 5000, "is not a day (not YYYY-MM-DD): a plan's date is YYYY-MM-DD"),
    ],
)
def test_a_plan_parameter_of_thousands_of_characters_is_refused_in_a_short_answer(
    client: TestClient, keys, field: str, sent: str, said: str
) -> None:
    """A date of 5,000 characters was sent back whole in the message refusing it; a
    capacity of 5,000 digits was refused in pydantic's words (`exceeded maximum
    size`)."""
    response = client.get(
        f"/v1/reps/{keys.rep_name}/suggestions", params={field: sent}, headers=keys.rep
    )
    assert response.status_code == 422, response.text[:300]
    assert len(response.content) < 1000, len(response.content)
    (error,) = response.json()["detail"]
    assert error["loc"] == ["query", field]
    assert said in error["msg"] and "(5,000 characters)" in error["msg"], error["msg"]


def test_admin_plans_any_territory_but_must_name_it(client: TestClient, keys) -> None:
    unnamed = client.get("/v1/reps/anyone/suggestions")
    assert unnamed.status_code == 422
    # The error names the query parameter where it belongs, as FastAPI's own do.
    assert unnamed.json()["detail"][0]["loc"] == ["query", "territory_id"]
    response = client.get(
        "/v1/reps/anyone/suggestions", params={"territory_id": keys.territory, "capacity": 3}
    )
    assert response.status_code == 200
    assert client.get("/v1/reps/x/suggestions", params={"territory_id": "T999"}).status_code == 404
    # An id no territory has (thousands of characters) is a 422, not echoed back.
    long = client.get("/v1/reps/x/suggestions", params={"territory_id": "T" * 5000})
    assert long.status_code == 422 and "T" * 300 not in long.text, long.text[:300]
    assert long.json()["detail"][0]["loc"] == ["query", "territory_id"]
    empty = client.get("/v1/reps/anyone/suggestions", params={"territory_id": " "})
    assert empty.status_code == 422
    assert "territory_id" in empty.json()["detail"][0]["loc"]
    # A rep key's name: its territory by default, another one refused (the plan would
    # be filed under the wrong rep).
    own = client.get(f"/v1/reps/{keys.rep_name}/suggestions", params={"capacity": 2})
    assert own.status_code == 200, own.text
    assert own.json()["territory_id"] == keys.territory
    other = client.get(
        f"/v1/reps/{keys.rep_name}/suggestions", params={"territory_id": "T999", "capacity": 2}
    )
    assert other.status_code == 422
    assert f"plans territory {keys.territory} (its API key), not T999" in other.text


def test_a_territory_id_with_spaces_around_it_is_that_territory(client: TestClient, keys) -> None:
    """Ids are read with the spaces around them dropped, as the hcps file's are: a
    rep key's own territory sent with a space after it was refused as outside it
    (`territory T001  is outside it`), an admin's naming no rep key was a 404."""
    spaced = f" {keys.territory} "
    admin = client.get(
        "/v1/reps/anyone/suggestions", params={"territory_id": spaced, "capacity": 1}
    )
    assert admin.status_code == 200, admin.text
    assert admin.json()["territory_id"] == keys.territory
    rep = client.get(
        f"/v1/reps/{keys.rep_name}/suggestions",
        params={"territory_id": spaced, "capacity": 1},
        headers=keys.rep,
    )
    assert rep.status_code == 200, rep.text
    assert rep.json()["territory_id"] == keys.territory


def test_a_territory_no_hcp_is_in_is_404_saying_what_to_check(
    client: TestClient, keys, api_settings
) -> None:
    """A plan for a territory of no HCP (a key's mistyped territory, a rep whose
    HCPs are not in the model yet) said only that it is not known: the CRM and its
    operator were not told what to check."""
    misspelt = keys.territory.lower()
    assert misspelt != keys.territory
    response = client.get("/v1/reps/anyone/suggestions", params={"territory_id": misspelt})
    assert response.status_code == 404, response.text
    detail = response.json()["detail"]
    assert detail.startswith(f"territory_id '{misspelt}' is not known to the served model: ")
    assert f"did you mean {keys.territory}?" in detail, detail
    assert "nextbest keys list --check-territories" in detail, detail
    # A territory near none: no guess, the same advice.
    far = client.get("/v1/reps/anyone/suggestions", params={"territory_id": "zz-nowhere"})
    assert far.status_code == 404
    assert "did you mean" not in far.json()["detail"]
    assert "--check-territories" in far.json()["detail"]


def test_a_plan_date_that_is_no_day_says_so_alike(client: TestClient, keys) -> None:
    for bad in ("2026-13-01", "tomorrow", "2026-12-01T10:00:00+00:00"):
        response = client.get(
            "/v1/reps/anyone/suggestions", params={"territory_id": keys.territory, "date": bad}
        )
        assert response.status_code == 422
        assert f"'{bad}' is not a day" in response.json()["detail"][0]["msg"], response.text


def test_a_plan_date_with_spaces_around_it_is_that_day(client: TestClient, keys) -> None:
    """A date checked without its spaces was then parsed with them and refused in
    pydantic's words (`invalid character in year`); a '+' in a query string, as a
    form encoder writes a space, is one."""
    today = datetime.now(UTC).date().isoformat()
    for sent in (f" {today}", f"{today} ", f"\t{today}"):
        response = client.get(
            "/v1/reps/anyone/suggestions",
            params={"territory_id": keys.territory, "date": sent, "capacity": 1},
        )
        assert response.status_code == 200, (sent, response.text)
        assert response.json()["date"] == today
    plus = client.get(
        f"/v1/reps/anyone/suggestions?territory_id={keys.territory}&capacity=1&date=+{today}"
    )
    assert plus.status_code == 200, plus.text


def test_rep_decisions_are_feedback_and_dismissals_suppress(client: TestClient, keys) -> None:
    plan = _plan(client, keys, capacity=3)
    assert len(plan.suggestions) >= 2
    first, second = plan.suggestions[0], plan.suggestions[1]
    url = f"/v1/reps/{keys.rep_name}/feedback"

    def decide(s, decision, reason=None):
        body = {
            "recommendation_id": s.recommendation_id,
            "hcp_id": s.hcp_id,
            "action_id": s.action_id,
            "decision": decision,
        }
        if reason:
            body["reason"] = reason
        return client.post(url, json=body, headers=keys.rep)

    missing = decide(first, "dismiss")
    assert missing.status_code == 422 and "reason code" in str(missing.json())
    unknown = decide(first, "dismiss", "bored")
    assert unknown.status_code == 422 and "not_relevant" in str(unknown.json())
    assert decide(first, "dismiss", "not_relevant").json()["accepted"] == 1
    assert decide(first, "dismiss", "not_relevant").json()["duplicates"] == 1
    assert decide(second, "accept").json()["accepted"] == 1
    # Each item of one recommendation takes its own decision.
    answer = client.post(
        "/v1/recommendations", json={"hcp_id": second.hcp_id, "k": 3}, headers=keys.rep
    ).json()
    assert len(answer["items"]) >= 2
    for item in answer["items"][:2]:
        on = SimpleNamespace(
            recommendation_id=answer["recommendation_id"],
            hcp_id=second.hcp_id,
            action_id=item["action_id"],
        )
        assert decide(on, "snooze").json()["accepted"] == 1
    # The dismissed action is not offered to that HCP again.
    again = client.post(
        "/v1/recommendations", json={"hcp_id": first.hcp_id, "k": 50, "explain": True}
    ).json()
    assert first.action_id not in {i["action_id"] for i in again["items"]}
    assert any("not_relevant" in w for w in again["excluded"][first.action_id])

    def dismissed_as_of(day: str | None) -> bool:
        body = {"hcp_id": first.hcp_id, "k": 50, "explain": True}
        if day is not None:
            body["date"] = day
        answer = client.post("/v1/recommendations", json=body).json()
        return any("not_relevant" in w for w in answer["excluded"].get(first.action_id, []))

    # Today's decision sees it; so does one dated yesterday, before the dismissal was
    # made: it is acted on now, when the rep has already said no.
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    assert dismissed_as_of(yesterday)
    assert dismissed_as_of(datetime.now(UTC).date().isoformat())
    # The latest decision on the pair counts: accepting it lifts the dismissal.
    assert decide(first, "accept").json()["accepted"] == 1
    assert not dismissed_as_of(None)
    # Dismissed again for the same reason: a new decision (it was a duplicate of the
    # first dismissal, and the acceptance stayed the latest); sent twice, one.
    assert decide(first, "dismiss", "not_relevant").json()["accepted"] == 1
    assert dismissed_as_of(None)
    assert decide(first, "dismiss", "not_relevant").json()["duplicates"] == 1
    assert decide(first, "accept").json()["accepted"] == 1
    assert not dismissed_as_of(None)
    # A decision that changed the latest one, sent again (a retry after a timeout):
    # a duplicate, not a second event.
    assert decide(first, "dismiss", "too_frequent").json()["accepted"] == 1
    assert decide(first, "dismiss", "too_frequent").json()["duplicates"] == 1
    assert decide(first, "accept").json()["accepted"] == 1
    assert decide(first, "accept").json()["duplicates"] == 1
    # A dismissal with another reason code is a new decision, not a duplicate.
    assert decide(first, "dismiss", "wrong_content").json()["accepted"] == 1
    answer = client.post(
        "/v1/recommendations", json={"hcp_id": first.hcp_id, "k": 50, "explain": True}
    ).json()
    assert any("wrong_content" in w for w in answer["excluded"][first.action_id])
    refused = decide(first, "accept", "other")
    assert refused.status_code == 422 and "takes no reason code" in refused.text


def test_an_offline_decision_counts_from_when_it_was_taken(client: TestClient, keys) -> None:
    plan = _plan(client, keys, capacity=8)
    s = plan.suggestions[-1]
    url = f"/v1/reps/{keys.rep_name}/feedback"
    now = datetime.now(UTC)

    def snooze(minutes_ago: float, event_id: str | None) -> dict:
        body = {
            "recommendation_id": s.recommendation_id,
            "hcp_id": s.hcp_id,
            "action_id": s.action_id,
            "decision": "snooze",
            "occurred_at": (now - timedelta(minutes=minutes_ago)).isoformat(),
        }
        if event_id is not None:
            body["event_id"] = event_id
        answer = client.post(url, json=body, headers=keys.rep)
        return {"status": answer.status_code, **answer.json()}

    def snoozed(on: datetime) -> bool:
        answer = client.post(
            "/v1/recommendations",
            json={"hcp_id": s.hcp_id, "k": 50, "explain": True, "date": on.isoformat()},
        ).json()
        return any("snoozed" in w for w in answer["excluded"].get(s.action_id, []))

    # Without an event id, an offline decision is known by its time: the same one
    # sent twice is a duplicate, the same decision taken at another time is not.
    # (A decision cannot be older than its suggestion, but for the clock skew allowed.)
    derived = snooze(12, None)
    assert (derived["accepted"], snooze(12, None)["duplicates"]) == (1, 1)
    assert snooze(11, None)["accepted"] == 1
    assert snooze(10, "offline-1")["accepted"] == 1
    # The 7-day snooze counts from the latest one's occurred_at, not from its receipt.
    taken = now - timedelta(minutes=10)
    assert snoozed(taken + timedelta(days=7, minutes=-1))
    assert not snoozed(taken + timedelta(days=7, minutes=1))
    ahead = snooze(-60, "offline-3")
    assert ahead["status"] == 422 and "in the future" in ahead["rejected"][0]["message"]


def test_a_decision_dated_before_its_suggestion_was_served_is_422(client: TestClient, keys) -> None:
    """A snooze dated in January on a suggestion served today would count its 7 days
    from January and suppress nothing: refused, on the rep route and on /v1/feedback."""
    s = _plan(client, keys, capacity=3).suggestions[0]
    decision = {
        "recommendation_id": s.recommendation_id,
        "hcp_id": s.hcp_id,
        "action_id": s.action_id,
        "decision": "snooze",
        "occurred_at": "2026-01-01T00:00:00Z",
    }
    url = f"/v1/reps/{keys.rep_name}/feedback"
    refused = client.post(url, json=decision, headers=keys.rep)
    assert refused.status_code == 422, refused.text
    assert refused.json()["accepted"] == 0
    [said] = refused.json()["rejected"]
    assert said["message"].startswith(
        "occurred_at 2026-01-01T00:00:00+00:00 predates the recommendation it names: "
        f"'{s.recommendation_id}' was served at "
    )
    event = {
        "event_id": "snooze-in-january",
        "event_type": "snoozed",
        "hcp_id": s.hcp_id,
        "recommendation_id": s.recommendation_id,
        "action_id": s.action_id,
        "reason": "not_relevant",
        "occurred_at": "2026-01-01T00:00:00Z",
    }
    also = client.post("/v1/feedback", json=event)
    assert also.status_code == 422, also.text
    assert also.json()["rejected"][0]["message"] == said["message"]
    # A CRM whose clock is a few minutes behind the server's is not refused.
    behind = datetime.now(UTC) - timedelta(minutes=5)
    ok = client.post(url, json={**decision, "occurred_at": behind.isoformat()}, headers=keys.rep)
    assert ok.status_code == 200 and ok.json()["accepted"] == 1, ok.text


def _an_email_pick_a_rep_sees(client: TestClient, keys) -> tuple[str, dict]:
    """An HCP of the rep's territory and an e-mail pick served for it (not held out)."""
    served = client.app.state.runtime.recommender
    mine = [h for h in served.hcp_ids.tolist() if served.territory_of(h) == keys.territory]
    for hcp in mine:
        pick = client.post(
            "/v1/recommendations", json={"hcp_id": hcp, "channel": "email"}, headers=keys.rep
        ).json()
        if pick["items"]:
            return hcp, pick
    raise AssertionError(f"every HCP of {keys.territory} was held out")


def test_a_rep_decides_on_rep_channel_suggestions_only(client: TestClient, keys) -> None:
    """An e-mail pick a rep can see (a recommendation for an HCP of its territory)
    is not the rep's to dismiss: the dismissal would stop the e-mail system's sends
    to that HCP. Refused on the rep route and, from a rep key, on /v1/feedback; the
    e-mail system's own dismissal is stored."""
    hcp, pick = _an_email_pick_a_rep_sees(client, keys)
    action = pick["items"][0]["action_id"]
    decision = {
        "recommendation_id": pick["recommendation_id"],
        "hcp_id": hcp,
        "action_id": action,
        "decision": "dismiss",
        "reason": "not_relevant",
    }
    url = f"/v1/reps/{keys.rep_name}/feedback"
    said = (
        f"action '{action}' is on channel 'email', not a rep channel (rep_...): rep "
        "decisions (accept, dismiss, snooze) are for suggestions on rep channels; feedback "
        "on email actions comes from the email system"
    )
    for verb in ("dismiss", "snooze", "accept"):
        body = {**decision, "decision": verb}
        if verb == "accept":
            del body["reason"]
        refused = client.post(url, json=body, headers=keys.rep)
        assert refused.status_code == 422, refused.text
        [error] = refused.json()["detail"]
        assert error["loc"] == ["body", "action_id"] and error["msg"].startswith(said), error
    event = {
        "event_id": "rep-dismisses-an-email",
        "event_type": "dismissed",
        "hcp_id": hcp,
        "recommendation_id": pick["recommendation_id"],
        "action_id": action,
        "reason": "not_relevant",
    }
    also = client.post("/v1/feedback", json=event, headers=keys.rep)
    assert also.status_code == 422, also.text
    [rejected] = also.json()["rejected"]
    assert rejected["message"].startswith(said) and rejected["status"] == 422
    # Nothing was stored: the e-mail action is still served to the e-mail system.
    again = client.post(
        "/v1/recommendations",
        json={"hcp_id": hcp, "channel": "email", "k": 50, "explain": True},
        headers=keys.channel,
    ).json()
    assert not any("dismissed" in w for w in again["excluded"].get(action, [])), again
    # The e-mail system's own dismissal is its to send, and suppresses the action.
    own = client.post("/v1/feedback", json=event, headers=keys.channel)
    assert own.status_code == 200 and own.json()["accepted"] == 1, own.text
    again = client.post(
        "/v1/recommendations",
        json={"hcp_id": hcp, "channel": "email", "k": 50, "explain": True},
        headers=keys.channel,
    ).json()
    assert any("dismissed" in w for w in again["excluded"][action]), again


def test_a_rep_key_records_rep_channel_events_and_opt_outs_only(client: TestClient, keys) -> None:
    """A rep key could plant an e-mail system's events (deliveries, opens, clicks) for
    its HCPs: evidence the e-mail system did not report, contacts in its fatigue caps.
    Each is refused on its own (422 naming the event's channel or action), whichever
    way the channel is told (stated, its action's, its recommendation's); the rep's
    own visit and an opt-out it heard, of any channel, are stored."""
    hcp, pick = _an_email_pick_a_rep_sees(client, keys)
    action, rid = pick["items"][0]["action_id"], pick["recommendation_id"]
    events = [
        {"event_type": "opened", "recommendation_id": rid, "action_id": action},
        {"event_type": "delivered", "channel": "email"},
        {"event_type": "clicked", "recommendation_id": rid},
        {"event_type": "completed", "channel": "rep_visit"},
        {"event_type": "opted_out", "channel": "email", "reason": "told the rep"},
        {"event_type": "opened", "action_id": action, "channel": "rep_phone"},
        # A rep channel stated on the e-mail answer would credit the e-mail decision.
        {"event_type": "clicked", "recommendation_id": rid, "channel": "rep_visit"},
        {"event_type": "completed", "recommendation_id": rid, "channel": "rep_visit"},
    ]
    batch = [{**e, "event_id": f"rep-{i}", "hcp_id": hcp} for i, e in enumerate(events)]
    answer = client.post("/v1/feedback", json={"events": batch}, headers=keys.rep)
    assert answer.status_code == 207, answer.text
    assert answer.json()["accepted"] == 2  # the visit and the opt-out
    rejected = {r["index"]: r for r in answer.json()["rejected"]}
    assert sorted(rejected) == [0, 1, 2, 5, 6, 7]
    assert {r["status"] for r in rejected.values()} == {422}
    said = {
        0: f"action '{action}' is on channel 'email', not a rep channel (rep_...): a rep "
        "key records opened events of rep channels only (and opt-outs of any channel)",
        1: "channel 'email', not a rep channel (rep_...): a rep key records delivered events "
        "of rep channels only (and opt-outs of any channel): delivered events on email come "
        "from the email system",
        2: f"recommendation '{rid}' served channel(s) email, no rep channel (rep_...): a "
        "rep key records clicked events",
        5: f"action '{action}' is on channel 'email', not a rep channel",
        6: f"recommendation '{rid}' served channel(s) email, no rep channel (rep_...): a "
        "rep key records clicked events",
        7: f"recommendation '{rid}' served channel(s) email, no rep channel",
    }
    for index, start in said.items():
        assert rejected[index]["message"].startswith(start), rejected[index]
    # The e-mail system's own events are its to send.
    theirs = [{**e, "event_id": f"esp-{i}"} for i, e in enumerate(batch[:3])]
    own = client.post("/v1/feedback", json={"events": theirs}, headers=keys.channel)
    assert own.status_code == 200 and own.json()["accepted"] == 3, own.text


def test_a_midnight_time_keeps_its_offset(client: TestClient) -> None:
    """'2026-11-28T00:00:00+05:00' is 19:00 UTC the day before, not the date 11-28."""
    from nextbest.api.schemas import RecommendationCreate

    body = RecommendationCreate.model_validate({"hcp_id": "H", "date": "2026-11-28T00:00:00+05:00"})
    assert isinstance(body.date, datetime)
    assert body.date.astimezone(UTC) == datetime(2026, 11, 27, 19, tzinfo=UTC)
    day = RecommendationCreate.model_validate({"hcp_id": "H", "date": "2026-11-28"}).date
    assert type(day) is date_type
    plan = client.get("/v1/reps/x/suggestions?date=2026-11-28T00:00:00%2B05:00")
    assert plan.status_code == 422 and "a plan's date is YYYY-MM-DD" in plan.text


def test_a_batch_sent_to_the_rep_route_is_told_where_batches_go(client: TestClient, keys) -> None:
    url = f"/v1/reps/{keys.rep_name}/feedback"
    sent = client.post(url, json={"events": [{"decision": "accept"}]}, headers=keys.rep)
    assert sent.status_code == 422, sent.text
    [error] = sent.json()["detail"]  # not three "Field required" and an extra "events"
    assert error["loc"] == ["body"], error
    assert error["msg"].startswith("this route takes one decision per request"), error
    assert "POST /v1/feedback" in error["msg"], error


def test_a_list_of_decisions_sent_to_the_rep_route_is_told_where_lists_go(
    client: TestClient, keys
) -> None:
    """A JSON array of decisions was refused in pydantic's words (`Input should be a
    valid dictionary or object to extract fields from`), with the whole list echoed."""
    plan = _plan(client, keys, capacity=1)
    (first,) = plan.suggestions
    decision = {
        "recommendation_id": first.recommendation_id,
        "hcp_id": first.hcp_id,
        "action_id": first.action_id,
        "decision": "accept",
    }
    url = f"/v1/reps/{keys.rep_name}/feedback"
    sent = client.post(url, json=[decision], headers=keys.rep)
    assert sent.status_code == 422, sent.text
    [error] = sent.json()["detail"]
    assert error["loc"] == ["body"], error
    assert error["msg"].startswith(
        "this route takes one decision per request, a JSON object, not a list"
    ), error
    assert 'POST /v1/feedback as {"events": [...]}' in error["msg"], error
    # Nothing was stored: the decision sent alone is new.
    alone = client.post(url, json=decision, headers=keys.rep)
    assert alone.status_code == 200 and alone.json()["accepted"] == 1, alone.text


@pytest.mark.parametrize("at", ["9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+14:00"])
def test_a_time_beyond_year_9999_or_before_year_1_in_utc_is_refused_alone(
    client: TestClient, keys, at: str
) -> None:
    """Its UTC offset takes it out of datetime's range: converting it failed the
    request (500), and a batch lost its valid events with it."""
    s = _plan(client, keys, capacity=1).suggestions[0]
    said = f"{at} is outside the years 1 to 9999 once its UTC offset is applied"
    url = f"/v1/reps/{keys.rep_name}/feedback"
    decision = {
        "recommendation_id": s.recommendation_id,
        "hcp_id": s.hcp_id,
        "action_id": s.action_id,
        "decision": "accept",
    }
    refused = client.post(url, json={**decision, "occurred_at": at}, headers=keys.rep)
    assert refused.status_code == 422, refused.text
    [error] = refused.json()["detail"]
    assert error["loc"] == ["body", "occurred_at"] and said in error["msg"], error
    good = {"event_type": "opened", "hcp_id": s.hcp_id, "channel": "email"}
    events = [
        {**good, "event_id": f"in-range-{at}"},
        {**good, "event_id": "out", "occurred_at": at},
    ]
    batch = client.post("/v1/feedback", json={"events": events})
    assert batch.status_code == 207, batch.text
    assert batch.json()["accepted"] == 1
    [rejected] = batch.json()["rejected"]
    assert rejected["index"] == 1 and rejected["message"].startswith(f"occurred_at: {said}")


@pytest.mark.parametrize(
    ("at", "said"),
    [
        ("2024", "'2024' is a year alone, not a date"),
        (2024, "2024 is a year alone, not a date"),
        ("2024-03", "'2024-03' is a year and month, not a date"),
        (20240301, "20240301 read as seconds since 1970 is 1970-08-23T06:18:21+00:00, before 2000"),
    ],
)
def test_a_time_no_event_can_have_is_refused_as_sent_on_both_feedback_routes(
    client: TestClient, keys, at: object, said: str
) -> None:
    """A year, sent as text or a JSON number, was read as seconds since 1970 and
    refused as 1970-01-01T00:33:44 ('seconds since 1970?'), and '2024-03' with
    pydantic's 'input is too short': each is refused naming what was sent."""
    s = _plan(client, keys, capacity=1).suggestions[0]
    url = f"/v1/reps/{keys.rep_name}/feedback"
    decision = {
        "recommendation_id": s.recommendation_id,
        "hcp_id": s.hcp_id,
        "action_id": s.action_id,
        "decision": "accept",
    }
    refused = client.post(url, json={**decision, "occurred_at": at}, headers=keys.rep)
    assert refused.status_code == 422, refused.text
    [error] = refused.json()["detail"]
    assert error["loc"] == ["body", "occurred_at"] and said in error["msg"], error
    good = {"event_type": "opened", "hcp_id": s.hcp_id, "channel": "email"}
    events = [
        {**good, "event_id": f"dated-{at}"},
        {**good, "event_id": "no-day", "occurred_at": at},
    ]
    batch = client.post("/v1/feedback", json={"events": events})
    assert batch.status_code == 207, batch.text
    assert batch.json()["accepted"] == 1
    [rejected] = batch.json()["rejected"]
    assert rejected["index"] == 1 and rejected["message"].startswith(f"occurred_at: {said}")


@pytest.mark.parametrize(
    "day", ["0001-01-01", "1999-12-31", "2100-01-01", "20261101", "9999-12-31T23:59:59-23:59"]
)
def test_a_date_off_the_calendar_is_422_on_every_route(client: TestClient, keys, day: str) -> None:
    hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
    answers = [
        client.post("/v1/recommendations", json={"hcp_id": hcp, "date": day}),
        client.post("/v1/recommendations/batch", json={"hcp_ids": [hcp], "date": day}),
        client.get(f"/v1/reps/{keys.rep_name}/suggestions?date={day}", headers=keys.rep),
    ]
    for answer in answers:
        assert answer.status_code == 422, answer.text
        detail = answer.json()["detail"][0]
        assert detail["loc"][-1] == "date"
        said = detail["msg"]
        expected = "not a number" if day.isdigit() else "from 2000-01-01 to 2099-12-31"
        a_day_only = "a plan's date is YYYY-MM-DD" in said and (day.isdigit() or "T" in day)
        assert expected in said or a_day_only, said


def test_single_answer_matches_its_schema(client: TestClient) -> None:
    hcp = str(client.app.state.runtime.recommender.hcp_ids[5])
    body = client.post("/v1/recommendations", json={"hcp_id": hcp, "explain": True}).json()
    parsed = RecommendationPublic.model_validate(body)
    assert parsed.excluded is not None


def test_a_day_before_the_models_history_is_422_on_every_route(client: TestClient, keys) -> None:
    # The model's features and reasons hold history up to its cut-off: a plan for an
    # earlier day would quote contacts made after it.
    recommender = client.app.state.runtime.recommender
    hcp = str(recommender.hcp_ids[recommender.territory == keys.territory][0])
    cutoff_day = recommender.as_of.date()
    before = (cutoff_day - timedelta(days=1)).isoformat()
    answers = [
        client.post("/v1/recommendations", json={"hcp_id": hcp, "date": before}),
        client.post("/v1/recommendations/batch", json={"hcp_ids": [hcp], "date": before}),
        client.get(f"/v1/reps/{keys.rep_name}/suggestions?date={before}", headers=keys.rep),
    ]
    for answer, where in zip(answers, ["body", "body", "query"], strict=True):
        assert answer.status_code == 422, answer.text
        detail = answer.json()["detail"][0]
        assert detail["loc"] == [where, "date"]
        assert f"ask for {cutoff_day.isoformat()} or later" in detail["msg"]
    # The cut-off's own day is served.
    same_day = client.post(
        "/v1/recommendations", json={"hcp_id": hcp, "date": cutoff_day.isoformat()}
    )
    assert same_day.status_code == 200, same_day.text


@pytest.mark.parametrize(
    ("hcp_id", "says"),
    [
        ("", "at least 1 character"),
        ("   ", "an HCP id is blank (3 characters of white space and nothing else)"),
        ("H" * 129, "at most 128 characters"),
    ],
    ids=["empty", "blank", "too-long"],
)
def test_each_batch_hcp_id_is_held_to_the_single_routes_limits(
    client: TestClient, hcp_id: str, says: str
) -> None:
    recommender = client.app.state.runtime.recommender
    ids = [str(h) for h in recommender.hcp_ids[:3]]
    response = client.post("/v1/recommendations/batch", json={"hcp_ids": [*ids, hcp_id]})
    assert response.status_code == 422, response.text
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", "hcp_ids", 3]
    assert says in detail["msg"]
    single = client.post("/v1/recommendations", json={"hcp_id": hcp_id})
    assert single.status_code == 422 and says in single.json()["detail"][0]["msg"]
    # 1,000 ids of 10,000 characters: refused by their size, unread, and not sent back.
    huge = client.post("/v1/recommendations/batch", json={"hcp_ids": ["x" * 10_000] * 1000})
    assert huge.status_code == 413 and len(huge.content) < 200


@pytest.mark.parametrize("channel", ["Email", "e-mail", "emial", " EMAIL "])
def test_a_misspelt_channel_gets_the_suggestion_feedback_gives(
    client: TestClient, channel: str
) -> None:
    ids = [str(h) for h in client.app.state.runtime.recommender.hcp_ids[:2]]
    batch = client.post("/v1/recommendations/batch", json={"hcp_ids": ids, "channel": channel})
    single = client.post("/v1/recommendations", json={"hcp_id": ids[0], "channel": channel})
    feedback = client.post(
        "/v1/feedback",
        json={"event_id": f"spelt-{channel}", "event_type": "delivered", "hcp_id": ids[0],
              "channel": channel},
    )  # fmt: skip
    for answer in (batch, single, feedback):
        assert answer.status_code == 422, answer.text
        assert "did you mean 'email'?" in answer.text, answer.text


def test_an_answer_is_logged_with_the_time_it_was_decided_for(client: TestClient) -> None:
    """A plan or a pick asked for another day is served today: the log keeps both
    times, and the report and the gate replay it on the day it was for."""
    from sqlalchemy import select

    from nextbest.storage.tables import Recommendation

    hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
    # A day ahead of any clock the test may run at: "tomorrow" read before midnight is
    # today after it, and today's decision is for now, not for the day's start.
    tomorrow = date_type(2030, 1, 7)
    asked = client.post("/v1/recommendations", json={"hcp_id": hcp, "date": tomorrow.isoformat()})
    now = client.post("/v1/recommendations", json={"hcp_id": hcp})
    runtime = client.app.state.runtime
    assert runtime.reclog.flush()
    with runtime.sessions() as session:
        logged = dict(
            session.execute(
                select(Recommendation.recommendation_id, Recommendation.decided_for)
            ).all()
        )
    for_tomorrow = logged[asked.json()["recommendation_id"]]
    assert for_tomorrow == datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=UTC)
    served_now = logged[now.json()["recommendation_id"]]
    assert abs(served_now - datetime.now(UTC)) < timedelta(minutes=5)


@pytest.mark.parametrize(
    ("field", "nul"),
    [
        ("action_id", "A\x00"),
        ("hcp_id", "H\x00"),
        ("recommendation_id", "r\x00"),
        ("reason", "x\x00"),
    ],
)
def test_a_nul_in_a_decision_is_refused_naming_its_field(
    client: TestClient, keys, field: str, nul: str
) -> None:
    """A NUL character reached the database: on PostgreSQL, which refuses it in text,
    the lookup of the pair's latest decision answered 500 (schemathesis found it); on
    SQLite the derived event_id was blamed, a field the rep had not sent."""
    plan = _plan(client, keys)
    first = plan.suggestions[0]
    decision = {
        "recommendation_id": first.recommendation_id,
        "hcp_id": first.hcp_id,
        "action_id": first.action_id,
        "decision": "snooze",
        field: nul,
    }
    # An admin's, as a rep key's decision about an unknown HCP is a 403 first.
    sent = client.post(f"/v1/reps/{keys.rep_name}/feedback", json=decision)
    assert sent.status_code == 422, sent.text
    [error] = sent.json()["detail"]
    assert error["loc"] == ["body", field], error
    assert "NUL character" in error["msg"], error


def test_a_plan_for_a_rep_id_with_a_nul_is_refused(client: TestClient, keys) -> None:
    """Its answers are logged with the rep_id: on PostgreSQL, which refuses a NUL in
    text, they were served but dropped from the log, with the other answers the same
    key had in that write."""
    plan = client.get("/v1/reps/x%00y/suggestions", params={"territory_id": keys.territory})
    assert plan.status_code == 422, plan.text
    [error] = plan.json()["detail"]
    assert error["loc"] == ["path", "rep_id"] and "NUL character" in error["msg"], error


def test_a_plan_for_a_rep_id_longer_than_the_log_keeps_is_refused(client: TestClient, keys) -> None:
    """The plan's answers are logged with the rep_id, 128 characters at most: an
    admin's plan for a longer one was logged with it cut short on PostgreSQL (whole
    on SQLite), filed under a rep that does not exist. The decision route takes the
    same rep_id."""
    long = "r" * 129
    plan = client.get(f"/v1/reps/{long}/suggestions", params={"territory_id": keys.territory})
    assert plan.status_code == 422, plan.text
    [error] = plan.json()["detail"]
    assert error["loc"] == ["path", "rep_id"] and "at most 128 characters" in error["msg"], error
    decision = client.post(
        f"/v1/reps/{long}/feedback",
        json={"recommendation_id": "r1", "hcp_id": "H1", "action_id": "A1", "decision": "accept"},
    )
    assert decision.status_code == 422, decision.text
    assert [e["loc"] for e in decision.json()["detail"]] == [["path", "rep_id"]]
    fits = client.get(f"/v1/reps/{long[:128]}/suggestions", params={"territory_id": keys.territory})
    assert fits.status_code == 200, fits.text
    assert fits.json()["rep_id"] == long[:128]


def test_a_dismissal_naming_its_plan_answer_but_no_action_holds_that_action_back(
    client: TestClient, keys
) -> None:
    """A CRM that sends a rep's dismissal to /v1/feedback with the plan answer's
    recommendation_id but no action_id: the event was stored (200, accepted) and
    suppressed nothing, suppression being kept per HCP and action, so the HCP
    topped the next plan with the very visit just dismissed. A plan answer serves
    one item: the decision is about it. One that cannot be told (a recommendation
    of several items) is stored and said to suppress nothing."""
    from sqlalchemy import select

    from nextbest.storage.tables import FeedbackEvent

    first = _plan(client, keys, capacity=3).suggestions[0]
    dismissal = {
        "event_id": "crm-dismissal-1",
        "event_type": "dismissed",
        "hcp_id": first.hcp_id,
        "recommendation_id": first.recommendation_id,
        "reason": "not_relevant",
    }
    sent = client.post("/v1/feedback", json=dismissal, headers=keys.rep)
    assert sent.status_code == 200 and sent.json()["accepted"] == 1, sent.text
    assert sent.json()["uncounted"] == []
    with client.app.state.runtime.sessions() as session:
        stored = session.execute(
            select(FeedbackEvent.action_id, FeedbackEvent.channel).where(
                FeedbackEvent.event_id == "crm-dismissal-1"
            )
        ).one()
    assert tuple(stored) == (first.action_id, first.channel)
    again = _plan(client, keys, capacity=30)
    suggested = {(s.hcp_id, s.action_id) for s in again.suggestions}
    assert (first.hcp_id, first.action_id) not in suggested
    # Sent again, the same event: a duplicate.
    resent = client.post("/v1/feedback", json=dismissal, headers=keys.rep)
    assert resent.json()["duplicates"] == 1, resent.text
    # A recommendation of several items: which one is meant cannot be told.
    answer = client.post(
        "/v1/recommendations", json={"hcp_id": again.suggestions[0].hcp_id, "k": 3}
    ).json()
    assert len(answer["items"]) >= 2, answer
    snooze = {
        "event_id": "crm-snooze-1",
        "event_type": "snoozed",
        "hcp_id": answer["hcp_id"],
        "recommendation_id": answer["recommendation_id"],
    }
    told = client.post("/v1/feedback", json=snooze)
    assert told.status_code == 200 and told.json()["accepted"] == 1, told.text
    [said] = told.json()["uncounted"]
    assert said["message"].startswith(
        "stored, but suppresses nothing: a snoozed event holds back the action it names, and "
        f"recommendation '{answer['recommendation_id']}' served {len(answer['items'])} actions"
    ), said


def test_a_decision_an_earlier_release_stored_without_its_action_is_a_duplicate_when_resent(
    client: TestClient, keys
) -> None:
    """0.2.0 stored a dismissal naming no action as sent (no action_id, no channel).
    Resent after the upgrade, the same event now gets its recommendation's item
    filled in: it is that stored event again, not another one reusing its id."""
    from sqlalchemy import update

    from nextbest.storage.tables import FeedbackEvent

    first = _plan(client, keys, capacity=3).suggestions[0]
    dismissal = {
        "event_id": "crm-dismissal-before-upgrade",
        "event_type": "dismissed",
        "hcp_id": first.hcp_id,
        "recommendation_id": first.recommendation_id,
        "reason": "not_relevant",
    }
    sent = client.post("/v1/feedback", json=dismissal, headers=keys.rep)
    assert sent.status_code == 200 and sent.json()["accepted"] == 1, sent.text
    with client.app.state.runtime.sessions() as session:  # as the earlier release stored it
        session.execute(
            update(FeedbackEvent)
            .where(FeedbackEvent.event_id == dismissal["event_id"])
            .values(action_id=None, channel=None)
        )
        session.commit()
    resent = client.post("/v1/feedback", json=dismissal, headers=keys.rep)
    assert resent.status_code == 200, resent.text
    assert resent.json()["duplicates"] == 1 and resent.json()["rejected"] == [], resent.text
    # Another event under that id is still refused: the stored one names no action.
    other = {**dismissal, "action_id": first.action_id}
    refused = client.post("/v1/feedback", json=other, headers=keys.rep)
    assert refused.json()["duplicates"] == 0, refused.text
    [rejected] = refused.json()["rejected"]
    assert "already stored for another event" in rejected["message"], rejected


def test_an_hcp_wide_reason_keeps_the_hcp_out_of_rep_plans_for_its_days(
    api_settings, keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A suggestion dismissed with a reason code of rep_plan.hcp_wide_reasons (the
    shipped file: hcp_unavailable) holds back every rep action of the HCP, so the next
    plan does not suggest the HCP through another one; other codes hold back the one
    action dismissed, and e-mail is the e-mail system's to decide."""
    from nextbest.api.app import create_app
    from nextbest.service import recommend

    monkeypatch.setattr(recommend, "MAX_LEFT_OUT", 1000)  # every HCP of the territory said
    settings = api_settings.model_copy(update={"epsilon": 0.0, "holdout_rate": 0.0})
    with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
        recommender = client.app.state.runtime.recommender
        assert recommender.rules.hcp_wide_reasons == ("hcp_unavailable",)
        rep = set(recommender.action_ids[recommender.rep_actions].tolist())
        url = f"/v1/reps/{keys.rep_name}/feedback"

        def rep_items(hcp_id: str) -> list[str]:
            answer = client.post("/v1/recommendations", json={"hcp_id": hcp_id, "k": 50}).json()
            return [i["action_id"] for i in answer["items"] if i["action_id"] in rep]

        def dismiss(s, reason: str) -> None:
            body = {
                "recommendation_id": s.recommendation_id,
                "hcp_id": s.hcp_id,
                "action_id": s.action_id,
                "decision": "dismiss",
                "reason": reason,
            }
            answer = client.post(url, json=body, headers=keys.rep)
            assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text

        plan = _plan(client, keys, capacity=30)
        # Two HCPs with another rep action worth a visit, each suggested once.
        both = [s for s in plan.suggestions if len(rep_items(s.hcp_id)) >= 2][:2]
        assert len(both) == 2, "the test territory has HCPs with two rep actions to offer"
        per_action, hcp_wide = both
        dismiss(per_action, "not_relevant")
        before = datetime.now(UTC)
        dismiss(hcp_wide, "hcp_unavailable")
        after = datetime.now(UTC)
        again = {s.hcp_id: s for s in _plan(client, keys, capacity=30).suggestions}
        # Not relevant: that content, not the visit; the HCP is suggested with another.
        assert again[per_action.hcp_id].action_id != per_action.action_id
        # Unavailable: no rep action of the HCP, in any plan or answer, for 30 days.
        assert hcp_wide.hcp_id not in again
        assert rep_items(hcp_wide.hcp_id) == []
        explained = client.post(
            "/v1/recommendations", json={"hcp_id": hcp_wide.hcp_id, "k": 50, "explain": True}
        ).json()
        assert not any(i["channel"].startswith("rep_") for i in explained["items"])
        for action_id in rep - {hcp_wide.action_id}:
            (said,) = [w for w in explained["excluded"][action_id] if "hcp_unavailable" in w]
            assert said.startswith(
                f"dismissed (hcp_unavailable) on {hcp_wide.action_id} in the last 30 days, "
                "which holds every rep action of this HCP (rep_plan.hcp_wide_reasons, "
                "rules.yaml line "
            ), said
            assert_lifts_between(said, before + timedelta(days=30), after + timedelta(days=30))
        # The rep plan's explain says it too.
        left_out = client.get(
            f"/v1/reps/{keys.rep_name}/suggestions",
            params={"capacity": 30, "explain": "true"},
            headers=keys.rep,
        ).json()["left_out"]
        (entry,) = [e for e in left_out if e["hcp_id"] == hcp_wide.hcp_id]
        assert entry["why"] == "no_rep_action_allowed"
        assert set(entry["excluded"]) == rep
        assert all(any("hcp_unavailable" in w for w in why) for why in entry["excluded"].values())
        # Accepting the dismissed suggestion after all lifts it, as for any dismissal.
        accepted = client.post(
            url,
            json={
                "recommendation_id": hcp_wide.recommendation_id,
                "hcp_id": hcp_wide.hcp_id,
                "action_id": hcp_wide.action_id,
                "decision": "accept",
            },
            headers=keys.rep,
        )
        assert accepted.status_code == 200, accepted.text
        assert len(rep_items(hcp_wide.hcp_id)) >= 2


def test_an_empty_plan_says_it_was_served_by_the_servers_clock(
    api_settings, keys, tmp_path
) -> None:
    """A plan with nothing to suggest said it was served at the machine's now, where
    the plan was decided (its date, the history read) by the served recommender's
    clock; a plan with suggestions gave that clock's reading. Both give it now."""
    import yaml

    from nextbest.api.app import create_app
    from nextbest.service.recommend import cutoff
    from nextbest.service.runtime import ServingRuntime

    runtime = ServingRuntime.start(api_settings)
    model = runtime.recommender.model
    at = cutoff(model) + timedelta(days=2, hours=3)
    rep_channels = sorted({c for c in model.catalog["channel"] if c.startswith("rep_")})
    runtime.close()
    assert at < datetime.now(UTC) - timedelta(days=1) and rep_channels
    # Rep channels closed to every HCP (a compliance stop): the plan is empty.
    rules = tmp_path / "closed.yaml"
    rules.write_text(
        yaml.safe_dump({"channels": {c: {"max_contacts": 0, "per_days": 28} for c in rep_channels}})
    )
    settings = api_settings.model_copy(update={"rules_file": rules})
    runtime = ServingRuntime.start(settings, clock=lambda: at)
    try:
        with TestClient(create_app(settings, runtime), headers=dict(keys.rep)) as client:
            response = client.get(f"/v1/reps/{keys.rep_name}/suggestions")
    finally:
        runtime.close()
    assert response.status_code == 200, response.text
    plan = response.json()
    assert plan["suggestions"] == [] and plan["n_candidates"] == 0, plan
    assert plan["date"] == at.date().isoformat()
    assert datetime.fromisoformat(plan["created_at"]) == at


def test_the_openapi_document_says_a_plan_date_is_a_utc_day_and_where_capacity_is_bound(
    client: TestClient,
) -> None:
    """A CRM reading /docs learned neither that `date` is a day of UTC (a rep in Tokyo
    asking at 08:00 got yesterday's plan) nor where capacity's bounds are set."""
    operation = client.get("/openapi.json").json()["paths"]["/v1/reps/{rep_id}/suggestions"]
    said = {p["name"]: p["description"] for p in operation["get"]["parameters"]}
    assert "YYYY-MM-DD, a day of UTC" in said["date"], said["date"]
    assert "the rep's own date" in said["date"], said["date"]
    assert "rep_plan.max_capacity" in said["capacity"], said["capacity"]


def test_an_hcp_id_sent_as_a_number_is_refused_saying_to_quote_it(client: TestClient) -> None:
    """A system keyed by numbers sends 12345 for the hcps file's "12345": each route
    names the item and says to send it as text."""
    ids = [f"H{i:06d}" for i in range(1000)]
    ids[517] = 12345  # type: ignore[call-overload]
    batch = client.post("/v1/recommendations/batch", json={"hcp_ids": ids})
    assert batch.status_code == 422
    (detail,) = batch.json()["detail"]
    assert detail["loc"] == ["body", "hcp_ids", 517] and detail["input"] == 12345
    said = 'an HCP id is text, not a number: send it quoted ("12345"), as the hcps file writes it'
    assert detail["msg"] == said and "ctx" not in detail
    one = client.post("/v1/recommendations", json={"hcp_id": 12345})
    assert one.status_code == 422
    assert one.json()["detail"][0]["loc"] == ["body", "hcp_id"]
    assert one.json()["detail"][0]["msg"] == said
    event = {"event_id": "n-1", "event_type": "opened", "hcp_id": 12345}
    fed = client.post("/v1/feedback", json={"events": [event]})
    assert fed.status_code == 422
    assert fed.json()["rejected"][0]["message"] == f"hcp_id: {said}"


@pytest.mark.parametrize(
    ("sent", "kind"),
    [(None, "null"), ({"id": "H000001"}, "an object"), (["H000001"], "a list"), (True, "true")],
)
def test_an_hcp_id_that_is_no_text_is_refused_naming_the_item(
    client: TestClient, sent: object, kind: str
) -> None:
    """A null, an object or true among the ids got pydantic's "Input should be a valid
    string": each route names the item and says what an HCP id is, as for a number."""
    said = f"an HCP id is text, not {kind}: send the id, as the hcps file writes it"
    batch = client.post("/v1/recommendations/batch", json={"hcp_ids": ["H000001", sent, "H3"]})
    assert batch.status_code == 422
    (detail,) = batch.json()["detail"]
    assert detail["loc"] == ["body", "hcp_ids", 1] and detail["msg"] == said, detail
    one = client.post("/v1/recommendations", json={"hcp_id": sent})
    assert one.status_code == 422
    assert one.json()["detail"][0]["msg"] == said
    events = [
        {"event_id": "n-1", "event_type": "opened", "hcp_id": sent},
        {"event_id": sent, "event_type": "opened", "hcp_id": "H000001"},
    ]
    fed = client.post("/v1/feedback", json={"events": events})
    assert fed.status_code == 422
    assert [r["message"] for r in fed.json()["rejected"]] == [
        f"hcp_id: {said}",
        f"event_id: an event_id is text, not {kind}: send the id, the same on every resend "
        "of the event",
    ]


def test_batch_ids_are_read_without_surrounding_spaces_and_with_their_case(
    client: TestClient,
) -> None:
    """As docs/api.md says: padded ids are the hcps file's id, answered once and
    listed as repeated under that spelling; another case is another (unknown) id."""
    hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
    sent = [f" {hcp}", f"{hcp} ", hcp.lower() if hcp.lower() != hcp else f"x{hcp}"]
    body = client.post("/v1/recommendations/batch", json={"hcp_ids": sent}).json()
    assert [r["hcp_id"] for r in body["results"]] == [hcp]
    assert body["repeated_hcp_ids"] == [hcp]
    assert body["unknown_hcp_ids"] == [sent[2]]


def test_spaces_around_a_rep_id_in_the_path_are_dropped(client: TestClient, keys) -> None:
    """As around every id a route takes: a CRM that built the URL from a padded field
    (``/v1/reps/rep-1%20/suggestions``) was refused as asking for another rep's plan,
    and an admin's plan was logged under the padded name. A blank one names no rep."""
    padded = f"%20{keys.rep_name}%20"
    plan = client.get(f"/v1/reps/{padded}/suggestions?capacity=1", headers=keys.rep)
    assert plan.status_code == 200, plan.text
    assert plan.json()["rep_id"] == keys.rep_name
    admin = client.get(f"/v1/reps/{padded}/suggestions?capacity=1", headers=keys.admin)
    assert admin.status_code == 200, admin.text
    assert (admin.json()["rep_id"], admin.json()["territory_id"]) == (
        keys.rep_name,
        keys.territory,
    )
    [suggestion] = plan.json()["suggestions"]
    decision = client.post(
        f"/v1/reps/{padded}/feedback",
        json={key: suggestion[key] for key in ("recommendation_id", "hcp_id", "action_id")}
        | {"decision": "accept"},
        headers=keys.rep,
    )
    assert decision.status_code == 200, decision.text
    assert decision.json()["accepted"] == 1
    blank = client.get("/v1/reps/%20/suggestions", headers=keys.admin)
    assert blank.status_code == 422, blank.text
    assert blank.json()["detail"][0]["loc"] == ["path", "rep_id"]
