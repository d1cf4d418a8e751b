"""CLIP encoders per language: loading from configuration, batched text and image encoding.

The visual pivot of WALIP (methods.md, WALIP step 1) needs, per language, a CLIP text
encoder and the image encoder of the same model. This module loads open_clip models
from a built-in architecture name plus either a pretrained tag (resolved from the usual
cache, downloaded only when a network is reachable) or a local checkpoint file, and
wraps them as :class:`ClipEncoder`. Missing weights never crash a caller:
:func:`load_clip` raises :class:`services.errors.Unavailable` with the reason, and
:class:`ClipPool` records per-language availability for ``/readyz``.

Any object with ``encode_text(texts, batch_size) -> (n, D) unit rows`` in a CLIP space is
a :class:`TextTower`; uCLIP heads or another language's CLIP tower can fill that slot. From
configuration a slot is a :class:`TowerSpec` (``{"kind": "uclip", "heads": <checkpoint>,
"text_encoder": ..., "base": "en"}``), built lazily by :func:`build_tower`.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from services.errors import InvalidInput, Unavailable

DTYPES = ("auto", "fp32", "fp16", "bf16")
_PROMPTS_PATH = Path(__file__).with_name("prompts.json")


@runtime_checkable
class TextTower(Protocol):
    """Anything that embeds texts into a CLIP space as unit rows (methods.md, WALIP step 1)."""

    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray: ...


def encode_text_trimmed(model: Any, tokens: Any) -> Any:
    """``model.encode_text(tokens)``, computed only up to the last end-of-text position of the batch.

    CLIP's text transformer is causal and pools the end-of-text token, so positions after it cannot
    change the result: cutting the 77-token context to the batch's longest prompt (about 10-15 tokens
    for the prompt templates) gives the same embeddings for a fraction of the compute. Models without
    that structure (HF text towers, non-causal masks) take open_clip's own path.
    """
    import torch

    pool = getattr(model, "text_pool_type", None)
    mask = getattr(model, "attn_mask", None)
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final")
    if pool not in ("argmax", "eos") or mask is None or not all(hasattr(model, a) for a in needed):
        return model.encode_text(tokens)
    if pool == "argmax":
        idx = tokens.argmax(dim=-1)
    else:
        eos = getattr(model, "text_eos_id", None)
        if eos is None:
            return model.encode_text(tokens)
        idx = (tokens == eos).int().argmax(dim=-1)
    length = int(idx.max()) + 1
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens[:, :length]).to(cast)
    x = x + model.positional_embedding[:length].to(cast)
    x = model.transformer(x, attn_mask=mask[:length, :length])
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), idx]
    proj = model.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
    return x


@dataclass(frozen=True)
class ClipSpec:
    """Which CLIP to load and where: one open_clip model serving one or more languages.

    ``model`` is an open_clip architecture name (``ViT-B-32``) or an open_clip
    ``hf-hub:org/repo`` / ``local-dir:/path`` identifier. Weights come from
    ``checkpoint`` (a local file) when given, else from the ``pretrained`` tag.
    ``model_config`` (an open_clip config dict) registers a custom architecture under
    ``model`` -- used for tiny test models and for language-specific variants.
    """

    model: str = "ViT-B-32"
    pretrained: str | None = None
    checkpoint: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    languages: tuple[str, ...] = ("en",)
    cache_dir: str | None = None
    allow_download: bool = True
    model_config: dict[str, Any] | None = None
    name: str | None = None
    # Where a compact checkpoint's MobileNet image tower is looked for first (then VISLEX_MOBILENET_DIR, defaults).
    mobilenet_dir: str | None = None

    @property
    def label(self) -> str:
        """Human-readable name of this encoder (for status and errors)."""
        if self.name:
            return self.name
        source = self.checkpoint or self.pretrained or "no-weights"
        return f"{self.model}:{source}"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClipSpec":
        """Build a spec from a settings mapping (unknown keys are an error)."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise InvalidInput(f"unknown CLIP spec keys: {unknown}", detail={"known": sorted(known)})
        d = dict(d)
        if "languages" in d:
            langs = d["languages"]
            d["languages"] = tuple([langs] if isinstance(langs, str) else langs)
        return cls(**d)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is present, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_precision(dtype: str, device: str) -> str:
    """open_clip precision string; ``auto`` is fp16 on GPU, fp32 on CPU."""
    if dtype not in DTYPES:
        raise InvalidInput(f"unknown CLIP dtype {dtype!r}", detail={"known": list(DTYPES)})
    if dtype == "auto":
        return "fp16" if device.startswith("cuda") else "fp32"
    return dtype


