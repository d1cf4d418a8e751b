"""Startup wiring for the vision feature: CLIP encoders per language + the image set (WALIP step 1).

Settings used: ``clip_model``/``clip_pretrained``/``clip_checkpoint`` (the default CLIP,
serving English), ``clip_models`` (per-language overrides: ``{"ko": {"model": ...,
"checkpoint": ...}}``, ``{"fr": {"reuse": "en"}}`` or a uCLIP tower
``{"sw": {"tower": "uclip", "heads": PATH}}``), ``clip_device``, ``images_dir``.
Every other language of ``encoder_languages`` reuses the default CLIP's text tower
(fine for related scripts; the WALIP paper shows it fails for en->ru). Missing weights make
the component *unavailable* with the reason, never crash the service. A compact CLIP checkpoint
(``vislex clip train``) whose text tower is multilingual serves every language it speaks itself.
When no CLIP loads at all, the CLIP bootstrap (``app/wiring/clip.py``, ``VISLEX_CLIP_BOOTSTRAP``) trains a
compact one from the shared photos and swaps it in when its job succeeds.
"""

from __future__ import annotations

from pathlib import Path

from app.runtime import ComponentUnavailable, Runtime


def build_vision(settings, *, default_checkpoint=None, images_dir=None, mobilenet_dir=None):
    """The VisionService described by ``settings`` (nothing loaded yet); ``default_checkpoint`` (and the image set
    ``images_dir``, the MobileNet folder ``mobilenet_dir``) stand in for the settings' (the CLIP bootstrap's)."""
    from models.clip import ClipPool, ClipSpec, TowerSpec
    from models.compact_clip import checkpoint_languages
    from services.vision.config import effective_templates
    from services.vision.service import VisionService

    specs, reuse, towers = [], {}, {}
    own = {"en"}
    for lang, cfg in settings.clip_models.items():
        cfg = dict(cfg)
        if "reuse" in cfg:
            reuse[lang] = cfg.pop("reuse")
            continue
        if "tower" in cfg or "kind" in cfg:
            # A pluggable text tower (uCLIP heads): built on first use, its reason shown when unavailable.
            towers[lang] = TowerSpec.from_dict(cfg)
            continue
        cfg.setdefault("device", settings.clip_device)
        cfg.setdefault("languages", (lang,))
        cfg.setdefault("name", f"{lang}:{cfg.get('model', settings.clip_model)}")
        specs.append(ClipSpec.from_dict(cfg))
        own |= set(specs[-1].languages)
    checkpoint = default_checkpoint or settings.clip_checkpoint
    images_dir = images_dir or settings.images_dir
    mobilenet_dir = mobilenet_dir or settings.mobilenet_dir
    default_langs = ("en",) if "en" not in {x for s in specs for x in s.languages} else ()
    spoken = checkpoint_languages(checkpoint) if checkpoint else None
    if default_langs and spoken:
        # A compact CLIP with a multilingual text tower embeds every language it speaks itself: no reuse.
        default_langs = tuple(dict.fromkeys(["en", *(lang for lang in settings.encoder_languages
                                                     if lang not in own and ("*" in spoken or lang in spoken))]))
    if default_langs:
        specs.insert(0, ClipSpec(
            model=settings.clip_model,
            pretrained=None if checkpoint else settings.clip_pretrained,
            checkpoint=str(checkpoint) if checkpoint else None,
            device=settings.clip_device, languages=default_langs, cache_dir=None,
            name=f"default:compact:{Path(checkpoint).name}" if spoken else f"default:{settings.clip_model}",
            mobilenet_dir=str(mobilenet_dir) if mobilenet_dir else None,
        ))
    for lang in settings.encoder_languages:
        if lang not in own and lang not in reuse and lang not in towers:
            reuse[lang] = "en"
    pool = ClipPool(specs=specs, reuse=reuse, towers=towers)
    templates = effective_templates(settings.clip_templates) if settings.clip_templates else None
    return VisionService(pool, str(images_dir) if images_dir else None,
                         cache_dir=str(settings.cache_dir), templates=templates,
                         reference_size=settings.clip_reference_words)


def load(runtime: Runtime) -> None:
    """Load every configured CLIP; unavailable (with reasons) when none loads."""
    service = build_vision(runtime.settings)
    status = service.pool.load_all()
    runtime.vision = service  # kept even when unavailable: /v1/system shows each encoder's reason
    ok = [name for name, s in status.items() if s.get("available")]
    if not ok:
        reasons = "; ".join(f"{n}: {s['reason']}" for n, s in status.items() if s.get("available") is False)
        from app.wiring.clip import bootstrap_default_clip

        # No CLIP at all: the CLIP bootstrap trains one from the shared photos (or says which setting fixes it).
        default = any((spec.name or "").startswith("default:") for spec in service.pool.specs)
        installed = bootstrap_default_clip(runtime, reasons) if default else None
        if installed is None:
            raise ComponentUnavailable(reasons or "no CLIP encoder configured")
        runtime.vision = service = installed
    if service.images_dir:
        service.warm_images()
