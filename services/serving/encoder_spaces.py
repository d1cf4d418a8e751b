"""Encoder-derived word spaces: a language's top-N ``wordfreq`` words embedded by a multilingual text encoder.

All languages embedded by one multilingual encoder live in one shared space, so the identity
maps between any two of them (the embedded default needs no download and no alignment).
Vocabularies are language-pure (services/serving/vocabulary.py: English text inside French web
corpora does not make ``dog`` a French word). Built once and cached on disk under
``cache_dir/encoder_spaces`` (atomic writes), keyed by encoder, language, N, the purity rule and
the wordfreq version.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

import numpy as np

from services.alignment.vectors import WordVectors, load_vectors, save_vectors
from services.errors import InvalidInput, Unavailable
from services.serving.vocabulary import PurityRule, pure_vocabulary, release_wordfreq_tables, wordfreq_frequencies

log = logging.getLogger(__name__)

__all__ = ["encoder_vocabulary", "encoder_space_path", "build_encoder_vectors", "wordfreq_version"]

_CACHE_FORMAT = 2
# Candidates scanned per served word: the purity rule drops 3-15 % of a top list (more for ru, ja).
_SCAN_FACTOR = 1.5


def wordfreq_version() -> str:
    try:
        return version("wordfreq")
    except PackageNotFoundError:  # pragma: no cover - dependency
        return "unknown"


def encoder_vocabulary(lang: str, n: int, rule: PurityRule | None = None, *,
                       frequencies: Callable[[str], Any] = wordfreq_frequencies) -> list[str]:
    """The ``n`` most frequent words of ``lang`` by wordfreq (most frequent first, NFC, no blanks),
    keeping only the words that pass ``rule`` (None: the raw list)."""
    if rule is not None:
        report = pure_vocabulary(lang, encoder_vocabulary(lang, int(n * _SCAN_FACTOR) + 100), n, rule,
                                 frequencies=frequencies)
        log.info("language-pure vocabulary", extra=report.as_dict())
        return report.words
    import unicodedata

    import wordfreq

    if lang not in wordfreq.available_languages():
        raise InvalidInput(f"wordfreq has no word list for language {lang!r}",
                           detail={"lang": lang, "known": sorted(wordfreq.available_languages())})
    words, seen = [], set()
    for w in wordfreq.top_n_list(lang, n):
        w = unicodedata.normalize("NFC", w.strip())
        if w and w not in seen and not any(c in w for c in "\t\n\r"):
            seen.add(w)
            words.append(w)
    return words


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:60]


def encoder_space_path(cache_dir: Path, encoder_name: str, lang: str, n: int, rule: PurityRule | None = None) -> Path:
    """Cache file for (encoder, language, N, purity rule, wordfreq version)."""
    rule_tag = rule.tag() if rule is not None else "raw"
    tag = hashlib.sha256(f"{_CACHE_FORMAT}|{encoder_name}|{lang}|{n}|{rule_tag}|{wordfreq_version()}".encode()
                         ).hexdigest()[:12]
    return Path(cache_dir) / "encoder_spaces" / f"{_slug(encoder_name)}-{lang}-{n}-{tag}.npy"


def build_encoder_vectors(lang: str, n: int, *, encoder_name: str, cache_dir: Path | None,
                          encoder_factory: Callable[[str], Any] | None = None,
                          words: list[str] | None = None, rule: PurityRule | None = None,
                          frequencies: Callable[[str], Any] = wordfreq_frequencies) -> WordVectors:
    """Word vectors of the top-``n`` words of ``lang`` under ``encoder_name`` (unit rows; cached on disk).

    ``encoder_factory(name)`` defaults to :func:`models.text_encoders.load_text_encoder`;
    ``words`` overrides the wordfreq vocabulary (tests); ``rule`` keeps it language-pure
    (``frequencies(lang)`` gives the word frequencies the rule compares).
    """
    path = (encoder_space_path(cache_dir, encoder_name, lang, n, rule)
            if cache_dir is not None and words is None else None)
    if path is not None and path.is_file():
        try:
            return load_vectors(path)
        except Exception:  # a damaged cache entry is rebuilt, never served
            log.warning("damaged encoder-space cache entry; rebuilding", extra={"path": str(path)})
    if encoder_factory is None:
        from models.text_encoders import load_text_encoder as encoder_factory
    encoder = encoder_factory(encoder_name)
    vocab = words if words is not None else encoder_vocabulary(lang, n, rule, frequencies=frequencies)
    start = time.perf_counter()
    vectors = np.ascontiguousarray(encoder.encode(vocab), dtype=np.float32)
    log.info("encoder space built", extra={"lang": lang, "words": len(vocab), "encoder": encoder_name,
                                           "seconds": round(time.perf_counter() - start, 2)})
    wv = WordVectors(vocab, vectors)
    if path is not None:
        save_vectors(path, wv)
    return wv


class EncoderSpaceBuilder:
    """Builds a group of encoder-derived spaces one language at a time and serves each as soon as it exists.

    Every built language is added to ``registry`` at once, with the identity mappings to the languages of
    the group already built, so a fresh start answers for the first languages while the others are still
    being embedded. Languages not built yet are *pending* in the registry (a request for one answers 503
    ``space_loading`` and moves it to the front of the queue). ``progress`` is a live dict for ``/readyz``.
    """

    def __init__(self, registry: Any, languages: list[str], *, n: int, encoder_name: str, cache_dir: Path | None,
                 normalize: str, storage_dtype: str, rule: PurityRule | None,
                 encoder_factory: Callable[[str], Any] | None = None,
                 frequencies: Callable[[str], Any] = wordfreq_frequencies):
        import threading

        self.registry = registry
        self.group = f"encoder:{encoder_name}"
        self.n, self.encoder_name, self.cache_dir = n, encoder_name, cache_dir
        self.normalize, self.storage_dtype, self.rule = normalize, storage_dtype, rule
        self.encoder_factory = encoder_factory
        # wordfreq keeps each reference table it loads (0.2-1.8 s each): loaded once per build, freed by close().
        self._frequencies = frequencies
        self._queue = list(dict.fromkeys(languages))
        self._lock = threading.Lock()
        self._started = time.perf_counter()
        self.built: list[str] = []
        self.failed: dict[str, str] = {}
        self.progress: dict[str, Any] = {"languages_built": 0, "languages_total": len(self._queue),
                                         "building": None, "seconds": 0.0, "built": [], "per_language_s": {}}
        registry.set_pending(self._queue, self.prioritize)

    def prioritize(self, lang: str) -> None:
        """Build ``lang`` next (a request is waiting for it)."""
        with self._lock:
            if lang in self._queue and self._queue[0] != lang:
                self._queue.remove(lang)
                self._queue.insert(0, lang)

    @property
    def remaining(self) -> int:
        return len(self._queue)

    def build_next(self) -> str | None:
        """Build and serve the next queued language; returns it (None when the queue is empty)."""
        from services.alignment.vectors import normalize as normalize_rows
        from services.serving.registry import identity_mapping
        from services.serving.space import WordSpace

        with self._lock:
            if not self._queue:
                return None
            lang = self._queue[0]
        self.progress["building"] = lang
        start = time.perf_counter()
        try:
            wv = build_encoder_vectors(lang, self.n, encoder_name=self.encoder_name, cache_dir=self.cache_dir,
                                       encoder_factory=self.encoder_factory, rule=self.rule,
                                       frequencies=self._frequencies)
            space = WordSpace.build(lang, wv.words, normalize_rows(wv.vectors, self.normalize), source=self.group,
                                    group=self.group, fingerprint=wv.fingerprint(), storage_dtype=self.storage_dtype)
            self.registry.add_space(space)
            # One multilingual encoder = one shared space: identity maps to every language built before.
            for other in self.built:
                o = self.registry.spaces[other]
                for s, t in ((space, o), (o, space)):
                    self.registry.install_mapping(s.lang, t.lang, identity_mapping(s.dim, s.fingerprint, t.fingerprint),
                                                  compute_csls=False)
            self.built.append(lang)
        except Unavailable as exc:  # no encoder: no language of the group can be built
            with self._lock:
                for other in self._queue:
                    self.failed[other] = str(exc)
                    self.registry.fail_pending(other, str(exc))
                self._queue.clear()
            raise
        except Exception as exc:  # one language failing (no word list, say) leaves the others served
            self.failed[lang] = f"{type(exc).__name__}: {exc}"
            self.registry.fail_pending(lang, self.failed[lang])
            log.exception("encoder space failed", extra={"lang": lang})
        finally:
            with self._lock:
                if lang in self._queue:
                    self._queue.remove(lang)
            seconds = round(time.perf_counter() - start, 2)
            self.progress.update(languages_built=len(self.built), building=None, built=list(self.built),
                                 seconds=round(time.perf_counter() - self._started, 2))
            self.progress["per_language_s"][lang] = seconds
            if self.failed:
                self.progress["failed"] = dict(self.failed)
        return lang

    def build(self, languages: list[str] | None = None, stop: Any = None) -> None:
        """Build until the queue is empty (or, with ``languages``, until those are built)."""
        wanted = set(languages) if languages is not None else None
        if languages is not None:
            self.progress["startup_languages"] = list(languages)
        while self._queue and not (stop is not None and stop.is_set()):
            if wanted is not None and not wanted & set(self._queue):
                break
            self.build_next()
        if not self._queue:
            self.close()

    def close(self) -> None:
        release_wordfreq_tables()
