"""The stages benchmarks/scale.py times, and the data they run on (real vectors extended with synthetic rows).

Each stage is a function ``stage(ctx) -> dict`` run in a fresh child process (``scale.py --child``), so its
peak memory is its own. ``ctx`` holds the size, the device and the prepared files; a stage loads what it
needs (not timed), times its own work with ``Timer`` and returns seconds plus whatever it counted.

Synthetic extension (:func:`extend_space`): beyond the real 50k words, row i is
``μ + a (v − μ) + b g`` rescaled to ‖v‖, with v a random real row of the less frequent half (its
"donor"), g ~ N(0, Σ) drawn with the real rows' mean μ and covariance Σ, a² + b² = 1 (mean and covariance
kept), and a = the median cosine between a real (centred) row and its nearest real neighbour, so a synthetic
word's nearest neighbour is as close as a real word's is. Norms are the donors' norms.
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NORMALIZE = "unit,center,unit"
LANGS = ("en", "fr")


# ----------------------------------------------------------------------------- synthetic extension


def nn_cosine(V: np.ndarray, queries: np.ndarray, *, exclude_self: bool = True) -> np.ndarray:
    """Cosine of each query row of V (indices) to its nearest other row of V (centred rows)."""
    C = V - V.mean(axis=0)
    C = C / np.maximum(np.linalg.norm(C, axis=1, keepdims=True), 1e-12)
    S = C[queries] @ C.T
    if exclude_self:
        S[np.arange(len(queries)), queries] = -np.inf
    return S.max(axis=1)


def extend_space(V: np.ndarray, n: int, *, seed: int = 0, probe: int = 2000) -> tuple[np.ndarray, dict]:
    """(n, d) rows: the m real rows of V, then n − m synthetic rows keeping their statistics (module docstring)."""
    V = np.asarray(V, np.float64)
    m, d = V.shape
    if n <= m:
        return V[:n].astype(np.float32), {"synthetic_rows": 0}
    rng = np.random.default_rng(seed)
    mu = V.mean(axis=0)
    C = V - mu
    cov = C.T @ C / (m - 1)
    lam, U = np.linalg.eigh(cov)
    root = U * np.sqrt(np.maximum(lam, 0))
    a = float(np.median(nn_cosine(V, rng.choice(m, min(probe, m), replace=False))))
    b = float(np.sqrt(max(0.0, 1.0 - a * a)))
    donors = rng.integers(m // 2, m, n - m)
    g = rng.standard_normal((n - m, d)) @ root.T
    S = mu + a * C[donors] + b * g
    S *= (np.linalg.norm(V[donors], axis=1) / np.maximum(np.linalg.norm(S, axis=1), 1e-12))[:, None]
    return np.vstack([V, S]).astype(np.float32), {"synthetic_rows": int(n - m), "donor_weight": a, "noise_weight": b}


# ----------------------------------------------------------------------------- preparation (parent, once)


def prepare(work: Path, max_size: int, data: Path | None, *, write_vec: bool = True) -> dict:
    """Write ``{lang}.npy`` (float16, max_size rows, like ../shared/data/vectors) + vocab, ``en.vec``, and the
    MUSE en-fr train/test rows under ``work``; without the shared data, fully synthetic clustered spaces."""
    from services.alignment.vectors import WordVectors, load_vectors, save_vectors

    work.mkdir(parents=True, exist_ok=True)
    info: dict = {"max_size": max_size}
    spaces = {}
    for k, lang in enumerate(LANGS):
        if data is not None and (data / "vectors" / f"{lang}.npy").is_file():
            real = load_vectors(data / "vectors" / f"{lang}.npy")
            words, V = list(real.words), real.vectors
            info[f"{lang}_real_rows"] = len(words)
        else:  # no shared data (e.g. on a lent GPU machine): a clustered synthetic "real" part
            rng = np.random.default_rng(100 + k)
            m = min(50000, max_size)
            centres = rng.standard_normal((max(8, m // 25), 300))
            V = (centres[rng.integers(0, len(centres), m)] + 1.5 * rng.standard_normal((m, 300))).astype(np.float32)
            words = [f"w{i}" for i in range(len(V))]  # shared strings: walip's identical seeds exist
            info[f"{lang}_real_rows"] = 0
        X, ext = extend_space(V, max_size, seed=k)
        info[f"{lang}_extension"] = ext
        words = words[:max_size] + [f"~{lang}{i}" for i in range(max(0, max_size - len(words)))]
        spaces[lang] = WordVectors(words, X)
        save_vectors(work / f"{lang}.npy", WordVectors(words, X.astype(np.float16)))
    if write_vec:
        save_vectors(work / "en.vec", spaces["en"])
    train, test = _muse_rows(data, spaces["en"], spaces["fr"], max_size)
    np.save(work / "train.npy", train)
    np.save(work / "test.npy", test)
    info.update(train_pairs=len(train), test_pairs=len(test))
    (work / "prepared.json").write_text(json.dumps(info))
    return info


def _muse_rows(data: Path | None, en, fr, max_size: int) -> tuple[np.ndarray, np.ndarray]:
    muse = None if data is None else data / "dictionaries" / "muse"
    if muse is not None and (muse / "en-fr.0-5000.txt").is_file():
        from services.alignment.dictionary import dictionary_to_indices, load_dictionary

        train, _ = dictionary_to_indices(load_dictionary(muse / "en-fr.0-5000.txt"), en.index, fr.index)
        test, _ = dictionary_to_indices(load_dictionary(muse / "en-fr.5000-6500.txt"), en.index, fr.index)
        return train, test
    # Synthetic: row i with row i among the first 20k (MUSE's sizes: 5,000 train, 1,500 test; costs, not accuracy).
    k = min(20000, max_size)
    rows = np.random.default_rng(7).permutation(k)
    train, test = rows[: k // 4], rows[k // 4 : k // 4 + 3 * k // 40]
    return np.stack([train, train], 1), np.stack([test, test], 1)


# ----------------------------------------------------------------------------- the child side


@dataclass
class Ctx:
    size: int
    work: Path
    device: str
    extra: dict = field(default_factory=dict)

    def space(self, lang: str):
        """The first ``size`` rows of a prepared space, normalised as the benchmarks do (not timed)."""
        from services.alignment.vectors import load_normalized

        return load_normalized(self.work / f"{lang}.npy", NORMALIZE, max_vocab=self.size)[0]

    def pairs(self, name: str) -> np.ndarray:
        rows = np.load(self.work / f"{name}.npy")
        return rows[(rows[:, 0] < self.size) & (rows[:, 1] < self.size)]


class Timer:
    """Wall seconds of a block; the process's CPU seconds over all timed blocks add up in ``Timer.cpu_total``."""

    cpu_total = 0.0

    def __enter__(self):
        self.started, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.started
        Timer.cpu_total += time.process_time() - self.cpu


