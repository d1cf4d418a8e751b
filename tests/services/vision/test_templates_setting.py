"""VISLEX_CLIP_TEMPLATES: inline JSON or a JSON file overriding the shipped prompt ensembles, validated at startup."""

from __future__ import annotations

import json

import pytest

from app.settings import SettingsError, load_settings
from models.clip import default_prompts
from services.vision.config import effective_templates, parse_templates


def test_inline_json_from_environment(monkeypatch):
    monkeypatch.setenv("VISLEX_CLIP_TEMPLATES", json.dumps({"en": ["a {} photo.", "the {}."]}))
    s = load_settings()
    assert s.clip_templates == {"en": ["a {} photo.", "the {}."]}
    table = effective_templates(s.clip_templates)
    assert table["en"] == ["a {} photo.", "the {}."] and table["fr"] == default_prompts()["fr"]


def test_json_file_path(monkeypatch, tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps({"templates": {"xx": ["{} (xx)"]}}), encoding="utf-8")  # prompts.json layout
    monkeypatch.setenv("VISLEX_CLIP_TEMPLATES", str(path))
    assert load_settings().clip_templates == {"xx": ["{} (xx)"]}
    assert load_settings(clip_templates={"de": ["Bild: {}"]}).clip_templates == {"de": ["Bild: {}"]}
    assert load_settings().model_copy().clip_templates == {"xx": ["{} (xx)"]}


def test_unset_keeps_shipped_prompts(monkeypatch):
    monkeypatch.delenv("VISLEX_CLIP_TEMPLATES", raising=False)
    assert load_settings().clip_templates is None
    assert effective_templates(None) == default_prompts()


@pytest.mark.parametrize("value, fragment", [
    (json.dumps({"en": ["a photo"]}), "exactly one '{}'"),
    (json.dumps({"en": ["{} and {}"]}), "exactly one '{}'"),
    (json.dumps({"en": ["a {x} {}"]}), "stray braces"),
    (json.dumps({"en": []}), "non-empty list"),
    (json.dumps({"en": "a photo of {}"}), "clip_templates"),
    ("{not json", "not valid JSON"),
    ("/no/such/templates.json", "neither inline JSON nor an existing file"),
])
def test_invalid_templates_name_the_field(monkeypatch, value, fragment):
    monkeypatch.setenv("VISLEX_CLIP_TEMPLATES", value)
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert "VISLEX_CLIP_TEMPLATES" in str(e.value) and fragment in str(e.value)


def test_parse_templates_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"fr": ["une photo"]}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.json.*'fr'.*exactly one"):
        parse_templates(str(bad))
