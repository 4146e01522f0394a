"""Request and response schemas, split by direction (``...Create`` in, ``...Public`` out)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    WithJsonSchema,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from nextbest.api.bodies import RepeatedKeys
from nextbest.contract.parse import QUOTED_AT_MOST, quoted, refuse_no_id
from nextbest.limits import STORED_LENGTHS, Purpose
from nextbest.service.events import (
    MAX_FEEDBACK_BATCH,
    NOT_EMPTY,
    EventTime,
    FeedbackEventCreate,
    HcpId,
    blank_is_no_reason,
    event_or_malformed,
    in_any_case,
    not_a_boolean,
)
from nextbest.service.recommend import MAX_BATCH, MAX_LEFT_OUT, LeftOutWhy, check_decision_date
from nextbest.yamlfile import near_word

# A decision date or time: the approval windows, and the contacts and decisions the
# rules count, are as of it. A date alone is that day's start (00:00 UTC), today's
# is now; a time without a zone is UTC.


def _date_or_time(value: object) -> object:
    """'2026-12-01' is a date, '2026-12-01T00:00:00+05:00' that exact time (lax
    validation reads a midnight time as a date and drops its offset); no number
    ('20261101' would be seconds since 1970)."""
    if isinstance(value, bool | list | dict):
        # Else a list or an object was refused twice, as no date and as no datetime, at
        # ["body", "date", "date"] and ["body", "date", "datetime"]; true as a number.
        if isinstance(value, bool):
            kind = str(value).lower()
        else:
            kind = "a list" if isinstance(value, list) else "an object"
        raise ValueError(f"a decision date is YYYY-MM-DD or an ISO 8601 time, not {kind}")
    if isinstance(value, int | float) or (isinstance(value, str) and value.strip().isdigit()):
        raise ValueError("a decision date is YYYY-MM-DD or an ISO 8601 time, not a number")
    if isinstance(value, str):
        text = value.strip()
        try:
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                return date.fromisoformat(text)
            return datetime.fromisoformat(text)
        except ValueError:
            said = quoted(text, at_most=QUOTED_AT_MOST)
            raise ValueError(f"{said} is not a date (YYYY-MM-DD) or an ISO 8601 time") from None
    return value


DecisionDate = Annotated[
    date | datetime, BeforeValidator(_date_or_time), AfterValidator(check_decision_date)
]


def _whole_as_int(value: object) -> object:
    """A whole number sent as a float (``2.0``, ``1e308``) as the integer it is, so that
    its bounds are said (``less than or equal to 50``), not pydantic's "unable to parse
    input string as an integer, exceeded maximum size" for one past 2**63."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# How many actions: true / false are not counts (lax validation reads true as 1).
Count = Annotated[int, BeforeValidator(_whole_as_int), BeforeValidator(not_a_boolean)]


def _a_purpose(value: object) -> object:
    """A purpose as a CRM's picklist sends it (``Medical``): read in any case."""
    return in_any_case(value, get_args(Purpose))


def _one_to(
    most: int,
    items: str,
    *,
    more: str,
    none: str,
    nulls: Callable[[list[Any]], list[Any]] | None = None,
) -> Callable[[Any], Any]:
    """A check, before its items are read, of a batch's list of 1 to ``most``
    ``items``: more is refused saying how many were sent and what to do instead
    (``more``), none with ``none``; a list holding nulls is what ``nulls`` makes of it
    (:func:`_nulls_named`), else left to the items' own check. A value that is no
    list is left to the field."""

    def check(value: Any) -> Any:
        if isinstance(value, list) and len(value) > most:
            raise ValueError(f"at most {most} {items} per call, got {len(value)}: {more}")
        if isinstance(value, list) and not value:
            raise ValueError(none)
        if nulls is not None and isinstance(value, list) and None in value:
            return nulls(value)
        return value

    return check


@dataclass(frozen=True)
class _NullItem:
    """A null at ``index`` of a batch's list, read as an item that says so."""

    index: int


def _nulls_named(value: list[Any]) -> list[Any]:
    """A batch's events with each null one a :class:`_NullItem`, rejected alone naming
    its place (:func:`_no_null_event`), as any other event that is none is."""
    return [_NullItem(n) if item is None else item for n, item in enumerate(value)]


