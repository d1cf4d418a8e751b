"""``Annotated`` dependency aliases: routes receive objects built once in the lifespan."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from app.runtime import Runtime
from app.settings import Settings


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def _component(name: str, attr: str):
    def dependency(request: Request) -> Any:
        runtime: Runtime = request.app.state.runtime
        runtime.require(name)
        return getattr(runtime, attr)

    dependency.__name__ = f"get_{attr}"
    return dependency


def get_settings(request: Request) -> Settings:
    return request.app.state.runtime.settings


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
SpaceDep = Annotated[Any, Depends(_component("spaces", "spaces"))]
JobsDep = Annotated[Any, Depends(_component("jobs", "jobs"))]
VisionDep = Annotated[Any, Depends(_component("clip", "vision"))]
RetrievalDep = Annotated[Any, Depends(_component("uclip", "retrieval"))]
