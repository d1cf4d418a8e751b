"""A tiny captioned photo set with planted structure, and a tiny trained compact CLIP (tests, examples).

Each photo is a flat colour with a little noise; its captions name the colour ("a red photo",
"a photo of something red"), in English and in French ("une photo rouge"). The text tower is static word
vectors (random, one per word, written as ``.npy`` + vocabulary) and the image tower the
``pixels-8`` tower, so nothing pretrained is needed: training must find that the colour word and
the pixels agree, which raises retrieval recall far above chance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

COLOURS = {  # name: (RGB, French)
    "red": ((220, 30, 30), "rouge"), "green": ((30, 200, 40), "vert"), "blue": ((30, 40, 220), "bleu"),
    "yellow": ((230, 220, 30), "jaune"), "black": ((15, 15, 15), "noir"), "white": ((240, 240, 240), "blanc"),
    "purple": ((140, 30, 160), "violet"), "orange": ((250, 140, 20), "orange"), "grey": ((128, 128, 128), "gris"),
    "pink": ((250, 150, 190), "rose"), "brown": ((120, 70, 20), "marron"), "cyan": ((20, 220, 220), "cyan"),
}
_FILLER = ["a", "photo", "picture", "of", "something", "une", "photo", "image", "de", "quelque", "chose"]


def make_captioned_set(root: str | Path, n_images: int = 120, seed: int = 0, size: int = 32) -> dict[str, Path]:
    """Write ``images/``, ``captions.tsv`` (3 captions per photo: two English, one French) and static
    vectors (``vectors.npy`` + ``vectors.vocab.txt``); returns their paths."""
    from PIL import Image

    root = Path(root)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    lines = []
    for i in range(n_images):
        colour = names[i % len(names)]
        rgb, fr = COLOURS[colour]
        pixels = np.clip(np.asarray(rgb)[None, None, :] + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
        name = f"photo{i:04d}.png"
        Image.fromarray(pixels).save(images / name)
        lines += [f"{name}\ta {colour} photo", f"{name}\ta photo of something {colour}", f"{name}\tune photo {fr}"]
    (root / "captions.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    vocab = sorted(set(names) | {fr for _, fr in COLOURS.values()} | set(_FILLER))
    vectors = rng.normal(size=(len(vocab), 32)).astype(np.float32)
    np.save(root / "vectors.npy", vectors)
    (root / "vectors.vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return {"images": images, "captions": root / "captions.tsv", "vectors": root / "vectors.npy"}


def tiny_trained_clip(root: str | Path, seed: int = 0, epochs: int = 30) -> Path:
    """Train a compact CLIP on :func:`make_captioned_set` (a second or two on a CPU); the checkpoint path."""
    from services.clip.training import run_clip_training

    root = Path(root)
    paths = make_captioned_set(root / "data", seed=seed)
    result = run_clip_training({"images_dir": str(paths["images"]), "captions": str(paths["captions"]),
                                "image_tower": "pixels-8", "text_tower": f"static:{paths['vectors']}",
                                "out_dir": str(root), "checkpoint_name": "tiny-clip.pt",
                                "cache_dir": str(root / "cache"),
                                "config": {"head": "linear", "epochs": epochs, "batch_size": 32, "val_fraction": 0.2,
                                           "seed": seed, "lr": 1e-2, "patience": epochs, "embed_dim": 32}})
    return Path(result["checkpoint"])
