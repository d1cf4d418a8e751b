"""`vislex align --seed fingerprints` (WALIP steps 1-2) with a tiny random-weight CLIP, and strict JSON from `vislex pivots`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}
N, DIM = 40, 8


def _strict(line: str) -> dict:
    def no_constants(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(line, parse_constant=no_constants)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import models.torchvision_compat  # noqa: F401, I001  (must precede open_clip)
    import open_clip

    from models.clip import _register_model_config

    _register_model_config("vislex-tiny-walip", TINY)  # CliRunner runs in-process: the architecture is known
    torch.manual_seed(4)
    d = tmp_path_factory.mktemp("cli-walip")
    ckpt = d / "tiny.pt"
    torch.save(open_clip.create_model("vislex-tiny-walip").state_dict(), ckpt)
    images = d / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for i in range(12):
        Image.fromarray((rng.random((16, 16, 3)) * 255).astype("uint8")).save(images / f"im{i}.png")
    (images / "broken.png").write_bytes(b"not an image")  # skipped and counted, not fatal
    en = [f"word{i}" for i in range(N)]
    fr = [f"mot{i}" for i in range(N)]
    X = rng.normal(size=(N, DIM))
    R, _ = np.linalg.qr(rng.normal(size=(DIM, DIM)))
    for name, words, vecs in (("wiki.en", en, X), ("wiki.fr", fr, X @ R)):
        (d / f"{name}.vec").write_text(f"{N} {DIM}\n" + "".join(
            w + " " + " ".join(f"{x:.5f}" for x in v) + "\n" for w, v in zip(words, vecs)), encoding="utf-8")
    (d / "test.txt").write_text("".join(f"{a} {b}\n" for a, b in zip(en, fr)), encoding="utf-8")
    return d, ckpt, images


def _cli(*args):
    from vislex.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _clip_args(ckpt):
    return ["--clip-model", "vislex-tiny-walip", "--clip-checkpoint", ckpt, "--device", "cpu"]


def _one_line_error(r, *fragments):
    assert r.exit_code == 1, r.output
    lines = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr and lines[-1].startswith("error: ")
    assert [x for x in lines if x.startswith("error")] == [lines[-1]]
    for f in fragments:
        assert f in lines[-1], (f, lines[-1])


def test_align_seed_fingerprints_end_to_end(setup, tmp_path):
    d, ckpt, images = setup
    out = tmp_path / "map.npz"
    r = _cli("align", d / "wiki.en.vec", d / "wiki.fr.vec", "--method", "walip", "--seed", "fingerprints",
             "--images", images, *_clip_args(ckpt), "--eval-dictionary", d / "test.txt", "--out", out,
             "--fingerprint-option", "q=0", "--option", "max_iter=3", "--cache-dir", tmp_path / "cache")
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    summary = _strict(lines[-1])
    assert summary["seed"] == "fingerprints"
    n = summary["pivot_pairs"]
    assert n > 0 and summary["seed_pairs"] == n == summary["fingerprints"]["n_pivots"]
    assert summary["fingerprints"]["skipped_images"] == {"en": 1, "fr": 1}
    assert 0.0 <= summary["initial_matching_precision"] <= 1.0
    assert summary["fingerprints"]["initial_matching"]["n_pivots"] == n
    assert 0.0 <= summary["p@1"] <= 1.0 and summary["evaluation"]["p@1"] == summary["p@1"]
    # progress went to stderr, languages were read from the file names, stdout is just the JSON line
    assert "[images]" in r.stderr and "[text:en]" in r.stderr and "(from the file name" in r.stderr
    assert len(lines) == 1
    from services.alignment.mapping import Mapping

    saved = Mapping.load(out)
    assert saved.params["seed"] == "fingerprints" and saved.stats["pivot_pairs"] == n
    assert list((tmp_path / "cache" / "images").glob("*.npy"))


def test_align_fingerprints_clip_from_settings(setup, tmp_path, monkeypatch):
    d, ckpt, images = setup
    spec = {"model": "vislex-tiny-walip", "checkpoint": str(ckpt), "model_config": TINY, "device": "cpu"}
    monkeypatch.setenv("VISLEX_CLIP_MODELS", json.dumps({"en": spec, "fr": spec}))
    monkeypatch.setenv("VISLEX_IMAGES_DIR", str(images))
    monkeypatch.setenv("VISLEX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("VISLEX_CLIP_TEMPLATES", json.dumps({"en": ["{}"], "fr": ["{}"]}))
    r = _cli("align", d / "wiki.en.vec", d / "wiki.fr.vec", "--method", "walip", "--seed", "fingerprints",
             "--src-lang", "en", "--tgt-lang", "fr", "--fingerprint-option", "q=0", "--option", "max_iter=2",
             "--out", tmp_path / "m.npz")
    assert r.exit_code == 0, r.output
    summary = _strict(r.stdout.strip().splitlines()[-1])
    assert summary["seed"] == "fingerprints" and summary["pivot_pairs"] > 0
    assert "initial_matching_precision" not in summary and "p@1" not in summary  # no --eval-dictionary
    assert summary["fingerprints"]["src_encoder"].startswith("vislex-tiny-walip")
    assert list((tmp_path / "data" / "cache" / "images").glob("*.npy"))


def test_align_fingerprints_missing_images_dir(setup, tmp_path):
    d, ckpt, _ = setup
    r = _cli("align", d / "wiki.en.vec", d / "wiki.fr.vec", "--method", "walip", "--seed", "fingerprints",
             "--images", tmp_path / "no-such-dir", *_clip_args(ckpt), "--out", tmp_path / "m.npz")
    _one_line_error(r, "image set unavailable", "no-such-dir")
    assert not (tmp_path / "m.npz").exists()


def test_align_fingerprints_without_clip_weights(setup, tmp_path, monkeypatch):
    d, _, images = setup
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = _cli("align", d / "wiki.en.vec", d / "wiki.fr.vec", "--method", "walip", "--seed", "fingerprints",
             "--images", images, "--clip-model", "ViT-B-32", "--clip-pretrained", "laion2b_s34b_b79k",
             "--out", tmp_path / "m.npz")
    _one_line_error(r, "CLIP encoder for language 'en' is unavailable", "ViT-B-32:laion2b_s34b_b79k", "not in the cache")
    r = _cli("align", d / "wiki.en.vec", d / "wiki.fr.vec", "--method", "walip", "--seed", "fingerprints",
             "--images", images, "--clip-model", "ViT-B-32", "--out", tmp_path / "m.npz")
    _one_line_error(r, "neither a pretrained tag nor a checkpoint")


def test_align_fingerprints_needs_languages(setup, tmp_path):
    d, ckpt, images = setup
    src = tmp_path / "source.vec"
    src.write_text((d / "wiki.en.vec").read_text(encoding="utf-8"), encoding="utf-8")
    r = _cli("align", src, d / "wiki.fr.vec", "--method", "walip", "--seed", "fingerprints", "--images", images,
             *_clip_args(ckpt), "--out", tmp_path / "m.npz")
    _one_line_error(r, "--src-lang", "source.vec")


def test_images_only_with_fingerprint_seed(setup, tmp_path):
    d, _, images = setup
    r = _cli("align", d / "wiki.en.vec", d / "wiki.fr.vec", "--method", "procrustes", "--seed", "identical",
             "--images", images, "--out", tmp_path / "m.npz")
    _one_line_error(r, "--seed fingerprints")


def test_pivots_json_is_strict_when_precision_is_undefined(setup, tmp_path):
    d, ckpt, images = setup
    (tmp_path / "oov.txt").write_text("zzz yyy\n", encoding="utf-8")  # no evaluable pivot: precision undefined
    r = _cli("pivots", d / "wiki.en.vec", d / "wiki.fr.vec", "--images", images, "--src-lang", "en",
             "--tgt-lang", "fr", "--out", tmp_path / "p.txt", *_clip_args(ckpt), "--dictionary", tmp_path / "oov.txt",
             "--cache-dir", tmp_path / "cache")
    assert r.exit_code == 0, r.output
    line = r.stdout.strip().splitlines()[-1]
    assert "NaN" not in line
    summary = _strict(line)
    assert summary["initial_matching"]["precision"] is None and summary["initial_matching"]["n_evaluable"] == 0


def test_pivots_bad_templates_file_is_one_line(setup, tmp_path):
    d, ckpt, images = setup
    (tmp_path / "t.json").write_text(json.dumps({"en": ["{} and {}"]}), encoding="utf-8")
    r = _cli("pivots", d / "wiki.en.vec", d / "wiki.fr.vec", "--images", images, "--src-lang", "en",
             "--tgt-lang", "fr", "--out", tmp_path / "p.txt", *_clip_args(ckpt), "--templates", tmp_path / "t.json")
    _one_line_error(r, "--templates", "exactly one")


def test_align_with_two_compact_clips_trained_on_disjoint_photos(tmp_path):
    """The issue-15 setting from the command line: a CLIP per language (static towers, disjoint photos), pivots over
    held-out photos, union with identical strings, step 2 -- the planted rotation is recovered."""
    from services.clip.testing import COLOURS
    from services.vision.testing import tiny_language_clips

    tiny = tiny_language_clips(tmp_path / "tiny")
    (tmp_path / "bare.json").write_text(json.dumps({"en": ["{}"], "fr": ["{}"]}), encoding="utf-8")
    (tmp_path / "test.txt").write_text("".join(f"{en} {fr}\n" for en, (_, fr) in COLOURS.items()), encoding="utf-8")
    r = _cli("align", tiny.vectors["en"], tiny.vectors["fr"], "--method", "walip", "--seed", "fingerprints+identical",
             "--images", tiny.fingerprint_images, "--clip-checkpoint", tiny.checkpoints["en"],
             "--tgt-clip-checkpoint", tiny.checkpoints["fr"], "--src-lang", "en", "--tgt-lang", "fr",
             "--templates", tmp_path / "bare.json", "--fingerprint-option", "min_caption_df=1",
             "--fingerprint-option", "filter_visual=false", "--eval-dictionary", tmp_path / "test.txt",
             "--out", tmp_path / "map.npz", "--cache-dir", tmp_path / "cache")
    assert r.exit_code == 0, r.output
    summary = _strict(r.stdout.strip().splitlines()[-1])
    assert summary["seed"] == "fingerprints+identical" and summary["identical_pairs"] == 2  # orange, cyan
    assert summary["pivot_pairs"] == 12 and 12 <= summary["seed_pairs"] <= 14
    assert summary["initial_matching_precision"] >= 0.6
    assert summary["p@1"] == 1.0
    assert summary["fingerprints"]["src_visual_words"] == 12  # the caption vocabulary: the colour words only
