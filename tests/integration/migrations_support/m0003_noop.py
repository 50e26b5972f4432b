"""Test migration that does nothing (so a later version exists): a combined one, for all
three databases at once (a plain `up`)."""

from rpger_ops.migrations.base import MigrationContext

VERSION = 3
NAME = "noop"


def up(ctx: MigrationContext) -> None:
    return None


def down(ctx: MigrationContext) -> None:
    return None
