"""HTTP: sentence collections, translate (order, scores), the model swap, and every error status."""

from __future__ import annotations

import time

import pytest

from services.retrieval.testing import HashingTextEncoder


@pytest.fixture()
def wired(monkeypatch):
    import app.wiring.sentences as wiring

    encoder = HashingTextEncoder(dim=16, languages=("en", "de", "fr"), name="use-multilingual")
    monkeypatch.setattr(wiring, "_encoder_loader", lambda name: encoder)
    return encoder


def _code(resp):
    return resp.json()["error"]["code"]


def test_collections_translate_and_restart(make_client, wired):
    with make_client() as client:
        assert client.get("/v1/sentences/collections").json() == {"collections": []}
        resp = client.post("/v1/sentences/collections", json={"lang": "de", "id": "tm", "name": "memory"})
        assert resp.status_code == 201 and resp.json()["lang"] == "de"
        resp = client.post("/v1/sentences/collections/tm/sentences",
                           json={"sentences": ["ein hund", "eine katze", "ein auto", "ein hund"]})
        assert resp.status_code == 201, resp.text
        assert resp.json()["count"] == 3 and resp.json()["duplicates"][0]["duplicate_of"] == 1
        resp = client.post("/v1/sentences/translate", json={"texts": ["auto", "hund"], "src": "en", "tgt": "de", "k": 2})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert [r["text"] for r in body["results"]] == ["auto", "hund"]
        assert [r["translations"][0]["text"] for r in body["results"]] == ["ein auto", "ein hund"]
        scores = [t["score"] for t in body["results"][0]["translations"]]
        assert scores == sorted(scores, reverse=True) and len(scores) == 2
        one = client.post("/v1/sentences/translate", json={"text": "hund", "src": "en", "collection": "tm", "k": 1})
        assert one.json()["results"] == [body["results"][1] | {"translations": body["results"][1]["translations"][:1]}]
        listed = client.get("/v1/sentences/collections/tm/sentences").json()
        assert listed["total"] == 3 and [s["id"] for s in listed["sentences"]] == [1, 2, 3]
        assert client.delete("/v1/sentences/collections/tm/sentences/1").status_code == 204
        assert client.get("/v1/sentences/model").json()["active"]["kind"] == "encoder"
    with make_client() as client:  # a new process on the same data dir
        info = client.get("/v1/sentences/collections/tm").json()
        assert info["count"] == 2 and info["name"] == "memory"
        resp = client.post("/v1/sentences/translate", json={"text": "hund", "src": "en", "tgt": "de", "k": 5})
        hits = resp.json()["results"][0]["translations"]
        assert sorted(t["id"] for t in hits) == [2, 3]  # the deleted sentence stays deleted
        assert [t["score"] for t in hits] == sorted((t["score"] for t in hits), reverse=True)
        assert client.delete("/v1/sentences/collections/tm").status_code == 204
        assert client.get("/v1/sentences/collections/tm").status_code == 404


def test_every_error_status(make_client, wired):
    with make_client(sentence_max_batch=2, sentence_max_chars=30, sentence_max_add=3,
                     api_keys=["k" * 20]) as client:
        auth = {"authorization": "Bearer " + "k" * 20}
        assert client.post("/v1/sentences/collections", json={"lang": "de"}).status_code == 401
        assert client.post("/v1/sentences/collections", json={"lang": "de"},
                           headers={"authorization": "Bearer " + "x" * 20}).status_code == 403
        assert client.post("/v1/sentences/collections", json={"lang": "de", "id": "de"}, headers=auth).status_code == 201
        assert client.post("/v1/sentences/collections", json={"lang": "de", "id": "de"}, headers=auth).status_code == 409
        resp = client.post("/v1/sentences/collections", json={"lang": "ja"}, headers=auth)
        assert resp.status_code == 422 and resp.json()["error"]["detail"]["supported"] == ["de", "en", "fr"]
        t = "/v1/sentences/translate"
        resp = client.post(t, json={"text": "x", "src": "en", "collection": "nope"})
        assert resp.status_code == 404 and _code(resp) == "collection_not_found"
        assert client.post(t, json={"text": "x", "src": "en", "tgt": "fr"}).status_code == 404
        resp = client.post(t, json={"text": "x", "src": "ru", "tgt": "de"})
        assert resp.status_code == 422 and _code(resp) == "unsupported_language"
        assert resp.json()["error"]["detail"] == {"field": "src", "supported": ["de", "en", "fr"], "model": "use-multilingual"}
        assert client.post(t, json={"text": "x", "src": "en", "tgt": "fr", "collection": "de"}).status_code == 422
        assert client.post(t, json={"text": "x", "texts": ["y"], "src": "en", "tgt": "de"}).status_code == 422
        assert client.post(t, json={"src": "en", "tgt": "de"}).status_code == 422
        assert client.post(t, json={"text": "x", "src": "en", "tgt": "de", "k": 0}).status_code == 422
        assert client.post(t, json={"text": "x", "src": "en", "tgt": "de", "kk": 1}).status_code == 422
        resp = client.post(t, json={"texts": ["a", "b", "c"], "src": "en", "tgt": "de"})
        assert resp.status_code == 413 and resp.json()["error"]["detail"]["setting"] == "VISLEX_SENTENCE_MAX_BATCH"
        assert client.post(t, json={"text": "x" * 31, "src": "en", "tgt": "de"}).status_code == 413
        add = "/v1/sentences/collections/de/sentences"
        assert client.post(add, json={"sentences": ["a", "b", "c", "d"]}, headers=auth).status_code == 413
        assert client.post("/v1/sentences/collections/zz/sentences", json={"sentences": ["a"]},
                           headers=auth).status_code == 404
        assert client.delete("/v1/sentences/collections/de/sentences/99", headers=auth).status_code == 404
        resp = client.put("/v1/sentences/model", json={"model": "nothing-like-this"}, headers=auth)
        assert resp.status_code == 404 and _code(resp) == "model_not_found"
        resp = client.put("/v1/sentences/model", json={"model": "0" * 500}, headers=auth)  # too long for a file name
        assert resp.status_code == 404 and _code(resp) == "model_not_found"
        resp = client.put("/v1/sentences/model", json={"model": "/etc/passwd"}, headers=auth)
        assert resp.status_code == 422 and _code(resp) == "path_not_allowed"
        big = client.post(add, content=b'{"sentences": ["' + b"a" * 3_000_000 + b'"]}',
                          headers={**auth, "content-type": "application/json"})
        assert big.status_code == 413


