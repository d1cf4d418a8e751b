"""HTTP: galleries, captions, classify and uCLIP training jobs -- mechanics, persistence, every error."""

from __future__ import annotations

import io
import json
import threading
import time

import numpy as np
import pytest
from PIL import Image

from services.retrieval.testing import HashingTextEncoder, tiny_random_clip


def png(seed: int, size=(24, 20)) -> bytes:
    arr = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def encoders():
    return tiny_random_clip(0), HashingTextEncoder(dim=24)


@pytest.fixture()
def wired(monkeypatch, encoders, redis_url, redis_client):
    """Retrieval wiring with tiny encoders; training jobs run in a thread instead of a Celery worker."""
    import app.wiring.retrieval as wiring
    import services.retrieval.training as training
    from services.infra.redis import connect
    from services.retrieval.jobs import run_uclip_job

    clip, text = encoders
    monkeypatch.setattr(wiring, "_load_clip", lambda settings, runtime: clip)
    monkeypatch.setattr(wiring, "_load_text_encoder", lambda settings: text)
    monkeypatch.setattr(training, "_load_encoders", lambda params: (clip, text))

    def send(job_id, attempt, spec):
        threading.Thread(target=run_uclip_job, args=(connect(redis_url), job_id, attempt),
                         kwargs={"heartbeat_s": 1.0}, daemon=True).start()

    monkeypatch.setattr(wiring, "_uclip_sender", lambda: send)


def files(*items):
    return [("files", (name, data, ctype)) for name, data, ctype in items]


def error_code(resp):
    return resp.json()["error"]["code"]


def test_encoder_unavailable_is_503_with_reason(make_client):
    with make_client() as client:  # no CLIP weights configured anywhere
        resp = client.get("/v1/galleries")
        assert resp.status_code == 503
        assert "CLIP" in resp.json()["error"]["message"]
        assert client.post("/v1/classify", files={"file": ("a.png", png(0), "image/png")},
                           data={"labels": ["dog"]}).status_code == 503


def test_gallery_lifecycle_errors_training_and_restart(make_client, wired, tmp_path):
    image_dir = tmp_path / "bank"
    image_dir.mkdir()
    for i in range(10):
        (image_dir / f"{i}.png").write_bytes(png(100 + i))
    # training reads the image folder: it must lie under a directory the server reads from (issue 19)
    with make_client(max_upload_bytes=40_000, space_path_roots=[str(image_dir)]) as client:
        assert client.get("/v1/galleries/nope").status_code == 404
        gid = client.post("/v1/galleries", json={"name": "pets", "id": "pets"}).json()["id"]
        assert client.post("/v1/galleries", json={"id": "pets"}).status_code == 409
        resp = client.post(f"/v1/galleries/{gid}/images",
                           files=files(("a.png", png(1), "image/png"), ("b.png", png(2), "image/png"),
                                       ("c.png", png(3), "image/png"), ("a2.png", png(1), "image/png")))
        assert resp.status_code == 201, resp.text
        body = resp.json()
        assert [a["id"] for a in body["added"]] == [1, 2, 3] and body["count"] == 3
        assert body["duplicates"][0]["duplicate_of"] == 1 and body["duplicates"][0]["filename"] == "a2.png"
        # errors leave the gallery untouched
        bad = client.post(f"/v1/galleries/{gid}/images",
                          files=files(("d.png", png(4), "image/png"), ("x.png", b"garbage bytes", "image/png")))
        assert bad.status_code == 415 and "x.png" in bad.json()["error"]["message"]
        assert client.post(f"/v1/galleries/{gid}/images",
                           files=files(("t.txt", b"hello", "text/plain"))).status_code == 415
        big = client.post(f"/v1/galleries/{gid}/images", files=files(("big.png", png(5, (300, 300)), "image/png")))
        assert big.status_code == 413 and error_code(big) == "payload_too_large"
        assert client.post("/v1/galleries/nope/images", files=files(("a.png", png(1), "image/png"))).status_code == 404
        assert client.get(f"/v1/galleries/{gid}").json()["count"] == 3
        # image -> images works without heads (raw CLIP space)
        hits = client.post(f"/v1/galleries/{gid}/search", files={"file": ("q.png", png(2), "image/png")},
                           data={"k": "2"}).json()["results"]
        assert hits[0]["id"] == 2 and hits[0]["score"] == pytest.approx(1.0, abs=1e-4) and len(hits) == 2
        # text search needs heads: 503 naming them
        resp = client.get(f"/v1/galleries/{gid}/search", params={"q": "un chien", "lang": "fr"})
        assert resp.status_code == 503 and "heads" in resp.json()["error"]["message"]
        # train heads as a background job; the service swaps to them without restart
        req = {"queries": ["a dog", "a cat", "a car", "a tree", "a boat", "a bird"], "images_dir": str(image_dir),
               "texts": ["un chien", "ein Auto", "un arbre", "ein Vogel"],
               "config": {"heads": {"hidden_dim": 16, "out_dim": 8}, "epochs": 2, "batch_size": 3}}
        resp = client.post("/v1/uclip/trainings", json=req)
        assert resp.status_code == 202 and resp.headers["Location"].startswith("/v1/uclip/trainings/")
        job = resp.json()
        deadline = time.monotonic() + 20
        while job["state"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.1)
            job = client.get(f"/v1/uclip/trainings/{job['id']}").json()
        assert job["state"] == "succeeded", job
        assert job["result"]["checkpoint"].endswith(".pt") and job["progress"]["stage"] == "done"
        again = client.post("/v1/uclip/trainings", json=req)
        assert again.status_code == 200 and again.json()["cached"] and again.json()["id"] == job["id"]
        assert client.get("/v1/uclip/trainings").json()["total"] == 1
        assert client.get("/v1/uclip/trainings/zzz").status_code == 404
        time.sleep(1.05)  # the pointer file is checked at most once a second
        resp = client.get(f"/v1/galleries/{gid}/search", params={"q": "un chien", "lang": "fr", "k": 2})
        assert resp.status_code == 200, resp.text
        results = resp.json()["results"]
        assert len(results) == 2 and results[0]["score"] >= results[1]["score"]
        heads = client.get("/v1/uclip/heads").json()
        assert heads["active"] and heads["checkpoint"] == job["result"]["checkpoint"]
        resp = client.get(f"/v1/galleries/{gid}/search", params={"q": "ciao", "lang": "it"})
        assert resp.status_code == 422 and resp.json()["error"]["detail"]["supported"] == ["de", "en", "es", "fr"]
        assert "supported: de, en, es, fr" in resp.json()["error"]["message"]
        assert client.put("/v1/uclip/heads", json={"checkpoint": "nope.pt"}).status_code == 404
        assert client.delete(f"/v1/galleries/{gid}/images/2").status_code == 204
        assert client.delete(f"/v1/galleries/{gid}/images/2").status_code == 404
    # restart: the gallery, its images and the active heads survive
    with make_client() as client:
        info = client.get(f"/v1/galleries/{gid}").json()
        assert info["count"] == 2
        ids = [i["id"] for i in client.get(f"/v1/galleries/{gid}/images").json()["images"]]
        assert ids == [1, 3]
        assert client.get("/v1/uclip/heads").json()["active"]
        assert client.get(f"/v1/galleries/{gid}/search", params={"q": "a dog"}).status_code == 200
        assert client.delete(f"/v1/galleries/{gid}").status_code == 204
        assert client.get(f"/v1/galleries/{gid}").status_code == 404
        assert client.get("/v1/galleries").json()["collections"] == []


