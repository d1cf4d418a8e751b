"""Routes for sentence translation by retrieval: collections (translation memories), translate, the model."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from app.auth import WriteAccess
from app.errors import responses
from app.schemas.sentences import (
    SentenceAdd,
    SentenceAddResult,
    SentenceCollectionCreate,
    SentenceCollectionInfo,
    SentenceCollectionList,
    SentenceList,
    SentenceModelActivate,
    SentenceModelInfo,
    TranslateSentencesRequest,
    TranslateSentencesResult,
)
from app.wiring.jobs import job_input_roots
from services.infra.paths import allowed_path

router = APIRouter(tags=["sentences"])


def get_sentences(request: Request) -> Any:
    runtime = request.app.state.runtime
    runtime.require("sentences")
    return runtime.extras["sentences"]


SentencesDep = Annotated[Any, Depends(get_sentences)]


@router.post("/v1/sentences/collections", response_model=SentenceCollectionInfo, status_code=201,
             responses=responses(401, 403, 409))
def create_sentence_collection(_key: WriteAccess, body: SentenceCollectionCreate,
                               sentences: SentencesDep) -> SentenceCollectionInfo:
    """Create an empty collection of sentences in one language (422 naming the supported languages)."""
    return SentenceCollectionInfo(**sentences.create_collection(body.lang, body.name, body.id))


@router.get("/v1/sentences/collections", response_model=SentenceCollectionList, responses=responses())
def list_sentence_collections(sentences: SentencesDep) -> SentenceCollectionList:
    """All collections, oldest first."""
    return SentenceCollectionList(collections=[c.describe() for c in sentences.store.list()])


@router.get("/v1/sentences/collections/{collection_id}", response_model=SentenceCollectionInfo,
            responses=responses(404))
def get_sentence_collection(collection_id: str, sentences: SentencesDep) -> SentenceCollectionInfo:
    """One collection's language, size and model."""
    return SentenceCollectionInfo(**sentences.store.get(collection_id).describe())


@router.delete("/v1/sentences/collections/{collection_id}", status_code=204, responses=responses(401, 403, 404))
def delete_sentence_collection(_key: WriteAccess, collection_id: str, sentences: SentencesDep) -> Response:
    """Delete a collection with all its sentences."""
    sentences.delete_collection(collection_id)
    return Response(status_code=204)


@router.post("/v1/sentences/collections/{collection_id}/sentences", response_model=SentenceAddResult,
             status_code=201, responses=responses(401, 403, 404, 413))
async def add_sentences(_key: WriteAccess, collection_id: str, body: SentenceAdd,
                        sentences: SentencesDep) -> SentenceAddResult:
    """Embed and index a batch of sentences (at most VISLEX_SENTENCE_MAX_ADD; 413 beyond)."""
    sentences.store.get(collection_id)  # 404 before any work
    return SentenceAddResult(**await asyncio.to_thread(sentences.add_sentences, collection_id, body.sentences))


@router.get("/v1/sentences/collections/{collection_id}/sentences", response_model=SentenceList,
            responses=responses(404))
def list_sentences(collection_id: str, sentences: SentencesDep, offset: int = Query(0, ge=0),
                   limit: int = Query(100, ge=1, le=1000)) -> SentenceList:
    """Sentences of a collection by id."""
    coll = sentences.store.get(collection_id)
    return SentenceList(collection=collection_id, sentences=coll.items(offset, limit), total=len(coll))


@router.delete("/v1/sentences/collections/{collection_id}/sentences/{sentence_id}", status_code=204,
               responses=responses(401, 403, 404))
def delete_sentence(_key: WriteAccess, collection_id: str, sentence_id: int, sentences: SentencesDep) -> Response:
    """Remove one sentence."""
    sentences.delete_sentence(collection_id, sentence_id)
    return Response(status_code=204)


@router.post("/v1/sentences/translate", response_model=TranslateSentencesResult, responses=responses(404, 409, 413))
def translate_sentences(body: TranslateSentencesRequest, sentences: SentencesDep) -> TranslateSentencesResult:
    """The k nearest target-language sentences of each query, with cosine scores, in input order.

    404: unknown collection; 422: a language the model does not embed (detail.supported), or tgt not the
    collection's; 413: more than VISLEX_SENTENCE_MAX_BATCH texts or a text over VISLEX_SENTENCE_MAX_CHARS.
    """
    return TranslateSentencesResult(**sentences.translate(body.queries(), body.src, body.tgt, body.k, body.collection))


@router.get("/v1/sentences/model", response_model=SentenceModelInfo, responses=responses())
def get_sentence_model(sentences: SentencesDep) -> SentenceModelInfo:
    """The active sentence model, its languages, and the state of a swap in progress."""
    sentences.maybe_reload()
    return SentenceModelInfo(**sentences.describe_model())


@router.put("/v1/sentences/model", response_model=SentenceModelInfo, status_code=202,
            responses=responses(401, 403, 404, 409))
def activate_sentence_model(_key: WriteAccess, body: SentenceModelActivate, request: Request,
                            sentences: SentencesDep) -> SentenceModelInfo:
    """Swap to an encoder or a trained Globetrotter checkpoint: every collection is re-embedded in the
    background and the new model serves once all are (``swap.state``); the old one serves until then."""
    model = body.model
    if "/" in model or "\\" in model:  # a server path: absolute, under the directories this server reads from
        settings = request.app.state.runtime.settings
        roots = [*job_input_roots(settings), Path(settings.data_dir)]
        model = str(allowed_path(model, roots, field="model"))
    return SentenceModelInfo(**sentences.activate(model))
