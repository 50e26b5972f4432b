"""Building blocks for migrations: batched, resumable data changes.

Each helper is safe to re-run after being killed midway: it selects only
the work still left (documents still in the old shape, or not yet copied),
so a re-run continues where the last one stopped and never redoes a document.
"""

from __future__ import annotations

from typing import Any, Literal

from pymongo.errors import BulkWriteError

from rpger_ops.migrations.base import MigrationContext

DEFAULT_BATCH = 500
DUPLICATE_KEY = 11000
# Index options carried over when a collection is rebuilt.
INDEX_OPTIONS = ("unique", "sparse", "expireAfterSeconds", "partialFilterExpression", "collation", "hidden")


RenameStrategy = Literal["auto", "in_place", "copy"]


def rename_field(ctx: MigrationContext, collection: str, old: str, new: str,
                 batch_size: int = DEFAULT_BATCH, strategy: RenameStrategy = "auto") -> int:
    """Rename `old` to `new` in every document of `collection`; returns how many
    documents this call renamed (a resumed run counts only what was left).

    - `in_place` (MongoDB): one `update_many` with `$rename` per batch of
      documents that still have `old`; online, each document atomic.
    - `copy` (FerretDB, where every updated document costs a scan of the
      collection, so 100k in-place renames take hours): copy the collection in
      batches, renamed, into a staging collection, then swap it in. Run it with
      the app stopped: writes to the collection during the copy are lost.
    - `auto`: `copy` on FerretDB, `in_place` elsewhere.
    """
    if strategy == "auto":
        strategy = "copy" if ctx.mongo_is_ferretdb else "in_place"
    if strategy == "copy":
        return _rename_by_copy(ctx, collection, old, new, batch_size)
    return _rename_in_place(ctx, collection, old, new, batch_size)


def _rename_in_place(ctx: MigrationContext, collection: str, old: str, new: str, batch_size: int) -> int:
    coll = ctx.mongo[collection]
    pending: dict[str, Any] = {old: {"$exists": True}}
    total = coll.count_documents(pending)
    done = 0
    ctx.progress(f"{collection}: rename {old} -> {new}", 0, total)
    while True:
        ids = [d["_id"] for d in coll.find(pending, {"_id": 1}).limit(batch_size)]
        if not ids:
            break
        # `$rename` is atomic per document, so a kill leaves each one old or new, never half.
        result = coll.update_many({"_id": {"$in": ids}, **pending}, {"$rename": {old: new}})
        done += result.modified_count
        ctx.progress(f"{collection}: rename {old} -> {new}", done, total)
    return done


def staging_name(collection: str) -> str:
    return f"_rpger_staging_{collection}"


def _rename_by_copy(ctx: MigrationContext, collection: str, old: str, new: str, batch_size: int) -> int:
    """Resumable at every step: documents already in staging are skipped, and
    a run killed between dropping the source and the rename finishes the rename."""
    db = ctx.mongo
    staging = staging_name(collection)
    names = set(db.list_collection_names())
    if collection not in names:
        if staging in names:  # killed after the drop: only the rename is left
            db[staging].rename(collection)
        return 0
    src = db[collection]
    if staging not in names:
        if src.count_documents({old: {"$exists": True}}, limit=1) == 0:
            return 0
        db.create_collection(staging, **_collection_options(db, collection))
    stg = db[staging]
    copied_before = {d["_id"] for d in stg.find({}, {"_id": 1})}
    total = src.estimated_document_count() - len(copied_before)
    label = f"{collection}: rename {old} -> {new} (copy)"
    ctx.progress(label, 0, total)
    renamed = done = 0
    batch: list[dict[str, Any]] = []
    for doc in src.find({}, batch_size=batch_size):
        if doc["_id"] in copied_before:
            continue
        if old in doc:
            doc[new] = doc.pop(old)
            renamed += 1
        batch.append(doc)
        if len(batch) >= batch_size:
            done += _insert_new(stg, batch)
            batch = []
            ctx.progress(label, done, total)
    done += _insert_new(stg, batch)
    ctx.progress(label, done, total)
    _copy_indexes(src, stg)
    db.drop_collection(collection)
    stg.rename(collection)
    return renamed


def _insert_new(coll: Any, docs: list[dict[str, Any]]) -> int:
    """Insert, tolerating documents a killed run's last batch already wrote."""
    if not docs:
        return 0
    try:
        coll.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
            raise
    return len(docs)


def _collection_options(db: Any, collection: str) -> dict[str, Any]:
    infos = list(db.list_collections(filter={"name": collection}))
    return dict(infos[0].get("options", {})) if infos else {}


def _copy_indexes(src: Any, dest: Any) -> None:
    existing = {ix["name"] for ix in dest.list_indexes()}
    for ix in src.list_indexes():
        if ix["name"] == "_id_" or ix["name"] in existing:
            continue
        options = {k: v for k, v in ix.items() if k in INDEX_OPTIONS}
        dest.create_index(list(ix["key"].items()), name=ix["name"], **options)


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


# 0.4-style index settings in Chroma collection metadata (`hnsw:space`, `hnsw:M`, ...).
CHROMA_INDEX_PREFIX = "hnsw:"


def merge_chroma_metadata(ctx: MigrationContext, collection: str, changes: dict[str, Any],
                          remove: tuple[str, ...] = ()) -> dict[str, Any]:
    """Update a Chroma collection's metadata, keeping keys not mentioned; returns the new metadata.

    Index settings written as metadata (`hnsw:space` and the other `hnsw:*` keys, as the
    0.4 client wrote them) are never changed or removed: Chroma fixes a collection's
    distance and index parameters when it is created, and a changed `hnsw:space` would
    only make the metadata lie about it. Asking to change one is reported as a note, not
    a failure. The stock client refuses any `modify` whose metadata carries `hnsw:space`,
    even unchanged, so such collections get their metadata through the server API.
    """
    from rpger_ops.engines.chroma import modify_collection_metadata

    coll = ctx.chroma.get_collection(collection, embedding_function=None)  # type: ignore[arg-type]
    current = dict(coll.metadata or {})
    for key in sorted({*changes, *remove}):
        if not key.startswith(CHROMA_INDEX_PREFIX):
            continue
        wanted = "removed" if key in remove else repr(changes[key])
        if (key in remove and key in current) or (key in changes and changes[key] != current.get(key)):
            ctx.note(f"chroma {collection}: {key} kept at {current.get(key)!r} (wanted {wanted}): a collection's "
                     "distance and index settings can't change once it is created; re-create it to change them")
    metadata = {k: v for k, v in current.items() if k not in remove or k.startswith(CHROMA_INDEX_PREFIX)}
    metadata.update({k: v for k, v in changes.items() if not k.startswith(CHROMA_INDEX_PREFIX)})
    if metadata != current:
        modify_collection_metadata(ctx.chroma, coll, metadata)
    return metadata
