"""MongoEngine on the real harness server (FerretDB unless RPGER_TEST_MONGODB_URI names a MongoDB)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from bson import Binary, Int64, ObjectId
from bson.json_util import CANONICAL_JSON_OPTIONS, dumps, loads

from rpger_ops import devservers, testdata
from rpger_ops.engines.base import EngineError, NotReadyError, StackMarker
from rpger_ops.engines.mongo import MongoEngine
from rpger_ops.settings import Settings, load_settings


def _settings(uri: str, **extra: Any) -> Settings:
    return load_settings(_env_file=None, MONGODB_URI=uri, MONGODB_DATABASE=f"rpger_m{uuid.uuid4().hex[:10]}",
                         RPGER_STACK_ID="test-stack", **extra)


@pytest.fixture
def mongo_settings(mongo_endpoint: Any) -> Settings:
    """Only the Mongo part of the stack: no Redis/Chroma servers needed for these tests."""
    return _settings(mongo_endpoint.uri)


@pytest.fixture
def engine(mongo_settings: Settings) -> Iterator[MongoEngine]:
    eng = MongoEngine(mongo_settings)
    yield eng
    eng.client.drop_database(mongo_settings.mongodb_database)
    eng.close()


@pytest.fixture
def other(mongo_endpoint: Any) -> Iterator[MongoEngine]:
    """A second, separate database on the same server."""
    eng = MongoEngine(_settings(mongo_endpoint.uri))
    yield eng
    eng.client.drop_database(eng.settings.mongodb_database)
    eng.close()


def is_ferretdb(engine: MongoEngine) -> bool:
    return engine.ping().server_kind == "ferretdb"


def typed_documents() -> list[dict[str, Any]]:
    """Documents exercising BSON types and field order, with fixed _ids."""
    return [
        {"_id": ObjectId(f"{i:024x}"), "i32": i, "i64": Int64(i), "dbl": i + 0.5, "str": f"ünï {i}",
         "dt": datetime(2024, 1, 1, 12, i % 60, tzinfo=UTC), "bin": Binary(bytes([i % 256]) * 8),
         "uuid": Binary(uuid.UUID(int=i).bytes, 4), "none": None, "flag": i % 2 == 0,
         "arr": [i, "x", {"k": i}], "nested": {"b": 2, "a": 1}}
        for i in range(30)
    ]


def fixed_rpger_documents(scale: int) -> dict[str, list[dict[str, Any]]]:
    """RPGer-shaped documents with _ids assigned once, so two loads hold equal content."""
    docs = testdata.mongo_documents(scale)
    for name, items in docs.items():
        if name == "users":
            continue  # keeps its ObjectId _ids
        for i, doc in enumerate(items):
            doc["_id"] = f"{name}-{i}"
    docs["typed"] = typed_documents()
    return docs


def load(engine: MongoEngine, docs: dict[str, list[dict[str, Any]]], reverse: bool = False) -> None:
    """Insert the documents; `reverse` inserts collections, documents and indexes in the
    opposite order (indexes before data), which must not change the digest."""
    for name, items in (reversed(docs.items()) if reverse else docs.items()):
        coll = engine.db[name]
        indexes = testdata.MONGO_INDEXES.get(name, [])
        for keys, unique in (reversed(indexes) if reverse else []):
            coll.create_index(keys, unique=unique)
        coll.insert_many([dict(d) for d in (reversed(items) if reverse else items)])
        for keys, unique in ([] if reverse else indexes):
            coll.create_index(keys, unique=unique)


# --- contract basics ---------------------------------------------------------------------------

def test_unreachable_server_is_not_ready_and_message_has_no_secret() -> None:
    settings = _settings(f"mongodb://ops:Sup3rSecretPw@127.0.0.1:{devservers.free_port()}/"
                         "?tlsCertificateKeyFilePassword=KeyPw0rd",
                         MONGODB_SERVER_SELECTION_TIMEOUT_MS=300, MONGODB_CONNECT_TIMEOUT_MS=300)
    eng = MongoEngine(settings)
    try:
        for call in (eng.ping, eng.is_empty, eng.stats, eng.digest):
            with pytest.raises(NotReadyError) as info:
                call()
            assert "Sup3rSecretPw" not in str(info.value) and "KeyPw0rd" not in str(info.value)
            assert "127.0.0.1" in str(info.value)
    finally:
        eng.close()


def test_is_empty_ignores_stack_state_and_ledgers(engine: MongoEngine) -> None:
    assert engine.is_empty()
    engine.write_marker(StackMarker("test-stack", 1))
    assert engine.acquire_lock("backup", "me", 60)
    engine.db["_rpger_migrations"].insert_one({"_id": "0001", "applied_at": datetime.now(UTC)})
    engine.db.create_collection("users")  # an empty collection holds no data
    assert engine.is_empty()
    engine.db["users"].insert_one({"username": "a"})
    assert not engine.is_empty()


@pytest.fixture
def second_client(engine: MongoEngine) -> Iterator[MongoEngine]:
    """Another process's view of the same database: its own engine and connection pool."""
    eng = MongoEngine(engine.settings)
    yield eng
    eng.close()


