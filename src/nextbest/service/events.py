"""A feedback event as it comes in: one of an API batch or one row of a feedback file.

The API (``POST /v1/feedback``) and ``nextbest feedback FILE`` read events with
the same schema and reject a bad one on its own, by what is wrong with it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic.config import JsonDict
from pydantic_core import ErrorDetails, PydanticCustomError

from nextbest.contract.parse import (
    QUOTED_AT_MOST,
    TIME_EXAMPLES,
    no_day_said,
    number,
    partial_date,
    quoted,
    refuse_no_id,
)
from nextbest.limits import STORED_LENGTHS
from nextbest.storage.repository import (
    EARLIEST_EVENT,
    FEEDBACK_EVENT_TYPES,
    MAX_EVENT_VALUE,
    FeedbackEventType,
    FeedbackRecord,
)
from nextbest.yamlfile import refuse_a_near_miss, unknown_key_hint

MAX_FEEDBACK_BATCH = 5000


def not_a_boolean(value: object) -> object:
    """Refuse ``true`` / ``false`` where a number belongs: lax validation reads them
    as 1 and 0, and a client that sent one meant something else."""
    if isinstance(value, bool):
        raise ValueError(f"a number is needed here, not {str(value).lower()}")
    if isinstance(value, str) and _DECIMAL_COMMA.fullmatch(value.strip()):
        # A European spreadsheet's export ('3,5'): say what to change, as the data
        # contract does, rather than "unable to parse string as a number".
        said = quoted(value.strip(), at_most=QUOTED_AT_MOST)
        raise ValueError(f"{said} is not a number (write decimals with '.')")
    return value


_DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+")


def blank_is_no_reason(value: object) -> object:
    """A reason sent empty or as white space alone is none, as a CRM or an e-mail
    platform writes a field it has no value for (``"reason": ""``, a picklist left
    unset): refused, every acceptance such a CRM sent was (an acceptance takes no
    reason code), and every open such a platform sent. A dismissal without one is
    still refused, saying it needs a code."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


# E-mail platforms' words for what the contract has no type of, spelled alike by none
# of the types, so no "did you mean" would come. (Their unsubscribe is an opt-out:
# read as one, _an_unsubscribe.)
_PLATFORM_WORDS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"((hard|soft)_?)?bounce[sd]?"),
        "a bounced e-mail reached nobody: send no event for it (a contact is 'delivered')",
    ),
    (
        # Refused in pydantic's words alone, a platform reporting sends (SFMC's `Sent`)
        # had nothing to count against the caps, and its HCPs were mailed past them.
        re.compile(r"sent|sends?|processed"),
        "a sent e-mail is no contact until it is delivered: send 'delivered' when the "
        "platform reports the delivery (one that reports none: for each send that did "
        "not bounce)",
    ),
)
_UNSUBSCRIBE = re.compile(r"unsub(scribe[sd]?)?")
# A spam complaint (SendGrid's `spamreport`, SES's `Complaint`, Mailgun's `complained`,
# Mailchimp's `abuse`): the HCP asked their mailbox to stop the sender's mail, and the
# platform stops sending to them. Read as the unsubscribe it amounts to: refused, the
# picks went on choosing e-mails the platform would never deliver.
_COMPLAINT = re.compile(
    r"(spam_?)?complain(t|ts|ed)?|spam(_?report(s|ed)?)?|abuse(_?report(s|ed)?)?"
)


def _an_unsubscribe(data: Any) -> str | None:
    """What to say of an event whose type is an e-mail platform's unsubscribe
    (``unsubscribed``, ``Unsubscribe``) or spam complaint (``spamreport``,
    ``Complaint``), read as the opt-out it is; None for any other event. Refused, the
    withdrawal of consent was lost if its sender did not read the refusal."""
    if not isinstance(data, dict) or not isinstance(sent := data.get("event_type"), str):
        return None
    word = re.sub(r"[\s-]+", "_", sent.strip().lower())
    said = f"event_type {quoted(sent.strip(), at_most=QUOTED_AT_MOST)}"
    if _UNSUBSCRIBE.fullmatch(word):
        return f"{said} read as 'opted_out'"
    if _COMPLAINT.fullmatch(word):
        return f"{said} (a spam complaint) read as 'opted_out'"
    return None


