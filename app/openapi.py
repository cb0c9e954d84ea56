"""The OpenAPI document: request bodies that routes parse themselves are declared as schemas,
every error response is documented as the ``application/problem+json`` document it is, with an
example of that status, and operations are named after their route functions (``create_job``)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel

from app.problems import PROBLEM_JSON, Problem
from contract.api import BuiltinDatasetIn, CertifyIn, DatasetOptions

#: bodies read by hand (multipart or JSON on one path), referenced by the routes' openapi_extra
BODY_MODELS: tuple[type[BaseModel], ...] = (BuiltinDatasetIn, CertifyIn, DatasetOptions)
#: errors every /v1 call can answer; calls naming a resource by id can also answer 404
COMMON_ERRORS = {
    "401": "Missing, unknown or revoked API key.",
    "422": "The request is well-formed HTTP but invalid (the detail says what is wrong).",
}
#: errors of every call with a request body (limits: app.uploads)
BODY_ERRORS = {
    "400": "The body cannot be parsed (malformed JSON or multipart).",
    "413": "The body exceeds its limit (RAB_MAX_JSON_BYTES, RAB_MAX_UPLOAD_BYTES).",
    "415": "The body's media type is not one the call accepts.",
}
NOT_FOUND = "No such resource for this key (another key's resources are not found either)."
#: the title of each error status, as the service answers it
ERROR_TITLES = {
    "400": "Bad Request", "401": "Unauthorized", "403": "Downloads disabled", "404": "Not Found",
    "409": "Conflict", "413": "Payload Too Large", "415": "Unsupported Media Type",
    "422": "Invalid input", "429": "Too Many Requests", "502": "Download failed",
    "503": "Service Unavailable",
}
#: example details of the errors any call can answer (others: the response's description)
ERROR_DETAILS = {
    "401": "missing X-API-Key header",
    "413": "the upload exceeds the limit of 104857600 bytes",
    "415": "send application/json (or multipart/form-data where documented), not 'text/plain'",
}
#: example details of a rejected request body, per operation
BODY_422_DETAILS = {
    "create_dataset": "invalid options: classes: List should have at least 2 items",
    "create_job": "invalid knn job: k = 50 exceeds the training set size 40",
    "certify": "inputs contain NaN or infinite values",
}
_EXAMPLE_ID = "3f2a9c0d5e6b4a718293a4b5c6d7e8f9"
_REF = "#/components/schemas/{model}"


def _add_schemas(schemas: dict[str, Any], models: tuple[type[BaseModel], ...]) -> None:
    """Each model's JSON schema (and the schemas it uses) as named components."""
    for model in models:
        schema = model.model_json_schema(ref_template=_REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema


def operation_id(route: APIRoute) -> str:
    """The operation id of a route: its function's name (``create_job``), unique in the API."""
    return route.name


def _problem_example(
    status: str, path: str, operation: dict[str, Any], description: str
) -> dict[str, Any]:
    """A problem document like the one ``operation`` at ``path`` answers with ``status``."""
    title, detail = ERROR_TITLES.get(status, "Error"), ERROR_DETAILS.get(status, description)
    params = [p for p in operation.get("parameters", []) if p["in"] != "header"]
    ids = [p["name"].removesuffix("_id") for p in params if p["name"].endswith("_id")]
    if status == "404" and ids:
        detail = f"no {ids[0]} with id {_EXAMPLE_ID!r}"
    elif status == "400":
        multipart = "multipart/form-data" in operation["requestBody"]["content"]
        detail = "malformed multipart body" if multipart else "the body is not valid JSON"
    elif status == "422" and operation["operationId"] in BODY_422_DETAILS:
        detail = BODY_422_DETAILS[operation["operationId"]]
    elif status == "422" and params:
        title = "Invalid request"  # a parameter failed validation (app.problems)
        detail = f"{params[-1]['in']}.{params[-1]['name']}: Input should be a valid value"
    instance = path.replace("{index}", "0")
    for ident in ids:
        instance = instance.replace(f"{{{ident}_id}}", _EXAMPLE_ID)
    return {"type": "about:blank", "title": title, "status": int(status), "detail": detail,
            "instance": instance}


def _document_errors(path: str, operation: dict[str, Any]) -> None:
    """Give every 4xx/5xx response of a /v1 operation the problem+json schema and an example
    of its own status."""
    responses = operation.setdefault("responses", {})
    for status, description in COMMON_ERRORS.items():
        responses[status] = {"description": description}
    if "requestBody" in operation:
        for status, description in BODY_ERRORS.items():
            responses.setdefault(status, {"description": description})
    if "{" in path:
        responses.setdefault("404", {"description": NOT_FOUND})
    schema = {"$ref": _REF.format(model="Problem")}
    for status, response in responses.items():
        if status[0] in "45":
            example = _problem_example(status, path, operation, response["description"])
            response["content"] = {PROBLEM_JSON: {"schema": schema, "example": example}}


def _homogeneous_tuples(node: Any) -> None:
    """Spell a tuple of one item schema (``prefixItems: [S, S]``, min = max = 2) as the same
    constraint ``items: S``, which tools predating ``prefixItems`` (schemathesis' response
    validation among them) read correctly."""
    if isinstance(node, dict):
        prefix = node.get("prefixItems")
        if (
            isinstance(prefix, list) and prefix and "items" not in node
            and all(item == prefix[0] for item in prefix)
            and node.get("minItems") == node.get("maxItems") == len(prefix)
        ):
            node["items"] = node.pop("prefixItems")[0]
        for value in node.values():
            _homogeneous_tuples(value)
    elif isinstance(node, list):
        for value in node:
            _homogeneous_tuples(value)


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, completed as described in the module docstring."""
    spec = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):  # never sent: errors are problems
        schemas.pop(unused, None)
    _add_schemas(schemas, (*BODY_MODELS, Problem))
    _homogeneous_tuples(spec)
    for path, operations in spec["paths"].items():
        if path.startswith("/v1/"):
            for operation in operations.values():
                _document_errors(path, operation)
    return spec


def install_openapi(app: FastAPI) -> None:
    """Serve the completed document at /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
