"""POST /v1/recommendations (one HCP) and /v1/recommendations/batch (up to 1,000)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic_core import to_json

from nextbest.api.auth import (
    PrincipalDep,
    admitted_caller,
    forbid_hcp_outside_territory,
    request_channels,
    request_purpose,
    require_roles,
)
from nextbest.api.bodies import JSONBodyRoute
from nextbest.api.deps import RuntimeDep
from nextbest.api.observability import record_served
from nextbest.api.schemas import (
    RecommendationBatchCreate,
    RecommendationBatchPublic,
    RecommendationCreate,
    RecommendationPublic,
)
from nextbest.contract.parse import spelled_alike
from nextbest.service.apikeys import Principal
from nextbest.service.blinding import as_told, blind_to_holdout
from nextbest.service.recommend import Recommendation, Recommender, decision_time
from nextbest.service.runtime import ServingRuntime
from nextbest.service.serving import (
    Database,
    history_time,
    live_history_async,
    recommend_batch,
    recommend_one,
)

router = APIRouter(
    prefix="/v1/recommendations", tags=["recommendations"], route_class=JSONBodyRoute
)


def _json(payload: dict[str, Any]) -> Response:
    # pydantic-core writes the item dataclasses field by field, as they are.
    return Response(content=to_json(payload), media_type="application/json")


def _recommendation(rec: Recommendation, *, with_excluded: bool) -> dict[str, Any]:
    return {
        "recommendation_id": rec.recommendation_id,
        "hcp_id": rec.hcp_id,
        "created_at": rec.created_at.isoformat(),
        "model_version": rec.model_version,
        "uplift_source": rec.uplift_source,
        "holdout": rec.holdout,
        "items": rec.items,
        "excluded": rec.excluded if with_excluded else None,
    }


def _channels_of(
    caller: Principal, recommender: Recommender, channel: str | None, *, k: int, purpose: str
) -> tuple[str, ...] | None:
    """The channels a channel-bound key's answer may hold (:func:`request_channels`).

    A channel no action of the catalog has (``emial``) is refused as the typo it is
    (422 at ``channel``, naming the channel meant), before the key's binding is: a
    403 naming only the key's channels did not say that the channel does not exist."""
    if channel is not None and caller.channels is not None:
        recommender.check_request(k=k, channel=channel, purpose=purpose)
    return request_channels(caller, channel)


