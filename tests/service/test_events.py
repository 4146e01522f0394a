"""One feedback event read as the API and `nextbest feedback` read it."""

from __future__ import annotations

from datetime import UTC, datetime

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


@pytest.mark.parametrize("sent", ["bounce", "deferred", "dropped"])
def test_an_event_type_near_none_of_the_contracts_gets_no_guess(sent: str) -> None:
    # A bounce is no outcome, however many letters they share.
    wrong = parse_event({**OUTCOME, "event_type": sent})
    assert isinstance(wrong, MalformedEvent), wrong
    assert "did you mean" not in wrong.message and "'opted_in'" in wrong.message, wrong


@pytest.mark.parametrize(
    ("sent", "instead"),
    [
        ("bounced", "a bounced e-mail reached nobody: send no event for it"),
        ("Hard Bounce", "a bounced e-mail reached nobody: send no event for it"),
        ("soft-bounced", "a bounced e-mail reached nobody: send no event for it"),
        ("Sent", "a sent e-mail is no contact until it is delivered: send 'delivered' when"),
        ("processed", "a sent e-mail is no contact until it is delivered: send 'delivered'"),
    ],
)
def test_an_email_platforms_word_for_another_event_says_what_to_send(
    sent: str, instead: str
) -> None:
    # An e-mail platform's export names bounces, which the contract does not count
    # (a bounce is no contact).
    wrong = parse_event({**OUTCOME, "event_type": sent})
    assert isinstance(wrong, MalformedEvent), wrong
    assert wrong.message.startswith("event_type: Input should be 'delivered', "), wrong
    assert "'opted_out' or 'opted_in' (" + instead in wrong.message, wrong.message


@pytest.mark.parametrize("sent", ["unsubscribed", "Unsubscribe", " UNSUBSCRIBES ", "unsub"])
def test_an_email_platforms_unsubscribe_is_read_as_the_opt_out_it_is(sent: str) -> None:
    # Refused, the withdrawal of consent was lost when its sender did not read the answer.
    event = parse_event({**OUTCOME, "event_type": sent, "channel": "email"})
    assert isinstance(event, FeedbackEventCreate), event
    assert (event.event_type, event.channel) == ("opted_out", "email")
    assert event.unread == f"event_type '{sent.strip()}' read as 'opted_out'"
    # Read past what it cannot be read with, as any opt-out is; its ids are still needed.
    late = parse_event({**OUTCOME, "event_type": sent, "occurred_at": "yesterday"})
    assert isinstance(late, FeedbackEventCreate) and late.event_type == "opted_out"
    assert late.unread is not None
    assert late.unread.startswith(f"event_type '{sent.strip()}' read as 'opted_out'; occurred_at")
    nobody = parse_event({"event_id": "e1", "event_type": sent})
    assert isinstance(nobody, MalformedEvent) and nobody.message == "hcp_id: Field required"


@pytest.mark.parametrize(
    "sent", ["spamreport", "Complaint", "complained", "SpamComplaint", "spam report", "abuse"]
)
def test_an_email_platforms_spam_complaint_is_read_as_the_opt_out_it_amounts_to(
    sent: str,
) -> None:
    # The platform stops mailing a complainer; refused, the picks went on choosing
    # e-mails for the HCP that would never be delivered.
    event = parse_event({**OUTCOME, "event_type": sent, "channel": "email"})
    assert isinstance(event, FeedbackEventCreate), event
    assert (event.event_type, event.channel) == ("opted_out", "email")
    assert event.unread == f"event_type '{sent}' (a spam complaint) read as 'opted_out'"


@pytest.mark.parametrize("sent", ["spammer", "complaints_desk", "reported", "abused_by"])
def test_a_word_only_near_a_complaint_is_no_opt_out(sent: str) -> None:
    assert isinstance(parse_event({**OUTCOME, "event_type": sent}), MalformedEvent)


OPENED = {"event_id": "e1", "event_type": "opened", "hcp_id": "H1", "channel": "email"}
FULL_DATE = "write the full date, as 2026-11-30 or 2026-11-30T08:00:00+00:00"
WRITE_IT = "write it as 2026-11-30 or 2026-11-30T08:00:00+00:00"


