"""Holdout and exploration through the API: seeded, and logged for off-policy evaluation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from nextbest.api.app import create_app
from nextbest.storage.tables import Recommendation, RecommendationItem


@pytest.fixture
def exploring(api_settings, keys) -> Iterator[TestClient]:
    # A holdout drawn per request: these tests count draws over repeated requests.
    settings = api_settings.model_copy(
        update={"epsilon": 0.5, "holdout_rate": 0.3, "seed": 4, "holdout_days": 0}
    )
    with TestClient(create_app(settings), headers=dict(keys.admin)) as c:
        yield c


def _run(client: TestClient, n: int = 120) -> list[dict]:
    ids = [str(h) for h in client.app.state.runtime.recommender.hcp_ids[:n]]
    return [client.post("/v1/recommendations", json={"hcp_id": h, "k": 3}).json() for h in ids]


def test_holdout_and_exploration_are_logged_with_propensities(exploring: TestClient) -> None:
    bodies = _run(exploring)
    holdouts = [b for b in bodies if b["holdout"]]
    assert 0.15 < len(holdouts) / len(bodies) < 0.45
    assert all(b["items"] == [] for b in holdouts)
    explored = [i for b in bodies for i in b["items"] if i["explored"]]
    assert explored, "epsilon 0.5 explores"
    assert all(i["reasons"][0].startswith("explored") for i in explored)
    # One not worth its cost says its expected value and nothing arguing for it.
    unworthy = [i for i in explored if i["score"] <= 0]
    assert unworthy, "epsilon 0.5 draws actions below their cost"
    assert all(len(i["reasons"]) == 2 and i["reasons"][1].startswith("expected ") for i in unworthy)
    # And a rep is told not to expect it to pay off; one worth its cost is not.
    assert all("expects it to bring less than it costs" in i["reasons"][0] for i in unworthy)
    worthy = [i for i in explored if i["score"] > 0]
    assert all("less than it costs" not in i["reasons"][0] for i in worthy)
    runtime = exploring.app.state.runtime
    assert runtime.reclog.flush()
    with runtime.sessions() as session:
        for b in bodies:
            row = session.get(Recommendation, b["recommendation_id"])
            assert row is not None
            assert row.holdout == b["holdout"]
            assert row.model_version == b["model_version"]
            assert row.epsilon == 0.5 and row.holdout_rate == 0.3
            # The request's k, whatever the answer held; no temperature for epsilon.
            assert (row.k_requested, row.temperature) == (3, None)
            items = (
                session.query(RecommendationItem)
                .filter_by(recommendation_id=b["recommendation_id"])
                .order_by(RecommendationItem.rank)
                .all()
            )
            assert [(i.action_id, i.propensity, i.explored) for i in items] == [
                (i["action_id"], pytest.approx(i["propensity"]), i["explored"]) for i in b["items"]
            ]
    for b in bodies:
        for item in b["items"][:1]:
            # First slot: (1 - holdout) x (greedy share + epsilon / n) stays within (0, 0.7].
            assert 0 < item["propensity"] <= 0.7 + 1e-9


def test_same_seed_same_answers(api_settings, keys) -> None:
    settings = api_settings.model_copy(update={"epsilon": 0.5, "holdout_rate": 0.3, "seed": 9})
    runs = []
    for _ in range(2):
        with TestClient(create_app(settings), headers=dict(keys.admin)) as c:
            runs.append([(b["holdout"], [i["action_id"] for i in b["items"]]) for b in _run(c, 40)])
    assert runs[0] == runs[1]


def test_softmax_exploration_is_logged_with_exact_propensities(api_settings, keys) -> None:
    """P(first = a) / P(first = b) = exp((score_a - score_b) / T), and what is drawn follows it."""
    temperature = 0.05
    settings = api_settings.model_copy(
        update={
            "exploration": "softmax",
            "temperature": temperature,
            "holdout_rate": 0.2,
            "seed": 3,
            "holdout_days": 0,  # one HCP asked 300 times: a draw per request
        }
    )
    with TestClient(create_app(settings), headers=dict(keys.admin)) as c:
        recommender = c.app.state.runtime.recommender
        assert recommender.exploration.name == "softmax"
        # An HCP with several actions worth serving, so the draw has a choice.
        hcp = next(
            str(h)
            for h in recommender.hcp_ids[:200]
            if len(c.post("/v1/recommendations", json={"hcp_id": str(h), "k": 5}).json()["items"])
            >= 3
        )
        n = 300
        bodies = [
            c.post("/v1/recommendations", json={"hcp_id": hcp, "k": 1}).json() for _ in range(n)
        ]
        firsts = [b["items"][0] for b in bodies if b["items"]]
        holdouts = sum(b["holdout"] for b in bodies)
        assert 0.1 < holdouts / n < 0.3
        assert len(firsts) == n - holdouts, "softmax answers nothing only in the holdout"
        by_action = {i["action_id"]: i for i in firsts}
        assert len(by_action) >= 2, "the draw explored"
        items = list(by_action.values())
        top = max(items, key=lambda i: i["score"])
        for item in items:
            ratio = item["propensity"] / top["propensity"]
            assert ratio == pytest.approx(np.exp((item["score"] - top["score"]) / temperature))
            share = sum(f["action_id"] == item["action_id"] for f in firsts) / n
            assert share == pytest.approx(item["propensity"], abs=0.08)
        assert sum(i["propensity"] for i in items) <= 0.8 + 1e-9
        runtime = c.app.state.runtime
        assert runtime.reclog.flush()
        with runtime.sessions() as session:
            for b in bodies[:20]:
                row = session.get(Recommendation, b["recommendation_id"])
                assert row is not None
                assert (row.policy, row.epsilon, row.holdout_rate) == ("softmax", 0.0, 0.2)
                assert (row.k_requested, row.temperature) == (1, temperature)


@pytest.mark.parametrize("exploration", ["epsilon_greedy", "softmax"])
def test_explored_lists_respect_the_channel_limit(api_settings, keys, exploration: str) -> None:
    """Always exploring: the drawn first item still counts toward at most 2 per channel."""
    settings = api_settings.model_copy(
        update={
            "exploration": exploration,
            "epsilon": 1.0,
            "temperature": 10.0,
            "holdout_rate": 0.0,
            "seed": 5,
        }
    )
    with TestClient(create_app(settings), headers=dict(keys.admin)) as c:
        recommender = c.app.state.runtime.recommender
        assert recommender.max_per_channel == 2
        explored = longest = 0
        for hcp in recommender.hcp_ids[:60]:
            for _ in range(3):
                items = c.post("/v1/recommendations", json={"hcp_id": str(hcp), "k": 8}).json()[
                    "items"
                ]
                channels = [i["channel"] for i in items]
                assert all(channels.count(ch) <= 2 for ch in channels), channels
                explored += sum(i["explored"] for i in items)
                longest = max(longest, len(items))
        assert explored > 20 and longest > 2


def test_an_hcp_in_the_weeks_holdout_gets_nothing_from_any_caller_that_week(
    api_settings, keys
) -> None:
    """As deployed (a holdout per HCP and week), the HCPs held out by one caller are
    the ones every caller finds held out all week, single and batch requests and
    rep plans alike; the next week draws anew."""
    settings = api_settings.model_copy(update={"epsilon": 0.5, "holdout_rate": 0.3, "seed": 4})
    assert settings.holdout_days == 7
    with TestClient(create_app(settings), headers=dict(keys.admin)) as client:
        ids = [str(h) for h in client.app.state.runtime.recommender.hcp_ids[:150]]

        def held_out(day: str, hcps: list[str] = ids) -> set[str]:
            body = {"hcp_ids": hcps, "k": 3, "date": day}
            answers = client.post("/v1/recommendations/batch", json=body).json()["results"]
            assert [a["hcp_id"] for a in answers] == hcps
            return {a["hcp_id"] for a in answers if a["holdout"]}

        monday = held_out("2030-01-07")
        assert 0.15 < len(monday) / len(ids) < 0.45
        assert held_out("2030-01-10") == held_out("2030-01-13") == monday  # Thu, Sun
        for h in ids[:40]:
            single = {"hcp_id": h, "k": 3, "date": "2030-01-09"}
            answer = client.post("/v1/recommendations", json=single).json()
            assert answer["holdout"] == (h in monday), h
        next_week = held_out("2030-01-14")
        assert next_week != monday and 0.15 < len(next_week) / len(ids) < 0.45
        # A date in the past answers now: this week's holdout, not that day's week.
        # Both answers are drawn on the server's clock: compared only when no Monday
        # 00:00 UTC came between them (asked again if one did).
        from datetime import UTC, datetime, timedelta

        recommender = client.app.state.runtime.recommender
        past = (recommender.as_of + timedelta(days=1)).date().isoformat()
        for _ in range(2):
            before = datetime.now(UTC)
            answers = held_out(past), held_out(before.date().isoformat())
            if datetime.now(UTC).isocalendar()[:2] == before.isocalendar()[:2]:
                break
        else:
            raise AssertionError("a week turned during each of two tries")
        assert answers[0] == answers[1]

        # A rep plan skips the week's held-out HCPs: the e-mail system finds none of
        # the HCPs it suggested held out that week (drawn per request, ~30% would be).
        url = f"/v1/reps/{keys.rep_name}/suggestions"
        plan = client.get(url, params={"date": "2030-01-08", "capacity": 20}, headers=keys.rep)
        suggested = [s["hcp_id"] for s in plan.json()["suggestions"]]
        assert len(suggested) >= 10
        assert held_out("2030-01-11", suggested) == set()
        assert len(held_out("2030-01-15", suggested)) > 0, "the next week draws anew"


def test_held_out_hcps_of_a_rep_plan_are_logged_and_take_no_capacity(
    exploring: TestClient, keys
) -> None:
    """The plan walks the territory's HCPs best first: one drawn into the holdout is
    logged as a holdout answer and the walk goes on, until ``capacity`` HCPs are
    suggested. So held-out HCPs come from the very ranks the plan suggests from."""
    import copy

    from nextbest.loop.evidence import (
        load_decisions,
        no_action_probability,
        serving_greedy_empty,
    )
    from nextbest.policy.exploration import EpsilonGreedy

    runtime = exploring.app.state.runtime
    recommender = runtime.recommender
    # The order every plan walks: best rep action's net value, no draw moving anyone.
    greedy = copy.copy(recommender)
    greedy.exploration = EpsilonGreedy(epsilon=0.0, holdout_rate=0.0)
    ranking = [
        r.hcp_id
        for r in greedy.rep_plan(
            rep_id="-",
            territory_id=keys.territory,
            capacity=recommender.rules.rep_max_capacity,
            history=None,
        ).suggestions
    ]
    capacity = 5
    assert len(ranking) >= 3 * capacity, "enough HCPs worth a visit for holdouts to skip"
    url = f"/v1/reps/{keys.rep_name}/suggestions"
    plans = [
        exploring.get(url, params={"capacity": capacity}, headers=keys.rep).json()
        for _ in range(30)
    ]
    assert runtime.reclog.flush()
    with runtime.sessions() as session:
        logged = load_decisions(session, with_outcome=False)
    assert set(logged["requester"]) == {keys.rep_name}
    held = logged[logged["holdout"]]
    # 30 plans of 5 at a holdout rate of 0.3: 5 x 0.3 / 0.7 = 2.1 held out per plan.
    assert 30 < len(held) < 110, len(held)
    assert held["action_id"].isna().all()
    assert (held["propensity"] == 0.3).all()
    # Logged as the plan's draw computed it: a reached HCP has a rep action worth serving.
    assert np.allclose(held["p_no_action"], 0.3)
    # What off-policy evaluation reads: a held-out HCP of a plan had a rep action
    # worth serving, so the serving model's greedy list was not empty and the
    # probability of its empty answer is the holdout rate itself.
    greedy_empty, unresolved = serving_greedy_empty(held, lambda version: recommender.model)
    assert unresolved == 0 and not greedy_empty.any()
    assert np.allclose(no_action_probability(held, greedy_empty), 0.3)
    for plan in plans:
        suggested = [s["hcp_id"] for s in plan["suggestions"]]
        assert len(suggested) == capacity  # held-out HCPs took no capacity
        ids = {s["recommendation_id"] for s in plan["suggestions"]}
        # Every answer of one plan is logged at one time: the plan's held-out HCPs.
        at = logged.loc[logged["recommendation_id"].isin(ids), "timestamp"].unique()
        assert len(at) == 1
        same = logged[logged["timestamp"] == at[0]]
        held_out = same.loc[same["holdout"], "hcp_id"].tolist()
        assert not set(held_out) & set(suggested)
        # Together they are the top of the ranking, in its order, none skipped.
        reached = ranking[: len(suggested) + len(held_out)]
        assert set(reached) == set(suggested) | set(held_out)
        assert suggested == [h for h in reached if h not in held_out]


def test_no_action_answers_are_logged_with_the_probability_the_policy_had(
    exploring: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every answer is logged with ``p_no_action`` as the exploration computed it. An
    HCP who opted out of every channel with an action worth serving still has
    eligible actions, but an empty greedy list: its holdout answers had
    h + (1 - h)(1 - epsilon) of answering with no action, not h. The evidence takes
    the logged value; re-scoring, which cannot see the opt-out, would take h."""
    from datetime import UTC, datetime, timedelta

    from nextbest.loop.evidence import (
        load_decisions,
        no_action_probability,
        serving_greedy_empty,
    )
    from nextbest.loop.gate import bandit_from_decisions
    from nextbest.policy.exploration import Served

    runtime = exploring.app.state.runtime
    recommender = runtime.recommender
    h, eps = 0.3, 0.5
    emptied = h + (1 - h) * (1 - eps)
    now = datetime.now(UTC)
    # An HCP with actions worth serving on some channels, and only actions not worth
    # their cost on another.
    hcp: str | None = None
    worth: set[str] = set()
    for candidate in recommender.hcp_ids[:300].tolist():
        row = recommender.hcp_row(str(candidate))
        assert row is not None
        allowed = np.flatnonzero(
            recommender.allowed(
                np.array([row]), purpose="promotional", channel=None, now=now, history=None
            )[0]
        )
        scores = recommender.model.score(np.full(len(allowed), row), allowed)
        net = recommender.model.net_value(scores.uplift, allowed)
        channels = recommender.action_channels[allowed]
        worth = set(channels[net > 0].tolist())
        if worth and set(channels.tolist()) - worth:
            hcp = str(candidate)
            break
    assert hcp is not None, "no HCP with a channel whose actions are all below their cost"
    opted_out = [
        {
            "event_id": f"opt-out-{channel}",
            "event_type": "opted_out",
            "hcp_id": hcp,
            "channel": channel,
            "occurred_at": (now - timedelta(minutes=1)).isoformat(),
        }
        for channel in sorted(worth)
    ]
    assert exploring.post("/v1/feedback", json={"events": opted_out}).status_code == 200

    served: list[Served] = []
    serve = recommender.exploration.serve

    def recording(*args: Any, **kwargs: Any) -> Served:
        served.append(serve(*args, **kwargs))
        return served[-1]

    monkeypatch.setattr(recommender.exploration, "serve", recording)
    others = [str(other) for other in recommender.hcp_ids[:80] if str(other) != hcp]
    asked = [hcp] * 40 + others
    bodies = [
        exploring.post("/v1/recommendations", json={"hcp_id": a, "k": 3}).json() for a in asked
    ]
    assert len(served) == len(bodies)
    assert runtime.reclog.flush()
    with runtime.sessions() as session:
        logged = [session.get(Recommendation, b["recommendation_id"]) for b in bodies]
        decisions = load_decisions(session, with_outcome=False)
    assert [row.p_no_action for row in logged] == [s.p_nothing for s in served]

    mine = logged[:40]
    held = [row for row in mine if row.holdout]
    empty = [
        row for row, b in zip(mine, bodies[:40], strict=True) if not row.holdout and not b["items"]
    ]
    assert held and empty, "40 answers at h 0.3 and epsilon 0.5: both kinds"
    assert all(row.p_no_action == pytest.approx(emptied) for row in mine)
    # Another HCP's holdout answer, its greedy list not empty: the holdout rate.
    assert any(row.holdout and row.p_no_action == pytest.approx(h) for row in logged[40:])

    ids = [b["recommendation_id"] for b in bodies]
    decisions = decisions.set_index("recommendation_id").loc[ids].reset_index()
    greedy_empty, unresolved = serving_greedy_empty(decisions, lambda version: recommender.model)
    assert unresolved == 0 and not greedy_empty.any()  # logged: nothing re-scored
    is_held = decisions["holdout"].to_numpy(dtype=bool) & (decisions["hcp_id"] == hcp).to_numpy()
    assert np.allclose(no_action_probability(decisions, greedy_empty)[is_held], emptied)
    bandit = bandit_from_decisions(decisions, champion=recommender.model, greedy_empty=greedy_empty)
    assert np.allclose(bandit.pscore[is_held], emptied)
    # Logged before 0004, the same answers would be re-scored without the opt-out.
    old = decisions.assign(p_no_action=np.nan)
    rescored, _ = serving_greedy_empty(old, lambda version: recommender.model)
    assert np.allclose(no_action_probability(old, rescored)[is_held], h)


