"""Response schemas of the word-space endpoints."""

from __future__ import annotations

from pydantic import BaseModel, Field


class MappingInfo(BaseModel):
    src: str
    tgt: str
    version: str
    method: str
    csls_ready: bool = Field(description="r_S of CSLS computed (else the first CSLS request computes it)")
    installed_at: float
    tables: dict[str, int] = Field(default_factory=dict, description="precomputed translation tables: "
                                   "retrieval -> k they cover (lookups with a larger k search)")


class SpaceSummary(BaseModel):
    lang: str
    vocab_size: int
    dim: int
    source: str = Field(description="'file:PATH' or 'encoder:NAME'")
    group: str | None = Field(None, description="shared embedding space (identity mappings within it)")
    dtype: str
    lowercased: bool
    fingerprint: str
    bytes: int = Field(description="vectors + index + mapped source vectors + translation tables")
    bytes_detail: dict[str, int]
    index_type: str
    mappings: list[MappingInfo] = Field(description="mappings from this space")


class SpacesResponse(BaseModel):
    languages: list[str]
    pairs: list[str]
    spaces: list[SpaceSummary]


class Neighbor(BaseModel):
    word: str
    score: float


class NeighborsResponse(BaseModel):
    word: str
    lang: str
    neighbors: list[Neighbor]
