"""Training a compact CLIP: heads over cached tower outputs, symmetric InfoNCE, early stopping.

The recipe (LiT, Zhai et al. 2022, section 3, with both towers locked; CLIP's loss and learned
temperature, Radford et al. 2021, section 2.3): every epoch visits each training photo once, in
batches of ``batch_size`` photos, each with *one* of its captions drawn at random -- so a batch
never holds two captions of one photo (no false negatives) and all five captions of a Flickr
photo are seen over the epochs. AdamW, cosine learning rate, validation recall after every
epoch on a seeded image-level split carved from the training photos, and the best epoch's heads
are kept (early stopping with ``patience``). Deterministic for a seed on one device.

When the captions' languages are known (``languages``: one code per caption), two more options:
``centring="language"`` subtracts each language's mean tower output (estimated on the *training*
photos' captions) before the text head and stores the means in the checkpoint
(models.compact_clip.TextCentres; Libovický et al. 2020); ``caption_weights="language"`` gives each
language of a photo equal weight in the loss (a photo's 5 English and 1 German caption: 1/5 each and
1), instead of each caption equal weight (``"language-sqrt"``: halfway, weight 1/sqrt(count)). The
validation report then also has text->image recall per language (``val_by_language``).
``centring="language-coral"`` / ``"language-map"`` add a per-language linear map after the centring
(fitted on the training photos' captions, stored with the centres), and ``captions="per-language"``
takes one caption per language per photo per step (services/clip/languages.py). With
``map_target="translation"`` (the default) a language that has more ``parallel`` pairs (below) than
dimensions takes the ``language-map`` map fitted on them (each of its captions onto its source caption);
the other languages -- all of them when no pairs are given, as in a run from files -- the map onto their
photos' mean pivot-language row. The result's ``map_sources`` says which each language got. With
``map_pairs="photos+text"`` the pair maps are also fitted on the text-only pairs of ``parallel`` (owner -1:
translations whose photo is not in the set, e.g. Multi30K lines of photos we do not have); they fit the maps only.

``parallel`` (optional): translation pairs of captions of the training photos (an English caption and
its German translation, as Multi30K has them); with ``parallel_weight`` > 0 each step adds that weight
times a symmetric InfoNCE between the text head's embeddings of the two sides of a batch of pairs --
translations are pulled together in the CLIP space, the other pairs of the batch pushed apart
(multilingual distillation in the spirit of Reimers & Gurevych 2020, with the head as the student).
Pairs of validation photos are never used.

:func:`run_clip_training` is the whole run from files (the CLI and the HTTP job share it);
:func:`train_heads` is the pure part (arrays in, heads out). The options and their validation
(:class:`ClipTrainConfig`, :func:`validate_train_params`) live in services/clip/training_options.py and are
re-exported here.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from models.clip_heads import ClipHeads, HeadConfig, clip_loss, multi_positive_loss, project
from models.compact_clip import TextCentres, save_checkpoint
from services.clip.data import load_captioned_set, split_images
from services.clip.evaluation import mean_recall, retrieval_recall
from services.clip.languages import fit_language_maps, fit_pair_maps, one_caption_per_language, pivot_language
from services.clip.features import image_features, text_features
from services.clip.training_options import (CAPTION_WEIGHTS, CAPTIONS, CENTRING,  # noqa: F401 -- re-exported
                                            ClipTrainConfig, resolved_map_ridge, validate_train_params)
from services.errors import InvalidInput

Progress = Callable[[str, int, int, dict | None], None]


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _caption_table(owner: np.ndarray, n_images: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, start, count): captions of image i are order[start[i] : start[i] + count[i]]."""
    order = np.argsort(owner, kind="stable")
    count = np.bincount(owner, minlength=n_images)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    return order, start, count


def language_weights(owner: np.ndarray, languages: np.ndarray) -> np.ndarray:
    """Per caption: 1 / (number of captions of its photo in its language), so every language of a photo
    weighs 1 in all."""
    codes = np.unique(languages, return_inverse=True)[1].reshape(-1)
    key = np.asarray(owner, dtype=np.int64) * (int(codes.max()) + 1) + codes
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    return (1.0 / counts[inverse.reshape(-1)]).astype(np.float32)


