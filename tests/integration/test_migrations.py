"""The migration runner on real servers: schema 0001, up/down, drift, lock, unknown versions."""

from __future__ import annotations

import threading
import time

import pytest
from migrations_support import add_ledger_entry, load, registry

from rpger_ops import migrate, testdata
from rpger_ops.connect import chroma_client, mongo_client
from rpger_ops.engines import build_engine
from rpger_ops.engines.base import StackMarker
from rpger_ops.migrations import m0001_rpger_schema as m0001
from rpger_ops.migrations.base import MigrationContext
from rpger_ops.migrations.registry import default_registry
from rpger_ops.schema import code_schema_version


def index_specs(settings, collection: str) -> dict[str, tuple[tuple[tuple[str, int], ...], bool]]:
    client = mongo_client(settings)
    try:
        return {ix["name"]: (tuple(ix["key"].items()), bool(ix.get("unique", False)))
                for ix in client[settings.mongodb_database][collection].list_indexes()}
    finally:
        client.close()


def markers(settings) -> dict[str, int | None]:
    out = {}
    for name in ("mongo", "redis", "chroma"):
        engine = build_engine(name, settings)
        try:
            m = engine.read_marker()
            out[name] = m.schema_version if m else None
        finally:
            engine.close()
    return out


def test_shipped_registry_is_the_rpger_schema_then_ownership():
    assert code_schema_version() == 2
    assert [(m.version, m.name) for m in default_registry()] == [(1, "rpger_schema"), (2, "rpger_ownership")]
    assert [m.version for m in registry()] == [1]  # what the runner tests below build on


def test_up_on_empty_databases_creates_the_rpger_schema(settings):
    reg = registry()  # 0001 alone (0002 re-creates its Chroma collections: test_migration_0002.py)
    report = migrate.migrate(settings, "up", registry=reg)
    assert report.applied == [1] and report.from_version == 0 and report.to_version == 1

    client = mongo_client(settings)
    try:
        db = client[settings.mongodb_database]
        assert set(m0001.MONGO_INDEXES) <= set(db.list_collection_names())
        assert migrate.LEGACY_LEDGER not in db.list_collection_names()  # the ledger is in the markers now
        is_ferret = "ferretdbVersion" in client.admin.command("buildInfo")
    finally:
        client.close()
    # Each database keeps its own ledger, in its stack marker.
    for db_name in ("mongo", "redis", "chroma"):
        ledger = migrate.read_ledger(settings, db_name)  # type: ignore[arg-type]
        assert [(e.version, e.name, e.checksum) for e in ledger] == [(1, "rpger_schema", registry().get(1).checksum)]
        assert ledger[0].duration_s >= 0 and ledger[0].applied_at
    for collection, indexes in m0001.MONGO_INDEXES.items():
        specs = set(index_specs(settings, collection).values())
        for keys, unique in indexes:
            assert (tuple(keys), unique) in specs, (collection, keys)
    if is_ferret:
        assert any("validators not applied" in n and "FerretDB" in n for n in report.notes), report.notes
    else:
        assert not any("validators" in n for n in report.notes)

    chroma = chroma_client(settings)
    names = {c.name for c in chroma.list_collections()}
    assert set(m0001.CHROMA_COLLECTIONS) <= names
    monsters = chroma.get_collection("monsters")
    assert monsters.metadata["schema"] == "rpger-1" and monsters.metadata["dimension"] == 1536
    assert monsters.configuration_json["hnsw"]["space"] == "cosine"

    st = migrate.status(settings, reg)
    assert st.current == 1 and st.latest == 1 and st.pending == [] and st.ok
    assert st.markers == {"mongo": 1, "redis": 1, "chroma": 1}

    # A second `up` is a no-op: nothing applied, ledger untouched.
    assert migrate.apply_pending(settings, registry=reg) == []
    assert migrate.read_ledger(settings, "chroma")[0].applied_at == ledger[0].applied_at


def test_up_is_idempotent_on_existing_rpger_data(settings):
    testdata.load_mongo(settings, scale=20, validators=False)
    testdata.load_chroma(settings, scale=20, dim=8)
    assert migrate.apply_pending(settings) == [1, 2]
    client = mongo_client(settings)
    try:
        assert client[settings.mongodb_database]["monsters"].count_documents({}) == 20
    finally:
        client.close()
    assert chroma_client(settings).get_collection("monsters").count() == 20


