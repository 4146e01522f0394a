"""Persistence functions of the recommendation log and the feedback store.

The service layer calls these; HTTP routes never hold SQL. Every function takes a
``Session`` and keyword-only arguments and returns plain frozen records, dicts or a
DataFrame, never ORM objects. Timestamps come back timezone-aware in UTC (except
``logged_decisions``, whose ``timestamp`` follows the data contract: naive UTC).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import sqlite3
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal, cast, get_args

import numpy as np
import pandas as pd
import psycopg
import sqlalchemy as sa
from psycopg_pool import PoolTimeout
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from nextbest.contract.parse import QUOTED_AT_MOST, quoted, said_in_another_case, spelled_alike
from nextbest.contract.schema import (
    EVERY_CHANNEL_NAMES,
    MAX_OUTCOME,
    REP_CHANNEL_PREFIX,
    channel_spelling,
    is_rep_channel,
    near_channel,
    withdrawn_channel,
)
from nextbest.features.history import ENGAGEMENT_WAIT_DAYS
from nextbest.limits import PURPOSES, STORED_LENGTHS
from nextbest.policy.rules import code_in_any_case
from nextbest.storage.tables import (
    CONSENT_ROWS,
    FeedbackEvent,
    MaintenanceRun,
    Recommendation,
    RecommendationItem,
    ServingRulesText,
    UTCDateTime,
    folded_hcp_id,
)
from nextbest.yamlfile import near_hint

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

FeedbackEventType = Literal[
    "delivered",
    "opened",
    "clicked",
    "attended",
    "completed",
    "accepted",
    "dismissed",
    "snoozed",
    "outcome",
    "opted_out",
    "opted_in",
]
FEEDBACK_EVENT_TYPES: tuple[str, ...] = get_args(FeedbackEventType)
# A contact that counts against frequency caps and cool-downs as soon as it is reported.
CONTACT_EVENT_TYPES: tuple[str, ...] = ("delivered", "completed")
# Events that show an answer's HCP was reached: a contact, or what only a contact can
# bring (an open, a click, an attendance). One naming a holdout answer means a
# held-out HCP was contacted (the feedback answer says so, the uplift report warns).
REACHED_EVENT_TYPES: tuple[str, ...] = (*CONTACT_EVENT_TYPES, "opened", "clicked", "attended")
# Of those, what only a contact can bring. One naming its item (recommendation_id and
# action_id; the action is filled in from a recommendation that served one item) counts
# as the item's contact, at its time, where no report of the item came before it
# (:func:`_counted_contact`): the caps hold for a platform that forwards opens and
# clicks but no deliveries. One naming no item counts nowhere: it could belong to any
# send, whose own report counts it.
PROOF_OF_CONTACT_TYPES: tuple[str, ...] = ("opened", "clicked", "attended")
# Events that make a logged decision count as engaged (``engaged = 1``) for retraining.
ENGAGEMENT_EVENT_TYPES: tuple[str, ...] = ("opened", "clicked", "attended", "accepted", "completed")
# An ``outcome`` event without a recommendation_id (a weekly NRx feed knows HCPs,
# not recommendations) counts for the HCP's latest logged decision at most this
# long before it.
OUTCOME_WINDOW = timedelta(days=7)
# The largest magnitude an event's value may have: the data contract's for a
# history's outcome, the same unit.
MAX_EVENT_VALUE = MAX_OUTCOME
DISMISSAL_EVENT_TYPES: tuple[str, ...] = ("dismissed", "snoozed")
# A rep's decisions on a suggested action: the latest one on an (HCP, action) pair
# counts, so an acceptance after a dismissal or a snooze lifts it.
DECISION_EVENT_TYPES: tuple[str, ...] = (*DISMISSAL_EVENT_TYPES, "accepted")
# An HCP's consent to a channel (``channel`` None: to every channel), withdrawn or
# given again: the latest such event of an HCP and channel decides, with no window,
# until the next model's hcps file says the same.
CONSENT_EVENT_TYPES: tuple[str, ...] = ("opted_out", "opted_in")

LOGGED_DECISION_COLUMNS: tuple[str, ...] = (
    "hcp_id",
    "timestamp",
    "action_id",
    "channel",
    "content_id",
    "engaged",
    "outcome",
    "propensity",
    "holdout",
    "recommendation_id",
    "model_version",
)
# What ``logged_decisions(details=True)`` adds: how each answer was served, which
# off-policy evaluation needs to recover the probability of a no-touch answer.
LOGGED_DECISION_DETAIL_COLUMNS: tuple[str, ...] = (
    "contacted",
    "requester",
    "purpose",
    "channel_filter",
    "n_candidates",
    "epsilon",
    "holdout_rate",
    "decided_for",
    "p_no_action",
    "outcome_named",
    "policy",
    "split_with",
    "split_share",
)

_REQUIRED_TEXT = frozenset({"event_id", "hcp_id"})

# Core tables: bulk statements on them skip the ORM's per-row bookkeeping.
_RECOMMENDATIONS = cast(sa.Table, Recommendation.__table__)
_ITEMS = cast(sa.Table, RecommendationItem.__table__)
_FEEDBACK = cast(sa.Table, FeedbackEvent.__table__)
_RUNS = cast(sa.Table, MaintenanceRun.__table__)
_RULES = cast(sa.Table, ServingRulesText.__table__)

# Column widths of feedback_events: checked per event, because one over-long value
# would otherwise make PostgreSQL refuse the whole batch.
MAX_LENGTHS: dict[str, int] = {
    name: STORED_LENGTHS[name]
    for name in ("event_id", "hcp_id", "recommendation_id", "action_id", "channel", "reason")
}
# PostgreSQL cannot store a NUL in text (SQLite can): refused in every text field of
# an event, on every database, for the same reason as an over-long value.
NUL_REFUSED = (
    "{name} contains a NUL character (\\u0000), which the feedback store cannot hold "
    "(PostgreSQL refuses it in text): remove it"
)


@dataclass(frozen=True)
class ServedItem:
    """One ranked item of a served recommendation (``rank`` starts at 1).

    ``propensity`` is the probability the serving policy had of putting this action
    at this rank; off-policy evaluation divides by it.
    """

    rank: int
    action_id: str
    channel: str
    content_id: str
    score: float
    expected_uplift: float
    p_engage: float
    propensity: float
    explored: bool
    # The reasons it was shown with (none for an item logged before they were kept).
    reasons: tuple[str, ...] = ()

    @classmethod
    def of(cls, item: Any) -> ServedItem:
        """Copy the fields of any object that has them (a served action, a table row:
        its ``reasons`` a JSON list, or NULL)."""
        fields: dict[str, Any] = {
            name: getattr(item, name, None) for name in cls.__dataclass_fields__
        }
        reasons = fields.pop("reasons")
        if isinstance(reasons, str):
            reasons = json.loads(reasons)
        return cls(**fields, reasons=tuple(reasons or ()))


@dataclass(frozen=True)
class RecommendationRecord:
    """One served answer with everything off-policy evaluation needs later.

    ``requester`` is the API key's name, never the key. A holdout answer has no items.
    """

    recommendation_id: str
    created_at: datetime
    hcp_id: str
    requester: str
    purpose: str
    channel_filter: str | None
    model_version: str
    holdout: bool
    policy: str
    epsilon: float
    holdout_rate: float
    n_candidates: int
    items: tuple[ServedItem, ...] = ()
    # The decision time the answer was made for (a request's date); None: served for
    # the time it was made.
    decided_for: datetime | None = None
    # The probability the serving policy had of answering with no action, holdout
    # included (``Served.p_nothing``); None: not known (answers logged before
    # migration 0004).
    p_no_action: float | None = None
    # The rep a call plan's answer was made for; None: not a plan's (or logged before
    # migration 0005).
    rep_id: str | None = None
    # The fingerprint of the serving rules the answer was made under
    # (``ServingRules.fingerprint``); None: not known (logged before migration 0006).
    rules_fingerprint: str | None = None
    # The request's k and the softmax temperature of the draw (None: epsilon-greedy,
    # or logged before migration 0010).
    k_requested: int | None = None
    temperature: float | None = None
    # The random split that chose model_version to answer (with a challenger answering
    # a share): the version it could have chosen instead and the probability it had of
    # choosing model_version; None where no draw chose (or logged before migration 0014).
    split_with: str | None = None
    split_share: float | None = None

    def __post_init__(self) -> None:
        if self.purpose not in PURPOSES:
            raise ValueError(
                f"recommendation {self.recommendation_id!r}: purpose must be one of "
                f"{PURPOSES}, got {self.purpose!r}"
            )


@dataclass(frozen=True)
class FeedbackRecord:
    """One feedback event as received; validated by ``record_feedback``, not here.

    ``value`` is the business value of an ``outcome`` event (required there);
    ``reason`` explains a dismissal or snooze. Naive ``occurred_at`` is taken as UTC.
    ``unread``: what of the event as sent was not read, and how it was read instead
    (an opt-out's whose time could not be read has its arrival as ``occurred_at``;
    ``service.events`` reads an opt-out so): it is kept so and it is said back, any
    other event refused with it.
    """

    event_id: str
    event_type: str
    occurred_at: datetime
    hcp_id: str
    recommendation_id: str | None = None
    action_id: str | None = None
    channel: str | None = None
    reason: str | None = None
    value: float | None = None
    unread: str | None = None


@dataclass(frozen=True)
class FeedbackResult:
    """What happened to each event of a batch; every input index lands in one list.

    ``accepted``: ids stored by this call. ``duplicates``: ids already stored (a
    retry), including repeats of an id within the batch. ``rejected``: (index in the
    batch, event_id, message) of invalid events, and of events reusing a stored id
    for a different event, none of which were stored; in batch order.
    ``uncounted``: (index, event_id, message) of accepted contacts that count in
    the all-channel budget only (no channel named, none to fill in); a subset of
    ``accepted``, in batch order. ``forbidden``: the indices of ``rejected`` events
    refused because they are about a channel the requester does not speak for (a
    channel-bound API key's; the HTTP layer answers 403 for them).
    """

    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    rejected: list[tuple[int, str, str]] = field(default_factory=list)
    uncounted: list[tuple[int, str, str]] = field(default_factory=list)
    forbidden: list[int] = field(default_factory=list)


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _in_chunk_size(db: Session | Connection) -> int:
    """How many values one ``IN (...)`` may bind on this backend."""
    dialect = db.dialect if isinstance(db, Connection) else db.get_bind().dialect
    if dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 32):
        return 900  # SQLITE_MAX_VARIABLE_NUMBER was 999 before SQLite 3.32
    return 10_000  # far below both SQLite's 32,766 and PostgreSQL's 65,535


def _chunks(values: Sequence[str], size: int) -> Iterator[list[str]]:
    unique = list(dict.fromkeys(values))
    for start in range(0, len(unique), size):
        yield unique[start : start + size]


def log_recommendations(
    db: Session | Connection, *, records: Sequence[RecommendationRecord]
) -> None:
    """Insert served recommendations and their items, one statement per table, on a
    session or a plain connection (the recommendation log's writer).

    The caller commits (so the log can share a transaction with other writes).
    """
    if not records:
        return
    _bulk_insert(
        db,
        _RECOMMENDATIONS,
        [
            {
                "recommendation_id": record.recommendation_id,
                "created_at": _as_utc(record.created_at),
                "hcp_id": record.hcp_id,
                "requester": record.requester,
                "purpose": record.purpose,
                "channel_filter": record.channel_filter,
                "model_version": record.model_version,
                "holdout": record.holdout,
                "policy": record.policy,
                "epsilon": record.epsilon,
                "holdout_rate": record.holdout_rate,
                "n_candidates": record.n_candidates,
                "decided_for": None if record.decided_for is None else _as_utc(record.decided_for),
                "p_no_action": record.p_no_action,
                "rep_id": record.rep_id,
                "rules_fingerprint": record.rules_fingerprint,
                "k_requested": record.k_requested,
                "temperature": record.temperature,
                "split_with": record.split_with,
                "split_share": record.split_share,
            }
            for record in records
        ],
    )
    items = [
        {
            "recommendation_id": record.recommendation_id,
            "rank": item.rank,
            "action_id": item.action_id,
            "channel": item.channel,
            "content_id": item.content_id,
            "score": item.score,
            "expected_uplift": item.expected_uplift,
            "p_engage": item.p_engage,
            "propensity": item.propensity,
            "explored": item.explored,
            "reasons": json.dumps(list(item.reasons), ensure_ascii=False),
        }
        for record in records
        for item in record.items
    ]
    if items:
        _bulk_insert(db, _ITEMS, items)


def get_recommendation(session: Session, *, recommendation_id: str) -> RecommendationRecord | None:
    """The logged recommendation with its items in rank order, or None if unknown."""
    row = session.execute(
        sa.select(Recommendation).where(Recommendation.recommendation_id == recommendation_id)
    ).scalar_one_or_none()
    if row is None:
        return None
    items = session.execute(
        sa.select(RecommendationItem)
        .where(RecommendationItem.recommendation_id == recommendation_id)
        .order_by(RecommendationItem.rank)
    ).scalars()
    return RecommendationRecord(
        recommendation_id=row.recommendation_id,
        created_at=row.created_at,
        hcp_id=row.hcp_id,
        requester=row.requester,
        purpose=row.purpose,
        channel_filter=row.channel_filter,
        model_version=row.model_version,
        holdout=row.holdout,
        policy=row.policy,
        epsilon=row.epsilon,
        holdout_rate=row.holdout_rate,
        n_candidates=row.n_candidates,
        items=tuple(ServedItem.of(item) for item in items),
        decided_for=row.decided_for,
        p_no_action=row.p_no_action,
        rep_id=row.rep_id,
        rules_fingerprint=row.rules_fingerprint,
        k_requested=row.k_requested,
        temperature=row.temperature,
        split_with=row.split_with,
        split_share=row.split_share,
    )


def recommendations_of_hcp(
    session: Session, *, hcp_id: str, limit: int
) -> list[RecommendationRecord]:
    """The newest ``limit`` logged answers to ``hcp_id``, newest first (through the
    index on ``hcp_id``; one query per answer for its items)."""
    ids = session.scalars(
        sa.select(Recommendation.recommendation_id)
        .where(Recommendation.hcp_id == hcp_id)
        .order_by(Recommendation.created_at.desc(), Recommendation.recommendation_id)
        .limit(limit)
    ).all()
    found = (get_recommendation(session, recommendation_id=i) for i in ids)
    return [record for record in found if record is not None]


def hcp_of_event(session: Session, *, event_id: str) -> str | None:
    """The HCP of the feedback event stored under ``event_id``; None: none is."""
    return session.scalar(sa.select(FeedbackEvent.hcp_id).where(FeedbackEvent.event_id == event_id))


def rows_derived_from(session: Session, *, event_id: str, hcp_id: str) -> list[str]:
    """The ids of the rows an opt-out of several channels, the event ``event_id``
    about ``hcp_id``, was kept in besides its own (:func:`_derived_from`), sorted;
    empty for any other event."""
    candidates = session.execute(
        sa.select(FeedbackEvent).where(
            FeedbackEvent.hcp_id == hcp_id,
            FeedbackEvent.event_type == "opted_out",
            FeedbackEvent.event_id.startswith(_DERIVED_PREFIX, autoescape=True),
        )
    ).scalars()
    return sorted(d for d, of in _derived_from(session, list(candidates)).items() if of == event_id)


def hcp_row_counts(session: Session, *, hcp_id: str) -> tuple[int, int]:
    """How many logged answers and feedback events name ``hcp_id`` (each through its
    index on ``hcp_id``)."""
    answers = session.scalar(
        sa.select(sa.func.count())
        .select_from(_RECOMMENDATIONS)
        .where(_RECOMMENDATIONS.c.hcp_id == hcp_id)
    )
    events = session.scalar(
        sa.select(sa.func.count()).select_from(_FEEDBACK).where(_FEEDBACK.c.hcp_id == hcp_id)
    )
    return int(answers or 0), int(events or 0)


def feedback_for(
    session: Session,
    *,
    recommendation_id: str | None = None,
    hcp_id: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The feedback events that name a logged recommendation (oldest first), or those
    about an HCP (newest first, at most ``limit``), as stored; ``channel_read_as`` of
    a consent event marked ``channel_unmatched`` (stored while no model was served)
    is :data:`NOT_YET_READ` until :func:`read_against_catalog` reads it, None for
    others (read as stored); ``derived_from``: the event id its sender gave an
    opt-out kept under an id derived from it (:func:`_derived_from`), else None."""
    if hcp_id is not None:
        query = (
            sa.select(FeedbackEvent)
            .where(FeedbackEvent.hcp_id == hcp_id)
            .order_by(FeedbackEvent.occurred_at.desc(), FeedbackEvent.event_id)
            .limit(limit)
        )
    else:
        query = (
            sa.select(FeedbackEvent)
            .where(FeedbackEvent.recommendation_id == recommendation_id)
            .order_by(FeedbackEvent.occurred_at, FeedbackEvent.event_id)
        )
    rows = list(session.execute(query).scalars())
    derived_from = _derived_from(session, rows)
    return [
        {
            "event_id": row.event_id,
            "event_type": row.event_type,
            "occurred_at": row.occurred_at,
            "received_at": row.received_at,
            "action_id": row.action_id,
            "channel": row.channel,
            "reason": row.reason,
            "value": row.value,
            "requester": row.requester,
            "recommendation_id": row.recommendation_id,
            "hcp_id": row.hcp_id,
            "channel_unmatched": row.channel_unmatched,
            "channel_read_as": (
                NOT_YET_READ if row.channel_unmatched and row.channel is not None else None
            ),
            "derived_from": derived_from.get(row.event_id),
        }
        for row in rows
    ]


def _derived_from(session: Session, rows: Sequence[FeedbackEvent]) -> dict[str, str]:
    """Derived id -> the event id it was derived from, for each of ``rows`` stored
    under an id :func:`_opt_out_id` derived from an opt-out of the same HCP that
    is stored under its own id: the rows of a key of several channels
    (:func:`_bound_opt_out_rows`), each but the first; one query for their HCPs.

    Found by deriving the id again from each such opt-out, so an id a sender chose in
    that form is linked to nothing. Not found: a row kept under a derived id because
    its own was another event's (that event is not this one), or too long to store,
    and one derived with a random salt (its id was taken)."""
    derived = [
        row
        for row in rows
        if row.event_type == "opted_out" and row.event_id.startswith(_DERIVED_PREFIX)
    ]
    if not derived:
        return {}
    sent = session.execute(
        sa.select(FeedbackEvent.hcp_id, FeedbackEvent.event_id).where(
            FeedbackEvent.hcp_id.in_({row.hcp_id for row in derived}),
            FeedbackEvent.event_type == "opted_out",
        )
    ).all()
    found: dict[str, str] = {}
    for row in derived:
        identity = _identity({name: getattr(row, name) for name in _IDENTITY_FIELDS})
        for hcp_id, event_id in sent:
            if hcp_id == row.hcp_id and _opt_out_id(event_id, identity) == row.event_id:
                found[row.event_id] = event_id
                break
    return found


# What a look-up says of a consent event stored while no model was served when no
# catalog is there to read its channel against, of an opt-out read as withdrawing
# every channel, and of an opt-in read as granting none.
NOT_YET_READ: Final = "not yet read against a catalog"
EVERY_CHANNEL_READ: Final = "every channel"
NO_CHANNEL_READ: Final = "no channel of the catalog: grants nothing"


def consent_channel_read(
    event_type: str, name: str, catalog_channels: Collection[str]
) -> str | None:
    """The channel of ``catalog_channels`` (the served catalog's) a consent event
    stored naming ``name`` while no model was served (marked ``channel_unmatched``)
    is about, read as serving reads it (:func:`~nextbest.contract.schema.withdrawn_channel`):
    'e_mail' is email for an opt-out and an opt-in alike; a channel nextbest cannot
    tell ('fax') is every channel (None) for an opt-out, and ``name`` as stored for an
    opt-in, which grants nothing so (with a model served it would have been refused)."""
    read = withdrawn_channel(name, catalog_channels)
    return name if read is None and event_type == "opted_in" else read


def read_against_catalog(
    events: Sequence[dict[str, Any]], catalog_channels: Collection[str]
) -> list[dict[str, Any]]:
    """``events`` (:func:`feedback_for`'s) with the channel of each consent event
    stored while no model was served read against ``catalog_channels`` (the served
    catalog's) as serving reads it (:func:`consent_channel_read`), in
    ``channel_read_as``: the channel it withdraws or grants ('e_mail' as 'email'),
    :data:`EVERY_CHANNEL_READ` for an opt-out of one nextbest cannot tell ('fax'), or
    :data:`NO_CHANNEL_READ` for an opt-in of one. What is stored is not changed."""
    out = []
    for event in events:
        if event["channel_read_as"] is not None and catalog_channels:
            read = withdrawn_channel(event["channel"], catalog_channels)
            said = read or (
                NO_CHANNEL_READ if event["event_type"] == "opted_in" else EVERY_CHANNEL_READ
            )
            event = {**event, "channel_read_as": said}
        out.append(event)
    return out


@dataclass
class _ServedRecommendation:
    hcp_id: str
    created_at: datetime  # UTC, when it was served
    channel_by_action: dict[str, str] = field(default_factory=dict)
    decided_for: datetime | None = None  # UTC, a decision dated before it was served
    holdout: bool = False  # the HCP held out: nothing was to be done

    @property
    def since(self) -> datetime:
        """From when events about it can have happened: when it was served, or the
        earlier moment it was decided for (a send planned for yesterday, a replay)."""
        return min(self.created_at, self.decided_for or self.created_at)


# A rep's decision on a served item: it must name one of the items. Other events
# may name what was actually done, served or not (a visit instead of the e-mail).
_DECISIONS_ON_ITEMS = frozenset({"accepted", "dismissed", "snoozed"})
# Events about one item of their answer: naming no action, they are about the item of
# a recommendation that served one (:func:`_served_item`).
_ABOUT_AN_ITEM = _DECISIONS_ON_ITEMS | frozenset(PROOF_OF_CONTACT_TYPES)
# Events that cannot have happened before the answer they name was served: a rep's
# decision on it, its delivery and the engagement with it. Not outcomes (a weekly
# or monthly feed dates them by its period, which may start before the send) nor
# opt-outs (kept whatever their time: they fail safe).
_EFFECTS_OF_AN_ANSWER = _DECISIONS_ON_ITEMS | {
    "delivered",
    "opened",
    "clicked",
    "attended",
    "completed",
}


def _served_recommendations(
    session: Session, recommendation_ids: Sequence[str]
) -> dict[str, _ServedRecommendation]:
    """hcp, time served and served channels of each known recommendation (one query
    per chunk)."""
    found: dict[str, _ServedRecommendation] = {}
    for chunk in _chunks(recommendation_ids, _in_chunk_size(session)):
        rows = session.execute(
            sa.select(
                Recommendation.recommendation_id,
                Recommendation.hcp_id,
                Recommendation.created_at,
                Recommendation.decided_for,
                Recommendation.holdout,
                RecommendationItem.action_id,
                RecommendationItem.channel,
            )
            .outerjoin(
                RecommendationItem,
                RecommendationItem.recommendation_id == Recommendation.recommendation_id,
            )
            .where(Recommendation.recommendation_id.in_(chunk))
        )
        for recommendation_id, hcp_id, created_at, decided_for, holdout, action_id, channel in rows:
            served = found.setdefault(
                recommendation_id,
                _ServedRecommendation(
                    hcp_id,
                    _as_utc(created_at),
                    decided_for=None if decided_for is None else _as_utc(decided_for),
                    holdout=bool(holdout),
                ),
            )
            if action_id is not None:
                served.channel_by_action.setdefault(action_id, channel)
    return found


# How far ahead of the receiving server's clock an event's ``occurred_at`` may be:
# the clock skew between systems. An event hours ahead is a time zone mistake (a
# local time sent without its UTC offset is read as UTC) and, stored, would count
# against the HCP's caps and cool-downs until that time. The same skew is allowed
# between a decision's ``occurred_at`` and when its recommendation was served.
FUTURE_TOLERANCE = timedelta(minutes=15)
# No engagement this service stores happened before this (0001-01-01 is a typo).
EARLIEST_EVENT = datetime(2000, 1, 1, tzinfo=UTC)


def _impossible_time(event: FeedbackRecord, received_at: datetime) -> str | None:
    """Why the event's ``occurred_at`` cannot be when it happened (before 2000, or
    ahead of its arrival beyond the clock skew allowed); None when it can. Such an
    event is refused, but an opt-out, which fails safe, counts from its arrival."""
    occurred_at = _as_utc(event.occurred_at)
    if occurred_at < EARLIEST_EVENT:
        return (
            f"occurred_at {occurred_at.isoformat()} is before {EARLIEST_EVENT:%Y-%m-%d}: "
            "not a date an engagement happened on (a typo, or seconds since 1970?)"
        )
    if occurred_at > received_at + FUTURE_TOLERANCE:
        return (
            f"occurred_at {occurred_at.isoformat()} is in the future (received at "
            f"{received_at.isoformat(timespec='seconds')}){_naive_hint(event)}"
        )
    return None


def _check_event(event: FeedbackRecord, received_at: datetime) -> str | None:
    """Message for an invalid event on its own fields, None if they are fine."""
    if event.event_type not in FEEDBACK_EVENT_TYPES:
        return (
            f"unknown event_type {event.event_type!r} "
            f"(expected one of: {', '.join(FEEDBACK_EVENT_TYPES)})"
        )
    for name, limit in MAX_LENGTHS.items():
        text = getattr(event, name)
        if text is None and name not in _REQUIRED_TEXT:
            continue
        if not isinstance(text, str) or not text or len(text) > limit:
            return f"{name} must be a non-empty string of at most {limit} characters"
        if "\x00" in text:
            return NUL_REFUSED.format(name=name)
    if not isinstance(event.occurred_at, datetime):
        return f"occurred_at must be a datetime, got {type(event.occurred_at).__name__}"
    if event.unread is not None and event.event_type != "opted_out":
        return f"only an opt-out is read otherwise than sent: {event.unread}"
    impossible = _impossible_time(event, received_at)
    if impossible is not None:
        return impossible
    if event.event_type == "outcome" and event.value is None:
        return "value is required for event_type 'outcome'"
    # An opt-out fails safe: one sent from a send's unsubscribe link may name the
    # send (its action: its channel is the one withdrawn) and say why. Consent given
    # again must say plainly whom and what it is about.
    about_an_item = (event.action_id, event.recommendation_id, event.reason)
    if event.event_type == "opted_in" and any(v is not None for v in about_an_item):
        return (
            "an opted_in event is about an HCP and a channel (none: every channel); it "
            "takes no action_id, recommendation_id, value or reason"
        )
    if (
        event.event_type == "opted_in"
        and isinstance(event.channel, str)
        and channel_spelling(event.channel) in EVERY_CHANNEL_NAMES
    ):
        # Refused with or without a model served: a word is not read as consent to
        # every channel (an export's wildcard, a placeholder), where an opt-out's is
        # read as withdrawing every channel, to be safe.
        return (
            f"channel '{event.channel}' names no channel: consent is given again channel "
            "by channel; name the channel (or leave it out to give consent for every channel)"
        )
    if event.event_type in CONSENT_EVENT_TYPES and event.value is not None:
        return f"an {event.event_type} event takes no value"
    if event.value is not None and not (
        isinstance(event.value, int | float) and math.isfinite(event.value)
    ):
        return f"value must be a finite number, got {event.value!r}"
    if event.value is not None and abs(event.value) > MAX_EVENT_VALUE:
        return (
            f"value {event.value:,.15g} is beyond the limit of {MAX_EVENT_VALUE:,.0f} either "
            "way: no outcome of one "
            "decision is that large in any business unit (a wrong unit, or a placeholder?), "
            "and summed with others it would swamp every mean"
        )
    return None


def _naive_hint(event: FeedbackRecord) -> str:
    """What to say about an ``occurred_at`` that may be a local time read as UTC."""
    return (
        "; a time without a UTC offset is read as UTC" if event.occurred_at.tzinfo is None else ""
    )


def _check_event_time(event: FeedbackRecord, served: _ServedRecommendation) -> str | None:
    """Message for an event dated before the recommendation it names was served (or
    decided for), beyond the clock skew allowed; None otherwise. A decision's
    suppression window would count from a time when there was nothing to decide on;
    an open, click or outcome would count as the answer's effect although it came
    first (an event id or a recommendation id sent with the wrong row)."""
    occurred_at = _as_utc(event.occurred_at)
    if occurred_at >= served.since - FUTURE_TOLERANCE:
        return None
    # A plan decided for today's start, served seconds later, was served then.
    planned = served.created_at - served.since > FUTURE_TOLERANCE
    when = (
        f"decided for {served.since.isoformat(timespec='seconds')}"
        if planned
        else f"served at {served.created_at.isoformat(timespec='seconds')}"
    )
    return (
        f"occurred_at {occurred_at.isoformat()} predates the recommendation it names: "
        f"'{event.recommendation_id}' was {when}{_naive_hint(event)}"
    )


def _a_day_alone_from_its_send(
    event: FeedbackRecord, served: _ServedRecommendation
) -> FeedbackRecord:
    """The event dated from when its answer was served, when its ``occurred_at`` is a
    date alone (midnight UTC: a daily export's "2026-12-03") of the day it was served
    and so reads as before it: it happened that day, after the send. Any other time
    is kept, and :func:`_check_event_time` judges it."""
    occurred_at = _as_utc(event.occurred_at)
    since = served.since
    if (
        occurred_at.time() == time(0)
        and occurred_at.date() == since.date()
        and occurred_at < since - FUTURE_TOLERANCE
    ):
        return dataclasses.replace(event, occurred_at=since)
    return event


def _postgres_unnest_statement(table: sa.Table) -> postgresql.Insert:
    """``INSERT INTO table SELECT * FROM unnest(<one array per column>)``.

    A single short statement with one parameter per column, ``<column>_values``
    (see :func:`_unnest_values`). The multi-row VALUES form binds one parameter
    per column *per row*, and psycopg spends most of a large batch's time parsing
    that query text (about 3x slower at 5,000 rows).

    A text column's array is cast to ``text[]``, not to its own ``varchar(n)[]``:
    PostgreSQL cuts a string to n characters on an explicit cast to varchar(n),
    silently, where storing it in the column (an assignment) refuses it as too long,
    as a plain INSERT does. Cut short, an id no longer joins back to what it named.
    """
    names = [column.name for column in table.columns]
    arrays = [
        sa.cast(
            sa.bindparam(f"{column.name}_values", type_=postgresql.ARRAY(_array_type(column))),
            postgresql.ARRAY(_array_type(column)),
        )
        for column in table.columns
    ]
    incoming = sa.func.unnest(*arrays).table_valued(*names).render_derived(name="incoming")
    return postgresql.insert(table).from_select(
        names, sa.select(*(incoming.c[name] for name in names))
    )


def _array_type(column: sa.Column[Any]) -> sa.types.TypeEngine[Any]:
    """The element type of ``column``'s array in :func:`_postgres_unnest_statement`:
    unbounded text for a text column (see there), the column's own type otherwise."""
    return sa.Text() if isinstance(column.type, sa.String) else column.type


def _unnest_values(table: sa.Table, rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The parameters of :func:`_postgres_unnest_statement` for ``rows``."""
    return {f"{c.name}_values": [row[c.name] for row in rows] for c in table.columns}


def _bulk_insert(db: Session | Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts holding every column) in one round-trip.

    The statement is compiled once per table and columns and run on the driver's
    cursor (see :class:`_DriverQuery`): the recommendation log writes every answer,
    and SQLAlchemy's per-call execution and parameter handling cost more than the
    insert itself. SQLite runs the row insert with ``executemany``; PostgreSQL the
    one ``unnest`` statement of :func:`_postgres_unnest_statement`.
    """
    if not rows:
        return
    if isinstance(db, Connection):
        connection = db
        # The driver's cursor bypasses the connection's own begin: without one, the
        # rows would be rolled back when it returns to the pool, whatever the commit.
        if not connection.in_transaction():
            connection.begin()
    else:
        connection = db.connection()
    dialect = connection.dialect
    columns = tuple(rows[0])
    key = (dialect.name, table.name, columns)
    query = _DRIVER_INSERTS.get(key)
    if dialect.name == "postgresql":
        if query is None:
            statement = _postgres_unnest_statement(table)
            names = [f"{c.name}_values" for c in table.columns]
            query = _DRIVER_INSERTS[key] = _DriverQuery.compile(statement, dialect, names)
        query.execute(connection, _unnest_values(table, rows))
    elif dialect.name == "sqlite":
        if query is None:
            query = _DriverQuery.compile(sa.insert(table), dialect, columns, column_keys=columns)
            _DRIVER_INSERTS[key] = query
        query.execute_many(connection, rows)
    else:
        connection.execute(sa.insert(table), rows)


def _insert_ignoring_duplicates(session: Session, rows: list[dict[str, Any]]) -> set[str]:
    """INSERT ... ON CONFLICT (event_id) DO NOTHING; the ids actually inserted.

    RETURNING reports exactly the rows this statement stored, so a row a concurrent
    writer stored first is a duplicate here, never an error and never counted twice.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        pg_statement = (
            _postgres_unnest_statement(_FEEDBACK)
            .on_conflict_do_nothing(index_elements=[_FEEDBACK.c.event_id])
            .returning(_FEEDBACK.c.event_id)
        )
        return set(session.execute(pg_statement, _unnest_values(_FEEDBACK, rows)).scalars())
    if dialect == "sqlite":
        sqlite_statement = (
            sqlite.insert(_FEEDBACK)
            .on_conflict_do_nothing(index_elements=[_FEEDBACK.c.event_id])
            .returning(_FEEDBACK.c.event_id)
        )
        return set(session.execute(sqlite_statement, rows).scalars())
    # make_engine refuses other backends; this guards hand-made engines.
    raise NotImplementedError(f"feedback store not supported on {dialect!r}")


def _consent_channel(event_type: str, channel: str | None) -> str | None:
    """A stored consent event's channel as it is stored now: as catalogs spell it, and
    an opt-out's of "all" (:data:`EVERY_CHANNEL_NAMES`) None, every channel.

    An earlier nextbest with no model served stored both as sent ('Email', 'All'):
    read so, they withdrew nothing, and their resend looked like another event. An
    ``opted_in`` of 'all' is no channel to grant (refused now, with or without a
    catalog) and stays as stored, granting nothing."""
    if channel is None:
        return None
    spelled = channel_spelling(channel)
    return None if event_type == "opted_out" and spelled in EVERY_CHANNEL_NAMES else spelled


def _opt_out_as_kept(
    event: FeedbackRecord,
    served: Mapping[str, _ServedRecommendation],
    action_channels: Mapping[str, str] | None,
    catalog_channels: frozenset[str],
    received_at: datetime,
    own: Collection[str] = (),
    *,
    ahead_of: datetime | None = None,
) -> tuple[FeedbackRecord, str | None]:
    """An opt-out as it can be kept, and what was changed to keep it (None: nothing).

    A withdrawal is never lost over its form: a channel spelled otherwise is read as
    the catalog channel it most likely means ("e-mail"), one for "all" or none at all
    (empty) as every channel, with or without a catalog, and one nextbest cannot tell
    as every channel, to be safe, unless it is one of ``own``, the channels its
    requester speaks for (an SMS gateway's sms, before the catalog has SMS): kept as
    named, the store says it withdraws nothing served today; one
    naming only its send (a ``recommendation_id``) as the channel the send served,
    or every channel when it served none or several; a
    recommendation or action the service does not know (a retired content's
    unsubscribe link, a forwarded mail) is left out, and the channel is the action's
    when it is known, else every channel. A time it cannot have happened at (ahead
    of its arrival: a local time sent without its offset; before 2000) counts from
    its arrival. A value is left out (an opt-out's counts nowhere; said unless 0, an
    export's filler), an empty reason read as none, and a reason's NUL characters
    left out. An ``event_id`` longer than the store keeps (a consent system's token)
    is replaced by one derived from it (:func:`_opt_out_id`), the same for every
    resend, so that a resend is still a duplicate; said first. What
    ``service.events`` could not read is said next (``unread``). ``ahead_of``: the
    reading a time is judged ahead by (None: ``received_at``).
    """
    said: list[str] = []
    changes: dict[str, Any] = {}
    limit = MAX_LENGTHS["event_id"]
    if isinstance(event.event_id, str) and len(event.event_id) > limit:
        changes["event_id"] = derived = _opt_out_id(event.event_id, ())
        said.append(
            f"event_id {quoted(event.event_id, at_most=QUOTED_AT_MOST)} is longer than the "
            f"{limit} characters stored: stored under event_id '{derived}', derived from it "
            "(the same for every resend)"
        )
    if event.unread is not None:
        said.append(event.unread)
    impossible = (
        _impossible_time(event, ahead_of or received_at)
        if isinstance(event.occurred_at, datetime)
        else None
    )
    if impossible is not None:
        changes["occurred_at"] = received_at
        said.append(f"{impossible}; counted from its arrival")
    if event.value is not None:
        changes["value"] = None
        if event.value != 0:
            said.append(f"value {event.value:g} left out: an opt-out takes none")
    if isinstance(event.reason, str) and not event.reason.replace("\x00", "").strip():
        changes["reason"] = None
    elif isinstance(event.reason, str) and "\x00" in event.reason:
        changes["reason"] = event.reason.replace("\x00", "")
        said.append("reason's NUL characters (\\u0000) left out: the store cannot hold them")
    recommendation = served.get(event.recommendation_id) if event.recommendation_id else None
    if event.recommendation_id is not None and (
        recommendation is None or recommendation.hcp_id != event.hcp_id
    ):
        changes["recommendation_id"] = None
        said.append(f"recommendation '{event.recommendation_id}' left out (not this HCP's)")
    known_action = event.action_id is None or (
        (action_channels is not None and event.action_id in action_channels)
        or (recommendation is not None and event.action_id in recommendation.channel_by_action)
    )
    if not known_action:
        changes["action_id"] = None
        said.append(f"action '{event.action_id}' left out (not in the served catalog)")
    if (
        event.channel is None
        and event.action_id is None
        and recommendation is not None
        and "recommendation_id" not in changes
    ):
        # An unsubscribe link that names only its send: the send's channel, when it
        # served one (an e-mail's link withdraws e-mail, not the rep's visits).
        sent = set(recommendation.channel_by_action.values())
        if len(sent) == 1:
            changes["channel"] = sent.pop()
            said.append(f"channel read as '{changes['channel']}', the one its send served")
        else:
            said.append(
                "no channel or action named, and its send served "
                + ("none" if not sent else "several channels")
                + ": every channel withdrawn"
            )
    if event.channel is not None:
        spelled = channel_spelling(event.channel)
        read = withdrawn_channel(event.channel, catalog_channels, own)
        if read != spelled:
            changes["channel"] = read
            if spelled not in EVERY_CHANNEL_NAMES:
                said.append(
                    f"channel '{event.channel}' read as '{read}'"
                    if read is not None
                    else f"channel '{event.channel}' is no catalog channel"
                    + ("" if own else ": every channel withdrawn")
                )
        elif spelled in own:
            changes["channel"] = spelled
    if not said and not changes:
        return event, None
    kept = dataclasses.replace(event, **changes)
    return kept, ("opt-out stored: " + "; ".join(said)) if said else None


def _bound_opt_out_note(channels: Sequence[str], requester: str | None, unknown: str) -> str:
    """What an opt-out read as withdrawing every channel its bound requester speaks
    for (``channels``) is said to be stored as; ``unknown``: why, when it named one."""
    who = f"API key '{requester}'" if requester else "its sender"
    if len(channels) == 1:
        return f"opt-out stored for channel '{channels[0]}', the one {who} speaks for{unknown}"
    return (
        f"opt-out stored for channels {', '.join(channels)}, every channel {who} speaks "
        f"for{unknown}"
    )


def _no_catalog_channel(channel: str, catalog_channels: frozenset[str]) -> bool:
    """Whether an opt-out's ``channel`` is one nextbest cannot tell (``fax``): neither a
    catalog channel, however spelled, nor a near miss of one. False without a catalog."""
    if not catalog_channels or channel_spelling(channel) in catalog_channels:
        return False
    return near_channel(channel, catalog_channels) is None


def _channel_of(
    event: FeedbackRecord,
    served_channel: str | None,
    action_channels: Mapping[str, str] | None,
    catalog_channels: frozenset[str],
) -> tuple[str | None, str | None]:
    """(message, channel to store): the event's channel, else its action's; or why not.

    A stated channel that is a near miss of a catalog channel ("Email", "emial") is
    refused: stored, no cap would ever count it. One far from every catalog channel
    ("fax") is a channel nextbest does not serve: kept, it counts in the
    all-channel budget. A stated channel is kept even where its action is on
    another one (a rep who phoned about the content of a suggested visit): caps
    count the contact that happened. ``catalog_channels`` is the set of
    ``action_channels``' values, computed once per batch by the caller.
    """
    known = served_channel
    if known is None and event.action_id is not None and action_channels is not None:
        known = action_channels.get(event.action_id)
        if known is None:
            where = (
                f" nor in recommendation '{event.recommendation_id}'"
                if event.recommendation_id is not None
                else ""
            )
            return (
                f"unknown action_id '{event.action_id}': not in the served model's catalog{where}",
                None,
            )
    if event.channel is None:
        return None, known
    if event.channel not in catalog_channels and catalog_channels:
        near = near_channel(event.channel, catalog_channels)
        if near is not None:
            return (
                f"channel '{event.channel}' is not a channel of the served catalog; "
                f"did you mean '{near}'? (known: {', '.join(sorted(catalog_channels))})",
                None,
            )
    return None, event.channel


def _outside_channels(
    event: FeedbackRecord,
    channel: str | None,
    recommendation: _ServedRecommendation | None,
    channels: Sequence[str],
    requester: str | None,
) -> str | None:
    """Why ``event`` (about ``channel``, as it is to be stored) is not the requester's
    to send, when it speaks for ``channels`` only; None when it is."""
    who = f"API key '{requester}'" if requester else "this requester"
    bound = ", ".join(channels)
    if recommendation is not None and recommendation.hcp_id == event.hcp_id:
        sent = set(recommendation.channel_by_action.values())
        if sent and not sent & set(channels):
            return (
                f"recommendation '{event.recommendation_id}' served channel(s) "
                f"{', '.join(sorted(sent))}: {who} speaks for {bound} only"
            )
    if channel is None:
        if event.event_type not in CONSENT_EVENT_TYPES:
            return None
        change = "grant" if event.event_type == "opted_in" else "withdraw"
        return (
            f"{event.event_type} without a channel would {change} consent for every channel: "
            f"{who} speaks for {bound} only; name the channel"
        )
    if channel_spelling(channel) not in channels:
        return f"channel '{channel}' is not one {who} speaks for ({bound})"
    return None


def _served_item(
    event: FeedbackRecord, recommendation: _ServedRecommendation | None
) -> tuple[FeedbackRecord, str | None, str | None]:
    """(event, the channel its action was served on, why it suppresses nothing) of an
    event about one item (``_ABOUT_AN_ITEM``: a decision, an open, a click, an
    attendance) that names no action.

    Suppression is kept per HCP and action, so such a dismissal or snooze would be
    stored and the item offered again at once; and an open counts against the caps
    as its item's contact only when it names the item. It is about the item of its
    recommendation when that served exactly one (a rep plan's answer always does, an
    e-mail pick mostly) and ``channel``, if stated, is that item's: the event is
    returned naming it. Otherwise it is returned as sent, and, a dismissal or a
    snooze, with why it suppresses nothing (an acceptance still counts as its
    recommendation's engagement, an open as its engagement though as no contact).
    """
    items = {} if recommendation is None else recommendation.channel_by_action
    if len(items) == 1:
        ((action_id, served_on),) = items.items()
        if event.channel is None or channel_spelling(event.channel) == served_on:
            return dataclasses.replace(event, action_id=action_id), served_on, None
    if event.event_type not in DISMISSAL_EVENT_TYPES:
        return event, None, None
    if recommendation is None:
        why = "it names no action_id, nor a recommendation_id that served one item"
    elif not items:
        why = f"recommendation '{event.recommendation_id}' served nothing"
    elif len(items) == 1:
        why = (
            f"channel '{event.channel}' is not that of the action recommendation "
            f"'{event.recommendation_id}' served ({', '.join(items)})"
        )
    else:
        why = (
            f"recommendation '{event.recommendation_id}' served {len(items)} actions "
            f"({', '.join(sorted(items))}): name the one {event.event_type} in action_id"
        )
    return (
        event,
        None,
        f"stored, but suppresses nothing: a {event.event_type} event holds back the action "
        f"it names, and {why}",
    )


def _contact_item(
    event: FeedbackRecord, recommendation: _ServedRecommendation | None, channel: str | None
) -> tuple[str | None, str | None, str | None]:
    """(action_id, channel, why it counts against no channel's cap) of a contact event that names
    no action: the item of its recommendation when that served exactly one (and
    ``channel``, if stated, is that item's), else the channel its items share; else
    (None, None, why) when no channel is known either."""
    items = {} if recommendation is None else recommendation.channel_by_action
    if len(items) == 1:
        ((action_id, served_on),) = items.items()
        if channel is None or channel == served_on:
            return action_id, served_on, None
    if channel is not None:
        return None, channel, None
    shared = set(items.values())
    if len(shared) == 1:
        return None, shared.pop(), None
    if recommendation is None:
        why = "it names no action_id, channel or recommendation that served one item"
    elif not items:
        why = f"recommendation '{event.recommendation_id}' served nothing"
    else:
        why = (
            f"recommendation '{event.recommendation_id}' served {len(items)} actions on "
            f"several channels ({', '.join(sorted(items))}): name the action_id"
        )
    return None, None, f"stored, but counts in the all-channel budget only: {why}"


def off_rep_channel_problem(event_type: str, channel: str, action_id: str | None) -> str | None:
    """Why a rep may not record a ``event_type`` event about ``channel`` (the event's,
    as stored: stated, or its action's), None when a rep may: the one check of the
    rep route and of a rep key's events on ``POST /v1/feedback``.

    A rep records what happens on rep channels (its visits and calls, its decisions
    on rep suggestions) and an opt-out heard on any channel. Another channel's
    contacts, engagement and decisions are that channel system's to report: a rep's
    ``opened`` of an e-mail would count as the e-mail system's evidence, its
    ``delivered`` in the e-mail fatigue caps, its dismissal would stop the e-mail
    sends to the HCP for every requester.
    """
    if event_type == "opted_out" or is_rep_channel(channel_spelling(channel)):
        return None
    what = f"action '{action_id}' is on channel" if action_id is not None else "channel"
    said = f"{what} '{channel}', not a rep channel ({REP_CHANNEL_PREFIX}...): "
    if event_type in DECISION_EVENT_TYPES and action_id is not None:
        return (
            f"{said}rep decisions (accept, dismiss, snooze) are for suggestions on rep "
            f"channels; feedback on {channel} actions comes from the {channel} system"
        )
    return (
        f"{said}a rep key records {event_type} events of rep channels only (and opt-outs "
        f"of any channel): {event_type} events on {channel} come from the {channel} system"
    )


def _off_rep_channels(
    event: FeedbackRecord,
    channel: str | None,
    action: tuple[str, str] | None,
    recommendation: _ServedRecommendation | None,
) -> str | None:
    """:func:`off_rep_channel_problem` of ``event`` as it is to be stored (``channel``,
    and ``action``: its action and that action's channel, as served or in the
    catalog, so that a rep channel stated beside an e-mail action is no way round),
    and of the recommendation it names when that served other channels only: a rep
    channel stated on an e-mail answer would credit the e-mail decision with it."""
    if action is not None:
        action_id, action_channel = action
        problem = off_rep_channel_problem(event.event_type, action_channel, action_id)
        if problem is not None:
            return problem
    if channel is not None:
        problem = off_rep_channel_problem(event.event_type, channel, None)
        if problem is not None:
            return problem
    sent = set() if recommendation is None else set(recommendation.channel_by_action.values())
    if event.event_type == "opted_out" or not sent or any(map(is_rep_channel, sent)):
        return None
    return (
        f"recommendation '{event.recommendation_id}' served channel(s) "
        f"{', '.join(sorted(sent))}, no rep channel ({REP_CHANNEL_PREFIX}...): a rep key "
        f"records {event.event_type} events of rep channels only (and opt-outs of any "
        "channel); name the rep channel's action_id, or let that channel's system send it"
    )


def reason_code(
    event_type: str, reason: str | None, dismiss_reasons: Collection[str] | None
) -> str | None:
    """A dismissal's or a snooze's ``reason`` as the rules file spells the code it
    names in another case (``Not_Relevant``, from a CRM's picklist, is
    ``not_relevant``); any other reason as sent. Codes are matched in any case only
    where one code alone matches: two codes of the rules file that differ in case
    alone are each read as spelt."""
    if (
        reason is None
        or dismiss_reasons is None
        or event_type not in DISMISSAL_EVENT_TYPES
        or reason in dismiss_reasons
    ):
        return reason
    return code_in_any_case(reason, dismiss_reasons) or reason


def reason_problem(
    event_type: str,
    reason: str | None,
    dismiss_reasons: Collection[str] | None,
    *,
    decision: str | None = None,
) -> str | None:
    """What is wrong with an event's ``reason``, or None: the one check of the rep
    route, ``POST /v1/feedback`` and ``nextbest feedback``. A dismissal must say why,
    in a code of the rules file's ``rep_plan.dismiss_reasons``; a snooze ("not now")
    may, in such a code; an acceptance takes none; other events' reasons (an
    opt-out's unsubscribe link) are stored as sent. A code in another case is read
    first (:func:`reason_code`).

    ``dismiss_reasons``: the rules file's codes; None (no rules at hand) checks that
    a dismissal has a reason and an acceptance none, but not which code it is.
    ``decision``: the rep route's word for the event (``dismiss``), said in its place.
    """
    known = f": {', '.join(dismiss_reasons)}" if dismiss_reasons is not None else ""
    if event_type == "dismissed" and reason is None:
        return f"a dismissal needs a reason code{known}"
    if reason is None:
        return None
    if event_type in DISMISSAL_EVENT_TYPES:
        code = reason_code(event_type, reason, dismiss_reasons)
        if dismiss_reasons is not None and code not in dismiss_reasons:
            what = f"decision '{decision}'" if decision else f"a {event_type} event"
            near = near_hint(reason.strip(), list(dismiss_reasons), any_case=True)
            return f"unknown reason code '{reason}' for {what}{near}; known{known}"
        return None
    if event_type == "accepted":
        return "an acceptance takes no reason code"
    # Other systems' events (an e-mail platform's opt-out or open) may carry one:
    # stored as sent.
    return None


def record_feedback(
    session: Session,
    *,
    events: Sequence[FeedbackRecord],
    hcp_exists: Callable[[str], bool] | None = None,
    action_channels: Mapping[str, str] | None = None,
    dismiss_reasons: Collection[str] | None = None,
    private: bool = False,
    requester: str | None = None,
    commit: bool = True,
    erasure: bool = False,
    channels: Sequence[str] | None = None,
    rep: bool = False,
    received_at: datetime | None = None,
    blind: bool = False,
) -> FeedbackResult:
    """Validate and store a batch of feedback events idempotently, then COMMIT.

    ``received_at`` (timezone-aware) is the clock reading the batch was received at,
    stored with each event: the caller's that dated the events sent without an
    ``occurred_at`` (the served recommender's); None: the machine's, read now. An
    event is in the future when it is ahead of both that reading and the machine's
    clock: one a server dated by its clock set ahead is not refused, nor one a
    sender dated by the real time when the server's clock is set back.

    ``requester`` (the API key's name, or the command storing a file) is stored with
    each event: who sent it. A resend by another requester is still a duplicate.

    ``commit`` False leaves the commit to the caller, whose own writes then share
    the transaction (an erasure stores its suppression with its deletes); on an
    error the session is rolled back all the same.

    An ``event_id`` starting with ``erasure-`` (in any case) is refused unless
    ``erasure`` (:func:`erase_hcps` storing its suppressions): that prefix marks
    erasure records, and an event planted under one would block or fake an erasure.

    ``private`` (a rep's key): messages name nothing the sender did not send (not
    the HCP a recommendation was served to, nor what a stored event with the same
    id says), so that a rep learns nothing about other territories.

    ``blind`` (a rep's key, :mod:`nextbest.service.blinding`): an event naming a
    holdout answer gets the words of one naming an answer that served nothing, so
    that the sender does not learn who is in the randomized control: a decision on
    an item is refused saying nothing was served, a contact is not said to have
    reached a held-out HCP (the uplift report still warns of it).

    ``channels`` (a channel-bound API key's, spelled as catalogs spell them; None:
    every channel): the requester speaks for these channels only. An event about
    another channel (stated, or filled in from its action or recommendation) is
    rejected and listed in ``forbidden``, and so is one naming a recommendation
    that served items on other channels only (the requester did not send it; one
    that served nothing, a holdout's, may be named). A consent event must name a
    channel (an opt-in or opt-out of every channel is refused), except that an
    opt-out naming no channel, "all" or one nextbest cannot tell (``fax``; with no
    model served, any but its own: no catalog tells another) and no action is read
    as withdrawing the requester's channels (said in ``uncounted``): one channel's
    is stored for it; several channels' for the first under the event's id and for
    each other in a row of its own, under an id derived from the event's and what
    the row says, so a resend is a duplicate (:func:`_bound_opt_out_rows`). An
    opt-out naming one of the requester's channels is kept for it even where the
    catalog lacks it (said, as every opt-out of a channel the catalog lacks that it
    names for certain: a send's), and a contact (``delivered``, ``completed``)
    naming none, from a requester of one channel, is that channel's. Other events
    naming no channel, none to fill in, are stored as from any requester.

    ``rep`` (a rep's key, or the rep route): every event but an opt-out must be
    about a rep channel (:func:`off_rep_channel_problem`), its channel as stored
    (stated, or filled in from its action or recommendation) or, naming none, one
    of the channels its recommendation served; others are rejected. An event that
    names no channel and no recommendation that served one is stored.

    An event whose ``reason`` :func:`reason_problem` refuses is rejected, as the rep
    route rejects it: a dismissal without one, an acceptance with one, and, with
    ``dismiss_reasons`` (the rules file's codes), a dismissal or a snooze whose
    ``reason`` is not one of them.

    An event is rejected (and not stored) if its ``event_type`` is unknown, a field is
    empty or too long, an ``outcome`` has no finite ``value``, its ``occurred_at`` is
    more than ``FUTURE_TOLERANCE`` after it was received, its ``recommendation_id`` is
    unknown or was served to another HCP, a decision on an item (accepted, dismissed,
    snoozed) names an action its recommendation did not serve or is dated more than
    ``FUTURE_TOLERANCE`` before that recommendation was served, or ``hcp_exists`` says
    its HCP is unknown. With ``action_channels`` (the served catalog: action id ->
    channel), an ``action_id`` that neither the catalog nor the event's recommendation
    knows is rejected, and so is a ``channel`` that is a near miss of one of the
    catalog's ("Email", "emial"; see :func:`_channel_of`). Valid events are stored with
    ``INSERT ... ON CONFLICT (event_id) DO NOTHING``: a retried batch or a concurrent
    duplicate is reported in ``duplicates``, never raised; an event whose id is stored
    for a different event (another type, HCP, recommendation, action, channel or value,
    or a dismissal's or a snooze's other reason code, compared as the rules file spells
    it: a corrected code is a new decision) is rejected, naming what differs, except
    an opt-out, stored under an id derived from its own and said in ``uncounted``
    (:func:`_keep_opt_outs_under_derived_ids`).
    An event naming an ``action_id`` but no
    ``channel`` gets the channel that action was served on (or, not served, its channel
    in ``action_channels``), so frequency caps count it; a contact (``delivered``,
    ``completed``) naming neither gets the item of its recommendation when that served
    exactly one (or the channel its items share); otherwise it is stored, counts in
    the all-channel budget only, and is listed in ``uncounted``. An event about one
    item (a decision, an open, a click, an attendance) naming no action gets the item
    of its recommendation when that served exactly one and the event's channel, if
    stated, is that item's (:func:`_served_item`): an open so filled in counts as the
    item's contact; a resend of such an event stored as sent (by an earlier nextbest)
    is a duplicate.

    Without ``action_channels`` (no model served), a consent event's channel as its
    sender named it (not one of ``channels``, nor read as those of a bound
    requester) is stored as catalogs spell it and marked
    ``channel_unmatched``: serving reads it against the catalog then served, as
    :func:`~nextbest.contract.schema.withdrawn_channel` reads an opt-out's on arrival
    with one ('e_mail' as email, 'fax' as every channel; an opt-in's 'e_mail' as
    email too, and 'fax' as granting nothing: :func:`consent_channel_read`); its
    resend with a model served is the same event, naming the channel it is read as
    or as sent (an opt-in's near miss, refused in a new event, is not in its resend).

    The session is committed before returning, so a caller that acknowledges the
    batch after this call only acknowledges durably stored events. Cost: one query
    per 10,000 distinct recommendation ids, one (by primary key) per chunk of
    distinct HCP ids for their erasures, and one INSERT for the batch.

    An event about an HCP erased by :func:`erase_hcps` that occurred at or before
    the erasure (a delivery or an open of a send made before it, reported late) is
    rejected: it is what the erasure deleted, and stored it would undo it until the
    next run. What occurred after the erasure (consent given again) is stored.

    A recommendation the batch names may be deleted (``prune``, ``erase``) between
    its lookup and the INSERT, which then fails on the foreign key: the batch is
    rolled back and recorded again once, that recommendation now unknown (an
    opt-out naming it is stored without it, other events are rejected), unless
    ``commit`` is False (the caller's transaction is not the batch's to redo).
    """
    record = functools.partial(
        _record_feedback,
        session,
        events=events,
        hcp_exists=hcp_exists,
        action_channels=action_channels,
        dismiss_reasons=dismiss_reasons,
        private=private,
        requester=requester,
        commit=commit,
        erasure=erasure,
        channels=channels,
        rep=rep,
        received_at=datetime.now(UTC) if received_at is None else _as_utc(received_at),
        blind=blind,
    )
    try:
        return record()
    except sa.exc.IntegrityError:
        if not commit:
            raise
        return record()


def _record_feedback(
    session: Session,
    *,
    events: Sequence[FeedbackRecord],
    hcp_exists: Callable[[str], bool] | None,
    action_channels: Mapping[str, str] | None,
    dismiss_reasons: Collection[str] | None,
    private: bool,
    requester: str | None,
    commit: bool,
    erasure: bool,
    channels: Sequence[str] | None = None,
    rep: bool = False,
    received_at: datetime,
    blind: bool = False,
) -> FeedbackResult:
    """:func:`record_feedback`, tried once."""
    result = FeedbackResult()
    # What "in the future" is judged by: the caller's clock or the machine's, the later.
    ahead_of = max(received_at, datetime.now(UTC))
    known_hcps: dict[str, bool] = {}

    def hcp_known(hcp_id: str) -> bool:
        """``hcp_exists``, asked once per id in a batch."""
        if hcp_id not in known_hcps:
            known_hcps[hcp_id] = hcp_exists is not None and hcp_exists(hcp_id)
        return known_hcps[hcp_id]

    asked_about = [
        e.recommendation_id
        for e in events
        # An id with a NUL would fail the lookup on PostgreSQL: _check_event refuses it.
        if isinstance(e.recommendation_id, str) and "\x00" not in e.recommendation_id
    ]
    # Each in lower case too, as the service writes its ids, in the same query: one a
    # CRM upper-cased is refused naming the id meant.
    served = _served_recommendations(
        session, asked_about + [r.lower() for r in asked_about if r != r.lower()]
    )
    # When each HCP of the batch was erased, if it was: an event dated before then is
    # what that erasure deleted, and stored now it would undo it.
    erased = (
        {}
        if erasure
        else erased_already(
            session,
            hcp_ids=[
                e.hcp_id
                for e in events
                if isinstance(e.hcp_id, str) and e.hcp_id and "\x00" not in e.hcp_id
            ],
        )
    )
    catalog_channels = frozenset(action_channels.values()) if action_channels else frozenset()
    rows: dict[str, dict[str, Any]] = {}
    # Batch order of the valid events: (index, id, what the event says), once per occurrence.
    valid_order: list[tuple[int, str, _Identity]] = []
    # Valid but for their reason (reason_problem), or an opt-in's channel that is a near
    # miss of the catalog's: rejected unless already stored.
    refused_reasons: list[tuple[int, str, _Identity, str]] = []
    uncounted_at: dict[int, str] = {}  # index -> why a contact counts in the budget only
    # index -> what a decision whose item was filled in says as sent, as a release
    # before the filling in stored it: its resend is that event, not another.
    as_sent: dict[int, _Identity] = {}
    opt_outs: dict[int, dict[str, Any]] = {}  # index -> row, of each valid opt-out
    # index -> the other channels an opt-out of a requester of several withdraws
    also_withdrawn: dict[int, Sequence[str]] = {}
    for index, event in enumerate(events):
        # A reason code in another case than the rules file's: stored as the code,
        # so that it suppresses as that code does and its resend is the same event.
        code = reason_code(event.event_type, event.reason, dismiss_reasons)
        if code != event.reason:
            event = dataclasses.replace(event, reason=code)
        taken_as = None  # how an opt-out was read to be kept, said back
        named = event.channel  # as sent: an opt-out's with no catalog is read later
        bound_as = None  # the channel(s) an opt-out of a bound requester was read as
        if (
            event.event_type == "opted_out"
            and channels
            and event.action_id is None
            and (
                event.channel is None
                or channel_spelling(event.channel) in EVERY_CHANNEL_NAMES
                or (
                    channel_spelling(event.channel) not in channels
                    and (
                        not catalog_channels or _no_catalog_channel(event.channel, catalog_channels)
                    )
                )
            )
        ):
            # An SMS gateway's "stop" withdraws SMS, not every channel (which it
            # does not speak for); so does one naming a channel nextbest cannot tell,
            # which would be read as every channel, and refused. With no model served
            # nextbest can tell no channel but the key's own: one naming another is
            # read so too (refused, the withdrawal was lost, where a model served would
            # have kept it), never as a channel the key does not speak for. A key of
            # several channels (a marketing platform's email and sms) withdraws every
            # one of them: the first under the event's id, each other one a row of
            # its own under an id derived from it (_bound_opt_out_rows).
            unknown = ""
            if event.channel is not None and channel_spelling(event.channel) not in (
                *channels,
                *EVERY_CHANNEL_NAMES,
            ):
                if not catalog_channels:
                    unknown = (
                        f" (channel '{event.channel}' is not read against a catalog: "
                        "no model is served)"
                    )
                elif _no_catalog_channel(event.channel, catalog_channels):
                    unknown = f" (channel '{event.channel}' is no catalog channel)"
            bound_as = _bound_opt_out_note(channels, requester, unknown)
            if len(channels) > 1:
                also_withdrawn[index] = channels[1:]
            event = dataclasses.replace(event, channel=channels[0])
        # An opt-out naming a channel it was read as every channel for ('fax'): stored
        # so, not as the channel of an action it names too (which it was said not to be).
        every_channel = False
        if event.event_type == "opted_out":
            named = event.channel
            event, taken_as = _opt_out_as_kept(
                event,
                served,
                action_channels,
                catalog_channels,
                received_at,
                channels or (),
                ahead_of=ahead_of,
            )
            every_channel = named is not None and event.channel is None and not channels
            if channels and bound_as is None and event.channel is None and event.action_id is None:
                # Read as every channel only once kept: its action left out (a retired
                # content's unsubscribe link), its channel one nextbest cannot tell.
                bound_as = _bound_opt_out_note(channels, requester, "")
                if len(channels) > 1:
                    also_withdrawn[index] = channels[1:]
                event = dataclasses.replace(event, channel=channels[0])
        if bound_as is not None:
            taken_as = bound_as if taken_as is None else f"{bound_as}; {taken_as}"
        message = _check_event(event, ahead_of)
        if (
            message is None
            and not erasure
            and str(event.event_id).lower().startswith(ERASURE_EVENT_PREFIX)
        ):
            message = (
                f"event_id '{event.event_id}' starts with '{ERASURE_EVENT_PREFIX}', which marks "
                "the records nextbest erase keeps: choose another event_id"
            )
        if (
            message is None
            and (erased_at := erased.get(event.hcp_id)) is not None
            and _as_utc(event.occurred_at) <= erased_at
        ):
            message = (
                f"HCP '{event.hcp_id}' was erased on {erased_at:%Y-%m-%d %H:%M:%S} UTC: an "
                "event that occurred before then is what the erasure deleted, and is not "
                "stored again (the erasure keeps the HCP opted out of every channel); take "
                "the HCP out of what you send"
            )
        # Said only of an event not stored already: an older nextbest stored events
        # this rule refuses, and their resend is a duplicate, not a rejection.
        reason_refused = reason_problem(event.event_type, event.reason, dismiss_reasons)
        channel = event.channel
        served_channel: str | None = None  # of the named action, where known
        if message is None and event.recommendation_id is not None:
            recommendation = served.get(event.recommendation_id)
            if recommendation is not None and event.event_type in _EFFECTS_OF_AN_ANSWER:
                event = _a_day_alone_from_its_send(event, recommendation)
            if recommendation is None:
                meant = spelled_alike(str(event.recommendation_id), served.__contains__)
                message = f"unknown recommendation_id '{event.recommendation_id}'" + (
                    "" if meant is None else said_in_another_case(meant)
                )
            elif recommendation.hcp_id != event.hcp_id:
                message = (
                    f"hcp_id '{event.hcp_id}' does not match recommendation "
                    f"'{event.recommendation_id}'"
                    + ("" if private else f" (served to '{recommendation.hcp_id}')")
                )
            elif (
                event.event_type in _DECISIONS_ON_ITEMS
                and event.action_id is not None
                and event.action_id not in recommendation.channel_by_action
            ):
                served_actions = ", ".join(sorted(recommendation.channel_by_action)) or "none"
                message = (
                    f"action_id '{event.action_id}' was not served in recommendation "
                    f"'{event.recommendation_id}'"
                    + (
                        ": it was held out (a randomized control: nothing was served, by "
                        "design), so there is nothing to decide on; send no decision for it"
                        if recommendation.holdout and not blind
                        else f" (served: {served_actions})"
                    )
                )
            elif event.event_type in _EFFECTS_OF_AN_ANSWER and (
                early := _check_event_time(event, recommendation)
            ):
                message = early
            elif event.action_id is not None:
                served_channel = recommendation.channel_by_action.get(event.action_id)
        decision_note = None  # why a dismissal or a snooze suppresses nothing
        item_filled_in = False
        if message is None and event.event_type in _ABOUT_AN_ITEM and event.action_id is None:
            event, served_channel, decision_note = _served_item(
                event, served.get(event.recommendation_id or "")
            )
            item_filled_in = event.action_id is not None
        action_id = event.action_id
        if (
            event.event_type in CONSENT_EVENT_TYPES
            and channel is not None
            and (not catalog_channels or channel_spelling(channel) in catalog_channels)
        ):
            # "Email" for email: a withdrawal is not refused over its spelling, nor,
            # with no catalog to check it against, stored as no catalog spells it.
            channel = channel_spelling(channel)
            event = dataclasses.replace(event, channel=channel)
        # An opt-in's channel, a near miss of the catalog's ('E Mail'), as the one it
        # means: refused, unless stored so with no model served, read as that channel.
        near_miss: str | None = None
        if message is None:
            message, channel = _channel_of(event, served_channel, action_channels, catalog_channels)
            if every_channel:
                channel = None
            if message is not None and event.event_type == "opted_in" and event.channel:
                near_miss = near_channel(event.channel, catalog_channels)
        uncounted = decision_note
        if message is None and action_id is None and event.event_type in CONTACT_EVENT_TYPES:
            # Filled in alike whether or not the channel is stated, so that a resend
            # with the channel the first send got filled in is the same event.
            recommendation = (
                served.get(event.recommendation_id) if event.recommendation_id else None
            )
            action_id, channel, uncounted = _contact_item(event, recommendation, channel)
            if channel is None and channels is not None and len(channels) == 1:
                # An SMS gateway's "delivered" is an SMS: it counts against the SMS
                # caps, not only the all-channel budget.
                channel, uncounted = channels[0], None
        if message is None and channels is not None:
            message = _outside_channels(
                event, channel, served.get(event.recommendation_id or ""), channels, requester
            )
            if message is not None:
                result.forbidden.append(index)
        if message is None and rep:
            of_action = served_channel or (action_channels or {}).get(action_id or "")
            message = _off_rep_channels(
                event,
                channel,
                (action_id, of_action) if action_id is not None and of_action else None,
                served.get(event.recommendation_id or ""),
            )
        if (
            message is None
            and uncounted is None
            and event.event_type in CONTACT_EVENT_TYPES
            and channel is not None
            and catalog_channels
            and channel not in catalog_channels
        ):
            uncounted = (
                f"stored, but counts in the all-channel budget only: channel '{channel}' is not "
                f"a channel of the served catalog ({', '.join(sorted(catalog_channels))})"
            )
        if (
            message is None
            and event.event_type in CONSENT_EVENT_TYPES
            and channel is not None
            and catalog_channels
            and channel not in catalog_channels
        ):
            known = ", ".join(sorted(catalog_channels))
            if event.event_type == "opted_out":
                # Its channel is certain here (a key's own, its send's): refused, the
                # withdrawal was lost, and the channel may come back to the catalog.
                lacks = (
                    f"opt-out of channel '{channel}', which the served catalog does not "
                    f"have (known: {known}): it withdraws nothing the catalog serves "
                    f"today; kept, it applies once a served catalog has {channel}"
                )
                uncounted = lacks if uncounted is None else f"{uncounted}; {lacks}"
            else:
                message = (
                    f"channel '{channel}' is not a channel of the served catalog (known: "
                    f"{known}); leave it out for every channel"
                )
        # A consent event for an HCP no model knows yet is kept: it applies as soon
        # as one does (refused, an opt-out sent before the hcps file caught up was lost).
        if message is None and hcp_exists is not None and not hcp_known(event.hcp_id):
            # 'h000001' sent for 'H000001' (a system that changed the ids' case): said so.
            # (its case-folded lookup, when a model's KnownIds: one in mixed case too)
            meant = spelled_alike(event.hcp_id, hcp_exists)
            if event.event_type not in CONSENT_EVENT_TYPES:
                message = f"unknown hcp_id '{event.hcp_id}'" + (
                    "" if meant is None else said_in_another_case(meant)
                )
            else:
                unknown_hcp = (
                    f"stored, but no HCP of the served model has the id '{event.hcp_id}' "
                    "yet: it applies once one does"
                    + (
                        " (ids are compared exactly: check the spelling)"
                        if meant is None
                        else said_in_another_case(meant)
                    )
                )
                uncounted = unknown_hcp if uncounted is None else f"{uncounted}; {unknown_hcp}"
        if message is not None and near_miss is not None:
            # Its resend is the event stored, in force: a duplicate, not a refusal.
            as_read = {**dataclasses.asdict(event), "action_id": None, "channel": near_miss}
            refused_reasons.append((index, event.event_id, _identity(as_read), message))
            continue
        if message is not None:
            result.rejected.append((index, str(event.event_id), message))
            continue
        if taken_as is not None:
            uncounted = taken_as if uncounted is None else f"{taken_as}; {uncounted}"
        held_out = served.get(event.recommendation_id or "")
        if (
            event.event_type in (*REACHED_EVENT_TYPES, "accepted")
            and held_out is not None
            and held_out.holdout
            and not blind
        ):
            # Said at once to the sender that ignored holdout: true, not weeks later in
            # the uplift report's warning; an open of a holdout answer as well as its
            # delivery (a sender may report engagement only), and a rep's acceptance
            # of one (a CRM offering held-out HCPs: the visit follows).
            contacted = (
                f"recommendation '{event.recommendation_id}' held this HCP out (holdout: "
                "true, the randomized control: nothing was to be sent"
                + (" or accepted" if event.event_type == "accepted" else "")
                + "); contacting held-out HCPs pulls the measured uplift toward zero"
            )
            uncounted = (
                f"stored, but {contacted}" if uncounted is None else f"{uncounted}; {contacted}"
            )
        if (
            event.event_type in _EFFECTS_OF_AN_ANSWER - _DECISIONS_ON_ITEMS
            and held_out is not None
            and held_out.channel_by_action
            and action_id is not None
            and action_id not in held_out.channel_by_action
        ):
            # Stored as what was done instead (a visit instead of the e-mail), but said:
            # a sender that joined its sends to the wrong answer would not know.
            instead = (
                f"recommendation '{event.recommendation_id}' did not serve action "
                f"'{action_id}' (it served {', '.join(sorted(held_out.channel_by_action))}): "
                "counted as done instead of what was served; if it was not, send the "
                "action_id of that answer's item"
            )
            uncounted = f"stored, but {instead}" if uncounted is None else f"{uncounted}; {instead}"
        if event.value and event.event_type != "outcome":
            # Stored as sent, but only an outcome's value is summed anywhere: a click
            # sent with its order value was counted as a click alone, without a word.
            # A 0 (an export's filler) loses nothing, and is not said.
            ignored = (
                f"its value {event.value:g} counts nowhere: only outcome events' values "
                "are measured (send it as an outcome event of its own)"
            )
            uncounted = f"stored, but {ignored}" if uncounted is None else f"{uncounted}; {ignored}"
        row = {
            "event_id": event.event_id,
            "event_type": event.event_type,
            "occurred_at": _as_utc(event.occurred_at),
            "received_at": received_at,
            "recommendation_id": event.recommendation_id,
            "hcp_id": event.hcp_id,
            "action_id": action_id,
            "channel": channel,
            "reason": event.reason,
            "value": None if event.value is None else float(event.value),
            "requester": requester,
            # Named by its sender with no catalog to read it against: read against
            # the served catalog at each read, as it would have been on arrival. An
            # opt-in so too: read as stored, one of 'E Mail' could never lift the
            # opt-out of 'E Mail' it answers, which is read as email.
            "channel_unmatched": True
            if (
                event.event_type in CONSENT_EVENT_TYPES
                and not catalog_channels
                and channel is not None
                and named is not None
                # The sender's own channel (an SMS gateway's "stop" of 'all' or 'fax'
                # is its sms) is that channel, whatever the catalog: not read again.
                and channel not in (channels or ())
            )
            else None,
        }
        if item_filled_in:
            as_sent[index] = _identity(
                {**row, "action_id": None, "channel": row["channel"] if event.channel else None}
            )
        if reason_refused is not None:
            refused_reasons.append((index, event.event_id, _identity(row), reason_refused))
            continue
        valid_order.append((index, event.event_id, _identity(row)))
        if event.event_type == "opted_out":
            opt_outs[index] = row
        if uncounted is not None:
            uncounted_at[index] = uncounted
        # The first occurrence of an id in the batch is the one stored.
        rows.setdefault(event.event_id, row)
    try:
        # Sorted by key so concurrent batches lock rows in the same order: two
        # PostgreSQL transactions with overlapping ids then wait instead of deadlocking.
        inserted = (
            _insert_ignoring_duplicates(session, [rows[key] for key in sorted(rows)])
            if rows
            else set()
        )
        # Not the ids this statement inserted: read back, an event stored by this very
        # batch would look stored before it (a duplicate, not accepted).
        stored = _stored_identities(
            session,
            [key for key in rows if key not in inserted]
            + [event_id for _, event_id, _, _ in refused_reasons if event_id not in inserted],
            catalog_channels,
            dismiss_reasons,
        )
        # An erasure's suppression is known by its id (erasure_event_id): one taken
        # fails the erasure (ErasureError) instead.
        rekeyed = (
            {}
            if erasure
            else _keep_opt_outs_under_derived_ids(
                session, valid_order, opt_outs, rows, inserted, stored
            )
        )
        # After the opt-outs themselves, as their ids are: in one order.
        also_kept = _bound_opt_out_rows(session, valid_order, opt_outs, also_withdrawn)
        if commit:
            session.commit()
    except BaseException:
        session.rollback()
        raise
    # index -> where the other channels of an opt-out of a requester of several went
    also_said: dict[int, str] = {}
    for index, kept_rows in also_kept.items():
        where = ", ".join(
            f"{channel} under event_id '{kept_id}'"
            + (
                " (no channel of the served catalog: it applies once one has it)"
                if catalog_channels and channel not in catalog_channels
                else ""
            )
            for channel, kept_id, _ in kept_rows
        )
        also_said[index] = f"each other channel a row of its own: {where}"
        if index in uncounted_at:
            uncounted_at[index] = f"{uncounted_at[index]}; {also_said[index]}"
    for index, event_id, identity in valid_order:
        if index in rekeyed:
            derived, new = rekeyed[index]
            (result.accepted if new else result.duplicates).append(derived)
            said = (
                f"stored under event_id '{derived}': event_id '{event_id}' is already stored "
                "for another event, and a withdrawal of consent is not lost to its id (give "
                "each event an id of its own)"
            )
            if index in uncounted_at:
                said = f"{said}; {uncounted_at[index]}"
            result.uncounted.append((index, event_id, said))
            continue
        if event_id in inserted and event_id not in stored:
            result.accepted.append(event_id)
            if index in uncounted_at:
                result.uncounted.append((index, event_id, uncounted_at[index]))
            stored[event_id] = identity  # a repeat later in the batch is a duplicate
            continue
        conflict = _conflict(event_id, stored[event_id], identity, private=private)
        if conflict is None or stored[event_id] == as_sent.get(index):
            result.duplicates.append(event_id)
            if any(new for _, _, new in also_kept.get(index, ())):
                # Stored before for fewer channels (another key's): the rest is new.
                result.uncounted.append((index, event_id, uncounted_at[index]))
        else:
            result.rejected.append((index, event_id, conflict))
    for index, event_id, identity, refused in refused_reasons:
        if event_id in stored and (
            _conflict(event_id, stored[event_id], identity) is None
            or stored[event_id] == as_sent.get(index)
        ):
            result.duplicates.append(event_id)  # stored before the rule: sent again
        else:
            result.rejected.append((index, event_id, refused))
    result.rejected.sort()
    return result


def _keep_opt_outs_under_derived_ids(
    session: Session,
    valid_order: Sequence[tuple[int, str, _Identity]],
    opt_outs: Mapping[int, dict[str, Any]],
    rows: Mapping[str, dict[str, Any]],
    inserted: set[str],
    stored: Mapping[str, _Identity],
) -> dict[int, tuple[str, bool]]:
    """Store each opt-out whose id another event holds (stored before, or earlier in
    the batch) under :func:`_opt_out_id`; index -> (that id, whether it is new).

    Event ids are the senders' and shared by every key: an id taken first, by chance
    or by a rep key that guessed the consent system's ids, must not cost an HCP the
    withdrawal of consent. Other events stay refused as a reused id.
    """
    kept: dict[int, tuple[str, bool]] = {}
    for index, event_id, identity in valid_order:
        row = opt_outs.get(index)
        if row is None:
            continue
        holder = _identity(rows[event_id]) if event_id in inserted else stored[event_id]
        if holder == identity:
            continue
        derived = _opt_out_id(event_id, identity)
        if not _insert_ignoring_duplicates(session, [{**row, "event_id": derived}]):
            if _stored_identities(session, [derived]).get(derived) == identity:
                kept[index] = (derived, False)  # kept so before: a resend
                continue
            # Taken too (an id planted ahead): one no sender can guess.
            derived = _opt_out_id(event_id, identity, salt=uuid.uuid4().hex)
            _insert_ignoring_duplicates(session, [{**row, "event_id": derived}])
        kept[index] = (derived, True)
    return kept


def _bound_opt_out_rows(
    session: Session,
    valid_order: Sequence[tuple[int, str, _Identity]],
    opt_outs: Mapping[int, dict[str, Any]],
    also_withdrawn: Mapping[int, Sequence[str]],
) -> dict[int, list[tuple[str, str, bool]]]:
    """Store, for each opt-out of a requester of several channels read as withdrawing
    them all (its row holds the first), one row per other channel; index -> [(channel,
    id, whether it is new)].

    Each row's id is derived from the event's id and what the row says
    (:func:`_opt_out_id`): a resend of the event finds them stored, a duplicate, and
    the event stored before for fewer channels (by a key of one of them) gets the
    rest. An id taken by another event (planted ahead) gives way to one no sender
    can guess, as :func:`_keep_opt_outs_under_derived_ids` does.
    """
    wanted: list[tuple[int, str, dict[str, Any]]] = []
    for index, event_id, _ in valid_order:
        row = opt_outs.get(index)
        if row is None or not also_withdrawn.get(index):
            continue
        for channel in also_withdrawn[index]:
            other = {**row, "channel": channel, "channel_unmatched": None}
            other["event_id"] = _opt_out_id(event_id, _identity(other))
            wanted.append((index, channel, other))
    if not wanted:
        return {}
    by_id = {other["event_id"]: other for _, _, other in wanted}
    # Sorted by key so concurrent batches lock rows in the same order (PostgreSQL).
    inserted = _insert_ignoring_duplicates(session, [by_id[key] for key in sorted(by_id)])
    stored = _stored_identities(session, [key for key in by_id if key not in inserted])
    kept: dict[int, list[tuple[str, str, bool]]] = {}
    for index, channel, other in wanted:
        kept_id, new = other["event_id"], other["event_id"] in inserted
        if not new and stored.get(kept_id) != _identity(other):
            kept_id = _opt_out_id(kept_id, _identity(other), salt=uuid.uuid4().hex)
            _insert_ignoring_duplicates(session, [{**other, "event_id": kept_id}])
            new = True
        kept.setdefault(index, []).append((channel, kept_id, new))
        inserted.discard(other["event_id"])  # a repeat later in the batch: a resend
        stored[other["event_id"]] = _identity(other)
    return kept


# What an id derived from an opt-out's own starts with.
_DERIVED_PREFIX: Final = "opted_out-"


def _opt_out_id(event_id: str, identity: _Identity, salt: str = "") -> str:
    """The id an opt-out is kept under when its own is another event's: the same for
    its resends (from the id and what the opt-out says); or, ``identity`` empty, when
    its own is too long to store (from the id alone)."""
    if identity[_REASON_AT:] == (None,):
        # No reason compared (an opt-out's never is): the id it was derived as before
        # identities held one, so that a resend of one kept then is still a duplicate.
        identity = identity[:_REASON_AT]
    said = json.dumps([event_id, *identity, salt], default=str)
    return _DERIVED_PREFIX + hashlib.sha256(said.encode()).hexdigest()[:32]


# What an event says, as stored, as far as its id must always say the same: a
# resent event is a duplicate only if these agree (a channel or action filled in
# from the action or the recommendation is filled in alike on every send). Its time
# (set on receipt when not sent) may differ between sends. A dismissal's or a
# snooze's reason code is what it decides (an HCP-wide code holds back every rep
# action of the HCP): a resend with another code is a corrected decision, not the
# one stored, and is refused rather than answered "duplicate" with the correction
# lost. Codes are compared as the rules file spells them (reason_code), so one
# resent in another case is the same event. Other events' reasons (an opt-out's
# unsubscribe link) count nowhere, and are not compared.
_IDENTITY_FIELDS = (
    "event_type",
    "hcp_id",
    "recommendation_id",
    "action_id",
    "channel",
    "value",
    "reason",
)
_Identity = tuple[Any, ...]
_TYPE_AT = _IDENTITY_FIELDS.index("event_type")
_CHANNEL_AT = _IDENTITY_FIELDS.index("channel")
# Last, so that an identity without a reason derives the ids it did before it held one.
_REASON_AT = _IDENTITY_FIELDS.index("reason")


def _identity(row: Mapping[str, Any]) -> _Identity:
    values = [row[name] for name in _IDENTITY_FIELDS]
    if values[_TYPE_AT] not in DISMISSAL_EVENT_TYPES:
        values[_REASON_AT] = None
    return tuple(values)


def _stored_identities(
    session: Session,
    event_ids: Sequence[str],
    catalog_channels: Collection[str] = (),
    dismiss_reasons: Collection[str] | None = None,
) -> dict[str, _Identity]:
    """What the stored events of these ids say (one query per chunk; none for no ids),
    a consent event's channel as it is stored now (:func:`_consent_channel`): one an
    earlier nextbest stored as sent ('Email', 'All') is what its resend says; and a
    consent event's stored with no catalog ('e_mail') as read against
    ``catalog_channels`` (the served catalog's), as its resend is read now ('email';
    :func:`consent_channel_read`). A dismissal's or a snooze's reason as
    ``dismiss_reasons`` (the rules file's codes) spell it, as its resend's is read
    (:func:`reason_code`): one an earlier nextbest stored as sent ('Not_Relevant')
    is the code its resend names."""
    columns = [getattr(FeedbackEvent, name) for name in _IDENTITY_FIELDS]
    found: dict[str, _Identity] = {}
    for chunk in _chunks(event_ids, _in_chunk_size(session)):
        rows = session.execute(
            sa.select(FeedbackEvent.event_id, FeedbackEvent.channel_unmatched, *columns).where(
                FeedbackEvent.event_id.in_(chunk)
            )
        )
        for event_id, unmatched, *values in rows:
            if values[_TYPE_AT] in CONSENT_EVENT_TYPES:
                values[_CHANNEL_AT] = _consent_channel(values[_TYPE_AT], values[_CHANNEL_AT])
            if unmatched and catalog_channels and values[_CHANNEL_AT] is not None:
                values[_CHANNEL_AT] = consent_channel_read(
                    values[_TYPE_AT], values[_CHANNEL_AT], catalog_channels
                )
            found[event_id] = _identity(
                {
                    **dict(zip(_IDENTITY_FIELDS, values, strict=True)),
                    "reason": reason_code(values[_TYPE_AT], values[_REASON_AT], dismiss_reasons),
                }
            )
    return found


def _conflict(
    event_id: str, stored: _Identity, sent: _Identity, *, private: bool = False
) -> str | None:
    """Why an event may not reuse a stored event's id, or None when it is a resend;
    ``private``: without what the stored event says."""
    differ = [
        f"{name} {was!r} (this one: {now!r})"
        for name, was, now in zip(_IDENTITY_FIELDS, stored, sent, strict=True)
        if was != now
    ]
    if not differ:
        return None
    if private:
        return (
            f"event_id '{event_id}' is already stored for another event: an event_id names "
            "one event, so this one was not stored (give each event an id of its own)"
        )
    return (
        f"event_id '{event_id}' is already stored for another event, with "
        f"{'; '.join(differ)}: an event_id names one event, so this one was not stored"
    )


# The one row an erasure keeps per HCP: an opt-out of every channel under this id,
# so serving stops contacting the HCP at once and a later hcps file cannot silently
# re-enable contact. Derived from the id alone: a rerun finds it and stores no other.
ERASURE_EVENT_PREFIX = "erasure-"


def erasure_event_id(hcp_id: str) -> str:
    """The ``event_id`` of ``hcp_id``'s erasure suppression: ``erasure-`` and the first
    16 hex digits of the id's SHA-256 (the id itself stays out of the key)."""
    return ERASURE_EVENT_PREFIX + hashlib.sha256(hcp_id.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class RowCounts:
    """Rows of the recommendation log and the feedback store, per table: those an
    erasure deletes (naming some HCPs, their suppressions not counted) or a prune
    deletes (from before a cutoff)."""

    recommendations: int = 0
    recommendation_items: int = 0
    feedback_events: int = 0

    @property
    def total(self) -> int:
        return self.recommendations + self.recommendation_items + self.feedback_events

    def __add__(self, other: RowCounts) -> RowCounts:
        return RowCounts(
            self.recommendations + other.recommendations,
            self.recommendation_items + other.recommendation_items,
            self.feedback_events + other.feedback_events,
        )


@dataclass(frozen=True)
class Erasure:
    """What :func:`erase_hcps` did: the rows it deleted, the HCPs whose suppression
    it stored, and those whose suppression an earlier erasure had stored (kept as
    it was, with its time)."""

    deleted: RowCounts
    suppressed: tuple[str, ...]
    already_suppressed: tuple[str, ...]


class ErasureError(RuntimeError):
    """An erasure that could not store its suppressions; nothing was deleted."""


def _erasure_chunk_size(db: Session) -> int:
    # Each statement binds a chunk's ids up to three times (HCP ids twice, their
    # suppressions' event ids once).
    return _in_chunk_size(db) // 3


def _rows_naming(chunk: list[str]) -> tuple[Any, Any, Any]:
    """WHERE clauses of the recommendations, items and feedback events naming the
    HCPs of ``chunk``, their erasure suppressions left out."""
    recommendations = _RECOMMENDATIONS.c.hcp_id.in_(chunk)
    theirs = sa.select(_RECOMMENDATIONS.c.recommendation_id).where(recommendations)
    items = _ITEMS.c.recommendation_id.in_(theirs)
    # The events by their ids, from two look-ups each through its own index: written
    # as one OR of the two conditions, PostgreSQL read feedback_events whole (it
    # cannot combine an index with a subquery's hashed list).
    f = _FEEDBACK.alias("named")
    events = _FEEDBACK.c.event_id.in_(
        sa.union(
            sa.select(f.c.event_id).where(
                f.c.hcp_id.in_(chunk),
                f.c.event_id.not_in([erasure_event_id(hcp) for hcp in chunk]),
            ),
            # An event about one of their recommendations, whoever it names.
            sa.select(f.c.event_id).where(f.c.recommendation_id.in_(theirs)),
        )
    )
    return recommendations, items, events


def count_hcp_rows(session: Session, *, hcp_ids: Sequence[str]) -> RowCounts:
    """How many rows of each table :func:`erase_hcps` would delete for ``hcp_ids``.

    Three counts per chunk of ids. An event of one HCP about another's
    recommendation, both among ``hcp_ids`` but in different chunks, is counted twice.
    """
    found = RowCounts()
    for chunk in _chunks(hcp_ids, _erasure_chunk_size(session)):
        recommendations, items, events = _rows_naming(chunk)
        counts = [
            int(
                session.execute(
                    sa.select(sa.func.count()).select_from(table).where(where)
                ).scalar_one()
            )
            for table, where in (
                (_RECOMMENDATIONS, recommendations),
                (_ITEMS, items),
                (_FEEDBACK, events),
            )
        ]
        found += RowCounts(*counts)
    return found


def hcps_with_rows(session: Session, *, hcp_ids: Sequence[str]) -> set[str]:
    """The HCPs of ``hcp_ids`` that some logged recommendation or feedback event names."""
    found: set[str] = set()
    for chunk in _chunks(list(dict.fromkeys(hcp_ids)), _in_chunk_size(session)):
        for table in (_RECOMMENDATIONS, _FEEDBACK):
            found.update(
                session.execute(
                    sa.select(table.c.hcp_id).where(table.c.hcp_id.in_(chunk)).distinct()
                ).scalars()
            )
    return found


def hcps_spelled_alike(session: Session, *, hcp_ids: Sequence[str]) -> set[str]:
    """The HCP ids some logged recommendation or feedback event names that are spelled
    as one of ``hcp_ids`` but for case and leading zeros (``H000002`` for ``h000002``,
    or ``00123`` for ``123``), the ids themselves included when named.

    Through each table's index of the folded id (``ix_<table>_hcp_id_folded``,
    revision 0013), not a read of both tables whole."""
    forms = list(dict.fromkeys(h.strip().lower().lstrip("0") for h in hcp_ids))
    found: set[str] = set()
    for chunk in _chunks(forms, _in_chunk_size(session)):
        for table in (_RECOMMENDATIONS, _FEEDBACK):
            spelled = folded_hcp_id(table.c.hcp_id)
            found.update(
                session.execute(
                    sa.select(table.c.hcp_id).where(spelled.in_(chunk)).distinct()
                ).scalars()
            )
    return found


def erased_already(session: Session, *, hcp_ids: Sequence[str]) -> dict[str, datetime]:
    """The HCPs of ``hcp_ids`` whose erasure suppression is stored, with when it was."""
    by_event = {erasure_event_id(hcp): hcp for hcp in dict.fromkeys(hcp_ids)}
    found: dict[str, datetime] = {}
    for chunk in _chunks(list(by_event), _in_chunk_size(session)):
        rows = session.execute(
            sa.select(_FEEDBACK.c.event_id, _FEEDBACK.c.hcp_id, _FEEDBACK.c.occurred_at).where(
                _FEEDBACK.c.event_id.in_(chunk)
            )
        )
        for event_id, hcp_id, occurred_at in rows:
            if by_event[event_id] == hcp_id:
                found[hcp_id] = _as_utc(occurred_at)
    return found


def erase_hcps(session: Session, *, hcp_ids: Sequence[str], requester: str) -> Erasure:
    """Delete every row naming ``hcp_ids`` and keep one suppression per HCP, in ONE
    transaction, then COMMIT.

    Deleted: the HCPs' logged recommendations and their items, and the feedback
    events about them or about one of their recommendations (whoever those name),
    free-text ``reason`` included. Stored through :func:`record_feedback`: per HCP
    one ``opted_out`` event of every channel (no channel), event id
    :func:`erasure_event_id`, occurred now, sent by ``requester``; it holds the
    HCP's id, the time and who erased, nothing else. Also stored: the run's
    ``maintenance_runs`` row (who, when, how many HCPs and rows; no id), so that a
    rerun's deletes are recorded too. Idempotent: a rerun deletes
    what was logged since and keeps the suppression it finds as it was. Raises
    :class:`ErasureError` (everything rolled back) when a suppression cannot be
    stored (its event id taken by another event). Cost: three DELETEs per
    chunk of ids (``_in_chunk_size`` / 3), one INSERT.
    """
    hcp_ids = list(dict.fromkeys(hcp_ids))
    now = datetime.now(UTC)
    deleted = RowCounts()
    try:
        for chunk in _chunks(hcp_ids, _erasure_chunk_size(session)):
            recommendations, items, events = _rows_naming(chunk)
            # Events first (they refer to recommendations), items, then the answers.
            counts = {
                table.name: cast(
                    sa.CursorResult[Any], session.execute(sa.delete(table).where(where))
                ).rowcount
                for table, where in (
                    (_FEEDBACK, events),
                    (_ITEMS, items),
                    (_RECOMMENDATIONS, recommendations),
                )
            }
            deleted += RowCounts(
                counts[_RECOMMENDATIONS.name], counts[_ITEMS.name], counts[_FEEDBACK.name]
            )
        result = record_feedback(
            session,
            events=[
                FeedbackRecord(
                    event_id=erasure_event_id(hcp),
                    event_type="opted_out",
                    occurred_at=now,
                    hcp_id=hcp,
                )
                for hcp in hcp_ids
            ],
            requester=requester,
            commit=False,
            erasure=True,
        )
        if result.rejected:
            raise ErasureError(
                "; ".join(f"HCP '{hcp_ids[index]}': {why}" for index, _, why in result.rejected)
            )
        # The run's row, in the same transaction: the HCPs' number, never their ids.
        insert_run(
            session,
            command="erase",
            requester=requester,
            started_at=now,
            ended_at=datetime.now(UTC),
            outcome="finished",
            hcps=len(hcp_ids),
            deleted=deleted,
        )
        session.commit()
    except BaseException:
        session.rollback()
        raise
    stored = set(result.accepted)
    return Erasure(
        deleted=deleted,
        suppressed=tuple(h for h in hcp_ids if erasure_event_id(h) in stored),
        already_suppressed=tuple(h for h in hcp_ids if erasure_event_id(h) not in stored),
    )


# Recommendations (then feedback events tied to none) a prune deletes per
# transaction: each batch commits, so a prune of years of log never holds its
# locks long against a running server.
PRUNE_BATCH = 10_000


@dataclass(frozen=True)
class PruneKept:
    """Rows from before a prune's cutoff that it keeps.

    ``consent_events``: ``opted_out`` / ``opted_in`` events (they decide whether an
    HCP may be contacted at all, and are the record of consent), ``suppressions``
    of them erasure suppressions. ``recommendations``: answers kept whole, items and
    feedback included, because an opt-out names them (the send an HCP unsubscribed
    from: its foreign key allows nothing else) or an event about them happened at
    or after the cutoff (a delivery or a dismissal the serving rules still count:
    they go in a later prune, once all of it is older).
    """

    consent_events: int = 0
    suppressions: int = 0
    recommendations: int = 0


def _prune_clauses(before: datetime) -> tuple[Any, Any, Any]:
    """WHERE clauses of a prune at ``before``: the recommendations made before it
    (and, logged ahead, for a decision before it), those of them kept whole (an
    opt-out names them, or an event about them happened at or after ``before``),
    and the feedback events tied to no recommendation that occurred before it,
    consent events left out."""
    r, f = _RECOMMENDATIONS.c, _FEEDBACK.c
    old = sa.and_(r.created_at < before, sa.or_(r.decided_for.is_(None), r.decided_for < before))
    kept_whole = (
        sa.exists()
        .where(
            f.recommendation_id == r.recommendation_id,
            sa.or_(f.event_type.in_(CONSENT_EVENT_TYPES), f.occurred_at >= before),
        )
        .correlate(_RECOMMENDATIONS)
    )
    untied = sa.and_(
        f.recommendation_id.is_(None),
        f.occurred_at < before,
        f.event_type.not_in(CONSENT_EVENT_TYPES),
    )
    return old, kept_whole, untied


def count_rows_before(session: Session, *, before: datetime) -> tuple[RowCounts, PruneKept]:
    """How many rows of each table :func:`prune_batch` called until it returns
    nothing would delete for ``before``, and what it keeps from before then."""
    old, kept_whole, untied = _prune_clauses(before)
    doomed = sa.and_(old, ~kept_whole)
    theirs = sa.select(_RECOMMENDATIONS.c.recommendation_id).where(doomed)
    consent = sa.and_(
        _FEEDBACK.c.event_type.in_(CONSENT_EVENT_TYPES), _FEEDBACK.c.occurred_at < before
    )

    def count(table: sa.Table, where: Any) -> int:
        query = sa.select(sa.func.count()).select_from(table).where(where)
        return int(session.execute(query).scalar_one())

    deleted = RowCounts(
        count(_RECOMMENDATIONS, doomed),
        count(_ITEMS, _ITEMS.c.recommendation_id.in_(theirs)),
        # Tied and untied events are disjoint: counted apart, each through its index.
        count(_FEEDBACK, _FEEDBACK.c.recommendation_id.in_(theirs)) + count(_FEEDBACK, untied),
    )
    kept = PruneKept(
        consent_events=count(_FEEDBACK, consent),
        suppressions=count(
            _FEEDBACK, sa.and_(consent, _FEEDBACK.c.event_id.startswith(ERASURE_EVENT_PREFIX))
        ),
        recommendations=count(_RECOMMENDATIONS, sa.and_(old, kept_whole)),
    )
    return deleted, kept


def prune_batch(session: Session, *, before: datetime, run_id: str | None = None) -> RowCounts:
    """Delete one batch of the rows from before ``before``, in ONE transaction, then
    COMMIT; call it until it deletes nothing. ``run_id``: the prune's
    ``maintenance_runs`` row, which gets the batch's counts in the same transaction
    (:func:`add_to_run`), so that it says what was deleted whenever the run stops.

    A batch is the oldest ``PRUNE_BATCH`` recommendations made before ``before``
    (and, logged ahead, for a decision before it) with their items and the feedback
    events tied to them; once none is left, the oldest ``PRUNE_BATCH`` feedback
    events tied to no recommendation that occurred before ``before``. Never deleted:
    consent events (``opted_out``, ``opted_in``: erasure suppressions among them),
    anything that occurred at or after ``before``, and the recommendations an
    opt-out or such an event names, with their items and feedback (see
    :class:`PruneKept`). Cost: two SELECTs and three DELETEs of at most
    ``PRUNE_BATCH`` ids (fewer on a SQLite before 3.32).

    Raises:
        sqlalchemy.exc.IntegrityError: a server stored feedback about one of the
            batch's recommendations while it ran (the batch is rolled back; run it
            again). The recommendations are not locked first: ``SELECT ... FOR
            UPDATE`` needs the UPDATE privilege, which nextbest's role need not have.
    """
    limit = min(PRUNE_BATCH, _in_chunk_size(session))
    old, kept_whole, untied = _prune_clauses(before)
    r, f = _RECOMMENDATIONS.c, _FEEDBACK.c

    def delete(table: sa.Table, where: Any) -> int:
        return cast(sa.CursorResult[Any], session.execute(sa.delete(table).where(where))).rowcount

    try:
        ids = list(
            session.scalars(
                sa.select(r.recommendation_id)
                .where(old, ~kept_whole)
                .order_by(r.created_at)
                .limit(limit)
            )
        )
        if ids:
            # Events first (they refer to recommendations), items, then the answers.
            # Nothing from the cutoff on is deleted. An answer that gained an event
            # since the SELECT (an opt-out, a delivery) keeps its items and is kept;
            # one that gains it between the last two statements fails the batch on
            # its foreign key, and the batch is run again.
            events = delete(
                _FEEDBACK,
                sa.and_(
                    f.recommendation_id.in_(ids),
                    f.event_type.not_in(CONSENT_EVENT_TYPES),
                    f.occurred_at < before,
                ),
            )
            unnamed = ~sa.exists().where(f.recommendation_id == r.recommendation_id)
            doomed = list(
                session.scalars(
                    sa.select(r.recommendation_id).where(r.recommendation_id.in_(ids), unnamed)
                )
            )
            items = delete(_ITEMS, _ITEMS.c.recommendation_id.in_(doomed)) if doomed else 0
            answers = delete(_RECOMMENDATIONS, r.recommendation_id.in_(doomed)) if doomed else 0
            done = RowCounts(answers, items, events)
        else:
            event_ids = list(
                session.scalars(
                    sa.select(f.event_id).where(untied).order_by(f.occurred_at).limit(limit)
                )
            )
            done = RowCounts(
                feedback_events=delete(_FEEDBACK, f.event_id.in_(event_ids)) if event_ids else 0
            )
        if run_id is not None and done.total:
            add_to_run(session, run_id=run_id, deleted=done)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return done


# How a maintenance run ended: 'running' until it does (for ever, if its process
# was killed), then one of the other two.
RUN_OUTCOMES: tuple[str, ...] = ("running", "finished", "interrupted")


@dataclass(frozen=True)
class MaintenanceRecord:
    """One ``maintenance_runs`` row: a prune or an erasure, who ran it, when, what it
    was asked (``cutoff``, ``arguments``; ``hcps``: an erasure's number of HCPs),
    what it deleted, and how it ended (``detail``: why it was interrupted)."""

    run_id: str
    command: str
    requester: str
    started_at: datetime
    ended_at: datetime | None
    outcome: str
    cutoff: datetime | None
    arguments: str | None
    hcps: int | None
    deleted: RowCounts
    detail: str | None


def start_run(
    session: Session,
    *,
    command: str,
    requester: str,
    cutoff: datetime | None = None,
    arguments: str | None = None,
    hcps: int | None = None,
    commit: bool = True,
) -> str:
    """Insert a ``running`` maintenance run of ``command``, nothing deleted yet, and
    COMMIT (unless ``commit`` is False: the caller's transaction then holds it);
    returns its id (32 hex digits)."""
    run_id = insert_run(
        session,
        command=command,
        requester=requester,
        started_at=datetime.now(UTC),
        cutoff=cutoff,
        arguments=arguments,
        hcps=hcps,
    )
    if commit:
        session.commit()
    return run_id


def insert_run(
    session: Session,
    *,
    command: str,
    requester: str,
    started_at: datetime,
    ended_at: datetime | None = None,
    outcome: str = "running",
    cutoff: datetime | None = None,
    arguments: str | None = None,
    hcps: int | None = None,
    deleted: RowCounts | None = None,
) -> str:
    """Insert a maintenance run's row as given (a run begun, or one over already: an
    erasure, a prune that found nothing to delete), in the caller's transaction;
    returns its id (32 hex digits)."""
    run_id = uuid.uuid4().hex
    deleted = deleted or RowCounts()
    session.execute(
        sa.insert(_RUNS).values(
            run_id=run_id,
            command=command,
            requester=requester,
            started_at=started_at,
            ended_at=ended_at,
            outcome=outcome,
            cutoff=cutoff,
            arguments=arguments,
            hcps=hcps,
            recommendations=deleted.recommendations,
            recommendation_items=deleted.recommendation_items,
            feedback_events=deleted.feedback_events,
            detail=None,
        )
    )
    return run_id


def add_to_run(session: Session, *, run_id: str, deleted: RowCounts) -> None:
    """Add ``deleted`` to the run's counts, in the caller's transaction (the one that
    deleted them: both commit or neither does)."""
    r = _RUNS.c
    session.execute(
        sa.update(_RUNS)
        .where(r.run_id == run_id)
        .values(
            recommendations=r.recommendations + deleted.recommendations,
            recommendation_items=r.recommendation_items + deleted.recommendation_items,
            feedback_events=r.feedback_events + deleted.feedback_events,
        )
    )


def end_run(
    session: Session,
    *,
    run_id: str,
    outcome: Literal["finished", "interrupted"],
    detail: str | None = None,
    commit: bool = True,
) -> None:
    """Record the end of a run: now, ``outcome`` and why (``detail``); COMMIT unless
    ``commit`` is False."""
    session.execute(
        sa.update(_RUNS)
        .where(_RUNS.c.run_id == run_id)
        .values(ended_at=datetime.now(UTC), outcome=outcome, detail=detail)
    )
    if commit:
        session.commit()


def _run_record(row: MaintenanceRun) -> MaintenanceRecord:
    return MaintenanceRecord(
        run_id=row.run_id,
        command=row.command,
        requester=row.requester,
        started_at=row.started_at,
        ended_at=row.ended_at,
        outcome=row.outcome,
        cutoff=row.cutoff,
        arguments=row.arguments,
        hcps=row.hcps,
        deleted=RowCounts(row.recommendations, row.recommendation_items, row.feedback_events),
        detail=row.detail,
    )


@dataclass(frozen=True)
class StoredRules:
    """A serving rules file as ``serving_rules`` keeps it (see :func:`store_rules`)."""

    fingerprint: str
    sha256: str
    source: str
    content: str
    first_stored_at: datetime


def store_rules(session: Session, *, content: str, source: str) -> bool:
    """Keep a serving rules file's text under its fingerprint (INSERT ... ON CONFLICT
    DO NOTHING: the first process to store it names its path), and COMMIT; True when
    this call stored it."""
    raw = content.encode("utf-8")
    digest = hashlib.sha256(raw).hexdigest()
    row = {
        "fingerprint": digest[:12],
        "sha256": digest,
        "source": source[:1024],
        "content": content,
        "first_stored_at": datetime.now(UTC),
    }
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert(_RULES) if dialect == "postgresql" else sqlite.insert(_RULES)
    stored = cast(
        sa.CursorResult[Any],
        session.execute(
            insert.values(row).on_conflict_do_nothing(index_elements=[_RULES.c.fingerprint])
        ),
    ).rowcount
    session.commit()
    return bool(stored)


def stored_rules(session: Session, fingerprint: str) -> StoredRules | None:
    """The rules file stored under ``fingerprint`` (its first 12 hex digits of SHA-256,
    as answers name it), or None."""
    row = session.get(ServingRulesText, fingerprint.strip().lower())
    if row is None:
        return None
    return StoredRules(
        fingerprint=row.fingerprint,
        sha256=row.sha256,
        source=row.source,
        content=row.content,
        first_stored_at=row.first_stored_at,
    )


def maintenance_runs(session: Session, *, limit: int) -> tuple[list[MaintenanceRecord], int]:
    """The newest ``limit`` maintenance runs, newest first, and how many there are."""
    rows = session.scalars(
        sa.select(MaintenanceRun)
        .order_by(MaintenanceRun.started_at.desc(), MaintenanceRun.run_id)
        .limit(limit)
    )
    total = session.scalar(sa.select(sa.func.count()).select_from(_RUNS))
    return [_run_record(row) for row in rows], int(total or 0)


def furthest_prune(session: Session) -> MaintenanceRecord | None:
    """The prune with the latest cutoff (of those equal, the latest started), however
    it ended; None if the store was never pruned since revision 0008.

    Its cutoff is the one that reaches furthest: every earlier prune's rows are
    older, so whether an HCP's older rows may have gone is told by it alone.
    """
    row = session.scalars(
        sa.select(MaintenanceRun)
        .where(MaintenanceRun.command == "prune")
        .order_by(MaintenanceRun.cutoff.desc(), MaintenanceRun.started_at.desc())
        .limit(1)
    ).first()
    return None if row is None else _run_record(row)


def _first_report(table: sa.Table, contact_types: Sequence[Any]) -> Any:
    """A condition on ``table``'s rows (contact events): the row is a contact, not a
    repeated report of one. Caps count contacts: an item reported delivered by the
    e-mail platform and again by the CRM (each with its own event_id), or delivered
    then completed, is one contact, at its first report (on a tie in time, the
    lowest event_id). An event naming no item, ``(recommendation_id, action_id)``,
    is a contact of its own, and so is each item of an answer.

    A NOT EXISTS on the recommendation_id index, tried only for events naming an
    item: grouping every event by its item cost the single recommendation's history
    read twice the time where no event names one (an outcome or send feed by HCP).
    """
    c = table.c
    earlier = table.alias("earlier")
    e = earlier.c
    return sa.or_(
        c.recommendation_id.is_(None),
        c.action_id.is_(None),
        ~sa.exists().where(
            e.recommendation_id == c.recommendation_id,
            e.action_id == c.action_id,
            e.event_type.in_(contact_types),
            sa.or_(
                e.occurred_at < c.occurred_at,
                sa.and_(e.occurred_at == c.occurred_at, e.event_id < c.event_id),
            ),
        ),
    )


def _counted_contact(table: sa.Table, *, bound: bool = False) -> Any:
    """A condition on ``table``'s rows: the row is a contact as the caps count it, a
    contact event (``CONTACT_EVENT_TYPES``) or a ``PROOF_OF_CONTACT_TYPES`` event naming
    its item, at the item's first report among both (:func:`_first_report`): delivered
    then opened is one contact, at the delivery; opened alone is one, at the open.
    ``bound``: each event type as a bound value of its own, for a statement compiled
    once (an ``in_`` of a plain list is an expanding parameter, rendered anew on every
    execution)."""
    c = table.c

    def types(names: Sequence[str]) -> list[Any]:
        return [sa.literal(t) for t in names] if bound else list(names)

    contact, proof = types(CONTACT_EVENT_TYPES), types(PROOF_OF_CONTACT_TYPES)
    return sa.and_(
        sa.or_(
            c.event_type.in_(contact),
            sa.and_(
                c.event_type.in_(proof),
                c.recommendation_id.is_not(None),
                c.action_id.is_not(None),
            ),
        ),
        _first_report(table, [*contact, *proof]),
    )


def contact_history(
    session: Session, *, hcp_ids: Sequence[str], since: datetime
) -> dict[tuple[str, str], tuple[int, datetime]]:
    """Contacts per (hcp_id, channel) first reported after ``since`` (a window's
    start is not in it: a contact at t counts until t + N days, exclusive).

    Counts contacts as frequency caps count them (:func:`_counted_contact`), one per
    recommended item however often it is reported. Returns
    ``{(hcp_id, channel): (count, last contact in UTC)}``; pairs without contacts
    are absent. One query per 10,000 HCPs.
    """
    table = cast(sa.Table, FeedbackEvent.__table__)
    c = table.c
    history: dict[tuple[str, str], tuple[int, datetime]] = {}
    for chunk in _chunks(hcp_ids, _in_chunk_size(session)):
        rows = session.execute(
            sa.select(c.hcp_id, c.channel, sa.func.count(), sa.func.max(c.occurred_at))
            .where(
                c.hcp_id.in_(chunk),
                c.channel.is_not(None),
                c.occurred_at > since,
                _counted_contact(table),
            )
            .group_by(c.hcp_id, c.channel)
        )
        for hcp_id, channel, count, last in rows:
            # cast: the query excludes NULL channels.
            history[(hcp_id, cast(str, channel))] = (int(count), last)
    return history


def contacts_between(
    session: Session, *, start: datetime, end: datetime, reported: bool = False
) -> pd.DataFrame:
    """Every HCP's contacts first reported at ``start <= t < end``, one row per
    contact (:func:`_counted_contact`, as the caps count them), with their channel:
    columns ``hcp_id``, ``channel``, ``timestamp`` (UTC), ``action_id`` (None when
    the event names none) and ``engaged_at`` (UTC, NaT for none), in time order. What
    a model's history is moved on with
    (:meth:`~nextbest.learning.scoring.ScoringModel.advanced`); contacts without a
    channel are left out. With ``reported``, also when the store received each one
    (``reported_at``) and its engagement (``engagement_reported_at``: the first of its
    engagement events received; NaT for none), for a replay that moves the history
    only by what a server could have read at the time
    (:func:`~nextbest.loop.evidence.known_by`).

    A contact's engagement: the first ``ENGAGEMENT_EVENT_TYPES`` event of its
    recommendation from ``start`` on, at any time, as retraining counts a logged
    decision engaged; a completed contact is its own engagement. A contact that
    names no recommendation (a send or a call nextbest did not suggest) is engaged by
    an engagement event that names none either, of its HCP and channel, within
    :data:`~nextbest.features.history.ENGAGEMENT_WAIT_DAYS` after it and before the
    HCP's next such contact on the channel: an open belongs to the latest send."""
    table = cast(sa.Table, FeedbackEvent.__table__)
    c = table.c
    engagement = table.alias("engagement")
    first_engaged = (
        sa.select(
            engagement.c.recommendation_id,
            sa.func.min(engagement.c.occurred_at).label("engaged_at"),
            sa.func.min(engagement.c.received_at).label("engagement_reported_at"),
        )
        .where(
            engagement.c.event_type.in_(ENGAGEMENT_EVENT_TYPES),
            engagement.c.recommendation_id.is_not(None),
            engagement.c.occurred_at >= start,
        )
        .group_by(engagement.c.recommendation_id)
        .subquery()
    )
    statement = (
        sa.select(
            c.hcp_id,
            c.channel,
            c.occurred_at,
            c.action_id,
            sa.case(
                (c.event_type.in_(ENGAGEMENT_EVENT_TYPES), c.occurred_at),
                else_=first_engaged.c.engaged_at,
            ),
        )
        .outerjoin(first_engaged, first_engaged.c.recommendation_id == c.recommendation_id)
        .where(
            c.channel.is_not(None),
            c.occurred_at >= start,
            c.occurred_at < end,
            _counted_contact(table),
        )
        .order_by(c.occurred_at, c.event_id)
    )
    statement = statement.add_columns(c.recommendation_id.is_not(None))
    # A column at a time (a server reads a month of every HCP's contacts each day).
    columns = ["hcp_id", "channel", "timestamp", "action_id", "engaged_at", "named"]
    times: tuple[str, ...] = ("timestamp", "engaged_at")
    if reported:
        statement = statement.add_columns(
            c.received_at,
            sa.case(
                (c.event_type.in_(ENGAGEMENT_EVENT_TYPES), c.received_at),
                else_=first_engaged.c.engagement_reported_at,
            ),
        )
        columns += ["reported_at", "engagement_reported_at"]
        times += ("reported_at", "engagement_reported_at")
    contacts = _read_frame(session, statement, columns, times=times)
    wait = timedelta(days=ENGAGEMENT_WAIT_DAYS)
    reported_columns = ["engagement_reported_at"] if reported else []
    unnamed = _read_frame(
        session,
        sa.select(c.hcp_id, c.channel, c.occurred_at, *([c.received_at] if reported else [])).where(
            c.event_type.in_([t for t in ENGAGEMENT_EVENT_TYPES if t not in CONTACT_EVENT_TYPES]),
            c.recommendation_id.is_(None),
            c.channel.is_not(None),
            c.occurred_at >= start,
            c.occurred_at < end + wait,
        ),
        ["hcp_id", "channel", "engaged_at", *reported_columns],
        times=("engaged_at", *reported_columns),
    )
    _engage_unnamed(contacts, unnamed, wait)
    return contacts.drop(columns="named")


def _engage_unnamed(contacts: pd.DataFrame, engagements: pd.DataFrame, wait: timedelta) -> None:
    """Set ``engaged_at`` of the contacts that name no recommendation (``named``
    false) and have none, in place: the first of ``engagements`` (columns ``hcp_id``,
    ``channel``, ``engaged_at``) whose latest contact of the same HCP and channel at or
    before it, within ``wait``, is the contact. That latest contact may name a
    recommendation: an open after a suggested send is that send's (its own events
    engage it), not an earlier unsuggested one's. ``contacts`` is in time order. An
    ``engagement_reported_at`` column of ``engagements`` is set with it (the first
    engagement's)."""
    if not len(engagements) or not len(contacts):
        return
    every = contacts[["hcp_id", "channel", "timestamp", "named"]].reset_index()
    linked = pd.merge_asof(
        engagements.sort_values("engaged_at", kind="stable"),
        every.sort_values("timestamp", kind="stable"),
        left_on="engaged_at",
        right_on="timestamp",
        by=["hcp_id", "channel"],
        direction="backward",
        tolerance=pd.Timedelta(wait),
    ).dropna(subset=["index"])
    linked = linked[~linked["named"].astype(bool)]
    columns = ["engaged_at", *[c for c in ("engagement_reported_at",) if c in engagements]]
    # The first engagement of each contact: ``engagements`` are in time order.
    first = linked.groupby("index")[columns].first()
    rows = first.index.to_numpy(dtype=np.int64)
    fill = contacts.loc[rows, "engaged_at"].isna().to_numpy()
    for column in columns:
        contacts.loc[rows[fill], column] = first[column].to_numpy()[fill]


@dataclass(frozen=True)
class ServingHistory:
    """What the serving rules read for some HCPs (see :func:`serving_history`).

    ``counts[i][(hcp_id, channel)]``: contacts after ``windows[i]`` (a window's start
    is out of it: what happened at t binds until t + N days, exclusive, the time an
    explanation says the rule lifts); ``last``: the latest contact after the oldest
    window start; ``dismissed[(hcp_id, action_id)]``:
    the reason (or event type) of the pair's latest decision when that is a
    dismissal or a snooze (not an acceptance), and ``dismissed_at`` for the same
    pairs: when it holds from (when it was, or the later day the answer it names
    was decided for: a decision on a plan fetched ahead), and whether it was a
    snooze; ``consent[(hcp_id, channel)]``: the latest consent event of the HCP on
    ``channel`` (None: on every channel), when it was and whether it withdrew
    consent (an ``opted_out``; on a tie with an ``opted_in``, the withdrawal).
    ``consent_unmatched[(hcp_id, name, withdrawn)]``: when the latest opt-out
    (``withdrawn`` True) and the latest opt-in (False) stored with their channel as
    named while no model was served happened (``name`` as catalogs spell it, not yet
    read against a catalog: 'e_mail', 'fax'), left for the rules to read against the
    served catalog. Nothing after ``until``, but for consent: read over all time, a
    withdrawal applies to every decision made after
    it arrived, whatever day the decision is for.
    """

    counts: list[dict[tuple[str, str], int]]
    last: dict[tuple[str, str], datetime]
    dismissed: dict[tuple[str, str], str]
    dismissed_at: dict[tuple[str, str], tuple[datetime, bool]] = field(default_factory=dict)
    consent: dict[tuple[str, str | None], tuple[datetime, bool]] = field(default_factory=dict)
    # Read with ``contact_times`` only: per HCP and channel (None: none named), when
    # each contact after the oldest window's start was, newest first.
    contact_times: dict[tuple[str, str | None], tuple[datetime, ...]] | None = None
    consent_unmatched: dict[tuple[str, str, bool], datetime] = field(default_factory=dict)
    # (hcp_id, action_id) -> the latest contact naming the action (its item's first
    # report) after ``repeated_since``; read only with it.
    sent: dict[tuple[str, str], datetime] = field(default_factory=dict)


_SERVING_HISTORY_SQL: dict[tuple[int, bool, bool, bool, bool], Any] = {}


@dataclass(frozen=True)
class _DriverQuery:
    """A statement compiled once and run on the driver's cursor directly.

    Used on the two paths every served answer takes: its HCP's history read and
    its recommendation-log rows. There, SQLAlchemy's execution layer (execution
    context, parameter and result processing per call) cost about three times the
    SQLite query itself, and on PostgreSQL two thirds of the log writer's CPU for
    a few answers. This keeps what that layer does for one statement, done
    once: the SQL text, the positional order of
    its parameters with the literal ones filled in, and the type conversions of
    the dialect (a timestamp parameter becomes SQLite's stored text, a timestamp
    result becomes an aware UTC datetime again). The results are the same rows
    (tests/service/test_serving_history_one_hcp.py compares both paths on SQLite
    and PostgreSQL). A dialect with named parameters (psycopg) is compiled with
    its positional ``%s`` style, which the driver takes as well.
    """

    sql: str
    # Per position: (parameter name or None for a literal, literal value, bind
    # processor); None for a parameter of ``repeated``, converted before.
    binds: tuple[tuple[str | None, Any, Callable[[Any], Any] | None], ...]
    # Per result column that the dialect converts: (its position, its result processor)
    results: tuple[tuple[int, Callable[[Any], Any]], ...]
    # The parameters with a bind processor that the SQL holds more than once (the
    # history read's window start and end): converted once per execution, not at
    # each place (a timestamp's conversion to SQLite's text is about 2 us).
    repeated: tuple[tuple[str, Callable[[Any], Any]], ...] = ()

    @classmethod
    def compile(
        cls,
        statement: Any,
        dialect: sa.Dialect,
        params: Sequence[str],
        *,
        column_keys: Sequence[str] | None = None,
    ) -> _DriverQuery:
        """``params``: the names given at each execution; other parameters are literals."""
        dialect = _positional(dialect)
        compiled = statement.compile(dialect=dialect, column_keys=column_keys)
        if not compiled.positional or compiled.positiontup is None:
            raise ValueError(f"{dialect.name}: expected a positional parameter style")
        binds = []
        for name in compiled.positiontup:
            bind = compiled.binds[name]
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if name in params:
                binds.append((name, None, process))
            else:
                value = bind.effective_value
                binds.append((None, value if process is None else process(value), None))
        places = Counter(name for name, _, process in binds if process is not None)
        repeated = {name: process for name, _, process in binds if name and places[name] > 1}
        results = tuple(
            (i, process)
            for i, column in enumerate(getattr(statement, "selected_columns", ()))
            if (process := column.type.dialect_impl(dialect).result_processor(dialect, None))
            is not None
        )
        return cls(
            compiled.string,
            tuple((n, v, None if n in repeated else p) for n, v, p in binds),
            results,
            tuple(repeated.items()),
        )

    @contextmanager
    def _cursor(self, connection: Connection, values: Any) -> Iterator[Any]:
        """A driver cursor whose errors come out as SQLAlchemy's execution would raise
        them: wrapped in :class:`sqlalchemy.exc.DBAPIError`, and a connection the
        server dropped invalidated (``connection_invalidated`` set), so callers and
        the pool handle both paths alike."""
        dialect = connection.dialect
        raw = connection.connection.dbapi_connection
        cursor = None
        try:
            # Inside: a connection closed under the pool fails here already.
            cursor = raw.cursor()  # type: ignore[union-attr]
            yield cursor
        except dialect.loaded_dbapi.Error as exc:
            lost = dialect.is_disconnect(exc, raw, cursor)
            if lost:
                connection.invalidate(exc)
            raise sa.exc.DBAPIError.instance(
                self.sql,
                values,
                exc,
                dialect.loaded_dbapi.Error,
                connection_invalidated=lost,
                hide_parameters=True,
                dialect=dialect,
            ) from exc
        finally:
            if cursor is not None:
                with suppress(dialect.loaded_dbapi.Error):  # its connection may be gone
                    cursor.close()

    def values(self, params: dict[str, Any]) -> list[Any]:
        """The positional parameters of one execution, converted as the dialect does."""
        if self.repeated:
            params = {**params, **{name: process(params[name]) for name, process in self.repeated}}
        return [
            value if name is None else params[name] if process is None else process(params[name])
            for name, value, process in self.binds
        ]

    def execute(self, connection: Connection, params: dict[str, Any]) -> None:
        """Run a statement without results once, in the connection's transaction."""
        values = self.values(params)
        with self._cursor(connection, values) as cursor:
            cursor.execute(self.sql, values)

    def execute_many(self, connection: Connection, rows: Sequence[dict[str, Any]]) -> None:
        """Run a statement without results once per row, in the connection's transaction."""
        values = [self.values(row) for row in rows]
        with self._cursor(connection, values) as cursor:
            cursor.executemany(self.sql, values)

    def rows(self, connection: Connection, params: dict[str, Any]) -> list[Sequence[Any]]:
        values = self.values(params)
        with self._cursor(connection, values) as cursor:
            fetched = cursor.execute(self.sql, values).fetchall()
        return self.processed(fetched)

    def processed(self, fetched: list[tuple[Any, ...]]) -> list[Sequence[Any]]:
        """The driver's rows with the dialect's result conversions applied, to the
        columns that have one only (of the history read's, its time)."""
        if not self.results:
            return list(fetched)
        out: list[Sequence[Any]] = []
        for row in fetched:
            values = list(row)
            for i, process in self.results:
                values[i] = process(values[i])
            out.append(values)
        return out


_DRIVER_HISTORY: dict[tuple[str, int, bool, bool, bool], _DriverQuery] = {}
_DRIVER_INSERTS: dict[tuple[str, str, tuple[str, ...]], _DriverQuery] = {}
_POSITIONAL: dict[type, sa.Dialect] = {}


def _positional(dialect: sa.Dialect) -> sa.Dialect:
    """``dialect``, or one of its kind with positional ``%s`` parameters."""
    if dialect.positional:
        return dialect
    twin = _POSITIONAL.get(type(dialect))
    if twin is None:
        twin = _POSITIONAL[type(dialect)] = cast(Any, type(dialect))(paramstyle="format")
    return twin


def _one_hcp_query(dialect: sa.Dialect, shape: tuple[int, bool, bool, bool]) -> _DriverQuery:
    """The single-HCP history statement of ``shape``, compiled once per dialect."""
    key = (dialect.name, *shape)
    query = _DRIVER_HISTORY.get(key)
    if query is None:
        statement = _serving_history_statement(*shape, one_hcp=True)
        names = [f"since_{i}" for i in range(shape[0])] + ["hcp_id", "until"]
        if shape[1]:
            names.append("dismissed_since")
        if shape[3]:
            names.append("repeated_since")
        query = _DRIVER_HISTORY[key] = _DriverQuery.compile(statement, dialect, names)
    return query


def _serving_history_statement(
    n_windows: int,
    dismissals: bool,
    per_contact: bool = False,
    repeats: bool = False,
    *,
    one_hcp: bool,
) -> Any:
    """One statement, built once per shape: contacts per window (conditional
    counts over the oldest window) UNION ALL dismissals UNION ALL the latest contact
    naming each action (``repeats``: for ``repeat_days``) UNION ALL consent events
    (always: a withdrawn consent applies whatever the rules).

    ``per_contact``: a row per contact instead of per HCP and channel, each flagging
    the windows it falls in, for an explanation that says when a cap lifts (the
    counts are summed from them). ``one_hcp`` binds a single ``hcp_id``
    (``= :hcp_id``) instead of an expanding ``IN``: a single recommendation then
    skips re-rendering the SQL per call.
    """
    key = (n_windows, dismissals, per_contact, repeats, one_hcp)
    statement = _SERVING_HISTORY_SQL.get(key)
    if statement is not None:
        return statement
    table = cast(sa.Table, FeedbackEvent.__table__)
    c = table.c
    of_hcps: Any = (
        c.hcp_id == sa.bindparam("hcp_id")
        if one_hcp
        else c.hcp_id.in_(sa.bindparam("ids", expanding=True))
    )
    # The event types as one bound value each: ``in_`` of a plain list would be an
    # expanding parameter, rendered anew on every execution.
    decision_types = [sa.literal(t) for t in DECISION_EVENT_TYPES]
    parts: list[sa.Select[Any]] = []
    if n_windows:
        within = [c.occurred_at > sa.bindparam(f"since_{i}") for i in range(n_windows)]
        contacts = sa.select(
            sa.literal(0).label("kind"),
            c.hcp_id,
            c.channel.label("key"),
            (c.occurred_at if per_contact else sa.func.max(c.occurred_at)).label("at"),
            sa.cast(sa.null(), sa.String).label("reason"),
            sa.cast(sa.null(), sa.String).label("event_id"),
            sa.cast(sa.null(), UTCDateTime()).label("held_from"),
            *[
                (
                    sa.case((after, 1), else_=0)
                    if per_contact
                    else sa.func.count(sa.case((after, 1)))
                ).label(f"n{i}")
                for i, after in enumerate(within)
            ],
        ).where(
            of_hcps,
            # A contact without a channel (key NULL) counts in the all-channel
            # budget: the HCP was contacted; no channel's own cap counts it.
            c.occurred_at > sa.bindparam("since_0"),
            c.occurred_at <= sa.bindparam("until"),
            # One contact per recommended item, at its first report; an open of an
            # item never reported delivered is its contact.
            _counted_contact(table, bound=True),
        )
        parts.append(contacts if per_contact else contacts.group_by(c.hcp_id, c.channel))
    if dismissals:
        # A decision on an answer decided for a later time than it was served (a plan
        # fetched for a day ahead) holds from that time: its window counts from the
        # later of the two.
        answer = _RECOMMENDATIONS.c
        ahead = sa.case((answer.decided_for > answer.created_at, answer.decided_for))
        parts.append(
            sa.select(
                # 1: a dismissal, 2: a snooze (each suppresses for its own window),
                # 3: an acceptance (lifts either when it is the latest decision).
                sa.case(
                    (c.event_type == sa.literal("snoozed"), 2),
                    (c.event_type == sa.literal("accepted"), 3),
                    else_=1,
                ).label("kind"),
                c.hcp_id,
                c.action_id.label("key"),
                c.occurred_at.label("at"),
                sa.func.coalesce(c.reason, c.event_type).label("reason"),
                c.event_id,
                ahead.label("held_from"),
                *[sa.cast(sa.null(), sa.Integer).label(f"n{i}") for i in range(n_windows)],
            )
            .select_from(
                table.outerjoin(_RECOMMENDATIONS, answer.recommendation_id == c.recommendation_id)
            )
            .where(
                of_hcps,
                c.event_type.in_(decision_types),
                c.action_id.is_not(None),
                sa.or_(
                    c.occurred_at > sa.bindparam("dismissed_since"),
                    ahead > sa.bindparam("dismissed_since"),
                ),
                c.occurred_at <= sa.bindparam("until"),
            )
        )
    if repeats:
        parts.append(
            sa.select(
                # 8: the latest contact naming an action (a counted one: its item's first
                # report), for repeat_days.
                sa.literal(8).label("kind"),
                c.hcp_id,
                c.action_id.label("key"),
                sa.func.max(c.occurred_at).label("at"),
                sa.cast(sa.null(), sa.String).label("reason"),
                sa.cast(sa.null(), sa.String).label("event_id"),
                sa.cast(sa.null(), UTCDateTime()).label("held_from"),
                *[sa.cast(sa.null(), sa.Integer).label(f"n{i}") for i in range(n_windows)],
            )
            .where(
                of_hcps,
                c.action_id.is_not(None),
                c.occurred_at > sa.bindparam("repeated_since"),
                c.occurred_at <= sa.bindparam("until"),
                _counted_contact(table, bound=True),
            )
            .group_by(c.hcp_id, c.action_id)
        )
    parts.append(
        sa.select(
            # 4: consent withdrawn, 5: given again (the latest of an HCP and channel
            # decides); 6 and 7: the same, their channel to be read against the catalog.
            sa.case(
                (
                    sa.and_(
                        c.event_type == sa.literal("opted_out"),
                        c.channel_unmatched.is_(sa.true()),
                    ),
                    6,
                ),
                (c.event_type == sa.literal("opted_out"), 4),
                (c.channel_unmatched.is_(sa.true()), 7),
                else_=5,
            ).label("kind"),
            c.hcp_id,
            c.channel.label("key"),
            # When it happened, but no later than it arrived: an opt-in dated a few
            # minutes ahead (allowed clock skew) must not outrank an opt-out sent
            # after it.
            sa.case((c.occurred_at > c.received_at, c.received_at), else_=c.occurred_at).label(
                "at"
            ),
            sa.cast(sa.null(), sa.String).label("reason"),
            c.event_id,
            sa.cast(sa.null(), UTCDateTime()).label("held_from"),
            *[sa.cast(sa.null(), sa.Integer).label(f"n{i}") for i in range(n_windows)],
        ).where(
            of_hcps,
            # Written out, not bound: the planner then reads it as the partial
            # index's own condition (ix_feedback_events_consent) and uses it.
            # No time bound: a decision for a past day (a send made now) still
            # honours a withdrawal received since.
            sa.text(CONSENT_ROWS),
        )
    )
    statement = parts[0] if len(parts) == 1 else sa.union_all(*parts)
    _SERVING_HISTORY_SQL[key] = statement
    return statement


def serving_history(
    db: Session | Connection,
    *,
    hcp_ids: Sequence[str],
    windows: Sequence[datetime],
    dismissed_since: datetime | None,
    until: datetime,
    contact_times: bool = False,
    repeated_since: datetime | None = None,
) -> ServingHistory:
    """Contacts counted over each window and dismissals, for ``hcp_ids``, in ONE query.

    ``db`` is a session or a plain Core connection (the recommendation routes
    read through a connection: no ORM session to build and close per request).
    ``windows`` are window starts, oldest first (the oldest also bounds ``last``);
    ``dismissed_since`` None skips dismissals; nothing after ``until`` (the decision
    time: a plan for a past day does not see what happened after it). Same answers as
    :func:`contact_history` per window plus :func:`dismissals`, for a third of the
    round trips and statement building (the statement is built once and cached),
    which is what a single recommendation pays on its hot path. One query per
    10,000 HCPs. ``contact_times`` (for an explanation: when a cap lifts): the same
    query gives each contact's time too (``ServingHistory.contact_times``), one row
    per contact rather than per HCP and channel, so that the times are those counted.
    ``repeated_since`` (None: not read): the latest contact naming each action after
    it (``ServingHistory.sent``), for ``repeat_days``.
    """
    per_contact = contact_times and bool(windows)
    if not hcp_ids:
        return _fold_history(iter(()), len(windows), per_contact)
    params = _history_params(windows, dismissed_since, until, repeated_since)
    connection = db if isinstance(db, Connection) else db.connection()
    unique = list(dict.fromkeys(hcp_ids))
    shape = (len(windows), dismissed_since is not None, per_contact, repeated_since is not None)
    rows: Iterator[Any]
    if len(unique) == 1:
        one = {**params, "hcp_id": unique[0]}
        if connection.dialect.name in ("sqlite", "postgresql"):  # the hot path: _DriverQuery
            rows = iter(_one_hcp_query(connection.dialect, shape).rows(connection, one))
        else:
            statement = _serving_history_statement(*shape, one_hcp=True)
            rows = iter(connection.execute(statement, one))
    else:
        statement = _serving_history_statement(*shape, one_hcp=False)
        rows = (
            row
            for chunk in _chunks(unique, _in_chunk_size(db))
            for row in connection.execute(statement, {**params, "ids": chunk})
        )
    return _fold_history(rows, len(windows), per_contact)


async def serving_history_async(
    pool: AsyncConnectionPool,
    dialect: sa.Dialect,
    *,
    hcp_id: str,
    windows: Sequence[datetime],
    dismissed_since: datetime | None,
    until: datetime,
    repeated_since: datetime | None = None,
) -> ServingHistory:
    """:func:`serving_history` of one HCP on PostgreSQL, read on the event loop.

    The same statement on the driver's cursor (``dialect`` compiles it), taken
    from an asyncio connection pool: while the query travels to the database and
    back the worker serves other requests. A connection the server dropped is
    discarded and the read runs once more; errors come out as SQLAlchemy's.
    """
    shape = (len(windows), dismissed_since is not None, False, repeated_since is not None)
    query = _one_hcp_query(dialect, shape)
    params = _history_params(windows, dismissed_since, until, repeated_since)
    values = query.values({**params, "hcp_id": hcp_id})
    try:
        try:
            fetched = await _fetch(pool, query.sql, values)
        except (PoolTimeout, psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable):
            # No connection to be had, or a statement timed out (a held lock, an
            # overloaded database): asking again would only wait again.
            raise
        except psycopg.OperationalError:
            # Most likely a connection the server dropped (a restart drops them
            # all): the pool discards the broken ones, the read runs once more.
            await pool.check()
            fetched = await _fetch(pool, query.sql, values)
    except psycopg.Error as exc:
        raise sa.exc.DBAPIError.instance(
            query.sql, values, exc, psycopg.Error, hide_parameters=True, dialect=dialect
        ) from exc
    return _fold_history(iter(query.processed(fetched)), len(windows))


async def _fetch(pool: AsyncConnectionPool, sql: str, values: list[Any]) -> list[tuple[Any, ...]]:
    async with pool.connection() as connection:
        cursor = await connection.execute(sql, values)
        return await cursor.fetchall()


# The lock a served recommendation takes on each table it uses (PostgreSQL's modes):
# its live history read, then its log's inserts.
_SERVING_LOCKS = (
    (_FEEDBACK.name, "ACCESS SHARE"),
    (_RECOMMENDATIONS.name, "ROW EXCLUSIVE"),
    (_ITEMS.name, "ROW EXCLUSIVE"),
)


def locked_serving_table(connection: Connection) -> str | None:
    """The first table a served recommendation reads or writes that another session
    holds locked against it, or waits to lock (a ``LOCK TABLE`` or an ``ALTER TABLE``
    left in an open transaction, a ``VACUUM FULL``, a ``CREATE INDEX`` without
    ``CONCURRENTLY``); None when there is none, and always on SQLite, where a
    writer's lock shows as the recommendation log store failing.

    Requests wait behind such a lock for their ``lock_timeout`` and are refused
    with 503. Each lock is asked for with ``NOWAIT``, so it is taken or refused at
    once, and it is held until the caller ends the transaction (closing the
    connection rolls it back): no row is read or written.
    """
    if connection.dialect.name != "postgresql":
        return None
    for table, mode in _SERVING_LOCKS:
        try:
            connection.exec_driver_sql(f"LOCK TABLE {table} IN {mode} MODE NOWAIT")
        except sa.exc.DBAPIError as exc:
            if isinstance(exc.orig, psycopg.errors.LockNotAvailable):
                return table
            raise
    return None


def _history_params(
    windows: Sequence[datetime],
    dismissed_since: datetime | None,
    until: datetime,
    repeated_since: datetime | None = None,
) -> dict[str, Any]:
    params: dict[str, Any] = {f"since_{i}": when for i, when in enumerate(windows)}
    params["until"] = until
    if dismissed_since is not None:
        params["dismissed_since"] = dismissed_since
    if repeated_since is not None:
        params["repeated_since"] = repeated_since
    return params


def _fold_history(rows: Iterator[Any], n_windows: int, per_contact: bool = False) -> ServingHistory:
    """The rows of :func:`_serving_history_statement` (of ``per_contact``) as a
    :class:`ServingHistory`."""
    counts: list[dict[tuple[str, str], int]] = [{} for _ in range(n_windows)]
    last: dict[tuple[str, str], datetime] = {}
    decided: dict[tuple[str, str], tuple[datetime, str, str, int, datetime]] = {}
    consent: dict[tuple[str, str | None], tuple[datetime, bool]] = {}
    times: dict[tuple[str, str | None], list[datetime]] = {}
    unmatched: dict[tuple[str, str, bool], datetime] = {}
    sent: dict[tuple[str, str], datetime] = {}
    for row in rows:
        kind, hcp_id, key, at, reason, event_id, held_from, *ns = row
        if kind == 0 and per_contact:  # one contact: summed into its pair's counts
            pair = (hcp_id, key)
            times.setdefault(pair, []).append(at)
            if pair not in last or at > last[pair]:
                last[pair] = at
            for i, n in enumerate(ns):
                if n:
                    counts[i][pair] = counts[i].get(pair, 0) + 1
        elif kind == 0:
            last[(hcp_id, key)] = at
            for i, n in enumerate(ns):
                if n:
                    counts[i][(hcp_id, key)] = int(n)
        elif kind == 8:
            sent[(hcp_id, key)] = _as_utc(at)
        elif kind >= 4:
            withdrawn = kind in (4, 6)
            # As stored now, also a row an earlier nextbest stored as sent.
            key = _consent_channel("opted_out" if withdrawn else "opted_in", key)
            # The latest decides; at the same time a withdrawal beats a consent.
            mark = (_as_utc(at), withdrawn)
            if kind in (6, 7) and key is not None:
                # The latest of each kind: read against a catalog, an opt-out of 'fax'
                # withdraws every channel and an opt-in of 'fax' grants nothing, so a
                # later opt-in of the same name may not hide the opt-out.
                before_at = unmatched.get((hcp_id, key, withdrawn))
                if before_at is None or mark[0] > before_at:
                    unmatched[(hcp_id, key, withdrawn)] = mark[0]
            elif (before := consent.get((hcp_id, key))) is None or mark > before:
                consent[(hcp_id, key)] = mark
        else:
            # The latest decision is kept (ties: the larger event id); it holds from
            # the day of the answer it names when that is later (a plan fetched ahead).
            at = _as_utc(at)
            held = at if held_from is None else max(at, _as_utc(held_from))
            stamp = (at, str(event_id), str(reason), int(kind), held)
            seen = decided.get((hcp_id, key))
            if seen is None or stamp[:2] >= seen[:2]:
                decided[(hcp_id, key)] = stamp
    # An acceptance as the latest decision lifts an earlier dismissal or snooze.
    dismissed = {pair: stamp for pair, stamp in decided.items() if stamp[3] != 3}
    return ServingHistory(
        counts=counts,
        last=last,
        dismissed={pair: stamp[2] for pair, stamp in dismissed.items()},
        dismissed_at={pair: (stamp[4], stamp[3] == 2) for pair, stamp in dismissed.items()},
        consent=consent,
        contact_times=(
            {pair: tuple(sorted(ats, reverse=True)) for pair, ats in times.items()}
            if per_contact
            else None
        ),
        consent_unmatched=unmatched,
        sent=sent,
    )


def last_contacts(
    session: Session, *, hcp_ids: Sequence[str], channels: Sequence[str] | None = None
) -> dict[tuple[str, str], datetime]:
    """Most recent contact ever per (hcp_id, channel), for cool-downs (UTC).

    ``channels`` restricts the answer to those channels; None means all.
    """
    contacts: dict[tuple[str, str], datetime] = {}
    for chunk in _chunks(hcp_ids, _in_chunk_size(session)):
        statement = (
            sa.select(
                FeedbackEvent.hcp_id, FeedbackEvent.channel, sa.func.max(FeedbackEvent.occurred_at)
            )
            .where(
                FeedbackEvent.hcp_id.in_(chunk),
                _counted_contact(cast(sa.Table, FeedbackEvent.__table__)),
                FeedbackEvent.channel.is_not(None),
            )
            .group_by(FeedbackEvent.hcp_id, FeedbackEvent.channel)
        )
        if channels is not None:
            statement = statement.where(FeedbackEvent.channel.in_(list(channels)))
        for hcp_id, channel, last in session.execute(statement):
            contacts[(hcp_id, cast(str, channel))] = last  # NULL channels excluded
    return contacts


def dismissals(
    session: Session, *, hcp_ids: Sequence[str], since: datetime
) -> dict[tuple[str, str], str]:
    """Actions an HCP dismissed or snoozed after ``since``, and not accepted since.

    Returns ``{(hcp_id, action_id): reason}`` from the pair's latest decision
    (dismissed, snoozed or accepted) when that is a dismissal or a snooze; when it
    gave no reason, its type (``"dismissed"`` / ``"snoozed"``) stands in. Events
    without an ``action_id`` are ignored.
    """
    latest: dict[tuple[str, str], tuple[str | None, str]] = {}
    for chunk in _chunks(hcp_ids, _in_chunk_size(session)):
        rows = session.execute(
            sa.select(
                FeedbackEvent.hcp_id,
                FeedbackEvent.action_id,
                FeedbackEvent.reason,
                FeedbackEvent.event_type,
            )
            .where(
                FeedbackEvent.hcp_id.in_(chunk),
                FeedbackEvent.event_type.in_(DECISION_EVENT_TYPES),
                FeedbackEvent.action_id.is_not(None),
                FeedbackEvent.occurred_at > since,
            )
            # Oldest first, so the latest decision is the one kept.
            .order_by(FeedbackEvent.occurred_at, FeedbackEvent.event_id)
        )
        for hcp_id, action_id, reason, event_type in rows:
            latest[(hcp_id, cast(str, action_id))] = (reason, event_type)  # NULLs excluded
    return {
        pair: reason or event_type
        for pair, (reason, event_type) in latest.items()
        if event_type != "accepted"
    }


@dataclass(frozen=True)
class Decision:
    """A stored decision event (dismissed, snoozed or accepted) on one HCP and action."""

    event_id: str
    event_type: str
    reason: str | None
    recommendation_id: str | None


def latest_decision(session: Session, hcp_id: str, action_id: str) -> Decision | None:
    """The latest decision on one HCP and action, whenever it was taken; None if none."""
    row = session.execute(
        sa.select(
            FeedbackEvent.event_id,
            FeedbackEvent.event_type,
            FeedbackEvent.reason,
            FeedbackEvent.recommendation_id,
        )
        .where(
            FeedbackEvent.hcp_id == hcp_id,
            FeedbackEvent.action_id == action_id,
            FeedbackEvent.event_type.in_(DECISION_EVENT_TYPES),
        )
        .order_by(FeedbackEvent.occurred_at.desc(), FeedbackEvent.event_id.desc())
        .limit(1)
    ).first()
    return None if row is None else Decision(*row)


def recently_asked_hcps(db: Session | Connection, *, limit: int) -> list[str]:
    """Distinct HCP ids of the newest logged recommendations, most recent first.

    At most ``limit`` ids, read from the newest ``4 * limit`` log rows (the
    ``created_at`` index), so the cost does not grow with the log.
    """
    if limit <= 0:
        return []
    newest = (
        sa.select(Recommendation.hcp_id).order_by(Recommendation.created_at.desc()).limit(4 * limit)
    )
    distinct = dict.fromkeys(hcp for (hcp,) in db.execute(newest))
    return list(distinct)[:limit]


def hcps_logged_for_day(db: Session | Connection, *, day: date, requester_prefix: str) -> set[str]:
    """HCPs with an answer decided for the UTC ``day`` (its ``decided_for``, whenever it
    was logged) for a requester whose name starts with ``requester_prefix`` (``nextbest
    picks (``: any user's send files, each logged with its date since revision 0003).

    Reads the ``decided_for`` index: the day's answers only, however long the log.
    """
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    query = (
        sa.select(Recommendation.hcp_id)
        .where(Recommendation.decided_for >= start)
        .where(Recommendation.decided_for < start + timedelta(days=1))
        .where(Recommendation.requester.startswith(requester_prefix, autoescape=True))
        .distinct()
    )
    return {str(hcp) for (hcp,) in db.execute(query)}


def count_logged_decisions(session: Session, *, since: datetime | None = None) -> int:
    """How many answers are logged (created at or after ``since``; all if None),
    whatever feedback came back for them."""
    query = sa.select(sa.func.count()).select_from(Recommendation)
    if since is not None:
        query = query.where(Recommendation.created_at >= since)
    return int(session.scalar(query) or 0)


def latest_holdout_rate(db: Session | Connection) -> float | None:
    """The holdout rate of the newest logged answer; None when nothing is logged.

    One row through the ``created_at`` index: cheap enough for every start-up. A
    process whose rate differs would hold out other HCPs than the processes that
    logged before it (the draw compares one hash with the rate), so ``picks --log``
    refuses to run and a server worker warns.
    """
    newest = (
        sa.select(Recommendation.holdout_rate).order_by(Recommendation.created_at.desc()).limit(1)
    )
    rate = db.execute(newest).scalar_one_or_none()
    return None if rate is None else float(rate)


def _read_frame(
    session: Session,
    statement: sa.Select[*tuple[Any, ...]],
    columns: list[str],
    *,
    times: Sequence[str] = (),
) -> pd.DataFrame:
    """The rows of ``statement`` as a frame of ``columns``, as the driver returns them;
    the ``times`` columns as ``datetime64[ns, UTC]`` (NaT for NULL).

    For the reads of the whole log: the rows skip SQLAlchemy's per-value result
    processing (ORM rows, a ``datetime`` built and made UTC per timestamp: most of
    the time of such a read) and are converted a column at a time instead. A
    timestamp comes as SQLite's naive UTC text, parsed a column at a time, or on
    PostgreSQL as microseconds since the epoch, computed by the server: both give
    the same instant. Other values come as the driver gives them (SQLite's booleans
    as 0/1): callers convert the columns they return.
    """
    sqlite_rows = session.get_bind().dialect.name == "sqlite"
    at = [columns.index(name) for name in times]
    if not sqlite_rows and at:
        # PostgreSQL's timestamps as integers: read as aware datetime objects, each
        # made UTC, then converted to datetime64 one by one, they took about as much
        # CPU as the rest of a read of the whole log (bench/README.md, "A year of log").
        selected = list(statement.selected_columns)
        statement = statement.with_only_columns(
            *[_epoch_microseconds(c) if i in at else c for i, c in enumerate(selected)],
            maintain_column_froms=True,
        )
    result = session.connection().execute(statement)
    try:
        # The driver's rows: on PostgreSQL, with no timestamp left to convert, they
        # took a fifth less CPU than SQLAlchemy's (bench/README.md, "A year of log").
        rows = result.cursor.fetchall()
    finally:
        result.close()
    frame = pd.DataFrame.from_records(rows, columns=columns, exclude=list(times), nrows=len(rows))
    for name, i in zip(times, at, strict=True):
        if sqlite_rows:
            text = pd.Series([row[i] for row in rows], dtype=object)
            frame[name] = pd.to_datetime(text, utc=True, format="ISO8601")
        else:
            frame[name] = _from_epoch_microseconds([row[i] for row in rows])
    return frame.loc[:, columns]


def _epoch_microseconds(column: Any) -> Any:
    """``column`` (a timestamp) as whole microseconds since 1970-01-01 UTC, a bigint
    computed by PostgreSQL (``extract(epoch ...)`` is an exact numeric there)."""
    return sa.cast(sa.extract("epoch", column) * 1_000_000, sa.BigInteger)


def _from_epoch_microseconds(values: list[int | None]) -> pd.Series:
    """``(n,)`` microseconds since the epoch (None: NULL) as ``datetime64[ns, UTC]``,
    NaT for None."""
    # The smallest int64 is datetime64's NaT.
    micros = np.fromiter(
        (np.iinfo(np.int64).min if v is None else v for v in values),
        dtype=np.int64,
        count=len(values),
    )
    return pd.Series(micros.view("datetime64[us]")).astype("datetime64[ns]").dt.tz_localize(UTC)


def logged_decisions(
    session: Session,
    *,
    since: datetime | None = None,
    model_version: str | None = None,
    details: bool = False,
    outcome_window: timedelta = OUTCOME_WINDOW,
    hcp_outcome_events: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Logged recommendations as ``interactions`` rows, for retraining and OPE.

    One row per recommendation created at or after ``since`` (all if None), ordered by
    time, with columns ``LOGGED_DECISION_COLUMNS``: ``timestamp`` (naive UTC),
    ``action_id`` / ``channel`` / ``content_id`` of the rank-1 item (None for a
    holdout or empty answer), ``engaged`` (int 0/1: any ``ENGAGEMENT_EVENT_TYPES``
    event for it), ``outcome`` (sum of its ``outcome`` values, NaN if none),
    ``propensity`` (rank-1 item's; the holdout rate for a holdout row, NaN for an
    empty non-holdout answer), ``holdout`` (bool), ``recommendation_id``,
    ``model_version``. Two queries, whatever the number of rows, and one more for
    outcomes sent without a recommendation_id: each counts for its HCP's latest
    logged decision (holdout answers included) at most ``outcome_window`` before
    it; ``frame.attrs["outcomes_by_hcp"]`` is ``(counted, matched no decision)``.

    ``model_version`` keeps only the answers served by that version; ``details`` adds
    ``LOGGED_DECISION_DETAIL_COLUMNS`` (``contacted``: int 0/1, any
    ``REACHED_EVENT_TYPES`` event for it, a contact or an open, click or attendance,
    which a holdout answer should never get;
    requester: the API key's name or ``nextbest picks``; purpose, channel filter,
    number of eligible candidates, epsilon and holdout rate of the serving policy,
    the decision time, ``p_no_action``: the probability the serving policy had
    of answering with no action, holdout included, NaN for answers logged before
    migration 0004, ``outcome_named``: whether an outcome event named this
    recommendation, rather than only its HCP, the serving ``policy``, and
    ``split_with`` / ``split_share``: the random split that chose the answering
    version, None / NaN where none did).

    ``hcp_outcome_events``: what :func:`hcp_outcomes` returns for the same ``since``,
    from a caller that reads those events for itself as well (the uplift report),
    so that they are read once; None: read here.
    """
    decisions = (
        sa.select(
            Recommendation.recommendation_id,
            Recommendation.hcp_id,
            Recommendation.created_at,
            Recommendation.holdout,
            Recommendation.holdout_rate,
            Recommendation.model_version,
            Recommendation.requester,
            Recommendation.purpose,
            Recommendation.channel_filter,
            Recommendation.n_candidates,
            Recommendation.epsilon,
            Recommendation.decided_for,
            Recommendation.p_no_action,
            Recommendation.policy,
            Recommendation.split_with,
            Recommendation.split_share,
            RecommendationItem.action_id,
            RecommendationItem.channel,
            RecommendationItem.content_id,
            RecommendationItem.propensity,
        )
        .outerjoin(
            RecommendationItem,
            sa.and_(
                RecommendationItem.recommendation_id == Recommendation.recommendation_id,
                RecommendationItem.rank == 1,
            ),
        )
        .order_by(Recommendation.created_at, Recommendation.recommendation_id)
    )
    feedback = (
        sa.select(
            FeedbackEvent.recommendation_id,
            sa.func.max(
                sa.case((FeedbackEvent.event_type.in_(ENGAGEMENT_EVENT_TYPES), 1), else_=0)
            ).label("engaged"),
            sa.func.max(
                sa.case((FeedbackEvent.event_type.in_(REACHED_EVENT_TYPES), 1), else_=0)
            ).label("contacted"),
            sa.func.sum(
                sa.case((FeedbackEvent.event_type == "outcome", FeedbackEvent.value))
            ).label("outcome"),
        )
        .where(FeedbackEvent.recommendation_id.is_not(None))
        .group_by(FeedbackEvent.recommendation_id)
    )
    if since is not None:
        decisions = decisions.where(Recommendation.created_at >= since)
    if since is not None or model_version is not None:
        feedback = feedback.join(
            Recommendation, Recommendation.recommendation_id == FeedbackEvent.recommendation_id
        )
    if since is not None:
        feedback = feedback.where(Recommendation.created_at >= since)
    if model_version is not None:
        decisions = decisions.where(Recommendation.model_version == model_version)
        feedback = feedback.where(Recommendation.model_version == model_version)

    frame = _read_frame(
        session,
        decisions,
        [
            "recommendation_id",
            "hcp_id",
            "created_at",
            "holdout",
            "holdout_rate",
            "model_version",
            "requester",
            "purpose",
            "channel_filter",
            "n_candidates",
            "epsilon",
            "decided_for",
            "p_no_action",
            "policy",
            "split_with",
            "split_share",
            "action_id",
            "channel",
            "content_id",
            "item_propensity",
        ],
        times=("created_at", "decided_for"),
    )
    outcomes = _read_frame(
        session, feedback, ["recommendation_id", "engaged", "contacted", "outcome"]
    )
    frame = frame.merge(outcomes, on="recommendation_id", how="left")
    frame["outcome"] = pd.to_numeric(frame["outcome"], errors="coerce").astype("float64")
    frame["outcome_named"] = frame["outcome"].notna()
    if hcp_outcome_events is None:
        hcp_outcome_events = hcp_outcomes(session, since=since)
    by_hcp, counts = _outcomes_by_hcp(
        session, frame, hcp_outcome_events, since, model_version, outcome_window
    )
    if len(by_hcp):
        extra = frame["recommendation_id"].map(by_hcp)
        frame["outcome"] = frame["outcome"].add(extra, fill_value=0.0)

    holdout = frame["holdout"].astype(bool)
    frame["timestamp"] = frame["created_at"].dt.tz_localize(None)
    # The time the answer was decided for: when it was served, unless it was asked for
    # another day (older rows have none).
    decided = frame["decided_for"].dt.tz_localize(None)
    frame["decided_for"] = decided.fillna(frame["timestamp"])
    for flag in ("engaged", "contacted"):
        frame[flag] = pd.to_numeric(frame[flag]).fillna(0).astype("int64")
    frame["propensity"] = (
        frame["item_propensity"]
        .astype("float64")
        .where(~holdout, frame["holdout_rate"].astype("float64"))
    )
    for column in ("action_id", "channel", "content_id"):
        # A holdout answer served nothing, whatever rows a caller may have logged.
        frame[column] = frame[column].astype(object).where(~holdout & frame[column].notna(), None)
    frame["holdout"] = holdout
    columns = list(LOGGED_DECISION_COLUMNS)
    if details:
        frame["n_candidates"] = frame["n_candidates"].astype("int64")
        frame["epsilon"] = frame["epsilon"].astype("float64")
        frame["holdout_rate"] = frame["holdout_rate"].astype("float64")
        # NaN for answers logged before the serving policy's value was recorded.
        frame["p_no_action"] = pd.to_numeric(frame["p_no_action"]).astype("float64")
        # NaN (and None) where no random split chose the answering version.
        frame["split_share"] = pd.to_numeric(frame["split_share"]).astype("float64")
        frame["split_with"] = (
            frame["split_with"].astype(object).where(frame["split_with"].notna(), None)
        )
        columns += LOGGED_DECISION_DETAIL_COLUMNS
    out = frame.loc[:, columns].reset_index(drop=True)
    out.attrs["outcomes_by_hcp"] = counts
    return out


def decision_times(created_at: pd.Series, decided_for: pd.Series) -> pd.Series:
    """When each logged answer takes effect (UTC): the date it was asked for when that
    is later than when it was served (a plan for next Monday), else when it was served
    (an answer dated in the past is acted on now; older rows have no date)."""
    created = pd.to_datetime(created_at, utc=True)
    decided = pd.to_datetime(decided_for, utc=True).fillna(created)
    return decided.where(decided > created, created)


def hcp_outcomes(session: Session, *, since: datetime | None = None) -> pd.DataFrame:
    """The ``outcome`` events sent without a recommendation_id (an NRx feed by HCP),
    occurred at or after ``since`` (all if None): ``hcp_id``, ``at`` (UTC), ``value``."""
    loose = sa.select(FeedbackEvent.hcp_id, FeedbackEvent.occurred_at, FeedbackEvent.value).where(
        FeedbackEvent.event_type == "outcome", FeedbackEvent.recommendation_id.is_(None)
    )
    if since is not None:
        loose = loose.where(FeedbackEvent.occurred_at >= since)
    return _read_frame(session, loose, ["hcp_id", "at", "value"], times=("at",))


def _outcomes_by_hcp(
    session: Session,
    frame: pd.DataFrame,
    events: pd.DataFrame,
    since: datetime | None,
    model_version: str | None,
    window: timedelta,
) -> tuple[pd.Series, tuple[int, int]]:
    """Outcome values sent without a recommendation_id, summed per recommendation_id
    of the decision they count for (see :func:`logged_decisions`), and ``(events
    counted, events that matched no decision)``; ``events`` as :func:`hcp_outcomes`
    returns them."""
    if events.empty:
        return pd.Series(dtype="float64"), (0, 0)
    columns = ["recommendation_id", "hcp_id", "created_at", "decided_for"]
    anchors = frame[columns]
    if model_version is not None or since is not None:
        # The latest decision of any version takes the outcome, not an older one of
        # this; and one made just before ``since`` may take an outcome after it.
        every = sa.select(
            Recommendation.recommendation_id,
            Recommendation.hcp_id,
            Recommendation.created_at,
            Recommendation.decided_for,
        )
        if since is not None:
            every = every.where(Recommendation.created_at >= since - window)
        anchors = _read_frame(session, every, columns, times=("created_at", "decided_for"))
    # By when each decision takes effect: plans logged ahead for later weeks each
    # take their own week's outcomes, not the last one logged.
    anchors = anchors.assign(
        effective=decision_times(anchors["created_at"], anchors["decided_for"])
    )
    matched = pd.merge_asof(
        events.sort_values("at"),
        anchors.sort_values("effective"),
        left_on="at",
        right_on="effective",
        by="hcp_id",
        direction="backward",
        tolerance=pd.Timedelta(window),
    )
    found = matched["recommendation_id"].notna()
    # Counted: for a decision of ``frame``; an outcome of a decision outside it (before
    # ``since``, or of another version) is neither counted here nor unmatched.
    counted = found & matched["recommendation_id"].isin(frame["recommendation_id"])
    sums = matched[counted].groupby("recommendation_id")["value"].sum().astype("float64")
    return sums, (int(counted.sum()), int((~found).sum()))
