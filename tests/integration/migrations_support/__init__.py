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
from rpger_ops.settings import Settings

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
    """The environment variables that load `settings` again (for CLI and subprocess runs)."""
    env = {
        "MONGODB_URI": settings.mongodb_uri.get_secret_value(),
        "MONGODB_DATABASE": settings.mongodb_database,
        "REDIS_URL": settings.redis_url.get_secret_value(),
        "CHROMA_HOST": settings.chroma_host,
        "CHROMA_PORT": str(settings.chroma_port),
        "CHROMA_DATABASE": settings.chroma_database,
        "RPGER_BACKUP_DIR": str(settings.backup_dir),
        "RPGER_STACK_ID": settings.stack_id,
    }
    if settings.redis_password is not None:
        env["REDIS_PASSWORD"] = settings.redis_password.get_secret_value()
    return env


def child_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings_env(settings)}
