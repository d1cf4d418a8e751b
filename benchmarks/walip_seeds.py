"""Is seed noise what holds WALIP step 2 back? (issue 15, a diagnostic, not a method)

WALIP's identical-string seeds for en→fr / en→de, and the same seeds filtered by the MUSE 0-5000 *train* dictionary
used as an oracle: "minus judged wrong" drops every seed whose source the dictionary lists with other targets only;
"judged right only" keeps the seeds it lists as right. Each seed set gets the multi-step fit on the seeds alone
(``walip_confident(max_iter=0)``, the seed fit of the ``confident`` variant), scored P@1 CSLS on bli.py's dev splits:
a held-out fifth of the train dictionary's sources ("dev", seed 0) and its entries whose source ranks >= 5000
("dev rare"). The oracle sees the train dictionary, dev sources included, so the filtered rows are upper bounds (the
right seeds' own pairs can be dev pairs). No test split is read.

    .venv/bin/python benchmarks/walip_seeds.py [--pairs en-fr,en-de] [--max-vocab 50000]

Reads ``../shared/data`` (vectors, MUSE dictionaries); says so and measures nothing when absent.
"""

from __future__ import annotations

import argparse

import numpy as np
from common import print_table, shared_path, write_results  # noqa: E402  (sets sys.path)

NORMALIZE = "unit,center,unit"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", default="en-fr,en-de")
    ap.add_argument("--max-vocab", type=int, default=50000)
    args = ap.parse_args()
    vectors_dir, muse = shared_path("vectors"), shared_path("dictionaries", "muse")
    if vectors_dir is None or muse is None:
        print("../shared/data (vectors, MUSE dictionaries) is absent: nothing measured")
        return
    from services.alignment.dictionary import dictionary_to_indices, identical_pairs, load_dictionary
    from services.alignment.evaluation import bli_evaluate
    from services.alignment.vectors import WordVectors, load_vectors, normalize
    from services.alignment.walip import walip_confident

    def space(lang: str) -> WordVectors:
        raw = load_vectors(vectors_dir / f"{lang}.npy", max_vocab=args.max_vocab)
        return WordVectors(raw.words, normalize(raw.vectors, NORMALIZE))

    rows = []
    for pair in args.pairs.split(","):
        src, tgt = (space(lang) for lang in pair.split("-"))
        entries = load_dictionary(muse / f"{pair}.0-5000.txt")
        train, _ = dictionary_to_indices(entries, src.index, tgt.index)
        sources = sorted({e[0] for e in entries})  # bli.py --dev's held-out fifth, drawn the same way
        held = set(np.random.default_rng(0).permutation(sources)[: len(sources) // 5].tolist())
        dev, _ = dictionary_to_indices([e for e in entries if e[0] in held], src.index, tgt.index)
        splits = {"dev": dev, "dev_rare": train[train[:, 0] >= 5000]}
        gold: dict[int, set[int]] = {}
        for s, t in train.tolist():
            gold.setdefault(s, set()).add(t)
        seeds = identical_pairs(src.words, tgt.words)
        judged = np.array([s in gold for s in seeds[:, 0].tolist()])
        right = np.array([s in gold and t in gold[s] for s, t in seeds.tolist()])
        for name, chosen in (("identical strings", seeds), ("minus judged wrong", seeds[~(judged & ~right)]),
                             ("judged right only", seeds[right])):
            fit = walip_confident(src.vectors, tgt.vectors, chosen, max_iter=0)
            XW, YT = src.vectors @ fit.W, tgt.vectors @ fit.Wz
            row = {"pair": pair, "seeds": name, "n": int(len(chosen)), "judged": int(judged.sum()),
                   "right": int(right.sum())}
            for split, pairs in splits.items():
                row[f"p1_csls_{split}"] = round(100 * bli_evaluate(XW, YT, pairs, retrieval="csls", knn=10)["p@1"], 1)
            rows.append(row)
            print(row, flush=True)
    print_table(rows, [("pair", "pair", ""), ("seeds", "seeds", ""), ("n", "n", "d"), ("judged", "judged", "d"),
                       ("right", "right", "d"), ("p1_csls_dev", "dev P@1 CSLS", ".1f"),
                       ("p1_csls_dev_rare", "dev rare", ".1f")])
    write_results("walip_seeds", {"max_vocab": args.max_vocab, "rows": rows})


if __name__ == "__main__":
    main()
