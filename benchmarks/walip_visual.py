"""WALIP with images as the only bridge: one compact CLIP per language on its own photos, fingerprint pivots, step 2.

    .venv/bin/python benchmarks/walip_visual.py --out DIR [--partition pairwise|three-way] [--grid full|small]

Reads ``../shared/data`` (Flickr8k photos + English captions, Multi30K fr/de captions of the same photos, the
1,000 ImageNet samples, the static vectors en/fr/de, MUSE en-fr/en-de) and says so when it is absent.

1. CLIPs (services/vision/language_clips.py): MobileNet v1+v2 + the language's OWN static word vectors (IDF-weighted
   caption mean), linear heads; English on the Flickr8k English captions, French and German on the Multi30K
   captions of their photos. 1,000 Flickr8k photos are held out for fingerprints (the 792 without Multi30K
   captions, then random ones); the rest are dealt so that no photo carries captions in both languages of an
   aligned pair -- ``pairwise`` (default): en on one half, fr and de both on the other half (they are never aligned
   with each other here); ``three-way``: en, fr, de on three disjoint thirds. Asserted before training and audited
   from the checkpoints after. Written to ``DIR/clip-<lang>``; the held-out photos linked in ``DIR/fingerprint-photos``.
2. Step 1 grid, scored on the dev split -- the MUSE *train* dictionary (0-5000), never the test one: image set
   (held-out Flickr8k / ImageNet samples / both), prompts (the paper's ensembles / the bare word), vocabulary
   (20k most frequent words / words in >= 2 or >= 5 of the CLIP's own training captions), the paper's visual-word
   filter on/off, mutual pivots on/off; q = 0.5, k = 1 (the paper's). Reported: pivots, dev precision, Wilson 95 %.
3. The best configurations by dev precision (those with >= 50 evaluable pivots) each seed step 2 (WALIP
   ``confident``, default options) on both pairs; the one with the best mean dev P@1 CSLS is chosen. Nothing
   here reads the test dictionary.
4. Final rows, per pair, on the MUSE test split (5000-6500, over the full 50k target vocabulary, as
   benchmarks/bli.py): seeds = identical strings / fingerprint pivots (chosen and paper configurations) / their
   union, each with step 2's default (top_pairs 2,000) and with ``top_pairs=auto`` (the unsupervised rule:
   services/alignment/walip.py ``walip_select``); supervised Procrustes on the train split as the reference.
   Pivot counts, precision by source-frequency band with Wilson intervals, and a sample of pivots, per seed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, print_table, shared_path, write_results  # noqa: E402

CACHE = ROOT / ".vislex" / "cache"
LANGS = ("en", "fr", "de")
PAIRS = ("en-fr", "en-de")
NORMALIZE = "unit,center,unit"
N_FINGERPRINT = 1000
BARE = {lang: ["{}"] for lang in LANGS}
DEFAULT_TOP = 2000  # the registry's default top_pairs
CANDIDATES = (1000, 2000, 4000, 8000)  # the registry's top_pairs_candidates


@dataclass(frozen=True)
class Step1:
    """One fingerprint configuration (WALIP step 1)."""

    images: str = "imagenet"  # flickr (held-out photos) | imagenet | both
    prompts: str = "paper"  # paper (shipped ensembles) | bare ("{}")
    min_df: int | None = None  # None: the 20k most frequent words
    visual_filter: bool = True
    mutual: bool = False
    q: float = 0.5
    k: int = 1

    @property
    def name(self) -> str:
        vocab = f"df>={self.min_df}" if self.min_df else "top20k"
        return (f"{self.images}/{self.prompts}/{vocab}/{'filter' if self.visual_filter else 'nofilter'}"
                f"{'/mutual' if self.mutual else ''}/q={self.q}/k={self.k}")


PAPER = Step1()  # the paper's settings (methods.md, WALIP step 1) on the reference's ImageNet image set


def grid(kind: str) -> list[Step1]:
    if kind == "small":
        return [PAPER, Step1("flickr", "bare", 2, False, True), Step1("both", "bare", 2, False, False)]
    return [Step1(i, p, d, f, m) for i in ("flickr", "imagenet", "both") for p in ("paper", "bare")
            for d in (None, 2, 5) for f in (True, False) for m in (False, True)]


# ---------------------------------------------------------------- CLIPs


def captioned_sets():
    from benchmarks import flickr
    from services.clip.data import load_captioned_set

    en = flickr.flickr8k()
    data = {"en": en}
    for lang in ("fr", "de"):
        data[lang] = load_captioned_set(en.images_dir, sorted(flickr.multi30k_by_image(lang).items()))
    return data


def build_clips(out: Path, mode: str, reuse: bool) -> tuple[dict, dict]:
    from services.vision.language_clips import check_checkpoints_disjoint, partition_photos, train_language_clips

    data = captioned_sets()
    en = data["en"]
    no_m30k = sorted(set(en.images) - set(data["fr"].images) - set(data["de"].images))
    groups = [["en"], ["fr", "de"]] if mode == "pairwise" else None
    eligible = {lang: data[lang].images for lang in LANGS}
    partition = partition_photos(en.images, eligible, n_fingerprint=N_FINGERPRINT, groups=groups, seed=0,
                                 fingerprint_first=no_m30k)
    paths = {lang: out / f"clip-{lang}" for lang in LANGS}
    stored = out / "partition.json"
    summary = {**partition.summary(), "mode": mode}
    if reuse and stored.is_file() and all(p.is_file() for p in paths.values()) and \
            json.loads(stored.read_text()).get("summary") == summary:
        info = json.loads(stored.read_text())["clips"]
        print("reusing the CLIPs in", out, flush=True)
    else:
        clips = train_language_clips(partition, data, {lang: shared_path("vectors", f"{lang}.npy") for lang in LANGS},
                                     out, cache_dir=CACHE / "towers")
        info = {lang: c.summary() for lang, c in clips.items()}
        stored.write_text(json.dumps({"summary": summary, "clips": info, "fingerprint": list(partition.fingerprint)}))
    # the audit, from what the checkpoints recorded, of the pairs the partition keeps apart (pairwise: fr and de
    # share photos, never aligned with each other here)
    check_checkpoints_disjoint(paths, partition.fingerprint, partition.disjoint)
    folders = {"flickr": out / "fingerprint-photos", "both": out / "fingerprint-photos+imagenet",
               "imagenet": shared_path("images", "imagenet-samples")}
    for key in ("flickr", "both"):
        folders[key].mkdir(exist_ok=True)
        sources = [en.images_dir / n for n in partition.fingerprint]
        if key == "both":
            sources += sorted(folders["imagenet"].iterdir())
        for src in sources:
            link = folders[key] / src.name
            if not link.exists():
                link.symlink_to(src)
    for lang, c in info.items():
        print(f"clip-{lang}: {c['photos']} photos, {c['captions']} captions, val t2i R@1/5/10 "
              f"{'/'.join(str(c['val']['t2i'][k]) for k in ('r@1', 'r@5', 'r@10'))}, {c['seconds']} s -> {c['checkpoint']}",
              flush=True)
    return {"partition": summary, "clips": info}, folders


# ---------------------------------------------------------------- words, fingerprints, pivots


class Bench:
    def __init__(self, out: Path, folders: dict):
        from models.compact_clip import load_compact_clip
        from models.clip import LanguageEncoders
        from services.alignment.dictionary import dictionary_to_indices, identical_pairs, load_dictionary
        from services.alignment.vectors import WordVectors, load_vectors, normalize

        self.folders = folders
        self.enc = {}
        for lang in LANGS:
            clip = load_compact_clip(out / f"clip-{lang}")
            self.enc[lang] = LanguageEncoders(lang, clip, clip, clip.label)
        self.spaces = {}
        for lang in LANGS:
            raw = load_vectors(shared_path("vectors", f"{lang}.npy"))
            self.spaces[lang] = WordVectors(raw.words, normalize(raw.vectors, NORMALIZE))
        muse = shared_path("dictionaries", "muse")
        self.dev, self.test, self.identical = {}, {}, {}
        for pair in PAIRS:
            s, t = pair.split("-")
            src, tgt = self.spaces[s], self.spaces[t]
            self.dev[pair] = dictionary_to_indices(load_dictionary(muse / f"{pair}.0-5000.txt"), src.index, tgt.index)[0]
            self.test[pair] = dictionary_to_indices(load_dictionary(muse / f"{pair}.5000-6500.txt"), src.index, tgt.index)[0]
            self.identical[pair] = identical_pairs(src.words, tgt.words)
        self._words: dict = {}
        self._images: dict = {}

    def word_emb(self, lang: str, prompts: str) -> np.ndarray:
        from models.clip import embed_words

        key = (lang, prompts)
        if key not in self._words:
            t0 = time.perf_counter()
            self._words[key] = embed_words(self.enc[lang].text, self.spaces[lang].words, lang,
                                           BARE if prompts == "bare" else None)
            print(f"  words {lang}/{prompts}: {time.perf_counter() - t0:.1f} s", flush=True)
        return self._words[key]

    def image_emb(self, lang: str, images: str) -> np.ndarray:
        from services.vision.images import embed_image_folder

        key = (lang, images)
        if key not in self._images:
            self._images[key] = embed_image_folder(self.enc[lang].image, self.folders[images], cache_dir=CACHE).embeddings
        return self._images[key]

    def rows(self, lang: str, cfg: Step1) -> np.ndarray:
        from services.vision.walip_pipeline import vocabulary_rows

        rows = vocabulary_rows(self.enc[lang], self.spaces[lang].words, cfg.min_df)
        return rows if cfg.min_df else rows[:20000]

    def pivots(self, pair: str, cfg: Step1) -> np.ndarray:
        from services.vision.fingerprints import fingerprint_pivots, word_fingerprints

        s, t = pair.split("-")
        rs, rt = self.rows(s, cfg), self.rows(t, cfg)
        Fs = word_fingerprints(self.word_emb(s, cfg.prompts)[rs], self.image_emb(s, cfg.images))
        Ft = word_fingerprints(self.word_emb(t, cfg.prompts)[rt], self.image_emb(t, cfg.images))
        found = fingerprint_pivots(Fs, Ft, q=cfg.q, k=cfg.k, filter_visual=cfg.visual_filter, mutual=cfg.mutual)
        return np.stack([rs[found.pairs[:, 0]], rt[found.pairs[:, 1]]], axis=1).astype(np.int64)

    def fit(self, pair: str, seeds: np.ndarray, top_pairs: int):
        """WALIP step 2, the ``confident`` variant with the registry's defaults (services/alignment/registry.py)."""
        from services.alignment.registry import ALIGNERS
        from services.alignment.walip import walip_confident

        s, t = pair.split("-")
        d = ALIGNERS["walip"].defaults
        t0 = time.perf_counter()
        res = walip_confident(self.spaces[s].vectors, self.spaces[t].vectors, seeds, top_pairs=top_pairs,
                              max_iter=d["confident_iters"], max_vocab=d["confident_vocab"], knn=d["knn"])
        res.seconds = round(time.perf_counter() - t0, 1)
        return res

    def criterion(self, pair: str, res) -> float:
        from services.alignment.walip import dictionary_criterion

        s, t = pair.split("-")
        return round(dictionary_criterion(self.spaces[s].vectors, self.spaces[t].vectors, res.pairs), 5)

    def evaluate(self, pair: str, res, splits: tuple[str, ...] = ("dev", "test")) -> dict:
        """P@1 (NN, CSLS) on the dev and/or test split, both splits in one pass (their source words are disjoint,
        and a query's rank does not depend on the other queries), over the full 50k target vocabulary."""
        from services.alignment.evaluation import bli_evaluate

        s, t = pair.split("-")
        X = self.spaces[s].vectors @ res.W
        Y = self.spaces[t].vectors @ (res.Wz if res.Wz is not None else np.eye(res.W.shape[1], dtype=np.float32))
        parts = {"dev": self.dev[pair], "test": self.test[pair]}
        both = np.concatenate([parts[k] for k in splits])
        out = {}
        for retrieval in ("nn", "csls") if "test" in splits else ("csls",):
            r = bli_evaluate(X, Y, both, retrieval=retrieval, return_ranks=True)
            for k in splits:
                sel = np.isin(r["sources"], parts[k][:, 0])
                out[f"{k}_p1_{retrieval}"] = round(100 * float(np.mean(r["ranks"][sel] <= 1)), 1)
                if retrieval == "csls" and k == "test":
                    out["test_p10_csls"] = round(100 * float(np.mean(r["ranks"][sel] <= 10)), 1)
        return out