def peak_rss_mb() -> float:
    """This process's peak RSS in MiB: VmHWM of its own address space (ru_maxrss would carry the parent's peak
    over the fork/vfork + exec that started it)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:  # pragma: no cover - not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _sync(device: str) -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def stage_load_vec(ctx: Ctx) -> dict:
    """Load, normalise and fingerprint a .vec text file, as serving does."""
    from services.alignment.vectors import load_normalized

    with Timer() as t:
        wv, _ = load_normalized(ctx.work / "en.vec", NORMALIZE, max_vocab=ctx.size)
    return {"seconds": t.seconds, "rows": len(wv)}


def stage_load_npy(ctx: Ctx) -> dict:
    """What serving and registering a space do with a .npy file: load, normalise, fingerprint
    (:func:`services.alignment.vectors.load_normalized`, streamed from the memory map)."""
    from services.alignment.vectors import load_normalized

    with Timer() as t:
        wv, _ = load_normalized(ctx.work / "en.npy", NORMALIZE, max_vocab=ctx.size)
    return {"seconds": t.seconds, "rows": len(wv)}


def _procrustes_mapped(ctx: Ctx):
    from services.alignment.procrustes import procrustes

    en, fr = ctx.space("en"), ctx.space("fr")
    train = ctx.pairs("train")
    W = procrustes(en.vectors[train[:, 0]], fr.vectors[train[:, 1]])
    return (en.vectors @ W).astype(np.float32), fr.vectors


def stage_nn_retrieval(ctx: Ctx) -> dict:
    from services.alignment.evaluation import bli_evaluate

    XW, Y = _procrustes_mapped(ctx)
    test = ctx.pairs("test")
    with Timer() as t:
        res = bli_evaluate(XW, Y, test, retrieval="nn")
        _sync(ctx.device)
    return {"seconds": t.seconds, "queries": res["n_queries"], "p1": 100 * res["p@1"],
            "flops": 2.0 * res["n_queries"] * len(Y) * Y.shape[1]}


def stage_csls_retrieval(ctx: Ctx) -> dict:
    from services.alignment.evaluation import bli_evaluate

    XW, Y = _procrustes_mapped(ctx)
    test = ctx.pairs("test")
    with Timer() as t:
        res = bli_evaluate(XW, Y, test, retrieval="csls")
        _sync(ctx.device)
    n, d = len(Y), Y.shape[1]
    return {"seconds": t.seconds, "queries": res["n_queries"], "p1": 100 * res["p@1"],
            "flops": 2.0 * n * len(XW) * d + 2.0 * res["n_queries"] * n * d}


def stage_induction(ctx: Ctx) -> dict:
    from services.alignment.retrieval import mutual_nn_fused

    XW, Y = _procrustes_mapped(ctx)
    with Timer() as t:
        fwd, bwd, _, stats = mutual_nn_fused(XW, Y, retrieval="csls", knn=10)
        _sync(ctx.device)
    mutual = int(np.sum(bwd[fwd] == np.arange(len(XW))))
    return {"seconds": t.seconds, "pairs": mutual, "flops": 2 * 2.0 * len(XW) * len(Y) * Y.shape[1], **stats}  # 2 sweeps


def _align_stage(ctx: Ctx, method: str, options: dict | None = None, seeds: bool = True) -> dict:
    from services.alignment.registry import align

    en, fr = ctx.space("en"), ctx.space("fr")
    train = ctx.pairs("train") if seeds else None
    with Timer() as t:
        res = align(en, fr, method, seed_pairs=train, options=options or {})
        _sync(ctx.device)
    stats = res.mapping.stats["stages"]
    out = {"seconds": t.seconds, "pairs": int(res.pairs_used), "dictionary_pairs": len(res.dictionary[0])}
    for s in stats:
        if s["method"] == "instamap":
            out["instamap_final_pairs"] = s["final_pairs"]
        if s["method"] == "l1":
            out.update(l1_work=s["work"], l1_stop=s["stop_reason"], l1_steps=s["steps"], l1_seconds=s["seconds"])
    return out


def stage_procrustes(ctx: Ctx) -> dict:
    return _align_stage(ctx, "procrustes")


def stage_vecmap(ctx: Ctx) -> dict:
    return _align_stage(ctx, "vecmap")


def stage_instamap(ctx: Ctx) -> dict:
    """vecmap+instamap, the best supervised pipeline (fast engine, paper variant): issue 18's 30 s / 1 GB target."""
    return _align_stage(ctx, "vecmap+instamap")


