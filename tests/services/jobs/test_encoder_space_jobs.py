"""Jobs on encoder-derived spaces: the worker rebuilds exactly the vocabulary the API serves (purity rule included)."""

from __future__ import annotations

import numpy as np
import pytest

from services.errors import InvalidInput


class RankEncoder:
    name, dim, languages = "stub", 8, ("*",)

    def encode(self, texts, batch_size=256):
        X = np.random.default_rng(0).standard_normal((len(texts), self.dim)).astype(np.float32)
        return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_worker_rebuilds_the_served_language_pure_space(tmp_path, monkeypatch):
    import models.text_encoders as text_encoders
    from app.runtime import Runtime
    from app.settings import Settings
    from app.wiring.jobs import _served_space
    from app.wiring.serving import build_registry
    from services.jobs.spaces import _CACHE, load_space

    monkeypatch.setattr(text_encoders, "load_text_encoder", lambda name="stub": RankEncoder())
    settings = Settings(data_dir=tmp_path, encoder_languages=["en", "fr"], encoder_languages_lazy=[],
                        encoder_vocab_size=300, text_encoder="stub", normalize="unit")
    registry = build_registry(settings)
    served = registry.spaces["fr"]
    assert "the" not in served.words  # the purity rule is on (English "the" is in wordfreq's raw French list)
    info = _served_space(Runtime(settings=settings, spaces=registry))("fr")
    assert info["purity"]["leak_margin"] == settings.vocab_leak_margin
    _CACHE.clear()
    wv = load_space(info, max_vocab=None, normalize="unit")
    assert wv.words == served.words
    # Without the rule the worker would build the raw list: a different space, refused by its fingerprint.
    _CACHE.clear()
    with pytest.raises(InvalidInput, match="changed since the job was submitted"):
        load_space({**info, "purity": None}, max_vocab=None, normalize="unit")
    _CACHE.clear()
