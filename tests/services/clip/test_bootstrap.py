"""The CLIP bootstrap's pure part: where the shared data is looked for, the job's params, what the 503s say."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.clip import bootstrap
from services.clip.bootstrap import Recipe, find_source, job_reason, job_status, plan, training_params

TINY = Recipe(image_tower="pixels-8", text_tower="static:/x/vectors.npy", config={"epochs": 3})


def _shared(root: Path, *, photos=True, captions=True, mobilenet=False) -> Path:
    if photos:
        (root / "images" / "flickr8k").mkdir(parents=True)
    if captions:
        (root / "captions" / "flickr8k").mkdir(parents=True)
        (root / "captions" / "flickr8k" / "captions.tsv").write_text("a.jpg\ta dog\n")
    if mobilenet:
        (root / "models" / "mobilenet").mkdir(parents=True)
        for name in ("mobilenet_v1_1.0_224_quant_embedding_extractor.tflite", "mobilenet_v2_1.0_224_quant.tflite"):
            (root / "models" / "mobilenet" / name).write_bytes(b"x")
    return root


@pytest.fixture()
def no_default_mobilenets(monkeypatch):
    """The image towers' own defaults (../shared beside the checkout, VISLEX_MOBILENET_DIR) find nothing."""
    import models.image_towers as towers

    monkeypatch.setattr(towers, "_DEFAULT_MOBILENET_DIRS", ())
    monkeypatch.delenv(towers.MOBILENET_DIR_ENV, raising=False)


def test_the_default_shared_folder_is_beside_the_checkout():
    assert bootstrap.DEFAULT_SHARED_DATA_DIR == Path(bootstrap.__file__).resolve().parents[3] / "shared" / "data"
    assert bootstrap.shared_root(None) == bootstrap.DEFAULT_SHARED_DATA_DIR


def test_off_never_trains_and_names_the_settings(tmp_path):
    p = plan("off", _shared(tmp_path, mobilenet=True), recipe=TINY)
    assert p.action == "off" and p.params is None
    assert "VISLEX_CLIP_CHECKPOINT" in p.reason and "VISLEX_CLIP_BOOTSTRAP=auto" in p.reason


def test_missing_photos_name_the_setting_and_the_path(tmp_path):
    p = plan("auto", _shared(tmp_path, photos=False), recipe=TINY)
    assert p.action == "missing" and p.params is None
    assert p.missing == (str(tmp_path.resolve() / "images" / "flickr8k"),)
    assert "VISLEX_SHARED_DATA_DIR" in p.reason and "VISLEX_CLIP_CHECKPOINT" in p.reason
    assert str(tmp_path.resolve() / "images" / "flickr8k") in p.reason


def test_the_mobilenets_are_needed_only_by_a_mobilenet_recipe(tmp_path, no_default_mobilenets):
    root = _shared(tmp_path)
    assert plan("auto", root, recipe=TINY).action == "train"
    p = plan("auto", root)  # the default recipe: MobileNet v1 + v2
    assert p.action == "missing" and [Path(m).name for m in p.missing] == [
        "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite", "mobilenet_v2_1.0_224_quant.tflite"]
    assert all(str(root.resolve() / "models" / "mobilenet") in m for m in p.missing)
    mobilenets = _shared(tmp_path / "elsewhere", photos=False, captions=False, mobilenet=True) / "models" / "mobilenet"
    p = plan("auto", root, mobilenet_dir=mobilenets)  # VISLEX_MOBILENET_DIR
    assert p.action == "train" and p.params["mobilenet_dir"] == str(mobilenets.resolve())
    _shared(tmp_path / "b", mobilenet=True)
    p = plan("auto", tmp_path / "b")  # <shared>/models/mobilenet
    assert p.action == "train" and p.params["mobilenet_dir"] == str((tmp_path / "b" / "models" / "mobilenet").resolve())


