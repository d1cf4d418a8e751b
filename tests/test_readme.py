"""The README's curl bodies use the field names the request schemas really require."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_CURL = re.compile(r"curl[^\n]*-XPOST localhost:8000(?P<path>/v1/[a-z/]+)[^\n]*\\\n\s*-d '(?P<body>[^']*)'")


def _curl_bodies() -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for m in _CURL.finditer((ROOT / "README.md").read_text()):
        out.setdefault(m["path"], []).append(json.loads(m["body"]))
    return out


def test_readme_post_bodies_validate_against_the_schemas():
    from app.schemas.alignments import AlignmentRequest, SpaceRegistration

    bodies = _curl_bodies()
    assert bodies.get("/v1/spaces") and bodies.get("/v1/alignments")
    for body in bodies["/v1/spaces"]:
        SpaceRegistration.model_validate(body)  # raises on a field the schema does not know (e.g. "lang")
    for body in bodies["/v1/alignments"]:
        AlignmentRequest.model_validate(body)


def test_readme_documents_both_422_shapes_and_the_bad_json_code():
    text = (ROOT / "README.md").read_text()
    assert '"detail": {"errors": [{"field":' in text and '"detail": {"field": "options.time_limit_s"' in text
    assert "400 (`bad_request`" in text and "`path_not_allowed`" in text
