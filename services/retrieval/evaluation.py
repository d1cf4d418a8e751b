"""uCLIP evaluation: image<->text recall@K over captions in several languages, zero-shot classification.

methods.md, uCLIP (inference and reported numbers: XM3600 image->text R@10). Two benchmarks:

- caption retrieval on an XTD10 or Multi30K layout (captions aligned by line with an image
  name list): image->text and text->image R@1/5/10 per language. The captions ship with
  the benchmark data, the images (MSCOCO, Flickr30k) do not: :func:`caption_benchmark`
  raises :class:`ImagesMissing` saying so when they are absent.
- zero-shot classification of the ImageNet samples (``<wnid>_<name>.JPEG``, class index =
  position of the wnid in sorted order, as in ImageNet-1k) with class names per language
  from Babel-ImageNet: top-1/top-5 accuracy and macro-F1 over the classes that language has.

Rows are produced with the heads (image f_C, text f_M) and without them (raw CLIP text
tower: on English names it is the reference row; on other languages it shows what the
heads add). The metric functions are pure (arrays in, numbers out).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from services.errors import InvalidInput

KS = (1, 5, 10)


class ImagesMissing(InvalidInput):
    """A caption benchmark's images are not where the command looked (they do not ship with the captions)."""

    code = "images_missing"


