"""The CSLS frequency prior: the pure re-ranking, and every serving path (search, tables, batch) agreeing on it."""

from __future__ import annotations

import numpy as np
import pytest

from services.serving.rank_prior import apply_frequency_prior
from services.serving.registry import SpaceRegistry, identity_mapping
from services.serving.space import WordSpace
from services.serving.translator import Translator


def test_only_targets_rarer_than_the_source_are_penalised():
    scores = np.array([[0.50, 0.49, 0.40]], dtype=np.float32)
    rows = np.array([[999, 3, 1]])
    source = np.array([2])
    s, r = apply_frequency_prior(scores, rows, source, 0.1, 3)
    # row 999: penalty 0.1 * (ln 1000 - ln 3) = 0.58 -> last; rows 3 and 1: 0.1 * ln(4/3) and 0 (more frequent).
    assert r.tolist() == [[3, 1, 999]]
    np.testing.assert_allclose(s[0], [0.49 - 0.1 * np.log(4 / 3), 0.40, 0.50 - 0.1 * np.log(1000 / 3)], rtol=1e-5)
    s0, r0 = apply_frequency_prior(scores, rows, source, 0.0, 2)
    assert r0.tolist() == [[999, 3]]  # weight 0: plain order


def test_the_query_s_own_string_gets_the_stronger_weight():
    scores = np.array([[1.0, 0.7]], dtype=np.float32)  # row 50: the query's own string (cos 1 in a shared space)
    rows = np.array([[50, 4]])
    keep, _ = apply_frequency_prior(scores, rows, np.array([5]), 0.1, 2, identical_rows=np.array([-1]))
    _, moved = apply_frequency_prior(scores, rows, np.array([5]), 0.1, 2, identical_rows=np.array([50]),
                                     identical_weight=0.2)
    # Without the identity its penalty is 0.1 * ln(51/6) = 0.21 (still first); with it 0.3 * ln(51/6) = 0.64.
    assert keep[0, 0] == pytest.approx(1.0 - 0.1 * np.log(51 / 6), rel=1e-5) and moved.tolist() == [[4, 50]]


def test_missing_candidates_stay_last():
    s, r = apply_frequency_prior(np.array([[0.3, 0.0]], np.float32), np.array([[5, -1]]), np.array([0]), 0.1, 2)
    assert r.tolist() == [[5, -1]] and s[0, 1] == -np.inf


def _encoder_pair(prior: float, table_k: int) -> SpaceRegistry:
    rng = np.random.default_rng(11)
    X = rng.standard_normal((300, 12)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Y = X + 0.6 * rng.standard_normal(X.shape).astype(np.float32)  # noisy: the prior changes some answers
    Y /= np.linalg.norm(Y, axis=1, keepdims=True)
    reg = SpaceRegistry(csls_knn=5, table_k=table_k, frequency_prior=prior)
    reg.add_space(WordSpace.build("en", [f"e{i}" for i in range(300)], X, source="encoder:t", group="encoder:t"))
    reg.add_space(WordSpace.build("fr", [f"f{i}" for i in range(300)], Y, source="encoder:t", group="encoder:t"))
    reg.install_mapping("en", "fr", identity_mapping(12, "en", "fr"))
    if table_k:
        reg.request_all_tables()
        reg.build_requested_tables()
    return reg


def test_encoder_pairs_get_the_prior_and_it_changes_csls_answers_only():
    plain, prior = _encoder_pair(0.0, 0), _encoder_pair(0.5, 0)
    assert prior.pair("en", "fr").rank_prior == 0.5 and plain.pair("en", "fr").rank_prior == 0.0
    words = [f"e{i}" for i in range(150, 300)]
    tp, tq = Translator(plain), Translator(prior)
    top = lambda tr, retrieval: [r["translations"][0]["word"] for r in  # noqa: E731
                                 tr.translate_batch(words, "en", "fr", k=1, retrieval=retrieval)["results"]]
    assert top(tp, "nn") == top(tq, "nn")
    changed = [(a, b) for a, b in zip(top(tp, "csls"), top(tq, "csls")) if a != b]
    assert changed, "a strong prior must change some CSLS answers"
    # Each change moved to a more frequent (lower-row) target.
    assert all(int(b[1:]) < int(a[1:]) for a, b in changed)


@pytest.mark.parametrize("k", [1, 4])
def test_tables_search_single_and_batch_agree_under_the_prior(k):
    searched, tabled = _encoder_pair(0.3, 0), _encoder_pair(0.3, 10)
    assert "csls" in tabled.pair("en", "fr").tables
    words = [f"e{i}" for i in range(0, 300, 7)]
    ts, tt = Translator(searched), Translator(tabled)
    batch_s = [r["translations"] for r in ts.translate_batch(words, "en", "fr", k=k)["results"]]
    batch_t = [r["translations"] for r in tt.translate_batch(words, "en", "fr", k=k)["results"]]
    singles = [ts.translate(w, "en", "fr", k=k)["translations"] for w in words]
    assert [[t["word"] for t in x] for x in batch_s] == [[t["word"] for t in x] for x in batch_t] \
        == [[t["word"] for t in x] for x in singles]


def test_the_identical_weight_rule():
    from services.serving.rank_prior import choose_identical_weight

    # The smallest weight whose echo is under 1.5 % on every pair ...
    dev = {0.2: [(700, 1.4), (500, 1.6)], 0.5: [(690, 0.9), (495, 1.2)], 1.0: [(650, 0.5), (480, 0.7)]}
    assert choose_identical_weight(dev) == 0.5
    # ... and when none is, the one with most hits (echo cannot be bought on every pair).
    dev = {0.2: [(700, 1.4), (500, 6.0)], 0.5: [(690, 0.9), (495, 3.0)], 1.0: [(650, 0.5), (480, 2.0)]}
    assert choose_identical_weight(dev) == 0.2
