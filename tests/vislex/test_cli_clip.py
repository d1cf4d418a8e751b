"""`vislex clip train|evaluate|zero-shot` on the tiny planted colour set (no shared data needed)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from services.clip.testing import make_captioned_set


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from vislex.cli import app

    d = tmp_path_factory.mktemp("cli-clip")
    paths = make_captioned_set(d / "data", n_images=96)
    out = d / "model" / "clip.pt"
    result = CliRunner().invoke(app, ["clip", "train", "--images", str(paths["images"]), "--captions",
                                      str(paths["captions"]), "--image-tower", "pixels-8", "--text-tower",
                                      f"static:{paths['vectors']}", "--head", "linear", "--epochs", "15",
                                      "--out", str(out), "--cache-dir", str(d / "cache")])
    assert result.exit_code == 0, result.output
    return d, paths, out, json.loads(result.stdout.strip().splitlines()[-1])


def test_train_prints_the_result_as_its_last_line(trained):
    _, _, out, result = trained
    assert result["checkpoint"] == str(out) and out.is_file()
    assert result["metrics"]["val"]["t2i"]["r@10"] > 50
    assert result["data"]["images"] == 96


def test_evaluate_prints_recalls_far_above_chance(trained):
    from vislex.cli import app

    d, paths, out, _ = trained
    r = CliRunner().invoke(app, ["clip", "evaluate", "--checkpoint", str(out), "--images", str(paths["images"]),
                                 "--captions", str(paths["captions"]), "--cache-dir", str(d / "cache")])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["images"] == 96 and got["captions"] == 288
    # 96 photos of 12 colours (8 each): chance R@10 is about 10 %, a colour-perfect model reaches 100

    assert got["t2i"]["r@10"] > 50 and set(got["i2t"]) == {"r@1", "r@5", "r@10"}


def test_bad_inputs_exit_1_with_one_clear_line(trained, tmp_path):
    from vislex.cli import app

    d, paths, out, _ = trained
    tsv = tmp_path / "bad.tsv"
    tsv.write_text("nowhere.png\ta red photo\n")
    r = CliRunner().invoke(app, ["clip", "evaluate", "--checkpoint", str(out), "--images", str(paths["images"]),
                                 "--captions", str(tsv)])
    assert r.exit_code == 1 and "nowhere.png" in r.output
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    r = CliRunner().invoke(app, ["clip", "train", "--images", str(paths["images"]), "--captions", str(empty),
                                 "--image-tower", "pixels-8", "--text-tower", f"static:{paths['vectors']}",
                                 "--out", str(tmp_path / "x.pt")])
    assert r.exit_code == 1 and "no 'image<TAB>caption' lines" in r.output
    r = CliRunner().invoke(app, ["clip", "evaluate", "--checkpoint", str(tsv), "--images", str(paths["images"]),
                                 "--captions", str(paths["captions"])])
    assert r.exit_code == 1 and "not a readable checkpoint" in r.output


def test_train_with_caption_languages_stores_text_centres(trained, tmp_path):
    """--captions-language/--extra-captions: the captions' languages are known, so the checkpoint carries one
    text centre per language (the default centring); a malformed --extra-captions is one clear line."""
    import torch

    from vislex.cli import app

    d, paths, _, _ = trained
    de = tmp_path / "captions.de.tsv"
    de.write_text(paths["captions"].read_text(encoding="utf-8"), encoding="utf-8")
    common = ["clip", "train", "--images", str(paths["images"]), "--captions", str(paths["captions"]),
              "--image-tower", "pixels-8", "--text-tower", f"static:{paths['vectors']}", "--epochs", "2",
              "--cache-dir", str(d / "cache")]
    r = CliRunner().invoke(app, [*common, "--captions-language", "en", "--extra-captions", f"de={de}",
                                 "--out", str(tmp_path / "ml.pt")])
    assert r.exit_code == 0, r.output
    blob = torch.load(tmp_path / "ml.pt", map_location="cpu", weights_only=False)
    assert sorted(blob["text_centres"]) == ["de", "en"]
    r = CliRunner().invoke(app, [*common, "--captions-language", "en", "--extra-captions", f"de={de}",
                                 "--centring", "none", "--out", str(tmp_path / "plain.pt")])
    assert r.exit_code == 0, r.output
    assert "text_centres" not in torch.load(tmp_path / "plain.pt", map_location="cpu", weights_only=False)
    r = CliRunner().invoke(app, [*common, "--extra-captions", str(de), "--out", str(tmp_path / "x.pt")])
    assert r.exit_code == 1 and "LANG=TSV" in r.output


def test_train_with_text_only_translations(trained, tmp_path):
    """--translations LANG=TSV: LANG's map is fitted on the text-only pairs (reported in the JSON line); a
    malformed option or a missing --captions-language is one clear error line."""
    from services.clip.testing import COLOURS
    from vislex.cli import app

    d, paths, _, _ = trained
    de = tmp_path / "captions.de.tsv"  # one "German" line per photo: English (three per photo) is the pivot
    firsts = {}
    for line in paths["captions"].read_text(encoding="utf-8").splitlines():
        firsts.setdefault(line.split("\t")[0], line)
    de.write_text("\n".join(firsts.values()) + "\n", encoding="utf-8")
    pairs = tmp_path / "en-de.tsv"
    pairs.write_text("".join(f"a {c} photo\tune photo {fr}\n" for c, (_, fr) in COLOURS.items()) * 8, encoding="utf-8")
    common = ["clip", "train", "--images", str(paths["images"]), "--captions", str(paths["captions"]),
              "--image-tower", "pixels-8", "--text-tower", f"static:{paths['vectors']}", "--epochs", "2",
              "--cache-dir", str(d / "cache"), "--extra-captions", f"de={de}"]
    r = CliRunner().invoke(app, [*common, "--captions-language", "en", "--translations", f"de={pairs}",
                                 "--out", str(tmp_path / "tr.pt")])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output.strip().splitlines()[-1])
    assert out["metrics"]["map_sources"] == {"de": "translation"}
    assert out["metrics"]["translation_pairs"] == {"de": 8 * len(COLOURS)}
    r = CliRunner().invoke(app, [*common, "--captions-language", "en", "--translations", str(pairs),
                                 "--out", str(tmp_path / "x.pt")])
    assert r.exit_code == 1 and "--translations takes LANG=TSV" in r.output
    r = CliRunner().invoke(app, [*common, "--translations", f"de={pairs}", "--out", str(tmp_path / "y.pt")])
    assert r.exit_code == 1 and "captions_language" in r.output
    # translations onto a language that is not the pivot: refused before any encoding
    de_many = tmp_path / "captions.de-many.tsv"
    de_many.write_text(paths["captions"].read_text(encoding="utf-8") * 2, encoding="utf-8")
    r = CliRunner().invoke(app, [*common[:-2], "--extra-captions", f"de={de_many}", "--captions-language", "en",
                                 "--translations", f"de={pairs}", "--out", str(tmp_path / "z.pt")])
    assert r.exit_code == 1 and "must then have the most captions" in r.output
