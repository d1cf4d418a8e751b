"""HTTP: CLIP training jobs (/v1/clip/trainings) on the real job machinery and the real training core.

A tiny captioned set with planted structure (services.clip.testing: flat-colour photos, captions naming the
colour, the ``pixels-8`` image tower and static word vectors) trains in about a second. Jobs run in threads
(the task body a worker runs, ``run_kind_job``) instead of Celery workers; Redis is real.
"""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

from services.clip.testing import make_captioned_set

HB = 0.2  # job heartbeat: a job whose worker stops beating is lost after 3 intervals


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip-data")
    return {"root": root, **make_captioned_set(root, n_images=48, seed=1)}


def _body(data, **extra):
    return {"images_dir": str(data["images"]), "captions": str(data["captions"]), "image_tower": "pixels-8",
            "text_tower": f"static:{data['vectors']}", "val_fraction": 0.25, "epochs": 4, "batch_size": 16,
            "embed_dim": 16, **extra}


# A long run: many epochs, no early stop -- running for as long as a cancel or time-limit test needs.
LONG = {"epochs": 10_000, "patience": 10_000}


@pytest.fixture()
def runner(monkeypatch, redis_url):
    """Sends each attempt to a thread running the worker's task body; ``runner.lose_first`` makes the first
    attempt's worker die right after claiming the job (no heartbeat, never finishes)."""
    import app.wiring.clip as wiring
    from services.infra.redis import connect
    from services.jobs.clip_jobs import CLIP_KIND
    from services.jobs.kinds import KindJobStore, run_kind_job

    state = {"sent": [], "lose_first": False, "run": True}

    def send(job_id, attempt, spec):
        state["sent"].append((job_id, attempt))
        client = connect(redis_url)
        if state["lose_first"] and len(state["sent"]) == 1:
            KindJobStore(CLIP_KIND, client, heartbeat_ttl_s=3 * HB).claim(job_id, attempt, "doomed-worker")
            return
        if state["run"]:
            threading.Thread(target=run_kind_job, args=(CLIP_KIND, client, job_id, attempt),
                             kwargs={"heartbeat_s": HB}, daemon=True).start()

    monkeypatch.setattr(wiring, "_clip_sender", lambda runtime: send)
    return state


@pytest.fixture()
def client(make_client, data, runner, redis_client):
    with make_client(space_path_roots=[str(data["root"])], job_time_limit_s=600, job_heartbeat_s=HB) as c:
        yield c


