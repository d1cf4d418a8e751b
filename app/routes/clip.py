"""Routes for CLIP training jobs (issue 14): train a compact CLIP in the background, follow it, download it."""

from __future__ import annotations

import os
from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, JSONResponse

from app.auth import WriteAccess
from app.deps import RuntimeDep
from app.errors import responses
from app.schemas.clip import ClipTrainingJob, ClipTrainingList, ClipTrainingRequest
from app.wiring.jobs import job_input_roots
from services.errors import InvalidInput, Unavailable
from services.infra.paths import allowed_path

router = APIRouter(tags=["clip"])

_RETRY_AFTER_S = "2"
# Tower names ending like this are files (read relative to the worker's directory if not absolute): paths.
_FILE_SUFFIXES = (".tflite", ".vec", ".vec.gz", ".txt", ".txt.gz", ".bin", ".npy", ".pt", ".safetensors", ".gz")


def _jobs(runtime) -> Any:
    runtime.require("jobs")
    jobs = runtime.extras.get("clip_jobs")
    if jobs is None:
        raise Unavailable("CLIP training jobs are not set up (jobs wiring did not run)", detail={"component": "clip"})
    return jobs


def _looks_like_path(value: str) -> bool:
    return ("/" in value or "\\" in value or "\x00" in value or value.startswith((".", "~"))
            or value.lower().endswith(_FILE_SUFFIXES))


def _known_names(field: str) -> set[str] | None:
    """Tower names the models package builds itself (None: it cannot tell here; the training core decides)."""
    try:
        if field == "image_tower":
            from models.image_towers import image_tower_names

            return {n.lower() for n in image_tower_names()}
        from models.text_towers import ENCODER_NAMES

        return {n.lower() for n in ENCODER_NAMES} | {"use", "e5-small"}
    except ImportError:
        return None


def _checked_tower(value: str, field: str, roots: list, settings) -> str:
    """A tower named by a path must lie under the allowed roots (resolved here); an ``open_clip`` pretrained tag
    must be the server's own CLIP (anything else would make a worker download weights); a bare name must be one
    the models package knows. 422 naming the field otherwise, never the path."""
    text = value.strip()
    lowered = text.lower()
    if lowered.startswith("static:"):
        return "static:" + _checked_path(text.split(":", 1)[1], field, roots)
    if lowered.startswith("open_clip:"):
        _, arch, weights = (text.split(":", 2) + ["", ""])[:3]
        if _looks_like_path(weights):
            return f"open_clip:{arch}:{_checked_path(weights, field, roots)}"
        if (arch, weights or None) != (settings.clip_model, settings.clip_pretrained):
            raise InvalidInput(f"{field}: an open_clip tower takes the server's CLIP (VISLEX_CLIP_MODEL and "
                               "VISLEX_CLIP_PRETRAINED) or a checkpoint file under the allowed directories",
                               detail={"field": field})
        return text
    if _looks_like_path(text):
        return _checked_path(text, field, roots)
    known = _known_names(field)
    parts = [p.strip() for p in lowered.split("+")]  # a concatenation of towers: each part named
    if known is not None and not all(p in known for p in parts):
        raise InvalidInput(f"{field}: unknown tower name", detail={"field": field, "known": sorted(known)})
    return text


def _checked_path(value: str, field: str, roots: list) -> str:
    real = os.path.realpath(value) if os.path.isabs(value) and "\x00" not in value else ""
    kind = "dir" if real and os.path.isdir(real) else "file"  # a sentence-transformers folder is a tower too
    return str(allowed_path(value, roots, field=field, kind=kind))


def _checked_params(body: ClipTrainingRequest, settings) -> dict[str, Any]:
    """The request's training parameters with every path checked against the allowed roots (and resolved) and
    the time limit capped like every job's; 422 naming the field otherwise."""
    if body.time_limit_s is not None and body.time_limit_s > settings.job_time_limit_s:
        raise InvalidInput(f"time_limit_s must be at most {settings.job_time_limit_s} (VISLEX_JOB_TIME_LIMIT_S)",
                           detail={"field": "time_limit_s", "max": settings.job_time_limit_s})
    roots = job_input_roots(settings)
    params = body.model_dump(exclude={"time_limit_s", "queue", "force"}, exclude_none=True)
    params["images_dir"] = str(allowed_path(body.images_dir, roots, field="images_dir", kind="dir"))
    params["captions"] = str(allowed_path(body.captions, roots, field="captions"))
    if body.extra_captions:
        params["extra_captions"] = {}
        for lang, path in body.extra_captions.items():  # keys are checked by the training core's validation
            params["extra_captions"][lang] = str(allowed_path(path, roots, field=f"extra_captions.{lang}"))
    if body.translations:
        params["translations"] = {lang: str(allowed_path(path, roots, field=f"translations.{lang}"))
                                  for lang, path in body.translations.items()}
    for field in ("image_tower", "text_tower"):
        if field in params:
            params[field] = _checked_tower(params[field], field, roots, settings)
    return params


