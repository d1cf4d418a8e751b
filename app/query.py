"""Query parameters validated by one pydantic model, for hot routes.

FastAPI validates declared query parameters one by one through its dependency machinery: for
``GET /v1/translate`` (five parameters) that cost more than the translation itself (a table hit is
two row gathers) -- measured in-process, ~100 us of a ~360 us request, against ~150 us for
``/healthz``. One ``model_validate`` of the parsed query string gives the same values and, on
failure, the same errors (pydantic's own types and messages, located ``("query", field)``, so the
422 contract is unchanged); :func:`query_parameters` documents the model's fields as the operation's
query parameters in OpenAPI.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def parse_query(model: type[M], request: Request) -> M:
    """The request's query string as ``model`` (the last value of a repeated name wins, as in Starlette)."""
    # Starlette's parse (last value of a repeated name wins), cached on the request: FastAPI has already made it.
    params = dict(request.query_params)
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("query", *e["loc"])}
                                      for e in exc.errors(include_url=False, include_context=False)]) from None


def query_parameters(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring ``model``'s fields as query parameters (schemas, bounds, descriptions)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        description = prop.pop("description", None)
        prop.pop("title", None)
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if description:
            param["description"] = description
        params.append(param)
    return {"parameters": params}
