"""Answers to a request no route takes, saying what to call instead.

Starlette's own were ``404 {"detail": "Not Found"}`` for a misspelt path, ``405
{"detail": "Method Not Allowed"}`` for a wrong method and an empty ``307`` for a
trailing slash, which curl without ``-L`` shows as no output, and which many
clients do not follow with a POST (its body lost, or sent again). Here:

- an unknown path is a 404 naming the nearest routes the app serves, those left out
  of the OpenAPI document included (``/v1/recommendation``: ``POST
  /v1/recommendations``; ``/metric``: ``GET /metrics``) and pointing at the docs;
- a trailing slash on a route's path is a 404 naming the path without it and the
  methods it takes, except a GET or HEAD of a route that takes it: redirected (307)
  as before, which loses nothing (no body) and keeps a probe configured with the
  slash working, its answer saying where it points;
- a wrong method is a 405 naming the methods the path takes, all of them in its
  ``Allow`` header (that of a path of two routes, ``GET`` and ``HEAD``, named the
  first one's alone).

No key is checked first: these answers name only routes anyone can learn of without
a key (those the OpenAPI document lists, and ``/metrics`` and the docs' own pages,
which answer without one) and echo the caller's own path.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import fastapi.routing
from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from starlette.datastructures import URL
from starlette.routing import BaseRoute, Match

from nextbest.contract.parse import QUOTED_AT_MOST, quoted
from nextbest.yamlfile import near_words

# The methods a path is tried with to tell which ones it takes.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# Routes named for an unknown path, at most.
NEAREST = 3
# Quoted this long at most: a scanner's path of 100 KB is not sent back.
SHOWN_PATH = 2 * QUOTED_AT_MOST


def methods_taken(request: Request, path: str) -> list[str]:
    """The methods some route of ``request``'s app takes at ``path`` (a path as
    ``request.scope["path"]`` is: its ``root_path`` applies), in :data:`METHODS`
    order; none when no route has that path."""
    routes = request.app.router.routes
    root = request.scope.get("root_path", "")
    taken = []
    for method in METHODS:
        probe: dict[str, Any] = {"type": "http", "path": path, "root_path": root, "method": method}
        if any(route.matches(probe)[0] is Match.FULL for route in routes):
            taken.append(method)
    return taken


def wrong_method(request: Request, allowed: list[str]) -> JSONResponse:
    """405: the request's method is not one that its path takes (``allowed``)."""
    return JSONResponse(
        status_code=status.HTTP_405_METHOD_NOT_ALLOWED,
        content={
            "detail": f"{_shown(request.url.path)} takes {' or '.join(allowed)}, not "
            f"{quoted(request.method, at_most=QUOTED_AT_MOST)} ({_docs(request)})"
        },
        headers={"Allow": ", ".join(allowed)},
    )


def unknown_path(request: Request) -> JSONResponse:
    """404 (or 307, see the module) for a path no route of the app has."""
    app: FastAPI = request.app
    path = request.url.path
    head = f"no route at {_shown(path)}"
    stripped = request.scope["path"].rstrip("/")
    if stripped != request.scope["path"] and stripped:
        taken = methods_taken(request, stripped)
        if request.method in ("GET", "HEAD") and request.method in taken:
            # As Starlette's redirect: the query string kept.
            to = URL(scope={**request.scope, "path": stripped})
            return JSONResponse(
                status_code=status.HTTP_307_TEMPORARY_REDIRECT,
                content={
                    "detail": f"{head}: routes take no trailing slash: redirected to "
                    f"{_shown(to.path)}"
                },
                headers={"Location": str(to)},
            )
        if taken:
            return _not_found(
                f"{head}: routes take no trailing slash: {_shown(path.rstrip('/'))} takes "
                f"{' or '.join(taken)}"
            )
    near = nearest_routes(app, path)
    if near:
        return _not_found(f"{head}: did you mean {_any_of(near)}? ({_docs(request)})")
    return _not_found(f"{head}: {_docs(request)}")


def nearest_routes(app: FastAPI, path: str) -> list[str]:
    """The routes ``app`` serves whose paths are most like ``path`` (case aside),
    nearest first, each as its methods and template: ``GET
    /v1/reps/{rep_id}/suggestions``. Every route counts, those left out of the OpenAPI
    document too (``/metrics``, ``/docs``). A template is compared with its parameters
    as ``path`` gives them (``/v1/reps/rep-1/suggestion`` is one letter from the
    plan's route)."""
    sent = path.lower().split("/")
    filled: dict[str, str] = {}
    for template, methods in served_routes(app).items():
        parts = template.split("/")
        like = "/".join(
            sent[n] if part.startswith("{") and n < len(sent) else part.lower()
            for n, part in enumerate(parts)
        )
        filled.setdefault(like, f"{' or '.join(methods)} {template}")
    near = near_words(path.lower(), list(filled), n=NEAREST)
    return [filled[like] for like in near]


def served_routes(app: FastAPI) -> dict[str, list[str]]:
    """Every path template ``app`` serves, in the order its routes are tried, with the
    methods it takes there (in :data:`METHODS` order, those of every route of that
    template: ``/healthz`` has one route for GET and one for HEAD)."""
    taken: dict[str, set[str]] = {}
    for route in _each_route(app.router.routes):
        template = getattr(route, "path_format", None)
        methods = getattr(route, "methods", None)
        if isinstance(template, str) and methods:  # a mount or a websocket: neither
            taken.setdefault(template, set()).update(m.upper() for m in methods)
    return {
        template: [m for m in METHODS if m in methods]
        for template, methods in taken.items()
        if any(m in METHODS for m in methods)
    }


def _each_route(routes: Iterable[BaseRoute]) -> Iterator[Any]:
    # FastAPI 0.16x keeps an included router as one entry of app.routes, its routes
    # inside it; iter_route_contexts yields each of them. Before, app.routes was flat.
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    yield from routes if flatten is None else flatten(list(routes))


def _any_of(routes: list[str]) -> str:
    """Routes named as alternatives, a comma before the "or" between two of them: a
    route's own methods are joined by "or" too, and "GET or HEAD /docs or GET or HEAD
    /redoc" read as one list of methods and paths."""
    return routes[0] if len(routes) == 1 else f"{', '.join(routes[:-1])}, or {routes[-1]}"


def _not_found(detail: str) -> JSONResponse:
    return JSONResponse(status_code=status.HTTP_404_NOT_FOUND, content={"detail": detail})


def _shown(path: str) -> str:
    return quoted(path, at_most=SHOWN_PATH)


def _docs(request: Request) -> str:
    app: FastAPI = request.app
    root = request.scope.get("root_path", "")
    if app.docs_url:
        return f"the routes are listed at {root}{app.docs_url}"
    return f"the routes are listed in {root}{app.openapi_url}"
