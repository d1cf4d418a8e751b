"""Language-pure vocabularies: the script test, the relative-frequency test, and wordfreq's real lists."""

from __future__ import annotations

import numpy as np
import pytest

from services.serving.vocabulary import (
    PurityRule,
    foreign_mask,
    language_scripts,
    leak_level,
    pure_vocabulary,
    script_mask,
    scripts_overlap,
)

def _tables():
    """Word frequencies (fractions; zipf = log10(f) + 9), most frequent first as wordfreq's are.

    English text leaks into French corpora at 1 % of its frequency (zipf −2) and Italian at 0.04 %
    (−3.4): the 60 English-only and Italian-only filler words say so. ``dog`` is English text inside
    French pages (en 5.1, fr 3.66), ``table`` a genuine shared word (en 5.05, fr 4.92), ``non`` a word of
    French and Italian alike, ten times more frequent in Italian (fr 6.08, it 7.16).
    """
    en = {f"e{i}": 1e-3 / (i + 1) for i in range(60)}
    it = {f"i{i}": 1e-3 / (i + 1) for i in range(60)}
    fr = {"le": 1e-2, "non": 1.2e-3, "maison": 2e-4, "chien": 7e-5, "table": 8.3e-5, "dog": 4.6e-6}
    fr.update({w: f * 1e-2 for w, f in en.items()})
    fr.update({w: f * 10 ** -3.4 for w, f in it.items()})
    en.update({"dog": 1.26e-4, "table": 1.12e-4, "le": 3e-6, "chien": 5.8e-7, "non": 1e-5})
    it.update({"non": 1.45e-2, "le": 1e-3, "table": 1e-7})
    return {lang: dict(sorted(t.items(), key=lambda kv: -kv[1])) for lang, t in (("en", en), ("fr", fr), ("it", it))}


FREQ = _tables()


def frequencies(lang):
    return FREQ.get(lang, {})


def test_leak_level_is_measured_from_the_other_language_s_frequent_words():
    assert leak_level(FREQ["fr"], FREQ["en"]) == pytest.approx(-2.0, abs=0.01)
    assert leak_level(FREQ["fr"], FREQ["it"]) == pytest.approx(-3.4, abs=0.01)


def test_an_english_word_in_a_french_list_is_dropped_and_shared_words_stay():
    words = ["le", "non", "maison", "chien", "table", "dog"]
    report = pure_vocabulary("fr", words, 10, PurityRule(0.75, ("en", "fr", "it")), frequencies=frequencies)
    assert report.words == ["le", "non", "maison", "chien", "table"]
    assert report.dropped_foreign == 1 and report.examples_foreign == ["dog"]


def test_the_excess_over_leakage_and_an_inclusive_margin():
    words = ["dog", "table", "non"]
    foreign, excess = foreign_mask(words, "fr", {k: FREQ[k] for k in ("fr", "en", "it")}, margin=0.75)
    leak_en, leak_it = leak_level(FREQ["fr"], FREQ["en"]), leak_level(FREQ["fr"], FREQ["it"])
    z = lambda lang, w: np.log10(FREQ[lang].get(w, 1e-12)) + 9  # noqa: E731  (absent: the rule's floor)
    expected = [min(z("fr", w) - z("en", w) - leak_en, z("fr", w) - z("it", w) - leak_it) for w in words]
    np.testing.assert_allclose(excess, expected, rtol=1e-9)
    assert foreign.tolist() == [True, False, False]
    # "non" is 10x more frequent in Italian, yet far above what Italian text leaking into French explains
    # (a rule on raw frequency ratios would drop it); a margin above table's excess drops table too.
    foreign, _ = foreign_mask(words, "fr", {k: FREQ[k] for k in ("fr", "en", "it")}, margin=excess[1] + 0.01)
    assert foreign.tolist() == [True, True, False]


def test_the_first_n_passing_words_are_kept_in_frequency_order():
    words = ["le", "dog", "chien", "table", "maison"]
    report = pure_vocabulary("fr", words, 2, PurityRule(0.75, ("en",)), frequencies=frequencies)
    assert report.words == ["le", "chien"] and report.scanned == 5


def test_no_frequency_test_without_a_margin():
    report = pure_vocabulary("fr", ["dog", "chien"], 5, PurityRule(None, ("en",)), frequencies=frequencies)
    assert report.words == ["dog", "chien"]


def test_script_rule_drops_foreign_script_numbers_and_japanese_fragments():
    assert script_mask(["собака", "the", "2019", "№", "iphone-х"], "ru").tolist() == [True, False, False, False, False]
    assert script_mask(["chien", "été", "l'eau", "собака", "12"], "fr").tolist() == [True, True, True, False, False]
    assert script_mask(["犬", "ネコ", "食べる", "の", "dog"], "ja").tolist() == [True, True, True, False, False]
    assert script_mask(["狗", "中国", "dog"], "zh").tolist() == [True, True, False]
    assert language_scripts("fr") == ("LATIN",) and language_scripts("zh-TW") == ("CJK",)


def test_only_languages_sharing_a_script_are_compared():
    assert scripts_overlap("fr", "en") and scripts_overlap("ja", "zh") and not scripts_overlap("ru", "en")
    # "the" is far more frequent in English than in Russian, but the script test is what removes it from ru;
    # a Cyrillic word is never compared with English frequencies.
    report = pure_vocabulary("ru", ["собака", "the"], 5, PurityRule(0.75, ("en", "ru")), frequencies=frequencies)
    assert report.words == ["собака"] and report.dropped_script == 1 and report.dropped_foreign == 0


def test_real_wordfreq_lists_lose_english_words_but_keep_shared_ones():
    """The real lists (wordfreq ships them): the French and German top-20k hold English words the rule removes."""
    from services.serving.encoder_spaces import encoder_vocabulary
    from services.serving.vocabulary import release_wordfreq_tables

    rule = PurityRule(0.75, ("de", "en", "es", "fr", "it", "pt"))
    try:
        for lang, english, shared in (("fr", ["dog", "house", "the", "water"], ["table", "taxi", "paris", "non", "eu"]),
                                      ("de", ["dog", "house", "the", "water"], ["hotel", "taxi", "team"])):
            raw = set(encoder_vocabulary(lang, 20000))
            pure = set(encoder_vocabulary(lang, 20000, rule))
            assert set(english) <= raw, f"{lang}: the raw list no longer holds these English words"
            assert not set(english) & pure, lang
            assert set(shared) <= pure, lang
            assert len(pure) == 20000
    finally:
        release_wordfreq_tables()
