"""Served word spaces, the mappings between them, and their search indexes.

Readers never lock: every request takes one snapshot (``self._state``: spaces, pairs, base
indexes) and searches it. Writers (:meth:`SpaceRegistry.install_mapping`, CSLS warm-up, Redis
sync) build new objects off to the side under one lock and swap the snapshot reference, so
a new mapping version appears atomically while requests are being served.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from services.errors import InvalidInput, NotFound, Unavailable
from services.serving.index import TargetIndex, _faiss, _pool, faiss_gpu_count, search_threads
from services.serving.rank_prior import PRIOR_POOL, apply_frequency_prior
from services.serving.space import WordSpace
from services.serving.table import TranslationTable, build_table

log = logging.getLogger(__name__)

__all__ = ["SpaceRegistry", "PairState", "IdentityMapping", "identity_mapping", "MAPPINGS_KEY_PREFIX",
           "MAPPING_PAIRS_KEY", "MAPPINGS_CHANNEL", "RETRIEVALS"]

# Published by the jobs layer (services/jobs/runner.py: publish_mapping): key -> JSON {"version", "path", ...}.
MAPPINGS_KEY_PREFIX = "vislex:mappings:"
MAPPING_PAIRS_KEY = "vislex:mapping-pairs"
MAPPINGS_CHANNEL = "vislex:mappings"
RETRIEVALS = ("nn", "csls")


def _unit_rows(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return X / norms


class IdentityMapping:
    """Stand-in for ``Mapping.identity`` when the alignment engine is absent (same duck type)."""

    method = "identity"

    def __init__(self, src_fingerprint: str = "", tgt_fingerprint: str = ""):
        self.src_fingerprint = src_fingerprint
        self.tgt_fingerprint = tgt_fingerprint
        self.version = "identity-" + hashlib.sha256(f"{src_fingerprint}|{tgt_fingerprint}".encode()).hexdigest()[:12]
        self.stats: dict[str, Any] = {}

    def transform_source(self, X: np.ndarray) -> np.ndarray:
        return X

    def transform_target(self, Y: np.ndarray) -> np.ndarray:
        return Y


def identity_mapping(dim: int, src_fingerprint: str, tgt_fingerprint: str) -> Any:
    """``Mapping.identity`` from the alignment engine, or the local stand-in."""
    try:
        from services.alignment.mapping import Mapping

        return Mapping.identity(dim, src_fingerprint, tgt_fingerprint)
    except (ImportError, AttributeError):
        return IdentityMapping(src_fingerprint, tgt_fingerprint)


def load_mapping_file(path: str | Path) -> Any:
    """``Mapping.load(path)``; 503 when the alignment engine is not installed."""
    try:
        from services.alignment.mapping import Mapping
    except ImportError as exc:  # pragma: no cover - engine ships with vislex
        raise Unavailable(f"cannot load mapping {path}: alignment engine unavailable ({exc})") from exc
    return Mapping.load(path)


@dataclass(frozen=True, eq=False)
class PairState:
    """Everything a src→tgt lookup needs, immutable: swap the whole object to change it."""

    src: str
    tgt: str
    mapping: Any
    version: str
    method: str
    mapped_source: np.ndarray  # (n_src, d) unit rows in the target space (shared with the space if identity)
    index: TargetIndex  # shared per target space unless the mapping moves targets (InstaMap)
    column_key: str
    csls_ready: bool
    shared_index: bool
    installed_at: float = field(default_factory=time.time)
    tables: dict[str, TranslationTable] = field(default_factory=dict)  # retrieval -> top-K of every source row
    rank_prior: float = 0.0  # CSLS frequency prior (services/serving/rank_prior.py); 0 = plain CSLS
    identical: np.ndarray | None = None  # per source row, the target row of the same string (-1: none)

    def prior_for(self, retrieval: str) -> float:
        return self.rank_prior if retrieval == "csls" else 0.0

    def pool(self, k: int, retrieval: str) -> int:
        """Candidates to fetch for a top-``k`` answer (more when the prior re-ranks them)."""
        return max(k, PRIOR_POOL) if self.prior_for(retrieval) else k

    def rerank(self, scores: np.ndarray, rows: np.ndarray, source_rows: np.ndarray, k: int,
               retrieval: str) -> tuple[np.ndarray, np.ndarray]:
        """The top ``k`` of (n, pool) search results, after the frequency prior where it applies."""
        weight = self.prior_for(retrieval)
        if not weight:
            return scores[:, :k], rows[:, :k]
        identical = None if self.identical is None else self.identical[source_rows]
        return apply_frequency_prior(scores, rows, source_rows, weight, k, identical)

    def search_rows(self, source_rows: np.ndarray, k: int, retrieval: str) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` targets of the given source rows under ``retrieval`` (the one exact search every path uses)."""
        column = self.column if retrieval == "csls" else None
        scores, rows = self.index.search(self.mapped_source[source_rows], self.pool(k, retrieval), column)
        return self.rerank(scores, rows, source_rows, k, retrieval)

    @property
    def column(self) -> int:
        return self.index.columns[self.column_key]

    def describe(self) -> dict[str, Any]:
        return {"src": self.src, "tgt": self.tgt, "version": self.version, "method": self.method,
                "csls_ready": self.csls_ready, "installed_at": round(self.installed_at, 3),
                "frequency_prior": self.rank_prior,
                "tables": {r: t.k for r, t in sorted(self.tables.items())}}


