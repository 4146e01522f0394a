"""The FastAPI application: lifespan loads the served model once, errors map here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

from nextbest import __version__
from nextbest.api.routes import feedback, health, recommendations
from nextbest.errors import InvalidRequestError, ModelNotLoadedError, NotFoundError
from nextbest.service.runtime import ServingRuntime
from nextbest.settings import Settings, get_settings


def create_app(settings: Settings | None = None, runtime: ServingRuntime | None = None) -> FastAPI:
    """Build the app; the model and database are opened at start-up, not here."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = runtime is None
        app.state.runtime = runtime or ServingRuntime.start(settings or get_settings())
        try:
            yield
        finally:
            if own:
                app.state.runtime.close()

    app = FastAPI(
        title="nextbest",
        version=__version__,
        description="Next-best-action recommendations for HCP engagement, with feedback.",
        lifespan=lifespan,
    )
    app.include_router(health.router)
    app.include_router(recommendations.router)
    app.include_router(feedback.router)

    @app.exception_handler(NotFoundError)
    async def _not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse(status_code=status.HTTP_404_NOT_FOUND, content={"detail": str(exc)})

    @app.exception_handler(InvalidRequestError)
    async def _invalid(_: Request, exc: InvalidRequestError) -> JSONResponse:
        return JSONResponse(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            content={"detail": [{"loc": ["body", exc.field], "msg": exc.message}]},
        )

    @app.exception_handler(ModelNotLoadedError)
    async def _no_model(_: Request, exc: ModelNotLoadedError) -> JSONResponse:
        return JSONResponse(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE, content={"detail": str(exc)}
        )

    return app
