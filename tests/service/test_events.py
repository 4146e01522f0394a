"""One feedback event read as the API and `nextbest feedback` read it."""

from __future__ import annotations

import pytest

from nextbest.service.events import FeedbackEventCreate, MalformedEvent, parse_event

OUTCOME = {"event_id": "e1", "event_type": "outcome", "hcp_id": "H1"}


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("3,5", "value: '3,5' is not a number (write decimals with '.')"),
        (True, "value: a number is needed here, not true"),
    ],
    ids=["decimal-comma", "boolean"],
)
def test_a_value_that_is_no_number_says_what_to_write(value: object, said: str) -> None:
    event = parse_event({**OUTCOME, "value": value})
    assert isinstance(event, MalformedEvent)
    assert event.event_id == "e1" and event.message == said


@pytest.mark.parametrize("value", ["3.5", " 3.5 ", 3.5, "-2"])
def test_a_value_written_as_a_number_is_read(value: object) -> None:
    event = parse_event({**OUTCOME, "value": value})
    assert isinstance(event, FeedbackEventCreate)
    assert event.value == float(str(value).strip())
