"""Bilingual dictionaries: parsing, bad lines, out-of-vocabulary counting, identical-string seeds."""

from __future__ import annotations

import numpy as np
import pytest

from services.alignment.dictionary import (
    count_uncovered_sources,
    dictionary_to_indices,
    identical_pairs,
    load_dictionary,
    save_dictionary,
)
from services.errors import InvalidInput


def test_space_and_tab_separated_several_targets(tmp_path):
    path = tmp_path / "d.txt"
    path.write_bytes("\ufeffcat chat\ncat  minou\n\nhouse\tmaison\nred rouge\ncat chat\nnaïve\tnaïve\r\n".encode())
    pairs = load_dictionary(path)
    assert pairs == [("cat", "chat"), ("cat", "minou"), ("house", "maison"), ("red", "rouge"), ("naïve", "naïve")]


def test_scored_tsv_roundtrip(tmp_path):
    save_dictionary(tmp_path / "s.tsv", [("cat", "chat", 0.5), ("dog", "chien", 0.25)])
    assert load_dictionary(tmp_path / "s.tsv") == [("cat", "chat"), ("dog", "chien")]


def test_malformed_lines_named(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"cat chat\nonlyone\na b c\nok fine\nbad\xff x\n")
    with pytest.raises(InvalidInput) as info:
        load_dictionary(path)
    message = str(info.value)
    assert "line 2" in message and "line 3" in message and "line 5" in message
    assert "line 1 " not in message and "line 4" not in message


def test_empty_and_missing(tmp_path):
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(InvalidInput, match="dictionary is empty"):
        load_dictionary(tmp_path / "empty.txt")
    with pytest.raises(InvalidInput, match="cannot read"):
        load_dictionary(tmp_path / "nope.txt")


def test_indices_and_oov_counts():
    src = {"cat": 0, "dog": 1, "house": 2}
    tgt = {"chat": 0, "chien": 1, "maison": 2, "minou": 3}
    pairs = [("cat", "chat"), ("cat", "minou"), ("dog", "wau"), ("bird", "oiseau"), ("house", "maison")]
    idx, n_oov = dictionary_to_indices(pairs, src, tgt)
    assert idx.dtype == np.int64 and idx.shape == (3, 2)
    assert idx.tolist() == [[0, 0], [0, 3], [2, 2]]
    assert n_oov == 2
    assert count_uncovered_sources(pairs, src, tgt) == (4, 2)  # dog and bird have no usable pair
    empty, n = dictionary_to_indices([("a", "b")], src, tgt)
    assert empty.shape == (0, 2) and n == 1


def test_identical_pairs():
    pairs = identical_pairs(["paris", "the", "1990", "chat"], ["chat", "paris", "le", "1990"])
    assert pairs.dtype == np.int64
    assert pairs.tolist() == [[0, 1], [2, 3], [3, 0]]
    assert identical_pairs(["a"], ["b"]).shape == (0, 2)
