"""Sentence collections: persistence across restarts, translation order and scores, limits, model swaps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from services.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge

DE = ["ein hund läuft", "eine katze schläft", "ein rotes auto", "zwei kinder spielen"]


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_translate_order_scores_and_persistence(make_service, encoder):
    svc = make_service(storage_dtype="float32")  # exact scores (the float16 default: next test)
    svc.create_collection("de", collection_id="tm-de")
    out = svc.add_sentences("tm-de", DE + ["ein hund läuft", "  ein hund läuft "])
    assert [a["id"] for a in out["added"]] == [1, 2, 3, 4] and out["count"] == 4
    assert [d["duplicate_of"] for d in out["duplicates"]] == [1, 1]
    queries = ["zwei kinder", "hund läuft", "auto"]
    res = svc.translate(queries, "en", "de", k=4)
    assert [r["text"] for r in res["results"]] == queries  # input order
    E = _unit(encoder.encode(DE))
    for q, r in zip(queries, res["results"]):
        expected = _unit(encoder.encode([q]))[0] @ E.T
        ranked = np.argsort(-expected)
        assert [t["id"] for t in r["translations"]] == [int(i) + 1 for i in ranked]
        assert [t["score"] for t in r["translations"]] == pytest.approx(expected[ranked].tolist(), abs=1e-5)
    assert res["results"][0]["translations"][0]["text"] == "zwei kinder spielen"
    svc.delete_sentence("tm-de", 4)
    assert svc.translate(["zwei kinder"], "en", None, k=1, collection="tm-de")["results"][0]["translations"][0]["id"] != 4
    # a new service on the same data dir serves the same collection, deletion included
    again = make_service(storage_dtype="float32")
    assert [c.describe()["count"] for c in again.store.list()] == [3]
    assert again.translate(queries, "en", "de", k=3)["results"][1] == svc.translate(queries, "en", "de", k=3)["results"][1]
    assert again.add_sentences("tm-de", ["ein rotes auto", "ein boot"])["added"][0]["id"] == 5  # ids never reused


def test_float16_storage_is_the_default_and_ranks_as_float32(make_service, encoder):
    """float16 storage (the default: half the memory and scan) returns the float32 ranking, scores within
    float16's rounding of unit vectors (a 512-d dot product of values rounded to 11 bits: < 2e-3)."""
    svc = make_service()
    assert svc.storage_dtype == "float16"
    svc.create_collection("de", collection_id="tm-de")
    svc.add_sentences("tm-de", DE)
    queries = ["zwei kinder", "hund läuft", "auto", "katze"]
    E = _unit(encoder.encode(DE))
    res = svc.translate(queries, "en", "de", k=4)
    assert svc.store.get("tm-de").index.storage_dtype == "float16"
    for q, r in zip(queries, res["results"]):
        expected = _unit(encoder.encode([q]))[0] @ E.T
        ranked = np.argsort(-expected)
        assert [t["id"] for t in r["translations"]] == [int(i) + 1 for i in ranked]
        assert [t["score"] for t in r["translations"]] == pytest.approx(expected[ranked].tolist(), abs=2e-3)


def test_errors(make_service):
    svc = make_service(max_batch=2, max_chars=20, max_add=3)
    with pytest.raises(InvalidInput) as e:
        svc.create_collection("ja")
    assert e.value.code == "unsupported_language" and e.value.detail["supported"] == ["de", "en", "fr"]
    svc.create_collection("de", collection_id="de")
    with pytest.raises(NotFound):
        svc.translate(["x"], "en", None, collection="nope")
    with pytest.raises(NotFound):
        svc.translate(["x"], "en", "fr")  # no collection in French
    with pytest.raises(InvalidInput) as e:
        svc.translate(["x"], "ru", "de")
    assert e.value.detail["field"] == "src" and "de, en, fr" in e.value.message
    with pytest.raises(InvalidInput) as e:
        svc.translate(["x"], "en", "fr", collection="de")
    assert e.value.detail["field"] == "tgt"
    with pytest.raises(PayloadTooLarge):
        svc.translate(["a", "b", "c"], "en", "de")
    with pytest.raises(PayloadTooLarge) as e:
        svc.translate(["x" * 21], "en", "de")
    assert e.value.detail["field"] == "texts.0"
    with pytest.raises(PayloadTooLarge):
        svc.add_sentences("de", ["a", "b", "c", "d"])
    with pytest.raises(InvalidInput):
        svc.add_sentences("de", ["ok", "   "])
    assert len(svc.store.get("de")) == 0  # a refused batch adds nothing
    with pytest.raises(Conflict):
        svc.create_collection("de", collection_id="de")
    svc.create_collection("de", collection_id="de2")
    with pytest.raises(InvalidInput) as e:  # two German collections: name one
        svc.translate(["x"], "en", "de")
    assert e.value.detail["candidates"] == ["de", "de2"]