def _network_reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Fast probe so a missing network fails in seconds rather than after hub retries."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or os.environ.get(
        "VISLEX_OFFLINE", "0"
    ).lower() in ("1", "true", "yes")


def _resolve_pretrained_tag(spec: ClipSpec) -> tuple[str, dict[str, Any]]:
    """Find the weights file of a pretrained tag: cache first, then a guarded download."""
    import models.torchvision_compat  # noqa: F401  (must precede open_clip)
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    cfg = get_pretrained_cfg(spec.model, spec.pretrained)
    if not cfg:
        raise Unavailable(
            f"CLIP {spec.label}: unknown pretrained tag {spec.pretrained!r} for {spec.model}",
            detail={"encoder": spec.label, "known_tags": list_pretrained_tags_by_model(spec.model)},
        )
    if cfg.get("file"):
        return cfg["file"], cfg
    hf_hub = cfg.get("hf_hub", "")
    url = cfg.get("url", "")
    may_download = spec.allow_download and not _offline()
    if hf_hub:
        from huggingface_hub import hf_hub_download

        model_id, filename = os.path.split(hf_hub)
        filename = filename or "open_clip_pytorch_model.bin"
        candidates = [filename]
        if filename.endswith((".bin", ".pth")):
            candidates.insert(0, filename[:-4] + ".safetensors")
        for name in candidates:
            try:
                return hf_hub_download(model_id, name, cache_dir=spec.cache_dir, local_files_only=True), cfg
            except Exception:  # noqa: BLE001 -- not cached under this name; try the next
                pass
        if may_download and _network_reachable("huggingface.co"):
            last: Exception | None = None
            for name in candidates:
                try:
                    return hf_hub_download(model_id, name, cache_dir=spec.cache_dir, etag_timeout=10), cfg
                except Exception as e:  # noqa: BLE001
                    last = e
            raise Unavailable(
                f"CLIP {spec.label}: download of {model_id} failed: {last}", detail={"encoder": spec.label}
            )
        why = "downloads disabled" if not may_download else "huggingface.co unreachable"
        raise Unavailable(
            f"CLIP {spec.label}: weights for tag {spec.pretrained!r} are not in the cache ({model_id}) "
            f"and {why}; give a local checkpoint path instead",
            detail={"encoder": spec.label, "hf_hub": model_id, "reason": "weights_missing"},
        )
    if url:
        cache_dir = spec.cache_dir or os.path.expanduser("~/.cache/clip")
        target = os.path.join(cache_dir, os.path.basename(url))
        if os.path.isfile(target):
            return target, cfg
        host = url.split("/")[2]
        if may_download and _network_reachable(host):
            from open_clip.pretrained import download_pretrained_from_url

            return download_pretrained_from_url(url, cache_dir=cache_dir), cfg
        raise Unavailable(
            f"CLIP {spec.label}: weights for tag {spec.pretrained!r} are not cached at {target} and cannot be downloaded",
            detail={"encoder": spec.label, "reason": "weights_missing"},
        )
    raise Unavailable(f"CLIP {spec.label}: tag {spec.pretrained!r} names no weights source", detail={"encoder": spec.label})


def _file_identity(path: str) -> str:
    st = os.stat(path)
    return f"{os.path.abspath(path)}:{st.st_size}:{int(st.st_mtime)}"


_CONFIG_LOCK = threading.Lock()


def _register_model_config(name: str, config: dict[str, Any]) -> None:
    """Register an open_clip architecture under ``name`` (open_clip reads configs from files)."""
    import models.torchvision_compat  # noqa: F401
    import open_clip
    import tempfile

    with _CONFIG_LOCK:
        existing = open_clip.get_model_config(name)
        if existing is not None and existing == config:
            return
        d = Path(tempfile.mkdtemp(prefix="vislex-openclip-cfg-"))
        (d / f"{name}.json").write_text(json.dumps(config))
        open_clip.add_model_config(d)