@dataclass(frozen=True)
class _Snapshot:
    spaces: dict[str, WordSpace]
    pairs: dict[tuple[str, str], PairState]
    base: dict[str, TargetIndex]  # per target space; NN for monolingual neighbours + shared CSLS columns


class SpaceRegistry:
    """Word spaces, mappings and FAISS indexes (methods.md, "CSLS retrieval"); thread-safe swaps."""

    def __init__(self, *, index_type: str = "flat", storage_dtype: str = "float32", csls_knn: int = 10,
                 csls_cache_dir: Path | None = None, use_gpu: bool | None = None, table_k: int = 0,
                 table_build: str = "on_demand", frequency_prior: float = 0.0, encoder_csls_knn: int | None = None):
        if table_build not in ("on_demand", "eager"):
            raise InvalidInput(f"table_build must be 'on_demand' or 'eager', not {table_build!r}")
        self.index_type = index_type
        self.table_k = int(table_k)  # 0: no precomputed tables (every miss searches)
        self.table_build = table_build  # eager: every pair, as soon as it is served; on_demand: on first use
        self.storage_dtype = storage_dtype
        self.csls_knn = int(csls_knn)
        # CSLS K between encoder-derived spaces of one group (None: csls_knn, as for every other pair).
        self.encoder_csls_knn = self.csls_knn if encoder_csls_knn is None else int(encoder_csls_knn)
        # CSLS frequency prior for pairs within one encoder group (frequency-ordered vocabularies).
        self.frequency_prior = float(frequency_prior)
        self.csls_cache_dir = Path(csls_cache_dir) if csls_cache_dir else None
        self.use_gpu = faiss_gpu_count() > 0 if use_gpu is None else use_gpu
        self._state = _Snapshot({}, {}, {})
        self._write_lock = threading.RLock()
        self._published: dict[str, str] = {}  # pair -> last published version handled by sync_from_redis
        self._tables_wanted: dict[tuple[str, str], None] = {}  # insertion-ordered queue of pairs
        self._tables_failed: set[tuple[str, str, str]] = set()  # (src, tgt, version): not retried
        self._tables_lock = threading.Lock()
        self._work = threading.Event()  # set when a table is requested (or on shutdown): wakes the builder
        # Languages configured but not built yet (encoder spaces built after startup): lang -> reason it is
        # not served ("building" or why it failed), and the callback that moves a wanted language forward.
        self._pending: dict[str, str] = {}
        self._prioritize: Any = None
        # (src, tgt) -> version a finished job published and version_push is installing: 503, not 404, meanwhile.
        self.installing: dict[tuple[str, str], str] = {}

    # ---- reading (lock-free) --------------------------------------------------------------
    @property
    def spaces(self) -> dict[str, WordSpace]:
        return self._state.spaces

    def languages(self) -> list[str]:
        return sorted(self._state.spaces)

    def pair_names(self) -> list[str]:
        return sorted(f"{s}-{t}" for s, t in self._state.pairs)

    def space(self, lang: str) -> WordSpace:
        space = self._state.spaces.get(lang)
        if space is None and lang in self._pending:
            self._space_loading(lang)
        if space is None:
            raise NotFound(f"no word space for language {lang!r}; loaded: {', '.join(self.languages()) or 'none'}",
                           code="space_not_found", detail={"lang": lang, "languages": self.languages()})
        return space

    def pair(self, src: str, tgt: str) -> PairState:
        state = self._state.pairs.get((src, tgt))
        if state is not None:
            return state
        for lang in (src, tgt):
            self.space(lang)
        if (src, tgt) in self.installing:
            raise Unavailable(f"the mapping {src}-{tgt} of a finished job is being installed; retry in a moment",
                              code="installing", detail={"src": src, "tgt": tgt,
                                                         "version": self.installing.get((src, tgt))})
        raise NotFound(f"no mapping {src}-{tgt}; available pairs: {', '.join(self.pair_names()) or 'none'}",
                       code="pair_not_found", detail={"src": src, "tgt": tgt, "pairs": self.pair_names()})

    def _space_loading(self, lang: str) -> None:
        reason = self._pending.get(lang)
        if reason is None:
            return
        if reason != "building":
            raise Unavailable(f"the {lang!r} space could not be built: {reason}", code="space_unavailable",
                              detail={"lang": lang, "state": "failed", "reason": reason})
        if self._prioritize is not None:
            self._prioritize(lang)
            self._work.set()
        raise Unavailable(f"the {lang!r} space is still being built; retry in a few seconds", code="space_loading",
                          detail={"lang": lang, "state": "loading", "pending": sorted(self._pending)})

    def set_pending(self, languages: list[str], prioritize: Any = None) -> None:
        """Declare languages that will be served once built (requests for them answer 503 ``space_loading``)."""
        with self._write_lock:
            self._pending.update({lang: "building" for lang in languages if lang not in self._state.spaces})
            self._prioritize = prioritize

    def fail_pending(self, lang: str, reason: str) -> None:
        with self._write_lock:
            if lang in self._pending:
                self._pending[lang] = reason

    def pending_languages(self) -> dict[str, str]:
        return dict(self._pending)

    def base_index(self, lang: str) -> TargetIndex:
        self.space(lang)
        return self._state.base[lang]

    def mapping_version(self, src: str, tgt: str) -> str:
        """Version of the mapping now served for src→tgt (404 when there is none)."""
        return self.pair(src, tgt).version

    # ---- writing ----------------------------------------------------------------------------
    def add_space(self, space: WordSpace) -> None:
        """Serve ``space`` (replaces a space of the same language, dropping its pairs)."""
        base = TargetIndex.create(space.lang, space.vectors, [], index_type=self.index_type,
                                  storage_dtype=self.storage_dtype, use_gpu=self.use_gpu)
        with self._write_lock:
            old = self._state
            pairs = {k: v for k, v in old.pairs.items() if space.lang not in k}
            self._state = _Snapshot({**old.spaces, space.lang: space}, pairs, {**old.base, space.lang: base})
            self._pending.pop(space.lang, None)

    def install_mapping(self, src: str, tgt: str, mapping: Any, *, compute_csls: bool = True) -> PairState:
        """Serve ``mapping`` for src→tgt: build mapped vectors, r_S and index aside, then swap atomically."""
        with self._write_lock:
            snap = self._state
            s_space, t_space = self.space(src), self.space(tgt)
            if src == tgt:
                raise InvalidInput("a mapping needs two different languages", detail={"src": src, "tgt": tgt})
            version = str(getattr(mapping, "version", "") or "")
            if not version:
                raise InvalidInput(f"mapping for {src}-{tgt} has no version")
            if getattr(mapping, "method", None) == "identity" and s_space.dim == t_space.dim:
                # Shared space (one multilingual encoder): no transform to run, no copies to keep.
                state = PairState(src, tgt, mapping, version, "identity", s_space.vectors,
                                  self._shared_index(snap, src, tgt), src, False, True)
                return self._publish(state, compute_csls)
            X = s_space.vectors_f32()
            Xm = np.asarray(mapping.transform_source(X))
            if Xm.ndim != 2 or Xm.shape[0] != len(s_space) or Xm.shape[1] != t_space.dim:
                raise InvalidInput(
                    f"mapping {src}-{tgt} gives {Xm.shape} source vectors; the {tgt!r} space is {t_space.dim}-d",
                    detail={"src": src, "tgt": tgt, "mapped_shape": list(Xm.shape), "target_dim": t_space.dim})
            if Xm.shape == X.shape and np.array_equal(Xm, X):
                mapped = s_space.vectors  # identity: share the space's own rows
            else:
                mapped = np.ascontiguousarray(_unit_rows(Xm), dtype=np.dtype(self.storage_dtype))
            del X, Xm
            Y = t_space.vectors_f32()
            Ym = np.asarray(mapping.transform_target(Y))
            shared = Ym.shape == Y.shape and np.array_equal(Ym, Y)
            if shared:
                index = self._shared_index(snap, src, tgt)
            else:
                targets = np.ascontiguousarray(_unit_rows(Ym), dtype=np.dtype(self.storage_dtype))
                index = TargetIndex.create(tgt, targets, [src], index_type=self.index_type,
                                           storage_dtype=self.storage_dtype, use_gpu=self.use_gpu)
            del Y, Ym
            state = PairState(src, tgt, mapping, version, str(getattr(mapping, "method", "") or "unknown"),
                              mapped, index, src, False, shared)
            return self._publish(state, compute_csls)

    def _shared_index(self, snap: _Snapshot, src: str, tgt: str) -> TargetIndex:
        index = snap.base[tgt]
        if src not in index.columns:
            index = index.with_column(src, np.zeros(index.size, dtype=np.float32))
        return index

    @staticmethod
    def encoder_pair(src_group: str | None, tgt_group: str | None) -> bool:
        """Both spaces derived from one encoder (group ``encoder:<name>``): the frequency prior and
        ``encoder_csls_knn`` apply to such pairs only."""
        return bool(src_group) and src_group == tgt_group and str(src_group).startswith("encoder:")

    def csls_knn_between(self, src_group: str | None, tgt_group: str | None) -> int:
        """K of CSLS's r_S for a pair whose spaces belong to these groups."""
        return self.encoder_csls_knn if self.encoder_pair(src_group, tgt_group) else self.csls_knn

    def csls_knn_for(self, src: str, tgt: str) -> int:
        spaces = self._state.spaces
        return self.csls_knn_between(spaces[src].group, spaces[tgt].group)

    def _publish(self, state: PairState, compute_csls: bool) -> PairState:
        s_space, t_space = self._state.spaces[state.src], self._state.spaces[state.tgt]
        if self.frequency_prior and self.encoder_pair(s_space.group, t_space.group):
            # Both vocabularies are wordfreq-ordered; the query's own string gets the stronger weight.
            identical = t_space.rows(s_space.words).astype(np.int32)
            state = replace(state, rank_prior=self.frequency_prior, identical=identical)
        if compute_csls:
            state = self._with_csls(state)
        previous = self._state.pairs.get((state.src, state.tgt))
        self._swap_pair(state)
        if self.table_build == "eager" or (previous is not None and previous.tables):
            self.request_tables(state.src, state.tgt)  # the old version's tables went with it
        log.info("mapping installed", extra={"pair": f"{state.src}-{state.tgt}", "version": state.version,
                                             "csls_ready": state.csls_ready, "shared_index": state.shared_index})
        return self._state.pairs[(state.src, state.tgt)]

    def ensure_csls(self, src: str, tgt: str) -> PairState:
        """The pair with r_S computed (computes it now if warm-up has not reached it yet)."""
        state = self.pair(src, tgt)
        if state.csls_ready:
            return state
        with self._write_lock:
            state = self.pair(src, tgt)
            if state.csls_ready:
                return state
            state = self._with_csls(state)
            self._swap_pair(state)
            return self._state.pairs[(src, tgt)]

    def warm_csls(self, stop: threading.Event | None = None, pause: Any = None) -> int:
        """Compute r_S for every pair that lacks it (background after startup); returns how many.

        ``pause()``, when given, is called before each pair (it may block: background work yielding the cores)."""
        done = 0
        for src, tgt in list(self._state.pairs):
            if pause is not None:
                pause()
            if stop is not None and stop.is_set():
                break
            self.build_requested_tables(stop)  # a pair in use comes before warming the others
            try:
                state = self._state.pairs.get((src, tgt))
                if state is not None and not state.csls_ready:
                    self.ensure_csls(src, tgt)
                    done += 1
            except Exception:  # a failed pair keeps serving NN; CSLS requests retry synchronously
                log.exception("CSLS warm-up failed", extra={"pair": f"{src}-{tgt}"})
        return done

    def _r_source(self, state: PairState) -> np.ndarray:
        """r_S(y): mean cosine of target y to its K nearest mapped source vectors (methods.md, CSLS);
        K = :meth:`csls_knn_for` (``encoder_csls_knn`` between encoder-derived spaces, else ``csls_knn``)."""
        key = None
        knn = self.csls_knn_for(state.src, state.tgt)
        if self.csls_cache_dir is not None:
            s, t = self._state.spaces[state.src], self._state.spaces[state.tgt]
            key = hashlib.sha256(
                f"{s.fingerprint}|{t.fingerprint}|{state.version}|{knn}|{self.storage_dtype}|"
                f"{len(s)}|{len(t)}".encode()).hexdigest()[:24]
            path = self.csls_cache_dir / f"r_source-{key}.npy"
            if s.fingerprint and t.fingerprint and path.is_file():
                try:
                    r = np.load(path, allow_pickle=False)
                    if r.shape == (state.index.size,):
                        return r.astype(np.float32)
                except (OSError, ValueError):
                    pass
        from services.alignment.retrieval import knn_mean_similarity

        targets = np.ascontiguousarray(state.index.targets, dtype=np.float32)
        sources = np.ascontiguousarray(state.mapped_source, dtype=np.float32)
        start = time.perf_counter()
        k = min(knn, len(sources))
        threads = search_threads(len(targets))
        if threads > 1:
            # One slice of targets per core, one OpenMP thread each (see TargetIndex.search for why).
            def part(T: np.ndarray) -> np.ndarray:
                _faiss().omp_set_num_threads(1)
                return knn_mean_similarity(T, sources, k=k)

            r = np.concatenate(list(_pool(threads).map(part, np.array_split(targets, threads))))
        else:
            r = knn_mean_similarity(targets, sources, k=k)
        log.info("r_S computed", extra={"pair": f"{state.src}-{state.tgt}", "knn": k,
                                        "seconds": round(time.perf_counter() - start, 3)})
        if key is not None and self._state.spaces[state.src].fingerprint:
            _atomic_save_npy(self.csls_cache_dir / f"r_source-{key}.npy", r)
        return r.astype(np.float32)

    def _with_csls(self, state: PairState) -> PairState:
        r = self._r_source(state)
        return replace(state, index=state.index.with_column(state.column_key, r), csls_ready=True)

    def _swap_pair(self, state: PairState) -> None:
        """Publish ``state``; pairs sharing its target index move to the new index in the same swap."""
        old = self._state
        pairs = dict(old.pairs)
        base = dict(old.base)
        if state.shared_index:
            base[state.tgt] = state.index
            for key, other in old.pairs.items():
                if other.shared_index and other.tgt == state.tgt and key != (state.src, state.tgt):
                    # The new index holds every column of the old one (with_column only adds/replaces).
                    pairs[key] = replace(other, index=state.index)
        pairs[(state.src, state.tgt)] = state
        self._state = _Snapshot(old.spaces, pairs, base)

    # ---- precomputed translation tables (services/serving/table.py) ---------------------------
    def request_tables(self, src: str, tgt: str) -> None:
        """Ask the background builder for src→tgt's tables (cheap; no-op when off or already queued)."""
        if self.table_k <= 0 or (src, tgt) in self._tables_wanted:
            return
        state = self._state.pairs.get((src, tgt))
        if state is None or (src, tgt, state.version) in self._tables_failed:
            return
        with self._tables_lock:
            self._tables_wanted[(src, tgt)] = None
        self._work.set()

    def request_all_tables(self) -> None:
        for src, tgt in list(self._state.pairs):
            self.request_tables(src, tgt)

    def wait_for_work(self, timeout: float) -> None:
        """Sleep up to ``timeout`` s, less when a table is requested or :meth:`wake` is called."""
        self._work.wait(timeout)
        self._work.clear()

    def wake(self) -> None:
        self._work.set()

    def build_requested_tables(self, stop: threading.Event | None = None) -> int:
        """Build the NN and CSLS tables of every requested pair; returns how many tables were built."""
        built = 0
        while self._tables_wanted and not (stop is not None and stop.is_set()):
            with self._tables_lock:
                src, tgt = pair = next(iter(self._tables_wanted))
            try:
                built += self._build_tables(src, tgt, stop)
            except NotFound:
                pass  # the pair went away meanwhile
            except Exception:  # the pair keeps being served by search; this version is not retried
                state = self._state.pairs.get(pair)
                if state is not None:
                    self._tables_failed.add((src, tgt, state.version))
                log.exception("translation table build failed", extra={"pair": f"{src}-{tgt}"})
            with self._tables_lock:
                self._tables_wanted.pop(pair, None)
        return built

    def _build_tables(self, src: str, tgt: str, stop: threading.Event | None) -> int:
        built = 0
        for retrieval in RETRIEVALS:
            for _attempt in range(3):  # a new mapping version arriving mid-build restarts that table
                state = self.ensure_csls(src, tgt) if retrieval == "csls" else self.pair(src, tgt)
                if retrieval in state.tables and state.tables[retrieval].k >= self.table_k:
                    break
                start = time.perf_counter()
                # The "queries" are source row ids: search_rows maps, searches and applies the prior per chunk.
                table = build_table(lambda rows, k, state=state, retrieval=retrieval:
                                    state.search_rows(rows, k, retrieval),
                                    np.arange(len(state.mapped_source)), self.table_k, stop=stop)
                if table is None:
                    return built
                with self._write_lock:
                    current = self._state.pairs.get((src, tgt))
                    if current is None:
                        return built
                    # Same version (hence same mapped rows and r_S): the table is the truth for it.
                    if current.version != state.version:
                        continue
                    self._swap_pair(replace(current, tables={**current.tables, retrieval: table}))
                built += 1
                log.info("translation table built", extra={
                    "pair": f"{src}-{tgt}", "retrieval": retrieval, "k": table.k, "rows": len(table.rows),
                    "seconds": round(time.perf_counter() - start, 3)})
                break
        return built

    # ---- Redis-published mappings (jobs) ------------------------------------------------------
    def sync_from_redis(self, client: Any) -> list[str]:
        """Install every mapping version published under ``vislex:mappings:{src}-{tgt}`` that differs from ours.

        Returns the pairs installed. Pairs whose languages this process does not serve are skipped.
        """
        names = {n.decode() if isinstance(n, bytes) else str(n) for n in (client.smembers(MAPPING_PAIRS_KEY) or [])}
        if not names:
            names = {k.decode()[len(MAPPINGS_KEY_PREFIX):] if isinstance(k, bytes) else str(k)[len(MAPPINGS_KEY_PREFIX):]
                     for k in client.scan_iter(match=MAPPINGS_KEY_PREFIX + "*", count=500)}
        names = sorted(n for n in names if n.count("-") == 1)
        if not names:
            return []
        values = client.mget([MAPPINGS_KEY_PREFIX + n for n in names])
        installed = []
        for name, raw in zip(names, values):
            if raw is None:
                continue
            src, tgt = name.split("-")
            if src not in self._state.spaces or tgt not in self._state.spaces:
                continue
            try:
                info = json.loads(raw)
                version, path = str(info["version"]), info["path"]
            except (ValueError, KeyError, TypeError):
                log.warning("malformed published mapping", extra={"pair": name})
                continue
            current = self._state.pairs.get((src, tgt))
            if (current is not None and current.version == version) or self._published.get(name) == version:
                continue
            try:
                mapping = load_mapping_file(path)
                if current is None or current.version != str(getattr(mapping, "version", "")):
                    self.install_mapping(src, tgt, mapping)
                    installed.append(name)
                self._published[name] = version
            except Exception:
                self._published[name] = version  # do not retry a broken file on every poll
                log.exception("cannot install published mapping", extra={"pair": name, "path": path})
        return installed

    # ---- introspection ----------------------------------------------------------------------
    def describe(self) -> list[dict[str, Any]]:
        """One entry per space: size, dimension, source, bytes, and the mappings from it."""
        snap = self._state
        out = []
        for lang in sorted(snap.spaces):
            space = snap.spaces[lang]
            index_bytes = snap.base[lang].nbytes
            own_pairs = [p for (s, _t), p in snap.pairs.items() if s == lang]
            mapped_bytes = sum(p.mapped_source.nbytes for p in own_pairs if p.mapped_source is not space.vectors)
            dedicated = sum(p.index.nbytes for (s, _t), p in snap.pairs.items() if s == lang and not p.shared_index)
            tables = sum(t.nbytes for p in own_pairs for t in p.tables.values())
            entry = space.describe()
            entry.update({
                "bytes": int(space.nbytes + index_bytes + mapped_bytes + dedicated + tables),
                "bytes_detail": {"vectors": space.nbytes, "index": index_bytes, "mapped_sources": int(mapped_bytes),
                                 "dedicated_indexes": int(dedicated), "tables": int(tables)},
                "index_type": self.index_type,
                "mappings": [p.describe() for p in sorted(own_pairs, key=lambda p: p.tgt)],
            })
            out.append(entry)
        return out


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