@pytest.mark.parametrize(
    ("sent", "said"),
    [
        (
            "2024",
            "occurred_at: '2024' is a year alone, not a date: it would be read as the first "
            f"day of the year; {FULL_DATE}",
        ),
        (
            2024,
            "occurred_at: 2024 is a year alone, not a date: it would be read as the first "
            f"day of the year; {FULL_DATE}",
        ),
        (
            " 2024-03 ",
            "occurred_at: '2024-03' is a year and month, not a date: it would be read as the "
            f"first day of the month; {FULL_DATE}",
        ),
        (
            20240301,
            "occurred_at: 20240301 read as seconds since 1970 is 1970-08-23T06:18:21+00:00, "
            "before 2000-01-01: no event of this service happened then (a date without "
            "its dashes, a spreadsheet's day number?); send an ISO 8601 time, as "
            "2026-11-30T08:00:00+00:00",
        ),
        (
            "46177.619201",
            "occurred_at: '46177.619201' read as seconds since 1970 is "
            "1970-01-01T12:49:37.619201+00:00, before 2000-01-01: no event of this service "
            "happened then (a date without its dashes, a spreadsheet's day number?); send "
            "an ISO 8601 time, as 2026-11-30T08:00:00+00:00",
        ),
        (
            -5,
            "occurred_at: -5 read as seconds since 1970 is 1969-12-31T23:59:55+00:00, before "
            "2000-01-01: no event of this service happened then (a date without its dashes, "
            "a spreadsheet's day number?); send an ISO 8601 time, as 2026-11-30T08:00:00+00:00",
        ),
        (
            "31/12/2024",
            f"occurred_at: '31/12/2024' is not an ISO 8601 date or date-time: {WRITE_IT}",
        ),
        ("yesterday", f"occurred_at: 'yesterday' is not an ISO 8601 date or date-time: {WRITE_IT}"),
        (
            "2026-13-01",
            f"occurred_at: '2026-13-01' is not an ISO 8601 date or date-time: {WRITE_IT}",
        ),
    ],
    ids=[
        "year-text",
        "year-number",
        "year-month",
        "date-without-dashes",
        "serial-day",
        "negative",
        "day-first",
        "a-word",
        "month-13",
    ],
)
def test_an_occurred_at_that_names_no_time_of_an_event_is_refused_naming_it(
    sent: object, said: str
) -> None:
    """'2024' (text or a JSON number) was read as seconds since 1970, 1970-01-01T00:33:44,
    and refused as that time; '2024-03' got pydantic's 'input is too short'. A date
    without a day gets the data contract's message, a number that is no time since
    2000 says what it was read as. A text that is no time got pydantic's words, which
    did not say what to send ('31/12/2024': "invalid character in year", 'yesterday':
    "input is too short"): the data contract's."""
    event = parse_event({**OPENED, "occurred_at": sent})
    assert isinstance(event, MalformedEvent), event
    assert event.event_id == "e1" and event.message == said


@pytest.mark.parametrize("sent", [1764489600, "1764489600", 1764489600.5, 1764489600000])
def test_seconds_since_1970_of_a_time_since_2000_are_read(sent: object) -> None:
    event = parse_event({**OPENED, "occurred_at": sent})
    assert isinstance(event, FeedbackEventCreate), event
    assert event.occurred_at is not None
    assert event.occurred_at.isoformat().startswith("2025-11-30T08:00:00")


def test_an_opt_out_dated_a_year_alone_is_still_read_for_the_store_to_keep() -> None:
    """An opt-out fails safe: the feedback store keeps it, counted from its arrival
    (a withdrawal is not lost over its form), so it is not refused here."""
    event = parse_event({**OPENED, "event_type": "opted_out", "occurred_at": "2024"})
    assert isinstance(event, FeedbackEventCreate), event


@pytest.mark.parametrize(
    ("sent", "said"),
    [
        (
            "2024-03",
            "occurred_at '2024-03' is a year and month, not a date: it would be read as the "
            f"first day of the month; {FULL_DATE}",
        ),
        ("2024", "occurred_at '2024' is a year alone, not a date: it would be read as the"),
        (
            "31/12/2024",
            f"occurred_at '31/12/2024' is not an ISO 8601 date or date-time: {WRITE_IT}",
        ),
        ("", f"occurred_at '' is not an ISO 8601 date or date-time: {WRITE_IT}"),
        (True, "occurred_at true is no time: Input should be a valid datetime"),
        (
            "9999-12-31T23:59:59-23:59",
            "occurred_at 9999-12-31T23:59:59-23:59 is outside the years 1 to 9999",
        ),
    ],
    ids=["year-month", "year", "day-first", "empty", "boolean", "beyond-9999"],
)
def test_an_opt_out_whose_time_reads_as_none_is_read_from_its_arrival(
    sent: object, said: str
) -> None:
    """An opt-out dated so was a malformed event, rejected: the withdrawal was lost over
    the form of its time. It is read without it (the store counts it from its
    arrival), saying why; any other event dated so is still refused."""
    event = parse_event({**OPENED, "event_type": " Opted_Out", "occurred_at": sent})
    assert isinstance(event, FeedbackEventCreate), event
    arrived = datetime(2026, 12, 4, 17, tzinfo=UTC)
    record = event.record(arrived)
    assert record.occurred_at == arrived
    assert record.unread is not None and record.unread.startswith(said)
    refused = parse_event({**OPENED, "occurred_at": sent})
    assert isinstance(refused, MalformedEvent), refused
    assert refused.message.startswith("occurred_at: "), refused


LONG_LINK = "https://mail.example.com/unsubscribe?token=" + "x" * 300


