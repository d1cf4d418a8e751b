"""`vislex fingerprints` and `vislex pivots` with a tiny random-weight CLIP checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import models.torchvision_compat  # noqa: F401
    import open_clip

    from models.clip import _register_model_config

    _register_model_config("vislex-tiny-cli", TINY)  # the CLI runs in-process: the architecture is known
    torch.manual_seed(2)
    d = tmp_path_factory.mktemp("cli-vision")
    ckpt = d / "tiny.pt"
    torch.save(open_clip.create_model("vislex-tiny-cli").state_dict(), ckpt)
    images = d / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray((rng.random((20, 20, 3)) * 255).astype("uint8")).save(images / f"im{i}.png")
    words_en = ["dog", "cat", "house", "tree", "car", "river", "bread", "shoe"]
    words_fr = ["chien", "chat", "maison", "arbre", "voiture", "rivière", "pain", "chaussure"]
    for name, words in (("en", words_en), ("fr", words_fr)):
        vecs = rng.normal(size=(len(words), 4))
        (d / f"{name}.vec").write_text(f"{len(words)} 4\n" + "".join(
            w + " " + " ".join(f"{x:.4f}" for x in v) + "\n" for w, v in zip(words, vecs)), encoding="utf-8")
    (d / "test.txt").write_text("".join(f"{a} {b}\n" for a, b in zip(words_en, words_fr)), encoding="utf-8")
    return d, ckpt, images


def _cli():
    from vislex.cli import app

    return app


def test_fingerprints_command_prints_json_lines(setup):
    d, ckpt, images = setup
    r = CliRunner().invoke(_cli(), ["fingerprints", "dog", "cat", "--lang", "en", "--images", str(images),
                                    "--clip-model", "vislex-tiny-cli", "--clip-checkpoint", str(ckpt), "--top", "3",
                                    "--reference-size", "20", "--cache-dir", str(d / "cache"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.strip().splitlines()]
    assert [x["word"] for x in lines] == ["dog", "cat"]
    assert all(len(x["images"]) == 3 and isinstance(x["is_visual"], bool) for x in lines)
    assert list((d / "cache" / "images").glob("*.npy"))


def test_pivots_command_writes_dictionary_and_precision(setup):
    d, ckpt, images = setup
    out = d / "pivots.txt"
    r = CliRunner().invoke(_cli(), ["pivots", str(d / "en.vec"), str(d / "fr.vec"), "--images", str(images),
                                    "--src-lang", "en", "--tgt-lang", "fr", "--out", str(out),
                                    "--clip-model", "vislex-tiny-cli", "--clip-checkpoint", str(ckpt),
                                    "--dictionary", str(d / "test.txt"), "--q", "0.0", "--device", "cpu",
                                    "--cache-dir", str(d / "cache")])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    pairs = [line.split() for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(pairs) == summary["n_pivots"] == summary["src_visual_words"] > 0  # q=0, k=1: one per kept word
    assert all(a in {"dog", "cat", "house", "tree", "car", "river", "bread", "shoe"} for a, _ in pairs)
    m = summary["initial_matching"]
    assert m["n_evaluable"] == len(pairs) and 0.0 <= m["precision"] <= 1.0


def test_missing_weights_is_one_line_error(setup):
    d, _, images = setup
    r = CliRunner().invoke(_cli(), ["fingerprints", "dog", "--images", str(images), "--clip-pretrained",
                                    "laion2b_s34b_b79k", "--cache-dir", str(d / "cache")])
    assert r.exit_code == 1
    assert "error:" in r.output and "not in the cache" in r.output and "Traceback" not in r.output