def _no_null_event(value: Any) -> Any:
    """Refuse a null in a batch's events, naming its place: it was "Input should be a
    valid dictionary or object to extract fields from", which did not say null."""
    if isinstance(value, _NullItem):
        raise ValueError(
            f"events[{value.index}] is null, not an event: send each event as an object "
            "of its fields (no null in the list)"
        )
    return value


def each_key_once(data: Any) -> Any:
    """Refuse a JSON object that gives a field more than once (api/bodies.py's
    :class:`~nextbest.api.bodies.RepeatedKeys`), naming it: its last value was read
    and the others dropped without a word (a second ``events`` array, the events of
    the first). Repeated query parameters are refused alike. The error's ``loc`` is the
    object's, and the app adds the field (the first repeated, ``ctx.field``)."""
    if not isinstance(data, RepeatedKeys):
        return data
    said = [quoted(key, at_most=QUOTED_AT_MOST) for key in data.repeated]
    if len(said) == 1:
        times = next(iter(data.repeated.values()))
        what = f"{said[0]} is given {times} times"
    else:
        what = f"{', '.join(said[:-1])} and {said[-1]} are each given more than once"
    raise PydanticCustomError(
        "repeated_field",
        f"{what} in one object: send each field once (which value was meant cannot be told)",
        {"field": next(iter(data.repeated))},
    )


def _nulls_as_unsent(data: Any, fields: tuple[str, ...]) -> Any:
    """``data`` without the ``fields`` sent as null: a client that writes every field of
    its request object, unset ones as null (Jackson's, .NET's and Newtonsoft's default),
    means the default by ``"k": null``, as ``"channel": null`` already does."""
    if isinstance(data, dict) and any(data.get(name, 0) is None for name in fields):
        return {key: value for key, value in data.items() if value is not None or key not in fields}
    return data


# Who is asking, as every route takes it: in any case, spaces around it dropped.
RequestPurpose = Annotated[Purpose, BeforeValidator(_a_purpose)]

PURPOSE_HELP = (
    "Who is asking: a commercial requester never gets medical content, a medical one "
    "never gets promotional content. Default: the API key's purpose if the key file "
    "binds it to one (asking for the other is a 403), else promotional."
)
DECISION_DATE_HELP = (
    "Decision date or time (default: now): approval windows, contacts and decisions are "
    "counted as of it (a past one counts those reported up to now: it is acted on now). "
    "A date alone is 00:00 UTC of that day, today's is now; a time without an offset is UTC."
)


class RecommendationCreate(BaseModel):
    # Ids and names as the data files read them: surrounding spaces dropped.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _as_sent(cls, data: Any) -> Any:
        return _nulls_as_unsent(each_key_once(data), ("k", "explain"))

    hcp_id: HcpId = Field(examples=["H000001"])
    k: Count = Field(default=5, ge=1, le=50, description="How many actions to return at most.")
    channel: str | None = Field(default=None, description="Only actions on this channel.")
    purpose: RequestPurpose | None = Field(default=None, description=PURPOSE_HELP)
    date: DecisionDate | None = Field(default=None, description=DECISION_DATE_HELP)
    explain: bool = Field(
        default=False, description="Also say why each excluded action was left out."
    )


class RecommendationItemPublic(BaseModel):
    rank: int
    action_id: str
    channel: str
    content_id: str
    topic: str
    content_type: str
    score: float = Field(description="Expected incremental value minus cost.")
    expected_uplift: float = Field(description="Expected incremental outcome versus no touch.")
    p_engage: float = Field(description="Calibrated probability of engagement.")
    cost: float
    propensity: float = Field(description="Probability this item was served (first slot: first).")
    explored: bool
    reasons: list[str]


