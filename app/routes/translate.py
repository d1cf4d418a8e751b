"""Routes for word translation between served spaces (single word and batch)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from app.errors import responses
from app.schemas.translate import Retrieval, TranslateBatchRequest, TranslateBatchResponse, TranslateResponse
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


@router.get("/v1/translate", response_model=None, responses={200: {"model": TranslateResponse}, **responses(404)})
async def translate_word(
    translator: TranslatorDep,
    word: Annotated[str, Query(description="word to translate (NFC; case-folded for lowercased vocabularies)")],
    src: Annotated[str, Query(min_length=1, max_length=64, description="source language")],
    tgt: Annotated[str, Query(min_length=1, max_length=64, description="target language")],
    k: Annotated[int, Query(ge=1, le=100, description="number of translations")] = 5,
    retrieval: Annotated[Retrieval, Query(description="nn (cosine) or csls")] = "csls",
) -> Response:
    """Top-k translations of one word (cached in Redis per mapping version)."""
    found = translator.lookup(word, src, tgt, k, retrieval)  # validation, table or one Redis GET, inline
    if found.body is not None:
        return _json(found.body)
    return _json(await translator.complete_async(found))  # batched with concurrent misses; FAISS off the loop


@router.post("/v1/translate", response_model=None,
             responses={200: {"model": TranslateBatchResponse}, **responses(404, 413)})
async def translate_words(body: TranslateBatchRequest, translator: TranslatorDep) -> Response:
    """Translate a batch of words in one search; unknown words get their own error entry."""
    result = await asyncio.to_thread(translator.translate_batch_json, body.words, body.src, body.tgt,
                                     body.k, body.retrieval)
    return _json(result)
