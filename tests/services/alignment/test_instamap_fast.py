"""InstaMap's fast engine against the reference implementation (issue 18): same shift, same mapping."""

import numpy as np
import pytest

from services.alignment.instamap import anchor_shift, fit_instamap
from services.alignment.mapping import InstaMapStage, Mapping, instamap_shift
from services.alignment.registry import align
from services.errors import InvalidInput
from tests.services.alignment.align_fixtures import planted_world, random_rotation, unit


def _brute_shift(V, anchors, deltas, K, clip_negative=False):
    """The definition, one row at a time: the K entries of highest cosine (equal anchors score exactly equal,
    ties by entry order), weighted mean of their translation vectors; the plain mean when the weights cancel."""
    A = unit(anchors)
    first = {}
    for i, a in enumerate(A):
        first.setdefault(a.tobytes(), i)
    S = (unit(V) @ A.T)[:, [first[a.tobytes()] for a in A]]
    out = np.empty((len(V), deltas.shape[1]))
    for r, s in enumerate(S):
        top = np.lexsort((np.arange(len(s)), -s))[:K]
        w = np.maximum(s[top], 0) if clip_negative else s[top].astype(np.float64)
        out[r] = deltas[top].mean(0) if abs(w.sum()) < 1e-6 else (w[:, None] * deltas[top]).sum(0) / w.sum()
    return out


@pytest.fixture(scope="module")
def shift_case():
    rng = np.random.default_rng(4)
    A = unit(rng.standard_normal((300, 16)))
    dup = np.vstack([A, A[:40], A[:10]])  # sources with several targets: 50 repeated anchors
    D = rng.standard_normal((350, 16)).astype(np.float32)
    V = unit(rng.standard_normal((700, 16)))
    return V, unit(rng.standard_normal((350, 16))), dup, D


@pytest.mark.parametrize("K", [1, 5, 20, 70])
@pytest.mark.parametrize("clip_negative", [False, True])
def test_anchor_shift_is_the_k_nearest_entries_shift(shift_case, K, clip_negative):
    V, distinct, dup, D = shift_case
    # Distinct anchors: the reference kernel (FAISS top-K, gather, einsum) and the fast one agree.
    np.testing.assert_allclose(anchor_shift(V, distinct, D, K, clip_negative=clip_negative),
                               instamap_shift(V, distinct, D, K, clip_negative=clip_negative), atol=2e-6)
    # Repeated anchors: whole groups in score order, the last one cut in entry order (the definition).
    np.testing.assert_allclose(anchor_shift(V, dup, D, K, clip_negative=clip_negative),
                               _brute_shift(V, dup, D, K, clip_negative), atol=2e-6)


def test_anchor_shift_prefix_sums_span_several_column_chunks():
    # 70 dimensions: the translation vectors' prefix sums are built in chunks of columns (32, 32, 6); every
    # chunk must hold the same sums as the whole-matrix definition.
    rng = np.random.default_rng(9)
    A = unit(rng.standard_normal((120, 70)))
    dup = np.vstack([A, A[:30], A[:5]])
    D = rng.standard_normal((155, 70)).astype(np.float32)
    V = unit(rng.standard_normal((1100, 70)))  # 1,100 rows: several score blocks, computed ahead in two buffers
    np.testing.assert_allclose(anchor_shift(V, dup, D, 20), _brute_shift(V, dup, D, 20), atol=2e-6)


def test_anchor_shift_falls_back_to_the_plain_mean_when_weights_cancel():
    anchors = np.array([[1.0, 0.0], [-1.0, 0.0]], np.float32)
    deltas = np.array([[2.0, 0.0], [0.0, 4.0]], np.float32)
    V = np.array([[0.0, 1.0]], np.float32)  # cos 0 to both: the weights sum to 0
    np.testing.assert_allclose(anchor_shift(V, anchors, deltas, 2), [[1.0, 2.0]])
    np.testing.assert_allclose(instamap_shift(V, anchors, deltas, 2), [[1.0, 2.0]])


@pytest.fixture(scope="module")
def clean_world():
    """A planted warped world whose mutual-NN expansions only ever add gold pairs (no source with two targets),
    so the reference's arbitrary order among equal anchors never comes into play."""
    world = planted_world(n=500, d=16, seed=7, nonlinear=0.3, noise=0.02)
    rng = np.random.default_rng(1)
    return world, world.gold[rng.choice(len(world.gold), 200, replace=False)]


@pytest.mark.parametrize("variant", ["paper", "code"])
def test_fast_engine_fits_the_reference_mapping(clean_world, variant):
    world, seeds = clean_world
    X, Y = world.src.vectors, world.tgt.vectors
    ref, ref_pairs, ref_hist = fit_instamap(X, Y, seeds, K=20, variant=variant, engine="reference")
    fast, fast_pairs, fast_hist, spaces = fit_instamap(X, Y, seeds, K=20, variant=variant, return_spaces=True)
    assert len(np.unique(ref_pairs[:, 0])) == len(ref_pairs)  # the case has no repeated anchors
    np.testing.assert_array_equal(fast_pairs, ref_pairs)
    assert [h["pairs"] for h in fast_hist] == [h["pairs"] for h in ref_hist]
    assert (fast.engine, ref.engine) == ("fast", "reference")
    XS, YT = fast.transform_source(X), fast.transform_target(Y)
    np.testing.assert_allclose(XS, ref.transform_source(X), atol=2e-5)
    np.testing.assert_allclose(YT, ref.transform_target(Y), atol=2e-5)
    # The spaces handed to the registry are the stage's own transforms, bit for bit.
    np.testing.assert_array_equal(spaces[0], XS)
    np.testing.assert_array_equal(spaces[1], YT)


