"""What the OpenAPI document adds to FastAPI's own: how to send the key, and the
answers every ``/v1`` route can give besides its 200 and 422 (those of a route with
a body among them), with the headers they carry (``Retry-After`` of a 503,
``WWW-Authenticate`` of a 401).

Authentication is read from the headers by one dependency (``api/auth.py``), so
FastAPI does not know of it; declaring it here costs the requests nothing.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from nextbest.api.bodies import body_limit, size_text
from nextbest.api.schemas import ErrorPublic

SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}

_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorPublic"}}}

# Every /v1 route: its key, its role or territory, the service's state, a bug.
COMMON = {
    "401": "No API key, or an unknown one (with `WWW-Authenticate: Bearer`).",
    "403": "A known key outside its rights: its role, or a rep key's territory.",
    "503": "No model loaded yet, the database unavailable or the recommendation log behind: "
    "retry after `Retry-After` seconds.",
    "500": 'An unhandled error (a bug): `{"detail": "internal server error"}`; its '
    "`X-Request-ID` names the server's log lines about it.",
}
# Headers those answers always carry: a client generated from the document reads them.
HEADERS: dict[str, dict[str, Any]] = {
    "401": {
        "WWW-Authenticate": {
            "description": "`Bearer`: send the key as `Authorization: Bearer <key>` "
            "(or `X-API-Key: <key>`).",
            "required": True,
            "schema": {"type": "string"},
        }
    },
    "503": {
        "Retry-After": {
            "description": "Seconds to wait before sending the request again.",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        }
    },
    "500": {
        "X-Request-ID": {
            "description": "The request's id, in every log line written while it was handled.",
            "required": True,
            "schema": {"type": "string"},
        }
    },
}
# Every /v1 route that reads a body (api/bodies.py).
BODY = {
    "400": "A `Content-Encoding: gzip` or `deflate` body that does not inflate.",
    "415": "A body that is not `Content-Type: application/json`, or compressed otherwise "
    "than gzip or deflate.",
}
# Routes that name something the service may not know.
NOT_FOUND = {
    ("post", "/v1/recommendations"): "The HCP is not known to the served model.",
    ("get", "/v1/reps/{rep_id}/suggestions"): "No HCP of the served model is in the territory.",
}
FAILED = {
    ("post", "/v1/admin/reload"): "Loading failed: the old model and rules keep serving.",
}
# The feedback routes answer with a FeedbackResultPublic when events are rejected.
RESULT_ANSWERS = {
    "/v1/feedback": {
        "207": "Some events rejected (see `rejected`: index, status, message), the others stored.",
        "422": "Every event rejected: a FeedbackResultPublic naming each (`rejected`), or, "
        "for a body that is not events at all, the fields at fault (`detail`).",
        "403": "A single event about an HCP outside the rep key's territory (`detail`), or "
        "every event of a batch was (`rejected`, each with status 403).",
    },
    "/v1/reps/{rep_id}/feedback": {
        "422": "The decision rejected: a FeedbackResultPublic naming why (`rejected`), or "
        "the fields at fault (`detail`).",
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _either(*names: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"anyOf": [_ref(n) for n in names]}}}


def document(app: FastAPI) -> None:
    """Give ``app`` an OpenAPI document with the key and the refusals declared."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {})
        components["securitySchemes"] = SECURITY_SCHEMES
        components.setdefault("schemas", {})["ErrorPublic"] = ErrorPublic.model_json_schema()
        for operation in schema["paths"]["/readyz"].values():  # GET and HEAD
            operation["responses"]["503"] = {
                "description": "Not ready: `status` says why (no model loaded, serving "
                "rules file invalid, database unreachable, ...).",
                "content": {"application/json": {"schema": _ref("HealthPublic")}},
            }
        for path, operations in schema["paths"].items():
            if not path.startswith("/v1/"):
                continue
            for method, operation in operations.items():
                operation["security"] = [{"bearer": []}, {"apiKey": []}]
                responses = operation.setdefault("responses", {})
                extra = dict(COMMON)
                if "requestBody" in operation:
                    extra.update(BODY)
                    extra["413"] = (
                        f"The body (inflated) is larger than {size_text(body_limit(path))}, "
                        "the most this route reads."
                    )
                if (method, path) in NOT_FOUND:
                    extra["404"] = NOT_FOUND[(method, path)]
                if (method, path) in FAILED:
                    extra["500"] = FAILED[(method, path)]
                for code, description in extra.items():
                    responses[code] = {"description": description, "content": _ERROR}
                    if code in HEADERS:
                        responses[code]["headers"] = HEADERS[code]
                for code, description in RESULT_ANSWERS.get(path, {}).items():
                    other = "ErrorPublic" if code == "403" else "HTTPValidationError"
                    content = (
                        {"application/json": {"schema": _ref("FeedbackResultPublic")}}
                        if code == "207"
                        else _either("FeedbackResultPublic", other)
                    )
                    responses[code] = {"description": description, "content": content}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
