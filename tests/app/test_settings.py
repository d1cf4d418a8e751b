"""Settings: environment, TOML file, and errors that name the field."""

from __future__ import annotations

import pytest

from app.settings import SettingsError, load_settings


def test_env_overrides_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("VISLEX_PORT", "8123")
    monkeypatch.setenv("VISLEX_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("VISLEX_SPACES", '{"en": "/x/en.vec"}')
    s = load_settings()
    assert s.port == 8123 and s.data_dir == tmp_path and s.spaces == {"en": "/x/en.vec"}


def test_toml_file_and_env_precedence(monkeypatch, tmp_path):
    cfg = tmp_path / "vislex.toml"
    cfg.write_text('port = 9000\nmax_batch_words = 17\n[spaces]\nen = "/v/en.npy"\n')
    monkeypatch.setenv("VISLEX_CONFIG", str(cfg))
    monkeypatch.setenv("VISLEX_PORT", "9001")
    s = load_settings()
    assert s.port == 9001  # env beats file
    assert s.max_batch_words == 17 and s.spaces == {"en": "/v/en.npy"}


@pytest.mark.parametrize(
    "env,value,expected",
    [("VISLEX_PORT", "70000", "VISLEX_PORT"), ("VISLEX_INDEX_TYPE", "btree", "VISLEX_INDEX_TYPE"),
     ("VISLEX_NORMALIZE", "unit,whiten", "VISLEX_NORMALIZE"), ("VISLEX_MAPPINGS", '{"enfr": "/m"}', "VISLEX_MAPPINGS")],
)
def test_bad_values_name_the_field(monkeypatch, env, value, expected):
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert expected in str(info.value)


def test_missing_config_file_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("VISLEX_CONFIG", str(tmp_path / "absent.toml"))
    with pytest.raises(SettingsError, match="VISLEX_CONFIG"):
        load_settings()


def test_unknown_key_in_file_is_rejected(monkeypatch, tmp_path):
    cfg = tmp_path / "vislex.toml"
    cfg.write_text("prot = 1\n")
    monkeypatch.setenv("VISLEX_CONFIG", str(cfg))
    with pytest.raises(SettingsError, match="prot"):
        load_settings()


def test_encoder_csls_knn_reaches_the_registry_alone(monkeypatch, tmp_path):
    from app.wiring.serving import new_registry

    monkeypatch.setenv("VISLEX_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("VISLEX_ENCODER_CSLS_KNN", "3")
    s = load_settings()
    reg = new_registry(s)
    assert (s.encoder_csls_knn, s.csls_knn) == (3, 10)
    assert reg.csls_knn_between("encoder:use-multilingual", "encoder:use-multilingual") == 3
    assert reg.csls_knn_between(None, None) == 10 and reg.csls_knn_between("g", "g") == 10
    monkeypatch.setenv("VISLEX_ENCODER_CSLS_KNN", "0")
    with pytest.raises(SettingsError, match="VISLEX_ENCODER_CSLS_KNN"):
        load_settings()
