"""A client written from /openapi.json reads every answer the service gives: each
status a route answers is declared, with the body's schema, and the key is."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient
from httpx import Response

from nextbest.api.app import create_app


@pytest.fixture
def spec(client: TestClient) -> dict[str, Any]:
    return client.get("/openapi.json").json()


def _conforms(spec: dict[str, Any], method: str, path: str, response: Response) -> None:
    """The answer's status is declared for the route and its body fits the schema."""
    declared = spec["paths"][path][method]["responses"]
    code = str(response.status_code)
    assert code in declared, f"{method.upper()} {path} answered {code}, declares {list(declared)}"
    schema = dict(declared[code]["content"]["application/json"]["schema"])
    schema["components"] = spec["components"]  # where its $refs point
    jsonschema.validate(response.json(), schema, cls=jsonschema.Draft202012Validator)
    for name, header in declared[code].get("headers", {}).items():
        if header.get("required"):
            assert name in response.headers, f"{method.upper()} {path} {code} lacks {name}"
        if name in response.headers and header["schema"]["type"] == "integer":
            assert response.headers[name].isdigit(), (name, response.headers[name])


def _hcps(client: TestClient, territory: str) -> tuple[str, str]:
    """An HCP inside ``territory`` and one outside it."""
    recommender = client.app.state.runtime.recommender
    ids = [str(h) for h in recommender.hcp_ids]
    inside = next(h for h in ids if recommender.territory_of(h) == territory)
    outside = next(h for h in ids if recommender.territory_of(h) != territory)
    return inside, outside