class ClipEncoder:
    """A loaded CLIP: batched text and image encoding into unit rows (methods.md, WALIP step 1)."""

    def __init__(self, spec: ClipSpec, model: Any, tokenizer: Any, preprocess: Any, device: str, precision: str,
                 identity: str):
        self.spec = spec
        self.model = model
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.device = device
        self.precision = precision
        self.identity = identity
        self.languages = spec.languages
        self._lock = threading.Lock()

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def embed_dim(self) -> int:
        proj = getattr(self.model, "text_projection", None)
        if proj is not None and hasattr(proj, "shape"):
            return int(proj.shape[-1])
        return int(self.encode_text(["x"]).shape[1])

    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Embed ``texts`` with the text tower; float32 (n, D), unit rows."""
        import torch

        texts = list(texts)
        if not texts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        out = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                tokens = self.tokenizer(texts[start:start + batch_size]).to(self.device)
                emb = encode_text_trimmed(self.model, tokens).float()
                out.append(torch.nn.functional.normalize(emb, dim=-1).cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    def encode_images(self, images: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        """Embed PIL images or image paths with the image tower; float32 (n, D), unit rows.

        An unreadable path raises InvalidInput; ``services.vision.images`` skips and counts
        them instead when embedding a whole folder.
        """
        import torch
        from PIL import Image

        images = list(images)
        if not images:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        cast = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision.replace("pure_", ""), torch.float32)
        out = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(images), batch_size):
                batch = []
                for item in images[start:start + batch_size]:
                    if isinstance(item, (str, os.PathLike)):
                        try:
                            with Image.open(item) as im:
                                item = im.convert("RGB")
                        except Exception as e:  # noqa: BLE001
                            raise InvalidInput(f"cannot read image {item}: {e}", detail={"path": str(item)}) from e
                    elif item.mode != "RGB":
                        item = item.convert("RGB")
                    batch.append(self.preprocess(item))
                pixels = torch.stack(batch).to(self.device, dtype=cast)
                emb = self.model.encode_image(pixels).float()
                out.append(torch.nn.functional.normalize(emb, dim=-1).cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)


def load_clip(spec: ClipSpec) -> ClipEncoder:
    """Load the CLIP described by ``spec``; missing weights raise Unavailable with the reason.

    A ``checkpoint`` written by ``vislex clip train`` (models/compact_clip.py) loads as a compact
    CLIP -- its towers and heads -- whatever ``model`` says: a trained checkpoint is a CLIP everywhere.
    """
    if spec.checkpoint:
        from models.compact_clip import is_compact_checkpoint, load_compact_clip

        if is_compact_checkpoint(spec.checkpoint):
            from models.compact_clip import CheckpointError

            try:
                return load_compact_clip(spec.checkpoint, spec=spec, mobilenet_dir=spec.mobilenet_dir,
                                         label=spec.name or f"compact:{Path(spec.checkpoint).name}")
            except CheckpointError as e:
                raise Unavailable(f"CLIP {spec.label}: {e.message}",
                                  detail={"encoder": spec.label, "reason": "load_failed"}) from e
    import models.torchvision_compat  # noqa: F401  (must precede open_clip)
    import open_clip

    if spec.model_config is not None:
        _register_model_config(spec.model, spec.model_config)
    device = resolve_device(spec.device)
    precision = resolve_precision(spec.dtype, device)
    kwargs: dict[str, Any] = {}
    is_schema = spec.model.startswith(("hf-hub:", "local-dir:"))
    if not is_schema and open_clip.get_model_config(spec.model) is None:
        raise Unavailable(
            f"CLIP {spec.label}: unknown open_clip architecture {spec.model!r}",
            detail={"encoder": spec.label, "reason": "unknown_model"},
        )
    if spec.checkpoint:
        if not os.path.isfile(spec.checkpoint):
            raise Unavailable(
                f"CLIP {spec.label}: checkpoint file {spec.checkpoint} does not exist",
                detail={"encoder": spec.label, "reason": "weights_missing", "path": spec.checkpoint},
            )
        weights, identity = spec.checkpoint, _file_identity(spec.checkpoint)
    elif spec.pretrained:
        weights, tag_cfg = _resolve_pretrained_tag(spec)
        identity = f"tag:{spec.pretrained}"
        kwargs["force_preprocess_cfg"] = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}
        if tag_cfg.get("quick_gelu"):
            kwargs["force_quick_gelu"] = True
    elif is_schema:
        if spec.model.startswith("hf-hub:") and (_offline() or not spec.allow_download):
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        weights, identity = None, "schema"
    else:
        raise Unavailable(
            f"CLIP {spec.label}: neither a pretrained tag nor a checkpoint is configured",
            detail={"encoder": spec.label, "reason": "weights_missing"},
        )
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            spec.model, pretrained=weights, precision=precision, device=device, cache_dir=spec.cache_dir, **kwargs
        )
        tokenizer = open_clip.get_tokenizer(spec.model)
    except Unavailable:
        raise
    except Exception as e:  # noqa: BLE001 -- corrupt or mismatched weights: report, never crash
        raise Unavailable(
            f"CLIP {spec.label}: loading failed: {type(e).__name__}: {e}",
            detail={"encoder": spec.label, "reason": "load_failed"},
        ) from e
    model.eval()
    cfg_text = json.dumps(spec.model_config or open_clip.get_model_config(spec.model) or {}, sort_keys=True, default=str)
    ident = hashlib.sha256(f"{spec.model}|{identity}|{precision}|{cfg_text}".encode()).hexdigest()[:16]
    return ClipEncoder(spec, model, tokenizer, preprocess, device, precision, ident)


# ---------------------------------------------------------------- prompt ensembles


def default_prompts() -> dict[str, list[str]]:
    """The shipped prompt templates per language (models/prompts.json)."""
    return json.loads(_PROMPTS_PATH.read_text(encoding="utf-8"))["templates"]


def prompt_templates(lang: str, templates: dict[str, list[str]] | list[str] | None = None) -> list[str]:
    """Templates for ``lang``: an explicit list, a per-language mapping, or the shipped ones."""
    if isinstance(templates, list):
        chosen = templates
    else:
        table = templates if templates is not None else default_prompts()
        if lang not in table:
            raise InvalidInput(f"no prompt templates for language {lang!r}", detail={"known": sorted(table)})
        chosen = table[lang]
    if not chosen or any("{}" not in t for t in chosen):
        raise InvalidInput("prompt templates must be non-empty and each contain '{}'", detail={"templates": chosen})
    return list(chosen)


def embed_words(tower: TextTower, words: Sequence[str], lang: str,
                templates: dict[str, list[str]] | list[str] | None = None, batch_size: int = 256) -> np.ndarray:
    """Prompt-ensemble word embeddings: normalised mean over templates (methods.md, WALIP step 1)."""
    temps = prompt_templates(lang, templates)
    words = list(words)
    if not words:
        return np.zeros((0, 0), dtype=np.float32)
    # template-major order keeps each template's prompts contiguous: mean over a reshape, no loop
    prompts = [t.format(w) for t in temps for w in words]
    emb = np.asarray(tower.encode_text(prompts, batch_size=batch_size), dtype=np.float32)
    mean = emb.reshape(len(temps), len(words), -1).mean(axis=0)
    norms = np.linalg.norm(mean, axis=1, keepdims=True)
    return (mean / np.maximum(norms, 1e-12)).astype(np.float32)


# ---------------------------------------------------------------- pluggable text towers

TOWER_KINDS = ("uclip",)


@dataclass(frozen=True)
class TowerSpec:
    """A text tower from configuration, for a language without a CLIP of its own.

    ``kind="uclip"``: uCLIP heads (``heads``: checkpoint path) over a multilingual text
    encoder (``text_encoder``: name or path; default the one recorded in the checkpoint).
    Words are embedded as f_M(multilingual(prompt)) and the image set as f_C(CLIP image) with
    the ``base`` language's CLIP (methods.md, uCLIP inference; WALIP step 1).
    """

    kind: str = "uclip"
    heads: str | None = None
    text_encoder: str | None = None
    base: str = "en"
    device: str = "cpu"
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or f"{self.kind}:{Path(self.heads).name if self.heads else 'no-heads'}"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TowerSpec:
        d = dict(d)
        if "tower" in d:  # {"tower": "uclip", ...} reads naturally in a per-language config
            d.setdefault("kind", d.pop("tower"))
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise InvalidInput(f"unknown text-tower keys: {unknown}", detail={"known": sorted(known)})
        if d.get("kind", "uclip") not in TOWER_KINDS:
            raise InvalidInput(f"unknown text-tower kind {d.get('kind')!r}", detail={"known": list(TOWER_KINDS)})
        return cls(**d)


def build_tower(spec: TowerSpec, lang: str | None = None) -> TextTower:
    """Load the tower a :class:`TowerSpec` names; Unavailable (with the reason) when it cannot."""
    if spec.kind != "uclip":
        raise InvalidInput(f"unknown text-tower kind {spec.kind!r}", detail={"known": list(TOWER_KINDS)})
    if not spec.heads:
        raise Unavailable(f"text tower {spec.label}: no uCLIP heads checkpoint configured",
                          detail={"encoder": spec.label, "reason": "weights_missing"})
    from models.uclip import CheckpointError, UclipTextTower

    try:
        tower = UclipTextTower.from_checkpoint(spec.heads, spec.text_encoder, device=spec.device, label=spec.label)
    except Unavailable:
        raise
    except (CheckpointError, ValueError, OSError) as e:
        raise Unavailable(f"text tower {spec.label}: {e}",
                          detail={"encoder": spec.label, "reason": "load_failed", "path": spec.heads}) from e
    langs = tower.languages
    if lang is not None and langs and "*" not in langs and lang not in langs:
        raise Unavailable(f"text tower {spec.label}: text encoder {getattr(tower.text_encoder, 'name', '?')} "
                          f"does not support {lang!r}",
                          detail={"encoder": spec.label, "reason": "unsupported_language", "supported": list(langs)})
    return tower


# ---------------------------------------------------------------- per-language pool


@dataclass
class LanguageEncoders:
    """What WALIP step 1 needs for one language: a text tower and the image encoder of its space."""

    lang: str
    text: TextTower
    image: ClipEncoder
    source: str  # label of the CLIP (or tower) serving this language
    reused_from: str | None = None

    @property
    def identity(self) -> str:
        tower_id = getattr(self.text, "identity", type(self.text).__name__)
        return f"{self.image.identity}:{tower_id}"


@dataclass
class ClipPool:
    """CLIP encoders per language, loaded lazily, with per-encoder availability and reasons.

    ``reuse`` maps a language without its own CLIP to the language whose CLIP text tower it
    borrows (fine for related scripts; fails for en->ru per the WALIP paper). ``towers``
    holds pluggable text towers (e.g. uCLIP heads) as ``lang -> (tower, base language)``, or
    as a :class:`TowerSpec` (or its dict) loaded on first use. The image side is the base
    language's CLIP image tower, passed through ``tower.image_encoder(clip)`` when the tower
    has one (uCLIP: f_C), so words and images meet in the tower's space.
    """

    specs: list[ClipSpec] = field(default_factory=list)
    reuse: dict[str, str] = field(default_factory=dict)
    towers: dict[str, Any] = field(default_factory=dict)
    _loaded: dict[str, ClipEncoder] = field(default_factory=dict)
    _errors: dict[str, Unavailable] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def spec_for(self, lang: str) -> ClipSpec | None:
        for spec in self.specs:
            if lang in spec.languages:
                return spec
        return None

    def languages(self) -> list[str]:
        langs = {lang for s in self.specs for lang in s.languages} | set(self.reuse) | set(self.towers)
        return sorted(langs)

    def encoder(self, spec: ClipSpec) -> ClipEncoder:
        """The loaded encoder of ``spec`` (loaded once; a failure is remembered and re-raised)."""
        with self._lock:
            if spec.label in self._loaded:
                return self._loaded[spec.label]
            if spec.label in self._errors:
                raise self._errors[spec.label]
            try:
                enc = load_clip(spec)
            except Unavailable as e:
                self._errors[spec.label] = e
                raise
            self._loaded[spec.label] = enc
            return enc

    def load_all(self) -> dict[str, dict[str, Any]]:
        """Try every configured encoder now (startup); returns :meth:`status`."""
        for spec in self.specs:
            try:
                self.encoder(spec)
            except Unavailable:
                pass
        for lang in list(self.towers):
            try:
                self.tower(lang)
            except Unavailable:
                pass
        return self.status()

    def retry(self) -> None:
        """Forget remembered failures so the next use tries loading again."""
        with self._lock:
            self._errors.clear()

    def tower(self, lang: str) -> tuple[TextTower, str]:
        """(tower, base language) of ``lang``'s slot, building a configured one once."""
        entry = self.towers[lang]
        if isinstance(entry, tuple):
            return entry
        spec = entry if isinstance(entry, TowerSpec) else TowerSpec.from_dict(entry)
        key = f"tower:{lang}"
        with self._lock:
            if isinstance(self.towers[lang], tuple):
                return self.towers[lang]
            if key in self._errors:
                raise self._errors[key]
            try:
                tower = build_tower(spec, lang)
            except Unavailable as e:
                self._errors[key] = e
                raise
            self.towers[lang] = (tower, spec.base)
            return self.towers[lang]

    def for_language(self, lang: str) -> LanguageEncoders:
        """Text tower + image encoder for ``lang``; Unavailable says which encoder is missing and why."""
        if lang in self.towers:
            tower, base = self.tower(lang)
            base_enc = self.for_language(base)
            image = base_enc.image
            wrap = getattr(tower, "image_encoder", None)
            if callable(wrap):
                try:
                    image = wrap(base_enc.image)
                except ValueError as e:
                    raise Unavailable(f"text tower for {lang!r} does not fit the {base!r} CLIP: {e}",
                                      detail={"language": lang, "base": base, "reason": "dimension_mismatch"}) from e
            return LanguageEncoders(lang, tower, image, getattr(tower, "label", type(tower).__name__), base)
        spec = self.spec_for(lang)
        reused = None
        if spec is None and lang in self.reuse:
            reused = self.reuse[lang]
            spec = self.spec_for(reused)
        if spec is None:
            raise Unavailable(
                f"no CLIP encoder configured for language {lang!r}",
                detail={"language": lang, "configured": self.languages(), "reason": "not_configured"},
            )
        enc = self.encoder(spec)
        return LanguageEncoders(lang, enc, enc, spec.label, reused)

    def status(self) -> dict[str, dict[str, Any]]:
        """Per encoder: languages, available, reason (for /readyz and /v1/system)."""
        out: dict[str, dict[str, Any]] = {}
        for spec in self.specs:
            err = self._errors.get(spec.label)
            enc = self._loaded.get(spec.label)
            out[spec.label] = {
                "languages": list(spec.languages),
                "available": enc is not None,
                "loaded": enc is not None,
                "reason": err.message if err else (None if enc else "not loaded yet"),
                "device": enc.device if enc else None,
                "precision": enc.precision if enc else None,
            }
            if enc is not None and hasattr(enc, "describe"):  # a compact CLIP: its towers and where it came from
                out[spec.label]["model"] = {**enc.describe(), "checkpoint": Path(spec.checkpoint).name
                                            if spec.checkpoint else None}
        for lang, base in self.reuse.items():
            out[f"reuse:{lang}"] = {"languages": [lang], "reuses": base, "available": None, "reason": None}
        for lang, entry in self.towers.items():
            if isinstance(entry, tuple):
                out[f"tower:{lang}"] = {"languages": [lang], "base": entry[1], "available": True, "reason": None}
                continue
            spec = entry if isinstance(entry, TowerSpec) else TowerSpec.from_dict(entry)
            err = self._errors.get(f"tower:{lang}")
            out[f"tower:{lang}"] = {"languages": [lang], "base": spec.base, "kind": spec.kind,
                                    "available": False if err else None,
                                    "reason": err.message if err else "not loaded yet"}
        return out
