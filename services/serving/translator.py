"""Word translation requests: validation, cache, one FAISS search, JSON bodies.

Where the pair has a precomputed translation table (services/serving/table.py) covering k, a
word is two row gathers and nothing else (no Redis round trip: the table is faster than the
cache). Otherwise the single-word path is one dict lookup, one Redis GET and (on a miss) one
FAISS search over the target index (methods.md, "CSLS retrieval": exact CSLS via the
augmented-vector trick); a batch is one MGET, one FAISS search for all missing words, one
pipelined cache write.
Bodies are assembled as JSON text (cached translation lists are spliced in verbatim), so no
per-response model validation sits on the hot path.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.errors import InvalidInput, PayloadTooLarge
from services.observability import TABLE_WORDS, stage_timer
from services.serving.batcher import SearchBatcher
from services.serving.cache import TranslationCache
from services.serving.registry import RETRIEVALS, PairState, SpaceRegistry
from services.serving.space import word_not_found

__all__ = ["Translator", "MAX_K"]

MAX_K = 100
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _translations_json(words: list[str], scores: np.ndarray, rows: np.ndarray) -> str:
    keep = rows >= 0  # approximate indexes may return fewer than k
    return _dumps([{"word": words[r], "score": round(s, 6)}
                   for r, s in zip(rows[keep].tolist(), scores[keep].tolist())])


@dataclass(frozen=True, slots=True)
class _Lookup:
    state: PairState
    row: int
    k: int
    retrieval: str
    head: str
    key: str | None
    body: str | None


class Translator:
    """Translate words between served spaces, with an optional Redis result cache."""

    def __init__(self, registry: SpaceRegistry, cache: TranslationCache | None = None, *,
                 max_batch_words: int = 2000, max_word_length: int = 100):
        self.registry = registry
        self.cache = cache
        self.batcher = SearchBatcher()
        self.max_batch_words = int(max_batch_words)
        self.max_word_length = int(max_word_length)

    # ---- validation -------------------------------------------------------------------------
    def check_word(self, word: str, field: str = "word") -> None:
        if not word or not word.strip():
            raise InvalidInput(f"{field}: must not be empty", detail={"field": field})
        if len(word) > self.max_word_length:
            raise InvalidInput(f"{field}: longer than {self.max_word_length} characters",
                               detail={"field": field, "max_word_length": self.max_word_length, "length": len(word)})

    def check_pair(self, src: str, tgt: str, k: int, retrieval: str, *, ensure_csls: bool = True) -> PairState:
        if not 1 <= int(k) <= MAX_K:
            raise InvalidInput(f"k: must be between 1 and {MAX_K}", detail={"field": "k", "value": k})
        if retrieval not in RETRIEVALS:
            raise InvalidInput(f"retrieval: must be one of {', '.join(RETRIEVALS)}",
                               detail={"field": "retrieval", "value": retrieval})
        if src == tgt:
            raise InvalidInput("src and tgt must differ", detail={"field": "tgt", "src": src, "tgt": tgt})
        state = self.registry.pair(src, tgt)
        if ensure_csls and retrieval == "csls" and not state.csls_ready:
            state = self.registry.ensure_csls(src, tgt)
        return state

    # ---- search -----------------------------------------------------------------------------
    def _search(self, state: PairState, rows: np.ndarray, k: int, retrieval: str) -> tuple[np.ndarray, np.ndarray]:
        queries = state.mapped_source[rows]
        with stage_timer("search"):
            return state.index.search(queries, k, state.column if retrieval == "csls" else None)

    # ---- single word (hot path) ---------------------------------------------------------------
    def lookup(self, word: str, src: str, tgt: str, k: int = 5, retrieval: str = "csls") -> "_Lookup":
        """Validate and try the cache: ``.body`` is set on a hit, else call :meth:`complete` (the search)."""
        self.check_word(word)
        # r_S may still be computing (seconds): that wait belongs in complete(), off the event loop.
        state = self.check_pair(src, tgt, k, retrieval, ensure_csls=False)
        space = self.registry.spaces[src]
        word_key = space.key(word)
        row = space._keys.get(word_key, -1)
        if row < 0:
            raise word_not_found(word, src)
        head = _dumps({"word": word, "src": src, "tgt": tgt, "retrieval": retrieval,
                       "mapping_version": state.version})[:-1]
        table = state.tables.get(retrieval)
        if table is not None and k <= table.k:
            TABLE_WORDS.labels(retrieval).inc()
            scores, rows = table.top(row, k)
            fragment = _translations_json(self.registry.spaces[tgt].words, scores, rows)
            return _Lookup(state, row, k, retrieval, head, None, head + ',"cached":false,"translations":' + fragment + "}")
        if table is None:
            self.registry.request_tables(src, tgt)
        key = None
        cache = self.cache
        if cache is not None:
            key = cache.key(src, tgt, state.version, retrieval, k, word_key)
            hit = cache.get(key)
            if hit is not None:
                return _Lookup(state, row, k, retrieval, head, key, head + ',"cached":true,"translations":' + hit + "}")
        return _Lookup(state, row, k, retrieval, head, key, None)

    def complete(self, found: "_Lookup") -> str:
        """One FAISS search for a cache miss; stores the result; returns the JSON body."""
        if found.body is not None:
            return found.body
        state = self._csls_state(found)
        scores, rows = self._search(state, np.array([found.row]), found.k, found.retrieval)
        return self._finish(found, state, scores[0], rows[0])

    async def complete_async(self, found: "_Lookup") -> str:
        """:meth:`complete` for the event loop: concurrent misses share one search (SearchBatcher)."""
        if found.body is not None:
            return found.body
        state = found.state
        if found.retrieval == "csls" and not state.csls_ready:
            state = await asyncio.to_thread(self._csls_state, found)  # r_S: seconds, off the loop
        column = state.column if found.retrieval == "csls" else None
        scores, rows = await self.batcher.search(state.index, state.mapped_source[found.row], found.k, column)
        return self._finish(found, state, scores, rows)

    def _csls_state(self, found: "_Lookup") -> PairState:
        state = found.state
        if found.retrieval == "csls" and not state.csls_ready:
            state = self.registry.ensure_csls(state.src, state.tgt)
        return state

    def _finish(self, found: "_Lookup", state: PairState, scores: np.ndarray, rows: np.ndarray) -> str:
        fragment = _translations_json(self.registry.spaces[state.tgt].words, scores, rows)
        if self.cache is not None and found.key is not None and state.version == found.state.version:
            self.cache.set(found.key, fragment)
        return found.head + ',"cached":false,"translations":' + fragment + "}"

    def translate_json(self, word: str, src: str, tgt: str, k: int = 5, retrieval: str = "csls") -> str:
        """JSON body of a single-word translation (see app/schemas/translate.py: TranslateResponse)."""
        return self.complete(self.lookup(word, src, tgt, k, retrieval))

    def translate(self, word: str, src: str, tgt: str, k: int = 5, retrieval: str = "csls") -> dict[str, Any]:
        """Same as :meth:`translate_json`, parsed (for Python callers and tests)."""
        return json.loads(self.translate_json(word, src, tgt, k, retrieval))

    # ---- batch ---------------------------------------------------------------------------------
    def translate_batch_json(self, words: list[str], src: str, tgt: str, k: int = 5, retrieval: str = "csls") -> str:
        """JSON body of a batch: results in input order; bad or unknown words get their own error entry."""
        if len(words) > self.max_batch_words:
            raise PayloadTooLarge(f"batch of {len(words)} words is over the limit of {self.max_batch_words}",
                                  detail={"words": len(words), "max_batch_words": self.max_batch_words})
        state = self.check_pair(src, tgt, k, retrieval)
        space = self.registry.spaces[src]
        errors: dict[int, str] = {}
        for i, w in enumerate(words):
            if not isinstance(w, str) or not w.strip():
                errors[i] = _error_json("invalid_input", "word must not be empty", {"field": f"words.{i}"})
            elif len(w) > self.max_word_length:
                errors[i] = _error_json("invalid_input", f"longer than {self.max_word_length} characters",
                                        {"field": f"words.{i}", "max_word_length": self.max_word_length})
        valid = [i for i in range(len(words)) if i not in errors]
        rows = space.rows([words[i] for i in valid]) if valid else np.zeros(0, dtype=np.int64)
        found: list[int] = []
        found_rows: list[int] = []
        for i, r in zip(valid, rows.tolist()):
            if r < 0:
                errors[i] = _error_json("word_not_found", f"word {words[i]!r} is not in the {src!r} vocabulary",
                                        {"word": words[i], "lang": src})
            else:
                found.append(i)
                found_rows.append(r)
        fragments: dict[int, str] = {}
        cached: set[int] = set()
        cache = self.cache
        keys: list[str] = []
        table = state.tables.get(retrieval)
        if table is None:
            self.registry.request_tables(src, tgt)
        elif k <= table.k and found:
            TABLE_WORDS.labels(retrieval).inc(len(found))
            t_scores, t_rows = table.top(np.asarray(found_rows, dtype=np.int64), k)
            tgt_words = self.registry.spaces[tgt].words
            for j, i in enumerate(found):
                fragments[i] = _translations_json(tgt_words, t_scores[j], t_rows[j])
            cache = None  # every word is answered: nothing to read from or write to Redis
        if cache is not None and found:
            with stage_timer("cache"):
                keys = [cache.key(src, tgt, state.version, retrieval, k, space.key(words[i])) for i in found]
                for pos, value in enumerate(cache.get_many(keys)):
                    if value is not None:
                        fragments[found[pos]] = value
                        cached.add(found[pos])
        missing = [pos for pos, i in enumerate(found) if i not in fragments]
        if missing:
            miss_rows = np.array([found_rows[pos] for pos in missing], dtype=np.int64)
            unique_rows, inverse = np.unique(miss_rows, return_inverse=True)
            scores, rows_out = self._search(state, unique_rows, k, retrieval)
            tgt_words = self.registry.spaces[tgt].words
            per_unique = [_translations_json(tgt_words, scores[j], rows_out[j]) for j in range(len(unique_rows))]
            writes: dict[str, str] = {}
            for pos, u in zip(missing, inverse.tolist()):
                fragments[found[pos]] = per_unique[u]
                if cache is not None:
                    writes[keys[pos]] = per_unique[u]
            if cache is not None:
                with stage_timer("cache"):
                    cache.set_many(writes)
        parts = []
        for i, w in enumerate(words):
            wj = _dumps(w)
            if i in errors:
                parts.append('{"word":' + wj + ',"error":' + errors[i] + "}")
            else:
                parts.append('{"word":' + wj + ',"cached":' + ("true" if i in cached else "false")
                             + ',"translations":' + fragments[i] + "}")
        head = _dumps({"src": src, "tgt": tgt, "retrieval": retrieval, "k": k, "mapping_version": state.version})[:-1]
        return head + ',"results":[' + ",".join(parts) + "]}"

    def translate_batch(self, words: list[str], src: str, tgt: str, k: int = 5, retrieval: str = "csls") -> dict:
        return json.loads(self.translate_batch_json(words, src, tgt, k, retrieval))

    # ---- monolingual neighbours ------------------------------------------------------------------
    def neighbors(self, lang: str, word: str, k: int = 10) -> dict[str, Any]:
        """Nearest words of ``word`` in its own space by cosine (the word itself excluded)."""
        self.check_word(word)
        if not 1 <= int(k) <= MAX_K:
            raise InvalidInput(f"k: must be between 1 and {MAX_K}", detail={"field": "k", "value": k})
        space = self.registry.space(lang)
        row = space.row(word)
        if row < 0:
            raise word_not_found(word, lang)
        index = self.registry.base_index(lang)
        with stage_timer("search"):
            scores, rows = index.search(space.vectors_f32(np.array([row])), k + 1, None)
        keep = (rows[0] >= 0) & (rows[0] != row)
        out_rows, out_scores = rows[0][keep][:k], scores[0][keep][:k]
        return {"word": word, "lang": lang,
                "neighbors": [{"word": space.words[r], "score": round(s, 6)}
                              for r, s in zip(out_rows.tolist(), out_scores.tolist())]}


def _error_json(code: str, message: str, detail: dict[str, Any]) -> str:
    return _dumps({"code": code, "message": message, "detail": detail})