def test_registry_uses_the_fitted_spaces_and_both_engines_give_one_mapping(clean_world):
    world, seeds = clean_world
    fast = align(world.src, world.tgt, "procrustes+instamap", seed_pairs=seeds, options={"instamap": {"K": 20}})
    ref = align(world.src, world.tgt, "procrustes+instamap", seed_pairs=seeds,
                options={"instamap": {"K": 20, "engine": "reference"}})
    assert fast.mapping.stats["stages"][1]["engine"] == "fast"
    assert ref.mapping.stats["stages"][1]["engine"] == "reference"
    assert {tuple(p) for p in fast.dictionary[0].tolist()} == {tuple(p) for p in ref.dictionary[0].tolist()}
    np.testing.assert_allclose(fast.mapping.transform_source(world.src.vectors),
                               ref.mapping.transform_source(world.src.vectors), atol=2e-5)
    with pytest.raises(InvalidInput, match="engine"):
        align(world.src, world.tgt, "instamap", seed_pairs=seeds, options={"instamap": {"engine": "turbo"}})


def test_engine_is_saved_and_old_files_load_with_the_reference_shift(clean_world, tmp_path):
    world, seeds = clean_world
    stage, _, _ = fit_instamap(world.src.vectors, world.tgt.vectors, seeds, K=20, T=2)
    loaded = Mapping.load(Mapping("instamap", [stage]).save(tmp_path / "m.npz"))
    assert loaded.stages[0].engine == "fast"
    meta = stage.meta()
    del meta["engine"]  # a file written before engines existed
    old = InstaMapStage.from_saved(meta, stage.arrays())
    assert old.engine == "reference"
    np.testing.assert_allclose(old.transform_source(world.src.vectors), stage.transform_source(world.src.vectors),
                               atol=2e-5)


def test_the_cuda_code_path_fits_the_same_mapping(clean_world, monkeypatch):
    import services.alignment.sweep as sweep

    world, seeds = clean_world
    X, Y = world.src.vectors, world.tgt.vectors
    cpu, cpu_pairs, _ = fit_instamap(X, Y, seeds, K=20, T=3)
    monkeypatch.setattr(sweep, "TORCH_BLOCKS_ON_CPU", True)
    torch_path, torch_pairs, _ = fit_instamap(X, Y, seeds, K=20, T=3)
    np.testing.assert_array_equal(torch_pairs, cpu_pairs)
    np.testing.assert_allclose(torch_path.transform_source(X), cpu.transform_source(X), atol=2e-5)


def _rotated_noisy(n: int, d: int, seed: int):
    """Unit rows X and Y = X R + noise (word i <-> word i) for a random rotation R."""
    rng = np.random.default_rng(seed)
    X = unit(rng.standard_normal((n, d)))
    return X, unit(X @ random_rotation(d, rng) + 0.05 * rng.standard_normal((n, d)))


def test_keep_rows_moves_only_the_rows_the_fit_reads_and_fits_the_same_stage():
    """keep_rows (the registry's final dictionary is all the last stage's spaces feed): the iterations move
    only the head of each vocabulary and the dictionary's rows, and fit the very same stage and dictionary
    as moving every row -- seeds beyond the head included."""
    n, d = 900, 24
    X, Y = _rotated_noisy(n, d, seed=11)
    seeds = np.stack([np.arange(0, n, 7), np.arange(0, n, 7)], axis=1)  # rows up to 896: far beyond the head
    kw = dict(K=10, T=3, expand_vocab=200, return_spaces=True)
    full_stage, full_pairs, full_hist, (Xf, Yf) = fit_instamap(X, Y, seeds, **kw)
    stage, pairs, hist, (Xk, Yk) = fit_instamap(X, Y, seeds, keep_rows=150, **kw)
    np.testing.assert_array_equal(pairs, full_pairs)
    assert [h["pairs"] for h in hist] == [h["pairs"] for h in full_hist]
    for a, b in zip(stage.iterations, full_stage.iterations):
        for name in ("W_R", "src_anchors", "tgt_anchors"):
            np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=1e-5)
        np.testing.assert_allclose(a.translations(), b.translations(), atol=1e-5)
    assert Xk.shape == (150, d) and Yk.shape == (150, d)
    np.testing.assert_allclose(Xk, Xf[:150], atol=1e-5)
    np.testing.assert_allclose(Yk, Yf[:150], atol=1e-5)
    # the served mapping still moves every row: the kept stage transforms the whole vocabulary as the full one
    np.testing.assert_allclose(stage.transform_source(X), Xf, atol=1e-4)


def test_the_registry_dictionary_after_instamap_is_that_of_the_mapping():
    """With InstaMap last (its spaces truncated to the dictionary vocabulary), the result's dictionary is the
    mutual CSLS dictionary of the returned mapping applied to the whole vocabularies."""
    from services.alignment.retrieval import mutual_nn
    from services.alignment.vectors import WordVectors

    n, d = 800, 24
    X, Y = _rotated_noisy(n, d, seed=5)
    words = [f"w{i}" for i in range(n)]
    seeds = np.stack([np.arange(0, n, 5), np.arange(0, n, 5)], axis=1)
    res = align(WordVectors(words, X), WordVectors([f"v{i}" for i in range(n)], Y), "procrustes+instamap",
                seed_pairs=seeds, options={"dictionary_vocab": 300, "instamap": {"expand_vocab": 200, "K": 10}})
    XM, YM = res.mapping.transform_source(X), res.mapping.transform_target(Y)
    expected, _ = mutual_nn(unit(XM), unit(YM), retrieval="csls", knn=10, max_src=300, max_tgt=300)
    got = res.dictionary[0]
    assert len(got) > 200
    assert len({tuple(p) for p in got} ^ {tuple(p) for p in expected}) <= 2  # float rounding may flip a tie
