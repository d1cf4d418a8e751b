"""Request/response schemas for galleries (images), caption collections (texts) and zero-shot classification."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

_ID = r"^[A-Za-z0-9_-]{1,64}$"


class CollectionCreate(BaseModel):
    """Create a gallery or caption collection; the id is generated unless given."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200)
    id: str | None = Field(None, pattern=_ID, description="optional explicit id (A-Z a-z 0-9 _ -)")


class CollectionInfo(BaseModel):
    id: str
    name: str | None = None
    kind: str = Field(..., description="images (gallery) or texts (caption collection)")
    created_at: float
    count: int
    encoder: str | None = None
    raw_dim: int


class CollectionList(BaseModel):
    collections: list[CollectionInfo]


class ImageItem(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: int
    filename: str | None = None
    hash: str = Field(..., description="sha256 of the uploaded bytes (duplicate detection)")
    width: int | None = None
    height: int | None = None
    size_bytes: int | None = None
    added_at: float | None = None


class Duplicate(BaseModel):
    model_config = ConfigDict(extra="allow")

    duplicate_of: int = Field(..., description="id of the stored item with the same content")
    hash: str


class ImageUploadResult(BaseModel):
    gallery: str
    added: list[ImageItem]
    duplicates: list[Duplicate]
    count: int = Field(..., description="images in the gallery after this upload")
    timings: dict[str, float] = {}


class ImageList(BaseModel):
    gallery: str
    images: list[ImageItem]
    total: int


class ImageHit(ImageItem):
    score: float = Field(..., description="cosine similarity in the shared uCLIP space")


class GallerySearchResult(BaseModel):
    gallery: str
    query: str | None = None
    lang: str | None = None
    query_hash: str | None = None
    results: list[ImageHit]


class CaptionText(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(..., min_length=1, max_length=2000)
    lang: str | None = Field(None, max_length=16, description="language code; checked against the text encoder")


class CaptionUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[CaptionText] = Field(..., min_length=1)


class CaptionItem(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: int
    text: str
    lang: str | None = None
    hash: str
    added_at: float | None = None


class CaptionUploadResult(BaseModel):
    collection: str
    added: list[CaptionItem]
    duplicates: list[Duplicate]
    count: int


class CaptionHit(CaptionItem):
    score: float


class CaptionSearchResult(BaseModel):
    collection: str
    query_hash: str
    results: list[CaptionHit]


class ClassScore(BaseModel):
    label: str
    score: float = Field(..., description="cosine similarity of image and label")
    probability: float = Field(..., description="softmax over the candidate labels")


class ClassifyResult(BaseModel):
    mode: str = Field(..., description="uclip (heads) or clip (raw CLIP, English, no heads)")
    lang: str | None = None
    results: list[ClassScore]