def in_any_case(value: object, choices: Sequence[str]) -> object:
    """A word of a closed set of lower-case words (``choices``) as a caller's system
    sends it: ``Accept`` from a CRM's picklist, ``Opened`` as e-mail platforms export
    it, spaces around it dropped. The words of each such set differ in more than case,
    so reading them in lower case can mistake none. A word near one of them
    (``open``, ``dismissed`` for ``dismiss``) is refused naming it; anything else is
    left to the field's own validation."""
    if not isinstance(value, str):
        return value
    value = value.strip().lower()
    refuse_a_near_miss(value, choices)
    return value


def _lower_case(value: object) -> object:
    """An event type in any case (:func:`in_any_case`); an e-mail platform's word for
    what the contract does not count (``bounced``) is refused saying what to send
    instead."""
    value = in_any_case(value, FEEDBACK_EVENT_TYPES)
    if not isinstance(value, str):
        return value
    word = re.sub(r"[\s-]+", "_", value)
    for pattern, instead in _PLATFORM_WORDS:
        if pattern.fullmatch(word):
            quoted = [f"'{t}'" for t in FEEDBACK_EVENT_TYPES]
            raise PydanticCustomError(
                "literal_error",
                "Input should be {listed} ({instead})",
                {"listed": f"{', '.join(quoted[:-1])} or {quoted[-1]}", "instead": instead},
            )
    return value


# An HCP id as every route takes it (recommendations, batches, feedback): an empty
# id or one longer than any data file's could name no HCP, and would be echoed back.
def _an_id_is_text(value: object) -> object:
    """Refuse a number sent as an HCP id saying to quote it: a system keyed by numbers
    sends ``12345`` for the hcps file's ``12345`` (and ``123`` for its ``00123``); and
    anything else that is no text (null, an object) saying an HCP id is text."""
    return _id_as_text(value, "an HCP id", "as the hcps file writes it")


def _an_event_id_is_text(value: object) -> object:
    """:func:`_an_id_is_text` for an event's idempotency key."""
    return _id_as_text(value, "an event_id", "the same on every resend of the event")


def _id_as_text(value: object, what: str, sent_as: str) -> object:
    """``value`` as it is when it is text, for the field to check (refused when blank
    or holding a control character: :func:`~nextbest.contract.parse.why_no_id`); an
    id sent as anything else is refused in a ``string_type`` error saying ``what``
    it is (``an HCP id``) is text, and to send it quoted (a number) or send the id (null, true,
    an object, a list), ``sent_as`` (``as the hcps file writes it``)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        # Formatted here (a number holds no braces): no context to echo in the answer.
        quoted_id = f' ("{value}")' if abs(value) < 1e40 else ""
        said = f"{what} is text, not a number: send it quoted{quoted_id}, {sent_as}"
        raise PydanticCustomError("string_type", said)
    if value is None or isinstance(value, bool | dict | list):
        if isinstance(value, bool):
            kind = "true" if value else "false"
        else:
            kind = "null" if value is None else "an object" if isinstance(value, dict) else "a list"
        raise PydanticCustomError(
            "string_type", f"{what} is text, not {kind}: send the id, {sent_as}"
        )
    return refuse_no_id(value, what)  # blank, or a control character within it


HcpId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=STORED_LENGTHS["hcp_id"]),
    BeforeValidator(_an_id_is_text),
]


def in_utc_range(value: datetime) -> datetime:
    """Refuse a time whose UTC offset takes it past year 1 or 9999: it cannot be
    stored in UTC, and converting it later failed the whole request (a 500 that
    dropped the batch's valid events with it)."""
    try:
        if value.tzinfo is not None:  # one without an offset is UTC already
            value.astimezone(UTC)
    except OverflowError:
        raise ValueError(
            f"{value.isoformat()} is outside the years 1 to 9999 once its UTC offset is "
            "applied: not a time an event happened at"
        ) from None
    return value


# Seconds since 1970 as sent: a JSON number, or a file's or a form's text of one.
_PLAIN_NUMBER = re.compile(r"[+-]?\d+(?:\.\d*)?")
# pydantic reads a number beyond this as milliseconds since 1970, not seconds.
_MILLISECONDS_FROM = 2e10
_AS_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime)