def _job(view: dict[str, Any], *, cached: bool = False) -> ClipTrainingJob:
    links = {"self": f"/v1/clip/trainings/{view['id']}"}
    if view["state"] == "succeeded":
        links["checkpoint"] = f"/v1/clip/trainings/{view['id']}/checkpoint"
    return ClipTrainingJob(**view, cached=cached, links=links)


def _json(job: ClipTrainingJob, status: int, **headers: str) -> JSONResponse:
    return JSONResponse(job.model_dump(mode="json"), status_code=status, headers=headers or None)


def _pending_headers(job: ClipTrainingJob) -> dict[str, str]:
    return {"Retry-After": _RETRY_AFTER_S} if job.state in ("queued", "running") else {}


@router.post("/v1/clip/trainings", response_model=ClipTrainingJob, status_code=202,
             responses={200: {"model": ClipTrainingJob, "description": "Identical job exists (cached: true)"},
                        **responses(401, 403)})
def submit_clip_training(_key: WriteAccess, body: ClipTrainingRequest, runtime: RuntimeDep) -> JSONResponse:
    """Queue a CLIP training job (202 + Location); identical inputs return the existing job (200, cached).

    Paths must lie under the allowed directories (422 ``path_not_allowed`` otherwise, whether or not they exist);
    the training parameters are checked at once (422 naming the field). A failed or cancelled job with the same
    inputs runs again; ``force`` runs a new job even when an identical one succeeded.
    """
    settings = runtime.settings
    params = _checked_params(body, settings)
    view, created = _jobs(runtime).submit(params, time_limit_s=body.time_limit_s, queue=body.queue, force=body.force)
    job = _job(view, cached=not created)
    return _json(job, 202 if created else 200, Location=job.links["self"], **_pending_headers(job))


@router.get("/v1/clip/trainings", response_model=ClipTrainingList, responses=responses())
def list_clip_trainings(runtime: RuntimeDep,
                        state: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None,
                        offset: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=500)) -> ClipTrainingList:
    """CLIP training jobs, newest first."""
    page = _jobs(runtime).list(state=state, offset=offset, limit=limit)
    return ClipTrainingList(jobs=[_job(v) for v in page["jobs"]], total=page["total"], offset=offset, limit=limit)


@router.get("/v1/clip/trainings/{job_id}", response_model=ClipTrainingJob, responses=responses(404))
def get_clip_training(job_id: str, runtime: RuntimeDep) -> JSONResponse:
    """State, progress (stage, epoch, metrics), loss curve, result (checkpoint, validation metrics) or error."""
    job = _job(_jobs(runtime).view(job_id))
    return _json(job, 200, **_pending_headers(job))


@router.delete("/v1/clip/trainings/{job_id}", response_model=ClipTrainingJob, status_code=202,
               responses={200: {"model": ClipTrainingJob, "description": "A queued job, cancelled at once"},
                          **responses(401, 403, 404, 409)})
def cancel_clip_training(_key: WriteAccess, job_id: str, runtime: RuntimeDep) -> JSONResponse:
    """Cancel: a queued job at once (200), a running one at its next progress report (202); 409 when final."""
    job = _job(_jobs(runtime).cancel(job_id))
    return _json(job, 200 if job.state == "cancelled" else 202)


@router.get("/v1/clip/trainings/{job_id}/checkpoint", response_class=FileResponse,
            responses={**responses(404, 409), 200: {"content": {"application/octet-stream": {}},
                                                    "description": "The trained checkpoint (.pt)"}})
def download_clip_checkpoint(job_id: str, runtime: RuntimeDep) -> FileResponse:
    """The trained checkpoint (usable as ``VISLEX_CLIP_CHECKPOINT``); 409 until the job has succeeded, ETag its
    sha256."""
    path, sha256 = _jobs(runtime).artifact(job_id)
    return FileResponse(path, media_type="application/octet-stream", filename=f"clip-{job_id}.pt",
                        headers={"ETag": f'"{sha256}"', "X-Checksum-Sha256": sha256})
