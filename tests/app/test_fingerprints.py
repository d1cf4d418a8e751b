"""GET /v1/fingerprints with a tiny random-weight CLIP, and the 503 path when weights are missing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="module")
def tiny_clip_files(tmp_path_factory):
    import models.torchvision_compat  # noqa: F401
    import open_clip

    from models.clip import _register_model_config

    _register_model_config("vislex-tiny-http", TINY)
    torch.manual_seed(1)
    d = tmp_path_factory.mktemp("clip-http")
    ckpt = d / "tiny.pt"
    torch.save(open_clip.create_model("vislex-tiny-http").state_dict(), ckpt)
    images = d / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray((rng.random((24, 24, 3)) * 255).astype("uint8")).save(images / f"img{i:02d}.png")
    (images / "broken.jpg").write_bytes(b"nope")
    return ckpt, images


def test_fingerprints_lists_top_images_and_verdict(make_client, tiny_clip_files):
    ckpt, images = tiny_clip_files
    clip_models = {"en": {"model": "vislex-tiny-http", "checkpoint": str(ckpt), "model_config": TINY},
                   "fr": {"reuse": "en"}}
    with make_client(clip_models=clip_models, images_dir=images, clip_reference_words=100) as client:
        r = client.get("/v1/fingerprints", params={"word": "dog", "lang": "en", "top": 5})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["word"] == "dog" and body["n_images"] == 12 and len(body["images"]) == 5
        sims = [m["similarity"] for m in body["images"]]
        assert sims == sorted(sims, reverse=True) and sims[0] == pytest.approx(body["max_similarity"])
        assert all(m["name"].startswith("img") for m in body["images"])
        assert isinstance(body["is_visual"], bool)
        assert body["is_visual"] == (body["max_similarity"] >= body["visual_threshold"])
        # fr has no CLIP of its own: it borrows the English text tower, and says so
        fr = client.get("/v1/fingerprints", params={"word": "chien", "lang": "fr", "top": 3}).json()
        assert fr["reused_from"] == "en" and len(fr["images"]) == 3
        err = client.get("/v1/fingerprints", params={"word": "dog", "lang": "ko"})
        assert err.status_code == 503 and "no CLIP encoder configured" in err.json()["error"]["message"]
        assert client.get("/v1/fingerprints", params={"word": "dog", "top": 0}).status_code == 422
        encoders = client.get("/v1/system").json()["models"]["vision"]["encoders"]
        assert encoders["en:vislex-tiny-http"]["available"] is True
        assert encoders["reuse:fr"]["reuses"] == "en"


def test_missing_weights_answer_503_with_reason(make_client, tmp_path):
    with make_client(clip_pretrained="laion2b_s34b_b79k", clip_models={}) as client:
        ready = client.get("/readyz").json()
        comp = (ready.get("components") or ready["error"]["detail"]["components"])["clip"]
        assert comp["state"] == "unavailable" and "not in the cache" in comp["reason"]
        r = client.get("/v1/fingerprints", params={"word": "dog"})
        assert r.status_code == 503
        assert "not in the cache" in r.json()["error"]["message"]
        encoders = client.get("/v1/system").json()["models"]["vision"]["encoders"]
        assert encoders["default:ViT-B-32"]["available"] is False
        assert "not in the cache" in encoders["default:ViT-B-32"]["reason"]
