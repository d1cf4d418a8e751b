"""Startup wiring for translation serving: word spaces, mappings, indexes, cache, background sync.

Builds (from ``runtime.settings``): file spaces (``Settings.spaces``), encoder-derived spaces
(``Settings.encoder_languages`` with ``Settings.text_encoder``; identity mappings among them),
saved mappings (``Settings.mappings``), the Redis result cache. Sets ``runtime.spaces`` (the
:class:`~services.serving.registry.SpaceRegistry`), ``runtime.cache`` and
``runtime.extras["translator"]``. After loading, a daemon thread computes the CSLS r_S of every
pair, builds the precomputed translation tables that are asked for (``Settings.table_build``:
on first use of a pair, or eagerly for all) and polls Redis for mapping versions published by
alignment jobs.
"""

from __future__ import annotations

import logging
import threading

from app.runtime import ComponentUnavailable, Runtime
from services.alignment.vectors import load_normalized
from services.errors import Unavailable
from services.serving.cache import TranslationCache
from services.serving.encoder_spaces import BackgroundGate, EncoderSpaceBuilder
from services.serving.registry import SpaceRegistry, identity_mapping, load_mapping_file
from services.serving.space import WordSpace
from services.serving.translator import Translator
from services.serving.vocabulary import PurityRule

log = logging.getLogger(__name__)

MAPPING_POLL_S = 2.0


def purity_rule(settings) -> PurityRule | None:
    """The language-purity rule of encoder-derived vocabularies (services/serving/vocabulary.py)."""
    if settings.vocab_leak_margin is None:
        return None
    reference = sorted({*settings.encoder_languages, *settings.encoder_languages_lazy,
                        *settings.vocab_reference_languages})
    return PurityRule(leak_margin=settings.vocab_leak_margin, reference_languages=tuple(reference))


def new_registry(settings) -> SpaceRegistry:
    """The registry with every file space and saved mapping; encoder spaces come from :func:`encoder_builder`."""
    registry = SpaceRegistry(index_type=settings.index_type, storage_dtype=settings.storage_dtype,
                             csls_knn=settings.csls_knn, encoder_csls_knn=settings.encoder_csls_knn,
                             csls_cache_dir=settings.cache_dir / "csls",
                             table_k=settings.table_k, table_build=settings.table_build,
                             frequency_prior=settings.frequency_prior)
    for lang, path in settings.spaces.items():
        wv, fingerprint = load_normalized(path, settings.normalize, max_vocab=settings.max_vocab)
        registry.add_space(WordSpace.build(lang, wv.words, wv.vectors, source=f"file:{path}", fingerprint=fingerprint,
                                           storage_dtype=settings.storage_dtype))
    return registry


def encoder_builder(settings, registry: SpaceRegistry, *, encoder_factory=None,
                    gate: BackgroundGate | None = None) -> EncoderSpaceBuilder:
    """A builder for the encoder languages (startup ones first, then the lazy ones) not served from files."""
    langs = [lang for lang in [*settings.encoder_languages, *settings.encoder_languages_lazy]
             if lang not in settings.spaces]
    return EncoderSpaceBuilder(registry, langs, n=settings.encoder_vocab_size, encoder_name=settings.text_encoder,
                               cache_dir=settings.cache_dir, normalize=settings.normalize,
                               storage_dtype=settings.storage_dtype, rule=purity_rule(settings),
                               encoder_factory=encoder_factory, gate=gate)


def job_gate(runtime: Runtime, stop: threading.Event) -> BackgroundGate | None:
    """With the worker `vislex serve` embeds (same machine), background work waits while a job is queued or
    running (services/serving/encoder_spaces.py, BackgroundGate); None with an external Redis."""
    if not runtime.settings.redis_embedded or runtime.redis is None:
        return None
    from services.jobs.kinds import registered
    from services.jobs.store import JobStore

    client = runtime.redis

    def busy() -> bool:  # a job of any kind: alignments, and the other kinds' (e.g. the CLIP bootstrap's training)
        keys = [JobStore.ACTIVE, *(f"{kind.key_prefix}jobs:active" for kind in registered())]  # KindJobStore.ACTIVE
        return any(client.scard(key) > 0 for key in keys)

    return BackgroundGate(busy, stop=stop)


