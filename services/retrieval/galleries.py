"""Galleries (images) and caption collections (texts): FAISS-indexed, persisted, crash-consistent.

methods.md, uCLIP inference: an image is stored as its raw CLIP image embedding and indexed
as f_C(embedding); a caption as its raw multilingual embedding, indexed as f_M(embedding).
Raw vectors are what is persisted, so a new heads checkpoint only needs a re-projection
(:meth:`Collection.reindex`), never a re-encode.

On disk (``<root>/<id>/``): ``manifest.json`` (the commit point: metadata, the list of
segment files, deleted ids) and ``segments/seg-NNNNNN.npz`` (raw vectors, ids and item
metadata of one upload batch). A batch is committed by writing its segment, then replacing
the manifest atomically; a crash or error before the manifest swap leaves the previous
state intact (an orphan segment is ignored and removed on the next load). The in-memory
index is only touched after the commit succeeded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import faiss
import numpy as np

from services.errors import Conflict, InvalidInput, NotFound

MANIFEST_FORMAT = "vislex-collection"
MANIFEST_VERSION = 1
KINDS = ("images", "texts")
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

Projector = Callable[[np.ndarray], np.ndarray]


def _atomic_write_bytes(path: Path, data: bytes) -> None:
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


def _identity(x: np.ndarray) -> np.ndarray:
    return x


@dataclass
class SearchHit:
    id: int
    score: float
    item: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, **{k: v for k, v in self.item.items() if k != "id"}}


class Collection:
    """One gallery (kind 'images') or caption collection (kind 'texts')."""

    def __init__(self, directory: Path, manifest: dict[str, Any], project: Projector = _identity):
        self.dir = directory
        self.manifest = manifest
        self._project = project
        self._lock = threading.RLock()
        self._raw = np.zeros((0, manifest["raw_dim"]), dtype=np.float32)
        self._ids = np.zeros(0, dtype=np.int64)
        self._items: dict[int, dict[str, Any]] = {}
        self._by_hash: dict[str, int] = {}
        self._index: faiss.IndexIDMap2 | None = None

    # ---- properties --------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.manifest["id"]

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def raw_dim(self) -> int:
        return int(self.manifest["raw_dim"])

    def __len__(self) -> int:
        return len(self._items)

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        return {"id": m["id"], "name": m.get("name"), "kind": m["kind"], "created_at": m["created_at"],
                "count": len(self), "encoder": m.get("encoder"), "raw_dim": m["raw_dim"]}

    # ---- persistence -------------------------------------------------------------------
    @classmethod
    def create(cls, directory: Path, *, collection_id: str, kind: str, name: str | None, raw_dim: int,
               encoder: str | None, project: Projector = _identity) -> "Collection":
        (directory / "segments").mkdir(parents=True, exist_ok=False)
        manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "id": collection_id, "kind": kind,
                    "name": name, "created_at": time.time(), "raw_dim": int(raw_dim), "encoder": encoder,
                    "segments": [], "deleted": [], "next_id": 1, "next_segment": 1}
        coll = cls(directory, manifest, project)
        coll._write_manifest(manifest)
        coll._rebuild_index()
        return coll

    @classmethod
    def open(cls, directory: Path, project: Projector = _identity) -> "Collection":
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        if manifest.get("format") != MANIFEST_FORMAT or manifest.get("version") != MANIFEST_VERSION:
            raise InvalidInput(f"{directory} holds no readable collection manifest (format/version mismatch)")
        coll = cls(directory, manifest, project)
        deleted = set(manifest["deleted"])
        raws, ids = [], []
        for seg in manifest["segments"]:
            with np.load(directory / "segments" / seg, allow_pickle=False) as z:
                seg_ids, seg_raw, seg_items = z["ids"], z["raw"], json.loads(str(z["items"]))
            keep = ~np.isin(seg_ids, list(deleted)) if deleted else np.ones(len(seg_ids), bool)
            raws.append(seg_raw[keep])
            ids.append(seg_ids[keep])
            for item, kept in zip(seg_items, keep):
                if kept:
                    coll._items[item["id"]] = item
                    coll._by_hash[item["hash"]] = item["id"]
        if raws:
            coll._raw = np.ascontiguousarray(np.concatenate(raws), dtype=np.float32)
            coll._ids = np.concatenate(ids).astype(np.int64)
        listed = set(manifest["segments"])
        for orphan in (directory / "segments").glob("seg-*.npz"):
            if orphan.name not in listed:  # written by a batch that never committed
                orphan.unlink(missing_ok=True)
        coll._rebuild_index()
        return coll

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        _atomic_write_bytes(self.dir / "manifest.json", json.dumps(manifest, ensure_ascii=False).encode())

    # ---- index ---------------------------------------------------------------------------
    def _rebuild_index(self) -> None:
        projected = self._project(self._raw) if len(self._raw) else None
        dim = projected.shape[1] if projected is not None else int(self._project(np.zeros((1, self.raw_dim), np.float32)).shape[1])
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if projected is not None:
            index.add_with_ids(np.ascontiguousarray(projected, dtype=np.float32), self._ids)
        self._index = index

    def reindex(self, project: Projector) -> None:
        """Re-project every stored raw vector with new heads (no re-encoding) and swap the index."""
        with self._lock:
            old = self._project
            self._project = project
            try:
                self._rebuild_index()
            except BaseException:
                self._project = old
                raise

    @property
    def dim(self) -> int:
        return self._index.d

    # ---- writes --------------------------------------------------------------------------
    def find_hash(self, sha: str) -> int | None:
        return self._by_hash.get(sha)

    def add(self, raw: np.ndarray, items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Commit one batch (vectors + metadata atomically, then the index); returns (added, duplicates).

        Each item needs a ``hash``; items whose hash is already stored (or repeated in the batch)
        are not added and come back as duplicates naming the existing id.
        """
        raw = np.asarray(raw, dtype=np.float32)
        if raw.ndim != 2 or raw.shape != (len(items), self.raw_dim):
            raise InvalidInput(f"expected {len(items)}x{self.raw_dim} vectors, got {raw.shape}")
        with self._lock:
            duplicates, keep, seen = [], [], {}
            for i, item in enumerate(items):
                existing = self._by_hash.get(item["hash"], seen.get(item["hash"]))
                if existing is not None:
                    duplicates.append({**{k: v for k, v in item.items() if k != "hash"}, "duplicate_of": existing,
                                       "hash": item["hash"]})
                    continue
                seen[item["hash"]] = -1
                keep.append(i)
            if not keep:
                return [], duplicates
            manifest = json.loads(json.dumps(self.manifest))
            first = manifest["next_id"]
            ids = np.arange(first, first + len(keep), dtype=np.int64)
            now = time.time()
            added = [{**items[i], "id": int(ids[j]), "added_at": now} for j, i in enumerate(keep)]
            for dup in duplicates:  # duplicates inside the batch point at the id their twin just got
                if dup["duplicate_of"] == -1:
                    dup["duplicate_of"] = next(a["id"] for a in added if a["hash"] == dup["hash"])
            batch_raw = np.ascontiguousarray(raw[keep])
            projected = np.ascontiguousarray(self._project(batch_raw), dtype=np.float32)
            seg = f"seg-{manifest['next_segment']:06d}.npz"
            seg_path = self.dir / "segments" / seg
            buf = _npz_bytes(ids=ids, raw=batch_raw, items=np.array(json.dumps(added, ensure_ascii=False)))
            _atomic_write_bytes(seg_path, buf)
            manifest["segments"].append(seg)
            manifest["next_id"] = first + len(keep)
            manifest["next_segment"] += 1
            try:
                self._write_manifest(manifest)  # the commit point
            except BaseException:
                seg_path.unlink(missing_ok=True)
                raise
            self.manifest = manifest
            self._raw = np.concatenate([self._raw, batch_raw]) if len(self._raw) else batch_raw
            self._ids = np.concatenate([self._ids, ids])
            for item in added:
                self._items[item["id"]] = item
                self._by_hash[item["hash"]] = item["id"]
            self._index.add_with_ids(projected, ids)
            return added, duplicates

    def delete(self, item_id: int) -> dict[str, Any]:
        """Remove one item (tombstone in the manifest, then out of the index)."""
        with self._lock:
            item = self._items.get(int(item_id))
            if item is None:
                raise NotFound(f"{self.kind[:-1]} {item_id} is not in collection {self.id!r}",
                               detail={"collection": self.id, "id": int(item_id)})
            manifest = json.loads(json.dumps(self.manifest))
            manifest["deleted"].append(int(item_id))
            self._write_manifest(manifest)
            self.manifest = manifest
            keep = self._ids != int(item_id)
            self._raw, self._ids = self._raw[keep], self._ids[keep]
            del self._items[int(item_id)]
            self._by_hash.pop(item["hash"], None)
            self._index.remove_ids(np.array([int(item_id)], dtype=np.int64))
            if len(manifest["deleted"]) > 256 and len(manifest["deleted"]) > len(self._items):
                self.compact()
            return item

    def compact(self) -> None:
        """Rewrite all live items as one segment and clear the tombstones (atomic via the manifest)."""
        with self._lock:
            manifest = json.loads(json.dumps(self.manifest))
            seg = f"seg-{manifest['next_segment']:06d}.npz"
            items = [self._items[int(i)] for i in self._ids]
            _atomic_write_bytes(self.dir / "segments" / seg,
                                _npz_bytes(ids=self._ids, raw=self._raw, items=np.array(json.dumps(items, ensure_ascii=False))))
            old = manifest["segments"]
            manifest.update(segments=[seg], deleted=[], next_segment=manifest["next_segment"] + 1)
            self._write_manifest(manifest)
            self.manifest = manifest
            for name in old:
                (self.dir / "segments" / name).unlink(missing_ok=True)

    # ---- reads ---------------------------------------------------------------------------
    def get(self, item_id: int) -> dict[str, Any]:
        item = self._items.get(int(item_id))
        if item is None:
            raise NotFound(f"{self.kind[:-1]} {item_id} is not in collection {self.id!r}",
                           detail={"collection": self.id, "id": int(item_id)})
        return item

    def items(self, offset: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        ids = sorted(self._items)[offset:offset + limit]
        return [self._items[i] for i in ids]

    def search(self, queries: np.ndarray, k: int) -> list[list[SearchHit]]:
        """Top-k by inner product of already-projected unit query rows."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise InvalidInput(f"query has {queries.shape[1]} dims; collection {self.id!r} is indexed at {self.dim}")
        with self._lock:
            k_eff = min(int(k), len(self._items))
            if k_eff == 0:
                return [[] for _ in range(len(queries))]
            scores, ids = self._index.search(queries, k_eff)
            return [[SearchHit(int(i), float(s), self._items[int(i)]) for s, i in zip(srow, irow) if i >= 0]
                    for srow, irow in zip(scores, ids)]


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


class CollectionStore:
    """All collections of one kind under ``root``: create, open at startup, delete."""

    def __init__(self, root: Path, kind: str, project: Projector = _identity):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        self.root = Path(root)
        self.kind = kind
        self._project = project
        self._lock = threading.Lock()
        self._collections: dict[str, Collection] = {}
        self.load_errors: dict[str, str] = {}
        self.root.mkdir(parents=True, exist_ok=True)
        for trash in self.root.glob(".trash-*"):
            shutil.rmtree(trash, ignore_errors=True)
        for directory in sorted(self.root.iterdir()):
            if directory.is_dir() and (directory / "manifest.json").is_file():
                try:
                    self._collections[directory.name] = Collection.open(directory, project)
                except Exception as exc:  # one broken collection must not take the others down
                    self.load_errors[directory.name] = f"{type(exc).__name__}: {exc}"

    def __len__(self) -> int:
        return len(self._collections)

    def list(self) -> list[dict[str, Any]]:
        return [c.describe() for c in sorted(self._collections.values(), key=lambda c: c.manifest["created_at"])]

    def create(self, *, raw_dim: int, encoder: str | None, name: str | None = None,
               collection_id: str | None = None) -> Collection:
        cid = collection_id or uuid.uuid4().hex[:16]
        if not _ID_RE.match(cid):
            raise InvalidInput("collection id must be 1-64 characters of A-Z a-z 0-9 _ -", detail={"field": "id"})
        with self._lock:
            if cid in self._collections or (self.root / cid).exists():
                raise Conflict(f"{self.kind} collection {cid!r} already exists", detail={"id": cid})
            coll = Collection.create(self.root / cid, collection_id=cid, kind=self.kind, name=name,
                                     raw_dim=raw_dim, encoder=encoder, project=self._project)
            self._collections[cid] = coll
            return coll

    def get(self, cid: str) -> Collection:
        coll = self._collections.get(cid)
        if coll is None:
            label = "gallery" if self.kind == "images" else "caption collection"
            raise NotFound(f"no {label} {cid!r}", detail={"id": cid, "kind": self.kind})
        return coll

    def delete(self, cid: str) -> None:
        with self._lock:
            coll = self.get(cid)
            trash = self.root / f".trash-{cid}-{uuid.uuid4().hex[:6]}"
            os.replace(coll.dir, trash)  # one rename: the collection is gone atomically
            del self._collections[cid]
        shutil.rmtree(trash, ignore_errors=True)

    def reindex(self, project: Projector) -> None:
        """Re-project every collection with new heads."""
        self._project = project
        for coll in list(self._collections.values()):
            coll.reindex(project)
