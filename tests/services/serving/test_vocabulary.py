"""Language-pure vocabularies: the script test, the relative-frequency test, and wordfreq's real lists."""

from __future__ import annotations

import numpy as np

from services.serving.vocabulary import (
    PurityRule,
    foreign_mask,
    language_scripts,
    pure_vocabulary,
    script_mask,
    scripts_overlap,
)

# Frequencies per billion words / 1e9 (zipf = log10(f) + 9): "dog" is English text inside French pages
# (en 5.1, fr 3.7), "table" a genuine shared word (en 5.05, fr 4.92), "chien" French only.
FREQ = {
    "fr": {"le": 1e-2, "chien": 7e-5, "dog": 4.6e-6, "table": 8.3e-5, "maison": 2e-4, "taxi": 1.7e-5},
    "en": {"the": 5e-2, "le": 3e-6, "dog": 1.26e-4, "table": 1.12e-4, "chien": 5.8e-7, "taxi": 1.5e-5},
    "ru": {"собака": 5e-5, "the": 2e-6},
}


def frequencies(lang):
    return FREQ.get(lang, {})


def test_an_english_word_in_a_french_list_is_dropped_and_a_shared_word_stays():
    words = ["le", "chien", "dog", "table", "maison", "taxi"]
    report = pure_vocabulary("fr", words, 10, PurityRule(1.0, ("en", "fr")), frequencies=frequencies)
    assert report.words == ["le", "chien", "table", "maison", "taxi"]
    assert report.dropped_foreign == 1 and report.examples_foreign == ["dog"]


def test_the_margin_is_the_zipf_difference_and_the_threshold_is_inclusive():
    words = ["dog", "table"]
    foreign, margin = foreign_mask(words, "fr", {"fr": FREQ["fr"], "en": FREQ["en"]}, max_foreign_zipf=1.0)
    np.testing.assert_allclose(margin, [np.log10(1.26e-4 / 4.6e-6), np.log10(1.12e-4 / 8.3e-5)], rtol=1e-9)
    assert foreign.tolist() == [True, False]
    # A threshold just below "table"'s margin drops it too: the rule is the number, not a list of words.
    foreign, _ = foreign_mask(words, "fr", {"fr": FREQ["fr"], "en": FREQ["en"]}, max_foreign_zipf=0.1)
    assert foreign.tolist() == [True, True]


def test_the_first_n_passing_words_are_kept_in_frequency_order():
    words = ["le", "dog", "chien", "table", "maison"]
    report = pure_vocabulary("fr", words, 2, PurityRule(1.0, ("en",)), frequencies=frequencies)
    assert report.words == ["le", "chien"] and report.scanned == 5


def test_no_frequency_test_without_a_threshold():
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
    report = pure_vocabulary("ru", ["собака", "the"], 5, PurityRule(1.0, ("en", "ru")), frequencies=frequencies)
    assert report.words == ["собака"] and report.dropped_script == 1 and report.dropped_foreign == 0


def test_real_wordfreq_lists_lose_english_words_but_keep_shared_ones():
    """The real lists (wordfreq ships them): the French and German top-20k hold English words the rule removes."""
    from services.serving.encoder_spaces import encoder_vocabulary
    from services.serving.vocabulary import release_wordfreq_tables

    rule = PurityRule(1.0, ("de", "en", "fr"))
    try:
        for lang, english, shared in (("fr", ["dog", "house", "the", "water"], ["table", "taxi", "paris"]),
                                      ("de", ["dog", "house", "the", "water"], ["hotel", "taxi", "team"])):
            raw = set(encoder_vocabulary(lang, 20000))
            pure = set(encoder_vocabulary(lang, 20000, rule))
            assert set(english) <= raw, f"{lang}: the raw list no longer holds these English words"
            assert not set(english) & pure, lang
            assert set(shared) <= pure, lang
            assert len(pure) == 20000
    finally:
        release_wordfreq_tables()
