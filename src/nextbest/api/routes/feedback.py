"""POST /v1/feedback: one event or a batch, idempotent by event_id."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Response, status

from nextbest.api.deps import RuntimeDep, SessionDep
from nextbest.api.schemas import (
    FeedbackBatchCreate,
    FeedbackCreate,
    FeedbackResultPublic,
    RejectedEvent,
)
from nextbest.service.feedback import ingest_feedback
from nextbest.storage.repository import FeedbackRecord

router = APIRouter(prefix="/v1/feedback", tags=["feedback"])


@router.post("", response_model=FeedbackResultPublic)
def post_feedback(
    body: FeedbackCreate,
    runtime: RuntimeDep,
    session: SessionDep,
    response: Response,
) -> FeedbackResultPublic:
    """Store events; answers only after they are durably committed.

    200: every event stored (or already stored: a retry is safe). 207: some
    events were rejected, the others stored. 422: every event was rejected.
    """
    events = body.events if isinstance(body, FeedbackBatchCreate) else [body]
    now = datetime.now(UTC)
    records = [
        FeedbackRecord(
            event_id=e.event_id,
            event_type=e.event_type,
            occurred_at=e.occurred_at or now,
            hcp_id=e.hcp_id,
            recommendation_id=e.recommendation_id,
            action_id=e.action_id,
            channel=e.channel,
            reason=e.reason,
            value=e.value,
        )
        for e in events
    ]
    recommender = runtime.recommender if runtime.model_version else None
    result = ingest_feedback(
        session,
        events=records,
        recommender=recommender,
        log_flush_ms=runtime.settings.log_flush_ms,
    )
    if result.rejected:
        all_rejected = len(result.rejected) == len(records)
        response.status_code = (
            status.HTTP_422_UNPROCESSABLE_CONTENT if all_rejected else status.HTTP_207_MULTI_STATUS
        )
    return FeedbackResultPublic(
        accepted=len(result.accepted),
        duplicates=len(result.duplicates),
        rejected=[
            RejectedEvent(index=i, event_id=eid, message=msg) for i, eid, msg in result.rejected
        ],
    )
