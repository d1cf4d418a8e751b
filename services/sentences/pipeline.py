"""A whole Globetrotter training run from files (the CLI and the HTTP job share it).

Params: ``images_dir``; ``captions`` {lang: TSV of ``image<TAB>caption``} (photo sets disjoint across
languages); ``image_tower`` (models/image_towers.py, e.g. ``mobilenet-v1``); ``text_towers`` {lang or
"*": tower name} -- ``{"*": "use-multilingual"}`` (one multilingual tower, the practical default) or
``{"en": "static:/v/en.npy", "de": "static:/v/de.npy"}`` (a monolingual tower per language, the paper's
setting); optional ``dev`` {lang: parallel file} for model selection (never test files); ``config``
(services/sentences/training.py). Tower outputs are cached under ``cache_dir``; the checkpoint is written to
``out_dir`` as ``globetrotter-<version>.pt`` (version = content hash), and with ``activate`` becomes the
sentence model of ``data_dir`` (services already serving pick it up within a second).
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from services.errors import InvalidInput

Progress = Callable[[str, int, int, dict | None], None]
_LANG = re.compile(r"^[a-z]{2,3}(-[A-Za-z]{2,4})?$")


def _lang_map(value: Any, field: str, allow_any: bool = False) -> dict[str, str]:
    if not isinstance(value, dict) or not value:
        raise InvalidInput(f"{field} must map languages to files or names", detail={"field": field})
    out = {}
    for lang, item in value.items():
        if not (isinstance(lang, str) and (_LANG.match(lang) or (allow_any and lang == "*"))):
            raise InvalidInput(f"{field}: {lang!r} is not a language code", detail={"field": f"{field}.{lang}"})
        if not isinstance(item, str) or not item.strip():
            raise InvalidInput(f"{field}.{lang} must be a non-empty string", detail={"field": f"{field}.{lang}"})
        out[lang] = item.strip()
    return out


def validate_params(params: dict[str, Any]) -> dict[str, Any]:
    """Normalised params (the content address of a job); InvalidInput naming the field otherwise."""
    from services.sentences.training import GlobetrotterTrainConfig, tower_setting

    p = dict(params)
    for key in ("images_dir", "image_tower"):
        if not isinstance(p.get(key), str) or not p[key].strip():
            raise InvalidInput(f"{key} is required", detail={"field": key})
    p["captions"] = _lang_map(p.get("captions"), "captions")
    towers = p.get("text_towers") or {"*": "use-multilingual"}
    if isinstance(towers, str):
        towers = {"*": towers}
    p["text_towers"] = _lang_map(towers, "text_towers", allow_any=True)
    uncovered = [lang for lang in p["captions"] if lang not in p["text_towers"] and "*" not in p["text_towers"]]
    if uncovered:
        raise InvalidInput(f"no text tower for the {', '.join(uncovered)} captions", detail={"field": "text_towers",
                                                                                             "languages": uncovered})
    extra = sorted(set(p["text_towers"]) - set(p["captions"]) - {"*"})
    if extra:
        raise InvalidInput(f"text towers for languages without captions: {extra}", detail={"field": "text_towers"})
    if p.get("dev"):
        p["dev"] = _lang_map(p["dev"], "dev")
        if len(p["dev"]) < 2:
            raise InvalidInput("dev needs parallel files in at least two languages", detail={"field": "dev"})
        missing = [lang for lang in p["dev"] if lang not in p["text_towers"] and "*" not in p["text_towers"]]
        if missing:
            raise InvalidInput(f"dev languages without a text tower: {missing}", detail={"field": "dev"})
    else:
        p["dev"] = None
    # defaults by the tower setting (one multilingual tower or one per language: training.TOWER_DEFAULTS), filled in
    # here so the content address holds the whole config: a default given explicitly is the same job
    towers = tower_setting(p["text_towers"], p["captions"])
    p["config"] = asdict(GlobetrotterTrainConfig.from_dict(p.get("config"), towers=towers))
    p["activate"] = bool(p.get("activate", False))
    return p


def _key_of(towers: dict[str, str], lang: str) -> str:
    return lang if lang in towers else "*"


def run_globetrotter_training(params: dict[str, Any], progress: Progress | None = None) -> dict[str, Any]:
    """Load, encode (cached), train, write the versioned checkpoint; the result (JSON-able)."""
    from models.globetrotter import model_version, save_checkpoint
    from models.image_towers import load_image_tower
    from models.text_towers import load_text_tower
    from services.clip.features import image_features, text_features
    from services.sentences.data import load_multilingual, split_by_language, tower_features
    from services.sentences.evaluation import read_parallel
    from services.sentences.training import GlobetrotterTrainConfig, train_globetrotter

    p = validate_params(params)
    config = GlobetrotterTrainConfig.from_dict(p["config"])
    cache_dir = p.get("cache_dir")
    t_start = time.perf_counter()
    data = load_multilingual(p["images_dir"], p["captions"])
    train_idx, val_idx = split_by_language(data, config.val_fraction if not p["dev"] else 0.0, config.seed)
    image_tower = load_image_tower(p["image_tower"], mobilenet_dir=p.get("mobilenet_dir"))
    img, _ = image_features(image_tower, data.images_dir, data.images, cache_dir=cache_dir, progress=progress)
    towers: dict[str, Any] = {}
    for key, name in p["text_towers"].items():
        tower = load_text_tower(name, language=None if key == "*" else key)
        if hasattr(tower, "fit_idf"):  # IDF from this language's training captions only
            li = data.langs.index(key) if key in data.langs else None
            picked = np.isin(data.owner, train_idx) & ((data.lang_of == li) if li is not None else True)
            tower.fit_idf([data.captions[j] for j in np.flatnonzero(picked)])
        towers[key] = tower
    feats, rows = tower_features(data, towers, cache_dir=cache_dir, progress=progress)
    keys = {lang: _key_of(p["text_towers"], lang) for lang in data.langs}
    dev = None
    if p["dev"]:
        texts = read_parallel(p["dev"])
        dev = {lang: text_features(towers[_key_of(p["text_towers"], lang)], lines, cache_dir=cache_dir)[0]
               for lang, lines in texts.items()}
        keys.update({lang: _key_of(p["text_towers"], lang) for lang in texts})
    t_train = time.perf_counter()
    heads, history, best = train_globetrotter(img, feats, data.owner, data.lang_of, rows, data.langs, keys,
                                              train_idx, val_idx, config, dev=dev, progress=progress)
    train_s = time.perf_counter() - t_train
    meta = {"trained_at": time.time(), "data": {"images": len(data.images), "captions": len(data.captions),
                                                "languages": data.summary(), "train_images": int(len(train_idx)),
                                                "val_images": int(len(val_idx))},
            "config": asdict(config), "dev": {k: v for k, v in best.items() if k != "seconds"},
            "dev_languages": sorted(dev) if dev else None}
    out_dir = Path(p.get("out_dir") or ".")
    tmp = save_checkpoint(out_dir / f".globetrotter-{time.time_ns()}.pt", heads, image_tower=p["image_tower"],
                          text_towers={k: p["text_towers"].get(k, p["text_towers"].get("*")) for k in heads.config.text_dims},
                          text_states={k: t.state() for k, t in towers.items() if hasattr(t, "state")}, meta=meta)
    version = model_version(tmp)
    ckpt = tmp.with_name(f"globetrotter-{version}.pt")
    tmp.replace(ckpt)
    activated = False
    if p["activate"] and p.get("data_dir"):
        from services.sentences.models import ModelSpec
        from services.sentences.service import write_pointer

        write_pointer(Path(p["data_dir"]), ModelSpec("checkpoint", str(ckpt.resolve())))
        activated = True
    return {"checkpoint": str(ckpt), "version": version, "languages": sorted(set(data.langs) | set(dev or {})),
            "text_towers": {k: p["text_towers"].get(k, p["text_towers"].get("*")) for k in heads.config.text_dims}, "image_tower": p["image_tower"], "activated": activated,
            "metrics": {"best": {k: v for k, v in best.items() if k != "seconds"}, "epochs_run": len(history) - (
                1 if history and history[0]["epoch"] == 0 else 0)},
            "history": history, "data": meta["data"],
            "seconds": {"total": round(time.perf_counter() - t_start, 2), "train": round(train_s, 2)}}
