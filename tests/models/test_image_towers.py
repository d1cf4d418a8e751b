"""Image towers: quantisation arithmetic, preprocessing, the pixel tower, and the real MobileNet files when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.image_towers import (ConcatImageTower, PixelImageTower, center_crop_array, dequantize_output,
                                 load_image_tower, quantize_input)
from services.errors import InvalidInput, Unavailable

MOBILENET = Path(__file__).resolve().parents[3] / "shared" / "data" / "models" / "mobilenet"
FLICKR = Path(__file__).resolve().parents[3] / "shared" / "data" / "images" / "flickr8k"


def test_quantize_input_with_the_mobilenet_parameters_is_the_pixel_value():
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    q = quantize_input(pixels, 1 / 128, 128, np.uint8)
    # real = p/127.5 - 1, q = real*128 + 128: equal to p up to one step at the top end
    assert q.dtype == np.uint8
    assert np.abs(q.astype(int) - pixels.astype(int)).max() <= 1
    assert q.ravel()[0] == 0 and q.ravel()[-1] == 255


def test_quantize_input_clips_to_the_dtype_and_float_inputs_get_real_values():
    pixels = np.array([[0, 255]], dtype=np.uint8)
    q = quantize_input(pixels, 1 / 64, 128, np.int8)  # real*64 + 128 overflows int8: clipped
    assert q.dtype == np.int8 and q.max() == 127
    f = quantize_input(pixels, 0.0, 0, np.float32)
    assert np.allclose(f, [[-1.0, 1.0]])


def test_dequantize_output():
    assert np.allclose(dequantize_output(np.array([0, 10, 255], dtype=np.uint8), 0.5, 10), [-5.0, 0.0, 122.5])
    assert np.allclose(dequantize_output(np.array([1.5]), 0.0, 0), [1.5])


def test_center_crop_takes_the_middle_after_resizing_the_shorter_side():
    im = np.zeros((100, 300, 3), dtype=np.uint8)
    im[:, 100:200] = 255  # a white middle third
    out = center_crop_array(Image.fromarray(im), 50)
    assert out.shape == (50, 50, 3)
    assert out[:, 5:45].mean() > 250  # the crop is the white middle


def test_pixel_tower_gives_unit_rows_that_separate_colours(tmp_path):
    red = Image.new("RGB", (20, 20), (255, 0, 0))
    red2 = Image.new("RGB", (30, 10), (250, 5, 0))
    blue = Image.new("RGB", (20, 20), (0, 0, 255))
    path = tmp_path / "b.png"
    blue.save(path)
    tower = load_image_tower("pixels-8")
    E = tower.encode_images([red, red2, path])
    assert E.shape == (3, 192) and np.allclose(np.linalg.norm(E, axis=1), 1, atol=1e-5)
    assert E[0] @ E[1] > 0.99 > E[0] @ E[2]


def test_a_file_that_is_not_an_image_is_a_clear_error(tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a jpeg")
    with pytest.raises(InvalidInput, match="notes.jpg"):
        PixelImageTower().encode_images([bad])


def test_unknown_tower_and_missing_weights_name_the_fix(tmp_path, monkeypatch):
    with pytest.raises(InvalidInput) as e:
        load_image_tower("resnet-9000")
    assert "mobilenet-v1" in e.value.detail["known"]
    monkeypatch.setattr("models.image_towers._DEFAULT_MOBILENET_DIRS", ())
    monkeypatch.setenv("VISLEX_MOBILENET_DIR", str(tmp_path))
    with pytest.raises(Unavailable, match="VISLEX_MOBILENET_DIR"):
        load_image_tower("mobilenet-v1")


def test_concat_tower_is_unit_and_weights_parts_equally():
    tower = ConcatImageTower([PixelImageTower(2), PixelImageTower(4)])
    E = tower.encode_images([Image.new("RGB", (8, 8), (10, 200, 30))])
    assert E.shape == (1, 12 + 48)
    assert np.isclose(np.linalg.norm(E[0, :12]), np.linalg.norm(E[0, 12:]), atol=1e-5)


needs_mobilenet = pytest.mark.skipif(not (MOBILENET / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite").is_file(),
                                     reason="the shared MobileNet files (../shared/data/models/mobilenet) are absent")


@needs_mobilenet
def test_mobilenet_v1_features_batched_equal_one_by_one_and_similar_photos_are_close():
    tower = load_image_tower("mobilenet-v1", mobilenet_dir=MOBILENET)
    assert tower.dim == 1024 and tower._batched
    photos = sorted(FLICKR.iterdir())[:3] if FLICKR.is_dir() else []
    images = [Image.new("RGB", (240, 200), (200, 30, 30)), Image.new("RGB", (224, 224), (205, 35, 28)),
              Image.new("RGB", (224, 224), (20, 20, 220))] + photos
    batch = tower.encode_images(images, batch_size=8)
    single = np.concatenate([tower.encode_images([im]) for im in images])
    assert np.allclose(batch, single, atol=1e-5)
    assert np.allclose(np.linalg.norm(batch, axis=1), 1, atol=1e-5)
    assert batch[0] @ batch[1] > batch[0] @ batch[2]


@needs_mobilenet
def test_mobilenet_v2_scores_recognise_an_imagenet_sample():
    samples = MOBILENET.parents[1] / "images" / "imagenet-samples"
    if not samples.is_dir():
        pytest.skip("the shared ImageNet samples are absent")
    tower = load_image_tower("mobilenet-v2", mobilenet_dir=MOBILENET)
    assert tower.output == "probabilities" and not tower._batched  # fixed batch of one: image by image
    files = sorted(samples.iterdir())[:20]
    E = tower.encode_images(files)
    # the Hellinger map of the scores: argmax is the class; index 0 is background, classes start at 1
    hits = np.mean(np.argmax(E, axis=1) - 1 == np.arange(20))
    assert hits >= 0.5
