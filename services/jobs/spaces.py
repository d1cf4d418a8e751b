"""Word spaces known to jobs: registered in Redis by name so that every process (API replicas, workers) resolves them.

A space is a vectors file (validated with the CLI's rules, :func:`services.alignment.vectors.load_vectors`;
uploads in a bounded child process, :mod:`services.alignment.untrusted`)
recorded as ``vislex:spaces:registry`` -> name -> JSON {path, fmt, fingerprint, words, dim, ...}.
Spaces from ``Settings.spaces`` are recorded too (source "settings") so workers find them by name.
Workers load spaces lazily, in the worker process, and keep them cached per process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
import redis

from services.alignment.untrusted import ParseLimits, summarize_untrusted
from services.errors import InvalidInput, NotFound, PayloadTooLarge
from services.infra.paths import allowed_path

REGISTRY_KEY = "vislex:spaces:registry"
SPACES_CHANNEL = "vislex:spaces"
# No '-' in names: pairs are spelled 'src-tgt' in keys and URLs.
NAME_RE = re.compile(r"^[A-Za-z0-9_.]{1,64}$")
_UPLOAD_SUFFIXES = (".vec", ".txt", ".vec.gz", ".txt.gz", ".bin")
# Staging directories of uploads this old were left by a crash (an upload in progress is younger).
_STALE_STAGING_S = 3600.0


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise InvalidInput(
            f"space name {name!r} must be 1-64 letters, digits, '_' or '.' (no '-': pairs are written src-tgt)",
            detail={"field": "name", "value": name},
        )
    return name


def _file_stamp(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"size": st.st_size, "mtime": st.st_mtime}


def _load(path: str, fmt: str | None, max_vocab: int | None):
    from services.alignment.vectors import load_vectors

    return load_vectors(path, max_vocab=max_vocab, fmt=fmt)


class SpaceCatalog:
    """Register, resolve and fingerprint spaces by name (API side; state in Redis)."""

    def __init__(self, client: redis.Redis, *, uploads_dir: Path, max_vocab: int | None = None,
                 max_upload_bytes: int = 20 * 1024 * 1024,
                 fallback: Callable[[str], dict[str, Any] | None] | None = None,
                 parse_limits: ParseLimits | None = None):
        self.redis = client
        self.uploads_dir = Path(uploads_dir)
        self.max_vocab = max_vocab
        self.max_upload_bytes = max_upload_bytes
        self.parse_limits = parse_limits or ParseLimits()
        # Spaces not registered here (e.g. encoder-derived ones of the serving layer): name -> info or None.
        self.fallback = fallback
        self._lock = threading.Lock()

    # ---- registration -------------------------------------------------------------------
    def sync_settings(self, spaces: dict[str, str]) -> None:
        """Record configured spaces (fingerprints are computed on first use)."""
        for name, path in spaces.items():
            current = self.get(name)
            if current is not None and current.get("path") == str(Path(path).resolve()):
                continue
            self._put(name, {"name": name, "path": str(Path(path).resolve()), "fmt": None,
                             "source": "settings", "registered_at": time.time()})

    def register(self, name: str, path: str | Path, *, fmt: str | None = None, source: str = "registered",
                 replace: bool = True) -> dict[str, Any]:
        """Validate the file (same rules as the CLI) and record it; returns the stored info."""
        check_name(name)
        p = allowed_path(str(path), None, field="path")
        wv = _load(str(p), fmt, self.max_vocab)
        info = {
            "name": name, "path": str(p.resolve()), "fmt": fmt, "source": source, "registered_at": time.time(),
            "words": len(wv.words), "dim": wv.dim, "max_vocab": self.max_vocab,
            "fingerprint": wv.fingerprint(), **_file_stamp(p),
        }
        if not replace and self.get(name) is not None:
            from services.errors import Conflict

            raise Conflict(f"space {name!r} is already registered", detail={"name": name})
        self._put(name, info)
        self.redis.publish(SPACES_CHANNEL, json.dumps({"name": name, "path": info["path"]}))
        return info

    def save_upload(self, name: str, filename: str, stream: BinaryIO, *, vocab: BinaryIO | None = None,
                    fmt: str | None = None) -> dict[str, Any]:
        """Validate an upload (bounded copy, bounded child parse), then swap it in under ``name``; returns its info.

        Nothing under the final name changes until the file is known good: the bytes are staged in a private
        directory, parsed there, and only then moved over ``<name><suffix>`` with ``os.replace`` (atomic), so a
        rejected upload leaves the existing space's file, and the registry entry, exactly as they were. The
        staging directory is removed whatever happens.
        """
        check_name(name)
        lower = (filename or "").lower()
        suffix = next((s for s in _UPLOAD_SUFFIXES if lower.endswith(s)), None)
        if vocab is not None or lower.endswith(".npy"):
            if vocab is None:
                raise InvalidInput("an .npy upload needs its vocabulary file in the 'vocab' field",
                                   detail={"field": "vocab"})
            suffix = ".npy"
        if suffix is None and fmt is None:
            raise InvalidInput(f"cannot tell the format of upload {filename!r}; name it .vec, .txt, .bin or .npy "
                               "or pass 'format'", detail={"field": "file"})
        suffix = suffix or {"bin": ".bin", "npy": ".npy"}.get((fmt or "").lower(), ".vec")
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        self._remove_stale_staging()
        staging = Path(tempfile.mkdtemp(dir=self.uploads_dir, prefix=".upload-"))
        try:
            budget = [self.max_upload_bytes]
            staged = staging / f"{name}{suffix}"
            self._copy_bounded(stream, staged, budget)
            staged_vocab = staging / f"{name}.vocab.txt"  # .npy needs its sibling <stem>.vocab.txt
            if vocab is not None:
                self._copy_bounded(vocab, staged_vocab, budget)
            summary = summarize_untrusted(staged, display_name=filename or f"{name}{suffix}", fmt=fmt,
                                          max_vocab=self.max_vocab, limits=self.parse_limits)
            final = self.uploads_dir / f"{name}{suffix}"
            with self._lock:
                previous = self.get(name)
                if vocab is not None:
                    os.replace(staged_vocab, self.uploads_dir / staged_vocab.name)
                os.replace(staged, final)
                info = {"name": name, "path": str(final.resolve()), "fmt": fmt, "source": "upload",
                        "registered_at": time.time(), "words": int(summary["words"]), "dim": int(summary["dim"]),
                        "max_vocab": self.max_vocab, "fingerprint": summary["fingerprint"], **_file_stamp(final)}
                self._put(name, info)
            self.redis.publish(SPACES_CHANNEL, json.dumps({"name": name, "path": info["path"]}))
            self._remove_replaced(previous, final)
            return info
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _remove_replaced(self, previous: dict[str, Any] | None, final: Path) -> None:
        """An earlier upload under the same name in another format (``x.vec`` replaced by ``x.bin``) is now orphaned."""
        if not previous or previous.get("source") != "upload" or not previous.get("path"):
            return
        old = Path(previous["path"])
        if old != final.resolve() and old.parent == self.uploads_dir.resolve():
            old.unlink(missing_ok=True)
            if old.suffix == ".npy":
                old.with_name(old.stem + ".vocab.txt").unlink(missing_ok=True)

    def _remove_stale_staging(self) -> None:
        cutoff = time.time() - _STALE_STAGING_S
        for stale in self.uploads_dir.glob(".upload-*"):
            try:
                if stale.stat().st_mtime < cutoff:
                    shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink()
            except OSError:
                pass

    def _copy_bounded(self, stream: BinaryIO, target: Path, budget: list[int]) -> None:
        """Copy ``stream`` to ``target``, refusing (413) once the request's shared byte budget is spent."""
        with open(target, "wb") as out:
            while True:
                chunk = stream.read(1 << 20)
                if not chunk:
                    break
                budget[0] -= len(chunk)
                if budget[0] < 0:
                    raise PayloadTooLarge(f"upload exceeds max_upload_bytes={self.max_upload_bytes}",
                                          detail={"limit": self.max_upload_bytes})
                out.write(chunk)

    # ---- lookup ---------------------------------------------------------------------------
    def _put(self, name: str, info: dict[str, Any]) -> None:
        self.redis.hset(REGISTRY_KEY, name, json.dumps(info))

    def get(self, name: str) -> dict[str, Any] | None:
        raw = self.redis.hget(REGISTRY_KEY, name)
        return json.loads(raw) if raw else None

    def names(self) -> list[str]:
        return sorted(_s(k) for k in self.redis.hkeys(REGISTRY_KEY))

    def all(self) -> list[dict[str, Any]]:
        return [json.loads(v) for _, v in sorted(self.redis.hgetall(REGISTRY_KEY).items())]

    def resolve(self, name: str, *, field: str = "src") -> dict[str, Any]:
        """Info with an up-to-date fingerprint; NotFound (404) naming the known spaces."""
        info = self.get(name)
        if info is None and self.fallback is not None:
            info = self.fallback(name)
        if info is None:
            raise NotFound(f"unknown space {name!r}", detail={"field": field, "space": name, "known": self.names()})
        if info.get("path") is None:  # an encoder-derived space: the fallback provided its fingerprint
            return info
        p = Path(info["path"])
        if not p.is_file():
            # The server's file layout is not the client's business: the space, not its path, is named.
            raise NotFound(f"space {name!r}: its vectors file no longer exists on the server",
                           detail={"field": field, "space": name})
        stamp = _file_stamp(p)
        stale = (info.get("fingerprint") is None or info.get("size") != stamp["size"]
                 or info.get("mtime") != stamp["mtime"] or info.get("max_vocab") != self.max_vocab)
        if stale:
            with self._lock:
                wv = _load(info["path"], info.get("fmt"), self.max_vocab)
                info.update(stamp, fingerprint=wv.fingerprint(), words=len(wv.words), dim=wv.dim,
                            max_vocab=self.max_vocab)
                if self.get(name) is not None:
                    self._put(name, info)
        return info


