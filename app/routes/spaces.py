"""Routes for word spaces: summary, monolingual neighbours, and registering bring-your-own spaces."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from app.auth import WriteAccess
from app.deps import JobsDep, RuntimeDep, SpaceDep
from app.errors import responses
from app.routes.translate import TranslatorDep
from app.schemas.alignments import SpaceInfo, SpaceRegistration
from app.schemas.spaces import NeighborsResponse, SpacesResponse
from services.errors import BadRequest, InvalidInput, UnsupportedMedia

router = APIRouter(tags=["spaces"])


@router.get("/v1/spaces", response_model=SpacesResponse, responses=responses())
def list_spaces(spaces: SpaceDep) -> dict:
    """Loaded languages with vocabulary size, dimension, source, bytes and mappings (with versions)."""
    return {"languages": spaces.languages(), "pairs": spaces.pair_names(), "spaces": spaces.describe()}


@router.get("/v1/spaces/{lang}/neighbors", response_model=NeighborsResponse, responses=responses(404))
async def space_neighbors(
    translator: TranslatorDep,
    lang: Annotated[str, Path(min_length=1, max_length=64)],
    word: Annotated[str, Query(min_length=1, pattern=r"\S", description="word whose neighbours to list")],
    k: Annotated[int, Query(ge=1, le=100)] = 10,
) -> dict:
    """Nearest words of ``word`` within its own space (cosine)."""
    return await asyncio.to_thread(translator.neighbors, lang, word, k)


def _space_info(info: dict[str, Any], runtime) -> SpaceInfo:
    serving = False
    try:
        serving = runtime.spaces is not None and info["name"] in runtime.spaces.spaces
    except Exception:
        serving = False
    # An upload's server-side location is the server's business: only registered paths (the client's own) are shown.
    path = info.get("path") if info.get("source") != "upload" else None
    return SpaceInfo(name=info["name"], path=path, format=info.get("fmt"), source=info.get("source", "?"),
                     words=info.get("words"), dim=info.get("dim"), fingerprint=info.get("fingerprint"),
                     serving=serving)


def _registration(payload: bytes) -> SpaceRegistration:
    try:
        data = json.loads(payload)
    except ValueError:  # malformed JSON (or not UTF-8) is a 400, like every other JSON endpoint
        raise BadRequest("request body is not valid JSON", detail={"field": "body"}) from None
    try:
        return SpaceRegistration.model_validate(data)
    except ValidationError as exc:
        errors = [{"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"], "type": e["type"]}
                  for e in exc.errors()]
        first = errors[0]
        raise InvalidInput(f"{first['field']}: {first['message']}",
                           detail={"field": first["field"], "errors": errors}) from None


_UPLOAD_SCHEMA = {"type": "object", "required": ["name", "file"], "properties": {
    "name": {"type": "string", "pattern": "^[A-Za-z0-9_.]{1,64}$"}, "format": {"type": "string"},
    "file": {"type": "string", "format": "binary"},
    "vocab": {"type": "string", "format": "binary", "description": "<stem>.vocab.txt for .npy"},
}}


@router.post("/v1/spaces", response_model=SpaceInfo, status_code=201, tags=["alignments"],
             responses=responses(400, 401, 403, 409, 413, 415),
             openapi_extra={"requestBody": {"content": {
                 "application/json": {"schema": SpaceRegistration.model_json_schema()},
                 "multipart/form-data": {"schema": _UPLOAD_SCHEMA}}, "required": True}})
async def register_space(request: Request, jobs: JobsDep, runtime: RuntimeDep, _key: WriteAccess) -> JSONResponse:
    """Register a word space from a server-side path (JSON) or an upload (multipart); validated like the CLI.

    Uploads are parsed in a bounded child process and swapped in only when valid (a rejected upload leaves an
    existing space of that name untouched); the body is refused with 413 as soon as it crosses the limit.
    """
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        name, upload, vocab = form.get("name"), form.get("file"), form.get("vocab")
        fmt = form.get("format") or None
        if not isinstance(name, str) or not name:
            raise InvalidInput("name: field required", detail={"field": "name"})
        if upload is None or isinstance(upload, str):
            raise InvalidInput("file: an uploaded vectors file is required", detail={"field": "file"})
        if fmt is not None and not isinstance(fmt, str):
            raise InvalidInput("format: must be a string", detail={"field": "format"})
        info = await asyncio.to_thread(jobs.upload_space, name, upload.filename or "", upload.file,
                                       vocab.file if vocab is not None and not isinstance(vocab, str) else None, fmt)
    elif content_type.startswith("application/json") or not content_type:
        body = _registration(await request.body())
        info = await asyncio.to_thread(jobs.register_space, body.name, body.path, body.format)
    else:
        raise UnsupportedMedia(f"send application/json or multipart/form-data, not {content_type!r}",
                               detail={"content_type": content_type})
    return JSONResponse(_space_info(info, runtime).model_dump(mode="json"), status_code=201)