def test_stats_count_user_data_only(engine: MongoEngine) -> None:
    report = testdata.load_mongo(engine.settings, scale=20)
    engine.write_marker(StackMarker("test-stack", 1))
    stats = engine.stats()
    assert {name: s.count for name, s in stats.items()} == report.mongo_counts
    assert "_rpger_stack" not in stats
    assert all(s.size_bytes >= 0 for s in stats.values())


# --- digest ---------------------------------------------------------------------------------------

@pytest.fixture
def twins(engine: MongoEngine, other: MongoEngine) -> tuple[MongoEngine, MongoEngine]:
    """Two databases with equal content, inserted in opposite orders."""
    docs = fixed_rpger_documents(20)
    load(engine, docs)
    load(other, docs, reverse=True)
    return engine, other


def test_digest_equal_for_equal_content(twins: tuple[MongoEngine, MongoEngine]) -> None:
    a, b = twins
    assert a.digest() == b.digest()
    b.write_marker(StackMarker("other-stack", 9))
    assert b.acquire_lock("backup", "x", 60)
    assert a.digest() == b.digest(), "marker and locks are not content"


def test_digest_changes_with_one_field(twins: tuple[MongoEngine, MongoEngine]) -> None:
    a, b = twins
    changed = b.db["monsters"].update_one({"_id": "monsters-3"}, {"$set": {"stats.move": "999\""}})
    assert changed.modified_count == 1
    assert a.digest() != b.digest()


def test_server_hash_is_dbhash_plus_definitions_and_ferretdb_says_it_has_none(
        twins: tuple[MongoEngine, MongoEngine]) -> None:
    """Restores are proven by dbHash where the server has it (digestcheck); FerretDB has
    not, and the reason is what the restore report shows."""
    a, b = twins
    hash_a, why = a.server_hash()
    if is_ferretdb(a):
        assert hash_a is None and "ferretdb has no dbHash" in why
        return
    assert why == "" and hash_a is not None and b.server_hash() == (hash_a, "")
    b.db["monsters"].create_index([("size", 1)])  # dbHash alone does not cover indexes
    assert b.server_hash()[0] != hash_a
    b.db["monsters"].drop_index([("size", 1)])
    assert b.server_hash()[0] == hash_a
    b.db["monsters"].update_one({"_id": "monsters-3"}, {"$set": {"stats.move": "999"}})
    assert b.server_hash()[0] != hash_a


def test_digest_changes_with_int32_to_int64(twins: tuple[MongoEngine, MongoEngine]) -> None:
    a, b = twins
    doc = b.db["typed"].find_one({"_id": ObjectId(f"{5:024x}")})
    assert doc is not None and type(doc["i32"]) is int
    b.db["typed"].update_one({"_id": doc["_id"]}, {"$set": {"i32": Int64(doc["i32"])}})
    assert a.digest() != b.digest()


def test_digest_changes_with_field_order(twins: tuple[MongoEngine, MongoEngine]) -> None:
    a, b = twins
    doc = b.db["typed"].find_one({"_id": ObjectId(f"{6:024x}")})
    assert doc is not None
    doc["nested"] = {"a": 1, "b": 2}
    b.db["typed"].replace_one({"_id": doc["_id"]}, doc)
    assert a.digest() != b.digest()


def test_digest_changes_with_dropped_index(twins: tuple[MongoEngine, MongoEngine]) -> None:
    a, b = twins
    b.db["notes"].drop_index("userId_1_tags_1")
    assert a.digest() != b.digest()


