"""A trained compact CLIP checkpoint is the service's CLIP: gallery text search, classify, /v1/system, fingerprints."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from services.clip.testing import COLOURS, tiny_trained_clip
from services.retrieval.testing import HashingTextEncoder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("compact-http")
    return tiny_trained_clip(root, epochs=30), root / "data" / "images"


def _png(rgb) -> bytes:
    arr = np.clip(np.asarray(rgb)[None, None, :] + np.random.default_rng(1).normal(0, 10, (32, 32, 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(arr.astype("uint8")).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def client(make_client, checkpoint, monkeypatch):
    import app.wiring.retrieval as wiring

    # uCLIP's own multilingual encoder is not what this test is about: a tiny stand-in keeps it fast.
    monkeypatch.setattr(wiring, "_load_text_encoder", lambda settings: HashingTextEncoder(dim=24))
    ckpt, _ = checkpoint
    with make_client(clip_checkpoint=ckpt) as c:
        yield c


def test_gallery_text_search_and_classify_run_on_the_trained_checkpoint(client):
    gallery = client.post("/v1/galleries", json={"name": "colours"}).json()["id"]
    names = ["red", "blue", "green", "yellow"]
    files = [("files", (f"{n}.png", _png(COLOURS[n][0]), "image/png")) for n in names]
    r = client.post(f"/v1/galleries/{gallery}/images", files=files)
    assert r.status_code == 201, r.text
    ids = {item["filename"]: item["id"] for item in r.json()["added"]}
    for colour in names:
        r = client.get(f"/v1/galleries/{gallery}/search", params={"q": f"a {colour} photo", "lang": "en", "k": 4})
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["id"] == ids[f"{colour}.png"], (colour, r.json())
    # French through the same static tower: its vectors know the French colour words it was trained with
    r = client.get(f"/v1/galleries/{gallery}/search", params={"q": "une photo bleu", "k": 1})
    assert r.json()["results"][0]["id"] == ids["blue.png"]
    r = client.post("/v1/classify", files={"file": ("x.png", _png(COLOURS["green"][0]), "image/png")},
                    data={"labels": names, "templates": ["a {} photo"]})
    assert r.status_code == 200, r.text
    assert r.json()["mode"] == "clip" and r.json()["results"][0]["label"] == "green"


def test_system_names_the_towers_and_the_checkpoint(client, checkpoint):
    info = client.get("/v1/system").json()
    encoders = info["models"]["vision"]["encoders"]
    label, entry = next(iter(encoders.items()))
    assert label == "default:compact:tiny-clip.pt" and entry["available"]
    model = entry["model"]
    assert model["kind"] == "compact" and model["image_tower"] == "pixels-8"
    assert model["text_tower"].startswith("static:") and model["checkpoint"] == checkpoint[0].name
    assert model["trained"]["data"]["images"] == 120


def test_fingerprints_use_the_checkpoint_as_the_visual_pivot(make_client, checkpoint, monkeypatch):
    import app.wiring.retrieval as wiring

    monkeypatch.setattr(wiring, "_load_text_encoder", lambda settings: HashingTextEncoder(dim=24))
    ckpt, images = checkpoint
    with make_client(clip_checkpoint=ckpt, images_dir=images, clip_reference_words=0) as c:
        r = c.get("/v1/fingerprints", params={"word": "red", "lang": "en", "top": 5})
        assert r.status_code == 200, r.text
        top = r.json()["images"] if "images" in r.json() else r.json()["top"]
        # photo i has colour i % 12 and red is colour 0: the red photos are 0, 12, 24, ...
        names = [t["name"] if isinstance(t, dict) else t for t in top]
        assert sum(int(n[5:9]) % 12 == 0 for n in names) >= 4, names
