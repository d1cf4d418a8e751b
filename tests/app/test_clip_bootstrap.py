"""HTTP: the CLIP bootstrap (issue 17) -- no CLIP to load, so the service trains one from the shared photos.

The shared data is faked by a tiny generated photo set in the expected layout (``images/flickr8k``,
``captions/flickr8k/captions.tsv``; services.clip.testing: flat-colour photos whose captions name the colour),
and the recipe's towers by tiny ones (``pixels-8``, static word vectors), so nothing of ../shared is needed.
Jobs run in threads (the worker's task body) instead of Celery workers; Redis is real.
"""

from __future__ import annotations

import io
import shutil
import threading
import time

import numpy as np
import pytest
from PIL import Image

from services.clip.testing import COLOURS, make_captioned_set
from services.retrieval.testing import HashingTextEncoder

HB = 0.2


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A shared-data folder in the layout the bootstrap expects, and the static vectors of the tiny text tower."""
    gen = tmp_path_factory.mktemp("gen")
    paths = make_captioned_set(gen, n_images=48, seed=3)
    root = tmp_path_factory.mktemp("shared")
    (root / "images").mkdir()
    shutil.copytree(paths["images"], root / "images" / "flickr8k")
    (root / "captions" / "flickr8k").mkdir(parents=True)
    shutil.copy(paths["captions"], root / "captions" / "flickr8k" / "captions.tsv")
    return {"root": root, "photos": (root / "images" / "flickr8k").resolve(), "vectors": paths["vectors"]}


@pytest.fixture()
def runner(monkeypatch, redis_url, shared):
    """Sends each job to a thread running the worker's task body -- once ``release()`` is called (until then the
    job stays queued, as with a busy worker). Also swaps the recipe's towers for tiny ones."""
    import app.wiring.clip as wiring
    import app.wiring.retrieval as retrieval
    from services.clip.bootstrap import Recipe
    from services.infra.redis import connect
    from services.jobs.clip_jobs import CLIP_KIND
    from services.jobs.kinds import run_kind_job

    state = {"sent": [], "held": [], "run": False}

    def start(job_id, attempt):
        threading.Thread(target=run_kind_job, args=(CLIP_KIND, connect(redis_url), job_id, attempt),
                         kwargs={"heartbeat_s": HB}, daemon=True).start()

    def send(job_id, attempt, spec):
        state["sent"].append((job_id, attempt))
        if state["run"]:
            start(job_id, attempt)
        else:
            state["held"].append((job_id, attempt))

    def release():
        state["run"] = True
        while state["held"]:
            start(*state["held"].pop(0))

    state["release"] = release
    monkeypatch.setattr(wiring, "_clip_sender", lambda runtime: send)
    monkeypatch.setattr(wiring, "_recipe", lambda: Recipe(
        image_tower="pixels-8", text_tower=f"static:{shared['vectors']}",
        config={"head": "linear", "epochs": 30, "patience": 30, "batch_size": 16, "val_fraction": 0.25,
                "lr": 1e-2, "embed_dim": 32}))
    # uCLIP's own multilingual encoder is not what this test is about: a tiny stand-in keeps it fast.
    monkeypatch.setattr(retrieval, "_load_text_encoder", lambda settings: HashingTextEncoder(dim=24))
    return state


