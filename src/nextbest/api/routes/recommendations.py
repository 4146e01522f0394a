"""POST /v1/recommendations: ranked next-best actions for one HCP."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from nextbest.api.deps import RuntimeDep, SessionDep
from nextbest.api.schemas import RecommendationCreate, RecommendationPublic
from nextbest.service.feedback import log_served

router = APIRouter(prefix="/v1/recommendations", tags=["recommendations"])


@router.post("", response_model=RecommendationPublic)
def recommend(
    body: RecommendationCreate, runtime: RuntimeDep, session: SessionDep
) -> RecommendationPublic:
    """Rank the actions worth taking for one HCP; an empty list means do nothing."""
    recommender = runtime.recommender
    rec = recommender.recommend(
        hcp_id=body.hcp_id,
        k=body.k,
        channel=body.channel,
        purpose=body.purpose,
        on=body.date,
        explain_exclusions=body.explain,
    )
    log_served(session, recommendations=[rec], recommender=recommender, requester="anonymous")
    payload = asdict(rec)
    payload["excluded"] = rec.excluded if body.explain else None
    return RecommendationPublic.model_validate(payload)
