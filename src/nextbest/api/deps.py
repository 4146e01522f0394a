"""Typed dependencies shared by the routes.

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in
the thread pool, one thread hop per dependency per request, which costs more
than what these do (they never block).
"""

from __future__ import annotations

import difflib
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from nextbest.errors import InvalidRequestError
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


def only_query(*names: str) -> Any:
    """A dependency refusing query parameters other than ``names`` (422 naming the
    one sent): ``?capcity=5`` would otherwise be ignored and the default served;
    and any given twice (``?date=...&date=...``: which one was meant?)."""

    async def check(request: Request) -> None:
        for sent in request.query_params:
            if len(request.query_params.getlist(sent)) > 1:
                raise InvalidRequestError(
                    sent, "given more than once; give it once", location="query"
                )
            if sent not in names:
                near = difflib.get_close_matches(sent, names, n=1)
                hint = f"did you mean '{near[0]}'? " if near else ""
                raise InvalidRequestError(
                    sent,
                    f"unknown query parameter ({hint}known: {', '.join(names)})",
                    location="query",
                )

    return Depends(check)
