"""Request/response schemas for uCLIP training jobs and the active projection heads."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class UclipTrainingRequest(BaseModel):
    """Train uCLIP heads (methods.md, uCLIP): English queries, an image folder, unlabelled target-language texts.

    Paths are read by the worker (same filesystem as the API's data dir) and must lie under the directories
    ``POST /v1/spaces`` reads from (data dir, configured spaces' directories, ``VISLEX_SPACE_PATH_ROOTS``)
    or under ``VISLEX_IMAGES_DIR``. Types are strict: ``true`` is not a number, ``"5"`` is not an integer.
    """

    # allow_inf_nan=False: 1e308 is a number, but inf/NaN (and overflowing literals) are not.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    queries: list[str] = Field(default_factory=list, max_length=100_000, description="English query texts")
    queries_files: list[str] = Field(default_factory=list, max_length=64,
                                     description="text files, one query per line (.gz ok)")
    images_dir: str = Field(..., min_length=1, pattern="^/", description="folder of images: the image memory bank V")
    max_images: int | None = Field(None, ge=1)
    texts: list[str] = Field(default_factory=list, max_length=100_000,
                             description="unlabelled texts in the target languages (bank M)")
    texts_files: list[str] = Field(default_factory=list, max_length=64)
    max_texts_per_file: int | None = Field(None, ge=1)
    config: dict[str, Any] = Field(default_factory=dict, description="TrainConfig fields: epochs, batch_size, lr, "
                                   "retrieval_temperature, loss_temperature, noise_sigma, intra_weight, heads{...}")
    text_encoder: str | None = Field(None, description="default: the service's text_encoder setting")
    activate: bool = Field(True, description="make the result the served heads when it succeeds")
    time_limit_s: float | None = Field(None, gt=0, description="at most VISLEX_JOB_TIME_LIMIT_S")
    queue: Literal["light", "heavy"] = "heavy"
    force: bool = Field(False, description="run again even if an identical job exists")


class TrainingProgress(BaseModel):
    stage: str | None = None
    current: int | None = None
    total: int | None = None
    metrics: dict[str, Any] = {}


class UclipTrainingJob(BaseModel):
    id: str
    state: str
    cached: bool = False
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    attempt: int
    retries: int
    worker: str | None = None
    cancel_requested: bool = False
    time_limit_s: float | None = None
    inputs: dict[str, Any] = {}
    progress: TrainingProgress | None = None
    losses: list[float] = []
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    links: dict[str, str] = {}


class UclipTrainingList(BaseModel):
    jobs: list[UclipTrainingJob]
    total: int
    offset: int
    limit: int


class HeadsActivate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    checkpoint: str = Field(..., min_length=1, description="path of a heads checkpoint (e.g. from a training result)")


class HeadsInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    active: bool
    checkpoint: str | None = None
    reason: str | None = None
    parameters: int | None = None
    checkpoints: list[dict[str, Any]] = []
