"""benchmarks/clip_hubness.py: the query-bank radius is the mean of each photo's K best bank cosines, and gallery
CSLS demotes a hub photo that plain cosine ranks first for many queries."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.clip_hubness import bank_radius, expand_queries, gallery_csls, recall_at  # noqa: E402


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_bank_radius_is_the_mean_of_the_k_best_cosines():
    rng = np.random.default_rng(0)
    bank, gallery = _unit(rng.normal(size=(50, 8))), _unit(rng.normal(size=(7, 8)))
    dense = np.sort(bank @ gallery.T, axis=0)[-5:].mean(axis=0)
    np.testing.assert_allclose(bank_radius(bank, gallery, 5), dense, rtol=1e-6)
    np.testing.assert_allclose(bank_radius(bank, gallery, 500), (bank @ gallery.T).mean(axis=0), rtol=1e-5)


def test_gallery_csls_demotes_a_hub_that_cosine_ranks_first():
    rng = np.random.default_rng(1)
    d, n = 32, 40
    photos = _unit(rng.normal(size=(n, d)))
    hub = _unit(photos.mean(axis=0, keepdims=True))  # near every photo, so near every query
    gallery = np.concatenate([photos, hub])
    # queries and bank drawn alike (the bank stands for other queries of the same kind), all pulled towards the hub
    draw = lambda owners: _unit(photos[owners] + 0.9 * rng.normal(size=(len(owners), d)) / np.sqrt(d) + hub)  # noqa
    queries, bank = draw(np.arange(n)), draw(rng.integers(0, n, 400))
    cosine = queries @ gallery.T
    csls = gallery_csls(queries, gallery, bank_radius(bank, gallery, 10))
    hub_cosine, hub_csls = np.mean(np.argmax(cosine, axis=1) == n), np.mean(np.argmax(csls, axis=1) == n)
    assert hub_cosine > 0.4  # the hub is many queries' first answer by cosine
    assert hub_csls < hub_cosine - 0.2
    assert recall_at(csls, ks=(1,))["r@1"] > recall_at(cosine, ks=(1,))["r@1"] + 20


def test_expand_queries_moves_towards_the_nearest_bank_rows_and_keeps_unit_rows():
    q = _unit(np.array([[1.0, 0.0, 0.0]]))
    bank = _unit(np.array([[0.9, 0.1, 0.0], [0.0, 0.0, 1.0], [0.8, 0.0, 0.2]]))
    out = expand_queries(q, bank, k=2, weight=0.5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)
    assert out[0, 2] > 0 and out[0, 1] > 0  # towards rows 0 and 2, the two nearest
    np.testing.assert_allclose(expand_queries(q, bank, k=2, weight=0.0), q, rtol=1e-6)
