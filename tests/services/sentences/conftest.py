"""Shared fixtures: a deterministic stand-in encoder and a service factory on a temporary data dir."""

from __future__ import annotations

import pytest

from services.retrieval.testing import HashingTextEncoder


@pytest.fixture(scope="module")
def encoder():
    return HashingTextEncoder(dim=24, languages=("en", "de", "fr"), name="use-multilingual")


@pytest.fixture()
def make_service(tmp_path, encoder):
    from services.sentences.models import load_sentence_model
    from services.sentences.service import SentenceService

    def factory(**kwargs):
        kwargs.setdefault("loader", lambda spec: load_sentence_model(spec, encoder_loader=lambda name: encoder))
        return SentenceService(tmp_path / "data", **kwargs)

    return factory
