"""Schemas of GET /v1/fingerprints (WALIP step 1, the interpretable side)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ImageMatch(BaseModel):
    name: str = Field(description="image file name in the configured image folder")
    similarity: float = Field(description="cosine between the word's prompt-ensemble embedding and the image")


class FingerprintResponse(BaseModel):
    word: str
    lang: str
    encoder: str = Field(description="CLIP (or text tower) that embedded the word")
    reused_from: str | None = Field(None, description="language whose CLIP text tower was borrowed, if any")
    images: list[ImageMatch]
    max_similarity: float
    visual_threshold: float | None = Field(description="median best-image similarity over the reference vocabulary")
    is_visual: bool | None = Field(description="passes WALIP's visual-word filter (max similarity >= threshold)")
    n_images: int