@pytest.mark.parametrize(
    ("sent", "read", "said"),
    [
        (
            {"reason": LONG_LINK},
            {"reason": LONG_LINK[:256]},
            "reason cut to its first 256 of 343 characters, the most stored",
        ),
        ({"reason": 42}, {"reason": None}, "reason 42 left out (Input should be a valid string)"),
        (
            {"channel": "e" * 70},
            {"channel": None},
            f"channel '{'e' * 40}'... (70 characters) left out (String should have at most 64 "
            "characters), as if none was named",
        ),
        (
            {"channel": 5},
            {"channel": None},
            "channel 5 left out (Input should be a valid string), as if none was named",
        ),
        ({"value": "3,5"}, {"value": None}, "value '3,5' left out: an opt-out takes none"),
        ({"value": True}, {"value": None}, "value true left out: an opt-out takes none"),
        ({"value": "n/a"}, {"value": None}, "value 'n/a' left out: an opt-out takes none"),
        (
            {"recommendation_id": "r" * 70},
            {"recommendation_id": None},
            f"recommendation_id '{'r' * 40}'... (70 characters) left out (String should have "
            "at most 64 characters)",
        ),
        (
            {"action_id": ["a1"]},
            {"action_id": None},
            "action_id a list left out (Input should be a valid string)",
        ),
        (
            {"email": "dr.who@example.com"},
            {},
            "email left out: not a field of an event",
        ),
    ],
    ids=[
        "long-reason",
        "reason-number",
        "long-channel",
        "channel-number",
        "value-decimal-comma",
        "value-boolean",
        "value-text",
        "long-recommendation",
        "action-list",
        "unknown-field",
    ],
)
def test_an_opt_out_is_read_past_any_field_but_its_ids_saying_how(
    sent: dict[str, object], read: dict[str, object], said: str
) -> None:
    """An opt-out with a reason over its stored length (an unsubscribe link), a channel,
    value, recommendation or action that cannot be read, or a field no event has, was
    a malformed event, rejected with the withdrawal. It is read without (or, a reason,
    cut to) what could not be read, saying so; any other event is still refused."""
    event = parse_event({**OPENED, "event_type": "Opted_Out", **sent})
    assert isinstance(event, FeedbackEventCreate), event
    record = event.record(datetime(2026, 12, 4, 17, tzinfo=UTC))
    assert (record.event_id, record.hcp_id, record.event_type) == ("e1", "H1", "opted_out")
    for field, value in read.items():
        assert getattr(record, field) == value, (field, record)
    assert record.unread == said
    refused = parse_event({**OPENED, **sent})
    assert isinstance(refused, MalformedEvent), refused


def test_an_opt_out_read_past_several_fields_says_each_in_the_fields_order() -> None:
    event = parse_event(
        {
            **OPENED,
            "event_type": "opted_out",
            "occurred_at": "2024-03",
            "value": "3,5",
            "reason": LONG_LINK,
        }
    )
    assert isinstance(event, FeedbackEventCreate), event
    record = event.record(datetime(2026, 12, 4, 17, tzinfo=UTC))
    assert record.channel == "email" and record.reason == LONG_LINK[:256]
    assert record.unread is not None
    said = record.unread.split("; ")
    assert said[0].startswith("occurred_at '2024-03' is a year and month"), said
    assert said[-3:] == [
        "counted from its arrival",
        "reason cut to its first 256 of 343 characters, the most stored",
        "value '3,5' left out: an opt-out takes none",
    ], said


@pytest.mark.parametrize(
    ("sent", "said"),
    [
        ({"hcp_id": "h" * 200}, "hcp_id: String should have at most 128 characters"),
        ({"hcp_id": None}, "hcp_id: an HCP id is text, not null: send the id, as the hcps "),
        ({"event_id": ""}, "event_id: String should have at least 1 character"),
        ({"event_id": 7}, 'event_id: an event_id is text, not a number: send it quoted ("7")'),
    ],
    ids=["long-hcp", "no-hcp", "empty-id", "id-number"],
)
def test_an_opt_out_without_a_readable_hcp_or_event_id_is_refused_naming_each_field(
    sent: dict[str, object], said: str
) -> None:
    """Whom it is about and its idempotency key cannot be read past: such an opt-out is
    refused, naming them and every other field that was wrong."""
    event = parse_event({**OPENED, "event_type": "opted_out", "reason": LONG_LINK, **sent})
    assert isinstance(event, MalformedEvent), event
    assert event.message.startswith(said), event
    assert "reason: String should have at most 256 characters" in event.message, event


@pytest.mark.parametrize("reason", ["", "   ", "\t"])
def test_an_empty_reason_is_none_on_every_event(reason: str) -> None:
    # A platform writing every field, an unset one as "": each such open was refused.
    for sent in ({**OPENED, "reason": reason}, {**OPENED, "event_type": "accepted"}):
        event = parse_event({**sent, "reason": reason})
        assert isinstance(event, FeedbackEventCreate), event
        assert event.reason is None