def test_digest_changes_with_index_uniqueness(twins: tuple[MongoEngine, MongoEngine]) -> None:
    a, b = twins
    b.db["spells"].drop_index("name_1")
    b.db["spells"].create_index([("name", 1)], unique=False)
    assert a.digest() != b.digest()


@pytest.mark.parametrize("options", [
    {"expireAfterSeconds": 3600},
    {"partialFilterExpression": {"level": {"$gt": 5}}},
    {"collation": {"locale": "en", "strength": 2}},
    {"sparse": True},
], ids=["ttl", "partial", "collation", "sparse"])
def test_digest_changes_with_index_option(twins: tuple[MongoEngine, MongoEngine], options: dict[str, Any]) -> None:
    from pymongo.errors import OperationFailure

    a, b = twins
    b.db["characters"].create_index([("level", 1)], name="level_1")
    a.db["characters"].create_index([("level", 1)], name="level_1")
    assert a.digest() == b.digest()
    b.db["characters"].drop_index("level_1")
    try:
        b.db["characters"].create_index([("level", 1)], name="level_1", **options)
    except OperationFailure as exc:
        pytest.skip(f"the server lacks index option {next(iter(options))}: {exc.details and exc.details.get('errmsg')}")
    listed = next(ix for ix in b.db["characters"].list_indexes() if ix["name"] == "level_1")
    if next(iter(options)) not in listed:
        pytest.skip(f"the server accepts but does not keep index option {next(iter(options))} (FerretDB)")
    assert a.digest() != b.digest()


def test_digest_changes_with_capped_size(engine: MongoEngine, other: MongoEngine) -> None:
    engine.db.create_collection("log", capped=True, size=1 << 20)
    other.db.create_collection("log", capped=True, size=1 << 20)
    assert engine.digest() == other.digest()
    other.db.drop_collection("log")
    other.db.create_collection("log", capped=True, size=2 << 20)
    assert engine.digest() != other.digest()


def test_digest_changes_with_validator(engine: MongoEngine, other: MongoEngine) -> None:
    if is_ferretdb(engine):
        pytest.skip("FerretDB has no $jsonSchema validators and no collMod: no validator option to change")
    engine.db.create_collection("users", validator=testdata.json_schema_validator("users"))
    other.db.create_collection("users", validator=testdata.json_schema_validator("users"))
    assert engine.digest() == other.digest()
    other.db.command("collMod", "users", validationLevel="moderate")
    assert engine.digest() != other.digest()


# --- dump, count, restore ------------------------------------------------------------------------------

def test_dump_count_restore_round_trip(engine: MongoEngine, tmp_path: Path) -> None:
    report = testdata.load_mongo(engine.settings, scale=50)
    load(engine, {"typed": typed_documents()})
    engine.db.create_collection("empty_but_indexed").create_index("k", unique=True)
    engine.db.create_collection("event_log", capped=True, size=1 << 20).insert_many([{"n": i} for i in range(3)])
    engine.db["_rpger_migrations"].insert_one({"_id": "0001"})
    engine.write_marker(StackMarker("test-stack", 1))
    source_digest = engine.digest()
    calls: list[tuple[str, int, int | None]] = []

    result = engine.dump(tmp_path, lambda m, d, t: calls.append((m, d, t)))

    expected = {**report.mongo_counts, "typed": 30, "empty_but_indexed": 0, "event_log": 3, "_rpger_migrations": 1}
    assert result.counts == expected
    assert MongoEngine.count_dump(tmp_path) == expected
    db_dir = tmp_path / engine.settings.mongodb_database
    assert sorted(result.files) == sorted(str(p.relative_to(tmp_path)) for p in db_dir.iterdir())
    assert result.bytes_written == sum(p.stat().st_size for p in db_dir.iterdir())
    assert not (db_dir / "_rpger_stack.bson").exists()
    meta = loads((db_dir / "users.metadata.json").read_text())
    assert meta["collectionName"] == "users" and meta["type"] == "collection"
    assert {ix["name"] for ix in meta["indexes"]} >= {"_id_", "username_1", "email_1"}
    assert '"$numberInt"' in (db_dir / "users.metadata.json").read_text(), "canonical Extended JSON"
    assert result.point_in_time is bool(engine.client.admin.command("hello").get("setName"))
    if result.point_in_time:
        assert result.extra["at_cluster_time"] not in ("", "None")
    else:
        assert any("not point-in-time" in note for note in result.notes)
    assert result.server_version == engine.ping().server_version
    assert calls and calls[-1][1] == sum(expected.values())
    assert all(done <= (total or done) for _, done, total in calls)
    assert result.digest == source_digest == MongoEngine.digest_dump(tmp_path), "the dump's own digest of what it wrote"

    with engine.scratch() as scratch:
        assert scratch.is_empty()
        restore_calls: list[tuple[str, int, int | None]] = []
        restored = scratch.restore(tmp_path, lambda m, d, t: restore_calls.append((m, d, t)))
        assert restored.counts == expected
        assert restore_calls[-1][1:] == (sum(expected.values()), sum(expected.values()))
        assert scratch.digest() == source_digest
        assert scratch.read_marker() is None, "the marker is not part of a dump"
        assert scratch.db["event_log"].options().get("capped") is True
        scratch_name = scratch.settings.mongodb_database
    assert scratch_name not in engine.client.list_database_names()


