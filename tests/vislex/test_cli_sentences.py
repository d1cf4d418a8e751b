"""``vislex sentences evaluate`` on a Globetrotter checkpoint with static per-language towers (tiny, planted)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import torch
from typer.testing import CliRunner

from tests.conftest import write_npy_space

EN = ["dog", "cat", "car", "red", "runs", "sleeps", "two", "kids"]
DE = ["hund", "katze", "auto", "rotes", "läuft", "schläft", "zwei", "kinder"]
SENT_EN = ["a dog runs", "the cat sleeps", "a red car", "two kids run"]
SENT_DE = ["ein Hund läuft", "die Katze schläft", "ein rotes Auto", "zwei Kinder"]


def _checkpoint(tmp_path):
    """Word vectors where a German word has its English translation's vector; identity heads."""
    from models.globetrotter import GlobetrotterConfig, GlobetrotterHeads, save_checkpoint

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((len(EN), 12)).astype(np.float32)
    en = write_npy_space(tmp_path / "vec", "en", EN, vectors)
    de = write_npy_space(tmp_path / "vec", "de", DE, vectors + 0.01 * rng.standard_normal(vectors.shape))
    heads = GlobetrotterHeads(GlobetrotterConfig(image_dim=4, text_dims={"en": 12, "de": 12}, embed_dim=12))
    with torch.no_grad():
        for key in ("l_en", "l_de"):
            heads.text[key].linear.weight.copy_(torch.eye(12))
            heads.text[key].linear.bias.zero_()
    return save_checkpoint(tmp_path / "g.pt", heads, image_tower="pixels-8",
                           text_towers={"en": f"static:{en}", "de": f"static:{de}"})


def test_evaluate_checkpoint_with_static_towers(tmp_path):
    from vislex.cli import app

    ckpt = _checkpoint(tmp_path)
    (tmp_path / "t.en").write_text("\n".join(SENT_EN) + "\n", encoding="utf-8")
    with gzip.open(tmp_path / "t.de.gz", "wt", encoding="utf-8") as fh:
        fh.write("\n".join(SENT_DE) + "\n")
    runner = CliRunner()
    res = runner.invoke(app, ["sentences", "evaluate", "--model", str(ckpt), f"en={tmp_path / 't.en'}",
                              f"de={tmp_path / 't.de.gz'}"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["pairs"]["en-de"]["p@1"] == 100.0 and out["pairs"]["de-en"]["p@1"] == 100.0
    assert out["metric"] == 100.0 and out["sentences"] == 4 and out["model_key"].startswith("g")
    # French: the checkpoint has no French tower -> one error line naming the supported languages
    (tmp_path / "t.fr").write_text("\n".join(SENT_EN) + "\n", encoding="utf-8")
    res = runner.invoke(app, ["sentences", "evaluate", "--model", str(ckpt), f"en={tmp_path / 't.en'}",
                              f"fr={tmp_path / 't.fr'}"])
    assert res.exit_code == 1 and "supported: de, en" in res.output
    (tmp_path / "short.de").write_text("ein Hund\n", encoding="utf-8")
    res = runner.invoke(app, ["sentences", "evaluate", "--model", str(ckpt), f"en={tmp_path / 't.en'}",
                              f"de={tmp_path / 'short.de'}"])
    assert res.exit_code == 1 and "differ in length" in res.output
    res = runner.invoke(app, ["sentences", "evaluate", "--model", str(tmp_path / "nope.pt"), f"en={tmp_path / 't.en'}",
                              f"de={tmp_path / 't.de.gz'}"])
    assert res.exit_code == 1 and "no sentence model" in res.output


def test_train_writes_a_versioned_checkpoint_the_evaluator_and_service_use(tmp_path):
    from services.sentences.models import load_sentence_model, resolve_model
    from tests.conftest import write_random_pngs
    from vislex.cli import app

    _checkpoint(tmp_path)  # writes the vectors
    images = write_random_pngs(tmp_path / "photos", 24)
    en_tsv, de_tsv, both = tmp_path / "en.tsv", tmp_path / "de.tsv", tmp_path / "both.tsv"
    en_tsv.write_text("".join(f"img{i}.png\t{SENT_EN[i % 4]}\n" for i in range(12)), encoding="utf-8")
    de_tsv.write_text("".join(f"img{i}.png\t{SENT_DE[i % 4]}\n" for i in range(12, 24)), encoding="utf-8")
    both.write_text("img0.png\tein Hund\n", encoding="utf-8")
    base = ["sentences", "train", "--images", str(images), "--image-tower", "pixels-8",
            "--text-tower", f"en=static:{tmp_path / 'vec' / 'en.npy'}", "--text-tower",
            f"de=static:{tmp_path / 'vec' / 'de.npy'}", "--data-dir", str(tmp_path / "data"),
            "--config", json.dumps({"epochs": 2, "batch_size": 8, "embed_dim": 8, "val_fraction": 0.25})]
    runner = CliRunner()
    res = runner.invoke(app, base + ["--captions", f"en={en_tsv}", "--captions", f"de={both}"])
    assert res.exit_code == 1 and "ONE language" in res.output
    res = runner.invoke(app, base + ["--captions", f"en={en_tsv}", "--captions", f"de={de_tsv}", "--activate"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["checkpoint"].endswith(f"globetrotter-{out['version']}.pt") and out["activated"]
    assert out["data"]["languages"] == {"de": {"images": 12, "captions": 12}, "en": {"images": 12, "captions": 12}}
    model = load_sentence_model(resolve_model(f"globetrotter-{out['version']}", tmp_path / "data"))
    assert model.key == out["version"] and model.supported() == ["de", "en"]
    assert model.encode(["ein Hund"], "de").shape == (1, 8)
    pointer = json.loads((tmp_path / "data" / "sentences" / "model.json").read_text())
    assert pointer["value"] == out["checkpoint"]
