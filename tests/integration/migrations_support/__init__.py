"""Test-only migrations (never shipped) and helpers for the migration tests.

`registry(*extra)` builds a Registry of migration 0001 plus chosen test
migrations (numbered from 2), which the runner accepts through its `registry`
argument. The runner's tests build on 0001 alone so that shipping a new
migration does not renumber them; shipped migrations have their own tests.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

from rpger_ops.migrations import Registry, m0001_rpger_schema
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


# What the runner's tests build on (see the module docstring).
BASE: list[ModuleType] = [m0001_rpger_schema]


def registry(*extra: str | ModuleType) -> Registry:
    modules = [load(e) if isinstance(e, str) else e for e in extra]
    return Registry([*BASE, *modules])


def add_ledger_entry(settings: Settings, db: str, version: int, name: str) -> None:
    """A step from newer code in one database's ledger (its stack marker)."""
    from dataclasses import replace

    from rpger_ops.engines import build_engine
    from rpger_ops.engines.base import LedgerEntry

    engine = build_engine(db, settings)  # type: ignore[arg-type]
    try:
        marker = engine.read_marker()
        assert marker is not None and marker.migrations is not None
        engine.write_marker(replace(marker, migrations=(*marker.migrations, LedgerEntry(version, name, "f"))))
    finally:
        engine.close()


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment variables that load `settings` again (CLI, subprocesses, resources)."""
    return settings_to_env(settings)


def child_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings_env(settings)}
