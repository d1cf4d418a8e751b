"""``seed=fingerprints`` jobs: the runner computes CLIP pivot pairs (WALIP step 1) and never falls back.

The runner is called directly (no Celery worker): a job is submitted through ``JobService``
with a recording ``send_task``, then ``run_alignment_job`` runs it in-process with explicit
settings (and, for the planted test, an explicit CLIP pool).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.settings import Settings
from services.jobs.runner import run_alignment_job
from services.jobs.service import JobService
from tests.conftest import write_npy_space
from tests.services.vision.conftest import planted, planted_word_vectors, write_index_images  # noqa: F401  (session fixture)

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}
TEMPLATES = {"en": ["a photo of a {}.", "a picture of a {}."], "fr": ["une photo d'un {}.", "une image d'un {}."]}
EN = ["dog", "cat", "house", "tree", "car", "river", "bread", "shoe", "apple", "book"]
FR = ["chien", "chat", "maison", "arbre", "voiture", "rivière", "pain", "chaussure", "pomme", "livre"]


def _service(client, tmp_path, spaces):
    sent = []
    svc = JobService(client, artifacts_dir=tmp_path / "artifacts", uploads_dir=tmp_path / "uploads",
                     normalize="unit,center,unit", max_vocab=None, time_limit_s=120, heartbeat_s=1.0,
                     max_upload_bytes=1 << 20, configured_spaces=spaces, send_task=lambda *a: sent.append(a))
    return svc, sent


def _run(client, svc, sent, tmp_path, **kw):
    job_id, attempt, _ = sent[-1]
    out = run_alignment_job(client, job_id, attempt, artifacts_dir=tmp_path / "artifacts", heartbeat_s=1.0, **kw)
    return out, svc.store.get(job_id), svc.view(job_id)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random-weight open_clip checkpoint, images and two 10-word spaces."""
    import models.torchvision_compat  # noqa: F401, I001  (must precede open_clip)
    import open_clip

    from models.clip import _register_model_config

    d = tmp_path_factory.mktemp("fp-jobs")
    _register_model_config("vislex-tiny-jobs", TINY)
    torch.manual_seed(3)
    ckpt = d / "tiny.pt"
    torch.save(open_clip.create_model("vislex-tiny-jobs").state_dict(), ckpt)
    write_index_images(d / "images", 12)
    rng = np.random.default_rng(5)
    X = rng.normal(size=(len(EN), 6))
    en = write_npy_space(d / "spaces", "en", EN, X)
    fr = write_npy_space(d / "spaces", "fr", FR, X @ np.linalg.qr(rng.normal(size=(6, 6)))[0])
    spec = {"model": "vislex-tiny-jobs", "checkpoint": str(ckpt), "model_config": TINY, "device": "cpu"}
    return {"dir": d, "ckpt": ckpt, "images": d / "images", "spaces": {"en": str(en), "fr": str(fr)}, "spec": spec}


def test_fingerprint_seed_uses_clip_pivots_from_settings(jobs_redis, tmp_path, tiny):
    svc, sent = _service(jobs_redis, tmp_path, tiny["spaces"])
    try:
        view, created = svc.submit({
            "src": "en", "tgt": "fr", "method": "walip", "seed": "fingerprints",
            "options": {"fingerprints": {"q": 0.0}, "max_iter": 2},
            "evaluate_with": [[a, b] for a, b in zip(EN, FR)],
        })
        assert created
        settings = Settings(data_dir=tmp_path / "data", images_dir=tiny["images"],
                            clip_models={"en": tiny["spec"], "fr": tiny["spec"]},
                            clip_templates=TEMPLATES)
        out, job, view = _run(jobs_redis, svc, sent, tmp_path, settings=settings)
        assert out["state"] == "succeeded", job.error
        result = job.result
        assert result["seed"] == "fingerprints"
        n = result["pivot_pairs"]
        assert n > 0 and result["seed_pairs"] == n == result["fingerprints"]["n_pivots"]
        assert result["fingerprints"]["n_images"] == {"en": 12, "fr": 12}
        assert result["fingerprints"]["src_encoder"].startswith("vislex-tiny-jobs")
        initial = result["fingerprints"]["initial_matching"]
        assert initial["n_pivots"] == n and 0.0 <= initial["precision"] <= 1.0
        assert result["initial_matching_precision"] == initial["precision"]
        # the saved mapping's stats say the same: not "identical", not "given"
        assert result["stats"]["seed"] == "fingerprints" and result["stats"]["pivot_pairs"] == n
        assert view["evaluation"]["pivot_pairs"] == n and "initial_matching_precision" in view["evaluation"]
        assert view["result"]["seed_pairs"] == n
        # image embeddings were cached under the settings' data dir
        assert list((tmp_path / "data" / "cache" / "images").glob("*.npy"))
    finally:
        svc.close()


