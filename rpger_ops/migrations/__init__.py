"""Ordered, versioned schema migrations across MongoDB, Chroma and Redis.

One module per migration (`mNNNN_<name>.py`: VERSION, NAME, up(ctx), optional
down(ctx)), listed in `registry.MIGRATIONS`. The runner is `rpger_ops.migrate`.
How to write one: docs/migrations.md.
"""

from rpger_ops.migrations.base import Migration, MigrationContext, Registry, RegistryError

__all__ = ["Migration", "MigrationContext", "Registry", "RegistryError"]
