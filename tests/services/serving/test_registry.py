"""SpaceRegistry: planted mappings, exact CSLS, atomic version swaps, Redis-published mappings."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from services.errors import InvalidInput, NotFound
from services.serving.registry import SpaceRegistry
from services.serving.space import WordSpace
from services.serving.translator import Translator

from tests.services.serving.serving_fixtures import LinearMapping, ShiftTargetsMapping, unit


def brute_force_csls(Xm, Y, k_nn, queries, k):
    """CSLS by the definition (methods.md): 2cos - r_S(y), r_S over ALL mapped sources."""
    sim = Y @ Xm.T
    r_s = np.sort(sim, axis=1)[:, -k_nn:].mean(axis=1)
    scores = 2 * (Xm[queries] @ Y.T) - r_s[None, :]
    order = np.argsort(-scores, axis=1)[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def test_planted_mapping_translates_word_i_to_word_i(registry, planted):
    tr = Translator(registry)
    for retrieval in ("nn", "csls"):
        out = tr.translate_batch(["w0", "w17", "w199"], "en", "fr", k=1, retrieval=retrieval)
        assert [r["translations"][0]["word"] for r in out["results"]] == ["m0", "m17", "m199"]


def test_csls_equals_brute_force(registry, planted):
    en, fr, R, _, fr_words = planted
    Xm = unit(en @ R)
    queries = np.arange(0, 200, 7)
    want_idx, want_scores = brute_force_csls(Xm, fr, 5, queries, 10)
    state = registry.ensure_csls("en", "fr")
    scores, rows = state.index.search(state.mapped_source[queries], 10, state.column)
    np.testing.assert_array_equal(rows, want_idx)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


def test_nn_equals_cosine_top_k(registry, planted):
    en, fr, R, *_ = planted
    state = registry.pair("en", "fr")
    scores, rows = state.index.search(state.mapped_source[:5], 3, None)
    cos = unit(en[:5] @ R) @ fr.T
    np.testing.assert_array_equal(rows, np.argsort(-cos, axis=1)[:, :3])
    np.testing.assert_allclose(scores, np.sort(cos, axis=1)[:, ::-1][:, :3], atol=1e-5)


def test_unknown_language_and_pair_name_what_exists(registry):
    with pytest.raises(NotFound) as exc:
        registry.pair("en", "de")
    assert exc.value.code == "space_not_found" and exc.value.detail["languages"] == ["en", "fr"]
    with pytest.raises(NotFound) as exc:
        registry.pair("fr", "en")
    assert exc.value.code == "pair_not_found" and exc.value.detail["pairs"] == ["en-fr"]


def test_install_new_version_swaps_atomically_and_changes_answers(registry, planted):
    en, fr, R, *_ = planted
    assert registry.mapping_version("en", "fr") == "v1"
    tr = Translator(registry)
    before = tr.translate("w3", "en", "fr", k=1)["translations"][0]["word"]
    assert before == "m3"
    # A deliberately wrong mapping (a permutation of the rotation's output) must change answers.
    perm = np.roll(np.eye(R.shape[0], dtype=np.float32), 1, axis=0)
    errors: list[Exception] = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                out = tr.translate("w3", "en", "fr", k=1, retrieval="csls")
                assert out["mapping_version"] in ("v1", "v2")
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    registry.install_mapping("en", "fr", LinearMapping(R @ perm, "v2"))
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert registry.mapping_version("en", "fr") == "v2"
    out = tr.translate("w3", "en", "fr", k=1)
    assert out["mapping_version"] == "v2"


def test_mapping_that_moves_targets_gets_its_own_index(registry, planted):
    en, fr, R, *_ = planted
    shift = np.full(R.shape[0], 0.05, dtype=np.float32)
    state = registry.install_mapping("en", "fr", ShiftTargetsMapping(R, "v3", shift))
    assert not state.shared_index
    Xm = unit(unit(en @ R + shift))
    Y = unit(fr + shift)
    want_idx, _ = brute_force_csls(Xm, Y, 5, np.arange(10), 3)
    scores, rows = state.index.search(state.mapped_source[:10], 3, state.column)
    np.testing.assert_array_equal(rows, want_idx)


def test_dimension_mismatch_is_invalid(registry, planted):
    en, *_ = planted
    bad = LinearMapping(np.eye(en.shape[1], 5, dtype=np.float32), "bad")
    with pytest.raises(InvalidInput):
        registry.install_mapping("en", "fr", bad)


def test_sync_from_redis_installs_published_version(registry, planted, redis_client, tmp_path):
    from services.alignment.mapping import LinearStage, Mapping

    en, fr, R, *_ = planted
    mapping = Mapping("procrustes", [LinearStage(R.astype(np.float64))])
    path = tmp_path / "m.npz"
    mapping.save(path)
    redis_client.set("vislex:mappings:en-fr", json.dumps({"version": mapping.version, "path": str(path)}))
    redis_client.sadd("vislex:mapping-pairs", "en-fr")
    redis_client.set("vislex:mappings:de-fr", json.dumps({"version": "x", "path": "/nope"}))  # unknown language
    redis_client.sadd("vislex:mapping-pairs", "de-fr")
    assert registry.sync_from_redis(redis_client) == ["en-fr"]
    assert registry.mapping_version("en", "fr") == mapping.version
    assert registry.sync_from_redis(redis_client) == []  # same version: nothing to do
    assert Translator(registry).translate("w5", "en", "fr", k=1)["translations"][0]["word"] == "m5"


def test_shared_index_columns_and_describe(planted):
    en, fr, R, en_words, fr_words = planted
    reg = SpaceRegistry(csls_knn=5)
    for lang, X in (("a", en), ("b", en @ R), ("c", unit(en + 0.01))):
        reg.add_space(WordSpace.build(lang, en_words, unit(X), source="test", group="g", fingerprint=lang))
    from services.serving.registry import identity_mapping

    for s in "abc":
        for t in "abc":
            if s != t:
                reg.install_mapping(s, t, identity_mapping(12, s, t), compute_csls=False)
    assert reg.warm_csls() == 6
    # Both sources into "c" share one index holding a column each.
    assert reg.pair("a", "c").index is reg.pair("b", "c").index
    assert set(reg.pair("a", "c").index.columns) == {"a", "b"}
    tr = Translator(reg)
    assert tr.translate("w9", "a", "c", k=1)["translations"][0]["word"] == "w9"
    described = {d["lang"]: d for d in reg.describe()}
    assert described["a"]["vocab_size"] == 200 and described["a"]["bytes"] > 200 * 12 * 4
    assert {m["tgt"] for m in described["a"]["mappings"]} == {"b", "c"}


def test_float16_storage_halves_vector_bytes(planted):
    en, fr, R, en_words, fr_words = planted
    reg = SpaceRegistry(csls_knn=5, storage_dtype="float16")
    reg.add_space(WordSpace.build("en", en_words, en, source="t", storage_dtype="float16"))
    reg.add_space(WordSpace.build("fr", fr_words, fr, source="t", storage_dtype="float16"))
    reg.install_mapping("en", "fr", LinearMapping(R, "v1"))
    assert reg.spaces["en"].vectors.dtype == np.float16
    assert reg.spaces["en"].nbytes == 200 * 12 * 2
    out = Translator(reg).translate_batch(["w1", "w2"], "en", "fr", k=1)
    assert [r["translations"][0]["word"] for r in out["results"]] == ["m1", "m2"]


@pytest.mark.parametrize("index_type", ["hnsw", "ivf"])
def test_approximate_indexes_find_planted_answers(planted, index_type):
    en, fr, R, en_words, fr_words = planted
    reg = SpaceRegistry(csls_knn=5, index_type=index_type)
    reg.add_space(WordSpace.build("en", en_words, en, source="t"))
    reg.add_space(WordSpace.build("fr", fr_words, fr, source="t"))
    reg.install_mapping("en", "fr", LinearMapping(R, "v1"))
    out = Translator(reg).translate_batch([f"w{i}" for i in range(0, 200, 10)], "en", "fr", k=1, retrieval="nn")
    hits = sum(r["translations"][0]["word"] == f"m{i}" for i, r in zip(range(0, 200, 10), out["results"]))
    assert hits >= 18


def test_encoder_pairs_use_their_own_csls_knn(planted):
    """encoder_csls_knn sets r_S's K between encoder-derived spaces of one group; csls_knn every other pair."""
    from services.serving.registry import identity_mapping

    en, fr, R, en_words, fr_words = planted
    reg = SpaceRegistry(csls_knn=10, encoder_csls_knn=1)
    for lang, X, words, group in (("en", en, en_words, "encoder:t"), ("fr", fr, fr_words, "encoder:t"),
                                  ("xx", en, en_words, None), ("yy", fr, fr_words, None)):
        reg.add_space(WordSpace.build(lang, words, X, source="test", group=group, fingerprint=lang))
    reg.install_mapping("en", "fr", identity_mapping(12, "en", "fr"))
    reg.install_mapping("xx", "yy", identity_mapping(12, "xx", "yy"))
    assert reg.csls_knn_for("en", "fr") == 1 and reg.csls_knn_for("xx", "yy") == 10
    queries = np.arange(0, 200, 3)
    order1, _ = brute_force_csls(en, fr, 1, queries, 1)
    order10, _ = brute_force_csls(en, fr, 10, queries, 1)
    assert (order1[:, 0] != order10[:, 0]).any()  # K changes some answers: the check below can tell them apart
    sim = fr @ en.T
    for (src, tgt), knn, order in (((("en", "fr")), 1, order1), (("xx", "yy"), 10, order10)):
        state = reg.ensure_csls(src, tgt)
        r = state.index.r_source[:, state.column]
        np.testing.assert_allclose(r, np.sort(sim, axis=1)[:, -knn:].mean(axis=1), atol=1e-5)
        out = Translator(reg).translate_batch([en_words[q] for q in queries], src, tgt, k=1, retrieval="csls")
        assert [x["translations"][0]["word"] for x in out["results"]] == [fr_words[j] for j in order[:, 0]]
    # Unset, encoder pairs follow csls_knn.
    assert SpaceRegistry(csls_knn=7).encoder_csls_knn == 7
