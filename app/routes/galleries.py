"""Routes for image galleries, caption collections and zero-shot classification (uCLIP retrieval)."""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, File, Form, Query, Response, UploadFile

from app.auth import WriteAccess
from app.deps import RetrievalDep
from app.errors import responses
from app.schemas.galleries import (
    CaptionSearchResult,
    CaptionUpload,
    CaptionUploadResult,
    ClassifyResult,
    CollectionCreate,
    CollectionInfo,
    CollectionList,
    GallerySearchResult,
    ImageList,
    ImageUploadResult,
)
from services.errors import InvalidInput, PayloadTooLarge

router = APIRouter(tags=["galleries"])

_LANG = Query(None, min_length=2, max_length=16, description="language of the text (checked against the encoder)")
_K = Query(10, ge=1, le=1000)


async def _read(upload: UploadFile, limit: int) -> tuple[str, str | None, bytes]:
    """Read one upload, refusing (413) as soon as it is known to exceed ``limit``."""
    name = upload.filename or "upload"
    if upload.size is not None and upload.size > limit:
        raise PayloadTooLarge(f"image {name!r} is {upload.size} bytes; the limit is {limit}",
                              detail={"filename": name, "size_bytes": upload.size, "max_bytes": limit})
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"image {name!r} exceeds the limit of {limit} bytes",
                              detail={"filename": name, "max_bytes": limit})
    return name, upload.content_type, data


# ---- galleries -----------------------------------------------------------------------------
@router.post("/v1/galleries", response_model=CollectionInfo, status_code=201, responses=responses(401, 403, 409))
def create_gallery(_key: WriteAccess, body: CollectionCreate, retrieval: RetrievalDep) -> CollectionInfo:
    """Create an empty image gallery."""
    return CollectionInfo(**retrieval.create_gallery(name=body.name, gallery_id=body.id))


@router.get("/v1/galleries", response_model=CollectionList, responses=responses())
def list_galleries(retrieval: RetrievalDep) -> CollectionList:
    """All galleries, oldest first."""
    return CollectionList(collections=retrieval.galleries.list())


@router.get("/v1/galleries/{gallery_id}", response_model=CollectionInfo, responses=responses(404))
def get_gallery(gallery_id: str, retrieval: RetrievalDep) -> CollectionInfo:
    """One gallery's metadata and image count."""
    return CollectionInfo(**retrieval.galleries.get(gallery_id).describe())


@router.delete("/v1/galleries/{gallery_id}", status_code=204, responses=responses(401, 403, 404))
def delete_gallery(_key: WriteAccess, gallery_id: str, retrieval: RetrievalDep) -> Response:
    """Delete a gallery with all its images."""
    retrieval.galleries.delete(gallery_id)
    return Response(status_code=204)


@router.post("/v1/galleries/{gallery_id}/images", response_model=ImageUploadResult, status_code=201,
             responses=responses(401, 403, 404, 413, 415))
async def add_gallery_images(_key: WriteAccess, gallery_id: str, retrieval: RetrievalDep,
                             files: list[UploadFile] = File(..., description="one or more images")) -> ImageUploadResult:
    """Embed and index a batch of images (all-or-nothing; duplicates by content hash are reported, not added)."""
    retrieval.galleries.get(gallery_id)  # 404 before reading any bytes
    uploads = [await _read(f, retrieval.max_upload_bytes) for f in files]
    return ImageUploadResult(**await asyncio.to_thread(retrieval.add_images, gallery_id, uploads))


@router.get("/v1/galleries/{gallery_id}/images", response_model=ImageList, responses=responses(404))
def list_gallery_images(gallery_id: str, retrieval: RetrievalDep, offset: int = Query(0, ge=0),
                        limit: int = Query(100, ge=1, le=1000)) -> ImageList:
    """Images of a gallery by id."""
    gallery = retrieval.galleries.get(gallery_id)
    return ImageList(gallery=gallery_id, images=gallery.items(offset, limit), total=len(gallery))


@router.delete("/v1/galleries/{gallery_id}/images/{image_id}", status_code=204, responses=responses(401, 403, 404))
def delete_gallery_image(_key: WriteAccess, gallery_id: str, image_id: int, retrieval: RetrievalDep) -> Response:
    """Remove one image from a gallery."""
    retrieval.galleries.get(gallery_id).delete(image_id)
    return Response(status_code=204)


@router.get("/v1/galleries/{gallery_id}/search", response_model=GallerySearchResult, responses=responses(404))
def search_gallery_text(gallery_id: str, retrieval: RetrievalDep,
                        q: str = Query(..., min_length=1, max_length=1000, description="text in any supported language"),
                        lang: str | None = _LANG, k: int = _K) -> GallerySearchResult:
    """Text (any supported language) -> the gallery's most similar images."""
    return GallerySearchResult(**retrieval.search_gallery_text(gallery_id, q, lang, k))


