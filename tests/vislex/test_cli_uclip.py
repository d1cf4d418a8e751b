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


# ---------------------------------------------------------------------------------------------
# uCLIP for real on tiny data: an English-only compact CLIP (pixels tower + static vectors), heads trained with
# no pairs, evaluated through `vislex uclip evaluate --captions multi30k` on Flickr-named photos
# ---------------------------------------------------------------------------------------------


class AlignedEncoder(HashingTextEncoder):
    """A stand-in multilingual encoder: French colour words embed as their English translations."""

    def __init__(self):
        from services.clip.testing import COLOURS

        super().__init__(dim=48, languages=("en", "fr"), name="aligned-48")
        self.to_en = {fr: en for en, (_, fr) in COLOURS.items()} | {"une": "a", "image": "picture", "de": "of"}

    def _token_vector(self, token: str) -> np.ndarray:
        return super()._token_vector(self.to_en.get(token, token))


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """Photos dealt into disjoint sets: clip (English CLIP training), queries, images (bank V), texts (bank M), test."""
    import gzip

    from services.clip.testing import make_captioned_set
    from services.clip.training import run_clip_training

    d = tmp_path_factory.mktemp("uclip-real")
    paths = make_captioned_set(d / "data", n_images=144, seed=2)
    lines = [line.split("\t") for line in paths["captions"].read_text(encoding="utf-8").splitlines()]
    names = sorted({im for im, _ in lines})
    sets = {"clip": names[:48], "queries": names[48:72], "images": names[72:96], "texts": names[96:120],
            "test": names[120:]}
    owner = {n: k for k, v in sets.items() for n in v}
    assert sum(map(len, sets.values())) == len(names) == len(owner)  # disjoint and complete
    en = [(im, c) for im, c in lines if not c.startswith("une ")]
    fr = {im: c for im, c in lines if c.startswith("une ")}
    (d / "en.tsv").write_text("".join(f"{im}\t{c}\n" for im, c in en if owner[im] == "clip"), encoding="utf-8")
    clip = run_clip_training({"images_dir": str(paths["images"]), "captions": str(d / "en.tsv"),
                              "image_tower": "pixels-8", "text_tower": f"static:{paths['vectors']}",
                              "language": "en", "out_dir": str(d), "checkpoint_name": "clip-en.pt",
                              "config": {"head": "linear", "epochs": 40, "batch_size": 16, "val_fraction": 0.2,
                                         "lr": 1e-2, "patience": 40, "embed_dim": 32}})["checkpoint"]
    bank = d / "bank"
    bank.mkdir()
    for n in sets["images"]:
        (bank / n).write_bytes((paths["images"] / n).read_bytes())
    # Multi30K layout over ALL photos (Flickr30k-style names <id>.jpg); the test photos Flickr8k-style <id>_<secret>
    ids = {n: str(1000 + i) for i, n in enumerate(names)}
    m30k = d / "multi30k"
    m30k.mkdir()
    (m30k / "train.txt").write_text("".join(f"{ids[n]}.jpg\n" for n in names), encoding="utf-8")
    en_one = {}
    for im, c in en:
        en_one.setdefault(im, c)
    for lang, table in (("en", en_one), ("fr", fr)):
        with gzip.open(m30k / f"train.{lang}.gz", "wt", encoding="utf-8") as fh:
            fh.write("".join(table[n] + "\n" for n in names))
    test_dir = d / "test-photos"
    test_dir.mkdir()
    for n in sets["test"]:
        (test_dir / f"{ids[n]}_abc{ids[n][-2:]}.png").write_bytes((paths["images"] / n).read_bytes())
    queries = [c for im, c in en if owner[im] == "queries"]
    texts = [fr[n] for n in sets["texts"]]
    return {"dir": d, "clip": clip, "bank": bank, "queries": queries, "texts": texts, "m30k": m30k,
            "test_dir": test_dir, "sets": sets}


