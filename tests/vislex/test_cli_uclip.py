"""`vislex uclip train` and `vislex uclip evaluate` with a tiny random-weight CLIP checkpoint and tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from services.retrieval.testing import HashingTextEncoder

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
QUERIES = ["a photo of a dog", "a photo of a cat", "a red car", "a tall tree", "a small house", "a boat"]
TEXTS = ["un chien", "un chat", "une voiture rouge", "ein hoher Baum", "une petite maison", "ein Boot"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import models.torchvision_compat  # noqa: F401, I001  (must precede open_clip)
    import open_clip

    from models.clip import _register_model_config

    _register_model_config("vislex-tiny-uclip-cli", TINY)  # the CLI runs in-process: the architecture is known
    torch.manual_seed(3)
    d = tmp_path_factory.mktemp("cli-uclip")
    ckpt = d / "tiny.pt"
    torch.save(open_clip.create_model("vislex-tiny-uclip-cli").state_dict(), ckpt)
    rng = np.random.default_rng(0)
    images = d / "images"
    images.mkdir()
    for i in range(8):
        Image.fromarray((rng.random((16, 16, 3)) * 255).astype("uint8")).save(images / f"im{i}.png")
    (d / "texts.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    # an ImageNet-samples layout: the 1000 classes must all be present to derive class indices
    imagenet = d / "imagenet"
    imagenet.mkdir()
    tiny_png = images / "im0.png"
    for c in range(1000):
        (imagenet / f"n{c:08d}_{c}.png").write_bytes(tiny_png.read_bytes())
    names = [f"class {c}" for c in range(1000)]
    (d / "en.json").write_text(json.dumps(names), encoding="utf-8")
    (d / "babel.json").write_text(json.dumps({"FR": [list(range(0, 1000, 2)), [f"classe {c}" for c in range(0, 1000, 2)]]}),
                                  encoding="utf-8")
    return d, ckpt, images


@pytest.fixture()
def hashing_encoder(monkeypatch):
    from models import text_encoders

    monkeypatch.setattr(text_encoders, "load_text_encoder", lambda name: HashingTextEncoder(dim=24))


def _cli():
    from vislex.cli import app

    return app


def _clip_args(ckpt):
    return ["--clip-model", "vislex-tiny-uclip-cli", "--clip-checkpoint", str(ckpt), "--device", "cpu"]


def test_uclip_train_then_evaluate(setup, hashing_encoder, tmp_path):
    d, ckpt, images = setup
    data_dir = tmp_path / "data"
    args = ["uclip", "train", "--images", str(images), "--texts", str(d / "texts.txt"), "--epochs", "3",
            "--batch-size", "3", "--config", json.dumps({"heads": {"hidden_dim": 16, "out_dim": 8}}),
            "--data-dir", str(data_dir), *_clip_args(ckpt)]
    for q in QUERIES:
        args += ["--query", q]
    r = CliRunner().invoke(_cli(), args)
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["epochs"] == 3 and result["activated"] is True and result["clip_weights"] == "pretrained"
    assert result["counts"]["queries"] == 6 and result["counts"]["images"] == 8 and result["counts"]["texts"] == 6
    assert np.isfinite(result["final"]["loss"])
    assert (data_dir / "artifacts" / "uclip" / "current.json").is_file()
    assert result["checkpoint"].startswith(str(data_dir))
    assert "[train] 6/6" in r.stderr  # per-step progress: 2 steps x 3 epochs

    r = CliRunner().invoke(_cli(), ["uclip", "evaluate", "--data-dir", str(data_dir), "--imagenet", str(d / "imagenet"),
                                    "--babel", str(d / "babel.json"), "--en-classnames", str(d / "en.json"),
                                    "--langs", "en,fr", "--max-images", "12", *_clip_args(ckpt)])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert Path(report["heads"]).resolve() == Path(result["checkpoint"]).resolve()  # the active checkpoint
    rows = report["classification"]
    assert {(row["model"], row["lang"]) for row in rows} == {("clip (no heads)", "en"), ("uclip heads", "en"),
                                                             ("clip (no heads)", "fr"), ("uclip heads", "fr")}
    en = [row for row in rows if row["lang"] == "en"]
    assert all(row["images"] == 12 and row["classes"] == 1000 for row in en)
    assert all(0.0 <= row["top1"] <= row["top5"] <= 100.0 for row in rows)
    assert "zero-shot classification" in r.stdout


def test_uclip_train_bad_input_is_one_line_error(setup, hashing_encoder, tmp_path):
    d, ckpt, _ = setup
    r = CliRunner().invoke(_cli(), ["uclip", "train", "--images", str(tmp_path / "nope"), "--query", "a", "--query", "b",
                                    "--texts", str(d / "texts.txt"), "--data-dir", str(tmp_path), *_clip_args(ckpt)])
    assert r.exit_code == 1
    assert "error:" in r.output and "does not exist" in r.output and "Traceback" not in r.output
