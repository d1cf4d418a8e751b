"""One line of strict JSON for other tools to parse: NaN/inf become null, numpy scalars plain numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["dumps", "finite"]


def finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, recursively (dicts, lists, tuples)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def _default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return finite(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return str(value)


def dumps(value: Any) -> str:
    """Strict JSON (``allow_nan=False`` holds because :func:`finite` ran first), UTF-8 kept as is."""
    return json.dumps(finite(value), ensure_ascii=False, default=_default, allow_nan=False)