# ---- worker side: per-process cache of loaded spaces ------------------------------------------
_CACHE: "OrderedDict[tuple, Any]" = OrderedDict()
_CACHE_SIZE = 4
_CACHE_LOCK = threading.Lock()
# Encoder-derived spaces (no file): a builder ``(info, max_vocab) -> WordVectors`` installed by the worker setup.
SPACE_BUILDERS: dict[str, Callable[[dict[str, Any], int | None], Any]] = {}


def load_space(info: dict[str, Any], *, max_vocab: int | None, normalize: str) -> Any:
    """WordVectors for a resolved space, normalised, cached per process; verifies the fingerprint."""
    from services.alignment.vectors import WordVectors, normalize as normalize_rows

    key = (info.get("path") or info.get("name"), info.get("fingerprint"), max_vocab, normalize)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    if info.get("path"):
        wv = _load(info["path"], info.get("fmt"), max_vocab)
    elif info.get("builder") == "encoder":
        # The serving layer's builder and its disk cache (same vocabulary and vectors as the API serves).
        from services.serving.encoder_spaces import build_encoder_vectors

        from services.serving.vocabulary import PurityRule

        cache_dir = info.get("cache_dir")
        purity = info.get("purity")  # the serving layer's language-purity rule: the same vocabulary
        rule = None if not purity else PurityRule(float(purity["leak_margin"]),
                                                  tuple(purity["reference_languages"]), bool(purity.get("scripts", True)))
        wv = build_encoder_vectors(info["name"], int(info["vocab_size"]), encoder_name=info["encoder_name"],
                                   cache_dir=Path(cache_dir) if cache_dir else None, rule=rule)
    else:
        builder = SPACE_BUILDERS.get(info.get("builder", ""))
        if builder is None:
            raise NotFound(f"space {info.get('name')!r} has no file and no builder in this worker",
                           detail={"space": info.get("name")})
        wv = builder(info, max_vocab)
    if info.get("fingerprint") and wv.fingerprint() != info["fingerprint"]:
        raise InvalidInput(
            f"space {info.get('name')!r} changed since the job was submitted (fingerprint "
            f"{wv.fingerprint()} != {info['fingerprint']}); resubmit the job",
            detail={"space": info.get("name")},
        )
    out = WordVectors(list(wv.words), np.ascontiguousarray(normalize_rows(wv.vectors, normalize), dtype=np.float32))
    with _CACHE_LOCK:
        _CACHE[key] = out
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return out
