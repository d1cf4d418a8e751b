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
    from services.strict_json import dumps

    typer.echo(dumps(payload))


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


def _mapping_max_vocab(mapping, explicit: Optional[int]) -> Optional[int]:
    """--max-vocab, else what ``vislex align`` recorded in the mapping (same vocabulary as fitted)."""
    if explicit is not None:
        return explicit
    recorded = (getattr(mapping, "params", None) or {}).get("max_vocab")
    if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded > 0:
        _eprint(f"[mapping] using --max-vocab {recorded} recorded in the mapping")
        return recorded
    return None


def _loss_report(result, mapping) -> tuple[Optional[float], Optional[dict[str, Any]]]:
    """(validation loss, l1 loss) kept apart: the l1 stage's loss is a sum of absolute residuals,
    not WALIP's validation loss (mean squared distance, methods.md WALIP step 2)."""
    stages = [st for st in ((getattr(mapping, "stats", None) or {}).get("stages") or []) if isinstance(st, dict)]
    validation = None
    l1 = None
    for st in stages:
        if st.get("best_validation_loss") is not None:
            validation = float(st["best_validation_loss"])
        if st.get("method") == "l1":
            l1 = {"initial": st.get("loss_initial"), "final": st.get("loss_final"), "steps": st.get("steps"),
                  "stop_reason": st.get("stop_reason"), "orthogonality_error": st.get("orthogonality_error")}
    if validation is None and l1 is None:
        losses = [float(v) for v in (result.validation_losses or [])]
        validation = min(losses) if losses else None
    return validation, l1


_LANG_TOKENS = ("en", "fr", "de", "es", "it", "ru", "ko", "ja")


def _guess_lang(path: Path, explicit: Optional[str], option: str) -> str:
    """--src-lang/--tgt-lang, else a language code in the file name (``wiki.en.vec`` -> en)."""
    import re

    from services.errors import InvalidInput

    if explicit:
        return explicit
    tokens = [t.lower() for t in re.split(r"[._\-]+", path.name)]
    found = [t for t in tokens if t in _LANG_TOKENS]
    if len(set(found)) == 1:
        _eprint(f"[fingerprints] language of {path.name}: {found[0]} (from the file name; {option} overrides)")
        return found[0]
    raise InvalidInput(f"--seed fingerprints needs {option}: cannot tell the language of {path.name} from its name")


def _settings():
    from app.settings import SettingsError, load_settings
    from services.errors import InvalidInput

    try:
        return load_settings()
    except SettingsError as exc:
        raise InvalidInput(str(exc)) from None


