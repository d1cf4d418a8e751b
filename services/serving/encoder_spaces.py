"""Encoder-derived word spaces: a language's top-N ``wordfreq`` words embedded by a multilingual text encoder.

All languages embedded by one multilingual encoder live in one shared space, so the identity
maps between any two of them (the embedded default needs no download and no alignment).
Vocabularies are language-pure (services/serving/vocabulary.py: English text inside French web
corpora does not make ``dog`` a French word). Built once and cached on disk under
``cache_dir/encoder_spaces`` (atomic writes), keyed by encoder, language, N, the purity rule, the
capitalised-form weight and the wordfreq version.

**Word forms.** wordfreq folds case, so a served word is its lower-case string, but text writes words
capitalised too (sentence-initially; German nouns; names) and the encoders are case-sensitive: to USE
the string ``hund`` is a rarer, vaguer token sequence than ``Hund``. A word's vector is therefore
unit((1 − w)·unit(E(word)) + w·unit(E(Word))), its lower-case and capitalised forms mixed with one weight
``w`` (scripts without case give the same string twice, embedded once). w = 0.25 for every language was
first chosen by :func:`choose_capitalised_weight` on the dev splits (MUSE *train* source words ranked
1,000–5,000: en→fr, en→de, en→ru; the 1,000 most frequent source words of the Glavaš *train* 5k
dictionaries: en→fr, en→de, de→fr; served answers, P@1 CSLS; benchmarks/encoder_spaces.py ``--dev``) from
{0, 1/8, 1/4, 3/8, 1/2}: the weight with most dev hits among those that lose on no dev pair against
w = 0, before any test figure was read. P@1 76.8 → 77.2, 64.5 → 69.2, 55.3 → 59.3, 67.7 → 68.1,
50.0 → 53.2, 52.7 → 57.2 (3/8 had more hits in all but one fewer on Glavaš en→fr; 1/2 lost 2 points on
MUSE en→fr). The cost is a second encoder pass per language (the build seconds in /readyz).

**Per-language weights** (:data:`CAPITALISED_WEIGHTS`, issue 13 follow-up): how often a word is written
capitalised depends on the language (every German noun; sentence starts elsewhere), so each language with
dev dictionaries got its own ``w``, chosen on the same dev splits by a rule fixed before any row was read:
for each language alone (the others at 0.25), the value of {1/8, 1/4, 3/8, 1/2, 3/4} with the highest mean
dev P@1 CSLS over the six dev pairs; the combination was kept only if it beat w = 0.25 everywhere by
>= 0.5 mean dev P@1, without a higher mean dev echo and without a loss on MUSE en→de or en→ru. Chosen:
en 3/8, fr 1/8, de 1/2, ru 1/2 (mean dev P@1 64.03 → 65.48; echo 3.25 → 3.11 %; MUSE en→de 69.2 → 71.3,
en→ru 59.3 → 60.5, Glavaš en→de 53.2 → 55.7, de→fr 57.2 → 60.3). Other languages keep 0.25 (no dev
dictionary to choose with). No extra encoder pass: the build costs what it did. Tried on the same dev
splits and not kept: a context prompt in the word's language (``Das Wort „Hund“.``, mixed at 1/4 or 1/2 with
the bare forms: +0.04 mean dev P@1 at best, for twice the encoder time of a bare pass); removing the top
1-8 principal components per language (+0.2 at best over the per-language weights).
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

__all__ = ["encoder_vocabulary", "encoder_space_path", "build_encoder_vectors", "wordfreq_version",
           "embed_word_forms", "DEFAULT_CAPITALISED_WEIGHT", "CAPITALISED_WEIGHTS", "capitalised_weight_for",
           "CAPITALISED_WEIGHT_GRID", "choose_capitalised_weight",
           "BackgroundGate", "EncoderSpaceBuilder"]

_CACHE_FORMAT = 2
DEFAULT_CAPITALISED_WEIGHT = 0.25  # w of the capitalised form (module docstring, "Word forms"), languages not below
# Per-language w, chosen on the dev splits (module docstring, "Per-language weights").
CAPITALISED_WEIGHTS: dict[str, float] = {"en": 0.375, "fr": 0.125, "de": 0.5, "ru": 0.5}


def capitalised_weight_for(lang: str) -> float:
    """The default capitalised-form weight of ``lang`` (:data:`CAPITALISED_WEIGHTS`, else 0.25)."""
    return CAPITALISED_WEIGHTS.get(lang, CAPITALISED_WEIGHTS.get(lang.split("-")[0], DEFAULT_CAPITALISED_WEIGHT))
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


def _unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1.0)


CAPITALISED_WEIGHT_GRID = (0.0, 0.125, 0.25, 0.375, 0.5)


def choose_capitalised_weight(dev: dict[float, list[int]]) -> float:
    """w from dev results {w: [hits per dev pair]} (module docstring): most hits summed among the weights
    with at least w = 0's hits on every pair (the smaller on ties)."""
    base = dev[0.0]
    fair = [w for w, hits in dev.items() if all(h >= b for h, b in zip(hits, base))]
    return max(fair, key=lambda w: (sum(dev[w]), -w))