def test_the_params_are_a_valid_job_and_the_same_job_every_time(tmp_path):
    from services.jobs.clip_jobs import CLIP_KIND
    from services.jobs.kinds import job_id_for

    root = _shared(tmp_path)
    source, missing = find_source(root, recipe=TINY)
    assert missing == []
    params = training_params(source, TINY)
    assert params == {"images_dir": str((root / "images" / "flickr8k").resolve()),
                      "captions": str((root / "captions" / "flickr8k" / "captions.tsv").resolve()),
                      "image_tower": "pixels-8", "text_tower": "static:/x/vectors.npy", "config": {"epochs": 3}}
    validated = CLIP_KIND.validate(params)  # what the job kind checks at submission
    assert validated["config"]["epochs"] == 3
    again = CLIP_KIND.validate(training_params(find_source(root, recipe=TINY)[0], TINY))
    assert job_id_for(CLIP_KIND, validated) == job_id_for(CLIP_KIND, again)


def test_the_default_recipe_is_a_valid_training_request():
    from services.clip.training import validate_train_params

    p = validate_train_params({"images_dir": "/p", "captions": "/c.tsv", "image_tower": bootstrap.DEFAULT_RECIPE.image_tower,
                               "text_tower": bootstrap.DEFAULT_RECIPE.text_tower, "config": bootstrap.DEFAULT_RECIPE.config})
    assert p["image_tower"] == "mobilenet-v1+v2" and p["text_tower"] == "use-multilingual"


@pytest.mark.parametrize("view, says", [
    ({"id": "c1", "state": "queued"}, "queued, waiting for a worker (job c1)"),
    ({"id": "c1", "state": "running", "progress": None}, ": starting (job c1)"),
    ({"id": "c1", "state": "running", "progress": {"stage": "encode_images", "current": 256, "total": 7091}},
     ": encoding photos 256/7091"),
    ({"id": "c1", "state": "running", "progress": {"stage": "encode_texts", "current": 2048, "total": 35455}},
     ": encoding captions 2048/35455"),
    ({"id": "c1", "state": "running", "progress": {"stage": "train", "current": 3, "total": 40, "epoch": 3}},
     ": epoch 3/40 (job c1)"),
])
def test_the_reason_while_training_names_the_photos_and_the_step(view, says):
    reason = job_reason(view, "/data/images/flickr8k")
    assert reason.startswith("training the default CLIP from /data/images/flickr8k") and says in reason


def test_the_passes_of_a_concatenated_image_tower_are_told_apart():
    from services.clip.bootstrap import image_passes

    assert image_passes("mobilenet-v1+v2") == 2 and image_passes("mobilenet-v1") == 1 and image_passes("pixels-8") == 1
    view = {"id": "c1", "state": "running", "progress": {"stage": "encode_images", "current": 256, "total": 7091}}
    assert job_reason(view, "/p", (2, 2)).endswith("encoding photos 256/7091 (image tower 2 of 2) (job c1)")
    assert "image tower" not in job_reason(view, "/p", (1, 1))


def test_a_job_that_ended_without_a_clip_says_how_to_retry():
    reason = job_reason({"id": "c1", "state": "failed", "error": {"message": "out of memory"}}, "/p")
    assert reason.startswith("no CLIP:") and "c1 failed (out of memory)" in reason
    assert "restart" in reason and "VISLEX_CLIP_CHECKPOINT" in reason


def test_job_status_for_readyz():
    view = {"id": "c1", "state": "running", "progress": {"stage": "train", "current": 2, "total": 40, "epoch": 2}}
    assert job_status(view) == {"job": "c1", "state": "running", "stage": "train", "epoch": 2, "epochs": 40}
    view = {"id": "c1", "state": "running", "progress": {"stage": "encode_images", "current": 5, "total": 9}}
    assert job_status(view) == {"job": "c1", "state": "running", "stage": "encode_images", "done": 5, "total": 9}
    assert job_status({"id": "c1", "state": "queued"}) == {"job": "c1", "state": "queued"}