def stage_instamap_reference(ctx: Ctx) -> dict:
    return _align_stage(ctx, "vecmap+instamap", {"instamap": {"engine": "reference"}})


def stage_instamap_code(ctx: Ctx) -> dict:
    """The authors' code variant (PCA and whole-vocabulary NN expansion every iteration: quadratic)."""
    return _align_stage(ctx, "vecmap+instamap", {"instamap": {"variant": "code"}})


def stage_walip(ctx: Ctx) -> dict:
    return _align_stage(ctx, "walip", seeds=False)


def stage_l1(ctx: Ctx) -> dict:
    """The l1 stage alone (default options: the paper's flow, its dictionary built inside the 10k cut) on vecmap's
    output."""
    from services.alignment.registry import align
    from services.alignment.vectors import WordVectors

    en, fr = ctx.space("en"), ctx.space("fr")
    base = align(en, fr, "vecmap", seed_pairs=ctx.pairs("train")).mapping
    XW, YT = base.transform_source(en.vectors), base.transform_target(fr.vectors)
    options = {"l1": {"max_work": ctx.extra["max_work"]}} if "max_work" in ctx.extra else {}
    with Timer() as t:
        res = align(WordVectors(en.words, XW), WordVectors(fr.words, YT), "l1", options=options)
        _sync(ctx.device)
    s = res.mapping.stats["stages"][0]
    n, m, d = len(XW), len(YT), XW.shape[1]
    # The default dictionary (dictionary=restricted): mutual CSLS inside the first 10k rows and columns, two sweeps.
    flops = 2 * 2.0 * d * min(10000, n) * min(10000, m)
    return {"seconds": t.seconds, "pairs": s["pairs"], "l1_work": s["work"], "l1_stop": s["stop_reason"],
            "l1_steps": s["steps"], "l1_seconds": s["seconds"], "dictionary_flops": flops}


