"""``vislex align | evaluate | export``: fit a mapping between two word-vector files, score it, export it.

Progress goes to stderr; the last stdout line is one JSON object. Bad input exits with status 1 and
one ``error: ...`` line on stderr (set VISLEX_DEBUG=1 to get the traceback instead).
"""

from __future__ import annotations

import json
import os
import sys
import time
from functools import wraps
from pathlib import Path
from typing import Any, Callable, Optional

import typer

DEFAULT_NORMALIZE = "unit,center,unit"
DEFAULT_DICT_MAX_RANK = 20000

_VECTORS_HELP = "word vectors: .vec/.txt (fastText/word2vec text), .bin (fastText) or .npy + <stem>.vocab.txt"


def _eprint(message: str) -> None:
    typer.echo(message, err=True)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _cli_errors(func: Callable) -> Callable:
    """Turn domain and I/O errors into one stderr line and exit status 1 (no traceback)."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        from services.errors import VislexError

        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except Exception as exc:
            if os.environ.get("VISLEX_DEBUG"):
                raise
            if isinstance(exc, VislexError):
                _eprint(f"error: {_one_line(exc.message)}")
            elif isinstance(exc, OSError):
                where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
                _eprint(f"error: cannot access{where}: {_one_line(exc.strerror or exc)}")
            elif isinstance(exc, MemoryError):
                _eprint("error: out of memory (try --max-vocab)")
            else:
                _eprint(f"error: internal error {type(exc).__name__}: {_one_line(exc)} (VISLEX_DEBUG=1 shows the traceback)")
            raise typer.Exit(1)

    return wrapper


def _print_result(payload: dict[str, Any]) -> None:
    sys.stdout.flush()
    typer.echo(json.dumps(payload, ensure_ascii=False, default=_json_default))


def _json_default(value: Any):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def parse_options(items: list[str]) -> dict[str, Any]:
    """``["iterations=40", "robust=true", "name=x"]`` -> ``{"iterations": 40, "robust": True, "name": "x"}``."""
    from services.errors import InvalidInput

    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidInput(f"--option must look like key=value, got {item!r}")
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    return options


def load_space(path: Path, max_vocab: Optional[int], pipeline: str, role: str):
    """Load one vector file and normalise it (methods.md, notation: unit rows)."""
    from services.alignment.vectors import WordVectors, load_vectors, normalize

    started = time.perf_counter()
    raw = load_vectors(path, max_vocab=max_vocab)
    wv = WordVectors(raw.words, normalize(raw.vectors, pipeline))
    _eprint(f"[load] {role}: {len(wv)} words × {wv.dim} from {path} ({time.perf_counter() - started:.1f}s, normalize={pipeline or 'none'})")
    return wv


def check_dims(src, tgt) -> None:
    from services.errors import InvalidInput

    if src.dim != tgt.dim:
        raise InvalidInput(f"dimension mismatch: source vectors are {src.dim}-d, target vectors {tgt.dim}-d")


def seed_pairs_for(seed: str, src, tgt, dictionary: Optional[Path]):
    """Seed pairs (p, 2) from identical strings or a dictionary; raises when none are found."""
    from services.alignment.dictionary import dictionary_to_indices, identical_pairs, load_dictionary
    from services.errors import InvalidInput

    if seed == "none":
        return None
    if seed == "identical":
        pairs = identical_pairs(src.words, tgt.words)
        if len(pairs) == 0:
            raise InvalidInput("no seed pairs found: the two vocabularies share no identical words (use --seed dictionary)")
        _eprint(f"[seed] {len(pairs)} identical-string pairs")
        return pairs
    if dictionary is None:
        raise InvalidInput("--seed dictionary needs --dictionary TRAIN.txt")
    entries = load_dictionary(dictionary)
    pairs, n_oov = dictionary_to_indices(entries, src.index, tgt.index)
    if len(pairs) == 0:
        raise InvalidInput(f"no seed pairs found: all {len(entries)} pairs of {dictionary} are out of vocabulary")
    _eprint(f"[seed] {len(pairs)} dictionary pairs in vocabulary, {n_oov} of {len(entries)} out of vocabulary")
    return pairs


def _progress(stage: str, current: int, total: int, metrics: dict) -> None:
    shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in (metrics or {}).items())
    _eprint(f"[{stage}] {current}/{total} {shown}".rstrip())


def _mapped_spaces(mapping, src, tgt):
    """Apply a saved mapping to normalised spaces, checking it fits them."""
    import numpy as np

    from services.errors import InvalidInput

    for role, wv, fp in (("source", src, getattr(mapping, "src_fingerprint", None)), ("target", tgt, getattr(mapping, "tgt_fingerprint", None))):
        if fp and fp != wv.fingerprint():
            _eprint(f"[mapping] note: {role} vectors differ from those the mapping was fitted on "
                    f"(fingerprint {wv.fingerprint()} vs {fp}; expected when --max-vocab differs)")
    try:
        XW = np.asarray(mapping.transform_source(src.vectors), dtype=np.float32)
        YT = np.asarray(mapping.transform_target(tgt.vectors), dtype=np.float32)
    except ValueError as exc:
        raise InvalidInput(f"dimension mismatch: the mapping does not fit these {src.dim}-d vectors ({_one_line(exc)})") from exc
    return XW, YT


def _mapping_normalize(mapping, explicit: Optional[str]) -> str:
    if explicit is not None:
        return explicit
    params = getattr(mapping, "params", None) or {}
    return params.get("normalize", DEFAULT_NORMALIZE)


def _unit(a):
    import numpy as np

    norms = np.linalg.norm(a, axis=1, keepdims=True)
    norms[norms == 0] = 1
    return (a / norms).astype(np.float32)


def register(app: typer.Typer) -> None:
    """Add ``align``, ``evaluate`` and ``export`` to the vislex CLI."""

    @app.command("align")
    @_cli_errors
    def align_command(
        src_vectors: Path = typer.Argument(..., metavar="SRC_VECTORS", help=_VECTORS_HELP),
        tgt_vectors: Path = typer.Argument(..., metavar="TGT_VECTORS", help=_VECTORS_HELP),
        method: str = typer.Option(..., "--method", help="alignment method, e.g. procrustes, walip, walip+l1, instamap"),
        out: Path = typer.Option(..., "--out", help="where to write the mapping (.npz)"),
        seed: Optional[str] = typer.Option(
            None, "--seed", help="seed pairs: identical (same strings), dictionary (--dictionary) or none; "
            "default: dictionary when --dictionary is given, else identical"),
        dictionary: Optional[Path] = typer.Option(None, "--dictionary", help="training dictionary, 'source target' per line"),
        max_vocab: Optional[int] = typer.Option(None, "--max-vocab", min=1, help="use only the first N (most frequent) words"),
        normalize: str = typer.Option(DEFAULT_NORMALIZE, "--normalize",
                                      help="normalisation steps, comma separated from unit, center (or none); default unit,center,unit"),
        option: list[str] = typer.Option([], "--option", help="method option key=value (JSON values); repeatable"),
        dictionary_out: Optional[Path] = typer.Option(None, "--dictionary-out", help="also write the induced dictionary (TSV with scores)"),
    ) -> None:
        """Fit a mapping from SRC_VECTORS to TGT_VECTORS; last stdout line is JSON (method, seconds, pairs used, validation loss)."""
        from services.alignment import registry
        from services.errors import InvalidInput

        if seed is None:
            seed = "dictionary" if dictionary is not None else "identical"
        if seed not in ("identical", "dictionary", "none"):
            raise InvalidInput(f"--seed must be identical, dictionary or none, got {seed!r}")
        options = parse_options(option)
        registry.parse_method(method)  # unknown names fail before any loading
        started = time.perf_counter()
        src = load_space(src_vectors, max_vocab, normalize, "source")
        tgt = load_space(tgt_vectors, max_vocab, normalize, "target")
        check_dims(src, tgt)
        seeds = seed_pairs_for(seed, src, tgt, dictionary)
        result = registry.align(src, tgt, method, seed_pairs=seeds, options=options, progress=_progress)
        mapping = result.mapping
        # evaluate/export re-apply the same preprocessing from what the mapping records.
        if isinstance(getattr(mapping, "params", None), dict):
            mapping.params.setdefault("normalize", normalize)
            mapping.params.setdefault("max_vocab", max_vocab)
            if hasattr(mapping, "content_hash"):
                mapping.version = mapping.content_hash()  # the preprocessing is part of what was fitted
        mapping.save(out)
        _eprint(f"[align] mapping written to {out}")
        n_dict = None
        if dictionary_out is not None and result.dictionary is not None:
            pairs, scores = result.dictionary
            _write_dictionary(dictionary_out, src, tgt, pairs, scores)
            n_dict = int(len(pairs))
        losses = [float(v) for v in (result.validation_losses or [])]
        stats = getattr(mapping, "stats", None) or {}
        validation_loss = stats.get("validation_loss", min(losses) if losses else None)
        _print_result({
            "method": method,
            "seconds": round(float(result.seconds), 3),
            "pairs_used": int(result.pairs_used),
            "validation_loss": None if validation_loss is None else float(validation_loss),
            "seed": seed,
            "seed_pairs": 0 if seeds is None else int(len(seeds)),
            "normalize": normalize,
            "mapping": str(out),
            "mapping_version": getattr(mapping, "version", None),
            "dictionary_pairs": n_dict,
            "total_seconds": round(time.perf_counter() - started, 3),
        })

    @app.command("evaluate")
    @_cli_errors
    def evaluate_command(
        src_vectors: Path = typer.Argument(..., metavar="SRC_VECTORS", help=_VECTORS_HELP),
        tgt_vectors: Path = typer.Argument(..., metavar="TGT_VECTORS", help=_VECTORS_HELP),
        mapping_path: Path = typer.Option(..., "--mapping", help="mapping written by vislex align"),
        dictionary: Path = typer.Option(..., "--dictionary", help="test dictionary, 'source target' per line"),
        retrieval: str = typer.Option("csls", "--retrieval", help="csls (K=10) or nn"),
        max_vocab: Optional[int] = typer.Option(None, "--max-vocab", min=1, help="use only the first N words (default: all)"),
        normalize: Optional[str] = typer.Option(None, "--normalize", help="normalisation steps; default: what the mapping recorded (unit,center,unit)"),
        knn: int = typer.Option(10, "--knn", min=1, help="K of CSLS"),
    ) -> None:
        """BLI of a mapping over the full target vocabulary; last stdout line is JSON with p@1, p@5, p@10, mrr, coverage."""
        from services.alignment.dictionary import count_uncovered_sources, dictionary_to_indices, load_dictionary
        from services.alignment.evaluation import bli_evaluate
        from services.alignment.mapping import Mapping
        from services.errors import InvalidInput

        if retrieval not in ("csls", "nn"):
            raise InvalidInput(f"--retrieval must be csls or nn, got {retrieval!r}")
        entries = load_dictionary(dictionary)
        mapping = Mapping.load(mapping_path)
        pipeline = _mapping_normalize(mapping, normalize)
        src = load_space(src_vectors, max_vocab, pipeline, "source")
        tgt = load_space(tgt_vectors, max_vocab, pipeline, "target")
        check_dims(src, tgt)
        test_pairs, n_oov_pairs = dictionary_to_indices(entries, src.index, tgt.index)
        n_sources, n_uncovered = count_uncovered_sources(entries, src.index, tgt.index)
        if len(test_pairs) == 0:
            raise InvalidInput(f"no test pairs found: all {len(entries)} pairs of {dictionary} are out of vocabulary")
        _eprint(f"[evaluate] {n_sources - n_uncovered}/{n_sources} test source words in vocabulary "
                f"({n_oov_pairs} of {len(entries)} pairs out of vocabulary), retrieval={retrieval}")
        XW, YT = _mapped_spaces(mapping, src, tgt)
        started = time.perf_counter()
        metrics = bli_evaluate(XW, YT, test_pairs, retrieval=retrieval, knn=knn, n_oov_sources=n_uncovered)
        metrics.update({"oov_pairs": int(n_oov_pairs), "seconds": round(time.perf_counter() - started, 3),
                        "method": getattr(mapping, "method", None)})
        _print_result(metrics)

    @app.command("export")
    @_cli_errors
    def export_command(
        src_vectors: Path = typer.Argument(..., metavar="SRC_VECTORS", help=_VECTORS_HELP),
        tgt_vectors: Path = typer.Argument(..., metavar="TGT_VECTORS", help=_VECTORS_HELP),
        mapping_path: Path = typer.Option(..., "--mapping", help="mapping written by vislex align"),
        vectors_out: Optional[Path] = typer.Option(None, "--vectors-out", help="mapped source vectors (.vec text, or .npy + .vocab.txt)"),
        target_vectors_out: Optional[Path] = typer.Option(
            None, "--target-vectors-out", help="transformed target vectors (differ from the input only for InstaMap-like mappings)"),
        dictionary_out: Optional[Path] = typer.Option(None, "--dictionary-out", help="induced dictionary: source<TAB>target<TAB>score, mutual nearest neighbours"),
        retrieval: str = typer.Option("csls", "--retrieval", help="csls (K=10) or nn for the induced dictionary"),
        dictionary_max_rank: int = typer.Option(DEFAULT_DICT_MAX_RANK, "--dictionary-max-rank", min=1,
                                                help="induce the dictionary among the first N words of each side"),
        max_vocab: Optional[int] = typer.Option(None, "--max-vocab", min=1, help="use only the first N words (default: all)"),
        normalize: Optional[str] = typer.Option(None, "--normalize", help="normalisation steps; default: what the mapping recorded (unit,center,unit)"),
    ) -> None:
        """Write the aligned vectors and the induced dictionary; last stdout line is JSON."""
        from services.alignment.mapping import Mapping
        from services.alignment.retrieval import mutual_nn
        from services.alignment.vectors import WordVectors, save_vectors
        from services.errors import InvalidInput

        if vectors_out is None and dictionary_out is None and target_vectors_out is None:
            raise InvalidInput("nothing to export: give --vectors-out and/or --dictionary-out")
        if retrieval not in ("csls", "nn"):
            raise InvalidInput(f"--retrieval must be csls or nn, got {retrieval!r}")
        mapping = Mapping.load(mapping_path)
        pipeline = _mapping_normalize(mapping, normalize)
        src = load_space(src_vectors, max_vocab, pipeline, "source")
        tgt = load_space(tgt_vectors, max_vocab, pipeline, "target")
        check_dims(src, tgt)
        XW, YT = _mapped_spaces(mapping, src, tgt)
        summary: dict[str, Any] = {"method": getattr(mapping, "method", None), "source_words": len(src), "target_words": len(tgt)}
        if vectors_out is not None:
            save_vectors(vectors_out, WordVectors(src.words, XW))
            _eprint(f"[export] {len(src)} mapped source vectors -> {vectors_out}")
            summary["vectors_out"] = str(vectors_out)
        if target_vectors_out is not None:
            save_vectors(target_vectors_out, WordVectors(tgt.words, YT))
            summary["target_vectors_out"] = str(target_vectors_out)
        if dictionary_out is not None:
            started = time.perf_counter()
            pairs, scores = mutual_nn(_unit(XW), _unit(YT), retrieval=retrieval, knn=10,
                                      max_src=dictionary_max_rank, max_tgt=dictionary_max_rank)
            _write_dictionary(dictionary_out, src, tgt, pairs, scores)
            _eprint(f"[export] {len(pairs)} mutual {retrieval} pairs -> {dictionary_out} ({time.perf_counter() - started:.1f}s)")
            summary.update({"dictionary_out": str(dictionary_out), "dictionary_pairs": int(len(pairs)), "retrieval": retrieval})
        _print_result(summary)


def _write_dictionary(path: Path, src, tgt, pairs, scores) -> None:
    from services.alignment.dictionary import save_dictionary

    save_dictionary(path, ((src.words[i], tgt.words[j], float(s)) for (i, j), s in zip(pairs.tolist(), scores.tolist())))
