"""Test migration: rename notes.text -> notes.body over existing documents, in batches."""

from rpger_ops.migrations.base import MigrationContext
from rpger_ops.migrations.helpers import rename_field

VERSION = 3
NAME = "notes_text_to_body"
BATCH = 200


def up(ctx: MigrationContext) -> None:
    rename_field(ctx, "notes", "text", "body", batch_size=BATCH)


def down(ctx: MigrationContext) -> None:
    rename_field(ctx, "notes", "body", "text", batch_size=BATCH)
