"""A request no route takes (a misspelt path, a wrong method, a trailing slash) is
answered with what to call instead, as every other refusal: ``{"detail": "..."}``."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from nextbest.api.schemas import ErrorPublic


def _detail(response) -> str:
    return ErrorPublic.model_validate(response.json()).detail


def _served(client: TestClient) -> int:
    """Recommendations logged so far (a request redirected or refused logs none)."""
    runtime = client.app.state.runtime
    runtime.reclog.flush()
    with runtime.engine.connect() as connection:
        return int(connection.exec_driver_sql("SELECT COUNT(*) FROM recommendations").scalar())


@pytest.mark.parametrize(
    ("method", "path", "named"),
    [
        ("POST", "/v1/recommendation", "POST /v1/recommendations"),
        ("POST", "/v1/recommendations/batches", "POST /v1/recommendations/batch"),
        ("POST", "/v1/feedbacks", "POST /v1/feedback"),
        ("POST", "/recommendations", "POST /v1/recommendations"),
        ("POST", "/V1/Recommendations", "POST /v1/recommendations"),
        ("GET", "/v1/reps/rep-1/suggestion", "GET /v1/reps/{rep_id}/suggestions"),
        ("POST", "/v1/admin/reloads", "POST /v1/admin/reload"),
        ("GET", "/heathz", "GET or HEAD /healthz"),
        # Routes left out of the OpenAPI document are served all the same: named too.
        ("GET", "/metric", "GET or HEAD /metrics"),
        ("GET", "/Metrics", "GET or HEAD /metrics"),
        ("GET", "/doc", "GET or HEAD /docs"),
        ("GET", "/openapi", "GET or HEAD /openapi.json"),
    ],
)
def test_an_unknown_path_names_the_nearest_route(
    client: TestClient, method: str, path: str, named: str
) -> None:
    response = client.request(method, path, json={})
    assert response.status_code == 404, response.text
    detail = _detail(response)
    assert detail.startswith(f"no route at '{path}'"), detail
    assert named in detail, detail
    assert "/docs" in detail, detail


def test_every_route_served_is_named_for_a_path_one_letter_from_it(client: TestClient) -> None:
    """The hints came from the OpenAPI document alone: a route left out of it
    (``/metrics``, the docs' pages) was never named, though served to anyone."""
    served = {}
    for route in client.app.routes:  # the docs' pages: not in the document either
        if getattr(route, "path", None) in ("/docs", "/redoc", "/openapi.json"):
            served[route.path] = "GET or HEAD"
    served["/metrics"] = "GET or HEAD"
    for path, operations in client.get("/openapi.json").json()["paths"].items():
        served[path] = " or ".join(m.upper() for m in operations)
    assert {"/metrics", "/docs", "/redoc", "/openapi.json", "/v1/feedback"} <= set(served)
    for template, methods in served.items():
        misspelt = template.replace("{rep_id}", "rep-1")[:-1]
        response = client.get(misspelt)
        assert response.status_code == 404, (misspelt, response.text)
        assert f"{methods} {template}" in _detail(response), (misspelt, _detail(response))


def test_a_path_near_no_route_points_at_the_docs_only(client: TestClient) -> None:
    for path in ("/wp-login.php", "/", "/v1/"):
        detail = _detail(client.get(path))
        assert detail == f"no route at '{path}': the routes are listed at /docs", detail


def test_a_long_unknown_path_is_not_sent_back_whole(client: TestClient) -> None:
    path = "/v1/" + "x" * 10_000
    response = client.get(path)
    assert response.status_code == 404
    assert len(response.content) < 500, len(response.content)
    assert "(10,004 characters)" in _detail(response)


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/v1/recommendations/", "/v1/recommendations"),
        ("/v1/recommendations/batch/", "/v1/recommendations/batch"),
        ("/v1/feedback/", "/v1/feedback"),
        ("/v1/reps/rep-1/feedback//", "/v1/reps/rep-1/feedback"),
        ("/v1/admin/reload/", "/v1/admin/reload"),
    ],
)
def test_a_post_with_a_trailing_slash_is_refused_naming_the_route(
    client: TestClient, path: str, route: str
) -> None:
    # Was: an empty 307 that curl shows as no output at all and that many clients do
    # not follow with a POST (the body lost, or sent again).
    hcp = str(client.app.state.runtime.recommender.hcp_ids[0])
    before = _served(client)
    response = client.post(path, json={"hcp_id": hcp}, follow_redirects=False)
    assert response.status_code == 404, response.text
    assert "location" not in response.headers
    assert _detail(response) == (
        f"no route at '{path}': routes take no trailing slash: '{route}' takes POST"
    )
    assert _served(client) == before