def test_up_to_target_then_down_reverts_index_and_chroma_changes(settings):
    reg = registry("m0002_notes_index", "m0003_noop", "m0004_chroma_schema_2")
    assert [(s.version, s.db) for s in migrate.plan(settings, target=2, registry=reg)] == [
        (1, "mongo"), (1, "redis"), (1, "chroma"), (2, "mongo")]  # a step per database it changes
    assert migrate.apply_pending(settings, target=2, registry=reg) == [1, 2]
    assert "userId_1_created_at_-1" in index_specs(settings, "notes")
    assert "userId_1" not in index_specs(settings, "notes")
    assert migrate.status(settings, reg).current == 2

    assert migrate.apply_pending(settings, registry=reg) == [3, 4]
    meta = chroma_client(settings).get_collection("spells").metadata
    assert meta["schema"] == "rpger-2" and meta["embedding_model"] == "text-embedding-3-small"
    assert markers(settings) == {"mongo": 4, "redis": 4, "chroma": 4}

    assert [(s.version, s.db) for s in migrate.plan(settings, target=1, registry=reg, direction="down")] == [
        (4, "chroma"), (3, "mongo"), (3, "redis"), (3, "chroma"), (2, "mongo")]
    report = migrate.migrate(settings, "down", target=1, registry=reg)
    assert report.applied == [4, 3, 2] and report.to_version == 1
    assert report.by_database == {"mongo": [3, 2], "redis": [3], "chroma": [4, 3]}
    meta = chroma_client(settings).get_collection("spells").metadata
    assert meta["schema"] == "rpger-1" and "embedding_model" not in meta
    assert "userId_1" in index_specs(settings, "notes")
    assert "userId_1_created_at_-1" not in index_specs(settings, "notes")
    # Per database: 0002 changes nothing in Redis or Chroma, so they are at schema 2 already.
    assert markers(settings) == {"mongo": 1, "redis": 2, "chroma": 2}
    assert [e.version for e in migrate.read_ledger(settings)] == [1]


def test_a_run_scoped_to_one_database_touches_no_other(settings):
    reg = registry("m0002_notes_index", "m0004_chroma_schema_2")
    assert migrate.apply_pending(settings, registry=reg, dbs=["redis"]) == [1]
    assert markers(settings) == {"mongo": None, "redis": 4, "chroma": None}
    assert "monsters" not in {c.name for c in chroma_client(settings).list_collections()}
    report = migrate.migrate(settings, "up", registry=reg, dbs=["chroma"])
    assert report.applied == [1, 4] and report.by_database == {"chroma": [1, 4]}
    assert markers(settings) == {"mongo": None, "redis": 4, "chroma": 4}
    st = migrate.status(settings, reg)
    assert [m.version for m in st.databases["mongo"].pending] == [1, 2] and st.databases["chroma"].pending == []


def test_a_combined_migration_waits_for_all_its_databases(settings, tmp_path):
    path = tmp_path / "m0002_move.py"
    path.write_text('VERSION = 2\nNAME = "move"\nDATABASES = ("mongo", "chroma")\nRAN = []\n\n'
                    'def up(ctx):\n    RAN.append(ctx.database)\n')
    move = load("m0002_move", path)
    reg = registry(move, "m0004_chroma_schema_2")
    report = migrate.migrate(settings, "up", registry=reg, dbs=["chroma"])
    assert report.applied == [1] and move.RAN == []
    assert any("stopped before 0002 move" in n and "mongo is not part of this run" in n for n in report.notes)
    migrate.apply_pending(settings, registry=reg)
    assert move.RAN == [None]  # once, for both databases
    assert markers(settings) == {"mongo": 4, "redis": 4, "chroma": 4}


def test_down_refused_past_a_migration_without_down(settings, tmp_path):
    path = tmp_path / "m0002_no_down.py"
    path.write_text('VERSION = 2\nNAME = "no_down"\n\ndef up(ctx):\n    return None\n')
    reg = registry(load("m0002_no_down", path))
    assert migrate.apply_pending(settings, registry=reg) == [1, 2]
    with pytest.raises(migrate.IrreversibleError, match="0002 no_down has no down"):
        migrate.migrate(settings, "down", target=0, registry=reg)
    assert migrate.current_version(settings) == 2  # refused before anything ran


def test_checksum_drift_stops_everything(settings, tmp_path):
    path = tmp_path / "m0002_drifty.py"
    path.write_text('"""v1"""\nVERSION = 2\nNAME = "drifty"\n\ndef up(ctx):\n    return None\n')
    assert migrate.apply_pending(settings, registry=registry(load("m0002_drifty", path))) == [1, 2]

    path.write_text('"""v2: edited after being applied"""\nVERSION = 2\nNAME = "drifty"\n\ndef up(ctx):\n    return None\n')
    reg = registry(load("m0002_drifty", path), load("m0003_noop"))
    st = migrate.status(settings, reg)
    assert {d.version for d in st.drift} == {2} and {d.db for d in st.drift} == {"mongo", "redis", "chroma"}
    assert not st.ok
    with pytest.raises(migrate.DriftError, match=r"checksum drift: migration 0002 drifty .*restore the original"):
        migrate.apply_pending(settings, registry=reg)
    with pytest.raises(migrate.DriftError):
        migrate.migrate(settings, "down", target=0, registry=reg)
    assert migrate.current_version(settings) == 2  # nothing ran, 0003 still pending


