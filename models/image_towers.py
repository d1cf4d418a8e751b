"""Image towers: a batch of images -> unit rows, behind one interface with a factory.

A compact CLIP (models/compact_clip.py) is a pair of *locked* pretrained towers plus trained
projection heads (the LiT recipe, Zhai et al. 2022, section 3: "locked image, unlocked text" --
here both towers are locked and only the heads learn). This module holds the image side:

* :class:`TFLiteImageTower` -- the pretrained ImageNet MobileNets shipped as TensorFlow Lite
  files (run by ``ai-edge-litert``). The input quantisation (scale, zero point, dtype) is read
  from the file, images are resized (shorter side, bilinear) and center-cropped to the input
  size, and the output is dequantised with the file's own parameters. A class-score model
  (MobileNet v2: 1,001 softmax scores) is embedded as the square root of its probabilities
  (the Hellinger map: dot products of unit rows then compare distributions, not their peaks).
* :class:`ConcatImageTower` -- several towers side by side (e.g. v1 features + v2 scores), each
  unit-normalised and weighted equally.
* :class:`OpenClipImageTower` -- an open_clip model's image tower, when such weights exist.

:func:`load_image_tower` builds one from a name (``mobilenet-v1``, ``mobilenet-v2``,
``mobilenet-v1+v2``), a ``.tflite`` path, or ``open_clip:ARCH:TAG``. A missing file raises
:class:`services.errors.Unavailable` naming the setting that fixes it (``VISLEX_MOBILENET_DIR``).
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence, runtime_checkable

import numpy as np

from services.errors import InvalidInput, Unavailable

MOBILENET_FILES = {
    "mobilenet-v1": "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite",
    "mobilenet-v2": "mobilenet_v2_1.0_224_quant.tflite",
}
MOBILENET_DIR_ENV = "VISLEX_MOBILENET_DIR"
# Where the shared workplace data keeps them (a checkout's sibling folder); the env var wins.
_DEFAULT_MOBILENET_DIRS = (Path(__file__).resolve().parents[2] / "shared" / "data" / "models" / "mobilenet",)


@runtime_checkable
class ImageTower(Protocol):
    """Anything that embeds images (PIL images or paths) as float32 unit rows of width ``dim``."""

    name: str
    dim: int
    identity: str
    device: str

    def encode_images(self, images: Sequence[Any], batch_size: int = 64) -> np.ndarray: ...


def unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def open_rgb(item: Any):
    """A PIL RGB image from a PIL image or a path; a file that is not an image is InvalidInput."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(item, (str, os.PathLike)):
        try:
            with Image.open(item) as im:
                return im.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise InvalidInput(f"cannot read image {Path(item).name}: {e}", detail={"image": Path(item).name}) from e
    return item if item.mode == "RGB" else item.convert("RGB")


