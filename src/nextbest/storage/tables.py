"""ORM models of the recommendation log and the feedback store.

The schema itself is owned by the Alembic migrations in ``storage/migrations``;
these models must stay identical to it (a test compares them on both backends).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import conv

from nextbest.limits import STORED_LENGTHS

# Deterministic constraint and index names, identical on SQLite and PostgreSQL, so
# later migrations can refer to them by name.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def folded_hcp_id(column: Any) -> Any:
    """``column`` (an ``hcp_id``) as the erasure's near-id check compares ids: lower
    case, leading zeros dropped. Written with a literal ``'0'``: an index on the
    expression serves only a query that spells it the same, a bound value included
    (SQLite compares the two expressions as written)."""
    return sa.func.lower(sa.func.ltrim(column, sa.literal_column("'0'")))


def _text(name: str) -> sa.String:
    """The type of the text column ``name``: as wide as the edges that check values bound
    for it allow (:data:`nextbest.limits.STORED_LENGTHS`)."""
    return sa.String(STORED_LENGTHS[name])


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp that is always written and read back as timezone-aware UTC.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so the value is
    stored as naive UTC text in one fixed format (which also keeps ``<``, ``>=``
    and ``max`` correct there). Naive datetimes given by callers are taken as UTC.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        # SQLite's DATETIME formatter would silently drop a non-UTC offset; after
        # the conversion above the offset is always zero, so dropping it is exact.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):  # pragma: no cover - driver contract
            raise TypeError(f"expected a datetime from the database, got {type(value)!r}")
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of the storage tables (one ``MetaData`` for Alembic)."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class Recommendation(Base):
    """One served answer: who asked, for whom, with which model and policy."""

    __tablename__ = "recommendations"
    __table_args__ = (
        # Medical and promotional content must never be mixed up: refuse anything else.
        # Migration 0001 named it in full and the naming convention prefixed it again,
        # so every database has this name; a migration dropping it must use it.
        sa.CheckConstraint(
            "purpose IN ('promotional', 'medical')",
            name=conv("ck_recommendations_ck_recommendations_purpose"),
        ),
    )

    recommendation_id: Mapped[str] = mapped_column(_text("recommendation_id"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    hcp_id: Mapped[str] = mapped_column(_text("hcp_id"), index=True)
    # The API key's *name*; the key itself never reaches the database.
    requester: Mapped[str] = mapped_column(_text("requester"))
    purpose: Mapped[str] = mapped_column(sa.String(16))
    channel_filter: Mapped[str | None] = mapped_column(_text("channel_filter"))
    model_version: Mapped[str] = mapped_column(_text("model_version"))
    holdout: Mapped[bool] = mapped_column(sa.Boolean)
    policy: Mapped[str] = mapped_column(sa.String(32))
    epsilon: Mapped[float] = mapped_column(sa.Float)
    holdout_rate: Mapped[float] = mapped_column(sa.Float)
    # The decision time the answer was made for (a request's date: a plan for
    # tomorrow is served today); None before migration 0003. Indexed since 0012:
    # `picks --log` looks up the answers decided for its day.
    decided_for: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    n_candidates: Mapped[int] = mapped_column(sa.Integer)
    # The probability the serving policy had of answering this request with no
    # action, holdout included, as it computed it when answering (the live rules
    # that emptied a list cannot be replayed later); None before migration 0004.
    p_no_action: Mapped[float | None] = mapped_column(sa.Float)
    # The rep a call plan's answer was planned for (its rep_id; the requester is the
    # key that asked, an admin's for a plan fetched on a rep's behalf); None for
    # other answers and before migration 0005.
    rep_id: Mapped[str | None] = mapped_column(_text("rep_id"))
    # The fingerprint of the serving rules the answering worker held (caps,
    # cool-downs, withdrawn actions; see ServingRules.fingerprint); None before
    # migration 0006.
    rules_fingerprint: Mapped[str | None] = mapped_column(sa.String(64))
    # The request's k (items asked for; a plan's answers: 1 per HCP) and, for
    # softmax exploration, its temperature (NULL for epsilon-greedy); NULL for rows
    # stored before migration 0010.
    k_requested: Mapped[int | None] = mapped_column(sa.Integer)
    temperature: Mapped[float | None] = mapped_column(sa.Float)
    # With a challenger answering a share of the HCPs: the version the random draw
    # per HCP could have chosen instead of model_version, and the probability it had
    # of choosing model_version; NULL where no draw chose, and before migration 0014.
    split_with: Mapped[str | None] = mapped_column(_text("model_version"))
    split_share: Mapped[float | None] = mapped_column(sa.Float)


class RecommendationItem(Base):
    """One ranked item of a served answer, with the propensity it was served with."""

    __tablename__ = "recommendation_items"

    recommendation_id: Mapped[str] = mapped_column(
        _text("recommendation_id"),
        sa.ForeignKey("recommendations.recommendation_id", ondelete="CASCADE"),
        primary_key=True,
    )
    rank: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    action_id: Mapped[str] = mapped_column(_text("action_id"))
    channel: Mapped[str] = mapped_column(_text("channel"))
    content_id: Mapped[str] = mapped_column(_text("content_id"))
    score: Mapped[float] = mapped_column(sa.Float)
    expected_uplift: Mapped[float] = mapped_column(sa.Float)
    p_engage: Mapped[float] = mapped_column(sa.Float)
    propensity: Mapped[float] = mapped_column(sa.Float)
    explored: Mapped[bool] = mapped_column(sa.Boolean)
    # The reasons the item was shown with, a JSON list of strings; NULL for rows
    # stored before migration 0007.
    reasons: Mapped[str | None] = mapped_column(sa.Text)


# The consent events (repository.CONSENT_EVENT_TYPES), as the partial index and
# the query that must use it both write them.
CONSENT_ROWS = "event_type IN ('opted_out', 'opted_in')"


class FeedbackEvent(Base):
    """One feedback event from a CRM or e-mail system, unique by ``event_id``."""

    __tablename__ = "feedback_events"
    __table_args__ = (
        # Contact history and cool-downs look up (hcp, channel) over a time range.
        # Its leading hcp_id column also serves plain hcp_id lookups, so hcp_id gets
        # no index of its own (one index less to maintain per ingested event).
        sa.Index("ix_feedback_events_hcp_channel_time", "hcp_id", "channel", "occurred_at"),
        # Every served answer reads its HCP's consent events over all time: only they.
        sa.Index(
            "ix_feedback_events_consent",
            "hcp_id",
            "occurred_at",
            sqlite_where=sa.text(CONSENT_ROWS),
            postgresql_where=sa.text(CONSENT_ROWS),
        ),
    )

    event_id: Mapped[str] = mapped_column(_text("event_id"), primary_key=True)
    event_type: Mapped[str] = mapped_column(sa.String(16))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Indexed because off-policy evaluation aggregates events per recommendation.
    recommendation_id: Mapped[str | None] = mapped_column(
        _text("recommendation_id"), sa.ForeignKey("recommendations.recommendation_id"), index=True
    )
    hcp_id: Mapped[str] = mapped_column(_text("hcp_id"))
    action_id: Mapped[str | None] = mapped_column(_text("action_id"))
    channel: Mapped[str | None] = mapped_column(_text("channel"))
    reason: Mapped[str | None] = mapped_column(_text("reason"))
    value: Mapped[float | None] = mapped_column(sa.Float)
    # Who sent it: the API key's name, or the command that stored a file's rows (the
    # audit trail of consent changes and decisions; None before migration 0003).
    requester: Mapped[str | None] = mapped_column(_text("requester"))
    # True: an opt-out whose channel its sender named while no model was served, no
    # catalog to read it against (kept as catalogs spell it: 'e_mail', 'fax'); it is
    # read against the served catalog at each read, as it would have been on arrival
    # (contract.schema.withdrawn_channel). None: read on arrival, or stored before
    # migration 0011.
    channel_unmatched: Mapped[bool | None] = mapped_column(sa.Boolean, nullable=True)


# The erasure's near-id check (repository.hcps_spelled_alike) looks up ids spelled
# alike but for case and leading zeros: by these, not by reading both tables whole
# (migration 0013).
sa.Index(
    "ix_recommendations_hcp_id_folded",
    folded_hcp_id(cast(sa.Table, Recommendation.__table__).c.hcp_id),
)
sa.Index(
    "ix_feedback_events_hcp_id_folded",
    folded_hcp_id(cast(sa.Table, FeedbackEvent.__table__).c.hcp_id),
)


class MaintenanceRun(Base):
    """One run of a command that deletes rows (``nextbest prune``, ``nextbest
    erase``): who ran it, when, what it was asked, what it deleted, how it ended.

    The trail of deletions, kept in the store the rows lived in. A prune's row is
    inserted (committed) before its first delete and each batch adds its counts in
    the batch's own transaction, so the counts are what was committed even when the
    process was killed; an erasure's row is inserted in the erasure's transaction.
    Added by migration 0008.
    """

    __tablename__ = "maintenance_runs"
    __table_args__ = (
        sa.CheckConstraint("outcome IN ('running', 'finished', 'interrupted')", name="outcome"),
    )

    run_id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    # 'prune' or 'erase'.
    command: Mapped[str] = mapped_column(sa.String(16))
    # The command and the operating-system user who ran it: ``nextbest prune (jdoe)``.
    requester: Mapped[str] = mapped_column(_text("requester"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    # None while running, and for ever if the process was killed before the end.
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # 'running' until it ends, then 'finished' or 'interrupted' (``detail`` says why).
    outcome: Mapped[str] = mapped_column(sa.String(16))
    # A prune's cutoff: it deletes what is older. None for an erasure.
    cutoff: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The options the command was given (``--older-than 730 --yes``), for the record.
    arguments: Mapped[str | None] = mapped_column(sa.String(256))
    # An erasure's number of HCPs (never their ids); None for a prune.
    hcps: Mapped[int | None] = mapped_column(sa.Integer)
    # Rows deleted, per table (committed ones: an interrupted prune's batches so far).
    recommendations: Mapped[int] = mapped_column(sa.Integer)
    recommendation_items: Mapped[int] = mapped_column(sa.Integer)
    feedback_events: Mapped[int] = mapped_column(sa.Integer)
    # Why a run was interrupted: the error, as the command said it.
    detail: Mapped[str | None] = mapped_column(sa.Text)


class ServingRulesText(Base):
    """The serving rules file an answer was made under, by the fingerprint every
    logged answer names (``recommendations.rules_fingerprint``): stored by each
    worker and ``picks --log`` when they read a file whose fingerprint is not
    stored yet, so an audit reads the caps and withdrawals of any answer after the
    file was edited. Added by migration 0009.
    """

    __tablename__ = "serving_rules"

    # The first 12 hex digits of the file's SHA-256, as answers name it.
    fingerprint: Mapped[str] = mapped_column(sa.String(12), primary_key=True)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    # The path it was read from, by the first process to store it.
    source: Mapped[str] = mapped_column(sa.String(1024))
    content: Mapped[str] = mapped_column(sa.Text)
    first_stored_at: Mapped[datetime] = mapped_column(UTCDateTime())
