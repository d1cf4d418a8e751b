"""The visual pivot from settings: prompt templates, per-language CLIP pool, image-set checks.

Used by the job runner (``seed=fingerprints``) and the CLI so that both read the same
configuration (``VISLEX_CLIP_*``, ``VISLEX_IMAGES_DIR``, ``VISLEX_CLIP_TEMPLATES``).
Nothing here falls back silently: a missing image set or CLIP raises
:class:`services.errors.Unavailable` with code ``images_unavailable`` or
``encoder_unavailable`` and the reason.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.errors import InvalidInput, NotFound, Unavailable

ENCODER_UNAVAILABLE = "encoder_unavailable"
IMAGES_UNAVAILABLE = "images_unavailable"


# ---------------------------------------------------------------- prompt templates


def validate_templates(table: Any, where: str = "templates") -> dict[str, list[str]]:
    """``{lang: [template, ...]}`` with each template holding exactly one ``{}``; ValueError otherwise."""
    if isinstance(table, dict) and set(table) == {"templates"} and isinstance(table["templates"], dict):
        table = table["templates"]  # the shipped prompts.json layout
    if not isinstance(table, dict) or not table:
        raise ValueError(f"{where} must be a non-empty JSON object {{lang: [templates]}}")
    out: dict[str, list[str]] = {}
    for lang, temps in table.items():
        if not isinstance(lang, str) or not lang or lang.startswith("_"):
            if isinstance(lang, str) and lang.startswith("_"):
                continue  # comments such as "_about"
            raise ValueError(f"{where}: language keys must be non-empty strings")
        if not isinstance(temps, list) or not temps or not all(isinstance(t, str) for t in temps):
            raise ValueError(f"{where}[{lang!r}] must be a non-empty list of strings")
        for t in temps:
            if t.count("{}") != 1:
                raise ValueError(f"{where}[{lang!r}]: template {t!r} must contain exactly one '{{}}'")
            try:
                t.format("x")
            except (IndexError, KeyError, ValueError) as e:
                raise ValueError(f"{where}[{lang!r}]: template {t!r} has stray braces ({e})") from None
        out[lang] = list(temps)
    if not out:
        raise ValueError(f"{where} names no language")
    return out


def parse_templates(value: dict | str | Path | None) -> dict[str, list[str]] | None:
    """The ``clip_templates`` setting: a mapping, inline JSON, or the path of a JSON file."""
    if value is None:
        return None
    if isinstance(value, dict):
        return validate_templates(value)
    text = str(value).strip()
    if not text:
        return None
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"not valid JSON: {e}") from None
        return validate_templates(data)
    path = Path(text).expanduser()
    if not path.is_file():
        raise ValueError(f"neither inline JSON nor an existing file: {text}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read templates file {path}: {e}") from None
    return validate_templates(data, where=str(path))


def effective_templates(overrides: dict[str, list[str]] | None) -> dict[str, list[str]]:
    """Shipped prompt ensembles with ``overrides`` replacing whole languages."""
    from models.clip import default_prompts

    return {**default_prompts(), **(overrides or {})}


# ---------------------------------------------------------------- CLIP pool from settings


def clip_pool_config(settings: Any, langs: Sequence[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """(spec dicts, reuse map) for ``langs``.

    The default CLIP (``clip_model`` + ``clip_checkpoint`` or ``clip_pretrained``) serves every
    language without an entry in ``clip_models``; an entry is a ClipSpec mapping (``model``,
    ``pretrained``, ``checkpoint``, ``model_config``, ``dtype``, ...) or ``{"reuse": "en"}`` to
    borrow another language's CLIP text tower.
    """
    per_lang = dict(getattr(settings, "clip_models", None) or {})
    device = getattr(settings, "clip_device", "auto") or "auto"
    wanted: list[str] = []
    reuse: dict[str, str] = {}
    for lang in langs:
        entry = per_lang.get(lang)
        if _is_tower(entry):
            base = str(entry.get("base", "en"))  # the tower embeds images with its base language's CLIP
            if base not in wanted:
                wanted.append(base)
        elif isinstance(entry, dict) and set(entry) == {"reuse"}:
            reuse[lang] = str(entry["reuse"])
            if reuse[lang] not in wanted:
                wanted.append(reuse[lang])
        elif lang not in wanted:
            wanted.append(lang)
    specs: list[dict[str, Any]] = []
    default_langs = [lang for lang in wanted if lang not in per_lang]
    if default_langs:
        checkpoint = getattr(settings, "clip_checkpoint", None)
        specs.append({"model": settings.clip_model, "checkpoint": str(checkpoint) if checkpoint else None,
                      "pretrained": None if checkpoint else settings.clip_pretrained, "device": device,
                      "languages": list(default_langs)})
    for lang in wanted:
        entry = per_lang.get(lang)
        if entry is None or _is_tower(entry):
            continue
        if not isinstance(entry, dict) or "reuse" in entry:
            raise Unavailable(f"CLIP for language {lang!r}: clip_models[{lang!r}] must be a CLIP spec "
                              "(a reused language cannot itself reuse another)",
                              code=ENCODER_UNAVAILABLE, detail={"language": lang, "reason": "bad_config"})
        specs.append({"device": device, **entry, "languages": [lang]})
    return specs, reuse


def _is_tower(entry: Any) -> bool:
    """A ``clip_models`` entry naming a pluggable text tower (uCLIP heads) rather than a CLIP."""
    return isinstance(entry, dict) and ("tower" in entry or "kind" in entry)


def tower_config(settings: Any, langs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``lang -> tower spec dict`` for the languages of ``langs`` served by a text tower."""
    per_lang = dict(getattr(settings, "clip_models", None) or {})
    return {lang: dict(per_lang[lang]) for lang in langs if _is_tower(per_lang.get(lang))}


