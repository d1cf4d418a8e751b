"""Language-pure served vocabularies: a word enters language L's space only when it is a word of L.

Why: ``wordfreq``'s lists are counted over web text, and French or German pages carry English
text, so the French top-20k list holds ``dog``, ``house``, ``the``. In one shared encoder space an
identical string has cosine 1.0 with itself, so such a word answers every query for it
(``dog → dog``): on the frequent end of MUSE en→fr over a quarter of the top-1 answers were the
query string (benchmarks/encoder_spaces.py, "echo rate").

The rule (two tests, both on data any language has; no word lists):

1. **Script.** Every letter of the word belongs to a script of L (Latin for fr, Cyrillic for ru,
   Han and kana for ja, ...), and the word has at least one letter: ``the`` leaves the Russian list,
   ``2019`` and ``№`` leave every list. Japanese lists are morphemes: a lone hiragana character is a
   particle or an inflection fragment (``の``, ``て``, ``し``), not a word to translate, and is dropped.
2. **Leakage.** Text of language M leaks into L's corpora at some rate; a word of M that is not a word
   of L then has, in L, about M's frequency times that rate. The rate is measured, not assumed:
   ``leak(L←M)`` = the median, over M's 1,000 most frequent words, of zipf(w, L) − zipf(w, M) (zipf =
   log10 frequency per billion words, wordfreq). Measured: English leaks into French at −2.0 (1 % of
   its frequency), Italian, Spanish or German at −3.4 to −3.7. A word stays in L only when, for every
   reference language M, ``zipf(w, L) ≥ zipf(w, M) + leak(L←M) + margin``: it is at least 10^margin
   times more frequent in L than leakage from M explains. English text in French (``dog``: fr 3.66,
   en 5.10 − 2.01 = 3.09 leaked, excess 0.57) goes; genuine shared words stay (``table``: excess 1.88;
   German ``hotel``: 1.79), and so do words shared with a related language, however much more frequent
   they are there (French ``non``: it 7.16 − 3.38 leaked = 3.78 vs fr 6.08; ``es``, ``te``, ``eu``).
   The reference languages are the served ones plus English (which leaks into every web corpus), among
   them those sharing a script with L (a word that passed the script test of French cannot be Russian).

``margin`` = 0.75 was chosen on dev splits carved from training dictionaries — MUSE *train* en→fr and
en→de source words ranked 1,000–5,000, and the 1,000 most frequent source words of the Glavaš *train*
5k dictionaries (the frequent end) — as the value with most P@1 CSLS hits (served answers, a dropped gold
word counting as a miss) among {0.5, 0.75, 1.0, 1.25, 1.5}, ties broken by the lower echo rate
(0.5 and 0.75: 6,388 hits; 1.0: 6,363; 1.5: 5,898), before any test figure was read.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

__all__ = ["PurityRule", "VocabularyReport", "script_mask", "foreign_mask", "leak_level", "pure_vocabulary",
           "scripts_overlap", "language_scripts", "DEFAULT_LEAK_MARGIN", "wordfreq_frequencies",
           "release_wordfreq_tables"]

DEFAULT_LEAK_MARGIN = 0.75
LEAK_SAMPLE_WORDS = 1000  # M's most frequent words whose frequency in L measures the leakage

# Unicode script names (the first word of a letter's character name) per language. Languages not
# listed are written in Latin script; "*" turns the script test off for a language.
_SCRIPTS: dict[str, tuple[str, ...]] = {
    "ru": ("CYRILLIC",), "uk": ("CYRILLIC",), "bg": ("CYRILLIC",), "mk": ("CYRILLIC",), "sr": ("CYRILLIC",),
    "be": ("CYRILLIC",), "kk": ("CYRILLIC",), "el": ("GREEK",), "he": ("HEBREW",),
    "ar": ("ARABIC",), "fa": ("ARABIC",), "ur": ("ARABIC",),
    "hi": ("DEVANAGARI",), "mr": ("DEVANAGARI",), "ne": ("DEVANAGARI",), "bn": ("BENGALI",), "ta": ("TAMIL",),
    "th": ("THAI",), "ko": ("HANGUL",),
    # Japanese mixes kanji (CJK unified ideographs) with both kana; the long sound mark is KATAKANA-HIRAGANA.
    "ja": ("CJK", "HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA"),
    "zh": ("CJK",), "zh-TW": ("CJK",),
    "sh": ("*",),  # Serbo-Croatian: Latin and Cyrillic
}


def language_scripts(lang: str) -> tuple[str, ...]:
    """The Unicode scripts whose letters a word of ``lang`` may use (Latin unless listed)."""
    return _SCRIPTS.get(lang, _SCRIPTS.get(lang.split("-")[0], ("LATIN",)))


@lru_cache(maxsize=65536)
def _letter_script(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return name.split(" ", 1)[0] if name else ""


def _script_ok(word: str, scripts: tuple[str, ...], lang: str) -> bool:
    if word.isascii():  # most words of Latin-script lists: no Unicode lookups needed
        return ("LATIN" in scripts or scripts == ("*",)) and any(c.isalpha() for c in word)
    letters = [c for c in word if unicodedata.category(c).startswith("L")]
    if not letters:
        return False
    if lang == "ja" and len(word) == 1 and _letter_script(word) == "HIRAGANA":
        return False  # a particle or inflection fragment of the morpheme list
    if scripts == ("*",):
        return True
    return all(_letter_script(c) in scripts for c in letters)


def script_mask(words: Sequence[str], lang: str) -> np.ndarray:
    """True where every letter of the word is in ``lang``'s script(s) and there is at least one letter."""
    scripts = language_scripts(lang)
    return np.fromiter((_script_ok(w, scripts, lang) for w in words), dtype=bool, count=len(words))