def stage_serve_tables(ctx: Ctx) -> dict:
    """A served pair's cost: install a mapping (mapped rows, index), r_S, and its NN and CSLS top-10 tables."""
    from services.alignment.mapping import LinearStage, Mapping
    from services.alignment.procrustes import procrustes
    from services.serving.registry import SpaceRegistry
    from services.serving.space import WordSpace

    en, fr = ctx.space("en"), ctx.space("fr")
    train = ctx.pairs("train")
    mapping = Mapping("procrustes", [LinearStage(procrustes(en.vectors[train[:, 0]], fr.vectors[train[:, 1]]))])
    registry = SpaceRegistry(table_k=10, storage_dtype=ctx.extra.get("dtype", "float32"))
    with Timer() as t_spaces:
        registry.add_space(WordSpace.build("en", en.words, en.vectors, source="bench"))
        registry.add_space(WordSpace.build("fr", fr.words, fr.vectors, source="bench"))
    with Timer() as t_install:
        registry.install_mapping("en", "fr", mapping, compute_csls=True)
    with Timer() as t_tables:
        registry.request_tables("en", "fr")
        built = registry.build_requested_tables()
    n, d = len(en), en.vectors.shape[1]
    return {"seconds": t_spaces.seconds + t_install.seconds + t_tables.seconds, "spaces_s": t_spaces.seconds,
            "install_s": t_install.seconds, "tables_s": t_tables.seconds, "tables": built,
            "flops": 3 * 2.0 * n * len(fr) * d}


