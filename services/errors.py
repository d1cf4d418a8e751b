"""Domain errors: one type per kind of failure.

The HTTP layer (``app/errors.py``) maps each type to a status code; the CLI maps
them to a non-zero exit with one line. ``code`` is a stable machine-readable
string, ``detail`` carries structured context (the bad field, the known values).
"""

from __future__ import annotations

from typing import Any


class VislexError(Exception):
    """Base of every error vislex raises on purpose."""

    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None, detail: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.detail = detail or {}


class InvalidInput(VislexError):
    """The request or file is malformed or names an unknown value (422)."""

    code = "invalid_input"


class BadRequest(VislexError):
    """The request body cannot be parsed at all (400)."""

    code = "bad_request"


class NotFound(VislexError):
    """A named resource (space, pair, word, job, gallery) does not exist (404)."""

    code = "not_found"


class Conflict(VislexError):
    """The request conflicts with the current state of a resource (409)."""

    code = "conflict"


class PayloadTooLarge(VislexError):
    """A batch or upload exceeds a configured limit (413)."""

    code = "payload_too_large"


class UnsupportedMedia(VislexError):
    """An upload is not of a type vislex can decode (415)."""

    code = "unsupported_media_type"


class Overloaded(VislexError):
    """Too much work in flight; retry later (429)."""

    code = "overloaded"


class Unavailable(VislexError):
    """A component needed for this request is not loaded or cannot be (503)."""

    code = "unavailable"


class Cancelled(VislexError):
    """A long computation was asked to stop at its next iteration boundary."""

    code = "cancelled"


class TimeLimitExceeded(VislexError):
    """A long computation ran past its time limit."""

    code = "time_limit_exceeded"


class Unauthorized(VislexError):
    """The request needs an API key and carries none (401)."""

    code = "unauthorized"


class Forbidden(VislexError):
    """The request's API key is not one the server accepts (403)."""

    code = "forbidden"
