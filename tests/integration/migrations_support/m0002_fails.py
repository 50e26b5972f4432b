"""Test migration that fails (after doing a little work)."""

from rpger_ops.migrations.base import MigrationContext

VERSION = 2
NAME = "always_fails"


def up_mongo(ctx: MigrationContext) -> None:
    ctx.mongo["scratch_marks"].insert_one({"ran": True})
    raise RuntimeError("boom in migration 2")
