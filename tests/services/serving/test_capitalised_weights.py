"""Per-language capitalised-form weights (services/serving/encoder_spaces.py, "Per-language weights")."""

from __future__ import annotations

import numpy as np

from services.serving.encoder_spaces import (
    CAPITALISED_WEIGHTS,
    DEFAULT_CAPITALISED_WEIGHT,
    EncoderSpaceBuilder,
    build_encoder_vectors,
    capitalised_weight_for,
    encoder_space_path,
)


class StringEncoder:
    """A vector per distinct string (case-sensitive, like the real encoders)."""

    name, dim, languages = "strings", 8, ("*",)

    def vector(self, text: str) -> np.ndarray:
        v = np.random.default_rng(abs(hash(text)) % 2**32).standard_normal(self.dim).astype(np.float32)
        return v / np.linalg.norm(v)

    def encode(self, texts, batch_size=256):
        return np.stack([self.vector(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)


def mixed(enc: StringEncoder, word: str, w: float) -> np.ndarray:
    v = (1 - w) * enc.vector(word) + w * enc.vector(word[:1].upper() + word[1:])
    return v / np.linalg.norm(v)


def test_each_dev_language_has_its_own_weight_and_the_others_keep_the_shared_one():
    assert capitalised_weight_for("de") == 0.5  # German nouns are written capitalised
    assert capitalised_weight_for("ru") == 0.5
    assert capitalised_weight_for("en") == 0.375
    assert capitalised_weight_for("fr") == 0.125
    assert capitalised_weight_for("es") == capitalised_weight_for("ja") == DEFAULT_CAPITALISED_WEIGHT == 0.25
    assert set(CAPITALISED_WEIGHTS) == {"en", "fr", "de", "ru"}


def test_a_build_without_a_weight_uses_the_languages_own():
    enc = StringEncoder()
    for lang, word in (("de", "hund"), ("fr", "chien"), ("es", "perro")):
        wv = build_encoder_vectors(lang, 1, encoder_name="strings", cache_dir=None, encoder_factory=lambda n: enc,
                                   words=[word])
        np.testing.assert_allclose(wv.vectors[0], mixed(enc, word, capitalised_weight_for(lang)), rtol=1e-5, atol=1e-6)
    # An explicit weight still wins.
    wv = build_encoder_vectors("de", 1, encoder_name="strings", cache_dir=None, encoder_factory=lambda n: enc,
                               words=["hund"], capitalised_weight=0.25)
    np.testing.assert_allclose(wv.vectors[0], mixed(enc, "hund", 0.25), rtol=1e-5, atol=1e-6)


def test_the_new_weights_invalidate_the_cached_spaces_of_before(tmp_path):
    for lang in ("en", "fr", "de", "ru"):  # the files of the 0.25-for-all default are not read any more
        assert encoder_space_path(tmp_path, "e", lang, 20) != encoder_space_path(tmp_path, "e", lang, 20,
                                                                                 capitalised_weight=0.25)
    assert encoder_space_path(tmp_path, "e", "es", 20) == encoder_space_path(tmp_path, "e", "es", 20,
                                                                             capitalised_weight=0.25)


class FakeRegistry:
    def __init__(self):
        self.spaces = {}

    def set_pending(self, langs, prioritize):
        pass

    def add_space(self, space):
        self.spaces[space.lang] = space

    def install_mapping(self, *a, **k):
        pass

    def fail_pending(self, lang, why):
        raise AssertionError(why)


def test_the_server_builder_uses_each_languages_weight(tmp_path, monkeypatch):
    enc = StringEncoder()
    import services.serving.encoder_spaces as es

    monkeypatch.setattr(es, "encoder_vocabulary", lambda lang, n, rule=None, frequencies=None: ["hund", "haus"])
    registry = FakeRegistry()
    builder = EncoderSpaceBuilder(registry, ["de", "es"], n=2, encoder_name="strings", cache_dir=tmp_path,
                                  normalize="unit", storage_dtype="float32", rule=None,
                                  encoder_factory=lambda n: enc)
    builder.build()
    for lang in ("de", "es"):
        assert encoder_space_path(tmp_path, "strings", lang, 2, capitalised_weight=capitalised_weight_for(lang)).is_file()
    assert not encoder_space_path(tmp_path, "strings", "de", 2, capitalised_weight=0.25).exists()