def _until(client, job_id, done, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/clip/trainings/{job_id}").json()
        if done(job) or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def _final(job):
    return job["state"] in ("succeeded", "failed", "cancelled")


def test_a_training_job_runs_to_a_checkpoint_and_is_content_addressed(client, data, tmp_path):
    r = client.post("/v1/clip/trainings", json=_body(data))
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["Location"] == f"/v1/clip/trainings/{job['id']}" and r.headers["Retry-After"]
    assert job["state"] in ("queued", "running") and job["kind"] == "clip" and not job["cached"]
    assert job["inputs"]["image_tower"] == "pixels-8" and job["inputs"]["epochs"] == 4
    assert job["inputs"]["head"] == "linear"  # the training core's default, filled in at submission
    done = _until(client, job["id"], _final)
    assert done["state"] == "succeeded", done
    result = done["result"]
    checkpoint = tmp_path / "data" / "clip" / job["id"] / "clip.pt"  # <data dir>/clip/<job id>/
    assert result["checkpoint"] == str(checkpoint) and checkpoint.is_file()
    assert 1 <= result["metrics"]["epochs_run"] <= 4 and len(result["history"]) == result["metrics"]["epochs_run"]
    assert set(result["metrics"]["val"]) == {"t2i", "i2t"} and done["progress"]["stage"] == "done"
    assert len(done["losses"]) == result["metrics"]["epochs_run"]  # the loss curve: one per epoch
    assert done["links"]["checkpoint"] == f"/v1/clip/trainings/{job['id']}/checkpoint"
    assert "Retry-After" not in client.get(f"/v1/clip/trainings/{job['id']}").headers
    # the checkpoint, as a download
    dl = client.get(done["links"]["checkpoint"])
    assert dl.status_code == 200 and dl.content == checkpoint.read_bytes()
    sha = hashlib.sha256(dl.content).hexdigest()
    assert dl.headers["ETag"] == f'"{sha}"' and result["artifact"]["sha256"] == sha
    # the same inputs are the same job (a default given explicitly too); force runs a new one
    again = client.post("/v1/clip/trainings", json=_body(data, head="linear"))
    assert again.status_code == 200 and again.json()["cached"] and again.json()["id"] == job["id"]
    assert "Retry-After" not in again.headers
    assert client.post("/v1/clip/trainings", json=_body(data, epochs=3)).json()["id"] != job["id"]
    forced = client.post("/v1/clip/trainings", json=_body(data, force=True))
    assert forced.status_code == 202 and forced.json()["id"] != job["id"]
    listing = client.get("/v1/clip/trainings").json()
    assert listing["total"] == 3 and job["id"] in {j["id"] for j in listing["jobs"]}
    assert client.get("/v1/clip/trainings", params={"state": "cancelled"}).json()["total"] == 0
    assert client.get("/v1/uclip/trainings").json()["total"] == 0  # kinds keep to their own jobs


def test_queued_job_cancel_conflicts_and_unknown_ids(client, data, runner):
    runner["run"] = False  # no worker takes it: it stays queued
    job = client.post("/v1/clip/trainings", json=_body(data)).json()
    assert job["state"] == "queued"
    r = client.get(f"/v1/clip/trainings/{job['id']}/checkpoint")
    assert r.status_code == 409 and r.json()["error"]["detail"]["state"] == "queued"
    r = client.delete(f"/v1/clip/trainings/{job['id']}")
    assert r.status_code == 200 and r.json()["state"] == "cancelled" and r.json()["error"]["code"] == "cancelled"
    r = client.delete(f"/v1/clip/trainings/{job['id']}")
    assert r.status_code == 409 and r.json()["error"]["detail"] == {"job_id": job["id"], "state": "cancelled"}
    assert client.get(f"/v1/clip/trainings/{job['id']}/checkpoint").status_code == 409
    for method, path in (("get", "/v1/clip/trainings/nope"), ("delete", "/v1/clip/trainings/nope"),
                         ("get", "/v1/clip/trainings/nope/checkpoint")):
        r = getattr(client, method)(path)
        assert r.status_code == 404 and "no CLIP training job" in r.json()["error"]["message"], (method, path)
    # a cancelled job submitted again runs again (a new attempt)
    runner["run"] = True
    again = client.post("/v1/clip/trainings", json=_body(data))
    assert again.status_code == 202 and again.json()["id"] == job["id"] and again.json()["attempt"] == 2
    assert _until(client, job["id"], _final)["state"] == "succeeded"


def test_a_running_job_is_cancelled_at_its_next_epoch(client, data, tmp_path):
    job = client.post("/v1/clip/trainings", json=_body(data, **LONG)).json()
    running = _until(client, job["id"], lambda j: (j["progress"] or {}).get("stage") == "train" or _final(j))
    assert running["state"] == "running" and running["progress"]["epoch"] >= 1, running
    assert running["progress"]["total"] == 10_000 and "loss" in running["progress"]["metrics"]
    r = client.delete(f"/v1/clip/trainings/{job['id']}")
    assert r.status_code == 202 and r.json()["cancel_requested"]
    done = _until(client, job["id"], _final, timeout=20)
    assert done["state"] == "cancelled" and "CLIP training job" in done["error"]["message"]
    assert done["progress"]["epoch"] < 10_000 and done["result"] is None
    assert not (tmp_path / "data" / "clip" / job["id"] / "clip.pt").exists()


def test_the_time_limit_fails_a_job_and_is_capped(client, data):
    job = client.post("/v1/clip/trainings", json=_body(data, time_limit_s=1, **LONG)).json()
    assert job["time_limit_s"] == 1
    done = _until(client, job["id"], _final, timeout=30)
    assert done["state"] == "failed" and done["error"]["code"] == "time_limit_exceeded", done
    assert done["finished_at"] - done["started_at"] < 5
    r = client.post("/v1/clip/trainings", json=_body(data, time_limit_s=601))
    assert r.status_code == 422 and r.json()["error"]["detail"] == {"field": "time_limit_s", "max": 600}


def test_a_crashed_worker_is_reaped_and_its_job_runs_again(client, data, runner):
    runner["lose_first"] = True  # the first worker claims the job and dies
    job = client.post("/v1/clip/trainings", json=_body(data)).json()
    done = _until(client, job["id"], _final)
    assert done["state"] == "succeeded", done
    assert done["retries"] == 1 and done["attempt"] == 2 and runner["sent"] == [(job["id"], 1), (job["id"], 2)]


def test_caption_languages_reach_the_checkpoint_as_text_centres(client, data):
    """captions_language + extra_captions (HTTP): the captions' languages are known, so the default language
    centring acts and the checkpoint carries one mean per language, and a map for every language but the pivot
    (the one with most captions; a tie goes to the first code); without them it carries none."""
    import torch

    de = data["root"] / "captions.de.tsv"
    de.write_text(data["captions"].read_text(encoding="utf-8"), encoding="utf-8")  # same photos, "German" lines
    r = client.post("/v1/clip/trainings", json=_body(data, captions_language="en", extra_captions={"de": str(de)}))
    assert r.status_code == 202, r.text
    assert r.json()["inputs"]["extra_captions"] == {"de": str(de)} and r.json()["inputs"]["captions_language"] == "en"
    done = _until(client, r.json()["id"], _final)
    assert done["state"] == "succeeded", done
    blob = torch.load(done["result"]["checkpoint"], map_location="cpu", weights_only=False)
    assert blob["version"] == 3 and sorted(blob["text_centres"]) == ["de", "en"] and sorted(blob["text_maps"]) == ["en"]
    means_only = client.post("/v1/clip/trainings", json=_body(data, captions_language="en", centring="language",
                                                              extra_captions={"de": str(de)}))
    done = _until(client, means_only.json()["id"], _final)
    assert done["state"] == "succeeded", done
    blob = torch.load(done["result"]["checkpoint"], map_location="cpu", weights_only=False)
    assert blob["version"] == 2 and sorted(blob["text_centres"]) == ["de", "en"] and "text_maps" not in blob
    plain = client.post("/v1/clip/trainings", json=_body(data, epochs=2))
    done = _until(client, plain.json()["id"], _final)
    assert done["state"] == "succeeded", done
    blob = torch.load(done["result"]["checkpoint"], map_location="cpu", weights_only=False)
    assert "text_centres" not in blob


@pytest.mark.parametrize("change, field", [
    ({"captions": "/etc/passwd"}, "captions"),
    ({"captions": "/etc/no-such-file.tsv"}, "captions"),
    ({"images_dir": "/usr"}, "images_dir"),
    ({"text_tower": "static:/etc/passwd"}, "text_tower"),
    ({"image_tower": "/etc/model.tflite"}, "image_tower"),
    ({"extra_captions": {"de": "/etc/passwd"}}, "extra_captions.de"),
    ({"translations": {"de": "/etc/passwd"}}, "translations.de"),
])
def test_paths_outside_the_allowed_roots_are_refused_without_an_existence_oracle(client, data, change, field):
    r = client.post("/v1/clip/trainings", json=_body(data, **change))
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "path_not_allowed" and err["detail"] == {"field": field}
    assert "/etc" not in r.text and "/usr" not in r.text and str(data["root"]) not in r.text


@pytest.mark.parametrize("change, field", [
    ({"captions": "captions.tsv"}, "captions"),  # relative: the schema refuses it
    ({"captions": "MISSING"}, "captions"),  # inside the roots, but no such file
    ({"images_dir": "CAPTIONS"}, "images_dir"),  # a file where a folder is needed
    ({"image_tower": "model.tflite"}, "image_tower"),  # a file name relative to the worker's directory
    ({"image_tower": "resnet-50"}, "image_tower"),
    ({"image_tower": "mobilenet-v1+pixels-8"}, "image_tower"),  # known parts, refused by the training core
    ({"text_tower": "static:vectors.npy"}, "text_tower"),
    ({"text_tower": "bert"}, "text_tower"),
    ({"head": "cnn"}, "head"),
    ({"val_fraction": 1.0}, "val_fraction"),
    ({"val_fraction": True}, "val_fraction"),
    ({"epochs": "5"}, "epochs"),
    ({"epochs": 0}, "epochs"),
    ({"seed": -1}, "seed"),
    ({"batch_size": 1}, "batch_size"),
    ({"force": 1}, "force"),
    ({"queue": "gpu"}, "queue"),
    ({"epoch": 3}, "epoch"),  # an unknown field
    ({"extra_captions": {"de": "MISSING"}}, "extra_captions.de"),
    ({"extra_captions": {"de": "captions.de.tsv"}}, "extra_captions.de"),  # relative
    ({"extra_captions": {"german please": "CAPTIONS"}}, "extra_captions"),
    ({"extra_captions": ["CAPTIONS"]}, "extra_captions"),
    ({"captions_language": "english please"}, "captions_language"),
    ({"translations": {"de": "MISSING"}}, "translations.de"),
    ({"translations": {"de": "CAPTIONS"}}, "captions_language"),  # the source side's language is needed
    ({"translations": ["CAPTIONS"]}, "translations"),
    ({"centring": "mean"}, "centring"),
    ({"caption_weights": "equal"}, "caption_weights"),
])
def test_bad_inputs_are_422_naming_the_field(client, data, change, field):
    body = _body(data)
    names = {"MISSING": str(data["root"] / "missing.tsv"), "CAPTIONS": str(data["captions"])}
    for key, value in change.items():
        if isinstance(value, dict):
            value = {k: names.get(v, v) for k, v in value.items()}
        elif isinstance(value, list):
            value = [names.get(v, v) for v in value]
        body[key] = names.get(value, value) if isinstance(value, str) else value
    r = client.post("/v1/clip/trainings", json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["error"]["detail"]
    named = {detail.get("field")} | {e["field"] for e in detail.get("errors", [])}
    assert field in named, r.text
    assert str(data["root"]) not in r.text
    assert client.get("/v1/clip/trainings").json()["total"] == 0  # nothing was queued


def test_every_status_is_documented(client):
    paths = client.get("/openapi.json").json()["paths"]
    documented = {(method, path): set(op["responses"]) for path, ops in paths.items() if path.startswith("/v1/clip/")
                  for method, op in ops.items()}
    assert {"200", "202", "401", "403", "422", "429", "503"} <= documented[("post", "/v1/clip/trainings")]
    assert {"200", "202", "401", "403", "404", "409"} <= documented[("delete", "/v1/clip/trainings/{job_id}")]
    assert {"200", "404", "409"} <= documented[("get", "/v1/clip/trainings/{job_id}/checkpoint")]
    assert {"200", "404"} <= documented[("get", "/v1/clip/trainings/{job_id}")]
    assert "200" in documented[("get", "/v1/clip/trainings")]


def test_the_readme_example_body_validates_against_the_schema():
    import json
    import re
    from pathlib import Path

    from app.schemas.clip import ClipTrainingRequest

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    bodies = re.findall(r"-XPOST localhost:8000/v1/clip/trainings [^\n]*-d '([^']*)'", readme)
    assert bodies
    for body in bodies:
        ClipTrainingRequest.model_validate(json.loads(body))  # an unknown or mistyped field raises
