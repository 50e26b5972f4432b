"""RPGer-shaped data at a chosen scale, shared by tests, benchmarks and e2e.

Shapes follow the real client (shared/rpger-client.md): the `rpger` Mongo
collections with their unique indexes (and `$jsonSchema` validators where the
server supports them), Redis caches/state with and without TTLs, and Chroma
collections of cosine 1536-d embeddings with RPGer metadata. Deterministic
for a given seed.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from rpger_ops.connect import chroma_client, mongo_client, redis_client

# The schema (collections, indexes, validators, Chroma collections) is migration 0001's:
# generated data always matches what `rpger-ops migrate up` creates.
from rpger_ops.migrations.m0001_rpger_schema import (
    CHROMA_COLLECTIONS,
    EMBEDDING_DIM,
    MONGO_INDEXES,
    chroma_metadata,
)
from rpger_ops.migrations.m0001_rpger_schema import validator as json_schema_validator

if TYPE_CHECKING:
    from rpger_ops.settings import Settings

REFERENCE_COLLECTIONS = ("monsters", "spells", "items", "npcs")


@dataclass
class LoadReport:
    mongo_counts: dict[str, int] = field(default_factory=dict)
    redis_keys: int = 0
    chroma_counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _iso(dt: datetime) -> str:
    return dt.isoformat()


def mongo_documents(scale: int, seed: int = 7) -> dict[str, list[dict[str, Any]]]:
    from bson import Binary, Int64, ObjectId

    rnd = random.Random(seed)
    base = datetime(2024, 1, 1, tzinfo=UTC)
    users = []
    for i in range(max(2, scale // 10)):
        users.append({
            "_id": ObjectId(rnd.randbytes(12)),
            "username": f"user{i}", "email": f"user{i}@example.org",
            "created": base + timedelta(minutes=i), "active": i % 3 != 0,
            "prefs": {"theme": rnd.choice(["dark", "light"]), "dice": [4, 6, 8, 10, 12, 20]},
            "login_count": Int64(rnd.randrange(1 << 40)), "avatar": Binary(rnd.randbytes(16)),
            "deleted_at": None,
        })
    uid = [str(u["_id"]) for u in users]
    docs: dict[str, list[dict[str, Any]]] = {"users": users}
    docs["dashboards"] = [{"userId": u, "name": "default", "layout": {"cols": 12, "rows": rnd.randrange(4, 9)}}
                          for u in uid]
    docs["widgets"] = [{"userId": u, "widgetId": f"w{j}", "type": rnd.choice(["dice", "notes", "map"]),
                        "pos": {"x": j, "y": rnd.random()}} for u in uid for j in range(3)]
    docs["campaigns"] = [{"userId": u, "name": f"Campaign {j}", "setting": "Greyhawk",
                          "sessions": [{"n": k, "at": base + timedelta(days=7 * k)} for k in range(3)]}
                         for u in uid for j in range(2)]
    docs["characters"] = [{"userId": uid[i % len(uid)], "name": f"Hero {i}", "level": rnd.randrange(1, 20),
                           "hp": rnd.randrange(4, 120), "ac": rnd.randrange(-2, 10), "xp": Int64(rnd.randrange(10**9)),
                           "inventory": [f"item {rnd.randrange(scale)}" for _ in range(rnd.randrange(0, 6))]}
                          for i in range(max(2, scale // 2))]
    docs["notes"] = [{"userId": uid[i % len(uid)], "tags": rnd.sample(["loot", "npc", "plot", "map", "rules"], 2),
                      "text": f"Session note {i}: " + "lorem ipsum " * rnd.randrange(1, 20),
                      "created_at": _iso(base + timedelta(hours=i))} for i in range(scale)]
    for coll in REFERENCE_COLLECTIONS:
        entity = coll[:-1]
        items = []
        for i in range(scale):
            items.append({
                "name": f"{entity.title()} {i:05d}", "category": rnd.choice(["A", "B", "C"]),
                "stats": {"frequency": rnd.choice(["common", "rare"]), "no_appearing": f"{rnd.randrange(1, 4)}d6",
                          "armor_class": rnd.randrange(-4, 10), "move": f"{rnd.randrange(3, 24)}\"",
                          "hit_dice": rnd.randrange(1, 20), "treasure_type": rnd.choice("ABCDEFG")},
                "description": f"A {entity} of the wilds. " * rnd.randrange(1, 8),
                "metadata": {"type": entity, "alignment": rnd.choice(["LG", "N", "CE"]),
                             "challenge_rating": rnd.random() * 20, "size": rnd.choice("SML"),
                             "languages": ["common"], "senses": ["darkvision 60 ft"]},
                "habitat": {"terrain": rnd.choice(["forest", "cave", "sea"])}, "ecology": {},
                "embedding_references": [{"chroma_collection": coll, "embedding_id": f"{entity}_{i}_0",
                                          "content_type": "description", "content_index": 0}],
                "related_monsters": [], "encounter_suggestions": None, "campaign_usage": [],
                "extended_properties": {"source": "MM", "page": rnd.randrange(1, 400)},
                "created_at": _iso(base + timedelta(seconds=i)), "updated_at": _iso(base + timedelta(days=1, seconds=i)),
            })
        docs[coll] = items
    # Fixed _ids: the same seed gives byte-identical documents (and digests) everywhere.
    id_rnd = random.Random(seed + 1)
    for documents in docs.values():
        for d in documents:
            d.setdefault("_id", ObjectId(id_rnd.randbytes(12)))
    return docs


def load_mongo(settings: Settings, scale: int = 50, seed: int = 7, validators: bool = True) -> LoadReport:
    report = LoadReport()
    client = mongo_client(settings)
    try:
        db = client[settings.mongodb_database]
        existing = set(db.list_collection_names())
        for name, documents in mongo_documents(scale, seed).items():
            if name not in existing:
                try:
                    if validators:
                        db.create_collection(name, validator=json_schema_validator(name), validationLevel="moderate")
                    else:
                        db.create_collection(name)
                except Exception as exc:  # FerretDB: no validators; create without
                    if name not in db.list_collection_names():
                        db.create_collection(name)
                    report.notes.append(f"{name}: validator not applied ({type(exc).__name__})")
            for keys, unique in MONGO_INDEXES.get(name, []):
                db[name].create_index(keys, unique=unique)
            if documents:
                for start in range(0, len(documents), 1000):
                    db[name].insert_many(documents[start:start + 1000], ordered=False)
            report.mongo_counts[name] = len(documents)
    finally:
        client.close()
    return report


def load_redis(settings: Settings, scale: int = 50, seed: int = 7, second_db: int | None = 1) -> LoadReport:
    rnd = random.Random(seed)
    report = LoadReport()
    r = redis_client(settings)
    try:
        pipe = r.pipeline(transaction=False)
        for i in range(max(2, scale // 10)):
            pipe.set(f"dashboard:default:user{i}", json.dumps({"widgets": [f"w{j}" for j in range(3)], "v": i}), ex=3600)
            report.redis_keys += 1
        for i in range(scale):
            pipe.set(f"game:state:characters:{i}", json.dumps({"hp": rnd.randrange(100), "pos": [i, i * 2]}))
            report.redis_keys += 1
        pipe.set("game:state:environment", json.dumps({"weather": "rain", "time": "dusk"}))
        pipe.rpush("memory:conversation", *[json.dumps({"role": "user", "text": f"msg {k}"}) for k in range(100)])
        pipe.ltrim("memory:conversation", -100, -1)
        for coll in ("monsters", "spells"):
            vecs = [{"id": f"{coll}_{k}", "vector": [round(rnd.random(), 6) for _ in range(8)]} for k in range(5)]
            pipe.set(f"vector:collection:{coll}", json.dumps(vecs))
        pipe.hset("session:abc", mapping={"user": "user1", "started": "2024-01-01T00:00:00Z"})
        pipe.pexpire("session:abc", 7_200_000)
        pipe.sadd("online:users", *[f"user{i}" for i in range(5)])
        pipe.zadd("leaderboard:xp", {f"Hero {i}": float(rnd.randrange(10**6)) for i in range(10)})
        pipe.xadd("events:dice", {"roll": "1d20", "result": "17"}, id="1700000000000-0")
        pipe.set("bin:blob", bytes(range(256)))
        report.redis_keys += 10
        pipe.execute()
    finally:
        r.close()
    if second_db is not None:
        r1 = redis_client(settings, db=second_db)
        try:
            r1.set("cache:ruleset:adnd2e", json.dumps({"cached": True}), ex=86_400)
            r1.hset("cache:stats", mapping={"hits": 10, "misses": 2})
            report.redis_keys += 2
        finally:
            r1.close()
    return report


def embeddings(n: int, seed: int, dim: int = EMBEDDING_DIM) -> list[list[float]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    arr = rng.standard_normal((n, dim), dtype=np.float32)
    return [row.tolist() for row in arr]


def load_chroma(settings: Settings, scale: int = 50, seed: int = 7, dim: int = EMBEDDING_DIM) -> LoadReport:
    report = LoadReport()
    client = chroma_client(settings)
    batch = max(1, min(client.get_max_batch_size(), 1000))
    for ci, name in enumerate(CHROMA_COLLECTIONS):
        coll = client.get_or_create_collection(
            name, metadata={**chroma_metadata(name), "dimension": dim},
            configuration={"hnsw": {"space": "cosine"}},
            embedding_function=None,
        )
        n = scale if name in REFERENCE_COLLECTIONS else max(2, scale // 5)
        entity = name[:-1] if name.endswith("s") else name
        ids = [f"{entity}_{i}_0" for i in range(n)]
        vecs = embeddings(n, seed * 100 + ci, dim)
        docs = [f"{name} document {i}: text about {entity} {i}" for i in range(n)]
        metas: list[dict[str, Any]] = [{f"{entity}_id": f"{entity}-{i}", "content_type": "description",
                                        "content_index": 0, "name": f"{entity.title()} {i:05d}"} for i in range(n)]
        for s in range(0, n, batch):
            coll.add(ids=ids[s:s + batch], embeddings=vecs[s:s + batch],  # type: ignore[arg-type]
                     documents=docs[s:s + batch], metadatas=metas[s:s + batch])  # type: ignore[arg-type]
        report.chroma_counts[name] = n
    return report


def load_all(settings: Settings, scale: int = 50, seed: int = 7, validators: bool = True) -> LoadReport:
    report = LoadReport()
    m = load_mongo(settings, scale, seed, validators)
    r = load_redis(settings, scale, seed)
    c = load_chroma(settings, scale, seed)
    report.mongo_counts, report.redis_keys, report.chroma_counts = m.mongo_counts, r.redis_keys, c.chroma_counts
    report.notes = m.notes + r.notes + c.notes
    return report
