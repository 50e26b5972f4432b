"""MongoDB and Redis content read back through the plain client libraries (pymongo,
redis-py), for round-trip proofs that do not rest on rpger_ops' digest code.
(Chroma's read-back lives in chroma_shapes.py.)

Stack state (markers, locks) is left out: it is never part of a dump.
"""

from __future__ import annotations

from typing import Any

from bson import json_util
from bson.codec_options import CodecOptions
from bson.json_util import CANONICAL_JSON_OPTIONS
from bson.raw_bson import RawBSONDocument

from rpger_ops.connect import mongo_client, redis_client
from rpger_ops.settings import Settings

MONGO_STACK_STATE = ("_rpger_stack", "_rpger_lock")
REDIS_STACK_STATE = (b"_rpger:stack", b"_rpger:lock")


def _canonical(value: Any) -> str:
    return json_util.dumps(value, json_options=CANONICAL_JSON_OPTIONS, sort_keys=True)


def mongo_state(settings: Settings, database: str | None = None) -> dict[str, dict[str, Any]]:
    """Per collection: its type and options, its indexes (without the server's `v`/`ns`) and
    its documents as raw BSON bytes (every type and field order exactly as stored)."""
    client = mongo_client(settings)
    try:
        db = client.get_database(database or settings.mongodb_database,
                                 codec_options=CodecOptions(document_class=RawBSONDocument))
        out: dict[str, dict[str, Any]] = {}
        for info in db.list_collections():
            name = info["name"]
            if name.startswith(MONGO_STACK_STATE) or name.startswith("system."):
                continue
            coll = db[name]
            indexes = sorted(_canonical({k: v for k, v in ix.items() if k not in ("v", "ns")})
                             for ix in client.get_database(db.name)[name].list_indexes())
            out[name] = {"type": info.get("type", "collection"), "options": _canonical(info.get("options", {})),
                         "indexes": indexes, "documents": sorted(doc.raw for doc in coll.find({}))}
        return out
    finally:
        client.close()


def redis_state(settings: Settings) -> dict[int, dict[bytes, Any]]:
    """Per app database with keys: each key's type, value (type by type) and absolute expiry in
    ms. The stack's own database (RPGER_REDIS_STACK_DB) is not app data."""
    root = redis_client(settings, decode_responses=False)
    try:
        dbs = sorted(int(name[2:]) for name in root.info("keyspace") if int(name[2:]) != settings.redis_stack_db)
    finally:
        root.close()
    out: dict[int, dict[bytes, Any]] = {}
    for n in dbs:
        r = redis_client(settings, db=n, decode_responses=False)
        try:
            keys = {}
            for key in r.scan_iter(count=1000):
                if n == 0 and key.startswith(REDIS_STACK_STATE):
                    continue
                keys[key] = {"type": r.type(key), "value": redis_value(r, key),
                             "expires_at_ms": r.execute_command("PEXPIRETIME", key)}
            if keys:
                out[n] = keys
        finally:
            r.close()
    return out


def redis_value(r: Any, key: bytes) -> Any:
    kind = r.type(key)
    if kind == b"string":
        return r.get(key)
    if kind == b"list":
        return r.lrange(key, 0, -1)
    if kind == b"hash":
        return sorted(r.hgetall(key).items())
    if kind == b"set":
        return sorted(r.smembers(key))
    if kind == b"zset":
        return [(m, repr(s)) for m, s in r.zrange(key, 0, -1, withscores=True)]
    if kind == b"stream":
        info = r.xinfo_stream(key)
        groups = []
        for g in r.xinfo_groups(key):
            name = g["name"]
            pending = r.xpending_range(key, name, min="-", max="+", count=1_000_000)
            groups.append({
                "name": name, "last-delivered-id": g["last-delivered-id"], "entries-read": g.get("entries-read"),
                "consumers": sorted(c["name"] for c in r.xinfo_consumers(key, name)),
                # Idle times move with the clock; ids, owners and delivery counts must not.
                "pending": [(p["message_id"], p["consumer"], p["times_delivered"]) for p in pending]})
        return {"entries": r.xrange(key), "last-generated-id": info["last-generated-id"],
                "max-deleted-entry-id": info.get("max-deleted-entry-id"),
                "entries-added": info.get("entries-added"), "groups": groups}
    raise AssertionError(f"unexpected Redis type {kind!r} for {key!r}")
