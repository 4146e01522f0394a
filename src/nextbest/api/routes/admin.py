"""Admin routes: hot reload of the served model."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException, Query, Request, status

from nextbest.api.auth import require_roles
from nextbest.api.bodies import JSONBodyRoute
from nextbest.api.deps import RuntimeDep, only_query
from nextbest.api.schemas import ReloadPublic

router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[require_roles("admin")],
    route_class=JSONBodyRoute,
)


@router.post("/reload", response_model=ReloadPublic, dependencies=[only_query("force")])
async def reload(
    runtime: RuntimeDep,
    request: Request,
    force: bool = Query(
        default=False,
        description="Load the alias's version even when it is the one served "
        "(its artifacts replaced in place).",
    ),
) -> ReloadPublic:
    """Load the served alias's current version beside the old one and swap atomically,
    and re-read the serving rules file and the territory alignment file, if set.
    The answer's notes say what in the rules, the alignment and the API keys applies
    to nothing the served catalog or model holds; ``key_notes`` begins with why the
    keys in force are not the key file's, when they are not (the file is invalid,
    or gone: the keys read before serve).

    Other worker processes sharing the models directory follow within a second.
    If loading fails (or the rules or territories file is invalid), the old model,
    rules and territories keep serving and this answers 500 with the error. Other
    workers that could not be signalled are said in ``signal_error`` (in the 500's
    detail on a failure).
    """
    try:
        # In a thread: loading takes seconds and must not stall other requests.
        result = await asyncio.to_thread(runtime.reload, force=force, broadcast=True)
    except Exception as exc:
        signalled = f"; {runtime.signal_error}" if runtime.signal_error else ""
        raise HTTPException(
            status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
            detail=f"reload failed, still serving version {runtime.model_version}: "
            f"{type(exc).__name__}: {exc}{signalled}",
        ) from None
    served = runtime.recommender  # once: its rules and their notes belong together
    territory_notes = await asyncio.to_thread(runtime.territory_notes, examples=5)
    key_notes = await asyncio.to_thread(runtime.key_notes)
    keys = request.app.state.api_keys
    keys_error = keys.error if keys is not None else None
    if keys_error is not None:
        key_notes = [keys_error, *key_notes]
    rules_notes = served.history_rules.notes
    if runtime.emptied_rules_note is not None:
        rules_notes = [runtime.emptied_rules_note, *rules_notes]
    return ReloadPublic(
        version=result.version,
        previous=result.previous,
        # result.changed is a swap: a forced one of the same version is no new model.
        changed=result.changed and result.version != result.previous,
        forced=force and result.changed and result.version == result.previous,
        warmed_hcps=result.warmed_hcps,
        rules_changed=result.rules_changed,
        rules_fingerprint=served.rules.fingerprint,
        rules_notes=rules_notes,
        territories_changed=result.territories_changed,
        territory_notes=territory_notes,
        key_notes=key_notes,
        challenger=result.challenger,
        signal_error=result.signal_error,
    )
