"""Rep call plans: GET /v1/reps/{rep_id}/suggestions and the rep's decisions on them."""

from __future__ import annotations

import re
from dataclasses import asdict
from datetime import date
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from pydantic import AfterValidator, BeforeValidator, StringConstraints

from nextbest.api.auth import (
    PrincipalDep,
    forbid_hcp_outside_territory,
    forbid_outside_territory,
    request_purpose,
    require_roles,
)
from nextbest.api.bodies import JSONBodyRoute
from nextbest.api.deps import RuntimeDep, SessionDep, only_query
from nextbest.api.observability import record_feedback, record_served
from nextbest.api.schemas import (
    FeedbackResultPublic,
    LeftOutPublic,
    RejectedEvent,
    RepFeedbackCreate,
    RepPlanPublic,
    RepSuggestionPublic,
    RequestPurpose,
)
from nextbest.contract.parse import (
    QUOTED_AT_MOST,
    quoted,
    refuse_no_id,
    said_in_another_case,
    spelled_alike,
)
from nextbest.errors import InvalidRequestError
from nextbest.limits import STORED_LENGTHS
from nextbest.service.apikeys import ReloadingKeyStore
from nextbest.service.blinding import blind_to_holdout
from nextbest.service.recommend import MAX_LEFT_OUT, check_decision_date
from nextbest.service.reps import record_rep_decision
from nextbest.service.serving import rep_call_plan

router = APIRouter(
    prefix="/v1/reps",
    tags=["reps"],
    dependencies=[require_roles("admin", "rep")],
    route_class=JSONBodyRoute,
)


# The rep a plan is for: logged with each of its answers, as many characters as the
# log keeps (a rep key's name is held to as many in the key file). Spaces around it are
# dropped, as around every id a route takes (no rep key's name has one): a CRM's
# 'rep-1 ' was refused as another rep's plan, or planned and logged under that name.
def _a_rep_id(value: object) -> object:
    """Refused blank or holding a control character, as an HCP id is: its answers are
    logged with it (PostgreSQL refuses a NUL in text: they were served but dropped
    from the log), and a line break in it names no rep key."""
    return refuse_no_id(value, "a rep_id")


RepId = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=STORED_LENGTHS["rep_id"]),
    # Outside the constraints: it reads the id as sent, before its spaces are dropped.
    BeforeValidator(_a_rep_id),
    Path(
        description="The rep: a rep key's name (a rep key gives its own); at most "
        f"{STORED_LENGTHS['rep_id']} characters, all the recommendation log keeps.",
    ),
]


def _day_only(value: object) -> object:
    """A plan is for a day: 'YYYY-MM-DD', not a time (a midnight time would be read as
    its date, its offset dropped). Spaces around it are dropped (a '+' in a query
    string is one): it was checked without them, then parsed with them and refused."""
    if isinstance(value, str):
        day = value.strip()
        try:
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
                raise ValueError("not YYYY-MM-DD")
            date.fromisoformat(day)
        except ValueError as exc:
            raise ValueError(
                f"{quoted(value, at_most=QUOTED_AT_MOST)} is not a day ({exc}): a plan's "
                "date is YYYY-MM-DD"
            ) from None
        return day
    return value


def _whole_number(value: object) -> object:
    """A capacity is a count of HCPs: '2.5' or 'ten' is refused saying so, not in
    pydantic's words (`unable to parse string as an integer`), and so is a number of
    thousands of digits (pydantic's `exceeded maximum size`)."""
    if isinstance(value, str) and not re.fullmatch(r"\s*[+-]?\d{1,20}\s*", value):
        whole = re.fullmatch(r"\s*[+-]?\d+\s*", value) is not None
        raise ValueError(
            f"{quoted(value, at_most=QUOTED_AT_MOST)} is "
            + ("far more HCPs than a plan holds" if whole else "not a whole number")
            + ": capacity is how many HCPs to suggest, from 1 to the serving rules' "
            "rep_plan.max_capacity (leave it out for their rep_plan.default_capacity)"
        )
    return value


def _own_rep(caller: PrincipalDep, rep_id: str) -> None:
    if caller.role == "rep" and caller.name != rep_id:
        # Its own name in another case (a CRM that upper-cased it): said, as an HCP id is.
        meant = caller.name if caller.name.casefold() == rep_id.casefold() else None
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail=f"rep key '{caller.name}' may only use its own call plan, not that of "
            f"'{rep_id}'" + ("" if meant is None else said_in_another_case(meant)),
        )


