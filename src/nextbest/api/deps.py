"""Typed dependencies shared by the routes.

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in
the thread pool, one thread hop per dependency per request, which costs more
than what these do (they never block).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from nextbest.service.runtime import ServingRuntime


async def get_runtime(request: Request) -> ServingRuntime:
    runtime: ServingRuntime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[ServingRuntime, Depends(get_runtime)]


async def get_session(runtime: RuntimeDep) -> AsyncIterator[Session]:
    # Opening a session takes no connection yet; the route's first query does.
    with runtime.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
