"""The layers import downwards only: ``models/`` and ``services/`` never import ``app/`` or ``vislex/``.

The domain must run without the web app (Celery workers, the CLI, benchmarks); settings reach it
as arguments or through the loader the process entry passes in (``vislex worker``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UPPER = {"app", "vislex"}


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("package", ["models", "services"])
def test_lower_layers_never_import_upper_ones(package):
    offenders = [f"{p.relative_to(ROOT)}:{line} imports {name}"
                 for p in sorted((ROOT / package).rglob("*.py"))
                 for line, name in _imports(p) if name.split(".")[0] in UPPER]
    assert not offenders, "\n".join(offenders)


def test_the_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from app.settings import load_settings\n    return load_settings\n")
    assert _imports(bad) == [(2, "app.settings")]