@pytest.mark.parametrize(
    ("path", "to"),
    [
        ("/healthz/", "/healthz"),
        ("/readyz/", "/readyz"),
        ("/metrics/", "/metrics"),
        ("/openapi.json/", "/openapi.json"),
        ("/v1/reps/rep-1/suggestions/?capacity=2", "/v1/reps/rep-1/suggestions?capacity=2"),
    ],
)
def test_a_get_with_a_trailing_slash_is_redirected_saying_so(
    client: TestClient, path: str, to: str
) -> None:
    # A GET loses nothing by a redirect, and a probe configured with the slash keeps
    # working; the answer now says where it points for a client that shows it.
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 307, response.text
    assert response.headers["location"] == f"http://testserver{to}"
    route = to.partition("?")[0]
    assert _detail(response) == (
        f"no route at '{path.partition('?')[0]}': routes take no trailing slash: "
        f"redirected to '{route}'"
    )
    assert client.get(path).status_code == 200


def test_a_head_with_a_trailing_slash_is_redirected_where_the_route_takes_head(
    client: TestClient,
) -> None:
    redirected = client.head("/healthz/", follow_redirects=False)
    assert redirected.status_code == 307
    assert redirected.headers["location"] == "http://testserver/healthz"
    # A rep's plan takes GET alone: a redirect would lead to a 405.
    refused = client.head("/v1/reps/rep-1/suggestions/", follow_redirects=False)
    assert refused.status_code == 404
    assert "location" not in refused.headers


def test_a_get_with_a_trailing_slash_on_a_post_route_is_not_redirected(
    client: TestClient,
) -> None:
    # A redirect would lead to a 405: the answer names the method at once.
    response = client.get("/v1/recommendations/", follow_redirects=False)
    assert response.status_code == 404, response.text
    assert _detail(response) == (
        "no route at '/v1/recommendations/': routes take no trailing slash: "
        "'/v1/recommendations' takes POST"
    )


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/recommendations", "POST"),
        ("PUT", "/v1/feedback", "POST"),
        ("DELETE", "/v1/admin/reload", "POST"),
        ("POST", "/v1/reps/rep-1/suggestions", "GET"),
        ("GET", "/v1/reps/rep-1/feedback", "POST"),
        # Two routes each (HEAD has its own): the Allow header named the first's alone.
        ("POST", "/healthz", "GET, HEAD"),
        ("POST", "/readyz", "GET, HEAD"),
    ],
)
def test_a_wrong_method_names_the_methods_the_route_takes(
    client: TestClient, method: str, path: str, allowed: str
) -> None:
    response = client.request(method, path)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allowed
    assert _detail(response) == (
        f"'{path}' takes {allowed.replace(', ', ' or ')}, not '{method}' "
        "(the routes are listed at /docs)"
    )


def test_a_caller_without_a_key_gets_the_hint_but_no_more_than_the_docs_tell(
    client: TestClient,
) -> None:
    """The hints name routes anyone learns of without a key (those of the OpenAPI
    document, /metrics, the docs' pages); a route that exists still refuses such a
    caller (401) before anything else."""
    client.headers.clear()
    documented = client.get("/openapi.json").json()["paths"]
    response = client.post("/v1/recommendation", json={"hcp_id": "H000001"})
    assert response.status_code == 404
    assert "POST /v1/recommendations" in _detail(response)
    assert "/v1/recommendations" in documented
    assert client.post("/v1/recommendations", json={"hcp_id": "H000001"}).status_code == 401
    assert client.post("/v1/recommendations/", json={}).status_code == 404
    assert client.get("/v1/recommendations").status_code == 405
    assert client.get("/v1/reps/rep-1/suggestions").status_code == 401


def test_a_route_s_own_refusals_are_answered_as_before(client: TestClient, keys) -> None:
    # 403 (a role), 404 (an HCP the model does not know): the route's own words.
    refused = client.get("/v1/reps/rep-1/suggestions", headers=keys.channel)
    assert refused.status_code == 403
    assert _detail(refused) == "role 'channel' may not use this route (allowed: admin, rep)"
    unknown = client.post("/v1/recommendations", json={"hcp_id": "NOBODY"})
    assert unknown.status_code == 404
    assert not _detail(unknown).startswith("no route")
    for path in ("/healthz", "/metrics", "/docs", "/openapi.json"):
        assert client.get(path).status_code == 200, path


def test_routes_named_for_an_unknown_path_are_told_apart(client: TestClient) -> None:
    """Two routes were named as "did you mean GET or HEAD /docs or GET or HEAD
    /redoc?", one list of methods and paths: a comma parts the routes."""
    detail = _detail(client.get("/redocs"))
    assert detail == (
        "no route at '/redocs': did you mean GET or HEAD /redoc, or GET or HEAD /docs? "
        "(the routes are listed at /docs)"
    ), detail
    two = _detail(client.post("/v1/recommendationz/batch", json={}))
    assert "did you mean POST /v1/recommendations/batch, or POST " in two, two
    assert two.count(", or ") == 1, two
