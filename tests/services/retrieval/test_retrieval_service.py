"""Retrieval service: training job body (cache, checkpoint, pointer), galleries, captions, classify."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.errors import InvalidInput, NotFound, PayloadTooLarge, Unavailable, UnsupportedMedia
from services.retrieval import service as service_mod
from services.retrieval.galleries import Collection
from services.retrieval.service import RetrievalService, read_pointer
from services.retrieval.testing import HashingTextEncoder, tiny_random_clip
from services.retrieval.training import run_uclip_training


def png_bytes(seed: int, size=(24, 20)) -> bytes:
    rng = np.random.default_rng(seed)
    arr = (rng.random((size[1], size[0], 3)) * 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def clip():
    return tiny_random_clip(0)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    for i in range(12):
        (d / f"img{i:02d}.png").write_bytes(png_bytes(i))
    return d


QUERIES = [f"a photo of a {w}" for w in ["dog", "cat", "car", "tree", "house", "boat", "bird", "horse"]]
TEXTS = ["un chien", "un chat", "une voiture", "ein Baum", "ein Haus", "un bateau", "un oiseau", "ein Pferd"]
SMALL = {"heads": {"hidden_dim": 16, "out_dim": 8}, "epochs": 2, "batch_size": 4}


def train(tmp, clip, enc, image_dir, **extra):
    params = {"queries": QUERIES, "texts": TEXTS, "images_dir": str(image_dir), "data_dir": str(tmp),
              "config": SMALL, **extra}
    stages = []
    result = run_uclip_training(params, lambda s, c, t, m: stages.append(s), clip=clip, text_encoder=enc)
    return result, stages


def test_training_job_writes_checkpoint_activates_it_and_caches_embeddings(tmp_path, clip, image_dir):
    enc = HashingTextEncoder(dim=24)
    result, stages = train(tmp_path, clip, enc, image_dir)
    assert Path(result["checkpoint"]).is_file() and result["activated"]
    assert read_pointer(tmp_path) == Path(result["checkpoint"]).resolve()
    assert result["counts"] == {"queries": 8, "images": 12, "texts": 8, "images_dir": str(image_dir)}
    assert result["cache"] == {"hits": 0, "misses": 4}
    assert {"encode", "retrieval", "train"} <= set(stages)
    calls = enc.calls
    again, _ = train(tmp_path, clip, enc, image_dir, config={**SMALL, "epochs": 1}, activate=False)
    assert again["cache"] == {"hits": 4, "misses": 0} and enc.calls == calls  # nothing re-encoded
    assert again["checkpoint"] != result["checkpoint"]
    assert read_pointer(tmp_path) == Path(result["checkpoint"]).resolve()  # activate=False keeps the old one


def test_training_job_rejects_bad_params(tmp_path, clip, image_dir):
    enc = HashingTextEncoder(dim=24)
    with pytest.raises(InvalidInput, match="images_dir"):
        run_uclip_training({"queries": QUERIES, "texts": TEXTS, "data_dir": str(tmp_path)}, clip=clip, text_encoder=enc)
    with pytest.raises(InvalidInput, match="does not exist"):
        run_uclip_training({"queries": QUERIES, "texts": TEXTS, "images_dir": str(tmp_path / "nope"),
                            "data_dir": str(tmp_path)}, clip=clip, text_encoder=enc)
    with pytest.raises(InvalidInput, match="invalid training config"):
        run_uclip_training({"queries": QUERIES, "texts": TEXTS, "images_dir": str(image_dir),
                            "config": {"lr_typo": 1}}, clip=clip, text_encoder=enc)


def test_gallery_add_dedupe_search_delete_and_restart(tmp_path, clip):
    enc = HashingTextEncoder(dim=24)
    svc = RetrievalService(clip, enc, tmp_path)
    g = svc.create_gallery(name="pets")
    uploads = [(f"f{i}.png", "image/png", png_bytes(i)) for i in range(5)]
    res = svc.add_images(g["id"], uploads + [("again.png", "image/png", png_bytes(2))])
    assert [a["id"] for a in res["added"]] == [1, 2, 3, 4, 5]
    assert res["duplicates"] == [{"filename": "again.png", "duplicate_of": 3, "hash": res["added"][2]["hash"]}]
    res2 = svc.add_images(g["id"], [("dup.png", None, png_bytes(0))])
    assert res2["added"] == [] and res2["duplicates"][0]["duplicate_of"] == 1
    from services.retrieval.images import decode_image

    hit = svc.search_gallery_image(g["id"], decode_image(png_bytes(3)), k=3)["results"]
    assert hit[0]["id"] == 4 and hit[0]["score"] == pytest.approx(1.0, abs=1e-4) and len(hit) == 3
    # Without heads a query in a language the CLIP speaks itself goes through its own text tower ...
    native = svc.search_gallery_text(g["id"], "a dog", "en", 3)["results"]
    assert len(native) == 3
    q = clip.encode_text(["a dog"])[0]
    assert native[0]["score"] == pytest.approx(float(np.max(svc.galleries.get(g["id"]).search(q[None], 1)[0][0].score)),
                                               abs=1e-5)
    # ... and any other language needs uCLIP heads (503 naming them)
    with pytest.raises(Unavailable, match="no uCLIP heads"):
        svc.search_gallery_text(g["id"], "ein Hund", "de", 3)
    svc.galleries.get(g["id"]).delete(4)
    # restart: a new service over the same data dir sees the same gallery minus the deleted image
    svc2 = RetrievalService(clip, enc, tmp_path)
    gal = svc2.galleries.get(g["id"])
    assert len(gal) == 4 and sorted(i["id"] for i in gal.items()) == [1, 2, 3, 5]
    hit = svc2.search_gallery_image(g["id"], decode_image(png_bytes(3)), k=2)["results"]
    assert 4 not in [h["id"] for h in hit]
    svc2.galleries.delete(g["id"])
    with pytest.raises(NotFound):
        svc2.galleries.get(g["id"])
    assert not any(p.name == g["id"] for p in (tmp_path / "galleries").iterdir())


def test_failed_upload_leaves_gallery_consistent(tmp_path, clip, monkeypatch):
    svc = RetrievalService(clip, HashingTextEncoder(dim=24), tmp_path, max_upload_bytes=50_000)
    g = svc.create_gallery()["id"]
    svc.add_images(g, [("a.png", "image/png", png_bytes(0))])
    with pytest.raises(UnsupportedMedia):
        svc.add_images(g, [("b.png", "image/png", png_bytes(1)), ("c.txt", "image/png", b"not an image")])
    with pytest.raises(PayloadTooLarge):
        svc.add_images(g, [("big.png", "image/png", png_bytes(1, size=(400, 400)))])
    # a crash at the commit point (manifest write) must leave disk and memory as before
    def boom(self, manifest):
        raise OSError("disk full")

    monkeypatch.setattr(Collection, "_write_manifest", boom)
    with pytest.raises(OSError):
        svc.add_images(g, [("d.png", "image/png", png_bytes(5))])
    monkeypatch.undo()
    gal = svc.galleries.get(g)
    assert len(gal) == 1 and gal._index.ntotal == 1
    assert len(list((gal.dir / "segments").glob("*.npz"))) == 1
    assert len(RetrievalService(clip, HashingTextEncoder(dim=24), tmp_path).galleries.get(g)) == 1
    res = svc.add_images(g, [("d.png", "image/png", png_bytes(5))])
    assert res["added"][0]["id"] == 2


def test_heads_swap_without_restart_reprojects_galleries(tmp_path, clip, image_dir, monkeypatch):
    monkeypatch.setattr(service_mod, "_POINTER_CHECK_S", 0.0)
    enc = HashingTextEncoder(dim=24)
    svc = RetrievalService(clip, enc, tmp_path)
    g = svc.create_gallery()["id"]
    svc.add_images(g, [(f"f{i}.png", "image/png", png_bytes(i)) for i in range(4)])
    assert svc.galleries.get(g).dim == 32  # raw CLIP space without heads
    result, _ = train(tmp_path, clip, enc, image_dir)
    out = svc.search_gallery_text(g, "un chien", "fr", 2)  # picks up the new pointer
    assert len(out["results"]) == 2 and svc.galleries.get(g).dim == 8
    assert svc.heads_info["checkpoint"] == str(Path(result["checkpoint"]).resolve())
    with pytest.raises(InvalidInput, match="supported: de, en, es, fr") as err:
        svc.search_gallery_text(g, "ciao", "it", 2)
    assert err.value.detail["supported"] == ["de", "en", "es", "fr"]
    # heads trained for another text encoder are refused, the active ones stay
    with pytest.raises(InvalidInput, match="served encoders"):
        RetrievalService(clip, HashingTextEncoder(dim=10), tmp_path / "x").activate(Path(result["checkpoint"]))


def test_captions_and_classify(tmp_path, clip, image_dir):
    enc = HashingTextEncoder(dim=24)
    svc = RetrievalService(clip, enc, tmp_path)
    from services.retrieval.images import decode_image

    img = decode_image(png_bytes(1))
    en = svc.classify(img, ["dog", "cat", "car"], "en")  # no heads: raw CLIP on English names
    assert en["mode"] == "clip" and sorted(r["label"] for r in en["results"]) == ["car", "cat", "dog"]
    assert sum(r["probability"] for r in en["results"]) == pytest.approx(1.0)
    with pytest.raises(Unavailable):
        svc.classify(img, ["chien", "chat"], "fr")
    train(tmp_path, clip, enc, image_dir)
    svc.activate(read_pointer(tmp_path))
    fr = svc.classify(img, ["chien", "chat"], "fr", templates=["une photo d'un {}."])
    assert fr["mode"] == "uclip" and len(fr["results"]) == 2
    c = svc.create_captions(name="caps")["id"]
    res = svc.add_texts(c, [{"text": "un chien", "lang": "fr"}, {"text": "a dog", "lang": "en"},
                            {"text": "un chien", "lang": "fr"}])
    assert len(res["added"]) == 2 and res["duplicates"][0]["duplicate_of"] == 1
    hits = svc.search_captions_image(c, img, k=5)["results"]
    assert {h["text"] for h in hits} == {"un chien", "a dog"}
    assert hits[0]["score"] >= hits[1]["score"]
    only_fr = svc.search_captions_image(c, img, k=5, lang="fr")["results"]
    assert [h["text"] for h in only_fr] == ["un chien"]


def test_caption_text_delete_is_not_returned_and_survives_restart(tmp_path, clip, image_dir):
    from services.retrieval.images import decode_image

    enc = HashingTextEncoder(dim=24)
    train(tmp_path, clip, enc, image_dir)
    svc = RetrievalService(clip, enc, tmp_path)
    assert svc.heads is not None
    img = decode_image(png_bytes(1))
    c = svc.create_captions(name="caps")["id"]
    svc.add_texts(c, [{"text": "un chien", "lang": "fr"}, {"text": "a dog", "lang": "en"},
                      {"text": "ein Hund", "lang": "de"}])
    assert {h["text"] for h in svc.search_captions_image(c, img, k=10)["results"]} == {"un chien", "a dog", "ein Hund"}
    gone = svc.delete_text(c, 2)
    assert gone["text"] == "a dog"
    hits = svc.search_captions_image(c, img, k=10)["results"]
    assert {h["text"] for h in hits} == {"un chien", "ein Hund"} and 2 not in [h["id"] for h in hits]
    assert svc.search_captions_image(c, img, k=10, lang="en")["results"] == []
    with pytest.raises(NotFound):
        svc.delete_text(c, 2)
    # restart: the tombstone holds; index, items and hashes agree
    svc2 = RetrievalService(clip, enc, tmp_path)
    coll = svc2.captions.get(c)
    assert len(coll) == 2 and coll._index.ntotal == 2 and sorted(coll._ids.tolist()) == [1, 3]
    hits = svc2.search_captions_image(c, img, k=10)["results"]
    assert sorted(h["id"] for h in hits) == [1, 3]
    # the deleted text can be added again (not a duplicate of the tombstoned id) and stays after a restart
    again = svc2.add_texts(c, [{"text": "a dog", "lang": "en"}])
    assert again["duplicates"] == [] and again["added"][0]["id"] == 4
    svc3 = RetrievalService(clip, enc, tmp_path)
    coll3 = svc3.captions.get(c)
    assert sorted(i["id"] for i in coll3.items()) == [1, 3, 4] and coll3._index.ntotal == 3
    assert [h["text"] for h in svc3.search_captions_image(c, img, k=10, lang="en")["results"]] == ["a dog"]