def test_restore_notes_what_the_server_lacks(engine: MongoEngine, tmp_path: Path) -> None:
    """A dump from MongoDB (validator, TTL index) restored into FerretDB: what can't be
    restored is named in the notes, everything else still arrives."""
    engine.db["users"].insert_one({"username": "a", "email": "a@x"})
    engine.db["users"].create_index("username", unique=True)
    engine.dump(tmp_path)
    meta_file = tmp_path / engine.settings.mongodb_database / "users.metadata.json"
    meta = loads(meta_file.read_text())
    meta["options"]["validator"] = testdata.json_schema_validator("users")
    meta["indexes"].append({"v": 2, "key": {"seen": 1}, "name": "seen_ttl", "expireAfterSeconds": 60})
    meta["indexes"].append({"v": 2, "key": {"nick": 1}, "name": "nick_sparse", "sparse": True})
    meta_file.write_text(dumps(meta, json_options=CANONICAL_JSON_OPTIONS))

    with engine.scratch() as scratch:
        result = scratch.restore(tmp_path)
        assert result.counts == {"users": 1}
        options = scratch.db["users"].options()
        indexes = {ix["name"]: ix for ix in scratch.db["users"].list_indexes()}
        assert indexes["username_1"].get("unique") is True
        if is_ferretdb(engine):
            assert any("users" in n and "validator" in n and "$jsonSchema" in n for n in result.notes), result.notes
            assert any("users" in n and "seen_ttl" in n for n in result.notes), result.notes
            assert "seen_ttl" not in indexes
            if "sparse" not in indexes["nick_sparse"]:  # FerretDB accepts sparse, then forgets it
                assert any("nick_sparse" in n and "sparse" in n for n in result.notes), result.notes
        else:
            assert "validator" in options and not result.notes
            assert indexes["seen_ttl"]["expireAfterSeconds"] == 60
            assert indexes["nick_sparse"]["sparse"] is True


def test_views_round_trip_where_supported(engine: MongoEngine, tmp_path: Path) -> None:
    from pymongo.errors import OperationFailure

    engine.db["characters"].insert_many([{"name": f"h{i}", "level": i} for i in range(5)])
    try:
        engine.db.create_collection("high_level", viewOn="characters", pipeline=[{"$match": {"level": {"$gt": 2}}}])
    except OperationFailure as exc:
        pytest.skip(f"the server lacks views: {exc.details and exc.details.get('errmsg')}")
    source = engine.digest()
    result = engine.dump(tmp_path)
    assert result.counts == {"characters": 5}, "a view's documents are not data"
    assert MongoEngine.count_dump(tmp_path) == {"characters": 5}
    with engine.scratch() as scratch:
        scratch.restore(tmp_path)
        assert scratch.digest() == source
        assert scratch.db["high_level"].count_documents({}) == 2