def a_time_an_event_can_have(value: object) -> object:
    """Refuse what names no time an event of this service happened at, saying it as
    sent. A date without a day (``'2024'``, ``2024``, ``'2024-03'``) is refused with
    the data contract's words, and so is a text that is no ISO 8601 time
    (``'31/12/2024'``, ``'yesterday'``). A number is seconds since 1970, and one that lands
    before ``EARLIEST_EVENT`` is no such count but a year, a date without its dashes
    (``20240301``) or a spreadsheet's day number: read as seconds, 2024 was
    1970-01-01T00:33:44 and refused as that time. An opt-out dated so is read
    without its time (:meth:`FeedbackEventCreate._an_opt_out_whatever_its_form`)."""
    if (too_large := _too_large_to_hold(value)) is not None:
        # Was pydantic's "Input should be a valid datetime" (or "a finite number").
        raise ValueError(
            f"{too_large}, read as seconds since 1970, is past the year 9999: send an "
            f"ISO 8601 time, as {TIME_EXAMPLES}"
        )
    said = _as_sent(value)
    partial = partial_date(value)
    if said is not None and partial:
        raise ValueError(no_day_said(said, partial))
    if said is None:
        return value
    if isinstance(value, str) and not _PLAIN_NUMBER.fullmatch(value.strip()):
        try:
            return _AS_DATETIME.validate_python(value.strip())
        except ValidationError:
            # pydantic's words for '31/12/2024' ("invalid character in year") and
            # 'yesterday' ("input is too short") did not say what to send.
            raise ValueError(
                f"{said} is not an ISO 8601 date or date-time: write it as {TIME_EXAMPLES}"
            ) from None
    try:
        read = _AS_DATETIME.validate_python(value.strip() if isinstance(value, str) else value)
    except ValidationError:
        return value  # said by the field's own parsing
    if read >= EARLIEST_EVENT:
        return value
    unit = "milliseconds" if abs(float(str(value))) > _MILLISECONDS_FROM else "seconds"
    raise ValueError(
        f"{said} read as {unit} since 1970 is {read.isoformat()}, before "
        f"{EARLIEST_EVENT:%Y-%m-%d}: no event of this service happened then (a date "
        "without its dashes, a spreadsheet's day number?); send an ISO 8601 time, as "
        "2026-11-30T08:00:00+00:00"
    )


