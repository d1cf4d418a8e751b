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
2. **Relative frequency.** With zipf(w, M) the wordfreq Zipf frequency of w in language M, w is
   dropped from L when some reference language M ≠ L has ``zipf(w, M) − zipf(w, L) ≥ max_foreign_zipf``,
   i.e. w is at least 10^max_foreign_zipf times more frequent in M than in L: English text inside
   French corpora (``dog``: en 5.10, fr 3.66) goes, genuine shared words stay (``table``: en 5.05,
   fr 4.92; ``taxi``; ``paris``: fr above en; German ``hotel``: en 4.95, de 4.91). The reference
   languages are the served ones plus English (the language that leaks into every web corpus), among
   them those sharing a script with L (a word that passed the script test of French cannot be Russian).

``max_foreign_zipf`` = 1.0 was chosen on a dev split carved from the MUSE *train* dictionaries
(en→fr and en→de source words ranked 1,000–5,000; counting a dropped gold word as a miss) from
{0.5, 0.75, 1.0, 1.5}; it was fixed before any test figure was read (benchmarks/encoder_spaces.py).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

__all__ = ["PurityRule", "VocabularyReport", "script_mask", "foreign_mask", "pure_vocabulary", "scripts_overlap",
           "language_scripts", "DEFAULT_MAX_FOREIGN_ZIPF", "wordfreq_frequencies", "release_wordfreq_tables"]

DEFAULT_MAX_FOREIGN_ZIPF = 1.0

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


def foreign_mask(words: Sequence[str], lang: str, reference: Mapping[str, FrequencyTable], *,
                 max_foreign_zipf: float = DEFAULT_MAX_FOREIGN_ZIPF) -> tuple[np.ndarray, np.ndarray]:
    """(foreign, margin): ``foreign[i]`` when word i is ≥ 10^max_foreign_zipf times more frequent in a
    reference language than in ``lang``; ``margin[i]`` = the largest zipf(w, M) − zipf(w, lang).

    ``reference`` maps language → {word: frequency}; it must hold ``lang`` itself.
    """
    if lang not in reference:
        raise KeyError(f"reference frequencies must include the language itself ({lang!r})")
    own_table = reference[lang]
    own = _zipf(np.fromiter((own_table.get(w, 0.0) for w in words), dtype=np.float64, count=len(words)))
    margin = np.full(len(words), -np.inf)
    for other, table in reference.items():
        if other == lang:
            continue
        theirs = _zipf(np.fromiter((table.get(w, 0.0) for w in words), dtype=np.float64, count=len(words)))
        np.maximum(margin, theirs - own, out=margin)
    return margin >= max_foreign_zipf, margin


@dataclass(frozen=True)
class PurityRule:
    """How a served vocabulary is kept language-pure (see the module docstring)."""

    max_foreign_zipf: float | None = DEFAULT_MAX_FOREIGN_ZIPF  # None: no frequency test
    reference_languages: tuple[str, ...] = ("en",)
    scripts: bool = True

    def tag(self) -> str:
        """A stable string for cache keys."""
        return f"zipf={self.max_foreign_zipf}|ref={','.join(sorted(self.reference_languages))}|scripts={self.scripts}"


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
    if rule.max_foreign_zipf is not None:
        others = [m for m in dict.fromkeys(rule.reference_languages) if m != lang and scripts_overlap(m, lang)]
        reference = {lang: frequencies(lang)}
        for other in others:
            table = frequencies(other)
            if table:
                reference[other] = table
        if len(reference) > 1 and reference[lang]:
            foreign, margin = foreign_mask(words, lang, reference, max_foreign_zipf=rule.max_foreign_zipf)
            foreign &= keep
            report.dropped_foreign = int(foreign.sum())
            # The most clearly foreign words, for logs and /v1/spaces: what the rule removed.
            order = np.argsort(-np.where(foreign, margin, -np.inf), kind="stable")[:min(10, report.dropped_foreign)]
            report.examples_foreign = [words[i] for i in order]
            keep &= ~foreign
    report.words = [words[i] for i in np.flatnonzero(keep)[:n]]
    return report
