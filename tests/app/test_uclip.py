"""POST /v1/uclip/trainings and PUT /v1/uclip/heads read only allowed server paths, with strict types (issue 19)."""

from __future__ import annotations

import pytest

from tests.app.test_galleries import encoders, wired  # noqa: F401  (fixtures: retrieval with tiny encoders)


@pytest.fixture()
def bank(tmp_path):
    folder = tmp_path / "bank"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"\x89PNG")
    (folder / "queries.txt").write_text("a dog\na cat\n")
    return folder


@pytest.fixture()
def client(make_client, bank, redis_client):
    with make_client(space_path_roots=[str(bank)], job_time_limit_s=600) as c:
        yield c


def _post(client, **body):
    return client.post("/v1/uclip/trainings", json={"queries": ["a dog"], "texts": ["un chien"], **body})


@pytest.mark.parametrize("field, body", [
    ("queries_files.0", {"queries_files": ["/etc/shadow"]}),
    ("queries_files.0", {"queries_files": ["/etc/no-such-file"]}),
    ("texts_files.0", {"texts_files": ["/etc/passwd"]}),
    ("images_dir", {}),  # images_dir: /usr, set below
])
def test_paths_outside_the_allowed_roots_are_refused_without_an_existence_oracle(client, bank, field, body):
    body.setdefault("images_dir", str(bank) if field != "images_dir" else "/usr")
    r = _post(client, **body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "path_not_allowed" and err["detail"] == {"field": field}
    assert "/etc" not in r.text and "/usr" not in r.text and str(bank) not in r.text


def test_null_byte_and_relative_paths_are_422(client, bank):
    for images_dir in ("/\u0000", "bank", f"{bank}/\u0000x"):
        r = _post(client, images_dir=images_dir)
        detail = r.json()["error"]["detail"]
        # The service's own path check names one field; the schema (a relative path) lists its errors.
        named = {detail.get("field")} | {e["field"] for e in detail.get("errors", [])}
        assert r.status_code == 422 and "images_dir" in named, r.text


def test_missing_path_inside_the_roots_names_the_field_not_the_path(client, bank):
    r = _post(client, images_dir=str(bank), queries_files=[str(bank / "missing.txt")])
    assert r.status_code == 422 and r.json()["error"]["detail"] == {"field": "queries_files.0"}
    assert str(bank) not in r.text


@pytest.mark.parametrize("body, field", [
    ({"time_limit_s": 1e308}, "time_limit_s"),
    ({"time_limit_s": 601}, "time_limit_s"),
    ({"max_texts_per_file": True}, "max_texts_per_file"),
    ({"max_images": "5"}, "max_images"),
    ({"activate": 1}, "activate"),
    ({"text_encoder": "/etc/some-model"}, "text_encoder"),
])
def test_time_limit_is_capped_and_types_are_strict(client, bank, body, field):
    r = _post(client, images_dir=str(bank), **body)
    assert r.status_code == 422, r.text
    detail = r.json()["error"]["detail"]
    assert detail.get("field") == field or detail["errors"][0]["field"] == field
    if field == "time_limit_s" and "max" in detail:
        assert detail["max"] == 600


def test_allowed_inputs_are_accepted_with_resolved_paths(client, bank):
    r = _post(client, images_dir=str(bank), queries_files=[str(bank / "queries.txt")], time_limit_s=600)
    assert r.status_code == 202, r.text
    assert r.json()["inputs"]["images_dir"] == str(bank.resolve())


def test_heads_checkpoint_path_outside_the_roots_is_refused(make_client, wired, bank):
    with make_client(space_path_roots=[str(bank)]) as client:
        for checkpoint in ("/etc/passwd", "../../etc/passwd", "/\u0000", "/etc/no-such.pt"):
            r = client.put("/v1/uclip/heads", json={"checkpoint": checkpoint})
            assert r.status_code == 422, r.text
            assert r.json()["error"]["detail"]["field"] == "checkpoint" and "/etc" not in r.text
        r = client.put("/v1/uclip/heads", json={"checkpoint": str(bank / "queries.txt")})  # allowed, not a checkpoint
        assert r.status_code == 422 and r.json()["error"]["code"] != "path_not_allowed"
        assert client.put("/v1/uclip/heads", json={"checkpoint": "nope.pt"}).status_code == 404


def test_a_training_job_left_by_a_dead_worker_is_reaped_without_a_new_submission(make_client, bank, redis_client,
                                                                                monkeypatch):
    """The API's uCLIP reaper runs from startup (not only after a submission): a job whose worker died while
    the API was down is re-queued once its heartbeat has expired."""
    import time

    import app.wiring.retrieval as wiring
    from services.retrieval.jobs import UclipTrainingJobs

    sent = []
    monkeypatch.setattr(wiring, "_uclip_sender", lambda: lambda job_id, attempt, spec: sent.append((job_id, attempt)))
    before = UclipTrainingJobs(redis_client, time_limit_s=600, heartbeat_s=0.2, send_task=lambda *a: None)
    view, _ = before.submit({"queries": ["a dog"], "texts": ["un chien"], "images_dir": str(bank)})
    assert before.store.claim(view["id"], 1, "worker-that-dies") == "claimed"
    with make_client(job_heartbeat_s=0.2) as client:
        deadline = time.monotonic() + 10
        while not sent and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sent == [(view["id"], 2)]
        job = client.get(f"/v1/uclip/trainings/{view['id']}").json()
        assert job["state"] == "queued" and job["attempt"] == 2 and job["retries"] == 1
