"""Request/response schemas for alignment jobs and space registration."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

WordPair = tuple[str, str]


class AlignmentRequest(BaseModel):
    """Align space ``src`` onto ``tgt`` with ``method`` (e.g. ``walip+l1``)."""

    model_config = ConfigDict(extra="forbid")

    src: str = Field(..., min_length=1, max_length=64, description="source space name")
    tgt: str = Field(..., min_length=1, max_length=64, description="target space name")
    method: str = Field(..., min_length=1, max_length=100, examples=["walip+l1"])
    seed: Literal["identical", "dictionary", "fingerprints"] = "identical"
    dictionary: list[WordPair] | None = Field(None, description="seed pairs [source, target] (seed=dictionary)")
    options: dict[str, Any] = Field(default_factory=dict,
                                    description="method options; also time_limit_s and queue (light|heavy)")
    evaluate_with: list[WordPair] | None = Field(None, description="test pairs: BLI scores in the result")


class Progress(BaseModel):
    stage: str | None = None
    current: int | None = None
    total: int | None = None
    metrics: dict[str, Any] = {}
    elapsed_s: float | None = None
    eta_s: float | None = Field(None, description="estimated seconds left in the current stage")


class JobError(BaseModel):
    code: str
    message: str
    detail: dict[str, Any] = {}


class AlignmentResult(BaseModel):
    mapping_version: str | None = None
    mapping_sha256: str
    mapping_bytes: int | None = None
    dictionary_pairs: int
    pairs_used: int | None = None
    seed_pairs: int | None = None
    align_seconds: float | None = None
    serving: Literal["installed", "installing", "superseded", "failed", "not_served"] | None = Field(
        None, description="the mapping on the replica answering: installed (translations use it now), installing "
        "(in a moment; the pair answers 503 `installing` meanwhile, never 404), superseded (a later job's version "
        "is served), failed (its file could not be installed), not_served (a space of the pair is not served here)")


class AlignmentJob(BaseModel):
    id: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    src: str
    tgt: str
    method: str
    seed: str
    options: dict[str, Any] = {}
    time_limit_s: float | None = None
    queue: str | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    attempt: int
    retries: int
    worker: str | None = None
    cancel_requested: bool = False
    progress: Progress | None = None
    validation_losses: list[float | None] = []
    evaluation: dict[str, Any] | None = None
    error: JobError | None = None
    result: AlignmentResult | None = None
    cached: bool = Field(False, description="true when an identical job already existed (running or done)")
    links: dict[str, str] = {}


class AlignmentList(BaseModel):
    jobs: list[AlignmentJob]
    total: int
    offset: int
    limit: int


class DictionaryEntry(BaseModel):
    source: str
    target: str
    score: float


class AlignmentDictionary(BaseModel):
    job_id: str
    pairs: list[DictionaryEntry]


class SpaceRegistration(BaseModel):
    """Register a vectors file already on the server (absolute path), validated like the CLI does."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.]+$")
    path: str = Field(..., min_length=1)
    format: Literal["vec", "txt", "bin", "npy"] | None = None


class SpaceInfo(BaseModel):
    name: str
    path: str | None = None
    format: str | None = None
    source: str
    words: int | None = None
    dim: int | None = None
    fingerprint: str | None = None
    serving: bool = Field(False, description="the translate endpoints serve this space now")
