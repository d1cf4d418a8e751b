"""``vislex align | evaluate | export`` on tiny planted spaces, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from services.alignment.dictionary import load_dictionary
from services.alignment.vectors import WordVectors, load_vectors, save_vectors
from vislex.cli import app
from vislex.commands.alignment import parse_options

REPO_ROOT = Path(__file__).resolve().parents[2]
N_WORDS, DIM = 120, 12


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Source .vec and target .npy related by a rotation; target word i translates source word i."""
    rng = np.random.default_rng(21)
    X = rng.standard_normal((N_WORDS, DIM)).astype(np.float32)
    R, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
    Y = (X @ R + 0.01 * rng.standard_normal((N_WORDS, DIM))).astype(np.float32)
    src_words = [f"s{i}" for i in range(N_WORDS)]
    tgt_words = [f"t{i}" for i in range(N_WORDS)]
    root = tmp_path_factory.mktemp("cli")
    save_vectors(root / "src.vec", WordVectors(src_words, X))
    save_vectors(root / "tgt.npy", WordVectors(tgt_words, Y))
    # Same strings on both sides, for --seed identical.
    save_vectors(root / "tgt_same.npy", WordVectors(src_words, Y))
    train = "\n".join(f"s{i} t{i}" for i in range(0, 60)) + "\n"
    test = "\n".join(f"s{i}\tt{i}" for i in range(60, 120)) + "\nunknown\tt1\n"
    (root / "train.txt").write_text(train)
    (root / "test.txt").write_text(test)
    return root


def run_cli(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result


def last_json(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_one_line_error(result, *fragments: str) -> str:
    assert result.exit_code != 0, result.stdout
    err = result.stderr.strip()
    assert "Traceback" not in err and "Traceback" not in result.stdout
    lines = err.splitlines()
    assert lines and lines[-1].startswith("error: "), err
    assert [line for line in lines if line.startswith("error")] == [lines[-1]]
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])
    return lines[-1]


@pytest.fixture(scope="module")
def mapping_path(planted):
    out = planted / "map.npz"
    result = run_cli("align", planted / "src.vec", planted / "tgt.npy", "--method", "procrustes",
                     "--dictionary", planted / "train.txt", "--out", out)
    assert result.exit_code == 0, result.stderr
    return out, result


def test_align_prints_json_summary(mapping_path):
    out, result = mapping_path
    summary = last_json(result)
    assert out.is_file()
    assert summary["method"] == "procrustes"
    assert summary["seed"] == "dictionary" and summary["seed_pairs"] == 60
    assert summary["pairs_used"] > 0
    assert summary["seconds"] >= 0 and "validation_loss" in summary
    assert "[load]" in result.stderr and "60 dictionary pairs" in result.stderr


@pytest.mark.parametrize("retrieval", ["csls", "nn"])
def test_evaluate_planted_mapping_is_perfect(planted, mapping_path, retrieval):
    out, _ = mapping_path
    result = run_cli("evaluate", planted / "src.vec", planted / "tgt.npy", "--mapping", out,
                     "--dictionary", planted / "test.txt", "--retrieval", retrieval)
    assert result.exit_code == 0, result.stderr
    metrics = last_json(result)
    assert set(metrics) >= {"p@1", "p@5", "p@10", "mrr", "coverage"}
    assert metrics["p@1"] == 1.0 and metrics["mrr"] == 1.0
    assert metrics["coverage"] == pytest.approx(60 / 61)  # 'unknown' is not in the source vocabulary
    assert metrics["n_queries"] == 60


def test_export_vectors_and_dictionary(planted, mapping_path, tmp_path):
    out, _ = mapping_path
    result = run_cli("export", planted / "src.vec", planted / "tgt.npy", "--mapping", out,
                     "--vectors-out", tmp_path / "aligned.vec", "--dictionary-out", tmp_path / "dict.tsv")
    assert result.exit_code == 0, result.stderr
    summary = last_json(result)
    aligned = load_vectors(tmp_path / "aligned.vec")
    assert aligned.words[:3] == ["s0", "s1", "s2"] and aligned.dim == DIM
    target = load_vectors(planted / "tgt.npy")
    # Mapped source word i lies next to target word i.
    cos = (aligned.vectors / np.linalg.norm(aligned.vectors, axis=1, keepdims=True)) @ (
        target.vectors / np.linalg.norm(target.vectors, axis=1, keepdims=True)).T
    assert (cos.argmax(axis=1) == np.arange(N_WORDS)).mean() > 0.95
    pairs = load_dictionary(tmp_path / "dict.tsv")
    assert summary["dictionary_pairs"] == len(pairs) > 0.9 * N_WORDS
    assert sum(s[1:] == t[1:] for s, t in pairs) / len(pairs) > 0.95
    first = (tmp_path / "dict.tsv").read_text().splitlines()[0].split("\t")
    assert len(first) == 3 and -2 <= float(first[2]) <= 2


