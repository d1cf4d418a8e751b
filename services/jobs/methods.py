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


FINGERPRINT_OPTIONS = "fingerprints"  # not a method option: WALIP step-1 knobs for seed=fingerprints


def validate_options(method: str, options: dict) -> None:
    """Reject unknown method options at submission (422) rather than in the worker.

    ``options.fingerprints`` (a mapping of ``FingerprintOptions`` fields: q, k, max_words,
    templates, ...) configures the fingerprint seed and is checked here, then left to the runner.
    """
    options = dict(options)
    if FINGERPRINT_OPTIONS in options:
        fp = options.pop(FINGERPRINT_OPTIONS)
        if not isinstance(fp, dict):
            raise InvalidInput("options.fingerprints must be an object of fingerprint options",
                               detail={"field": "options.fingerprints"})
        from services.vision.walip_pipeline import FingerprintOptions

        try:
            FingerprintOptions.from_dict(fp)
            if fp.get("templates") is not None:
                from services.vision.config import validate_templates

                validate_templates(fp["templates"], where="options.fingerprints.templates")
        except (InvalidInput, TypeError, ValueError) as exc:
            message = exc.message if isinstance(exc, InvalidInput) else str(exc)
            raise InvalidInput(message, detail={"field": "options.fingerprints"}) from None
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
