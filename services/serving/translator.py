"""Word translation requests: validation, cache, one FAISS search, JSON bodies.

Where the pair has a precomputed translation table (services/serving/table.py) covering k, a
word is two row gathers and nothing else (no Redis round trip: the table is faster than the
cache). Otherwise the single-word path is one dict lookup, one Redis GET and (on a miss) one
FAISS search over the target index (methods.md, "CSLS retrieval": exact CSLS via the
augmented-vector trick); a batch is one MGET, one FAISS search for all missing words, one
pipelined cache write.
Bodies are assembled as JSON text (cached translation lists are spliced in verbatim), so no
per-response model validation sits on the hot path.

Identical strings (policy): in a shared encoder space a word and the same string in another language
are one point (cosine 1.0). Served vocabularies are language-pure (services/serving/vocabulary.py), so
a string present in both is a word of both (``table``, ``taxi``, German ``hotel``) and answering it is
right far more often than not (on a dev split of MUSE en→fr, removing identical answers costs ~20 P@1
points). ``exclude_identical=True`` drops the query's own string from the answers, for callers who know
the word is a false friend (``pain``, ``main``): one more candidate is fetched and the identical one removed.
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


def _without_row(scores: np.ndarray, rows: np.ndarray, skip: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` entries of each row of (scores, rows) (n, k+1) whose target row is not ``skip`` (n,)."""
    drop = rows == skip[:, None]
    order = np.argsort(drop, axis=1, kind="stable")[:, :k]  # kept entries first, in rank order
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)


def multi_word(word: str, lang: str, field: str = "word") -> InvalidInput:
    return InvalidInput(f"{field}: {word!r} is {len(word.split())} words; vocabularies hold single words "
                        f"(translate each word on its own)", code="multi_word",
                        detail={"field": field, "word": word, "lang": lang, "words": len(word.split())})


def _translations_json(json_words: list[str], scores: np.ndarray, rows: np.ndarray) -> str:
    """``[{"word": ..., "score": ...}, ...]`` as text; ``json_words`` are the target words as JSON literals."""
    keep = rows >= 0  # approximate indexes may return fewer than k
    return "[" + ",".join('{"word":%s,"score":%r}' % (json_words[r], round(s, 6))
                          for r, s in zip(rows[keep].tolist(), scores[keep].tolist())) + "]"


