"""The shipped migrations, in order. Add new ones at the end (see docs/migrations.md).

Explicit list, no import magic: what ships is exactly what is listed here.
"""

from __future__ import annotations

from types import ModuleType

from rpger_ops.migrations import m0001_rpger_schema, m0002_rpger_ownership
from rpger_ops.migrations.base import Registry

MIGRATIONS: list[ModuleType] = [
    m0001_rpger_schema,
    m0002_rpger_ownership,
]


def default_registry() -> Registry:
    """Built on each call, so tests that patch MIGRATIONS see their list."""
    return Registry(MIGRATIONS)


def latest_version() -> int:
    return default_registry().latest_version()
