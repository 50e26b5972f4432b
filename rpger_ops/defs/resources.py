"""Resources: thin wrappers that build engines and the off-site store from Settings.

Settings are read from the environment when a run (or sensor tick) starts, so
the UI, the daemon, launched run containers and `dagster job execute` all see
the same configuration, and secrets stay in `*_FILE` files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from rpger_ops.engines import build_engine
from rpger_ops.engines.base import Engine, EngineName
from rpger_ops.settings import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from rpger_ops.offsite import OffsiteStore


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        # Failure with a readable message instead of a pydantic traceback.
        raise dg.Failure(description=str(exc)) from None


class StackResource(dg.ConfigurableResource):  # type: ignore[misc]
    """The stack's Settings (environment, `.env`, `*_FILE` secrets)."""

    def settings(self) -> Settings:
        return _settings()


class EngineResource(dg.ConfigurableResource):  # type: ignore[misc]
    """One database engine (`mongo`, `redis` or `chroma`)."""

    engine_name: str

    def engine(self) -> Engine:
        name: EngineName = self.engine_name  # type: ignore[assignment]
        return build_engine(name, _settings())


class OffsiteResource(dg.ConfigurableResource):  # type: ignore[misc]
    """The S3-compatible off-site store, or None when RPGER_S3_ENDPOINT is unset."""

    def store(self) -> OffsiteStore | None:
        settings = _settings()
        if not settings.offsite_enabled:
            return None
        from rpger_ops.offsite import OffsiteStore

        return OffsiteStore.from_settings(settings)


def resource_defs() -> dict[str, object]:
    return {
        "stack": StackResource(),
        "mongo": EngineResource(engine_name="mongo"),
        "redis": EngineResource(engine_name="redis"),
        "chroma": EngineResource(engine_name="chroma"),
        "offsite": OffsiteResource(),
    }
