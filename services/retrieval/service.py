"""The retrieval service: frozen encoders + uCLIP heads + galleries, captions, zero-shot classification.

methods.md, uCLIP inference: image -> f_C(CLIP image embedding); text in any language ->
f_M(multilingual embedding); cosine retrieval. Heads are swapped without restart: training
writes a checkpoint and then atomically replaces ``<artifacts>/uclip/current.json``; the
service notices the new pointer (checked at most once a second) or is told through
:meth:`RetrievalService.activate`, loads the heads, and re-projects every collection from
its stored raw vectors (no re-encoding).

Without heads the galleries are indexed in raw CLIP space: image -> image search works,
English classification falls back to raw CLIP text, and text search across languages
answers 503 naming the missing heads.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from models.uclip import CheckpointError, UclipHeads, load_heads
from services.errors import InvalidInput, NotFound, PayloadTooLarge, Unavailable
from services.observability import stage_timer
from services.retrieval.galleries import CollectionStore
from services.retrieval.images import DecodedImage, content_hash, decode_image

log = logging.getLogger(__name__)

POINTER_NAME = "current.json"
_POINTER_CHECK_S = 1.0


class ImageTextClip(Protocol):
    identity: str

    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray: ...

    def encode_images(self, images: Sequence[Any], batch_size: int = 64) -> np.ndarray: ...


class MultilingualEncoder(Protocol):
    name: str
    dim: int

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray: ...


def uclip_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "artifacts" / "uclip"


def write_pointer(data_dir: Path, checkpoint: Path) -> Path:
    """Make ``checkpoint`` the active heads for every service on this data dir (atomic replace)."""
    from services.retrieval.galleries import _atomic_write_bytes

    directory = uclip_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / POINTER_NAME
    _atomic_write_bytes(path, json.dumps({"checkpoint": str(Path(checkpoint).resolve()),
                                          "activated_at": time.time()}).encode())
    return path


def read_pointer(data_dir: Path) -> Path | None:
    path = uclip_dir(data_dir) / POINTER_NAME
    try:
        return Path(json.loads(path.read_text(encoding="utf-8"))["checkpoint"])
    except (OSError, ValueError, KeyError):
        return None


def clip_dim(clip: Any) -> int:
    dim = getattr(clip, "embed_dim", None)
    return int(dim) if dim else int(clip.encode_text(["x"]).shape[1])


def encoder_languages(text_encoder: Any) -> list[str] | None:
    """Supported language codes, or None when the encoder takes any language ("*")."""
    langs = getattr(text_encoder, "languages", None)
    if not langs or "*" in langs:
        return None
    return sorted(langs)


class RetrievalService:
    """Everything the galleries/captions/classify/uclip routes serve from (one per process)."""

    def __init__(self, clip: ImageTextClip, text_encoder: MultilingualEncoder, data_dir: Path, *,
                 checkpoint: Path | None = None, max_upload_bytes: int = 20 * 1024 * 1024,
                 max_batch_images: int = 256, max_batch_texts: int = 2000, clip_languages: Sequence[str] = ("en",)):
        self.clip = clip
        self.text_encoder = text_encoder
        self.data_dir = Path(data_dir)
        self.max_upload_bytes = max_upload_bytes
        self.max_batch_images = max_batch_images
        self.max_batch_texts = max_batch_texts
        self.clip_languages = list(clip_languages)
        self.clip_dim = clip_dim(clip)
        self.text_dim = int(getattr(text_encoder, "dim", 0) or text_encoder.encode(["x"]).shape[1])
        self.heads: UclipHeads | None = None
        self.heads_info: dict[str, Any] = {"active": False, "reason": "no heads checkpoint trained or configured"}
        self._heads_lock = threading.Lock()
        self._pointer_seen: tuple[int, int] | None = None
        self._pointer_checked = 0.0
        self.galleries = CollectionStore(self.data_dir / "galleries", "images", self._project_images)
        self.captions = CollectionStore(self.data_dir / "captions", "texts", self._project_texts)
        start = Path(checkpoint) if checkpoint else read_pointer(self.data_dir)
        if start is not None:
            try:
                self.activate(start, write=False)
            except (CheckpointError, InvalidInput) as exc:
                self.heads_info = {"active": False, "reason": str(exc), "checkpoint": str(start)}
                log.warning("uCLIP heads not loaded", extra={"reason": str(exc)})
        self._pointer_seen = self._pointer_stat()

    # ---- heads -----------------------------------------------------------------------------
    def _project_images(self, raw: np.ndarray) -> np.ndarray:
        heads = self.heads
        return heads.project_clip(raw) if heads is not None else np.asarray(raw, dtype=np.float32)

    def _project_texts(self, raw: np.ndarray) -> np.ndarray:
        heads = self.heads
        if heads is not None:
            return heads.project_text(raw)
        # Without heads caption vectors cannot meet images; index them raw (searches answer 503).
        return np.asarray(raw, dtype=np.float32)

    def _pointer_stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(uclip_dir(self.data_dir) / POINTER_NAME)
            return (st.st_mtime_ns, st.st_size)
        except OSError:
            return None

    def maybe_reload(self) -> None:
        """Swap to the checkpoint named by the pointer file if it changed (cheap; throttled)."""
        now = time.monotonic()
        if now - self._pointer_checked < _POINTER_CHECK_S:
            return
        self._pointer_checked = now
        stat = self._pointer_stat()
        if stat is None or stat == self._pointer_seen:
            return
        self._pointer_seen = stat
        target = read_pointer(self.data_dir)
        if target is None:
            return
        try:
            self.activate(target, write=False)
        except (CheckpointError, InvalidInput) as exc:
            log.warning("new uCLIP heads rejected", extra={"checkpoint": str(target), "reason": str(exc)})

    def check_heads(self, heads: UclipHeads) -> None:
        """Heads must fit the served encoders (dimensions; text encoder name when recorded)."""
        c = heads.config
        if c.clip_dim != self.clip_dim or c.text_dim != self.text_dim:
            raise InvalidInput(
                f"heads expect CLIP {c.clip_dim}-d and text {c.text_dim}-d inputs; the served encoders give "
                f"{self.clip_dim}-d and {self.text_dim}-d",
                detail={"heads": {"clip_dim": c.clip_dim, "text_dim": c.text_dim},
                        "served": {"clip_dim": self.clip_dim, "text_dim": self.text_dim}})
        trained_with = heads.meta.get("text_encoder")
        served = getattr(self.text_encoder, "name", None)
        if trained_with and served and trained_with != served:
            raise InvalidInput(f"heads were trained with text encoder {trained_with!r}; this service runs {served!r}",
                               detail={"trained_with": trained_with, "served": served})

    def activate(self, checkpoint: Path, *, write: bool = True) -> dict[str, Any]:
        """Load ``checkpoint``, re-project every collection, and (``write``) make it the active pointer."""
        heads = load_heads(checkpoint)
        self.check_heads(heads)
        with self._heads_lock:
            previous = self.heads
            self.heads = heads
            try:
                with stage_timer("uclip_reindex"):
                    self.galleries.reindex(self._project_images)
                    self.captions.reindex(self._project_texts)
            except BaseException:
                self.heads = previous
                self.galleries.reindex(self._project_images)
                self.captions.reindex(self._project_texts)
                raise
            self.heads_info = {"active": True, "checkpoint": str(Path(checkpoint).resolve()),
                               "parameters": heads.n_parameters(), "config": heads.meta.get("train_config", {}).get("heads"),
                               "trained": {k: heads.meta.get(k) for k in ("n_queries", "n_images", "n_texts", "final", "saved_at")},
                               "activated_at": time.time()}
        if write:
            write_pointer(self.data_dir, checkpoint)
            self._pointer_seen = self._pointer_stat()
        log.info("uCLIP heads active", extra={"checkpoint": str(checkpoint)})
        return self.heads_info

    def activate_path(self, checkpoint: str) -> dict[str, Any]:
        """:meth:`activate` for a user-given path or bare checkpoint name (404 missing, 422 unreadable)."""
        path = Path(checkpoint)
        if not path.is_absolute() and not path.exists():
            path = uclip_dir(self.data_dir) / checkpoint
        if not path.is_file():
            raise NotFound(f"no heads checkpoint {checkpoint!r}", detail={"checkpoint": checkpoint})
        try:
            return self.activate(path)
        except CheckpointError as exc:
            raise InvalidInput(str(exc), detail={"field": "checkpoint"}) from exc

    def require_heads(self) -> UclipHeads:
        self.maybe_reload()
        heads = self.heads
        if heads is None:
            raise Unavailable("no uCLIP heads are active: train them (POST /v1/uclip/trainings) or configure "
                              f"uclip_checkpoint ({self.heads_info.get('reason')})",
                              detail={"component": "uclip_heads", "reason": self.heads_info.get("reason")})
        return heads

    # ---- languages ---------------------------------------------------------------------------
    @property
    def languages(self) -> list[str] | None:
        return encoder_languages(self.text_encoder)

    def check_language(self, lang: str | None) -> None:
        if lang is None:
            return
        supported = self.languages
        if supported is not None and lang not in supported:
            raise InvalidInput(f"language {lang!r} is not supported by text encoder "
                               f"{getattr(self.text_encoder, 'name', '?')}; supported: {', '.join(supported)}",
                               code="unsupported_language", detail={"field": "lang", "language": lang, "supported": supported})

    # ---- encoding ----------------------------------------------------------------------------
    def decode(self, data: bytes, filename: str = "", content_type: str | None = None) -> DecodedImage:
        return decode_image(data, filename=filename, content_type=content_type, max_bytes=self.max_upload_bytes)

    def encode_images(self, images: list[DecodedImage]) -> np.ndarray:
        with stage_timer("clip_encode_images"):
            return np.asarray(self.clip.encode_images([d.image for d in images]), dtype=np.float32)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        with stage_timer("text_encode"):
            return np.asarray(self.text_encoder.encode(list(texts)), dtype=np.float32)

    def native(self, lang: str | None) -> bool:
        """No uCLIP heads are active and the CLIP's own text tower speaks ``lang``: queries go through the CLIP
        itself (a compact CLIP with a multilingual tower speaks every language; open_clip ones their own)."""
        if self.heads is not None:
            return False
        if lang is None:  # no language named: fine for a multilingual tower, not for a one-language CLIP
            return "*" in self.clip_languages or len(self.clip_languages) > 1
        return "*" in self.clip_languages or lang in self.clip_languages

    def text_queries(self, texts: list[str], lang: str | None) -> np.ndarray:
        """Texts in any supported language -> f_M rows in the shared space (the CLIP's own rows when native)."""
        self.check_language(lang)
        self.maybe_reload()
        if self.native(lang):
            with stage_timer("clip_encode_texts"):
                return np.asarray(self.clip.encode_text(list(texts)), dtype=np.float32)
        heads = self.require_heads()
        return heads.project_text(self.encode_texts(texts))

    def image_queries(self, images: list[DecodedImage]) -> np.ndarray:
        """Images -> f_C rows (raw CLIP rows when no heads are active)."""
        self.maybe_reload()
        heads = self.heads
        raw = self.encode_images(images)
        return heads.project_clip(raw) if heads is not None else raw

    # ---- galleries ---------------------------------------------------------------------------
    def create_gallery(self, name: str | None = None, gallery_id: str | None = None) -> dict[str, Any]:
        return self.galleries.create(raw_dim=self.clip_dim, encoder=getattr(self.clip, "identity", None),
                                     name=name, collection_id=gallery_id).describe()

    def add_images(self, gallery_id: str, uploads: list[tuple[str, str | None, bytes]]) -> dict[str, Any]:
        """Decode, embed and commit a batch; all-or-nothing (any bad file rejects the batch)."""
        gallery = self.galleries.get(gallery_id)
        self._check_encoder(gallery)
        if not uploads:
            raise InvalidInput("no images in the upload", detail={"field": "files"})
        if len(uploads) > self.max_batch_images:
            raise PayloadTooLarge(f"{len(uploads)} images in one batch; the limit is {self.max_batch_images}",
                                  detail={"count": len(uploads), "max": self.max_batch_images})
        self.maybe_reload()
        decoded = [self.decode(data, name, ctype) for name, ctype, data in uploads]
        fresh = [d for d in decoded if gallery.find_hash(d.sha256) is None]
        t0 = time.perf_counter()
        raw = self.encode_images(fresh) if fresh else np.zeros((0, self.clip_dim), np.float32)
        encode_s = time.perf_counter() - t0
        already = [{"filename": d.filename, "duplicate_of": gallery.find_hash(d.sha256), "hash": d.sha256}
                   for d in decoded if gallery.find_hash(d.sha256) is not None]
        items = [{"hash": d.sha256, "filename": d.filename, "width": d.width, "height": d.height,
                  "size_bytes": d.size_bytes} for d in fresh]
        t1 = time.perf_counter()
        added, dups = gallery.add(raw, items) if items else ([], [])
        dups = [{"filename": d["filename"], "duplicate_of": d["duplicate_of"], "hash": d["hash"]} for d in dups]
        return {"gallery": gallery_id, "added": added, "duplicates": already + dups, "count": len(gallery),
                "timings": {"encode_s": round(encode_s, 4), "index_s": round(time.perf_counter() - t1, 4)}}

    def search_gallery_text(self, gallery_id: str, query: str, lang: str | None, k: int) -> dict[str, Any]:
        gallery = self.galleries.get(gallery_id)
        self._check_encoder(gallery)
        q = self.text_queries([query], lang)
        with stage_timer("gallery_search"):
            hits = gallery.search(q, k)[0]
        return {"gallery": gallery_id, "query": query, "lang": lang, "results": [h.as_dict() for h in hits]}

    def search_gallery_image(self, gallery_id: str, image: DecodedImage, k: int) -> dict[str, Any]:
        gallery = self.galleries.get(gallery_id)
        self._check_encoder(gallery)
        q = self.image_queries([image])
        with stage_timer("gallery_search"):
            hits = gallery.search(q, k)[0]
        return {"gallery": gallery_id, "query_hash": image.sha256, "results": [h.as_dict() for h in hits]}

    def _check_encoder(self, coll) -> None:
        want = coll.manifest.get("encoder")
        have = getattr(self.clip if coll.kind == "images" else self.text_encoder, "identity", None)
        if coll.kind == "texts":
            have = getattr(self.text_encoder, "name", None)
        if want and have and want != have:
            raise InvalidInput(f"collection {coll.id!r} was built with encoder {want}; this service runs {have}",
                               code="encoder_mismatch", detail={"built_with": want, "served": have})

    # ---- captions ------------------------------------------------------------------------------
    def create_captions(self, name: str | None = None, collection_id: str | None = None) -> dict[str, Any]:
        return self.captions.create(raw_dim=self.text_dim, encoder=getattr(self.text_encoder, "name", None),
                                    name=name, collection_id=collection_id).describe()

    def add_texts(self, collection_id: str, texts: list[dict[str, Any]]) -> dict[str, Any]:
        coll = self.captions.get(collection_id)
        self._check_encoder(coll)
        if not texts:
            raise InvalidInput("no texts given", detail={"field": "texts"})
        if len(texts) > self.max_batch_texts:
            raise PayloadTooLarge(f"{len(texts)} texts in one batch; the limit is {self.max_batch_texts}",
                                  detail={"count": len(texts), "max": self.max_batch_texts})
        for t in texts:
            self.check_language(t.get("lang"))
        raw = self.encode_texts([t["text"] for t in texts])
        items = [{"hash": content_hash(f"{t.get('lang') or ''}\x00{t['text']}".encode()), "text": t["text"],
                  "lang": t.get("lang")} for t in texts]
        added, dups = coll.add(raw, items)
        dups = [{"text": d["text"], "lang": d["lang"], "duplicate_of": d["duplicate_of"], "hash": d["hash"]} for d in dups]
        return {"collection": collection_id, "added": added, "duplicates": dups, "count": len(coll)}

    def delete_text(self, collection_id: str, text_id: int) -> dict[str, Any]:
        """Remove one caption text (tombstoned on disk, gone from the index); 404 when unknown."""
        return self.captions.get(collection_id).delete(text_id)

    def search_captions_image(self, collection_id: str, image: DecodedImage, k: int,
                              lang: str | None = None) -> dict[str, Any]:
        coll = self.captions.get(collection_id)
        self._check_encoder(coll)
        self.check_language(lang)
        heads = self.require_heads()
        q = heads.project_clip(self.encode_images([image]))
        # Filtering by language happens after retrieval: over-fetch so k survive the filter.
        fetch = k if lang is None else min(len(coll), max(k * 10, 100))
        with stage_timer("captions_search"):
            hits = coll.search(q, fetch)[0]
        if lang is not None:
            hits = [h for h in hits if h.item.get("lang") == lang][:k]
        return {"collection": collection_id, "query_hash": image.sha256, "results": [h.as_dict() for h in hits]}

    # ---- zero-shot classification ----------------------------------------------------------
    def classify(self, image: DecodedImage, labels: list[str], lang: str | None,
                 templates: list[str] | None = None) -> dict[str, Any]:
        """Scores of ``labels`` (any supported language) for one image (methods.md, uCLIP inference)."""
        if not labels:
            raise InvalidInput("give at least one candidate label", detail={"field": "labels"})
        if templates is not None and (not templates or any("{}" not in t for t in templates)):
            raise InvalidInput("each template must contain '{}'", detail={"field": "templates"})
        self.check_language(lang)
        self.maybe_reload()
        heads = self.heads
        templates = templates or ["{}"]
        prompts = [t.format(label) for t in templates for label in labels]
        if heads is not None:
            img = heads.project_clip(self.encode_images([image]))
            txt = heads.project_text(self.encode_texts(prompts))
            scale = 1.0 / float(heads.meta.get("train_config", {}).get("loss_temperature", 0.05))
            mode = "uclip"
        elif self.native(lang):
            img = self.encode_images([image])
            txt = np.asarray(self.clip.encode_text(prompts), dtype=np.float32)
            scale, mode = 100.0, "clip"
        else:
            self.require_heads()  # raises 503 naming the missing heads
            raise AssertionError("unreachable")
        txt = txt.reshape(len(templates), len(labels), -1).mean(0)
        txt /= np.maximum(np.linalg.norm(txt, axis=1, keepdims=True), 1e-12)
        cos = (img @ txt.T)[0]
        logits = cos * scale
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        order = np.argsort(-cos)
        return {"mode": mode, "lang": lang,
                "results": [{"label": labels[i], "score": float(cos[i]), "probability": float(probs[i])} for i in order]}

    # ---- status ------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {
            "clip": getattr(self.clip, "label", getattr(self.clip, "identity", type(self.clip).__name__)),
            "clip_dim": self.clip_dim,
            "text_encoder": getattr(self.text_encoder, "name", type(self.text_encoder).__name__),
            "text_dim": self.text_dim,
            "languages": self.languages,
            "heads": self.heads_info,
            "galleries": len(self.galleries),
            "caption_collections": len(self.captions),
            "load_errors": {**self.galleries.load_errors, **self.captions.load_errors},
        }