def _counted(client: TestClient) -> dict[str, float]:
    """The answer, holdout, explored-item and served-item counters of /metrics, by sample."""
    names = (
        "nextbest_answers_total{",
        "nextbest_holdout_total ",
        "nextbest_explored_items_total{",
        "nextbest_recommendations_total{",
    )
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in client.get("/metrics").text.splitlines()
        if line.startswith(names)
    }


def test_metrics_count_answers_holdouts_and_explored_items(exploring: TestClient) -> None:
    """Holdout and exploration rates need a denominator: the HCP answers, and the
    explored items beside the served ones."""
    ids = [str(h) for h in exploring.app.state.runtime.recommender.hcp_ids[:60]]
    before = _counted(exploring)
    results = exploring.post("/v1/recommendations/batch", json={"hcp_ids": ids, "k": 3}).json()[
        "results"
    ]
    after = _counted(exploring)
    help_line = "# HELP nextbest_holdout_total HCP answers that were randomized holdout"
    assert help_line in exploring.get("/metrics").text  # not "requests": a batch counts each
    counted = {name: value - before.get(name, 0.0) for name, value in after.items()}
    held = sum(r["holdout"] for r in results)
    assert 0 < held < len(results)
    version = exploring.app.state.runtime.model_version
    assert counted[f'nextbest_answers_total{{holdout="true",version="{version}"}}'] == held
    assert (
        counted[f'nextbest_answers_total{{holdout="false",version="{version}"}}']
        == len(results) - held
    )
    assert counted["nextbest_holdout_total"] == held
    explored: dict[str, int] = {}
    for item in (i for r in results for i in r["items"] if i["explored"]):
        explored[item["channel"]] = explored.get(item["channel"], 0) + 1
    assert explored
    assert {
        name.split('"')[1]: n
        for name, n in counted.items()
        if name.startswith("nextbest_explored_items_total") and n
    } == explored
    served: dict[str, int] = {}
    for item in (i for r in results for i in r["items"]):
        served[item["channel"]] = served.get(item["channel"], 0) + 1
    assert {
        name.split('"')[1]: n
        for name, n in counted.items()
        if name.startswith("nextbest_recommendations_total") and n
    } == served
