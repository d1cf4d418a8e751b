"""Server-side paths named by clients: only under allowed directories, and never echoed back.

One rule for every endpoint that reads a file or folder the client names (``POST /v1/spaces`` by
path, uCLIP training inputs, heads checkpoints): the path must be absolute, free of NUL bytes, and
its real location (symlinks resolved) must lie under one of the allowed roots. Errors name the
field, never the path, the roots or whether something exists outside them -- an answer that
differed between a missing and a present file outside the roots would be a file-existence oracle.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Literal

from services.errors import InvalidInput

ROOTS_HINT = ("the data directory, the configured spaces' directories or VISLEX_SPACE_PATH_ROOTS")


def allowed_path(value: object, roots: Iterable[str | Path] | None, *, field: str,
                 kind: Literal["file", "dir"] = "file") -> Path:
    """The real path of ``value`` if it is an existing ``kind`` under one of ``roots`` (None: any root); else 422."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{field}: a non-empty path is required", detail={"field": field})
    if "\x00" in value:  # the OS refuses these with ValueError; it is the client's mistake, not a 500
        raise InvalidInput(f"{field}: a path cannot contain a NUL byte", detail={"field": field})
    if not os.path.isabs(value):
        raise InvalidInput(f"{field}: the path must be absolute (a path on the server)", detail={"field": field})
    real = Path(os.path.realpath(value))
    if roots is not None:
        real_roots = [Path(os.path.realpath(r)) for r in roots]
        if not any(real == root or real.is_relative_to(root) for root in real_roots):
            raise InvalidInput(f"{field}: the path is outside the directories this server reads from ({ROOTS_HINT})",
                               code="path_not_allowed", detail={"field": field})
    exists = real.is_file() if kind == "file" else real.is_dir()
    if not exists:
        what = "file" if kind == "file" else "directory"
        raise InvalidInput(f"{field}: no such {what} on the server", detail={"field": field})
    return real