def _as_sent(value: object) -> str | None:
    """A text or a number as a message quotes it; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return quoted(value.strip(), at_most=QUOTED_AT_MOST)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return number(value)
    return None


# When an event happened, as every feedback route and file takes it.
EventTime = Annotated[
    datetime, BeforeValidator(a_time_an_event_can_have), AfterValidator(in_utc_range)
]


# A number written as text (a file's cell, a JSON string), as float() reads one.
_NUMBER_TEXT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _too_large_to_hold(value: object) -> str | None:
    """A number sent as a message says it when no float can hold it (an integer of
    hundreds of digits; one of a JSON body read as infinite; a text of either, as a
    feedback file's cell holds it); None for any other."""
    if isinstance(value, float) and math.isinf(value):
        return f"a {'negative ' if value < 0 else ''}number too large to hold"
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(text := value.strip()):
        if not math.isinf(float(text)):
            return None
        sign = "negative " if text.startswith("-") else ""
        if text.lstrip("+-").isdigit():
            return f"a {sign}number of {len(text.lstrip('+-').lstrip('0')):,} digits"
        return f"a {sign}number too large to hold"
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            float(value)
        except OverflowError:
            digits = len(str(abs(value)))
            return f"a {'negative ' if value < 0 else ''}number of {digits:,} digits"
    return None


def _a_value_it_can_hold(value: object) -> object:
    """Refuse a value no float holds, saying the limit: an integer of hundreds of
    digits was "Input should be a valid number", and one read as infinite "value
    must be a finite number, got inf"."""
    said = _too_large_to_hold(value)
    if said is None:
        return value
    raise ValueError(f"{said} is beyond the limit of {MAX_EVENT_VALUE:,.0f} either way")


# Declared in the schema only: the validators refuse an empty string with their own
# message, naming the field and its limits.
NOT_EMPTY: JsonDict = {"minLength": 1}


class FeedbackEventCreate(BaseModel):
    # Ids and names as the data files read them: surrounding spaces dropped.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    event_id: Annotated[str, BeforeValidator(_an_event_id_is_text)] = Field(
        min_length=1, max_length=STORED_LENGTHS["event_id"], description="Idempotency key."
    )
    event_type: Annotated[FeedbackEventType, BeforeValidator(_lower_case)]
    hcp_id: HcpId
    recommendation_id: str | None = Field(
        default=None, max_length=STORED_LENGTHS["recommendation_id"], json_schema_extra=NOT_EMPTY
    )
    action_id: str | None = Field(
        default=None, max_length=STORED_LENGTHS["action_id"], json_schema_extra=NOT_EMPTY
    )
    channel: str | None = Field(
        default=None, max_length=STORED_LENGTHS["channel"], json_schema_extra=NOT_EMPTY
    )
    occurred_at: EventTime | None = Field(
        default=None,
        description="When it happened: an ISO 8601 time (without an offset: UTC) or "
        "seconds since 1970, from 2000 on; a date without a day (2024, 2024-03) is "
        "refused. Default: when received. An opt-out's that cannot be read is not "
        "refused: it counts from its arrival, said under uncounted (as every field of "
        "an opt-out but event_id and hcp_id: docs/api.md, Feedback).",
    )
    reason: Annotated[str | None, BeforeValidator(blank_is_no_reason)] = Field(
        default=None,
        max_length=STORED_LENGTHS["reason"],
        description="A code of the rules file's rep_plan.dismiss_reasons, in any case: "
        "required for dismissed, optional for snoozed; refused for accepted (as on the "
        "rep route); "
        "free text, stored as sent, on other event types (an opt-out's unsubscribe link). "
        "Empty or white space alone, it is none.",
    )
    value: (
        Annotated[float, BeforeValidator(_a_value_it_can_hold), BeforeValidator(not_a_boolean)]
        | None
    ) = Field(
        default=None,
        description="Outcome value (required for 'outcome'; on other events it is stored "
        "but counts nowhere, and the answer says so under uncounted unless it is 0).",
    )

    @model_validator(mode="wrap")
    @classmethod
    def _an_opt_out_whatever_its_form(
        cls, data: Any, handler: ModelWrapValidatorHandler[Self]
    ) -> FeedbackEventCreate:
        """An opt-out is read past every field but its ids that it cannot be read with
        (:func:`_opt_out_as_read`): refused, the withdrawal of consent would be lost
        over the form of a field that does not change what it withdraws. The store
        says what was not read (:attr:`FeedbackRecord.unread`). Any other event, or
        an opt-out without a readable ``event_id`` or ``hcp_id``, is refused as sent;
        an ``event_id`` too long to store is read, and stored under one derived from it.
        An e-mail platform's unsubscribe (``unsubscribed``) or spam complaint
        (``spamreport``) is such an opt-out, said so."""
        unsubscribe = _an_unsubscribe(data)
        if unsubscribe is not None:
            data = {**data, "event_type": "opted_out"}
        try:
            read_as_sent = handler(data)
        except ValidationError as exc:
            read = _opt_out_as_read(data, exc)
            if read is None:
                raise
            event = _OptOutReadOtherwise.model_validate(read[0])
            event._unread = "; ".join(said for said in (unsubscribe, read[1]) if said)
            return event
        if unsubscribe is None:
            return read_as_sent
        event = _OptOutReadOtherwise.model_validate(data)
        event._unread = unsubscribe
        return event

    @property
    def unread(self) -> str | None:
        """What of the event as sent was not read, and how it was read instead (an
        opt-out's, see above); None when it was read as sent."""
        return None

    def record(self, received_at: datetime) -> FeedbackRecord:
        """The event as the feedback store takes it (no ``occurred_at``, or an opt-out's
        that could not be read: ``received_at``)."""
        return FeedbackRecord(
            event_id=self.event_id,
            event_type=self.event_type,
            occurred_at=self.occurred_at or received_at,
            hcp_id=self.hcp_id,
            recommendation_id=self.recommendation_id,
            action_id=self.action_id,
            channel=self.channel,
            reason=self.reason,
            value=self.value,
            unread=self.unread,
        )


class _OptOutReadOtherwise(FeedbackEventCreate):
    """An opt-out read otherwise than sent. Apart, as a private attribute on every
    event made reading a batch twice as slow."""

    # Longer than the store keeps, it is kept under an id derived from it (the store's
    # _opt_out_as_kept), the same for every resend, so that the withdrawal is not lost.
    event_id: str = Field(min_length=1)
    _unread: str = PrivateAttr(default="")

    @property
    def unread(self) -> str | None:
        return self._unread or None


# What an opt-out can have no withdrawal without: who withdraws (hcp_id), and the key
# that makes a resend a duplicate (event_id). Any other field is read past.
_OPT_OUT_NEEDS = frozenset({"event_id", "event_type", "hcp_id"})


