"""uCLIP training as a job body and a CLI command: encode (cached), train heads, save, activate.

methods.md, uCLIP. Inputs: English query texts (-> e_C with CLIP's text tower, e_M with the
multilingual encoder), an image folder (-> memory bank V, CLIP image embeddings) and
unlabelled texts in the target languages (-> memory bank M). Output: a versioned heads
checkpoint under ``<data_dir>/artifacts/uclip/`` and (by default) the pointer that makes
running services swap to it.

Embeddings are cached under ``<data_dir>/cache/uclip/`` keyed by encoder identity + content
hash of the inputs, so re-training with other hyper-parameters does not re-encode.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from models.uclip import TrainConfig, save_heads, train_heads
from services.errors import InvalidInput, Unavailable
from services.retrieval.galleries import _atomic_write_bytes
from services.retrieval.service import uclip_dir, write_pointer

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
ProgressFn = Callable[[str, int, int, dict], None]


# ---------------------------------------------------------------------------------------------
# embedding cache
# ---------------------------------------------------------------------------------------------
class EmbeddingCache:
    """``<root>/<encoder slug>/<kind>-<content hash>.npy``: one array per (encoder, input set)."""

    def __init__(self, root: Path | None):
        self.root = Path(root) if root else None
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _slug(encoder: str) -> str:
        digest = hashlib.sha256(encoder.encode()).hexdigest()[:12]
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in encoder)[:48]
        return f"{safe}-{digest}"

    def path(self, encoder: str, kind: str, content: str) -> Path | None:
        if self.root is None:
            return None
        return self.root / self._slug(encoder) / f"{kind}-{content}.npy"

    def get_or_compute(self, encoder: str, kind: str, content: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        path = self.path(encoder, kind, content)
        if path is not None and path.is_file():
            try:
                arr = np.load(path, allow_pickle=False)
                self.hits += 1
                return arr
            except (OSError, ValueError):
                path.unlink(missing_ok=True)  # corrupt entry: recompute
        self.misses += 1
        arr = np.ascontiguousarray(compute(), dtype=np.float32)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            import io

            buf = io.BytesIO()
            np.save(buf, arr)
            _atomic_write_bytes(path, buf.getvalue())
        return arr


def texts_hash(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:32]


def files_hash(paths: Sequence[Path]) -> str:
    """Content hash over the bytes of every file, in order."""
    h = hashlib.sha256()
    for p in paths:
        h.update(hashlib.sha256(Path(p).read_bytes()).digest())
    return h.hexdigest()[:32]


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------
def list_images(folder: Path, limit: int | None = None) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInput(f"image folder {folder} does not exist", detail={"field": "images_dir", "path": str(folder)})
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if limit:
        paths = paths[:limit]
    if not paths:
        raise InvalidInput(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}", detail={"field": "images_dir"})
    return paths


def read_lines(path: Path, limit: int | None = None) -> list[str]:
    """Non-empty stripped lines of a text file (``.gz`` allowed)."""
    import gzip

    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"text file {path} does not exist", detail={"path": str(path)})
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        lines = [line.strip() for line in fh if line.strip()]
    return lines[:limit] if limit else lines


def _texts_param(params: dict[str, Any], key: str) -> list[str]:
    """A list of texts given inline (``key``) or as files (``key + '_files'``)."""
    texts = list(params.get(key) or [])
    for f in params.get(f"{key}_files") or []:
        texts += read_lines(Path(f), params.get("max_texts_per_file"))
    texts = list(dict.fromkeys(t.strip() for t in texts if t and t.strip()))
    if not texts:
        raise InvalidInput(f"no {key} given (inline '{key}' or '{key}_files')", detail={"field": key})
    return texts


def encode_images_cached(clip: Any, paths: list[Path], cache: EmbeddingCache, batch_size: int = 64,
                         progress: ProgressFn | None = None) -> np.ndarray:
    """CLIP image embeddings of ``paths`` (cached by encoder identity + file contents)."""
    ident = getattr(clip, "identity", None) or type(clip).__name__

    def compute() -> np.ndarray:
        out = []
        for start in range(0, len(paths), batch_size):
            out.append(clip.encode_images([str(p) for p in paths[start:start + batch_size]], batch_size=batch_size))
            if progress:
                progress("encode_images", min(start + batch_size, len(paths)), len(paths), {})
        return np.concatenate(out)

    return cache.get_or_compute(f"clip:{ident}", "images", files_hash(paths), compute)


def encode_texts_cached(encode: Callable[[list[str]], np.ndarray], encoder_id: str, texts: list[str],
                        cache: EmbeddingCache, kind: str) -> np.ndarray:
    return cache.get_or_compute(encoder_id, kind, texts_hash(texts), lambda: encode(texts))


# ---------------------------------------------------------------------------------------------
# the job body
# ---------------------------------------------------------------------------------------------
def _load_encoders(params: dict[str, Any]):
    """Frozen CLIP and multilingual encoder named by the job (loaded in the worker process)."""
    from models.clip import ClipSpec, load_clip

    clip_spec = dict(params.get("clip") or {})
    if clip_spec.pop("random_weights", False):
        # Mechanics only (no CLIP weights anywhere): the real architecture with seeded random weights.
        from services.retrieval.testing import tiny_random_clip

        clip = tiny_random_clip(int(clip_spec.get("seed", 0)), model=clip_spec.get("model", "ViT-B-32"), tiny=False,
                                device="cpu")
    else:
        clip_spec.pop("seed", None)
        clip = load_clip(ClipSpec.from_dict(clip_spec))
    try:
        from models.text_encoders import load_text_encoder
    except ImportError as exc:  # pragma: no cover -- the serving feature ships it
        raise Unavailable(f"text encoders are not available: {exc}") from exc
    return clip, load_text_encoder(params.get("text_encoder") or "use-multilingual")


def run_uclip_training(params: dict[str, Any], progress: ProgressFn | None = None, *,
                       clip: Any = None, text_encoder: Any = None) -> dict[str, Any]:
    """Train uCLIP heads from the job ``params``; returns the job result (methods.md, uCLIP).

    params: ``queries`` / ``queries_files`` (English), ``images_dir`` (+ ``max_images``),
    ``texts`` / ``texts_files`` (target languages), ``config`` (TrainConfig fields),
    ``data_dir``, ``clip`` (ClipSpec fields), ``text_encoder`` (name), ``output`` (optional
    checkpoint path), ``activate`` (default true: point running services at the result).
    ``clip`` / ``text_encoder`` keyword arguments inject already-loaded encoders.
    """
    t_start = time.perf_counter()
    report = progress or (lambda *a: None)
    try:
        config = TrainConfig.from_dict(params.get("config"))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"invalid training config: {exc}", detail={"field": "config"}) from exc
    data_dir = Path(params.get("data_dir") or os.environ.get("VISLEX_DATA_DIR") or ".vislex")
    queries = _texts_param(params, "queries")
    texts = _texts_param(params, "texts")
    if not params.get("images_dir"):
        raise InvalidInput("images_dir is required (the image memory bank)", detail={"field": "images_dir"})
    images = list_images(Path(params["images_dir"]), params.get("max_images"))
    if len(queries) < 2:
        raise InvalidInput("need at least 2 distinct query texts", detail={"field": "queries"})
    if clip is None or text_encoder is None:
        loaded_clip, loaded_text = _load_encoders(params)
        clip, text_encoder = clip or loaded_clip, text_encoder or loaded_text
    cache = EmbeddingCache(data_dir / "cache" / "uclip" if params.get("cache", True) else None)
    clip_id = f"clip:{getattr(clip, 'identity', type(clip).__name__)}"
    text_id = f"text:{getattr(text_encoder, 'name', type(text_encoder).__name__)}"

    t0 = time.perf_counter()
    report("encode", 0, 4, {"queries": len(queries), "images": len(images), "texts": len(texts)})
    e_C = encode_texts_cached(lambda t: clip.encode_text(t), clip_id, queries, cache, "queries")
    report("encode", 1, 4, {})
    e_M = encode_texts_cached(lambda t: text_encoder.encode(t), text_id, queries, cache, "queries")
    report("encode", 2, 4, {})
    V = encode_images_cached(clip, images, cache)
    report("encode", 3, 4, {})
    M = encode_texts_cached(lambda t: text_encoder.encode(t), text_id, texts, cache, "bank")
    report("encode", 4, 4, {"cache_hits": cache.hits, "cache_misses": cache.misses})
    encode_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    heads, history = train_heads(e_C, e_M, V, M, config, progress=report)
    train_s = time.perf_counter() - t1

    version = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
    out = Path(params["output"]) if params.get("output") else uclip_dir(data_dir) / f"heads-{version}.pt"
    meta = {"version": version, "clip": getattr(clip, "identity", None),
            "clip_label": getattr(clip, "label", None),
            "text_encoder": getattr(text_encoder, "name", None), "history": history,
            "inputs": {"queries": len(queries), "images": len(images), "texts": len(texts),
                       "images_dir": str(params["images_dir"])}}
    save_heads(heads, out, meta=meta)
    if params.get("activate", True):
        write_pointer(data_dir, out)
    result = {"checkpoint": str(out), "version": version, "activated": bool(params.get("activate", True)),
              "parameters": heads.n_parameters(), "epochs": len(history), "final": history[-1] if history else {},
              "history": history, "counts": meta["inputs"],
              "cache": {"hits": cache.hits, "misses": cache.misses},
              "seconds": {"encode": round(encode_s, 3), "train": round(train_s, 3),
                          "total": round(time.perf_counter() - t_start, 3)}}
    log.info("uCLIP heads trained", extra={"checkpoint": str(out), "seconds": result["seconds"]["total"]})
    return result


def list_checkpoints(data_dir: Path) -> list[dict[str, Any]]:
    """Heads checkpoints under the data dir, newest first."""
    directory = uclip_dir(data_dir)
    if not directory.is_dir():
        return []
    rows = []
    for p in sorted(directory.glob("heads-*.pt"), key=lambda p: p.stat().st_mtime, reverse=True):
        rows.append({"checkpoint": str(p), "name": p.name, "bytes": p.stat().st_size, "modified": p.stat().st_mtime})
    return rows


def dump_result(result: dict[str, Any]) -> str:
    """The result (without the per-epoch history) as one line of strict JSON (the CLI's last line)."""
    from services.strict_json import dumps

    return dumps({k: v for k, v in result.items() if k != "history"})