def _languages_array(languages: Any, n: int) -> np.ndarray | None:
    if languages is None:
        return None
    out = np.asarray(["" if l is None else str(l) for l in languages], dtype=object)
    if len(out) != n:
        raise InvalidInput(f"{len(out)} caption languages for {n} captions", detail={"field": "languages"})
    return out


def train_heads(image_feats: np.ndarray, text_feats: np.ndarray, owner: np.ndarray, train_images: np.ndarray,
                val_images: np.ndarray, config: ClipTrainConfig, progress: Progress | None = None,
                languages: Any = None, parallel: dict[str, Any] | None = None
                ) -> tuple[ClipHeads, list[dict[str, Any]], dict[str, Any]]:
    """Train heads; returns (best heads, per-epoch history, best validation metrics).

    ``owner[j]`` is caption j's image (row of ``image_feats``); photos in ``val_images`` and their
    captions are only used for validation recall. ``languages`` (optional): caption j's language code
    (None or "" = unknown); with it, ``config.centring`` and ``config.caption_weights`` apply and the
    result has ``val_by_language``; with centring the result's ``text_centres`` is the
    :class:`TextCentres` the heads were trained behind (None otherwise) -- save it with them.
    ``parallel``: ``{"src": rows, "tgt": rows, "owner": photo of each pair, "src_lang": codes, "tgt_lang":
    codes}`` -- tower rows of translation pairs (used with ``config.parallel_weight`` > 0 and by
    ``config.map_target="translation"``; pairs whose photo is not a training photo are dropped, except pairs of no
    photo, owner -1, which ``config.map_pairs="photos+text"`` fits the maps on). The result's
    ``map_sources``: each mapped language's map fitted on "photo" or "translation" targets.
    """
    owner = np.asarray(owner, dtype=np.int64)
    train_images = np.asarray(train_images, dtype=np.int64)
    if len(train_images) < 2:
        raise InvalidInput("training needs at least 2 captioned photos", detail={"images": int(len(train_images))})
    langs = _languages_array(languages, len(owner))
    centres, map_sources = None, {}
    if config.centring != "none" and langs is not None:
        is_train = np.zeros(len(image_feats), dtype=bool)
        is_train[train_images] = True
        rows = np.flatnonzero(is_train[owner] & (langs != ""))
        centres = TextCentres.fit(np.asarray(text_feats)[rows], langs[rows].tolist())
        if centres is not None and config.centring != "language":  # per-language maps on the centred training rows
            maps = fit_language_maps(centres.apply(np.asarray(text_feats)[rows], langs[rows].tolist()), owner[rows],
                                     langs[rows], config.centring.split("-", 1)[1],
                                     ridge=resolved_map_ridge(config, text_only_pairs=False))
            map_sources = dict.fromkeys(maps, "photo")
            if config.centring == "language-map" and config.map_target == "translation" and parallel is not None:
                text_only = config.map_pairs == "photos+text"
                with_text = text_only and bool(np.any(np.asarray(parallel["owner"]) == -1))
                pair_maps = _pair_maps(centres, parallel, train_images, resolved_map_ridge(config, with_text),
                                       pivot_language(langs[rows]), text_only=text_only)
                maps.update(pair_maps)  # a language with enough translation pairs takes its pair map
                map_sources.update(dict.fromkeys(pair_maps, "translation"))
            centres = TextCentres({l: centres.means[i] for i, l in enumerate(centres.languages)}, maps)
        if centres is not None:  # known languages take their mean, unknown ones the nearest (as at query time)
            text_feats = centres.apply(text_feats, [l or None for l in langs.tolist()])
    weights = None
    if config.caption_weights != "uniform" and langs is not None:
        weights = language_weights(owner, langs)
        if config.caption_weights == "language-sqrt":
            weights = np.sqrt(weights)
    P_src = P_tgt = None
    if parallel is not None and config.parallel_weight > 0:
        keep = np.isin(np.asarray(parallel["owner"], dtype=np.int64), train_images)
        src, tgt = np.asarray(parallel["src"])[keep], np.asarray(parallel["tgt"])[keep]
        if centres is not None:
            src = centres.apply(src, list(np.asarray(parallel["src_lang"], dtype=object)[keep]))
            tgt = centres.apply(tgt, list(np.asarray(parallel["tgt_lang"], dtype=object)[keep]))
        if len(src) >= 2:
            P_src = torch.as_tensor(np.asarray(src, dtype=np.float32), device=_device(config.device))
            P_tgt = torch.as_tensor(np.asarray(tgt, dtype=np.float32), device=_device(config.device))
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = _device(config.device)
    heads = ClipHeads(HeadConfig(kind=config.head, image_dim=image_feats.shape[1], text_dim=text_feats.shape[1],
                                 embed_dim=config.embed_dim, hidden_dim=config.hidden_dim,
                                 dropout=config.dropout)).to(device)
    X_img = torch.as_tensor(np.asarray(image_feats, dtype=np.float32), device=device)
    X_txt = torch.as_tensor(np.asarray(text_feats, dtype=np.float32), device=device)
    W = torch.as_tensor(weights, device=device) if weights is not None else None
    order, start, count = _caption_table(owner, len(image_feats))
    if np.any(count[train_images] == 0):
        raise InvalidInput("every training photo needs at least one caption")
    val = _val_set(owner, val_images, len(image_feats))
    codes = np.unique(langs, return_inverse=True)[1].reshape(-1) if langs is not None else np.zeros(len(owner), np.int64)
    sample = (lambda cap_owner, caps: one_caption_per_language(cap_owner, codes[caps], rng)) \
        if config.captions == "per-language" else None
    batch = min(config.batch_size, len(train_images))
    steps_per_epoch = max(1, len(train_images) // batch)  # drop the ragged tail: equal-size contrastive batches
    total_steps = steps_per_epoch * config.epochs
    opt = torch.optim.AdamW(heads.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / steps_per_epoch) * 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
    history: list[dict[str, Any]] = []
    best_state, best_score, best_metrics, stale = None, -1.0, {}, 0
    for epoch in range(1, config.epochs + 1):
        heads.train()
        perm = rng.permutation(train_images)
        # one random caption per photo this epoch, vectorised (weighted: every language of a photo equally likely)
        if weights is None:
            pick = order[start[perm] + np.floor(rng.random(len(perm)) * count[perm]).astype(np.int64)]
        else:
            pick = _weighted_pick(perm, order, start, count, weights, rng)
        t0, losses = time.perf_counter(), []
        for s in range(steps_per_epoch):
            idx_i = torch.as_tensor(perm[s * batch:(s + 1) * batch], device=device)
            if config.captions != "one":
                loss = _all_captions_loss(heads, X_img, X_txt, perm[s * batch:(s + 1) * batch], order, start, count,
                                          device, W, sample)
            else:
                idx_t = torch.as_tensor(pick[s * batch:(s + 1) * batch], device=device)
                loss = clip_loss(heads.embed_images(X_img[idx_i]), heads.embed_texts(X_txt[idx_t]), heads.logit_scale)
            if P_src is not None:
                sel = torch.as_tensor(rng.choice(len(P_src), size=min(batch, len(P_src)), replace=False), device=device)
                loss = loss + config.parallel_weight * clip_loss(heads.embed_texts(P_src[sel]),
                                                                 heads.embed_texts(P_tgt[sel]), heads.logit_scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        heads.eval()
        record: dict[str, Any] = {"epoch": epoch, "loss": round(float(np.mean(losses)), 5),
                                  "temperature": round(float(1 / heads.logit_scale.detach().exp().clamp(max=100)), 5),
                                  "seconds": round(time.perf_counter() - t0, 3)}
        if val is not None:
            metrics = evaluate_heads(heads, image_feats, text_feats, *val, device=str(device))
            score = mean_recall(metrics)
            record.update(val=metrics, val_mean_recall=round(score, 3))
        else:
            score = -record["loss"]
        history.append(record)
        if score > best_score:
            best_score, best_state, best_metrics, stale = score, copy.deepcopy(heads.state_dict()), record, 0
        else:
            stale += 1
        if progress:
            progress("train", epoch, config.epochs, {"loss": record["loss"], **({"val_mean_recall": record.get(
                "val_mean_recall"), "val_t2i_r@10": record["val"]["t2i"]["r@10"]} if val is not None else {})})
        if stale >= config.patience:
            break
    heads.load_state_dict(best_state)
    heads = heads.cpu().eval()
    best = {"epoch": best_metrics.get("epoch"), **({"val": best_metrics["val"]} if val is not None else {}),
            "text_centres": centres, "map_sources": map_sources}
    if val is not None and langs is not None:
        best["val_by_language"] = val_recall_by_language(heads, image_feats, text_feats, *val, langs)
    return heads, history, best


def _pair_maps(centres: TextCentres, parallel: dict[str, Any] | None, train_images: np.ndarray,
               ridge: float, centres_pivot: str, text_only: bool = False) -> dict[str, np.ndarray]:
    """``map_target="translation"``: each target language's ridge map fitted on the translation pairs of the
    training photos (both sides centred by their own language's mean); ``text_only`` (``map_pairs="photos+text"``):
    and on the pairs of no photo (owner -1). Pairs of any other photo (the validation photos) are never used."""
    pair_owner = np.asarray(parallel["owner"], dtype=np.int64)
    keep = np.isin(pair_owner, train_images) | (text_only & (pair_owner == -1))
    # a map pulls a language onto the pivot (the language with most captions): pairs from another source language,
    # or into the pivot itself, would map the wrong way
    src_langs = np.asarray(parallel["src_lang"], dtype=object)
    keep &= (src_langs == centres_pivot) & (np.asarray(parallel["tgt_lang"], dtype=object) != centres_pivot)
    src_lang = list(np.asarray(parallel["src_lang"], dtype=object)[keep])
    tgt_lang = np.asarray(parallel["tgt_lang"], dtype=object)[keep]
    src = centres.apply(np.asarray(parallel["src"])[keep], src_lang)
    tgt = centres.apply(np.asarray(parallel["tgt"])[keep], list(tgt_lang))
    return fit_pair_maps(tgt, src, tgt_lang, ridge)


def val_recall_by_language(heads: ClipHeads, image_feats: np.ndarray, text_feats: np.ndarray, images: np.ndarray,
                           captions: np.ndarray, caption_owner: np.ndarray, languages: np.ndarray
                           ) -> dict[str, dict[str, float]]:
    """Text->image R@k of each language's validation captions among all validation photos (text rows as
    trained: already centred)."""
    img = project(heads.embed_images, image_feats[images])
    txt = project(heads.embed_texts, np.asarray(text_feats)[captions])
    out = {}
    cap_langs = languages[captions]
    for lang in sorted(set(cap_langs.tolist()) - {""}):
        sel = np.flatnonzero(cap_langs == lang)
        out[lang] = {**retrieval_recall(img, txt[sel], caption_owner[sel])["t2i"], "captions": int(len(sel))}
    return out


def _weighted_pick(perm: np.ndarray, order: np.ndarray, start: np.ndarray, count: np.ndarray, weights: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """One caption per photo of ``perm``, drawn with probability proportional to ``weights`` (vectorised)."""
    cw = np.cumsum(weights[order].astype(np.float64))
    before = np.where(start > 0, cw[np.maximum(start - 1, 0)], 0.0)
    total = cw[start + count - 1] - before
    u = before[perm] + rng.random(len(perm)) * total[perm]
    pos = np.searchsorted(cw, u, side="right")
    return order[np.clip(pos, start[perm], start[perm] + count[perm] - 1)]


def _all_captions_loss(heads: ClipHeads, X_img: torch.Tensor, X_txt: torch.Tensor, photos: np.ndarray,
                       order: np.ndarray, start: np.ndarray, count: np.ndarray, device,
                       weights: torch.Tensor | None = None, sample: Callable | None = None) -> torch.Tensor:
    """Multi-positive loss over ``photos`` and every one of their captions (gathered without a loop); ``sample``
    (batch caption owners, caption rows) -> positions to keep (e.g. one caption per language)."""
    n = count[photos]
    owner = np.repeat(np.arange(len(photos)), n)
    offsets = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    caps = order[np.repeat(start[photos], n) + offsets]
    if sample is not None:
        keep = sample(owner, caps)
        owner, caps = owner[keep], caps[keep]
    captions = torch.as_tensor(caps, device=device)
    return multi_positive_loss(heads.embed_images(X_img[torch.as_tensor(photos, device=device)]),
                               heads.embed_texts(X_txt[captions]),
                               torch.as_tensor(owner, device=device), heads.logit_scale,
                               None if weights is None else weights[captions])


def _val_set(owner: np.ndarray, val_images: np.ndarray, n_images: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(val image rows, val caption rows, caption -> position in val image rows)."""
    val_images = np.asarray(val_images, dtype=np.int64)
    if len(val_images) == 0:
        return None
    pos = np.full(n_images, -1, dtype=np.int64)
    pos[val_images] = np.arange(len(val_images))
    caps = np.flatnonzero(pos[owner] >= 0)
    return val_images, caps, pos[owner[caps]]


def evaluate_heads(heads: ClipHeads, image_feats: np.ndarray, text_feats: np.ndarray, images: np.ndarray,
                   captions: np.ndarray, caption_owner: np.ndarray, device: str = "cpu") -> dict[str, dict[str, float]]:
    """Retrieval recall of ``heads`` on the given photos and captions (tower outputs in, percent out)."""
    was_training = heads.training
    heads.eval()
    img = project(heads.embed_images, image_feats[images], device=device)
    txt = project(heads.embed_texts, text_feats[captions], device=device)
    heads.train(was_training)
    return retrieval_recall(img, txt, caption_owner)


# ---------------------------------------------------------------- a whole run from files


def _load_captions(p: dict[str, Any]):
    """The captioned set and each caption's language ("" = unknown): ``captions`` (in ``captions_language``,
    when given) followed by every ``extra_captions`` file (language -> TSV)."""
    extra = p.get("extra_captions") or {}
    if not extra:
        data = load_captioned_set(p["images_dir"], p["captions"])
        return data, np.asarray([p.get("captions_language") or ""] * len(data.captions), dtype=object)
    from services.clip.data import read_caption_tsv

    pairs = read_caption_tsv(p["captions"])
    langs = [p.get("captions_language") or ""] * len(pairs)
    for lang, path in sorted(extra.items()):
        more = read_caption_tsv(path)
        pairs += more
        langs += [lang] * len(more)
    return load_captioned_set(p["images_dir"], pairs), np.asarray(langs, dtype=object)


def _check_translation_pivot(p: dict[str, Any], caption_langs: np.ndarray) -> None:
    """Translations map each language onto the captions' language, so that must be the pivot (most captions)."""
    if not p.get("translations"):
        return
    pivot = pivot_language(caption_langs[caption_langs != ""])
    if pivot != p["captions_language"]:
        raise InvalidInput(f"translations map each language onto the captions' language ({p['captions_language']}), "
                           f"which must then have the most captions; {pivot} has more",
                           detail={"field": "translations", "pivot": pivot})


def _translation_pairs(p: dict[str, Any], text_tower: Any, cache_dir: Any,
                       progress: Progress | None) -> dict[str, Any] | None:
    """``translations`` (language -> TSV of 'source<TAB>translation', the source in ``captions_language``) as
    text-only ``parallel`` pairs (owner -1, no photo) for the per-language maps; None without them."""
    translations = p.get("translations") or {}
    if not translations:
        return None
    from services.clip.data import read_translation_tsv


    src, tgt, tgt_lang = [], [], []
    for lang, path in sorted(translations.items()):
        pairs = read_translation_tsv(path, field=f"translations.{lang}")
        src += [a for a, _ in pairs]
        tgt += [b for _, b in pairs]
        tgt_lang += [lang] * len(pairs)
    return {"src": text_features(text_tower, src, cache_dir=cache_dir, progress=progress)[0],
            "tgt": text_features(text_tower, tgt, cache_dir=cache_dir, progress=progress)[0],
            "owner": np.full(len(tgt), -1, dtype=np.int64), "src_lang": [p["captions_language"]] * len(src),
            "tgt_lang": tgt_lang}


def run_clip_training(params: dict[str, Any], progress: Progress | None = None) -> dict[str, Any]:
    """Load photos + captions, encode with the towers (cached), train, write the checkpoint; the result.

    Optional params: ``captions_language`` (the language of ``captions``) and ``extra_captions``
    (language -> TSV of more captions of the same photos): with caption languages known, the config's
    ``centring`` and ``caption_weights`` apply (see the module doc). ``translations`` (language -> TSV of
    'source<TAB>translation' lines, no photo, the source in ``captions_language``): each such language's map is
    fitted on its translation pairs (``map_target="translation"``, ``map_pairs="photos+text"``, ridge 0.1 unless
    set), as the benchmark's default model is."""
    from models.image_towers import load_image_tower
    from models.text_towers import load_text_tower

    p = validate_train_params(params)
    config = ClipTrainConfig.from_dict(p["config"])
    t_start = time.perf_counter()
    data, caption_langs = _load_captions(p)
    _check_translation_pivot(p, caption_langs)
    known_langs = caption_langs if np.any(caption_langs != "") else None
    train_idx, val_idx = split_images(len(data), config.val_fraction, config.seed)
    image_tower = load_image_tower(p["image_tower"], mobilenet_dir=p.get("mobilenet_dir"))
    text_tower = load_text_tower(p["text_tower"], language=p.get("language"))
    train_caps = np.flatnonzero(np.isin(data.owner, train_idx))
    if hasattr(text_tower, "fit_idf"):  # IDF from the training captions only
        text_tower.fit_idf([data.captions[j] for j in train_caps])
    cache_dir = p.get("cache_dir")
    img, img_hit = image_features(image_tower, data.images_dir, data.images, cache_dir=cache_dir, progress=progress)
    txt, txt_hit = text_features(text_tower, data.captions, cache_dir=cache_dir, progress=progress)
    parallel = _translation_pairs(p, text_tower, cache_dir, progress)
    t_train = time.perf_counter()
    heads, history, best = train_heads(img, txt, data.owner, train_idx, val_idx, config, progress,
                                       languages=known_langs, parallel=parallel)
    centres = best.get("text_centres")
    train_s = time.perf_counter() - t_train
    out_dir = Path(p.get("out_dir") or ".")
    languages = list(getattr(text_tower, "languages", ("*",)))
    meta = {"trained_at": time.time(), "data": {"images": len(data), "captions": len(data.captions),
                                                "train_images": int(len(train_idx)), "val_images": int(len(val_idx))},
            "config": asdict(config), "val": best.get("val"), "best_epoch": best.get("epoch"),
            "val_by_language": best.get("val_by_language"),
            "text_centring": list(centres.languages) if centres is not None else None,
            "map_sources": best.get("map_sources") or None,
            "translation_pairs": ({lang: parallel["tgt_lang"].count(lang) for lang in sorted(set(parallel["tgt_lang"]))}
                                  if parallel else None)}
    ckpt = save_checkpoint(out_dir / p.get("checkpoint_name", "clip.pt"), heads, image_tower=p["image_tower"],
                           text_tower=p["text_tower"], text_state=getattr(text_tower, "state", lambda: None)(),
                           languages=languages, meta=meta, text_centres=centres)
    return {"checkpoint": str(ckpt), "image_tower": p["image_tower"], "text_tower": p["text_tower"],
            "languages": languages, "metrics": {"val": best.get("val"), "best_epoch": best.get("epoch"),
                                                "epochs_run": len(history),
                                                **({"val_by_language": best["val_by_language"]}
                                                   if best.get("val_by_language") else {}),
                                                "text_centring": meta["text_centring"],
                                                **({"map_sources": meta["map_sources"],
                                                    "translation_pairs": meta["translation_pairs"]}
                                                   if meta["translation_pairs"] else {})},
            "history": history, "cache": {"images": img_hit, "texts": txt_hit},
            "seconds": {"total": round(time.perf_counter() - t_start, 2), "train": round(train_s, 2)},
            "data": meta["data"]}
