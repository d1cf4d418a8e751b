"""Bilingual dictionaries: ``source target`` pairs (methods.md, notation: a dictionary).

One pair per line, space or tab separated; a source may appear on several lines (several correct
translations). Tab-separated lines may carry a third numeric column (a score, as written by
``vislex export``), which is ignored. Blank lines are skipped, exact duplicate pairs kept once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from services.errors import InvalidInput

__all__ = [
    "count_uncovered_sources",
    "dictionary_to_indices",
    "identical_pairs",
    "load_dictionary",
    "save_dictionary",
]

_MAX_REPORTED = 10


def _parse_line(line: str) -> tuple[str, str] | None:
    if "\t" in line:
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) == 3:
            try:
                float(fields[2])
            except ValueError:
                return None
            fields = fields[:2]
    else:
        fields = line.split()
    if len(fields) != 2 or not fields[0] or not fields[1]:
        return None
    return fields[0], fields[1]


def load_dictionary(path) -> list[tuple[str, str]]:
    """Read ``source target`` pairs; malformed lines -> InvalidInput naming them; empty -> InvalidInput."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{p}: cannot read dictionary: {exc.strerror or exc}", detail={"path": str(p)}) from exc
    pairs: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    bad: list[str] = []
    n_bad = 0
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as exc:
            n_bad += 1
            if len(bad) < _MAX_REPORTED:
                bad.append(f"line {lineno} (non-UTF-8 byte at {exc.start})")
            continue
        if lineno == 1:
            line = line.lstrip("\ufeff")
        if not line.strip():
            continue
        pair = _parse_line(line)
        if pair is None:
            n_bad += 1
            if len(bad) < _MAX_REPORTED:
                bad.append(f"line {lineno} ({line[:40]!r})")
            continue
        if pair not in seen:
            seen.add(pair)
            pairs.append(pair)
    if n_bad:
        more = f" (+{n_bad - len(bad)} more)" if n_bad > len(bad) else ""
        raise InvalidInput(
            f"{p}: {n_bad} malformed dictionary line(s), expected 'source target': " + "; ".join(bad) + more,
            detail={"path": str(p), "lines": bad, "count": n_bad},
        )
    if not pairs:
        raise InvalidInput(f"{p}: dictionary is empty", detail={"path": str(p)})
    return pairs


def dictionary_to_indices(
    pairs: Iterable[tuple[str, str]], src_index: dict[str, int], tgt_index: dict[str, int]
) -> tuple[np.ndarray, int]:
    """(int64 (p, 2) array of in-vocabulary (source row, target row) pairs, number of out-of-vocabulary pairs)."""
    rows: list[tuple[int, int]] = []
    n_oov = 0
    for s, t in pairs:
        i = src_index.get(s)
        j = tgt_index.get(t)
        if i is None or j is None:
            n_oov += 1
        else:
            rows.append((i, j))
    return np.array(rows, dtype=np.int64).reshape(-1, 2), n_oov


def count_uncovered_sources(
    pairs: Iterable[tuple[str, str]], src_index: dict[str, int], tgt_index: dict[str, int]
) -> tuple[int, int]:
    """(distinct source words, distinct source words with no in-vocabulary pair) — for BLI coverage."""
    all_sources: set[str] = set()
    covered: set[str] = set()
    for s, t in pairs:
        all_sources.add(s)
        if s in src_index and t in tgt_index:
            covered.add(s)
    return len(all_sources), len(all_sources) - len(covered)


def identical_pairs(src_words: Sequence[str], tgt_words: Sequence[str]) -> np.ndarray:
    """Pairs (i, j) with src_words[i] == tgt_words[j] (first occurrence), ordered by source row."""
    tgt_index: dict[str, int] = {}
    for j, w in enumerate(tgt_words):
        tgt_index.setdefault(w, j)
    rows = [(i, tgt_index[w]) for i, w in enumerate(src_words) if w in tgt_index]
    return np.array(rows, dtype=np.int64).reshape(-1, 2)


def save_dictionary(path, rows: Iterable[tuple[str, str, float]]) -> None:
    """Write ``source<TAB>target<TAB>score`` lines (readable back by :func:`load_dictionary`)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(f"{s}\t{t}\t{score:.6f}\n" for s, t, score in rows)
    tmp.replace(p)
