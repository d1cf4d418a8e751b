"""GET /v1/spaces, /v1/spaces/{lang}/neighbors and the spaces section of /v1/system."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture()
def client(make_client, planted_spaces, tmp_path):
    from services.alignment.mapping import LinearStage, Mapping

    en, fr, R, *_ = planted_spaces
    path = tmp_path / "m.npz"
    Mapping("procrustes", [LinearStage(R.astype(np.float64))]).save(path)
    with make_client(spaces={"en": str(en), "fr": str(fr)}, mappings={"en-fr": str(path)},
                     storage_dtype="float16") as c:
        yield c


def test_list_spaces(client):
    r = client.get("/v1/spaces")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["languages"] == ["en", "fr"] and body["pairs"] == ["en-fr"]
    en = body["spaces"][0]
    assert en["vocab_size"] == 300 and en["dim"] == 16 and en["source"].startswith("file:")
    assert en["dtype"] == "float16" and en["bytes"] >= 300 * 16 * 2
    assert en["mappings"][0]["tgt"] == "fr" and en["mappings"][0]["method"] == "procrustes"
    assert body["spaces"][1]["mappings"] == []


def test_system_reports_bytes_per_space(client):
    spaces = client.get("/v1/system").json()["spaces"]
    assert {s["lang"] for s in spaces} == {"en", "fr"} and all(s["bytes"] > 0 for s in spaces)


def test_neighbors(client):
    r = client.get("/v1/spaces/en/neighbors", params={"word": "w1", "k": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["word"] == "w1" and body["lang"] == "en" and len(body["neighbors"]) == 4
    assert all(n["word"] != "w1" for n in body["neighbors"])


@pytest.mark.parametrize("path, params, status, code", [
    ("/v1/spaces/de/neighbors", {"word": "w1"}, 404, "space_not_found"),
    ("/v1/spaces/en/neighbors", {"word": "nope"}, 404, "word_not_found"),
    ("/v1/spaces/en/neighbors", {"word": "w1", "k": 0}, 422, "invalid_input"),
    ("/v1/spaces/en/neighbors", {"word": ""}, 422, "invalid_input"),
])
def test_neighbor_errors(client, path, params, status, code):
    r = client.get(path, params=params)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