def test_view_the_server_refuses_is_noted_not_faked(engine: MongoEngine, tmp_path: Path) -> None:
    engine.db["characters"].insert_one({"name": "h", "level": 3})
    engine.dump(tmp_path)
    view = {"collectionName": "no_such_view_support", "type": "view", "indexes": [],
            "options": {"viewOn": "characters", "pipeline": [{"$unsupportedStage": {}}]}}
    db_dir = tmp_path / engine.settings.mongodb_database
    (db_dir / "no_such_view_support.metadata.json").write_text(dumps(view, json_options=CANONICAL_JSON_OPTIONS))
    with engine.scratch() as scratch:
        result = scratch.restore(tmp_path)
        assert result.counts == {"characters": 1}
        assert any("no_such_view_support" in n and "view not restored" in n for n in result.notes), result.notes
        assert "no_such_view_support" not in scratch.db.list_collection_names()


def test_truncated_dump_fails_before_writing_anything(dumped: Path, engine: MongoEngine) -> None:
    data = (dumped / "spells.bson").read_bytes()
    (dumped / "spells.bson").write_bytes(data[:-3])
    with engine.scratch() as scratch:
        with pytest.raises(EngineError, match="truncated"):
            scratch.restore(dumped.parent)
        assert scratch.db.list_collection_names() == []


def test_restore_refuses_a_target_holding_documents(engine: MongoEngine, tmp_path: Path) -> None:
    engine.db["users"].insert_one({"username": "a"})
    engine.dump(tmp_path)
    with pytest.raises(EngineError, match="already hold documents"):
        engine.restore(tmp_path)


# --- broken dumps and failures -------------------------------------------------------------------------

@pytest.fixture
def dumped(engine: MongoEngine, tmp_path: Path) -> Path:
    testdata.load_mongo(engine.settings, scale=20)
    engine.dump(tmp_path)
    assert MongoEngine.count_dump(tmp_path)["monsters"] == 20
    return tmp_path / engine.settings.mongodb_database


def test_count_dump_rejects_truncated_file(dumped: Path) -> None:
    data = (dumped / "monsters.bson").read_bytes()
    (dumped / "monsters.bson").write_bytes(data[:-7])
    with pytest.raises(EngineError, match="truncated"):
        MongoEngine.count_dump(dumped.parent)


def test_count_dump_rejects_bad_length_prefix(dumped: Path) -> None:
    data = bytearray((dumped / "spells.bson").read_bytes())
    data[0:4] = (3).to_bytes(4, "little")
    (dumped / "spells.bson").write_bytes(bytes(data))
    with pytest.raises(EngineError, match="spells.bson"):
        MongoEngine.count_dump(dumped.parent)


def test_count_dump_rejects_corrupt_document_body(dumped: Path) -> None:
    data = bytearray((dumped / "items.bson").read_bytes())
    data[4] = 0x7E  # the first element's type byte: not a BSON type
    (dumped / "items.bson").write_bytes(bytes(data))
    with pytest.raises(EngineError, match="corrupt"):
        MongoEngine.count_dump(dumped.parent)


def test_count_dump_rejects_bad_or_missing_metadata(dumped: Path) -> None:
    (dumped / "npcs.metadata.json").write_text('{"indexes": [')
    with pytest.raises(EngineError, match="npcs.metadata.json"):
        MongoEngine.count_dump(dumped.parent)
    (dumped / "npcs.metadata.json").unlink()
    with pytest.raises(EngineError, match="npcs.bson"):
        MongoEngine.count_dump(dumped.parent)


def test_count_dump_rejects_missing_data_file(dumped: Path) -> None:
    (dumped / "users.bson").unlink()
    with pytest.raises(EngineError, match="users.bson"):
        MongoEngine.count_dump(dumped.parent)


class _LosesDocuments(MongoEngine):
    """A dump whose reads silently come back empty (e.g. a filtered or misrouted read)."""

    def _dump_collection(self, info: dict[str, Any], db_dir: Path, run: Any) -> None:
        run.result.counts[info["name"]] = 0


def test_empty_dump_of_non_empty_database_raises(engine: MongoEngine, tmp_path: Path) -> None:
    engine.db["users"].insert_many([{"username": f"u{i}"} for i in range(5)])
    lossy = _LosesDocuments(engine.settings)
    try:
        with pytest.raises(EngineError, match="empty dump"):
            lossy.dump(tmp_path)
    finally:
        lossy.close()


def test_metadata_is_json_mongorestore_can_parse(dumped: Path) -> None:
    for meta_file in dumped.glob("*.metadata.json"):
        doc = json.loads(meta_file.read_text())
        assert set(doc) >= {"indexes", "options", "collectionName", "type"}
