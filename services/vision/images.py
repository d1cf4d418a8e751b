"""Image sets for WALIP fingerprints: a folder of images embedded once per (model, image list).

Embeddings are cached on disk as ``<cache_dir>/images/<model-id>-<list-hash>.npy`` plus a
``.json`` sidecar (names, skipped files), each written atomically (temp file + os.replace).
Unreadable images are skipped and counted, never fatal (methods.md, WALIP step 1: the
image set G).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from services.errors import InvalidInput, NotFound

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


class ImageEncoder(Protocol):
    identity: str

    def encode_images(self, images: Sequence[Any], batch_size: int = 64) -> np.ndarray: ...


@dataclass
class ImageSet:
    """Embedded images: names[i] is the file behind embeddings[i] (unit rows)."""

    names: list[str]
    embeddings: np.ndarray  # (d, D) float32
    skipped: list[str] = field(default_factory=list)
    from_cache: bool = False
    cache_path: str | None = None
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.names)


def list_images(images_dir: str | os.PathLike, max_images: int | None = None) -> list[Path]:
    """Image files directly in ``images_dir`` (by suffix), sorted by name."""
    d = Path(images_dir)
    if not d.is_dir():
        raise NotFound(f"image folder {d} does not exist", detail={"path": str(d)})
    files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InvalidInput(f"image folder {d} holds no images", detail={"path": str(d), "suffixes": sorted(IMAGE_SUFFIXES)})
    return files[:max_images] if max_images else files


def image_list_hash(paths: Sequence[Path]) -> str:
    """Content key of an image list: names, sizes and modification times."""
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _atomic_write_bytes(path: Path, write: Callable[[Any], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _load_cached(npy: Path, meta: Path) -> ImageSet | None:
    if not (npy.is_file() and meta.is_file()):
        return None
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
        emb = np.load(npy, allow_pickle=False)
    except (OSError, ValueError):
        return None  # a corrupt cache entry is recomputed, not trusted
    if emb.ndim != 2 or len(emb) != len(info.get("names", [])):
        return None
    return ImageSet(info["names"], emb.astype(np.float32, copy=False), info.get("skipped", []), True, str(npy))


def _read_images(paths: Sequence[Path]) -> tuple[list[Any], list[str], list[str]]:
    from PIL import Image

    images, names, skipped = [], [], []
    for p in paths:
        try:
            with Image.open(p) as im:
                images.append(im.convert("RGB"))
            names.append(p.name)
        except Exception:  # noqa: BLE001 -- any decoder failure means "skip this file"
            skipped.append(p.name)
    return images, names, skipped


def embed_image_folder(encoder: ImageEncoder, images_dir: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
                       batch_size: int = 64, max_images: int | None = None,
                       progress: Callable[[str, int, int, dict], None] | None = None) -> ImageSet:
    """Embed every readable image of a folder with ``encoder``, from the disk cache when present."""
    t0 = time.perf_counter()
    paths = list_images(images_dir, max_images)
    key = f"{encoder.identity}-{image_list_hash(paths)}"
    npy = meta = None
    if cache_dir is not None:
        npy = Path(cache_dir) / "images" / f"{key}.npy"
        meta = npy.with_suffix(".json")
        cached = _load_cached(npy, meta)
        if cached is not None:
            cached.seconds = time.perf_counter() - t0
            return cached
    towered = _through_tower_cache(encoder, images_dir, paths, cache_dir, batch_size, progress)
    if towered is not None:
        towered.seconds = time.perf_counter() - t0
        return towered
    names: list[str] = []
    skipped: list[str] = []
    chunks: list[np.ndarray] = []
    # decode a bounded number of images at a time: a 3000-image set never sits in memory as pixels
    step = max(batch_size, 256)
    for start in range(0, len(paths), step):
        images, ok, bad = _read_images(paths[start:start + step])
        names += ok
        skipped += bad
        if images:
            chunks.append(np.asarray(encoder.encode_images(images, batch_size=batch_size), dtype=np.float32))
        if progress is not None:
            progress("images", min(start + step, len(paths)), len(paths), {"skipped": len(skipped)})
    if not chunks:
        raise InvalidInput(f"no readable images in {images_dir}", detail={"skipped": len(skipped)})
    emb = np.concatenate(chunks)
    result = ImageSet(names, emb, skipped, False, str(npy) if npy else None)
    if npy is not None and meta is not None:
        _atomic_write_bytes(npy, lambda f: np.save(f, emb, allow_pickle=False))
        info = {"names": names, "skipped": skipped, "encoder": encoder.identity, "images_dir": str(images_dir),
                "created_at": time.time()}
        _atomic_write_bytes(meta, lambda f: f.write(json.dumps(info).encode("utf-8")))
    result.seconds = time.perf_counter() - t0
    return result


def _through_tower_cache(encoder: Any, images_dir: str | os.PathLike, paths: Sequence[Path],
                         cache_dir: str | os.PathLike | None, batch_size: int,
                         progress: Callable[[str, int, int, dict], None] | None) -> ImageSet | None:
    """A compact CLIP (locked image tower + heads): its tower's outputs from the shared tower cache
    (``<cache_dir>/towers``, services/clip/features.py), then only the heads. Retrained heads then never
    re-run the image tower over the set. None (the caller encodes as usual) for any other encoder, without
    a cache folder, or when an image of the set cannot be read (the usual path skips and counts it)."""
    tower = getattr(encoder, "image_tower", None)
    project = getattr(encoder, "image_features_to_clip", None)
    if tower is None or project is None or cache_dir is None:
        return None
    from services.clip.features import image_features

    try:
        feats, hit = image_features(tower, images_dir, [p.name for p in paths], cache_dir=Path(cache_dir) / "towers",
                                    batch_size=batch_size,
                                    progress=(lambda st, cur, tot, m: progress("images", cur, tot, m or {})) if progress else None)
    except InvalidInput:
        return None
    return ImageSet([p.name for p in paths], np.asarray(project(feats), dtype=np.float32), [], hit, None)