def test_every_v1_route_declares_the_key_and_the_refusals(spec: dict[str, Any]) -> None:
    assert set(spec["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    routes = [(p, ops) for p, ops in spec["paths"].items() if p.startswith("/v1/")]
    assert len(routes) >= 6
    for path, operations in routes:
        for method, operation in operations.items():
            assert operation["security"] == [{"bearer": []}, {"apiKey": []}], (method, path)
            assert {"401", "403", "503"} <= set(operation["responses"]), (method, path)
    assert "security" not in spec["paths"]["/healthz"]["get"]


def test_every_v1_route_declares_a_bug_s_500_and_the_headers_clients_act_on(
    spec: dict[str, Any],
) -> None:
    """A 500 (an unhandled error) is ErrorPublic like the other refusals, and a
    generated client learns of Retry-After (503) and WWW-Authenticate (401)."""
    for path, operations in spec["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            responses = operation["responses"]
            error = {"$ref": "#/components/schemas/ErrorPublic"}
            assert responses["500"]["content"]["application/json"]["schema"] == error, path
            assert responses["503"]["headers"]["Retry-After"]["required"], (method, path)
            assert responses["401"]["headers"]["WWW-Authenticate"]["required"], (method, path)


def test_an_empty_territory_id_is_refused_as_the_document_says(client: TestClient, spec) -> None:
    """A generated client that checks parameters before sending learns that an empty
    territory_id is refused (it was declared as any string up to 128 characters)."""
    (territory,) = [
        p
        for p in spec["paths"]["/v1/reps/{rep_id}/suggestions"]["get"]["parameters"]
        if p["name"] == "territory_id"
    ]
    assert territory["schema"]["minLength"] == 1
    refused = client.get("/v1/reps/x/suggestions", params={"territory_id": ""})
    assert refused.status_code == 422
    assert "is empty" in refused.json()["detail"][0]["msg"]


def test_a_blank_reason_the_routes_take_fits_the_document(client: TestClient, keys, spec) -> None:
    """A feedback event's and a rep decision's reason were declared non-empty
    (minLength 1), while the routes take one sent empty or as spaces as none (a CRM's
    picklist left unset): a client checking bodies against the document refused to
    send what the service stores."""
    plan = client.get(f"/v1/reps/{keys.rep_name}/suggestions", headers=keys.rep).json()
    first = plan["suggestions"][0]
    hcp = first["hcp_id"]
    for path, body, headers in (
        (
            "/v1/feedback",
            {"event_id": "blank-reason", "event_type": "opened", "hcp_id": hcp, "reason": ""},
            keys.admin,
        ),
        (
            f"/v1/reps/{keys.rep_name}/feedback",
            {
                "recommendation_id": first["recommendation_id"],
                "hcp_id": hcp,
                "action_id": first["action_id"],
                "decision": "accept",
                "reason": "  ",
            },
            keys.rep,
        ),
    ):
        schema = dict(
            spec["paths"][path.replace(keys.rep_name, "{rep_id}")]["post"]["requestBody"][
                "content"
            ]["application/json"]["schema"]
        )
        schema["components"] = spec["components"]
        jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)
        answer = client.post(path, json=body, headers=headers)
        assert answer.status_code == 200, (path, answer.text)
        assert answer.json()["accepted"] == 1


def test_the_document_is_well_formed(spec: dict[str, Any]) -> None:
    """Every $ref names a schema the document has (api/openapi.py adds some by name),
    every schema is valid JSON Schema 2020-12 and every answer has a description:
    a client generator stops at the first that is not."""
    components = spec["components"]["schemas"]
    validator = jsonschema.Draft202012Validator

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [r for value in node.values() for r in refs(value)]
        if isinstance(node, list):
            return [r for value in node for r in refs(value)]
        return []

    for ref in refs(spec):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in components, ref
    for schema in components.values():
        validator.check_schema(schema)
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                validator.check_schema(parameter["schema"])
            for code, response in operation["responses"].items():
                assert response.get("description"), (method, path, code)
                for content in response.get("content", {}).values():
                    validator.check_schema(content["schema"])
                for header in response.get("headers", {}).values():
                    validator.check_schema(header["schema"])


def test_a_bug_s_500_on_every_v1_route_fits_the_document(api_settings, keys) -> None:
    """An unhandled error answers 500 {"detail": "internal server error"} on any
    route: the document said so of /v1/admin/reload only."""

    class Broken:
        """A serving runtime whose every use is a bug, whichever way a route reads it
        (the single recommendation route reads it without a dependency)."""

        def __getattr__(self, name: str) -> None:
            raise RuntimeError("a bug")

    app = create_app(api_settings)
    with TestClient(app, headers=dict(keys.admin), raise_server_exceptions=False) as client:
        spec = client.get("/openapi.json").json()
        runtime = client.app.state.runtime
        hcp = str(runtime.recommender.hcp_ids[0])
        client.app.state.runtime = Broken()
        event = {"event_id": "bug-1", "event_type": "opened", "hcp_id": hcp}
        decision = {"recommendation_id": "r", "hcp_id": hcp, "action_id": "a", "decision": "snooze"}
        asked = {
            ("post", "/v1/recommendations"): client.post(
                "/v1/recommendations", json={"hcp_id": hcp}
            ),
            ("post", "/v1/recommendations/batch"): client.post(
                "/v1/recommendations/batch", json={"hcp_ids": [hcp]}
            ),
            ("post", "/v1/feedback"): client.post("/v1/feedback", json=event),
            ("get", "/v1/reps/{rep_id}/suggestions"): client.get(
                f"/v1/reps/{keys.rep_name}/suggestions"
            ),
            ("post", "/v1/reps/{rep_id}/feedback"): client.post(
                f"/v1/reps/{keys.rep_name}/feedback", json=decision
            ),
            ("post", "/v1/admin/reload"): client.post("/v1/admin/reload"),
        }
        client.app.state.runtime = runtime  # for the app's shutdown
    v1 = {(m, p) for p, ops in spec["paths"].items() if p.startswith("/v1/") for m in ops}
    assert set(asked) == v1
    for (method, path), response in asked.items():
        assert response.status_code == 500, (path, response.text)
        assert response.json() == {"detail": "internal server error"}
        _conforms(spec, method, path, response)


def test_answers_fit_the_declared_schemas(client: TestClient, keys, spec) -> None:
    inside, outside = _hcps(client, keys.territory)
    one = "/v1/recommendations"
    cases: list[tuple[str, str, Response]] = [
        ("post", one, client.post(one, json={"hcp_id": inside})),
        ("post", one, client.post(one, json={"hcp_id": inside}, headers={"Authorization": ""})),
        ("post", one, client.post(one, json={"hcp_id": outside}, headers=keys.rep)),
        ("post", one, client.post(one, json={"hcp_id": "NOPE"})),
        ("post", one, client.post(one, json={"hcp_id": inside, "k": 0})),
        # The service's own 422 (a channel the catalog does not have) reads as FastAPI's.
        ("post", one, client.post(one, json={"hcp_id": inside, "channel": "fax"})),
        ("post", "/v1/admin/reload", client.post("/v1/admin/reload", headers=keys.channel)),
        ("get", "/healthz", client.get("/healthz")),
        ("get", "/readyz", client.get("/readyz")),
    ]
    plan = "/v1/reps/{rep_id}/suggestions"
    cases += [
        ("get", plan, client.get(f"/v1/reps/{keys.rep_name}/suggestions", headers=keys.rep)),
        ("get", plan, client.get("/v1/reps/x/suggestions", params={"territory_id": "T999"})),
        ("get", plan, client.get(f"/v1/reps/{keys.rep_name}/suggestions?capacity=0")),
        # Why the others are left out: ranked, and excluded by the rules (no medical rep content).
        (
            "get",
            plan,
            client.get(f"/v1/reps/{keys.rep_name}/suggestions?explain=true", headers=keys.rep),
        ),
        (
            "get",
            plan,
            client.get(
                "/v1/reps/x/suggestions",
                params={"territory_id": keys.territory, "purpose": "medical", "explain": True},
            ),
        ),
        ("get", plan, client.get(f"/v1/reps/{keys.rep_name}/suggestions?explain=perhaps")),
    ]
    feedback = "/v1/feedback"

    def event(n: int, hcp: str) -> dict[str, str]:
        return {"event_id": f"spec-{n}", "event_type": "opened", "hcp_id": hcp}

    cases += [
        ("post", feedback, client.post(feedback, json=event(1, inside))),
        (
            "post",
            feedback,
            client.post(feedback, json={"events": [event(2, inside), event(3, "NO")]}),
        ),
        ("post", feedback, client.post(feedback, json=event(4, "NOPE"))),
        ("post", feedback, client.post(feedback, json={"event_id": "x", "event_type": "liked"})),
        ("post", feedback, client.post(feedback, json=event(5, outside), headers=keys.rep)),
        (
            "post",
            feedback,
            client.post(feedback, json={"events": [event(6, outside)]}, headers=keys.rep),
        ),
    ]
    batch = "/v1/recommendations/batch"
    cases += [
        ("post", batch, client.post(batch, json={"hcp_ids": [inside, inside, "NOPE"]})),
        ("post", batch, client.post(batch, json={"hcp_ids": [inside, ""]})),
        ("post", batch, client.post(batch, json={"hcp_ids": [inside], "date": "20261101"})),
    ]
    statuses = {(path, r.status_code) for _, path, r in cases}
    # The cases reach the answers a client must be ready for.
    assert {(one, s) for s in (200, 401, 403, 404, 422)} <= statuses
    assert {(feedback, s) for s in (200, 207, 403, 422)} <= statuses
    assert {(batch, s) for s in (200, 422)} <= statuses
    assert {(plan, s) for s in (200, 404, 422)} <= statuses
    for method, path, response in cases:
        _conforms(spec, method, path, response)


def test_fields_every_answer_carries_are_required_and_both_routes_explain_purpose(
    spec: dict[str, Any],
) -> None:
    """A client generated from the document must not treat always-sent fields as optional."""
    schemas = spec["components"]["schemas"]
    assert "repeated_hcp_ids" in schemas["RecommendationBatchPublic"]["required"]
    assert "uncounted" in schemas["FeedbackResultPublic"]["required"]
    assert "status" in schemas["RejectedEvent"]["required"]
    single = schemas["RecommendationCreate"]["properties"]["purpose"]
    batch = schemas["RecommendationBatchCreate"]["properties"]["purpose"]
    assert batch == single and "never gets medical content" in batch["description"]


def test_answers_without_a_model_fit_the_declared_schemas(api_settings, keys, tmp_path) -> None:
    empty = api_settings.model_copy(update={"models_dir": tmp_path / "empty"})
    with TestClient(create_app(empty), headers=dict(keys.admin)) as client:
        spec = client.get("/openapi.json").json()
        ready = client.get("/readyz")
        asked = client.post("/v1/recommendations", json={"hcp_id": "H000001"})
        assert (ready.status_code, asked.status_code) == (503, 503)
        _conforms(spec, "get", "/readyz", ready)
        _conforms(spec, "get", "/healthz", client.get("/healthz"))
        _conforms(spec, "post", "/v1/recommendations", asked)


def test_building_the_document_warns_of_nothing(api_settings) -> None:
    """GET and HEAD of /healthz and /readyz shared one operation id: the first
    /openapi.json of each worker printed a plain-text warning amid its JSON logs."""
    import warnings

    app = create_app(api_settings)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec = app.openapi()
    ids = [op["operationId"] for ops in spec["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    for path in ("/healthz", "/readyz"):  # probes send HEAD: still documented
        assert {"get", "head"} <= set(spec["paths"][path]), path
