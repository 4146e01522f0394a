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
    UncountedEvent,
)
from nextbest.service.events import FeedbackEventCreate, MalformedEvent
from nextbest.service.feedback import ingest_feedback
from nextbest.storage.repository import FeedbackRecord, FeedbackResult

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
    events were rejected (not valid events, or naming what the service does not
    know), the others stored. 422: every event was rejected.
    """
    sent: list[object] = list(body.events) if isinstance(body, FeedbackBatchCreate) else [body]
    now = datetime.now(UTC)
    valid: list[int] = []  # index in the batch of each record below
    records: list[FeedbackRecord] = []
    rejected: list[tuple[int, str, str]] = []
    for index, e in enumerate(sent):
        if isinstance(e, MalformedEvent):
            rejected.append((index, e.event_id, e.message))
            continue
        assert isinstance(e, FeedbackEventCreate)
        valid.append(index)
        records.append(e.record(now))
    result = FeedbackResult()
    if records:
        result = ingest_feedback(
            session,
            events=records,
            model=runtime.recommender.model if runtime.model_version else None,
            log_flush_ms=runtime.settings.log_flush_ms,
            dismiss_reasons=(
                runtime.recommender.rules.dismiss_reasons if runtime.model_version else None
            ),
        )
    rejected += [(valid[i], eid, msg) for i, eid, msg in result.rejected]
    if rejected:
        all_rejected = len(rejected) == len(sent)
        response.status_code = (
            status.HTTP_422_UNPROCESSABLE_CONTENT if all_rejected else status.HTTP_207_MULTI_STATUS
        )
    return FeedbackResultPublic(
        accepted=len(result.accepted),
        duplicates=len(result.duplicates),
        rejected=[
            RejectedEvent(index=i, event_id=eid, message=msg) for i, eid, msg in sorted(rejected)
        ],
        uncounted=[
            UncountedEvent(index=valid[i], event_id=eid, message=msg)
            for i, eid, msg in result.uncounted
        ],
    )
