"""Restore + migrate acceptance: a set at N restored into code at N+2 ends at N+2 with its
data migrated; a set at N+1 restored into code at N is refused.

"The code" is `rpger_ops.migrations.registry.MIGRATIONS`, patched per phase: the backup
pipeline (manifest schema_version), restore's schema check and the runner all read it.
"""

from __future__ import annotations

import pytest
from migrations_support import load
from restore_support import take_set, wipe

from rpger_ops import migrate, testdata
from rpger_ops.connect import mongo_client
from rpger_ops.engines import build_engine
from rpger_ops.migrations import m0001_rpger_schema, registry
from rpger_ops.restore import RefusedError, restore_set
from rpger_ops.schema import code_schema_version
from rpger_ops.store import LocalStore

AT_N = [m0001_rpger_schema]


def code_at(monkeypatch, modules) -> None:
    monkeypatch.setattr(registry, "MIGRATIONS", list(modules))


def seed_at_current_code(settings) -> None:
    assert migrate.apply_pending(settings) == registry.default_registry().versions()
    testdata.load_mongo(settings, scale=20, validators=False)
    testdata.load_redis(settings, scale=20)
    testdata.load_chroma(settings, scale=20, dim=8)


def test_set_at_n_restored_into_code_at_n_plus_2_is_migrated(settings, monkeypatch):
    code_at(monkeypatch, AT_N)
    seed_at_current_code(settings)
    set_id = take_set(settings)
    # Each database's schema version as its data recorded it (the stack markers).
    backup_set = LocalStore(settings.backup_dir).read(set_id)
    assert {db: backup_set.schema_version_of(db) for db in backup_set.databases} == {"mongo": 1, "redis": 1, "chroma": 1}
    wipe(settings)

    code_at(monkeypatch, [*AT_N, load("m0002_notes_index"), load("m0003_notes_text_to_body")])
    assert code_schema_version() == 3
    report = restore_set(settings, "latest")
    assert report.ok, report.lines()
    assert report.migrations.applied == [2, 3]
    assert migrate.current_version(settings) == 3
    st = migrate.status(settings)
    assert st.pending == [] and st.ok and st.markers == {"mongo": 3, "redis": 3, "chroma": 3}

    client = mongo_client(settings)
    try:
        notes = client[settings.mongodb_database]["notes"]
        assert notes.count_documents({}) == 20
        assert notes.count_documents({"body": {"$exists": True}}) == 20
        assert notes.count_documents({"text": {"$exists": True}}) == 0
        assert "userId_1_created_at_-1" in {ix["name"] for ix in notes.list_indexes()}
    finally:
        client.close()


def test_set_at_n_plus_1_into_code_at_n_is_refused(settings, monkeypatch):
    code_at(monkeypatch, [*AT_N, load("m0002_notes_index")])
    seed_at_current_code(settings)
    set_id = take_set(settings, dbs=("mongo",))
    assert LocalStore(settings.backup_dir).read(set_id).schema_version_of("mongo") == 2
    wipe(settings, dbs=("mongo",))

    code_at(monkeypatch, AT_N)
    with pytest.raises(RefusedError, match="newer schema \\(mongo at 2\\) than this code's 1"):
        restore_set(settings, "latest", dbs=("mongo",))
    engine = build_engine("mongo", settings)
    try:
        assert engine.is_empty()  # refused before anything was loaded
    finally:
        engine.close()
