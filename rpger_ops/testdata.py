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
from collections.abc import Callable
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


# --- RPGer's backend, as it makes its data (issue 11) --------------------------------------------
#
# `load_rpger_client` writes data the way RPGer's own code does, through the stock client
# libraries with their defaults (shared/rpger-client.md):
#
# - MongoDB: its mongo init script first (users, dashboards, widgets, campaigns, characters,
#   notes with `$jsonSchema` validators and indexes), then its backend's init_db (monsters,
#   spells, items, npcs with validators and unique names; an existing collection is skipped,
#   so characters keeps the init script's validator), then documents shaped like its models
#   (mongoose timestamps as dates, `__v`; reference data with ISO-string timestamps).
#   Validators where the server has them (not FerretDB: reported in the notes).
# - Redis (db 0): `dashboard:default:{userId}` JSON with a 3600 s TTL, `game:state:*` JSON,
#   `memory:conversation` pushed and trimmed to 100, `vector:collection:{name}` JSON arrays.
# - Chroma: `create_collection(name, metadata={"description": ...})` with the stock client's
#   default embedding function ("default", l2), as its init_chroma_collections does;
#   `chroma_style="0.4"` writes the distance as `hnsw:space` metadata instead, as its 0.4
#   client did (cosine for the reference collections as its schema file says, l2 for the
#   others); plus `test_collection` as its init script makes it. The reference collections
#   get records; characters and campaign_notes stay empty, as nothing in RPGer fills them
#   yet. Embeddings are always given, so the default embedding function is never run (no
#   onnxruntime, no download).

RPGER_CHROMA_STYLES = ("1.x", "0.4")
# RPGer's init script's own characters validator (its backend's richer one only applies to a
# collection the backend creates, and the init script runs first).
INIT_SCRIPT_CHARACTERS_VALIDATOR: dict[str, Any] = {"$jsonSchema": {
    "bsonType": "object", "required": ["userId", "name"],
    "properties": {"userId": {"bsonType": "objectId"}, "name": {"bsonType": "string"}}}}
INIT_SCRIPT_COLLECTIONS = ("users", "dashboards", "widgets", "campaigns", "characters", "notes")
INIT_SCRIPT_INDEXES: dict[str, list[tuple[list[tuple[str, int]], bool]]] = {
    "users": [([("username", 1)], True), ([("email", 1)], True)],
    "dashboards": [([("userId", 1), ("name", 1)], True)],
    "widgets": [([("userId", 1), ("widgetId", 1)], True)],
    "campaigns": [([("userId", 1), ("name", 1)], True)],
    "characters": [([("userId", 1), ("name", 1)], False)],
    "notes": [([("userId", 1)], False), ([("userId", 1), ("tags", 1)], False)],
}
BACKEND_COLLECTIONS = ("monsters", "spells", "items", "npcs", "characters")
BACKEND_INDEXES: dict[str, list[tuple[list[tuple[str, int]], bool]]] = {
    "monsters": [([("name", 1)], True)], "spells": [([("name", 1)], True)], "items": [([("name", 1)], True)],
    "npcs": [([("name", 1)], True)], "characters": [([("name", 1), ("userId", 1)], True)],
}
RPGER_CHROMA_ENTITIES = {"monsters": "monster", "spells": "spell", "items": "item", "npcs": "npc",
                         "characters": "character", "campaign_notes": "note"}


