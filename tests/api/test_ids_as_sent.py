"""An id sent blank (white space alone) or holding a control character (a tab, a line
break, NUL) names nothing: refused at the edge, naming the field and saying what is
wrong with it (where the character is), on every route that takes one."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient


def _refusal(answer: Any) -> tuple[list[Any], str]:
    """(loc, message) of the one refusal in a 422 answer: a validation error's, or the
    one rejected event's of a feedback answer (its loc: ``["events", index]``)."""
    assert answer.status_code == 422, answer.text
    said = answer.json()
    if "rejected" in said:
        [rejected] = said["rejected"]
        return ["events", rejected["index"]], rejected["message"]
    [error] = said["detail"]
    return error["loc"], error["msg"]


def _routes(client: TestClient, keys, field: str, sent: str) -> list[tuple[Any, list[Any], str]]:
    """(answer, where the refusal should point, the field as the message names it) for
    ``sent`` in ``field`` on each route that takes that field."""
    hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
    event = {"event_id": "ids-1", "event_type": "opened", "hcp_id": hcp, field: sent}
    decision = {
        "recommendation_id": "r-1",
        "hcp_id": hcp,
        "action_id": "A001",
        "decision": "snooze",
        field: sent,
    }
    routes: list[tuple[Any, list[Any], str]] = []
    if field == "hcp_id":
        routes.append(
            (client.post("/v1/recommendations", json={"hcp_id": sent}), ["body", "hcp_id"], "")
        )
        batch = client.post("/v1/recommendations/batch", json={"hcp_ids": [hcp, sent]})
        routes.append((batch, ["body", "hcp_ids", 1], ""))
    if field in ("hcp_id", "event_id"):
        routes.append((client.post("/v1/feedback", json={"events": [event]}), ["events", 0], field))
    routes.append(
        (client.post(f"/v1/reps/{keys.rep_name}/feedback", json=decision), ["body", field], "")
    )
    return routes


@pytest.mark.parametrize("field", ["hcp_id", "event_id", "recommendation_id", "action_id"])
def test_a_blank_id_is_said_to_be_blank(client: TestClient, keys, field: str) -> None:
    """Was "String should have at least 1 character", of a value of three."""
    what = "an HCP id" if field == "hcp_id" else f"a{'n' * (field[0] in 'ae')} {field}"
    for answer, loc, prefix in _routes(client, keys, field, "   "):
        where, message = _refusal(answer)
        assert where == loc, answer.text
        said = f"{what} is blank (3 characters of white space and nothing else): send the id"
        assert message == (f"{prefix}: {said}" if prefix else said), answer.text
        if "detail" in answer.json():
            assert answer.json()["detail"][0]["type"] == "string_too_short"


@pytest.mark.parametrize(
    ("sent", "named", "position"),
    [
        ("H0\x0001", "a NUL character (\\u0000)", 3),
        ("H0\n01", "a line break (\\u000a)", 3),
        ("  H\t001", "a tab (\\u0009)", 4),  # counted in the id as sent
        ("H001\x1b", "a control character (\\u001b)", 5),
    ],
    ids=["nul", "line-break", "tab", "escape"],
)
@pytest.mark.parametrize("field", ["hcp_id", "event_id", "recommendation_id", "action_id"])
def test_an_id_holding_a_control_character_is_refused_saying_where(
    client: TestClient, keys, field: str, sent: str, named: str, position: int
) -> None:
    """A line break or a tab in an event_id was stored (a NUL alone was refused, by the
    store); in an HCP id it was looked up, and said to be unknown."""
    for answer, loc, _ in _routes(client, keys, field, sent):
        where, message = _refusal(answer)
        assert where == loc, answer.text
        assert f"holds {named} at character {position} of {sent!r}" in message, answer.text
        assert message.endswith("no id has one (a paste or an export gone wrong?); remove it")


def test_a_blank_rep_id_or_one_with_a_control_character_is_refused(
    client: TestClient, keys
) -> None:
    blank = client.get("/v1/reps/%20%20/suggestions", params={"territory_id": keys.territory})
    assert _refusal(blank) == (
        ["path", "rep_id"],
        "a rep_id is blank (2 characters of white space and nothing else): send the id",
    )
    hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
    decision = {"recommendation_id": "r-1", "hcp_id": hcp, "action_id": "A1", "decision": "accept"}
    for answer in (
        client.get("/v1/reps/a%0Ab/suggestions", params={"territory_id": keys.territory}),
        client.post("/v1/reps/a%0Ab/feedback", json=decision),
    ):
        loc, message = _refusal(answer)
        assert loc == ["path", "rep_id"], answer.text
        assert message.startswith("a rep_id holds a line break (\\u000a) at character 2 of 'a\\nb'")


def test_spaces_around_an_id_are_still_dropped(client: TestClient) -> None:
    hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
    answer = client.post("/v1/recommendations", json={"hcp_id": f" \t{hcp}\n "})
    assert answer.status_code == 200, answer.text
    assert answer.json()["hcp_id"] == hcp


def test_an_opt_out_with_a_control_character_in_its_event_id_is_still_stored(
    client: TestClient,
) -> None:
    """A withdrawal of consent is not lost over the form of its idempotency key: stored
    under it as sent, as before, and a resend is a duplicate."""
    hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
    event = {"event_id": "unsub\t42", "event_type": "opted_out", "hcp_id": hcp}
    first = client.post("/v1/feedback", json={"events": [event]})
    assert first.status_code == 200, first.text
    assert first.json()["accepted"] == 1
    again = client.post("/v1/feedback", json={"events": [event]})
    assert again.json()["duplicates"] == 1, again.text
