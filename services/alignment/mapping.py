"""A saved alignment: a pipeline of stages applied to source (and target) vectors (issue 3, contract "mapping.py").

Stages: ``LinearStage`` (x ↦ x W), ``TwoSidedLinearStage`` (x ↦ x Wx, y ↦ y Wz) and ``InstaMapStage`` (methods.md, "InstaMap": per iteration an optional
centred projection of each space, a Kabsch rotation of the source, and the cosine-weighted shift of every
vector by the translation vectors of its K nearest dictionary entries). InstaMap is non-parametric: its
stage stores the dictionary vectors and translation vectors of every iteration, so new source words are
translated exactly as the fitted vocabulary was. One ``.npz`` file, format ``vislex_mapping_format=1``,
written atomically (temp file + ``os.replace``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from services.errors import InvalidInput

__all__ = ["FORMAT_VERSION", "InstaMapIteration", "InstaMapStage", "LinearStage", "Mapping", "TwoSidedLinearStage", "instamap_shift"]

FORMAT_VERSION = 1
_FORMAT_KEY = "vislex_mapping_format"
# Queries per chunk of the K-nearest-dictionary search (bounded memory for any vocabulary).
_SHIFT_CHUNK_ROWS = 8192


def _unit(a: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(a, axis=1, keepdims=True)
    n[n == 0] = 1
    return a / n


def instamap_shift(V: np.ndarray, anchors: np.ndarray, deltas: np.ndarray, K: int, *, clip_negative: bool = False) -> np.ndarray:
    """Σ_k cos(v, a_k) δ_k / Σ_k cos(v, a_k) over the K anchors most cosine-similar to each row v (methods.md, "InstaMap")."""
    from services.alignment.retrieval import nn_topk

    V = np.ascontiguousarray(V, dtype=np.float32)
    K = int(min(K, len(anchors)))
    A = _unit(np.asarray(anchors, np.float32))
    out = np.empty_like(V)
    for start in range(0, len(V), _SHIFT_CHUNK_ROWS):
        chunk = _unit(V[start : start + _SHIFT_CHUNK_ROWS])
        sims, idx = nn_topk(chunk, A, K)
        if clip_negative:
            sims = np.maximum(sims, 0)
        denom = sims.sum(axis=1, keepdims=True)
        # A zero (or sign-cancelling) weight sum would blow the shift up: fall back to the plain mean.
        bad = np.abs(denom[:, 0]) < 1e-6
        sims[bad] = 1.0
        denom[bad] = K
        weights = sims / denom
        out[start : start + len(chunk)] = np.einsum("nk,nkd->nd", weights, deltas[idx])
    return out


@dataclass
class LinearStage:
    """x ↦ x W (targets unchanged)."""

    W: np.ndarray
    kind: str = field(default="linear", init=False)

    def transform_source(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X, np.float32) @ self.W.astype(np.float32)).astype(np.float32)

    def transform_target(self, Y: np.ndarray) -> np.ndarray:
        return np.asarray(Y, np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"W": np.asarray(self.W, np.float64)}

    def meta(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_saved(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> LinearStage:
        return cls(arrays["W"])


@dataclass
class TwoSidedLinearStage:
    """x ↦ unit(x Wx), y ↦ unit(y Wz): a mapping that moves both spaces (multi-step framework, VecMap)."""

    Wx: np.ndarray
    Wz: np.ndarray
    kind: str = field(default="linear2", init=False)

    def transform_source(self, X: np.ndarray) -> np.ndarray:
        # Unit rows: later stages (L1, InstaMap) and retrieval all work on cosines.
        return _unit((np.asarray(X, np.float32) @ self.Wx.astype(np.float32)).astype(np.float32))

    def transform_target(self, Y: np.ndarray) -> np.ndarray:
        return _unit((np.asarray(Y, np.float32) @ self.Wz.astype(np.float32)).astype(np.float32))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"Wx": np.asarray(self.Wx, np.float64), "Wz": np.asarray(self.Wz, np.float64)}

    def meta(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_saved(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> TwoSidedLinearStage:
        return cls(arrays["Wx"], arrays["Wz"])


@dataclass
class InstaMapIteration:
    """One InstaMap iteration: centred projections (or none), rotation, anchors and translation vectors."""

    W_R: np.ndarray  # (d', d') Kabsch rotation of the (projected) source
    src_anchors: np.ndarray  # (p, d') rotated dictionary sources
    tgt_anchors: np.ndarray  # (p, d') dictionary targets
    # (p, d') y_k − x_k. None: computed from the anchors when a shift needs it (a fit keeps only the anchors: at
    # 50k words the four iterations' stored deltas were ~56 MB of vecmap+instamap's peak); saved files hold it.
    deltas: np.ndarray | None = None
    src_mean: np.ndarray | None = None  # PCA centring / projection (authors' code variant)
    src_proj: np.ndarray | None = None
    tgt_mean: np.ndarray | None = None
    tgt_proj: np.ndarray | None = None

    def translations(self) -> np.ndarray:
        """The translation vectors y_k − x_k: the stored ones, else computed (float32, as the fit computes them)."""
        if self.deltas is not None:
            return self.deltas
        return (self.tgt_anchors - self.src_anchors).astype(np.float32)


@dataclass
class InstaMapStage:
    """InstaMap (methods.md, "InstaMap"): x ↦ x W_R + s_src·shift(x), y ↦ y − s_tgt·shift(y), per iteration."""

    iterations: list[InstaMapIteration]
    K: int = 70
    src_step: float = 1.0
    tgt_step: float = 1.0
    renormalize: bool = True
    clip_negative: bool = False
    # "fast": instamap.anchor_shift (same K nearest entries, unique anchors, blocks); "reference": instamap_shift.
    engine: str = "reference"
    kind: str = field(default="instamap", init=False)

    def _shift(self, V: np.ndarray, anchors: np.ndarray, deltas: np.ndarray) -> np.ndarray:
        if self.engine == "fast":
            from services.alignment.instamap import anchor_shift

            return anchor_shift(V, anchors, deltas, self.K, clip_negative=self.clip_negative)
        return instamap_shift(V, anchors, deltas, self.K, clip_negative=self.clip_negative)

    def _project(self, V: np.ndarray, mean: np.ndarray | None, proj: np.ndarray | None) -> np.ndarray:
        if proj is None:
            return V
        return ((V - mean) @ proj).astype(np.float32)

    def source_step(self, X: np.ndarray, it: InstaMapIteration) -> np.ndarray:
        X = self._project(np.asarray(X, np.float32), it.src_mean, it.src_proj)
        X = (X @ it.W_R.astype(np.float32)).astype(np.float32)
        if self.src_step:
            X = X + self.src_step * self._shift(X, it.src_anchors, it.translations())
        return _unit(X) if self.renormalize else X

    def target_step(self, Y: np.ndarray, it: InstaMapIteration) -> np.ndarray:
        Y = self._project(np.asarray(Y, np.float32), it.tgt_mean, it.tgt_proj)
        if self.tgt_step:
            Y = Y - self.tgt_step * self._shift(Y, it.tgt_anchors, it.translations())
        return _unit(Y) if self.renormalize else Y

    def transform_source(self, X: np.ndarray) -> np.ndarray:
        for it in self.iterations:
            X = self.source_step(X, it)
        return X

    def transform_target(self, Y: np.ndarray) -> np.ndarray:
        for it in self.iterations:
            Y = self.target_step(Y, it)
        return Y

    def arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for t, it in enumerate(self.iterations):
            for name in ("W_R", "src_anchors", "tgt_anchors", "deltas", "src_mean", "src_proj", "tgt_mean", "tgt_proj"):
                value = it.translations() if name == "deltas" else getattr(it, name)
                if value is not None:
                    out[f"it{t}_{name}"] = np.asarray(value)
        return out

    def meta(self) -> dict[str, Any]:
        return {"K": self.K, "src_step": self.src_step, "tgt_step": self.tgt_step, "renormalize": self.renormalize,
                "clip_negative": self.clip_negative, "n_iterations": len(self.iterations), "engine": self.engine}

    @classmethod
    def from_saved(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> InstaMapStage:
        iterations = []
        for t in range(int(meta["n_iterations"])):
            kw = {name: arrays.get(f"it{t}_{name}") for name in
                  ("W_R", "src_anchors", "tgt_anchors", "deltas", "src_mean", "src_proj", "tgt_mean", "tgt_proj")}
            iterations.append(InstaMapIteration(**kw))
        return cls(iterations, K=int(meta["K"]), src_step=float(meta["src_step"]), tgt_step=float(meta["tgt_step"]),
                   renormalize=bool(meta["renormalize"]), clip_negative=bool(meta["clip_negative"]),
                   engine=str(meta.get("engine", "reference")))  # files from before engines: the reference shift


_STAGE_TYPES = {"linear": LinearStage, "linear2": TwoSidedLinearStage, "instamap": InstaMapStage}
_REQUIRED_META = ("method", "stages")


def _stage_required_arrays(stage: Any) -> list[Any]:
    if stage.kind == "linear":
        return [stage.W]
    if stage.kind == "linear2":
        return [stage.Wx, stage.Wz]
    return [getattr(it, name) for it in stage.iterations for name in ("W_R", "src_anchors", "tgt_anchors")]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


@dataclass
class Mapping:
    """A fitted pipeline: ``transform_source``/``transform_target`` put both spaces in one space (contract "mapping.py")."""

    method: str
    stages: list[Any]
    params: dict = field(default_factory=dict)
    src_fingerprint: str = ""
    tgt_fingerprint: str = ""
    stats: dict = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    version: str = ""

    def __post_init__(self) -> None:
        if not self.version:
            self.version = self.content_hash()

    @classmethod
    def identity(cls, dim: int, src_fp: str = "", tgt_fp: str = "") -> Mapping:
        return cls("identity", [LinearStage(np.eye(dim))], src_fingerprint=src_fp, tgt_fingerprint=tgt_fp)

    @property
    def dim(self) -> int:
        first = self.stages[0]
        if first.kind == "linear2":
            return int(first.Wx.shape[0])
        return int(first.W.shape[0]) if first.kind == "linear" else int(
            (first.iterations[0].src_proj if first.iterations[0].src_proj is not None else first.iterations[0].W_R).shape[0])

    def transform_source(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, np.float32)
        for stage in self.stages:
            X = stage.transform_source(X)
        return X

    def transform_target(self, Y: np.ndarray) -> np.ndarray:
        Y = np.asarray(Y, np.float32)
        for stage in self.stages:
            Y = stage.transform_target(Y)
        return Y

    def _payload(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays: dict[str, np.ndarray] = {}
        stage_meta = []
        for s, stage in enumerate(self.stages):
            stage_meta.append({"kind": stage.kind, **stage.meta()})
            for name, value in stage.arrays().items():
                arrays[f"stage{s}_{name}"] = value
        meta = {"method": self.method, "params": _jsonable(self.params), "src_fingerprint": self.src_fingerprint,
                "tgt_fingerprint": self.tgt_fingerprint, "stats": _jsonable(self.stats), "stages": stage_meta}
        return meta, arrays

    def content_hash(self) -> str:
        """sha256 (16 hex) over method, parameters, fingerprints, stage metadata and stage arrays (not the timestamp/stats)."""
        meta, arrays = self._payload()
        digest = hashlib.sha256()
        core = {k: meta[k] for k in ("method", "params", "src_fingerprint", "tgt_fingerprint", "stages")}
        digest.update(json.dumps(core, sort_keys=True, default=str).encode())
        for name in sorted(arrays):
            a = np.ascontiguousarray(arrays[name])
            digest.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
            digest.update(a.tobytes())
        return digest.hexdigest()[:16]

    def save(self, path) -> Path:
        """Write one ``.npz`` atomically (temp file in the same folder, then ``os.replace``)."""
        path = Path(path)
        meta, arrays = self._payload()
        meta.update({"version": self.version, "created_at": self.created_at})
        buffer = io.BytesIO()
        np.savez(buffer, **{_FORMAT_KEY: np.array(FORMAT_VERSION), "meta": np.array(json.dumps(meta, default=str))}, **arrays)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(buffer.getvalue())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    @classmethod
    def load(cls, path) -> Mapping:
        """Read a mapping written by :meth:`save`; unknown format versions, missing metadata keys or stage arrays raise InvalidInput."""
        path = Path(path)
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"cannot read mapping file {path}: {exc}", detail={"path": str(path)}) from None
        with data:
            if _FORMAT_KEY not in data.files or "meta" not in data.files:
                raise InvalidInput(f"{path} is not a vislex mapping file", detail={"path": str(path)})
            fmt = int(data[_FORMAT_KEY])
            if fmt != FORMAT_VERSION:
                raise InvalidInput(f"{path}: unsupported mapping format version {fmt} (this build reads {FORMAT_VERSION})",
                                   detail={"path": str(path), "format": fmt, "supported": [FORMAT_VERSION]})
            try:
                meta = json.loads(str(data["meta"]))
            except ValueError as exc:
                raise InvalidInput(f"{path}: unreadable mapping metadata ({exc})", detail={"path": str(path)}) from None
            all_arrays = {name: data[name] for name in data.files}
        missing = [k for k in _REQUIRED_META if not isinstance(meta, dict) or k not in meta]
        if missing:
            raise InvalidInput(f"{path}: mapping metadata lacks required key(s) {missing}",
                               detail={"path": str(path), "missing": missing})
        if not isinstance(meta["stages"], list) or not meta["stages"]:
            raise InvalidInput(f"{path}: mapping has no stages", detail={"path": str(path)})
        stages = []
        for s, smeta in enumerate(meta["stages"]):
            kind = smeta.get("kind") if isinstance(smeta, dict) else None
            if kind not in _STAGE_TYPES:
                raise InvalidInput(f"{path}: unknown stage kind {kind!r}", detail={"path": str(path)})
            prefix = f"stage{s}_"
            arrays = {k[len(prefix):]: v for k, v in all_arrays.items() if k.startswith(prefix)}
            try:
                stage = _STAGE_TYPES[kind].from_saved(smeta, arrays)
            except (KeyError, TypeError, ValueError) as exc:
                raise InvalidInput(f"{path}: stage {s} ({kind}) is incomplete: missing or invalid {exc}",
                                   detail={"path": str(path), "stage": s}) from None
            if any(a is None for a in _stage_required_arrays(stage)):
                raise InvalidInput(f"{path}: stage {s} ({kind}) is missing arrays", detail={"path": str(path), "stage": s})
            stages.append(stage)
        return cls(meta["method"], stages, params=meta.get("params", {}), src_fingerprint=meta.get("src_fingerprint", ""),
                   tgt_fingerprint=meta.get("tgt_fingerprint", ""), stats=meta.get("stats", {}),
                   created_at=float(meta.get("created_at", 0.0)), version=meta.get("version", ""))
