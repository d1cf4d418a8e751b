"""Alignment jobs over HTTP with real Celery worker processes and a real Redis.

Workers run ``vislex worker`` (as ``python -m vislex.cli worker``) with the
test aligner plugin ``tests/services/jobs/plugin_aligners.py`` (Procrustes whose iteration
count and pace the test controls), in their own process groups, killed at teardown.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

import tests.services.jobs.plugin_aligners  # noqa: F401  (the API validates the test method too)
from tests.services.jobs.harness import WorkerProcess, jobs_redis_db_url, wait_for

HEARTBEAT_S = 0.5
METHOD = "test_procrustes"


@pytest.fixture(scope="session")
def jobs_url(redis_url):
    from services.infra.redis import connect

    url = jobs_redis_db_url(redis_url, db=7)
    connect(url).flushdb()
    return url


@pytest.fixture(scope="session")
def jobs_data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("jobs-data")


@pytest.fixture(scope="session")
def light_worker(jobs_url, jobs_data_dir):
    worker = WorkerProcess(jobs_url, jobs_data_dir, queues="light", concurrency=2, heartbeat_s=HEARTBEAT_S,
                           log_path=jobs_data_dir / "light-worker.log")
    yield worker
    worker.stop()


@pytest.fixture()
def open_api(jobs_url, jobs_data_dir, planted_spaces):
    """``with open_api() as client``: the app with its lifespan; call again to 'restart the API'."""
    from app.main import create_app
    from app.settings import Settings

    en_path, fr_path, *_ = planted_spaces

    @contextmanager
    def factory(**overrides):
        params = dict(data_dir=jobs_data_dir, redis_url=jobs_url, encoder_languages=[], clip_pretrained=None,
                      log_json=False, job_heartbeat_s=HEARTBEAT_S, spaces={"en": str(en_path), "fr": str(fr_path)})
        params.update(overrides)
        with TestClient(create_app(Settings(**params), background_load=False)) as client:
            yield client

    return factory


SEED_DICTIONARY = [[f"w{i}", f"m{i}"] for i in range(40)]  # planted_spaces' words: en w{i} <-> fr m{i}


def _body(tag: str, **extra) -> dict:
    options = {"n_iter": 4, "sleep_s": 0.05, "tag": tag}
    options.update(extra.pop("options", {}))
    body = {"src": "en", "tgt": "fr", "method": METHOD, "seed": "dictionary", "dictionary": SEED_DICTIONARY,
            "options": options}
    body.update(extra)
    return body


def _wait_state(client, job_id, states, timeout=20.0):
    def check():
        body = client.get(f"/v1/alignments/{job_id}").json()
        return body if body["state"] in states else None

    return wait_for(check, timeout, interval=0.05, message=f"job {job_id} in {states}")


def test_submit_progress_results_and_serving(open_api, light_worker, planted_spaces, jobs_url):
    _, _, _, en_words, fr_words = planted_spaces
    test_pairs = [[en_words[i], fr_words[i]] for i in range(0, 300, 7)]
    with open_api() as client:
        # the planted spaces share no words: seed with a dictionary of the first 40 true pairs
        body = _body("main", seed="dictionary", dictionary=[[en_words[i], fr_words[i]] for i in range(40)],
                     evaluate_with=test_pairs, options={"n_iter": 6, "sleep_s": 0.15})
        r = client.post("/v1/alignments", json=body)
        assert r.status_code == 202, r.text
        job = r.json()
        assert r.headers["location"] == f"/v1/alignments/{job['id']}" and int(r.headers["retry-after"]) >= 1
        assert job["state"] in ("queued", "running") and job["cached"] is False

        running = _wait_state(client, job["id"], {"running"}, timeout=30)
        seen = wait_for(lambda: (lambda b: b if (b["progress"] or {}).get("stage") == "procrustes" else None)(
            client.get(f"/v1/alignments/{job['id']}").json()), 10, message="procrustes progress")
        assert seen["progress"]["total"] == 6 and seen["progress"]["elapsed_s"] >= 0 and running["worker"]
        assert seen["validation_losses"]

        done = _wait_state(client, job["id"], {"succeeded", "failed"})
        assert done["state"] == "succeeded", done
        assert len(done["validation_losses"]) == 6
        assert done["validation_losses"] == sorted(done["validation_losses"], reverse=True)
        assert done["evaluation"]["p@1"] > 0.9 and done["evaluation"]["n_queries"] == len(test_pairs)
        assert done["result"]["seed_pairs"] == 40 and done["progress"]["stage"] == "done"

        # induced dictionary: JSON and TSV; the planted rotation is recovered
        d = client.get(f"/v1/alignments/{job['id']}/dictionary").json()["pairs"]
        assert len(d) == 300 and sum(p["target"] == "m" + p["source"][1:] for p in d) > 290
        tsv = client.get(f"/v1/alignments/{job['id']}/dictionary", headers={"Accept": "text/tab-separated-values"})
        assert tsv.headers["content-type"].startswith("text/tab-separated-values")
        assert tsv.text.splitlines()[0].split("\t")[:2] == [d[0]["source"], d[0]["target"]]

        # mapping download matches the checksum recorded in Redis and published for the pair
        m = client.get(f"/v1/alignments/{job['id']}/mapping")
        assert m.status_code == 200 and hashlib.sha256(m.content).hexdigest() == done["result"]["mapping_sha256"]
        from services.infra.redis import connect

        published = json.loads(connect(jobs_url).get("vislex:mappings:en-fr"))
        assert published["job_id"] == job["id"] and published["sha256"] == done["result"]["mapping_sha256"]

        runtime = _serving_ready(client)  # the serving layer is built: it must serve the new mapping now
        wait_for(lambda: runtime.spaces.mapping_version("en", "fr") == published["version"], 10,
                 message="serving registry installs the new mapping")
        t = client.get("/v1/translate", params={"src": "en", "tgt": "fr", "word": "w5"})
        assert t.status_code == 200, t.text
        assert t.json()["mapping_version"] == published["version"]
        assert t.json()["translations"][0]["word"] == "m5"

        # identical resubmission: the cached result, immediately
        again = client.post("/v1/alignments", json=body)
        assert again.status_code == 200 and again.json()["cached"] is True and again.json()["id"] == job["id"]
        assert again.json()["state"] == "succeeded"

    with open_api() as client:  # an API restart keeps every job
        after = client.get(f"/v1/alignments/{job['id']}").json()
        assert after["state"] == "succeeded" and after["validation_losses"] == done["validation_losses"]
        listed = client.get("/v1/alignments", params={"state": "succeeded", "pair": "en-fr"}).json()
        assert job["id"] in [j["id"] for j in listed["jobs"]]


def _serving_ready(client, timeout: float = 30.0):
    """Wait until /readyz says ready and the serving layer ('spaces') is loaded; return the runtime."""
    wait_for(lambda: client.get("/readyz").status_code == 200, timeout, interval=0.1, message="/readyz 200")
    runtime = client.app.state.runtime
    state = runtime.components["spaces"]
    assert state.state == "ready", state.as_dict()
    assert runtime.spaces is not None
    return runtime


def test_registry_method_runs_end_to_end(open_api, light_worker):
    """A real method of services.alignment.registry (Procrustes) through the job machinery."""
    with open_api() as client:
        body = {"src": "en", "tgt": "fr", "method": "Procrustes", "seed": "dictionary", "dictionary": SEED_DICTIONARY,
                "evaluate_with": [[f"w{i}", f"m{i}"] for i in range(100, 300, 5)]}
        r = client.post("/v1/alignments", json=body)
        assert r.status_code == 202, r.text
        assert r.json()["method"] == "procrustes"
        done = _wait_state(client, r.json()["id"], {"succeeded", "failed"}, timeout=60)
        assert done["state"] == "succeeded", done
        assert done["evaluation"]["p@1"] > 0.9 and done["result"]["dictionary_pairs"] > 250
        r = client.post("/v1/alignments", json={**body, "options": {"no_such_option": 1}})
        assert r.status_code == 422 and r.json()["error"]["detail"]["field"] == "options"
        r = client.post("/v1/alignments", json={**body, "method": "procrustes+l1", "options": {"rounds": 0}})
        assert r.status_code == 422 and r.json()["error"]["detail"]["field"] == "options.rounds"
        r = client.post("/v1/alignments", json={**body, "method": "procrustes+l1", "options": {"l1": {"mode": "fast"}}})
        assert r.status_code == 422 and r.json()["error"]["detail"]["field"] == "options.mode"
        r = client.post("/v1/alignments", json={**body, "method": "procrustes+l1",
                                                "options": {"l1": {"mode": "flow", "stride": "2"}}})
        assert r.status_code == 422 and r.json()["error"]["detail"]["field"] == "options.stride"
        for bad in (0, -5, "1e9", True):
            r = client.post("/v1/alignments", json={**body, "method": "procrustes+l1", "options": {"max_work": bad}})
            assert r.status_code == 422 and r.json()["error"]["detail"]["field"] == "options.max_work", (bad, r.text)


def test_concurrent_identical_submissions_make_one_job(open_api, light_worker):
    with open_api() as client:
        body = _body("concurrent", options={"n_iter": 2, "sleep_s": 0.0})
        codes, ids = [], []
        barrier = threading.Barrier(6)

        def submit():
            barrier.wait()
            r = client.post("/v1/alignments", json=body)
            codes.append(r.status_code)
            ids.append(r.json()["id"])

        threads = [threading.Thread(target=submit) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(codes) == [200] * 5 + [202] and len(set(ids)) == 1
        done = _wait_state(client, ids[0], {"succeeded", "failed"})
        assert done["state"] == "succeeded" and done["attempt"] == 1


def test_cancel_running_job_stops_at_iteration_boundary(open_api, light_worker):
    with open_api() as client:
        job = client.post("/v1/alignments", json=_body("cancel", options={"n_iter": 200, "sleep_s": 0.05})).json()
        wait_for(lambda: ((client.get(f"/v1/alignments/{job['id']}").json()["progress"] or {}).get("current") or 0)
                 >= 2, 30, message="job iterating")
        r = client.delete(f"/v1/alignments/{job['id']}")
        assert r.status_code == 202 and r.json()["cancel_requested"] is True
        done = _wait_state(client, job["id"], {"cancelled", "failed", "succeeded"}, timeout=10)
        assert done["state"] == "cancelled" and done["progress"]["current"] < 200
        assert client.delete(f"/v1/alignments/{job['id']}").status_code == 409
        assert client.get(f"/v1/alignments/{job['id']}/mapping").status_code == 409


def test_time_limit_fails_the_job(open_api, light_worker):
    with open_api() as client:
        job = client.post("/v1/alignments",
                          json=_body("limit", options={"n_iter": 100, "sleep_s": 0.05, "time_limit_s": 0.5})).json()
        done = _wait_state(client, job["id"], {"failed", "succeeded"}, timeout=30)
        assert done["state"] == "failed" and done["error"]["code"] == "time_limit_exceeded"
        assert "time limit exceeded" in done["error"]["message"]


def test_worker_sigkill_mid_job_is_requeued_and_finishes(open_api, jobs_url, jobs_data_dir):
    first = WorkerProcess(jobs_url, jobs_data_dir, queues="heavy", heartbeat_s=HEARTBEAT_S,
                          log_path=jobs_data_dir / "heavy-1.log")
    second = None
    try:
        with open_api() as client:
            body = _body("sigkill", options={"n_iter": 12, "sleep_s": 0.1, "queue": "heavy"})
            job = client.post("/v1/alignments", json=body).json()
            wait_for(lambda: ((client.get(f"/v1/alignments/{job['id']}").json()["progress"] or {}).get("current")
                              or 0) >= 2, 30, message="job running on the first worker")
            first.kill()
            requeued = _wait_state(client, job["id"], {"queued", "failed"}, timeout=10)
            assert requeued["state"] == "queued" and requeued["retries"] == 1 and requeued["attempt"] == 2
            second = WorkerProcess(jobs_url, jobs_data_dir, queues="heavy", heartbeat_s=HEARTBEAT_S,
                                   log_path=jobs_data_dir / "heavy-2.log")
            done = _wait_state(client, job["id"], {"succeeded", "failed"}, timeout=30)
            assert done["state"] == "succeeded", (done, second.tail())
            assert len(done["validation_losses"]) == 12  # losses of the lost attempt were discarded
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_validation_errors_name_the_field(open_api):
    with open_api() as client:
        r = client.post("/v1/alignments", json={**_body("v"), "method": "nope"})
        assert r.status_code == 422 and r.json()["error"]["detail"]["field"] == "method"
        assert METHOD in r.json()["error"]["detail"]["known"]
        r = client.post("/v1/alignments", json={**_body("v"), "src": "xx"})
        assert r.status_code == 404 and r.json()["error"]["detail"]["field"] == "src"
        assert "en" in r.json()["error"]["detail"]["known"]
        r = client.post("/v1/alignments", json={**_body("v"), "dictionary": None})
        assert r.status_code == 422 and r.json()["error"]["detail"]["field"] == "dictionary"
        r = client.post("/v1/alignments", json={**_body("v"), "seed": "magic"})
        assert r.status_code == 422 and r.json()["error"]["detail"]["errors"][0]["field"] == "seed"
        r = client.post("/v1/alignments", json={**_body("v"), "bogus": 1})
        assert r.status_code == 422 and r.json()["error"]["detail"]["errors"][0]["field"] == "bogus"
        r = client.post("/v1/alignments", json={**_body("v"), "dictionary": [["a"]]})
        assert r.status_code == 422 and r.json()["error"]["detail"]["errors"][0]["field"].startswith("dictionary")
        r = client.post("/v1/alignments", json=_body("v", options={"time_limit_s": -1}))
        assert r.status_code == 422 and r.json()["error"]["detail"]["field"] == "options.time_limit_s"
        # never above the server's job time limit (the broker's visibility timeout is sized for it)
        r = client.post("/v1/alignments", json=_body("v", options={"time_limit_s": 3601}))
        assert r.status_code == 422 and r.json()["error"]["detail"]["field"] == "options.time_limit_s"
        assert r.json()["error"]["detail"]["max"] == 3600 and "options.time_limit_s" in r.json()["error"]["message"]
        assert client.get("/v1/alignments/doesnotexist").status_code == 404
        assert client.delete("/v1/alignments/doesnotexist").status_code == 404
        assert client.get("/v1/alignments", params={"state": "weird"}).status_code == 422


def test_register_space_by_path_and_upload(open_api, tmp_path, planted_spaces):
    _, fr_path, *_ = planted_spaces
    with open_api(max_upload_bytes=4096) as client:
        r = client.post("/v1/spaces", json={"name": "fr2", "path": str(fr_path)})
        assert r.status_code == 201, r.text
        assert r.json()["words"] == 300 and r.json()["dim"] == 16 and r.json()["fingerprint"]
        runtime = _serving_ready(client)  # the translate endpoints serve it at once
        assert r.json()["serving"] is True and "fr2" in runtime.spaces.spaces
        vec = "3 2\nchat 0.1 0.2\nchien 0.3 0.4\nchat 0.5 0.6\n"  # duplicate word on line 4
        r = client.post("/v1/spaces", data={"name": "bad"}, files={"file": ("bad.vec", io.BytesIO(vec.encode()))})
        assert r.status_code == 422 and "4" in r.json()["error"]["message"]
        good = "2 2\nchat 0.1 0.2\nchien 0.3 0.4\n"
        r = client.post("/v1/spaces", data={"name": "tiny"}, files={"file": ("t.vec", io.BytesIO(good.encode()))})
        assert r.status_code == 201 and r.json()["source"] == "upload" and r.json()["words"] == 2
        big = b"x" * 10000
        r = client.post("/v1/spaces", data={"name": "big"}, files={"file": ("b.vec", io.BytesIO(big))})
        assert r.status_code == 413
        r = client.post("/v1/spaces", json={"name": "en", "path": str(fr_path)})
        assert r.status_code == 409  # configured spaces are not replaced over HTTP
        r = client.post("/v1/spaces", json={"name": "a-b", "path": str(fr_path)})
        assert r.status_code == 422 and r.json()["error"]["detail"]["field"] == "name"
        missing = client.app.state.runtime.settings.data_dir / "missing.npy"  # inside an allowed root
        r = client.post("/v1/spaces", json={"name": "x", "path": str(missing)})
        assert r.status_code == 422 and r.json()["error"]["detail"]["field"] == "path"
        assert r.json()["error"]["code"] == "invalid_input"
        # a registered space is usable by jobs at once (resolved by name, fingerprinted)
        r = client.post("/v1/alignments", json={**_body("byo"), "tgt": "fr2"})
        assert r.status_code == 202 and r.json()["tgt"] == "fr2"
    with open_api() as client:  # after a restart (or on another replica) registered spaces are served again
        runtime = _serving_ready(client)
        wait_for(lambda: "fr2" in runtime.spaces.spaces and "tiny" in runtime.spaces.spaces, 10,
                 message="registered spaces served after restart")
        t = client.get("/v1/spaces/fr2/neighbors", params={"word": "m1", "k": 2})
        assert t.status_code == 200 and t.json()


def test_register_space_errors_bad_json_roots_and_no_file_content(open_api, tmp_path, jobs_data_dir):
    outside = tmp_path / "outside"
    outside.mkdir()
    good = "2 3\nchat 0.1 0.2 0.3\nchien 0.3 0.4 0.5\n"
    (outside / "ok.vec").write_text(good)
    with open_api() as client:
        # malformed JSON is 400 in the error contract, not 422
        r = client.post("/v1/spaces", content=b'{"name": "x", "path": ', headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "bad_request" and r.json()["error"]["detail"]["field"] == "body"
        # the schema's field names (the README once showed "lang"): a wrong one is a 422 naming the field
        r = client.post("/v1/spaces", json={"lang": "xx", "path": str(outside / "ok.vec")})
        assert r.status_code == 422
        err = r.json()["error"]
        assert err["detail"]["field"] == "name" and {e["field"] for e in err["detail"]["errors"]} >= {"name", "lang"}

        # server-side paths only under the allowed roots (data dir, configured spaces' dirs, space_path_roots)
        for path in (outside / "ok.vec", "/etc/passwd", f"{jobs_data_dir}/../{outside.name}/ok.vec"):
            r = client.post("/v1/spaces", json={"name": "outside", "path": str(path)})
            assert r.status_code == 422, r.text
            assert r.json()["error"]["code"] == "path_not_allowed" and r.json()["error"]["detail"]["field"] == "path"
            assert "root:" not in r.text and "chat" not in r.text
        link = jobs_data_dir / "link-outside.vec"  # a symlink inside the data dir does not escape the check
        link.unlink(missing_ok=True)
        link.symlink_to(outside / "ok.vec")
        r = client.post("/v1/spaces", json={"name": "linked", "path": str(link)})
        assert r.status_code == 422 and r.json()["error"]["code"] == "path_not_allowed"

        # a malformed file inside an allowed root: the error counts the problems, never quotes the file
        secret = jobs_data_dir / "secret.vec"
        secret.write_text("3 3\nTOPSECRET 0.1 0.2 0.3\nPASSWORD123 0.1 0.2\nTOPSECRET 0.4 0.5 0.6\n")
        r = client.post("/v1/spaces", json={"name": "secret", "path": str(secret)})
        assert r.status_code == 422, r.text
        assert "TOPSECRET" not in r.text and "PASSWORD123" not in r.text
        err = r.json()["error"]
        assert err["detail"]["field"] == "path" and err["detail"]["counts"]
        assert "duplicate words" in err["message"] and "wrong-length rows" in err["message"]

    with open_api(space_path_roots=[str(outside)]) as client:  # an operator-allowed directory
        r = client.post("/v1/spaces", json={"name": "outside_ok", "path": str(outside / "ok.vec")})
        assert r.status_code == 201, r.text
        assert r.json()["words"] == 2


def test_fingerprint_seed_without_image_set_or_clip_weights_is_503_at_submit(open_api, tmp_path):
    """What no worker could run is refused at once, with the reason, instead of failing later in a worker."""
    body = _body("fp-refused", seed="fingerprints", method="walip")
    body.pop("dictionary")
    with open_api() as client:  # no VISLEX_IMAGES_DIR
        r = client.post("/v1/alignments", json=body)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "images_unavailable"
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(b"not decoded at submit")
    with open_api(images_dir=images, clip_pretrained=None) as client:  # an image set, but no CLIP weights source
        r = client.post("/v1/alignments", json=body)
        assert r.status_code == 503, r.text
        err = r.json()["error"]
        assert err["code"] == "encoder_unavailable" and "en" in err["detail"]["languages"]
        assert client.get("/v1/alignments", params={"state": "queued"}).json()["total"] == 0


def test_a_finished_jobs_mapping_is_served_within_a_second_and_never_404(open_api, light_worker):
    """Issue 19, defect 9: the job says whether its mapping is installed; the pair never answers 404 meanwhile."""
    import time

    reverse = [[t, s] for s, t in SEED_DICTIONARY]  # fr -> en: a pair no other test serves
    with open_api() as client:
        _serving_ready(client)
        r = client.post("/v1/alignments", json=_body("push", src="fr", tgt="en", dictionary=reverse,
                                                         options={"n_iter": 2, "sleep_s": 0.01}))
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        done = _wait_state(client, job_id, {"succeeded", "failed"}, timeout=30)
        assert done["state"] == "succeeded", done
        finished = time.monotonic()
        version = done["result"]["mapping_version"]
        assert done["result"]["serving"] in ("installing", "installed")
        statuses = []
        while time.monotonic() - finished < 5:
            t = client.get("/v1/translate", params={"src": "fr", "tgt": "en", "word": "m5", "retrieval": "nn"})
            statuses.append(t.status_code)
            if t.status_code == 200 and t.json()["mapping_version"] == version:
                break
            if t.status_code == 503:
                assert t.json()["error"]["code"] == "installing" and t.headers["retry-after"] == "1", t.text
            time.sleep(0.01)
        served_after = time.monotonic() - finished
        assert 404 not in statuses, statuses
        assert statuses[-1] == 200 and served_after <= 1.0, (served_after, statuses[-5:])
        assert client.get(f"/v1/alignments/{job_id}").json()["result"]["serving"] == "installed"
