"""Database engines, one module per database behind `base.Engine`.

Engines register explicitly here (no import magic).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rpger_ops.engines.base import ENGINE_NAMES, Engine, EngineName

if TYPE_CHECKING:
    from rpger_ops.settings import Settings


def build_engine(name: EngineName, settings: Settings) -> Engine:
    if name == "mongo":
        from rpger_ops.engines.mongo import MongoEngine

        return MongoEngine(settings)
    if name == "redis":
        from rpger_ops.engines.redis import RedisEngine

        return RedisEngine(settings)
    if name == "chroma":
        from rpger_ops.engines.chroma import ChromaEngine

        return ChromaEngine(settings)
    raise ValueError(f"unknown engine {name!r}; expected one of {', '.join(ENGINE_NAMES)}")


def build_engines(settings: Settings) -> dict[EngineName, Engine]:
    return {name: build_engine(name, settings) for name in ENGINE_NAMES}


__all__ = ["ENGINE_NAMES", "Engine", "EngineName", "build_engine", "build_engines"]
