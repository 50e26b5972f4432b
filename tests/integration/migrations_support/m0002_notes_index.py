"""Test migration: an index change (notes by user, newest first)."""

from rpger_ops.migrations.base import MigrationContext
from rpger_ops.migrations.helpers import drop_index_if_exists, ensure_indexes

VERSION = 2
NAME = "notes_index_by_created"


def up_mongo(ctx: MigrationContext) -> None:
    ensure_indexes(ctx, "notes", [([("userId", 1), ("created_at", -1)], False)])
    drop_index_if_exists(ctx, "notes", "userId_1")


def down_mongo(ctx: MigrationContext) -> None:
    ensure_indexes(ctx, "notes", [([("userId", 1)], False)])
    drop_index_if_exists(ctx, "notes", "userId_1_created_at_-1")
