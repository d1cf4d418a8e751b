"""Quality and start-up cost of the embedded default: encoder-derived word spaces, as served.

Each language's 20,000 most frequent wordfreq words embedded with USE-multilingual (one shared space,
identity between languages, ``unit,center,unit`` per language as the server does). Rows, per pair:

- ``before``: the raw wordfreq lists (the default up to issue 13);
- ``+ pure vocab``: language-pure vocabularies (services/serving/vocabulary.py);
- ``+ prior``: plus the CSLS frequency prior (services/serving/rank_prior.py), the same weight for every candidate;
- ``+ identical weight (default)``: the query's own string gets the stronger weight = the new default;
- ``default, exclude_identical``: the request option that drops the query's own string.

Columns: P@1 NN / CSLS (as served: CSLS-10, the prior re-ranking the 30 best) on (a) the frequent
words — the first 1,000 source words of MUSE ``0-5000`` — and (b) the test split (MUSE ``5000-6500`` or
Glavaš ``test.freq.2k``), and the *echo rate*: the share of queries whose top-1 CSLS answer is the query
string while that string is not a gold translation. Queries are the source words with a gold target in
the target vocabulary (coverage shown), case-folded as the service folds them.

``--cold-start`` also starts a real ``vislex serve`` on an empty data directory and reports the seconds
to ``/readyz`` 200 and the per-language build seconds from ``/readyz``'s progress.

    .venv/bin/python benchmarks/encoder_spaces.py [--pairs muse:en-fr,...] [--cold-start]

Reads ``../shared/data/dictionaries`` (says so and measures nothing when absent).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from common import ROOT, SHARED_DATA, print_table, stop_process, write_results  # noqa: E402  (sets sys.path)

DICTS = SHARED_DATA / "dictionaries"
DEFAULT_PAIRS = "muse:en-fr,muse:en-de,muse:en-ru,xling:en-fr,xling:en-de,xling:de-fr"
# Issue 13's "today" (MUSE test P@1 CSLS) and targets.
BEFORE_TEST_CSLS = {"en-fr": 70.1, "en-de": 55.2, "en-ru": 47.3}
TARGET_FREQUENT_CSLS = {"en-fr": 85, "en-de": 80, "en-ru": 70}


def dictionary_paths(kind: str, pair: str) -> tuple[Path | None, Path]:
    """(frequent-words source file or None, test file) for a pair."""
    if kind == "muse":
        return DICTS / "muse" / f"{pair}.0-5000.txt", DICTS / "muse" / f"{pair}.5000-6500.txt"
    return None, DICTS / "xling" / pair / f"yacle.test.freq.2k.{pair}.tsv"


def gold_sets(pairs, fold, first_sources: int | None = None) -> dict[str, set[str]]:
    gold: dict[str, set[str]] = {}
    for s, t in pairs:
        s, t = fold(s), fold(t)
        if first_sources is not None and s not in gold and len(gold) >= first_sources:
            continue
        gold.setdefault(s, set()).add(t)
    return gold


def evaluate(S, T, gold: dict[str, set[str]], *, prior: float, identical_weight: float, exclude_identical: bool,
             knn: int = 10) -> dict:
    """P@1 NN/CSLS and echo rate of the served answers for the queries of ``gold`` (covered ones)."""
    from services.alignment.retrieval import csls_topk, knn_mean_similarity, nn_topk
    from services.serving.rank_prior import PRIOR_POOL, apply_frequency_prior

    (sw, X), (tw, Y) = S, T
    si = {w: i for i, w in enumerate(sw)}
    ti = {w: i for i, w in enumerate(tw)}
    queries = [q for q in gold if q in si and any(t in ti for t in gold[q])]
    if not queries:
        return {"n": 0}
    rows = np.array([si[q] for q in queries])
    width = 2 if exclude_identical else 1
    nn_s, nn_i = nn_topk(X[rows], Y, width)
    r = knn_mean_similarity(Y, X, knn)
    cs, ci = csls_topk(X[rows], Y, max(PRIOR_POOL, width), r)
    if prior:
        identical = np.array([ti.get(q, -1) for q in queries])
        cs, ci = apply_frequency_prior(cs, ci, rows, prior, width, identical, identical_weight)

    def top1(idx):
        out = []
        for q, cand in zip(queries, idx):
            words = [tw[j] for j in cand if j >= 0]
            if exclude_identical:
                words = [w for w in words if w != q]
            out.append(words[0] if words else None)
        return out

    nn_top, csls_top = top1(nn_i), top1(ci)
    n = len(queries)
    return {"n": n, "coverage": round(n / len(gold), 3),
            "p1_nn": round(100 * sum(a in gold[q] for q, a in zip(queries, nn_top)) / n, 1),
            "p1_csls": round(100 * sum(a in gold[q] for q, a in zip(queries, csls_top)) / n, 1),
            "echo": round(100 * sum(a == q and a not in gold[q] for q, a in zip(queries, csls_top)) / n, 1)}


def build_spaces(langs, *, vocab: int, encoder: str, rule, cache_dir: Path) -> dict:
    from services.alignment.vectors import normalize
    from services.serving.encoder_spaces import build_encoder_vectors

    out = {}
    for lang in langs:
        t0 = time.perf_counter()
        wv = build_encoder_vectors(lang, vocab, encoder_name=encoder, cache_dir=cache_dir, rule=rule)
        out[lang] = (wv.words, normalize(wv.vectors, "unit,center,unit"))
        print(f"  {lang}: {len(wv.words)} words ({time.perf_counter() - t0:.1f} s)", flush=True)
    return out


def quality(args) -> list[dict]:
    from app.settings import Settings
    from app.wiring.serving import purity_rule
    from services.alignment.dictionary import load_dictionary
    from services.serving.rank_prior import DEFAULT_FREQUENCY_PRIOR, IDENTICAL_EXTRA_WEIGHT
    from services.serving.space import normalize_query_word
    from services.serving.vocabulary import release_wordfreq_tables

    settings = Settings(encoder_vocab_size=args.vocab, text_encoder=args.encoder)
    rule = purity_rule(settings)  # the default rule: served languages (and lazy ones) + English as reference
    pairs = [(k, p) for k, p in (x.split(":") for x in args.pairs.split(",")) if dictionary_paths(k, p)[1].is_file()]
    langs = sorted({lang for _, p in pairs for lang in p.split("-")})
    print(f"building raw and language-pure spaces for {langs} ({args.encoder}, {args.vocab} words; "
          f"cache {settings.cache_dir})")
    raw = build_spaces(langs, vocab=args.vocab, encoder=args.encoder, rule=None, cache_dir=settings.cache_dir)
    pure = build_spaces(langs, vocab=args.vocab, encoder=args.encoder, rule=rule, cache_dir=settings.cache_dir)
    release_wordfreq_tables()
    fold = lambda w: normalize_query_word(w, lowercase=True)  # noqa: E731  (the service's query folding)
    lam, lam_id = DEFAULT_FREQUENCY_PRIOR, IDENTICAL_EXTRA_WEIGHT
    variants = [("before (raw wordfreq)", raw, 0.0, 0.0, False), ("+ pure vocab", pure, 0.0, 0.0, False),
                (f"+ prior {lam:g}", pure, lam, 0.0, False),
                (f"+ identical weight {lam_id:g} (default)", pure, lam, lam_id, False),
                ("default, exclude_identical", pure, lam, lam_id, True)]
    rows = []
    for kind, pair in pairs:
        src, tgt = pair.split("-")
        freq_path, test_path = dictionary_paths(kind, pair)
        splits = {"test": gold_sets(load_dictionary(test_path), fold)}
        if freq_path is not None and freq_path.is_file():
            splits["frequent"] = gold_sets(load_dictionary(freq_path), fold, first_sources=1000)
        for name, spaces, prior, prior_id, exclude in variants:
            row = {"dict": kind, "pair": pair, "variant": name}
            for split, gold in splits.items():
                res = evaluate(spaces[src], spaces[tgt], gold, prior=prior, identical_weight=prior_id,
                               exclude_identical=exclude)
                row.update({f"{split}_{k}": v for k, v in res.items()})
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def cold_start(args) -> dict:
    """Seconds from `vislex serve` on an empty data dir to /readyz 200, and /readyz's per-language seconds."""
    port = 18000 + os.getpid() % 1000
    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "VISLEX_DATA_DIR": data, "VISLEX_PORT": str(port), "VISLEX_LOG_LEVEL": "warning"}
        env.pop("VISLEX_REDIS_URL", None)
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "vislex"), "serve"], env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        body, seconds = None, None
        try:
            while time.perf_counter() - t0 < args.cold_start_timeout:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                        body, seconds = json.loads(r.read()), time.perf_counter() - t0
                        break
                except Exception:  # noqa: BLE001 - not up or not ready yet
                    time.sleep(0.25)
        finally:
            stop_process(proc)
    progress = (body or {}).get("components", {}).get("spaces", {}).get("progress", {})
    return {"ready_s": None if seconds is None else round(seconds, 1), "timeout_s": args.cold_start_timeout,
            "per_language_s": progress.get("per_language_s"), "startup_languages": progress.get("startup_languages")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", default="use-multilingual")
    ap.add_argument("--vocab", type=int, default=20000)
    ap.add_argument("--pairs", default=DEFAULT_PAIRS, help="kind:src-tgt, kind muse or xling")
    ap.add_argument("--cold-start", action="store_true", help="also time a fresh `vislex serve` to /readyz 200")
    ap.add_argument("--cold-start-timeout", type=float, default=300.0)
    args = ap.parse_args()
    if not DICTS.is_dir():
        print(f"{DICTS} is not present: this benchmark reads ../shared/data/dictionaries; nothing measured.")
        return
    payload: dict = {"encoder": args.encoder, "vocab": args.vocab}
    if args.cold_start:
        payload["cold_start"] = cold_start(args)  # first: nothing else loaded, an empty data dir
        print("cold start:", json.dumps(payload["cold_start"]), flush=True)
    rows = quality(args)
    payload["rows"] = rows
    print(f"\n{args.encoder}, {args.vocab} words per language; P@1 in %, echo = top-1 CSLS is the query string "
          "and not gold (%)")
    print_table(rows, [("dict", "dict", ""), ("pair", "pair", ""), ("variant", "variant", ""),
                       ("frequent_p1_nn", "freq NN", ".1f"), ("frequent_p1_csls", "freq CSLS", ".1f"),
                       ("frequent_echo", "freq echo", ".1f"), ("frequent_n", "freq n", "d"),
                       ("test_p1_nn", "test NN", ".1f"), ("test_p1_csls", "test CSLS", ".1f"),
                       ("test_echo", "test echo", ".1f"), ("test_n", "test n", "d")])
    print(f"issue 13 targets: frequent P@1 CSLS {TARGET_FREQUENT_CSLS}; echo <= 2 % on every pair; "
          f"MUSE test P@1 CSLS not below {BEFORE_TEST_CSLS}; cold start <= 60 s")
    if "cold_start" in payload:
        print("cold start:", json.dumps(payload["cold_start"]))
    write_results("encoder_spaces", payload)


if __name__ == "__main__":
    sys.exit(main())
