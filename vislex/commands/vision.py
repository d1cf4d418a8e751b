"""``vislex fingerprints`` and ``vislex pivots``: the visual side of WALIP (methods.md, WALIP step 1).

- ``fingerprints WORD...``: each word's most similar images and its visual-word verdict.
- ``pivots SRC TGT``: WALIP's initial pivot pairs from CLIP fingerprints, written as a
  ``source target`` dictionary (usable with ``vislex align --seed dictionary --dictionary``),
  with the pivot precision when a test dictionary is given.
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

_CLIP_MODEL_HELP = "open_clip architecture (e.g. ViT-B-32)"
_PRETRAINED_HELP = "open_clip pretrained tag (from the cache, downloaded when online)"
_CHECKPOINT_HELP = "local CLIP checkpoint file (instead of --clip-pretrained)"


def _eprint(message: str) -> None:
    typer.echo(message, err=True)


def _cli_errors(func: Callable) -> Callable:
    """Domain errors -> one stderr line and exit status 1 (VISLEX_DEBUG=1 re-raises)."""

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
                _eprint("error: " + " ".join(exc.message.split()))
            elif isinstance(exc, OSError):
                _eprint(f"error: cannot access {getattr(exc, 'filename', '') or ''}: {exc.strerror or exc}")
            else:
                _eprint(f"error: internal error {type(exc).__name__}: {exc} (VISLEX_DEBUG=1 shows the traceback)")
            raise typer.Exit(1)

    return wrapper


def _print_json(payload: dict[str, Any]) -> None:
    sys.stdout.flush()
    from services.strict_json import dumps

    typer.echo(dumps(payload))


def _progress(stage: str, current: int, total: int, metrics: dict) -> None:
    _eprint(f"[{stage}] {current}/{total} {json.dumps(metrics) if metrics else ''}".rstrip())


def _templates(path: Optional[Path]) -> dict:
    """Shipped prompt ensembles, overridden per language by --templates, else by VISLEX_CLIP_TEMPLATES."""
    from app.settings import SettingsError, load_settings
    from services.errors import InvalidInput
    from services.vision.config import effective_templates, parse_templates

    if path is not None:
        try:
            return effective_templates(parse_templates(str(path)))
        except ValueError as exc:
            raise InvalidInput(f"--templates: {exc}") from None
    try:
        return effective_templates(load_settings().clip_templates)
    except SettingsError as exc:
        raise InvalidInput(str(exc)) from None


def register(app: typer.Typer) -> None:
    """Add ``fingerprints`` and ``pivots`` to the vislex CLI."""

    @app.command("fingerprints")
    @_cli_errors
    def fingerprints_command(
        words: list[str] = typer.Argument(..., help="words to fingerprint"),
        lang: str = typer.Option("en", "--lang", help="language of the words (selects prompts)"),
        images: Path = typer.Option(..., "--images", help="folder of images (the image set G)"),
        clip_model: str = typer.Option("ViT-B-32", "--clip-model", help=_CLIP_MODEL_HELP),
        clip_pretrained: Optional[str] = typer.Option(None, "--clip-pretrained", help=_PRETRAINED_HELP),
        clip_checkpoint: Optional[Path] = typer.Option(None, "--clip-checkpoint", help=_CHECKPOINT_HELP),
        device: str = typer.Option("auto", "--device", help="cpu, cuda or auto"),
        top: int = typer.Option(10, "--top", min=1, help="images per word"),
        reference_size: int = typer.Option(1000, "--reference-size", min=0,
                                           help="frequent words (wordfreq) defining the visual-word median; 0 = skip the verdict"),
        templates: Optional[Path] = typer.Option(None, "--templates", help="JSON {lang: [templates]} replacing the shipped prompts"),
        cache_dir: Optional[Path] = typer.Option(Path(".vislex/cache"), "--cache-dir", help="image-embedding cache"),
    ) -> None:
        """Print each word's most similar images (and whether it is a visual word) as JSON lines."""
        from models.clip import ClipPool, ClipSpec
        from services.vision.service import VisionService

        spec = ClipSpec(model=clip_model, pretrained=clip_pretrained,
                        checkpoint=str(clip_checkpoint) if clip_checkpoint else None, device=device, languages=(lang,))
        service = VisionService(ClipPool([spec]), str(images), str(cache_dir) if cache_dir else None,
                                templates=_templates(templates), reference_size=reference_size)
        for word in words:
            _print_json(service.word_images(word, lang, top))

    @app.command("pivots")
    @_cli_errors
    def pivots_command(
        src_vectors: Path = typer.Argument(..., metavar="SRC_VECTORS", help="source word vectors (only the vocabulary is used)"),
        tgt_vectors: Path = typer.Argument(..., metavar="TGT_VECTORS", help="target word vectors (only the vocabulary is used)"),
        images: Path = typer.Option(..., "--images", help="folder of images (the image set G)"),
        src_lang: str = typer.Option(..., "--src-lang"),
        tgt_lang: str = typer.Option(..., "--tgt-lang"),
        out: Path = typer.Option(..., "--out", help="pivot dictionary to write: 'source target' per line"),
        clip_model: str = typer.Option("ViT-B-32", "--clip-model", help=_CLIP_MODEL_HELP),
        clip_pretrained: Optional[str] = typer.Option(None, "--clip-pretrained", help=_PRETRAINED_HELP),
        clip_checkpoint: Optional[Path] = typer.Option(None, "--clip-checkpoint", help=_CHECKPOINT_HELP),
        tgt_clip_model: Optional[str] = typer.Option(None, "--tgt-clip-model", help="target-language CLIP (default: reuse the source CLIP)"),
        tgt_clip_pretrained: Optional[str] = typer.Option(None, "--tgt-clip-pretrained"),
        tgt_clip_checkpoint: Optional[Path] = typer.Option(None, "--tgt-clip-checkpoint"),
        device: str = typer.Option("auto", "--device", help="cpu, cuda or auto"),
        max_words: Optional[int] = typer.Option(None, "--max-words", min=1, help="fingerprint only the first N words"),
        q: float = typer.Option(0.5, "--q", min=0.0, max=1.0, help="matching threshold quantile"),
        k: int = typer.Option(1, "--k", min=1, help="targets kept per source word"),
        variant: str = typer.Option("paper", "--variant", help="paper or code (the authors' released code)"),
        templates: Optional[Path] = typer.Option(None, "--templates", help="JSON {lang: [templates]}"),
        dictionary: Optional[Path] = typer.Option(None, "--dictionary", help="test dictionary: report pivot precision"),
        cache_dir: Optional[Path] = typer.Option(Path(".vislex/cache"), "--cache-dir", help="image-embedding cache"),
    ) -> None:
        """Write WALIP's fingerprint pivot pairs; last stdout line is a JSON summary."""
        from services.alignment.vectors import load_vectors
        from services.vision.fingerprints import pivot_precision
        from services.vision.walip_pipeline import FingerprintOptions, build_pool, compute_pivots

        started = time.perf_counter()
        src = load_vectors(src_vectors, max_vocab=max_words)
        tgt = load_vectors(tgt_vectors, max_vocab=max_words)
        pool = build_pool(src_lang, tgt_lang, clip_model=clip_model, clip_pretrained=clip_pretrained,
                          clip_checkpoint=str(clip_checkpoint) if clip_checkpoint else None,
                          tgt_clip_model=tgt_clip_model, tgt_clip_pretrained=tgt_clip_pretrained,
                          tgt_clip_checkpoint=str(tgt_clip_checkpoint) if tgt_clip_checkpoint else None, device=device)
        options = FingerprintOptions(q=q, k=k, variant=variant, templates=_templates(templates))
        report = compute_pivots(src.words, tgt.words, src_enc=pool.for_language(src_lang),
                                tgt_enc=pool.for_language(tgt_lang), images_dir=str(images), src_lang=src_lang,
                                tgt_lang=tgt_lang, options=options, cache_dir=str(cache_dir) if cache_dir else None,
                                progress=_progress)
        pairs = report.pivots.pairs
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(f"{src.words[i]} {tgt.words[j]}\n" for i, j in pairs.tolist()), encoding="utf-8")
        summary = report.summary()
        if dictionary is not None:
            from services.alignment.dictionary import dictionary_to_indices, load_dictionary

            gold, _ = dictionary_to_indices(load_dictionary(dictionary), src.index, tgt.index)
            summary["initial_matching"] = pivot_precision(pairs, gold)
        summary["out"] = str(out)
        summary["total_seconds"] = round(time.perf_counter() - started, 3)
        _print_json(summary)
