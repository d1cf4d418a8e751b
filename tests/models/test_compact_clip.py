"""The compact CLIP model: heads, loss, checkpoint round trip, tower checks, and load_clip dispatch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.clip import ClipSpec, load_clip
from models.compact_clip import (CheckpointError, ClipHeads, CompactClip, HeadConfig, clip_loss, is_compact_checkpoint,
                                 load_compact_clip, read_checkpoint, save_checkpoint)
from models.image_towers import PixelImageTower
from models.text_towers import StaticWordVectorTower
from services.errors import InvalidInput, Unavailable


def test_mlp_head_starts_as_its_linear_part():
    heads = ClipHeads(HeadConfig(kind="mlp", image_dim=6, text_dim=4, embed_dim=3, hidden_dim=8))
    x = torch.randn(5, 6)
    assert torch.allclose(heads.image(x), heads.image.linear(x))


def test_clip_loss_is_low_for_matching_pairs_and_symmetric():
    a = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    scale = torch.tensor(np.log(50.0))
    matched = clip_loss(a, a, scale)
    shuffled = clip_loss(a, a[torch.randperm(8)], scale)
    assert matched < 0.1 < shuffled
    b = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    assert torch.isclose(clip_loss(a, b, scale), clip_loss(b, a, scale))


def test_bad_head_config_is_refused():
    with pytest.raises(InvalidInput):
        HeadConfig(kind="transformer")


def _clip_files(tmp_path):
    words = ["red", "blue"]
    text = StaticWordVectorTower(words, np.eye(2), name="static:v.npy").fit_idf(["red", "blue", "red blue"])
    np.save(tmp_path / "v.npy", np.eye(2, dtype=np.float32))
    (tmp_path / "v.vocab.txt").write_text("red\nblue\n")
    heads = ClipHeads(HeadConfig(kind="linear", image_dim=PixelImageTower(2).dim, text_dim=2, embed_dim=4))
    path = save_checkpoint(tmp_path / "ck.pt", heads, image_tower="pixels-2", text_tower=f"static:{tmp_path / 'v.npy'}",
                           text_state=text.state(), meta={"val": {"t2i": {"r@1": 1.0}}})
    return path, heads, text


def test_checkpoint_round_trip_gives_the_same_embeddings(tmp_path):
    path, heads, text = _clip_files(tmp_path)
    clip = load_compact_clip(path)
    ref = CompactClip(heads, PixelImageTower(2), text, label="ref", identity="x", languages=["*"])
    assert np.allclose(clip.encode_text(["red", "blue red"]), ref.encode_text(["red", "blue red"]), atol=1e-6)
    from PIL import Image
    im = [Image.new("RGB", (4, 4), (200, 10, 10))]
    assert np.allclose(clip.encode_images(im), ref.encode_images(im), atol=1e-6)
    assert clip.embed_dim == 4 and clip.describe()["trained"]["val"]["t2i"]["r@1"] == 1.0
    assert is_compact_checkpoint(path)


def test_load_clip_dispatches_compact_checkpoints(tmp_path):
    path, _, _ = _clip_files(tmp_path)
    enc = load_clip(ClipSpec(model="ViT-B-32", checkpoint=str(path), name="mine"))
    assert isinstance(enc, CompactClip) and enc.label == "mine"
    assert enc.encode_text(["red"]).shape == (1, 4)


def test_not_a_checkpoint_and_mismatched_towers_are_clear_errors(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="junk.pt"):
        read_checkpoint(junk)
    assert not is_compact_checkpoint(junk)
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a vislex compact CLIP"):
        read_checkpoint(tmp_path / "other.pt")
    path, heads, text = _clip_files(tmp_path)
    with pytest.raises(CheckpointError, match="mismatched|takes|heads take"):
        load_compact_clip(path, image_tower=PixelImageTower(4))
    with pytest.raises(Unavailable):
        load_compact_clip(tmp_path / "missing.pt")