@router.post("/v1/galleries/{gallery_id}/search", response_model=GallerySearchResult,
             responses=responses(404, 413, 415))
async def search_gallery_image(gallery_id: str, retrieval: RetrievalDep, file: UploadFile = File(...),
                               k: int = Form(10, ge=1, le=1000)) -> GallerySearchResult:
    """Image -> the gallery's most similar images."""
    retrieval.galleries.get(gallery_id)
    name, ctype, data = await _read(file, retrieval.max_upload_bytes)
    return GallerySearchResult(**await asyncio.to_thread(
        lambda: retrieval.search_gallery_image(gallery_id, retrieval.decode(data, name, ctype), k)))


# ---- caption collections ------------------------------------------------------------------
@router.post("/v1/captions", response_model=CollectionInfo, status_code=201, responses=responses(401, 403, 409))
def create_captions(_key: WriteAccess, body: CollectionCreate, retrieval: RetrievalDep) -> CollectionInfo:
    """Create an empty caption collection (texts to retrieve for an image)."""
    return CollectionInfo(**retrieval.create_captions(name=body.name, collection_id=body.id))


@router.get("/v1/captions", response_model=CollectionList, responses=responses())
def list_captions(retrieval: RetrievalDep) -> CollectionList:
    """All caption collections."""
    return CollectionList(collections=retrieval.captions.list())


@router.delete("/v1/captions/{collection_id}", status_code=204, responses=responses(401, 403, 404))
def delete_captions(_key: WriteAccess, collection_id: str, retrieval: RetrievalDep) -> Response:
    """Delete a caption collection."""
    retrieval.captions.delete(collection_id)
    return Response(status_code=204)


@router.post("/v1/captions/{collection_id}/texts", response_model=CaptionUploadResult, status_code=201,
             responses=responses(401, 403, 404, 413))
def add_caption_texts(_key: WriteAccess, collection_id: str, body: CaptionUpload, retrieval: RetrievalDep) -> CaptionUploadResult:
    """Embed and index texts (any supported language); duplicates are reported, not added."""
    return CaptionUploadResult(**retrieval.add_texts(collection_id, [t.model_dump() for t in body.texts]))


@router.delete("/v1/captions/{collection_id}/texts/{text_id}", status_code=204, responses=responses(401, 403, 404))
def delete_caption_text(_key: WriteAccess, collection_id: str, text_id: int, retrieval: RetrievalDep) -> Response:
    """Remove one text from a caption collection."""
    retrieval.captions.get(collection_id).delete(text_id)
    return Response(status_code=204)


@router.post("/v1/captions/{collection_id}/search", response_model=CaptionSearchResult,
             responses=responses(404, 413, 415))
async def search_captions_image(collection_id: str, retrieval: RetrievalDep, file: UploadFile = File(...),
                                k: int = Form(10, ge=1, le=1000),
                                lang: str | None = Form(None, description="only texts in this language")) -> CaptionSearchResult:
    """Image -> the collection's most similar texts."""
    retrieval.captions.get(collection_id)
    name, ctype, data = await _read(file, retrieval.max_upload_bytes)
    return CaptionSearchResult(**await asyncio.to_thread(
        lambda: retrieval.search_captions_image(collection_id, retrieval.decode(data, name, ctype), k, lang)))


# ---- zero-shot classification -------------------------------------------------------------
def _string_list(raw: list[str] | None, field: str) -> list[str] | None:
    """Accept repeated form fields or one JSON array field."""
    if raw is None:
        return None
    if len(raw) == 1 and raw[0].lstrip().startswith("["):
        try:
            values = json.loads(raw[0])
        except ValueError:
            raise InvalidInput(f"{field} is not a valid JSON array", detail={"field": field}) from None
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise InvalidInput(f"{field} must be an array of strings", detail={"field": field})
        raw = values
    out = [v.strip() for v in raw if v.strip()]
    return out


@router.post("/v1/classify", response_model=ClassifyResult, responses=responses(413, 415))
async def classify_image(retrieval: RetrievalDep, file: UploadFile = File(...),
                         labels: list[str] = Form(..., description="candidate labels (repeat the field or one JSON array)"),
                         lang: str | None = Form(None, description="language of the labels"),
                         templates: list[str] | None = Form(None, description="prompt templates with '{}'")) -> ClassifyResult:
    """Zero-shot classification: one image, candidate labels in any supported language -> scores."""
    label_list = _string_list(labels, "labels") or []
    if not label_list:
        raise InvalidInput("give at least one candidate label", detail={"field": "labels"})
    if len(label_list) > 1000:
        raise PayloadTooLarge(f"{len(label_list)} labels; the limit is 1000", detail={"count": len(label_list)})
    name, ctype, data = await _read(file, retrieval.max_upload_bytes)
    prompts = _string_list(templates, "templates")
    return ClassifyResult(**await asyncio.to_thread(
        lambda: retrieval.classify(retrieval.decode(data, name, ctype), label_list, lang, prompts)))
