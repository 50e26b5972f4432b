"""Resources: the seam between Dagster and the plain code.

Settings are read from the environment when a run (or sensor tick) starts, so
the UI, the daemon, launched run containers and `dagster job execute` all see
the same configuration, and secrets stay in `*_FILE` files.

`PipelineResource` builds the backup pipeline once per step process
(`setup_for_execution`) and hands the same object to every asset, check and
op; tests inject another `pipeline` resource (e.g. one built on in-memory
stores and engines) to exercise the wiring without servers.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from rpger_ops.pipeline import BackupPipeline
from rpger_ops.settings import ConfigError, Settings, load_settings


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


class PipelineResource(dg.ConfigurableResource):  # type: ignore[misc]
    """The backup pipeline (local store, off-site store, engines, alerter) of this run."""

    _pipeline: BackupPipeline | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._pipeline = BackupPipeline(_settings())

    def pipeline(self) -> BackupPipeline:
        if self._pipeline is None:  # used outside a run (e.g. called directly in a test)
            self._pipeline = BackupPipeline(_settings())
        return self._pipeline


def resource_defs() -> dict[str, Any]:
    return {"stack": StackResource(), "pipeline": PipelineResource()}
