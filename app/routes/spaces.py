"""Routes for the served word spaces: summary and monolingual neighbours."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.deps import SpaceDep
from app.errors import responses
from app.routes.translate import TranslatorDep
from app.schemas.spaces import NeighborsResponse, SpacesResponse

router = APIRouter(tags=["spaces"])


@router.get("/v1/spaces", response_model=SpacesResponse, responses=responses())
def list_spaces(spaces: SpaceDep) -> dict:
    """Loaded languages with vocabulary size, dimension, source, bytes and mappings (with versions)."""
    return {"languages": spaces.languages(), "pairs": spaces.pair_names(), "spaces": spaces.describe()}


@router.get("/v1/spaces/{lang}/neighbors", response_model=NeighborsResponse, responses=responses(404))
async def space_neighbors(
    translator: TranslatorDep,
    lang: Annotated[str, Path(min_length=1, max_length=64)],
    word: Annotated[str, Query(description="word whose neighbours to list")],
    k: Annotated[int, Query(ge=1, le=100)] = 10,
) -> dict:
    """Nearest words of ``word`` within its own space (cosine)."""
    return await asyncio.to_thread(translator.neighbors, lang, word, k)
