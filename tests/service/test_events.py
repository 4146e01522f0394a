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
        (
            "1" * 100_000 + ",5",
            f"value: '{'1' * 40}'... (100,002 characters) is not a number "
            "(write decimals with '.')",
        ),
    ],
    ids=["decimal-comma", "boolean", "long-decimal-comma-quoted-in-part"],
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


@pytest.mark.parametrize(("sent", "read"), [("Opened", "opened"), (" DELIVERED ", "delivered")])
def test_an_event_type_is_read_whatever_its_case(sent: str, read: str) -> None:
    # As e-mail platforms export them; the types differ in more than case.
    event = parse_event({**OUTCOME, "event_type": sent})
    assert isinstance(event, FeedbackEventCreate) and event.event_type == read
    wrong = parse_event({**OUTCOME, "event_type": "Openned"})
    assert isinstance(wrong, MalformedEvent) and wrong.message.startswith("event_type: ")


@pytest.mark.parametrize(
    ("sent", "near"),
    [("open", "opened"), ("Clicks", "clicked"), ("opt_out", "opted_out"), ("attend", "attended")],
)
def test_an_event_type_near_one_of_the_contracts_is_named(sent: str, near: str) -> None:
    # An e-mail platform's own names: the answer says which type was meant.
    wrong = parse_event({**OUTCOME, "event_type": sent})
    assert isinstance(wrong, MalformedEvent), wrong
    assert wrong.message.startswith("event_type: Input should be one of 'delivered', "), wrong
    assert wrong.message.endswith(f"(did you mean '{near}'?)"), wrong.message


@pytest.mark.parametrize("sent", ["bounce", "unsubscribed", "spam"])
def test_an_event_type_near_none_of_the_contracts_gets_no_guess(sent: str) -> None:
    # A bounce is no outcome, however many letters they share.
    wrong = parse_event({**OUTCOME, "event_type": sent})
    assert isinstance(wrong, MalformedEvent), wrong
    assert "did you mean" not in wrong.message and "'opted_in'" in wrong.message, wrong
