"""Routes for sentence translation by retrieval: collections (translation memories), translate, the model."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from app.auth import WriteAccess
from app.deps import RuntimeDep
from app.errors import responses
from app.schemas.sentences import (
    GlobetrotterTrainingJob,
    GlobetrotterTrainingList,
    GlobetrotterTrainingRequest,
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
from services.errors import InvalidInput, Unavailable
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


# ---- Globetrotter training jobs ------------------------------------------------------------------
_RETRY_AFTER_S = "2"


def _jobs(runtime) -> Any:
    runtime.require("jobs")
    jobs = runtime.extras.get("globetrotter_jobs")
    if jobs is None:
        raise Unavailable("Globetrotter training jobs are not set up (sentences wiring did not run)",
                          detail={"component": "sentences"})
    return jobs


def _checked_tower(value: str, field: str, roots: list, known: set[str]) -> str:
    """``static:<file>`` or a file path under the allowed roots (resolved), else a tower name the models know."""
    text = value.strip()
    if text.lower().startswith("static:"):
        return "static:" + str(allowed_path(text.split(":", 1)[1], roots, field=field))
    if "/" in text or "\\" in text or "\x00" in text:
        return str(allowed_path(text, roots, field=field))
    if text.lower() not in known:
        raise InvalidInput(f"{field}: unknown tower name", detail={"field": field, "known": sorted(known)})
    return text


def _training_params(body: GlobetrotterTrainingRequest, settings) -> dict[str, Any]:
    from models.image_towers import image_tower_names
    from models.text_towers import ENCODER_NAMES

    if body.time_limit_s is not None and body.time_limit_s > settings.job_time_limit_s:
        raise InvalidInput(f"time_limit_s must be at most {settings.job_time_limit_s} (VISLEX_JOB_TIME_LIMIT_S)",
                           detail={"field": "time_limit_s", "max": settings.job_time_limit_s})
    roots = job_input_roots(settings)
    params = body.model_dump(exclude={"time_limit_s", "queue", "force"})
    params["images_dir"] = str(allowed_path(body.images_dir, roots, field="images_dir", kind="dir"))
    for group in ("captions", "dev"):
        if params.get(group):
            params[group] = {lang: str(allowed_path(path, roots, field=f"{group}.{lang}"))
                             for lang, path in params[group].items()}
    text_known = {n.lower() for n in ENCODER_NAMES} | {"use", "e5-small"}
    params["text_towers"] = {lang: _checked_tower(name, f"text_towers.{lang}", roots, text_known)
                             for lang, name in params["text_towers"].items()}
    params["image_tower"] = _checked_tower(params["image_tower"], "image_tower", roots,
                                           {n.lower() for n in image_tower_names()})
    return params


def _job(view: dict[str, Any], *, cached: bool = False) -> GlobetrotterTrainingJob:
    links = {"self": f"/v1/sentences/trainings/{view['id']}"}
    if view["state"] == "succeeded":
        links["checkpoint"] = f"/v1/sentences/trainings/{view['id']}/checkpoint"
    return GlobetrotterTrainingJob(**view, cached=cached, links=links)


def _json(job: GlobetrotterTrainingJob, status: int, **headers: str) -> JSONResponse:
    if job.state in ("queued", "running"):
        headers = {**headers, "Retry-After": _RETRY_AFTER_S}
    return JSONResponse(job.model_dump(mode="json"), status_code=status, headers=headers or None)


@router.post("/v1/sentences/trainings", response_model=GlobetrotterTrainingJob, status_code=202,
             responses={200: {"model": GlobetrotterTrainingJob, "description": "Identical job exists (cached: true)"},
                        **responses(401, 403)})
def submit_globetrotter_training(_key: WriteAccess, body: GlobetrotterTrainingRequest, runtime: RuntimeDep) -> JSONResponse:
    """Queue a Globetrotter training (202 + Location); identical inputs return the existing job (200, cached).

    Paths must lie under the allowed directories (422 ``path_not_allowed``); a photo captioned in two
    languages fails the job (the method learns from photos captioned in one language each). The checkpoint
    lands in ``<data dir>/sentences/models`` (its name is accepted by ``PUT /v1/sentences/model``); with
    ``activate`` every API on the data dir swaps to it when the job succeeds.
    """
    params = _training_params(body, runtime.settings)
    view, created = _jobs(runtime).submit(params, time_limit_s=body.time_limit_s, queue=body.queue, force=body.force)
    job = _job(view, cached=not created)
    return _json(job, 202 if created else 200, Location=job.links["self"])


@router.get("/v1/sentences/trainings", response_model=GlobetrotterTrainingList, responses=responses())
def list_globetrotter_trainings(runtime: RuntimeDep,
                                state: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None,
                                offset: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=500)
                                ) -> GlobetrotterTrainingList:
    """Globetrotter training jobs, newest first."""
    page = _jobs(runtime).list(state=state, offset=offset, limit=limit)
    return GlobetrotterTrainingList(jobs=[_job(v) for v in page["jobs"]], total=page["total"], offset=offset,
                                    limit=limit)


@router.get("/v1/sentences/trainings/{job_id}", response_model=GlobetrotterTrainingJob, responses=responses(404))
def get_globetrotter_training(job_id: str, runtime: RuntimeDep) -> JSONResponse:
    """State, progress (epoch, dev score), loss curve, result (versioned checkpoint, dev metrics) or error."""
    return _json(_job(_jobs(runtime).view(job_id)), 200)


@router.delete("/v1/sentences/trainings/{job_id}", response_model=GlobetrotterTrainingJob, status_code=202,
               responses={200: {"model": GlobetrotterTrainingJob, "description": "A queued job, cancelled at once"},
                          **responses(401, 403, 404, 409)})
def cancel_globetrotter_training(_key: WriteAccess, job_id: str, runtime: RuntimeDep) -> JSONResponse:
    """Cancel: a queued job at once (200), a running one at its next progress report (202); 409 when final."""
    job = _job(_jobs(runtime).cancel(job_id))
    return _json(job, 200 if job.state == "cancelled" else 202)


@router.get("/v1/sentences/trainings/{job_id}/checkpoint", response_class=FileResponse,
            responses={**responses(404, 409), 200: {"content": {"application/octet-stream": {}},
                                                    "description": "The trained checkpoint (.pt)"}})
def download_globetrotter_checkpoint(job_id: str, runtime: RuntimeDep) -> FileResponse:
    """The trained checkpoint; 409 until the job has succeeded; ETag its sha256."""
    path, sha256 = _jobs(runtime).artifact(job_id)
    return FileResponse(path, media_type="application/octet-stream", filename=path.name,
                        headers={"ETag": f'"{sha256}"', "X-Checksum-Sha256": sha256})
