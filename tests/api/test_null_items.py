"""A null inside a batch's events is rejected naming its place and saying it is null:
it was "Input should be a valid dictionary or object to extract fields from". (A null
among a batch's HCP ids is refused at its place, ``["body", "hcp_ids", i]``, saying
``an HCP id is text, not null``: test_batch_and_reps.py.)"""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_a_null_event_in_a_batch_is_rejected_alone_naming_its_place(client: TestClient) -> None:
    hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
    event = {"event_id": "null-items-1", "event_type": "opened", "hcp_id": hcp}
    answer = client.post("/v1/feedback", json={"events": [event, None]})
    assert answer.status_code == 207, answer.text
    said = answer.json()
    assert said["accepted"] == 1
    assert said["rejected"] == [
        {
            "index": 1,
            "event_id": "",
            "status": 422,
            "message": "event: events[1] is null, not an event: send each event as an object "
            "of its fields (no null in the list)",
        }
    ]
