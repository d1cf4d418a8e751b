"""Image sets: embedding a folder once per (model, image list), cached atomically; bad files skipped."""

from __future__ import annotations

import numpy as np
import pytest

from services.errors import InvalidInput, NotFound
from services.vision.images import embed_image_folder, list_images



def _clip(PlantedClip, n=20, identity="m1"):
    rng = np.random.default_rng(0)
    G = rng.normal(size=(n, 8))
    return PlantedClip(identity, {}, G / np.linalg.norm(G, axis=1, keepdims=True), ["{}"])


def test_embeds_folder_skips_unreadable_and_caches(tmp_path, planted_clip_cls, index_images):
    folder = tmp_path / "imgs"
    index_images(folder, 12)
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    clip = _clip(planted_clip_cls)
    cache = tmp_path / "cache"
    first = embed_image_folder(clip, folder, cache_dir=cache, batch_size=5)
    assert len(first) == 12 and first.skipped == ["broken.jpg"] and not first.from_cache
    # names line up with rows: img_0007.png is planted image 7
    i = first.names.index("img_0007.png")
    assert np.allclose(first.embeddings[i], clip.image_vectors[7])
    files = sorted(p.name for p in (cache / "images").iterdir())
    assert len(files) == 2 and files[0].startswith("m1-") and not any(f.endswith(".tmp") for f in files)

    second = embed_image_folder(clip, folder, cache_dir=cache)
    assert second.from_cache and second.names == first.names and second.skipped == ["broken.jpg"]
    assert np.array_equal(second.embeddings, first.embeddings)

    other_model = embed_image_folder(_clip(planted_clip_cls, identity="m2"), folder, cache_dir=cache)
    assert not other_model.from_cache  # a different model never reuses another's embeddings

    index_images(folder, 13)  # the image list changed: a new cache entry
    third = embed_image_folder(clip, folder, cache_dir=cache)
    assert not third.from_cache and len(third) == 13


def test_corrupt_cache_entry_is_recomputed(tmp_path, planted_clip_cls, index_images):
    folder = tmp_path / "imgs"
    index_images(folder, 4)
    clip = _clip(planted_clip_cls)
    first = embed_image_folder(clip, folder, cache_dir=tmp_path / "c")
    npy = next((tmp_path / "c" / "images").glob("*.npy"))
    npy.write_bytes(b"garbage")
    again = embed_image_folder(clip, folder, cache_dir=tmp_path / "c")
    assert not again.from_cache and np.array_equal(again.embeddings, first.embeddings)


def test_missing_or_empty_folder_errors(tmp_path, planted_clip_cls):
    with pytest.raises(NotFound):
        list_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput):
        list_images(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"xx")
    with pytest.raises(InvalidInput, match="no readable images"):
        embed_image_folder(_clip(planted_clip_cls), bad)
