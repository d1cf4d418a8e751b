"""Routes for alignment jobs (submit, status, list, cancel, results) and bring-your-own word spaces."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from pydantic import ValidationError

from app.deps import JobsDep, RuntimeDep
from app.errors import responses
from app.schemas.alignments import (
    AlignmentDictionary,
    AlignmentJob,
    AlignmentList,
    AlignmentRequest,
    SpaceInfo,
    SpaceRegistration,
)
from services.errors import BadRequest, InvalidInput, PayloadTooLarge, UnsupportedMedia

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
                        **responses(404)})
def submit_alignment(body: AlignmentRequest, jobs: JobsDep) -> JSONResponse:
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
                          **responses(404, 409)})
def cancel_alignment(job_id: str, jobs: JobsDep) -> JSONResponse:
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


def _space_info(info: dict[str, Any], runtime) -> SpaceInfo:
    serving = False
    try:
        serving = runtime.spaces is not None and info["name"] in runtime.spaces.spaces
    except Exception:
        serving = False
    return SpaceInfo(name=info["name"], path=info.get("path"), format=info.get("fmt"), source=info.get("source", "?"),
                     words=info.get("words"), dim=info.get("dim"), fingerprint=info.get("fingerprint"),
                     serving=serving)


@router.post("/v1/spaces", response_model=SpaceInfo, status_code=201, responses=responses(400, 409, 413, 415),
             openapi_extra={"requestBody": {"content": {
                 "application/json": {"schema": SpaceRegistration.model_json_schema()},
                 "multipart/form-data": {"schema": {"type": "object", "required": ["name", "file"], "properties": {
                     "name": {"type": "string"}, "format": {"type": "string"},
                     "file": {"type": "string", "format": "binary"},
                     "vocab": {"type": "string", "format": "binary", "description": "<stem>.vocab.txt for .npy"},
                 }}}}, "required": True}})
async def register_space(request: Request, jobs: JobsDep, runtime: RuntimeDep) -> JSONResponse:
    """Register a word space from a server-side path (JSON) or an upload (multipart); validated like the CLI."""
    content_type = request.headers.get("content-type", "")
    limit = runtime.settings.max_upload_bytes
    if content_type.startswith("multipart/form-data"):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit + 64 * 1024:
            raise PayloadTooLarge(f"upload exceeds max_upload_bytes={limit}", detail={"limit": limit})
        form = await request.form()
        name, upload, vocab = form.get("name"), form.get("file"), form.get("vocab")
        fmt = form.get("format") or None
        if not isinstance(name, str) or not name:
            raise InvalidInput("name: field required", detail={"field": "name"})
        if upload is None or isinstance(upload, str):
            raise InvalidInput("file: an uploaded vectors file is required", detail={"field": "file"})
        info = await asyncio.to_thread(jobs.upload_space, name, upload.filename or "", upload.file,
                                       vocab.file if vocab is not None and not isinstance(vocab, str) else None, fmt)
    elif content_type.startswith("application/json") or not content_type:
        try:
            payload = json.loads(await request.body())
        except ValueError:  # malformed JSON (or not UTF-8) is a 400, like every other JSON endpoint
            raise BadRequest("request body is not valid JSON", detail={"field": "body"}) from None
        try:
            body = SpaceRegistration.model_validate(payload)
        except ValidationError as exc:
            errors = [{"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"], "type": e["type"]}
                      for e in exc.errors()]
            first = errors[0]
            raise InvalidInput(f"{first['field']}: {first['message']}",
                               detail={"field": first["field"], "errors": errors}) from None
        info = await asyncio.to_thread(jobs.register_space, body.name, body.path, body.format)
    else:
        raise UnsupportedMedia(f"send application/json or multipart/form-data, not {content_type!r}",
                               detail={"content_type": content_type})
    space = _space_info(info, runtime)
    return JSONResponse(space.model_dump(mode="json"), status_code=201)