def _rep_key_in_another_case(keys: ReloadingKeyStore | None, rep_id: str) -> str:
    """What a refusal of ``rep_id``, no rep key's name, adds when a rep key is named so
    in another case (:func:`~nextbest.contract.parse.spelled_alike`); else ''."""
    if keys is None:
        return ""
    meant = spelled_alike(rep_id, lambda name: getattr(keys.named(name), "role", "") == "rep")
    return "" if meant is None else said_in_another_case(meant)


def _admin_territory(request: Request, rep_id: str, territory_id: str | None) -> str | None:
    """The territory an admin plans: the one named, else that of the rep key named
    ``rep_id``; one that is not that key's is refused (the plan would be filed under
    the wrong rep)."""
    keys = request.app.state.api_keys
    rep = keys.named(rep_id) if keys is not None else None
    if rep is None or rep.role != "rep":
        return territory_id
    if territory_id is not None and territory_id.strip() != rep.territory_id:
        raise InvalidRequestError(
            "territory_id",
            f"rep '{rep_id}' plans territory {rep.territory_id} (its API key), not "
            f"{territory_id}: leave territory_id out, or ask under another rep_id",
            location="query",
        )
    return rep.territory_id


@router.get(
    "/{rep_id}/suggestions",
    response_model=RepPlanPublic,
    # left_out only with explain=true: without it the answer is as it always was.
    response_model_exclude_none=True,
    dependencies=[only_query("date", "capacity", "territory_id", "purpose", "explain")],
)
def suggestions(
    rep_id: RepId,
    request: Request,
    runtime: RuntimeDep,
    caller: PrincipalDep,
    date: Annotated[date, BeforeValidator(_day_only), AfterValidator(check_decision_date)]
    | None = Query(
        default=None,
        description="Day of the plan, YYYY-MM-DD, a day of UTC (default: today's, UTC: a "
        "CRM whose reps work far from UTC sends the rep's own date). Contacts and "
        "decisions are counted as of its start (00:00 UTC); today's plan, or a past day's, "
        "counts them up to now.",
    ),
    capacity: Annotated[int, BeforeValidator(_whole_number)] | None = Query(
        default=None,
        description="HCPs to suggest, a whole number from 1 to the serving rules' "
        "rep_plan.max_capacity (default: rep_plan.default_capacity).",
        json_schema_extra={"minimum": 1},
    ),
    territory_id: str | None = Query(
        default=None,
        max_length=128,
        # Declared, not checked by pydantic: the route's refusal says what to do.
        json_schema_extra={"minLength": 1},
        description="Admin only: the territory to plan (a rep key has its own); by default "
        "the territory of the rep key named rep_id.",
    ),
    purpose: RequestPurpose | None = Query(
        default=None,
        description="promotional (a sales rep's plan) or medical (an MSL's: medical "
        "content only), in any case. Default: the key's purpose if the key file binds it to one "
        "(asking for the other is a 403), else promotional.",
    ),
    explain: bool = Query(
        default=False,
        description=f"Also say why HCPs of the territory are not suggested (left_out: at "
        f"most {MAX_LEFT_OUT}, best ranked first; n_left_out: how many in all). Nothing "
        "more is logged.",
    ),
) -> RepPlanPublic:
    """HCPs of the rep's territory ranked by best expected net value of a rep channel."""
    _own_rep(caller, rep_id)
    if territory_id is not None and not territory_id.strip():
        raise InvalidRequestError(
            "territory_id",
            "is empty: name a territory, or leave the parameter out",
            location="query",
        )
    if territory_id is not None:
        # As the hcps file's ids are read: spaces around it dropped (a rep key's own
        # territory with a space after it was refused as outside it).
        territory_id = territory_id.strip()
    asked: str | None = purpose
    runtime.recommender.check_territories()  # a plan is a territory's
    if caller.role == "rep":
        if territory_id is not None:
            forbid_outside_territory(caller, territory_id, f"territory {territory_id}")
        territory = caller.territory_id
    else:
        territory = _admin_territory(request, rep_id, territory_id)
        # A plan an admin makes for a rep key's name is that rep's: an MSL's is
        # medical, a sales rep's promotional, whatever the admin's own key allows.
        keys = request.app.state.api_keys
        rep = keys.named(rep_id) if keys is not None else None
        if rep is not None and rep.role == "rep":
            asked = request_purpose(rep, purpose, whose="rep")
    if territory is None:
        keys = request.app.state.api_keys
        other = keys.named(rep_id) if keys is not None else None
        raise InvalidRequestError(
            "territory_id",
            (
                f"'{rep_id}' is {'an' if other.role == 'admin' else 'a'} {other.role} key, "
                "not a rep key: it has no territory"
                if other is not None
                else f"no rep key is named '{rep_id}'" + _rep_key_in_another_case(keys, rep_id)
            )
            + ", so an admin names the territory to plan: ?territory_id=",
            location="query",
        )
    plan = rep_call_plan(
        runtime.recommender,
        runtime.reader,  # live history: one round trip on PostgreSQL too
        runtime.reclog,
        requester=caller.name,
        rep_id=rep_id,
        territory_id=territory,
        capacity=capacity,
        on=date,
        purpose=request_purpose(caller, asked),
        explain=explain,
        # The randomized control stays blind to the field (nextbest.service.blinding).
        blind=blind_to_holdout(caller),
    )
    record_served([*plan.suggestions, *plan.held_out])
    return RepPlanPublic(
        rep_id=plan.rep_id,
        territory_id=plan.territory_id,
        purpose=plan.purpose,
        date=plan.date,
        capacity=plan.capacity,
        model_version=plan.model_version,
        # The clock reading the plan was decided at, its answers' time as logged (an
        # empty plan logs none: the same reading all the same).
        created_at=plan.created_at,
        n_hcps=plan.n_hcps,
        n_candidates=plan.n_candidates,
        suggestions=[
            RepSuggestionPublic(
                rank=n,
                recommendation_id=rec.recommendation_id,
                hcp_id=rec.hcp_id,
                action_id=item.action_id,
                channel=item.channel,
                content_id=item.content_id,
                topic=item.topic,
                content_type=item.content_type,
                score=item.score,
                expected_uplift=item.expected_uplift,
                p_engage=item.p_engage,
                cost=item.cost,
                propensity=item.propensity,
                explored=item.explored,
                reasons=item.reasons,
            )
            for n, rec in enumerate(plan.suggestions, start=1)
            for item in rec.items[:1]
        ],
        left_out=None
        if plan.left_out is None
        else [LeftOutPublic.model_validate(asdict(why)) for why in plan.left_out],
        n_left_out=plan.n_left_out,
    )


