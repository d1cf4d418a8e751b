"""Word translation from a Globetrotter space: anchors found in the learnt space recover the planted map."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.alignment.vectors import load_vectors
from services.errors import InvalidInput


def _checkpoint(path, W_en, W_fr):
    from models.globetrotter import GlobetrotterConfig, GlobetrotterHeads, save_checkpoint

    d, e = W_en.shape[1], W_en.shape[0]
    heads = GlobetrotterHeads(GlobetrotterConfig(image_dim=4, text_dims={"en": d, "fr": d}, embed_dim=e))
    with torch.no_grad():
        for key, W in (("l_en", W_en), ("l_fr", W_fr)):
            heads.text[key].linear.weight.copy_(torch.as_tensor(W))
            heads.text[key].linear.bias.zero_()
    return save_checkpoint(path, heads, image_tower="pixels-8", text_towers={"en": "static:/x/en.npy",
                                                                             "fr": "static:/x/fr.npy"})


def test_anchors_from_the_learnt_space_recover_the_rotation(planted_spaces, tmp_path):
    from services.alignment.registry import align

    en_path, fr_path, q, _, _ = planted_spaces  # fr = en q + noise
    en, fr = load_vectors(en_path), load_vectors(fr_path)
    rng = np.random.default_rng(0)
    A = rng.standard_normal((12, q.shape[0])).astype(np.float32)
    # fr head = A q: a French word lands where its English source does (x q (A q)^T = x A^T)
    good = _checkpoint(tmp_path / "good.pt", A, A @ q)
    res = align(en, fr, "globetrotter", options={"checkpoint": str(good), "src_lang": "en", "tgt_lang": "fr"})
    stats = res.mapping.stats["stages"][0]
    assert stats["anchors"] > 200 and stats["k"] == 5
    W = res.mapping.stages[0].W
    XW = en.vectors @ W
    nearest = np.argmax((XW / np.linalg.norm(XW, axis=1, keepdims=True)) @ fr.vectors.T, axis=1)
    assert np.mean(nearest == np.arange(len(nearest))) > 0.95
    # a space learnt without the bridge (unrelated heads) gives no such map
    bad = _checkpoint(tmp_path / "bad.pt", A, rng.standard_normal(A.shape).astype(np.float32))
    res = align(en, fr, "globetrotter", options={"checkpoint": str(bad), "src_lang": "en", "tgt_lang": "fr"})
    XW = en.vectors @ res.mapping.stages[0].W
    nearest = np.argmax(XW @ fr.vectors.T, axis=1)
    assert np.mean(nearest == np.arange(len(nearest))) < 0.2


def test_options_are_checked_before_work(planted_spaces, tmp_path):
    from services.alignment.registry import align

    en_path, fr_path, q, _, _ = planted_spaces
    en, fr = load_vectors(en_path), load_vectors(fr_path)
    with pytest.raises(InvalidInput) as e:
        align(en, fr, "globetrotter", options={"src_lang": "en", "tgt_lang": "fr"})
    assert e.value.detail["field"] == "options.checkpoint"
    ckpt = _checkpoint(tmp_path / "c.pt", np.eye(q.shape[0], dtype=np.float32), q.T)
    with pytest.raises(InvalidInput) as e:
        align(en, fr, "globetrotter", options={"checkpoint": str(ckpt), "src_lang": "en", "tgt_lang": "de"})
    assert e.value.detail["languages"] == ["en", "fr"]
