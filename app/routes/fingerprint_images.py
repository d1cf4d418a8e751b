"""GET /v1/fingerprints/images/{name}: a thumbnail of one image of the fingerprint image set.

``GET /v1/fingerprints`` names a word's most similar images by file name in ``VISLEX_IMAGES_DIR``;
this read-only route shows them (the web console's fingerprint grids). Only a file directly in that
folder, with an image suffix the image set reads, is served -- no path, no hidden file, no symlink
out of the folder -- scaled to at most ``size`` pixels a side as JPEG, with an ETag from the file's
name, size and modification time (304 on ``If-None-Match``). Recent thumbnails are kept in memory.
"""

from __future__ import annotations

import hashlib
import io
from collections import OrderedDict
from pathlib import Path
from threading import Lock
from typing import Annotated

from fastapi import APIRouter, Path as PathParam, Query, Request, Response

from app.deps import SettingsDep
from app.errors import responses
from services.errors import NotFound, Unavailable, UnsupportedMedia
from services.vision.images import IMAGE_SUFFIXES

router = APIRouter(prefix="/v1/fingerprints", tags=["fingerprints"])

_CACHE_ENTRIES = 512
_cache: OrderedDict[str, bytes] = OrderedDict()
_cache_lock = Lock()


def _image_file(images_dir: Path | None, name: str) -> Path:
    if images_dir is None:
        raise Unavailable("no image folder is configured: set VISLEX_IMAGES_DIR",
                          detail={"reason": "no_images", "setting": "VISLEX_IMAGES_DIR"})
    folder = Path(images_dir).resolve()
    unknown = NotFound(f"no image {name!r} in the image set", code="image_not_found", detail={"name": name})
    if name != Path(name).name or name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
        raise unknown
    path = (folder / name).resolve()
    if path.parent != folder or not path.is_file():
        raise unknown
    return path


def _thumbnail(path: Path, size: int) -> bytes:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale
            img = ImageOps.exif_transpose(img).convert("RGB")
            img.thumbnail((size, size))
            out = io.BytesIO()
            img.save(out, format="JPEG", quality=85)
            return out.getvalue()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise UnsupportedMedia(f"image {path.name!r} cannot be decoded ({type(exc).__name__})",
                               detail={"name": path.name}) from None


_JPEG = {200: {"content": {"image/jpeg": {}}, "description": "JPEG thumbnail"},
         304: {"description": "Not modified (If-None-Match matched the ETag)"}}


@router.get("/images/{name}", response_class=Response, responses={**_JPEG, **responses(404, 415)})
def get_fingerprint_image(
    request: Request,
    settings: SettingsDep,
    name: Annotated[str, PathParam(min_length=1, max_length=255, description="file name, as GET /v1/fingerprints lists it")],
    size: Annotated[int, Query(ge=16, le=1024, description="longest side of the thumbnail, pixels")] = 256,
) -> Response:
    """A JPEG thumbnail of one image of the fingerprint image set (``VISLEX_IMAGES_DIR``)."""
    path = _image_file(settings.images_dir, name)
    st = path.stat()
    etag = '"' + hashlib.sha256(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}\0{size}".encode()).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=300"}
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    with _cache_lock:
        data = _cache.get(etag)
        if data is not None:
            _cache.move_to_end(etag)
    if data is None:
        data = _thumbnail(path, size)
        with _cache_lock:
            _cache[etag] = data
            while len(_cache) > _CACHE_ENTRIES:
                _cache.popitem(last=False)
    return Response(data, media_type="image/jpeg", headers=headers)

