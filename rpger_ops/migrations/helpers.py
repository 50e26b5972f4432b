"""Building blocks for migrations: batched, resumable data changes.

Each helper is safe to re-run after being killed midway: it selects only
the documents still in the old shape, so a re-run continues where the last
one stopped and never touches a document twice.
"""

from __future__ import annotations

from typing import Any

from rpger_ops.migrations.base import MigrationContext

DEFAULT_BATCH = 500


def rename_field(ctx: MigrationContext, collection: str, old: str, new: str,
                 batch_size: int = DEFAULT_BATCH) -> int:
    """Rename `old` to `new` in every document of `collection`, one batch per
    `update_many`; returns how many documents this call changed.

    Resumable: each batch selects documents where `old` still exists. A
    document that already holds `new` but also `old` would be a conflict for
    `$rename` (it overwrites `new`), which is what a half-applied single
    document cannot produce: `$rename` is atomic per document.
    """
    coll = ctx.mongo[collection]
    pending: dict[str, Any] = {old: {"$exists": True}}
    total = coll.count_documents(pending)
    done = 0
    ctx.progress(f"{collection}: rename {old} -> {new}", 0, total)
    while True:
        ids = [d["_id"] for d in coll.find(pending, {"_id": 1}).limit(batch_size)]
        if not ids:
            break
        result = coll.update_many({"_id": {"$in": ids}, **pending}, {"$rename": {old: new}})
        done += result.modified_count
        ctx.progress(f"{collection}: rename {old} -> {new}", done, total)
    return done


def ensure_indexes(ctx: MigrationContext, collection: str,
                   indexes: list[tuple[list[tuple[str, int]], bool]]) -> list[str]:
    """Create the indexes (idempotent: same keys and options are a no-op); returns their names."""
    coll = ctx.mongo[collection]
    return [coll.create_index(keys, unique=unique) for keys, unique in indexes]


def drop_index_if_exists(ctx: MigrationContext, collection: str, name: str) -> bool:
    coll = ctx.mongo[collection]
    if name not in {ix["name"] for ix in coll.list_indexes()}:
        return False
    coll.drop_index(name)
    return True


def merge_chroma_metadata(ctx: MigrationContext, collection: str, changes: dict[str, Any],
                          remove: tuple[str, ...] = ()) -> dict[str, Any]:
    """Update a Chroma collection's metadata, keeping keys not mentioned; returns the new metadata."""
    coll = ctx.chroma.get_collection(collection, embedding_function=None)  # type: ignore[arg-type]
    metadata = {k: v for k, v in (coll.metadata or {}).items() if k not in remove}
    metadata.update(changes)
    if metadata != (coll.metadata or {}):
        coll.modify(metadata=metadata)
    return metadata