# A time as every answer writes it: ISO 8601 with its offset, "+00:00" for UTC (the
# recommendation routes write their answers themselves; pydantic would write "Z").
OffsetTime = Annotated[
    datetime,
    PlainSerializer(datetime.isoformat, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class RecommendationPublic(BaseModel):
    recommendation_id: str
    hcp_id: str
    created_at: OffsetTime
    model_version: str
    uplift_source: str = Field(
        description="'uplift_model', or 'preference_x_value' when no outcome/holdout data "
        "existed to measure incremental effect."
    )
    holdout: bool = Field(
        description="True: this request is a randomized control, nothing served. A rep key is "
        "told false, with no items, as when nothing is worth doing (the control stays blind "
        "to the field)."
    )
    items: list[RecommendationItemPublic]
    excluded: dict[str, list[str]] | None = None


class RecommendationBatchCreate(BaseModel):
    # Ids and names as the data files read them: surrounding spaces dropped.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _as_sent(cls, data: Any) -> Any:
        # An explain of null asks for nothing: read as not sent, as a null k is.
        return _nulls_as_unsent(each_key_once(data), ("k", "explain"))

    hcp_ids: list[HcpId] = Field(
        min_length=1,
        description=f"Up to {MAX_BATCH} HCPs per call.",
        examples=[["H000001"]],
        # Declared only: the validator below says how to send more.
        json_schema_extra={"maxItems": MAX_BATCH},
    )
    k: Count = Field(default=1, ge=1, le=50, description="Actions per HCP at most.")
    channel: str | None = Field(default=None, description="Only actions on this channel.")
    purpose: RequestPurpose | None = Field(default=None, description=PURPOSE_HELP)
    date: DecisionDate | None = Field(default=None, description=DECISION_DATE_HELP)

    # Refused with its own message: the batch explains nothing (an explanation reads
    # every action's rules and each contact's time, per HCP: a support question).
    explain: SkipJsonSchema[Any] = Field(default=None, exclude=True)

    # Before the ids are read: a list of a million bad ids was checked id by id,
    # a million errors, before its length was.
    _at_most_max_batch = field_validator("hcp_ids", mode="before")(
        _one_to(
            MAX_BATCH,
            "HCPs",
            more="split the list, or use `nextbest picks` for whole files",
            none=f"no HCP ids: send 1 to {MAX_BATCH} per call",
        )
    )

    @field_validator("explain", mode="before")
    @classmethod
    def _no_explanations(cls, value: Any) -> Any:
        raise ValueError(
            "the batch route takes no explain: ask POST /v1/recommendations with "
            '"explain": true for the HCP in question (or run `nextbest explain HCP_ID` '
            "where the service runs), and leave explain out of the batch"
        )


class BatchResultPublic(BaseModel):
    recommendation_id: str
    hcp_id: str
    model_version: str = Field(
        description="The version that answered this HCP: the answer's model_version, or "
        "the challenger's for an HCP of its share (NEXTBEST_CHALLENGER_SHARE)."
    )
    uplift_source: str = Field(
        description="What that version ranks by: 'uplift_model', or 'preference_x_value' "
        "when it had no outcome/holdout data to measure incremental effect."
    )
    created_at: OffsetTime = Field(description="When this answer was served and logged (UTC).")
    holdout: bool
    items: list[RecommendationItemPublic]


class RecommendationBatchPublic(BaseModel):
    # Every field is in every answer, defaults included: required in the document.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    model_version: str = Field(
        description="The served version (alias NEXTBEST_SERVE_ALIAS); each result names "
        "the version that answered it."
    )
    uplift_source: str = Field(
        description="What the served version ranks by; each result says it of its own."
    )
    results: list[BatchResultPublic]
    unknown_hcp_ids: list[str] = Field(
        description="HCPs the served model does not know (nor its challenger, where one "
        "answers the HCPs only it knows: NEXTBEST_CHALLENGER_SHARE)."
    )
    unknown_in_another_case: dict[str, str] = Field(
        default_factory=dict,
        description="Of unknown_hcp_ids, each the served model knows in another case: the id "
        "sent -> the id it knows (ids are compared exactly, case included: did you mean it?).",
    )
    repeated_hcp_ids: list[str] = Field(
        default_factory=list,
        description="HCPs listed more than once: each got one answer, at its first place.",
    )


class RepSuggestionPublic(BaseModel):
    rank: int
    recommendation_id: str
    hcp_id: str
    action_id: str
    channel: str
    content_id: str = Field(description="The content to bring.")
    topic: str
    content_type: str
    score: float
    expected_uplift: float
    p_engage: float
    cost: float
    propensity: float
    explored: bool
    reasons: list[str]


class LeftOutPublic(BaseModel):
    hcp_id: str
    why: LeftOutWhy = Field(
        description="held_out: drawn into this week's randomized holdout (logged as a holdout "
        "answer, recommendation_id; every caller skips it this week). below_capacity: worth "
        "a visit, but ranked below the HCPs the capacity took. no_rep_action_worth_its_cost: "
        "rep actions are allowed, none is expected to bring more than it costs. "
        "no_rep_action_allowed: every rep action is excluded by a rule (excluded says which). "
        "not_suggested (a rep key's answer, which has no held_out nor "
        "no_rep_action_worth_its_cost): a rep action is allowed, but none is suggested now: "
        "none is worth its cost, or the HCP is in this week's randomized holdout; a rep key "
        "is not told which, so that the control stays blind to the field."
    )
    rank: int | None = Field(
        default=None,
        description="held_out, below_capacity: place in the plan's ranking by best net value "
        "(every HCP with a rep action worth its cost, held-out ones included but for a rep "
        "key; a suggestion's rank counts suggestions only).",
    )
    action_id: str | None = Field(
        default=None, description="Its best allowed rep action (absent: none allowed)."
    )
    score: float | None = Field(
        default=None, description="That action's net value (expected incremental value minus cost)."
    )
    recommendation_id: str | None = Field(
        default=None, description="held_out: the holdout answer logged for it."
    )
    excluded: dict[str, list[str]] | None = Field(
        default=None,
        description="no_rep_action_worth_its_cost, no_rep_action_allowed, not_suggested: why "
        "each rep action is left out (consent, caps and cool-downs, dismissed or snoozed, "
        "approval window, specialty, purpose, withdrawn, not worth its cost; for "
        "not_suggested, each allowed one says 'allowed by the rules; not suggested now'), "
        "as a recommendation's explain.",
    )


class RepPlanPublic(BaseModel):
    rep_id: str
    territory_id: str
    purpose: str = Field(description="Whose plan: promotional (a sales rep) or medical (an MSL).")
    date: date
    capacity: int
    model_version: str
    created_at: OffsetTime = Field(description="When the plan was served and logged (UTC).")
    n_hcps: int = Field(description="HCPs in the territory.")
    n_candidates: int = Field(description="HCPs with at least one allowed rep action.")
    suggestions: list[RepSuggestionPublic]
    left_out: list[LeftOutPublic] | None = Field(
        default=None,
        description=f"With explain=true only: why HCPs of the territory are not suggested, "
        f"at most {MAX_LEFT_OUT} (of n_left_out), best ranked first: "
        "held_out and below_capacity in ranking order, then no_rep_action_worth_its_cost "
        "(closest to paying first; for a rep key not_suggested, in territory order), then "
        "no_rep_action_allowed.",
    )
    n_left_out: int | None = Field(
        default=None,
        description=f"With explain=true only: how many HCPs of the territory left_out would "
        f"list without its cap of {MAX_LEFT_OUT} (n_hcps minus the suggestions); more than "
        "left_out holds when it is cut.",
    )


RepDecision = Literal["accept", "dismiss", "snooze"]


# A CRM's word for a visit or call that took place: no decision on the suggestion but
# a contact, which the rep route does not record. Refused saying where it goes: in
# pydantic's words alone the CRM was not told, and the next plans went on suggesting
# the visit done (an acceptance is no contact).
_DONE = re.compile(r"complete[ds]?|completion|done|visited|called|took_place|happened")


def _a_decision(value: object) -> object:
    """A decision in any case (``Accept``, from a CRM's picklist); one sent as the
    event it is stored as (``dismissed``) is refused naming the one it likely means,
    and a visit done (``complete``) saying where to send it."""
    value = in_any_case(value, get_args(RepDecision))
    if isinstance(value, str) and _DONE.fullmatch(re.sub(r"[\s-]+", "_", value)):
        raise PydanticCustomError(
            "literal_error",
            "Input should be 'accept', 'dismiss' or 'snooze' ({instead})",
            {
                "instead": "a visit or call that took place is no decision on the "
                "suggestion: send it to POST /v1/feedback as a 'completed' event naming "
                "this recommendation_id and action_id, which counts it against the "
                "channel's caps and cool-down"
            },
        )
    return value


def _a_recommendation_id(value: object) -> object:
    """Refused blank or holding a control character, as an HCP id is."""
    return refuse_no_id(value, "a recommendation_id")


def _an_action_id(value: object) -> object:
    """Refused blank or holding a control character, as an HCP id is."""
    return refuse_no_id(value, "an action_id")


def _an_event_id(value: object) -> object:
    """Refused blank or holding a control character, as a feedback event's is."""
    return refuse_no_id(value, "an event_id")


class RepFeedbackCreate(BaseModel):
    # Ids and names as the data files read them: surrounding spaces dropped.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _one_decision(cls, data: Any) -> Any:
        each_key_once(data)
        # A batch sent here read as three "Field required" and an extra "events".
        if isinstance(data, dict) and "events" in data:
            raise ValueError(
                "this route takes one decision per request, not a batch of events: send "
                "each decision on its own, or the events to POST /v1/feedback"
            )
        # A list of decisions read as "Input should be a valid dictionary".
        if isinstance(data, list):
            raise ValueError(
                "this route takes one decision per request, a JSON object, not a list: "
                "send each decision on its own, or the events to POST /v1/feedback as "
                '{"events": [...]}'
            )
        return data

    recommendation_id: Annotated[str, BeforeValidator(_a_recommendation_id)] = Field(
        min_length=1, max_length=STORED_LENGTHS["recommendation_id"]
    )
    hcp_id: HcpId
    action_id: Annotated[str, BeforeValidator(_an_action_id)] = Field(
        min_length=1, max_length=STORED_LENGTHS["action_id"], description="The suggested action."
    )
    decision: Annotated[RepDecision, BeforeValidator(_a_decision)] = Field(
        description="accept, dismiss or snooze, in any case (Accept)."
    )
    reason: Annotated[str | None, BeforeValidator(blank_is_no_reason)] = Field(
        default=None,
        max_length=64,
        description="Reason code: required to dismiss, optional to snooze, none to accept "
        "(empty, it is none); in any case (Not_Relevant is stored as the rules file spells "
        "it).",
    )
    event_id: Annotated[str, BeforeValidator(_an_event_id)] | None = Field(
        default=None,
        max_length=STORED_LENGTHS["event_id"],
        json_schema_extra=NOT_EMPTY,
        description="Idempotency key (default: derived from the rep, recommendation, "
        "action, decision and reason, so the same decision sent again is a duplicate; "
        "with occurred_at added when it is given, and the day and the decision it "
        "replaces when it differs from the item's current decision (a rep changing "
        "their mind), so that its retries have one id).",
    )
    occurred_at: EventTime | None = Field(
        default=None,
        description="When the rep decided (default: when received, by the clock plans are "
        "decided by), e.g. a decision taken "
        "offline and synced later; suppression windows count from it.",
    )


class ReloadPublic(BaseModel):
    version: str = Field(description="The version served from now on.")
    previous: str | None = Field(description="The version served before the call.")
    changed: bool = Field(
        description="The version served from now on is another one than before the call "
        "(the alias had moved, or the first model was loaded): version differs from "
        "previous."
    )
    forced: bool = Field(
        default=False,
        description="force=true loaded the version already served again (its artifacts as "
        "they are now) and swapped it in; changed stays false, the version being the same.",
    )
    warmed_hcps: int = Field(
        description="HCPs whose scores and reasons the new model computed before the swap "
        "(what the old model's score cache was last asked), in this worker."
    )
    rules_changed: bool = Field(
        default=False,
        description="The rules file was edited since the last (re)load and now applies "
        "(in this worker; the others re-read it within a second).",
    )
    rules_fingerprint: str = Field(
        description="The fingerprint of the serving rules this worker applies from now on "
        "(the first 12 hex digits of the SHA-256 of the rules file; as /readyz shows it)."
    )
    rules_notes: list[str] = Field(
        default_factory=list,
        description="Rules that apply to nothing in the served catalog: withdrawn_actions "
        "it does not list, rules for channels it does not have (a typo stops nothing, "
        "with the channel it likely meant); and the catalog's channels no rule names. "
        "First, when the rules file was found empty: the rules held keep serving.",
    )
    territories_changed: bool = Field(
        default=False,
        description="The territory alignment file (NEXTBEST_TERRITORIES_FILE) changed since "
        "the last (re)load and now applies to rep keys and rep plans (in this worker; the "
        "others re-read it within a second).",
    )
    territory_notes: list[str] = Field(
        default_factory=list,
        description="With a territory alignment file: HCPs it lists that the served model "
        "does not know (served after a retrain), HCPs of the model in no territory (no "
        "rep key sees them), rep keys whose territory has no HCP.",
    )
    key_notes: list[str] = Field(
        default_factory=list,
        description="First, when the keys in force are not the key file's, why (the "
        "file is invalid or gone: the keys read before serve). Then channel API keys bound "
        "to channels (channels in the key file) that name a channel no action of the served "
        "catalog uses: a typo, or a channel whose content is not in the catalog yet. Not an "
        "error: such a key gets no recommendation of that channel until one is. Then keys "
        "bound to a purpose (purpose in the key file) whose channels (a rep key's: rep "
        "channels) hold no catalog content of that purpose: an MSL's key before the catalog "
        "has medical content for visits plans nothing. Then, "
        "without a territory alignment file, rep keys whose territory holds no HCP of the "
        "served model (with one: territory_notes). Empty when there is none of these.",
    )
    challenger: str | None = Field(
        default=None,
        description="With NEXTBEST_CHALLENGER_SHARE: the version of alias challenger that "
        "answers its share of HCPs from now on, in this worker. Null when none does (the "
        "share is 0, the alias is unset or names the served version, or it failed to load: "
        "/readyz challenger_error says why).",
    )
    signal_error: str | None = Field(
        default=None,
        description="Why the other worker processes were not signalled to reload (the "
        "signal file in the models directory could not be written): they serve on what "
        "they served. Null when they were.",
    )


class FeedbackBatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _an_object_of_events(cls, data: Any) -> Any:
        each_key_once(data)
        # A bare array of events read as one event that was no object ("Input should
        # be a valid dictionary"), which did not say how a batch is sent.
        if isinstance(data, list):
            raise ValueError(
                'a batch is sent as an object, {"events": [...]} (up to '
                f"{MAX_FEEDBACK_BATCH:,} events), not as a bare JSON array: wrap the array "
                'in {"events": ...}'
            )
        return data

    # Each item is a FeedbackEventCreate or, when it is not a valid event, a
    # MalformedEvent (the schema documents the valid shape).
    # An event that gives a field twice is rejected alone, as any invalid event is.
    events: list[
        Annotated[
            FeedbackEventCreate,
            BeforeValidator(_no_null_event),
            BeforeValidator(each_key_once),
            WrapValidator(event_or_malformed),
        ]
    ] = Field(
        # Declared only: the validator below says how to send more, or fewer.
        json_schema_extra={"minItems": 1, "maxItems": MAX_FEEDBACK_BATCH}
    )

    # Before the events are read: a list over the limit was read event by event, and
    # then refused in words that did not say what to do.
    _one_to_max_feedback_batch = field_validator("events", mode="before")(
        _one_to(
            MAX_FEEDBACK_BATCH,
            "events",
            more="split the batch, or send a file of them with `nextbest feedback FILE`",
            none=f"no events: send 1 to {MAX_FEEDBACK_BATCH} in events, or one event alone",
            nulls=_nulls_named,
        )
    )


def _feedback_shape(body: Any) -> str:
    """A body with ``events`` is a batch, and so is an array (to be told how one is
    sent), and an object without ``event_type`` that has a list at a key near
    ``events`` (``evnts``: refused as a batch's field, naming ``events``; ``"event":
    "opened"`` is one event's); any other one event."""
    if isinstance(body, dict):
        if "events" in body:
            return "batch"
        if "event_type" in body:
            return "event"
        lists = (key for key, value in body.items() if isinstance(value, list))
        return "batch" if any(near_word(str(key), ("events",)) for key in lists) else "event"
    if isinstance(body, list):
        return "batch"
    return "batch" if isinstance(body, FeedbackBatchCreate) else "event"


# One event or a batch, told apart by the ``events`` key, so that a bad body is
# reported against the shape it was meant to have ("body", "batch", "events", 3,
# "event_type") and not against both.
FeedbackCreate = Annotated[
    Annotated[FeedbackEventCreate, BeforeValidator(each_key_once), Tag("event")]
    | Annotated[FeedbackBatchCreate, Tag("batch")],
    Discriminator(_feedback_shape),
]


class RejectedEvent(BaseModel):
    # Every field is in every answer, defaults included: required in the document.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    index: int
    event_id: str
    status: int = 422
    message: str


class UncountedEvent(BaseModel):
    index: int
    event_id: str
    message: str


class FeedbackResultPublic(BaseModel):
    # Every field is in every answer, defaults included: required in the document.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    accepted: int
    duplicates: int
    rejected: list[RejectedEvent]
    uncounted: list[UncountedEvent] = Field(
        default_factory=list,
        description="Events stored with something the sender should know, each with "
        "its message: contacts (delivered, completed) counted in the all-channel budget "
        "only, against no channel's cap (they name no channel and none could be filled in "
        "from their action or their recommendation's items, or they name a channel the "
        "served catalog does not have); contacts, opens, clicks and attendances of an HCP "
        "their recommendation held out (holdout: true); events other than outcomes sent "
        "with a value, which counts nowhere; opt-outs read otherwise than sent (their "
        "channel, recommendation or time), of a channel the served catalog does not have, "
        "or stored under a derived event_id (theirs was another event's, or too long to "
        "store); and consent events stored for an HCP the served model does not "
        "know yet.",
    )


class ErrorPublic(BaseModel):
    """A refusal that is not about one field of the request (401, 403, 404, 405, 500, 503)."""

    detail: str = Field(description="What is wrong, in a sentence.")


class HealthPublic(BaseModel):
    status: str
    model_version: str | None = Field(default=None, description="Absent until a model is loaded.")
    features_as_of: str | None = Field(
        default=None,
        description="When the served model's HCP history features are as of (UTC): its "
        "training cut-off, or with NEXTBEST_FRESH_HISTORY the start of the day its recency "
        "and fatigue were moved on to. No decision is made for an earlier day.",
    )
    challenger_version: str | None = Field(
        default=None,
        description="With NEXTBEST_CHALLENGER_SHARE: the version of alias challenger that "
        "answers its share of HCPs beside model_version. Absent when none does.",
    )
    challenger_error: str | None = Field(
        default=None,
        description="Why the version of alias challenger failed to load (model_version "
        "answers every HCP until the alias moves or a reload is forced).",
    )
    last_reload_error: str | None = None
    rules_fingerprint: str | None = Field(
        default=None,
        description="The fingerprint of the serving rules this worker applies and logs with "
        "each answer (recommendations.rules_fingerprint): the first 12 hex digits of the "
        "SHA-256 of the rules file as read; e3b0c44298fc for an empty file. Absent while "
        "the rules file cannot be read.",
    )
    territories_fingerprint: str | None = Field(
        default=None,
        description="With NEXTBEST_TERRITORIES_FILE: the fingerprint of the territory "
        "alignment this worker applies (the first 12 hex digits of the SHA-256 of the file "
        "as read): workers showing different ones serve different territories until each "
        "reloads. Absent without the setting, or while the file cannot be read "
        "(last_reload_error says why; rep keys and rep plans get 503 meanwhile).",
    )
    keys_error: str | None = Field(
        default=None,
        description="Why the API keys in force are not those of the key file: it changed "
        "but is invalid, so its changes (revocations included) are not applied until it is "
        "fixed. Absent when the file's keys are in force.",
    )
    warming: bool | None = Field(
        default=None,
        description="True while this worker still warms its score cache at start-up "
        "(requests are served meanwhile).",
    )