def test_align_identical_seed_is_default_without_dictionary(planted, tmp_path):
    result = run_cli("align", planted / "src.vec", planted / "tgt_same.npy", "--method", "procrustes",
                     "--max-vocab", "100", "--normalize", "unit", "--out", tmp_path / "m.npz")
    assert result.exit_code == 0, result.stderr
    summary = last_json(result)
    assert summary["seed"] == "identical" and summary["seed_pairs"] == 100
    assert summary["normalize"] == "unit"
    from services.alignment.mapping import Mapping

    saved = Mapping.load(tmp_path / "m.npz")
    assert saved.params["normalize"] == "unit" and saved.params["max_vocab"] == 100
    assert saved.version == summary["mapping_version"] == saved.content_hash()
    # evaluate re-applies the recorded normalisation unless told otherwise.
    (tmp_path / "same.txt").write_text("".join(f"s{i} s{i}\n" for i in range(50, 100)))
    result = run_cli("evaluate", planted / "src.vec", planted / "tgt_same.npy", "--mapping", tmp_path / "m.npz",
                     "--dictionary", tmp_path / "same.txt", "--max-vocab", "100")
    assert result.exit_code == 0, result.stderr
    assert "normalize=unit)" in result.stderr
    assert last_json(result)["p@1"] == 1.0


# ------------------------------------------------------------------ bad input: one line, non-zero exit


def test_unreadable_vector_file(planted, tmp_path):
    result = run_cli("align", tmp_path / "missing.vec", planted / "tgt.npy", "--method", "procrustes",
                     "--out", tmp_path / "m.npz")
    assert_one_line_error(result, "missing.vec", "no such file")
    assert not (tmp_path / "m.npz").exists()


def test_bad_rows_named_with_line_numbers(planted, tmp_path):
    (tmp_path / "bad.vec").write_text("a 1 2 3\nb 1 2\nc 1 nan 3\n")
    result = run_cli("align", tmp_path / "bad.vec", planted / "tgt.npy", "--method", "procrustes",
                     "--out", tmp_path / "m.npz")
    assert_one_line_error(result, "bad.vec", "line 2", "line 3")


def test_dimension_mismatch(planted, tmp_path):
    (tmp_path / "small.vec").write_text("s0 1 2 3\ns1 4 5 6\n")
    result = run_cli("align", tmp_path / "small.vec", planted / "tgt.npy", "--method", "procrustes",
                     "--dictionary", planted / "train.txt", "--out", tmp_path / "m.npz")
    assert_one_line_error(result, "dimension mismatch", "3-d", f"{DIM}-d")


