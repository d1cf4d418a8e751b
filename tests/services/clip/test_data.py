"""Captioned photo sets: parsing, validation errors, image-level splits."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from services.clip.data import load_captioned_set, read_caption_tsv, split_images
from services.errors import InvalidInput, NotFound


@pytest.fixture()
def photos(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        Image.new("RGB", (4, 4)).save(d / name)
    return d


def test_captions_group_by_image_in_first_mention_order(photos, tmp_path):
    tsv = tmp_path / "c.tsv"
    tsv.write_text("b.jpg\ta dog\na.jpg\tun chien\n\nb.jpg\tanother dog\n", encoding="utf-8")
    cs = load_captioned_set(photos, tsv)
    assert cs.images == ["b.jpg", "a.jpg"] and cs.captions == ["a dog", "un chien", "another dog"]
    assert cs.owner.tolist() == [0, 1, 0]
    sub = cs.subset(np.array([1]))
    assert sub.images == ["a.jpg"] and sub.captions == ["un chien"] and sub.owner.tolist() == [0]


def test_missing_images_empty_and_malformed_files_are_clear_errors(photos, tmp_path):
    tsv = tmp_path / "c.tsv"
    tsv.write_text("a.jpg\tfine\nzzz.jpg\tno such photo\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match="1 image\\(s\\) not in the image folder \\(first: zzz.jpg\\)"):
        load_captioned_set(photos, tsv)
    tsv.write_text("\n\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match="no 'image<TAB>caption' lines"):
        read_caption_tsv(tsv)
    tsv.write_text("a.jpg no tab here\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match="line 1"):
        read_caption_tsv(tsv)
    tsv.write_bytes(b"a.jpg\t\xff\xfe\n")
    with pytest.raises(InvalidInput, match="UTF-8"):
        read_caption_tsv(tsv)
    with pytest.raises(NotFound):
        read_caption_tsv(tmp_path / "none.tsv")


def test_split_is_seeded_disjoint_and_complete():
    tr, va = split_images(100, 0.2, seed=3)
    assert len(va) == 20 and len(tr) == 80 and not set(tr) & set(va)
    assert np.array_equal(split_images(100, 0.2, seed=3)[1], va)
    assert not np.array_equal(split_images(100, 0.2, seed=4)[1], va)
    assert len(split_images(10, 0.0, 0)[1]) == 0
    with pytest.raises(InvalidInput):
        split_images(2, 0.5, 0)
