"""A rep plan with explain=true: why each HCP of the territory not suggested is left out.

Through the HTTP API over a real SQLite file, as the other rep plan tests
(test_batch_and_reps.py); the exclusion reasons are the single route's explain's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from nextbest.api.app import create_app
from nextbest.service import recommend
from nextbest.service.blinding import NOT_SUGGESTED
from nextbest.service.recommend import MAX_LEFT_OUT, Recommender
from nextbest.storage.tables import Recommendation

from .conftest import assert_lifts_between

# What a plan answered before explain existed, and answers without it still.
PLAN_FIELDS = {
    "rep_id",
    "territory_id",
    "purpose",
    "date",
    "capacity",
    "model_version",
    "created_at",
    "n_hcps",
    "n_candidates",
    "suggestions",
}


@pytest.fixture
def greedy(api_settings, keys) -> Iterator[TestClient]:
    """No exploration and no holdout: the plan is its ranking's first ``capacity``."""
    settings = api_settings.model_copy(update={"epsilon": 0.0, "holdout_rate": 0.0})
    with TestClient(create_app(settings), headers=dict(keys.admin)) as c:
        yield c


@pytest.fixture
def every_hcp(monkeypatch: pytest.MonkeyPatch) -> None:
    """Room for every HCP of the test territory (206) in ``left_out``."""
    monkeypatch.setattr(recommend, "MAX_LEFT_OUT", 1000)


def _plan(client: TestClient, keys, *, as_admin: bool = False, **params) -> dict:
    """The rep's plan, asked by the rep's key (or an admin's, for the rep)."""
    headers = keys.admin if as_admin else keys.rep
    response = client.get(f"/v1/reps/{keys.rep_name}/suggestions", params=params, headers=headers)
    assert response.status_code == 200, response.text
    body: dict = response.json()
    return body


def _logged(client: TestClient) -> int:
    runtime = client.app.state.runtime
    assert runtime.reclog.flush()
    with runtime.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Recommendation)) or 0)


def _rep_excluded(client: TestClient, hcp_id: str) -> dict[str, list[str]]:
    """What the single route's explain says of the rep actions for ``hcp_id``."""
    answer = client.post("/v1/recommendations", json={"hcp_id": hcp_id, "k": 50, "explain": True})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert not body["holdout"] and not any(i["explored"] for i in body["items"])
    recommender = client.app.state.runtime.recommender
    rep = set(recommender.action_ids[recommender.rep_actions].tolist())
    return {a: why for a, why in body["excluded"].items() if a in rep}


