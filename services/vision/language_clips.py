"""One compact CLIP per language, each trained on its OWN photos: the setting of WALIP (Dinh et al. 2022, section 3.1).

WALIP's claim is that images alone bridge two languages: two *separately trained* CLIPs see the
same (unseen) photos, and a word's similarity profile over those photos finds its translation. To
test the claim, no photo may carry captions in two languages during training, and the photos the
fingerprints are taken on must be new to every CLIP. This module makes those two conditions
structural: :func:`partition_photos` carves the photo sets, :func:`check_partition` asserts them (a
:class:`PartitionError` otherwise), and :func:`train_language_clips` refuses to train anything on a
partition that fails the check. Each checkpoint records the names of the photos it was trained on,
so :func:`check_checkpoints_disjoint` can audit two trained CLIPs after the fact.

A language's CLIP is locked towers + trained heads (LiT recipe; models/compact_clip.py): a MobileNet
image tower and a *static word-vector* text tower of that language only (IDF-weighted mean of the
caption's word vectors), so no text model involved knows any other language.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from services.errors import InvalidInput

Progress = Callable[[str, int, int, dict | None], None]


class PartitionError(InvalidInput):
    """Two languages' training photos overlap, or a fingerprint photo was trained on."""

    code = "photo_sets_overlap"


@dataclass(frozen=True)
class PhotoPartition:
    """Photo names per language (training) and the held-out fingerprint photos.

    ``disjoint`` lists the language pairs whose photo sets must not share a photo; by default every
    pair. (A benchmark that never aligns two languages with each other may let them share photos --
    e.g. fr and de when only en->fr and en->de are run -- by listing only the pairs it aligns.)
    """

    train: dict[str, tuple[str, ...]]
    fingerprint: tuple[str, ...] = ()
    disjoint: tuple[tuple[str, str], ...] | None = None

    def pairs(self) -> list[tuple[str, str]]:
        return list(self.disjoint) if self.disjoint is not None else list(combinations(sorted(self.train), 2))

    def summary(self) -> dict[str, Any]:
        return {"train_photos": {lang: len(v) for lang, v in self.train.items()},
                "fingerprint_photos": len(self.fingerprint), "disjoint_pairs": [list(p) for p in self.pairs()]}


def check_partition(partition: PhotoPartition) -> None:
    """Raise :class:`PartitionError` unless every required pair of languages shares no photo and no
    fingerprint photo is in any training set."""
    sets = {lang: set(names) for lang, names in partition.train.items()}
    for a, b in partition.pairs():
        if a not in sets or b not in sets:
            raise PartitionError(f"disjoint pair {a}-{b} names a language without photos",
                                 detail={"languages": sorted(sets)})
        shared = sets[a] & sets[b]
        if shared:
            raise PartitionError(f"{len(shared)} photo(s) carry captions in both {a} and {b} (first: {sorted(shared)[0]})",
                                 detail={"pair": [a, b], "shared": sorted(shared)[:10]})
    held = set(partition.fingerprint)
    for lang, names in sets.items():
        seen = held & names
        if seen:
            raise PartitionError(f"{len(seen)} fingerprint photo(s) are in the {lang} training set "
                                 f"(first: {sorted(seen)[0]})", detail={"language": lang, "shared": sorted(seen)[:10]})


def partition_photos(names: Sequence[str], eligible: Mapping[str, Sequence[str] | set[str]], *, n_fingerprint: int,
                     groups: Sequence[Sequence[str]] | None = None, seed: int = 0,
                     fingerprint_first: Sequence[str] = (), balance: bool = True) -> PhotoPartition:
    """Split ``names`` into held-out fingerprint photos and per-language training sets.

    ``eligible[lang]`` = the photos that have captions in ``lang``. ``groups`` (default: one group per
    language) lists languages that *share* one photo set; different groups get disjoint sets of equal
    size (``balance``; else each keeps what it was dealt), drawn from the photos eligible for every
    language of the group (each photo goes to the eligible group holding the fewest so far). The fingerprint photos are
    taken first: those of ``fingerprint_first`` (e.g. photos no group could train on), then random
    ones, ``n_fingerprint`` in all. Deterministic for a seed.
    """
    groups = [list(g) for g in (groups or [[lang] for lang in eligible])]
    langs = [lang for g in groups for lang in g]
    if sorted(langs) != sorted(eligible) or len(set(langs)) != len(langs):
        raise InvalidInput("groups must name every language exactly once", detail={"languages": sorted(eligible)})
    rng = np.random.default_rng(seed)
    names = list(names)
    known = set(names)
    first = [n for n in dict.fromkeys(fingerprint_first) if n in known][:n_fingerprint]
    held = set(first)
    rest = [n for n in names if n not in held]
    extra = max(0, n_fingerprint - len(first))
    order = rng.permutation(len(rest))
    fingerprint = first + [rest[i] for i in order[:extra]]
    pool = [rest[i] for i in order[extra:]]
    ok = {lang: set(eligible[lang]) for lang in eligible}
    can = np.array([[all(n in ok[lang] for lang in g) for g in groups] for n in pool], dtype=bool).reshape(-1, len(groups))
    # each photo goes to the group, among those that can train on it, holding the fewest photos so far
    shares: list[list[str]] = [[] for _ in groups]
    for n, row in zip(pool, can):
        options = np.flatnonzero(row)
        if len(options):
            shares[int(options[np.argmin([len(shares[g]) for g in options])])].append(n)
    size = min(len(s) for s in shares) if balance else None
    train = {lang: tuple(sorted(shares[gi][:size])) for gi, g in enumerate(groups) for lang in g}
    disjoint = tuple((a, b) for g1, g2 in combinations(groups, 2) for a in g1 for b in g2)
    partition = PhotoPartition(train, tuple(fingerprint), tuple(tuple(sorted(p)) for p in disjoint))
    check_partition(partition)
    return partition


