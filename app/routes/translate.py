"""Routes for word translation between served spaces (single word and batch)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from starlette.routing import Route

from app.errors import responses
from app.query import parse_query, query_parameters
from app.schemas.translate import TranslateBatchRequest, TranslateBatchResponse, TranslateQuery, TranslateResponse
from services.serving.translator import Translator

router = APIRouter(tags=["translate"])


async def get_translator(request: Request) -> Translator:
    # async on purpose: a sync dependency would cost a threadpool hop on the hot path.
    runtime = request.app.state.runtime
    runtime.require("spaces")
    return runtime.extras["translator"]


TranslatorDep = Annotated[Translator, Depends(get_translator)]


def _json(body: str) -> Response:
    return Response(content=body.encode("utf-8"), media_type="application/json")


@router.get("/v1/translate", response_model=None, responses={200: {"model": TranslateResponse}, **responses(404, 422, 503)},
            openapi_extra=query_parameters(TranslateQuery))
async def translate_word(request: Request) -> Response:
    """Top-k translations of one word (cached in Redis per mapping version)."""
    # The hot path. FastAPI documents this operation; requests are served by the plain Starlette route in
    # HOT_ROUTES (same function), which skips FastAPI's per-request dependency solving: measured in-process,
    # that machinery cost more than the table lookup itself. The query is validated in one step.
    translator = await get_translator(request)
    q = parse_query(TranslateQuery, request)
    # validation, table or one Redis GET, inline
    found = translator.lookup(q.word, q.src, q.tgt, q.k, q.retrieval, q.exclude_identical)
    if found.body is not None:
        return _json(found.body)
    return _json(await translator.complete_async(found))  # batched with concurrent misses; FAISS off the loop


@router.post("/v1/translate", response_model=None,
             responses={200: {"model": TranslateBatchResponse}, **responses(404, 413, 422, 503)})
async def translate_words(body: TranslateBatchRequest, translator: TranslatorDep) -> Response:
    """Translate a batch of words in one search; unknown words get their own error entry."""
    result = await asyncio.to_thread(translator.translate_batch_json, body.words, body.src, body.tgt,
                                     body.k, body.retrieval, body.exclude_identical)
    return _json(result)


# Served before the FastAPI routes (app/main.py): GET /v1/translate straight to its handler. Errors it raises
# go through the same exception handlers (one contract); POST falls through to the FastAPI route.
async def _hot_translate_word(request: Request) -> Response:
    request.scope["route"] = _HOT_GET  # metrics and the access log label it by its path, as FastAPI's routes
    return await translate_word(request)


_HOT_GET = Route("/v1/translate", _hot_translate_word, methods=["GET"], include_in_schema=False)
HOT_ROUTES = [_HOT_GET]
