"""Identical strings in a shared space (exclude_identical), case-folded lookups, multi-word input."""

from __future__ import annotations

import numpy as np
import pytest

from services.errors import InvalidInput
from services.serving.registry import SpaceRegistry, identity_mapping
from services.serving.space import WordSpace
from services.serving.translator import Translator


def _unit(X):
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(params=[0, 10], ids=["search", "tables"])
def shared(request):
    """One shared space (like one multilingual encoder): 'pain' is in both vocabularies (same point),
    'douleur' is near it; 'dog' / 'chien' are one point apart from the rest; German 'straße' and 'groß'."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((40, 16))
    pain, dog = base[0], base[1]
    en_words = ["pain", "dog"] + [f"e{i}" for i in range(38)]
    fr_words = ["pain", "douleur", "chien"] + [f"f{i}" for i in range(37)]
    de_words = ["straße", "groß", "hund"] + [f"d{i}" for i in range(37)]
    en = np.vstack([pain, dog, base[2:]])
    fr = np.vstack([pain, pain + 0.3 * base[3], dog + 0.05 * base[4], rng.standard_normal((37, 16))])
    de = np.vstack([rng.standard_normal((2, 16)), dog + 0.05 * base[5], rng.standard_normal((37, 16))])
    reg = SpaceRegistry(csls_knn=3, table_k=request.param)
    for lang, words, X in (("en", en_words, en), ("fr", fr_words, fr), ("de", de_words, de)):
        reg.add_space(WordSpace.build(lang, words, _unit(X), source="encoder:test", group="test"))
    for s, t in (("en", "fr"), ("en", "de"), ("de", "en")):
        reg.install_mapping(s, t, identity_mapping(16, s, t))
    if request.param:
        reg.request_all_tables()
        assert reg.build_requested_tables() == 6
    return reg


def test_identical_string_is_the_default_answer_and_can_be_excluded(shared):
    tr = Translator(shared)
    default = tr.translate("pain", "en", "fr", k=3, retrieval="nn")
    assert default["exclude_identical"] is False
    assert [t["word"] for t in default["translations"]][:2] == ["pain", "douleur"]
    out = tr.translate("pain", "en", "fr", k=3, retrieval="nn", exclude_identical=True)
    words = [t["word"] for t in out["translations"]]
    assert out["exclude_identical"] is True and "pain" not in words and words[0] == "douleur" and len(words) == 3
    # A word with no identical string in the target is answered as without the option.
    assert tr.translate("dog", "en", "fr", k=3, exclude_identical=True)["translations"] == \
        tr.translate("dog", "en", "fr", k=3)["translations"]


def test_batch_excludes_identical_strings_per_word(shared):
    tr = Translator(shared)
    out = tr.translate_batch(["pain", "dog", "Pain"], "en", "fr", k=2, retrieval="csls", exclude_identical=True)
    assert out["exclude_identical"] is True
    first = [[t["word"] for t in r["translations"]] for r in out["results"]]
    assert first[0][0] == "douleur" and "pain" not in first[0] and len(first[0]) == 2
    assert first[1][0] == "chien"
    assert first[2] == first[0]
    singles = [tr.translate(w, "en", "fr", k=2, retrieval="csls", exclude_identical=True)["translations"]
               for w in ("pain", "dog")]
    assert [r["translations"] for r in out["results"][:2]] == singles


def test_queries_are_casefolded_like_the_vocabulary(shared):
    tr = Translator(shared)
    for query in ("Straße", "STRASSE", "strasse"):
        assert tr.translate(query, "de", "en", k=1)["word"] == query
    assert shared.spaces["de"].row("GROSS") == shared.spaces["de"].row("groß") == 1
    assert shared.spaces["de"].rows(["Straße", "GROß", "nope"]).tolist() == [0, 1, -1]


def test_multi_word_input_is_refused_with_a_clear_message(shared):
    tr = Translator(shared)
    with pytest.raises(InvalidInput) as err:
        tr.translate("New York", "en", "fr")
    assert err.value.code == "multi_word" and err.value.detail["words"] == 2
    out = tr.translate_batch(["New York", "dog"], "en", "fr", k=1)["results"]
    assert out[0]["error"]["code"] == "multi_word" and out[0]["error"]["detail"]["field"] == "words.0"
    assert out[1]["translations"][0]["word"] == "chien"
