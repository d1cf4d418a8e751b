"""Routes for alignment jobs (submit, status, list, cancel, results); registering spaces is in routes/spaces.py."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response

from app.auth import WriteAccess
from app.deps import JobsDep
from app.errors import responses
from app.schemas.alignments import AlignmentDictionary, AlignmentJob, AlignmentList, AlignmentRequest

router = APIRouter(tags=["alignments"])

_RETRY_AFTER_S = "2"


def _job(view: dict[str, Any], *, cached: bool = False) -> AlignmentJob:
    base = f"/v1/alignments/{view['id']}"
    links = {"self": base}
    if view["state"] == "succeeded":
        links.update(dictionary=f"{base}/dictionary", mapping=f"{base}/mapping")
    return AlignmentJob(**view, cached=cached, links=links)


def _json(job: AlignmentJob, status: int, **headers: str) -> JSONResponse:
    return JSONResponse(job.model_dump(mode="json"), status_code=status, headers=headers or None)


@router.post("/v1/alignments", response_model=AlignmentJob, status_code=202,
             responses={200: {"model": AlignmentJob, "description": "Identical job exists (cached: true)"},
                        **responses(401, 403, 404)})
def submit_alignment(body: AlignmentRequest, jobs: JobsDep, _key: WriteAccess) -> JSONResponse:
    """Queue an alignment job (202 + Location); identical work returns the existing job (200, cached)."""
    view, created = jobs.submit(body.model_dump())
    job = _job(view, cached=not created)
    location = job.links["self"]
    if created or job.state in ("queued", "running"):
        return _json(job, 202 if created else 200, Location=location, **{"Retry-After": _RETRY_AFTER_S})
    return _json(job, 200, Location=location)


@router.get("/v1/alignments", response_model=AlignmentList, responses=responses())
def list_alignments(
    jobs: JobsDep,
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None,
    pair: str | None = Query(None, pattern=r"^[A-Za-z0-9_.]+-[A-Za-z0-9_.]+$", description="e.g. en-fr"),
    offset: int = Query(0, ge=0),
    limit: int = Query(50, ge=1, le=500),
) -> AlignmentList:
    """Jobs, newest first, filtered by state and/or pair."""
    page = jobs.list(state=state, pair=pair, offset=offset, limit=limit)
    return AlignmentList(jobs=[_job(v) for v in page["jobs"]], total=page["total"], offset=offset, limit=limit)


@router.get("/v1/alignments/{job_id}", response_model=AlignmentJob, responses=responses(404))
def get_alignment(job_id: str, jobs: JobsDep) -> JSONResponse:
    """State, progress, per-iteration validation loss, evaluation and error of one job."""
    job = _job(jobs.view(job_id))
    if job.state in ("queued", "running"):
        return _json(job, 200, **{"Retry-After": _RETRY_AFTER_S})
    if job.result is not None and job.result.serving == "installing":
        return _json(job, 200, **{"Retry-After": "1"})
    return _json(job, 200)


@router.delete("/v1/alignments/{job_id}", response_model=AlignmentJob, status_code=202,
               responses={200: {"model": AlignmentJob, "description": "Queued job cancelled at once"},
                          **responses(401, 403, 404, 409)})
def cancel_alignment(job_id: str, jobs: JobsDep, _key: WriteAccess) -> JSONResponse:
    """Cancel: a queued job at once (200), a running one at its next iteration boundary (202)."""
    job = _job(jobs.cancel(job_id))
    return _json(job, 200 if job.state == "cancelled" else 202)


@router.get("/v1/alignments/{job_id}/dictionary", response_model=AlignmentDictionary,
            responses={**responses(404, 409), 200: {"content": {"text/tab-separated-values": {}}}})
def get_alignment_dictionary(job_id: str, request: Request, jobs: JobsDep) -> Response:
    """The induced dictionary (JSON, or TSV ``source<TAB>target<TAB>score`` when Accept asks for it)."""
    rows = jobs.dictionary(job_id)
    accept = request.headers.get("accept", "")
    if "text/tab-separated-values" in accept or "text/plain" in accept:
        text = "".join(f"{s}\t{t}\t{score:.6f}\n" for s, t, score in rows)
        return PlainTextResponse(text, media_type="text/tab-separated-values; charset=utf-8")
    return JSONResponse({"job_id": job_id, "pairs": [{"source": s, "target": t, "score": score}
                                                     for s, t, score in rows]})


@router.get("/v1/alignments/{job_id}/mapping", response_class=FileResponse,
            responses={**responses(404, 409), 200: {"content": {"application/octet-stream": {}}}})
def download_alignment_mapping(job_id: str, jobs: JobsDep) -> FileResponse:
    """The job's Mapping file (.npz, loadable with ``Mapping.load``); ETag is its sha256."""
    path, sha256 = jobs.mapping_file(job_id)
    return FileResponse(path, media_type="application/octet-stream", filename=f"mapping-{job_id}.npz",
                        headers={"ETag": f'"{sha256}"', "X-Checksum-Sha256": sha256})
