"""Validate an untrusted vectors file in a child process whose memory and time are bounded.

Why a process: the parsers (NumPy, fastText's C++ loader) run native code that holds the GIL and
cannot be interrupted, so in the API process a hostile file would stall every concurrent request
and could exhaust its memory. The child lowers its own address-space and CPU limits before it
reads a byte of the file, the parent kills it at the timeout, and only a summary comes back
(words, dimension, fingerprint) -- or the loader's error, with the server's path replaced by the
name the client gave.

Run as ``python -m services.alignment.untrusted`` with one JSON argument; prints one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.errors import InvalidInput

_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ParseLimits:
    """Bounds for parsing one untrusted file."""

    max_decompressed_bytes: int = 256 * 1024 * 1024
    memory_bytes: int = 2 * 1024 * 1024 * 1024
    timeout_s: float = 120.0


def _invalid(message: str, counts: dict[str, int], problems: dict[str, Any] | None = None) -> InvalidInput:
    detail: dict[str, Any] = {"field": "file", "counts": counts}
    if problems:
        detail["problems"] = problems
    return InvalidInput(message, code="invalid_vector_file", detail=detail)


def summarize_untrusted(path: Path, *, display_name: str, fmt: str | None, max_vocab: int | None,
                        limits: ParseLimits) -> dict[str, Any]:
    """{"words", "dim", "fingerprint"} of ``path``, parsed in a bounded child; InvalidInput (field ``file``) if bad."""
    request = {"path": str(path), "display_name": display_name, "fmt": fmt, "max_vocab": max_vocab,
               "max_decompressed_bytes": limits.max_decompressed_bytes, "memory_bytes": limits.memory_bytes,
               "cpu_s": int(limits.timeout_s) + 1}
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISLEX_")}
    # One BLAS thread: parsing needs none, and every thread reserves address space the limit counts.
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")])))
    try:
        proc = subprocess.run([sys.executable, "-m", "services.alignment.untrusted", json.dumps(request)],
                              capture_output=True, text=True, timeout=limits.timeout_s, env=env,
                              stdin=subprocess.DEVNULL, cwd=str(_ROOT))
    except subprocess.TimeoutExpired:
        raise _invalid(f"file: parsing {display_name!r} took longer than {limits.timeout_s:g} s",
                       {"seconds over the parse time limit": 1}) from None
    lines = proc.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        # Killed by a limit (CPU, memory in native code) before it could answer.
        raise _invalid(f"file: parsing {display_name!r} exceeded the parser's memory or time limit",
                       {"parses over the memory or time limit": 1})
    if "error" in answer:
        error = answer["error"]
        raise _invalid(f"file: {error['message']}", error.get("counts") or {"unreadable files": 1},
                       error.get("problems"))
    return answer["ok"]


def _limit_self(memory_bytes: int, cpu_s: int) -> None:
    """Cap this process's address space at what it uses now plus ``memory_bytes``, and its CPU time."""
    import resource

    with open("/proc/self/statm") as fh:
        used = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (used + memory_bytes, used + memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # a parser has nothing to write


def _main(argv: list[str]) -> int:
    request = json.loads(argv[0])
    from services.alignment.vectors import VectorFileError, load_vectors

    try:  # imported before the limits: its shared library is not the file's doing
        import fasttext  # noqa: F401
    except ImportError:
        pass
    _limit_self(int(request["memory_bytes"]), int(request["cpu_s"]))
    path, shown = request["path"], request["display_name"]
    try:
        wv = load_vectors(path, max_vocab=request["max_vocab"], fmt=request["fmt"],
                          max_decompressed_bytes=request["max_decompressed_bytes"])
        answer: dict[str, Any] = {"ok": {"words": len(wv.words), "dim": wv.dim, "fingerprint": wv.fingerprint()}}
    except VectorFileError as exc:
        # The client knows its file by the name it sent, not by where the server staged it.
        stage_dir = str(Path(path).parent)
        message = exc.message.replace(path, shown).replace(stage_dir, ".")
        detail = exc.detail or {}
        answer = {"error": {"message": message, "counts": detail.get("counts") or {},
                            "problems": detail.get("problems")}}
    except MemoryError:
        answer = {"error": {"message": f"parsing {shown!r} needs more memory than the parser may use",
                            "counts": {"parses over the memory limit": 1}}}
    print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
