"""GET /v1/fingerprints: a word's most similar images and its visual-word verdict (WALIP step 1)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from app.deps import SettingsDep, VisionDep
from app.errors import responses
from app.schemas.fingerprints import FingerprintResponse
from services.errors import InvalidInput

router = APIRouter(prefix="/v1/fingerprints", tags=["fingerprints"])


@router.get("", response_model=FingerprintResponse, responses=responses())
def get_fingerprint(
    vision: VisionDep,
    settings: SettingsDep,
    word: str = Query(..., min_length=1, description="the word"),
    lang: str = Query("en", min_length=2, max_length=16, description="language of the word"),
    top: int = Query(10, ge=1, le=1000, description="how many images"),
) -> FingerprintResponse:
    """The word's top images by CLIP similarity and whether it passes the visual-word filter."""
    if len(word) > settings.max_word_length:
        raise InvalidInput(f"word longer than {settings.max_word_length} characters", detail={"field": "word"})
    return FingerprintResponse(**vision.word_images(word, lang, top))
