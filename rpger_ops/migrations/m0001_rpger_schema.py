"""The RPGer schema as the app creates it (shared/rpger-client.md).

One step per database. MongoDB: the app's collections with their indexes
(unique ones included) and `$jsonSchema` validators where the server supports
them (FerretDB does not: reported as a note, not a failure). Chroma: the six
embedding collections, cosine distance, RPGer metadata. Redis: key-schema
version 1 is recorded in its ledger; the keys themselves need no setup.

Idempotent on existing data: existing collections keep their documents,
existing indexes with the same keys are left alone, existing Chroma
collections keep their records and get missing metadata keys added.

The definitions are written out here rather than imported, so that what
version 1 means can only change together with this file's checksum.

FORMER_CHECKSUMS: the 0.1 file, with one combined `up`/`down`; this file
splits the same work into per-database steps.
"""

from __future__ import annotations

from typing import Any

from pymongo.errors import OperationFailure

from rpger_ops.migrations.base import MigrationContext
from rpger_ops.migrations.helpers import ensure_indexes, merge_chroma_metadata

VERSION = 1
NAME = "rpger_schema"
FORMER_CHECKSUMS = ("475c7c420ba4bc072dffd7bfc5bf73c73507bce82bea13f12e98b713e1463d9f",)

# collection -> [(keys, unique)]
MONGO_INDEXES: dict[str, list[tuple[list[tuple[str, int]], bool]]] = {
    "users": [([("username", 1)], True), ([("email", 1)], True)],
    "dashboards": [([("userId", 1), ("name", 1)], True)],
    "widgets": [([("userId", 1), ("widgetId", 1)], True)],
    "campaigns": [([("userId", 1), ("name", 1)], True)],
    "characters": [([("name", 1), ("userId", 1)], True)],
    "notes": [([("userId", 1)], False), ([("userId", 1), ("tags", 1)], False)],
    "monsters": [([("name", 1)], True)],
    "spells": [([("name", 1)], True)],
    "items": [([("name", 1)], True)],
    "npcs": [([("name", 1)], True)],
}

REQUIRED_FIELDS: dict[str, list[str]] = {
    "users": ["username", "email"],
    "dashboards": ["userId", "name"],
    "widgets": ["userId", "widgetId"],
    "campaigns": ["userId", "name"],
    "characters": ["userId", "name"],
    "notes": ["userId"],
    "monsters": ["name"],
    "spells": ["name"],
    "items": ["name"],
    "npcs": ["name"],
}

CHROMA_COLLECTIONS = ("monsters", "spells", "items", "npcs", "characters", "campaign_notes")
EMBEDDING_DIM = 1536

# Server error code for "not implemented" (FerretDB for validators and collMod).
NOT_IMPLEMENTED = 238


def validator(collection: str) -> dict[str, Any]:
    required = REQUIRED_FIELDS[collection]
    return {"$jsonSchema": {"bsonType": "object", "required": required,
                            "properties": {k: {"bsonType": ["string", "objectId"]} for k in required}}}


def chroma_metadata(collection: str) -> dict[str, Any]:
    return {"rpger_entity": collection, "dimension": EMBEDDING_DIM, "schema": "rpger-1"}


def up_mongo(ctx: MigrationContext) -> None:
    _mongo_collections(ctx)


def up_chroma(ctx: MigrationContext) -> None:
    _chroma_collections(ctx)


def up_redis(ctx: MigrationContext) -> None:
    """Key schema 1: RPGer's keys need no setup; the ledger records the version."""


def down_redis(ctx: MigrationContext) -> None:
    """Nothing to undo."""


def down_mongo(ctx: MigrationContext) -> None:
    """Version 0 is "no schema": drop only what is still empty, never user data."""
    db = ctx.mongo
    for name in MONGO_INDEXES:
        if name in db.list_collection_names() and db[name].estimated_document_count() == 0:
            db.drop_collection(name)
        elif name in db.list_collection_names():
            ctx.note(f"mongo {name}: kept (holds documents)")


def down_chroma(ctx: MigrationContext) -> None:
    """Drop only what is still empty, never user data."""
    for name in CHROMA_COLLECTIONS:
        existing = {c.name for c in ctx.chroma.list_collections()}
        if name not in existing:
            continue
        if ctx.chroma.get_collection(name, embedding_function=None).count() == 0:  # type: ignore[arg-type]
            ctx.chroma.delete_collection(name)
        else:
            ctx.note(f"chroma {name}: kept (holds records)")


def _mongo_collections(ctx: MigrationContext) -> None:
    db = ctx.mongo
    existing = set(db.list_collection_names())
    validators_supported = True
    for i, (name, indexes) in enumerate(MONGO_INDEXES.items()):
        ctx.progress("mongo collections", i, len(MONGO_INDEXES))
        if validators_supported:
            validators_supported = _apply_validator(ctx, name, exists=name in existing)
        if name not in existing and name not in db.list_collection_names():
            db.create_collection(name)
        ensure_indexes(ctx, name, indexes)
    if not validators_supported:
        ctx.note("mongo: $jsonSchema validators not applied: the server does not support them "
                 "(FerretDB); collections and indexes were created")


def _apply_validator(ctx: MigrationContext, name: str, exists: bool) -> bool:
    """Create the collection with its validator, or set it with collMod; False when unsupported."""
    db = ctx.mongo
    try:
        if exists:
            db.command("collMod", name, validator=validator(name), validationLevel="moderate")
        else:
            db.create_collection(name, validator=validator(name), validationLevel="moderate")
    except OperationFailure as exc:
        if exc.code == NOT_IMPLEMENTED or ctx.mongo_is_ferretdb:
            return False
        raise
    return True


def _chroma_collections(ctx: MigrationContext) -> None:
    client = ctx.chroma
    for i, name in enumerate(CHROMA_COLLECTIONS):
        ctx.progress("chroma collections", i, len(CHROMA_COLLECTIONS))
        coll = client.get_or_create_collection(
            name, metadata=chroma_metadata(name),
            configuration={"hnsw": {"space": "cosine"}},
            embedding_function=None,
        )
        space = _space_of(coll)
        if space not in (None, "cosine"):
            # The distance of an existing collection can't be changed in place.
            ctx.note(f"chroma {name}: existing collection uses {space} distance, not cosine; "
                     "re-create it (re-embed) to switch")
        missing = {k: v for k, v in chroma_metadata(name).items() if k not in (coll.metadata or {})}
        if missing:
            merge_chroma_metadata(ctx, name, missing)


def _space_of(coll: Any) -> str | None:
    config = getattr(coll, "configuration_json", None) or getattr(coll, "configuration", None) or {}
    hnsw = config.get("hnsw") if isinstance(config, dict) else None
    if isinstance(hnsw, dict) and hnsw.get("space"):
        return str(hnsw["space"])
    return None
