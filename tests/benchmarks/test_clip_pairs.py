"""benchmarks/clip_pairs.py: the text-only Multi30K pairs (``map_pairs="photos+text"``) leave out every line of any of
our photos (training, validation or dev), match photos by Flickr id, skip blank lines, and keep lines aligned."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.clip_pairs import join_pairs, text_only_lines, text_only_pairs  # noqa: E402


def _multi30k(folder: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    """rows: (image, en, de, fr) lines of a fake Multi30K ``train`` split."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text("\n".join(r[0] for r in rows) + "\n", encoding="utf-8")
    for k, lang in enumerate(("en", "de", "fr"), start=1):
        with gzip.open(folder / f"train.{lang}.gz", "wt", encoding="utf-8") as fh:
            fh.write("\n".join(r[k] for r in rows) + "\n")
    return folder


ROWS = [("111.jpg", "a dog runs", "ein Hund rennt", "un chien court"),      # a training photo of ours
        ("222.jpg", "two men talk", "zwei Männer reden", "deux hommes parlent"),  # a validation photo of ours
        ("333.jpg", "a red car", "ein rotes Auto", "une voiture rouge"),     # a dev photo of ours
        ("444.jpg", "a cat sleeps", "eine Katze schläft", "un chat dort"),   # no photo of ours
        ("555.jpg", "kids play", "", "des enfants jouent"),                  # no photo; German line blank
        ("666.jpg", "a boat", "ein Boot", "un bateau")]                     # no photo
OURS = ["111_abc.jpg", "222_def.jpg", "333_0a1.jpg"]


def test_text_only_lines_leave_out_every_line_of_our_photos(tmp_path):
    folder = _multi30k(tmp_path / "m30k", ROWS)
    src, pos, tr = text_only_lines(folder, OURS, ["de", "fr"])
    assert src == ["a cat sleeps", "kids play", "a boat"]
    assert tr["de"] == ["eine Katze schläft", "ein Boot"] and list(pos["de"]) == [0, 2]
    assert tr["fr"] == ["un chat dort", "des enfants jouent", "un bateau"] and list(pos["fr"]) == [0, 1, 2]
    ours_text = {t for r in ROWS[:3] for t in r[1:]}
    assert not ours_text & set(src + tr["de"] + tr["fr"])
    # without photos of ours every non-blank line is a pair; a validation photo given by file name is left out
    assert len(text_only_lines(folder, [], ["de"])[0]) == 6
    assert "two men talk" not in text_only_lines(folder, ["222_zzz.jpg"], ["de"])[0]
    bad = _multi30k(tmp_path / "bad", ROWS)
    with gzip.open(bad / "train.de.gz", "wt", encoding="utf-8") as fh:
        fh.write("only one line\n")
    with pytest.raises(ValueError):
        text_only_lines(bad, OURS, ["de"])


class _Tower:
    """A text tower whose rows name their caption (a hash), with the identity the cache keys on."""
    identity = "fake-tower"
    parts = None
    calls = 0

    def encode_text(self, texts, batch_size=256):
        _Tower.calls += 1
        return np.asarray([[hash(t) % 97, len(t), 1.0] for t in texts], dtype=np.float32)


def test_text_only_pairs_are_aligned_rows_of_no_photo_and_cached(tmp_path):
    folder = _multi30k(tmp_path / "m30k", ROWS)
    tower, cache = _Tower(), tmp_path / "cache"
    pairs = text_only_pairs(tower, folder, OURS, ["de", "fr"], cache)
    assert pairs["tgt_lang"] == ["de", "de", "fr", "fr", "fr"] and list(pairs["owner"]) == [-1] * 5
    expect_src = ["a cat sleeps", "a boat", "a cat sleeps", "kids play", "a boat"]
    expect_tgt = ["eine Katze schläft", "ein Boot", "un chat dort", "des enfants jouent", "un bateau"]
    assert np.array_equal(pairs["src"], tower.encode_text(expect_src))
    assert np.array_equal(pairs["tgt"], tower.encode_text(expect_tgt))
    calls = _Tower.calls
    again = text_only_pairs(tower, folder, OURS, ["de", "fr"], cache)  # a rerun reads the tower cache
    assert _Tower.calls == calls and np.array_equal(again["tgt"], pairs["tgt"])
    photo = {"src": pairs["src"][:1], "tgt": pairs["tgt"][:1], "owner": np.asarray([7]), "src_lang": ["en"],
             "tgt_lang": ["de"]}
    joined = join_pairs(photo, pairs)
    assert list(joined["owner"]) == [7] + [-1] * 5 and len(joined["src"]) == len(joined["tgt"]) == 6
