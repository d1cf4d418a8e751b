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


# ---------------------------------------------------------------- language centring (TextCentres)


def _planted_languages(seed=0, n=60, dim=12):
    """The same n contents in three languages: row = content + that language's offset (+ a little noise)."""
    rng = np.random.default_rng(seed)
    content = rng.normal(size=(n, dim))
    offsets = {lang: 2.0 * rng.normal(size=dim) for lang in ("en", "de", "fr")}
    rows = {lang: (content + off + 0.01 * rng.normal(size=(n, dim))).astype(np.float32) for lang, off in offsets.items()}
    return content, offsets, rows


def test_centring_removes_planted_language_offsets():
    from models.compact_clip import TextCentres

    content, offsets, rows = _planted_languages()
    feats = np.concatenate(list(rows.values()))
    langs = [lang for lang in rows for _ in range(len(content))]
    centres = TextCentres.fit(feats, langs)
    assert centres.languages == ("de", "en", "fr")
    # a language's mean is its offset plus the (shared) mean content: centred rows of one content agree across languages
    before = np.abs(rows["de"] - rows["en"]).max()
    after = np.abs(centres.apply(rows["de"], "de") - centres.apply(rows["en"], "en")).max()
    assert before > 1.0 and after < 0.1
    assert np.allclose(centres.apply(rows["fr"], "fr"), content - content.mean(0), atol=0.05)
    # per-row codes, and the nearest-mean fallback for rows without a (known) language
    assert np.allclose(centres.apply(feats, langs), centres.apply(feats, None), atol=1e-6)
    assert np.array_equal(np.asarray(centres.languages)[centres.identify(rows["fr"])], ["fr"] * len(content))
    assert np.allclose(centres.apply(rows["de"], "xx"), centres.apply(rows["de"], "de"))
    assert TextCentres.fit(feats, [None] * len(feats)) is None
    with pytest.raises(InvalidInput):
        centres.apply(feats, ["en"])


def _centred_clip_files(tmp_path):
    from models.compact_clip import TextCentres

    path, heads, text = _clip_files(tmp_path)
    centres = TextCentres({"en": np.array([0.5, 0.0], np.float32), "fr": np.array([0.0, 0.5], np.float32)})
    centred = save_checkpoint(tmp_path / "centred.pt", heads, image_tower="pixels-2",
                              text_tower=f"static:{tmp_path / 'v.npy'}", text_state=text.state(), text_centres=centres)
    return path, centred, heads, text, centres


def test_checkpoint_round_trip_keeps_the_text_centres(tmp_path):
    path, centred, heads, text, centres = _centred_clip_files(tmp_path)
    assert read_checkpoint(centred)["version"] == 2 and read_checkpoint(path)["version"] == 1
    clip = load_compact_clip(centred)
    assert clip.centres.languages == ("en", "fr") and np.allclose(clip.centres.means, centres.means)
    assert clip.describe()["text_centring"] == {"kind": "language", "languages": ["en", "fr"]}
    ref = CompactClip(heads, PixelImageTower(2), text, label="ref", identity="x", languages=["*"], centres=centres)
    plain = CompactClip(heads, PixelImageTower(2), text, label="ref", identity="x", languages=["*"])
    words = ["red", "blue red"]
    assert np.allclose(clip.encode_text(words, lang="fr"), ref.encode_text(words, lang="fr"), atol=1e-6)
    assert np.allclose(clip.encode_text(words), ref.encode_text(words), atol=1e-6)
    # centring is applied wherever the clip embeds text: encode_text and the tower-row path agree
    feats = text.encode_text(words)
    assert np.allclose(clip.encode_text(words, lang="en"), clip.text_features_to_clip(feats, "en"), atol=1e-6)
    assert not np.allclose(clip.encode_text(words, lang="en"), plain.encode_text(words), atol=1e-3)


def test_an_old_checkpoint_without_centres_still_loads(tmp_path):
    path, heads, text = _clip_files(tmp_path)
    blob = torch.load(path, weights_only=True)
    blob.pop("text_centres", None)
    blob["version"] = 1
    torch.save(blob, tmp_path / "old.pt")
    clip = load_compact_clip(tmp_path / "old.pt")
    assert clip.centres is None and clip.describe()["text_centring"] == {"kind": "none"}
    ref = CompactClip(heads, PixelImageTower(2), text, label="ref", identity="x", languages=["*"])
    assert np.allclose(clip.encode_text(["red"], lang="de"), ref.encode_text(["red"]), atol=1e-6)


def test_centres_of_the_wrong_width_are_refused(tmp_path):
    from models.compact_clip import TextCentres

    path, heads, text = _clip_files(tmp_path)
    with pytest.raises(CheckpointError, match="centres"):
        save_checkpoint(tmp_path / "bad.pt", heads, image_tower="pixels-2", text_tower="x",
                        text_centres=TextCentres({"en": np.zeros(3, np.float32)}))
    with pytest.raises(CheckpointError, match="centres"):
        CompactClip(heads, PixelImageTower(2), text, label="x", identity="x", languages=["*"],
                    centres=TextCentres({"en": np.zeros(3, np.float32)}))


def test_weighted_multi_positive_loss_with_equal_weights_is_the_plain_one():
    from models.compact_clip import multi_positive_loss

    img = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(7, 8), dim=-1)
    owner = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    scale = torch.tensor(np.log(20.0), dtype=torch.float32)
    plain = multi_positive_loss(img, txt, owner, scale)
    assert torch.isclose(plain, multi_positive_loss(img, txt, owner, scale, torch.full((7,), 3.0)))
    assert not torch.isclose(plain, multi_positive_loss(img, txt, owner, scale, torch.tensor([1., 5, 1, 1, 1, 5, 1])))


def test_checkpoint_round_trip_keeps_per_language_maps_as_version_3(tmp_path):
    from models.compact_clip import TextCentres

    path, centred, heads, text, centres = _centred_clip_files(tmp_path)
    swap = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    mapped = TextCentres({l: centres.means[i] for i, l in enumerate(centres.languages)}, {"fr": swap})
    ck = save_checkpoint(tmp_path / "mapped.pt", heads, image_tower="pixels-2", text_tower=f"static:{tmp_path / 'v.npy'}",
                         text_state=text.state(), text_centres=mapped)
    assert read_checkpoint(ck)["version"] == 3 and read_checkpoint(centred)["version"] == 2
    clip, plain = load_compact_clip(ck), load_compact_clip(centred)
    assert np.allclose(clip.centres.maps["fr"], swap)
    assert clip.describe()["text_centring"] == {"kind": "language", "languages": ["en", "fr"], "maps": ["fr"]}
    words = ["red", "blue red"]
    # English rows have no map: identical to the centred-only model; French rows go through the swap
    assert np.allclose(clip.encode_text(words, lang="en"), plain.encode_text(words, lang="en"), atol=1e-6)
    feats = text.encode_text(words)
    want = plain.text_features_to_clip((feats - centres.means[1]) @ swap + centres.means[1], "fr")
    assert np.allclose(clip.encode_text(words, lang="fr"), want, atol=1e-5)
    assert not np.allclose(clip.encode_text(words, lang="fr"), plain.encode_text(words, lang="fr"), atol=1e-3)