def test_without_explain_the_plan_is_as_before_and_explains_nothing(
    greedy: TestClient, keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _logged(greedy)
    plain = _plan(greedy, keys, capacity=5)
    assert set(plain) == PLAN_FIELDS  # no left_out, not even null
    assert _plan(greedy, keys, capacity=5, explain="false").keys() == PLAN_FIELDS
    logged = _logged(greedy)
    assert logged - before == 2 * len(plain["suggestions"])
    explained = _plan(greedy, keys, capacity=5, explain="true")
    assert set(explained) == PLAN_FIELDS | {"left_out", "n_left_out"}
    # The same plan, and nothing more logged: the HCPs left out were never served.
    assert [s["hcp_id"] for s in explained["suggestions"]] == [
        s["hcp_id"] for s in plain["suggestions"]
    ]
    assert _logged(greedy) - logged == len(explained["suggestions"])

    # A plan without explain does none of its work.
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("left_out worked out for a plan without explain")

    monkeypatch.setattr(Recommender, "_left_out_of_plan", refuse)
    assert _plan(greedy, keys, capacity=5)["suggestions"]
    with pytest.raises(AssertionError, match="without explain"):
        _plan(greedy, keys, capacity=5, explain="true")


def test_hcps_below_the_capacity_say_their_rank_and_net_value(greedy: TestClient, keys) -> None:
    plan = _plan(greedy, keys, capacity=3, explain="true")
    suggested = [s["score"] for s in plan["suggestions"]]
    assert len(suggested) == 3
    below = plan["left_out"]
    assert below and {e["why"] for e in below} == {"below_capacity"}  # the best ranked first
    # Ranked right after the suggestions, in the plan's order, each worth a visit.
    assert [e["rank"] for e in below] == list(range(4, 4 + len(below)))
    scores = [e["score"] for e in below]
    assert scores == sorted(scores, reverse=True) and scores[-1] > 0
    assert min(suggested) >= scores[0]
    recommender = greedy.app.state.runtime.recommender
    rep = set(recommender.action_ids[recommender.rep_actions].tolist())
    assert all(e["action_id"] in rep for e in below)
    assert all("excluded" not in e and "recommendation_id" not in e for e in below)
    assert not {e["hcp_id"] for e in below} & {s["hcp_id"] for s in plan["suggestions"]}


def test_held_out_hcps_are_said_with_their_logged_holdout_answer(api_settings, keys) -> None:
    settings = api_settings.model_copy(
        update={"epsilon": 0.0, "holdout_rate": 0.3, "seed": 4, "holdout_days": 0}
    )
    with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
        runtime = client.app.state.runtime

        def holdout_answers() -> set[tuple[str, str]]:
            assert runtime.reclog.flush()
            with runtime.sessions() as session:
                rows = session.execute(
                    select(Recommendation.recommendation_id, Recommendation.hcp_id).where(
                        Recommendation.holdout.is_(True)
                    )
                ).all()
            return {(str(r), str(h)) for r, h in rows}

        # The rep's own key is not told who is held out: the control stays blind
        # (test_holdout_blind.py), and n_left_out counts them among the others.
        before = holdout_answers()
        told_rep = _plan(client, keys, capacity=10, explain="true")
        assert told_rep["left_out"] and all(e["why"] != "held_out" for e in told_rep["left_out"])
        assert holdout_answers() - before
        assert told_rep["n_left_out"] == told_rep["n_hcps"] - len(told_rep["suggestions"])

        before = holdout_answers()
        plan = _plan(client, keys, as_admin=True, capacity=10, explain="true")
        held = [e for e in plan["left_out"] if e["why"] == "held_out"]
        assert held, "a holdout rate of 0.3 holds some of the first ranks out"
        ranked = [e for e in plan["left_out"] if e["why"] in ("held_out", "below_capacity")]
        # Held out on the way down to the capacity, below it nothing is drawn.
        reached = len(plan["suggestions"]) + len(held)
        assert max(e["rank"] for e in held) < reached
        assert min(e["rank"] for e in ranked if e["why"] == "below_capacity") == reached + 1
        assert all(e["score"] > 0 and e["action_id"] for e in held)
        # Each refers to the holdout answer logged for it, and every one logged is said.
        logged = holdout_answers() - before
        assert {(e["recommendation_id"], e["hcp_id"]) for e in held} == logged
        assert plan["n_left_out"] == plan["n_hcps"] - len(plan["suggestions"])


def test_a_rep_keys_left_out_holds_as_many_hcps_as_an_admins(api_settings, keys) -> None:
    """The held-out HCPs among the first MAX_LEFT_OUT were taken out of a rep key's
    list after it was cut: the rep got fewer than MAX_LEFT_OUT HCPs, though more
    were left out (n_left_out), and the list stopped short of HCPs ranked after."""
    settings = api_settings.model_copy(
        update={"epsilon": 0.0, "holdout_rate": 0.3, "seed": 4, "holdout_days": 0}
    )
    with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
        told_rep = _plan(client, keys, capacity=10, explain="true")
        admin = _plan(client, keys, as_admin=True, capacity=10, explain="true")
    assert any(e["why"] == "held_out" for e in admin["left_out"][:MAX_LEFT_OUT])
    assert told_rep["n_left_out"] > MAX_LEFT_OUT, told_rep["n_left_out"]
    assert all(e["why"] != "held_out" for e in told_rep["left_out"])
    assert len(told_rep["left_out"]) == MAX_LEFT_OUT == len(admin["left_out"])


@pytest.mark.usefixtures("every_hcp")
def test_hcps_with_no_rep_action_worth_its_cost_say_each_actions_net_value(
    greedy: TestClient, keys
) -> None:
    """To an admin; a rep key is told ``not_suggested`` without the values, as of a
    held-out HCP (test_holdout_blind.py)."""
    plan = _plan(greedy, keys, as_admin=True, capacity=30, explain="true")
    left_out = plan["left_out"]
    # Every HCP of the territory is suggested or said, once.
    said = [e["hcp_id"] for e in left_out] + [s["hcp_id"] for s in plan["suggestions"]]
    assert sorted(said) == sorted(set(said)) and len(said) == plan["n_hcps"]
    costly = [e for e in left_out if e["why"] == "no_rep_action_worth_its_cost"]
    assert costly, "some HCPs of the test territory are worth no visit"
    # After every ranked HCP, the closest to paying first.
    kinds = [e["why"] for e in left_out]
    assert kinds.index("no_rep_action_worth_its_cost") == kinds.count("below_capacity")
    scores = [e["score"] for e in costly]
    assert scores == sorted(scores, reverse=True) and scores[0] <= 0
    for entry in costly[:5]:
        best = entry["excluded"][entry["action_id"]]
        net = re.search(r"\(net value ([-+][0-9.]+)\)", " ".join(best))
        assert net, best
        decimals = len(net.group(1).partition(".")[2])  # as many as it takes to show it
        assert float(net.group(1)) == pytest.approx(entry["score"], abs=0.5 * 10**-decimals)
        # The single route's explain, word for word, for the rep actions.
        assert entry["excluded"] == _rep_excluded(greedy, entry["hcp_id"])
    told_rep = {
        e["hcp_id"]: e for e in _plan(greedy, keys, capacity=30, explain="true")["left_out"]
    }
    for entry in costly[:5]:
        said = told_rep[entry["hcp_id"]]
        assert said["why"] == "not_suggested" and "score" not in said and "action_id" not in said
        assert said["excluded"][entry["action_id"]] == [NOT_SUGGESTED]
        # The rules' words as the admin's; NOT_SUGGESTED for each action allowed.
        assert said["excluded"] == {
            action: [NOT_SUGGESTED] if why[0].startswith("not worth its cost") else why
            for action, why in _rep_excluded(greedy, entry["hcp_id"]).items()
        }


@pytest.mark.usefixtures("every_hcp")
def test_hcps_with_no_rep_action_allowed_name_the_rules(greedy: TestClient, keys) -> None:
    recommender = greedy.app.state.runtime.recommender
    rep_actions = recommender.action_ids[recommender.rep_actions].tolist()
    ranking = _plan(greedy, keys, capacity=3)["suggestions"]
    opted, contacted, dismissed = (s["hcp_id"] for s in ranking)
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    events = [
        {"event_type": "opted_out", "hcp_id": opted},  # every channel
        *(
            {"event_type": "delivered", "hcp_id": contacted, "channel": channel}
            for channel in ("rep_visit", "rep_phone")
        ),
        *(
            {"event_type": event_type, "hcp_id": dismissed, "action_id": action_id}
            | ({"reason": "not_relevant"} if event_type == "dismissed" else {})
            for n, action_id in enumerate(rep_actions)
            for event_type in ["dismissed" if n % 2 else "snoozed"]
        ),
    ]
    answer = greedy.post(
        "/v1/feedback",
        json={
            "events": [
                {"event_id": f"why-{n}", "occurred_at": an_hour_ago, **event}
                for n, event in enumerate(events)
            ]
        },
    )
    assert answer.status_code == 200 and answer.json()["accepted"] == len(events), answer.text
    plan = _plan(greedy, keys, capacity=3, explain="true")
    assert not {opted, contacted, dismissed} & {s["hcp_id"] for s in plan["suggestions"]}
    entry = {e["hcp_id"]: e for e in plan["left_out"]}
    assert [e["why"] for e in plan["left_out"][-3:]] == ["no_rep_action_allowed"] * 3
    expected = {
        opted: ("consent: opted out of every channel",),
        contacted: ("cool-down: last rep_visit contact", "cool-down: last rep_phone contact"),
        dismissed: ("dismissed (not_relevant) in the last 30 days", "snoozed in the last 7 days"),
    }
    for hcp_id, rules in expected.items():
        said = entry[hcp_id]
        assert said["why"] == "no_rep_action_allowed"
        assert "rank" not in said and "score" not in said and "action_id" not in said
        assert set(said["excluded"]) == set(rep_actions)  # each rep action, why
        found = {
            rule for why in said["excluded"].values() for w in why for rule in rules if rule in w
        }
        assert found == set(rules), said
        assert all(any(r in w for r in rules for w in why) for why in said["excluded"].values())
        assert said["excluded"] == _rep_excluded(greedy, hcp_id)


def test_a_medical_plan_says_why_and_holds_to_the_cap(greedy: TestClient, keys) -> None:
    """The test catalog has no medical rep content: an MSL's plan suggests no one, and
    says so of the first MAX_LEFT_OUT HCPs of the territory, in its order."""
    answer = greedy.get(
        "/v1/reps/msl-1/suggestions",
        params={"territory_id": keys.territory, "purpose": "medical", "explain": "true"},
    )
    assert answer.status_code == 200, answer.text
    plan = answer.json()
    assert plan["suggestions"] == [] and plan["n_hcps"] > MAX_LEFT_OUT
    left_out = plan["left_out"]
    assert len(left_out) == MAX_LEFT_OUT
    # The list is cut, and the answer says so: every HCP of the territory is left out.
    assert plan["n_left_out"] == plan["n_hcps"]
    territory = greedy.app.state.runtime.recommender.territories[keys.territory]
    hcp_ids = greedy.app.state.runtime.recommender.hcp_ids[territory].tolist()
    assert [e["hcp_id"] for e in left_out] == hcp_ids[:MAX_LEFT_OUT]
    for entry in left_out:
        assert entry["why"] == "no_rep_action_allowed"
        assert all(
            "promotional content is not served to a medical request" in why
            for why in entry["excluded"].values()
        )
    # A promotional plan holds to it too, its best ranked first.
    one = _plan(greedy, keys, capacity=1, explain="true")
    promotional = one["left_out"]
    assert len(promotional) == MAX_LEFT_OUT
    assert [e["rank"] for e in promotional] == list(range(2, MAX_LEFT_OUT + 2))
    assert one["n_left_out"] == one["n_hcps"] - 1 > MAX_LEFT_OUT


@pytest.mark.usefixtures("every_hcp")
def test_n_left_out_counts_what_left_out_lists_without_its_cap(greedy: TestClient, keys) -> None:
    plan = _plan(greedy, keys, capacity=3, explain="true")
    assert plan["n_left_out"] == len(plan["left_out"]) == plan["n_hcps"] - 3


@pytest.mark.parametrize("value", ["maybe", "2", ""])
def test_explain_that_is_no_boolean_is_422(client: TestClient, keys, value: str) -> None:
    response = client.get(
        f"/v1/reps/{keys.rep_name}/suggestions", params={"explain": value}, headers=keys.rep
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "explain"]
    twice = client.get(
        f"/v1/reps/{keys.rep_name}/suggestions?explain=true&explain=false", headers=keys.rep
    )
    assert twice.status_code == 422 and "given more than once" in twice.text


def test_the_document_describes_explain_and_left_out(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/v1/reps/{rep_id}/suggestions"]["get"]
    (explain,) = [p for p in operation["parameters"] if p["name"] == "explain"]
    assert explain["in"] == "query" and explain["schema"]["type"] == "boolean"
    assert explain["schema"]["default"] is False
    assert f"at most {MAX_LEFT_OUT}" in explain["description"]
    schemas = spec["components"]["schemas"]
    plan = schemas["RepPlanPublic"]
    assert "left_out" in plan["properties"] and "left_out" not in plan["required"]
    assert "explain=true" in plan["properties"]["left_out"]["description"]
    assert "n_left_out" not in plan["required"]
    assert f"cap of {MAX_LEFT_OUT}" in plan["properties"]["n_left_out"]["description"]
    why = schemas["LeftOutPublic"]["properties"]["why"]
    assert set(why["enum"]) == {
        "held_out",
        "below_capacity",
        "no_rep_action_worth_its_cost",
        "no_rep_action_allowed",
        "not_suggested",
    }


@pytest.mark.usefixtures("every_hcp")
def test_a_cap_that_leaves_an_hcp_out_of_the_plan_says_when_it_lifts(
    greedy: TestClient, keys
) -> None:
    """Each rep channel's cap filled by contacts older than its cool-down: the plan's
    left_out says when each cap lifts, as the single route's explain does."""
    recommender = greedy.app.state.runtime.recommender
    rules = recommender.rules
    rep_channels = sorted(set(recommender.action_channels[recommender.rep_actions].tolist()))
    capped = {c: rules.channels[c] for c in rep_channels if rules.channels[c].cap is not None}
    assert capped, "the shipped rules cap the rep channels"
    (hcp_id, *_) = (s["hcp_id"] for s in _plan(greedy, keys, capacity=3)["suggestions"])
    now = datetime.now(UTC)
    events = []
    for channel, rule in capped.items():
        assert rule.cap is not None
        first = (rule.cooldown_days or 0) + 1  # past the cool-down: only the cap binds
        for n in range(rule.cap.max_contacts):
            events.append(
                {
                    "event_id": f"cap-{channel}-{n}",
                    "event_type": "delivered",
                    "hcp_id": hcp_id,
                    "channel": channel,
                    "occurred_at": (now - timedelta(days=first + n)).isoformat(),
                }
            )
    answer = greedy.post("/v1/feedback", json={"events": events})
    assert answer.status_code == 200 and answer.json()["accepted"] == len(events), answer.text
    plan = _plan(greedy, keys, capacity=3, explain="true")
    (entry,) = [e for e in plan["left_out"] if e["hcp_id"] == hcp_id]
    caps = [w for why in entry["excluded"].values() for w in why if "frequency cap" in w]
    assert caps, entry
    for said in caps:
        # The oldest contact filling the cap leaves the window first: its date.
        found = re.search(r"frequency cap: \d+ (\w+) contacts", said)
        assert found, said
        rule = capped[found.group(1)]
        assert rule.cap is not None
        oldest = (rule.cooldown_days or 0) + rule.cap.max_contacts
        lifts = now + timedelta(days=rule.cap.per_days - oldest)
        assert_lifts_between(said, lifts, lifts)
    assert entry["excluded"] == _rep_excluded(greedy, hcp_id)
