"""Sentence retrieval across languages on parallel files: Globetrotter's metric and pairwise P@1.

methods.md, Globetrotter: "Metric for sentence retrieval with M languages and N parallel sentences: each
sentence is a query with M − 1 positives (its translations) among all N·M − 1 others; report the fraction
of positives ranked within the top M − 1." Pairwise P@1 (a → b): the share of sentences of ``a`` whose
nearest sentence of ``b`` (cosine) is its own translation. All numbers in percent; every computation is
a chunked matrix product (no loop over sentences).
"""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from services.errors import InvalidInput, NotFound

Z95 = 1.959963984540054
MAX_LINES = 1_000_000


def read_lines(path: str | os.PathLike) -> list[str]:
    """One sentence per line, plain or .gz; the line's surrounding blanks stripped, empty lines kept (alignment)."""
    p = Path(path)
    if not p.is_file():
        raise NotFound(f"parallel file {p.name} does not exist", detail={"field": "files", "file": p.name})
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rt", encoding="utf-8") as fh:
            lines = [line.strip() for line in fh]
    except (UnicodeDecodeError, OSError) as exc:
        raise InvalidInput(f"{p.name} is not UTF-8 text: {exc}", detail={"field": "files", "file": p.name}) from exc
    while lines and not lines[-1]:
        lines.pop()  # a trailing newline is not a sentence
    if len(lines) > MAX_LINES:
        raise InvalidInput(f"{p.name} has more than {MAX_LINES} lines", detail={"field": "files", "file": p.name})
    return lines


def read_parallel(files: dict[str, str | os.PathLike], limit: int | None = None) -> dict[str, list[str]]:
    """{lang: lines}, aligned by line; lines empty in any language are dropped from every language."""
    if len(files) < 2:
        raise InvalidInput("give parallel files in at least two languages (LANG=FILE ...)", detail={"field": "files"})
    texts = {lang: read_lines(path) for lang, path in files.items()}
    sizes = {lang: len(lines) for lang, lines in texts.items()}
    if len(set(sizes.values())) != 1:
        raise InvalidInput(f"parallel files differ in length: {sizes}", detail={"field": "files", "lines": sizes})
    keep = np.ones(next(iter(sizes.values())), dtype=bool)
    for lines in texts.values():
        keep &= np.array([bool(s) for s in lines], dtype=bool)
    rows = np.flatnonzero(keep)[:limit]
    if len(rows) < 2:
        raise InvalidInput("fewer than 2 parallel sentences", detail={"field": "files"})
    return {lang: [lines[i] for i in rows] for lang, lines in texts.items()}


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion, in percent."""
    if n == 0:
        return (0.0, 100.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (round(100 * max(0.0, centre - half), 2), round(100 * min(1.0, centre + half), 2))


def globetrotter_metric(embeddings: Sequence[np.ndarray], chunk: int = 1024) -> tuple[float, int, int]:
    """(percent, positives in the top M − 1, positives) for M aligned (N, d) unit-row matrices.

    Query q = sentence n of language a; candidates = all N·M sentences but q itself; a positive (n in
    another language) counts when its score reaches the (M − 1)-th highest candidate score (ties in its favour).
    """
    hits = metric_hits(embeddings, chunk)
    M, N = len(embeddings), len(hits)
    total = N * M * (M - 1)
    return round(100.0 * int(hits.sum()) / total, 2), int(hits.sum()), total


def metric_hits(embeddings: Sequence[np.ndarray], chunk: int = 1024) -> np.ndarray:
    """(N,) per parallel sentence n: how many of its M·(M − 1) positives (every language's version of n as a
    query, every other language's as the positive) Globetrotter's metric counts. The sentences are the
    independent units: their mean share is the metric, their spread its standard error (:func:`metric_se`)."""
    M = len(embeddings)
    if M < 2:
        raise InvalidInput("the metric needs at least two languages")
    N = embeddings[0].shape[0]
    X = np.ascontiguousarray(np.concatenate(embeddings), dtype=np.float32)  # row a*N + n
    sentence = np.tile(np.arange(N), M)
    hits = np.zeros(N, dtype=np.int64)
    for start in range(0, N * M, chunk):
        rows = np.arange(start, min(start + chunk, N * M))
        S = X[rows] @ X.T
        S[np.arange(len(rows)), rows] = -np.inf  # a query is not its own candidate
        kth = -np.partition(-S, M - 2, axis=1)[:, M - 2]  # the (M-1)-th highest score per row
        positive = (sentence[None, :] == sentence[rows][:, None])
        positive[np.arange(len(rows)), rows] = False
        np.add.at(hits, sentence[rows], ((S >= kth[:, None]) & positive).sum(axis=1))
    return hits


def metric_se(embeddings: Sequence[np.ndarray]) -> tuple[float, float]:
    """(Globetrotter's metric, its standard error), both in percent: the mean and the standard error of the
    mean of the per-sentence shares of positives found (the N parallel sentences as the sampled units)."""
    M = len(embeddings)
    share = metric_hits(embeddings) / (M * (M - 1))
    return 100.0 * float(share.mean()), 100.0 * float(share.std(ddof=1) / np.sqrt(len(share)))


def p_at_1(queries: np.ndarray, targets: np.ndarray, chunk: int = 4096) -> tuple[float, int]:
    """(percent, correct): row i of ``queries`` is right when its nearest row of ``targets`` is row i."""
    correct = 0
    for start in range(0, len(queries), chunk):
        best = np.argmax(queries[start:start + chunk] @ targets.T, axis=1)
        correct += int((best == np.arange(start, start + len(best))).sum())
    return round(100.0 * correct / len(queries), 2), correct


def evaluate_parallel(texts: dict[str, list[str]], encode: Callable[[list[str], str], np.ndarray]) -> dict:
    """The metric and every ordered pair's P@1 (with a 95 % interval) for aligned ``texts`` per language."""
    langs = list(texts)
    emb = {lang: np.asarray(encode(texts[lang], lang), dtype=np.float32) for lang in langs}
    n = len(texts[langs[0]])
    metric, hits, total = globetrotter_metric([emb[lang] for lang in langs])
    pairs = {}
    for a in langs:
        for b in langs:
            if a != b:
                pct, correct = p_at_1(emb[a], emb[b])
                pairs[f"{a}-{b}"] = {"p@1": pct, "ci95": list(wilson(correct, n))}
    return {"metric": metric, "pairs": pairs, "sentences": n,
            "languages": langs}