def test_model_swap_over_http(make_client, wired, tmp_path):
    import torch

    from models.globetrotter import GlobetrotterConfig, GlobetrotterHeads, save_checkpoint

    heads = GlobetrotterHeads(GlobetrotterConfig(image_dim=8, text_dims={"*": 16}, embed_dim=16, text_head="residual"))
    with torch.no_grad():
        heads.text["any"].linear.weight.normal_(0, 0.5)
    save_checkpoint(tmp_path / "data" / "sentences" / "models" / "g.pt", heads, image_tower="pixels-8",
                    text_towers={"*": "use-multilingual"})
    with make_client() as client:
        client.post("/v1/sentences/collections", json={"lang": "fr", "id": "fr"})
        client.post("/v1/sentences/collections/fr/sentences", json={"sentences": ["un chien", "un chat"]})
        old = client.post("/v1/sentences/translate", json={"text": "chien", "src": "en", "tgt": "fr"}).json()
        resp = client.put("/v1/sentences/model", json={"model": "g"})
        assert resp.status_code == 202 and resp.json()["active"]["kind"] == "encoder"  # the old one serves meanwhile
        deadline = time.monotonic() + 20
        while client.get("/v1/sentences/model").json()["swap"]["state"] == "swapping" and time.monotonic() < deadline:
            time.sleep(0.05)
        info = client.get("/v1/sentences/model").json()
        assert info["active"]["kind"] == "globetrotter", info
        new = client.post("/v1/sentences/translate", json={"text": "chien", "src": "en", "tgt": "fr"}).json()
        assert new["model_key"] == info["active"]["version"] != old["model_key"]
        assert client.get("/v1/sentences/collections/fr").json()["model"] == new["model_key"]