def _residual_checkpoint(path, dim, seed=0):
    """A Globetrotter checkpoint over one shared ("*") tower whose residual head is a random rotation-ish map."""
    from models.globetrotter import GlobetrotterConfig, GlobetrotterHeads, save_checkpoint

    heads = GlobetrotterHeads(GlobetrotterConfig(image_dim=8, text_dims={"*": dim}, embed_dim=dim, text_head="residual"))
    torch.manual_seed(seed)
    with torch.no_grad():
        heads.text["any"].linear.weight.normal_(0, 0.5)
    return save_checkpoint(path, heads, image_tower="pixels-8", text_towers={"*": "use-multilingual"})


def test_model_swap_reembeds_and_survives_restart(make_service, tmp_path):
    from services.sentences.models import models_dir

    svc = make_service()
    svc.create_collection("de", collection_id="de")
    svc.add_sentences("de", DE)
    before = svc.translate(["hund"], "en", "de", k=4)
    ckpt = _residual_checkpoint(models_dir(tmp_path / "data") / "g1.pt", 24)
    info = svc.activate("g1", wait=True)
    assert info["swap"]["state"] == "idle" and info["active"]["kind"] == "globetrotter"
    after = svc.translate(["hund"], "en", "de", k=4)
    assert after["model_key"] != before["model_key"] and after["model_key"] == info["active"]["version"]
    assert [t["score"] for t in after["results"][0]["translations"]] != \
        pytest.approx([t["score"] for t in before["results"][0]["translations"]])
    # only the active model's embeddings stay on disk
    emb = tmp_path / "data" / "sentences" / "collections" / "de" / "emb"
    assert [p.name for p in emb.iterdir()] == [after["model_key"]]
    # the pointer survives a restart; an explicit setting wins over it
    assert make_service().model.key == after["model_key"]
    assert make_service(model="use-multilingual").model.key == before["model_key"]
    with pytest.raises(NotFound):
        svc.activate("no-such-model")
    assert json.loads((tmp_path / "data" / "sentences" / "model.json").read_text())["value"] == str(ckpt.resolve())


def test_pointer_written_elsewhere_is_picked_up(make_service, tmp_path):
    from services.sentences.models import ModelSpec, models_dir
    from services.sentences.service import write_pointer

    svc = make_service()
    svc.create_collection("fr", collection_id="fr")
    svc.add_sentences("fr", ["un chien", "un chat"])
    ckpt = _residual_checkpoint(models_dir(tmp_path / "data") / "g2.pt", 24, seed=3)
    write_pointer(tmp_path / "data", ModelSpec("checkpoint", str(ckpt.resolve())))  # as a training job does
    svc._pointer_checked = 0.0
    svc.maybe_reload()
    svc._swap_thread.join(10)
    assert svc.model.describe()["kind"] == "globetrotter"
    assert svc.translate(["chien"], "en", "fr", k=1)["model_key"] == svc.model.key


def test_swap_to_a_model_without_a_collection_language_keeps_it(make_service, tmp_path):
    from models.globetrotter import GlobetrotterConfig, GlobetrotterHeads, save_checkpoint
    from services.sentences.models import models_dir

    svc = make_service()
    svc.create_collection("de", collection_id="de")
    svc.create_collection("fr", collection_id="fr")
    svc.add_sentences("de", DE)
    svc.add_sentences("fr", ["un chien", "un chat"])
    heads = GlobetrotterHeads(GlobetrotterConfig(image_dim=8, text_dims={"de": 24, "en": 24}, embed_dim=24))
    save_checkpoint(models_dir(tmp_path / "data") / "deen.pt", heads, image_tower="pixels-8",
                    text_towers={"de": "use-multilingual", "en": "use-multilingual"})
    info = svc.activate("deen", wait=True)
    assert info["swap"]["state"] == "idle" and info["supported_languages"] == ["de", "en"]
    assert len(svc.translate(["hund"], "en", "de", k=2)["results"][0]["translations"]) == 2
    with pytest.raises(InvalidInput) as e:
        svc.translate(["chien"], "en", "fr")
    assert e.value.detail == {"field": "tgt", "supported": ["de", "en"], "model": info["active"]["name"]}
    assert len(svc.store.get("fr")) == 2  # nothing lost: a model that embeds French serves it again
    svc.activate("use-multilingual", wait=True)
    assert svc.translate(["chien"], "en", "fr", k=1)["results"][0]["translations"][0]["text"] == "un chien"
