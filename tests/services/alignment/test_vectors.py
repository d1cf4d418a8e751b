"""Word-vector I/O: the three formats, max-vocab, bad rows reported with line numbers (normalisation: test_normalization.py)."""

from __future__ import annotations

import numpy as np
import pytest

from services.alignment.vectors import (
    VectorFileError,
    WordVectors,
    load_vectors,
    save_vectors,
)
from services.errors import InvalidInput


@pytest.fixture(scope="module")
def small_space() -> WordVectors:
    rng = np.random.default_rng(3)
    words = ["the", "chat", "maison", "été", "naïve", "x\u00a0y"]  # non-ASCII and U+00A0 inside a word
    return WordVectors(words, rng.standard_normal((len(words), 5)).astype(np.float32))


def write_bytes(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", ["v.vec", "v.txt", "v.vec.gz", "v.npy"])
def test_save_load_roundtrip(tmp_path, small_space, name):
    path = tmp_path / name
    save_vectors(path, small_space)
    loaded = load_vectors(path)
    assert loaded.words == small_space.words
    np.testing.assert_allclose(loaded.vectors, small_space.vectors, rtol=1e-5, atol=1e-6)
    assert loaded.vectors.dtype == np.float32
    assert loaded.index["maison"] == 2 and loaded.dim == 5 and len(loaded) == 6


def test_npy_roundtrip_is_bit_exact_and_fingerprint_stable(tmp_path, small_space):
    save_vectors(tmp_path / "s.npy", small_space)
    loaded = load_vectors(tmp_path / "s.npy")
    assert (tmp_path / "s.vocab.txt").is_file()
    assert loaded.fingerprint() == small_space.fingerprint()
    assert len(loaded.fingerprint()) == 16
    changed = WordVectors(list(small_space.words), small_space.vectors.copy())
    changed.vectors[0, 0] += 1e-3
    assert changed.fingerprint() != small_space.fingerprint()
    renamed = WordVectors(["THE"] + small_space.words[1:], small_space.vectors)
    assert renamed.fingerprint() != small_space.fingerprint()


def test_text_without_header_tabs_and_trailing_spaces(tmp_path):
    path = write_bytes(tmp_path / "a.vec", b"foo 1 2 3 \nbar\t4 5 6\r\n\nbaz 7 8 9\n")
    wv = load_vectors(path)
    assert wv.words == ["foo", "bar", "baz"]
    np.testing.assert_array_equal(wv.vectors, np.arange(1, 10, dtype=np.float32).reshape(3, 3))


def test_max_vocab_keeps_first_words_in_every_format(tmp_path, small_space):
    for name in ("m.vec", "m.npy"):
        save_vectors(tmp_path / name, small_space)
        wv = load_vectors(tmp_path / name, max_vocab=3)
        assert wv.words == small_space.words[:3]
        assert wv.vectors.shape == (3, 5)


def test_max_vocab_stops_before_later_bad_rows(tmp_path):
    path = write_bytes(tmp_path / "t.vec", b"2 2\na 1 2\nb 3 4\nc 5\n")
    assert load_vectors(path, max_vocab=2).words == ["a", "b"]
    with pytest.raises(VectorFileError):
        load_vectors(path)


def test_float16_on_request(tmp_path, small_space):
    save_vectors(tmp_path / "h.npy", small_space)
    assert load_vectors(tmp_path / "h.npy", dtype=np.float16).vectors.dtype == np.float16


def test_bad_text_rows_reported_with_line_numbers(tmp_path):
    content = (
        b"6 2\n"          # line 1 header
        b"foo 1 2\n"      # 2 ok
        b"bar 1\n"        # 3 wrong length
        b"foo 3 4\n"      # 4 duplicate of line 2
        b"ba\xffz 1 2\n"  # 5 non-UTF-8
        b"q nan 1\n"      # 6 NaN
        b"r 1 inf\n"      # 7 inf
        b"s 1 abc\n"      # 8 not a number
        b"ok 5 6\n"       # 9 ok
    )
    path = write_bytes(tmp_path / "bad.vec", content)
    with pytest.raises(VectorFileError) as info:
        load_vectors(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in ("line 3", "line 4", "first at line 2", "line 5", "line 6", "line 7", "line 8"):
        assert fragment in message, fragment
    assert "line 9" not in message and "line 2 " not in message
    assert isinstance(info.value, InvalidInput)
    assert info.value.detail["counts"]["NaN/inf rows"] == 2


def test_many_bad_rows_are_capped_and_counted(tmp_path):
    lines = [b"w%d 1 2" % i for i in range(5)] + [b"bad%d 1" % i for i in range(25)]
    path = write_bytes(tmp_path / "many.vec", b"\n".join(lines) + b"\n")
    with pytest.raises(VectorFileError) as info:
        load_vectors(path)
    assert "25 wrong-length rows" in str(info.value)
    assert "(+15 more)" in str(info.value)


def test_header_dimension_disagreeing_with_rows(tmp_path):
    path = write_bytes(tmp_path / "hd.vec", b"2 3\na 1 2\nb 3 4\n")
    with pytest.raises(VectorFileError, match="line 2.*expected 3"):
        load_vectors(path)


def test_truncated_file_against_header(tmp_path):
    path = write_bytes(tmp_path / "tr.vec", b"3 2\na 1 2\nb 3 4\n")
    with pytest.raises(VectorFileError, match="announces 3"):
        load_vectors(path)


def test_npy_problems(tmp_path):
    vectors = np.ones((4, 3), dtype=np.float32)
    vectors[2, 1] = np.nan
    np.save(tmp_path / "n.npy", vectors)
    (tmp_path / "n.vocab.txt").write_bytes(b"a\nb\nc\na\n")
    with pytest.raises(VectorFileError) as info:
        load_vectors(tmp_path / "n.npy")
    assert "line 4" in str(info.value) and "first at line 1" in str(info.value)
    assert "line 3" in str(info.value)  # the NaN row

    (tmp_path / "n.vocab.txt").write_bytes(b"a\nb\nc\n")
    with pytest.raises(VectorFileError, match="3 words, array has 4 rows"):
        load_vectors(tmp_path / "n.npy")

    (tmp_path / "n.vocab.txt").write_bytes(b"a\nb\xfe\nc\nd\n")
    with pytest.raises(VectorFileError, match="line 2"):
        load_vectors(tmp_path / "n.npy", max_vocab=2)

    np.save(tmp_path / "lonely.npy", vectors)
    with pytest.raises(VectorFileError, match="lonely.vocab.txt"):
        load_vectors(tmp_path / "lonely.npy")


def test_unreadable_and_unknown_files(tmp_path):
    with pytest.raises(VectorFileError, match="no such file"):
        load_vectors(tmp_path / "missing.vec")
    write_bytes(tmp_path / "x.csv", b"a,1\n")
    with pytest.raises(VectorFileError, match="format"):
        load_vectors(tmp_path / "x.csv")
    write_bytes(tmp_path / "junk.npy", b"not numpy at all")
    with pytest.raises(VectorFileError):
        load_vectors(tmp_path / "junk.npy")
    write_bytes(tmp_path / "empty.vec", b"")
    with pytest.raises(VectorFileError, match="no word vectors"):
        load_vectors(tmp_path / "empty.vec")


def test_fasttext_bin(tmp_path):
    fasttext = pytest.importorskip("fasttext")
    rng = np.random.default_rng(0)
    vocab = ["chat", "chien", "maison", "rouge", "bleu", "été"]
    text = " ".join(rng.choice(vocab, size=3000))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text, encoding="utf-8")
    model = fasttext.train_unsupervised(str(corpus), dim=8, epoch=1, minCount=1, thread=1, verbose=0)
    model.save_model(str(tmp_path / "m.bin"))
    wv = load_vectors(tmp_path / "m.bin")
    assert set(wv.words) >= set(vocab)
    assert wv.dim == 8
    np.testing.assert_allclose(wv.vectors[wv.index["maison"]], model.get_word_vector("maison"), rtol=1e-6)
    assert load_vectors(tmp_path / "m.bin", max_vocab=2).words == wv.words[:2]
    write_bytes(tmp_path / "fake.bin", b"\x00" * 64)
    with pytest.raises(VectorFileError):
        load_vectors(tmp_path / "fake.bin")


def test_values_overflowing_requested_dtype_are_reported(tmp_path):
    path = write_bytes(tmp_path / "big.vec", b"a 1 2\nb 70000 1\nc 3 4\n")
    assert load_vectors(path).vectors[1, 0] == 70000  # fine in float32
    with pytest.raises(VectorFileError, match="NaN/inf rows: line 2"):
        load_vectors(path, dtype=np.float16)
    np.save(tmp_path / "big.npy", np.array([[1, 2], [1e6, 1]], dtype=np.float32))
    (tmp_path / "big.vocab.txt").write_text("a\nb\n")
    with pytest.raises(VectorFileError, match="line 2"):
        load_vectors(tmp_path / "big.npy", dtype=np.float16)


# ---- untrusted files: sizes a header claims are checked against the file before anything is allocated ----
def _fasttext_header(*, dim=8, bucket=2_000_000, minn=3, maxn=6, words=5, version=12) -> bytes:
    import struct

    args = struct.pack("<12id", dim, 5, 1, 1, 5, 1, 2, 2, bucket, minn, maxn, 100, 1e-4)
    return struct.pack("<ii", 793712314, version) + args + struct.pack("<iiiqq", words, words, 0, 100, -1)


@pytest.fixture()
def no_fasttext_load(monkeypatch):
    """Fails the test if a file reaches fastText's C++ loader (which allocates whatever the header claims)."""
    fasttext = pytest.importorskip("fasttext")
    calls = []
    monkeypatch.setattr(fasttext, "load_model", lambda path: calls.append(path) or pytest.fail("load_model called"))
    return calls


def test_truncated_fasttext_bin_is_refused_before_fasttext_allocates(tmp_path, no_fasttext_load):
    # The drill's file: a valid header claiming 5 dictionary words, then the end of the file. fastText's loader
    # reads past the end forever (GBs, then std::bad_alloc); the check refuses it from the header alone.
    path = write_bytes(tmp_path / "claims.bin", _fasttext_header(words=5))
    with pytest.raises(VectorFileError, match="truncated fastText .bin model") as info:
        load_vectors(path)
    assert "5 words" in info.value.message and no_fasttext_load == []
    cut = _fasttext_header(words=1)[:73]  # ends inside the header
    with pytest.raises(VectorFileError, match="ends inside the header"):
        load_vectors(write_bytes(tmp_path / "cut.bin", cut))


def test_fasttext_bin_whose_sizes_disagree_with_the_file_is_refused(tmp_path, no_fasttext_load):
    import struct

    entry = b"chat\x00" + struct.pack("<qb", 3, 0)
    tail = b"\x00" + struct.pack("<qq", 1, 8)  # quant=false, input matrix claims 1x8 but bucket rows are missing
    with pytest.raises(VectorFileError, match="input matrix is 1x8"):
        load_vectors(write_bytes(tmp_path / "rows.bin", _fasttext_header(words=1, bucket=10) + entry + tail))
    huge = b"\x00" + struct.pack("<qq", 10**12, 8)  # enough rows claimed, but not backed by bytes
    with pytest.raises(VectorFileError, match="more than the 0 bytes left"):
        load_vectors(write_bytes(tmp_path / "huge.bin", _fasttext_header(words=1, bucket=10) + entry + huge))
    with pytest.raises(VectorFileError, match="subword settings"):  # bucket 0 with n-grams: a division by zero
        load_vectors(write_bytes(tmp_path / "b0.bin", _fasttext_header(words=1, bucket=0) + entry))
    with pytest.raises(VectorFileError, match="longer than 4096 bytes"):
        load_vectors(write_bytes(tmp_path / "w.bin", _fasttext_header(words=1) + b"x" * 5000 + entry))
    assert no_fasttext_load == []


def test_gzip_bomb_is_refused_at_the_decompressed_limit(tmp_path):
    import gzip

    path = tmp_path / "bomb.vec.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b"2 3\nchat 0.1 0.2 0.3\n")
        fh.write(b"0" * (8 << 20))  # 8 MB of zeros without a newline, ~8 KB compressed
    assert path.stat().st_size < 100_000
    with pytest.raises(VectorFileError, match="decompressed") as info:
        load_vectors(path, max_decompressed_bytes=1 << 20)
    assert info.value.detail["counts"]


def test_overlong_line_is_refused_without_reading_it_whole(tmp_path, monkeypatch):
    import services.alignment.word_vectors as word_vectors

    monkeypatch.setattr(word_vectors, "MAX_LINE_BYTES", 1000)
    path = write_bytes(tmp_path / "long.vec", b"chat " + b"0.1 " * 2000 + b"\n")
    with pytest.raises(VectorFileError, match="longer than 1000 bytes"):
        load_vectors(path)
