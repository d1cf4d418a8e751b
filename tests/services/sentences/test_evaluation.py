"""Globetrotter's metric and pairwise P@1 on hand-built parallel sets whose answers are known."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from services.errors import InvalidInput
from services.sentences.evaluation import evaluate_parallel, globetrotter_metric, p_at_1, read_parallel, wilson

I3 = np.eye(3, dtype=np.float32)


def test_perfect_and_swapped():
    en = I3
    assert globetrotter_metric([en, en.copy(), en.copy()])[0] == 100.0
    de = I3[[0, 2, 1]]  # sentences 1 and 2 of de point where the other's translation is
    assert p_at_1(en, de) == (pytest.approx(33.33), 1)
    # M = 2: each query has one positive, counted when it is the single best of the 5 others:
    # en0 -> de0 yes; en1 -> best is de2 (score 1), not de1; en2 likewise; de0 yes; de1, de2 no -> 2 of 6
    pct, hits, total = globetrotter_metric([en, de])
    assert (hits, total) == (2, 6) and pct == pytest.approx(33.33)


def test_same_language_neighbours_count_against():
    """A query whose nearest other sentence is in its own language pushes its translation out of the top M-1."""
    en = np.array([[1, 0, 0], [0.9, 0.435, 0], [0, 0, 1]], dtype=np.float32)
    en /= np.linalg.norm(en, axis=1, keepdims=True)
    de = np.array([[0.8, 0.6, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    # en0: cos(en1) = 0.9 > cos(de0) = 0.8 -> miss; en1: de1 0.435, de0 0.98 -> miss; en2 -> de2 hit
    # de0: en1 0.98 > en0 0.8 -> miss; de1: en1 0.435 vs de0 0.6 -> miss; de2 -> en2 hit
    pct, hits, total = globetrotter_metric([en, de])
    assert (hits, total) == (2, 6)


def test_evaluate_parallel_and_files(tmp_path):
    (tmp_path / "a.en").write_text("one\ntwo\n\nthree\n", encoding="utf-8")
    with gzip.open(tmp_path / "a.de.gz", "wt", encoding="utf-8") as fh:
        fh.write("eins\nzwei\nleer\ndrei\n")
    texts = read_parallel({"en": tmp_path / "a.en", "de": tmp_path / "a.de.gz"})
    assert texts == {"en": ["one", "two", "three"], "de": ["eins", "zwei", "drei"]}  # empty line dropped everywhere
    table = {"one": 0, "two": 1, "three": 2, "eins": 0, "zwei": 2, "drei": 1}
    out = evaluate_parallel(texts, lambda lines, lang: I3[[table[s] for s in lines]])
    assert out["pairs"]["en-de"]["p@1"] == pytest.approx(33.33) and out["pairs"]["de-en"]["p@1"] == pytest.approx(33.33)
    assert out["sentences"] == 3 and out["languages"] == ["en", "de"] and out["metric"] == pytest.approx(33.33)
    lo, hi = out["pairs"]["en-de"]["ci95"]
    assert lo < 33.33 < hi
    (tmp_path / "short.fr").write_text("un\n", encoding="utf-8")
    with pytest.raises(InvalidInput):
        read_parallel({"en": tmp_path / "a.en", "fr": tmp_path / "short.fr"})


def test_wilson():
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(40.38, abs=0.01) and hi == pytest.approx(59.62, abs=0.01)


def test_metric_per_sentence_and_its_standard_error():
    from services.sentences.evaluation import metric_hits, metric_se

    en = I3
    de = I3[[0, 2, 1]]
    hits = metric_hits([en, de])  # sentence 0 found both ways, 1 and 2 neither (test_perfect_and_swapped)
    assert hits.tolist() == [2, 0, 0]
    metric, se = metric_se([en, de])
    assert metric == pytest.approx(100 / 3)
    assert se == pytest.approx(100 * np.std([1, 0, 0], ddof=1) / np.sqrt(3))