def test_unknown_ledger_version_is_refused_as_data_newer_than_code(settings):
    migrate.apply_pending(settings)
    add_ledger_entry(settings, "mongo", 7, "from_newer_code")
    st = migrate.status(settings)
    assert [e.version for e in st.unknown] == [7]
    with pytest.raises(migrate.UnknownVersionError, match="data newer than code: .*0007 from_newer_code.*upgrade"):
        migrate.apply_pending(settings)


def test_migration_numbered_below_an_applied_one_is_refused(settings):
    assert migrate.apply_pending(settings, registry=registry("m0003_noop")) == [1, 3]
    reg = registry("m0002_notes_index", "m0003_noop")
    with pytest.raises(migrate.OrderError, match="out of order: pending migration.s. 0002 notes_index_by_created"):
        migrate.apply_pending(settings, registry=reg)
    assert "userId_1" in index_specs(settings, "notes")  # 0002 did not run


def test_markers_newer_than_code_are_refused(settings):
    migrate.apply_pending(settings, registry=registry())
    engine = build_engine("redis", settings)
    try:
        engine.write_marker(StackMarker(settings.stack_id, 5))
    finally:
        engine.close()
    with pytest.raises(migrate.UnknownVersionError, match="stack marker.s. redis at 5 but code latest is 1"):
        migrate.apply_pending(settings, registry=registry())


def test_concurrent_migrators_are_refused(settings, tmp_path):
    started, release = threading.Event(), threading.Event()

    path = tmp_path / "m0002_slow.py"
    path.write_text('VERSION = 2\nNAME = "slow"\nHOOKS = {}\n\ndef up(ctx):\n    HOOKS["run"]()\n')
    slow = load("m0002_slow", path)
    slow.HOOKS["run"] = lambda: (started.set(), release.wait(60))
    reg = registry(slow)
    outcome: dict[str, object] = {}

    def first() -> None:
        outcome["applied"] = migrate.apply_pending(settings, registry=reg, lock_ttl_s=1.5)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert started.wait(60)
        with pytest.raises(migrate.LockHeldError, match="another migrator is running"):
            migrate.apply_pending(settings, registry=reg)
        time.sleep(4)  # well past the TTL: the live migrator's heartbeat keeps the lock
        with pytest.raises(migrate.LockHeldError, match="another migrator is running"):
            migrate.migrate(settings, "down", target=0, registry=reg)
    finally:
        release.set()
        thread.join(60)
    assert outcome["applied"] == [1, 2]
    assert migrate.apply_pending(settings, registry=reg) == []  # lock released


def test_failed_migration_stops_at_that_version_and_reports_it(settings):
    reg = registry("m0002_fails", "m0003_noop")
    with pytest.raises(migrate.MigrationFailed, match="migration 0002 always_fails failed during up on mongo: "
                       "RuntimeError: boom in migration 2; mongo stopped at version 1") as info:
        migrate.apply_pending(settings, registry=reg)
    assert info.value.version == 2 and info.value.applied == [1]
    st = migrate.status(settings, reg)
    assert st.current == 1 and [m.version for m in st.pending] == [2, 3]
    assert markers(settings) == {"mongo": 1, "redis": 2, "chroma": 2}  # 0002 concerns mongo only


def test_validator_unsupported_is_reported_not_fatal(settings):
    ctx = MigrationContext(settings=settings)
    try:
        supported = m0001._apply_validator(ctx, "users", exists=False)
        assert supported is (not ctx.mongo_is_ferretdb)
    finally:
        ctx.close()


def test_a_stack_migrated_by_0_1_is_taken_over(settings):
    """0.1 kept one ledger collection in the app's MongoDB database and only a version in
    each marker; the runner moves the ledger into every marker and drops the collection."""
    client = mongo_client(settings)
    db = client[settings.mongodb_database]
    reg = registry()  # 0001 alone: what 0.1 shipped
    try:
        assert migrate.apply_pending(settings, registry=reg) == [1]
        for name in ("mongo", "redis", "chroma"):
            engine = build_engine(name, settings)
            engine.write_marker(StackMarker(settings.stack_id, 1))  # as 0.1 wrote it: no ledger
            engine.close()
        db[migrate.LEGACY_LEDGER].insert_one({"_id": 1, "name": "rpger_schema", "checksum": "x"})
        st = migrate.status(settings, reg)
        assert st.ok and st.pending == [] and all(d.legacy for d in st.databases.values())
        report = migrate.migrate(settings, "up", registry=reg)
        assert report.applied == []
        assert any("ledger moved into its stack marker" in n for n in report.notes)
        assert migrate.LEGACY_LEDGER not in db.list_collection_names()
        for name in ("mongo", "redis", "chroma"):
            engine = build_engine(name, settings)
            marker = engine.read_marker()
            engine.close()
            assert marker is not None and [e.version for e in marker.migrations or ()] == [1]
    finally:
        client.close()
