"""Liveness and readiness (no API key needed) and Prometheus metrics (a monitor or
admin key unless NEXTBEST_METRICS_AUTH is off)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request, Response, status
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool

from nextbest.api.auth import admitted_caller
from nextbest.api.deps import RuntimeDep
from nextbest.api.observability import metrics_payload
from nextbest.api.schemas import HealthPublic
from nextbest.service.runtime import ServingRuntime
from nextbest.storage.db import UNAVAILABLE_ERRORS, describe_database_error, ping, ping_async
from nextbest.storage.repository import locked_serving_table

router = APIRouter(tags=["operations"])
# Who may read /metrics when it asks for a key: a scraper's own key, or an admin's.
METRICS_ROLES = ("monitor", "admin")


# HEAD too: load balancers and uptime checks often probe with it. A route of its
# own: one route for both methods gave both one OpenAPI operation id, and building
# the schema warned, in plain text amid the JSON log lines.
_PROBE: dict[str, Any] = {"response_model": HealthPublic, "response_model_exclude_none": True}


# Liveness only reads an attribute: on the event loop, without the hop to the
# thread pool and back that a plain function costs (about half its time).
@router.head("/healthz", **_PROBE)
@router.get("/healthz", **_PROBE)
async def healthz(runtime: RuntimeDep) -> HealthPublic:
    """The process is up (a model may not be loaded yet)."""
    return HealthPublic(
        status="ok",
        model_version=runtime.model_version,
        challenger_version=runtime.challenger_version,
        features_as_of=runtime.features_as_of,
    )


@router.head("/readyz", **_PROBE)
@router.get("/readyz", **_PROBE)
async def readyz(runtime: RuntimeDep, request: Request, response: Response) -> HealthPublic:
    """Ready to serve: a model is loaded, the database answers, no other session holds
    a lock on a table that recommendations read or log to, and the log is written
    (503 otherwise, saying which).

    An API key file made invalid by an edit does not make the worker unready (it
    serves with the keys read before, as every worker does), but ``keys_error``
    says so: until the file is fixed, its changes, a revoked key among them, are
    not applied. A worker started after such an edit (replacing one that died) has
    no keys read before: it is unready until the file is fixed, and so is one
    started while the key file a setting names is gone, until it is back.

    ``rules_fingerprint`` names the serving rules this worker applies (and logs with
    its answers): every worker answering with the file's fingerprint has applied
    an edit. The rules file's path is not shown (no key is needed here).
    """
    keys = request.app.state.api_keys
    keys_error = keys.error if keys is not None else None
    problems = []
    if keys is not None and keys.unusable:
        problems.append(keys.unusable_why)
    if (not_serving := runtime.not_serving) is not None:
        problems.append(not_serving)
    problems.extend(await run_in_threadpool(_database_problems, runtime))
    # The single-recommendation route reads history through its own asyncio pool
    # (PostgreSQL): ready only once that pool has a live connection too.
    pool = runtime.async_reader
    if not problems and pool is not None and not await ping_async(pool):
        problems.append("database unreachable")
    if runtime.reclog.failing:  # answers are refused until their log is written
        problems.append("recommendation log store failing")
    if problems:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return HealthPublic(
            status="; ".join(problems),
            model_version=runtime.model_version,
            challenger_version=runtime.challenger_version,
            challenger_error=without_directories(runtime.challenger_error),
            last_reload_error=without_directories(runtime.last_reload_error),
            rules_fingerprint=runtime.rules_fingerprint,
            territories_fingerprint=runtime.territories_fingerprint,
            keys_error=keys_error,
        )
    return HealthPublic(
        status="ready",
        model_version=runtime.model_version,
        challenger_version=runtime.challenger_version,
        challenger_error=without_directories(runtime.challenger_error),
        features_as_of=runtime.features_as_of,
        last_reload_error=without_directories(runtime.last_reload_error),
        rules_fingerprint=runtime.rules_fingerprint,
        territories_fingerprint=runtime.territories_fingerprint,
        keys_error=keys_error,
        warming=runtime.warming or None,
    )


# An absolute path (a file:// URI's too): its directories are dropped, its file
# name kept ('rules.yaml, line 2: ...'): the probe needs no key, and the
# deployment's layout is the server log's to tell.
_PATH = re.compile(r"(?:file://)?(?:/[^/\s:,;'\"()]+)+/(?=[^/\s:,;'\"()]+)")


def without_directories(error: str | None) -> str | None:
    """``error`` with the directories of every absolute path in it left out."""
    return None if error is None else _PATH.sub("", error)


def _database_problems(runtime: ServingRuntime) -> list[str]:
    """What keeps the database from serving this worker (blocking: a thread's work)."""
    if not ping(runtime.engine):
        return ["database unreachable"]
    if runtime.migration_pending and not runtime.retry_migration():
        # Back, but not yet migrated by this worker (it started during an outage):
        # done here rather than at the watcher's next retry, up to 10 s later.
        return ["database not migrated"]
    # A table locked by another session answers SELECT 1 but not the requests,
    # refused with 503 after their lock_timeout: not ready either.
    try:
        with runtime.engine.connect() as connection:
            locked = locked_serving_table(connection)
    except UNAVAILABLE_ERRORS:  # lost since the ping
        return ["database unreachable"]
    except DBAPIError as exc:  # a privilege revoked, say: the log's inserts fail too
        return [f"database refuses the locks requests take: {describe_database_error(exc)}"]
    return [] if locked is None else [f"table {locked} locked by another session"]


# HEAD as for the probes above: a monitoring check that probes with it got 405.
@router.head("/metrics", include_in_schema=False)
@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus text format. With auth on, for a ``monitor`` or ``admin`` key only (401,
    403 as the /v1 routes): its counters tell a caller watching them around its own
    request whether its HCP was held out, which answers never say; with
    NEXTBEST_METRICS_AUTH off, for anyone."""
    if request.app.state.metrics_auth:
        admitted_caller(request, METRICS_ROLES)
    body, content_type = metrics_payload()
    return Response(content=body, media_type=content_type)
