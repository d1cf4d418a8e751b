"""Encoder spaces built one language at a time: progress in /readyz, built languages answer at once,
a language still being built answers 503 ``space_loading`` and then 200."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest


class GatedEncoder:
    """A stub multilingual encoder (rank i of every language is one point) whose n-th call waits for gates[n].

    A language is two calls: its words, then their capitalised forms (encoder_spaces.embed_word_forms)."""

    name, dim, languages = "stub", 16, ("*",)

    def __init__(self, gates: dict[int, threading.Event]):
        self.gates, self.calls = gates, 0

    def encode(self, texts, batch_size=256):
        self.calls += 1
        gate = self.gates.get(self.calls)
        if gate is not None:
            assert gate.wait(30), "test gate never opened"
        rng = np.random.default_rng(0)
        X = rng.standard_normal((len(texts), self.dim)).astype(np.float32)
        return X / np.linalg.norm(X, axis=1, keepdims=True)


def _wait(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture()
def gated(monkeypatch):
    import models.text_encoders as text_encoders

    gates = {3: threading.Event(), 5: threading.Event()}  # 2nd language (startup), 3rd (lazy)
    encoder = GatedEncoder(gates)
    monkeypatch.setattr(text_encoders, "load_text_encoder", lambda name="stub": encoder)
    yield {"fr": gates[3], "de": gates[5]}
    for gate in gates.values():
        gate.set()


def test_progress_partial_serving_and_lazy_language(make_client, gated):
    with make_client(background_load=True, encoder_languages=["en", "fr"], encoder_languages_lazy=["de"],
                     text_encoder="stub", encoder_vocab_size=30, vocab_leak_margin=None,
                     normalize="unit") as c:
        # en is built, fr is blocked: not ready, progress says so, and en already answers.
        assert _wait(lambda: c.get("/readyz").json()["error"]["detail"]["components"]["spaces"]
                     .get("progress", {}).get("building") == "fr")
        ready = c.get("/readyz")
        assert ready.status_code == 503
        progress = ready.json()["error"]["detail"]["components"]["spaces"]["progress"]
        assert progress["built"] == ["en"] and progress["building"] == "fr"
        assert progress["languages_total"] == 3 and progress["startup_languages"] == ["en", "fr"]
        assert progress["seconds"] >= 0 and "en" in progress["per_language_s"]
        first = c.get("/v1/spaces/en/neighbors", params={"word": "the", "k": 2})
        assert first.status_code == 200, first.text
        loading = c.get("/v1/translate", params={"word": "the", "src": "en", "tgt": "fr"})
        assert loading.status_code == 503 and loading.headers["Retry-After"] == "1"
        err = loading.json()["error"]
        assert err["code"] == "space_loading" and err["detail"]["lang"] == "fr"

        gated["fr"].set()
        assert _wait(lambda: c.get("/readyz").status_code == 200)
        ok = c.get("/v1/translate", params={"word": "the", "src": "en", "tgt": "fr", "k": 1})
        from services.serving.encoder_spaces import encoder_vocabulary

        # The stub puts rank i of every language on one point: "the" (en rank 0) -> fr rank 0.
        assert ok.status_code == 200 and ok.json()["translations"][0]["word"] == encoder_vocabulary("fr", 30)[0]

        # de (lazy) is blocked in the background: 503 space_loading while /readyz stays 200; then 200.
        lazy = c.get("/v1/translate", params={"word": "the", "src": "en", "tgt": "de"})
        assert lazy.status_code == 503 and lazy.json()["error"]["code"] == "space_loading"
        assert c.get("/readyz").status_code == 200
        gated["de"].set()
        assert _wait(lambda: c.get("/v1/translate", params={"word": "the", "src": "en", "tgt": "de"}).status_code == 200)
        assert c.get("/readyz").json()["components"]["spaces"]["progress"]["languages_built"] == 3


def test_unknown_language_is_still_404(make_client, gated):
    gated["fr"].set()
    with make_client(encoder_languages=["en", "fr"], text_encoder="stub", encoder_vocab_size=30,
                     vocab_leak_margin=None, normalize="unit") as c:
        out = c.get("/v1/translate", params={"word": "the", "src": "en", "tgt": "xx"})
        assert out.status_code == 404 and out.json()["error"]["code"] == "space_not_found"


def test_background_work_yields_only_to_the_embedded_worker(tmp_path):
    import threading
    from types import SimpleNamespace

    from app.settings import Settings
    from app.wiring.serving import job_gate
    from services.jobs.store import JobStore

    class FakeRedis:
        def __init__(self):
            self.active = {"job-1"}

        def scard(self, key):
            return len(self.active) if key == JobStore.ACTIVE else 0

    redis = FakeRedis()
    embedded = SimpleNamespace(settings=Settings(data_dir=tmp_path, redis_embedded=True), redis=redis)
    gate = job_gate(embedded, threading.Event())
    assert gate is not None and gate.busy()
    redis.active.clear()
    assert not gate.busy()
    external = SimpleNamespace(settings=Settings(data_dir=tmp_path, redis_url="redis://elsewhere:6379/0"), redis=redis)
    assert job_gate(external, threading.Event()) is None  # workers on other machines: nothing to yield