# The answers are serialized straight to JSON bytes by pydantic-core: the declared
# response_model documents them in OpenAPI, but FastAPI's generic path (validate
# every item against it, then jsonable_encoder, then json.dumps) costs more than
# scoring. tests/api checks the answers against the schemas.
#
# One recommendation is ~1.3 ms of CPU and one sub-millisecond indexed query,
# so it runs on the event loop itself: a hop to the thread pool and back costs a
# sizeable share of that, and with one worker process per core there is no other
# core for a thread to use. On PostgreSQL the query is awaited on an asyncio pool
# (a database across a network would otherwise stall the worker per round trip).
# The batch route (up to 1,000 HCPs, ~0.5 s) stays in the thread pool so it does
# not hold up the requests queued behind it.
#
# It takes no dependency: it checks the caller and reads the runtime itself, so that
# JSONBodyRoute hands it a valid body without FastAPI's generic handler (about a
# tenth of an uncached recommendation's CPU). A caller without a valid key is refused
# (401) when the body is read, before it is parsed.
@router.post("", response_model=RecommendationPublic)
async def recommend(
    request: Request,
    body: RecommendationCreate,
) -> Response:
    """Rank the actions worth taking for one HCP; an empty list means do nothing.

    A channel key bound to channels gets actions of those channels only; asking for
    another ``channel`` is refused (403).
    """
    caller = admitted_caller(request, ("admin", "channel", "rep"))
    blind = blind_to_holdout(caller)
    runtime: ServingRuntime = request.app.state.runtime
    recommender = runtime.recommender
    if caller.role == "rep":
        recommender.check_territories()
        forbid_hcp_outside_territory(caller, recommender, body.hcp_id, "this HCP")
        if recommender.challenger is not None:
            # A rep's call plan ranks the territory by the served version: the rep gets
            # that version's answer about one HCP too, not a challenger's
            # (NEXTBEST_CHALLENGER_SHARE answers the channel systems' requests).
            recommender = recommender.with_challenger(None, 0.0)
    purpose = request_purpose(caller, body.purpose)
    channels = _channels_of(caller, recommender, body.channel, k=body.k, purpose=purpose)
    # One reading of the recommender's clock: the decision time and, after a past
    # date, when the history is read.
    reading = recommender.clock()
    now = decision_time(body.date, now=reading)
    # SQLite: the connection kept for this route's reads; else an engine (one query on
    # a plain connection).
    db: Database | None = runtime.loop_reader or runtime.reader
    history = None
    pool = runtime.async_reader
    # An explanation reads when each contact was too (when a cap lifts): a second
    # query, on the engine, for a support question rather than a send.
    if pool is not None and not body.explain and recommender.knows(body.hcp_id):
        # A bad request is refused before any read (422, even with the database down).
        recommender.check_request(k=body.k, channel=body.channel, purpose=purpose, now=now)
        # PostgreSQL: the worker serves other requests while the query travels.
        history = await live_history_async(
            pool,
            runtime.reader.dialect,
            rules=recommender.rules,
            hcp_id=body.hcp_id,
            now=history_time(now, reading),
        )
        db = None
    rec = recommend_one(
        recommender,
        db,
        runtime.reclog,
        requester=caller.name,
        hcp_id=body.hcp_id,
        k=body.k,
        channel=body.channel,
        purpose=purpose,
        on=now,
        explain_exclusions=body.explain,
        history=history,
        channels=channels,
        blind=blind,
    )
    record_served([rec])
    request.state.recommendation_id = rec.recommendation_id  # for the access log line
    # Logged as the holdout answer it is; a rep is told only that nothing is to be
    # done, its explanation too (nextbest.service.blinding).
    return _json(_recommendation(as_told(rec, blind=blind), with_excluded=body.explain))


@router.post(
    "/batch",
    response_model=RecommendationBatchPublic,
    dependencies=[require_roles("admin", "channel")],
)
def recommend_many(
    body: RecommendationBatchCreate,
    runtime: RuntimeDep,
    caller: PrincipalDep,
) -> Response:
    """Best actions for up to 1,000 HCPs in one call (e-mail sends); each answer is logged.

    HCPs the served model does not know are listed in ``unknown_hcp_ids`` (and in
    ``unknown_in_another_case`` with the id meant, when the model knows one in another
    case); an HCP listed more than once gets one answer and is listed in
    ``repeated_hcp_ids``.
    A channel key bound to channels gets actions of those channels only; asking for
    another ``channel`` is refused (403).
    """
    recommender = runtime.recommender
    purpose = request_purpose(caller, body.purpose)
    recs, unknown, repeated = recommend_batch(
        recommender,
        runtime.reader,
        runtime.reclog,
        requester=caller.name,
        hcp_ids=body.hcp_ids,
        k=body.k,
        channel=body.channel,
        purpose=purpose,
        on=body.date,
        channels=_channels_of(caller, recommender, body.channel, k=body.k, purpose=purpose),
    )
    record_served(recs)
    # 'h000001' for 'H000001' (a system that changed the ids' case): the id meant, as
    # a single request's 404 names it; a few lookups per unknown id, no scan.
    known = recommender.known_hcps
    meant = {hcp_id: spelled_alike(hcp_id, known) for hcp_id in unknown}
    return _json(
        {
            "model_version": recommender.version,
            "uplift_source": recommender.model.uplift_source,
            "results": [
                {
                    "recommendation_id": r.recommendation_id,
                    "hcp_id": r.hcp_id,
                    "model_version": r.model_version,
                    "uplift_source": r.uplift_source,
                    "created_at": r.created_at.isoformat(),
                    "holdout": r.holdout,
                    "items": r.items,
                }
                for r in recs
            ],
            "unknown_hcp_ids": unknown,
            "unknown_in_another_case": {
                hcp_id: known_id for hcp_id, known_id in meant.items() if known_id is not None
            },
            "repeated_hcp_ids": repeated,
        }
    )
