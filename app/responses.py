"""JSON answers built once: a route that has its wire model returns the model's JSON bytes,
serialised by pydantic's core in one step, with no second validation of the model against
the route's ``response_model`` (which stays, for the OpenAPI document) and no thread hop for
it."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import Response
from pydantic import BaseModel


def json_response(
    model: BaseModel, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """``model`` as an ``application/json`` response."""
    return Response(
        model.__pydantic_serializer__.to_json(model), status_code=status_code,
        headers=headers, media_type="application/json",
    )
