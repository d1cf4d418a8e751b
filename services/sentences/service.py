"""The sentence service: translation memories per language and sentence translation by retrieval.

Methods.md, Globetrotter: "Sentence translation by retrieval: embed a query sentence and rank candidate
sentences of the other language by cosine." A query in ``src`` is embedded by the active sentence model
and searched, exactly, among the sentences of a collection in ``tgt``.

The active model is an encoder (the default) or a trained Globetrotter checkpoint. It is swapped without a
restart: :meth:`SentenceService.activate` (or a new ``<data dir>/sentences/model.json`` pointer, written by a
training job and noticed within a second) loads the model, re-embeds every collection from its stored texts
in the background (queries keep using the old model and indexes meanwhile), then installs the new indexes
and model together under one lock. Adds that land during the swap are embedded in the final pass.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from services.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from services.sentences.models import (
    ModelSpec,
    SentenceModel,
    check_language,
    load_sentence_model,
    resolve_model,
)
from services.sentences.store import EmbeddingIndex, SentenceCollection, SentenceStore, atomic_write, normalise

log = logging.getLogger(__name__)

POINTER_NAME = "model.json"
_POINTER_CHECK_S = 1.0
ModelLoader = Callable[[ModelSpec], SentenceModel]


def sentences_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "sentences"


def write_pointer(data_dir: Path, spec: ModelSpec) -> Path:
    """Make ``spec`` the active sentence model of every service on this data dir (atomic replace)."""
    path = sentences_dir(data_dir) / POINTER_NAME
    atomic_write(path, json.dumps({**spec.as_dict(), "activated_at": time.time()}).encode())
    return path


def read_pointer(data_dir: Path) -> ModelSpec | None:
    try:
        blob = json.loads((sentences_dir(data_dir) / POINTER_NAME).read_text(encoding="utf-8"))
        return ModelSpec(str(blob["kind"]), str(blob["value"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class SentenceService:
    """Everything /v1/sentences serves from (one per process)."""

    def __init__(self, data_dir: Path, *, model: str | None = None, default_encoder: str = "use-multilingual",
                 loader: ModelLoader | None = None, max_batch: int = 256, max_chars: int = 2000,
                 max_add: int = 10000, storage_dtype: str = "float16"):
        self.data_dir = Path(data_dir)
        self.root = sentences_dir(self.data_dir)
        self.max_batch, self.max_chars, self.max_add = int(max_batch), int(max_chars), int(max_add)
        self.storage_dtype = storage_dtype
        self._loader = loader or load_sentence_model
        self.store = SentenceStore(self.root / "collections")
        self._swap_lock = threading.RLock()  # installs a model with its indexes; commits happen under it
        self._add_locks: dict[str, threading.Lock] = {}
        self._swap: dict[str, Any] = {"state": "idle"}
        self._swap_thread: threading.Thread | None = None
        self._pointer_checked = 0.0
        spec = resolve_model(model, self.data_dir) if model else (read_pointer(self.data_dir)
                                                                  or resolve_model(default_encoder, self.data_dir))
        self.spec = spec
        self.model: SentenceModel = self._loader(spec)
        for coll in self.store.list():
            coll.install(self._build(coll, self.model))
        self._pointer_seen = self._pointer_stat()

    # ---- model -------------------------------------------------------------------------------
    @staticmethod
    def _embeds(model: SentenceModel, lang: str) -> bool:
        supported = model.supported()
        return supported is None or lang in supported

    def _build(self, coll: SentenceCollection, model: SentenceModel) -> EmbeddingIndex:
        if not self._embeds(model, coll.lang):  # kept on disk; its queries answer 422 until a model embeds it
            return EmbeddingIndex(model.key, model.dim, self.storage_dtype)
        return coll.build_index(model.key, lambda texts: model.encode(texts, coll.lang), model.dim, self.storage_dtype)

    def _pointer_stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.root / POINTER_NAME)
            return (st.st_mtime_ns, st.st_size)
        except OSError:
            return None

    def maybe_reload(self) -> None:
        """Start a swap to the model the pointer file names if it changed (cheap; throttled to once a second)."""
        now = time.monotonic()
        if now - self._pointer_checked < _POINTER_CHECK_S:
            return
        self._pointer_checked = now
        stat = self._pointer_stat()
        if stat is None or stat == self._pointer_seen or self._swap["state"] == "swapping":
            return
        self._pointer_seen = stat
        spec = read_pointer(self.data_dir)
        if spec is None or spec == self.spec:
            return
        try:
            self._start_swap(spec, self._loader(spec))
        except Exception as exc:  # a bad checkpoint must not break serving: keep the current model
            self._swap = {"state": "failed", "target": spec.value, "error": f"{type(exc).__name__}: {exc}"}
            log.warning("sentence model from pointer rejected", extra={"model": spec.value, "reason": str(exc)})

    def activate(self, model: str, *, write: bool = True, wait: bool = False) -> dict[str, Any]:
        """Load ``model`` now (errors are the caller's: 404/422), re-embed every collection in the background
        and swap; ``write`` makes it the data dir's active model (survives restart)."""
        spec = resolve_model(model, self.data_dir)
        if self._swap["state"] == "swapping":
            raise Conflict("a sentence model swap is in progress; retry when it has finished",
                           code="swap_in_progress", detail={"target": self._swap.get("target")})
        loaded = self._loader(spec)
        if write:
            write_pointer(self.data_dir, spec)
            self._pointer_seen = self._pointer_stat()
        self._start_swap(spec, loaded)
        if wait and self._swap_thread is not None:
            self._swap_thread.join()
        return self.describe_model()

    def _start_swap(self, spec: ModelSpec, model: SentenceModel) -> None:
        self._swap = {"state": "swapping", "target": spec.value, "started_at": time.time(),
                      "collections_done": 0, "collections": len(self.store.collections)}
        self._swap_thread = threading.Thread(target=self._run_swap, args=(spec, model), name="vislex-sentence-swap",
                                             daemon=True)
        self._swap_thread.start()

    def _run_swap(self, spec: ModelSpec, model: SentenceModel) -> None:
        started = time.perf_counter()
        try:
            for coll in self.store.list():  # the slow part (encoding), outside the lock; caches per segment
                if self._embeds(model, coll.lang):
                    coll.segment_embeddings(model.key, lambda t, c=coll: model.encode(t, c.lang), model.dim)
                self._swap["collections_done"] += 1
            with self._swap_lock:  # catch up on batches added meanwhile, then install everything at once
                indexes = {c.id: self._build(c, model) for c in self.store.list()}
                for cid, index in indexes.items():
                    self.store.collections[cid].install(index)
                self.model, self.spec = model, spec
            self._swap = {"state": "idle", "last": {"model": spec.value, "key": model.key,
                                                    "seconds": round(time.perf_counter() - started, 3)}}
            log.info("sentence model swapped", extra={"model": spec.value, "key": model.key})
        except Exception as exc:
            self._swap = {"state": "failed", "target": spec.value, "error": f"{type(exc).__name__}: {exc}"}
            log.exception("sentence model swap failed", extra={"model": spec.value})

    def describe_model(self) -> dict[str, Any]:
        return {"active": self.model.describe(), "spec": self.spec.as_dict(), "swap": dict(self._swap),
                "supported_languages": self.model.supported()}

    # ---- collections -----------------------------------------------------------------------------
    def create_collection(self, lang: str, name: str | None = None, collection_id: str | None = None) -> dict[str, Any]:
        with self._swap_lock:
            check_language(self.model, lang, "lang")
            coll = self.store.create(lang=lang, name=name, collection_id=collection_id)
            coll.install(EmbeddingIndex(self.model.key, self.model.dim, self.storage_dtype))
        return coll.describe()

    def _check_texts(self, texts: Sequence[str], limit: int, limit_name: str, field: str) -> list[str]:
        if len(texts) > limit:
            raise PayloadTooLarge(f"{len(texts)} sentences in one request; the limit is {limit}",
                                  detail={"field": field, "count": len(texts), "max": limit, "setting": limit_name})
        out = []
        for i, text in enumerate(texts):
            if len(text) > self.max_chars:
                raise PayloadTooLarge(f"{field}[{i}] has {len(text)} characters; the limit is {self.max_chars}",
                                      detail={"field": f"{field}.{i}", "max_chars": self.max_chars,
                                              "setting": "VISLEX_SENTENCE_MAX_CHARS"})
            norm = normalise(text)
            if not norm:
                raise InvalidInput(f"{field}[{i}] is empty", detail={"field": f"{field}.{i}"})
            out.append(norm)
        return out

    def add_sentences(self, cid: str, texts: Sequence[str]) -> dict[str, Any]:
        """Embed and index a batch (duplicates of stored or earlier sentences are reported, not added)."""
        coll = self.store.get(cid)
        texts = self._check_texts(texts, self.max_add, "VISLEX_SENTENCE_MAX_ADD", "sentences")
        t0 = time.perf_counter()
        with self._add_locks.setdefault(cid, threading.Lock()):
            keep, duplicates = coll.split_new(texts)
            new = [texts[i] for i in keep]
            model = self.model
            vectors = model.encode(new, coll.lang) if new else None
            t_encode = time.perf_counter() - t0
            added: list[dict[str, Any]] = []
            if new:
                with self._swap_lock:
                    if self.model.key != model.key:  # a swap installed meanwhile: embed with the new model
                        model = self.model
                        vectors = model.encode(new, coll.lang)
                    if cid not in self.store.collections:
                        raise NotFound(f"no sentence collection {cid!r}", code="collection_not_found",
                                       detail={"collection": cid})
                    added, ids = coll.commit(new, vectors, model.key)
                id_at = {pos: int(i) for pos, i in zip(keep, ids)}
                for dup in duplicates:  # a repeat inside the batch points at the id its first copy just got
                    if dup["duplicate_of"] < 0:
                        dup["duplicate_of"] = id_at[-dup["duplicate_of"] - 1]
        return {"collection": cid, "added": added, "duplicates": duplicates, "count": len(coll),
                "timings": {"encode_s": round(t_encode, 4), "total_s": round(time.perf_counter() - t0, 4)}}

    def delete_sentence(self, cid: str, sentence_id: int) -> None:
        with self._swap_lock:
            self.store.get(cid).delete(sentence_id)

    def delete_collection(self, cid: str) -> None:
        with self._swap_lock:
            self.store.delete(cid)
        self._add_locks.pop(cid, None)

    # ---- translation ---------------------------------------------------------------------------
    def _target(self, collection: str | None, tgt: str | None) -> SentenceCollection:
        if collection is not None:
            coll = self.store.get(collection)
            if tgt is not None and tgt != coll.lang:
                raise InvalidInput(f"tgt {tgt!r} is not the language of collection {coll.id!r} ({coll.lang})",
                                   detail={"field": "tgt", "collection_lang": coll.lang})
            return coll
        if tgt is None:
            raise InvalidInput("give a collection, or tgt naming a language with one collection",
                               detail={"field": "collection"})
        matches = [c for c in self.store.list() if c.lang == tgt]
        if not matches:
            raise NotFound(f"no sentence collection in {tgt!r}", code="collection_not_found",
                           detail={"field": "tgt", "lang": tgt})
        if len(matches) > 1:
            raise InvalidInput(f"{len(matches)} collections are in {tgt!r}; name one in collection",
                               detail={"field": "collection", "candidates": [c.id for c in matches][:50]})
        return matches[0]

    def translate(self, texts: Sequence[str], src: str, tgt: str | None = None, k: int = 5,
                  collection: str | None = None) -> dict[str, Any]:
        """The ``k`` nearest sentences of the target collection for each text, in input order."""
        self.maybe_reload()
        coll = self._target(collection, tgt)
        queries = self._check_texts(texts, self.max_batch, "VISLEX_SENTENCE_MAX_BATCH", "texts")
        for _attempt in range(2):
            model = self.model
            check_language(model, src, "src")
            check_language(model, coll.lang, "tgt")
            Q = model.encode(queries, src)
            with coll.lock:
                index = coll.index
                if index is None or index.key != model.key:  # a swap landed between encode and search
                    continue
                scores, ids = index.search(Q, k)
                texts_by_id = coll.texts
                results = [{"text": q, "translations": [{"id": int(i), "text": texts_by_id[int(i)], "score": float(s)}
                                                        for s, i in zip(srow, irow) if i >= 0]}
                           for q, srow, irow in zip(queries, scores, ids)]
            return {"src": src, "tgt": coll.lang, "collection": coll.id, "k": int(k), "model": model.name,
                    "model_key": model.key, "results": results}
        raise Conflict("the sentence model changed twice during this request; retry", code="model_swapped")

    def describe(self) -> dict[str, Any]:
        return {"model": self.model.describe(), "swap": dict(self._swap), "collections": len(self.store.collections),
                "sentences": sum(len(c) for c in self.store.collections.values()),
                "load_errors": dict(self.store.load_errors)}
