"""Translator: batch order, per-word errors, limits, normalisation, Redis cache and its invalidation."""

from __future__ import annotations

import numpy as np
import pytest

from services.errors import InvalidInput, NotFound, PayloadTooLarge
from services.infra.redis import connect
from services.observability import CACHE_EVENTS
from services.serving.cache import TranslationCache
from services.serving.registry import SpaceRegistry
from services.serving.space import WordSpace
from services.serving.translator import Translator

from tests.services.serving.serving_fixtures import LinearMapping


@pytest.fixture()
def cache(redis_client):
    return TranslationCache(redis_client, ttl_s=60)


def test_batch_keeps_input_order_and_reports_bad_words(registry):
    tr = Translator(registry, max_batch_words=10, max_word_length=8)
    out = tr.translate_batch(["w5", "nope", "w1", "", "w5", "x" * 9], "en", "fr", k=2)
    results = out["results"]
    assert [r["word"] for r in results] == ["w5", "nope", "w1", "", "w5", "x" * 9]
    assert results[0]["translations"][0]["word"] == "m5" and len(results[0]["translations"]) == 2
    assert results[1]["error"]["code"] == "word_not_found"
    assert results[2]["translations"][0]["word"] == "m1"
    assert results[3]["error"]["code"] == "invalid_input"
    assert results[4]["translations"] == results[0]["translations"]
    assert results[5]["error"]["code"] == "invalid_input"
    assert out["mapping_version"] == "v1"


def test_batch_equals_single_word_results(registry):
    tr = Translator(registry)
    words = [f"w{i}" for i in range(0, 200, 2)]  # 100 words: the batch is searched in per-core slices
    batch = tr.translate_batch(words, "en", "fr", k=4, retrieval="csls")["results"]
    singles = [tr.translate(w, "en", "fr", k=4, retrieval="csls")["translations"] for w in words]
    assert [r["translations"] for r in batch] == singles


def test_limits_and_validation(registry):
    tr = Translator(registry, max_batch_words=3, max_word_length=5)
    with pytest.raises(PayloadTooLarge):
        tr.translate_batch(["w1"] * 4, "en", "fr")
    for kwargs in ({"k": 0}, {"k": 101}, {"retrieval": "bogus"}):
        with pytest.raises(InvalidInput):
            tr.translate("w1", "en", "fr", **kwargs)
    with pytest.raises(InvalidInput):
        tr.translate("w1", "en", "en")
    with pytest.raises(InvalidInput):
        tr.translate("  ", "en", "fr")
    with pytest.raises(InvalidInput):
        tr.translate("w123456", "en", "fr")
    with pytest.raises(NotFound) as exc:
        tr.translate("zzz", "en", "fr")
    assert exc.value.code == "word_not_found"


def test_words_are_matched_after_nfc_and_case_folding():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, 4)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    reg = SpaceRegistry(csls_knn=1)
    reg.add_space(WordSpace.build("fr", ["café", "chien", "chat"], X, source="t"))  # NFC, lowercased
    reg.add_space(WordSpace.build("en", ["coffee", "dog", "cat"], X, source="t"))
    reg.install_mapping("fr", "en", LinearMapping(np.eye(4), "id"))
    tr = Translator(reg)
    decomposed = "Cafe\u0301"  # NFD + capital
    assert tr.translate(decomposed, "fr", "en", k=1)["translations"][0]["word"] == "coffee"
    assert tr.translate(" CHIEN ", "fr", "en", k=1)["translations"][0]["word"] == "dog"


def test_cache_hits_and_counters(registry, cache):
    tr = Translator(registry, cache)
    hits, misses = CACHE_EVENTS.labels("hit"), CACHE_EVENTS.labels("miss")
    h0, m0 = hits._value.get(), misses._value.get()
    first = tr.translate("w7", "en", "fr", k=3)
    second = tr.translate("W7", "en", "fr", k=3)  # same normalised key
    assert first["cached"] is False and second["cached"] is True
    assert second["translations"] == first["translations"]
    assert hits._value.get() - h0 == 1 and misses._value.get() - m0 == 1
    # A different k or retrieval is a different entry.
    assert tr.translate("w7", "en", "fr", k=2)["cached"] is False
    assert tr.translate("w7", "en", "fr", k=3, retrieval="nn")["cached"] is False


def test_batch_uses_cache_and_fills_it(registry, cache):
    tr = Translator(registry, cache)
    tr.translate("w2", "en", "fr", k=2)
    out = tr.translate_batch(["w1", "w2", "w3"], "en", "fr", k=2)["results"]
    assert [r["cached"] for r in out] == [False, True, False]
    again = tr.translate_batch(["w3", "w1"], "en", "fr", k=2)["results"]
    assert [r["cached"] for r in again] == [True, True]
    assert again[1]["translations"] == out[0]["translations"]


def test_new_mapping_version_never_serves_stale_entries(registry, cache, planted):
    _, _, R, *_ = planted
    tr = Translator(registry, cache)
    assert tr.translate("w4", "en", "fr", k=1)["translations"][0]["word"] == "m4"
    assert tr.translate("w4", "en", "fr", k=1)["cached"] is True
    perm = np.roll(np.eye(R.shape[0], dtype=np.float32), 1, axis=0)
    registry.install_mapping("en", "fr", LinearMapping(R @ perm, "v2"))
    after = tr.translate("w4", "en", "fr", k=1)
    assert after["cached"] is False and after["mapping_version"] == "v2"
    batch = tr.translate_batch(["w4"], "en", "fr", k=1)
    assert batch["results"][0]["cached"] is True and batch["mapping_version"] == "v2"
    assert batch["results"][0]["translations"] == after["translations"]


def test_dead_redis_degrades_to_misses(registry):
    dead = TranslationCache(connect("redis://127.0.0.1:1/0", timeout=0.2))
    tr = Translator(registry, dead)
    assert tr.translate("w1", "en", "fr", k=1)["translations"][0]["word"] == "m1"
    assert not dead.available  # paused after the first failure: no timeout per request
    assert tr.translate_batch(["w1"], "en", "fr", k=1)["results"][0]["cached"] is False


def test_neighbors_exclude_the_word(registry):
    out = Translator(registry).neighbors("en", "w0", k=3)
    assert len(out["neighbors"]) == 3 and all(n["word"] != "w0" for n in out["neighbors"])
    scores = [n["score"] for n in out["neighbors"]]
    assert scores == sorted(scores, reverse=True)
