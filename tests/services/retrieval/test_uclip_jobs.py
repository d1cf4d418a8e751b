"""uCLIP training jobs on the real job machinery (Redis store, ProgressReporter): per-step progress, cancel."""

from __future__ import annotations

from tests.conftest import write_random_pngs


import pytest

from services.retrieval import training as training_mod
from services.retrieval.jobs import UclipTrainingJobs, run_uclip_job
from services.retrieval.service import read_pointer, uclip_dir
from services.retrieval.testing import HashingTextEncoder, tiny_random_clip

QUERIES = [f"a photo of a {w}" for w in ["dog", "cat", "car", "tree", "house", "boat", "bird", "horse"]]
TEXTS = ["un chien", "un chat", "une voiture", "ein Baum", "ein Haus", "un bateau", "un oiseau", "ein Pferd"]
CONFIG = {"heads": {"hidden_dim": 16, "out_dim": 8}, "epochs": 5, "batch_size": 4}  # 2 steps/epoch, 10 steps


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    return write_random_pngs(tmp_path_factory.mktemp("images"), 6)


@pytest.fixture()
def jobs(redis_client, monkeypatch):
    clip, enc = tiny_random_clip(0), HashingTextEncoder(dim=24)
    monkeypatch.setattr(training_mod, "_load_encoders", lambda params: (clip, enc))
    sent = []
    jobs = UclipTrainingJobs(redis_client, time_limit_s=600, heartbeat_s=1.0,
                             send_task=lambda job_id, attempt, spec: sent.append((job_id, attempt)))
    jobs.sent = sent
    return jobs


def _submit(jobs, tmp_path, image_dir):
    view, created = jobs.submit({"queries": QUERIES, "texts": TEXTS, "images_dir": str(image_dir),
                                 "data_dir": str(tmp_path), "config": CONFIG})
    assert created and jobs.sent[-1][0] == view["id"]
    return view["id"], jobs.sent[-1][1]


def test_job_reports_every_training_step_with_its_loss(jobs, redis_client, tmp_path, image_dir, monkeypatch):
    seen = []
    real = training_mod.train_heads

    def spying_train(*args, progress=None, **kw):
        def wrapped(stage, cur, tot, metrics):
            if stage == "train":
                seen.append((cur, tot, metrics["loss"]))
            return progress(stage, cur, tot, metrics)
        return real(*args, progress=wrapped, **kw)

    monkeypatch.setattr(training_mod, "train_heads", spying_train)
    job_id, attempt = _submit(jobs, tmp_path, image_dir)
    assert run_uclip_job(redis_client, job_id, attempt, heartbeat_s=1.0)["state"] == "succeeded"
    view = jobs.view(job_id)
    assert [c for c, _, _ in seen] == list(range(1, 11)) and {t for _, t, _ in seen} == {10}
    assert view["losses"] == pytest.approx([loss for *_, loss in seen])  # one stored loss per step
    assert view["result"]["epochs"] == 5 and read_pointer(tmp_path) is not None


def test_cancel_stops_a_running_training_job_at_the_next_step(jobs, redis_client, tmp_path, image_dir, monkeypatch):
    steps = []
    real = training_mod.train_heads
    holder = {}

    def cancelling_train(*args, progress=None, **kw):
        def wrapped(stage, cur, tot, metrics):
            if stage == "train":
                steps.append(cur)
                if cur == 3:  # the user cancels while step 3 runs: seen at the report after it
                    assert jobs.cancel(holder["id"])["cancel_requested"]
            return progress(stage, cur, tot, metrics)
        return real(*args, progress=wrapped, **kw)

    monkeypatch.setattr(training_mod, "train_heads", cancelling_train)
    job_id, attempt = _submit(jobs, tmp_path, image_dir)
    holder["id"] = job_id
    out = run_uclip_job(redis_client, job_id, attempt, heartbeat_s=1.0)
    assert out == {"job_id": job_id, "state": "cancelled"}
    assert steps == [1, 2, 3]  # 10 steps configured; nothing ran after the cancelled report
    view = jobs.view(job_id)
    assert view["state"] == "cancelled" and view["error"]["code"] == "cancelled"
    assert "uCLIP training" in view["error"]["message"]
    assert view["progress"]["stage"] == "train" and view["progress"]["current"] == 3
    assert len(view["losses"]) == 3
    # no checkpoint written, nothing activated
    assert not list(uclip_dir(tmp_path).glob("heads-*.pt"))
    assert read_pointer(tmp_path) is None