def _ms(dt: datetime) -> datetime:
    """BSON dates hold milliseconds: what pymongo reads back is what we wrote."""
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def rpger_client_documents(scale: int = 20, seed: int = 7) -> dict[str, list[dict[str, Any]]]:
    """Documents as RPGer's Node models (mongoose) and its backend write them; every one
    passes RPGer's validators (migration 0002's `VALIDATORS`)."""
    from bson import ObjectId

    rnd = random.Random(seed)
    oid = lambda: ObjectId(rnd.randbytes(12))  # noqa: E731 - deterministic ids
    base = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)

    def stamps(i: int) -> dict[str, Any]:
        created = _ms(base + timedelta(hours=i, milliseconds=rnd.randrange(1000)))
        return {"createdAt": created, "updatedAt": _ms(created + timedelta(minutes=rnd.randrange(1, 500))), "__v": 0}

    def iso(i: int) -> dict[str, str]:
        return {"created_at": (base + timedelta(days=i)).isoformat(),
                "updated_at": (base + timedelta(days=i, hours=3)).isoformat()}

    users = [{"_id": oid(), "username": f"player{i}", "email": f"player{i}@example.org",
              "password": "$2b$10$" + rnd.randbytes(22).hex()[:53], "role": "admin" if i == 0 else "user",
              "preferences": {"theme": rnd.choice(["light", "dark", "system"]),
                              "fontSize": rnd.choice(["small", "medium", "large"]), "notifications": i % 2 == 0},
              "lastLogin": _ms(base + timedelta(days=i)), **stamps(i)} for i in range(max(2, scale // 5))]
    uids = [u["_id"] for u in users]
    docs: dict[str, list[dict[str, Any]]] = {"users": users}
    docs["dashboards"] = [{"_id": oid(), "userId": u, "name": "Main", "description": "Game table",
                           "layouts": {"lg": [{"i": "dice", "x": 0, "y": 0, "w": 4, "h": 3}]}, "isDefault": True,
                           **stamps(k)} for k, u in enumerate(uids)]
    docs["widgets"] = [{"_id": oid(), "userId": u, "widgetId": f"{kind}-{k}", "name": kind.title(), "type": kind,
                        "config": {"sides": 20} if kind == "dice" else {},
                        "layout": {"lg": {"x": j * 4, "y": 0, "w": 4, "h": 3}}, "active": True, **stamps(k)}
                       for k, u in enumerate(uids) for j, kind in enumerate(("dice", "notes"))]
    characters = []
    for i in range(max(2, scale // 2)):
        characters.append({
            "_id": oid(), "userId": uids[i % len(uids)], "name": f"Aric {i}", "race": rnd.choice(["elf", "dwarf"]),
            "class": rnd.choice(["fighter", "wizard", "cleric"]), "level": rnd.randrange(1, 21),
            "experience_points": rnd.randrange(10**6),
            "stats": {k: rnd.randrange(3, 19) for k in ("strength", "dexterity", "constitution", "intelligence",
                                                         "wisdom", "charisma")} | {"hit_points": rnd.randrange(4, 90)},
            "inventory": [{"item_id": f"item-{j}", "quantity": 1, "equipped": j == 0} for j in range(rnd.randrange(3))],
            "embedding_references": [{"chroma_collection": "characters", "embedding_id": f"character_{i}_background_0",
                                      "content_type": "background", "content_index": 0}],
            **iso(i)})
    docs["characters"] = characters
    docs["campaigns"] = [{"_id": oid(), "userId": u, "name": f"Saga {k}", "concept": "Lost mines", "setting": "Greyhawk",
                          "characters": [c["_id"] for c in characters if c["userId"] == u],
                          "locations": [{"name": "Phandalin", "description": "A town", "type": "town"}],
                          "npcs": [{"name": "Sildar", "description": "A knight"}], "factions": [],
                          "quests": [{"name": "Find the mine", "description": "...", "status": "active"}],
                          "events": [], "timeline": ["Day 1"], "notes": "", **stamps(k)} for k, u in enumerate(uids)]
    docs["notes"] = [{"_id": oid(), "userId": uids[i % len(uids)], "title": f"Session {i}",
                      "content": "The party met " * rnd.randrange(1, 6), "category": "session",
                      "tags": rnd.sample(["loot", "npc", "plot"], 2), "pinned": i == 0, **stamps(i)}
                     for i in range(scale)]
    docs["monsters"] = [{
        "_id": oid(), "name": f"Ankheg {i:04d}", "category": rnd.choice(["Beast", "Dragon", "Undead"]),
        "stats": {"frequency": "Rare", "no_appearing": "1-6", "armor_class": rnd.randrange(-2, 10), "move": "12\"",
                  "hit_dice": f"{rnd.randrange(1, 12)}", "treasure_type": rnd.choice("ABCD")},
        "description": "Burrows under fields. " * rnd.randrange(1, 4), "path": f"Monster_Manual_1/A/Ankheg_{i}.md",
        "metadata": {"type": "monster", "alignment": "N", "challenge_rating": str(rnd.randrange(1, 20)),
                     "size": rnd.choice("SML"), "languages": ["common"], "senses": ["tremorsense"]},
        "habitat": {"primary_environments": ["grassland"], "lair_description": "tunnels"},
        "ecology": {"diet": "carnivore", "prey": ["cattle"]},
        "embedding_references": [{"chroma_collection": "monsters", "embedding_id": f"monster_{i}_description_0",
                                  "content_type": "description", "content_index": 0}],
        "related_monsters": [], "encounter_suggestions": ["ambush"], "campaign_usage": {"plot_hooks": []},
        "extended_properties": {"lair_actions": []}, **iso(i)} for i in range(scale)]
    docs["spells"] = [{
        "_id": oid(), "name": f"Magic Missile {i:04d}", "level": rnd.randrange(0, 10), "class": ["wizard"],
        "components": {"verbal": True, "somatic": True, "material": False}, "range": "120 feet",
        "duration": "Instantaneous", "description": "Darts of force. " * rnd.randrange(1, 4),
        "metadata": {"school": "evocation", "concentration": False, "ritual": False},
        "embedding_references": [{"chroma_collection": "spells", "embedding_id": f"spell_{i}_description_0",
                                  "content_type": "description", "content_index": 0}], **iso(i)} for i in range(scale)]
    docs["items"] = [{
        "_id": oid(), "name": f"Longsword +{i % 3} {i:04d}", "type": "Weapon", "rarity": rnd.choice(["Common", "Rare"]),
        "description": "A fine blade.", "properties": {"damage": "1d8", "weight": 3, "stealth_disadvantage": False},
        "embedding_references": [{"chroma_collection": "items", "embedding_id": f"item_{i}_description_0",
                                  "content_type": "description", "content_index": 0}], **iso(i)} for i in range(scale)]
    docs["npcs"] = [{
        "_id": oid(), "name": f"Sildar Hallwinter {i:04d}", "race": "human", "class": "fighter", "level": 5,
        "description": "A kindly knight.", "personality": ["loyal"], "stats": {"strength": 15, "hit_points": 27},
        "embedding_references": [{"chroma_collection": "npcs", "embedding_id": f"npc_{i}_description_0",
                                  "content_type": "description", "content_index": 0}], **iso(i)} for i in range(scale)]
    return docs


def _create_validated(db: Any, name: str, validator: dict[str, Any], report: LoadReport) -> None:
    try:
        db.create_collection(name, validator=validator)
    except Exception as exc:  # FerretDB: no validators; the collection is created without
        if name not in db.list_collection_names():
            db.create_collection(name)
        report.notes.append(f"mongo {name}: RPGer's validator not applied ({type(exc).__name__})")


def load_rpger_client_mongo(settings: Settings, scale: int = 20, seed: int = 7) -> LoadReport:
    from rpger_ops.migrations.m0002_rpger_ownership import VALIDATORS

    report = LoadReport()
    client = mongo_client(settings)
    try:
        db = client[settings.mongodb_database]
        for name in INIT_SCRIPT_COLLECTIONS:  # its init script: only when the database is new
            if name not in db.list_collection_names():
                rules = INIT_SCRIPT_CHARACTERS_VALIDATOR if name == "characters" else VALIDATORS[name]
                _create_validated(db, name, rules, report)
        for name, indexes in INIT_SCRIPT_INDEXES.items():
            for keys, unique in indexes:
                db[name].create_index(keys, unique=unique)
        for name in BACKEND_COLLECTIONS:  # its backend's init_db: skips existing collections
            if name not in db.list_collection_names():
                _create_validated(db, name, VALIDATORS[name], report)
        for name, indexes in BACKEND_INDEXES.items():
            for keys, unique in indexes:
                db[name].create_index(keys, unique=unique)
        for name, documents in rpger_client_documents(scale, seed).items():
            db[name].insert_many(documents)  # validated, where the server validates
            report.mongo_counts[name] = len(documents)
    finally:
        client.close()
    return report


def load_rpger_client_redis(settings: Settings, scale: int = 20, seed: int = 7) -> LoadReport:
    rnd = random.Random(seed)
    report = LoadReport()
    r = redis_client(settings)
    try:
        users = [f"{rnd.randbytes(12).hex()}" for _ in range(max(2, scale // 5))]
        for u in users:  # its Node server's dashboard cache
            r.setex(f"dashboard:default:{u}", 3600, json.dumps({"userId": u, "widgets": ["dice", "notes"]}))
        for i in range(scale):  # its RedisInterface's game state
            r.set(f"game:state:characters:{i}", json.dumps({"name": f"Aric {i}", "hp": rnd.randrange(1, 90),
                                                             "conditions": []}))
        r.set("game:state:environment", json.dumps({"time": "dusk", "weather": "rain", "location": "Phandalin"}))
        for k in range(120):  # lpush + ltrim(0, 99): the newest 100 entries
            r.lpush("memory:conversation", json.dumps({"role": "user" if k % 2 else "assistant", "content": f"msg {k}",
                                                       "timestamp": 1_709_294_400 + k}))
            r.ltrim("memory:conversation", 0, 99)
        for name in ("monsters", "spells"):
            r.set(f"vector:collection:{name}", json.dumps([{"id": f"{name}_{k}", "vector": [rnd.random() for _ in range(8)],
                                                           "metadata": {"name": f"{name} {k}"}} for k in range(5)]))
        report.redis_keys = len(users) + scale + 1 + 1 + 2
    finally:
        r.close()
    return report


def load_rpger_client_chroma(settings: Settings, scale: int = 20, seed: int = 7, dim: int = EMBEDDING_DIM,
                             chroma_style: str = "1.x") -> LoadReport:
    from rpger_ops.migrations.m0002_rpger_ownership import rpger_chroma_metadata

    if chroma_style not in RPGER_CHROMA_STYLES:
        raise ValueError(f"chroma_style must be one of {RPGER_CHROMA_STYLES}, not {chroma_style!r}")
    rnd = random.Random(seed)
    report = LoadReport()
    client = chroma_client(settings)
    existing = {c.name for c in client.list_collections()}
    for ci, (name, entity) in enumerate(RPGER_CHROMA_ENTITIES.items()):
        metadata = rpger_chroma_metadata(name)
        if chroma_style == "0.4":
            metadata["hnsw:space"] = "cosine" if name in REFERENCE_COLLECTIONS else "l2"
        if name not in existing:  # its init_chroma_collections: create what is missing, stock defaults
            client.create_collection(name=name, metadata=metadata)
        coll = client.get_collection(name)
        if name not in REFERENCE_COLLECTIONS:
            continue  # nothing in RPGer writes these yet: they stay as its init made them, empty
        n = scale
        ids = [f"{entity}_{i}_description_0" for i in range(n)]
        metas: list[dict[str, Any]] = [{f"{entity}_id": rnd.randbytes(12).hex(), "content_type": "description",
                                        "content_index": 0, "name": f"{entity.title()} {i:04d}",
                                        **_rpger_chroma_fields(entity, rnd)} for i in range(n)]
        docs = [f"{entity.title()} {i}: " + "text about it " * rnd.randrange(1, 5) for i in range(n)]
        vectors = embeddings(n, seed * 100 + ci, dim)
        batch = max(1, min(client.get_max_batch_size(), 500))
        for s in range(0, n, batch):
            coll.add(ids=ids[s:s + batch], embeddings=vectors[s:s + batch],  # type: ignore[arg-type]
                     documents=docs[s:s + batch], metadatas=metas[s:s + batch])  # type: ignore[arg-type]
        report.chroma_counts[name] = n
    if "test_collection" not in existing:  # its scripts/init_chroma: a bare create_collection and one record
        test = client.create_collection("test_collection")
        test.add(ids=["test1"], documents=["This is a test document"], metadatas=[{"source": "initialization"}],
                 embeddings=embeddings(1, seed, dim))  # type: ignore[arg-type]
        report.chroma_counts["test_collection"] = 1
    return report


def _rpger_chroma_fields(entity: str, rnd: random.Random) -> dict[str, Any]:
    """The metadata fields RPGer's Chroma schema file lists per collection."""
    fields: dict[str, Callable[[], dict[str, Any]]] = {
        "monster": lambda: {"category": rnd.choice(["Beast", "Dragon"]), "challenge_rating": str(rnd.randrange(1, 20))},
        "spell": lambda: {"level": rnd.randrange(0, 10), "school": "evocation", "class": "wizard"},
        "item": lambda: {"type": "Weapon", "rarity": rnd.choice(["Common", "Rare"])},
        "npc": lambda: {"race": "human", "class": "fighter", "location": "Phandalin"},
        "character": lambda: {"player_id": rnd.randbytes(12).hex(), "race": "elf", "class": "wizard"},
        "note": lambda: {"campaign_id": rnd.randbytes(12).hex(), "title": "Session", "tags": "plot,npc"},
    }
    return fields[entity]()


def load_rpger_client(settings: Settings, scale: int = 20, seed: int = 7, dim: int = EMBEDDING_DIM,
                      chroma_style: str = "1.x") -> LoadReport:
    """All three databases as RPGer's backend fills them (see the comment above)."""
    m = load_rpger_client_mongo(settings, scale, seed)
    r = load_rpger_client_redis(settings, scale, seed)
    c = load_rpger_client_chroma(settings, scale, seed, dim, chroma_style)
    return LoadReport(mongo_counts=m.mongo_counts, redis_keys=r.redis_keys, chroma_counts=c.chroma_counts,
                      notes=m.notes + r.notes + c.notes)


# --- a day of use: what changes between two daily backups ------------------------------------

@dataclass
class DayReport:
    mongo_docs: int = 0
    redis_keys: int = 0
    chroma_records: int = 0


def change_a_day(settings: Settings, day: int, fraction: float = 0.01, chroma: bool = False) -> DayReport:
    """One day of play: `fraction` of the user documents (every Mongo collection except
    the reference ones) and of the cache keys are rewritten through the plain clients
    (at least one of each collection); the reference collections (monsters, spells,
    items, npcs and their embeddings) stay as they were. RPGer writes no Chroma records
    of its own yet, so Chroma changes only with `chroma=True` (then `fraction` of the
    records of its non-reference collections get new metadata). Deterministic per `day`."""
    import math

    report = DayReport()
    rnd = random.Random(1000 + day)
    client = mongo_client(settings)
    try:
        db = client[settings.mongodb_database]
        for name in sorted(db.list_collection_names()):
            if name in REFERENCE_COLLECTIONS or name.startswith(("_rpger", "system.")):
                continue
            ids = [d["_id"] for d in db[name].find({}, projection={"_id": 1}).sort("_id", 1)]
            if not ids:
                continue
            for _id in rnd.sample(ids, max(1, math.ceil(len(ids) * fraction))):
                # updatedAt as RPGer's models keep it (a Date); validators accept the update.
                db[name].update_one({"_id": _id}, {"$set": {"updatedAt": datetime(2024, 6, 1, tzinfo=UTC)
                                                            + timedelta(days=day, seconds=rnd.randrange(86400))}})
                report.mongo_docs += 1
    finally:
        client.close()
    r = redis_client(settings)
    try:
        keys = sorted(k for k in r.scan_iter(count=1000) if not str(k).startswith("_rpger"))
        for key in rnd.sample(keys, max(1, math.ceil(len(keys) * fraction))) if keys else []:
            if r.type(key) == "string":
                r.set(key, json.dumps({"day": day, "value": rnd.random()}), keepttl=True)
            else:
                r.expire(key, 3600 + day)  # another type: a new TTL is a change the backup must hold
            report.redis_keys += 1
    finally:
        r.close()
    if not chroma:
        return report
    client_c = chroma_client(settings)
    for coll in sorted(client_c.list_collections(), key=lambda c: c.name):
        if coll.name in REFERENCE_COLLECTIONS or coll.name.startswith("rpger__"):
            continue
        ids = sorted(coll.get(include=[])["ids"])
        if not ids:
            continue
        picked = rnd.sample(ids, max(1, math.ceil(len(ids) * fraction)))
        got = coll.get(ids=picked, include=["metadatas"])
        metas = [{**(m or {}), "day": day} for m in got["metadatas"] or []]
        coll.update(ids=got["ids"], metadatas=metas)  # type: ignore[arg-type]
        report.chroma_records += len(picked)
    return report
