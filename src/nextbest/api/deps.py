"""Typed dependencies shared by the routes.

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in
the thread pool, one thread hop per dependency per request, which costs more
than what these do (they never block).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.datastructures import QueryParams

from nextbest.errors import InvalidRequestError
from nextbest.service.runtime import ServingRuntime
from nextbest.yamlfile import unknown_name_hint


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
    """A dependency refusing query parameters other than ``names`` (see
    :func:`check_query`): ``?capcity=5`` would otherwise be ignored and the default
    served."""

    async def check(request: Request) -> None:
        check_query(request.query_params, names)

    return Depends(check)


def check_query(sent: QueryParams, names: Sequence[str]) -> None:
    """Refuse (422 naming it) a query parameter of ``sent`` other than ``names`` (with
    the one it is near, else ``names``, as a body's unknown field is said), and
    any given twice (``?date=...&date=...``: which one was meant?). A route that
    takes none (``names`` empty) reads its fields from its JSON body only: a
    ``?k=3`` or ``?dry_run=true`` beside the body was ignored, the default served
    or the events stored."""
    for name in sent:
        if not names:
            raise InvalidRequestError(
                name,
                "this route takes no query parameters: send its fields in the JSON body",
                location="query",
            )
        if len(sent.getlist(name)) > 1:
            raise InvalidRequestError(name, "given more than once; give it once", location="query")
        if name not in names:
            # Worded as a body's unknown field is (api/bodies.py): the parameter it
            # is near, else those the route takes.
            raise InvalidRequestError(
                name, f"unknown query parameter{unknown_name_hint(name, names)}", location="query"
            )
