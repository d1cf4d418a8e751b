"""Startup wiring for CLIP training jobs (issue 14): ``runtime.extras["clip_jobs"]``.

A :class:`services.jobs.kinds.KindJobs` of the CLIP kind (``services/jobs/clip_jobs.py``) on the runtime's
Redis, with its reaper thread (stopped before Redis is). Called by the jobs loader: it needs only Redis --
the API never loads a tower, workers do.

And the CLIP bootstrap (issue 17; the pure part is ``services/clip/bootstrap.py``): when the vision loader finds
no CLIP, :func:`bootstrap_default_clip` submits a compact-CLIP training job over the shared photos (content-
addressed: a restart finds the same job), a :class:`ClipBootstrap` thread follows it -- its progress is the
reason the CLIP components (``clip``, ``uclip``) give in 503s, /readyz and /v1/system -- and swaps the trained
checkpoint in as the default CLIP (vision and retrieval) without a restart; after a restart, a finished job's
checkpoint loads at once.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from app.runtime import ComponentState, ComponentUnavailable, Runtime
from services.errors import NotFound, Unavailable


def _clip_sender(runtime: Runtime):
    """How training jobs reach workers (tests replace this): the job service's Celery app, bound to this
    runtime's Redis (the module-level app keeps the broker pool of whichever URL used it first)."""
    from services.jobs.clip_jobs import CLIP_KIND
    from services.jobs.kinds import celery_sender

    return celery_sender(CLIP_KIND, getattr(runtime.jobs, "celery", None))


def load(runtime: Runtime) -> None:
    from services.jobs.clip_jobs import CLIP_KIND
    from services.jobs.kinds import KindJobs

    settings = runtime.settings
    jobs = KindJobs(CLIP_KIND, runtime.redis, time_limit_s=settings.job_time_limit_s,
                    heartbeat_s=settings.job_heartbeat_s, send_task=_clip_sender(runtime), data_dir=settings.data_dir)
    runtime.extras["clip_jobs"] = jobs
    runtime.extras.setdefault("on_close", []).append(jobs.close)
    jobs.start_monitor()


# ---------------------------------------------------------------- the CLIP bootstrap (issue 17)
# With no CLIP to load, train a compact one from the shared photos as a clip-training job and swap it in when
# the job succeeds (services/clip/bootstrap.py: where the data is, the recipe, what the 503s say).

log = logging.getLogger(__name__)


def _loader_done(state: ComponentState | None) -> bool:
    """The component's loader has finished (the runtime sets ``seconds`` last): its state is ours to update."""
    return state is None or state.seconds is not None


def _install(runtime: Runtime, source, checkpoint: str | Path) -> Any:
    """A VisionService whose default CLIP is the bootstrap's checkpoint, loaded, its image set embedded. With no
    ``VISLEX_IMAGES_DIR``, the bootstrap's photos are the fingerprint image set (the runtime's settings say so,
    so the thumbnails route serves them too)."""
    from app.wiring.vision import build_vision

    settings = runtime.settings
    images_dir = settings.images_dir or source.photos
    service = build_vision(settings, default_checkpoint=Path(checkpoint), images_dir=images_dir,
                           mobilenet_dir=source.mobilenet_dir)
    status = service.pool.load_all()
    if not any(s.get("available") for s in status.values()):
        reasons = "; ".join(f"{n}: {s['reason']}" for n, s in status.items() if s.get("available") is False)
        raise ComponentUnavailable(f"the bootstrap's CLIP {checkpoint} does not load: {reasons}")
    if settings.images_dir is None:
        runtime.settings = settings.model_copy(update={"images_dir": Path(images_dir)})
    if service.images_dir:
        service.warm_images()
    return service


def _checkpoint(view: dict[str, Any]) -> str | None:
    result = view.get("result") or {}
    path = (result.get("artifact") or {}).get("path") or result.get("checkpoint")
    return path if path and Path(path).is_file() else None


