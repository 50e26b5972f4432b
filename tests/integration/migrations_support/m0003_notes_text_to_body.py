"""Test migration: rename notes.text -> notes.body over existing documents, in batches.

The strategy comes from RPGER_TEST_RENAME_STRATEGY (default auto) so one test
can drive both the in-place and the copy strategy, also in a child process.
"""

import os

from rpger_ops.migrations.base import MigrationContext
from rpger_ops.migrations.helpers import rename_field

VERSION = 3
NAME = "notes_text_to_body"
BATCH = 200


def _strategy():  # type: ignore[no-untyped-def]
    return os.environ.get("RPGER_TEST_RENAME_STRATEGY", "auto")


def up_mongo(ctx: MigrationContext) -> None:
    rename_field(ctx, "notes", "text", "body", batch_size=BATCH, strategy=_strategy())


def down_mongo(ctx: MigrationContext) -> None:
    rename_field(ctx, "notes", "body", "text", batch_size=BATCH, strategy=_strategy())
