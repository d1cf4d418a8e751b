"""API keys: writes (and, with ``VISLEX_AUTH_READS``, reads) need ``Authorization: Bearer <key>``.

One :class:`KeyGuard` is built from the settings by the app factory (``app.state.key_guard``); routes
that create, change, delete or run something declare :data:`WriteAccess`, and with ``auth_reads`` the
app adds :func:`read_dependencies` to every route. Without ``VISLEX_API_KEYS`` everything stays open
(``vislex serve`` says so at start). The scheme is declared through FastAPI's ``HTTPBearer``, so the
OpenAPI document lists it and marks every protected operation.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.errors import Forbidden, Unauthorized

# Shorter keys are guessable; generate with e.g. `python -c "import secrets; print(secrets.token_urlsafe(32))"`.
MIN_KEY_LENGTH = 16
# Probes must answer without a key even when reads are protected (orchestrators send none).
OPEN_PATHS = frozenset({"/healthz", "/readyz"})

_bearer = HTTPBearer(auto_error=False, scheme_name="bearerAuth",
                     description="an API key from VISLEX_API_KEYS: `Authorization: Bearer <key>`")


def parse_api_keys(value: Any) -> list[str]:
    """Keys from a JSON list, comma-separated keys, or the absolute path of a file with one key per line."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            value = json.loads(text)
        elif os.path.isabs(text):
            path = Path(text)
            if not path.is_file():
                raise ValueError(f"key file {text} does not exist")
            lines = path.read_text(encoding="utf-8").splitlines()
            value = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        else:
            value = [part.strip() for part in text.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
        raise ValueError("expected a list of keys")
    weak = [i for i, key in enumerate(value) if len(key) < MIN_KEY_LENGTH or any(c.isspace() for c in key)]
    if weak:  # the message names positions only: settings errors are printed, keys must not be
        raise ValueError(f"keys at positions {weak} are shorter than {MIN_KEY_LENGTH} characters or hold whitespace")
    return list(value)


class KeyGuard:
    """Checks bearer keys against the configured ones in constant time."""

    def __init__(self, keys: list[str], *, auth_reads: bool = False):
        # Comparing fixed-length digests keeps the time independent of the keys' lengths and contents.
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys]
        self.auth_reads = auth_reads and bool(keys)

    @classmethod
    def from_settings(cls, settings) -> KeyGuard:
        return cls(list(settings.api_keys or []), auth_reads=settings.auth_reads)

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def check(self, credentials: HTTPAuthorizationCredentials | None) -> int | None:
        """The number of the accepted key (None when no keys are configured); 401 without a key, 403 with a wrong one."""
        if not self._digests:
            return None
        if credentials is None or not credentials.credentials:
            raise Unauthorized("this endpoint needs an API key: send 'Authorization: Bearer <key>'",
                               detail={"scheme": "Bearer"})
        digest = hashlib.sha256(credentials.credentials.encode("utf-8", "surrogatepass")).digest()
        accepted = None
        for number, expected in enumerate(self._digests):  # every key is compared: no early exit to time
            if hmac.compare_digest(digest, expected):
                accepted = number
        if accepted is None:
            raise Forbidden("the API key is not accepted", detail={"scheme": "Bearer"})
        return accepted


def _guard(request: Request) -> KeyGuard:
    return request.app.state.key_guard


def require_write_key(request: Request,
                      credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> int | None:
    return _guard(request).check(credentials)


def require_read_key(request: Request,
                     credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> int | None:
    guard = _guard(request)
    if not guard.auth_reads or request.url.path in OPEN_PATHS:
        return None
    return guard.check(credentials)


# The accepted key's number (None: the server has no keys). Declare it on every route that writes or runs.
WriteAccess = Annotated[int | None, Depends(require_write_key)]


def document_security(app) -> None:
    """Keep the OpenAPI document true to the configuration: the bearer scheme is declared only where a key is
    really required -- nowhere without VISLEX_API_KEYS, never on the open probes (clients and fuzzers that read
    ``security`` as "a request without the header is refused" must not be misled)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        if app.state.key_guard.enabled:
            for path in OPEN_PATHS:
                for operation in schema.get("paths", {}).get(path, {}).values():
                    if isinstance(operation, dict):
                        operation.pop("security", None)
            return schema
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                if isinstance(operation, dict):
                    operation.pop("security", None)
        schema.get("components", {}).get("securitySchemes", {}).pop("bearerAuth", None)
        return schema

    app.openapi = openapi


def read_dependencies(settings) -> list:
    """App-wide dependencies: the read check when ``auth_reads`` (else none, and reads stay undocumented as secured)."""
    return [Depends(require_read_key)] if settings.auth_reads and settings.api_keys else []
