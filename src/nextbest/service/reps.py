"""A rep's decision on a suggestion (accept / dismiss with a reason code / snooze)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from nextbest.errors import InvalidRequestError
from nextbest.service.feedback import ingest_feedback
from nextbest.service.recommend import Recommender
from nextbest.storage.repository import (
    MAX_LENGTHS,
    NUL_REFUSED,
    FeedbackRecord,
    FeedbackResult,
    latest_decision,
    off_rep_channel_problem,
    reason_code,
    reason_problem,
)

EVENT_OF_DECISION = {"accept": "accepted", "dismiss": "dismissed", "snooze": "snoozed"}


def off_rep_channel(recommender: Recommender, action_id: str, event_type: str) -> str | None:
    """Why a rep may not decide on ``action_id`` (``event_type``: accepted, dismissed,
    snoozed): its channel
    in the served catalog is not a rep channel (:func:`off_rep_channel_problem`, which
    the feedback store applies to every event of a rep); None when it is, or when the
    catalog does not know it (the feedback store then judges the action).
    """
    channel = recommender.model.channel_by_action.get(action_id)
    if channel is None:
        return None
    return off_rep_channel_problem(event_type, channel, action_id)


def _decision_id(
    rep_id: str,
    recommendation_id: str,
    action_id: str,
    event_type: str,
    reason: str | None,
    at: datetime | None = None,
    replacing: str | None = None,
) -> str:
    """The event id of a rep's decision on one item: the same decision sent again is a
    duplicate; a decision on another item of the same recommendation, or a dismissal
    with another reason code (a rep correcting it), is not. ``at``: the decision's
    time (an offline decision's ``occurred_at``, or with ``replacing`` the day it was
    received); ``replacing``: the event id of the item's current decision, which this
    one changes (see :func:`record_rep_decision`)."""
    readable = f"rep:{rep_id}:{recommendation_id}:{action_id}:{event_type}"
    if reason is not None:
        readable += f":{reason}"
    if at is not None:  # a time without an offset is UTC, as occurred_at's is
        at = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
        readable += f":{at.date().isoformat() if replacing is not None else at.isoformat()}"
    if replacing is not None:
        readable += f":after-{hashlib.sha256(replacing.encode()).hexdigest()[:12]}"
    if len(readable) <= MAX_LENGTHS["event_id"]:
        return readable
    return "rep:" + hashlib.sha256(readable.encode()).hexdigest()


def _derived_id(
    session: Session,
    rep_id: str,
    recommendation_id: str,
    hcp_id: str,
    action_id: str,
    event_type: str,
    reason: str | None,
    occurred_at: datetime | None,
    now: datetime,
) -> str:
    """The event id of a decision sent without one (see :func:`record_rep_decision`);
    ``now``: the served recommender's clock reading it was received at."""
    if occurred_at is not None:  # an offline decision is known by when it was taken
        return _decision_id(rep_id, recommendation_id, action_id, event_type, reason, occurred_at)
    latest = latest_decision(session, hcp_id, action_id)
    if latest is None:
        return _decision_id(rep_id, recommendation_id, action_id, event_type, reason)
    if (latest.event_type, latest.reason, latest.recommendation_id) == (
        event_type,
        reason,
        recommendation_id,
    ):
        return latest.event_id  # the current decision sent again: a duplicate of it
    # Not the current decision: a new one, even when it repeats an earlier one; known by
    # what it says, its day and the decision it changes, so that a retry (of one
    # refused, or stored with its answer lost) is the same event.
    return _decision_id(
        rep_id, recommendation_id, action_id, event_type, reason, now, replacing=latest.event_id
    )


def record_rep_decision(
    session: Session,
    *,
    recommender: Recommender,
    rep_id: str,
    recommendation_id: str,
    hcp_id: str,
    action_id: str,
    decision: str,
    reason: str | None,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
    log_flush_ms: float = 0.0,
    requester: str | None = None,
    blind: bool = False,
) -> FeedbackResult:
    """Store the decision as a feedback event (committed before returning), with
    ``requester`` (the key that sent it) as who sent it.

    Only an action on a rep channel may be decided on (:func:`off_rep_channel`).
    A dismissal needs a reason code from the rules file's ``rep_plan.dismiss_reasons``;
    dismissed actions are then suppressed for ``dismissal_days``, snoozed ones for
    ``snooze_days``, counted from ``occurred_at`` (default: now by the served
    recommender's clock, which plans are decided by; a time in the future is rejected
    as any feedback event's is). A reason code in another case than the rules file's
    is read as the code (:func:`reason_code`).
    ``log_flush_ms``: see :func:`nextbest.service.feedback.ingest_feedback`;
    ``blind`` (a rep key): a decision on a holdout answer is refused in the words of
    one on an answer that served nothing (:mod:`nextbest.service.blinding`).

    Without an ``event_id``, one is derived so that a resend is a duplicate: from the
    rep, recommendation, action, decision and reason, and from ``occurred_at`` when
    given (an offline decision is known by when it was taken). Without
    ``occurred_at``, a decision that differs from the pair's latest one is new even
    when it repeats an earlier one (dismiss, accept, dismiss again suppresses again):
    its id adds the day and the latest decision's id, so that its retries are one
    event, refused alike or, once stored, duplicates.
    """
    # Before any query: PostgreSQL refuses a NUL in a text parameter, and looking up
    # the pair's latest decision with one answered 500.
    for field, text, location in (
        ("rep_id", rep_id, "path"),
        ("recommendation_id", recommendation_id, "body"),
        ("hcp_id", hcp_id, "body"),
        ("action_id", action_id, "body"),
        ("reason", reason, "body"),
        ("event_id", event_id, "body"),
    ):
        if text is not None and "\x00" in text:
            raise InvalidRequestError(field, NUL_REFUSED.format(name=field), location=location)
    if decision not in EVENT_OF_DECISION:
        raise InvalidRequestError("decision", f"must be one of {', '.join(EVENT_OF_DECISION)}")
    event_type = EVENT_OF_DECISION[decision]
    off_channel = off_rep_channel(recommender, action_id, event_type)
    if off_channel is not None:
        raise InvalidRequestError("action_id", off_channel)
    # The check POST /v1/feedback and nextbest feedback make, here before an event id
    # is derived from the reason.
    codes = recommender.rules.dismiss_reasons
    problem = reason_problem(event_type, reason, codes, decision=decision)
    if problem is not None:
        raise InvalidRequestError("reason", problem)
    reason = reason_code(event_type, reason, codes)
    now = recommender.clock()
    if event_id is None:
        event_id = _derived_id(
            session,
            rep_id,
            recommendation_id,
            hcp_id,
            action_id,
            event_type,
            reason,
            occurred_at,
            now,
        )
    event = FeedbackRecord(
        event_id=event_id,
        event_type=event_type,
        occurred_at=occurred_at or now,
        hcp_id=hcp_id,
        recommendation_id=recommendation_id,
        action_id=action_id,
        reason=reason,
    )
    return ingest_feedback(
        session,
        events=[event],
        model=recommender.model,
        log_flush_ms=log_flush_ms,
        # Checked above; given so that a stored code an earlier nextbest kept as sent
        # ('Not_Relevant') is read as its resend is, and the resend is a duplicate.
        dismiss_reasons=codes,
        private=True,
        requester=requester,
        rep=True,
        blind=blind,
        received_at=now,  # "in the future" by the clock the decision was dated by
    )
