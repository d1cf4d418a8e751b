"""A test-only job kind, ``sleepy``: one module, as every kind is (also loaded into workers with VISLEX_WORKER_IMPORTS).

Its body reports ``steps`` progress steps (``sleep_s`` apart, loss 1/step), then writes ``out`` (its artifact).
Params steer it: ``gate`` waits after step 1 on :data:`GATES` (in-process tests watch it running), ``fail``
raises (``invalid``: an InvalidInput, ``crash``: a RuntimeError), ``no_artifact`` returns without writing.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from services.errors import InvalidInput
from services.jobs.kinds import JobKind, register

GATES: dict[str, threading.Event] = {}
CALLS: list[dict[str, Any]] = []  # params of every run in this process, in order


def _validate(params: dict[str, Any]) -> dict[str, Any]:
    steps = params.get("steps", 3)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise InvalidInput("steps must be a positive integer", detail={"field": "steps"})
    return {**params, "steps": steps}


def _locate(params: dict[str, Any], job_id: str, data_dir: Path | None) -> dict[str, Any]:
    return {**params, "out": str(Path(data_dir or params["base"]) / "sleepy" / f"{job_id}.bin")}


def _run(params: dict[str, Any], progress) -> dict[str, Any]:
    CALLS.append(params)
    steps = params["steps"]
    for step in range(1, steps + 1):
        if params.get("fail") == "invalid" and step == 2:
            raise InvalidInput("step 2 refused the input", detail={"field": "steps", "step": step})
        if params.get("fail") == "crash" and step == 2:
            raise RuntimeError("boom at step 2")
        time.sleep(float(params.get("sleep_s", 0)))
        progress("work", step, steps, {"loss": 1.0 / step, "epoch": step})
        if step == 1 and params.get("gate"):
            GATES[params["gate"]].wait(10)
    out = Path(params["out"])
    if not params.get("no_artifact"):
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(f"trained {steps}".encode())
    return {"file": str(out), "steps": steps, "metrics": {"final_loss": 1.0 / steps, "diverged": float("nan")}}


SLEEPY = register(JobKind(name="sleepy", label="sleepy test", task_name="vislex.test_sleepy", run=_run,
                          id_prefix="s", default_queue="light", validate=_validate, locate=_locate,
                          artifact="file"))
