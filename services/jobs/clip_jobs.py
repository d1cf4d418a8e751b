"""CLIP training jobs (issue 14): the job kind that trains a compact CLIP from pretrained towers over HTTP.

Its body is the training core's :func:`services.clip.training.run_clip_training` (locked image and text
towers, trained projection heads, symmetric InfoNCE -- the LiT recipe; see that module), called with the
shared progress callback, which stores each report (stage, epoch, metrics, the loss curve) and stops the
run on cancel or past the time limit. Params are validated at submission by
:func:`services.clip.training.validate_train_params` (the route has already checked every path against the
allowed roots) and form the content address; the worker also gets where to write: ``out_dir``
(``<data dir>/clip/<job id>``) and ``cache_dir`` (``<data dir>/cache/towers``, tower outputs shared by every
job, so retraining does not re-encode). The result's ``checkpoint`` is the job's artifact: hashed when the
job succeeds and offered by ``GET /v1/clip/trainings/{id}/checkpoint``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from services.errors import Unavailable
from services.jobs.execution import ProgressFn
from services.jobs.kinds import JobKind, register

CLIP_TASK = "vislex.clip_train"
# What a job view shows of its params (the rest -- where it writes -- is the server's business).
INPUT_FIELDS = ("images_dir", "captions", "image_tower", "text_tower", "captions_language", "extra_captions",
                "translations")
# Request fields the training core folds into its ``config`` (hyper-parameters, defaults filled in).
CONFIG_FIELDS = ("head", "epochs", "val_fraction", "seed", "batch_size", "lr", "embed_dim", "patience", "centring",
                 "caption_weights")
# Stages in which a report's ``current`` counts epochs (when the metrics do not name the epoch themselves).
EPOCH_STAGES = ("train", "training", "epoch")


def _training() -> Any:
    """The training core (``services.clip.training``), imported when first needed."""
    try:
        from services.clip import training
    except ImportError as exc:
        raise Unavailable(f"CLIP training is not available here: {exc}", detail={"component": "clip_training"}) from exc
    return training


def _validate(params: dict[str, Any]) -> dict[str, Any]:
    """The training core's normalised params, with every hyper-parameter in ``config`` only: one content
    address whether a default was left out or given explicitly."""
    out = dict(_training().validate_train_params(params))
    for key in CONFIG_FIELDS:
        out.pop(key, None)
    return out


def _locate(params: dict[str, Any], job_id: str, data_dir: Path | None) -> dict[str, Any]:
    base = Path(data_dir) if data_dir is not None else Path(os.environ.get("VISLEX_DATA_DIR", ".vislex")).resolve()
    return {**params, "out_dir": str(base / "clip" / job_id), "cache_dir": str(base / "cache" / "towers")}


def _train(params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
    return _training().run_clip_training(params, progress)


def _inputs(params: dict[str, Any]) -> dict[str, Any]:
    config = params.get("config") or {}
    return {**{k: params.get(k) for k in INPUT_FIELDS},
            **{k: config.get(k) for k in ("head", "val_fraction", "seed", "epochs")}, "config": config}


def _progress(p: dict[str, Any]) -> dict[str, Any]:
    metrics = p.get("metrics") or {}
    epoch = metrics.get("epoch", p.get("current") if p.get("stage") in EPOCH_STAGES else None)
    numeric = isinstance(epoch, (int, float)) and not isinstance(epoch, bool)
    return {"epoch": int(epoch) if numeric else None}


CLIP_KIND = register(JobKind(name="clip", label="CLIP training", task_name=CLIP_TASK, run=_train, id_prefix="c",
                             default_queue="heavy", validate=_validate, locate=_locate, inputs=_inputs,
                             progress_view=_progress, artifact="checkpoint"))
