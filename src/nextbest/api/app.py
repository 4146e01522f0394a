"""The FastAPI application: lifespan loads the served model once, errors map here."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import signal
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from itertools import islice
from typing import Any

from fastapi import Depends, FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from nextbest import __version__
from nextbest.api.auth import feedback_scope, refused_before_validation, require_roles
from nextbest.api.bodies import (
    BodyRefused,
    body_kind,
    naming_the_field_meant,
    saying_the_bounds,
)
from nextbest.api.connections import CompressWhenAccepted, ConnectionRecycler
from nextbest.api.observability import (
    DatabaseOutage,
    ObservabilityMiddleware,
    forget_dead_workers,
    forget_this_worker,
)
from nextbest.api.openapi import document
from nextbest.api.routes import admin, feedback, health, recommendations, reps
from nextbest.api.unmatched import methods_taken, unknown_path, wrong_method
from nextbest.api.workers import SUPERVISOR_ENV, die_with_supervisor
from nextbest.contract.parse import said_in_another_case, spelled_alike
from nextbest.errors import (
    InvalidRequestError,
    LogBacklogFullError,
    ModelNotLoadedError,
    NotFoundError,
    TerritoriesUnavailableError,
)
from nextbest.service import runtime as runtime_module
from nextbest.service.apikeys import ReloadingKeyStore
from nextbest.service.runtime import ServingRuntime
from nextbest.settings import Settings, get_settings
from nextbest.storage.db import describe_database_error, refuses_writes

logger = logging.getLogger(__name__)

# A 422 echoes what was sent for the bad field (``input``) only up to this many
# characters of JSON: a batch of 1,500 HCPs, or 5,001 events, is not sent back.
MAX_ECHOED_INPUT = 200
# A 422 lists this many errors at most, then says how many more there were: a body
# of a million bad items is not answered with a million errors (each encoded on
# the event loop, the answer a hundred times the size of a compressed request).
MAX_LISTED_ERRORS = 20
GZIP_MIN_BYTES = 4096


def _without_long_inputs(errors: Sequence[Any], body: Any = None) -> list[dict[str, Any]]:
    """Validation errors as FastAPI reports them, the first ``MAX_LISTED_ERRORS`` of
    them (then one saying how many more there were), minus ``input`` values too long
    to echo or that are no JSON (NaN and Infinity, which Python's parser accepts) or
    a body that could not be read as JSON (there is no input to show), and minus the
    exception our validators raised (``ctx.error``: its text is in ``msg`` already,
    and it encodes as ``{}``). A field the route's ``body`` (api/bodies.py's
    ``body_kind``) does not take names the field it is near, or those taken there."""
    out = []
    for raw in errors[:MAX_LISTED_ERRORS]:
        error = naming_the_field_meant(_at_the_repeated_field(_without_raised(raw)), body)
        error = saying_the_bounds(error, body)
        if "input" in error and (
            # FastAPI puts {} there, which reads as if an empty object had been sent.
            error.get("type") == "json_invalid"
            or _surely_longer_than(error["input"], MAX_ECHOED_INPUT)
        ):
            error = {key: value for key, value in error.items() if key != "input"}
        error = jsonable_encoder(error)
        if "input" in error:
            try:
                shown = json.dumps(error["input"], allow_nan=False)
            except ValueError:
                shown = None
            if shown is None or len(shown) > MAX_ECHOED_INPUT:
                error = {key: value for key, value in error.items() if key != "input"}
        out.append(error)
    if len(errors) > MAX_LISTED_ERRORS:
        unlisted = len(errors) - MAX_LISTED_ERRORS
        out.append(
            {
                "type": "too_many_errors",
                "loc": list(errors[MAX_LISTED_ERRORS].get("loc", ()))[:1],
                "msg": f"{unlisted:,} more errors not listed (the first {MAX_LISTED_ERRORS} "
                "are above): fix those and send the request again",
                "ctx": {"listed": MAX_LISTED_ERRORS, "unlisted": unlisted},
            }
        )
    return out


def _surely_longer_than(value: Any, limit: int) -> bool:
    """Whether ``value`` written as JSON takes more than ``limit`` characters, told
    from at most about ``limit`` of its parts: each string character, list item and
    dict key or value takes one at least. A million-item input is not walked, nor
    encoded to be measured."""
    pending, size = [value], 0
    while pending and size <= limit:
        part = pending.pop()
        size += 1
        if isinstance(part, str):
            size += len(part)
        elif isinstance(part, dict):
            pending.extend(islice(part.keys(), limit + 1))
            pending.extend(islice(part.values(), limit + 1))
        elif isinstance(part, list | tuple):
            pending.extend(islice(part, limit + 1))
    return size > limit


def _at_the_repeated_field(error: dict[str, Any]) -> dict[str, Any]:
    """A field given twice in one object (api/schemas.py's ``each_key_once``) is refused
    by the object's check: its ``loc`` names the field too, as any other field's does,
    and no ``input`` is echoed (the object as read holds the last value alone)."""
    if error.get("type") != "repeated_field" or not isinstance(error.get("ctx"), dict):
        return error
    loc = (*error.get("loc", ()), error["ctx"]["field"])
    return {key: value for key, value in error.items() if key != "input"} | {"loc": loc}


def _without_raised(error: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(error.get("ctx"), dict) or "error" not in error["ctx"]:
        return error
    ctx = {key: value for key, value in error["ctx"].items() if key != "error"}
    trimmed = {key: value for key, value in error.items() if key != "ctx"}
    if trimmed.get("type") == "json_invalid":
        # FastAPI's "JSON decode error" alone does not say what is wrong.
        trimmed["msg"] = f"JSON decode error: {error['ctx']['error']}"
    # Our validators' own sentence, without pydantic's "Value error, " in front.
    if isinstance(trimmed.get("msg"), str):
        trimmed["msg"] = trimmed["msg"].removeprefix("Value error, ")
    return {**trimmed, "ctx": ctx} if ctx else trimmed


def _flush_recommendation_log(request: Request) -> None:
    # Feedback may name a recommendation this process served a few ms ago and has
    # not committed yet (batched log): commit it first so the reference resolves.
    # Not while the log's store is failing: the wait would last the outage, and
    # the feedback most likely fails on the same database.
    request.app.state.runtime.reclog.flush(while_failing=False)


def _reload_on_sighup(runtime: ServingRuntime, keys: ReloadingKeyStore | None) -> bool:
    """Make SIGHUP reload this worker (as ``POST /v1/admin/reload`` does) and check
    its API key file (``keys``), when it runs the event loop in its main thread
    (uvicorn's; a test client's does not) and writes to no terminal.

    Left alone, SIGHUP ended a single-worker `nextbest serve` without a word, and
    a service manager's reload (``kill -HUP $MAINPID``) stopped the service. With
    several workers the supervisor takes SIGHUP and replaces the workers instead.
    A server started in a terminal keeps the default: closing the terminal sends
    SIGHUP, and ends it.
    """
    if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        return False
    if os.isatty(2):
        return False

    def hangup() -> None:
        runtime.ask_reload()
        if keys is not None:
            # Otherwise read at the next request's key check only: a file gone or
            # invalid is said at the signal, as several workers' supervisor says it.
            keys.reread()

    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, hangup)
    return True


def create_served_app() -> FastAPI:
    """The app as each worker of ``nextbest serve`` builds it (its uvicorn factory):
    :func:`create_app`, without the worker's own word that auth is off, which
    ``serve`` says once for all its workers, naming the address they listen on."""
    return create_app(auth_off_said=True)


def create_app(
    settings: Settings | None = None,
    runtime: ServingRuntime | None = None,
    *,
    auth_off_said: bool = False,
) -> FastAPI:
    """Build the app; the model, database and API keys are opened at start-up, not here.

    With auth off, the app warns as it starts that anyone can call it as admin,
    unless ``auth_off_said``: the process that starts it said so already, knowing
    the address (``nextbest serve``: :func:`create_served_app`)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = runtime is None
        # A worker of `nextbest serve --workers N` stops with its supervisor.
        die_with_supervisor(os.environ.get(SUPERVISOR_ENV))
        # A replaced worker's gauges (its model version) would stay in /metrics.
        forget_dead_workers()
        config = runtime.settings if runtime is not None else settings or get_settings()
        if config.auth_enabled:
            # Not strict: `nextbest serve` refused an invalid file before any worker
            # started; one invalid now was edited since, and this worker replaces one
            # that died: it starts unready rather than failing (see the store).
            app.state.api_keys = ReloadingKeyStore(
                path=config.resolved_api_keys_file,
                strict=False,
                required=config.api_keys_file is not None,
            )
            if not app.state.api_keys.unusable and not len(app.state.api_keys):
                logger.warning(
                    "auth is on but no API keys are configured (%s, NEXTBEST_API_KEYS): "
                    "every /v1 request will get 401",
                    config.resolved_api_keys_file,
                )
        else:
            app.state.api_keys = None
            if not auth_off_said:
                logger.warning(
                    "auth is OFF (NEXTBEST_AUTH_ENABLED=false): anyone can call as admin"
                )
        # /metrics asks for a key when keys are asked for at all (None: auth off).
        app.state.metrics_auth = app.state.api_keys is not None and config.metrics_auth
        app.state.runtime = runtime or ServingRuntime.start(config)
        app.state.runtime.start_watcher()
        await app.state.runtime.open_async_reader()
        hangup = _reload_on_sighup(app.state.runtime, app.state.api_keys)
        try:
            yield
        finally:
            if hangup:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            await app.state.runtime.close_async_reader()
            if own:
                app.state.runtime.close()
            else:
                app.state.runtime.reclog.flush()
            # Its live gauges (the version it served) leave /metrics with it.
            forget_this_worker()

    app = FastAPI(
        title="nextbest",
        version=__version__,
        description="Next-best-action recommendations for HCP engagement, with feedback. "
        "Send an API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.",
        lifespan=lifespan,
        # A trailing slash is answered by _unmatched below, not with an empty redirect.
        redirect_slashes=False,
    )
    document(app)
    # What this worker logs of a database it cannot reach (refusals counted, its return said).
    app.state.database_outage = DatabaseOutage()
    # Answers of more than a few packets compressed for clients that accept gzip: a
    # batch of 1,000 HCPs is about 1 MB of JSON, a tenth of it compressed.
    app.add_middleware(CompressWhenAccepted, minimum_size=GZIP_MIN_BYTES, compresslevel=5)
    app.add_middleware(ObservabilityMiddleware)
    configured = runtime.settings if runtime is not None else settings or get_settings()
    app.add_middleware(ConnectionRecycler, limit=configured.max_requests_per_connection)
    app.include_router(health.router)
    app.include_router(recommendations.router)
    app.include_router(reps.router)
    app.include_router(admin.router)
    app.include_router(
        feedback.router,
        dependencies=[
            require_roles("admin", "channel", "rep"),
            Depends(feedback_scope),
            Depends(_flush_recommendation_log),
        ],
    )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        if request.url.path.startswith("/v1/") and (
            unauthenticated := refused_before_validation(request)
        ):
            return JSONResponse(
                status_code=unauthenticated.status_code,
                content={"detail": unauthenticated.detail},
                headers=unauthenticated.headers,
            )
        return JSONResponse(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            content={"detail": _without_long_inputs(exc.errors(), body_kind(request))},
        )

    # A request no route takes: what to call instead (api/unmatched.py). A route's
    # own refusals (401, 403, ...) keep FastAPI's answer.
    @app.exception_handler(StarletteHTTPException)
    async def _unmatched(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (status.HTTP_404_NOT_FOUND, status.HTTP_405_METHOD_NOT_ALLOWED):
            taken = methods_taken(request, request.scope["path"])
            if not taken:
                return unknown_path(request)
            if request.method not in taken:
                return wrong_method(request, taken)
        return await http_exception_handler(request, exc)

    @app.exception_handler(BodyRefused)
    async def _body_refused(request: Request, exc: BodyRefused) -> JSONResponse:
        refused = refused_before_validation(request) or exc
        return JSONResponse(
            status_code=refused.status_code,
            content={"detail": refused.detail},
            headers=refused.headers,
        )

    @app.exception_handler(NotFoundError)
    async def _not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        detail = str(exc)
        if exc.kind == "hcp_id":
            # 'h000001' sent for 'H000001' (a CRM that changed the ids' case): said so.
            known = request.app.state.runtime.recommender.known_hcps
            if (meant := spelled_alike(exc.identifier, known)) is not None:
                detail += said_in_another_case(meant)
        return JSONResponse(status_code=status.HTTP_404_NOT_FOUND, content={"detail": detail})

    @app.exception_handler(InvalidRequestError)
    async def _invalid(_: Request, exc: InvalidRequestError) -> JSONResponse:
        return JSONResponse(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            # The shape of FastAPI's own 422s, so that a client reads both alike.
            content={
                "detail": [
                    {"loc": [exc.location, exc.field], "msg": exc.message, "type": "value_error"}
                ]
            },
        )

    @app.exception_handler(LogBacklogFullError)
    async def _log_behind(_: Request, exc: LogBacklogFullError) -> JSONResponse:
        return JSONResponse(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            content={"detail": str(exc)},
            headers={"Retry-After": "1"},
        )

    # The database down, restarting or out of connections: the request is refused
    # with 503 so callers retry, not a 500 that reads as a bug. Recommendations
    # are not answered without live contact history: caps and cool-downs would go
    # unchecked.
    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(PoolTimeoutError)
    async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # The driver's message names the server, never the SQL's parameters.
        request.app.state.database_outage.refused_request(
            request.scope, describe_database_error(exc)
        )
        return JSONResponse(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            content={"detail": "the database is unavailable; try again shortly"},
            headers={"Retry-After": "1"},
        )

    # A database that answers reads but refuses writes (a standby after a failover,
    # a read-only transaction default, a privilege revoked) is unavailable too:
    # feedback is not acknowledged, and answers are refused while their log cannot
    # be written. Any other driver error is a fault: a 500, as before.
    @app.exception_handler(DBAPIError)
    async def _database_refuses_writes(request: Request, exc: Exception) -> JSONResponse:
        if not refuses_writes(exc):
            raise exc
        request.app.state.database_outage.refused_request(
            request.scope, describe_database_error(exc)
        )
        return JSONResponse(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            content={
                "detail": "the database refuses writes (read-only, or without privilege); "
                "try again shortly"
            },
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(ModelNotLoadedError)
    @app.exception_handler(TerritoriesUnavailableError)
    async def _no_model(_: Request, exc: Exception) -> JSONResponse:
        # The runtime tries to load a model (or the territory file) again every
        # RETRY_INTERVAL_S (read here, where a test may have shortened it); a
        # Retry-After is whole seconds.
        return JSONResponse(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            content={"detail": str(exc)},
            headers={"Retry-After": str(math.ceil(runtime_module.RETRY_INTERVAL_S))},
        )

    return app