def scripts_overlap(a: str, b: str) -> bool:
    sa, sb = language_scripts(a), language_scripts(b)
    return "*" in sa or "*" in sb or bool(set(sa) & set(sb))


FrequencyTable = Mapping[str, float]


def _zipf(freqs: np.ndarray) -> np.ndarray:
    # Zipf = log10(frequency per billion words); absent words get a floor far below any listed word.
    return np.log10(np.maximum(freqs, 1e-12)) + 9.0


def _zipfs(table: FrequencyTable, words: Sequence[str]) -> np.ndarray:
    return _zipf(np.fromiter((table.get(w, 0.0) for w in words), dtype=np.float64, count=len(words)))


def leak_level(lang_table: FrequencyTable, other_table: FrequencyTable, *,
               sample: int = LEAK_SAMPLE_WORDS) -> float:
    """leak(L←M): median over M's ``sample`` most frequent words of zipf(w, L) − zipf(w, M).

    Frequency tables are ordered most frequent first (wordfreq's are). Most of M's frequent words are not
    words of L, so the median is the rate at which M's text shows up in L's corpora.
    """
    top = [w for _, w in zip(range(sample), other_table)]
    if not top:
        return -np.inf
    return float(np.median(_zipfs(lang_table, top) - _zipfs(other_table, top)))


def foreign_mask(words: Sequence[str], lang: str, reference: Mapping[str, FrequencyTable], *,
                 margin: float = DEFAULT_LEAK_MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """(foreign, excess): ``excess[i]`` = min over reference languages M of zipf(w, lang) − (zipf(w, M) +
    leak(lang←M)), how far word i's frequency in ``lang`` is above what leakage from M explains;
    ``foreign[i]`` when that is below ``margin``.

    ``reference`` maps language → {word: frequency} (most frequent first); it must hold ``lang`` itself.
    """
    if lang not in reference:
        raise KeyError(f"reference frequencies must include the language itself ({lang!r})")
    own = _zipfs(reference[lang], words)
    excess = np.full(len(words), np.inf)
    for other, table in reference.items():
        if other == lang:
            continue
        leaked = _zipfs(table, words) + leak_level(reference[lang], table)
        np.minimum(excess, own - leaked, out=excess)
    return excess < margin, excess


@dataclass(frozen=True)
class PurityRule:
    """How a served vocabulary is kept language-pure (see the module docstring)."""

    leak_margin: float | None = DEFAULT_LEAK_MARGIN  # None: no frequency test
    reference_languages: tuple[str, ...] = ("en",)
    scripts: bool = True

    def tag(self) -> str:
        """A stable string for cache keys."""
        return f"leak={self.leak_margin}|ref={','.join(sorted(self.reference_languages))}|scripts={self.scripts}"


@dataclass
class VocabularyReport:
    lang: str
    words: list[str]
    scanned: int
    dropped_script: int = 0
    dropped_foreign: int = 0
    examples_foreign: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"lang": self.lang, "words": len(self.words), "scanned": self.scanned,
                "dropped_script": self.dropped_script, "dropped_foreign": self.dropped_foreign,
                "examples_foreign": self.examples_foreign}


def wordfreq_frequencies(lang: str) -> dict[str, float]:
    """wordfreq's whole frequency table of ``lang`` (word → frequency); {} when wordfreq lacks the language.

    wordfreq keeps every table it loaded (50-100 MB each): :func:`release_wordfreq_tables` frees them."""
    import wordfreq

    if lang not in wordfreq.available_languages():
        return {}
    return wordfreq.get_frequency_dict(lang)


def release_wordfreq_tables() -> None:
    """Drop the frequency tables and lists wordfreq cached (after a build; a long-lived server needs none)."""
    import wordfreq

    for cached in (wordfreq.get_frequency_dict, wordfreq.get_frequency_list, wordfreq.top_n_list):
        cached.cache_clear()


def pure_vocabulary(lang: str, candidates: Iterable[str], n: int, rule: PurityRule, *,
                    frequencies: Callable[[str], FrequencyTable] = wordfreq_frequencies) -> VocabularyReport:
    """The first ``n`` of ``candidates`` (most frequent first) that pass ``rule`` for language ``lang``."""
    words = list(candidates)
    keep = script_mask(words, lang) if rule.scripts else np.ones(len(words), dtype=bool)
    report = VocabularyReport(lang, [], len(words), dropped_script=int((~keep).sum()))
    if rule.leak_margin is not None:
        others = [m for m in dict.fromkeys(rule.reference_languages) if m != lang and scripts_overlap(m, lang)]
        reference = {lang: frequencies(lang)}
        for other in others:
            table = frequencies(other)
            if table:
                reference[other] = table
        if len(reference) > 1 and reference[lang]:
            foreign, excess = foreign_mask(words, lang, reference, margin=rule.leak_margin)
            foreign &= keep
            report.dropped_foreign = int(foreign.sum())
            # The most clearly foreign words, for the build log: what the rule removed.
            order = np.argsort(np.where(foreign, excess, np.inf), kind="stable")[:min(10, report.dropped_foreign)]
            report.examples_foreign = [words[i] for i in order]
            keep &= ~foreign
    report.words = [words[i] for i in np.flatnonzero(keep)[:n]]
    return report