def test_training_job_over_http_swaps_the_served_model(make_client, wired, tmp_path, redis_url, monkeypatch):
    import threading

    import numpy as np

    import app.wiring.sentences as wiring
    from services.infra.redis import connect
    from services.jobs.kinds import run_kind_job
    from tests.conftest import write_npy_space, write_random_pngs

    def send(job_id, attempt, spec):
        threading.Thread(target=run_kind_job, args=("globetrotter", connect(redis_url), job_id, attempt),
                         kwargs={"heartbeat_s": 1.0}, daemon=True).start()

    monkeypatch.setattr(wiring, "_globetrotter_sender", lambda runtime: send)
    root = tmp_path / "inputs"
    photos = write_random_pngs(root / "photos", 16)
    rng = np.random.default_rng(0)
    words = ["dog", "cat", "car", "red"]
    en = write_npy_space(root / "vec", "en", words, rng.standard_normal((4, 6)))
    de = write_npy_space(root / "vec", "de", ["hund", "katze", "auto", "rotes"], rng.standard_normal((4, 6)))
    (root / "en.tsv").write_text("".join(f"img{i}.png\t{words[i % 4]} {words[(i + 1) % 4]}\n" for i in range(8)))
    (root / "de.tsv").write_text("".join(f"img{i}.png\tein hund {i}\n" for i in range(8, 16)))
    req = {"images_dir": str(photos), "captions": {"en": str(root / "en.tsv"), "de": str(root / "de.tsv")},
           "image_tower": "pixels-8", "text_towers": {"en": f"static:{en}", "de": f"static:{de}"},
           "config": {"epochs": 2, "batch_size": 4, "embed_dim": 6, "val_fraction": 0.25}, "activate": True}
    with make_client(space_path_roots=[str(root)]) as client:
        bad = client.post("/v1/sentences/trainings", json={**req, "images_dir": "/etc"})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "path_not_allowed"
        bad = client.post("/v1/sentences/trainings", json={**req, "text_towers": {"en": "gpt-17"}})
        assert bad.status_code == 422 and bad.json()["error"]["detail"]["field"] == "text_towers.en"
        bad = client.post("/v1/sentences/trainings", json={**req, "config": {"epochs": "many"}})
        assert bad.status_code == 422 and bad.json()["error"]["detail"]["field"] == "config.epochs"
        resp = client.post("/v1/sentences/trainings", json=req)
        assert resp.status_code == 202, resp.text
        job = resp.json()
        deadline = time.monotonic() + 60
        while job["state"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.1)
            job = client.get(f"/v1/sentences/trainings/{job['id']}").json()
        assert job["state"] == "succeeded", job
        version = job["result"]["version"]
        assert job["result"]["checkpoint"].endswith(f"globetrotter-{version}.pt") and job["result"]["activated"]
        again = client.post("/v1/sentences/trainings", json=req)
        assert again.status_code == 200 and again.json()["cached"]
        ck = client.get(f"/v1/sentences/trainings/{job['id']}/checkpoint")
        assert ck.status_code == 200 and ck.headers["x-checksum-sha256"] == job["result"]["artifact"]["sha256"]
        assert client.get("/v1/sentences/trainings/nope").status_code == 404
        assert client.delete(f"/v1/sentences/trainings/{job['id']}").status_code == 409
        time.sleep(1.05)  # the pointer is checked at most once a second
        client.get("/v1/sentences/model")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            info = client.get("/v1/sentences/model").json()
            if info["active"]["kind"] == "globetrotter":
                break
            time.sleep(0.1)
        assert info["active"]["version"] == version and info["supported_languages"] == ["de", "en"]


def test_training_job_defaults_are_the_measured_ones_and_explicit_defaults_are_cached(make_client, wired, tmp_path,
                                                                                      redis_url, monkeypatch):
    """Unset options resolve to the benchmark's measured config for the tower setting (the job shows them); the
    same options given explicitly are the same job (200, cached); another value is a new job."""
    import app.wiring.sentences as wiring
    from services.sentences.training import GlobetrotterTrainConfig

    monkeypatch.setattr(wiring, "_globetrotter_sender", lambda runtime: (lambda job_id, attempt, spec: None))
    root = tmp_path / "inputs"
    (root / "photos").mkdir(parents=True)
    for lang in ("en", "de"):
        (root / f"{lang}.tsv").write_text("img0.png\tx\n")
        (root / f"{lang}.npy").write_bytes(b"")
    req = {"images_dir": str(root / "photos"), "captions": {"en": str(root / "en.tsv"), "de": str(root / "de.tsv")},
           "image_tower": "pixels-8"}
    static = {"en": f"static:{root / 'en.npy'}", "de": f"static:{root / 'de.npy'}"}
    with make_client(space_path_roots=[str(root)]) as client:
        first = client.post("/v1/sentences/trainings", json=req)
        assert first.status_code == 202, first.text
        config = first.json()["inputs"]["config"]
        assert config == {**config, "lr": 1e-4, "epochs": 40, "patience": 8, "preserve": 0.0, "residual_scale": 1.0}
        assert GlobetrotterTrainConfig(**config) == GlobetrotterTrainConfig()
        again = client.post("/v1/sentences/trainings", json={**req, "text_towers": {"*": "use-multilingual"},
                                                              "config": {"lr": 0.0001, "epochs": 40, "preserve": 0}})
        assert again.status_code == 200 and again.json()["cached"] and again.json()["id"] == first.json()["id"]
        other = client.post("/v1/sentences/trainings", json={**req, "config": {"lr": 0.001}})
        assert other.status_code == 202 and other.json()["inputs"]["config"]["lr"] == 1e-3
        per_language = client.post("/v1/sentences/trainings", json={**req, "text_towers": static})
        assert per_language.status_code == 202 and per_language.json()["id"] != other.json()["id"]
        assert per_language.json()["inputs"]["config"]["lr"] == 1e-3
        same = client.post("/v1/sentences/trainings", json={**req, "text_towers": static, "config": {"lr": 1e-3}})
        assert same.status_code == 200 and same.json()["id"] == per_language.json()["id"]
