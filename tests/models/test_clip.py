"""CLIP loading from configuration, batched encoding, prompt ensembles, per-language pool.

No pretrained weights exist here: a tiny open_clip architecture with random weights is
saved as a local checkpoint and loaded back the way a real one would be.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from models.clip import (
    ClipPool,
    ClipSpec,
    default_prompts,
    embed_words,
    load_clip,
    prompt_templates,
    resolve_precision,
)
from services.errors import InvalidInput, Unavailable
from tests.conftest import random_clip_checkpoint

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def tiny_spec(checkpoint, **kw) -> ClipSpec:
    return ClipSpec(model="vislex-tiny-test", checkpoint=str(checkpoint), model_config=TINY, device="cpu", **kw)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    return random_clip_checkpoint("vislex-tiny-test", TINY, tmp_path_factory.mktemp("clip") / "tiny.pt")


@pytest.fixture(scope="session")
def tiny(tiny_checkpoint):
    return load_clip(tiny_spec(tiny_checkpoint, languages=("en", "fr")))


def _images(n, size=(40, 30)):
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype("uint8")) for _ in range(n)]


def test_load_checkpoint_and_encode_text_batched(tiny, tiny_checkpoint):
    texts = ["a photo of a dog.", "a photo of a cat.", "une photo d'un chien.", "x"]
    one = tiny.encode_text(texts, batch_size=1)
    many = tiny.encode_text(texts, batch_size=64)
    assert one.shape == (4, 32) and one.dtype == np.float32
    assert np.allclose(np.linalg.norm(one, axis=1), 1, atol=1e-5)
    assert np.allclose(one, many, atol=1e-5)
    assert not np.allclose(one[0], one[1])
    assert tiny.embed_dim == 32 and tiny.precision == "fp32" and tiny.device == "cpu"
    # the same checkpoint gives the same identity (cache key); loading is deterministic
    again = load_clip(tiny_spec(tiny_checkpoint))
    assert again.identity == tiny.identity
    assert np.allclose(again.encode_text(texts[:1]), one[:1], atol=1e-6)


def test_encode_images_from_pil_and_paths(tiny, tmp_path):
    ims = _images(5)
    a = tiny.encode_images(ims, batch_size=2)
    assert a.shape == (5, 32) and np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    ims[0].save(tmp_path / "0.png")
    b = tiny.encode_images([tmp_path / "0.png"])
    assert np.allclose(a[0], b[0], atol=1e-4)
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    with pytest.raises(InvalidInput, match="bad.jpg"):
        tiny.encode_images([tmp_path / "bad.jpg"])
    assert tiny.encode_images([]).shape == (0, 32)


def test_missing_weights_are_unavailable_fast(tiny_checkpoint, tmp_path):
    t = time.perf_counter()
    with pytest.raises(Unavailable, match="not in the cache") as e:
        load_clip(ClipSpec(model="ViT-B-32", pretrained="laion2b_s34b_b79k", cache_dir=str(tmp_path)))
    assert e.value.detail["reason"] == "weights_missing"
    with pytest.raises(Unavailable, match="not in the cache"):
        load_clip(ClipSpec(model="ViT-B-32", pretrained="openai", cache_dir=str(tmp_path), allow_download=False))
    assert time.perf_counter() - t < 10  # no hub retries
    with pytest.raises(Unavailable, match="unknown pretrained tag"):
        load_clip(ClipSpec(model="ViT-B-32", pretrained="no-such-tag"))
    with pytest.raises(Unavailable, match="does not exist"):
        load_clip(ClipSpec(model="ViT-B-32", checkpoint=str(tmp_path / "missing.pt")))
    with pytest.raises(Unavailable, match="unknown open_clip architecture"):
        load_clip(ClipSpec(model="ViT-Nope", checkpoint=str(tiny_checkpoint)))
    with pytest.raises(Unavailable, match="neither a pretrained tag nor a checkpoint"):
        load_clip(ClipSpec(model="ViT-B-32"))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(Unavailable, match="loading failed"):
        load_clip(tiny_spec(corrupt))


def test_precision_defaults():
    assert resolve_precision("auto", "cuda") == "fp16"
    assert resolve_precision("auto", "cuda:1") == "fp16"
    assert resolve_precision("auto", "cpu") == "fp32"
    with pytest.raises(InvalidInput):
        resolve_precision("int3", "cpu")


def test_shipped_prompts_cover_languages():
    table = default_prompts()
    assert {"en", "fr", "de", "es", "it", "ru", "ko", "ja"} <= set(table)
    for lang, temps in table.items():
        assert 2 <= len(temps) <= 7 and all(t.count("{}") == 1 for t in temps), lang
    assert prompt_templates("fr", ["{} !", "le {}"]) == ["{} !", "le {}"]
    with pytest.raises(InvalidInput):
        prompt_templates("xx")
    with pytest.raises(InvalidInput):
        prompt_templates("en", ["no placeholder"])


def test_embed_words_is_normalised_template_mean(tiny):
    temps = ["a photo of a {}.", "a drawing of a {}.", "{}"]
    got = embed_words(tiny, ["dog", "cat"], "en", temps)
    for i, w in enumerate(["dog", "cat"]):
        m = tiny.encode_text([t.format(w) for t in temps]).mean(0)
        assert np.allclose(got[i], m / np.linalg.norm(m), atol=1e-5)
    shipped = embed_words(tiny, ["chien"], "fr")
    assert shipped.shape == (1, 32)


def test_pool_status_reuse_and_tower_slot(tiny_checkpoint, tmp_path):
    class Tower:
        label = "uclip-ru"
        identity = "tower-ru"

        def encode_text(self, texts, batch_size=256):
            return np.tile(np.eye(32, dtype=np.float32)[:1], (len(texts), 1))

    pool = ClipPool(
        specs=[tiny_spec(tiny_checkpoint, languages=("en",), name="tiny-en"),
               ClipSpec(model="ViT-B-32", pretrained="laion2b_s34b_b79k", languages=("ko",), name="ko-clip",
                        cache_dir=str(tmp_path))],
        reuse={"fr": "en"},
        towers={"ru": (Tower(), "en")},
    )
    status = pool.load_all()
    assert status["tiny-en"]["available"] is True and status["tiny-en"]["reason"] is None
    assert status["ko-clip"]["available"] is False and "not in the cache" in status["ko-clip"]["reason"]
    json.dumps(status)  # /readyz serialises it
    fr = pool.for_language("fr")
    assert fr.reused_from == "en" and fr.text is pool.for_language("en").text
    ru = pool.for_language("ru")
    assert ru.source == "uclip-ru" and ru.image is pool.for_language("en").image
    assert embed_words(ru.text, ["кот"], "ru").shape == (1, 32)
    with pytest.raises(Unavailable, match="not in the cache"):
        pool.for_language("ko")
    with pytest.raises(Unavailable, match="no CLIP encoder configured"):
        pool.for_language("ja")
    assert pool.languages() == ["en", "fr", "ko", "ru"]


def test_trimmed_text_encoding_equals_the_full_context(tiny):
    """Cutting the context after the last end-of-text token changes nothing (causal mask, EOT pooling)."""
    from models.clip import encode_text_trimmed

    texts = ["a photo of a dog.", "x", "a bright photo of the large red wooden house by the sea."]
    tokens = tiny.tokenizer(texts)
    with torch.inference_mode():
        full = tiny.model.encode_text(tokens)
        trimmed = encode_text_trimmed(tiny.model, tokens)
    assert int(tokens.argmax(dim=-1).max()) + 1 < tokens.shape[1]  # the cut is real
    assert tiny.model.text_pool_type == "argmax" and tiny.model.attn_mask is not None  # the trimmed path ran
    torch.testing.assert_close(trimmed, full, atol=1e-5, rtol=1e-5)
