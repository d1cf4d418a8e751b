"""Sentence collections (translation memories) on disk: one language each, crash-consistent, re-embeddable.

On disk (``<root>/<id>/``): ``manifest.json`` (the commit point: id, name, language, segment list, deleted
ids), ``segments/seg-NNNNNN.json`` (the ids, texts and hashes of one added batch) and
``emb/<model key>/seg-NNNNNN.npy`` (that batch's embeddings by one sentence model). Texts are what is
persisted; embeddings are a cache of one model's view of them, so a new model (a trained Globetrotter
checkpoint) re-embeds from the texts, segment by segment, and the old model's files are dropped once the
new index is installed. A batch commits by writing its segment and embeddings, then replacing the
manifest atomically; a crash before that leaves the previous state (orphans are removed on the next open).

The index (:class:`EmbeddingIndex`) is an exact inner-product FAISS index (float32 or float16 storage)
over the live rows, by sentence id; it names the model key it was built for, so a query embedded by one
model is never searched against another model's vectors.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
import unicodedata
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np

from services.errors import Conflict, InvalidInput, NotFound

FORMAT = "vislex-sentences"
FORMAT_VERSION = 1
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
STORAGE_DTYPES = ("float32", "float16")
Encoder = Callable[[list[str]], np.ndarray]


def normalise(text: str) -> str:
    """NFC, surrounding blanks stripped: the form stored, deduplicated and embedded."""
    return unicodedata.normalize("NFC", text).strip()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, dtype=np.float32))
    return buf.getvalue()


class EmbeddingIndex:
    """Exact inner-product search over unit rows by id (FAISS flat; float16 storage halves memory and scan)."""

    def __init__(self, key: str, dim: int, storage_dtype: str = "float32"):
        import faiss

        if storage_dtype not in STORAGE_DTYPES:
            raise InvalidInput(f"storage dtype must be one of {STORAGE_DTYPES}", detail={"field": "storage_dtype"})
        self.key, self.dim, self.storage_dtype = key, int(dim), storage_dtype
        inner = (faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
                 if storage_dtype == "float16" else faiss.IndexFlatIP(self.dim))
        self._inner = inner  # IndexIDMap2 does not own it: keep it alive
        self.index = faiss.IndexIDMap2(inner)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> None:
        import faiss

        self.index.remove_ids(faiss.IDSelectorBatch(np.asarray(ids, dtype=np.int64)))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if len(self) == 0 or k < 1:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        # One OpenMP thread for small batches: thread start-up costs more than a single query's scan gains.
        faiss.omp_set_num_threads(1 if len(queries) < 32 else max(1, os.cpu_count() or 1))
        return self.index.search(queries, min(int(k), len(self)))


class SentenceCollection:
    """One collection: texts by id in one language, and the index of the active model's embeddings."""

    def __init__(self, directory: Path, manifest: dict[str, Any]):
        self.dir = directory
        self.manifest = manifest
        self.lock = threading.RLock()
        self.texts: dict[int, str] = {}
        self.hashes: dict[str, int] = {}
        self.added_at: dict[int, float] = {}
        self.index: EmbeddingIndex | None = None

    # ---- metadata ------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.manifest["id"]

    @property
    def lang(self) -> str:
        return self.manifest["lang"]

    def __len__(self) -> int:
        return len(self.texts)

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        return {"id": m["id"], "name": m.get("name"), "lang": m["lang"], "created_at": m["created_at"],
                "count": len(self), "model": self.index.key if self.index is not None else None}

    # ---- persistence -----------------------------------------------------------------------
    @classmethod
    def create(cls, directory: Path, *, collection_id: str, lang: str, name: str | None) -> "SentenceCollection":
        (directory / "segments").mkdir(parents=True, exist_ok=False)
        manifest = {"format": FORMAT, "version": FORMAT_VERSION, "id": collection_id, "lang": lang, "name": name,
                    "created_at": time.time(), "segments": [], "deleted": [], "next_id": 1, "next_segment": 1}
        coll = cls(directory, manifest)
        coll._write_manifest(manifest)
        return coll

    @classmethod
    def open(cls, directory: Path) -> "SentenceCollection":
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
            raise InvalidInput(f"{directory.name} holds no readable sentence collection (format/version mismatch)")
        coll = cls(directory, manifest)
        deleted = set(manifest["deleted"])
        for seg in manifest["segments"]:
            data = coll._segment(seg)
            for sid, text, sha in zip(data["ids"], data["texts"], data["hashes"]):
                if sid not in deleted:
                    coll.texts[sid], coll.hashes[sha], coll.added_at[sid] = text, sid, data["added_at"]
        listed = set(manifest["segments"])
        for orphan in (directory / "segments").glob("seg-*.json"):
            if orphan.name not in listed:  # written by a batch that never committed
                orphan.unlink(missing_ok=True)
        return coll

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write(self.dir / "manifest.json", json.dumps(manifest, ensure_ascii=False).encode())

    def _segment(self, seg: str) -> dict[str, Any]:
        return json.loads((self.dir / "segments" / seg).read_text(encoding="utf-8"))

    def _emb_path(self, key: str, seg: str) -> Path:
        return self.dir / "emb" / key / seg.replace(".json", ".npy")

    # ---- embeddings and index -----------------------------------------------------------------
    def segment_embeddings(self, key: str, encode: Encoder, dim: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) of every committed segment under model ``key``: cached files, else encoded and cached."""
        out = []
        for seg in list(self.manifest["segments"]):
            data = self._segment(seg)
            ids = np.asarray(data["ids"], dtype=np.int64)
            path = self._emb_path(key, seg)
            vectors = None
            if path.is_file():
                try:
                    vectors = np.load(path, allow_pickle=False)
                except (OSError, ValueError):
                    vectors = None
                if vectors is not None and vectors.shape != (len(ids), dim):
                    vectors = None
            if vectors is None:
                vectors = np.asarray(encode(data["texts"]), dtype=np.float32).reshape(len(ids), dim)
                atomic_write(path, _npy_bytes(vectors))
            out.append((ids, vectors))
        return out

    def build_index(self, key: str, encode: Encoder, dim: int, storage_dtype: str) -> EmbeddingIndex:
        """A new index of the live sentences under model ``key`` (the installed one is untouched)."""
        index = EmbeddingIndex(key, dim, storage_dtype)
        deleted = np.asarray(self.manifest["deleted"], dtype=np.int64)
        for ids, vectors in self.segment_embeddings(key, encode, dim):
            live = ~np.isin(ids, deleted)
            index.add(ids[live], vectors[live])
        return index

    def install(self, index: EmbeddingIndex) -> None:
        """Serve ``index``; embedding files of other models are removed."""
        with self.lock:
            self.index = index
        emb = self.dir / "emb"
        if emb.is_dir():
            for other in emb.iterdir():
                if other.name != index.key:
                    shutil.rmtree(other, ignore_errors=True)

    # ---- writes ----------------------------------------------------------------------------
    def split_new(self, texts: list[str]) -> tuple[list[int], list[dict[str, Any]]]:
        """(positions of texts to add, duplicates naming the stored or earlier id) -- texts already normalised."""
        keep, duplicates, seen = [], [], {}
        for i, text in enumerate(texts):
            sha = text_hash(text)
            existing = self.hashes.get(sha, seen.get(sha))
            if existing is not None:
                duplicates.append({"position": i, "text": text, "duplicate_of": existing})
                continue
            seen[sha] = -(i + 1)  # resolved to the id it gets at commit
            keep.append(i)
        return keep, duplicates

    def commit(self, texts: list[str], vectors: np.ndarray, key: str) -> tuple[list[dict[str, Any]], np.ndarray]:
        """Persist one batch (texts, then embeddings under ``key``, then the manifest) and index it."""
        with self.lock:
            manifest = json.loads(json.dumps(self.manifest))
            first = manifest["next_id"]
            ids = np.arange(first, first + len(texts), dtype=np.int64)
            now = time.time()
            hashes = [text_hash(t) for t in texts]
            seg = f"seg-{manifest['next_segment']:06d}.json"
            seg_path = self.dir / "segments" / seg
            atomic_write(seg_path, json.dumps({"ids": ids.tolist(), "texts": texts, "hashes": hashes,
                                               "added_at": now}, ensure_ascii=False).encode())
            emb_path = self._emb_path(key, seg)
            atomic_write(emb_path, _npy_bytes(vectors))
            manifest["segments"].append(seg)
            manifest["next_id"] = first + len(texts)
            manifest["next_segment"] += 1
            try:
                self._write_manifest(manifest)  # the commit point
            except BaseException:
                seg_path.unlink(missing_ok=True)
                emb_path.unlink(missing_ok=True)
                raise
            self.manifest = manifest
            for sid, text, sha in zip(ids.tolist(), texts, hashes):
                self.texts[sid], self.hashes[sha], self.added_at[sid] = text, sid, now
            if self.index is not None and self.index.key == key:
                self.index.add(ids, vectors)
            return [{"id": int(sid), "text": t} for sid, t in zip(ids, texts)], ids

    def delete(self, sentence_id: int) -> None:
        with self.lock:
            sid = int(sentence_id)
            if sid not in self.texts:
                raise NotFound(f"sentence {sid} is not in collection {self.id!r}",
                               code="sentence_not_found", detail={"collection": self.id, "id": sid})
            manifest = json.loads(json.dumps(self.manifest))
            manifest["deleted"].append(sid)
            self._write_manifest(manifest)
            self.manifest = manifest
            self.hashes.pop(text_hash(self.texts.pop(sid)), None)
            self.added_at.pop(sid, None)
            if self.index is not None:
                self.index.remove(np.array([sid], dtype=np.int64))

    # ---- reads -----------------------------------------------------------------------------
    def items(self, offset: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        ids = sorted(self.texts)[offset:offset + limit]
        return [{"id": i, "text": self.texts[i], "added_at": self.added_at.get(i)} for i in ids]


class SentenceStore:
    """All collections under ``root``: opened at start, created, deleted (one rename: atomic)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.collections: dict[str, SentenceCollection] = {}
        self.load_errors: dict[str, str] = {}
        for trash in self.root.glob(".trash-*"):
            shutil.rmtree(trash, ignore_errors=True)
        for directory in sorted(self.root.iterdir()):
            if directory.is_dir() and (directory / "manifest.json").is_file():
                try:
                    self.collections[directory.name] = SentenceCollection.open(directory)
                except Exception as exc:  # one broken collection must not take the others down
                    self.load_errors[directory.name] = f"{type(exc).__name__}: {exc}"

    def list(self) -> list[SentenceCollection]:
        return sorted(self.collections.values(), key=lambda c: c.manifest["created_at"])

    def get(self, cid: str) -> SentenceCollection:
        coll = self.collections.get(cid)
        if coll is None:
            raise NotFound(f"no sentence collection {cid!r}", code="collection_not_found",
                           detail={"collection": cid, "known": sorted(self.collections)[:50]})
        return coll

    def create(self, *, lang: str, name: str | None = None, collection_id: str | None = None) -> SentenceCollection:
        cid = collection_id or uuid.uuid4().hex[:16]
        if not ID_RE.match(cid):
            raise InvalidInput("collection id must be 1-64 characters of A-Z a-z 0-9 _ -", detail={"field": "id"})
        with self._lock:
            if cid in self.collections or (self.root / cid).exists():
                raise Conflict(f"sentence collection {cid!r} already exists", detail={"id": cid})
            coll = SentenceCollection.create(self.root / cid, collection_id=cid, lang=lang, name=name)
            self.collections[cid] = coll
            return coll

    def delete(self, cid: str) -> None:
        with self._lock:
            coll = self.get(cid)
            trash = self.root / f".trash-{cid}-{uuid.uuid4().hex[:6]}"
            os.replace(coll.dir, trash)
            del self.collections[cid]
        shutil.rmtree(trash, ignore_errors=True)
