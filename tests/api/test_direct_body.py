"""Which routes of ``JSONBodyRoute`` get a valid body without FastAPI's generic
handler, and that every other request is answered as that handler answers it."""

from __future__ import annotations

from typing import Any

import fastapi.routing
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict, Field

from nextbest.api.bodies import JSONBodyRoute

JSON = {"Content-Type": "application/json"}


class Ask(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    hcp_id: str = Field(min_length=1)
    k: int = Field(default=5, ge=1, le=50)


async def _refuse() -> None:
    raise HTTPException(status_code=403, detail="refused by a dependency")


async def _nothing() -> None:
    return None


def _app(*, include_dependencies: list[Any] | None = None) -> FastAPI:
    router = APIRouter(route_class=JSONBodyRoute)

    @router.post("/direct")
    async def direct(request: Request, body: Ask) -> Response:
        return Response(f"{body.hcp_id}:{body.k}:{request.method}", media_type="text/plain")

    @router.post("/own-dependency", dependencies=[Depends(_refuse)])
    async def own_dependency(request: Request, body: Ask) -> Response:
        return Response("served", media_type="text/plain")

    @router.post("/generic", dependencies=[Depends(_nothing)])
    async def generic(request: Request, body: Ask) -> Response:
        return Response(f"{body.hcp_id}:{body.k}:{request.method}", media_type="text/plain")

    @router.post("/query")
    async def query(request: Request, body: Ask, tag: str = "none") -> Response:
        return Response(f"{body.hcp_id}:{tag}", media_type="text/plain")

    @router.post("/model-answer")
    async def model_answer(request: Request, body: Ask) -> dict[str, Any]:
        return {"hcp_id": body.hcp_id}

    @router.post("/plain-def")
    def plain_def(request: Request, body: Ask) -> Response:
        return Response(body.hcp_id, media_type="text/plain")

    app = FastAPI()
    app.state.api_keys = None  # auth off: the body is read without a key check
    app.include_router(router, dependencies=include_dependencies or [])
    return app


@pytest.fixture
def solved(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the requests FastAPI's generic handler solved (its
    ``solve_dependencies``, which it runs for every request it handles)."""
    calls: list[str] = []
    real = fastapi.routing.solve_dependencies

    async def counted(*, request: Request, **kwargs: Any) -> Any:
        calls.append(request.url.path)
        return await real(request=request, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counted)
    return calls


def test_a_valid_body_goes_straight_to_a_route_taking_only_the_request_and_it(
    solved: list[str],
) -> None:
    with TestClient(_app()) as client:
        response = client.post("/direct", json={"hcp_id": " H1 ", "k": 3})
        assert (response.status_code, response.text) == (200, "H1:3:POST")
        assert solved == []
        for path, answer in (
            ("/generic", "H1:3:POST"),
            ("/query?tag=t", "H1:t"),
            ("/model-answer", '{"hcp_id":"H1"}'),
            ("/plain-def", "H1"),
        ):
            response = client.post(path, json={"hcp_id": "H1", "k": 3})
            assert (response.status_code, response.text) == (200, answer), path
        assert solved == ["/generic", "/query", "/model-answer", "/plain-def"]


def test_a_dependency_of_the_route_or_of_its_inclusion_still_runs() -> None:
    with TestClient(_app()) as client:
        response = client.post("/own-dependency", json={"hcp_id": "H1"})
        assert response.status_code == 403, response.text
    with TestClient(_app(include_dependencies=[Depends(_refuse)])) as client:
        for path in ("/direct", "/generic", "/query"):
            response = client.post(path, json={"hcp_id": "H1"})
            assert response.status_code == 403, (path, response.text)
            assert response.json() == {"detail": "refused by a dependency"}


@pytest.mark.parametrize(
    "content, headers",
    [
        (b'{"hcp_id": "H1", "k": 0}', JSON),
        (b'{"hcp_id": "H1", "kk": 1}', JSON),
        (b'{"hcp_id": ""}', JSON),
        (b"{}", JSON),
        (b'["H1"]', JSON),
        (b'{"hcp_id": "H1",}', JSON),
        (b"", JSON),
        (b"", {}),
        (b'{"hcp_id": "H1"}', {"Content-Type": "text/plain"}),
        (b"\xff", JSON),
    ],
)
def test_a_body_not_valid_for_the_route_is_answered_as_by_the_generic_handler(
    content: bytes, headers: dict[str, str]
) -> None:
    with TestClient(_app()) as client:
        direct = client.post("/direct", content=content, headers=headers)
        generic = client.post("/generic", content=content, headers=headers)
    assert direct.status_code in (415, 422), direct.text
    assert (direct.status_code, direct.json()) == (generic.status_code, generic.json())


def test_the_single_recommendation_route_is_served_directly(
    client: TestClient, solved: list[str]
) -> None:
    hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
    response = client.post("/v1/recommendations", json={"hcp_id": hcp, "k": 2})
    assert response.status_code == 200, response.text
    assert response.json()["hcp_id"] == hcp
    response = client.post("/v1/recommendations/batch", json={"hcp_ids": [hcp], "k": 2})
    assert response.status_code == 200, response.text
    assert solved == ["/v1/recommendations/batch"]
    # Without a key, refused as before, whatever the body.
    for content in (b'{"hcp_id": "x"}', b"{", b""):
        response = client.post(
            "/v1/recommendations", content=content, headers={**JSON, "Authorization": ""}
        )
        assert response.status_code == 401, (content, response.text)