def test_captions_and_classify(make_client, wired):
    with make_client() as client:
        cid = client.post("/v1/captions", json={"name": "caps"}).json()["id"]
        resp = client.post(f"/v1/captions/{cid}/texts", json={"texts": [
            {"text": "un chien", "lang": "fr"}, {"text": "ein Hund", "lang": "de"}, {"text": "un chien", "lang": "fr"}]})
        assert resp.status_code == 201 and len(resp.json()["added"]) == 2 and len(resp.json()["duplicates"]) == 1
        assert client.post(f"/v1/captions/{cid}/texts", json={"texts": [{"text": "x", "lang": "zz"}]}).status_code == 422
        assert client.post("/v1/captions/nope/texts", json={"texts": [{"text": "x"}]}).status_code == 404
        # no heads yet: image -> text needs them
        resp = client.post(f"/v1/captions/{cid}/search", files={"file": ("q.png", png(1), "image/png")})
        assert resp.status_code == 503
        # English classification falls back to raw CLIP; labels as repeated fields or one JSON array
        resp = client.post("/v1/classify", files={"file": ("q.png", png(1), "image/png")},
                           data={"labels": ["dog", "cat", "car"], "lang": "en"})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["mode"] == "clip" and {r["label"] for r in body["results"]} == {"dog", "cat", "car"}
        assert sum(r["probability"] for r in body["results"]) == pytest.approx(1.0, abs=1e-5)
        resp = client.post("/v1/classify", files={"file": ("q.png", png(1), "image/png")},
                           data={"labels": json.dumps(["dog", "cat"]), "lang": "en"})
        assert [r["label"] for r in resp.json()["results"]] != [] and len(resp.json()["results"]) == 2
        assert client.post("/v1/classify", files={"file": ("q.png", b"nope", "image/png")},
                           data={"labels": ["dog"]}).status_code == 415
        assert client.post("/v1/classify", files={"file": ("q.png", png(1), "image/png")},
                           data={"labels": ["chien"], "lang": "fr"}).status_code == 503
        assert client.post("/v1/classify", files={"file": ("q.png", png(1), "image/png")},
                           data={"labels": ["cane"], "lang": "it"}).status_code == 422
        assert client.delete(f"/v1/captions/{cid}").status_code == 204