def test_uclip_heads_with_no_pairs_carry_french_queries_to_photos(real, tmp_path, monkeypatch):
    from models import text_encoders
    from models.clip import ClipSpec, load_clip
    from services.retrieval.training import run_uclip_training

    monkeypatch.setattr(text_encoders, "load_text_encoder", lambda name: AlignedEncoder())
    clip = load_clip(ClipSpec(checkpoint=real["clip"]))
    assert clip.languages == ("en",)  # trained on English captions only
    result = run_uclip_training({"queries": real["queries"], "images_dir": str(real["bank"]), "texts": real["texts"],
                                 "data_dir": str(tmp_path), "output": str(tmp_path / "heads.pt"), "activate": False,
                                 "config": {"epochs": 30, "batch_size": 16, "lr": 3e-3, "device": "cpu",
                                            "heads": {"hidden_dim": 64, "out_dim": 32}}},
                                clip=clip, text_encoder=AlignedEncoder())
    # distinct texts only (12 colours: the same caption recurs)
    assert result["counts"] == {"queries": len(set(real["queries"])), "images": 24, "texts": len(set(real["texts"])),
                                "images_dir": str(real["bank"])}
    r = CliRunner().invoke(_cli(), ["uclip", "evaluate", "--heads", result["checkpoint"], "--clip-checkpoint", real["clip"],
                                    "--no-classification", "--captions", "multi30k", "--captions-dir", str(real["m30k"]),
                                    "--caption-split", "train", "--caption-images", str(real["test_dir"]),
                                    "--langs", "en,fr", "--data-dir", str(tmp_path), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["caption_photos"] == {"found": 24, "listed": 144, "split": "train"}
    rows = {(row["model"], row["lang"]): row for row in report["captions"]}
    assert set(rows) == {(m, lang) for m in ("clip (no heads)", "uclip heads") for lang in ("en", "fr")}
    assert all(row["images"] == 24 for row in rows.values())
    floor, heads = rows[("clip (no heads)", "fr")], rows[("uclip heads", "fr")]
    # 12 colours, 2 test photos each: R@5 can reach 100; the English CLIP reads French as noise
    assert heads["t2i R@5"] >= 80.0 and heads["i2t R@5"] >= 80.0
    assert heads["t2i R@5"] >= floor["t2i R@5"] + 30.0
    assert rows[("clip (no heads)", "en")]["t2i R@5"] >= 80.0  # the frozen CLIP itself works in English


def test_uclip_heads_serve_french_gallery_search_and_classify_over_http(real, make_client, tmp_path, monkeypatch):
    """The English-only compact CLIP as the service's CLIP and the no-pair heads active: French queries find photos."""
    import app.wiring.retrieval as wiring
    from models.clip import ClipSpec, load_clip
    from services.clip.testing import COLOURS
    from services.retrieval.training import run_uclip_training

    heads = run_uclip_training({"queries": real["queries"], "images_dir": str(real["bank"]), "texts": real["texts"],
                                "data_dir": str(tmp_path), "output": str(tmp_path / "heads.pt"), "activate": False,
                                "config": {"epochs": 30, "batch_size": 16, "lr": 3e-3, "device": "cpu",
                                           "heads": {"hidden_dim": 64, "out_dim": 32}}},
                               clip=load_clip(ClipSpec(checkpoint=real["clip"])), text_encoder=AlignedEncoder())
    monkeypatch.setattr(wiring, "_load_text_encoder", lambda settings: AlignedEncoder())
    photos = sorted(real["test_dir"].iterdir())
    with make_client(clip_checkpoint=real["clip"], uclip_checkpoint=heads["checkpoint"]) as c:
        gallery = c.post("/v1/galleries", json={"name": "test"}).json()["id"]
        files = [("files", (p.name, p.read_bytes(), "image/png")) for p in photos]
        r = c.post(f"/v1/galleries/{gallery}/images", files=files)
        assert r.status_code == 201, r.text
        colour_of = {}  # the test photos' colours, from their pixels' nearest planted colour
        for p in photos:
            from PIL import Image

            mean = np.asarray(Image.open(p).convert("RGB"), dtype=float).mean(axis=(0, 1))
            colour_of[p.name] = min(COLOURS, key=lambda k: np.linalg.norm(mean - np.asarray(COLOURS[k][0])))
        hits = 0
        for en, (_, fr) in COLOURS.items():
            r = c.get(f"/v1/galleries/{gallery}/search", params={"q": f"une photo {fr}", "lang": "fr", "k": 2})
            assert r.status_code == 200, r.text
            hits += sum(colour_of[x["filename"]] == en for x in r.json()["results"])
        assert hits >= 18  # of 24 (12 colours x their 2 photos); chance ~ 2
        right = 0
        for p in photos:
            r = c.post("/v1/classify", files={"file": (p.name, p.read_bytes(), "image/png")},
                       data={"labels": [fr for _, fr in COLOURS.values()], "lang": "fr", "templates": ["une photo {}"]})
            assert r.status_code == 200, r.text
            right += r.json()["results"][0]["label"] == COLOURS[colour_of[p.name]][1]
        assert right >= 16  # of 24; chance 2
