"""POST /v1/feedback: one event or a batch, idempotent by event_id."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from nextbest.api.bodies import JSONBodyRoute
from nextbest.api.deps import RuntimeDep, SessionDep
from nextbest.api.observability import record_feedback
from nextbest.api.schemas import (
    FeedbackBatchCreate,
    FeedbackCreate,
    FeedbackResultPublic,
    RejectedEvent,
    UncountedEvent,
)
from nextbest.service.blinding import blind_to_holdout
from nextbest.service.events import FeedbackEventCreate, MalformedEvent
from nextbest.service.feedback import ingest_feedback
from nextbest.storage.repository import FeedbackRecord, FeedbackResult

router = APIRouter(prefix="/v1/feedback", tags=["feedback"], route_class=JSONBodyRoute)

# Events a rep's CRM may not send. Consent given again belongs to the consent
# system. Outcomes (prescriptions) belong to the data feed: they are what the
# uplift report measures and retraining learns from, and a rep's own visits are
# among the decisions they are credited to.
REP_REFUSED = {
    "opted_in": "a rep key may record an opt-out but not consent given again: send "
    "opted_in through the consent system (a channel or admin key)",
    "outcome": "a rep key may not record outcomes: they come from the outcome data "
    "feed (a channel or admin key, or nextbest feedback)",
}


@router.post("", response_model=FeedbackResultPublic)
def post_feedback(
    body: FeedbackCreate,
    runtime: RuntimeDep,
    session: SessionDep,
    request: Request,
    response: Response,
) -> FeedbackResultPublic:
    """Store events; answers only after they are durably committed.

    200: every event stored (or already stored: a retry is safe). 207: some
    events were rejected (not valid events, naming what the service does not
    know, or, for a rep key, an HCP outside its territory or an event other than an
    opt-out about a channel that is not a rep channel, or, for a channel key bound to
    channels, about another channel), the others stored. 422: every
    event was rejected (403 when each was outside the key's territory or channels).

    A channel key bound to channels (``channels: [sms]`` in the key file) speaks for
    them only: an event about another channel (stated, or its action's), or naming
    a recommendation served on other channels only, is refused (status 403); an
    opt-out naming no channel (or one the catalog lacks) from a key of one channel
    withdraws that channel; an
    opt-in or opt-out that would apply to every channel is refused.
    """
    sent: list[object] = list(body.events) if isinstance(body, FeedbackBatchCreate) else [body]
    # An event without occurred_at happened when received, by the clock the served
    # recommender decides by (that of the runtime, which loads it).
    now = runtime.clock()
    valid: list[int] = []  # index in the batch of each record below
    records: list[FeedbackRecord] = []
    rejected: list[tuple[int, str, str]] = []
    # Refused with 403, each on its own: outside a rep's territory (feedback_scope),
    # or an event a rep key does not own (REP_REFUSED).
    outside: dict[int, str] = dict(request.state.outside_territory)
    rep = request.state.principal.role == "rep"
    for index, e in enumerate(sent):
        if rep and isinstance(e, FeedbackEventCreate) and e.event_type in REP_REFUSED:
            outside.setdefault(index, REP_REFUSED[e.event_type])
        if isinstance(e, MalformedEvent):
            rejected.append((index, e.event_id, e.message))
            continue
        if index in outside:
            assert isinstance(e, FeedbackEventCreate)
            rejected.append((index, e.event_id, outside[index]))
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
            challenger=(
                runtime.recommender.challenger.model
                if runtime.model_version and runtime.recommender.challenger is not None
                else None
            ),
            log_flush_ms=runtime.settings.log_flush_ms,
            dismiss_reasons=(
                runtime.recommender.rules.dismiss_reasons if runtime.model_version else None
            ),
            private=rep,  # a rep learns nothing of other territories from a refusal
            requester=request.state.principal.name,
            channels=request.state.principal.channels,
            rep=rep,  # rep channels and opt-outs only (off_rep_channel_problem)
            blind=blind_to_holdout(request.state.principal),
            received_at=now,  # "in the future" by the clock the events were dated by
        )
    forbidden = {valid[i] for i in result.forbidden}
    rejected += [
        (valid[i], eid, f"event {valid[i]}: {msg}" if valid[i] in forbidden else msg)
        for i, eid, msg in result.rejected
    ]
    # 403 each: outside the rep's territory or its rights, or the key's channels.
    refused = set(outside) | forbidden
    record_feedback(
        accepted=len(result.accepted), duplicates=len(result.duplicates), rejected=len(rejected)
    )
    if rejected:
        if len(rejected) < len(sent):
            response.status_code = status.HTTP_207_MULTI_STATUS
        elif all(index in refused for index, _, _ in rejected):
            response.status_code = status.HTTP_403_FORBIDDEN
        else:
            response.status_code = status.HTTP_422_UNPROCESSABLE_CONTENT
    return FeedbackResultPublic(
        accepted=len(result.accepted),
        duplicates=len(result.duplicates),
        rejected=[
            RejectedEvent(index=i, event_id=eid, message=msg, status=403 if i in refused else 422)
            for i, eid, msg in sorted(rejected)
        ],
        uncounted=[
            UncountedEvent(index=valid[i], event_id=eid, message=msg)
            for i, eid, msg in result.uncounted
        ],
    )