def describe_pivots(bench: Bench, pair: str, pairs: np.ndarray, sample: int = 25) -> dict:
    """Count, precision by band against dev (MUSE 0-5000) and against the whole MUSE dictionary, a sample."""
    from services.vision.fingerprints import pivot_precision_bands

    s, t = pair.split("-")
    whole = np.concatenate([bench.dev[pair], bench.test[pair]])
    gold = {tuple(p) for p in whole.tolist()}
    has_gold = set(whole[:, 0].tolist())
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(pairs), size=min(sample, len(pairs)), replace=False)) if len(pairs) else []
    marks = {True: "ok", False: "wrong"}
    return {"n": int(len(pairs)), "dev_bands": pivot_precision_bands(pairs, bench.dev[pair]),
            "muse_bands": pivot_precision_bands(pairs, whole),
            "sample": [f"{bench.spaces[s].words[a]}->{bench.spaces[t].words[b]}"
                       + (f" ({marks[(a, b) in gold]})" if a in has_gold else " (no gold)") for a, b in pairs[pick]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / ".vislex" / "benchmarks" / "walip_visual")
    ap.add_argument("--partition", choices=("pairwise", "three-way"), default="pairwise")
    ap.add_argument("--grid", choices=("full", "small"), default="full")
    ap.add_argument("--stage-b", type=int, default=4, help="step-1 configurations tried with step 2 on dev")
    ap.add_argument("--reuse", action="store_true", help="reuse DIR's CLIPs when the partition is the same")
    args = ap.parse_args()
    from benchmarks import flickr

    if not flickr.available() or shared_path("vectors", "en.npy") is None or shared_path("dictionaries", "muse") is None \
            or not flickr.multi30k_by_image("fr"):
        print("benchmarks/walip_visual.py: ../shared/data is absent; nothing measured")
        return
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    clips, folders = build_clips(args.out, args.partition, args.reuse)
    bench = Bench(args.out, folders)
    from services.sentences.evaluation import wilson
    from services.vision.fingerprints import pivot_precision

    # ---- stage A: step 1 on dev
    stage_a = []
    for cfg in grid(args.grid):
        row = {"config": cfg.name}
        t0 = time.perf_counter()
        for pair in PAIRS:
            m = pivot_precision(bench.pivots(pair, cfg), bench.dev[pair])
            lo, hi = wilson(m["n_correct"], m["n_evaluable"])
            row[pair] = {"pivots": m["n_pivots"], "evaluable": m["n_evaluable"], "correct": m["n_correct"],
                         "dev_precision": round(100 * m["precision"], 1) if m["n_evaluable"] else None,
                         "ci": [lo, hi]}
        row["seconds"] = round(time.perf_counter() - t0, 1)
        row["_cfg"] = cfg
        stage_a.append(row)
        print("step1", json.dumps({k: v for k, v in row.items() if k != "_cfg"}), flush=True)
    # ---- stage B: the most precise configurations (>= 50 evaluable pivots on both pairs) through step 2, on dev
    eligible = [r for r in stage_a if all(r[p]["evaluable"] >= 50 for p in PAIRS)]
    eligible.sort(key=lambda r: -np.mean([r[p]["dev_precision"] for p in PAIRS]))
    candidates = [r["_cfg"] for r in eligible[: args.stage_b]]
    if PAPER not in candidates:
        candidates.append(PAPER)
    stage_b = []
    for cfg in candidates:
        row = {"config": cfg.name, "_cfg": cfg}
        for pair in PAIRS:
            row[pair] = bench.evaluate(pair, bench.fit(pair, bench.pivots(pair, cfg), DEFAULT_TOP), ("dev",))["dev_p1_csls"]
        row["mean_dev_p1_csls"] = round(float(np.mean([row[p] for p in PAIRS])), 2)
        stage_b.append(row)
        print("step2 on dev", json.dumps({k: v for k, v in row.items() if k != "_cfg"}), flush=True)
    chosen = max(stage_b, key=lambda r: r["mean_dev_p1_csls"])["_cfg"]
    print("chosen step-1 configuration (dev):", chosen.name, flush=True)

    # ---- final rows on test: per seed, step 2 at the default top_pairs and with the unsupervised rule
    final, pivot_info, selection = [], {}, {}
    supervised = {}
    for pair in PAIRS:
        from services.alignment.registry import align

        s, t = pair.split("-")
        fitted = align(bench.spaces[s], bench.spaces[t], "procrustes", seed_pairs=bench.dev[pair])
        supervised[pair] = bench.evaluate(pair, SimpleNamespace(W=fitted.mapping.stages[0].W.astype(np.float32), Wz=None),
                                          ("test",))
        seeds = {"identical strings": bench.identical[pair], "fingerprints": bench.pivots(pair, chosen)}
        seeds["identical + fingerprints"] = np.unique(np.concatenate(list(seeds.values())), axis=0)
        pivot_info[pair] = {name: describe_pivots(bench, pair, p) for name, p in seeds.items()}
        pivot_info[pair]["fingerprints (paper settings)"] = describe_pivots(bench, pair, bench.pivots(pair, PAPER))
        for name, p in seeds.items():
            runs = []
            for top in CANDIDATES:  # services.alignment.walip.walip_select's rule, step by step
                r = bench.fit(pair, p, top)
                runs.append((top, r, bench.criterion(pair, r)))
                print(f"  {pair} {name} top_pairs={top}: criterion {runs[-1][2]}, {r.seconds} s", flush=True)
            best = max(range(len(runs)), key=lambda i: (runs[i][2], -i))
            selection[f"{pair} {name}"] = [{"top_pairs": top, "criterion": c, "chosen": i == best}
                                          for i, (top, _, c) in enumerate(runs)]
            for label, i in ((f"top_pairs {DEFAULT_TOP}", CANDIDATES.index(DEFAULT_TOP)), ("top_pairs auto", best)):
                top, r, c = runs[i]
                row = {"pair": pair, "seed": name, "step2": label, "top_pairs": top, "seed_pairs": int(len(p)),
                       "criterion": c, "seconds": r.seconds, **bench.evaluate(pair, r, ("test",))}
                final.append(row)
                print("final", json.dumps(row), flush=True)

    print(f"\nstep 1 on dev (MUSE 0-5000; precision % with Wilson 95 %), {len(stage_a)} configurations")
    table = [{"config": r["config"], **{f"{p} pivots": r[p]["pivots"] for p in PAIRS},
              **{f"{p} prec": r[p]["dev_precision"] for p in PAIRS},
              **{f"{p} ci": f"{r[p]['ci'][0]:.0f}-{r[p]['ci'][1]:.0f}" for p in PAIRS}} for r in stage_a]
    print_table(table, [(k, k, "") for k in table[0]])
    print("\nstep 2 on dev (P@1 CSLS %, MUSE 0-5000) for the most precise step-1 configurations")
    print_table(stage_b, [("config", "config", ""), *[(p, p, ".1f") for p in PAIRS], ("mean_dev_p1_csls", "mean", ".2f")])
    print(f"\nfinal, MUSE test (5000-6500): supervised Procrustes (train split) "
          + ", ".join(f"{p} {supervised[p]['test_p1_nn']}/{supervised[p]['test_p1_csls']}" for p in PAIRS) + " (NN/CSLS)")
    print_table(final, [("pair", "pair", ""), ("seed", "seed", ""), ("step2", "step 2", ""), ("seed_pairs", "seeds", "d"),
                        ("test_p1_nn", "P@1 NN", ".1f"), ("test_p1_csls", "P@1 CSLS", ".1f"),
                        ("test_p10_csls", "P@10 CSLS", ".1f"), ("criterion", "criterion", ".4f"), ("seconds", "s", ".1f")])
    for pair, info in pivot_info.items():
        for name, d in info.items():
            bands = ", ".join(f"{b['band']}: {b['n_correct']}/{b['n_evaluable']}" for b in d["muse_bands"])
            print(f"{pair} {name}: {d['n']} pairs; correct/evaluable vs MUSE by source rank: {bands}")
            print("   sample:", "; ".join(d["sample"][:12]))
    payload = {"protocol": __doc__, **clips, "stage_a": [{k: v for k, v in r.items() if k != "_cfg"} for r in stage_a],
               "stage_b": [{k: v for k, v in r.items() if k != "_cfg"} for r in stage_b], "chosen": asdict(chosen),
               "paper": asdict(PAPER), "final": final, "top_pairs_selection": selection, "supervised_procrustes": supervised,
               "pivots": pivot_info,
               "checkpoints": {lang: str(args.out / f"clip-{lang}") for lang in LANGS},
               "seconds": round(time.perf_counter() - started, 1)}
    print("results:", write_results(f"walip_visual-{args.partition}", payload))


if __name__ == "__main__":
    main()