def test_fingerprint_seed_recovers_planted_pairs(jobs_redis, tmp_path, planted):  # noqa: F811
    from models.clip import ClipPool

    class PlantedPool(ClipPool):
        def for_language(self, lang):
            return {"en": planted.en, "fr": planted.fr}[lang]

    X, Y, R = planted_word_vectors(planted)
    spaces = {"en": str(write_npy_space(tmp_path / "sp", "en", planted.en_words, X)),
              "fr": str(write_npy_space(tmp_path / "sp", "fr", planted.fr_words, Y))}
    gold = [[planted.en_words[i], planted.fr_words[j]] for i, j in planted.gold.tolist()]
    svc, sent = _service(jobs_redis, tmp_path, spaces)
    try:
        svc.submit({"src": "en", "tgt": "fr", "method": "walip", "seed": "fingerprints", "evaluate_with": gold})
        # templates come from the VISLEX_CLIP_TEMPLATES setting (the planted CLIP knows only these)
        settings = Settings(data_dir=tmp_path / "data", images_dir=planted.images_dir, clip_templates=TEMPLATES)
        out, job, view = _run(jobs_redis, svc, sent, tmp_path, settings=settings, clip_pool=PlantedPool())
        assert out["state"] == "succeeded", job.error
        assert job.result["seed"] == "fingerprints" and job.result["pivot_pairs"] >= 25
        assert job.result["initial_matching_precision"] >= 0.9
        assert view["evaluation"]["p@1"] >= 0.95  # then step 2 recovers the planted rotation
    finally:
        svc.close()


def test_settings_come_from_the_loader_and_are_required(jobs_redis, tmp_path, tiny):
    """Workers pass a settings loader (``vislex worker``); without settings a fingerprint job fails clearly."""
    svc, sent = _service(jobs_redis, tmp_path, tiny["spaces"])
    try:
        svc.submit({"src": "en", "tgt": "fr", "method": "walip", "seed": "fingerprints"})
        out, job, _ = _run(jobs_redis, svc, sent, tmp_path)
        assert out["state"] == "failed" and job.error["code"] == "settings_unavailable", job.error
        assert "vislex worker" in job.error["message"]

        calls = []

        def loader():
            calls.append(1)
            return Settings(data_dir=tmp_path / "data", images_dir=None)

        svc.submit({"src": "en", "tgt": "fr", "method": "walip", "seed": "fingerprints"})
        out, job, _ = _run(jobs_redis, svc, sent, tmp_path, settings_loader=loader)
        # the loader's settings were used: they name no image set, so the job fails on that, not on settings
        assert calls == [1] and out["state"] == "failed" and job.error["code"] == "images_unavailable"
    finally:
        svc.close()


def test_no_image_set_fails_even_where_identical_strings_would_work(jobs_redis, tmp_path, tiny):
    """Same words on both sides: a silent fallback to identical strings would succeed; this must fail."""
    spaces = {"en": tiny["spaces"]["en"], "fr": str(write_npy_space(tmp_path / "sp", "fr", EN, np.eye(10, 6)))}
    svc, sent = _service(jobs_redis, tmp_path, spaces)
    try:
        svc.submit({"src": "en", "tgt": "fr", "method": "walip", "seed": "fingerprints"})
        out, job, view = _run(jobs_redis, svc, sent, tmp_path,
                              settings=Settings(data_dir=tmp_path / "data", images_dir=None))
        assert out["state"] == "failed"
        assert job.error["code"] == "images_unavailable" and "image" in job.error["message"]
        assert view["error"]["code"] == "images_unavailable"
    finally:
        svc.close()


