"""Which alignment methods jobs accept: ``services.alignment.registry`` plus aligners added by worker plugins.

Plugins (modules named in ``run_worker(imports=...)`` / ``VISLEX_WORKER_IMPORTS``) may add entries to
:data:`EXTRA_ALIGNERS`; an entry takes the arguments of ``registry.align`` and returns an ``AlignResult``.
"""

from __future__ import annotations

from typing import Any, Callable

from services.errors import InvalidInput

EXTRA_ALIGNERS: dict[str, Callable[..., Any]] = {}


def _registry():
    try:
        from services.alignment import registry
    except ImportError:  # the alignment registry is not installed in this build
        return None
    return registry


def available() -> list[str]:
    registry = _registry()
    base = list(registry.available_methods()) if registry is not None else []
    return base + sorted(m for m in EXTRA_ALIGNERS if m not in base)


def canonical(method: str) -> str:
    """'WALIP + l1' -> 'walip+l1'; unknown names raise InvalidInput (422) listing the known ones."""
    text = (method or "").strip()
    if text in EXTRA_ALIGNERS:
        return text
    registry = _registry()
    if registry is None:
        raise InvalidInput(f"unknown method {method!r}", detail={"field": "method", "known": available()})
    try:
        return "+".join(registry.parse_method(text))
    except InvalidInput as exc:
        detail = {**exc.detail, "field": "method", "known": available()}
        raise InvalidInput(exc.message, detail=detail) from None


def validate_options(method: str, options: dict) -> None:
    """Reject unknown method options at submission (422) rather than in the worker."""
    if method in EXTRA_ALIGNERS:
        return
    registry = _registry()
    check = getattr(registry, "validate_options", None) or getattr(registry, "_stage_options", None)
    if check is not None:
        check(method.split("+"), dict(options))


def align(src, tgt, method: str, *, seed_pairs, options: dict | None = None, progress=None):
    if method in EXTRA_ALIGNERS:
        return EXTRA_ALIGNERS[method](src, tgt, method, seed_pairs=seed_pairs, options=options, progress=progress)
    registry = _registry()
    if registry is None:
        raise InvalidInput(f"unknown method {method!r}", detail={"field": "method", "known": available()})
    return registry.align(src, tgt, method, seed_pairs=seed_pairs, options=options, progress=progress)
