"""The schema version this code is at (the highest migration it ships)."""

from __future__ import annotations


def code_schema_version() -> int:
    """Highest migration version in `rpger_ops.migrations` (0 before any exist)."""
    from rpger_ops.migrations import registry

    return registry.latest_version()