def test_empty_dictionary(planted, tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    result = run_cli("align", planted / "src.vec", planted / "tgt.npy", "--method", "procrustes",
                     "--dictionary", tmp_path / "empty.txt", "--out", tmp_path / "m.npz")
    assert_one_line_error(result, "dictionary is empty")


def test_no_seed_pairs(planted, tmp_path):
    (tmp_path / "oov.txt").write_text("foo bar\nbaz qux\n")
    result = run_cli("align", planted / "src.vec", planted / "tgt.npy", "--method", "procrustes",
                     "--dictionary", tmp_path / "oov.txt", "--out", tmp_path / "m.npz")
    assert_one_line_error(result, "no seed pairs found", "2 pairs")
    result = run_cli("align", planted / "src.vec", planted / "tgt.npy", "--method", "procrustes",
                     "--seed", "identical", "--out", tmp_path / "m.npz")
    assert_one_line_error(result, "no seed pairs found")


def test_unknown_method_and_bad_option(planted, tmp_path):
    result = run_cli("align", planted / "src.vec", planted / "tgt.npy", "--method", "nonsense",
                     "--out", tmp_path / "m.npz")
    assert_one_line_error(result, "procrustes")  # the message lists the known methods
    result = run_cli("align", planted / "src.vec", planted / "tgt.npy", "--method", "procrustes",
                     "--option", "novalue", "--out", tmp_path / "m.npz")
    assert_one_line_error(result, "key=value")


def test_evaluate_bad_inputs(planted, mapping_path, tmp_path):
    out, _ = mapping_path
    (tmp_path / "oov.txt").write_text("foo bar\n")
    result = run_cli("evaluate", planted / "src.vec", planted / "tgt.npy", "--mapping", out,
                     "--dictionary", tmp_path / "oov.txt")
    assert_one_line_error(result, "no test pairs")
    result = run_cli("evaluate", planted / "src.vec", planted / "tgt.npy", "--mapping", tmp_path / "none.npz",
                     "--dictionary", planted / "test.txt")
    assert_one_line_error(result, "none.npz")
    save_vectors(tmp_path / "wide.npy", WordVectors(["s0", "s1"], np.ones((2, DIM + 1), dtype=np.float32)))
    save_vectors(tmp_path / "wide_t.npy", WordVectors(["t0", "t1"], np.ones((2, DIM + 1), dtype=np.float32)))
    (tmp_path / "two.txt").write_text("s0 t0\ns1 t1\n")
    result = run_cli("evaluate", tmp_path / "wide.npy", tmp_path / "wide_t.npy", "--mapping", out,
                     "--dictionary", tmp_path / "two.txt")
    assert_one_line_error(result, "dimension mismatch")


def test_parse_options():
    assert parse_options(["iterations=40", "robust=true", "q=0.5", "name=walip", "list=[1,2]"]) == {
        "iterations": 40, "robust": True, "q": 0.5, "name": "walip", "list": [1, 2]}


def test_module_entry_point_reports_one_line(planted, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "vislex.cli", "evaluate", str(planted / "src.vec"), str(planted / "tgt.npy"),
         "--mapping", str(tmp_path / "m.npz"), "--dictionary", str(tmp_path / "empty.txt")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'empty.txt'}: dictionary is empty"


# ------------------------------------------------------------------ reported numbers


def test_validation_loss_never_includes_the_l1_loss(planted, tmp_path):
    from services.alignment.mapping import Mapping

    result = run_cli("align", planted / "src.vec", planted / "tgt.npy", "--method", "procrustes+l1",
                     "--dictionary", planted / "train.txt", "--option", "max_steps=20", "--out", tmp_path / "p.npz")
    assert result.exit_code == 0, result.stderr
    summary = last_json(result)
    l1 = next(s for s in Mapping.load(tmp_path / "p.npz").stats["stages"] if s["method"] == "l1")
    assert summary["validation_loss"] is None  # procrustes has no validation loss; the l1 loss is not one
    assert summary["l1_loss"]["final"] == pytest.approx(l1["loss_final"])
    assert summary["l1_loss"]["initial"] == pytest.approx(l1["loss_initial"])

    result = run_cli("align", planted / "src.vec", planted / "tgt.npy", "--method", "walip+l1",
                     "--dictionary", planted / "train.txt", "--option", "max_steps=20", "--option", "max_iter=3",
                     "--out", tmp_path / "w.npz")
    assert result.exit_code == 0, result.stderr
    summary = last_json(result)
    walip = next(s for s in Mapping.load(tmp_path / "w.npz").stats["stages"] if s["method"] == "walip")
    assert summary["validation_loss"] == pytest.approx(walip["best_validation_loss"])
    assert "final" in summary["l1_loss"]


def test_seed_none_reports_the_seed_actually_used(planted, tmp_path):
    result = run_cli("align", planted / "src.vec", planted / "tgt_same.npy", "--method", "procrustes",
                     "--seed", "none", "--out", tmp_path / "m.npz")
    assert result.exit_code == 0, result.stderr
    summary = last_json(result)
    assert summary["seed"] == "identical" and summary["seed_pairs"] == N_WORDS
    assert summary["seed_requested"] == "none"
    assert "--seed none" in result.stderr
    # a method that needs no seeds really runs without any
    result = run_cli("align", planted / "src.vec", planted / "tgt_same.npy", "--method", "l1", "--seed", "none",
                     "--option", "max_steps=5", "--out", tmp_path / "l1.npz")
    assert result.exit_code == 0, result.stderr
    summary = last_json(result)
    assert summary["seed"] == "none" and summary["seed_pairs"] == 0 and "seed_requested" not in summary


def test_evaluate_and_export_reuse_recorded_max_vocab(planted, tmp_path):
    result = run_cli("align", planted / "src.vec", planted / "tgt_same.npy", "--method", "procrustes",
                     "--max-vocab", "100", "--out", tmp_path / "m.npz")
    assert result.exit_code == 0, result.stderr
    (tmp_path / "same.txt").write_text("".join(f"s{i} s{i}\n" for i in range(50, 110)))
    result = run_cli("evaluate", planted / "src.vec", planted / "tgt_same.npy", "--mapping", tmp_path / "m.npz",
                     "--dictionary", tmp_path / "same.txt")
    assert result.exit_code == 0, result.stderr
    assert "source: 100 words" in result.stderr and "target: 100 words" in result.stderr
    assert "recorded in the mapping" in result.stderr and "differ from those" not in result.stderr
    assert last_json(result)["n_queries"] == 50  # s100..s109 are outside the first 100 words
    result = run_cli("export", planted / "src.vec", planted / "tgt_same.npy", "--mapping", tmp_path / "m.npz",
                     "--vectors-out", tmp_path / "aligned.vec")
    assert result.exit_code == 0, result.stderr
    assert last_json(result)["source_words"] == 100
    # an explicit --max-vocab still wins
    result = run_cli("evaluate", planted / "src.vec", planted / "tgt_same.npy", "--mapping", tmp_path / "m.npz",
                     "--dictionary", tmp_path / "same.txt", "--max-vocab", "120")
    assert result.exit_code == 0, result.stderr
    assert "source: 120 words" in result.stderr