def capitalised(word: str) -> str:
    """The word as it starts a sentence (first character upper-cased, the rest kept)."""
    return word[:1].upper() + word[1:]


def embed_word_forms(encoder: Any, words: list[str], capitalised_weight: float = DEFAULT_CAPITALISED_WEIGHT
                     ) -> np.ndarray:
    """unit((1 − w)·unit(E(word)) + w·unit(E(Word))) per word (module docstring, "Word forms"); unit rows.

    Words whose capitalised form is the same string (no case in their script) are embedded once."""
    w = float(capitalised_weight)
    vectors = np.asarray(encoder.encode(words), dtype=np.float32)
    if not w or not len(words):
        return np.ascontiguousarray(vectors)
    vectors = _unit(vectors)
    forms = [capitalised(x) for x in words]
    cased = np.flatnonzero(np.fromiter((f != x for f, x in zip(forms, words)), dtype=bool, count=len(words)))
    if len(cased):
        vectors[cased] = (1.0 - w) * vectors[cased] + w * _unit(encoder.encode([forms[i] for i in cased]))
    return np.ascontiguousarray(_unit(vectors), dtype=np.float32)


def encoder_space_path(cache_dir: Path, encoder_name: str, lang: str, n: int, rule: PurityRule | None = None,
                       capitalised_weight: float | None = None) -> Path:
    """Cache file for (encoder, language, N, purity rule, capitalised-form weight, wordfreq version);
    ``capitalised_weight`` None = the language's default (:func:`capitalised_weight_for`)."""
    if capitalised_weight is None:
        capitalised_weight = capitalised_weight_for(lang)
    rule_tag = rule.tag() if rule is not None else "raw"
    forms = f"|cap={float(capitalised_weight):g}" if capitalised_weight else ""  # w = 0: the files of before
    tag = hashlib.sha256(f"{_CACHE_FORMAT}|{encoder_name}|{lang}|{n}|{rule_tag}|{wordfreq_version()}{forms}".encode()
                         ).hexdigest()[:12]
    return Path(cache_dir) / "encoder_spaces" / f"{_slug(encoder_name)}-{lang}-{n}-{tag}.npy"