_POOLS: dict[str, Any] = {}
_POOLS_LOCK = threading.Lock()


def pool_from_settings(settings: Any, langs: Sequence[str]):
    """A ClipPool for ``langs`` built from settings, cached per process by configuration.

    Remembered load failures are forgotten on every call: weights installed after a failed
    job are picked up by the next one without restarting the worker.
    """
    from models.clip import ClipPool, ClipSpec, TowerSpec

    specs, reuse = clip_pool_config(settings, langs)
    towers = tower_config(settings, langs)
    key = json.dumps([specs, reuse, towers], sort_keys=True, default=str)
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            try:
                pool = ClipPool(specs=[ClipSpec.from_dict(s) for s in specs], reuse=reuse,
                                towers={lang: TowerSpec.from_dict(t) for lang, t in towers.items()})
            except InvalidInput as e:
                raise Unavailable(f"CLIP configuration is invalid: {e.message}", code=ENCODER_UNAVAILABLE,
                                  detail={**e.detail, "reason": "bad_config"}) from None
            _POOLS[key] = pool
    pool.retry()
    return pool


def language_encoders(pool: Any, lang: str):
    """``pool.for_language(lang)`` with failures re-raised as ``encoder_unavailable`` naming the encoder."""
    try:
        return pool.for_language(lang)
    except Unavailable as e:
        spec = pool.spec_for(lang)
        encoder = e.detail.get("encoder") or (spec.label if spec is not None else None)
        message = f"CLIP encoder for language {lang!r} is unavailable: {e.message}"
        raise Unavailable(message, code=ENCODER_UNAVAILABLE,
                          detail={**e.detail, "language": lang, "encoder": encoder}) from None


def check_images_dir(images_dir: str | Path | None) -> str:
    """The image folder as a string; ``images_unavailable`` when unset, missing or empty."""
    from services.vision.images import list_images

    if not images_dir:
        raise Unavailable("seed 'fingerprints' needs an image set: no image folder is configured "
                          "(VISLEX_IMAGES_DIR / --images)", code=IMAGES_UNAVAILABLE, detail={"reason": "not_configured"})
    try:
        list_images(images_dir, max_images=1)
    except (NotFound, InvalidInput) as e:
        raise Unavailable(f"image set unavailable: {e.message}", code=IMAGES_UNAVAILABLE,
                          detail={**e.detail, "reason": "missing" if isinstance(e, NotFound) else "empty"}) from None
    return str(images_dir)


def check_fingerprint_settings(settings: Any, src_lang: str, tgt_lang: str) -> None:
    """Cheap, load-free check for the submit side: 503-worthy ``Unavailable`` when settings cannot work.

    Raises when no image folder is configured or a language's CLIP has no weights source at
    all. Whether the weights actually load is only known where they are loaded (the worker).
    """
    if not getattr(settings, "images_dir", None):
        check_images_dir(None)
    specs, _ = clip_pool_config(settings, [src_lang, tgt_lang])
    for spec in specs:
        model = str(spec.get("model", ""))
        if not (spec.get("checkpoint") or spec.get("pretrained") or model.startswith(("hf-hub:", "local-dir:"))):
            raise Unavailable(f"no CLIP weights configured for {', '.join(spec['languages'])} "
                              f"({model}: neither a pretrained tag nor a checkpoint)",
                              code=ENCODER_UNAVAILABLE,
                              detail={"languages": spec["languages"], "encoder": model, "reason": "not_configured"})