def stage_serve_memory(ctx: Ctx) -> dict:
    """Bytes and RSS of ``languages`` served spaces of this size at one storage dtype, each mapped to the first by
    its own linear map (a hub), as file spaces with saved mappings are served."""
    import psutil

    from services.alignment.mapping import LinearStage, Mapping
    from services.serving.registry import SpaceRegistry
    from services.serving.space import WordSpace

    dtype, languages = ctx.extra.get("dtype", "float32"), int(ctx.extra.get("languages", 2))
    base = ctx.space("en")
    rss0 = psutil.Process().memory_info().rss
    registry = SpaceRegistry(storage_dtype=dtype, table_k=0)
    rng = np.random.default_rng(0)
    with Timer() as t:
        for k in range(languages):
            lang = f"l{k}"  # its own words and rows, as a real language has
            registry.add_space(WordSpace.build(lang, [f"{w}{k}" for w in base.words], base.vectors.copy(),
                                               source="bench", storage_dtype=dtype))
            if k:
                Q, _ = np.linalg.qr(rng.standard_normal((base.dim, base.dim)))
                registry.install_mapping(lang, "l0", Mapping("linear", [LinearStage(Q)]), compute_csls=False)
    del base
    import gc

    gc.collect()
    rss = psutil.Process().memory_info().rss - rss0
    described = sum(e["bytes"] for e in registry.describe())
    return {"seconds": t.seconds, "languages": languages, "dtype": dtype, "rss_mb": rss / 2**20,
            "rss_per_language_mb": rss / 2**20 / languages, "array_bytes_mb": described / 2**20}


def stage_instamap_check(ctx: Ctx) -> dict:
    """vecmap+instamap with one engine and variant on a real pair (ctx.work = the shared data folder): P@1."""
    from services.alignment.dictionary import count_uncovered_sources, dictionary_to_indices, load_dictionary
    from services.alignment.evaluation import bli_evaluate
    from services.alignment.registry import align
    from services.alignment.vectors import WordVectors, load_vectors, normalize

    s_lang, t_lang = ctx.extra["pair"].split("-")
    src, tgt = (load_vectors(ctx.work / "vectors" / f"{lang}.npy", max_vocab=ctx.size) for lang in (s_lang, t_lang))
    src, tgt = WordVectors(src.words, normalize(src.vectors, NORMALIZE)), WordVectors(tgt.words, normalize(tgt.vectors, NORMALIZE))
    muse = ctx.work / "dictionaries" / "muse"
    train, _ = dictionary_to_indices(load_dictionary(muse / f"{ctx.extra['pair']}.0-5000.txt"), src.index, tgt.index)
    entries = load_dictionary(muse / f"{ctx.extra['pair']}.5000-6500.txt")
    test, _ = dictionary_to_indices(entries, src.index, tgt.index)
    _, n_oov = count_uncovered_sources(entries, src.index, tgt.index)
    options = {"instamap": {"engine": ctx.extra["engine"], "variant": ctx.extra["variant"]}}
    with Timer() as t:
        res = align(src, tgt, "vecmap+instamap", seed_pairs=train, options=options)
    align_peak = peak_rss_mb()
    m = res.mapping
    XW, YT = m.transform_source(src.vectors), m.transform_target(tgt.vectors)
    nn = bli_evaluate(XW, YT, test, retrieval="nn", n_oov_sources=n_oov)
    csls = bli_evaluate(XW, YT, test, retrieval="csls", n_oov_sources=n_oov)
    stage = m.stats["stages"][1]
    return {"seconds": t.seconds, "align_peak_mb": align_peak, "p1_nn": 100 * nn["p@1"], "p1_csls": 100 * csls["p@1"],
            "queries": csls["n_queries"], "final_pairs": stage["final_pairs"], "dictionary_pairs": len(res.dictionary[0]),
            "history": [h["pairs"] for h in stage["history"]]}


STAGES = {
    "load_vec": stage_load_vec,
    "load_npy": stage_load_npy,
    "nn_retrieval": stage_nn_retrieval,
    "csls_retrieval": stage_csls_retrieval,
    "induction": stage_induction,
    "procrustes": stage_procrustes,
    "vecmap": stage_vecmap,
    "vecmap+instamap": stage_instamap,
    "vecmap+instamap (reference engine)": stage_instamap_reference,
    "vecmap+instamap (code variant)": stage_instamap_code,
    "walip": stage_walip,
    "l1": stage_l1,
    "serve_tables": stage_serve_tables,
    "serve_memory": stage_serve_memory,
    "instamap_check": stage_instamap_check,
}
