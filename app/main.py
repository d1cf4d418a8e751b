"""The FastAPI application: routers, error contract, middleware, lifespan."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

import vislex
from app.auth import KeyGuard, document_security, read_dependencies
from app.body_limit import BodyLimitMiddleware
from app.errors import add_bad_json_responses, install_error_handlers
from app.middleware import RequestContextMiddleware
from app.probes import ProbeServer
from app.runtime import Runtime
from app.settings import Settings, load_settings
from services.observability import configure_logging

log = logging.getLogger(__name__)


def _routers():
    from app.routes import alignments, fingerprint_images, fingerprints, galleries, spaces, system, translate, uclip
    from app.routes import clip
    from app.routes import sentences

    # translate first: route matching is linear, and its GET is the hot path (probes live on their own port).
    return [translate.router, system.router, spaces.router, alignments.router,
            fingerprints.router, fingerprint_images.router, uclip.router, clip.router, galleries.router,
            sentences.router]


def create_app(settings: Settings | None = None, *, background_load: bool = True) -> FastAPI:
    """Build the app; models and indexes load once, in the lifespan, never per request."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        runtime = Runtime(settings)
        app.state.runtime = runtime
        # The probe listener (own port and thread, issue 19) answers from before the components load;
        # a port it cannot bind stops startup with a message naming VISLEX_PROBE_PORT.
        app.state.probe_server = ProbeServer.start(settings, runtime)
        try:
            runtime.start(background=background_load)
            log.info("vislex starting", extra={"version": vislex.__version__, "port": settings.port,
                                               "probe_port": settings.probe_port or None})
            yield
        finally:
            if app.state.probe_server is not None:
                app.state.probe_server.stop()
                app.state.probe_server = None
            runtime.close()

    app = FastAPI(
        title="vislex",
        version=vislex.__version__,
        description="Word translation through vision: WALIP, L1 refinement, InstaMap, uCLIP.",
        lifespan=lifespan,
        generate_unique_id_function=lambda route: route.name,
        dependencies=read_dependencies(settings),
        docs_url=None, redoc_url=None,  # served offline by app/routes/docs.py (FastAPI's load from a CDN)
    )
    app.state.key_guard = KeyGuard.from_settings(settings)
    app.state.probe_server = None  # the running app/probes.ProbeServer, between lifespan start and stop
    install_error_handlers(app)
    for router in _routers():
        app.include_router(router)
    from app.routes.translate import HOT_ROUTES

    if not read_dependencies(settings):  # with keys required for reads, the FastAPI routes (and their check) serve
        app.router.routes[:0] = HOT_ROUTES  # matched first; their FastAPI twins stay for OpenAPI
    from app.routes.console import install_console
    from app.routes.docs import install_docs

    install_console(app)  # the web console at / (static files in the package)
    install_docs(app)  # /docs and /redoc with their assets from a package, no CDN
    add_bad_json_responses(app)
    document_security(app)
    # Inside the request context (added first): a 413 still gets a request id, a log line and a metric.
    app.add_middleware(BodyLimitMiddleware, max_json_bytes=settings.max_json_bytes,
                       max_upload_bytes=settings.max_upload_bytes)
    app.add_middleware(RequestContextMiddleware, max_in_flight=settings.max_in_flight)
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory entry point (``uvicorn --factory app.main:app_from_env``)."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_json)
    return create_app(settings)
