"""Precomputed translation tables: same answers as the search, never stale, built on demand."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from services.observability import TABLE_WORDS
from services.serving.registry import SpaceRegistry
from services.serving.space import WordSpace
from services.serving.table import build_table
from services.serving.translator import Translator

from tests.services.serving.serving_fixtures import LinearMapping
from tests.services.serving.test_registry import brute_force_csls


def _registry(planted, *, table_k=6, table_build="on_demand", version="v1", W=None):
    en, fr, R, en_words, fr_words = planted
    reg = SpaceRegistry(csls_knn=5, table_k=table_k, table_build=table_build)
    reg.add_space(WordSpace.build("en", en_words, en, source="test", fingerprint="en0"))
    reg.add_space(WordSpace.build("fr", fr_words, fr, source="test", fingerprint="fr0"))
    reg.install_mapping("en", "fr", LinearMapping(R if W is None else W, version))
    return reg


def _table_words(retrieval: str) -> float:
    return TABLE_WORDS.labels(retrieval)._value.get()


def test_build_table_chunks_equal_one_search(planted):
    reg = _registry(planted)
    state = reg.ensure_csls("en", "fr")
    want_s, want_r = state.index.search(state.mapped_source, 4, state.column)
    table = build_table(lambda Q, k: state.index.search(Q, k, state.column), state.mapped_source, 4, chunk_rows=7)
    np.testing.assert_array_equal(table.rows, want_r)
    np.testing.assert_allclose(table.scores, want_s, rtol=0, atol=1e-6)
    assert table.nbytes == len(want_r) * 4 * 8
    stop = threading.Event()
    stop.set()
    assert build_table(lambda Q, k: state.index.search(Q, k, None), state.mapped_source, 4, stop=stop) is None


def test_table_answers_equal_search_answers_and_brute_force_csls(planted):
    en, fr, R, en_words, _ = planted
    searched = Translator(_registry(planted, table_k=0))
    reg = _registry(planted)
    tabled = Translator(reg)
    tabled.translate("w0", "en", "fr")  # first use of the pair asks for its tables
    assert reg.pair("en", "fr").tables == {}
    assert reg.build_requested_tables() == 2
    state = reg.pair("en", "fr")
    assert sorted(state.tables) == ["csls", "nn"] and state.describe()["tables"] == {"csls": 6, "nn": 6}
    before = {r: _table_words(r) for r in ("nn", "csls")}
    for retrieval in ("nn", "csls"):
        single = [tabled.translate(w, "en", "fr", k=5, retrieval=retrieval)["translations"] for w in en_words]
        assert single == [searched.translate(w, "en", "fr", k=5, retrieval=retrieval)["translations"]
                          for w in en_words]
        batch = tabled.translate_batch(en_words, "en", "fr", k=5, retrieval=retrieval)["results"]
        assert [r["translations"] for r in batch] == single
        assert _table_words(retrieval) - before[retrieval] == 2 * len(en_words)
    want, _ = brute_force_csls(en @ R, fr, 5, np.arange(len(en)), 5)
    _, rows = state.tables["csls"].top(np.arange(len(en)), 5)
    np.testing.assert_array_equal(rows, want)


def test_k_above_table_k_falls_back_to_search(planted):
    reg = _registry(planted, table_k=3)
    tr = Translator(reg)
    reg.request_all_tables()
    reg.build_requested_tables()
    before = _table_words("csls")
    out = tr.translate("w7", "en", "fr", k=8)
    assert len(out["translations"]) == 8 and out["translations"][0]["word"] == "m7"
    assert _table_words("csls") == before
    tr.translate("w7", "en", "fr", k=3)
    assert _table_words("csls") == before + 1


def test_new_mapping_version_drops_tables_and_rebuilds_them(planted):
    en, fr, R, *_ = planted
    reg = _registry(planted)
    reg.request_all_tables()
    reg.build_requested_tables()
    tr = Translator(reg)
    assert tr.translate("w3", "en", "fr", k=1)["translations"][0]["word"] == "m3"
    perm = np.roll(np.eye(R.shape[0], dtype=np.float32), 1, axis=0)
    reg.install_mapping("en", "fr", LinearMapping(R @ perm, "v2"))
    state = reg.pair("en", "fr")
    assert state.version == "v2" and state.tables == {}  # nothing of v1 can answer for v2
    wrong = Translator(_registry(planted, table_k=0, W=R @ perm, version="v2"))
    want = wrong.translate("w3", "en", "fr", k=4)["translations"]
    assert tr.translate("w3", "en", "fr", k=4)["translations"] == want  # searched meanwhile
    assert reg.build_requested_tables() == 2  # re-requested because v1 had tables
    assert sorted(reg.pair("en", "fr").tables) == ["csls", "nn"]
    assert tr.translate("w3", "en", "fr", k=4)["translations"] == want


def test_eager_build_and_bytes_in_describe(planted):
    reg = _registry(planted, table_build="eager")
    assert list(reg._tables_wanted) == [("en", "fr")]
    reg.build_requested_tables()
    entry = next(e for e in reg.describe() if e["lang"] == "en")
    assert entry["bytes_detail"]["tables"] == 2 * 200 * 6 * 8
    with pytest.raises(Exception):
        SpaceRegistry(table_build="sometimes")


def test_tables_off_never_requests(planted):
    reg = _registry(planted, table_k=0)
    Translator(reg).translate("w1", "en", "fr")
    assert not reg._tables_wanted and reg.build_requested_tables() == 0