@router.post("/{rep_id}/feedback", response_model=FeedbackResultPublic)
def decide(
    rep_id: RepId,
    body: RepFeedbackCreate,
    runtime: RuntimeDep,
    session: SessionDep,
    caller: PrincipalDep,
    response: Response,
) -> FeedbackResultPublic:
    """Accept, dismiss (with a reason code) or snooze a suggestion; stored as feedback."""
    _own_rep(caller, rep_id)
    recommender = runtime.recommender
    recommender.check_territories()
    forbid_hcp_outside_territory(caller, recommender, body.hcp_id, f"HCP {body.hcp_id}")
    runtime.reclog.flush()  # the suggestion must be in the log before feedback refers to it
    result = record_rep_decision(
        session,
        recommender=recommender,
        rep_id=rep_id,
        recommendation_id=body.recommendation_id,
        hcp_id=body.hcp_id,
        action_id=body.action_id,
        decision=body.decision,
        reason=body.reason,
        event_id=body.event_id,
        occurred_at=body.occurred_at,
        log_flush_ms=runtime.settings.log_flush_ms,
        requester=caller.name,
        blind=blind_to_holdout(caller),
    )
    record_feedback(
        accepted=len(result.accepted),
        duplicates=len(result.duplicates),
        rejected=len(result.rejected),
    )
    if result.rejected:
        response.status_code = status.HTTP_422_UNPROCESSABLE_CONTENT
    return FeedbackResultPublic(
        accepted=len(result.accepted),
        duplicates=len(result.duplicates),
        rejected=[RejectedEvent(index=i, event_id=e, message=m) for i, e, m in result.rejected],
    )
