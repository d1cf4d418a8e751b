"""Decoding uploaded images: size limit, type check, content hash (for duplicate detection)."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from services.errors import PayloadTooLarge, UnsupportedMedia

# Content types a client may reasonably send for an image file; anything else is 415 before decoding.
_GENERIC_TYPES = ("application/octet-stream", "binary/octet-stream", "")


@dataclass
class DecodedImage:
    """One upload: the RGB image, its content hash and where it came from."""

    image: Image.Image
    sha256: str
    filename: str
    size_bytes: int
    width: int
    height: int


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_image(data: bytes, *, filename: str = "", content_type: str | None = None,
                 max_bytes: int | None = None) -> DecodedImage:
    """Bytes -> RGB image; PayloadTooLarge (413) over ``max_bytes``, UnsupportedMedia (415) if not an image."""
    name = filename or "upload"
    if max_bytes is not None and len(data) > max_bytes:
        raise PayloadTooLarge(
            f"image {name!r} is {len(data)} bytes; the limit is {max_bytes}",
            detail={"filename": name, "size_bytes": len(data), "max_bytes": max_bytes},
        )
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype not in _GENERIC_TYPES and not ctype.startswith("image/"):
        raise UnsupportedMedia(
            f"{name!r} has content type {ctype!r}; upload an image (JPEG, PNG, WebP, ...)",
            detail={"filename": name, "content_type": ctype},
        )
    if not data:
        raise UnsupportedMedia(f"{name!r} is empty", detail={"filename": name})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                probe.verify()  # catches truncated / corrupt files before a full decode
            with Image.open(io.BytesIO(data)) as im:
                image = im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as exc:
        raise UnsupportedMedia(
            f"{name!r} is not a decodable image: {exc}", detail={"filename": name, "reason": str(exc)[:200]}
        ) from exc
    return DecodedImage(image, content_hash(data), name, len(data), image.width, image.height)
