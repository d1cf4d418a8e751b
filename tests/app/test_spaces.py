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


# ---- POST /v1/spaces: untrusted uploads and server paths (issue 19) ----------------------------------------
GOOD_VEC = b"2 3\nchat 0.1 0.2 0.3\nchien 0.3 0.4 0.5\n"


@pytest.fixture()
def writer(make_client):
    with make_client(max_upload_bytes=1 << 20) as c:
        yield c


def _upload(client, name, filename, data: bytes):
    return client.post("/v1/spaces", data={"name": name}, files={"file": (filename, data)})


def _uploads_dir(client):
    return client.app.state.runtime.settings.data_dir / "spaces"


def _fasttext_claiming_words(words: int) -> bytes:
    import struct

    args = struct.pack("<12id", 8, 5, 1, 1, 5, 1, 2, 2, 2_000_000, 3, 6, 100, 1e-4)
    return struct.pack("<ii", 793712314, 12) + args + struct.pack("<iiiqq", words, words, 0, 100, -1)


def test_rejected_upload_leaves_the_existing_space_intact(writer):
    r = _upload(writer, "mine", "mine.vec", GOOD_VEC)
    assert r.status_code == 201, r.text
    before = writer.get("/v1/spaces").json()
    stored = _uploads_dir(writer) / "mine.vec"
    assert stored.read_bytes() == GOOD_VEC
    info_before = writer.app.state.runtime.jobs.spaces.get("mine")
    for filename, junk in [("mine.vec", b"3 3\nchat 0.1 0.2 0.3\nchat 0.1\n"), ("mine.bin", _fasttext_claiming_words(5)),
                           ("mine.vec", b"\xff\xfe not vectors at all")]:
        r = _upload(writer, "mine", filename, junk)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["detail"]["field"] == "file"
        # the space's file, its registry entry and what is served are exactly as before
        assert stored.read_bytes() == GOOD_VEC
        assert writer.app.state.runtime.jobs.spaces.get("mine") == info_before
        assert writer.get("/v1/spaces").json() == before
        # and the rejected bytes are not left anywhere under the uploads directory
        assert sorted(p.name for p in _uploads_dir(writer).iterdir()) == ["mine.vec"]


def test_upload_replaced_by_a_valid_one_in_another_format_swaps_cleanly(writer):
    assert _upload(writer, "swap", "a.vec", GOOD_VEC).status_code == 201
    r = _upload(writer, "swap", "a.vec.gz", __import__("gzip").compress(GOOD_VEC.replace(b"0.1", b"0.9")))
    assert r.status_code == 201, r.text
    assert r.json()["path"] is None  # where the server keeps uploads is not the client's business
    assert sorted(p.name for p in _uploads_dir(writer).iterdir()) == ["swap.vec.gz"]


def test_truncated_fasttext_bin_upload_is_a_quick_422_naming_no_server_path(writer):
    import time

    start = time.monotonic()
    r = _upload(writer, "claims", "claims.bin", _fasttext_claiming_words(5))
    assert r.status_code == 422, r.text
    assert time.monotonic() - start < 30  # the drill's file grew the API by GBs and stalled it
    err = r.json()["error"]
    assert err["code"] == "invalid_vector_file" and "truncated fastText .bin model" in err["message"]
    assert "claims.bin" in err["message"] and str(writer.app.state.runtime.settings.data_dir) not in r.text
    assert not (_uploads_dir(writer) / "claims.bin").exists()


def test_gzip_bomb_upload_is_refused_at_the_decompressed_limit(make_client):
    import gzip

    bomb = gzip.compress(b"2 3\nchat 0.1 0.2 0.3\n" + b"0" * (8 << 20))  # 8 MB of zeros, no newline
    assert len(bomb) < 100_000
    with make_client(max_decompressed_bytes=1 << 20) as client:
        r = _upload(client, "bomb", "bomb.vec.gz", bomb)
        assert r.status_code == 422, r.text
        assert "decompressed" in r.json()["error"]["message"]
        assert list(_uploads_dir(client).iterdir()) == []


def test_upload_parse_is_bounded_in_time_and_memory(make_client):
    row = b" ".join([b"0"] * 100) + b"\n"  # 12M values: ~100 MB as float64 while parsing, 24 MB of text
    rows = b"".join(b"w%d " % i + row for i in range(120_000))
    with make_client(upload_parse_memory_bytes=64 << 20, max_upload_bytes=32 << 20) as client:
        r = _upload(client, "heavy", "heavy.vec", rows)
        assert r.status_code == 422, r.text
        assert "memory" in r.json()["error"]["message"]
    with make_client(upload_parse_timeout_s=0.05, max_upload_bytes=32 << 20) as client:
        r = _upload(client, "slow", "slow.vec", rows)
        assert r.status_code == 422 and "longer than" in r.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/\u0000", "/etc/\u0000passwd", "relative.vec", ""])
def test_bad_server_paths_are_422_naming_the_field(writer, path):
    r = writer.post("/v1/spaces", json={"name": "x", "path": path})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["detail"]["field"] == "path"


def test_path_errors_expose_no_server_path(writer, tmp_path):
    data_dir = str(writer.app.state.runtime.settings.data_dir.resolve())
    for path in ("/etc/passwd", "/nonexistent/x.vec", f"{data_dir}/missing.vec", "~/x.vec"):
        r = writer.post("/v1/spaces", json={"name": "x", "path": path})
        assert r.status_code == 422, r.text
        assert data_dir not in r.text and "/root" not in r.text and "/home" not in r.text
        assert "allowed_roots" not in r.json()["error"]["detail"]
    # outside the roots, a present and a missing file get the same answer: no existence oracle
    present = writer.post("/v1/spaces", json={"name": "x", "path": "/etc/passwd"}).json()
    missing = writer.post("/v1/spaces", json={"name": "x", "path": "/etc/no-such-file"}).json()
    assert present == missing and present["error"]["code"] == "path_not_allowed"


def test_a_space_whose_file_vanished_is_a_404_naming_no_server_path(writer):
    assert _upload(writer, "gone", "gone.vec", GOOD_VEC).status_code == 201
    (_uploads_dir(writer) / "gone.vec").unlink()
    r = writer.post("/v1/alignments", json={"src": "gone", "tgt": "gone", "method": "procrustes"})
    assert r.status_code == 404, r.text
    assert r.json()["error"]["detail"]["space"] == "gone"
    assert str(writer.app.state.runtime.settings.data_dir.resolve()) not in r.text and "gone.vec" not in r.text
