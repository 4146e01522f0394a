"""Record feedback events and log served recommendations."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from functools import partial

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from nextbest.learning.scoring import ScoringModel
from nextbest.service.recommend import Recommendation, Recommender, known_hcps_of, minted_at
from nextbest.storage.repository import (
    FeedbackRecord,
    FeedbackResult,
    RecommendationRecord,
    ServedItem,
    get_recommendation,
    log_recommendations,
    record_feedback,
)

# How long after minting a recommendation id its (batched) log row may still be on
# its way to the database from another worker: the flush interval plus this
# allowance for the commit itself under load.
LOG_COMMIT_ALLOWANCE_S = 2.0


def log_served(
    db: Session | Connection,
    *,
    recommendations: Sequence[Recommendation],
    recommender: Recommender,
    requester: str,
) -> None:
    """Log what was served, with propensities and holdout flags, and commit ``db``'s
    transaction (a connection's, begun by the insert, as a session's)."""
    exploration = recommender.exploration
    records = [
        RecommendationRecord(
            recommendation_id=rec.recommendation_id,
            created_at=rec.created_at,
            hcp_id=rec.hcp_id,
            requester=requester,
            purpose=rec.purpose,
            channel_filter=rec.channel,
            model_version=rec.model_version,
            holdout=rec.holdout,
            policy=exploration.name,
            epsilon=exploration.epsilon,
            holdout_rate=exploration.holdout_rate,
            n_candidates=rec.n_candidates,
            items=tuple(ServedItem.of(item) for item in rec.items),
            decided_for=rec.decided_for,
            p_no_action=rec.p_no_action,
            rep_id=rec.rep_id,
            rules_fingerprint=recommender.rules.fingerprint,
            k_requested=rec.k_requested,
            temperature=getattr(exploration, "temperature", None),
            split_with=rec.split_with,
            split_share=rec.split_share,
        )
        for rec in recommendations
    ]
    log_recommendations(db, records=records)
    db.commit()


def ingest_feedback(
    session: Session,
    *,
    events: Sequence[FeedbackRecord],
    model: ScoringModel | None,
    challenger: ScoringModel | None = None,
    log_flush_ms: float = 0.0,
    dismiss_reasons: Collection[str] | None = None,
    private: bool = False,
    requester: str | None = None,
    channels: Sequence[str] | None = None,
    rep: bool = False,
    received_at: datetime | None = None,
    blind: bool = False,
) -> FeedbackResult:
    """Store events idempotently; with the served ``model``, unknown HCPs and actions are
    rejected (None: no model loaded, nothing to check them against), an HCP its
    ``challenger`` knows being known (the challenger answering beside it answers
    those only it knows: :meth:`~nextbest.service.recommend.Recommender.answering`); with
    ``dismiss_reasons``, so are dismissals and snoozes with another reason code;
    ``private``, ``requester``, ``channels`` (a channel-bound key's), ``rep`` (a
    rep's events: rep channels and opt-outs only), ``received_at`` (the clock
    reading that dated events sent without ``occurred_at``; None: the machine's) and
    ``blind`` (a sender kept blind to the holdout) as
    :func:`~nextbest.storage.repository.record_feedback` takes them.

    Returns after the valid events are committed, so the caller may acknowledge.
    With ``log_flush_ms`` > 0 (the recommendation log is batched, possibly by
    another worker process), an event naming a recommendation that is not in the
    log yet but was minted less than ``log_flush_ms`` + ``LOG_COMMIT_ALLOWANCE_S``
    ago is held until its log row arrives or that time is up, instead of being
    rejected as unknown at once.
    """
    hcp_exists: Callable[[str], bool] | None = None
    action_channels: Mapping[str, str] | None = None
    if model is not None:
        # The model's ids, as its recommender holds them (a dict lookup), with the
        # case-folded lookup that names an id sent in another case (mixed case too).
        hcp_exists = known_hcps_of(model)
        action_channels = model.channel_by_action
        if challenger is not None:
            served, also = hcp_exists, known_hcps_of(challenger)

            def hcp_exists(hcp_id: str) -> bool:
                return served(hcp_id) or also(hcp_id)

    store = partial(
        record_feedback,
        hcp_exists=hcp_exists,
        action_channels=action_channels,
        dismiss_reasons=dismiss_reasons,
        private=private,
        requester=requester,
        channels=channels,
        rep=rep,
        received_at=received_at,
        blind=blind,
    )
    result = store(session, events=events)
    if log_flush_ms <= 0 or not result.rejected:
        return result
    return _retry_in_flight(
        session,
        events=events,
        result=result,
        store=store,
        wait_s=log_flush_ms / 1000.0 + LOG_COMMIT_ALLOWANCE_S,
        poll_s=max(log_flush_ms / 1000.0, 0.002),
    )


def _retry_in_flight(
    session: Session,
    *,
    events: Sequence[FeedbackRecord],
    result: FeedbackResult,
    store: Callable[..., FeedbackResult],
    wait_s: float,
    poll_s: float,
) -> FeedbackResult:
    """Re-submit rejected events whose recommendation is still being logged."""
    now = time.time()
    deadline: dict[str, float] = {}  # recommendation id -> when to give up on it
    for index, _, _ in result.rejected:
        rid = events[index].recommendation_id
        minted = minted_at(rid) if rid is not None else None
        if rid is not None and minted is not None and minted - 1.0 <= now < minted + wait_s:
            deadline[rid] = minted + wait_s
    session.rollback()  # each check below must see the latest commits (SQLite snapshots)
    # A log row committed since the first try has arrived already (another worker's
    # writer can commit between the two reads): its events are tried again too.
    arrived = {
        rid for rid in deadline if get_recommendation(session, recommendation_id=rid) is not None
    }
    missing = set(deadline) - arrived
    while missing:
        left = max(deadline[rid] for rid in missing) - time.time()
        if left <= 0:
            break
        time.sleep(min(poll_s, left))
        session.rollback()
        for rid in list(missing):
            if get_recommendation(session, recommendation_id=rid) is not None:
                missing.discard(rid)
                arrived.add(rid)
            elif time.time() >= deadline[rid]:
                missing.discard(rid)
    if not arrived:
        return result  # unknown indeed, or rejected for another reason: the answer stands
    retry = [i for i, _, _ in result.rejected if events[i].recommendation_id in arrived]
    again = store(session, events=[events[i] for i in retry])
    retried = set(retry)
    rejected = [r for r in result.rejected if r[0] not in retried]
    rejected += [(retry[i], event_id, message) for i, event_id, message in again.rejected]
    uncounted = [*result.uncounted, *((retry[i], e, m) for i, e, m in again.uncounted)]
    forbidden = [i for i in result.forbidden if i not in retried]
    forbidden += [retry[i] for i in again.forbidden]
    return FeedbackResult(
        accepted=[*result.accepted, *again.accepted],
        duplicates=[*result.duplicates, *again.duplicates],
        rejected=sorted(rejected),
        uncounted=sorted(uncounted),
        forbidden=sorted(forbidden),
    )