def test_missing_clip_weights_fail_with_encoder_unavailable(jobs_redis, tmp_path, tiny, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    svc, sent = _service(jobs_redis, tmp_path, tiny["spaces"])
    try:
        svc.submit({"src": "en", "tgt": "fr", "method": "walip", "seed": "fingerprints"})
        settings = Settings(data_dir=tmp_path / "data", images_dir=tiny["images"], clip_model="ViT-B-32",
                            clip_pretrained="laion2b_s34b_b79k")
        out, job, _ = _run(jobs_redis, svc, sent, tmp_path, settings=settings)
        assert out["state"] == "failed"
        assert job.error["code"] == "encoder_unavailable"
        assert "ViT-B-32:laion2b_s34b_b79k" in job.error["message"] and "'en'" in job.error["message"]
        assert job.error["detail"]["encoder"] == "ViT-B-32:laion2b_s34b_b79k"
    finally:
        svc.close()


def test_missing_images_dir_fails_before_loading(jobs_redis, tmp_path, tiny):
    svc, sent = _service(jobs_redis, tmp_path, tiny["spaces"])
    try:
        svc.submit({"src": "en", "tgt": "fr", "method": "walip", "seed": "fingerprints"})
        settings = Settings(data_dir=tmp_path / "data", images_dir=tmp_path / "nope",
                            clip_models={"en": tiny["spec"], "fr": tiny["spec"]})
        out, job, _ = _run(jobs_redis, svc, sent, tmp_path, settings=settings)
        assert out["state"] == "failed" and job.error["code"] == "images_unavailable"
        assert "nope" in job.error["message"]
    finally:
        svc.close()


def test_bad_fingerprint_options_rejected_at_submit(jobs_redis, tmp_path, tiny):
    from services.errors import InvalidInput

    svc, _ = _service(jobs_redis, tmp_path, tiny["spaces"])
    try:
        with pytest.raises(InvalidInput, match="unknown fingerprint options"):
            svc.submit({"src": "en", "tgt": "fr", "method": "walip", "seed": "fingerprints",
                        "options": {"fingerprints": {"nonsense": 1}}})
        with pytest.raises(InvalidInput, match="exactly one"):
            svc.submit({"src": "en", "tgt": "fr", "method": "walip", "seed": "fingerprints",
                        "options": {"fingerprints": {"templates": {"en": ["no placeholder"]}}}})
    finally:
        svc.close()


def test_fingerprint_settings_check_for_submit_side(tmp_path):
    from services.errors import Unavailable
    from services.vision.config import check_fingerprint_settings

    with pytest.raises(Unavailable) as e:
        check_fingerprint_settings(Settings(images_dir=None), "en", "fr")
    assert e.value.code == "images_unavailable"
    with pytest.raises(Unavailable) as e:
        check_fingerprint_settings(Settings(images_dir=tmp_path, clip_pretrained=None), "en", "fr")
    assert e.value.code == "encoder_unavailable" and "en, fr" in e.value.message
    check_fingerprint_settings(Settings(images_dir=tmp_path), "en", "fr")  # default tag: decided at load time


def test_pool_from_settings_per_language_and_reuse(tiny):
    from services.vision.config import clip_pool_config, pool_from_settings

    settings = Settings(clip_models={"fr": tiny["spec"], "it": {"reuse": "fr"}}, clip_checkpoint=tiny["ckpt"],
                        clip_model="vislex-tiny-jobs", clip_device="cpu")
    specs, reuse = clip_pool_config(settings, ["en", "it"])
    assert reuse == {"it": "fr"}
    assert [s["languages"] for s in specs] == [["en"], ["fr"]]
    assert specs[0]["checkpoint"] == str(tiny["ckpt"]) and specs[0]["pretrained"] is None
    pool = pool_from_settings(settings, ["en", "it"])
    assert pool_from_settings(settings, ["en", "it"]) is pool  # cached per configuration
    it = pool.for_language("it")
    assert it.reused_from == "fr" and it.source.startswith("vislex-tiny-jobs")