def _opt_out_as_read(data: Any, exc: ValidationError) -> tuple[dict[str, Any], str] | None:
    """An opt-out (``data``, as sent) as it can be read past what ``exc`` refused, and
    what was read otherwise, field by field (in the fields' order, '; '-joined); None
    for any other event, or an opt-out whose ``event_id`` or ``hcp_id`` cannot be read
    (an ``event_id`` longer than stored is read as sent: the store keeps the opt-out
    under an id derived from it).

    A time that reads as none is left out (counted from its arrival); a reason longer
    than the store keeps is cut to it (an unsubscribe link's tail), any other that is
    no text left out; a value that is no number left out (an opt-out's counts
    nowhere); a channel that cannot be one left out, as if none was named (every
    channel, or the one a key of one channel speaks for); a recommendation or action
    that cannot be one left out (what it withdraws is then read from the channel); a
    field no event has left out.
    """
    if not isinstance(data, dict):
        return None
    event_type = data.get("event_type")
    if not isinstance(event_type, str) or event_type.strip().lower() != "opted_out":
        return None
    refused: dict[str, list[ErrorDetails]] = {}
    for error in exc.errors(include_url=False):
        field = error["loc"][0] if error["loc"] else None
        if field == "event_id" and error["type"] in ("string_too_long", "control_character"):
            # Kept as sent: the store derives the id a long one is stored under; one
            # with a control character names no other event (resent, it is the same).
            continue
        if not isinstance(field, str) or field in _OPT_OUT_NEEDS or field not in data:
            return None
        refused.setdefault(field, []).append(error)
    read = {k: v for k, v in data.items() if k not in refused}
    said: list[str] = []
    for field, errors in refused.items():
        sent = data[field]
        if field == "occurred_at":
            said.append(f"{_time_unread(sent, errors)}; counted from its arrival")
        elif field not in FeedbackEventCreate.model_fields:
            said.append(f"{field} left out: not a field of an event")
        elif field == "value":
            said.append(f"value {_said(sent)} left out: an opt-out takes none")
        elif field == "reason" and isinstance(sent, str):
            # Too long is all a text can be here: an unsubscribe link's tail is cut.
            reason = sent.strip()
            read["reason"] = reason[: STORED_LENGTHS["reason"]]
            said.append(
                f"reason cut to its first {STORED_LENGTHS['reason']} of {len(reason):,} "
                "characters, the most stored"
            )
        else:
            why = "; ".join(error["msg"] for error in errors)
            as_none = ", as if none was named" if field == "channel" else ""
            said.append(f"{field} {_said(sent)} left out ({why}){as_none}")
    return read, "; ".join(said)


def _said(sent: object) -> str:
    """A field's value as sent, as a message quotes it: a text or a number as is
    (a long text cut), anything else by its kind."""
    said = _as_sent(sent)
    if said is not None:
        return said
    return str(sent).lower() if isinstance(sent, bool) else f"a {type(sent).__name__}"


def _time_unread(sent: object, errors: list[ErrorDetails]) -> str:
    """Why an ``occurred_at`` (``sent``) was refused, from ``errors``, its errors."""
    return "; ".join(
        # Our validators' sentences quote what was sent; pydantic's do not.
        f"occurred_at {error['msg'].removeprefix('Value error, ')}"
        if error["type"] == "value_error"
        else f"occurred_at {_said(sent)} is no time: {error['msg']}"
        for error in errors
    )


@dataclass(frozen=True)
class MalformedEvent:
    """An event of a batch that is not a valid event: reported by its index, not stored."""

    event_id: str  # as sent, "" when missing or not a string
    message: str  # every problem of the event, each naming its field


def event_or_malformed(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """One event of a batch, or a :class:`MalformedEvent` saying what is wrong with it.

    A bad event (an unknown ``event_type``, a date that is no date) is rejected on
    its own, as an unknown ``hcp_id`` is: the valid events of the batch are still
    stored, so one bad record does not hold back thousands of good ones.
    """
    try:
        return handler(value)
    except ValidationError as exc:
        sent = value.get("event_id") if isinstance(value, dict) else None
        # A field no event has names the one it is near (or, once, those an event has).
        listed: set[tuple[Any, ...]] = set()
        # Our validators' own sentences, without pydantic's "Value error, " in front.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'event'}: "
            + error["msg"].removeprefix("Value error, ")
            + (
                unknown_key_hint(FeedbackEventCreate, error["loc"], listed=listed)
                if error["type"] == "extra_forbidden"
                else ""
            )
            for error in exc.errors(include_url=False)
        )
        return MalformedEvent(event_id=sent if isinstance(sent, str) else "", message=problems)


_ONE_EVENT: TypeAdapter[FeedbackEventCreate | MalformedEvent] = TypeAdapter(
    Annotated[FeedbackEventCreate, WrapValidator(event_or_malformed)]
)


def parse_event(value: dict[str, Any]) -> FeedbackEventCreate | MalformedEvent:
    """One event (a file's row), or what is wrong with it, read as a batch's events are."""
    return _ONE_EVENT.validate_python(value)