# ---------------------------------------------------------------------------------------------
# metrics (pure)
# ---------------------------------------------------------------------------------------------
def ranks_of_targets(sims: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of ``targets[i]`` in row i of ``sims`` (higher is better; ties count against).

    Pessimistic on ties: every other candidate scoring the same as the target ranks ahead of
    it, so a model that gives every candidate one score cannot reach a perfect recall.
    """
    target_scores = sims[np.arange(len(sims)), targets]
    return (sims >= target_scores[:, None]).sum(axis=1) - 1


def recall_at_k(sims: np.ndarray, targets: np.ndarray, ks: Sequence[int] = KS, chunk: int = 4096) -> dict[str, float]:
    """R@k (percent) of one correct target per query; chunked over queries."""
    ranks = np.concatenate([ranks_of_targets(sims[s:s + chunk], targets[s:s + chunk])
                            for s in range(0, len(sims), chunk)]) if len(sims) else np.zeros(0)
    return {f"R@{k}": round(100.0 * float(np.mean(ranks < k)), 2) if len(ranks) else 0.0 for k in ks}


def image_text_recall(images: np.ndarray, texts: np.ndarray, ks: Sequence[int] = KS) -> dict[str, dict[str, float]]:
    """Row i of ``images`` matches row i of ``texts``: image->text and text->image R@k."""
    if images.shape != texts.shape:
        raise ValueError(f"images {images.shape} and texts {texts.shape} must be aligned row by row")
    sims = images @ texts.T
    gt = np.arange(len(images))
    return {"i2t": recall_at_k(sims, gt, ks), "t2i": recall_at_k(sims.T.copy(), gt, ks)}


def classification_scores(scores: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Top-1 / top-5 accuracy and macro-F1 (over classes present in ``truth``), in percent."""
    n, c = scores.shape
    pred = scores.argmax(1)
    top5 = np.argsort(-scores, axis=1)[:, :min(5, c)]
    tp = np.bincount(truth[pred == truth], minlength=c).astype(float)
    n_pred = np.bincount(pred, minlength=c).astype(float)
    n_true = np.bincount(truth, minlength=c).astype(float)
    present = n_true > 0
    f1 = np.where(n_pred + n_true > 0, 2 * tp / np.maximum(n_pred + n_true, 1), 0.0)
    return {"top1": round(100 * float(np.mean(pred == truth)), 2),
            "top5": round(100 * float(np.mean((top5 == truth[:, None]).any(1))), 2),
            "macro_f1": round(100 * float(f1[present].mean()), 2) if present.any() else 0.0}


# ---------------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------------
@dataclass
class CaptionBenchmark:
    name: str
    image_paths: list[Path]
    captions: dict[str, list[str]]  # lang -> one caption per image, aligned
    listed: int = 0  # images the benchmark lists (image_paths holds those found, in list order)


def _read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [line.rstrip("\n").strip() for line in fh]


def image_key(name: str) -> str:
    """What identifies a photo across naming schemes: the Flickr id. Multi30K names a Flickr30k photo
    ``<flickr id>.jpg``, Flickr8k ``<flickr id>_<secret>.jpg``; both give ``<flickr id>``."""
    return Path(name).name.split(".", 1)[0].split("_", 1)[0]


def find_images(names: Sequence[str], folder: Path) -> dict[int, Path]:
    """Position in ``names`` -> file in ``folder``: the exact name, else a file with the same Flickr id
    (:func:`image_key`), so a folder of Flickr8k-named photos serves Multi30K's lists."""
    files = {p.name: p for p in folder.iterdir() if p.is_file()} if folder.is_dir() else {}
    by_key: dict[str, Path] = {}
    for name in sorted(files):
        by_key.setdefault(image_key(name), files[name])
    out = {}
    for i, n in enumerate(names):
        if not n:
            continue
        hit = files.get(n) or by_key.get(image_key(n))
        if hit is not None:
            out[i] = hit
    return out


def caption_benchmark(layout: str, captions_dir: Path, images_dir: Path | None, langs: Sequence[str] | None = None,
                      limit: int | None = None, split: str | None = None, partial: bool = False) -> CaptionBenchmark:
    """Load an XTD10 (``test_1kcaptions_<lang>.txt`` + ``test_image_names.txt``) or Multi30K
    (``<split>.<lang>.gz`` + ``<split>.txt``, split ``test_2016_flickr`` by default, or ``train``) layout.

    Photos are matched by name or by Flickr id (:func:`find_images`). ImagesMissing when none is found,
    or -- unless ``partial`` -- when some listed photo is missing; with ``partial`` the benchmark is the
    photos found (``listed`` says how many the list has)."""
    captions_dir = Path(captions_dir)
    if layout == "xtd10":
        if split:
            raise InvalidInput("xtd10 has one split; --caption-split applies to multi30k", detail={"field": "split"})
        names_file, pattern = captions_dir / "test_image_names.txt", "test_1kcaptions_{}.txt"
    elif layout == "multi30k":
        split = split or "test_2016_flickr"
        names_file, pattern = captions_dir / f"{split}.txt", split + ".{}.gz"
    else:
        raise InvalidInput(f"unknown caption layout {layout!r}; known: xtd10, multi30k", detail={"field": "layout"})
    if not names_file.is_file():
        raise InvalidInput(f"{names_file} not found: {captions_dir} is not a {layout} folder (or has no split {split!r})")
    names = _read_lines(names_file)  # line-aligned with the caption files
    while names and not names[-1]:
        names.pop()
    available = sorted(p.name[len(pattern.split("{}")[0]):].split(".")[0] for p in captions_dir.glob(pattern.format("*")))
    chosen = list(langs) if langs else available
    missing_langs = [lang for lang in chosen if not (captions_dir / pattern.format(lang)).is_file()]
    if missing_langs:
        raise InvalidInput(f"{layout}: no captions for {missing_langs}; available: {available}",
                           detail={"available": available})
    where = Path(images_dir) if images_dir else None
    found = find_images(names, where) if where is not None else {}
    if not found or (len(found) < len(names) and not partial):
        raise ImagesMissing(
            f"{layout} images are not here: {len(found)} of {len(names)} listed images found in "
            f"{where if where else '(no --caption-images folder given)'}. The captions are in {captions_dir}; "
            f"the images ({'MSCOCO' if layout == 'xtd10' else 'Flickr30k'}) are not part of the benchmark data. "
            "Caption retrieval was NOT evaluated.",
            detail={"layout": layout, "found": len(found), "listed": len(names)})
    rows = sorted(found)[:limit or None]
    captions = {}
    for lang in chosen:
        lines = _read_lines(captions_dir / pattern.format(lang))
        captions[lang] = [lines[i] for i in rows]
    return CaptionBenchmark(layout, [found[i] for i in rows], captions, len(names))


@dataclass
class ClassificationSet:
    image_paths: list[Path]
    labels: np.ndarray  # ImageNet-1k class index per image
    classnames: dict[str, tuple[np.ndarray, list[str]]]  # lang -> (class indices, names)


def imagenet_samples(images_dir: Path, babel_path: Path, en_classnames_path: Path | None = None,
                     langs: Sequence[str] = ("en",), limit: int | None = None) -> ClassificationSet:
    """ImageNet sample images with class indices (sorted wnids) and class names per language."""
    images_dir = Path(images_dir)
    paths = sorted(p for p in images_dir.glob("n*_*.*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    if not paths:
        raise InvalidInput(f"no <wnid>_<name>.JPEG images in {images_dir}", detail={"path": str(images_dir)})
    wnids = sorted({p.name.split("_", 1)[0] for p in paths})
    if len(wnids) != 1000:
        # class index = position among the 1000 ImageNet-1k wnids; a partial folder cannot give it
        raise InvalidInput(f"{images_dir} covers {len(wnids)} ImageNet classes; need all 1000 to derive class indices")
    index = {w: i for i, w in enumerate(wnids)}
    if limit:
        rng = np.random.default_rng(0)
        paths = [paths[i] for i in sorted(rng.choice(len(paths), size=min(limit, len(paths)), replace=False))]
    labels = np.array([index[p.name.split("_", 1)[0]] for p in paths], dtype=np.int64)
    babel = json.loads(Path(babel_path).read_text(encoding="utf-8"))
    names: dict[str, tuple[np.ndarray, list[str]]] = {}
    for lang in langs:
        if lang == "en" and en_classnames_path is not None and Path(en_classnames_path).is_file():
            en = json.loads(Path(en_classnames_path).read_text(encoding="utf-8"))
            en = en.get("imagenet1k", en) if isinstance(en, dict) else en
            names["en"] = (np.arange(len(en)), list(en))
            continue
        entry = babel.get(lang.upper())
        if entry is None:
            raise InvalidInput(f"Babel-ImageNet has no class names for {lang!r}",
                               detail={"available": sorted(k.lower() for k in babel)})
        names[lang] = (np.asarray(entry[0], dtype=np.int64), list(entry[1]))
    return ClassificationSet(paths, labels, names)


# ---------------------------------------------------------------------------------------------
# runners
# ---------------------------------------------------------------------------------------------
def _templated(names: list[str], templates: Sequence[str]) -> list[str]:
    return [t.replace("{c}", "{}").format(n) for t in templates for n in names]


def _ensemble(emb: np.ndarray, n_templates: int, n_names: int) -> np.ndarray:
    mean = emb.reshape(n_templates, n_names, -1).mean(0)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


def zero_shot_rows(image_raw: np.ndarray, data: ClassificationSet, *, clip_text: Callable[[list[str]], np.ndarray],
                   text_encode: Callable[[list[str]], np.ndarray] | None, heads: Any | None,
                   clip_templates: Sequence[str] = ("a photo of a {}.",),
                   uclip_templates: Sequence[str] = ("{}",)) -> list[dict[str, Any]]:
    """One row per (model, language): raw CLIP text tower, and uCLIP heads when given."""
    rows = []
    projected = heads.project_clip(image_raw) if heads is not None else None
    for lang, (class_ids, names) in data.classnames.items():
        keep = np.isin(data.labels, class_ids)
        if not keep.any():
            continue
        remap = np.full(int(max(class_ids.max(), data.labels.max())) + 1, -1, dtype=np.int64)
        remap[class_ids] = np.arange(len(class_ids))
        truth = remap[data.labels[keep]]
        base = {"lang": lang, "classes": int(len(class_ids)), "images": int(keep.sum())}
        clip_names = _ensemble(clip_text(_templated(names, clip_templates)), len(clip_templates), len(names))
        rows.append({"model": "clip (no heads)", **base,
                     **classification_scores(image_raw[keep] @ clip_names.T, truth)})
        if heads is not None and text_encode is not None:
            txt = heads.project_text(text_encode(_templated(names, uclip_templates)))
            txt = _ensemble(txt, len(uclip_templates), len(names))
            rows.append({"model": "uclip heads", **base, **classification_scores(projected[keep] @ txt.T, truth)})
    return rows


def caption_rows(image_raw: np.ndarray, bench: CaptionBenchmark, *, clip_text: Callable[[list[str]], np.ndarray],
                 text_encode: Callable[[list[str]], np.ndarray] | None, heads: Any | None) -> list[dict[str, Any]]:
    rows = []
    projected = heads.project_clip(image_raw) if heads is not None else None
    for lang, caps in bench.captions.items():
        base = {"lang": lang, "images": len(caps)}
        r = image_text_recall(image_raw, clip_text(caps))
        rows.append({"model": "clip (no heads)", **base, **{f"i2t {k}": v for k, v in r["i2t"].items()},
                     **{f"t2i {k}": v for k, v in r["t2i"].items()}})
        if heads is not None and text_encode is not None:
            r = image_text_recall(projected, heads.project_text(text_encode(caps)))
            rows.append({"model": "uclip heads", **base, **{f"i2t {k}": v for k, v in r["i2t"].items()},
                         **{f"t2i {k}": v for k, v in r["t2i"].items()}})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text table of dict rows (columns in first-seen order)."""
    if not rows:
        return "(no rows)"
    cols: list[str] = []
    for row in rows:
        cols += [k for k in row if k not in cols]
    cells = [[str(row.get(c, "")) for c in cols] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    return "\n".join([line, "  ".join("-" * w for w in widths)] +
                     ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells])
