"""Tower outputs cached on disk, so retraining heads never re-encodes a photo or a caption.

A cache entry is ``<cache_dir>/<kind>-<key>.npy`` (float32 unit rows) where ``key`` hashes the
tower's identity and the inputs (image names, sizes and modification times; or the caption
texts). Entries are written atomically (temp file + ``os.replace``): a crash never leaves a
half-written entry that a later run would trust. Encoding runs in chunks with progress.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

Progress = Callable[[str, int, int, dict | None], None]
CHUNK_IMAGES = 256
CHUNK_TEXTS = 2048


def _key(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()[:24]


def images_key(tower_identity: str, images_dir: Path, names: Sequence[str]) -> str:
    stats = []
    for name in names:
        st = os.stat(images_dir / name)
        stats.append(f"{name}|{st.st_size}|{int(st.st_mtime)}")
    return _key("images", tower_identity, *stats)


def texts_key(tower_identity: str, texts: Sequence[str]) -> str:
    return _key("texts", tower_identity, *texts)


def _save_atomic(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _cached(path: Path | None, rows: int) -> np.ndarray | None:
    if path is None or not path.is_file():
        return None
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return arr if arr.ndim == 2 and arr.shape[0] == rows else None


def _encode_chunked(encode: Callable[[Sequence[Any]], np.ndarray], items: Sequence[Any], chunk: int,
                    stage: str, progress: Progress | None) -> np.ndarray:
    out = []
    for start in range(0, len(items), chunk):
        out.append(np.asarray(encode(items[start:start + chunk]), dtype=np.float32))
        if progress:
            progress(stage, min(start + chunk, len(items)), len(items), None)
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def _unit_concat(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenated towers weigh each (unit) part equally and give unit rows, as the towers themselves do."""
    parts = [p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12) for p in parts]
    X = np.concatenate(parts, axis=1)
    return (X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def image_features(tower: Any, images_dir: str | os.PathLike, names: Sequence[str], *, cache_dir: str | os.PathLike | None,
                   progress: Progress | None = None, batch_size: int = 64) -> tuple[np.ndarray, bool]:
    """(features of ``names`` by ``tower``, from_cache)."""
    d = Path(images_dir)
    if getattr(tower, "parts", None) and cache_dir:  # a concatenation: each part from its own cache entry
        parts = [image_features(p, d, names, cache_dir=cache_dir, progress=progress, batch_size=batch_size)
                 for p in tower.parts]
        return _unit_concat([f for f, _ in parts]), all(hit for _, hit in parts)
    path = Path(cache_dir) / f"images-{images_key(tower.identity, d, names)}.npy" if cache_dir else None
    hit = _cached(path, len(names))
    if hit is not None:
        return hit, True
    feats = _encode_chunked(lambda chunk: tower.encode_images([d / n for n in chunk], batch_size=batch_size),
                            list(names), CHUNK_IMAGES, "encode_images", progress)
    if path is not None:
        _save_atomic(path, feats)
    return feats, False


def text_features(tower: Any, texts: Sequence[str], *, cache_dir: str | os.PathLike | None,
                  progress: Progress | None = None, batch_size: int = 256) -> tuple[np.ndarray, bool]:
    """(features of ``texts`` by ``tower``, from_cache)."""
    if getattr(tower, "parts", None) and cache_dir:
        parts = [text_features(p, texts, cache_dir=cache_dir, progress=progress, batch_size=batch_size)
                 for p in tower.parts]
        return _unit_concat([f for f, _ in parts]), all(hit for _, hit in parts)
    path = Path(cache_dir) / f"texts-{texts_key(tower.identity, texts)}.npy" if cache_dir else None
    hit = _cached(path, len(texts))
    if hit is not None:
        return hit, True
    feats = _encode_chunked(lambda chunk: tower.encode_text(list(chunk), batch_size=batch_size),
                            list(texts), CHUNK_TEXTS, "encode_texts", progress)
    if path is not None:
        _save_atomic(path, feats)
    return feats, False
