"""Test-only migrations (never shipped) and helpers for the migration tests.

`registry(*extra)` builds a Registry of the shipped migrations plus chosen
test migrations, which the runner accepts through its `registry` argument.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

from rpger_ops.migrations import Registry
from rpger_ops.migrations.registry import MIGRATIONS
from rpger_ops.settings import Settings, settings_to_env

HERE = Path(__file__).parent


def load(name: str, path: Path | None = None) -> ModuleType:
    """Import a migration module from a file (each call re-reads the file)."""
    file = path or HERE / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"rpger_test_migrations.{file.stem}", file)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def registry(*extra: str | ModuleType) -> Registry:
    modules = [load(e) if isinstance(e, str) else e for e in extra]
    return Registry([*MIGRATIONS, *modules])


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment variables that load `settings` again (CLI, subprocesses, resources)."""
    return settings_to_env(settings)


def child_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings_env(settings)}