def center_crop_array(image, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` (bilinear), crop the center ``size`` x ``size``: (size, size, 3) uint8."""
    from PIL import Image

    w, h = image.size
    scale = size / min(w, h)
    if (w, h) != (size, size):
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        image = image.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.uint8)


def quantize_input(pixels: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    """uint8 RGB pixels -> the model's input tensor.

    MobileNets take pixels mapped to [-1, 1] (``x / 127.5 - 1``); a quantised input stores
    ``round(real / scale + zero_point)`` clipped to its dtype. For these files (scale 1/128,
    zero point 128) that is the pixel value itself, up to rounding at the top end. A float
    input (scale 0) gets the real values.
    """
    real = pixels.astype(np.float32) / 127.5 - 1.0
    dtype = np.dtype(dtype)
    if not scale or dtype.kind == "f":
        return real.astype(dtype if dtype.kind == "f" else np.float32)
    info = np.iinfo(dtype)
    q = np.rint(real / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize_output(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """The model's output tensor -> real values ``scale * (q - zero_point)`` (float outputs pass through)."""
    if not scale:
        return np.asarray(q, dtype=np.float32)
    return (np.asarray(q, dtype=np.float32) - float(zero_point)) * float(scale)


def file_identity(path: Path) -> str:
    """The first 16 hex digits of a file's sha256 (model files: identities of towers and checkpoints)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


class TFLiteImageTower:
    """A TensorFlow Lite image model (the shared MobileNets) as an image tower.

    Batched where the graph allows it (``resize_tensor_input``); graphs with a fixed batch of
    one (MobileNet v2's final reshape) run image by image -- each invocation is a few ms.
    """

    def __init__(self, path: str | os.PathLike, *, name: str | None = None, threads: int | None = None,
                 output: str = "auto"):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as e:  # pragma: no cover - dependency
            raise Unavailable(f"ai-edge-litert is not installed ({e}); pip install ai-edge-litert",
                              detail={"reason": "dependency_missing"}) from e
        self.path = Path(path)
        if not self.path.is_file():
            raise Unavailable(f"image tower file {self.path.name} not found; set {MOBILENET_DIR_ENV} to the folder "
                              "holding the MobileNet .tflite files", detail={"reason": "weights_missing",
                                                                           "setting": MOBILENET_DIR_ENV})
        self.name = name or self.path.stem
        self.device = "cpu"
        self._threads = threads or min(4, os.cpu_count() or 1)
        self._Interpreter = Interpreter
        try:
            self._interp = Interpreter(model_path=str(self.path), num_threads=self._threads)
            self._interp.allocate_tensors()
        except (RuntimeError, ValueError) as e:
            raise Unavailable(f"image tower {self.path.name} is not a loadable TFLite model: {e}",
                              detail={"reason": "load_failed"}) from e
        inp, out = self._interp.get_input_details()[0], self._interp.get_output_details()[0]
        self._in_index, self._out_index = inp["index"], out["index"]
        self.input_size = int(inp["shape"][1])
        self.input_dtype = np.dtype(inp["dtype"])
        self.input_scale, self.input_zero_point = (float(inp["quantization"][0]), int(inp["quantization"][1]))
        self.output_scale, self.output_zero_point = (float(out["quantization"][0]), int(out["quantization"][1]))
        width = int(np.prod(out["shape"][1:]))
        # A softmax output (scale 1/256, a class count like 1,001) is a distribution; anything else features.
        self.output = output if output != "auto" else ("probabilities" if width in (1000, 1001) else "features")
        self.dim = width
        self.identity = f"tflite:{file_identity(self.path)}:{self.output}"
        self._batched = self._probe_batching()
        self._batch_shape: tuple[int, ...] | None = None
        self._lock = threading.Lock()

    def _probe_batching(self) -> bool:
        try:
            self._interp.resize_tensor_input(self._in_index, [2, self.input_size, self.input_size, 3])
            self._interp.allocate_tensors()
            return True
        except (RuntimeError, ValueError):
            # A fixed-batch graph: rebuild the interpreter at batch 1.
            self._interp = self._Interpreter(model_path=str(self.path), num_threads=self._threads)
            self._interp.allocate_tensors()
            return False

    def preprocess(self, image: Any) -> np.ndarray:
        return center_crop_array(open_rgb(image), self.input_size)

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        x = quantize_input(pixels, self.input_scale, self.input_zero_point, self.input_dtype)
        if self._batched:
            if self._batch_shape != x.shape:  # re-plan only when the batch size changes
                self._interp.resize_tensor_input(self._in_index, list(x.shape))
                self._interp.allocate_tensors()
                self._batch_shape = x.shape
            self._interp.set_tensor(self._in_index, x)
            self._interp.invoke()
            raw = self._interp.get_tensor(self._out_index).reshape(len(x), -1)
        else:
            rows = []
            for one in x:  # fixed batch of one (graph constraint), a few ms each
                self._interp.set_tensor(self._in_index, one[None])
                self._interp.invoke()
                rows.append(self._interp.get_tensor(self._out_index).reshape(-1))
            raw = np.stack(rows)
        return dequantize_output(raw, self.output_scale, self.output_zero_point)

    def embed_raw(self, pixels: np.ndarray) -> np.ndarray:
        """(n, S, S, 3) uint8 -> the dequantised outputs, mapped (sqrt for probabilities), unit rows."""
        real = self._run(pixels)
        if self.output == "probabilities":
            real = np.sqrt(np.clip(real, 0.0, None))
        return unit(real)

    def encode_images(self, images: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        images = list(images)
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        with self._lock:
            for start in range(0, len(images), batch_size):
                pixels = np.stack([self.preprocess(im) for im in images[start:start + batch_size]])
                out.append(self.embed_raw(pixels))
        return np.concatenate(out).astype(np.float32, copy=False)


class ConcatImageTower:
    """Several image towers side by side; each part unit-normalised, scaled by 1/sqrt(parts): unit rows."""

    def __init__(self, parts: Sequence[Any], name: str | None = None):
        if not parts:
            raise InvalidInput("a concatenated image tower needs at least one part")
        self.parts = list(parts)
        self.name = name or "+".join(p.name for p in self.parts)
        self.dim = sum(p.dim for p in self.parts)
        self.identity = "concat:" + "+".join(p.identity for p in self.parts)
        self.device = self.parts[0].device

    def encode_images(self, images: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        images = list(images)
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        decoded = [open_rgb(im) for im in images]  # decode once for every part
        parts = [p.encode_images(decoded, batch_size) for p in self.parts]
        return unit(np.concatenate(parts, axis=1))


class PixelImageTower:
    """A tiny pretrained-free tower: the image shrunk to ``size`` x ``size`` (box filter), centred, unit rows.

    A baseline and the tower of tests and examples that must run without the shared MobileNets.
    """

    def __init__(self, size: int = 8):
        if not 1 <= size <= 64:
            raise InvalidInput("pixel tower size must be in [1, 64]", detail={"field": "image_tower"})
        self.size = size
        self.name = f"pixels-{size}"
        self.dim = size * size * 3
        self.identity = f"pixels:{size}"
        self.device = "cpu"

    def encode_images(self, images: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        from PIL import Image

        images = list(images)
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        rows = np.stack([np.asarray(open_rgb(im).resize((self.size, self.size), Image.BOX), dtype=np.float32).ravel()
                         for im in images]) / 255.0
        return unit(rows - 0.5)


class OpenClipImageTower:
    """An open_clip model's image tower (models.clip.ClipEncoder) as an image tower."""

    def __init__(self, encoder: Any):
        self.encoder = encoder
        self.name = f"open_clip:{encoder.label}"
        self.dim = int(encoder.embed_dim)
        self.identity = f"open_clip:{encoder.identity}"
        self.device = encoder.device

    def encode_images(self, images: Sequence[Any], batch_size: int = 64) -> np.ndarray:
        return self.encoder.encode_images(list(images), batch_size=batch_size)


def mobilenet_dirs(extra: Iterable[str | os.PathLike] = ()) -> list[Path]:
    dirs = [Path(p) for p in extra if p]
    if os.environ.get(MOBILENET_DIR_ENV):
        dirs.append(Path(os.environ[MOBILENET_DIR_ENV]))
    return dirs + list(_DEFAULT_MOBILENET_DIRS)


def image_tower_names() -> list[str]:
    return [*MOBILENET_FILES, "mobilenet-v1+v2", "pixels-8", "pixels-16"]


def _mobilenet(name: str, search: Sequence[Path], threads: int | None) -> TFLiteImageTower:
    filename = MOBILENET_FILES[name]
    for d in search:
        if (d / filename).is_file():
            return TFLiteImageTower(d / filename, name=name, threads=threads)
    raise Unavailable(f"image tower {name}: {filename} not found (looked in {len(search)} folder(s)); set "
                      f"{MOBILENET_DIR_ENV} to the folder holding it", detail={"tower": name, "reason": "weights_missing",
                                                                             "setting": MOBILENET_DIR_ENV})


def load_image_tower(name: str, *, mobilenet_dir: str | os.PathLike | None = None, threads: int | None = None,
                     device: str = "auto") -> Any:
    """The image tower called ``name``: a MobileNet name, ``a+b`` (concatenation), a .tflite path, or
    ``open_clip:ARCH:TAG`` / ``open_clip:ARCH:/path/checkpoint.pt``."""
    key = (name or "").strip()
    search = mobilenet_dirs([mobilenet_dir] if mobilenet_dir else [])
    if key.startswith("open_clip:"):
        from models.clip import ClipSpec, load_clip

        _, arch, weights = (key.split(":", 2) + ["", ""])[:3]
        is_file = weights.endswith((".pt", ".bin", ".safetensors"))
        spec = ClipSpec(model=arch, pretrained=None if is_file else (weights or None),
                        checkpoint=weights if is_file else None, device=device, name=key)
        return OpenClipImageTower(load_clip(spec))
    if key.lower() == "mobilenet-v1+v2" or ("+" in key and all(p.strip() in MOBILENET_FILES for p in key.split("+"))):
        parts = ["mobilenet-v1", "mobilenet-v2"] if key.lower() == "mobilenet-v1+v2" else key.split("+")
        return ConcatImageTower([_mobilenet(p.strip(), search, threads) for p in parts], name=key)
    if key.lower() in MOBILENET_FILES:
        return _mobilenet(key.lower(), search, threads)
    if key.lower().startswith("pixels-") and key[7:].isdigit():
        return PixelImageTower(int(key[7:]))
    if key.endswith(".tflite"):
        return TFLiteImageTower(key, threads=threads)
    raise InvalidInput(f"unknown image tower {name!r}", detail={"field": "image_tower", "known": image_tower_names(),
                                                                "also": ["<path>.tflite", "open_clip:ARCH:TAG"]})
