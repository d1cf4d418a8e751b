"""Alignment methods by name, composable as pipelines ("walip+l1", "procrustes+instamap") (issue 3, contract "registry.py").

Each stage fits on the spaces produced by the stages before it (source and target both transformed)
and hands on a dictionary: the stage's own induced dictionary when it makes one (walip, instamap, l1),
otherwise the seeds it was given. ``align`` returns the composed :class:`Mapping` plus the mutual-NN
CSLS dictionary of the final space (over the ``dictionary_vocab`` most frequent words of each side).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.alignment.l1 import DEFAULT_MAX_WORK
from services.alignment.mapping import LinearStage, Mapping, TwoSidedLinearStage, _unit
from services.errors import InvalidInput

__all__ = ["ALIGNERS", "AlignResult", "Aligner", "ProgressFn", "StageFit", "align", "available_methods", "parse_method"]

ProgressFn = Callable[[str, int, int, dict], None]
# Global options (not belonging to a stage).
GLOBAL_DEFAULTS: dict[str, Any] = {"dictionary_vocab": 20000, "dictionary_retrieval": "csls", "dictionary_knn": 10}


@dataclass
class StageFit:
    stages: list[Any]
    pairs: np.ndarray | None  # dictionary handed to the next stage (None: keep the incoming seeds)
    validation_losses: list[float] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    pairs_used: int = 0
    # The stage's own fitted (source, target) spaces when it computed them (equal to its transforms):
    # align() then skips transforming both vocabularies again.
    spaces: tuple[np.ndarray, np.ndarray] | None = None


@dataclass
class Aligner:
    """One registered method: name, default options, fit(X, Y, seeds, options, progress) -> StageFit."""

    name: str
    fit: Callable[..., StageFit]
    defaults: dict[str, Any]
    needs_seeds: bool = True
    description: str = ""
    # Checks resolved option values before any work (a job submission is rejected with 422, not failed later).
    check: Callable[[dict], None] | None = None


@dataclass
class AlignResult:
    mapping: Mapping
    dictionary: tuple[np.ndarray, np.ndarray]
    validation_losses: list[float]
    seconds: float
    pairs_used: int


def _require_seeds(name: str, seeds: np.ndarray | None) -> np.ndarray:
    if seeds is None or len(seeds) == 0:
        raise InvalidInput(f"method {name!r} needs seed pairs (a dictionary, identical strings or pivots)",
                           detail={"field": "seed_pairs"})
    return seeds


def _fit_procrustes(X, Y, seeds, opts, progress) -> StageFit:
    from services.alignment.procrustes import procrustes

    seeds = _require_seeds("procrustes", seeds)
    W = procrustes(X[seeds[:, 0]], Y[seeds[:, 1]])
    return StageFit([LinearStage(W)], None, stats={"pairs": len(seeds)}, pairs_used=len(seeds))


def _fit_kabsch(X, Y, seeds, opts, progress) -> StageFit:
    from services.alignment.procrustes import kabsch

    seeds = _require_seeds("kabsch", seeds)
    W = kabsch(X[seeds[:, 0]], Y[seeds[:, 1]])
    return StageFit([LinearStage(W)], None, stats={"pairs": len(seeds)}, pairs_used=len(seeds))


def _fit_multistep(X, Y, seeds, opts, progress) -> StageFit:
    from services.alignment.procrustes import multistep_mapping

    seeds = _require_seeds("vecmap", seeds)
    Wx, Wz = multistep_mapping(X[seeds[:, 0]], Y[seeds[:, 1]], src_reweight=float(opts["src_reweight"]),
                               tgt_reweight=float(opts["tgt_reweight"]), src_dewhiten=opts["src_dewhiten"],
                               tgt_dewhiten=opts["tgt_dewhiten"])
    return StageFit([TwoSidedLinearStage(Wx, Wz)], None, stats={"pairs": len(seeds)}, pairs_used=len(seeds))


def _fit_robust_procrustes(X, Y, seeds, opts, progress) -> StageFit:
    from services.alignment.procrustes import robust_procrustes

    seeds = _require_seeds("robust-procrustes", seeds)
    W, weights = robust_procrustes(X[seeds[:, 0]], Y[seeds[:, 1]], n_iter=int(opts["n_inner"]), eps=float(opts["eps"]),
                                   variant=opts["variant"])
    return StageFit([LinearStage(W)], None, stats={"pairs": len(seeds), "mean_weight": float(weights.mean())},
                    pairs_used=len(seeds))


def _fit_walip(X, Y, seeds, opts, progress) -> StageFit:
    from services.alignment.walip import WALIP_VARIANTS, walip_confident, walip_refine

    seeds = _require_seeds("walip", seeds)
    if opts["variant"] not in WALIP_VARIANTS:
        raise InvalidInput(f"unknown WALIP variant {opts['variant']!r}; known: {', '.join(WALIP_VARIANTS)}",
                           detail={"field": "variant", "known": list(WALIP_VARIANTS)})
    if opts["variant"] == "self-learning":  # VecMap's robust self-learning from the seeds (walip_self_learning)
        from services.alignment.walip_self_learning import walip_self_learning

        res = walip_self_learning(
            X, Y, seeds, vocabulary_cutoff=opts["vocabulary_cutoff"], knn=int(opts["knn"]), direction=opts["direction"],
            stochastic_initial=float(opts["stochastic_initial"]), stochastic_multiplier=float(opts["stochastic_multiplier"]),
            stochastic_interval=int(opts["stochastic_interval"]), threshold=float(opts["threshold"]),
            max_iter=int(opts["self_learning_max_iter"]), whiten=bool(opts["self_learning_whiten"]), seed=int(opts["seed"]),
            progress=progress)
        last = res.history[-1] if res.history else {}
        stats = {"variant": "self-learning", "seed_pairs": len(seeds), "iterations": len(res.validation_losses),
                 "final_pairs": len(res.pairs), "history": res.history, "stopped_by": last.get("stopped_by"),
                 "final_keep_prob": last.get("keep_prob"),
                 "best_validation_loss": float(min(res.validation_losses)) if res.validation_losses else None}
        return StageFit([TwoSidedLinearStage(res.W, res.Wz)], res.pairs, res.validation_losses, stats,
                        pairs_used=int(last.get("final_dictionary_pairs", len(seeds))))
    if opts["variant"] == "confident":
        confident = {"max_iter": int(opts["confident_iters"]), "max_vocab": opts["confident_vocab"], "knn": int(opts["knn"]),
                     "agreement": bool(opts["agreement"]), "progress": progress}
        selection = None
        if opts["top_pairs"] == "auto":  # chosen per pair by an unsupervised criterion (walip_select): no dictionary
            from services.alignment.walip import walip_select

            res, selection = walip_select(X, Y, seeds, candidates=tuple(int(c) for c in opts["top_pairs_candidates"]),
                                          **confident)
        elif isinstance(opts["top_pairs"], (int, float)) and not isinstance(opts["top_pairs"], bool):
            res = walip_confident(X, Y, seeds, top_pairs=int(opts["top_pairs"]), **confident)
        else:
            raise InvalidInput("top_pairs must be a number or 'auto'", detail={"field": "top_pairs"})
        from services.alignment.walip_final import with_final_stage

        # issue 15: final_stage=union adds a deterministic union CSLS stage after the rounds (walip_final)
        res = with_final_stage(res, X, Y, seeds, max_vocab=opts["confident_vocab"], knn=int(opts["knn"]),
                               final_stage=opts["final_stage"], final_iters=int(opts["final_iters"]),
                               final_threshold=float(opts["final_threshold"]), progress=progress)
        stats = {"variant": "confident", "final_stage": opts["final_stage"], "seed_pairs": len(seeds),
                 "iterations": len(res.validation_losses),
                 **({"top_pairs_selection": selection} if selection is not None else {}),
                 "best_iteration": res.best_iteration + 1, "final_pairs": len(res.pairs), "history": res.history,
                 # the returned map's iteration (the variant keeps the last fit; see walip_confident)
                 "best_validation_loss": float(res.validation_losses[res.best_iteration])}
        return StageFit([TwoSidedLinearStage(res.W, res.Wz)], res.pairs, res.validation_losses, stats,
                        pairs_used=int(res.history[-1]["pairs_fit"]))
    res = walip_refine(X, Y, seeds, q_schedule=tuple(opts["q_schedule"]), k_schedule=tuple(opts["k_schedule"]),
                       max_iter=int(opts["max_iter"]), patience=int(opts["patience"]), tol=float(opts["tol"]),
                       robust=bool(opts["robust"]),
                       variant=opts["variant"], n_inner=int(opts["n_inner"]), eps=float(opts["eps"]),
                       max_vocab=opts["max_vocab"], knn=int(opts["knn"]), quantile_samples=int(opts["quantile_samples"]),
                       seed=int(opts["seed"]), progress=progress)
    stats = {"seed_pairs": len(seeds), "best_iteration": res.best_iteration + 1, "iterations": len(res.validation_losses),
             "final_pairs": len(res.pairs), "best_validation_loss": float(min(res.validation_losses)),
             "history": res.history, "variant": opts["variant"]}
    return StageFit([LinearStage(res.W)], res.pairs, res.validation_losses, stats, pairs_used=len(res.pairs))


def _fit_instamap(X, Y, seeds, opts, progress) -> StageFit:
    from services.alignment.instamap import fit_instamap

    seeds = _require_seeds("instamap", seeds)
    stage, pairs, history, spaces = fit_instamap(
        X, Y, seeds, K=int(opts["K"]), T=opts["T"], variant=opts["variant"], src_step=opts["src_step"],
        tgt_step=opts["tgt_step"], expand=bool(opts["expand"]), expand_vocab=opts["expand_vocab"],
        engine=opts["engine"], return_spaces=True, keep_rows=opts.get("_keep_rows"), progress=progress)
    return StageFit([stage], pairs, stats={"seed_pairs": len(seeds), "final_pairs": len(pairs), "variant": opts["variant"],
                                           "engine": opts["engine"], "src_step": stage.src_step,
                                           "tgt_step": stage.tgt_step, "history": history},
                    pairs_used=len(pairs), spaces=spaces)


def _check_instamap(opts: dict) -> None:
    from services.alignment.instamap import ENGINES

    for key, allowed in (("variant", ("paper", "code")), ("engine", ENGINES)):
        if opts[key] not in allowed:
            raise InvalidInput(f"unknown InstaMap {key} {opts[key]!r}; use one of {list(allowed)}",
                               detail={"field": f"options.{key}", "known": list(allowed)})


def _check_l1(opts: dict) -> None:
    from services.alignment.l1 import MODES

    for key, allowed in (("mode", MODES), ("dictionary", ("reference", "restricted"))):
        if opts[key] not in allowed:
            raise InvalidInput(f"unknown L1 {key} {opts[key]!r}; use one of {list(allowed)}",
                               detail={"field": f"options.{key}", "known": list(allowed)})
    for key in ("rounds", "stride"):
        value = opts[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInput(f"L1 {key} must be an integer >= 1, got {value!r}", detail={"field": f"options.{key}"})
    work = opts["max_work"]
    if work is not None and (isinstance(work, bool) or not isinstance(work, (int, float)) or not work > 0):
        raise InvalidInput(f"L1 max_work must be a number > 0 (multiply-adds) or null, got {work!r}",
                           detail={"field": "options.max_work"})


def _fit_l1(X, Y, seeds, opts, progress) -> StageFit:
    from services.alignment.l1 import l1_dictionary, l1_loss, l1_refine
    from services.alignment.procrustes import orthogonality_error

    rounds = opts["rounds"]  # values checked by _check_l1 when the options were resolved
    budget = None if opts["max_work"] is None else float(opts["max_work"])  # for all rounds together
    M = np.eye(X.shape[1])
    XM, pairs, results, per_round = X, None, [], []
    spent = 0.0
    for round_ in range(rounds):
        if budget is not None and spent >= budget:
            break  # no work left for another round (the last one stopped with work_budget)
        new_pairs = l1_dictionary(XM, Y, max_vocab=int(opts["max_vocab"]), knn=int(opts["knn"]), rule=opts["dictionary"])
        if len(new_pairs) == 0:
            if round_ == 0:
                raise InvalidInput("L1 refinement found no mutual nearest-neighbour pairs")
            break
        if pairs is not None and np.array_equal(new_pairs, pairs):
            break  # fixed point: the refined mapping induces the same dictionary
        pairs = new_pairs
        if round_ == 0:
            first_pairs = pairs
        res = l1_refine(XM[pairs[:, 0]], Y[pairs[:, 1]], mode=opts["mode"], max_steps=opts["max_steps"],
                        max_seconds=opts["max_seconds"], holdout=float(opts["holdout"]), patience=int(opts["patience"]),
                        holdout_seed=int(opts["holdout_seed"]), stride=int(opts["stride"]),
                        max_work=None if budget is None else budget - spent,
                        mu_start=None if opts["mu_start"] is None else float(opts["mu_start"]), progress=progress)
        spent += res.work
        M = M @ res.M
        XM = X @ M.astype(X.dtype, copy=False)
        results.append(res)
        per_round.append({"pairs": len(pairs), **res.stats()})
    first, last = results[0], results[-1]
    # Whole-run losses on the first dictionary (the one a single round, and the faithful flow, optimise), at I
    # and at the final M, so rows with and without re-induction compare; each round's own are in round_stats.
    A0, B0 = X[first_pairs[:, 0]].astype(np.float64), Y[first_pairs[:, 1]].astype(np.float64)
    stats = {"mode": opts["mode"], "dictionary": opts["dictionary"], **last.stats(), "pairs": len(pairs),
             "first_pairs": len(first_pairs), "loss_initial": first.loss_initial, "loss_final": l1_loss(A0, B0, M),
             "steps": sum(r.steps for r in results), "orthogonality_error": orthogonality_error(M),
             "seconds": sum(r.seconds for r in results), "rounds": len(results), "round_stats": per_round,
             "max_work": opts["max_work"], "work": spent}
    if opts["mode"] == "orthogonal":
        stats.update({"holdout": float(opts["holdout"]), "patience": int(opts["patience"]), "mu_start": opts["mu_start"],
                      "early_stopping": last.n_holdout > 0})
    elif opts["mode"] == "flow":
        stats["stride"] = int(opts["stride"])
    return StageFit([LinearStage(M)], pairs, [r.loss_final for r in results], stats, pairs_used=len(pairs))


def _check_globetrotter(opts: dict) -> None:
    from services.alignment.globetrotter_words import check

    check(opts)


def _fit_globetrotter(X, Y, seeds, opts, progress) -> StageFit:
    from services.alignment.globetrotter_words import fit_globetrotter_words

    W, pairs, stats = fit_globetrotter_words(X, Y, opts, progress)
    return StageFit([LinearStage(W)], pairs, stats=stats, pairs_used=len(pairs))


ALIGNERS: dict[str, Aligner] = {
    "procrustes": Aligner("procrustes", _fit_procrustes, {}, description="orthogonal Procrustes on the seed pairs"),
    "kabsch": Aligner("kabsch", _fit_kabsch, {}, description="proper rotation (Kabsch) on the seed pairs"),
    "vecmap": Aligner("vecmap", _fit_multistep, {"src_reweight": 0.5, "tgt_reweight": 0.5, "src_dewhiten": "src",
                                                 "tgt_dewhiten": "tgt"},
                      description="supervised multi-step framework (Artetxe et al. 2018: whiten, orthogonal map, "
                                  "re-weight, de-whiten), as VecMap --supervised"),
    "robust-procrustes": Aligner("robust-procrustes", _fit_robust_procrustes, {"n_inner": 5, "eps": 1e-3, "variant": "paper"},
                                 description="WALIP Algorithm 1: error-weighted Procrustes"),
    "walip": Aligner("walip", _fit_walip, {
        "q_schedule": [0.5, 0.5, 0.3, 0.1], "k_schedule": [10, 5, 3, 1], "max_iter": 40, "patience": 1, "tol": 0.01,
        "robust": True,
        # "confident" (ours, the default: measured better on these vectors) or the paper's / authors' code loop.
        "variant": "confident", "top_pairs": 2000, "top_pairs_candidates": [1000, 2000, 4000, 8000],
        "confident_iters": 6, "confident_vocab": 10000,
        # issue 15 round 2: confident_iters=0 is the multi-step fit on the seeds alone; agreement=true keeps only
        # round pairs the seed-only fit also matches (walip_confident)
        "agreement": False,
        # issue 15: "union" continues the rounds with deterministic union CSLS self-learning over the same 10k words,
        # then a multi-step fit (walip_final). Not the default: +1.4/+5.7 P@1 CSLS on the frequent-word dev split
        # (en-fr/en-de) but -5.5/-0.4 on MUSE test and -5.2/-6.2 on train words of rank >= 5000 (README, WALIP
        # step 2).
        "final_stage": "none", "final_iters": 20, "final_threshold": 1e-4,
        "n_inner": 5, "eps": 1e-3, "max_vocab": 15000, "knn": 10, "quantile_samples": 1_000_000, "seed": 0,
        # variant "self-learning" (VecMap's robust self-learning, ACL 2018; walip.walip_self_learning): its
        # --unsupervised defaults, but stochastic_interval 3 (paper: 50; fixed before measuring, for 2-core budgets)
        "vocabulary_cutoff": 20000, "direction": "union", "stochastic_initial": 0.1, "stochastic_multiplier": 2.0,
        "stochastic_interval": 3, "threshold": 1e-6, "self_learning_max_iter": 30, "self_learning_whiten": False,
    }, description="WALIP step 2: iterative fits on confident CSLS matches (variant confident: mutual top pairs + "
                   "seeds, multi-step maps; paper/code: robust Procrustes with the q/k schedules; self-learning: "
                   "VecMap's stochastic CSLS self-learning from the seeds, multi-step refinement at the end)"),
    "instamap": Aligner("instamap", _fit_instamap, {
        # None: the variant's default (methods.md "InstaMap"; see services.alignment.instamap).
        "K": 70, "T": None, "variant": "paper", "src_step": None, "tgt_step": None, "expand": True, "expand_vocab": None,
        # "fast" (unique anchors, blocked exact scores, one-sweep expansion) or "reference" (the first implementation)
        "engine": "fast",
    }, check=_check_instamap, description="InstaMap: Kabsch + per-word translation vectors"),
    # Default: the paper's flow. Measured (benchmarks/bli.py, 6 inputs, en→fr/en→de) it never moved CSLS P@1
    # by more than 0.4 either way, while the orthogonal modes (lower l1 loss, +1 NN P@1 on VecMap/Procrustes;
    # mode=flow +1.0 CSLS on VecMap en→fr) cost 1.1–1.9 CSLS points on WALIP outputs; they are one option away.
    "l1": Aligner("l1", _fit_l1, {"mode": "faithful", "max_vocab": 10000, "knn": 10, "max_steps": None, "max_seconds": None,
                                  # "restricted" (default): mutual CSLS inside the max_vocab cut -- work bounded by
                                  # the cut, not the vocabulary (issue 18); "reference": MUSE get_candidates rule (as
                                  # the authors: r over the whole vocabularies, quadratic in them). Chosen on dev (a
                                  # held-out fifth of MUSE train, 50k words, vecmap+l1): CSLS P@1 en-fr 43.7 = 43.7,
                                  # en-de 33.4 vs 33.0; 8-11 s over vecmap instead of 38-55 s.
                                  "dictionary": "restricted", "rounds": 1,
                                  "holdout": 0.2, "patience": 10, "holdout_seed": 0,
                                  # None: smoothing continuation from μ = median|r|/2; 1e-6: exact l1 from step 1
                                  "mu_start": None,
                                  # mode=flow: reference output steps per Cayley step (1: the reference's step;
                                  # 20 ends within 0.15 % of it, measured on Procrustes en→fr)
                                  "stride": 20,
                                  # multiply-adds the refinement may spend, all rounds together (l1.DEFAULT_MAX_WORK:
                                  # L1_REFINE_SECONDS on 2 cores); null: unbounded
                                  "max_work": DEFAULT_MAX_WORK},
                  needs_seeds=False, check=_check_l1,
                  description="L1 refinement on mutual CSLS pairs (the paper's flow; mode=flow: the same flow with "
                              "exactly orthogonal Cayley steps to the paper's horizon; mode=orthogonal: Cayley descent, "
                              "held-out early stopping unless holdout=0)"),
    # Issue 16: anchors from a Globetrotter space learnt through photos (services/alignment/globetrotter_words.py).
    "globetrotter": Aligner("globetrotter", _fit_globetrotter, {"checkpoint": None, "src_lang": None, "tgt_lang": None,
                                                                "k": 5, "retrieval": "csls", "max_vocab": 20000},
                            needs_seeds=False, check=_check_globetrotter,
                            description="Globetrotter word translation: Procrustes on mutual-NN (CSLS k=5) anchors "
                                        "of a checkpoint's learnt word embeddings (needs checkpoint, src_lang, "
                                        "tgt_lang)"),
}


def available_methods() -> list[str]:
    """Names usable alone or joined with '+'."""
    return sorted(ALIGNERS)


def parse_method(method: str) -> list[str]:
    """'walip+l1' -> ['walip', 'l1'] (case and spaces ignored); unknown names raise InvalidInput listing the known ones."""
    names = [part.strip().lower() for part in str(method or "").split("+")]
    if not names or any(not n for n in names):
        raise InvalidInput(f"invalid method {method!r}: use one name or names joined with '+'",
                           detail={"field": "method", "known": available_methods()})
    unknown = [n for n in names if n not in ALIGNERS]
    if unknown:
        raise InvalidInput(f"unknown method {', '.join(map(repr, unknown))}; known: {', '.join(available_methods())}",
                           detail={"field": "method", "unknown": unknown, "known": available_methods()})
    return names


def _stage_options(names: list[str], options: dict | None) -> tuple[list[dict], dict]:
    """Per-stage options: defaults, then flat keys a stage knows, then its own sub-dict (``{"l1": {...}}``)."""
    options = dict(options or {})
    per_method = {n: options.pop(n) for n in list(options) if n in ALIGNERS}
    global_opts = {k: options.pop(k) for k in list(options) if k in GLOBAL_DEFAULTS}
    known_flat = set().union(*(ALIGNERS[n].defaults for n in names))
    unknown = sorted(set(options) - known_flat)
    if unknown:
        raise InvalidInput(f"unknown option(s) {unknown} for method {'+'.join(names)}",
                           detail={"field": "options", "unknown": unknown,
                                   "known": sorted(known_flat | set(GLOBAL_DEFAULTS) | set(names))})
    resolved = []
    for n in names:
        defaults = ALIGNERS[n].defaults
        sub = per_method.get(n) or {}
        if not isinstance(sub, dict):
            raise InvalidInput(f"options for {n!r} must be an object", detail={"field": f"options.{n}"})
        bad = sorted(set(sub) - set(defaults))
        if bad:
            raise InvalidInput(f"unknown option(s) {bad} for {n!r}; known: {sorted(defaults)}",
                               detail={"field": f"options.{n}", "unknown": bad, "known": sorted(defaults)})
        resolved.append({**defaults, **{k: v for k, v in options.items() if k in defaults}, **sub})
        if ALIGNERS[n].check is not None:
            ALIGNERS[n].check(resolved[-1])
    return resolved, {**GLOBAL_DEFAULTS, **global_opts}


def align(
    src,
    tgt,
    method: str,
    *,
    seed_pairs: np.ndarray | None = None,
    options: dict | None = None,
    progress: ProgressFn | None = None,
) -> AlignResult:
    """Fit ``method`` (one name or a '+' pipeline) mapping ``src`` onto ``tgt`` (WordVectors) (contract "registry.py").

    ``seed_pairs`` (p, 2) source/target rows from any source; when None, methods that need seeds use
    identical strings. Exceptions raised by ``progress`` abort the run unchanged (cancellation).
    """
    from services.alignment.dictionary import identical_pairs
    from services.alignment.retrieval import mutual_nn

    started = time.perf_counter()
    names = parse_method(method)
    stage_opts, global_opts = _stage_options(names, options)
    if src.vectors.shape[1] != tgt.vectors.shape[1]:
        raise InvalidInput(f"dimension mismatch: source is {src.vectors.shape[1]}-d, target {tgt.vectors.shape[1]}-d")
    seed_info: dict[str, Any] = {}
    if seed_pairs is None:
        if ALIGNERS[names[0]].needs_seeds:
            seed_pairs = identical_pairs(src.words, tgt.words)
            seed_info = {"seed": "identical", "seed_pairs": len(seed_pairs)}
    else:
        seed_pairs = np.asarray(seed_pairs, dtype=np.int64).reshape(-1, 2)
        if len(seed_pairs) and (seed_pairs.min() < 0 or seed_pairs[:, 0].max() >= len(src) or seed_pairs[:, 1].max() >= len(tgt)):
            raise InvalidInput("seed pairs index rows outside the vocabularies", detail={"field": "seed_pairs"})
        seed_info = {"seed": "given", "seed_pairs": len(seed_pairs)}
    X = np.asarray(src.vectors, np.float32)
    Y = np.asarray(tgt.vectors, np.float32)
    all_stages: list[Any] = []
    losses: list[float] = []
    stage_stats: list[dict] = []
    pairs = seed_pairs
    pairs_used = 0
    for i, (name, opts) in enumerate(zip(names, stage_opts)):
        if name == "instamap" and i == len(names) - 1 and global_opts["dictionary_vocab"] is not None:
            # The last stage's spaces feed only the final dictionary: InstaMap moves just the rows it reads.
            opts = {**opts, "_keep_rows": int(global_opts["dictionary_vocab"])}
        fit = ALIGNERS[name].fit(X, Y, pairs, opts, progress)
        if fit.spaces is not None:
            X, Y = fit.spaces
        else:
            for stage in fit.stages:
                X = stage.transform_source(X)
                Y = stage.transform_target(Y)
        all_stages.extend(fit.stages)
        losses.extend(float(v) for v in fit.validation_losses)
        stage_stats.append({"method": name, **fit.stats})
        pairs_used = int(fit.pairs_used)
        if fit.pairs is not None:
            pairs = fit.pairs
    if progress is not None:
        progress("dictionary", 0, 1, {})
    vocab = global_opts["dictionary_vocab"]
    dict_pairs, dict_scores = mutual_nn(_unit(X), _unit(Y), retrieval=global_opts["dictionary_retrieval"],
                                        knn=int(global_opts["dictionary_knn"]), max_src=vocab, max_tgt=vocab)
    if progress is not None:
        progress("dictionary", 1, 1, {"pairs": len(dict_pairs)})
    seconds = time.perf_counter() - started
    params = {"stages": [{"method": n, **o} for n, o in zip(names, stage_opts)], **global_opts, **seed_info}
    mapping = Mapping("+".join(names), all_stages, params=params, src_fingerprint=src.fingerprint(),
                      tgt_fingerprint=tgt.fingerprint(),
                      stats={"stages": stage_stats, "pairs_used": pairs_used, "dictionary_pairs": len(dict_pairs),
                             "seconds": seconds, **seed_info})
    return AlignResult(mapping, (dict_pairs, dict_scores), losses, seconds, pairs_used)
