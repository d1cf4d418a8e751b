"""Globetrotter training jobs: the job kind that trains sentence heads over HTTP (services/jobs/kinds.py).

The body is :func:`services.sentences.pipeline.run_globetrotter_training` with the shared progress callback
(progress, loss curve, cancel, time limit). Params are validated at submission (the route has checked every
path against the allowed roots) and are the content address: identical trainings share one job. The worker
also gets where to write: ``out_dir`` = ``<data dir>/sentences/models`` (so the checkpoint is a name
``PUT /v1/sentences/model`` and ``--model`` accept), ``cache_dir`` = ``<data dir>/cache/towers`` (tower outputs
shared with CLIP training) and ``data_dir`` (an ``activate`` job writes the sentence-model pointer there; every
API on that data dir swaps within a second). The result's ``checkpoint`` is the job's artifact.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from services.jobs.execution import ProgressFn
from services.jobs.kinds import JobKind, register

GLOBETROTTER_TASK = "vislex.globetrotter_train"
INPUT_FIELDS = ("images_dir", "captions", "image_tower", "text_towers", "dev", "config", "activate")


def _validate(params: dict[str, Any]) -> dict[str, Any]:
    from services.sentences.pipeline import validate_params

    return validate_params(params)


def _locate(params: dict[str, Any], job_id: str, data_dir: Path | None) -> dict[str, Any]:
    base = Path(data_dir) if data_dir is not None else Path(os.environ.get("VISLEX_DATA_DIR", ".vislex")).resolve()
    return {**params, "out_dir": str(base / "sentences" / "models"), "cache_dir": str(base / "cache" / "towers"),
            "data_dir": str(base)}


def _train(params: dict[str, Any], progress: ProgressFn) -> dict[str, Any]:
    from services.sentences.pipeline import run_globetrotter_training

    return run_globetrotter_training(params, progress)


def _inputs(params: dict[str, Any]) -> dict[str, Any]:
    return {k: params.get(k) for k in INPUT_FIELDS}


def _progress(p: dict[str, Any]) -> dict[str, Any]:
    current = p.get("current") if p.get("stage") == "train" else None
    return {"epoch": int(current) if isinstance(current, int) and not isinstance(current, bool) else None}


GLOBETROTTER_KIND = register(JobKind(name="globetrotter", label="Globetrotter training", task_name=GLOBETROTTER_TASK,
                                     run=_train, id_prefix="g", default_queue="heavy", validate=_validate,
                                     locate=_locate, inputs=_inputs, progress_view=_progress, artifact="checkpoint"))
