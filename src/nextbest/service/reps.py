"""A rep's decision on a suggestion (accept / dismiss with a reason code / snooze)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from nextbest.errors import InvalidRequestError
from nextbest.service.feedback import ingest_feedback
from nextbest.service.recommend import Recommender
from nextbest.storage.repository import FeedbackRecord, FeedbackResult

EVENT_OF_DECISION = {"accept": "accepted", "dismiss": "dismissed", "snooze": "snoozed"}


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
    log_flush_ms: float = 0.0,
) -> FeedbackResult:
    """Store the decision as a feedback event (committed before returning).

    A dismissal needs a reason code from the rules file's ``rep_plan.dismiss_reasons``;
    dismissed actions are then suppressed for ``dismissal_days``, snoozed ones for
    ``snooze_days``.
    ``log_flush_ms``: see :func:`nextbest.service.feedback.ingest_feedback`.
    """
    if decision not in EVENT_OF_DECISION:
        raise InvalidRequestError("decision", f"must be one of {', '.join(EVENT_OF_DECISION)}")
    codes = recommender.rules.dismiss_reasons
    if decision == "dismiss" and reason is None:
        raise InvalidRequestError("reason", f"a dismissal needs a reason code: {', '.join(codes)}")
    if reason is not None and reason not in codes:
        raise InvalidRequestError(
            "reason", f"unknown reason code '{reason}'; known: {', '.join(codes)}"
        )
    event_type = EVENT_OF_DECISION[decision]
    event = FeedbackRecord(
        event_id=event_id or f"rep:{rep_id}:{recommendation_id}:{event_type}",
        event_type=event_type,
        occurred_at=datetime.now(UTC),
        hcp_id=hcp_id,
        recommendation_id=recommendation_id,
        action_id=action_id,
        reason=reason,
    )
    return ingest_feedback(
        session, events=[event], recommender=recommender, log_flush_ms=log_flush_ms
    )
