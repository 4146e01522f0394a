"""Record feedback events and log served recommendations."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from nextbest.service.recommend import Recommendation, Recommender
from nextbest.storage.repository import (
    FeedbackRecord,
    FeedbackResult,
    RecommendationRecord,
    ServedItem,
    log_recommendations,
    record_feedback,
)


def log_served(
    session: Session,
    *,
    recommendations: Sequence[Recommendation],
    recommender: Recommender,
    requester: str,
) -> None:
    """Log what was served, with propensities and holdout flags, and commit."""
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
        )
        for rec in recommendations
    ]
    log_recommendations(session, records=records)
    session.commit()


def ingest_feedback(
    session: Session, *, events: Sequence[FeedbackRecord], recommender: Recommender | None
) -> FeedbackResult:
    """Store events idempotently; unknown HCPs are rejected when a model is loaded.

    Returns after the valid events are committed, so the caller may acknowledge.
    """
    hcp_exists = None
    if recommender is not None:
        index = recommender.model.hcp_index

        def hcp_exists(hcp_id: str) -> bool:
            return hcp_id in index

    return record_feedback(session, events=events, hcp_exists=hcp_exists)