def build_encoder_vectors(lang: str, n: int, *, encoder_name: str, cache_dir: Path | None,
                          encoder_factory: Callable[[str], Any] | None = None,
                          words: list[str] | None = None, rule: PurityRule | None = None,
                          frequencies: Callable[[str], Any] = wordfreq_frequencies,
                          capitalised_weight: float | None = None) -> WordVectors:
    """Word vectors of the top-``n`` words of ``lang`` under ``encoder_name`` (unit rows; cached on disk).

    ``encoder_factory(name)`` defaults to :func:`models.text_encoders.load_text_encoder`;
    ``words`` overrides the wordfreq vocabulary (tests); ``rule`` keeps it language-pure
    (``frequencies(lang)`` gives the word frequencies the rule compares); ``capitalised_weight`` mixes in
    the capitalised forms (:func:`embed_word_forms`; None = the language's default, :func:`capitalised_weight_for`).
    """
    if capitalised_weight is None:
        capitalised_weight = capitalised_weight_for(lang)
    path = (encoder_space_path(cache_dir, encoder_name, lang, n, rule, capitalised_weight)
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
    vectors = embed_word_forms(encoder, vocab, capitalised_weight)
    log.info("encoder space built", extra={"lang": lang, "words": len(vocab), "encoder": encoder_name,
                                           "capitalised_weight": capitalised_weight,
                                           "seconds": round(time.perf_counter() - start, 2)})
    wv = WordVectors(vocab, vectors)
    if path is not None:
        save_vectors(path, wv)
    return wv


class BackgroundGate:
    """Background work no request waits for yields the cores to the jobs of a worker on the same machine.

    ``vislex serve`` runs one worker beside the API. After a fresh start the API's background thread computes
    CSLS r_S for every pair and builds the lazy languages for a minute or two; a job submitted meanwhile
    shared the 2 cores with it (the README's ``procrustes+l1`` example: ~55 s alone, ~105 s then). Between
    two units of that work, :meth:`wait` blocks while ``busy()`` (a job is queued or running), polling every
    ``poll_s``. It returns at once when ``stop`` is set or :meth:`wake` is called (a request waits for a
    language), and waits ``max_wait_s`` in all at most, so a long training job cannot keep the lazy languages
    from ever being built. ``busy`` errors count as not busy.
    """

    def __init__(self, busy: Callable[[], bool], *, stop: Any = None, poll_s: float = 0.5,
                 max_wait_s: float = 300.0):
        import threading

        self.busy, self.stop, self.poll_s = busy, stop, float(poll_s)
        self.budget_s = float(max_wait_s)
        self.waited_s = 0.0
        self._wake = threading.Event()

    def wake(self) -> None:
        self._wake.set()

    def _busy(self) -> bool:
        try:
            return bool(self.busy())
        except Exception:  # noqa: BLE001 - no answer (Redis away): nothing to yield to
            return False

    def wait(self, unless: Callable[[], bool] | None = None) -> float:
        """Block while a job runs (see the class docstring); returns the seconds waited."""
        start = time.perf_counter()
        while self.waited_s + (time.perf_counter() - start) < self.budget_s:
            if (self.stop is not None and self.stop.is_set()) or (unless is not None and unless()):
                break
            if not self._busy():
                break
            if self._wake.wait(self.poll_s):
                self._wake.clear()
                if unless is None:
                    break
        waited = time.perf_counter() - start
        self.waited_s += waited
        return waited


class EncoderSpaceBuilder:
    """Builds a group of encoder-derived spaces one language at a time and serves each as soon as it exists.

    Every built language is added to ``registry`` at once, with the identity mappings to the languages of
    the group already built, so a fresh start answers for the first languages while the others are still
    being embedded. Languages not built yet are *pending* in the registry (a request for one answers 503
    ``space_loading`` and moves it to the front of the queue). ``progress`` is a live dict for ``/readyz``.
    With a ``gate``, :meth:`build_next` (``background=True``) first waits for the jobs of the embedded worker,
    unless a request waits for a queued language.
    """

    def __init__(self, registry: Any, languages: list[str], *, n: int, encoder_name: str, cache_dir: Path | None,
                 normalize: str, storage_dtype: str, rule: PurityRule | None,
                 encoder_factory: Callable[[str], Any] | None = None,
                 frequencies: Callable[[str], Any] = wordfreq_frequencies,
                 capitalised_weight: float | None = None, gate: BackgroundGate | None = None):
        import threading

        self.registry = registry
        # None: each language's default weight (capitalised_weight_for); a number: that weight for every language
        self.capitalised_weight = None if capitalised_weight is None else float(capitalised_weight)
        self.gate = gate
        self._requested: set[str] = set()  # languages a request asked for (503 space_loading), not built yet
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
            if lang in self._queue:
                self._requested.add(lang)
                if self._queue[0] != lang:
                    self._queue.remove(lang)
                    self._queue.insert(0, lang)
        if self.gate is not None:
            self.gate.wake()

    def _request_waiting(self) -> bool:
        with self._lock:
            return bool(self._requested.intersection(self._queue))

    @property
    def remaining(self) -> int:
        return len(self._queue)

    def build_next(self, background: bool = False) -> str | None:
        """Build and serve the next queued language; returns it (None when the queue is empty).

        ``background``: first yield to the embedded worker's jobs through the gate (class docstring)."""
        from services.alignment.vectors import normalize as normalize_rows
        from services.serving.registry import identity_mapping
        from services.serving.space import WordSpace

        if background and self.gate is not None and self._queue:
            self.progress["waiting_for_jobs"] = True
            try:
                self.gate.wait(unless=self._request_waiting)
            finally:
                self.progress["waiting_for_jobs"] = False
        with self._lock:
            if not self._queue:
                return None
            lang = self._queue[0]
        self.progress["building"] = lang
        start = time.perf_counter()
        try:
            wv = build_encoder_vectors(lang, self.n, encoder_name=self.encoder_name, cache_dir=self.cache_dir,
                                       encoder_factory=self.encoder_factory, rule=self.rule,
                                       frequencies=self._frequencies, capitalised_weight=self.capitalised_weight)
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
                self._requested.discard(lang)
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