def _png(rgb) -> bytes:
    arr = np.clip(np.asarray(rgb)[None, None, :] + np.random.default_rng(1).normal(0, 10, (32, 32, 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(arr.astype("uint8")).save(buf, format="PNG")
    return buf.getvalue()


def _settings(shared, **extra):
    return {"clip_bootstrap": "auto", "shared_data_dir": shared["root"], "job_heartbeat_s": HB,
            "clip_reference_words": 0, **extra}


def _until(fetch, done, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        r = fetch()
        if done(r) or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


def _components(c) -> dict:
    """/readyz's components (an optional component never holds readiness back; the body differs when not ready)."""
    body = c.get("/readyz").json()
    return body.get("components") or body["error"]["detail"]["components"]


def _message(r) -> str:
    return r.json()["error"]["message"]


def test_no_clip_trains_one_from_the_shared_photos_and_serves_it_without_a_restart(make_client, shared, runner,
                                                                                   redis_client, tmp_path):
    photos = str(shared["photos"])
    with make_client(**_settings(shared)) as c:
        # before training: every CLIP endpoint is 503, naming the training and the photos
        r = c.get("/v1/fingerprints", params={"word": "red"})
        assert r.status_code == 503, r.text
        assert f"training the default CLIP from {photos}: queued" in _message(r)
        r = c.post("/v1/galleries", json={"name": "colours"})
        assert r.status_code == 503 and f"training the default CLIP from {photos}" in _message(r)
        r = c.post("/v1/classify", files={"file": ("x.png", _png(COLOURS["red"][0]), "image/png")},
                   data={"labels": ["red", "blue"]})
        assert r.status_code == 503 and "training the default CLIP" in _message(r)
        jobs = c.get("/v1/clip/trainings").json()
        assert jobs["total"] == 1 and len(runner["sent"]) == 1
        job = jobs["jobs"][0]
        assert job["state"] == "queued" and job["inputs"]["images_dir"] == photos
        assert job["inputs"]["image_tower"] == "pixels-8"
        # /readyz and /v1/system show the bootstrap's state; an optional component never holds readiness back
        clip = _components(c)["clip"]
        assert clip["state"] in ("unavailable", "loading") and clip["progress"]["bootstrap"]["job"] == job["id"]
        assert clip["progress"]["bootstrap"]["photos"] == photos
        system = c.get("/v1/system").json()["components"]
        assert system["clip"]["progress"]["bootstrap"]["state"] == "queued"
        assert system["uclip"]["state"] in ("unavailable", "loading") and photos in system["uclip"]["reason"]

        runner["release"]()  # a worker takes the job
        seen = []

        def fingerprint():
            r = c.get("/v1/fingerprints", params={"word": "red", "top": 5})
            if r.status_code == 503:
                seen.append(_message(r))
            return r

        r = _until(fingerprint, lambda r: r.status_code != 503)
        assert r.status_code == 200, (r.text, seen[-3:])
        assert all("training the default CLIP" in m for m in seen), seen
        names = [m["name"] for m in r.json()["images"]]
        # photo i has colour i % 12 and red is colour 0: the red photos are 0, 12, 24, 36
        assert sum(int(n[5:9]) % 12 == 0 for n in names) >= 3, names
        assert c.get(f"/v1/fingerprints/images/{names[0]}").status_code == 200  # the photos are the image set
        assert c.get(f"/v1/clip/trainings/{job['id']}").json()["state"] == "succeeded"
        # galleries and classify, on the same trained CLIP, without a restart
        gallery = _until(lambda: c.post("/v1/galleries", json={"name": "colours"}), lambda r: r.status_code != 503)
        assert gallery.status_code == 201, gallery.text
        gid = gallery.json()["id"]
        colours = ["red", "blue", "green", "yellow"]
        r = c.post(f"/v1/galleries/{gid}/images",
                   files=[("files", (f"{n}.png", _png(COLOURS[n][0]), "image/png")) for n in colours])
        assert r.status_code == 201, r.text
        ids = {item["filename"]: item["id"] for item in r.json()["added"]}
        for colour in colours:
            r = c.get(f"/v1/galleries/{gid}/search", params={"q": f"a {colour} photo", "lang": "en", "k": 4})
            assert r.status_code == 200 and r.json()["results"][0]["id"] == ids[f"{colour}.png"], (colour, r.text)
        r = c.post("/v1/classify", files={"file": ("x.png", _png(COLOURS["green"][0]), "image/png")},
                   data={"labels": colours, "templates": ["a {} photo"]})
        assert r.status_code == 200 and r.json()["results"][0]["label"] == "green", r.text
        ready = _components(c)
        assert ready["clip"]["state"] == "ready" and ready["uclip"]["state"] == "ready"
        assert ready["clip"]["progress"]["bootstrap"]["state"] == "succeeded"
        encoders = c.get("/v1/system").json()["models"]["vision"]["encoders"]
        assert next(iter(encoders)) == "default:compact:clip.pt"

    # a restart finds the finished job (content-addressed) and serves its checkpoint at once: no second training
    sent = len(runner["sent"])
    with make_client(**_settings(shared)) as c:
        r = c.get("/v1/fingerprints", params={"word": "blue", "top": 3})
        assert r.status_code == 200, r.text
        listing = c.get("/v1/clip/trainings").json()
        assert listing["total"] == 1 and listing["jobs"][0]["attempt"] == 1 and len(runner["sent"]) == sent
        assert _components(c)["clip"]["progress"]["bootstrap"]["job"] == job["id"]


def test_a_restart_while_training_follows_the_same_job(make_client, shared, runner, redis_client):
    with make_client(**_settings(shared)) as c:
        first = c.get("/v1/clip/trainings").json()["jobs"][0]["id"]
    with make_client(**_settings(shared)) as c:  # the job is still queued: the same one is followed
        listing = c.get("/v1/clip/trainings").json()
        assert listing["total"] == 1 and listing["jobs"][0]["id"] == first
        runner["release"]()
        r = _until(lambda: c.get("/v1/fingerprints", params={"word": "red"}), lambda r: r.status_code != 503)
        assert r.status_code == 200, r.text


def test_a_cancelled_bootstrap_says_how_to_get_a_clip(make_client, shared, runner, redis_client):
    with make_client(**_settings(shared)) as c:
        job = c.get("/v1/clip/trainings").json()["jobs"][0]["id"]
        assert c.delete(f"/v1/clip/trainings/{job}").status_code == 200
        r = _until(lambda: c.get("/v1/fingerprints", params={"word": "red"}), lambda r: "no CLIP" in r.text)
        assert r.status_code == 503 and f"training job {job} cancelled" in _message(r)
        assert "VISLEX_CLIP_CHECKPOINT" in _message(r)


@pytest.mark.parametrize("case", ["off", "absent"])
def test_bootstrap_off_or_no_photos_is_503_naming_the_setting(make_client, shared, runner, redis_client, tmp_path,
                                                              case):
    settings = _settings(shared, clip_bootstrap="off") if case == "off" else \
        _settings(shared, shared_data_dir=tmp_path)  # a folder without the photos
    with make_client(**settings) as c:
        for r in (c.get("/v1/fingerprints", params={"word": "red"}), c.post("/v1/galleries", json={"name": "x"})):
            assert r.status_code == 503, r.text
            message = _message(r)
            assert "no CLIP: set VISLEX_CLIP_CHECKPOINT" in message
            if case == "off":
                assert "VISLEX_CLIP_BOOTSTRAP=auto" in message
            else:
                assert "VISLEX_SHARED_DATA_DIR" in message and str(tmp_path.resolve() / "images" / "flickr8k") in message
        assert c.get("/v1/clip/trainings").json()["total"] == 0 and runner["sent"] == []
        clip = _components(c)["clip"]
        assert clip["state"] == "unavailable" and "progress" not in clip


def test_a_configured_checkpoint_is_never_replaced_by_the_bootstrap(make_client, shared, runner, redis_client,
                                                                     tmp_path):
    missing = tmp_path / "nope.pt"
    with make_client(**_settings(shared, clip_checkpoint=missing)) as c:
        r = c.get("/v1/fingerprints", params={"word": "red"})
        assert r.status_code == 503 and "training" not in _message(r)
        assert c.get("/v1/clip/trainings").json()["total"] == 0


def test_the_swapped_in_clip_finds_its_mobilenets_where_the_bootstrap_found_them(tmp_path):
    """build_vision with the bootstrap's checkpoint: the default spec carries the MobileNet folder (a shared data
    folder elsewhere than beside the checkout needs no VISLEX_MOBILENET_DIR) and the bootstrap's image set."""
    from app.settings import Settings
    from app.wiring.vision import build_vision
    from services.clip.testing import tiny_trained_clip

    ckpt = tiny_trained_clip(tmp_path / "tiny", epochs=2)
    settings = Settings(data_dir=tmp_path / "data", clip_pretrained=None, encoder_languages=["en", "fr"])
    service = build_vision(settings, default_checkpoint=ckpt, images_dir=tmp_path, mobilenet_dir=tmp_path / "m")
    spec = service.pool.specs[0]
    assert spec.checkpoint == str(ckpt) and spec.mobilenet_dir == str(tmp_path / "m") and spec.pretrained is None
    assert spec.name == "default:compact:tiny-clip.pt" and set(spec.languages) == {"en", "fr"}
    assert service.images_dir == str(tmp_path)


def test_the_lazy_languages_yield_to_the_bootstrap_training_too(tmp_path, redis_client):
    """With the embedded worker, background work (lazy languages) waits while a job of any kind is active -- the
    bootstrap's CLIP training shared the 2 cores with them otherwise (6 min instead of about 2)."""
    import threading
    from types import SimpleNamespace

    from app.settings import Settings
    from app.wiring.serving import job_gate
    from services.jobs.clip_jobs import CLIP_KIND
    from services.jobs.kinds import KindJobStore

    gate = job_gate(SimpleNamespace(settings=Settings(data_dir=tmp_path, redis_embedded=True), redis=redis_client),
                    threading.Event())
    assert gate is not None and not gate.busy()
    redis_client.sadd(KindJobStore(CLIP_KIND, redis_client).ACTIVE, "c1")  # a CLIP training job queued or running
    assert gate.busy()
    redis_client.delete(KindJobStore(CLIP_KIND, redis_client).ACTIVE)
    assert not gate.busy()
