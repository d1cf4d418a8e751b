"""Liveness, readiness, metrics and a system summary."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

import vislex
from app.deps import RuntimeDep
from app.errors import responses
from app.runtime import Runtime, components_ready
from services.jobs.celery_app import live_workers

router = APIRouter(tags=["system"])


class Health(BaseModel):
    status: str
    version: str


def health() -> Health:
    """The liveness answer, shared by the API's /healthz and the probe listener (app/probes.py)."""
    return Health(status="ok", version=vislex.__version__)


@router.get("/healthz", response_model=Health, operation_id="getHealth")
async def get_health() -> Health:
    """The process is alive."""
    return health()


@router.get("/readyz", operation_id="getReadiness", responses=responses(503))
async def get_readiness(runtime: RuntimeDep) -> JSONResponse:
    """200 when every required component has loaded and Redis answers PING now; 503 naming what is not."""
    return await asyncio.to_thread(readiness, runtime)


def readiness(runtime: Runtime) -> JSONResponse:
    """The readiness answer (blocking: pings Redis live), shared by the API's /readyz and the probe listener."""
    components = {n: s.as_dict() for n, s in runtime.components.items()}
    redis_state = runtime.components.get("redis")
    redis_down = None
    if redis_state is not None and redis_state.state == "ready":  # loaded once is not enough: ping it live
        redis_down = runtime.redis_unreachable_reason()
        if redis_down is not None:
            components["redis"] = {**components["redis"], "state": "unreachable", "reason": redis_down}
    # Judge readiness on the snapshot the body shows (a component may finish loading during the ping).
    ready = components_ready(components)
    if ready and redis_down is None:
        return JSONResponse({"status": "ready", "components": components})
    names = [n for n, s in components.items() if s["state"] != "ready" and s["required"]]
    body = {"error": {"code": "not_ready", "message": "still loading, failed or unreachable: " + ", ".join(names),
                      "detail": {"components": components}}}
    return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})


@router.get("/metrics", operation_id="getMetrics", response_class=Response)
async def get_metrics() -> Response:
    """Prometheus metrics (request and per-stage latency histograms, cache counters)."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/system", operation_id="getSystem", responses=responses())
async def get_system(runtime: RuntimeDep) -> dict:
    """Version, device, Redis and worker status, loaded spaces and models."""
    import torch

    redis_ok = False
    if runtime.redis is not None:
        try:
            redis_ok = bool(await asyncio.to_thread(runtime.redis.ping))
        except Exception:
            redis_ok = False
    workers = 0
    if redis_ok and "celery" in runtime.extras:
        workers = await asyncio.to_thread(live_workers, runtime.extras["celery"], 1.0)
    cuda = torch.cuda.is_available()
    info: dict = {
        "version": vislex.__version__,
        "device": "cuda" if cuda else "cpu",
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
        "uptime_s": round(time.time() - runtime.started_at, 1),
        "redis": {"reachable": redis_ok, "embedded": runtime.embedded_redis is not None
                  or runtime.settings.redis_embedded},
        "workers": workers,
        "components": {n: s.as_dict() for n, s in runtime.components.items()},
        "spaces": [],
        "models": {},
    }
    for attr in ("spaces", "vision", "retrieval"):
        obj = getattr(runtime, attr)
        if obj is not None and hasattr(obj, "describe"):
            described = obj.describe()
            if attr == "spaces":
                info["spaces"] = described
            else:
                info["models"][attr] = described
    return info
