"""The recommendation routes write their answers as JSON bytes themselves (not via
FastAPI's response_model path): the answers must still be exactly the documented
schemas, and the OpenAPI document must still name them."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from nextbest.api.schemas import (
    BatchResultPublic,
    RecommendationBatchPublic,
    RecommendationItemPublic,
    RecommendationPublic,
)
from nextbest.storage.tables import RecommendationItem


def test_openapi_still_documents_both_answers(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path, schema in (
        ("/v1/recommendations", "RecommendationPublic"),
        ("/v1/recommendations/batch", "RecommendationBatchPublic"),
    ):
        ok = paths[path]["post"]["responses"]["200"]["content"]["application/json"]
        assert ok["schema"] == {"$ref": f"#/components/schemas/{schema}"}


def test_single_answer_has_exactly_the_schema_fields_and_the_logged_values(
    client: TestClient,
) -> None:
    runtime = client.app.state.runtime
    answers = []
    for hcp in runtime.recommender.hcp_ids[:60].tolist():
        response = client.post("/v1/recommendations", json={"hcp_id": hcp, "explain": True})
        assert response.headers["content-type"] == "application/json"
        answers.append(response.json())
        if answers[-1]["items"]:
            break
    body = answers[-1]
    assert body["items"], "no HCP among the first 60 got an item"
    assert set(body) == set(RecommendationPublic.model_fields)
    assert isinstance(body["excluded"], dict)
    for item in body["items"]:
        assert set(item) == set(RecommendationItemPublic.model_fields)
    parsed = RecommendationPublic.model_validate(body)
    assert parsed.created_at.tzinfo is not None
    # The floats survive the encoding bit for bit: they equal what was logged.
    runtime.reclog.flush()
    with runtime.sessions() as session:
        logged = session.execute(
            select(RecommendationItem)
            .where(RecommendationItem.recommendation_id == body["recommendation_id"])
            .order_by(RecommendationItem.rank)
        ).scalars()
        assert [(r.action_id, r.score, r.propensity) for r in logged] == [
            (i["action_id"], i["score"], i["propensity"]) for i in body["items"]
        ]
    plain = client.post("/v1/recommendations", json={"hcp_id": body["hcp_id"]}).json()
    assert plain["excluded"] is None


def test_batch_answer_has_exactly_the_schema_fields(client: TestClient) -> None:
    ids = client.app.state.runtime.recommender.hcp_ids[:20].tolist()
    response = client.post("/v1/recommendations/batch", json={"hcp_ids": [*ids, "NOPE-1"], "k": 2})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == set(RecommendationBatchPublic.model_fields)
    assert body["unknown_hcp_ids"] == ["NOPE-1"]
    assert [r["hcp_id"] for r in body["results"]] == ids
    items = [i for r in body["results"] for i in r["items"]]
    assert items, "no HCP of the batch got an item"
    for result in body["results"]:
        assert set(result) == set(BatchResultPublic.model_fields)
    for item in items:
        assert set(item) == set(RecommendationItemPublic.model_fields)
    RecommendationBatchPublic.model_validate(body)