def photos_digest(names: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:16]


@dataclass
class LanguageClip:
    """A trained language CLIP: where it is and how it did on its own validation photos."""

    lang: str
    checkpoint: Path
    photos: int
    captions: int
    val: dict[str, Any] | None
    best_epoch: int | None
    seconds: float
    text_tower: str
    history: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out["checkpoint"] = str(self.checkpoint)
        out.pop("history")
        return out


def train_language_clip(lang: str, data: Any, photos: Sequence[str], vectors: str | Path, out: str | Path, *,
                        image_tower: str = "mobilenet-v1+v2", cache_dir: str | Path | None = None,
                        config: Any = None, mobilenet_dir: str | None = None, progress: Progress | None = None
                        ) -> LanguageClip:
    """Train ``lang``'s CLIP on ``photos`` (names in ``data``, a services.clip.data.CaptionedSet of that
    language's captions) with the static vectors at ``vectors``; write the checkpoint to ``out``."""
    from models.compact_clip import save_checkpoint
    from models.image_towers import load_image_tower
    from models.text_towers import load_static_tower
    from services.clip.data import split_images
    from services.clip.features import image_features, text_features
    from services.clip.training import ClipTrainConfig, train_heads

    cfg = config if isinstance(config, ClipTrainConfig) else ClipTrainConfig.from_dict(config)
    position = {n: i for i, n in enumerate(data.images)}
    missing = [n for n in photos if n not in position]
    if missing:
        raise InvalidInput(f"{len(missing)} {lang} training photo(s) have no {lang} caption (first: {missing[0]})",
                           detail={"language": lang, "missing": missing[:10]})
    rows = np.asarray([position[n] for n in photos], dtype=np.int64)
    sub = data.subset(rows)
    t0 = time.perf_counter()
    tower = load_image_tower(image_tower, mobilenet_dir=mobilenet_dir)
    text = load_static_tower(vectors, language=lang)
    train_idx, val_idx = split_images(len(sub), cfg.val_fraction, cfg.seed)
    idf_captions = [sub.captions[j] for j in np.flatnonzero(np.isin(sub.owner, train_idx))]
    text.fit_idf(idf_captions)
    # the tower outputs of the whole captioned set, one cache entry whatever the partition, then this language's rows
    img = image_features(tower, data.images_dir, data.images, cache_dir=cache_dir, progress=progress)[0][rows]
    txt, _ = text_features(text, sub.captions, cache_dir=cache_dir, progress=progress)
    heads, history, best = train_heads(img, txt, sub.owner, train_idx, val_idx, cfg, progress)
    meta = {"trained_at": time.time(), "language": lang, "config": asdict(cfg), "val": best.get("val"),
            "best_epoch": best.get("epoch"),
            "data": {"images": len(sub), "captions": len(sub.captions), "photos_digest": photos_digest(sub.images)},
            "photos": list(sub.images), "idf_captions": len(idf_captions)}
    path = save_checkpoint(out, heads, image_tower=image_tower, text_tower=f"static:{Path(vectors)}",
                           text_state=text.state(), languages=[lang], meta=meta)
    return LanguageClip(lang, path, len(sub), len(sub.captions), best.get("val"), best.get("epoch"),
                        round(time.perf_counter() - t0, 2), f"static:{Path(vectors).name}", history)


def train_language_clips(partition: PhotoPartition, data: Mapping[str, Any], vectors: Mapping[str, str | Path],
                         out_dir: str | Path, **kwargs: Any) -> dict[str, LanguageClip]:
    """Check the partition (:func:`check_partition`), then train every language's CLIP as ``out_dir/clip-<lang>``."""
    check_partition(partition)
    out_dir = Path(out_dir)
    return {lang: train_language_clip(lang, data[lang], photos, vectors[lang], out_dir / f"clip-{lang}", **kwargs)
            for lang, photos in partition.train.items()}


def check_checkpoints_disjoint(paths: Mapping[str, str | Path], fingerprint: Sequence[str] = (),
                               disjoint: Sequence[tuple[str, str]] | None = None) -> None:
    """Audit trained CLIPs: :class:`PartitionError` when two that must be disjoint (``disjoint``: the partition's
    pairs; None: every pair) share a training photo, or one saw a fingerprint photo."""
    from models.compact_clip import read_checkpoint

    train = {}
    for lang, p in paths.items():
        photos = (read_checkpoint(p).get("meta") or {}).get("photos")
        if photos is None:
            raise InvalidInput(f"checkpoint of {lang} does not record its training photos", detail={"language": lang})
        train[lang] = tuple(photos)
    check_partition(PhotoPartition(train, tuple(fingerprint), None if disjoint is None else tuple(map(tuple, disjoint))))
