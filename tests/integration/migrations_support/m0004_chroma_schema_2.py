"""Test migration: a Chroma collection metadata change (schema rpger-2, embedding model named)."""

from rpger_ops.migrations.base import MigrationContext
from rpger_ops.migrations.helpers import merge_chroma_metadata

VERSION = 4
NAME = "chroma_schema_2"
COLLECTIONS = ("monsters", "spells", "items", "npcs", "characters", "campaign_notes")


def up_chroma(ctx: MigrationContext) -> None:
    for name in COLLECTIONS:
        merge_chroma_metadata(ctx, name, {"schema": "rpger-2", "embedding_model": "text-embedding-3-small"})


def down_chroma(ctx: MigrationContext) -> None:
    for name in COLLECTIONS:
        merge_chroma_metadata(ctx, name, {"schema": "rpger-1"}, remove=("embedding_model",))
