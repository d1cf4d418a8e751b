"""Request and response schemas of the translate endpoints."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.errors import ErrorInfo

Retrieval = Literal["nn", "csls"]
EXCLUDE_IDENTICAL = ("drop the query's own string from the answers (for false friends such as en 'pain' -> fr "
                     "'pain'); by default a string that is a word of both languages is a valid answer (table, taxi)")


class Translation(BaseModel):
    word: str
    score: float = Field(description="cosine (nn) or CSLS ranking score 2cos(x,y) - r_S(y) (csls)")


class TranslateResponse(BaseModel):
    word: str
    src: str
    tgt: str
    retrieval: Retrieval
    exclude_identical: bool
    mapping_version: str
    cached: bool
    translations: list[Translation]


class TranslateBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field ("retreival") is a 422, never ignored
    words: list[str] = Field(description="words to translate; over Settings.max_batch_words gives 413")
    src: str = Field(min_length=1, max_length=64)
    tgt: str = Field(min_length=1, max_length=64)
    k: int = Field(5, ge=1, le=100)
    retrieval: Retrieval = "csls"
    exclude_identical: bool = Field(False, description=EXCLUDE_IDENTICAL)


class BatchItem(BaseModel):
    word: str
    cached: bool | None = None
    translations: list[Translation] | None = None
    error: ErrorInfo | None = Field(None, description="set instead of translations for a bad or unknown word")


class TranslateBatchResponse(BaseModel):
    src: str
    tgt: str
    retrieval: Retrieval
    k: int
    exclude_identical: bool
    mapping_version: str
    results: list[BatchItem] = Field(description="one entry per input word, in input order")


class TranslateQuery(BaseModel):
    """Query of ``GET /v1/translate``, validated in one step (app/query.py: the hot path)."""

    word: str = Field(min_length=1, max_length=100, pattern=r"\S",
                      description="word to translate (NFC; case-folded for lowercased vocabularies); at most "
                      "VISLEX_MAX_WORD_LENGTH characters (default 100)")
    src: str = Field(min_length=1, max_length=64, description="source language")
    tgt: str = Field(min_length=1, max_length=64, description="target language")
    k: int = Field(5, ge=1, le=100, description="number of translations")
    retrieval: Retrieval = Field("csls", description="nn (cosine) or csls")
    exclude_identical: bool = Field(False, description=EXCLUDE_IDENTICAL)