def install_saved_mappings(settings, registry: SpaceRegistry) -> None:
    for pair, path in settings.mappings.items():
        src, tgt = pair.split("-")
        registry.install_mapping(src, tgt, load_mapping_file(path), compute_csls=False)


def build_registry(settings, *, encoder_factory=None) -> SpaceRegistry:
    """All configured spaces (encoder ones too, startup and lazy) and mappings, built now (CLI, tests)."""
    registry = new_registry(settings)
    encoder_builder(settings, registry, encoder_factory=encoder_factory).build()
    install_saved_mappings(settings, registry)
    return registry


def _background(runtime: Runtime, registry: SpaceRegistry, stop: threading.Event,
                builder: EncoderSpaceBuilder | None = None) -> None:
    if registry.table_build == "eager":
        registry.request_all_tables()
    gate = builder.gate if builder is not None else None
    registry.warm_csls(stop, pause=gate.wait if gate is not None else None)
    while not stop.is_set():
        registry.build_requested_tables(stop)
        if builder is not None and builder.remaining:
            # Lazy languages, one per turn, so a pair in use gets its tables between two of them.
            builder.build_next(background=True)
            if not builder.remaining:
                builder.close()
            continue
        registry.wait_for_work(MAPPING_POLL_S)  # woken early by a table request or by shutdown
        if stop.is_set() or runtime.redis is None:
            continue
        try:
            registry.sync_from_redis(runtime.redis)
        except Exception as exc:  # Redis briefly away: keep serving what we have
            log.debug("mapping sync failed", extra={"error": str(exc)})


def load(runtime: Runtime) -> None:
    """Loader of the 'spaces' component."""
    settings = runtime.settings
    registry = new_registry(settings)
    stop = threading.Event()
    builder = encoder_builder(settings, registry, encoder_factory=runtime.extras.get("text_encoder_factory"),
                              gate=job_gate(runtime, stop))
    runtime.components["spaces"].progress = builder.progress
    cache = None
    if settings.cache_enabled and runtime.redis_url:
        from services.infra.redis import connect

        # A short timeout: a slow Redis must cost a cache miss, not a stalled request.
        cache = TranslationCache(connect(runtime.redis_url, timeout=0.5), ttl_s=settings.cache_ttl_s)
    runtime.spaces = registry
    runtime.cache = cache
    runtime.extras["translator"] = Translator(registry, cache, max_batch_words=settings.max_batch_words,
                                              max_word_length=settings.max_word_length)
    # Served from here on: each startup language answers as soon as it is built (a fresh start embeds
    # ~20k words per language); /readyz turns 200 once all of them are.
    runtime.components["spaces"].serves_partially = True
    try:
        builder.build([lang for lang in settings.encoder_languages if lang not in settings.spaces])
    except Unavailable as exc:
        raise ComponentUnavailable(str(exc)) from exc
    install_saved_mappings(settings, registry)
    if runtime.redis is not None:
        try:
            registry.sync_from_redis(runtime.redis)
        except Exception:
            log.exception("initial mapping sync failed")
    if runtime.redis is not None:  # new mapping versions installed the moment a job publishes them (pub/sub)
        from services.serving.version_push import VersionPush

        push = runtime.extras["version_push"] = VersionPush(registry, runtime.redis).start()
        runtime.extras.setdefault("on_close", []).append(push.close)
    runtime.extras.setdefault("on_close", []).extend([stop.set, registry.wake])
    runtime.extras["serving_stop"] = stop
    thread = threading.Thread(target=_background, args=(runtime, registry, stop, builder), name="vislex-serving-sync",
                              daemon=True)
    runtime.extras["serving_thread"] = thread
    thread.start()