@dataclass(frozen=True, slots=True)
class _Lookup:
    state: PairState
    row: int
    k: int
    retrieval: str
    head: str
    key: str | None
    body: str | None
    skip: int = -1  # target row of the query's own string, dropped from the answers (exclude_identical)


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
            self.registry.space(src)  # an unknown language is its 404 first (the schema cannot say src != tgt)
            raise InvalidInput("src and tgt must differ", detail={"field": "tgt", "src": src, "tgt": tgt})
        state = self.registry.pair(src, tgt)
        if ensure_csls and retrieval == "csls" and not state.csls_ready:
            state = self.registry.ensure_csls(src, tgt)
        return state

    # ---- search -----------------------------------------------------------------------------
    def _search(self, state: PairState, rows: np.ndarray, k: int, retrieval: str) -> tuple[np.ndarray, np.ndarray]:
        with stage_timer("search"):
            return state.search_rows(rows, k, retrieval)

    # ---- single word (hot path) ---------------------------------------------------------------
    def lookup(self, word: str, src: str, tgt: str, k: int = 5, retrieval: str = "csls",
               exclude_identical: bool = False) -> "_Lookup":
        """Validate and try the cache: ``.body`` is set on a hit, else call :meth:`complete` (the search)."""
        self.check_word(word)
        # r_S may still be computing (seconds): that wait belongs in complete(), off the event loop.
        state = self.check_pair(src, tgt, k, retrieval, ensure_csls=False)
        space = self.registry.spaces[src]
        word_key = space.key(word)
        row = space._keys.get(word_key, -1)
        if row < 0:
            raise multi_word(word, src) if len(word.split()) > 1 else word_not_found(word, src)
        tgt_space = self.registry.spaces[tgt]
        skip = tgt_space._keys.get(tgt_space.key(word), -1) if exclude_identical else -1
        head = _dumps({"word": word, "src": src, "tgt": tgt, "retrieval": retrieval,
                       "exclude_identical": bool(exclude_identical), "mapping_version": state.version})[:-1]
        width = k + (skip >= 0)  # one more candidate when one of them is to be dropped
        table = state.tables.get(retrieval)
        if table is not None and width <= table.k:
            TABLE_WORDS.labels(retrieval).inc()
            scores, rows = table.top(row, width)
            if skip >= 0:
                scores, rows = _without_row(scores[None], rows[None], np.array([skip]), k)
                scores, rows = scores[0], rows[0]
            fragment = _translations_json(tgt_space.json_words, scores, rows)
            return _Lookup(state, row, k, retrieval, head, None, head + ',"cached":false,"translations":' + fragment + "}")
        if table is None:
            self.registry.request_tables(src, tgt)
        key = None
        cache = self.cache
        if cache is not None:
            key = cache.key(src, tgt, state.version, _cache_variant(state, retrieval, skip >= 0), k, word_key)
            hit = cache.get(key)
            if hit is not None:
                return _Lookup(state, row, k, retrieval, head, key, head + ',"cached":true,"translations":' + hit + "}",
                               skip)
        return _Lookup(state, row, k, retrieval, head, key, None, skip)

    def complete(self, found: "_Lookup") -> str:
        """One FAISS search for a cache miss; stores the result; returns the JSON body."""
        if found.body is not None:
            return found.body
        state = self._csls_state(found)
        scores, rows = self._search(state, np.array([found.row]), found.k + (found.skip >= 0), found.retrieval)
        return self._finish(found, state, scores[0], rows[0])

    async def complete_async(self, found: "_Lookup") -> str:
        """:meth:`complete` for the event loop: concurrent misses share one search (SearchBatcher)."""
        if found.body is not None:
            return found.body
        state = found.state
        if found.retrieval == "csls" and not state.csls_ready:
            state = await asyncio.to_thread(self._csls_state, found)  # r_S: seconds, off the loop
        column = state.column if found.retrieval == "csls" else None
        width = found.k + (found.skip >= 0)
        scores, rows = await self.batcher.search(state.index, state.mapped_source[found.row],
                                                 state.pool(width, found.retrieval), column)
        scores, rows = state.rerank(scores[None], rows[None], np.array([found.row]), width, found.retrieval)
        return self._finish(found, state, scores[0], rows[0])

    def _csls_state(self, found: "_Lookup") -> PairState:
        state = found.state
        if found.retrieval == "csls" and not state.csls_ready:
            state = self.registry.ensure_csls(state.src, state.tgt)
        return state

    def _finish(self, found: "_Lookup", state: PairState, scores: np.ndarray, rows: np.ndarray) -> str:
        if found.skip >= 0:
            scores, rows = _without_row(scores[None], rows[None], np.array([found.skip]), found.k)
            scores, rows = scores[0], rows[0]
        fragment = _translations_json(self.registry.spaces[state.tgt].json_words, scores, rows)
        if self.cache is not None and found.key is not None and state.version == found.state.version:
            self.cache.set(found.key, fragment)
        return found.head + ',"cached":false,"translations":' + fragment + "}"

    def translate_json(self, word: str, src: str, tgt: str, k: int = 5, retrieval: str = "csls",
                       exclude_identical: bool = False) -> str:
        """JSON body of a single-word translation (see app/schemas/translate.py: TranslateResponse)."""
        return self.complete(self.lookup(word, src, tgt, k, retrieval, exclude_identical))

    def translate(self, word: str, src: str, tgt: str, k: int = 5, retrieval: str = "csls",
                  exclude_identical: bool = False) -> dict[str, Any]:
        """Same as :meth:`translate_json`, parsed (for Python callers and tests)."""
        return json.loads(self.translate_json(word, src, tgt, k, retrieval, exclude_identical))

    # ---- batch ---------------------------------------------------------------------------------
    def translate_batch_json(self, words: list[str], src: str, tgt: str, k: int = 5, retrieval: str = "csls",
                             exclude_identical: bool = False) -> str:
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
            if r < 0 and len(words[i].split()) > 1:
                bad = multi_word(words[i], src, f"words.{i}")
                errors[i] = _error_json(bad.code, bad.message, bad.detail)
            elif r < 0:
                errors[i] = _error_json("word_not_found", f"word {words[i]!r} is not in the {src!r} vocabulary",
                                        {"word": words[i], "lang": src})
            else:
                found.append(i)
                found_rows.append(r)
        fragments: dict[int, str] = {}
        cached: set[int] = set()
        cache = self.cache
        keys: list[str] = []
        tgt_space = self.registry.spaces[tgt]
        width = k + 1 if exclude_identical else k  # one more candidate when one may be dropped
        # Target row of each found word's own string (-1: none), dropped from its answers.
        skips = (tgt_space.rows([words[i] for i in found]) if exclude_identical
                 else np.full(len(found), -1, dtype=np.int64))
        table = state.tables.get(retrieval)
        if table is None:
            self.registry.request_tables(src, tgt)
        elif width <= table.k and found:
            TABLE_WORDS.labels(retrieval).inc(len(found))
            t_scores, t_rows = table.top(np.asarray(found_rows, dtype=np.int64), width)
            t_scores, t_rows = _without_row(t_scores, t_rows, skips, k)
            tgt_words = tgt_space.json_words
            for j, i in enumerate(found):
                fragments[i] = _translations_json(tgt_words, t_scores[j], t_rows[j])
            cache = None  # every word is answered: nothing to read from or write to Redis
        if cache is not None and found:
            with stage_timer("cache"):
                variant = _cache_variant(state, retrieval, exclude_identical)
                keys = [cache.key(src, tgt, state.version, variant, k, space.key(words[i])) for i in found]
                for pos, value in enumerate(cache.get_many(keys)):
                    if value is not None:
                        fragments[found[pos]] = value
                        cached.add(found[pos])
        missing = [pos for pos, i in enumerate(found) if i not in fragments]
        if missing:
            miss_rows = np.array([found_rows[pos] for pos in missing], dtype=np.int64)
            unique_rows, first, inverse = np.unique(miss_rows, return_index=True, return_inverse=True)
            scores, rows_out = self._search(state, unique_rows, width, retrieval)
            # Words sharing a source row share its normalised string, hence its skip.
            scores, rows_out = _without_row(scores, rows_out, skips[np.asarray(missing)[first]], k)
            tgt_words = tgt_space.json_words
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
        head = _dumps({"src": src, "tgt": tgt, "retrieval": retrieval, "k": k,
                       "exclude_identical": bool(exclude_identical), "mapping_version": state.version})[:-1]
        return head + ',"results":[' + ",".join(parts) + "]}"

    def translate_batch(self, words: list[str], src: str, tgt: str, k: int = 5, retrieval: str = "csls",
                        exclude_identical: bool = False) -> dict:
        return json.loads(self.translate_batch_json(words, src, tgt, k, retrieval, exclude_identical))

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


def _cache_variant(state: PairState, retrieval: str, exclude_identical: bool) -> str:
    """The cache key's retrieval part: what else changes an answer besides version, k and word."""
    prior = state.prior_for(retrieval)
    return retrieval + (f"-prior{prior:g}" if prior else "") + ("-noident" if exclude_identical else "")


def _error_json(code: str, message: str, detail: dict[str, Any]) -> str:
    return _dumps({"code": code, "message": message, "detail": detail})

