"""The OpenAPI document as the gateway answers: problem+json errors and the configured limits.

FastAPI declares a 422 with its own validation body and nothing else; the gateway answers
every error as application/problem+json (gateway.problems). This module rewrites the document
once per app:

- every operation declares the problem responses that apply to it (401/403/429 where a key is
  needed, 413 and 422 where a body or parameters are read, 503 where a store or Kafka is
  reached, and each route's own 404/409/413 from ROUTE_ERRORS), all with the `Problem` schema;
- the limits that are settings (FLYWHEEL_GATEWAY_MAX_K, ..._MAX_QUERY_CHARS, ..._MAX_BATCH,
  ..._EMBEDDINGS_MAX_INPUTS) are written into the request schemas, so the document says what
  the running gateway enforces (tests/unit/test_openapi_limits.py sends each limit and one more);
- `topic` of /v1/events/{topic} is an enum of the topics a client may publish.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from core.config import Settings
from gateway.problems import PROBLEM_JSON
from schemas.envelope import INT64_MAX

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details. `errors` names each field at fault and what to fix.",
    "required": ["type", "title", "status", "detail", "instance"],
    "properties": {
        "type": {"type": "string", "example": "about:blank"},
        "title": {"type": "string", "example": "Unprocessable Content"},
        "status": {"type": "integer", "example": 422},
        "detail": {"type": "string", "example": "query: must not be empty or only whitespace"},
        "instance": {"type": "string", "example": "/v1/search"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "reason"],
                "properties": {
                    "field": {"type": "string", "example": "query",
                              "description": "Dotted path in the body, or the parameter's name."},
                    "reason": {"type": "string"},
                },
            },
        },
    },
}

GENERIC: dict[int, str] = {
    401: "No API key, or one that is not valid (`WWW-Authenticate: Bearer`).",
    403: "The API key lacks the scope this operation needs.",
    413: "The body is larger than FLYWHEEL_GATEWAY_MAX_BODY_BYTES.",
    422: "A field or parameter is invalid: `errors` names each one and the reason.",
    429: "Rate limit of the API key exceeded; `Retry-After` says when to try again.",
    503: "A component the operation needs (Kafka, PostgreSQL, MongoDB or Triton) is unavailable "
         "or too slow; `Retry-After` is set.",
}

# Each route's own errors, beyond the generic ones: (method, path) -> {status: when}.
ROUTE_ERRORS: dict[tuple[str, str], dict[int, str]] = {
    ("post", "/v1/content"): {413: "More items than FLYWHEEL_GATEWAY_MAX_BATCH, or a body too large."},
    ("get", "/v1/content/{item_id}"): {404: "No such item in the caller's tenant."},
    ("post", "/v1/events/{topic}"): {
        403: "The topic is the platform's own, the key lacks the topic's scope, or the event "
             "names another tenant.",
        404: "Unknown topic.",
        409: "training-requested: the run id is another tenant's, or the tenant has a run unfinished.",
    },
    ("post", "/v1/search"): {409: "The tenant has no active model version yet."},
    ("post", "/v1/embeddings"): {404: "Unknown model version.", 409: "The version is not served now."},
    ("post", "/v1/clicks"): {413: "More events than FLYWHEEL_GATEWAY_MAX_BATCH, or a body too large."},
    ("post", "/v1/training-runs"): {409: "The tenant has a training run that is not finished."},
    ("get", "/v1/tasks/{task_id}"): {404: "No such task in the caller's tenant."},
    ("post", "/v1/tasks/{task_id}/cancel"): {404: "No such task in the caller's tenant.",
                                            409: "The task is final: nothing to cancel."},
    ("post", "/v1/tasks/{task_id}/retry"): {
        404: "No such task in the caller's tenant.",
        409: "The task is not failed or cancelled, or the tenant has a training run unfinished."},
    ("put", "/v1/models/ab-split"): {404: "The candidate has no index.",
                                      409: "The candidate cannot take traffic, or the versions changed."},
    ("delete", "/v1/models/{version}/adjustments"): {404: "The version has no index."},
    ("post", "/v1/models/{version}/activate"): {
        404: "Unknown version.", 409: "The version cannot serve, or the active version changed."},
    ("get", "/v1/admin/dlq/{topic}/{partition}/{offset}"): {404: "Unknown topic, or no such letter."},
    ("post", "/v1/admin/dlq/{topic}/redrive"): {404: "Unknown dead-letter topic."},
    ("post", "/v1/sources"): {409: "A source of that name exists."},
    ("post", "/v1/datasets"): {403: "The key lacks `admin`, or names a tenant not its own (not an operator).",
                               409: "The tenant has a dataset of that name.",
                               413: "A body larger than FLYWHEEL_GATEWAY_MAX_BODY_BYTES: use the CLI."},
    ("get", "/v1/datasets/{name}"): {404: "No such dataset in the tenant."},
    ("delete", "/v1/datasets/{name}"): {404: "No such dataset in the tenant."},
    ("get", "/v1/sources/{name}"): {404: "No such source."},
    ("delete", "/v1/sources/{name}"): {404: "No such source."},
}

# Operations that answer without reaching a store or Kafka (no 503).
NO_BACKEND = {("get", "/asyncapi.json"), ("get", "/healthz"), ("get", "/metrics")}


def settings_limits(settings: Settings) -> dict[str, dict[str, dict[str, Any]]]:
    """Schema name -> property -> JSON Schema keywords the gateway enforces from its settings."""
    return {
        "SearchRequest": {"k": {"maximum": settings.gateway_max_k},
                          "query": {"maxLength": settings.gateway_max_query_chars}},
        "ContentBatch": {"items": {"maxItems": settings.gateway_max_batch}},
        "SessionEvents": {"events": {"maxItems": settings.gateway_max_batch}},
    }


def client_topics() -> list[str]:
    from gateway.routes.events import TOPIC_SCOPES

    return sorted(TOPIC_SCOPES)


def _problem(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}


def _statuses(method: str, path: str, operation: dict[str, Any]) -> dict[int, str]:
    wanted: dict[int, str] = {}
    if operation.get("security"):
        wanted.update({s: GENERIC[s] for s in (401, 403, 429)})
    if "requestBody" in operation:
        wanted.update({s: GENERIC[s] for s in (413, 422)})
    if operation.get("parameters"):
        wanted[422] = GENERIC[422]
    if path.startswith("/v1/") and (method, path) not in NO_BACKEND:
        wanted[503] = GENERIC[503]
    wanted.update(ROUTE_ERRORS.get((method, path), {}))
    return dict(sorted(wanted.items()))


def _apply_limits(schemas: dict[str, Any], limits: dict[str, dict[str, dict[str, Any]]]) -> None:
    for name, fields in limits.items():
        properties = schemas.get(name, {}).get("properties", {})
        for field, keywords in fields.items():
            if field in properties:
                properties[field].update(keywords)


def _embeddings_input(schemas: dict[str, Any], max_inputs: int) -> None:
    properties = schemas.get("EmbeddingsRequest", {}).get("properties", {})
    for option in properties.get("input", {}).get("anyOf", []):
        if option.get("type") == "array":
            option.update({"minItems": 1, "maxItems": max_inputs})


def _integral_bounds(node: Any) -> None:
    """FastAPI's document model holds bounds as floats: an integer's bounds back as integers
    (2**63 - 1 would otherwise read as 2**63, one more than the stores hold)."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            for keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
                value = node.get(keyword)
                if isinstance(value, float) and value.is_integer():
                    node[keyword] = INT64_MAX if value == float(INT64_MAX) else int(value)
        for inner in node.values():
            _integral_bounds(inner)
    elif isinstance(node, list):
        for inner in node:
            _integral_bounds(inner)


def build(app: FastAPI, settings: Settings) -> dict[str, Any]:
    document = get_openapi(title=app.title, version=app.version, description=app.description,
                           routes=app.routes, tags=app.openapi_tags)
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["Problem"] = PROBLEM_SCHEMA
    _apply_limits(schemas, settings_limits(settings))
    _embeddings_input(schemas, settings.gateway_embeddings_max_inputs)
    _integral_bounds(document)
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status, description in _statuses(method, path, operation).items():
                responses[str(status)] = _problem(description or HTTPStatus(status).phrase)
            if path == "/readyz":
                responses["503"] = {"description": "Not ready: the same body, `ready` false and the "
                                                   "component that is down with its detail."}
            if path == "/v1/events/{topic}":
                for parameter in operation.get("parameters", []):
                    if parameter.get("name") == "topic":
                        parameter["schema"] = {"type": "string", "enum": client_topics(), "title": "Topic"}
    return document


def install(app: FastAPI, settings: Settings) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app, settings)
        return app.openapi_schema

    setattr(app, "openapi", openapi)  # noqa: B010 - FastAPI's documented way to replace it