class ClipBootstrap:
    """Follows the bootstrap's training job: its progress is the CLIP components' reason (503s, /readyz,
    /v1/system); when it succeeds, its checkpoint becomes the default CLIP and retrieval is rebuilt on it."""

    def __init__(self, runtime: Runtime, jobs: Any, plan: Any, view: dict[str, Any]):
        self.runtime, self.jobs, self.plan, self.view = runtime, jobs, plan, view
        self.interval = min(1.0, float(runtime.settings.job_heartbeat_s))
        self._image_pass, self._last_done = 1, 0  # a concatenated image tower encodes the photos once per part
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def reason(self) -> str:
        from services.clip.bootstrap import image_passes, job_reason

        passes = image_passes(self.plan.params["image_tower"])
        return job_reason(self.view, self.plan.source.photos, (min(self._image_pass, passes), passes))

    def _count_passes(self) -> None:
        p = self.view.get("progress") or {}
        if p.get("stage") == "encode_images" and isinstance(p.get("current"), int):
            if p["current"] < self._last_done:
                self._image_pass += 1
            self._last_done = p["current"]

    def status(self) -> dict[str, Any]:
        from services.clip.bootstrap import job_status

        return {**job_status(self.view), "photos": str(self.plan.source.photos)}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vislex-clip-bootstrap", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _report(self, state: str) -> None:
        components = self.runtime.components
        for name, reason in (("clip", self.reason), ("uclip", f"CLIP encoder unavailable: {self.reason}")):
            comp = components.get(name)
            if comp is not None and comp.state != "ready":
                comp.reason, comp.progress, comp.state = reason, {"bootstrap": self.status()}, state

    def _run(self) -> None:
        comps = self.runtime.components
        while not (_loader_done(comps.get("clip")) and _loader_done(comps.get("uclip"))):
            if self._stop.wait(self.interval / 4):
                return
        while not self._stop.is_set():
            try:
                self.view = self.jobs.view(self.view["id"])
            except NotFound:  # the job's record is gone (Redis flushed): submit it again
                self.view, _ = self.jobs.submit(self.plan.params)
            except Exception:  # a Redis blip: try again next time
                log.warning("CLIP bootstrap: job view failed", exc_info=True)
                self._stop.wait(self.interval)
                continue
            self._count_passes()
            state = self.view["state"]
            if state in ("queued", "running"):
                self._report("loading")
            elif state == "succeeded" and _checkpoint(self.view):
                self._report("loading")
                self._swap_in(_checkpoint(self.view))
                return
            else:
                self._report("unavailable")
                log.warning("CLIP bootstrap: training job ended without a CLIP",
                            extra={"job": self.view["id"], "state": state})
                return
            self._stop.wait(self.interval)

    def _swap_in(self, checkpoint: str) -> None:
        from app.wiring.retrieval import build_service

        runtime, clip = self.runtime, self.runtime.components.get("clip")
        try:
            service = _install(runtime, self.plan.source, checkpoint)
        except Exception as exc:  # reported, never raised: the API keeps serving everything else
            if clip is not None:
                clip.state, clip.reason = "unavailable", str(exc) if isinstance(exc, (ComponentUnavailable, Unavailable)) \
                    else f"{type(exc).__name__}: {exc}"
            log.exception("CLIP bootstrap: the trained CLIP does not load")
            return
        runtime.vision = service
        if clip is not None:
            clip.progress = {"bootstrap": {**self.status(), "checkpoint": checkpoint}}
            clip.reason, clip.state = None, "ready"
        log.info("CLIP bootstrap: the trained CLIP serves", extra={"job": self.view["id"], "checkpoint": checkpoint})
        uclip = runtime.components.get("uclip")
        if uclip is None:
            return
        try:
            runtime.retrieval = build_service(runtime)
            uclip.reason, uclip.state = None, "ready"
        except ComponentUnavailable as exc:
            uclip.state, uclip.reason = "unavailable", str(exc)
        except Exception as exc:
            uclip.state, uclip.reason = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("CLIP bootstrap: retrieval does not load on the trained CLIP")
        uclip.progress = None


def bootstrap_default_clip(runtime: Runtime, reasons: str) -> Any:
    """Called by the vision loader when no CLIP loads. Returns a VisionService on an earlier bootstrap job's
    checkpoint (a restart after it finished); otherwise raises ComponentUnavailable with what the 503s say --
    the training job's progress (followed in a thread, swapped in when done), or which setting would fix it.
    None when the bootstrap does not apply (a checkpoint is configured: its own error stands)."""
    from services.clip.bootstrap import plan as make_plan

    settings = runtime.settings
    if settings.clip_checkpoint is not None:
        return None
    plan = make_plan(settings.clip_bootstrap, settings.shared_data_dir, settings.mobilenet_dir,
                     recipe=_recipe())
    if plan.action != "train":
        raise ComponentUnavailable(f"{plan.reason}; {reasons}" if reasons else plan.reason)
    jobs = runtime.extras.get("clip_jobs")
    if jobs is None:
        raise ComponentUnavailable(f"no CLIP: the CLIP bootstrap needs the job service, which did not load; {reasons}")
    view, _ = jobs.submit(plan.params)  # content-addressed: a restart finds the job it submitted before
    comp = runtime.components.get("clip")
    if view["state"] == "succeeded" and not _checkpoint(view):
        # Its checkpoint is gone (a data folder cleaned by hand): train again under a new id.
        view, _ = jobs.submit(plan.params, force=True)
    bootstrap = ClipBootstrap(runtime, jobs, plan, view)
    runtime.extras["clip_bootstrap"] = bootstrap
    if view["state"] == "succeeded":
        service = _install(runtime, plan.source, _checkpoint(view))
        if comp is not None:
            comp.progress = {"bootstrap": {**bootstrap.status(), "checkpoint": _checkpoint(view)}}
        log.info("CLIP bootstrap: serving the CLIP an earlier job trained", extra={"job": view["id"]})
        return service
    if comp is not None:
        comp.progress = {"bootstrap": bootstrap.status()}
    runtime.extras.setdefault("on_close", []).append(bootstrap.close)
    bootstrap.start()
    log.info("CLIP bootstrap: training the default CLIP", extra={"job": view["id"], "photos": str(plan.source.photos)})
    raise ComponentUnavailable(bootstrap.reason)


def _recipe():
    """The bootstrap's recipe (tests swap in tiny towers)."""
    from services.clip.bootstrap import DEFAULT_RECIPE

    return DEFAULT_RECIPE