class _FingerprintCLI:
    """``--seed fingerprints``: CLIP encoders and image set resolved up front, pivots once vectors are loaded.

    CLIP options on the command line win; without them the settings' CLIP per language
    (VISLEX_CLIP_MODEL/PRETRAINED/CHECKPOINT, VISLEX_CLIP_MODELS) is used. Nothing falls back
    to identical strings: a missing CLIP or image set is a one-line error.
    """

    def __init__(self, src_vectors: Path, tgt_vectors: Path, *, images, src_lang, tgt_lang, clip_model,
                 clip_pretrained, clip_checkpoint, tgt_clip_model, tgt_clip_pretrained, tgt_clip_checkpoint,
                 device, templates, options: dict[str, Any], cache_dir):
        from services.errors import InvalidInput
        from services.vision import config as vc
        from services.vision.walip_pipeline import FingerprintOptions, build_pool

        self._settings = None
        self.src_lang = _guess_lang(src_vectors, src_lang, "--src-lang")
        self.tgt_lang = _guess_lang(tgt_vectors, tgt_lang, "--tgt-lang")
        self.images_dir = vc.check_images_dir(images if images is not None else self.settings.images_dir)
        if templates is not None:
            try:
                table = vc.parse_templates(str(templates))
            except ValueError as exc:
                raise InvalidInput(f"--templates: {exc}") from None
        else:
            table = self.settings.clip_templates
        if "templates" in options:
            raise InvalidInput("give prompt templates with --templates, not --fingerprint-option")
        self.options = FingerprintOptions.from_dict({**options, "templates": vc.effective_templates(table)})
        cli_clip = any(v is not None for v in (clip_model, clip_pretrained, clip_checkpoint, tgt_clip_model,
                                                 tgt_clip_pretrained, tgt_clip_checkpoint))
        if cli_clip:
            pool = build_pool(self.src_lang, self.tgt_lang, clip_model=clip_model or "ViT-B-32",
                              clip_pretrained=clip_pretrained, clip_checkpoint=str(clip_checkpoint) if clip_checkpoint else None,
                              tgt_clip_model=tgt_clip_model, tgt_clip_pretrained=tgt_clip_pretrained,
                              tgt_clip_checkpoint=str(tgt_clip_checkpoint) if tgt_clip_checkpoint else None,
                              device=device or "auto")
        else:
            settings = self.settings if device is None else self.settings.model_copy(update={"clip_device": device})
            pool = vc.pool_from_settings(settings, [self.src_lang, self.tgt_lang])
        started = time.perf_counter()
        self.src_enc = vc.language_encoders(pool, self.src_lang)
        self.tgt_enc = vc.language_encoders(pool, self.tgt_lang)
        _eprint(f"[clip] {self.src_lang}: {self.src_enc.source}, {self.tgt_lang}: {self.tgt_enc.source} "
                f"({time.perf_counter() - started:.1f}s)")
        if cache_dir is None:
            cache_dir = self._settings.cache_dir if self._settings is not None else Path(".vislex/cache")
        self.cache_dir = str(cache_dir)

    @property
    def settings(self):
        if self._settings is None:
            self._settings = _settings()
        return self._settings

    def pivots(self, src, tgt, gold) -> tuple[Any, dict[str, Any]]:
        """WALIP step 1 (methods.md): pivot pairs between the two vocabularies, and their precision."""
        from services.errors import InvalidInput
        from services.vision.fingerprints import pivot_precision
        from services.vision.walip_pipeline import compute_pivots

        report = compute_pivots(src.words, tgt.words, src_enc=self.src_enc, tgt_enc=self.tgt_enc,
                                images_dir=self.images_dir, src_lang=self.src_lang, tgt_lang=self.tgt_lang,
                                options=self.options, cache_dir=self.cache_dir, progress=_progress)
        pairs = report.pivots.pairs
        if len(pairs) == 0:
            raise InvalidInput("no seed pairs found: the fingerprint step found no pivot pairs "
                               "(try --fingerprint-option q=0.1, or check the image set)")
        info: dict[str, Any] = {"pivot_pairs": int(len(pairs)),
                                "fingerprints": {**report.summary(), "src_encoder": self.src_enc.source,
                                                 "tgt_encoder": self.tgt_enc.source}}
        _eprint(f"[seed] {len(pairs)} fingerprint pivot pairs")
        if gold is not None:
            initial = pivot_precision(pairs, gold)
            info["fingerprints"]["initial_matching"] = initial
            info["initial_matching_precision"] = initial["precision"]
            _eprint(f"[seed] pivot precision {initial['precision']:.3f} "
                    f"({initial['n_correct']}/{initial['n_evaluable']} evaluable)")
        return pairs, info


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
            None, "--seed", help="seed pairs: identical (same strings), dictionary (--dictionary), fingerprints "
            "(CLIP pivots over --images, WALIP step 1), fingerprints+identical (their union) or none; default: "
            "dictionary when --dictionary is given, else identical"),
        dictionary: Optional[Path] = typer.Option(None, "--dictionary", help="training dictionary, 'source target' per line"),
        max_vocab: Optional[int] = typer.Option(None, "--max-vocab", min=1, help="use only the first N (most frequent) words"),
        normalize: str = typer.Option(DEFAULT_NORMALIZE, "--normalize",
                                      help="normalisation steps, comma separated from unit, center (or none); default unit,center,unit"),
        option: list[str] = typer.Option([], "--option", help="method option key=value (JSON values); repeatable"),
        dictionary_out: Optional[Path] = typer.Option(None, "--dictionary-out", help="also write the induced dictionary (TSV with scores)"),
        eval_dictionary: Optional[Path] = typer.Option(
            None, "--eval-dictionary", help="test dictionary: add final P@1 (CSLS) and, with --seed fingerprints, "
            "the pivot precision (initial_matching_precision) to the JSON"),
        images: Optional[Path] = typer.Option(None, "--images", help="--seed fingerprints: folder of images (default VISLEX_IMAGES_DIR)"),
        src_lang: Optional[str] = typer.Option(None, "--src-lang", help="--seed fingerprints: source language (default: from the file name)"),
        tgt_lang: Optional[str] = typer.Option(None, "--tgt-lang", help="--seed fingerprints: target language (default: from the file name)"),
        clip_model: Optional[str] = typer.Option(None, "--clip-model", help="open_clip architecture (default: VISLEX_CLIP_MODEL / VISLEX_CLIP_MODELS)"),
        clip_pretrained: Optional[str] = typer.Option(None, "--clip-pretrained", help="open_clip pretrained tag"),
        clip_checkpoint: Optional[Path] = typer.Option(None, "--clip-checkpoint", help="local CLIP checkpoint (instead of a tag)"),
        tgt_clip_model: Optional[str] = typer.Option(None, "--tgt-clip-model", help="target-language CLIP (default: the source CLIP)"),
        tgt_clip_pretrained: Optional[str] = typer.Option(None, "--tgt-clip-pretrained"),
        tgt_clip_checkpoint: Optional[Path] = typer.Option(None, "--tgt-clip-checkpoint"),
        device: Optional[str] = typer.Option(None, "--device", help="CLIP device: cpu, cuda or auto (default VISLEX_CLIP_DEVICE)"),
        templates: Optional[Path] = typer.Option(None, "--templates", help="JSON {lang: [templates]} (default VISLEX_CLIP_TEMPLATES, else shipped)"),
        fingerprint_option: list[str] = typer.Option([], "--fingerprint-option", help="WALIP step-1 option key=value (q, k, max_words, variant, ...); repeatable"),
        cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="image-embedding cache (default <VISLEX_DATA_DIR>/cache)"),
    ) -> None:
        """Fit a mapping from SRC_VECTORS to TGT_VECTORS; last stdout line is JSON (method, seconds, pairs used, validation loss)."""
        from services.alignment import registry
        from services.errors import InvalidInput

        if seed is None:
            seed = "dictionary" if dictionary is not None else "identical"
        if seed not in ("identical", "dictionary", "fingerprints", "fingerprints+identical", "none"):
            raise InvalidInput(f"--seed must be identical, dictionary, fingerprints, fingerprints+identical or none, "
                               f"got {seed!r}")
        options = parse_options(option)
        registry.parse_method(method)  # unknown names fail before any loading
        started = time.perf_counter()
        fp = None
        if seed.startswith("fingerprints"):  # CLIP and images are checked before the (long) vector loading
            fp = _FingerprintCLI(src_vectors, tgt_vectors, images=images, src_lang=src_lang, tgt_lang=tgt_lang,
                                 clip_model=clip_model, clip_pretrained=clip_pretrained, clip_checkpoint=clip_checkpoint,
                                 tgt_clip_model=tgt_clip_model, tgt_clip_pretrained=tgt_clip_pretrained,
                                 tgt_clip_checkpoint=tgt_clip_checkpoint, device=device, templates=templates,
                                 options=parse_options(fingerprint_option), cache_dir=cache_dir)
        elif images is not None or fingerprint_option:
            raise InvalidInput("--images and --fingerprint-option only apply to --seed fingerprints")
        eval_entries = None
        if eval_dictionary is not None:
            from services.alignment.dictionary import load_dictionary

            eval_entries = load_dictionary(eval_dictionary)
        src = load_space(src_vectors, max_vocab, normalize, "source")
        tgt = load_space(tgt_vectors, max_vocab, normalize, "target")
        check_dims(src, tgt)
        gold = None
        if eval_entries is not None:
            from services.alignment.dictionary import dictionary_to_indices

            gold, _ = dictionary_to_indices(eval_entries, src.index, tgt.index)
            if len(gold) == 0:
                raise InvalidInput(f"no test pairs found: all {len(eval_entries)} pairs of {eval_dictionary} are out of vocabulary")
        fp_info: dict[str, Any] = {}
        if fp is not None:
            seeds, fp_info = fp.pivots(src, tgt, gold)
            if seed == "fingerprints+identical":
                import numpy as np

                identical = seed_pairs_for("identical", src, tgt, None)
                seeds = np.unique(np.concatenate([seeds, identical]), axis=0)
                fp_info["identical_pairs"] = int(len(identical))
                _eprint(f"[seed] {len(seeds)} pairs in the union of pivots and identical strings")
        else:
            seeds = seed_pairs_for(seed, src, tgt, dictionary)
        result = registry.align(src, tgt, method, seed_pairs=seeds, options=options, progress=_progress)
        mapping = result.mapping
        stats = getattr(mapping, "stats", None) or {}
        # the seed actually used: with --seed none the registry seeds seed-needing methods from identical strings
        used_seed, used_pairs = seed, (0 if seeds is None else len(seeds))
        if seeds is None and stats.get("seed"):
            used_seed, used_pairs = stats["seed"], int(stats.get("seed_pairs") or 0)
            _eprint(f"[seed] --seed none: method {method} needs seed pairs; used {used_pairs} {used_seed}-string pairs")
        # evaluate/export re-apply the same preprocessing from what the mapping records.
        if isinstance(getattr(mapping, "params", None), dict):
            mapping.params.setdefault("normalize", normalize)
            mapping.params.setdefault("max_vocab", max_vocab)
            if fp is not None:
                mapping.params.update(seed=seed, seed_pairs=used_pairs)
            if hasattr(mapping, "content_hash"):
                mapping.version = mapping.content_hash()  # the preprocessing is part of what was fitted
        if isinstance(getattr(mapping, "stats", None), dict):
            mapping.stats.update(seed=used_seed, seed_pairs=used_pairs, **fp_info)
        mapping.save(out)
        _eprint(f"[align] mapping written to {out}")
        n_dict = None
        if dictionary_out is not None and result.dictionary is not None:
            pairs, scores = result.dictionary
            _write_dictionary(dictionary_out, src, tgt, pairs, scores)
            n_dict = int(len(pairs))
        validation_loss, l1_loss = _loss_report(result, mapping)
        payload: dict[str, Any] = {
            "method": method,
            "seconds": round(float(result.seconds), 3),
            "pairs_used": int(result.pairs_used),
            "validation_loss": validation_loss,
            "seed": used_seed,
            "seed_pairs": used_pairs,
            "normalize": normalize,
            "mapping": str(out),
            "mapping_version": getattr(mapping, "version", None),
            "dictionary_pairs": n_dict,
        }
        if l1_loss is not None:
            payload["l1_loss"] = l1_loss
        if used_seed != seed:
            payload["seed_requested"] = seed
        if fp is not None:
            payload["pivot_pairs"] = fp_info["pivot_pairs"]
            if "identical_pairs" in fp_info:
                payload["identical_pairs"] = fp_info["identical_pairs"]
            payload["fingerprints"] = fp_info["fingerprints"]
            if gold is not None:
                payload["initial_matching_precision"] = fp_info["initial_matching_precision"]
        if gold is not None:
            from services.alignment.evaluation import bli_evaluate

            XW, YT = _mapped_spaces(mapping, src, tgt)
            scores = bli_evaluate(XW, YT, gold, retrieval="csls")
            payload["p@1"] = scores.get("p@1")
            payload["evaluation"] = scores
            _eprint(f"[evaluate] final P@1 (CSLS) {scores.get('p@1')}")
        payload["total_seconds"] = round(time.perf_counter() - started, 3)
        _print_result(payload)

    @app.command("evaluate")
    @_cli_errors
    def evaluate_command(
        src_vectors: Path = typer.Argument(..., metavar="SRC_VECTORS", help=_VECTORS_HELP),
        tgt_vectors: Path = typer.Argument(..., metavar="TGT_VECTORS", help=_VECTORS_HELP),
        mapping_path: Path = typer.Option(..., "--mapping", help="mapping written by vislex align"),
        dictionary: Path = typer.Option(..., "--dictionary", help="test dictionary, 'source target' per line"),
        retrieval: str = typer.Option("csls", "--retrieval", help="csls (K=10) or nn"),
        max_vocab: Optional[int] = typer.Option(None, "--max-vocab", min=1, help="use only the first N words (default: what the mapping recorded, else all)"),
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
        max_vocab = _mapping_max_vocab(mapping, max_vocab)
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
        max_vocab: Optional[int] = typer.Option(None, "--max-vocab", min=1, help="use only the first N words (default: what the mapping recorded, else all)"),
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
        max_vocab = _mapping_max_vocab(mapping, max_vocab)
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
